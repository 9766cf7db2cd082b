"""Oracles for simplexens.geometry.complex: closed-form areas, convex hulls, chi-square tests."""

import math
import pickle

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from scipy.spatial import ConvexHull
from scipy.stats import chisquare
from torch.testing import assert_close

from simplexens.geometry.complex import (
    SimplicialComplex,
    complex_log_volume,
    complex_log_volumes,
    connector_complex,
    sample_complex,
)
from simplexens.geometry.simplex import simplex_points

F64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _embed(points_2d, dim, seed):
    """Rotate planar points into R^dim with a random orthogonal map and shift them."""
    gen = _gen(seed)
    padded = torch.zeros(points_2d.shape[0], dim, dtype=F64)
    padded[:, :2] = points_2d
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=F64))
    return padded @ q.T + 5 * torch.randn(dim, generator=gen, dtype=F64)


# Two right triangles sharing the edge v1-v2: T0 = (v0, v1, v2), right angle at v0, legs 3 and 1;
# T1 = (v1, v2, v3), right angle at v1, legs |v2 - v1| = sqrt(10) and 0.5.
LEG_A, LEG_B, LEG_D = 3.0, 1.0, 0.5
HYPOTENUSE = math.hypot(LEG_A, LEG_B)
AREAS = (0.5 * LEG_A * LEG_B, 0.5 * HYPOTENUSE * LEG_D)
TRIANGLES = SimplicialComplex([(0, 1, 2), (1, 2, 3)], n_vertices=4)


def _two_triangles(dim=6, seed=0):
    v0 = torch.tensor([0.0, 0.0], dtype=F64)
    v1 = torch.tensor([LEG_A, 0.0], dtype=F64)
    v2 = torch.tensor([0.0, LEG_B], dtype=F64)
    normal = torch.tensor([LEG_B, LEG_A], dtype=F64) / HYPOTENUSE  # orthogonal to v2 - v1
    v3 = v1 + LEG_D * normal
    return _embed(torch.stack([v0, v1, v2, v3]), dim, seed)


def _as_dict(flat):
    """Split flat vertices (n, 6) into two named stacked tensors."""
    return {"weight": flat[:, :4].reshape(-1, 2, 2), "bias": flat[:, 4:]}


# --- the complex ----------------------------------------------------------------------------


def test_complex_attributes_equality_and_pickle():
    cx = SimplicialComplex([[0, 2], [1, 2]], n_vertices=3)
    assert cx.simplexes == ((0, 2), (1, 2))
    assert isinstance(cx.simplexes[0], tuple)
    assert (cx.n_vertices, cx.n_simplexes, cx.dimension) == (3, 2, 1)
    same = SimplicialComplex(((0, 2), (1, 2)), 3)
    assert cx == same
    assert hash(cx) == hash(same)
    assert cx != SimplicialComplex([(0, 2), (1, 2)], n_vertices=4)
    assert cx != SimplicialComplex([(1, 2), (0, 2)], n_vertices=3)
    assert pickle.loads(pickle.dumps(cx)) == cx
    assert eval(repr(cx), {"SimplicialComplex": SimplicialComplex}) == cx


def test_complex_accepts_integer_arrays_and_tensors():
    expected = SimplicialComplex([(0, 2), (1, 2)], 3)
    assert SimplicialComplex(np.array([[0, 2], [1, 2]]), np.int64(3)) == expected
    assert SimplicialComplex(torch.tensor([[0, 2], [1, 2]]), 3) == expected


def test_incidence():
    incidence = TRIANGLES.incidence()
    expected = torch.tensor([[True, True, True, False], [False, True, True, True]])
    assert torch.equal(incidence, expected)
    assert torch.equal(TRIANGLES.indices(), torch.tensor([[0, 1, 2], [1, 2, 3]]))


@pytest.mark.parametrize(
    ("n_modes", "n_connectors", "expected"),
    [
        (2, 1, ((0, 2), (1, 2))),
        (3, 2, ((0, 3, 4), (1, 3, 4), (2, 3, 4))),
        (1, 3, ((0, 1, 2, 3),)),
        (2, 0, ((0,), (1,))),
    ],
)
def test_connector_complex(n_modes, n_connectors, expected):
    cx = connector_complex(n_modes, n_connectors)
    assert cx.simplexes == expected
    assert cx.n_vertices == n_modes + n_connectors
    assert cx.dimension == n_connectors


