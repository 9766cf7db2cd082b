"""Tests for simplexens.backends.swag.SWAGMoments against direct computations.

Oracles: :class:`torch.optim.swa_utils.AveragedModel` for the mean, the stacked trajectory for
the second moment and the deviations (prefix means recomputed by hand, or kept in a plain
first-in-first-out list), and the closed-form covariance ``scale * (diag(var) + D^T D /
(K_eff - 1))`` for the sampler, with tolerances from the standard error of an empirical
covariance entry, ``sqrt((S_ii S_jj + S_ij^2) / N)``.
"""

import pickle
from collections import deque
from copy import deepcopy

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.testing import assert_close

from simplexens.backends.swag import SWAGMoments, sample_many

SHAPES = {"a": (2, 2), "b": (4,)}  # P = 8 numbers in two tensors
N_SE = 5.0  # tolerance in standard errors, per entry


pytestmark = pytest.mark.usefixtures("global_rng_untouched")


# --------------------------------------------------------------------------- helpers


def _trajectory(n, seed=0, shapes=SHAPES, dtype=torch.float64):
    """``n`` snapshots of a random walk (correlated across tensors), as dicts of tensors."""
    g = torch.Generator().manual_seed(seed)
    size = sum(torch.Size(s).numel() for s in shapes.values())
    walk = torch.randn(n, size, generator=g, dtype=dtype).cumsum(0)
    return [_unflatten(row, shapes) for row in walk]


def _unflatten(row, shapes):
    out, start = {}, 0
    for name, shape in shapes.items():
        numel = torch.Size(shape).numel()
        out[name] = row[start : start + numel].reshape(shape)
        start += numel
    return out


def _flat(tensors, batch_dims=0):
    """Concatenate the tensors of a dict (in SHAPES order) after ``batch_dims`` leading dims."""
    lead = next(iter(tensors.values())).shape[:batch_dims]
    return torch.cat([tensors[name].reshape(*lead, -1) for name in SHAPES], dim=-1)


def _collected(trajectory, max_rank, **kwargs):
    moments = SWAGMoments(max_rank=max_rank, **kwargs)
    for snapshot in trajectory:
        moments.collect(snapshot)
    return moments


def _oracle_deviations(trajectory):
    """(n, P): row i is theta_i minus the mean of the first i snapshots (i = 1..n)."""
    flat = torch.stack([_flat(s) for s in trajectory])
    prefix_means = flat.cumsum(0) / torch.arange(1, len(flat) + 1, dtype=flat.dtype)[:, None]
    return flat - prefix_means


def _oracle_covariance(trajectory, max_rank, scale, covariance, normaliser=None):
    """(P, P): scale * (diag(var) + D^T D / (K_eff - 1)), D the newest K_eff deviations."""
    flat = torch.stack([_flat(s) for s in trajectory])
    cov = torch.diag(flat.var(dim=0, correction=0))
    deviations = _oracle_deviations(trajectory)[-max_rank:]
    if covariance == "full" and len(deviations) >= 2:
        normaliser = len(deviations) - 1 if normaliser is None else normaliser
        cov = cov + deviations.T @ deviations / normaliser
    return scale * cov


def _standard_errors(cov, n):
    """(P, P): the standard error of each entry of an empirical covariance from n draws."""
    d = torch.diagonal(cov)
    return torch.sqrt((d[:, None] * d[None, :] + cov.square()) / n)


def _within(empirical, expected, se):
    return bool(((empirical - expected).abs() <= N_SE * se).all())


def _two_layer_net():
    """Linear(5, 3) + Linear(3, 2), left uninitialised (no draw from the global RNG)."""
    return nn.Sequential(
        nn.utils.skip_init(nn.Linear, 5, 3), nn.ReLU(), nn.utils.skip_init(nn.Linear, 3, 2)
    )


# --------------------------------------------------------------------------- moments


