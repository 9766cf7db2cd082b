"""The regressors through their public API: the members' Gaussian mixture and sklearn's shape.

Oracles: closed forms of a uniform Gaussian mixture (members with known outputs given as
``init_modes``), Monte-Carlo samples of that mixture, the nominal coverage and the true noise
of synthetic heteroscedastic data, the affine equivariance implied by standardising ``y``,
and second, independent fits (unweighted, cold, arrays, a hand-built pipeline).
"""

import pickle

import numpy as np
import pytest
import scipy.sparse
import torch
from nets import MLP
from numpy.testing import assert_allclose, assert_array_equal
from scipy.stats import norm, spearmanr
from sklearn.base import clone
from sklearn.compose import TransformedTargetRegressor
from sklearn.datasets import make_regression
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted
from skorch.dataset import ValidSplit
from torch import nn
from torch.utils.data import Dataset

from simplexens import (
    CurveRegressor,
    DeepEnsembleRegressor,
    ESPRORegressor,
    FGERegressor,
    SPRORegressor,
    SubspaceRegressor,
    SWAGRegressor,
)

LIKELIHOODS = ("gaussian", "homoscedastic", "mse")
MIN_SCALE = 1e-3  # sigma_min, the default criterion__min_scale

X_REG, Y_REG = make_regression(160, 5, n_informative=4, noise=5.0, random_state=0)
X_REG = X_REG.astype(np.float32)
# A second target on another scale and offset, not a multiple of the first.
Y_REG2 = np.c_[Y_REG, 0.05 * Y_REG + 3.0 * X_REG[:, 0] + 40.0]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny networks train faster on one thread (and much faster on a loaded machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def quick(**params):
    """A small, fast DeepEnsembleRegressor."""
    defaults = dict(n_estimators=2, max_epochs=4, lr=0.01, batch_size=32, random_state=0)
    return DeepEnsembleRegressor(MLP, **{**defaults, **params})


def softplus(r):
    return np.log1p(np.exp(r))


# ----------------------------------------------------------- members with known outputs


class Constant(nn.Module):
    """A linear layer; with zero weight its output is its bias, whatever the input."""

    def __init__(self, n_features_in, n_classes):
        super().__init__()
        self.linear = nn.Linear(n_features_in, n_classes)

    def forward(self, x):
        return self.linear(x)


# Standardised member outputs: MU[m, t] (means) and RAW[m, t] (raw scales) of member m.
MU = np.array([[0.5, -1.2], [-1.0, 0.4]])
RAW = np.array([[-1.0, 0.3], [0.7, -0.6]])


def constant_members(likelihood, n_targets, n_features):
    """State dicts of two ``Constant`` members outputting MU (and RAW) for the first targets."""
    mu, raw = MU[:, :n_targets], RAW[:, :n_targets]
    members = []
    for m in range(2):
        bias = np.r_[mu[m], raw[m]] if likelihood == "gaussian" else mu[m]
        linear = {
            "linear.weight": torch.zeros(len(bias), n_features),
            "linear.bias": torch.tensor(bias, dtype=torch.float32),
        }
        if likelihood == "homoscedastic":  # the wrapper's module and its appended scale
            linear = {f"module.{k}": v for k, v in linear.items()}
            linear["raw_scale"] = torch.tensor(raw[m], dtype=torch.float32)
        members.append(linear)
    return members


def constant_data(n_targets, n_rows=40, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n_rows, 3)).astype(np.float32)
    y = rng.normal(size=(n_rows, n_targets)) * [3.0, 0.25][:n_targets] + [5.0, -2.0][:n_targets]
    return X, (y[:, 0] if n_targets == 1 else y)


def fit_constant(likelihood, n_targets):
    X, y = constant_data(n_targets)
    init = constant_members(likelihood, n_targets, X.shape[1])
    reg = DeepEnsembleRegressor(Constant, likelihood=likelihood, n_estimators=2, init_modes=init)
    return reg.fit(X, y), X, y


def expected_members(y, likelihood, n_targets):
    """The members' means and stds in the units of y, float64 (n_members, n_targets)."""
    Y = y.reshape(len(y), -1)
    mean, scale = Y.mean(axis=0), Y.std(axis=0)  # population std, as fit standardises
    # The network computes in float32: round the outputs as it does.
    mu = MU[:, :n_targets].astype(np.float32).astype(np.float64)
    raw = RAW[:, :n_targets].astype(np.float32).astype(np.float64)
    sigma = None if likelihood == "mse" else (softplus(raw) + MIN_SCALE) * scale
    return mu * scale + mean, sigma, mean, scale


@pytest.mark.parametrize("n_targets", [1, 2])
@pytest.mark.parametrize("likelihood", ["gaussian", "homoscedastic"])
def test_mixture_moments_match_the_closed_form(likelihood, n_targets):
    reg, X, y = fit_constant(likelihood, n_targets)
    means, sigmas, y_mean, y_scale = expected_members(y, likelihood, n_targets)
    assert reg.epochs_spent_ == 0  # given networks are the members, untrained
    assert reg.n_targets_ == n_targets
    assert_allclose(reg.y_mean_, y_mean, rtol=1e-12)
    assert_allclose(reg.y_scale_, y_scale, rtol=1e-12)

    mixture_mean = means.mean(axis=0)
    aleatoric = (sigmas**2).mean(axis=0)
    epistemic = (means**2).mean(axis=0) - mixture_mean**2
    mixture_std = np.sqrt((sigmas**2 + means**2).mean(axis=0) - mixture_mean**2)
    shape = (len(X),) if n_targets == 1 else (len(X), n_targets)

    def rows(value):  # the same value for every row, as the outputs ignore x
        return np.broadcast_to(value, (len(X), n_targets)).reshape(shape)

    tol = dict(rtol=1e-10, atol=1e-12)
    pred, std = reg.predict(X, return_std=True)
    assert pred.shape == std.shape == shape
    assert_allclose(pred, rows(mixture_mean), **tol)
    assert_allclose(std, rows(mixture_std), **tol)
    assert_allclose(reg.predict(X), pred, rtol=0, atol=0)

    moments = reg.predict_moments(X)
    assert_allclose(moments.mean, rows(mixture_mean), **tol)
    assert_allclose(moments.aleatoric, rows(aleatoric), **tol)
    assert_allclose(moments.epistemic, rows(epistemic), **tol)
    assert_allclose(moments.variance, rows(aleatoric + epistemic), **tol)
    assert_allclose(moments.std, rows(mixture_std), **tol)

    member_means, member_stds = reg.predict_member_distribution(X)
    assert member_means.shape == member_stds.shape == (2, *shape)
    for m in range(2):
        assert_allclose(member_means[m], rows(means[m]), **tol)
        assert_allclose(member_stds[m], rows(sigmas[m]), **tol)


