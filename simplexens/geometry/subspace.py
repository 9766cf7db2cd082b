"""Subspaces of parameter space for subspace inference: ``w = ŵ + Pᵀ z``, z in k dimensions.

Pure tensor math on flat parameter vectors (shape ``(P,)``) and bases (shape ``(k, P)``, one
direction per row): the principal directions of SWAG's deviations, random directions, and the
plane of a curve.

References
----------
.. [1] P. Izmailov, W. J. Maddox, P. Kirichenko, T. Garipov, D. Vetrov, A. G. Wilson.
   "Subspace Inference for Bayesian Deep Learning." UAI 2019.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

__all__ = ["curve_basis", "flatten", "pca_basis", "random_basis", "unflatten"]


def flatten(tensors: Mapping[str, torch.Tensor], names: Sequence[str]) -> torch.Tensor:
    """Concatenate ``tensors[name]`` for ``names`` (in that order) into one float64 vector."""
    return torch.cat([tensors[n].reshape(-1).to(torch.float64) for n in names])


def unflatten(
    flat: torch.Tensor, shapes: Mapping[str, torch.Size], dtypes: Mapping[str, torch.dtype]
) -> list[dict[str, torch.Tensor]]:
    """Rows of ``flat`` (shape ``(n, P)``) as parameter dicts of the given shapes and dtypes."""
    out, offset = [{} for _ in range(len(flat))], 0
    for name, shape in shapes.items():
        size = math.prod(shape)
        part = flat[:, offset : offset + size].reshape(len(flat), *shape).to(dtypes[name])
        for i, member in enumerate(out):
            member[name] = part[i]
        offset += size
    return out


def pca_basis(deviations: torch.Tensor, rank: int) -> torch.Tensor:
    """The top ``rank`` principal directions of the rows of ``deviations``, scaled.

    Row ``i`` is ``s_i / sqrt(K - 1) · v_i``: ``v_i`` the i-th right singular vector of the
    centred deviations (K rows), ``s_i`` its singular value, so that ``z ~ N(0, I)`` spreads
    as the deviations do along those directions (the paper's scaling). The thin SVD of a
    K x P matrix is exact and costs O(K² P), less than a randomised SVD for the K ≤ 20 or so
    rows SWAG keeps.

    Parameters
    ----------
    deviations : Tensor of shape (K, P)
        SWAG's deviations θ_i - θ̄_i, K ≥ 2.
    rank : int
        k, at most K - 1 (centring removes one dimension).

    Returns
    -------
    Tensor of shape (rank, P), float64
    """
    n = deviations.shape[0]
    if not 1 <= rank <= n - 1:
        raise ValueError(
            f"rank={rank} needs at least rank + 1 = {rank + 1} collected deviations for its "
            f"principal directions; there are {n}. Lower rank, or collect more (max_rank, "
            "a longer SWA phase)."
        )
    centred = deviations.to(torch.float64)
    centred = centred - centred.mean(dim=0)
    _, s, vt = torch.linalg.svd(centred, full_matrices=False)
    return (s[:rank, None] / math.sqrt(n - 1)) * vt[:rank]


def random_basis(
    rank: int, n_parameters: int, scale: float, generator: torch.Generator, device=None
) -> torch.Tensor:
    """``rank`` random orthogonal directions of norm ``scale`` (Gaussian, then QR).

    Returns
    -------
    Tensor of shape (rank, n_parameters), float64
    """
    gaussian = torch.randn(
        n_parameters, rank, generator=generator, dtype=torch.float64, device=device
    )
    q, _ = torch.linalg.qr(gaussian)
    return scale * q.T


def curve_basis(
    start: torch.Tensor, bend: torch.Tensor, end: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The plane of a quadratic Bezier curve (endpoints ``start``, ``end``, control ``bend``).

    The shift is the mean of the endpoints and the curve's midpoint
    ``m = (start + 2 bend + end) / 4``; the directions are ``u = end - start`` and the part
    of ``m - start`` orthogonal to ``u``, scaled by 1/√3 and 1/1.5 (the paper's choice, so
    that z of order 1 covers the curve). The three anchors lie in ``shift + span(u, v)``.

    Returns
    -------
    shift : Tensor of shape (P,), float64
    basis : Tensor of shape (2, P), float64
    """
    start, bend, end = (t.to(torch.float64) for t in (start, bend, end))
    middle = (start + 2 * bend + end) / 4
    shift = (start + middle + end) / 3
    u = end - start
    v = middle - start
    v = v - u * (u @ v) / (u @ u)
    if not (u.norm() > 0 and v.norm() > 0):
        raise ValueError(
            "the curve's endpoints and bend are collinear (or coincide): they span no plane."
        )
    return shift, torch.stack([u / math.sqrt(3.0), v / 1.5])