def test_mean_matches_averaged_model():
    model = _two_layer_net()
    g = torch.Generator().manual_seed(1)
    states = [
        {name: torch.randn(p.shape, generator=g) for name, p in model.named_parameters()}
        for _ in range(12)
    ]
    moments = SWAGMoments(max_rank=5)
    average = None
    for state in states:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(state[name])
        if average is None:
            average = AveragedModel(model)
        average.update_parameters(model)
        moments.collect(dict(model.named_parameters()))
    assert moments.n_collected == 12
    expected = dict(average.module.named_parameters())
    assert set(moments.mean) == set(expected)
    for name, mean in moments.mean.items():
        assert not mean.requires_grad
        assert_close(mean, expected[name].detach())
        assert_close(mean, torch.stack([s[name] for s in states]).mean(0))


def test_sq_mean_is_mean_of_squares():
    trajectory = _trajectory(9, dtype=torch.float32)
    moments = _collected(trajectory, max_rank=3)
    for name in SHAPES:
        expected = torch.stack([s[name] for s in trajectory]).square().mean(0)
        assert_close(moments.sq_mean[name], expected)


def test_variance_keeps_its_precision_for_a_trajectory_that_barely_moves():
    # float32 weights near 1 moving by 1e-4: E[θ²] - θ̄² cancels almost every digit in
    # float32; accumulated in float64 it matches numpy's float64 variance of the same float32
    # snapshots (the oracle).
    generator = torch.Generator().manual_seed(3)
    base = 1.0 + torch.rand(200, generator=generator)
    trajectory = [
        {"w": (base + 1e-4 * torch.randn(200, generator=generator)).float()} for _ in range(50)
    ]
    moments = SWAGMoments(max_rank=5)
    for snapshot in trajectory:
        moments.collect(snapshot)
    stacked = np.stack([t["w"].numpy().astype(np.float64) for t in trajectory])
    assert_allclose(moments.variance()["w"].numpy(), stacked.var(axis=0), rtol=1e-6)
    assert moments.mean["w"].dtype == torch.float32


@pytest.mark.parametrize("max_rank", [1, 4, 20, 10**6])
def test_deviation_buffer_holds_newest_in_order(max_rank):
    trajectory = _trajectory(11)
    oracle = _oracle_deviations(trajectory)
    moments = SWAGMoments(max_rank=max_rank)
    for i, snapshot in enumerate(trajectory, start=1):
        moments.collect(snapshot)
        n_dev = min(i, max_rank)
        assert moments.n_deviations == n_dev
        deviations = moments.deviations
        for name, shape in SHAPES.items():
            assert deviations[name].shape == (n_dev, *shape)
        assert_close(_flat(deviations, batch_dims=1), oracle[i - n_dev : i])


@pytest.mark.parametrize(
    ("max_rank", "expected_collections"),
    [(1, None), (5, None), (6, 3), (6, 0), (7, 40), (10**6, None), (10**6, 9)],
)
def test_growing_buffer_keeps_the_newest_deviations_of_a_list_oracle(
    max_rank, expected_collections
):
    """Every collect: the deviations equal a deque of the last K, and the capacity is bounded.

    The bounds: n_deviations <= capacity <= min(K, 2 n_deviations); capacity == K once K
    deviations are held; capacity <= expected_collections while n does not exceed it.
    """
    trajectory = _trajectory(23, seed=2)
    oracle = deque(maxlen=max_rank)
    seen = []
    moments = SWAGMoments(max_rank=max_rank, expected_collections=expected_collections)
    assert moments.capacity == 0
    for n, snapshot in enumerate(trajectory, start=1):
        seen.append(_flat(snapshot))
        oracle.append(seen[-1] - torch.stack(seen).mean(0))
        moments.collect(snapshot)

        n_dev = min(n, max_rank)
        assert n_dev <= moments.capacity <= min(max_rank, 2 * n_dev)
        if n >= max_rank:
            assert moments.capacity == max_rank
        if expected_collections is not None and n <= expected_collections:
            assert moments.capacity <= expected_collections
        assert_close(_flat(moments.deviations, batch_dims=1), torch.stack(list(oracle)))


