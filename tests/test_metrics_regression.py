"""Regression metrics of simplexens.metrics against closed forms, scipy and sampling."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import integrate, optimize, stats
from sklearn.metrics import root_mean_squared_error

from simplexens.metrics import (
    coverage_curve,
    crps_gaussian,
    crps_gaussian_mixture,
    gaussian_mixture_moments,
    gaussian_mixture_nll,
    gaussian_nll,
    interval_coverage,
    mixture_interval,
    mixture_quantiles,
    rmse,
)


def _members(seed, n_members=4, shape=(30,)):
    """Member means spread over a few units and standard deviations in [0.2, 2]."""
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=2.0, size=(n_members, *shape))
    stds = rng.uniform(0.2, 2.0, size=(n_members, *shape))
    return means, stds


def _sample_mixture(means, stds, n_draws, rng):
    """``n_draws`` draws from the uniform mixture of each column: (n_draws, *means.shape[1:])."""
    member = rng.integers(0, means.shape[0], size=(n_draws, *means.shape[1:]))
    mu = np.take_along_axis(means, member, axis=0)
    sigma = np.take_along_axis(stds, member, axis=0)
    return mu + sigma * rng.standard_normal(member.shape)


def _mixture_cdf(x, mu, sigma):
    return np.mean(stats.norm.cdf(x, mu, sigma))


def _crps_by_quadrature(y, mu, sigma):
    """``int (F(x) - 1{x >= y})^2 dx`` for one value, with scipy's quad."""
    mu, sigma = np.atleast_1d(mu), np.atleast_1d(sigma)
    lo = min((mu - 40 * sigma).min(), y)
    hi = max((mu + 40 * sigma).max(), y)
    # member means as break points: narrow members are not stepped over
    left = integrate.quad(
        lambda x: _mixture_cdf(x, mu, sigma) ** 2,
        lo,
        y,
        points=[m for m in mu if lo < m < y] or None,
        limit=200,
        epsabs=1e-12,
    )[0]
    right = integrate.quad(
        lambda x: np.mean(stats.norm.sf(x, mu, sigma)) ** 2,
        y,
        hi,
        points=[m for m in mu if y < m < hi] or None,
        limit=200,
        epsabs=1e-12,
    )[0]
    return left + right


# ------------------------------------------------------------------------------- moments


def test_moments_of_two_members_closed_form():
    means = np.array([[1.0, -3.0, 10.0], [4.0, -3.0, 0.0]])
    stds = np.array([[0.5, 1.0, 2.0], [1.5, 3.0, 2.0]])
    moments = gaussian_mixture_moments(means, stds)
    (mu1, mu2), (s1, s2) = means, stds
    assert_allclose(moments.mean, (mu1 + mu2) / 2, rtol=1e-15)
    assert_allclose(moments.aleatoric, (s1**2 + s2**2) / 2, rtol=1e-15)
    assert_allclose(moments.epistemic, (mu1 - mu2) ** 2 / 4, rtol=1e-15)
    assert_allclose(moments.variance, (s1**2 + s2**2) / 2 + (mu1 - mu2) ** 2 / 4, rtol=1e-15)
    assert_allclose(moments.std, np.sqrt(moments.variance), rtol=1e-15)


def test_moments_match_textbook_form_and_survive_large_means():
    means, stds = _members(0, n_members=5, shape=(40, 3))
    moments = gaussian_mixture_moments(means, stds)
    textbook = np.mean(stds**2 + means**2, axis=0) - means.mean(axis=0) ** 2
    assert moments.mean.shape == moments.variance.shape == (40, 3)
    assert_allclose(moments.variance, textbook, rtol=1e-12)
    assert_allclose(moments.variance, moments.aleatoric + moments.epistemic, rtol=1e-15)
    # |mu| ~ 1e8: the textbook form loses every digit of a variance of ~1; the split keeps it
    far = gaussian_mixture_moments(means + 1e8, stds)
    assert_allclose(far.variance, moments.variance, rtol=1e-6)


