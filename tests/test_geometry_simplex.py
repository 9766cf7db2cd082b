"""Oracles for simplexens.geometry.simplex: closed forms, a second method, statistical bounds."""

import math

import pytest
import torch
from numpy.testing import assert_allclose
from scipy.spatial import ConvexHull
from scipy.stats import beta, kstest
from torch.testing import assert_close

from simplexens.geometry.simplex import (
    cayley_menger_volume_squared,
    gram_matrix,
    log_volume,
    sample_barycentric,
    simplex_points,
)

F64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _random_vertices(n_vertices, dim, seed, dtype=F64):
    return torch.randn(n_vertices, dim, generator=_gen(seed), dtype=dtype)


def _unit_simplex(k, dim):
    """The origin and the k unit vectors of R^k, padded with zeros to R^dim."""
    vertices = torch.zeros(k + 1, dim, dtype=F64)
    vertices[1:, :k] = torch.eye(k, dtype=F64)
    return vertices


SHAPES = {"weight": (2, 3), "bias": (4,), "conv": (5, 1, 2)}  # 6 + 4 + 10 = 20 values


def _as_dict(flat):
    """Split flat vertices (k+1, 20) into named stacked tensors of different shapes."""
    sizes = [math.prod(shape) for shape in SHAPES.values()]
    pieces = torch.split(flat, sizes, dim=1)
    return {
        name: piece.reshape(flat.shape[0], *shape)
        for (name, shape), piece in zip(SHAPES.items(), pieces, strict=True)
    }


# --- volumes -------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("extra_dims", [0, 3])
def test_unit_right_simplex_has_volume_one_over_k_factorial(k, extra_dims):
    vertices = _unit_simplex(k, k + extra_dims)
    expected = 1.0 / math.factorial(k)
    assert_close(log_volume(vertices).exp(), torch.tensor(expected, dtype=F64))
    assert_close(cayley_menger_volume_squared(vertices).sqrt(), torch.tensor(expected, dtype=F64))
    assert_close(gram_matrix(vertices), torch.eye(k, dtype=F64))


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_volume_agrees_with_cayley_menger_and_convex_hull(dim, seed):
    vertices = _random_vertices(dim + 1, dim, seed)
    log_v = log_volume(vertices).item()
    assert_allclose(
        log_v, 0.5 * math.log(cayley_menger_volume_squared(vertices).item()), rtol=1e-9
    )
    assert_allclose(math.exp(log_v), ConvexHull(vertices.numpy()).volume, rtol=1e-9)


@pytest.mark.parametrize("seed", [0, 1])
def test_volume_of_random_simplex_in_higher_dimension_agrees_with_cayley_menger(seed):
    vertices = _random_vertices(5, 9, seed)  # a 4-simplex in R^9
    assert_allclose(
        2 * log_volume(vertices).item(),
        math.log(cayley_menger_volume_squared(vertices).item()),
        rtol=1e-9,
    )


@pytest.mark.parametrize("k", [1, 2, 3])
def test_volume_scales_as_c_to_the_k(k):
    vertices = _random_vertices(k + 1, k + 2, seed=k)
    assert_close(log_volume(3 * vertices), log_volume(vertices) + k * math.log(3))


def test_dict_form_equals_flat_form():
    flat = _random_vertices(4, 20, seed=7)
    named = _as_dict(flat)
    assert_close(gram_matrix(named), gram_matrix(flat))
    assert_close(log_volume(named), log_volume(flat))
    assert_close(cayley_menger_volume_squared(named), cayley_menger_volume_squared(flat))


def test_float32_vertices_give_float64_results():
    vertices = _random_vertices(3, 5, seed=3, dtype=torch.float32)
    assert gram_matrix(vertices).dtype == F64
    assert log_volume(vertices).dtype == F64
    assert cayley_menger_volume_squared(vertices).dtype == F64
    assert_close(log_volume(vertices), log_volume(vertices.to(F64)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_volume_invariant_under_translation_and_rotation(seed):
    gen = _gen(seed)
    dim = 7
    vertices = torch.randn(4, dim, generator=gen, dtype=F64)
    shift = 10 * torch.randn(dim, generator=gen, dtype=F64)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=F64))
    assert_close(q.T @ q, torch.eye(dim, dtype=F64))  # the oracle's own premise
    for moved in (vertices + shift, vertices @ q.T, vertices @ q.T + shift):
        assert_close(log_volume(moved), log_volume(vertices))
        assert_close(cayley_menger_volume_squared(moved), cayley_menger_volume_squared(vertices))
        assert_close(gram_matrix(moved), gram_matrix(vertices), rtol=1e-9, atol=1e-9)


def test_log_volume_gradient_matches_finite_differences():
    vertices = _random_vertices(4, 6, seed=11).requires_grad_()  # a 3-simplex in R^6
    assert torch.autograd.gradcheck(log_volume, (vertices,))
    assert torch.autograd.gradcheck(cayley_menger_volume_squared, (vertices,))


def test_gradients_flow_through_dict_form():
    flat = _random_vertices(4, 20, seed=5).requires_grad_()
    log_volume(flat).backward()
    named = {name: t.detach().requires_grad_() for name, t in _as_dict(flat.detach()).items()}
    log_volume(named).backward()
    for name, expected in _as_dict(flat.grad).items():
        assert named[name].grad is not None
        assert_close(named[name].grad, expected)


@pytest.mark.parametrize("repeat", [(0, 1), (1, 3), (2, 3)])
def test_degenerate_simplex_has_zero_volume(repeat):
    vertices = _random_vertices(4, 6, seed=2)
    vertices[repeat[1]] = vertices[repeat[0]]
    assert log_volume(vertices).item() == -math.inf
    assert_close(
        cayley_menger_volume_squared(vertices),
        torch.tensor(0.0, dtype=F64),
        atol=1e-10,
        rtol=0,
    )