@pytest.mark.parametrize("n_targets", [1, 2])
def test_mse_mixture_is_one_gaussian_of_the_members_spread(n_targets):
    reg, X, y = fit_constant("mse", n_targets)
    means, _, _, y_scale = expected_members(y, "mse", n_targets)
    center = means.mean(axis=0)
    spread = np.sqrt(((means - center) ** 2).mean(axis=0))
    shape = (len(X),) if n_targets == 1 else (len(X), n_targets)
    rows = lambda v: np.broadcast_to(v, (len(X), n_targets)).reshape(shape)  # noqa: E731

    pred, std = reg.predict(X, return_std=True)
    assert_allclose(pred, rows(center), rtol=1e-10)
    assert_allclose(std, rows(spread), rtol=1e-10)
    moments = reg.predict_moments(X)
    assert_array_equal(moments.aleatoric, np.zeros(shape))
    assert_allclose(moments.epistemic, rows(spread**2), rtol=1e-10)
    member_means, member_stds = reg.predict_member_distribution(X)
    assert member_means.shape == member_stds.shape == (1, *shape)
    assert_allclose(member_means[0], rows(center), rtol=1e-10)
    assert_allclose(member_stds[0], rows(np.maximum(spread, MIN_SCALE * y_scale)), rtol=1e-10)
    # One Gaussian: its central 90% interval is mean -/+ z_0.95 std.
    lower, upper = reg.predict_interval(X, level=0.9)
    z = norm.ppf(0.95)
    assert_allclose(lower, rows(center - z * spread), rtol=1e-7)
    assert_allclose(upper, rows(center + z * spread), rtol=1e-7)


def test_mse_members_that_agree_get_the_scale_floor_per_target():
    X, y = constant_data(2)
    same = constant_members("mse", 2, X.shape[1])[:1] * 2  # two copies of one network
    reg = DeepEnsembleRegressor(Constant, likelihood="mse", n_estimators=2, init_modes=same)
    reg.fit(X, y)
    means, _, _, y_scale = expected_members(y, "mse", 2)
    pred, std = reg.predict(X, return_std=True)
    assert_allclose(pred, np.broadcast_to(means[0], pred.shape), rtol=1e-10)
    # No noise, no disagreement: the std is the floor, sigma_min of each target's scale.
    assert_allclose(std, np.broadcast_to(MIN_SCALE * y_scale, std.shape), rtol=1e-12)
    assert_array_equal(reg.predict_moments(X).epistemic, np.zeros_like(std))
    member_means, member_stds = reg.predict_member_distribution(X)
    assert member_means.shape == member_stds.shape == (1, len(X), 2)
    assert_allclose(member_means[0], pred, rtol=1e-12)
    # sigma_min in units of each target: 1e-3 of its own standard deviation.
    assert_allclose(member_stds[0], np.broadcast_to(MIN_SCALE * y_scale, pred.shape), rtol=1e-9)
    lower, upper = reg.predict_interval(X, 0.9)
    assert_allclose(
        upper - lower,
        np.broadcast_to(2 * norm.ppf(0.95) * MIN_SCALE * y_scale, pred.shape),
        rtol=1e-10,
    )


# ------------------------------------------------------------------- Monte-Carlo check


def mixture_samples(means, sigmas, n, seed):
    """n draws per target of the uniform mixture of N(means[m], sigmas[m]^2), (n, n_targets)."""
    rng = np.random.default_rng(seed)
    component = rng.integers(0, len(means), size=(n, means.shape[1]))
    cols = np.arange(means.shape[1])
    return means[component, cols] + sigmas[component, cols] * rng.standard_normal(component.shape)


def mixture_pdf(x, means, sigmas):
    """The density at x (any shape) of the uniform mixture of N(means[m], sigmas[m]^2)."""
    x = np.asarray(x)[None]
    shape = (-1,) + (1,) * (x.ndim - 1)
    return norm.pdf(x, means.reshape(shape), sigmas.reshape(shape)).mean(axis=0)


@pytest.mark.parametrize("n_targets", [1, 2])
def test_quantiles_and_intervals_match_monte_carlo(n_targets):
    reg, X, y = fit_constant("gaussian", n_targets)
    means, sigmas, _, _ = expected_members(y, "gaussian", n_targets)
    n = 200_000
    samples = mixture_samples(means, sigmas, n, seed=1)
    X = X[:3]

    levels = np.array([0.005, 0.05, 0.3, 0.5, 0.9, 0.995])
    q = reg.predict_quantiles(X, levels)
    assert q.shape == ((3, len(levels)) if n_targets == 1 else (3, n_targets, len(levels)))
    q = q.reshape(3, n_targets, len(levels))
    assert_allclose(q, np.broadcast_to(q[:1], q.shape), rtol=1e-12)  # outputs ignore x
    for t in range(n_targets):
        predicted = q[0, t]
        empirical = np.quantile(samples[:, t], levels)
        # Standard error of an empirical p-quantile: sqrt(p(1-p)/n) / f(quantile).
        density = mixture_pdf(predicted, means[:, t], sigmas[:, t])
        se = np.sqrt(levels * (1 - levels) / n) / density
        assert_allclose(empirical, predicted, rtol=0, atol=5 * se.max())
        # ... and the fraction of draws below each predicted quantile is its level.
        below = (samples[:, t, None] <= predicted).mean(axis=0)
        assert_allclose(below, levels, rtol=0, atol=5 * np.sqrt(0.25 / n))

    scalar = reg.predict_quantiles(X, 0.3)
    assert scalar.shape == ((3,) if n_targets == 1 else (3, n_targets))
    assert_allclose(scalar.reshape(3, n_targets), q[..., 2], rtol=1e-12)

    for level in (0.5, 0.9, 0.99):
        lower, upper = reg.predict_interval(X, level=level)
        lower, upper = lower.reshape(3, n_targets)[0], upper.reshape(3, n_targets)[0]
        tail = (1 - level) / 2
        bound = 5 * np.sqrt(tail * (1 - tail) / n)
        assert_allclose((samples < lower).mean(axis=0), tail, rtol=0, atol=bound)
        assert_allclose((samples > upper).mean(axis=0), tail, rtol=0, atol=bound)
        inside = ((samples >= lower) & (samples <= upper)).mean(axis=0)
        assert_allclose(inside, level, rtol=0, atol=5 * np.sqrt(level * (1 - level) / n))