def test_moments_by_sampling():
    means, stds = _members(1, n_members=3, shape=(4,))
    moments = gaussian_mixture_moments(means, stds)
    n_draws = 400_000
    draws = _sample_mixture(means, stds, n_draws, np.random.default_rng(2))
    # 5 standard errors: the mean's is sigma*/sqrt(n), the variance's sqrt(var((x - m)^2) / n)
    assert np.all(np.abs(draws.mean(axis=0) - moments.mean) <= 5 * moments.std / n_draws**0.5)
    squares = (draws - draws.mean(axis=0)) ** 2
    se_variance = squares.std(axis=0) / n_draws**0.5
    assert np.all(np.abs(squares.mean(axis=0) - moments.variance) <= 5 * se_variance)


# ----------------------------------------------------------------------------------- NLL


@pytest.mark.parametrize("shape", [(50,), (50, 3)])
def test_gaussian_nll_is_scipy_logpdf(shape):
    rng = np.random.default_rng(3)
    y, mean = rng.normal(size=shape), rng.normal(size=shape)
    std = rng.uniform(0.1, 3.0, size=shape)
    assert_allclose(
        gaussian_nll(y, mean, std), -stats.norm.logpdf(y, mean, std).mean(), rtol=1e-13
    )


@pytest.mark.parametrize("shape", [(50,), (50, 2)])
def test_mixture_nll_is_direct_density(shape):
    means, stds = _members(4, n_members=5, shape=shape)
    y = np.random.default_rng(5).normal(scale=2.0, size=shape)
    density = stats.norm.pdf(y, means, stds).mean(axis=0)
    assert_allclose(gaussian_mixture_nll(y, means, stds), -np.log(density).mean(), rtol=1e-12)


def test_mixture_nll_of_identical_members_is_gaussian_nll_far_in_the_tail():
    # N(y; 0, 1) at y = 60 underflows to 0 in a direct computation; logsumexp keeps it
    y = np.array([0.0, 5.0, 60.0, -200.0])
    mean, std = np.zeros(4), np.array([1.0, 1.0, 1.0, 2.0])
    expected = -stats.norm.logpdf(y, mean, std).mean()
    assert_allclose(gaussian_mixture_nll(y, np.stack([mean] * 3), np.stack([std] * 3)), expected)
    assert_allclose(gaussian_nll(y, mean, std), expected, rtol=1e-14)


def test_mixture_nll_in_the_tail_against_high_precision():
    mpmath = pytest.importorskip("mpmath")
    means, stds, y = np.array([[0.0], [3.0]]), np.array([[1.0], [0.5]]), np.array([80.0])
    mpmath.mp.dps = 50
    density = (
        sum(
            mpmath.npdf(mpmath.mpf(80), mpmath.mpf(float(m)), mpmath.mpf(float(s)))
            for m, s in zip(means[:, 0], stds[:, 0], strict=True)
        )
        / 2
    )
    assert_allclose(gaussian_mixture_nll(y, means, stds), float(-mpmath.log(density)), rtol=1e-12)


# ---------------------------------------------------------------------------------- CRPS


def test_crps_gaussian_against_quadrature():
    rng = np.random.default_rng(6)
    y, mean, std = rng.normal(size=8) * 3, rng.normal(size=8), rng.uniform(0.1, 3.0, size=8)
    oracle = [_crps_by_quadrature(*args) for args in zip(y, mean, std, strict=True)]
    for i in range(8):
        assert_allclose(crps_gaussian(y[i : i + 1], mean[i : i + 1], std[i : i + 1]), oracle[i])
    assert_allclose(crps_gaussian(y, mean, std), np.mean(oracle), rtol=1e-9)