@pytest.mark.parametrize(
    ("simplexes", "n_vertices", "match"),
    [
        ([], 3, "at least one simplex"),
        ([(0, 1), ()], 3, "simplex 1 is empty"),
        ([(0, 3)], 3, r"vertex index 3, out of range for 3 vertices \(valid: 0\.\.2\)"),
        ([(0, -1)], 3, "vertex index -1, out of range"),
        ([(0, 1, 0)], 3, r"simplex 0 repeats vertex index\(es\) \[0\]"),
        ([(0, 1), (0, 1, 2)], 3, "same size.*simplex 0 has 2 vertices but simplex 1 has 3"),
        ([(0, 1), (2, 1), (1, 0)], 3, r"simplexes 0 and 2 have the same vertices \[0, 1\]"),
        ([(0, 1.5)], 3, "vertex index in simplex 0 must be an int"),
        ([(0, True)], 3, "must be an int"),
        ([(0, 1)], 0, "n_vertices must be >= 1"),
        ([(0, 1)], 2.0, "n_vertices must be an int"),
        ("01", 2, "sequence of sequences"),
        ([0, 1], 2, "simplex 0 must be a sequence"),
    ],
)
def test_invalid_complexes_raise(simplexes, n_vertices, match):
    with pytest.raises(ValueError, match=match):
        SimplicialComplex(simplexes, n_vertices)


def test_invalid_connector_counts_raise():
    with pytest.raises(ValueError, match="n_modes must be >= 1"):
        connector_complex(0, 1)
    with pytest.raises(ValueError, match="n_connectors must be >= 0"):
        connector_complex(2, -1)


# --- volumes --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_right_triangles_have_their_closed_form_areas(seed):
    vertices = _two_triangles(seed=seed)
    log_volumes = complex_log_volumes(vertices, TRIANGLES)
    assert log_volumes.shape == (2,)
    assert log_volumes.dtype == F64
    assert_allclose(log_volumes.numpy(), np.log(AREAS), rtol=0, atol=1e-12)
    assert_allclose(complex_log_volume(vertices, TRIANGLES).item(), math.log(sum(AREAS)), 1e-12)