# ---------------------------------------------------------- heteroscedastic synthetic data


def noise_std(x):
    return 0.1 + 0.3 * np.abs(x)


def heteroscedastic(n, rng):
    x = rng.uniform(-3, 3, size=(n, 1)).astype(np.float32)
    return x, np.sin(x[:, 0]) + noise_std(x[:, 0]) * rng.standard_normal(n)


@pytest.mark.parametrize("seed", [0, 1])
def test_heteroscedastic_noise_is_learned(seed):
    rng = np.random.default_rng(seed)
    X, y = heteroscedastic(1500, rng)
    X_test, y_test = heteroscedastic(1000, rng)
    reg = DeepEnsembleRegressor(
        MLP,
        module__hidden=32,
        n_estimators=5,
        optimizer=torch.optim.Adam,
        lr=0.02,
        max_epochs=15,
        batch_size=128,
        random_state=seed,
    ).fit(X, y)
    lower, upper = reg.predict_interval(X_test, level=0.9)
    coverage = np.mean((y_test >= lower) & (y_test <= upper))
    # Binomial standard error of the coverage of 1000 rows at 0.9: 0.0095.
    assert 0.85 <= coverage <= 0.95, coverage
    mean, std = reg.predict(X_test, return_std=True)
    true_std = noise_std(X_test[:, 0])
    rho = spearmanr(std, true_std).statistic
    assert rho > 0.8, rho
    # The mean is near sin(x): far closer than the noise (std 0.1 to 1.0, rms 0.62).
    assert np.sqrt(np.mean((mean - np.sin(X_test[:, 0])) ** 2)) < 0.25
    # The std is mostly the noise the members predict, not their disagreement.
    moments = reg.predict_moments(X_test)
    assert np.median(moments.aleatoric / moments.variance) > 0.5


# ------------------------------------------------------------------------- target shapes


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("y_shape", [(), (1,), (2,)], ids=["1d", "n_by_1", "n_by_2"])
def test_outputs_have_the_shape_of_y(likelihood, y_shape):
    y = Y_REG if y_shape == () else (Y_REG[:, None] if y_shape == (1,) else Y_REG2)
    reg = quick(likelihood=likelihood, max_epochs=2).fit(X_REG, y)
    n, X = 7, X_REG[:7]
    shape = (n, *y_shape)
    assert reg.n_targets_ == (2 if y_shape == (2,) else 1)
    mean, std = reg.predict(X, return_std=True)
    assert mean.shape == std.shape == reg.predict(X).shape == shape
    assert reg.predict_quantiles(X).shape == (*shape, 3)
    assert reg.predict_quantiles(X, [0.2, 0.8]).shape == (*shape, 2)
    assert reg.predict_quantiles(X, 0.2).shape == shape
    assert all(a.shape == shape for a in reg.predict_interval(X))
    moments = reg.predict_moments(X)
    assert all(moments[k].shape == shape for k in ("mean", "std", "variance"))
    n_components = 1 if likelihood == "mse" else 2
    assert all(a.shape == (n_components, *shape) for a in reg.predict_member_distribution(X))
    # Each target's prediction is in the units of that target: near its range.
    Y = y.reshape(len(y), -1)
    centers = mean.reshape(n, -1)
    low, high = Y.min(axis=0) - Y.std(axis=0), Y.max(axis=0) + Y.std(axis=0)
    assert ((low < centers) & (centers < high)).all()


# ------------------------------------------------------------------ standardisation of y


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_affine_transform_of_y_transforms_the_predictions(likelihood):
    a, b = np.array([3.5, 0.2]), np.array([-20.0, 7.0])
    base = quick(likelihood=likelihood).fit(X_REG, Y_REG2)
    moved = quick(likelihood=likelihood).fit(X_REG, a * Y_REG2 + b)
    assert_allclose(moved.y_mean_, a * base.y_mean_ + b, rtol=1e-12)
    assert_allclose(moved.y_scale_, a * base.y_scale_, rtol=1e-12)
    X = X_REG[:50]

    def same(moved_values, base_values, shift=b):
        """moved = a * base + shift, compared in units of each target's y_scale_ of base
        (rtol 1e-4 of that scale, so that values near zero are judged fairly)."""
        scale = a * base.y_scale_
        assert_allclose(
            (moved_values - shift) / scale, base_values / base.y_scale_, rtol=1e-4, atol=1e-4
        )

    mean, std = base.predict(X, return_std=True)
    mean2, std2 = moved.predict(X, return_std=True)
    same(mean2, mean)
    same(std2, std, shift=0.0)
    assert_allclose(std2 / a, std, rtol=1e-4)
    for lower_upper, lower_upper2 in zip(
        base.predict_interval(X, 0.8), moved.predict_interval(X, 0.8), strict=True
    ):
        same(lower_upper2, lower_upper)
    assert_allclose(moved.score(X, a * Y_REG2[:50] + b), base.score(X, Y_REG2[:50]), rtol=1e-4)


@pytest.mark.parametrize("value", [4.25, 1e-310, -3e300, 0.0], ids=str)
def test_constant_target_gets_unit_scale(value):
    y = np.full(len(X_REG), value)
    reg = quick(max_epochs=1).fit(X_REG, y)
    assert_array_equal(reg.y_mean_, [value])
    assert_array_equal(reg.y_scale_, [1.0])
    assert np.isfinite(reg.predict(X_REG[:5], return_std=True)).all()


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "make_y, match",
    [
        (lambda y: np.where(np.arange(len(y)) == 3, np.nan, y), "y contains NaN"),
        (lambda y: np.where(np.arange(len(y)) == 3, np.inf, y), "y contains infinity"),
        (lambda y: y[:-1], "inconsistent numbers of samples"),
        (lambda y: np.array(["high", "low"])[(y > 0).astype(int)], "numeric targets y"),
        (lambda y: y.reshape(-1, 1, 1), "dim 3"),
    ],
    ids=["nan", "inf", "rows", "strings", "3d"],
)
def test_bad_targets_are_refused(make_y, match):
    y_bad = make_y(Y_REG.copy())
    with pytest.raises(ValueError, match=match):
        quick().fit(X_REG, y_bad)