def test_variance_is_clamped():
    constant = [{"a": torch.ones(2, 2), "b": torch.zeros(4)} for _ in range(3)]
    moments = _collected(constant, max_rank=2)
    for variance in moments.variance(var_clamp=1e-6).values():
        assert_close(variance, torch.full_like(variance, 1e-6))
    trajectory = _trajectory(7)
    moments = _collected(trajectory, max_rank=2)
    flat = torch.stack([_flat(s) for s in trajectory])
    assert_close(_flat(moments.variance()), flat.var(dim=0, correction=0))


# --------------------------------------------------------------------------- sampler


N_DRAWS = 200_000


@pytest.mark.parametrize(
    ("n_collect", "max_rank"),
    [(5, 20), (13, 4), (2, 3)],
    ids=["fewer-than-max-rank", "buffer-wrapped", "two-deviations"],
)
@pytest.mark.parametrize("covariance", ["full", "diagonal"])
def test_sample_batch_mean_and_covariance(n_collect, max_rank, covariance):
    scale = 0.5
    trajectory = _trajectory(n_collect, seed=n_collect)
    moments = _collected(trajectory, max_rank=max_rank)
    g = torch.Generator().manual_seed(3)
    draws = _flat(moments.sample_batch(g, N_DRAWS, covariance=covariance), batch_dims=1)
    assert draws.shape == (N_DRAWS, 8)
    assert draws.dtype == torch.float64

    expected = _oracle_covariance(trajectory, max_rank, scale, covariance)
    mean_se = torch.sqrt(torch.diagonal(expected) / N_DRAWS)
    mean = torch.stack([_flat(s) for s in trajectory]).mean(0)
    assert ((draws.mean(0) - mean).abs() <= N_SE * mean_se).all()

    empirical = torch.cov(draws.T)
    se = _standard_errors(expected, N_DRAWS)
    assert _within(empirical, expected, se), (empirical - expected) / se
    if covariance == "full" and n_collect < max_rank:
        # The normaliser is K_eff - 1: max_rank - 1 gives a detectably different covariance.
        wrong = _oracle_covariance(trajectory, max_rank, scale, covariance, max_rank - 1)
        assert not _within(empirical, wrong, se)


def test_low_rank_term_couples_tensors():
    scale = 0.5
    trajectory = _trajectory(6, seed=4)
    moments = _collected(trajectory, max_rank=20)
    g = torch.Generator().manual_seed(5)
    draws = _flat(moments.sample_batch(g, N_DRAWS), batch_dims=1)
    deviations = _oracle_deviations(trajectory)
    cross = scale * deviations.T @ deviations / (len(deviations) - 1)
    i, j = 1, 4 + 2  # a[0, 1] and b[2]
    expected = _oracle_covariance(trajectory, 20, scale, "full")
    se = _standard_errors(expected, N_DRAWS)[i, j]
    empirical = torch.cov(draws[:, [i, j]].T)[0, 1]
    assert abs(cross[i, j]) > 20 * se  # clearly nonzero
    assert abs(empirical - cross[i, j]) <= N_SE * se

    diagonal = _flat(moments.sample_batch(g, N_DRAWS, covariance="diagonal"), batch_dims=1)
    empirical = torch.cov(diagonal[:, [i, j]].T)[0, 1]
    assert abs(empirical) <= N_SE * se


def test_sample_many_covariance():
    """The one-at-a-time path, with fewer draws and so a looser (but still 5 SE) bound."""
    n, scale = 3000, 0.25
    trajectory = _trajectory(7, seed=6)
    moments = _collected(trajectory, max_rank=10)
    samples = sample_many(moments, n, torch.Generator().manual_seed(7), scale=scale)
    assert len(samples) == n
    assert all(s["a"].shape == (2, 2) and s["b"].shape == (4,) for s in samples)
    draws = torch.stack([_flat(s) for s in samples])
    expected = _oracle_covariance(trajectory, 10, scale, "full")
    assert _within(torch.cov(draws.T), expected, _standard_errors(expected, n))


