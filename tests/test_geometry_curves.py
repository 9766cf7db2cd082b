"""Oracles for simplexens.geometry.curves: closed forms, a second computation, exact ends."""

import math

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from torch.testing import assert_close

from simplexens.geometry.curves import (
    CURVES,
    bezier_coefficients,
    curve_coefficients,
    curve_points,
    polychain_coefficients,
)

F64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _positions(seed, n=50, dtype=F64):
    """Random positions in [0, 1] plus both ends and the middle."""
    t = torch.rand(n, generator=_gen(seed), dtype=dtype)
    return torch.cat([t, torch.tensor([0.0, 0.5, 1.0], dtype=dtype)])


SHAPES = {"weight": (2, 3), "bias": (4,), "conv": (5, 1, 2)}  # 6 + 4 + 10 = 20 values


def _as_dict(flat):
    """Split flat anchors (n, 20) into named stacked tensors of different shapes."""
    sizes = [math.prod(shape) for shape in SHAPES.values()]
    pieces = torch.split(flat, sizes, dim=1)
    return {
        name: piece.reshape(flat.shape[0], *shape)
        for (name, shape), piece in zip(SHAPES.items(), pieces, strict=True)
    }


# --- Bezier ---------------------------------------------------------------------------------


def test_quadratic_bezier_is_the_papers_closed_form():
    t = _positions(0)
    expected = torch.stack([(1 - t) ** 2, 2 * t * (1 - t), t**2], dim=1)
    assert_close(bezier_coefficients(t, 3), expected, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("n_bends", [2, 3, 4, 5, 6])
def test_bezier_matches_a_python_bernstein_loop(n_bends):
    t = _positions(n_bends)
    degree = n_bends - 1
    expected = np.array(
        [
            [math.comb(degree, i) * s**i * (1 - s) ** (degree - i) for i in range(n_bends)]
            for s in t.tolist()
        ]
    )
    coefficients = bezier_coefficients(t, n_bends)
    assert coefficients.shape == (len(t), n_bends)
    assert coefficients.dtype == F64
    assert_allclose(coefficients.numpy(), expected, rtol=1e-12, atol=1e-15)
    assert_allclose(coefficients.sum(dim=1).numpy(), 1.0, rtol=1e-12)
    assert bool((coefficients >= 0).all())


def test_straight_segment_is_linear_interpolation():
    t = _positions(1, dtype=torch.float32)
    coefficients = bezier_coefficients(t, 2)
    assert coefficients.dtype == torch.float32
    assert_close(coefficients, torch.stack([1 - t, t], dim=1))
    assert_close(polychain_coefficients(t, 2), torch.stack([1 - t, t], dim=1))


# --- polygonal chain ------------------------------------------------------------------------


@pytest.mark.parametrize("n_bends", [2, 3, 4, 6])
def test_polychain_is_piecewise_linear_interpolation_of_the_knots(n_bends):
    t = torch.cat([_positions(10 + n_bends), torch.linspace(0, 1, n_bends, dtype=F64)])
    knots = np.linspace(0.0, 1.0, n_bends)
    expected = np.stack([np.interp(t.numpy(), knots, row) for row in np.eye(n_bends)], axis=1)
    coefficients = polychain_coefficients(t, n_bends)
    assert_allclose(coefficients.numpy(), expected, rtol=1e-12, atol=1e-14)
    assert_allclose(coefficients.sum(dim=1).numpy(), 1.0, rtol=1e-12)
    nonzero = coefficients != 0
    assert int(nonzero.sum(dim=1).max()) <= 2
    # The (at most two) non-zero entries are adjacent.
    for row in nonzero:
        columns = torch.nonzero(row).flatten()
        assert int(columns.max() - columns.min()) <= 1


def test_quadratic_polychain_closed_form():
    t = _positions(2)
    first_half = t <= 0.5
    expected = torch.stack(
        [
            torch.where(first_half, 1 - 2 * t, torch.zeros_like(t)),
            torch.where(first_half, 2 * t, 2 - 2 * t),
            torch.where(first_half, torch.zeros_like(t), 2 * t - 1),
        ],
        dim=1,
    )
    assert_close(polychain_coefficients(t, 3), expected, rtol=1e-14, atol=1e-15)


# --- exact ends, points ---------------------------------------------------------------------


@pytest.mark.parametrize("curve", CURVES)
@pytest.mark.parametrize("n_bends", [2, 3, 4, 5])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_end_rows_are_exactly_one_hot(curve, n_bends, dtype):
    coefficients = curve_coefficients(torch.tensor([0.0, 1.0], dtype=dtype), curve, n_bends)
    expected = torch.zeros(2, n_bends, dtype=dtype)
    expected[0, 0] = expected[1, -1] = 1.0
    assert torch.equal(coefficients, expected)


@pytest.mark.parametrize("curve", CURVES)
@pytest.mark.parametrize("n_bends", [2, 3, 4, 5])
def test_curve_passes_bit_exactly_through_its_end_anchors(curve, n_bends):
    anchors = 100 * torch.randn(n_bends, 20, generator=_gen(n_bends))  # float32
    t = torch.tensor([0.0, 0.3, 1.0, 0.0])
    points = curve_points(anchors, t, curve)
    assert points.dtype == torch.float32
    assert torch.equal(points[0], anchors[0])
    assert torch.equal(points[2], anchors[-1])
    assert torch.equal(points[3], anchors[0])
    named = _as_dict(anchors)
    for name, stacked in curve_points(named, t.to(F64), curve).items():
        assert torch.equal(stacked[0], named[name][0])
        assert torch.equal(stacked[2], named[name][-1])


@pytest.mark.parametrize("curve", CURVES)
def test_points_are_the_coefficients_times_the_anchors(curve):
    anchors = torch.randn(4, 20, generator=_gen(20), dtype=F64)
    t = _positions(21)
    points = curve_points(anchors, t, curve)
    assert points.shape == (len(t), 20)
    assert_close(points, curve_coefficients(t, curve, 4) @ anchors)
    for name, stacked in curve_points(_as_dict(anchors), t, curve).items():
        assert stacked.shape == (len(t), *SHAPES[name])
        assert_close(stacked, _as_dict(points)[name])


def test_quadratic_bezier_midpoint_and_polychain_bend():
    w1, theta, w2 = torch.randn(3, 7, generator=_gen(30), dtype=F64)
    anchors = torch.stack([w1, theta, w2])
    half = torch.tensor([0.5], dtype=F64)
    assert_close(curve_points(anchors, half, "bezier")[0], 0.25 * w1 + 0.5 * theta + 0.25 * w2)
    assert_close(curve_points(anchors, half, "polychain")[0], theta)
    quarter = torch.tensor([0.25], dtype=F64)
    assert_close(curve_points(anchors, quarter, "polychain")[0], 0.5 * (w1 + theta))


@pytest.mark.parametrize("curve", CURVES)
def test_points_gradient_matches_finite_differences(curve):
    anchors = torch.randn(3, 5, generator=_gen(40), dtype=F64).requires_grad_()
    t = torch.tensor([0.1, 0.4, 0.75], dtype=F64)
    assert torch.autograd.gradcheck(lambda a: curve_points(a, t, curve), (anchors,))


# --- validation -----------------------------------------------------------------------------


def test_unknown_curve_lists_the_valid_ones():
    t = torch.tensor([0.5])
    with pytest.raises(ValueError, match=r"unknown curve 'spline'.*'bezier', 'polychain'"):
        curve_coefficients(t, "spline", 3)
    with pytest.raises(ValueError, match="unknown curve"):
        curve_points(torch.zeros(3, 4), t, "Bezier")


@pytest.mark.parametrize(
    ("t", "match"),
    [
        (torch.tensor([[0.5]]), "1-D tensor; got shape"),
        (torch.tensor(0.5), "1-D tensor; got shape"),
        ([0.0, 0.5], "1-D tensor of values in"),
        (torch.tensor([0, 1]), "floating point"),
        (torch.tensor([0.2, 1.5]), r"must lie in \[0, 1\]; got values in \[0.2, 1.5\]"),
        (torch.tensor([-0.1, 0.5]), r"must lie in \[0, 1\]"),
        (torch.tensor([0.5, math.nan]), "non-finite"),
        (torch.tensor([math.inf]), "non-finite"),
    ],
)
def test_invalid_positions_raise(t, match):
    for function in (bezier_coefficients, polychain_coefficients):
        with pytest.raises(ValueError, match=match):
            function(t, 3)
    for curve in CURVES:
        with pytest.raises(ValueError, match=match):
            curve_coefficients(t, curve, 3)
        with pytest.raises(ValueError, match=match):
            curve_points(torch.zeros(3, 4), t, curve)


@pytest.mark.parametrize("n_bends", [1, 0, -2, 2.0, True])
def test_invalid_n_bends_raise(n_bends):
    t = torch.tensor([0.5])
    for function in (bezier_coefficients, polychain_coefficients):
        with pytest.raises(ValueError, match="n_bends must be"):
            function(t, n_bends)
    with pytest.raises(ValueError, match="n_bends must be"):
        curve_coefficients(t, "bezier", n_bends)


def test_invalid_anchors_raise():
    t = torch.tensor([0.5])
    with pytest.raises(ValueError, match="at least 2 anchors"):
        curve_points(torch.zeros(1, 4), t, "bezier")
    with pytest.raises(ValueError, match=r"shape \(k\+1, P\)"):
        curve_points(torch.zeros(4), t, "polychain")