def test_score_names_the_fitted_targets():
    one = quick(max_epochs=1).fit(X_REG, Y_REG)
    with pytest.raises(ValueError, match=r"fitted on 1 target\(s\): y must be \(n_samples,\)"):
        one.score(X_REG, Y_REG2)
    two = quick(max_epochs=1).fit(X_REG, Y_REG2)
    with pytest.raises(ValueError, match=r"fitted on 2 target\(s\): y must be \(n_samples, 2\)"):
        two.score(X_REG, Y_REG)
    # An (n, 1) column is the same single target: the same R^2.
    assert_allclose(one.score(X_REG, Y_REG[:, None]), one.score(X_REG, Y_REG), rtol=1e-12)


@pytest.mark.parametrize(
    "likelihood, width, match",
    [
        ("gaussian", 1, r"mean and a raw scale per target: 2 × n_targets.*\(n_samples, 2\)"),
        ("homoscedastic", 2, r"one mean per target: n_targets columns \(n_targets=1\)"),
        ("mse", 2, r"one mean per target: n_targets.*\(n_samples, 1\)"),
    ],
)
def test_module_output_width_must_fit_the_likelihood(likelihood, width, match):
    with pytest.raises(ValueError, match=match):
        quick(likelihood=likelihood, module__n_classes=width).fit(X_REG, Y_REG)


def test_unknown_likelihood_names_the_allowed_values():
    with pytest.raises(
        ValueError, match=r"likelihood.*'gaussian', 'homoscedastic', 'mse'.*poisson"
    ):
        quick(likelihood="poisson").fit(X_REG, Y_REG)


@pytest.mark.parametrize(
    "break_fit",
    [
        lambda reg, X, y: reg.fit(X, np.where(np.arange(len(y)) == 0, np.nan, y)),
        lambda reg, X, y: reg.set_params(module__n_classes=3).fit(X, y),
        lambda reg, X, y: reg.set_params(likelihood="poisson").fit(X, y),
    ],
    ids=["nan_y", "module_width", "likelihood"],
)
def test_failed_fit_leaves_estimator_unfitted_and_inputs_unchanged(break_fit):
    X, y = X_REG.copy(), Y_REG.copy()
    reg = quick(max_epochs=1).fit(X, y)
    check_is_fitted(reg)
    X_before, y_before = X.copy(), y.copy()
    with pytest.raises(ValueError):
        break_fit(reg, X, y)
    with pytest.raises(NotFittedError):
        check_is_fitted(reg)
    for name in ("y_mean_", "y_scale_", "n_targets_", "members_"):
        assert not hasattr(reg, name)
    with pytest.raises(NotFittedError):
        reg.predict(X)
    assert_array_equal(X, X_before)
    assert_array_equal(y, y_before)


def test_successful_fit_leaves_inputs_unchanged():
    X, y = X_REG.copy(), Y_REG2.copy()
    quick(max_epochs=1).fit(X, y, sample_weight=np.ones(len(y)))
    assert_array_equal(X, X_REG)
    assert_array_equal(y, Y_REG2)


# ------------------------------------------------------------------ scikit-learn integration


def test_grid_search_over_likelihood():
    search = GridSearchCV(
        quick(max_epochs=3), {"likelihood": list(LIKELIHOODS)}, cv=2, error_score="raise"
    ).fit(X_REG, Y_REG)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    # Oracle: best_estimator_ is the best parameters refitted on all the data.
    refit = quick(max_epochs=3, **search.best_params_).fit(X_REG, Y_REG)
    assert_allclose(search.best_estimator_.predict(X_REG), refit.predict(X_REG), rtol=0, atol=0)
    assert_allclose(search.predict(X_REG), refit.predict(X_REG), rtol=0, atol=0)


def test_pipeline_with_transformed_target():
    y = np.exp(Y_REG / Y_REG.std())  # positive, skewed
    model = Pipeline(
        [
            ("scale", StandardScaler()),
            (
                "reg",
                TransformedTargetRegressor(
                    regressor=quick(), func=np.log1p, inverse_func=np.expm1
                ),
            ),
        ]
    ).fit(X_REG, y)
    # Oracle: the same steps by hand.
    scaler = StandardScaler().fit(X_REG)
    by_hand = quick().fit(scaler.transform(X_REG), np.log1p(y))
    expected = np.expm1(by_hand.predict(scaler.transform(X_REG)))
    predicted = model.predict(X_REG)
    assert predicted.shape == y.shape
    assert_allclose(predicted, expected, rtol=1e-6)
    assert (predicted > -1).all()


def test_pickle_round_trip_and_clone():
    reg = quick(likelihood="homoscedastic").fit(X_REG, Y_REG2)
    restored = pickle.loads(pickle.dumps(reg))
    for a, b in zip(
        restored.predict(X_REG, return_std=True), reg.predict(X_REG, return_std=True), strict=True
    ):
        assert_allclose(a, b, rtol=0, atol=0)
    assert_allclose(restored.predict_interval(X_REG), reg.predict_interval(X_REG), rtol=0, atol=0)
    assert_array_equal(restored.y_mean_, reg.y_mean_)
    assert_array_equal(restored.y_scale_, reg.y_scale_)

    twin = clone(reg)
    assert twin.get_params() == reg.get_params()
    with pytest.raises(NotFittedError):
        check_is_fitted(twin)
    twin.fit(X_REG, Y_REG2)  # same parameters, same seed: the same members
    assert_allclose(twin.predict(X_REG), reg.predict(X_REG), rtol=0, atol=0)


# --------------------------------------------------------------------- every regressor

