"""k-nearest-neighbour Jaccard similarity of two representations (Klabunde et al.'s k-NN
Jaccard similarity, cosine neighbours).

With N_X(i) the k samples most cosine-similar to x_i (i itself excluded) and N_Y(i) likewise in
Y, the similarity is

    mean_i |N_X(i) ∩ N_Y(i)| / |N_X(i) ∪ N_Y(i)|,

range [0, 1], higher = more similar (:func:`knn_jaccard`).
"""

from __future__ import annotations

import torch

from robustlens.similarity.validation import _centre_columns, _matmul, _require_finite, _validated_pair


def _row_norms(X: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of each row."""
    return torch.linalg.vector_norm(X, dim=1)


def _cosine_neighbours(X: torch.Tensor, norms: torch.Tensor, k: int, block_elements: int = 1 << 23) -> torch.Tensor:
    """Indices (n x k) of each row's k most cosine-similar other rows (the row itself excluded).

    For a fixed row i, cos(x_i, x_j) = x_i.x_j / (|x_i| |x_j|) ranks the j like x_i.x_j / |x_j|,
    so only the candidates' norms are divided out (of a block of dot products) and the data are
    never copied. An all-zero row has cosine 0 to every row (as in scikit-learn). Similarities
    are computed in row blocks of at most ``block_elements`` entries: memory O(n * block), not
    n^2. Ties are broken arbitrarily.
    """
    n = X.shape[0]
    inverse_norms = 1.0 / torch.where(norms > 0, norms, torch.ones_like(norms))
    block = max(1, block_elements // n)
    out = torch.empty((n, k), dtype=torch.long, device=X.device)
    for start in range(0, n, block):
        stop = min(start + block, n)
        scores = _matmul(X[start:stop], X.T)
        scores *= inverse_norms[None, :]
        rows = torch.arange(stop - start, device=X.device)
        scores[rows, rows + start] = -torch.inf  # exclude the sample itself
        out[start:stop] = torch.topk(scores, k, dim=1, sorted=False).indices
    return out


def _mean_jaccard_of_index_sets(A: torch.Tensor, B: torch.Tensor) -> float:
    """Mean over rows of |A_i ∩ B_i| / |A_i ∪ B_i| for two n x k arrays of distinct indices per row."""
    k = A.shape[1]
    both = torch.sort(torch.cat([A, B], dim=1), dim=1).values
    intersection = (both[:, 1:] == both[:, :-1]).sum(dim=1).to(torch.float64)
    return float(torch.mean(intersection / (2 * k - intersection)))


def knn_jaccard(X, Y, k: int = 10, device=None, *, center: bool = False) -> float:
    """Mean Jaccard similarity of the k-nearest-neighbour sets of each sample in X and in Y.

    For each sample i, N_X(i) are the k samples with the highest cosine similarity to x_i
    (i itself excluded), N_Y(i) likewise in Y; the value is mean_i |N_X ∩ N_Y| / |N_X ∪ N_Y|
    (Klabunde et al.'s k-NN Jaccard similarity). Range [0, 1]; higher = more similar; a random
    pairing of neighbourhoods gives about k / (2(n-1)). Invariant to orthogonal transformations
    and isotropic scaling (cosine), *not* to translation. Requires 1 <= k < n (``ValueError``).
    Torch float64 on ``device``; memory O(n * block), not n^2.

    ``center``: subtract each feature's (column's) mean over the n inputs from X and from Y
    before taking cosine neighbours, as the universality paper's code does; the value is then
    also invariant to translation. Default False (robustlens' convention, DESIGN.md): with a
    large common feature mean (e.g. post-ReLU activations) uncentred cosine neighbours are
    dominated by that mean, and centred ones are not, so the two can differ a lot.
    """
    n = X.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must satisfy 1 <= k < n_samples = {n}, got k={k}")
    Xt, Yt = _validated_pair(X, Y, device)
    if center:
        Xt, Yt = _centre_columns(Xt), _centre_columns(Yt)
    norms_x, norms_y = _row_norms(Xt), _row_norms(Yt)
    _require_finite(float(norms_x.sum()) + float(norms_y.sum()), Xt, Yt)
    return _mean_jaccard_of_index_sets(_cosine_neighbours(Xt, norms_x, k), _cosine_neighbours(Yt, norms_y, k))