def test_single_vertex_convention():
    vertex = _random_vertices(1, 5, seed=0).requires_grad_()
    assert gram_matrix(vertex).shape == (0, 0)
    log_v = log_volume(vertex)
    assert_close(log_v, torch.tensor(0.0, dtype=F64))
    assert_close(cayley_menger_volume_squared(vertex), torch.tensor(1.0, dtype=F64))
    log_v.backward()
    assert_close(vertex.grad, torch.zeros_like(vertex))


# --- sampling ------------------------------------------------------------------------------


def test_samples_lie_in_the_simplex():
    weights = sample_barycentric(1000, 5, generator=_gen(0))
    assert weights.shape == (1000, 5)
    assert weights.dtype == torch.float32
    assert bool((weights >= 0).all())
    assert_close(weights.sum(dim=1), torch.ones(1000))


def test_sample_mean_is_centroid():
    n, n_vertices = 200_000, 4
    weights = sample_barycentric(n, n_vertices, generator=_gen(1), dtype=F64)
    k = n_vertices - 1
    std_error = math.sqrt(k / (n_vertices**2 * (n_vertices + 1)) / n)  # Beta(1, k) variance
    assert_allclose(weights.mean(dim=0).numpy(), 1 / n_vertices, rtol=0, atol=4 * std_error)


@pytest.mark.parametrize("n_vertices", [2, 4, 6])
def test_barycentric_coordinate_is_beta_1_k(n_vertices):
    weights = sample_barycentric(5000, n_vertices, generator=_gen(2), dtype=F64)
    for column in (0, n_vertices - 1):
        result = kstest(weights[:, column].numpy(), beta(1, n_vertices - 1).cdf)
        assert result.pvalue > 1e-3


def test_sampling_is_reproducible_from_the_generator():
    first = sample_barycentric(50, 4, generator=_gen(3))
    again = sample_barycentric(50, 4, generator=_gen(3))
    other = sample_barycentric(50, 4, generator=_gen(4))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_sampling_with_generator_leaves_global_rng_alone():
    state = torch.get_rng_state()
    sample_barycentric(100, 3, generator=_gen(5))
    assert torch.equal(torch.get_rng_state(), state)


def test_sampling_dtype_device_and_single_vertex():
    weights = sample_barycentric(7, 1, generator=_gen(6), device="cpu", dtype=F64)
    assert weights.dtype == F64
    assert weights.device == torch.device("cpu")
    assert torch.equal(weights, torch.ones(7, 1, dtype=F64))
    assert sample_barycentric(0, 3, generator=_gen(6)).shape == (0, 3)


# --- points --------------------------------------------------------------------------------


def test_one_hot_weights_return_the_vertices():
    flat = _random_vertices(4, 20, seed=8, dtype=torch.float32)
    one_hot = torch.eye(4)[[2, 0, 3, 1, 2]]
    assert torch.equal(simplex_points(flat, one_hot), flat[[2, 0, 3, 1, 2]])
    named = _as_dict(flat)
    points = simplex_points(named, one_hot)
    assert set(points) == set(named)
    for name, t in named.items():
        assert torch.equal(points[name], t[[2, 0, 3, 1, 2]])


def test_dict_points_equal_flat_points():
    flat = _random_vertices(4, 20, seed=9)
    weights = sample_barycentric(6, 4, generator=_gen(9), dtype=F64)
    expected = simplex_points(flat, weights)
    assert expected.shape == (6, 20)
    assert_close(expected, weights @ flat)
    for name, t in simplex_points(_as_dict(flat), weights).items():
        assert t.shape == (6, *SHAPES[name])
        assert_close(t, _as_dict(expected)[name])


def test_points_keep_vertex_dtype_and_are_differentiable():
    flat = _random_vertices(3, 5, seed=10, dtype=torch.float32).requires_grad_()
    weights = sample_barycentric(8, 3, generator=_gen(10), dtype=F64)
    points = simplex_points(flat, weights)
    assert points.dtype == torch.float32
    points.sum().backward()
    expected = weights.sum(dim=0, keepdim=True).T.expand(3, 5).float()
    assert_close(flat.grad, expected)


# --- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vertices", "match"),
    [
        (torch.zeros(0, 3), "at least 1 vertex"),
        (torch.zeros(3), r"shape \(k\+1, P\)"),
        ({}, "empty dict"),
        ({"a": torch.zeros(3, 2), "b": torch.zeros(4)}, "disagree on the number of vertices"),
        ({"a": torch.tensor(1.0)}, r"vertices\['a'\] must be a tensor"),
        (torch.zeros(3, 2, dtype=torch.int64), "floating point"),
        ([[0.0, 1.0], [1.0, 0.0]], "tensor or a dict"),
    ],
)
def test_invalid_vertices_raise(vertices, match):
    for function in (gram_matrix, log_volume, cayley_menger_volume_squared):
        with pytest.raises(ValueError, match=match):
            function(vertices)
    with pytest.raises(ValueError, match=match):
        simplex_points(vertices, torch.ones(1, 3))


def test_invalid_weights_raise():
    vertices = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="2 columns but the simplex has 3 vertices"):
        simplex_points(vertices, torch.ones(5, 2))
    with pytest.raises(ValueError, match=r"shape \(n_samples, k\+1\)"):
        simplex_points({"a": vertices}, torch.ones(3))


def test_invalid_sample_sizes_raise():
    with pytest.raises(ValueError, match="n_vertices must be >= 1"):
        sample_barycentric(3, 0)
    with pytest.raises(ValueError, match="n_samples must be >= 0"):
        sample_barycentric(-1, 3)