def test_crps_mixture_against_quadrature():
    means, stds = _members(7, n_members=3, shape=(8,))
    stds[0, 0] = 0.01  # one narrow member
    y = np.random.default_rng(8).normal(scale=3.0, size=8)
    oracle = [_crps_by_quadrature(y[i], means[:, i], stds[:, i]) for i in range(8)]
    for i in range(8):
        assert_allclose(
            crps_gaussian_mixture(y[i : i + 1], means[:, i : i + 1], stds[:, i : i + 1]),
            oracle[i],
            rtol=1e-9,
        )
    assert_allclose(crps_gaussian_mixture(y, means, stds), np.mean(oracle), rtol=1e-9)


def test_crps_mixture_of_one_member_is_gaussian_crps():
    means, stds = _members(9, n_members=1, shape=(20, 2))
    y = np.random.default_rng(10).normal(size=(20, 2))
    assert_allclose(crps_gaussian_mixture(y, means, stds), crps_gaussian(y, means[0], stds[0]))


def test_crps_mixture_by_sampling_the_kernel_form():
    """CRPS = E|X - y| - E|X - X'| / 2 estimated from draws: a second, statistical oracle."""
    means, stds = _members(11, n_members=4, shape=(1,))
    y = np.array([0.7])
    rng = np.random.default_rng(12)
    n_draws = 400_000
    x, x_prime = (_sample_mixture(means, stds, n_draws, rng)[:, 0] for _ in range(2))
    terms = np.abs(x - y[0]) - 0.5 * np.abs(x - x_prime)
    bound = 5 * terms.std() / n_draws**0.5
    assert abs(crps_gaussian_mixture(y, means, stds) - terms.mean()) <= bound


# ---------------------------------------------------------------------------------- RMSE


@pytest.mark.parametrize("shape", [(40,), (40, 3)])
def test_rmse_is_sklearn(shape):
    rng = np.random.default_rng(13)
    y, mean = rng.normal(size=shape), rng.normal(size=shape) * np.arange(1, 1 + shape[-1])
    assert_allclose(rmse(y, mean), root_mean_squared_error(y, mean), rtol=1e-14)


# ----------------------------------------------------------------------- multiple targets


def test_scores_average_over_targets():
    means, stds = _members(14, n_members=3, shape=(25, 3))
    y = np.random.default_rng(15).normal(size=(25, 3))
    for score in (gaussian_mixture_nll, crps_gaussian_mixture):
        per_target = [score(y[:, j], means[:, :, j], stds[:, :, j]) for j in range(3)]
        assert_allclose(score(y, means, stds), np.mean(per_target), rtol=1e-13)
    for score in (gaussian_nll, crps_gaussian):
        per_target = [score(y[:, j], means[0, :, j], stds[0, :, j]) for j in range(3)]
        assert_allclose(score(y, means[0], stds[0]), np.mean(per_target), rtol=1e-13)
    curve = coverage_curve(y, means, stds)
    per_target = [
        coverage_curve(y[:, j], means[:, :, j], stds[:, :, j]).coverage for j in range(3)
    ]
    assert_allclose(curve.coverage, np.mean(per_target, axis=0), rtol=1e-13)


# ------------------------------------------------------------------ quantiles, intervals


def test_quantiles_against_brentq():
    means, stds = _members(16, n_members=4, shape=(6, 2))
    levels = np.array([0.001, 0.05, 0.3, 0.5, 0.8, 0.975])
    quantiles = mixture_quantiles(means, stds, levels)
    assert quantiles.shape == (6, 6, 2)
    scale = gaussian_mixture_moments(means, stds).std
    for k, level in enumerate(levels):
        for i, j in np.ndindex(6, 2):
            mu, sigma = means[:, i, j], stds[:, i, j]
            root = optimize.brentq(
                lambda x, mu=mu, sigma=sigma, level=level: _mixture_cdf(x, mu, sigma) - level,
                mu.min() - 10 * sigma.max(),
                mu.max() + 10 * sigma.max(),
                xtol=1e-14,
            )
            assert abs(quantiles[k, i, j] - root) <= 1e-8 * scale[i, j]