REGRESSORS = {
    "deep_ensemble": lambda: DeepEnsembleRegressor(MLP, n_estimators=2),
    "espro": lambda: ESPRORegressor(
        MLP, n_modes=1, n_vertices=2, epochs_per_vertex=2, n_predict_samples=3
    ),
    "fge": lambda: FGERegressor(MLP, n_snapshots=2, cycle_length=1),
    "swag": lambda: SWAGRegressor(MLP, swa_start=5, n_predict_samples=3),
    "spro": lambda: SPRORegressor(
        MLP, n_connectors=1, epochs_per_connector=2, n_predict_samples=3
    ),
    "curve": lambda: CurveRegressor(MLP, curve_epochs=2, n_predict_samples=3),
    "subspace": lambda: SubspaceRegressor(MLP, rank=2, swa_start=5, n_predict_samples=3),
}


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("name", list(REGRESSORS))
def test_every_regressor_fits_every_likelihood(name, likelihood):
    reg = REGRESSORS[name]().set_params(
        likelihood=likelihood, max_epochs=10, batch_size=32, lr=0.01, random_state=0
    )
    reg.fit(X_REG, Y_REG)
    assert reg.epochs_spent_ > 0
    mean, std = reg.predict(X_REG, return_std=True)
    assert mean.shape == std.shape == Y_REG.shape
    assert np.isfinite(mean).all()
    assert (std > 0).all() and np.isfinite(std).all()
    assert reg.score(X_REG, Y_REG) > 0  # better than predicting the mean of y

    means, stds = reg.predict_member_distribution(X_REG)
    moments = reg.predict_moments(X_REG)
    if likelihood == "mse":
        assert means.shape == stds.shape == (1, len(X_REG))
        assert_array_equal(moments.aleatoric, np.zeros(len(X_REG)))
        assert_allclose(means[0], mean, rtol=1e-12)
        assert_allclose(stds[0], np.maximum(std, MIN_SCALE * reg.y_scale_[0]), rtol=1e-12)
        return
    assert means.shape == stds.shape == (reg.n_members_, len(X_REG))
    # The mixture of the components is what predict reports.
    assert_allclose(mean, means.mean(axis=0), rtol=1e-9, atol=1e-9 * reg.y_scale_[0])
    second = (stds**2 + means**2).mean(axis=0) - mean**2
    assert_allclose(std, np.sqrt(second), rtol=1e-6)
    assert_allclose(moments.aleatoric, (stds**2).mean(axis=0), rtol=1e-9)
    assert (stds >= MIN_SCALE * reg.y_scale_[0] * (1 - 1e-6)).all()
    if likelihood == "homoscedastic":  # one learned noise scale per member, for every row
        assert_allclose(stds, np.broadcast_to(stds[:, :1], stds.shape), rtol=1e-12, atol=0)
    else:  # heteroscedastic: the std varies with the input
        assert (np.ptp(stds, axis=1) > 0).all()


# ---------------------------------------------------------------------- sample weights


def test_equal_sample_weights_equal_the_unweighted_fit():
    plain = quick().fit(X_REG, Y_REG2)
    weighted = quick().fit(X_REG, Y_REG2, sample_weight=np.full(len(X_REG), 2.0))
    assert_allclose(weighted.y_mean_, plain.y_mean_, rtol=1e-12)
    assert_allclose(weighted.y_scale_, plain.y_scale_, rtol=1e-12)
    for a, b in zip(
        weighted.predict_member_distribution(X_REG),
        plain.predict_member_distribution(X_REG),
        strict=True,
    ):
        assert_allclose(a / plain.y_scale_, b / plain.y_scale_, rtol=1e-5, atol=1e-5)


def test_sample_weights_standardise_y_with_weighted_moments():
    w = np.random.default_rng(0).uniform(0.1, 3.0, len(Y_REG2))
    reg = quick(max_epochs=1).fit(X_REG, Y_REG2, sample_weight=w)
    mean = np.average(Y_REG2, axis=0, weights=w)
    scale = np.sqrt(np.average((Y_REG2 - mean) ** 2, axis=0, weights=w))
    # The weights are stored as float32 (documented): relative error up to ~1e-7.
    assert_allclose(reg.y_mean_, mean, rtol=1e-6, atol=1e-6 * scale.min())
    assert_allclose(reg.y_scale_, scale, rtol=1e-6)
    # Exactly the moments under the float32 weights.
    w32 = w.astype(np.float32).astype(np.float64)
    mean32 = np.average(Y_REG2, axis=0, weights=w32)
    assert_allclose(reg.y_mean_, mean32, rtol=1e-12)
    assert_allclose(
        reg.y_scale_, np.sqrt(np.average((Y_REG2 - mean32) ** 2, axis=0, weights=w32)), rtol=1e-12
    )
    # Weight zero on half the rows: the moments of the other half.
    w0 = np.r_[np.ones(80), np.zeros(80)]
    reg = quick(max_epochs=1).fit(X_REG, Y_REG2, sample_weight=w0)
    assert_allclose(reg.y_mean_, Y_REG2[:80].mean(axis=0), rtol=1e-12)
    assert_allclose(reg.y_scale_, Y_REG2[:80].std(axis=0), rtol=1e-12)


# ------------------------------------------------------------------------- warm start


@pytest.mark.parametrize("split", [None, ValidSplit(0.25, random_state=0)], ids=["all", "split"])
def test_warm_start_growth_equals_a_cold_fit(split):
    """Also with a validation split (y standardised on the training rows in both fits)."""
    warm = quick(warm_start=True, train_split=split).fit(X_REG, Y_REG)
    first = warm.predict_member_distribution(X_REG)
    warm.set_params(n_estimators=4).fit(X_REG, Y_REG)
    cold = quick(n_estimators=4, train_split=split).fit(X_REG, Y_REG)
    assert_array_equal(warm.y_scale_, cold.y_scale_)
    assert warm.n_members_ == 4
    assert warm.epochs_spent_ == cold.epochs_spent_
    grown = warm.predict_member_distribution(X_REG)
    for a, b, c in zip(grown, cold.predict_member_distribution(X_REG), first, strict=True):
        assert_allclose(a, b, rtol=0, atol=1e-6)
        assert_allclose(a[:2], c, rtol=0, atol=0)  # the first members are kept as they were


@pytest.mark.parametrize(
    "before, after", [("mse", "homoscedastic"), ("homoscedastic", "mse"), ("gaussian", "mse")]
)
def test_warm_start_refuses_a_changed_likelihood(before, after):
    reg = quick(likelihood=before, warm_start=True, max_epochs=1).fit(X_REG, Y_REG)
    expected = reg.predict_member_distribution(X_REG)
    reg.set_params(likelihood=after, n_estimators=3)
    with pytest.raises(ValueError, match=f"cannot change likelihood \\('{before}' fitted"):
        reg.fit(X_REG, Y_REG)
    # The fitted state is kept, as after any failed warm refit.
    assert reg.n_members_ == 2
    reg.set_params(likelihood=before)
    for a, b in zip(reg.predict_member_distribution(X_REG), expected, strict=True):
        assert_allclose(a, b, rtol=0, atol=0)


def test_predictions_keep_the_fitted_scale_floor_and_likelihood():
    """set_params after fit changes nothing predicted (the members were trained under the
    fitted settings), and a warm refit under other settings is refused, keeping the fit."""
    reg = quick(likelihood="gaussian", warm_start=True, max_epochs=1).fit(X_REG, Y_REG)
    expected = reg.predict_member_distribution(X_REG)
    reg.set_params(criterion__min_scale=5.0, likelihood="homoscedastic")
    for a, b in zip(reg.predict_member_distribution(X_REG), expected, strict=True):
        assert_allclose(a, b, rtol=0, atol=0)
    reg.set_params(likelihood="gaussian", n_estimators=3)
    with pytest.raises(ValueError, match=r"cannot change criterion__min_scale \(0.001 fitted"):
        reg.fit(X_REG, Y_REG)
    assert reg.n_members_ == 2


