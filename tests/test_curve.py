"""CurveClassifier through the public API: two modes joined by a trained low-loss curve."""

import copy
import itertools
import pickle

import numpy as np
import pytest
import torch
from nets import MLP
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.datasets import make_classification
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV

from simplexens import CurveClassifier, DeepEnsembleClassifier

#: Worker processes run torch with one thread: float32 sums may be ordered differently.
PARALLEL_TOLERANCE = dict(rtol=1e-5, atol=1e-6)

MAX_EPOCHS, CURVE_EPOCHS, N_PREDICT = 2, 2, 5

#: Positions at which the curve is compared with its closed form (breakpoints included).
POSITIONS = np.array([0.0, 0.1, 0.25, 1 / 3, 0.5, 2 / 3, 0.8, 1.0])


def curve(**params):
    defaults = dict(
        max_epochs=MAX_EPOCHS,
        curve_epochs=CURVE_EPOCHS,
        n_predict_samples=N_PREDICT,
        lr=0.1,
        batch_size=100,
        random_state=0,
    )
    return CurveClassifier(MLP, **{**defaults, **params})


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(
        300, 10, n_informative=6, n_redundant=2, n_classes=3, random_state=0
    )
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def ensemble(data):
    """Two trained networks, and a copy of their tensors taken right after fitting."""
    clf = DeepEnsembleClassifier(
        MLP, n_estimators=2, max_epochs=2, lr=0.1, batch_size=100, random_state=1
    ).fit(*data)
    return clf, {name: t.clone() for name, t in clf.members_.tensors.items()}


@pytest.fixture(scope="module")
def bezier(data, ensemble):
    return curve(init_modes=ensemble[0], curve="bezier", n_bends=3).fit(*data)


@pytest.fixture(scope="module")
def polychain(data, ensemble):
    return curve(init_modes=ensemble[0], curve="polychain", n_bends=4).fit(*data)


@pytest.fixture(scope="module")
def trained(data):
    """A curve whose endpoints it trains itself."""
    return curve().fit(*data)


def module_shapes(n_features_in=10, n_classes=3):
    with torch.random.fork_rng():
        return {n: tuple(p.shape) for n, p in MLP(n_features_in, n_classes).named_parameters()}


def fitted_attributes(clf):
    return [k for k in vars(clf) if k.endswith("_") and not k.startswith("_")]


# --------------------------------------------------------------------------- fitted state


@pytest.mark.parametrize(("name", "n_bends"), [("bezier", 3), ("polychain", 4)])
def test_anchor_shapes_and_endpoints_are_the_given_modes(request, ensemble, name, n_bends):
    clf = request.getfixturevalue(name)
    source, _ = ensemble
    shapes = module_shapes()
    assert set(clf.curve_anchors_) == set(shapes)
    ends = clf.curve_parameters([0.0, 1.0])
    for param, anchors in clf.curve_anchors_.items():
        assert anchors.shape == (n_bends, *shapes[param])
        given = source.members_.tensors[param].cpu()
        assert torch.equal(anchors[0], given[0]), param
        assert torch.equal(anchors[-1], given[1]), param
        assert torch.equal(ends[param], given), param
    assert clf.epochs_spent_ == CURVE_EPOCHS


def test_given_estimator_is_left_unchanged(bezier, polychain, ensemble):
    source, before = ensemble
    for name, t in source.members_.tensors.items():
        assert torch.equal(t, before[name]), name


def test_epochs_without_given_modes(trained):
    assert trained.epochs_spent_ == 2 * MAX_EPOCHS + CURVE_EPOCHS


def test_bezier_closed_form(bezier):
    t = torch.from_numpy(POSITIONS)[:, None]
    points = bezier.curve_parameters(POSITIONS)
    for name, anchors in bezier.curve_anchors_.items():
        w0, theta, w1 = (a.double().flatten() for a in anchors)
        expected = (1 - t) ** 2 * w0 + 2 * t * (1 - t) * theta + t**2 * w1
        torch.testing.assert_close(
            points[name].double().flatten(1), expected, rtol=1e-5, atol=1e-6
        )