def test_quantiles_of_one_member_are_gaussian_and_scalar_level_drops_the_axis():
    means, stds = _members(17, n_members=1, shape=(10,))
    for level in (0.01, 0.5, 0.9):
        q = mixture_quantiles(means, stds, level)
        assert q.shape == (10,)
        assert_allclose(q, stats.norm.ppf(level, means[0], stds[0]), rtol=1e-12, atol=1e-12)


def test_quantiles_by_sampling():
    """DKW: sup |F_n - F| <= sqrt(log(2 / delta) / (2 n)) with probability 1 - delta."""
    means, stds = _members(18, n_members=3, shape=(3,))
    levels = np.linspace(0.05, 0.95, 7)
    quantiles = mixture_quantiles(means, stds, levels)
    n_draws = 200_000
    draws = _sample_mixture(means, stds, n_draws, np.random.default_rng(19))
    epsilon = np.sqrt(np.log(2 / 1e-6) / (2 * n_draws))
    empirical = np.mean(draws[None] <= quantiles[:, None], axis=1)  # (n_levels, 3)
    assert np.all(np.abs(empirical - levels[:, None]) <= epsilon)


def test_mixture_interval_holds_its_level_and_matches_quantiles():
    means, stds = _members(20, n_members=5, shape=(15,))
    lower, upper = mixture_interval(means, stds, 0.8)
    assert_allclose(lower, mixture_quantiles(means, stds, 0.1))
    assert_allclose(upper, mixture_quantiles(means, stds, 0.9))
    mass = [
        _mixture_cdf(upper[i], means[:, i], stds[:, i])
        - _mixture_cdf(lower[i], means[:, i], stds[:, i])
        for i in range(15)
    ]
    assert_allclose(mass, 0.8, atol=1e-9)


def test_interval_coverage_by_hand():
    y = np.array([[0.0, 5.0], [1.0, -1.0]])
    lower = np.array([[-1.0, -np.inf], [1.0, 0.0]])
    upper = np.array([[1.0, 4.0], [np.inf, 2.0]])
    # covered: (0,0) yes, (0,1) no, (1,0) yes (closed bound), (1,1) no
    assert interval_coverage(y, lower, upper) == 0.5
    assert interval_coverage(y[:, 0], lower[:, 0], upper[:, 0]) == 1.0


def test_coverage_curve_is_coverage_of_mixture_intervals():
    means, stds = _members(21, n_members=4, shape=(200,))
    y = np.random.default_rng(22).normal(scale=3.0, size=200)
    levels = np.linspace(0.05, 0.95, 19)
    curve = coverage_curve(y, means, stds)
    assert_array_equal(curve.levels, levels)
    direct = [interval_coverage(y, *mixture_interval(means, stds, level)) for level in levels]
    # the PIT route and the quantile route agree except for a value within rounding of a bound
    assert_allclose(curve.coverage, direct, atol=1 / 200 + 1e-12)
    assert np.sum(curve.coverage != direct) <= 1


def test_coverage_of_a_calibrated_model_is_within_binomial_bounds():
    rng = np.random.default_rng(23)
    n_samples = 4000
    means, stds = _members(24, n_members=3, shape=(n_samples,))
    y = _sample_mixture(means, stds, 1, rng)[0]  # one target per sample, from its own mixture
    curve = coverage_curve(y, means, stds, levels=[0.1, 0.5, 0.8, 0.9, 0.99])
    bound = 4 * np.sqrt(curve.levels * (1 - curve.levels) / n_samples)
    assert np.all(np.abs(curve.coverage - curve.levels) <= bound)
    # the mixture shrunk 4-fold about its mean: intervals too narrow, coverage clearly lower
    centre = means.mean(axis=0)
    shrunk = coverage_curve(y, centre + (means - centre) / 4, stds / 4, levels=curve.levels)
    assert np.all(shrunk.coverage < curve.levels - bound)


# ---------------------------------------------------------------------------- validation