# ----------------------------------------------------------------------- torch Datasets


class Pairs(Dataset):
    """``(x, y)`` items over arrays, ``y`` a scalar made by ``label`` (x alone if no y)."""

    def __init__(self, X, y=None, label=float):
        self.X, self.y, self.label = X, y, label

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        x = torch.from_numpy(np.array(self.X[i]))
        return x if self.y is None else (x, self.label(self.y[i]))


def test_dataset_input_equals_arrays():
    on_arrays = quick().fit(X_REG, Y_REG)
    on_dataset = quick().fit(Pairs(X_REG, Y_REG))
    assert on_dataset.n_targets_ == 1
    assert_array_equal(on_dataset.y_mean_, on_arrays.y_mean_)
    expected = on_arrays.predict(X_REG, return_std=True)
    for a, b in zip(on_dataset.predict(X_REG, return_std=True), expected, strict=True):
        assert_allclose(a, b, rtol=0, atol=0)
    # Prediction from a Dataset of x equals prediction from arrays.
    for a, b in zip(on_arrays.predict(Pairs(X_REG), return_std=True), expected, strict=True):
        assert_allclose(a, b, rtol=0, atol=0)


def test_dataset_with_two_target_y_given_equals_arrays():
    on_arrays = quick().fit(X_REG, Y_REG2)
    on_dataset = quick().fit(Pairs(X_REG), Y_REG2)
    assert on_dataset.n_targets_ == 2
    for a, b in zip(
        on_dataset.predict_member_distribution(X_REG),
        on_arrays.predict_member_distribution(X_REG),
        strict=True,
    ):
        assert_allclose(a, b, rtol=0, atol=0)


def test_dataset_with_float32_tensor_labels_equals_float32_arrays():
    y32 = Y_REG.astype(np.float32)
    label = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    on_dataset = quick().fit(Pairs(X_REG, Y_REG, label))
    on_arrays = quick().fit(X_REG, y32)
    assert_allclose(on_dataset.predict(X_REG), on_arrays.predict(X_REG), rtol=0, atol=0)


# ------------------------------------------------------------- metrics and inspection


def test_evaluate_scores_a_regressor_from_its_mixture():
    """metrics.evaluate on a regressor: the scores of its predictive mixture, computed here
    by hand from the components (a second computation)."""
    from simplexens.metrics import evaluate

    reg = quick(max_epochs=3).fit(X_REG, Y_REG)
    means, stds = reg.predict_member_distribution(X_REG)
    z = (Y_REG[None] - means) / stds
    log_density = np.log(np.mean(norm.pdf(z) / stds, axis=0))
    lower, upper = reg.predict_interval(X_REG, level=0.9)
    scores = evaluate(reg, X_REG, Y_REG)
    assert_allclose(scores["nll"], -log_density.mean(), rtol=1e-10)
    assert_allclose(scores["rmse"], np.sqrt(np.mean((means.mean(0) - Y_REG) ** 2)), rtol=1e-10)
    y = Y_REG
    assert scores["coverage_90"] == np.mean((y >= lower) & (y <= upper))
    assert scores["crps"] > 0


