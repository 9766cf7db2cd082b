"""Volumes, uniform sampling and points of a simplex in a module's parameter space.

A k-simplex :math:`S(v_0, \\ldots, v_k)` has k+1 vertices, each a full parameter vector of a
module. The vertices are given either as one tensor of shape ``(k+1, P)`` (flat parameter
vectors) or as a dict name -> tensor of shape ``(k+1, *shape)`` (one stacked tensor per module
parameter, as in :class:`simplexens.backends.functional.ParameterStack`). Every quantity that
touches all parameters is accumulated tensor by tensor in float64; no P-vector is ever
concatenated and no P x P matrix is ever formed.

References
----------
.. [1] Benton, G. W., Maddox, W. J., Lotfi, S., and Wilson, A. G. "Loss Surface Simplexes for
   Mode Connecting Volumes and Fast Ensembling". ICML 2021. Section 3.1 (notation,
   :math:`V(S)`), Appendix A.1 (Cayley-Menger volumes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

__all__ = [
    "cayley_menger_volume_squared",
    "gram_matrix",
    "log_volume",
    "sample_barycentric",
    "simplex_points",
]

Vertices = torch.Tensor | Mapping[str, torch.Tensor]


def _entries(vertices: Vertices) -> tuple[dict[str, torch.Tensor], int]:
    """Check ``vertices`` and return them as a dict of stacked tensors and the vertex count."""
    if isinstance(vertices, torch.Tensor):
        if vertices.ndim != 2:
            shape = tuple(vertices.shape)
            raise ValueError(f"vertices as a tensor must have shape (k+1, P); got {shape}.")
        entries = {"": vertices}
    elif isinstance(vertices, Mapping):
        if not vertices:
            raise ValueError("vertices is an empty dict; it needs at least one tensor.")
        entries = dict(vertices)
    else:
        raise ValueError(
            f"vertices must be a tensor or a dict of tensors; got {type(vertices).__name__}."
        )
    for name, t in entries.items():
        if not isinstance(t, torch.Tensor) or t.ndim == 0:
            raise ValueError(f"vertices[{name!r}] must be a tensor of shape (k+1, *shape).")
        if not torch.is_floating_point(t):
            raise ValueError(f"vertices[{name!r}] must be floating point; got {t.dtype}.")
    counts = {t.shape[0] for t in entries.values()}
    if len(counts) != 1:
        raise ValueError(f"vertex tensors disagree on the number of vertices: {sorted(counts)}.")
    n_vertices = counts.pop()
    if n_vertices < 1:
        raise ValueError("a simplex needs at least 1 vertex; got 0.")
    return entries, n_vertices


def _flat64(t: torch.Tensor) -> torch.Tensor:
    """One stacked tensor ``(k+1, *shape)`` as float64 rows ``(k+1, n)``."""
    return t.reshape(t.shape[0], -1).to(torch.float64)


def _device(entries: dict[str, torch.Tensor]) -> torch.device:
    return next(iter(entries.values())).device


def gram_matrix(vertices: Vertices) -> torch.Tensor:
    """Gram matrix of the edges from the first vertex.

    With edges :math:`e_i = v_i - v_0`, ``G[i-1, j-1] = <e_i, e_j>`` for i, j = 1..k, so
    :math:`G = E^T E` for :math:`E = [v_1 - v_0, \\ldots, v_k - v_0]`. The inner products are
    summed tensor by tensor in float64.

    Parameters
    ----------
    vertices : Tensor of shape (k+1, P) or dict of str to Tensor of shape (k+1, \\*shape)
        The k+1 vertices :math:`v_0, \\ldots, v_k`, as flat vectors or as stacked
        per-parameter tensors (all entries with the same leading size k+1). Floating point.

    Returns
    -------
    G : Tensor of shape (k, k), float64
        On the vertices' device; differentiable with respect to the vertices. Shape (0, 0)
        for a single vertex.

    References
    ----------
    .. [1] Benton, Maddox, Lotfi, Wilson. "Loss Surface Simplexes for Mode Connecting Volumes
       and Fast Ensembling". ICML 2021.
    """
    entries, n_vertices = _entries(vertices)
    k = n_vertices - 1
    gram = torch.zeros(k, k, dtype=torch.float64, device=_device(entries))
    for t in entries.values():
        x = _flat64(t)
        edges = x[1:] - x[:1]
        gram = gram + edges @ edges.T
    return gram


def _squared_distances(vertices: Vertices) -> torch.Tensor:
    """Pairwise squared distances ``(k+1, k+1)`` in float64, summed tensor by tensor."""
    entries, n_vertices = _entries(vertices)
    dist = torch.zeros(n_vertices, n_vertices, dtype=torch.float64, device=_device(entries))
    for t in entries.values():
        x = _flat64(t)
        # One row at a time keeps the memory at (k+1) x n rather than (k+1)^2 x n.
        rows = [(x - x[i]).square().sum(dim=1) for i in range(n_vertices)]
        dist = dist + torch.stack(rows)
    return dist


def log_volume(vertices: Vertices) -> torch.Tensor:
    """Log of the k-dimensional volume :math:`V(S)` of the simplex, from its Gram determinant.

    :math:`\\log V = \\tfrac12 \\log\\det G - \\log k!` with ``G = gram_matrix(vertices)``,
    through :func:`torch.linalg.slogdet` in float64. This is the quantity the simplex
    regulariser of [1]_ rewards (:math:`-\\lambda \\log V(S)` in the training loss).

    Parameters
    ----------
    vertices : Tensor of shape (k+1, P) or dict of str to Tensor of shape (k+1, \\*shape)
        The k+1 vertices, as in :func:`gram_matrix`.

    Returns
    -------
    log_v : Tensor of shape (), float64
        Differentiable with respect to the vertices. ``-inf`` when the determinant is not
        positive, i.e. for a degenerate simplex (vertices affinely dependent, e.g. repeated, or
        k > P); its gradient is then meaningless. By convention a 0-simplex (one vertex) has
        volume 1 and ``log_v == 0.0``, which agrees with :func:`cayley_menger_volume_squared`.

    References
    ----------
    .. [1] Benton, Maddox, Lotfi, Wilson. "Loss Surface Simplexes for Mode Connecting Volumes
       and Fast Ensembling". ICML 2021, Sections 3.1-3.2.
    """
    return log_volume_from_gram(gram_matrix(vertices))


def log_volume_from_gram(gram: torch.Tensor) -> torch.Tensor:
    """:math:`\\tfrac12 \\log\\det G - \\log k!`: the log volume of a simplex from its Gram matrix.

    Parameters
    ----------
    gram : Tensor of shape (k, k)
        The Gram matrix of the simplex's edges from one vertex (:func:`gram_matrix`).

    Returns
    -------
    log_v : Tensor of shape ()
        As in :func:`log_volume`: ``-inf`` for a singular Gram matrix, 0.0 when k = 0.
    """
    k = gram.shape[0]
    if k == 0:
        # The sum of the empty Gram matrix is 0.0 and stays in the autograd graph, so backward
        # yields zero gradients instead of failing.
        return gram.sum()
    sign, logabsdet = torch.linalg.slogdet(gram)
    log_v = 0.5 * logabsdet - math.lgamma(k + 1)
    # torch.where rather than an `if`: no host synchronisation inside a training step.
    return torch.where(sign > 0, log_v, torch.full_like(log_v, -math.inf))


def cayley_menger_volume_squared(vertices: Vertices) -> torch.Tensor:
    """Squared volume :math:`V(S)^2` from the pairwise distances (Cayley-Menger determinant).

    With ``D[i, j] = |v_i - v_j|^2`` and the bordered matrix
    ``CM = [[0, 1, ..., 1], [1, D]]`` of shape (k+2, k+2),

    .. math:: V^2 = \\frac{(-1)^{k+1}}{2^k (k!)^2} \\det(CM).

    A second opinion on :func:`log_volume`, as used in [1]_. The bordered matrix is badly
    conditioned when the edges are short next to each other or k is large; prefer
    :func:`log_volume` for training.

    Parameters
    ----------
    vertices : Tensor of shape (k+1, P) or dict of str to Tensor of shape (k+1, \\*shape)
        The k+1 vertices, as in :func:`gram_matrix`; distances are summed tensor by tensor in
        float64.

    Returns
    -------
    volume_squared : Tensor of shape (), float64
        Differentiable with respect to the vertices. Near zero (possibly slightly negative
        from rounding) for a degenerate simplex; 1.0 for a single vertex.

    References
    ----------
    .. [1] Benton, Maddox, Lotfi, Wilson. "Loss Surface Simplexes for Mode Connecting Volumes
       and Fast Ensembling". ICML 2021, Appendix A.1.
    """
    dist = _squared_distances(vertices)
    k = dist.shape[0] - 1
    ones = dist.new_ones(k + 1, 1)
    top = torch.cat([dist.new_zeros(1, 1), ones.T], dim=1)
    bordered = torch.cat([top, torch.cat([ones, dist], dim=1)], dim=0)
    scale = (-1) ** (k + 1) * math.exp(-k * math.log(2.0) - 2.0 * math.lgamma(k + 1))
    return scale * torch.linalg.det(bordered)


def sample_barycentric(
    n_samples: int,
    n_vertices: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Uniform points of a simplex in barycentric coordinates, Dirichlet(1, ..., 1).

    Each row is ``e / e.sum()`` for independent :math:`e_i = -\\log U_i \\sim \\mathrm{Exp}(1)`,
    the sampler of [1]_ for points :math:`\\phi = \\sum_i a_i v_i` uniform in the simplex.

    Parameters
    ----------
    n_samples : int
        Number of points S (>= 0).
    n_vertices : int
        Number of vertices k+1 (>= 1).
    generator : torch.Generator, optional
        The only source of randomness when given (it must live on ``device``); the global
        torch RNG is used only when it is None.
    device : torch.device or str, optional
        Device the samples are created on; default: torch's default device.
    dtype : torch.dtype, default=torch.float32
        Floating dtype of the samples.

    Returns
    -------
    weights : Tensor of shape (n_samples, n_vertices)
        Non-negative rows summing to 1.

    References
    ----------
    .. [1] Benton, Maddox, Lotfi, Wilson. "Loss Surface Simplexes for Mode Connecting Volumes
       and Fast Ensembling". ICML 2021, Section 3.
    """
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0; got {n_samples}.")
    if n_vertices < 1:
        raise ValueError(f"n_vertices must be >= 1; got {n_vertices}.")
    uniform = torch.rand(n_samples, n_vertices, generator=generator, device=device, dtype=dtype)
    # rand lies in [0, 1): the clamp keeps log finite, and U < 1 keeps every e_i > 0, so no row
    # sums to zero.
    exponential = -torch.log(uniform.clamp_min(torch.finfo(dtype).tiny))
    return exponential / exponential.sum(dim=1, keepdim=True)