@pytest.mark.parametrize("n_collect", [3, 7, 12])
@pytest.mark.parametrize(
    ("max_rank", "expected_collections"), [(4, None), (5, None), (5, 2), (10**6, None)]
)
def test_sample_batch_formula_with_the_documented_draws(n_collect, max_rank, expected_collections):
    """theta = mean + sqrt(s) (sqrt(var) z1 + D^T z2 / sqrt(K_eff - 1)), z2 first, then z1.

    At every stage of the buffer: spare rows (3 collects), grown past the hint, wrapped.
    """
    scale, n = 0.3, 4
    trajectory = _trajectory(n_collect, seed=10)
    moments = _collected(trajectory, max_rank=max_rank, expected_collections=expected_collections)
    deviations = _oracle_deviations(trajectory)[-max_rank:]
    g = torch.Generator().manual_seed(13)
    z2 = torch.randn(n, len(deviations), generator=g, dtype=torch.float64)
    z1 = {
        name: torch.randn(n, *shape, generator=g, dtype=torch.float64)
        for name, shape in SHAPES.items()
    }
    flat = torch.stack([_flat(s) for s in trajectory])
    sd = flat.var(dim=0, correction=0).sqrt()
    low_rank = z2 @ deviations / (len(deviations) - 1) ** 0.5
    expected = flat.mean(0) + scale**0.5 * (sd * _flat(z1, batch_dims=1) + low_rank)
    draws = moments.sample_batch(torch.Generator().manual_seed(13), n, scale=scale)
    assert_close(_flat(draws, batch_dims=1), expected)


def test_sample_many_is_repeated_sample():
    moments = _collected(_trajectory(5), max_rank=3)
    many = sample_many(moments, 4, torch.Generator().manual_seed(8), covariance="full")
    g = torch.Generator().manual_seed(8)
    for sample in many:
        assert_close(sample, moments.sample(g), rtol=0, atol=0)


def test_one_deviation_has_no_low_rank_term():
    moments = _collected(_trajectory(1), max_rank=5)
    full = moments.sample(torch.Generator().manual_seed(0), covariance="full")
    diagonal = moments.sample(torch.Generator().manual_seed(0), covariance="diagonal")
    assert_close(full, diagonal, rtol=0, atol=0)
    assert_close(full, moments.mean)  # variance clamped to 1e-30


def test_scale_zero_gives_the_mean():
    moments = _collected(_trajectory(8), max_rank=3)
    assert_close(moments.sample(torch.Generator().manual_seed(0), scale=0.0), moments.mean)


def test_mixed_dtypes():
    trajectory = [{"a": s["a"].float(), "b": s["b"]} for s in _trajectory(5, dtype=torch.float64)]
    moments = _collected(trajectory, max_rank=3)
    sample = moments.sample(torch.Generator().manual_seed(0))
    assert sample["a"].dtype == torch.float32
    assert sample["b"].dtype == torch.float64


# --------------------------------------------------------------------------- randomness


def test_same_seed_same_samples_other_seed_other_samples():
    moments = _collected(_trajectory(9), max_rank=4)
    first = moments.sample(torch.Generator().manual_seed(11))
    again = moments.sample(torch.Generator().manual_seed(11))
    other = moments.sample(torch.Generator().manual_seed(12))
    assert_close(first, again, rtol=0, atol=0)
    for name in SHAPES:
        assert not torch.equal(first[name], other[name])
    batch = moments.sample_batch(torch.Generator().manual_seed(11), 3)
    assert_close(batch, moments.sample_batch(torch.Generator().manual_seed(11), 3), rtol=0, atol=0)


def test_global_rng_not_used():
    before = torch.get_rng_state()
    moments = _collected(_trajectory(4), max_rank=2)
    moments.sample(torch.Generator().manual_seed(0))
    moments.sample_batch(torch.Generator().manual_seed(0), 5, covariance="diagonal")
    assert_close(torch.get_rng_state(), before, rtol=0, atol=0)


# --------------------------------------------------------------------------- devices