@pytest.mark.parametrize("fit_shape", ["1d", "column"])
def test_evaluate_and_coverage_display_read_either_shape_of_one_target(fit_shape):
    """As score does: y of one target as (n,) or (n, 1), whichever shape fit saw."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from simplexens.inspection import CoverageDisplay
    from simplexens.metrics import evaluate

    reg = quick(max_epochs=1).fit(X_REG, Y_REG if fit_shape == "1d" else Y_REG[:, None])
    flat, column = evaluate(reg, X_REG, Y_REG), evaluate(reg, X_REG, Y_REG[:, None])
    for key in flat:
        assert_allclose(flat[key], column[key], rtol=0)
    curves = [CoverageDisplay.from_estimator(reg, X_REG, y) for y in (Y_REG, Y_REG[:, None])]
    assert_allclose(curves[0].coverage, curves[1].coverage, rtol=0)
    plt.close("all")


def test_loss_surfaces_refuse_a_regressor_clearly():
    from simplexens.inspection import loss_along_path

    reg = quick(max_epochs=1).fit(X_REG, Y_REG)
    with pytest.raises(TypeError, match="DeepEnsembleRegressor is a regressor"):
        loss_along_path(reg, X_REG, Y_REG)


# ------------------------------------------------------- criteria, floors, odd targets


def test_a_floor_set_in_the_criterion_is_the_floor_prediction_uses():
    """min_scale given through a criterion factory trains and predicts as the routed
    criterion__min_scale does: the same seed gives the same predictions."""
    import functools

    from simplexens.backends.likelihoods import GaussianNLLLoss

    routed = quick(criterion__min_scale=0.5).fit(X_REG, Y_REG)
    given = quick(criterion=functools.partial(GaussianNLLLoss, min_scale=0.5)).fit(X_REG, Y_REG)
    expected, got = routed.predict(X_REG, True), given.predict(X_REG, True)
    for a, b in zip(expected, got, strict=True):
        assert_allclose(a, b, rtol=1e-6)
    assert np.all(given.predict(X_REG, return_std=True)[1] >= 0.5 * given.y_scale_[0])


def test_tiny_targets_are_standardised_not_taken_for_constant():
    y = Y_REG * 1e-19
    reg = quick(max_epochs=1).fit(X_REG, y)
    assert_allclose(reg.y_scale_, [np.std(y)], rtol=1e-12)
    assert_allclose(reg.y_mean_, [np.mean(y)], rtol=1e-12)


def test_homoscedastic_with_a_floor_of_one_starts_above_it():
    reg = quick(likelihood="homoscedastic", criterion__min_scale=1.0, max_epochs=1)
    _, std = reg.fit(X_REG, Y_REG).predict(X_REG, return_std=True)
    assert np.all(std >= 1.0 * reg.y_scale_[0])


@pytest.mark.parametrize(
    "likelihood, criterion, message",
    [
        ("gaussian", nn.MSELoss, "UserWarning: Using a target size"),
        ("gaussian", nn.CrossEntropyLoss, "RuntimeError"),
        ("mse", nn.GaussianNLLLoss, "TypeError"),
    ],
)
def test_a_criterion_that_cannot_score_the_output_is_refused(likelihood, criterion, message):
    reg = quick(likelihood=likelihood, criterion=criterion)
    with pytest.raises(ValueError, match=f"cannot score the module's output.*{message}"):
        reg.fit(X_REG, Y_REG)
    with pytest.raises(NotFittedError):
        check_is_fitted(reg)


def test_mse_has_no_scale_floor_to_set_and_a_floor_must_be_positive():
    with pytest.raises(ValueError, match="likelihood='mse' predicts no scale"):
        quick(likelihood="mse", criterion__min_scale=0.1).fit(X_REG, Y_REG)
    with pytest.raises(ValueError, match="criterion__min_scale must be"):
        quick(criterion__min_scale=-1.0).fit(X_REG, Y_REG)


def test_sparse_y_is_refused_clearly():
    import scipy.sparse as sp

    with pytest.raises(ValueError, match="needs a dense y"):
        quick().fit(X_REG, sp.csr_matrix(Y_REG[:, None]))


def test_one_mse_member_predicts_the_floor_its_interval_uses():
    """A one-member mse ensemble: std, variance and the interval agree on the floor
    sigma_min * y_scale_ (the interval of a Gaussian is mean +- z std)."""
    reg = quick(likelihood="mse", n_estimators=1, max_epochs=1).fit(X_REG, Y_REG)
    _, std = reg.predict(X_REG, return_std=True)
    assert_allclose(std, MIN_SCALE * reg.y_scale_[0], rtol=1e-12)
    assert_allclose(reg.predict_moments(X_REG).variance, std**2, rtol=1e-12)
    lower, upper = reg.predict_interval(X_REG, level=0.9)
    assert_allclose((upper - lower) / 2, norm.ppf(0.95) * std, rtol=1e-6)


def test_quantile_levels_are_checked_by_their_name():
    reg = quick(max_epochs=1).fit(X_REG, Y_REG)
    for bad in ([0.0, 0.5], [[0.5]], [], 1.5):
        with pytest.raises(ValueError, match="quantiles must be"):
            reg.predict_quantiles(X_REG, bad)


def test_a_classifier_is_refused_as_a_regressors_init_modes():
    from simplexens import DeepEnsembleClassifier

    labels = (Y_REG > 0).astype(int)
    clf = DeepEnsembleClassifier(MLP, n_estimators=2, max_epochs=1).fit(X_REG, labels)
    with pytest.raises(ValueError, match="init_modes is a classifier"):
        quick(init_modes=clf).fit(X_REG, Y_REG)


def test_volume_display_of_an_spro_regressor_draws_volumes_and_the_probe_scores_r2():
    import matplotlib

    matplotlib.use("Agg")
    from sklearn.metrics import r2_score

    from simplexens.inspection import VolumeDisplay

    spro = SPRORegressor(
        MLP, n_connectors=1, epochs_per_connector=1, max_epochs=2, random_state=0
    ).fit(X_REG, Y_REG)
    display = VolumeDisplay.from_estimator(spro, X_REG, Y_REG)
    assert display.accuracy is None and display.accuracy_ax_ is None
    probe = spro.dimension_probe(X_REG, Y_REG, n_samples=1)
    assert probe.r2.shape == (1,) and np.isfinite(probe.r2[0])
    # Sparse inputs, as fit and predict take them, give the dense inputs' scores.
    sparse = spro.dimension_probe(scipy.sparse.csr_matrix(X_REG), Y_REG, n_samples=1)
    assert_allclose(sparse.r2, probe.r2, rtol=1e-6)
    with pytest.raises(ValueError, match="R², which needs y to vary"):
        spro.dimension_probe(X_REG, np.full(len(X_REG), 3.0))
    # The score of given outputs: sklearn's R² of each point's means, averaged.
    Y = np.c_[Y_REG, 2.0 * Y_REG + 1.0]
    reg = quick(max_epochs=1).fit(X_REG, Y)
    rng = np.random.default_rng(0)
    outputs = rng.normal(size=(3, len(Y), 4))  # three points, [mu | raw] of 2 targets
    standard = (Y - reg.y_mean_) / reg.y_scale_
    expected = np.mean([r2_score(standard, point[:, :2]) for point in outputs])
    got = reg._points_score(torch.tensor(outputs), standard)
    assert_allclose(got, expected, rtol=1e-10)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_summed_loss_is_the_gaussian_nll_of_the_members(likelihood):
    """The loss that judges divergence and makes SubspaceRegressor's posterior: each
    member's -sum log N(y | mu, sigma) in standardised units (sigma = 1 for mse), against
    scipy's logpdf of the same outputs."""
    reg = quick(likelihood=likelihood, max_epochs=1).fit(X_REG, Y_REG2)
    standard = ((Y_REG2 - reg.y_mean_) / reg.y_scale_).astype(np.float32)
    rows = np.arange(len(X_REG))
    got = reg._summed_loss(reg.members_, X_REG, standard, rows).cpu().numpy()
    out = reg.members_.forward(torch.tensor(X_REG)).double().numpy()
    mu = out[..., :2]
    sigma = np.ones_like(mu) if likelihood == "mse" else softplus(out[..., 2:]) + MIN_SCALE
    expected = -norm.logpdf(standard.astype(np.float64), mu, sigma).sum(axis=(1, 2))
    assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("form", ["state_dicts", "modules", "mse_regressor"])
def test_homoscedastic_init_modes_from_the_users_module_start_at_unit_noise(form):
    """Networks of the plain module (no learned scale) become homoscedastic members whose
    means are those networks' outputs and whose noise starts at sigma = 1 (standardised):
    the closed form of ``expected_members`` with the scale of softplus(raw) + sigma_min = 1."""
    X, y = constant_data(2)
    plain = constant_members("mse", 2, X.shape[1])  # mean outputs only
    if form == "modules":
        modules = [Constant(X.shape[1], 2) for _ in plain]
        for module, state in zip(modules, plain, strict=True):
            module.load_state_dict(state)
        plain = modules
    elif form == "mse_regressor":
        given = DeepEnsembleRegressor(Constant, likelihood="mse", n_estimators=2, init_modes=plain)
        plain = given.fit(X, y)
    reg = DeepEnsembleRegressor(
        Constant, likelihood="homoscedastic", n_estimators=2, init_modes=plain
    ).fit(X, y)
    means, _, _, y_scale = expected_members(y, "mse", 2)
    member_means, member_stds = reg.predict_member_distribution(X)
    assert_allclose(member_means, np.broadcast_to(means[:, None], member_means.shape), rtol=1e-6)
    assert_allclose(member_stds, np.broadcast_to(y_scale, member_stds.shape), rtol=1e-6)