def test_dict_and_float32_vertices():
    vertices = _two_triangles()
    expected = complex_log_volumes(vertices, TRIANGLES)
    assert_close(complex_log_volumes(_as_dict(vertices), TRIANGLES), expected)
    single = complex_log_volumes(vertices.float(), TRIANGLES)
    assert single.dtype == F64
    assert_close(single, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tetrahedra_match_convex_hull_volumes(seed):
    vertices = torch.randn(6, 3, generator=_gen(seed), dtype=F64)
    cx = SimplicialComplex([(0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5)], n_vertices=6)
    hulls = [ConvexHull(vertices[list(s)].numpy()).volume for s in cx.simplexes]
    assert_allclose(complex_log_volumes(vertices, cx).exp().numpy(), hulls, rtol=1e-9)
    assert_allclose(complex_log_volume(vertices, cx).exp().item(), sum(hulls), rtol=1e-9)


def test_polygonal_chain_volumes_are_segment_lengths():
    vertices = torch.randn(3, 8, generator=_gen(3), dtype=F64)  # w0, w1, theta
    lengths = [(vertices[2] - vertices[i]).norm().item() for i in (0, 1)]
    log_volumes = complex_log_volumes(vertices, connector_complex(2, 1))
    assert_allclose(log_volumes.numpy(), np.log(lengths), rtol=1e-12)


def test_degenerate_simplex_has_minus_infinite_log_volume():
    vertices = _two_triangles()
    vertices[3] = vertices[2]  # T1 collapses onto the shared edge
    log_volumes = complex_log_volumes(vertices, TRIANGLES)
    assert log_volumes[1].item() == -math.inf
    assert_allclose(log_volumes[0].item(), math.log(AREAS[0]), rtol=1e-12)
    assert_allclose(complex_log_volume(vertices, TRIANGLES).item(), math.log(AREAS[0]), 1e-12)


def test_volume_regulariser_gradient_matches_finite_differences():
    vertices = torch.randn(5, 6, generator=_gen(4), dtype=F64).requires_grad_()
    cx = connector_complex(3, 2)
    lam = 0.3

    def regulariser(v):
        return -lam * complex_log_volumes(v, cx).sum()

    assert torch.autograd.gradcheck(regulariser, (vertices,))
    assert torch.autograd.gradcheck(lambda v: complex_log_volume(v, cx), (vertices,))


def test_gradient_flows_through_dict_vertices():
    flat = _two_triangles().requires_grad_()
    complex_log_volumes(flat, TRIANGLES).sum().backward()
    named = {name: t.detach().requires_grad_() for name, t in _as_dict(flat.detach()).items()}
    complex_log_volumes(named, TRIANGLES).sum().backward()
    for name, expected in _as_dict(flat.grad).items():
        assert_close(named[name].grad, expected)


def test_volume_argument_errors():
    with pytest.raises(ValueError, match="hold 3 vertices but the complex has 4"):
        complex_log_volumes(torch.zeros(3, 5), TRIANGLES)
    with pytest.raises(ValueError, match="must be a SimplicialComplex"):
        complex_log_volumes(torch.zeros(4, 5), [(0, 1, 2), (1, 2, 3)])


# --- sampling -------------------------------------------------------------------------------

# Three triangles of deliberately unequal areas 1 : 3 : 6 (scaled right triangles).
UNEQUAL = SimplicialComplex([(0, 1, 2), (0, 3, 4), (0, 5, 6)], n_vertices=7)
UNEQUAL_AREAS = np.array([1.0, 3.0, 6.0])


def _unequal_vertices():
    planar = [[0.0, 0.0]]  # the shared right-angle vertex; one quadrant per triangle
    for area, (sx, sy) in zip(UNEQUAL_AREAS, [(-1, 1), (1, -1), (-1, -1)], strict=True):
        leg = math.sqrt(2 * area)
        planar += [[sx * leg, 0.0], [0.0, sy * leg]]
    return _embed(torch.tensor(planar, dtype=F64), 5, seed=9)


def _counts(chosen, n_simplexes):
    return torch.bincount(chosen, minlength=n_simplexes).numpy()


def test_unequal_vertices_have_the_intended_areas():  # the oracle's own premise
    log_volumes = complex_log_volumes(_unequal_vertices(), UNEQUAL)
    assert_allclose(log_volumes.exp().numpy(), UNEQUAL_AREAS, rtol=1e-12)


def test_volume_weighting_draws_simplexes_in_proportion_to_their_volume():
    n = 20_000
    log_volumes = complex_log_volumes(_unequal_vertices(), UNEQUAL)
    _, chosen = sample_complex(n, UNEQUAL, log_volumes, generator=_gen(0))
    counts = _counts(chosen, 3)
    expected = n * UNEQUAL_AREAS / UNEQUAL_AREAS.sum()
    assert chisquare(counts, expected).pvalue > 1e-3


def test_equal_weighting_draws_simplexes_equally_not_by_volume():
    n = 20_000
    log_volumes = complex_log_volumes(_unequal_vertices(), UNEQUAL)
    _, chosen = sample_complex(n, UNEQUAL, log_volumes, weighting="equal", generator=_gen(1))
    counts = _counts(chosen, 3)
    assert chisquare(counts, np.full(3, n / 3)).pvalue > 1e-3
    by_volume = n * UNEQUAL_AREAS / UNEQUAL_AREAS.sum()
    assert chisquare(counts, by_volume).pvalue < 1e-12
    _, without_volumes = sample_complex(n, UNEQUAL, weighting="equal", generator=_gen(1))
    assert torch.equal(without_volumes, chosen)  # log_volumes play no part


def test_volume_weighting_is_stable_for_huge_log_volumes_and_skips_degenerate_simplexes():
    n = 20_000
    log_volumes = torch.tensor([math.log(1.0), -math.inf, math.log(3.0)], dtype=F64) + 5000.0
    cx = SimplicialComplex([(0, 1), (1, 2), (2, 3)], n_vertices=4)
    _, chosen = sample_complex(n, cx, log_volumes, generator=_gen(2))
    counts = _counts(chosen, 3)
    assert counts[1] == 0
    assert chisquare(counts[[0, 2]], [n / 4, 3 * n / 4]).pvalue > 1e-3


@pytest.mark.parametrize("weighting", ["volume", "equal"])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_samples_are_barycentric_rows_supported_on_the_chosen_simplex(weighting, dtype):
    n = 2000
    vertices = _unequal_vertices()
    log_volumes = complex_log_volumes(vertices, UNEQUAL)
    coefficients, chosen = sample_complex(
        n, UNEQUAL, log_volumes, weighting=weighting, generator=_gen(3), dtype=dtype
    )
    assert coefficients.shape == (n, 7)
    assert coefficients.dtype == dtype
    assert chosen.shape == (n,)
    assert chosen.dtype == torch.int64
    assert bool(((chosen >= 0) & (chosen < 3)).all())
    assert bool((coefficients >= 0).all())
    assert_close(coefficients.sum(dim=1), torch.ones(n, dtype=dtype))
    outside = ~UNEQUAL.incidence()[chosen]
    assert bool((coefficients[outside] == 0).all())
    assert bool((coefficients[~outside] > 0).all())
    # Within its simplex each row is Dirichlet(1, 1, 1): every coordinate has mean 1/3.
    inside = coefficients[~outside].reshape(n, 3).to(F64)
    std_error = math.sqrt(2 / (9 * 4) / n)  # Beta(1, 2) variance 2 / (3^2 * 4)
    assert_allclose(inside.mean(dim=0).numpy(), 1 / 3, rtol=0, atol=4 * std_error)
    # The points are convex combinations of the chosen simplex's vertices only.
    points = simplex_points(vertices, coefficients.to(F64))
    for j, simplex in enumerate(UNEQUAL.simplexes):
        rows = chosen == j
        local = coefficients[rows][:, list(simplex)].to(F64)
        assert_close(points[rows], local @ vertices[list(simplex)])


def test_sampling_is_reproducible_and_leaves_the_global_rng_alone(global_rng_untouched):
    log_volumes = torch.log(torch.tensor(UNEQUAL_AREAS))
    for weighting in ("volume", "equal"):
        first = sample_complex(50, UNEQUAL, log_volumes, weighting=weighting, generator=_gen(4))
        again = sample_complex(50, UNEQUAL, log_volumes, weighting=weighting, generator=_gen(4))
        other = sample_complex(50, UNEQUAL, log_volumes, weighting=weighting, generator=_gen(5))
        assert torch.equal(first[0], again[0])
        assert torch.equal(first[1], again[1])
        assert not torch.equal(first[0], other[0])


def test_zero_samples_and_zero_dimensional_complex():
    coefficients, chosen = sample_complex(0, UNEQUAL, torch.zeros(3), generator=_gen(6), dtype=F64)
    assert coefficients.shape == (0, 7)
    assert coefficients.dtype == F64
    assert chosen.shape == (0,)
    points = connector_complex(3, 0)  # a deep ensemble: each simplex is one mode
    log_volumes = complex_log_volumes(torch.randn(3, 4, generator=_gen(6)), points)
    assert torch.equal(log_volumes, torch.zeros(3, dtype=F64))
    coefficients, chosen = sample_complex(10, points, log_volumes, generator=_gen(6))
    assert torch.equal(coefficients, torch.nn.functional.one_hot(chosen, 3).float())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(weighting="uniform"), r"unknown weighting 'uniform'.*'volume', 'equal'"),
        (dict(log_volumes=None), "weighting='volume' needs log_volumes"),
        (dict(log_volumes=torch.zeros(2)), r"shape \(3,\), one per simplex; got \(2,\)"),
        (dict(log_volumes=[0.0, 0.0, 0.0]), r"shape \(3,\).*got list"),
        (dict(log_volumes=torch.tensor([0.0, math.nan, 1.0])), "NaN or \\+inf"),
        (dict(log_volumes=torch.tensor([0.0, math.inf, 1.0])), "NaN or \\+inf"),
        (dict(log_volumes=torch.full((3,), -math.inf)), "every simplex .* is degenerate"),
        (dict(n_samples=-1), "n_samples must be >= 0"),
        (dict(complex=[(0, 1, 2)]), "must be a SimplicialComplex"),
    ],
)
def test_invalid_sampling_arguments_raise(kwargs, match):
    arguments = dict(n_samples=5, complex=UNEQUAL, log_volumes=torch.zeros(3))
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sample_complex(generator=_gen(7), **arguments)


def test_indices_are_built_once_per_device():
    # Sampling in a training step must not copy the simplexes to the device again.
    complex_ = SimplicialComplex([(0, 2), (1, 2)], 3)
    assert complex_.indices() is complex_.indices()
    assert complex_.indices("cpu") is complex_.indices("cpu")
    assert torch.equal(complex_.indices(), torch.tensor([[0, 2], [1, 2]]))
    restored = pickle.loads(pickle.dumps(complex_))
    assert torch.equal(restored.indices(), complex_.indices())
