"""Tables of the similarity stage (similarity.smk) computed from similarity.csv: the
correlation of eps with every representational measure per probe and layer
(results/tables/correlations.csv, rule correlations_table), by the design, tests and intervals
of the headline table (:mod:`robustlens.universality`). No torch: table jobs start fast."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from robustlens.stats import benjamini_hochberg
from robustlens.universality import (
    design_analyses,
    eps_correlation,
    pair_design,
    require_pairs,
    row_base,
    statistic_rows,
    with_units,
)


def correlations_table(study: str, similarity: pd.DataFrame, settings: dict, models: Mapping[str, Mapping]) -> pd.DataFrame:
    """Correlation of x with each representational measure per (probe, measure, layer, x)
    (values averaged over the probe's input sets; design and x as in :func:`robustlens.universality.universality_table`),
    with Benjamini-Hochberg q-values across all layers, measures, probes and x."""
    keys = ["probe", "measure", "layer", "model_a", "model_b", "eps_a", "eps_b", "seed_a", "seed_b"]
    values = similarity.groupby(keys, as_index=False, sort=True)["value"].mean()
    require_pairs(values, "correlations_table")
    values = with_units(values, models)
    design = pair_design(values)
    rows = []
    for x, pairs in design_analyses(values, design):
        for (probe, measure, layer), df in pairs.groupby(["probe", "measure", "layer"], sort=True):
            stats, reasons, tests = eps_correlation(df, settings, x, design=design)
            rows.append((row_base(study, design, x, df, probe=probe, measure=measure, layer=layer), stats, reasons, tests))
    q = benjamini_hochberg(np.array([stats["p_value"] for _, stats, _, _ in rows]))
    out = []
    for (base, stats, reasons, tests), q_value in zip(rows, q):
        out += statistic_rows(base, {**stats, "q_value": float(q_value)}, {**reasons, "q_value": reasons["p_value"]},
                     {**tests, "q_value": "benjamini_hochberg"})
    return pd.DataFrame(out)