def test_homoscedastic_init_modes_that_fit_neither_form_report_the_plain_module():
    X, y = constant_data(1)
    wrong = [{"linear.weight": torch.zeros(3, 3), "linear.bias": torch.zeros(3)}] * 2
    reg = DeepEnsembleRegressor(Constant, likelihood="homoscedastic", n_estimators=2)
    with pytest.raises(ValueError, match="shape"):
        reg.set_params(init_modes=wrong).fit(X, y)


@pytest.mark.parametrize("factor", [1e300, 1e-300])
def test_targets_near_the_float64_limits_are_standardised(factor):
    """Scaling y scales y_mean_ and y_scale_ and leaves the standardised targets (and so
    the training) unchanged: predictions are the unscaled ones times the factor."""
    base = quick(max_epochs=1).fit(X_REG, Y_REG)
    scaled = quick(max_epochs=1).fit(X_REG, Y_REG * factor)
    assert_allclose(scaled.y_mean_, base.y_mean_ * factor, rtol=1e-12)
    assert_allclose(scaled.y_scale_, base.y_scale_ * factor, rtol=1e-12)
    assert_allclose(scaled.predict(X_REG), base.predict(X_REG) * factor, rtol=1e-5)
    # The std, quantiles and interval scale with y; R² does not change.
    assert_allclose(
        scaled.predict(X_REG, return_std=True)[1],
        base.predict(X_REG, return_std=True)[1] * factor,
        rtol=1e-5,
    )
    levels = [0.05, 0.5, 0.95]
    assert_allclose(
        scaled.predict_quantiles(X_REG, levels),
        base.predict_quantiles(X_REG, levels) * factor,
        rtol=1e-5,
    )
    for a, b in zip(scaled.predict_interval(X_REG), base.predict_interval(X_REG), strict=True):
        assert_allclose(a, b * factor, rtol=1e-5)
    assert_allclose(scaled.score(X_REG, Y_REG * factor), base.score(X_REG, Y_REG), rtol=1e-5)


@pytest.mark.parametrize("factor", [1e160, 1e-200])
def test_the_std_stays_finite_where_the_variance_cannot(factor):
    """Variances in y's units over- or underflow beyond 1e154 or below about 1e-170
    (squared); the std, computed in standardised units and scaled back, does not."""
    base = quick(max_epochs=1).fit(X_REG, Y_REG)
    scaled = quick(max_epochs=1).fit(X_REG, Y_REG * factor)
    moments = scaled.predict_moments(X_REG)
    assert_allclose(moments.std, base.predict_moments(X_REG).std * factor, rtol=1e-5)
    assert_allclose(scaled.score(X_REG, Y_REG * factor), base.score(X_REG, Y_REG), rtol=1e-5)


@pytest.mark.parametrize(
    "y_before, y_after",
    [(Y_REG, Y_REG[:, None]), (Y_REG[:, None], Y_REG), (Y_REG, np.c_[Y_REG, Y_REG])],
    ids=["1d_to_column", "column_to_1d", "one_to_two_targets"],
)
def test_warm_start_refuses_targets_of_another_shape(y_before, y_after):
    """The output's shape follows y's: a warm refit on y of another shape is refused, with
    the message naming the data, not the module."""
    reg = quick(warm_start=True, max_epochs=1).fit(X_REG, y_before)
    reg.set_params(n_estimators=3)
    with pytest.raises(ValueError, match=r"these data .*differ"):
        reg.fit(X_REG, y_after)
    assert reg.predict(X_REG).shape == y_before.shape


def test_warm_start_accepts_the_same_data_in_fortran_order():
    reg = quick(warm_start=True, max_epochs=1).fit(X_REG, Y_REG)
    reg.set_params(n_estimators=3).fit(np.asfortranarray(X_REG.astype(np.float64)), Y_REG)
    assert reg.n_members_ == 3


class _Linear(nn.Module):
    def __init__(self, n_features_in, n_outputs):
        super().__init__()
        self.linear = nn.Linear(n_features_in, n_outputs)

    def forward(self, x):
        return self.linear(x)


def test_mse_divergence_is_judged_in_the_criterions_units():
    """The divergence check compares the training criterion (the mean squared error over
    the targets) with the untrained network's loss in the same units: with 20 targets an
    exploding run is stopped a few epochs in, against the untrained network's MSE."""
    import re

    from simplexens.exceptions import DivergenceError

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3)).astype(np.float32)
    Y = X @ rng.normal(size=(3, 20)) + 0.1 * rng.normal(size=(200, 20))
    reg = DeepEnsembleRegressor(
        _Linear,
        n_estimators=1,
        max_epochs=10,
        lr=23.0,
        batch_size=-1,
        likelihood="mse",
        random_state=0,
    )
    with pytest.raises(DivergenceError) as info:
        reg.fit(X, Y)
    message = str(info.value)
    reference = float(re.search(r"untrained network's ([-0-9.e+]+)", message).group(1))
    # Oracle: the same untrained module (built under seed 0) on the standardised targets.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        module = _Linear(3, 20)
    with torch.no_grad():
        out = module(torch.from_numpy(X)).numpy()
    Z = ((Y - Y.mean(axis=0)) / Y.std(axis=0)).astype(np.float32)
    assert_allclose(reference, np.mean((out - Z) ** 2), rtol=1e-3)
    assert int(re.search(r"epoch (\d+):", message).group(1)) < 10


@pytest.mark.parametrize(
    "make_y",
    [lambda y: y, lambda y: np.full(len(y), 3.0), lambda y: np.c_[y, np.full(len(y), 7)]],
    ids=["varying", "constant", "two_targets_one_constant"],
)
@pytest.mark.parametrize("weighted", [False, True])
def test_score_is_sklearns_r2_of_predict(make_y, weighted):
    """score: sklearn's r2_score of predict in y's units (its rule for a constant y too)."""
    from sklearn.metrics import r2_score

    y_fit = Y_REG if make_y(Y_REG).ndim == 1 else Y_REG2  # y that varies: y_scale_ not 1
    reg = quick(max_epochs=1).fit(X_REG, y_fit)
    X, y = X_REG[:10], make_y(Y_REG[:10])
    weights = np.linspace(0.5, 2.0, len(y)) if weighted else None
    expected = r2_score(y, reg.predict(X), sample_weight=weights)
    assert_allclose(reg.score(X, y, sample_weight=weights), expected, rtol=1e-12)