def _members_and_y():
    means, stds = _members(25, n_members=2, shape=(5,))
    return np.zeros(5), means, stds


MEMBER_FUNCTIONS = [
    ("gaussian_mixture_nll", lambda y, m, s: gaussian_mixture_nll(y, m, s)),
    ("crps_gaussian_mixture", lambda y, m, s: crps_gaussian_mixture(y, m, s)),
    ("coverage_curve", lambda y, m, s: coverage_curve(y, m, s)),
    ("moments", lambda y, m, s: gaussian_mixture_moments(m, s)),
    ("quantiles", lambda y, m, s: mixture_quantiles(m, s, 0.5)),
    ("interval", lambda y, m, s: mixture_interval(m, s, 0.9)),
]


@pytest.mark.parametrize(("name", "call"), MEMBER_FUNCTIONS, ids=[n for n, _ in MEMBER_FUNCTIONS])
def test_member_functions_refuse_bad_members(name, call):
    y, means, stds = _members_and_y()
    bad_mean, zero_std, negative_std, infinite_std = (
        means.copy(),
        stds.copy(),
        stds.copy(),
        stds.copy(),
    )
    bad_mean[1, 3] = np.nan
    zero_std[0, 2] = 0.0
    negative_std[1, 0] = -1.0
    infinite_std[0, 1] = np.inf
    with pytest.raises(ValueError, match=r"means contains NaN or infinite values: means\[1, 3\]"):
        call(y, bad_mean, stds)
    with pytest.raises(ValueError, match=r"stds must be positive: stds\[0, 2\] is 0"):
        call(y, means, zero_std)
    with pytest.raises(ValueError, match=r"stds must be positive: stds\[1, 0\] is -1"):
        call(y, means, negative_std)
    with pytest.raises(ValueError, match=r"stds contains NaN or infinite"):
        call(y, means, infinite_std)
    with pytest.raises(ValueError, match=r"stds has shape \(2, 4\) but means has shape \(2, 5\)"):
        call(y, means, stds[:, :4])
    with pytest.raises(ValueError, match="means must be 2-D"):
        call(y, means[0], stds[0])
    with pytest.raises(ValueError, match="at least one member"):
        call(y, means[:0], stds[:0])


@pytest.mark.parametrize(
    "score",
    [gaussian_mixture_nll, crps_gaussian_mixture, coverage_curve],
    ids=lambda f: f.__name__,
)
def test_member_scores_refuse_bad_targets(score):
    y, means, stds = _members_and_y()
    with pytest.raises(ValueError, match=r"y has shape \(4,\) but means gives predictions"):
        score(y[:4], means, stds)
    with pytest.raises(ValueError, match=r"y has shape \(5, 1\)"):
        score(y[:, None], means, stds)
    y[2] = np.inf
    with pytest.raises(ValueError, match=r"y contains NaN or infinite values: y\[2\] is inf"):
        score(y, means, stds)


