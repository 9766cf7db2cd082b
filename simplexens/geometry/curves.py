"""Parametric curves between modes: Bezier curves and polygonal chains in parameter space.

A curve :math:`\\phi_\\theta(t)`, :math:`t \\in [0, 1]`, is an affine combination of
``n_bends`` anchors :math:`a_0, \\ldots, a_{n-1}` (the two end anchors are the connected modes
:math:`\\hat w_1, \\hat w_2`, the inner ones the trainable bends :math:`\\theta`):
:math:`\\phi_\\theta(t) = \\sum_i c_i(t) a_i` with coefficients that are non-negative, sum to 1
and are one-hot at the ends, so :math:`\\phi_\\theta(0) = a_0` and
:math:`\\phi_\\theta(1) = a_{n-1}`. The anchors are given like the vertices of
:mod:`simplexens.geometry.simplex`: one tensor of shape ``(n_bends, P)`` or a dict name ->
tensor of shape ``(n_bends, *shape)``. Checking that the positions ``t`` lie in [0, 1] costs
one host synchronisation per call.

References
----------
.. [1] Garipov, T., Izmailov, P., Podoprikhin, D., Vetrov, D. P., and Wilson, A. G. "Loss
   Surfaces, Mode Connectivity, and Fast Ensembling of DNNs". NeurIPS 2018. Section 3.1
   (polygonal chain and Bezier curve).
"""

from __future__ import annotations

import math

import torch

from .simplex import Vertices, _entries, simplex_points

__all__ = [
    "CURVES",
    "bezier_coefficients",
    "curve_coefficients",
    "curve_points",
    "polychain_coefficients",
]

CURVES = ("bezier", "polychain")
"""Names accepted by :func:`curve_coefficients` and :func:`curve_points`."""


def _check_n_bends(n_bends: int) -> int:
    if isinstance(n_bends, bool) or not isinstance(n_bends, int):
        raise ValueError(f"n_bends must be an int >= 2; got {n_bends!r}.")
    if n_bends < 2:
        raise ValueError(
            f"n_bends must be >= 2 (2 anchors make a straight segment); got {n_bends}."
        )
    return n_bends