def test_polychain_closed_form(polychain):
    # Piecewise linear through the 4 control points, at t = 0, 1/3, 2/3, 1.
    points = polychain.curve_parameters(POSITIONS)
    for name, anchors in polychain.curve_anchors_.items():
        flat = anchors.double().flatten(1)
        for row, t in enumerate(POSITIONS):
            k = min(int(np.floor(t * 3)), 2)
            s = 3 * t - k
            expected = (1 - s) * flat[k] + s * flat[k + 1]
            torch.testing.assert_close(
                points[name][row].double().flatten(), expected, rtol=1e-5, atol=1e-6
            )
        # The chain passes through its interior bends.
        bends = polychain.curve_parameters([1 / 3, 2 / 3])[name].double().flatten(1)
        torch.testing.assert_close(bends, flat[1:3], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["bezier", "polychain", "trained"])
def test_members_are_the_curve_at_predict_t(request, name):
    clf = request.getfixturevalue(name)
    assert_allclose(clf.predict_t_, np.linspace(0, 1, N_PREDICT), rtol=0, atol=1e-15)
    assert clf.predict_t_[0] == 0.0 and clf.predict_t_[-1] == 1.0
    assert clf.n_members_ == N_PREDICT
    points = clf.curve_parameters(clf.predict_t_)
    assert set(clf.members_.tensors) == set(points)
    for param, expected in points.items():
        torch.testing.assert_close(
            clf.members_.tensors[param].cpu(), expected, rtol=1e-5, atol=1e-6
        )


# --------------------------------------------------------------------------- quality


def train_loss(state, X, y):
    with torch.random.fork_rng():
        module = MLP(X.shape[1], 3, hidden=32)
    module.load_state_dict(state)
    with torch.no_grad():
        logits = module(torch.from_numpy(X)).double()
    return float(torch.nn.functional.cross_entropy(logits, torch.from_numpy(y)))


def test_trained_bend_leaves_the_segment_and_lowers_the_midpoint_loss():
    X, y = make_classification(
        600, 20, n_informative=10, n_classes=3, class_sep=1.5, random_state=0
    )
    X = X.astype(np.float32)
    params = dict(module__hidden=32, lr=0.05, optimizer__momentum=0.9, batch_size=64)
    modes = DeepEnsembleClassifier(
        MLP, n_estimators=2, max_epochs=20, random_state=0, **params
    ).fit(X, y)
    clf = CurveClassifier(
        MLP, init_modes=modes, curve_epochs=5, n_predict_samples=3, random_state=0, **params
    ).fit(X, y)
    anchors = clf.curve_anchors_
    middle = {n: (a[0] + a[-1]) / 2 for n, a in anchors.items()}
    moved = torch.sqrt(sum(((a[1] - middle[n]).double() ** 2).sum() for n, a in anchors.items()))
    apart = torch.sqrt(sum(((a[-1] - a[0]).double() ** 2).sum() for a in anchors.values()))
    assert moved > 0.01 * apart, (float(moved), float(apart))
    on_curve = train_loss({n: p[0] for n, p in clf.curve_parameters(0.5).items()}, X, y)
    on_segment = train_loss(middle, X, y)
    assert on_curve < on_segment, (on_curve, on_segment)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        (dict(curve="spline"), ValueError, r"curve must be one of 'bezier', 'polychain'"),
        (dict(n_bends=2), ValueError, r"n_bends must be an integer >= 3, got 2"),
        (dict(curve_lr=float("nan")), ValueError, r"curve_lr must be a finite number"),
        ("three networks", ValueError, r"init_modes has 3 networks .*starts from exactly 2"),
    ],
    ids=["curve", "n_bends", "curve_lr", "three networks"],
)
def test_bad_input_fails_in_fit_and_leaves_it_unfitted(
    data, ensemble, bezier, params, error, match
):
    X, y = data
    if params == "three networks":
        first, second = ensemble[0].mode_state_dicts()
        params = dict(init_modes=[first, second, first])
    clf = copy.deepcopy(bezier).set_params(**params)
    assert fitted_attributes(clf)
    with pytest.raises(error, match=match):
        clf.fit(X, y)
    assert fitted_attributes(clf) == []
    with pytest.raises(NotFittedError):
        clf.curve_parameters(0.5)


# --------------------------------------------------------------------------- sklearn