@pytest.mark.parametrize("score", [gaussian_nll, crps_gaussian], ids=lambda f: f.__name__)
def test_gaussian_scores_refuse_bad_input(score):
    y, mean, std = np.zeros(4), np.zeros(4), np.ones(4)
    with pytest.raises(ValueError, match=r"std must be positive: std\[1\] is 0"):
        score(y, mean, np.array([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"mean contains NaN or infinite values: mean\[0\]"):
        score(y, np.array([np.nan, 0, 0, 0]), std)
    with pytest.raises(ValueError, match=r"std has shape \(3,\) but mean has shape \(4,\)"):
        score(y, mean, std[:3])
    with pytest.raises(ValueError, match=r"y has shape \(3,\)"):
        score(y[:3], mean, std)
    with pytest.raises(ValueError, match="mean must be 1-D"):
        score(y, mean[None, None], std[None, None])


def test_rmse_and_interval_coverage_refuse_bad_input():
    y = np.zeros(3)
    with pytest.raises(ValueError, match=r"y contains NaN"):
        rmse(np.array([0.0, np.nan, 0.0]), y)
    with pytest.raises(ValueError, match=r"y has shape \(2,\) but mean"):
        rmse(y[:2], y)
    with pytest.raises(ValueError, match=r"lower must not exceed upper: lower\[1\] is 2"):
        interval_coverage(y, np.array([0.0, 2.0, 0.0]), np.ones(3))
    with pytest.raises(ValueError, match=r"upper contains NaN values: upper\[0\]"):
        interval_coverage(y, -np.ones(3), np.array([np.nan, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"upper has shape \(2,\) but lower has shape \(3,\)"):
        interval_coverage(y, -np.ones(3), np.ones(2))


@pytest.mark.parametrize("level", [0.0, 1.0, -0.5, 1.5, np.nan])
def test_levels_outside_the_open_unit_interval_are_refused(level):
    _, means, stds = _members_and_y()
    y = np.zeros(5)
    with pytest.raises(ValueError, match=r"must lie in the open interval \(0, 1\)"):
        mixture_quantiles(means, stds, [0.5, level])
    with pytest.raises(ValueError, match=r"level must lie in the open interval \(0, 1\)"):
        mixture_interval(means, stds, level)
    with pytest.raises(ValueError, match=r"levels must lie in the open interval \(0, 1\)"):
        coverage_curve(y, means, stds, levels=[level])


def test_level_arrays_of_the_wrong_shape_are_refused():
    _, means, stds = _members_and_y()
    with pytest.raises(ValueError, match="levels must be a non-empty 1-D array"):
        coverage_curve(np.zeros(5), means, stds, levels=[[0.5]])
    with pytest.raises(ValueError, match="levels must be a non-empty 1-D array"):
        mixture_quantiles(means, stds, [])
    with pytest.raises(ValueError, match="level must be a scalar"):
        mixture_interval(means, stds, [0.5, 0.9])


@pytest.mark.parametrize("factor", [1e200, 1e-200], ids=["huge", "tiny"])
def test_metrics_scale_with_the_units_near_float64s_limits(factor):
    """Scaling y, means and stds by c scales the CRPS, std and quantiles by c and shifts
    the NLL by log c, also where squared stds over- or underflow float64."""
    means, stds = _members(3, shape=(12, 2))
    y = np.random.default_rng(4).normal(size=(12, 2))
    scaled = (y * factor, means * factor, stds * factor)
    assert_allclose(
        crps_gaussian_mixture(*scaled), crps_gaussian_mixture(y, means, stds) * factor, rtol=1e-9
    )
    assert_allclose(
        gaussian_mixture_nll(*scaled), gaussian_mixture_nll(y, means, stds) + np.log(factor)
    )
    assert_allclose(
        gaussian_mixture_moments(*scaled[1:]).std,
        gaussian_mixture_moments(means, stds).std * factor,
        rtol=1e-12,
    )
    assert_allclose(rmse(y * factor, means[0] * factor), rmse(y, means[0]) * factor, rtol=1e-12)
    levels = [0.05, 0.5, 0.95]
    assert_allclose(
        mixture_quantiles(*scaled[1:], levels),
        mixture_quantiles(means, stds, levels) * factor,
        rtol=1e-8,
    )


def test_members_at_float64s_largest_values_keep_a_finite_mean_std_and_interval():
    """Two members at 1e308 (their sum overflows): the mixture is one of them."""
    means, stds = [[1e308], [1e308]], [[1.0], [1.0]]
    moments = gaussian_mixture_moments(means, stds)
    assert_array_equal(moments.mean, [1e308])
    assert_allclose(moments.std, [1.0])
    lower, upper = mixture_interval(means, stds, 0.9)
    assert_allclose(np.r_[lower, upper], [1e308, 1e308], rtol=1e-15)
    assert_allclose(rmse([1e308], [9e307]), 1e307, rtol=1e-12)
