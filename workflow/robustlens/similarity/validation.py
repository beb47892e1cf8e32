"""Input validation and conversion shared by the representational similarity measures.

The contract of every measure in :mod:`robustlens.similarity` (compute in float64, raise instead
of returning NaN) is enforced here: :func:`validate_representation` raises
:class:`RepresentationError` (a ``ValueError``) for a representation that is not an
(n_samples, n_features) matrix, has fewer than two rows, a NaN/Inf entry, or zero total variance
(all rows identical). The private helpers convert inputs (``numpy.ndarray``, ``torch.Tensor`` or
anything ``numpy.asarray`` accepts) to float64 tensors on one device, check NaN/Inf through a
finiteness witness the measures compute anyway (:func:`_require_finite`), and multiply on the
CPU through NumPy's BLAS (:func:`_matmul`).
"""

from __future__ import annotations

import numpy as np
import torch


class RepresentationError(ValueError):
    """A representation cannot be compared: NaN/Inf entries, no variance, or too few rows."""


def validate_representation(X, where: str) -> None:
    """Raise :class:`RepresentationError` naming ``where`` if ``X`` cannot be compared.

    ``where`` says which representation this is, e.g. ``"model cnn-eps1-s0, layer block2,
    probe natural"``; it is put in the message. Checks, in order: ``X`` has two dimensions
    (n_samples, n_features), at least 2 rows, no NaN or Inf entry, and nonzero total variance
    (not all rows identical).
    """
    X = _check_structure(X, where)
    isfinite = torch.isfinite if isinstance(X, torch.Tensor) else np.isfinite
    if not bool(isfinite(X).all()):
        raise RepresentationError(f"{where}: representation contains NaN or Inf values")
    _check_not_constant(X, where)


def _check_structure(X, where: str):
    """X (as a tensor or numpy array) if it is a real (n_samples, n_features) matrix with n >= 2."""
    if not isinstance(X, torch.Tensor):
        X = np.asarray(X)
        if not (np.issubdtype(X.dtype, np.integer) or np.issubdtype(X.dtype, np.floating)):
            raise RepresentationError(f"{where}: representation has dtype {X.dtype}, not real numbers")
    if X.ndim != 2:
        raise RepresentationError(f"{where}: representation has shape {tuple(X.shape)}, expected (n_samples, n_features)")
    if X.shape[0] < 2:
        raise RepresentationError(f"{where}: representation has {X.shape[0]} sample(s); at least 2 are needed")
    if X.shape[1] < 1:
        raise RepresentationError(f"{where}: representation has no features")
    return X


def _check_not_constant(X, where: str) -> None:
    """Raise if all rows are identical. Exact, and O(n_features) unless rows 0 and 1 are equal."""
    if bool((X[1] != X[0]).any()):
        return
    if bool((X == X[:1]).all()):
        raise RepresentationError(f"{where}: representation has zero variance (all {X.shape[0]} rows identical)")


def _require_finite(witness: float, X, Y) -> None:
    """Raise the precise error if ``witness`` (a sum over quantities of X and Y that is NaN or
    Inf whenever X or Y has a NaN or Inf entry, e.g. their squared row norms) is not finite.

    This is how the measures check their inputs for NaN/Inf without an extra pass over the
    data: the witness comes from products they compute anyway. A non-finite witness from finite
    data means float64 overflow, also raised: squared norms overflow for entries beyond ~1e154,
    CKA's squared Frobenius norms of the cross-products (fourth powers) already beyond ~1e77."""
    if np.isfinite(witness):
        return
    validate_representation(X, "X")
    validate_representation(Y, "Y")
    raise RepresentationError("X or Y has values too large for float64 products (overflow)")


def _explicit_or_input_device(device, *arrays) -> torch.device:
    """``device`` if given, else the device of the first tensor among ``arrays``, else the CPU.

    Not :func:`robustlens.runtime.resolve_device`, which turns a job's configured device name
    (``auto``, ``cuda``) into the device it runs on and may take a GPU slot for the job: the
    measures get that resolved device (or none, and then compute where their inputs are), so
    they never take slots or read ``auto`` themselves."""
    if device is not None:
        return torch.device(device)
    for a in arrays:
        if isinstance(a, torch.Tensor):
            return a.device
    return torch.device("cpu")


def _as_float64(X, device: torch.device) -> torch.Tensor:
    """``X`` as a float64 torch tensor on ``device`` (no copy when it already is one)."""
    if isinstance(X, torch.Tensor):
        return X.detach().to(device=device, dtype=torch.float64)
    return torch.as_tensor(np.asarray(X, dtype=np.float64), device=device)


def _validated_pair(X, Y, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """X and Y as float64 tensors on one device, checked for shape, equal row counts and
    nonconstant rows. NaN/Inf entries are *not* checked here: each measure checks them through
    :func:`_require_finite` (or :func:`validate_representation`) before returning."""
    X, Y = _check_structure(X, "X"), _check_structure(Y, "Y")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y must describe the same samples: {X.shape[0]} rows vs {Y.shape[0]}")
    _check_not_constant(X, "X")
    _check_not_constant(Y, "Y")
    dev = _explicit_or_input_device(device, X, Y)
    return _as_float64(X, dev), _as_float64(Y, dev)


def _take_rows(A, idx: np.ndarray):
    """Rows ``idx`` of a tensor (on its device) or of an array-like (as numpy)."""
    if isinstance(A, torch.Tensor):
        return A[torch.as_tensor(idx, device=A.device)]
    return np.asarray(A)[idx]


#: The largest mean offset against spread, n ||mu||^2 / ||Xc||_F^2 (per column for CKA's
#: products, whole matrix for Procrustes and Gram matrices), for which a measure works on the
#: raw data and corrects for the mean algebraically instead of centring a copy: the rounding
#: error is then at most (1 + OFFSET_LIMIT) times that of centred data.
OFFSET_LIMIT = 4.0


def _matmul(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """A @ B; on the CPU through NumPy, whose matmul uses BLAS syrk when B is A's own transpose
    (half the multiply-adds of a general product) and which measured faster than torch's CPU
    matmul on the benchmark machine (benchmarks/similarity.md). The result shares no memory
    with A or B."""
    if A.device.type == "cpu" and B.device.type == "cpu":
        with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf inputs are reported by the caller
            return torch.from_numpy(A.numpy() @ B.numpy())
    return A @ B


#: Rows per block of :func:`_subtract_outer`: a block of a 2048-column product is 1 MiB.
OUTER_BLOCK_ROWS = 64


def _subtract_outer(A: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
    """A -= u v' in place, a block of rows at a time, so the only temporary is one cache-sized
    block (NumPy's ``A -= np.outer(u, v)`` would make, and fault in, a second A-sized array)."""
    for start in range(0, A.shape[0], OUTER_BLOCK_ROWS):
        block = slice(start, start + OUTER_BLOCK_ROWS)
        A[block] -= u[block, None] * v


def _centre_columns(X):
    """HX, H = I - 11'/n: each feature (column) minus its mean over samples (a new NumPy array
    or torch tensor)."""
    return X - X.mean(0)


def _finite_float(value, what: str) -> float:
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{what} is not finite ({value}); the inputs are degenerate")
    return value


def _as_numpy_float64(X) -> np.ndarray:
    if isinstance(X, torch.Tensor):
        return X.detach().cpu().to(torch.float64).numpy()
    return np.asarray(X, dtype=np.float64)