def test_grid_search_over_curve_and_bends(data):
    X, y = data
    grid_values = {"curve": ["bezier", "polychain"], "n_bends": [3, 4]}
    grid = GridSearchCV(
        curve(max_epochs=1, curve_epochs=1, n_predict_samples=3), grid_values, cv=2
    ).fit(X, y)
    candidates = [
        dict(zip(grid_values, values, strict=True))
        for values in itertools.product(*grid_values.values())
    ]
    assert sorted(map(str, grid.cv_results_["params"])) == sorted(map(str, candidates))
    best_index = int(np.argmin(grid.cv_results_["rank_test_score"]))
    assert grid.best_params_ == grid.cv_results_["params"][best_index]
    assert grid.best_params_ in candidates
    best = grid.best_estimator_
    assert best.curve == grid.best_params_["curve"]
    assert best.curve_anchors_["net.1.weight"].shape[0] == grid.best_params_["n_bends"]


def test_pickle_round_trip(data, trained):
    X, _ = data
    restored = pickle.loads(pickle.dumps(trained))
    assert_array_equal(restored.predict_proba(X), trained.predict_proba(X))
    for name, anchors in trained.curve_anchors_.items():
        assert torch.equal(restored.curve_anchors_[name], anchors)
    assert_array_equal(restored.predict_t_, trained.predict_t_)


def test_same_random_state_same_predictions(data, trained):
    X, y = data
    again = curve().fit(X, y)
    assert_array_equal(again.predict_proba(X), trained.predict_proba(X))
    other = curve(random_state=1).fit(X, y)
    assert np.abs(other.predict_proba(X) - trained.predict_proba(X)).max() > 1e-3


def test_n_jobs_two_matches_sequential(data, trained):
    X, y = data
    parallel = curve(n_jobs=2).fit(X, y)
    assert parallel.epochs_spent_ == trained.epochs_spent_
    assert_allclose(
        parallel.predict_member_proba(X), trained.predict_member_proba(X), **PARALLEL_TOLERANCE
    )


class FrozenFirstLayer(torch.nn.Module):
    """An MLP whose first layer is frozen; ``seed`` fixes its values (a layer "loaded from a
    file") or, left None, draws them at random like any other layer."""

    def __init__(self, n_features_in, n_classes, seed=None):
        super().__init__()
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        self.first = torch.nn.Linear(n_features_in, 16).requires_grad_(False)
        if generator is not None:
            with torch.no_grad():
                for p in self.first.parameters():
                    p.copy_(torch.randn(p.shape, generator=generator))
        self.rest = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(16, n_classes))

    def forward(self, x):
        return self.rest(self.first(x))


def test_endpoints_predict_as_the_given_modes_with_a_shared_frozen_layer(data):
    # The frozen layer is the same in both modes: the curve's end members are the modes.
    modes = DeepEnsembleClassifier(
        FrozenFirstLayer, module__seed=0, n_estimators=2, max_epochs=2, lr=0.1,
        batch_size=100, random_state=1,
    ).fit(*data)  # fmt: skip
    clf = CurveClassifier(
        FrozenFirstLayer, module__seed=0, init_modes=modes, n_predict_samples=3,
        curve_epochs=1, lr=0.1, batch_size=100, random_state=0,
    ).fit(*data)  # fmt: skip
    ends = clf.predict_member_proba(data[0])[[0, -1]]
    assert_allclose(ends, modes.predict_member_proba(data[0]), rtol=1e-5, atol=1e-6)


def test_modes_with_different_frozen_layers_are_refused(data):
    # A frozen layer initialised at random differs between modes: no point between them
    # would have one, so the fit refuses.
    clf = CurveClassifier(FrozenFirstLayer, max_epochs=1, curve_epochs=1, random_state=0)
    with pytest.raises(ValueError, match=r"frozen parameter 'first\.weight'.*differs"):
        clf.fit(*data)
    with pytest.raises(NotFittedError):
        clf.predict(data[0])


def test_batchnorm_without_recalibration_is_refused(data):
    from nets import BatchNormMLP

    clf = CurveClassifier(BatchNormMLP, max_epochs=1, curve_epochs=1, recalibrate_bn=False)
    with pytest.raises(ValueError, match="recalibrate_bn=False on a module with BatchNorm"):
        clf.fit(*data)


def test_a_scheduler_needs_a_constant_curve_schedule(data):
    from skorch.callbacks import LRScheduler

    scheduler = LRScheduler(policy="StepLR", step_size=1)
    clf = curve(curve_callbacks=[scheduler])
    with pytest.raises(ValueError, match="curve_schedule='constant'"):
        clf.fit(*data)
    curve(curve_callbacks=[scheduler], curve_schedule="constant").fit(*data)