def test_device_defaults_to_the_first_tensors():
    moments = _collected(_trajectory(2), max_rank=2)
    assert moments.device == torch.device("cpu")
    assert all(t.device.type == "cpu" for t in moments.mean.values())


def test_device_is_where_statistics_live():
    moments = _collected(_trajectory(3), max_rank=2, device="meta")
    assert moments.device == torch.device("meta")
    for stats in (moments.mean, moments.sq_mean, moments.deviations):
        assert all(t.device.type == "meta" for t in stats.values())
    moments = _collected(_trajectory(3), max_rank=2, device="cpu")
    assert all(t.device.type == "cpu" for t in moments.deviations.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_tensors():
    trajectory = [{k: v.cuda() for k, v in s.items()} for s in _trajectory(6)]
    on_host = _collected(trajectory, max_rank=3, device="cpu")
    assert all(t.device.type == "cpu" for t in on_host.mean.values())
    on_host.sample(torch.Generator(device="cpu").manual_seed(0))

    on_gpu = SWAGMoments(max_rank=3)
    g = torch.Generator(device="cuda").manual_seed(0)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for snapshot in trajectory:
            on_gpu.collect(snapshot)
        sample = on_gpu.sample(g)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert on_gpu.device.type == "cuda"
    assert all(t.device.type == "cuda" for t in sample.values())
    assert_close({k: v.cpu() for k, v in on_gpu.mean.items()}, on_host.mean)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("max_rank", [0, -1, 2.5, True])
def test_bad_max_rank(max_rank):
    with pytest.raises(ValueError, match="max_rank must be an integer >= 1"):
        SWAGMoments(max_rank=max_rank)


@pytest.mark.parametrize("expected_collections", [-1, 2.5, True, "3"])
def test_bad_expected_collections(expected_collections):
    with pytest.raises(ValueError, match="expected_collections must be None or an integer >= 0"):
        SWAGMoments(expected_collections=expected_collections)


def test_bad_covariance():
    moments = _collected(_trajectory(3), max_rank=2)
    with pytest.raises(ValueError, match=r"covariance must be one of \('full', 'diagonal'\)"):
        moments.sample(torch.Generator(), covariance="low-rank")


def test_negative_scale():
    moments = _collected(_trajectory(3), max_rank=2)
    with pytest.raises(ValueError, match="scale must be >= 0"):
        moments.sample(torch.Generator(), scale=-1.0)


def test_sample_before_collect():
    with pytest.raises(RuntimeError, match=r"call collect\(\) at least once"):
        SWAGMoments().sample(torch.Generator())


def test_collect_checks_names_shapes_and_dtypes():
    moments = _collected(_trajectory(1), max_rank=2)
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        moments.collect({"a": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="tensor 'b' has shape"):
        moments.collect({"a": torch.zeros(2, 2), "b": torch.zeros(5)})
    with pytest.raises(TypeError, match="floating point"):
        SWAGMoments().collect({"steps": torch.zeros(3, dtype=torch.int64)})
    with pytest.raises(ValueError, match="empty"):
        SWAGMoments().collect({})
    assert moments.n_collected == 1


# --------------------------------------------------------------------------- state


def test_pickle_round_trip_gives_identical_samples():
    moments = _collected(_trajectory(7), max_rank=3)  # wrapped ring buffer
    copy = pickle.loads(pickle.dumps(moments))
    assert copy.n_collected == 7
    expected = moments.sample(torch.Generator().manual_seed(21))
    assert_close(copy.sample(torch.Generator().manual_seed(21)), expected, rtol=0, atol=0)


@pytest.mark.parametrize("max_rank", [6, 10**6])
@pytest.mark.parametrize("n_collect", [1, 3, 5, 9])
def test_pickle_round_trip_while_the_buffer_grows(n_collect, max_rank):
    """The copy holds no spare rows, samples the same, and keeps collecting the same."""
    trajectory = _trajectory(n_collect + 6, seed=12)
    moments = _collected(trajectory[:n_collect], max_rank=max_rank)
    restored = pickle.loads(pickle.dumps(moments))
    assert restored.capacity == restored.n_deviations == min(n_collect, max_rank)
    for attribute in ("mean", "sq_mean", "deviations"):
        assert_close(getattr(restored, attribute), getattr(moments, attribute), rtol=0, atol=0)
    for snapshot in [None, *trajectory[n_collect:]]:
        if snapshot is not None:
            moments.collect(snapshot)
            restored.collect(snapshot)
        assert_close(restored.deviations, moments.deviations, rtol=0, atol=0)
        expected = moments.sample_batch(torch.Generator().manual_seed(23), 3)
        assert_close(
            restored.sample_batch(torch.Generator().manual_seed(23), 3), expected, rtol=0, atol=0
        )
    assert restored.capacity <= min(max_rank, 2 * restored.n_deviations)


def test_unpickles_a_full_buffer_without_expected_collections():
    """Pickles of objects that allocated all K rows up front, before the hint existed."""
    moments = _collected(_trajectory(3), max_rank=5)
    state = deepcopy(moments.__getstate__())  # as unpickling gives it: no sharing
    del state["expected_collections"]
    state["_buffer"] = {
        name: torch.cat([rows, rows.new_zeros((5 - len(rows), *rows.shape[1:]))])
        for name, rows in state["_buffer"].items()
    }
    legacy = SWAGMoments.__new__(SWAGMoments)
    legacy.__setstate__(state)
    assert legacy.expected_collections is None
    assert legacy.capacity == 5
    expected = moments.sample(torch.Generator().manual_seed(24))
    assert_close(legacy.sample(torch.Generator().manual_seed(24)), expected, rtol=0, atol=0)
    for snapshot in _trajectory(4, seed=13):
        moments.collect(snapshot)
        legacy.collect(snapshot)
    assert_close(legacy.deviations, moments.deviations, rtol=0, atol=0)


@pytest.mark.parametrize("max_rank", [3, 10**6])
@pytest.mark.parametrize("n_collect", [0, 2, 7])
def test_state_dict_round_trip(n_collect, max_rank):
    moments = _collected(_trajectory(n_collect), max_rank=max_rank)
    state = pickle.loads(pickle.dumps(moments.state_dict()))
    assert state["n_collected"] == n_collect
    assert all(isinstance(t, torch.Tensor) for t in state["deviations"].values())
    for name, deviations in state["deviations"].items():
        # No spare rows in the state, nor in the object loading it.
        row_bytes = torch.Size(SHAPES[name]).numel() * deviations.element_size()
        assert deviations.untyped_storage().nbytes() == min(n_collect, max_rank) * row_bytes
    fresh = SWAGMoments(max_rank=max_rank)
    fresh.load_state_dict(state)
    assert fresh.n_collected == n_collect
    assert fresh.capacity == fresh.n_deviations
    for attribute in ("mean", "sq_mean", "deviations"):
        assert_close(getattr(fresh, attribute), getattr(moments, attribute), rtol=0, atol=0)
    if n_collect:
        # The restored buffer starts at row 0, the original does not: samples must not care.
        expected = moments.sample(torch.Generator().manual_seed(22))
        assert_close(fresh.sample(torch.Generator().manual_seed(22)), expected, rtol=0, atol=0)
        moments.collect(_trajectory(1, seed=9)[0])
        fresh.collect(_trajectory(1, seed=9)[0])
        assert_close(fresh.deviations, moments.deviations, rtol=0, atol=0)


def test_state_dict_is_a_copy():
    moments = _collected(_trajectory(3), max_rank=2)
    state = moments.state_dict()
    before = state["mean"]["a"].clone()
    moments.collect(_trajectory(1, seed=5)[0])
    assert_close(state["mean"]["a"], before, rtol=0, atol=0)


def test_load_state_dict_checks_max_rank():
    state = _collected(_trajectory(3), max_rank=2).state_dict()
    with pytest.raises(ValueError, match="max_rank 2, this object 3"):
        SWAGMoments(max_rank=3).load_state_dict(state)
