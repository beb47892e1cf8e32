"""Representational similarity of two networks' activations on the same probe inputs.

Every measure takes two representations ``X`` (n x p) and ``Y`` (n x q) of the *same* n inputs
in the same order (``numpy.ndarray``, ``torch.Tensor`` or anything ``numpy.asarray`` accepts),
computes in float64 and returns a Python float. Measures raise instead of returning NaN:
a NaN/Inf entry, a representation whose rows are all identical, or fewer than two rows raise
:class:`RepresentationError` (a ``ValueError``); invalid settings raise ``ValueError``.

Measures (the conventions are in ``/work/shared/DESIGN.md``; users trip over sign and scale):

========================  =========  ===========  ==========================================
function                  range      direction    reference
========================  =========  ===========  ==========================================
linear_cka                [0, 1]     higher=sim.  Kornblith et al. 2019 (biased HSIC)
linear_cka(unbiased=...)  [-1, 1]    higher=sim.  Song et al. 2012 (unbiased HSIC), n >= 4
linear_cka_streaming      as above   higher=sim.  exact, one pass over sample chunks
linear_cka_minibatch      [-1, 1]    higher=sim.  Nguyen et al. 2021 (a different estimator)
procrustes_similarity     [0, 1]     higher=sim.  orthogonal Procrustes (nuclear norm)
knn_jaccard               [0, 1]     higher=sim.  k-NN Jaccard, cosine neighbours
rtd                       [0, inf)   lower=sim.   Barannikov et al. 2022 (a distance)
========================  =========  ===========  ==========================================

Dense linear algebra runs in float64 on ``device`` (default: the input tensor's device, else
the CPU): NumPy's BLAS on the CPU (symmetric rank-k updates for Gram products), torch on a CUDA
device; RTD runs on the CPU (giotto-ph's Vietoris-Rips core, bars equal to ripser's).

The measures live in submodules along their papers; every public name is re-exported here, so
``from robustlens.similarity import X`` is the way to use them:

* :mod:`~robustlens.similarity.validation`: :class:`RepresentationError`,
  :func:`validate_representation` and the input checks and conversions the measures share;
* :mod:`~robustlens.similarity.cka`: linear CKA in memory, exact streaming and minibatch
  (Kornblith et al. 2019, Song et al. 2012, Nguyen et al. 2021);
* :mod:`~robustlens.similarity.procrustes`: orthogonal Procrustes similarity;
* :mod:`~robustlens.similarity.knn`: k-NN Jaccard similarity;
* :mod:`~robustlens.similarity.topology`: Representation Topology Divergence (Barannikov et al. 2022);
* :mod:`~robustlens.similarity.baseline`: the permutation null distribution of any measure.
"""

from __future__ import annotations

from robustlens.similarity.validation import RepresentationError, validate_representation
from robustlens.similarity.cka import (
    MinibatchLinearCKA,
    StreamingLinearCKA,
    iter_zarr_chunks,
    linear_cka,
    linear_cka_minibatch,
    linear_cka_streaming,
    linear_cka_unbiased,
    unbiased_hsic_from_terms,
)
from robustlens.similarity.procrustes import procrustes_similarity
from robustlens.similarity.knn import knn_jaccard
from robustlens.similarity.topology import cross_barcode_matrix, rtd, rtd_trials
from robustlens.similarity.baseline import permutation_baseline

__all__ = [
    "RepresentationError",
    "validate_representation",
    "linear_cka",
    "linear_cka_unbiased",
    "unbiased_hsic_from_terms",
    "StreamingLinearCKA",
    "linear_cka_streaming",
    "iter_zarr_chunks",
    "MinibatchLinearCKA",
    "linear_cka_minibatch",
    "procrustes_similarity",
    "knn_jaccard",
    "rtd",
    "rtd_trials",
    "cross_barcode_matrix",
    "permutation_baseline",
]
