"""Tests for simplexens.backends.parallel: private_rng, member_seeds and run_members."""

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from torch.testing import assert_close

from simplexens.backends.parallel import SEED_HIGH, member_seeds, private_rng, run_members

pytestmark = pytest.mark.usefixtures("global_rng_untouched")


def _expected_draws(seed, n, device="cpu"):
    """The first ``n`` uniform draws of a generator seeded with ``seed``."""
    return torch.rand(n, generator=torch.Generator(device=device).manual_seed(seed), device=device)


# Top-level functions, so that loky workers can import them from this module.


def _power(base, exponent):
    return base**exponent


def _draw_member(seed, n):
    with private_rng(seed):
        return seed, torch.rand(n).tolist()


# --------------------------------------------------------------------------- private_rng


def test_private_rng_restores_global_state():
    before = torch.get_rng_state()
    with private_rng(123):
        torch.rand(100)
        torch.randn(10)
        torch.randint(0, 10, (5,))
        inside = torch.get_rng_state()
    # the block did move the generator, so the restoration below is not vacuous
    assert not torch.equal(inside, before)
    assert_close(torch.get_rng_state(), before, rtol=0, atol=0)


def test_private_rng_restores_global_state_on_exception():
    before = torch.get_rng_state()
    with pytest.raises(KeyError, match="boom"), private_rng(5):
        torch.rand(10)
        raise KeyError("boom")
    assert_close(torch.get_rng_state(), before, rtol=0, atol=0)


@pytest.mark.parametrize("seed", [0, 1, 2**31 - 2])
def test_private_rng_draws_from_seed(seed):
    with private_rng(seed):
        first = torch.rand(6)
    with private_rng(seed):
        second = torch.rand(6)
    assert_close(first, _expected_draws(seed, 6), rtol=0, atol=0)
    assert_close(second, first, rtol=0, atol=0)


def test_private_rng_different_seeds_differ():
    with private_rng(1):
        a = torch.rand(6)
    with private_rng(2):
        b = torch.rand(6)
    assert_close(a, _expected_draws(1, 6), rtol=0, atol=0)
    assert_close(b, _expected_draws(2, 6), rtol=0, atol=0)
    assert not torch.equal(a, b)


def test_private_rng_is_invisible_to_the_outer_stream():
    # Draws around a private block continue the outer stream as if the block were not there,
    # including for a nested private block.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        a = torch.rand(3)
        with private_rng(1):
            inner_a = torch.rand(2)
            with private_rng(2):
                innermost = torch.rand(2)
            inner_b = torch.rand(2)
        b = torch.rand(3)
    assert_close(torch.cat([a, b]), _expected_draws(7, 6), rtol=0, atol=0)
    assert_close(torch.cat([inner_a, inner_b]), _expected_draws(1, 4), rtol=0, atol=0)
    assert_close(innermost, _expected_draws(2, 2), rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_private_rng_cuda_restores_and_seeds_device():
    before_cpu, before_cuda = torch.get_rng_state(), torch.cuda.get_rng_state()
    with private_rng(9, "cuda"):
        drawn = torch.rand(5, device="cuda")
        torch.rand(5)
    assert_close(drawn, _expected_draws(9, 5, device="cuda"), rtol=0, atol=0)
    assert_close(torch.get_rng_state(), before_cpu, rtol=0, atol=0)
    assert_close(torch.cuda.get_rng_state(), before_cuda, rtol=0, atol=0)


# --------------------------------------------------------------------------- member_seeds


def test_member_seeds_reproducible_distinct_in_range():
    seeds = member_seeds(np.random.RandomState(0), 5)
    again = member_seeds(np.random.RandomState(0), 5)
    assert seeds == again
    assert len(seeds) == 5
    assert len(set(seeds)) == 5
    assert all(type(s) is int for s in seeds)
    assert all(0 <= s < 2**31 - 1 for s in seeds)
    assert SEED_HIGH == 2**31 - 1
    # closed form: numpy's bounded integers on the same stream
    expected = np.random.RandomState(0).randint(0, 2**31 - 1, size=5)
    assert_allclose(seeds, expected, rtol=0, atol=0)


def test_member_seeds_advance_the_random_state():
    rng = np.random.RandomState(0)
    first, second = member_seeds(rng, 3), member_seeds(rng, 3)
    assert_allclose(first + second, member_seeds(np.random.RandomState(0), 6), rtol=0, atol=0)
    assert first != second
    assert member_seeds(np.random.RandomState(1), 3) != first
    assert member_seeds(np.random.RandomState(0), 0) == []


def test_member_seeds_feed_private_rng():
    seeds = member_seeds(np.random.RandomState(0), 3)
    draws = []
    for seed in seeds:
        with private_rng(seed):
            draws.append(torch.rand(4))
    for seed, drawn in zip(seeds, draws, strict=True):
        assert_close(drawn, _expected_draws(seed, 4), rtol=0, atol=0)


# --------------------------------------------------------------------------- run_members


@pytest.mark.parametrize("n_jobs", [None, 1, 2])
def test_run_members_matches_list_comprehension(n_jobs):
    jobs = [(base, exponent) for base in (2, 3, -1) for exponent in (0, 1, 5)]
    assert run_members(_power, jobs, n_jobs) == [_power(*job) for job in jobs]


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_run_members_random_results_independent_of_process(n_jobs):
    seeds = member_seeds(np.random.RandomState(3), 4)
    jobs = [(seed, 5) for seed in seeds]
    expected = [_draw_member(*job) for job in jobs]
    result = run_members(_draw_member, iter(jobs), n_jobs)
    assert [seed for seed, _ in result] == seeds  # order kept
    assert_allclose(
        np.array([d for _, d in result]), np.array([d for _, d in expected]), rtol=0, atol=0
    )
    # and the draws are those of each member's own seed
    for seed, drawn in result:
        assert_close(torch.tensor(drawn), _expected_draws(seed, 5), rtol=0, atol=0)