def simplex_points(vertices: Vertices, weights: torch.Tensor) -> Vertices:
    """Points :math:`\\phi_s = \\sum_i w_{s,i} v_i` of the simplex for given barycentric weights.

    Parameters
    ----------
    vertices : Tensor of shape (k+1, P) or dict of str to Tensor of shape (k+1, \\*shape)
        The k+1 vertices, as in :func:`gram_matrix`.
    weights : Tensor of shape (S, k+1)
        One row of coefficients per point, e.g. from :func:`sample_barycentric`. Cast to each
        vertex tensor's dtype and device. Rows are not checked to sum to 1 (affine
        combinations outside the simplex are allowed).

    Returns
    -------
    points : Tensor of shape (S, P) or dict of str to Tensor of shape (S, \\*shape)
        Same kind as ``vertices``, in the vertices' dtype; differentiable with respect to the
        vertices (and the weights).

    References
    ----------
    .. [1] Benton, Maddox, Lotfi, Wilson. "Loss Surface Simplexes for Mode Connecting Volumes
       and Fast Ensembling". ICML 2021, Section 3.
    """
    entries, n_vertices = _entries(vertices)
    if not isinstance(weights, torch.Tensor) or weights.ndim != 2:
        raise ValueError("weights must be a tensor of shape (n_samples, k+1).")
    if weights.shape[1] != n_vertices:
        raise ValueError(
            f"weights have {weights.shape[1]} columns but the simplex has {n_vertices} vertices."
        )
    points = {
        name: torch.tensordot(weights.to(dtype=t.dtype, device=t.device), t, dims=1)
        for name, t in entries.items()
    }
    return points[""] if isinstance(vertices, torch.Tensor) else points
