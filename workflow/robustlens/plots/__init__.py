"""Figures of the robustlens studies (matplotlib, Agg backend, no torch)."""