def _check_t(t: torch.Tensor) -> None:
    """Raise unless ``t`` is a 1-D floating tensor of finite values in [0, 1]."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"t must be a 1-D tensor of values in [0, 1]; got {type(t).__name__}.")
    if t.ndim != 1:
        raise ValueError(f"t must be a 1-D tensor; got shape {tuple(t.shape)}.")
    if not torch.is_floating_point(t):
        raise ValueError(f"t must be floating point; got {t.dtype}.")
    # One host synchronisation; NaN fails both comparisons, +-inf fails one.
    if not bool(((t >= 0) & (t <= 1)).all()):
        if not bool(torch.isfinite(t).all()):
            raise ValueError("t contains non-finite values (NaN or inf); it must lie in [0, 1].")
        low, high = t.min().item(), t.max().item()
        raise ValueError(f"t must lie in [0, 1]; got values in [{low:g}, {high:g}].")


def bezier_coefficients(t: torch.Tensor, n_bends: int, check: bool = True) -> torch.Tensor:
    """Bernstein basis of degree ``n_bends - 1``: the coefficients of a Bezier curve.

    ``c[s, i] = C(n-1, i) t_s^i (1 - t_s)^(n-1-i)`` for ``n = n_bends``. With 3 anchors this is
    the quadratic Bezier curve of [1]_,
    :math:`\\phi_\\theta(t) = (1-t)^2 \\hat w_1 + 2t(1-t)\\theta + t^2 \\hat w_2`; with 2 it is
    the straight segment.

    Parameters
    ----------
    t : Tensor of shape (S,)
        Curve positions in [0, 1], any floating dtype and device.
    n_bends : int
        Number of anchors n (>= 2), end anchors included.
    check : bool, default=True
        Check the values of ``t`` (one host synchronisation); ``False`` skips it.

    Returns
    -------
    coefficients : Tensor of shape (S, n_bends)
        In ``t``'s dtype and device, differentiable with respect to ``t``. Non-negative rows
        summing to 1 (up to rounding); the rows for ``t == 0`` and ``t == 1`` are exactly
        ``[1, 0, ..., 0]`` and ``[0, ..., 0, 1]`` (``0 ** 0 == 1`` and ``1 - 1 == 0`` in
        floating point), so the curve passes bit-exactly through its end anchors.

    Raises
    ------
    ValueError
        If ``n_bends < 2`` or ``t`` is not a 1-D floating tensor of finite values in [0, 1].

    References
    ----------
    .. [1] Garipov, Izmailov, Podoprikhin, Vetrov, Wilson. "Loss Surfaces, Mode Connectivity,
       and Fast Ensembling of DNNs". NeurIPS 2018, Section 3.1.
    """
    n = _check_n_bends(n_bends)
    if check:
        _check_t(t)
    degree = n - 1
    # Computed on t's device (a copy from a Python list to a GPU would wait for the device),
    # in float64 and rounded: exact integers for any usable number of bends.
    index = torch.arange(n, dtype=torch.float64, device=t.device)
    binomials = (
        torch.exp(math.lgamma(n) - torch.lgamma(index + 1) - torch.lgamma(degree - index + 1))
        .round()
        .to(t.dtype)
    )
    powers = index.to(t.dtype)
    t_col = t.unsqueeze(1)
    return binomials * t_col.pow(powers) * (1 - t_col).pow(degree - powers)


def polychain_coefficients(t: torch.Tensor, n_bends: int, check: bool = True) -> torch.Tensor:
    """Hat functions at the knots ``i / (n_bends - 1)``: the coefficients of a polygonal chain.

    ``c[s, i] = max(0, 1 - |t_s (n - 1) - i|)`` for ``n = n_bends``: the chain runs straight
    from anchor i to anchor i+1 while ``t`` goes from ``i/(n-1)`` to ``(i+1)/(n-1)``. With 3
    anchors this is the polygonal chain :math:`\\hat w_1 - \\theta - \\hat w_2` of [1]_.

    Parameters
    ----------
    t : Tensor of shape (S,)
        Curve positions in [0, 1], any floating dtype and device.
    n_bends : int
        Number of anchors n (>= 2), end anchors included.
    check : bool, default=True
        Check the values of ``t`` (one host synchronisation); ``False`` skips it.

    Returns
    -------
    coefficients : Tensor of shape (S, n_bends)
        In ``t``'s dtype and device. At most two non-zero entries per row (adjacent, summing to
        1 up to rounding); rows for ``t == 0`` and ``t == 1`` are exactly one-hot on the first
        and last anchor.

    Raises
    ------
    ValueError
        If ``n_bends < 2`` or ``t`` is not a 1-D floating tensor of finite values in [0, 1].

    References
    ----------
    .. [1] Garipov, Izmailov, Podoprikhin, Vetrov, Wilson. "Loss Surfaces, Mode Connectivity,
       and Fast Ensembling of DNNs". NeurIPS 2018, Section 3.1.
    """
    n = _check_n_bends(n_bends)
    if check:
        _check_t(t)
    knots = torch.arange(n, dtype=t.dtype, device=t.device)
    # t * (n - 1) is exactly n - 1 at t == 1, so the end rows are exactly one-hot.
    scaled = t.unsqueeze(1) * (n - 1)
    return (1 - (scaled - knots).abs()).clamp_min(0)


def curve_coefficients(
    t: torch.Tensor, curve: str, n_bends: int, check: bool = True
) -> torch.Tensor:
    """Coefficients of the anchors along a curve of kind ``curve``.

    Parameters
    ----------
    t : Tensor of shape (S,)
        Curve positions in [0, 1], any floating dtype and device.
    curve : {"bezier", "polychain"}
        :func:`bezier_coefficients` or :func:`polychain_coefficients`.
    n_bends : int
        Number of anchors (>= 2), end anchors included.
    check : bool, default=True
        Check the values of ``t`` (one host synchronisation); ``False`` skips it, for
        training steps, where no step may wait for the device.

    Returns
    -------
    coefficients : Tensor of shape (S, n_bends)
        In ``t``'s dtype and device; exactly one-hot at ``t == 0`` and ``t == 1``.

    Raises
    ------
    ValueError
        For an unknown ``curve``, ``n_bends < 2``, or ``t`` not a 1-D floating tensor of finite
        values in [0, 1].

    References
    ----------
    .. [1] Garipov, Izmailov, Podoprikhin, Vetrov, Wilson. "Loss Surfaces, Mode Connectivity,
       and Fast Ensembling of DNNs". NeurIPS 2018, Section 3.1.
    """
    if curve == "bezier":
        return bezier_coefficients(t, n_bends, check)
    if curve == "polychain":
        return polychain_coefficients(t, n_bends, check)
    valid = ", ".join(repr(name) for name in CURVES)
    raise ValueError(f"unknown curve {curve!r}; valid curves are {valid}.")


def curve_points(anchors: Vertices, t: torch.Tensor, curve: str) -> Vertices:
    """Points :math:`\\phi_\\theta(t_s) = \\sum_i c_i(t_s) a_i` of a curve through its anchors.

    Parameters
    ----------
    anchors : Tensor of shape (n_bends, P) or dict of str to Tensor of shape (n_bends, \\*shape)
        The anchors in order, end anchors first and last (n_bends >= 2); flat vectors or
        stacked per-parameter tensors, as the vertices of
        :func:`simplexens.geometry.simplex.simplex_points`.
    t : Tensor of shape (S,)
        Curve positions in [0, 1], any floating dtype and device.
    curve : {"bezier", "polychain"}
        Kind of curve, see :func:`curve_coefficients`.

    Returns
    -------
    points : Tensor of shape (S, P) or dict of str to Tensor of shape (S, \\*shape)
        Same kind, dtype and device as ``anchors``; differentiable with respect to the
        anchors. Points at ``t == 0`` and ``t == 1`` equal the end anchors bit-exactly (for
        finite anchors).

    Raises
    ------
    ValueError
        For invalid anchors, fewer than 2 anchors, or any of the errors of
        :func:`curve_coefficients`.

    References
    ----------
    .. [1] Garipov, Izmailov, Podoprikhin, Vetrov, Wilson. "Loss Surfaces, Mode Connectivity,
       and Fast Ensembling of DNNs". NeurIPS 2018, Section 3.1.
    """
    _, n_bends = _entries(anchors)
    if n_bends < 2:
        raise ValueError(f"a curve needs at least 2 anchors (its two ends); got {n_bends}.")
    return simplex_points(anchors, curve_coefficients(t, curve, n_bends))
