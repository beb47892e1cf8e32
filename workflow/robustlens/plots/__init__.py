"""Figures of the robustlens studies (matplotlib, Agg canvas, no torch), one module per rule
file of workflow/rules/: ``models`` (training curves), ``probes`` (inversions), ``similarity``
(CKA by layer, every measure vs eps, the pairwise heatmaps), ``predictive`` (agreement vs eps,
agreement before and after retraining the heads, the headline correlations), ``filters``,
``transfer``; ``common`` holds what they share (making and saving a figure, the panel report)."""
