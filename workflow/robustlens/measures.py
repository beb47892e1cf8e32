"""Registry of the comparison measures: name, function (imported lazily), direction, range.

Metadata only, standard library only: table and figure scripts import this module and must
start fast, so nothing here imports torch or numpy. :func:`get_function` imports a measure's
module when the function is first asked for.

Conversions users need (the registry stores the similarity form):

* ``procrustes``: s = nuclear norm of X'Y after centring and scaling to unit Frobenius norm.
  Orthogonal Procrustes distance = sqrt(2 - 2 s); ``scipy.spatial.procrustes`` disparity
  = 1 - s^2.
* ``cka`` is inflated when features far outnumber samples; ``cka_unbiased`` is not (and can be
  slightly negative). Biased CKA lies in [0, 1], unbiased CKA in [-1, 1] and needs n >= 4.
* ``rtd`` is a distance (0 = same topology, lower = more similar), unbounded above and growing
  with the batch size: compare values at equal ``batch`` only.
* ``jsd_similarity`` = 1 - mean Jensen-Shannon divergence *in bits* (base 2, so it lies in
  [0, 1]). ``scipy.spatial.distance.jensenshannon`` returns the *square root* of the divergence,
  in nats unless ``base=2``: JSD_bits = jensenshannon(p, q, base=2) ** 2.
* ``cohen_kappa`` and ``error_consistency`` correct agreement for chance: two models with
  accuracies a and b agree on at least a + b - 1 of the inputs whatever they learned.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

INF = float("inf")


@dataclass(frozen=True)
class Measure:
    """One comparison measure.

    name: registry key, used in configs and in the tables' ``measure`` column.
    function: dotted path ``package.module.function``, resolved lazily by :func:`get_function`.
    higher_is_similar: direction (False for distances such as RTD); recorded in the tables.
    value_range: (low, high) the measure can take.
    invariances: transformations of a representation that leave the value unchanged.
    description: what it computes, with its reference.
    kind: ``"representational"`` (activations, n x features) or ``"predictive"`` (logits).
    needs_labels: the function takes the true labels as a third argument.
    """

    name: str
    function: str
    higher_is_similar: bool
    value_range: tuple
    invariances: str
    description: str
    kind: str = "representational"
    needs_labels: bool = False


_REPRESENTATIONAL = (
    Measure(
        name="cka",
        function="robustlens.similarity.linear_cka",
        higher_is_similar=True,
        value_range=(0.0, 1.0),
        invariances="orthogonal transformation, isotropic scaling, translation",
        description=(
            "Linear CKA with the biased HSIC (Kornblith et al. 2019): ||Xc'Yc||_F^2 / "
            "(||Xc'Xc||_F ||Yc'Yc||_F). Inflated when features far outnumber samples."
        ),
    ),
    Measure(
        name="cka_unbiased",
        function="robustlens.similarity.linear_cka_unbiased",
        higher_is_similar=True,
        value_range=(-1.0, 1.0),
        invariances="orthogonal transformation, isotropic scaling, translation",
        description=(
            "Linear CKA with the unbiased HSIC of Song et al. 2012; ~0 for independent "
            "representations. Needs n >= 4."
        ),
    ),
    Measure(
        name="procrustes",
        function="robustlens.similarity.procrustes_similarity",
        higher_is_similar=True,
        value_range=(0.0, 1.0),
        invariances="orthogonal transformation, isotropic scaling, translation",
        description=(
            "Orthogonal Procrustes similarity s = ||X'Y||_* of centred, unit-Frobenius-norm "
            "X and Y. Distance = sqrt(2 - 2s); scipy.spatial.procrustes disparity = 1 - s^2."
        ),
    ),
    Measure(
        name="knn_jaccard",
        function="robustlens.similarity.knn_jaccard",
        higher_is_similar=True,
        value_range=(0.0, 1.0),
        invariances="orthogonal transformation, isotropic scaling (cosine neighbours); not translation",
        description=(
            "Mean over samples of the Jaccard similarity of the k = 10 nearest-neighbour sets "
            "(cosine similarity, the sample itself excluded) in X and in Y. With center=True "
            "(comparison.knn_center; the universality paper's code) columns are centred first, "
            "which adds translation invariance; recorded in the tables' knn_center column."
        ),
    ),
    Measure(
        name="rtd",
        function="robustlens.similarity.rtd",
        higher_is_similar=False,
        value_range=(0.0, INF),
        invariances="isometry (orthogonal transformation, translation), isotropic scaling (0.9-quantile normalisation)",
        description=(
            "Representation Topology Divergence (Barannikov et al. 2022): total H1 length of the "
            "R-Cross-Barcode of [[0, A'], [A, min(A, B)]], symmetrised, averaged over 10 random "
            "batches of 500. A distance: 0 = same topology."
        ),
    ),
)

_PREDICTIVE = (
    Measure(
        name="agreement",
        function="robustlens.predictive.agreement",
        higher_is_similar=True,
        value_range=(0.0, 1.0),
        invariances="any change of the logits that keeps each input's argmax",
        description="Fraction of inputs whose argmax predictions coincide.",
        kind="predictive",
    ),
    Measure(
        name="jsd_similarity",
        function="robustlens.predictive.jsd_similarity",
        higher_is_similar=True,
        value_range=(0.0, 1.0),
        invariances="adding a per-input constant to all logits (softmax)",
        description=(
            "JSDSim: 1 - mean Jensen-Shannon divergence in bits between the softmax outputs "
            "(scipy's jensenshannon returns the square root of the divergence, in nats unless base=2)."
        ),
        kind="predictive",
    ),
    Measure(
        name="cohen_kappa",
        function="robustlens.predictive.cohen_kappa",
        higher_is_similar=True,
        value_range=(-1.0, 1.0),
        invariances="the same relabelling of classes in both models",
        description=(
            "Cohen's kappa of the two models' predicted classes: agreement beyond the agreement "
            "expected by chance from each model's class frequencies."
        ),
        kind="predictive",
    ),
    Measure(
        name="error_consistency",
        function="robustlens.predictive.error_consistency",
        higher_is_similar=True,
        value_range=(-1.0, 1.0),
        invariances="the same relabelling of classes in both models",
        description=(
            "Error consistency (Geirhos et al. 2020): Cohen's kappa of the models' correct/wrong "
            "outcomes, chance agreement a*b + (1-a)(1-b) from their accuracies a and b."
        ),
        kind="predictive",
        needs_labels=True,
    ),
)

#: Every measure by name.
MEASURES: dict[str, Measure] = {m.name: m for m in _REPRESENTATIONAL + _PREDICTIVE}


def get_function(name: str) -> Callable:
    """The function of measure ``name``, importing its module on first use."""
    try:
        dotted = MEASURES[name].function
    except KeyError:
        raise KeyError(f"unknown measure {name!r}; known: {', '.join(MEASURES)}") from None
    module, _, attribute = dotted.rpartition(".")
    return getattr(importlib.import_module(module), attribute)
