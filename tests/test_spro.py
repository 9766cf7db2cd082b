"""SPROClassifier through the public API: modes joined by a complex of shared connectors."""

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

from simplexens import DeepEnsembleClassifier, SPROClassifier
from simplexens.geometry.complex import complex_log_volumes, connector_complex

#: Worker processes run torch with one thread: float32 sums may be ordered differently.
PARALLEL_TOLERANCE = dict(rtol=1e-5, atol=1e-6)

N_MODES, N_CONNECTORS, MAX_EPOCHS, EPOCHS_PER_CONNECTOR, N_PREDICT = 3, 2, 2, 1, 6


def spro(**params):
    defaults = dict(
        n_modes=N_MODES,
        n_connectors=N_CONNECTORS,
        max_epochs=MAX_EPOCHS,
        epochs_per_connector=EPOCHS_PER_CONNECTOR,
        n_predict_samples=N_PREDICT,
        lr=0.1,
        batch_size=100,
        random_state=0,
    )
    return SPROClassifier(MLP, **{**defaults, **params})


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(
        300, 10, n_informative=6, n_redundant=2, n_classes=3, random_state=0
    )
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def fitted(data):
    return spro().fit(*data)


@pytest.fixture(scope="module")
def ensemble(data):
    """Two trained networks, and a copy of their tensors taken right after fitting."""
    clf = DeepEnsembleClassifier(
        MLP, n_estimators=2, max_epochs=2, lr=0.1, batch_size=100, random_state=1
    ).fit(*data)
    return clf, {name: t.clone() for name, t in clf.members_.tensors.items()}


def module_shapes(n_features_in=10, n_classes=3):
    with torch.random.fork_rng():
        return {n: tuple(p.shape) for n, p in MLP(n_features_in, n_classes).named_parameters()}


def fitted_attributes(clf):
    return [k for k in vars(clf) if k.endswith("_") and not k.startswith("_")]


# --------------------------------------------------------------------------- fitted state


def test_complex_and_vertex_shapes(fitted):
    assert fitted.complex_ == connector_complex(N_MODES, N_CONNECTORS)
    assert fitted.complex_.simplexes == ((0, 3, 4), (1, 3, 4), (2, 3, 4))
    shapes = module_shapes()
    assert set(fitted.complex_vertices_) == set(shapes)
    for name, vertices in fitted.complex_vertices_.items():
        assert vertices.shape == (N_MODES + N_CONNECTORS, *shapes[name])
        assert vertices.device.type == "cpu"
    assert fitted.complex_log_volumes_.shape == (N_CONNECTORS, N_MODES)
    assert fitted.predict_weights_.shape == (N_PREDICT, N_MODES + N_CONNECTORS)
    assert fitted.n_members_ == N_PREDICT
    assert fitted.epochs_spent_ == N_MODES * MAX_EPOCHS + N_CONNECTORS * EPOCHS_PER_CONNECTOR


def test_log_volumes_are_those_of_the_recorded_anchors(fitted):
    # Connector j + 1 only adds a vertex: the first n_modes + j + 1 anchors are those the
    # complex had when its log-volumes were recorded.
    for n_connectors in range(1, N_CONNECTORS + 1):
        anchors = {n: v[: N_MODES + n_connectors] for n, v in fitted.complex_vertices_.items()}
        expected = complex_log_volumes(anchors, connector_complex(N_MODES, n_connectors))
        assert_allclose(
            fitted.complex_log_volumes_[n_connectors - 1], expected.numpy(), rtol=1e-10
        )
    assert np.all(np.isfinite(fitted.complex_log_volumes_))


def test_predict_weights_are_barycentric_on_one_simplex(fitted):
    weights = fitted.predict_weights_
    assert np.all(weights >= 0)
    assert_allclose(weights.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    simplexes = [set(s) for s in fitted.complex_.simplexes]
    for row in weights:
        support = set(np.flatnonzero(row).tolist())
        assert any(support <= s for s in simplexes), support
        assert np.count_nonzero(row[:N_MODES]) <= 1  # at most one mode per point


def test_members_are_the_weighted_vertices(fitted):
    # Oracle: predict_weights_ @ complex_vertices_, by hand in float64.
    weights = torch.from_numpy(fitted.predict_weights_)
    assert set(fitted.members_.tensors) == set(fitted.complex_vertices_)
    for name, vertices in fitted.complex_vertices_.items():
        expected = torch.tensordot(weights, vertices.double(), dims=1)
        torch.testing.assert_close(
            fitted.members_.tensors[name].cpu().double(), expected, rtol=1e-5, atol=1e-6
        )


# --------------------------------------------------------------------------- given modes


@pytest.fixture(scope="module")
def from_ensemble(data, ensemble):
    clf, _ = ensemble
    proba = clf.predict_proba(data[0])
    chain = spro(n_modes=2, n_connectors=1, epochs_per_connector=2, init_modes=clf).fit(*data)
    return chain, proba


def test_given_modes_are_the_first_anchors_bit_for_bit(from_ensemble, ensemble):
    chain, _ = from_ensemble
    source, _ = ensemble
    for name, vertices in chain.complex_vertices_.items():
        assert torch.equal(vertices[:2], source.members_.tensors[name].cpu()), name
        assert not torch.equal(vertices[2], vertices[0])
    assert chain.epochs_spent_ == 1 * 2  # n_connectors * epochs_per_connector, no mode epochs
    modes = chain.mode_state_dicts()
    assert len(modes) == 2
    for i, mode in enumerate(modes):
        for name, t in mode.items():
            assert torch.equal(t, source.members_.member(i)[name].cpu()), name


def test_given_estimator_is_left_unchanged(data, from_ensemble, ensemble):
    _, proba_before = from_ensemble
    source, before = ensemble
    for name, t in source.members_.tensors.items():
        assert torch.equal(t, before[name]), name
    assert_array_equal(source.predict_proba(data[0]), proba_before)


def test_two_modes_one_connector_is_a_chain(from_ensemble):
    chain, _ = from_ensemble
    assert chain.complex_.simplexes == ((0, 2), (1, 2))
    assert chain.complex_log_volumes_.shape == (1, 2)
    # Every prediction point lies on one of the two segments w_i - θ_0.
    weights = chain.predict_weights_
    assert np.all(weights[:, 0] * weights[:, 1] == 0)
    assert_allclose(weights.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    # On a segment, log V is the log of its length.
    for i in range(2):
        length = torch.sqrt(
            sum(
                ((v[i].double() - v[2].double()) ** 2).sum()
                for v in chain.complex_vertices_.values()
            )
        )
        assert_allclose(chain.complex_log_volumes_[0, i], float(torch.log(length)), rtol=1e-9)


# --------------------------------------------------------------------------- quality


def test_sampled_points_keep_low_training_loss():
    # The points of the complex classify the training data about as well as the modes they
    # connect: their mean training accuracy is within 2 points of the modes' mean.
    X, y = make_classification(
        600, 20, n_informative=10, n_classes=3, class_sep=1.5, random_state=0
    )
    X = X.astype(np.float32)
    params = dict(module__hidden=32, lr=0.05, optimizer__momentum=0.9, batch_size=32)
    clf = SPROClassifier(
        MLP,
        n_modes=2,
        n_connectors=2,
        max_epochs=20,
        epochs_per_connector=5,
        n_predict_samples=10,
        random_state=0,
        **params,
    ).fit(X, y)
    modes = DeepEnsembleClassifier(
        MLP, n_estimators=2, init_modes=clf.mode_state_dicts(), **params
    ).fit(X, y)
    assert modes.epochs_spent_ == 0

    def member_accuracy(est):
        predicted = est.classes_[est.predict_member_proba(X).argmax(-1)]
        return (predicted == y[None]).mean(axis=1)

    points, ends = member_accuracy(clf).mean(), member_accuracy(modes).mean()
    assert ends > 0.95, ends  # the modes did learn the training data
    assert abs(ends - points) <= 0.02, (ends, points)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        (dict(n_modes=1), ValueError, r"n_modes must be an integer >= 2, got 1"),
        (dict(n_connectors=0), ValueError, r"n_connectors must be an integer >= 1, got 0"),
        (dict(volume_lambda=float("nan")), ValueError, r"volume_lambda must be a finite"),
        (
            dict(complex_weighting="bogus"),
            ValueError,
            r"complex_weighting must be one of 'volume', 'equal'; got 'bogus'",
        ),
        (
            dict(connector_schedule="linear"),
            ValueError,
            r"connector_schedule must be one of 'cosine', 'constant'; got 'linear'",
        ),
        (dict(connector_callbacks="x"), TypeError, r"connector_callbacks: .*got 'x'"),
    ],
    ids=[
        "n_modes",
        "n_connectors",
        "volume_lambda",
        "complex_weighting",
        "connector_schedule",
        "connector_callbacks",
    ],
)
def test_bad_parameters_fail_in_fit_and_leave_it_unfitted(data, fitted, params, error, match):
    X, y = data
    clf = copy.deepcopy(fitted).set_params(**params)
    assert fitted_attributes(clf)  # fitted before
    with pytest.raises(error, match=match):
        clf.fit(X, y)
    assert fitted_attributes(clf) == []
    with pytest.raises(NotFittedError):
        clf.predict(X)
    with pytest.raises(NotFittedError):
        clf.dimension_probe(X, y)


# --------------------------------------------------------------------------- sklearn


def test_grid_search_over_connectors_and_volume_lambda(data):
    X, y = data
    grid_values = {"n_connectors": [1, 2], "volume_lambda": [0.0, 0.1]}
    grid = GridSearchCV(spro(n_modes=2, max_epochs=1, n_predict_samples=3), grid_values, cv=2).fit(
        X, y
    )
    candidates = [
        dict(zip(grid_values, values, strict=True))
        for values in itertools.product(*grid_values.values())
    ]
    assert sorted(map(str, grid.cv_results_["params"])) == sorted(map(str, candidates))
    assert grid.best_params_ in candidates
    best_index = int(np.argmin(grid.cv_results_["rank_test_score"]))
    assert grid.best_params_ == grid.cv_results_["params"][best_index]
    assert_allclose(grid.best_score_, grid.cv_results_["mean_test_score"][best_index])
    best = grid.best_estimator_
    n_connectors = grid.best_params_["n_connectors"]
    assert best.volume_lambda == grid.best_params_["volume_lambda"]
    assert best.complex_ == connector_complex(2, n_connectors)
    assert best.complex_log_volumes_.shape == (n_connectors, 2)
    assert best.complex_vertices_["net.1.weight"].shape[0] == 2 + n_connectors


def test_pickle_round_trip(data, fitted):
    X, _ = data
    restored = pickle.loads(pickle.dumps(fitted))
    assert_array_equal(restored.predict_proba(X), fitted.predict_proba(X))
    assert restored.complex_ == fitted.complex_
    assert_array_equal(restored.complex_log_volumes_, fitted.complex_log_volumes_)
    for name, vertices in fitted.complex_vertices_.items():
        assert torch.equal(restored.complex_vertices_[name], vertices)


def test_same_random_state_same_predictions(data, fitted):
    X, y = data
    again = spro().fit(X, y)
    assert_array_equal(again.predict_proba(X), fitted.predict_proba(X))
    assert_array_equal(again.predict_weights_, fitted.predict_weights_)
    other = spro(random_state=1).fit(X, y)
    assert np.abs(other.predict_proba(X) - fitted.predict_proba(X)).max() > 1e-3


def test_n_jobs_two_matches_sequential(data, fitted):
    X, y = data
    parallel = spro(n_jobs=2).fit(X, y)
    assert parallel.epochs_spent_ == fitted.epochs_spent_
    assert_array_equal(parallel.predict_weights_, fitted.predict_weights_)
    assert_allclose(
        parallel.predict_member_proba(X), fitted.predict_member_proba(X), **PARALLEL_TOLERANCE
    )


# --------------------------------------------------------------------------- probe


@pytest.fixture(scope="module")
def probe(data, fitted):
    return fitted.dimension_probe(*data, n_samples=5)


def test_dimension_probe_heights_follow_from_log_volumes(fitted, probe):
    assert_array_equal(probe.n_connectors, np.arange(1, N_CONNECTORS + 1))
    assert_array_equal(probe.log_volumes, fitted.complex_log_volumes_)
    # Oracle: h_c = mean over simplexes of exp(log V_c - log V_{c-1} + log c), log V_0 = 0.
    log_v = fitted.complex_log_volumes_
    expected = []
    for c in range(1, N_CONNECTORS + 1):
        previous = log_v[c - 2] if c > 1 else np.zeros(N_MODES)
        expected.append(
            np.mean([np.exp(log_v[c - 1, i] - previous[i] + np.log(c)) for i in range(N_MODES)])
        )
    assert_allclose(probe.heights, expected, rtol=1e-12)
    assert np.all(probe.heights > 0)


def test_dimension_probe_accuracy(data, probe):
    X, _ = data
    assert probe.accuracy.shape == (N_CONNECTORS,)
    assert np.all((probe.accuracy >= 0) & (probe.accuracy <= 1))
    # A mean of 0/1 outcomes over 5 points x len(X) rows: a whole number of hits.
    hits = probe.accuracy * 5 * len(X)
    assert_allclose(hits, np.round(hits), rtol=0, atol=1e-6)
    assert np.all(probe.accuracy > 1 / 3)  # better than chance on 3 balanced classes


def test_dimension_probe_collapse_threshold(data, fitted, probe):
    X, y = data
    relative = probe.heights / probe.heights[0]

    def first_below(tolerance):  # oracle: first 0-based connector index below tolerance * h_1
        low = [k for k, h in enumerate(probe.heights) if h < tolerance * probe.heights[0]]
        return low[0] if low else None

    never = relative.min() * (1 - 1e-6)
    assert fitted.dimension_probe(X, y, n_samples=2, tolerance=never).collapsed_after is None
    collapsing = 1.5 * relative.min()
    result = fitted.dimension_probe(X, y, n_samples=2, tolerance=collapsing).collapsed_after
    assert isinstance(result, int)
    assert result == first_below(collapsing)


# --------------------------------------------------------------------------- weighting


def test_equal_weighting_draws_valid_points_from_every_simplex(data):
    clf = spro(complex_weighting="equal", n_predict_samples=30).fit(*data)
    weights = clf.predict_weights_
    assert weights.shape == (30, N_MODES + N_CONNECTORS)
    assert np.all(weights >= 0)
    assert_allclose(weights.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert np.all(weights[:, N_MODES:] > 0)  # every point uses both connectors
    modes = [np.flatnonzero(row[:N_MODES]) for row in weights]
    assert all(len(m) == 1 for m in modes)
    # Each simplex is drawn with probability 1/3: P(one never drawn in 30) < 3 (2/3)^30 < 1e-4.
    assert set(np.concatenate(modes).tolist()) == set(range(N_MODES))


@pytest.mark.parametrize(
    ("y", "match"),
    [
        (None, "needs the labels y"),
        ("unknown", "labels not seen in fit"),
        ("short", "inconsistent"),
    ],
)
def test_dimension_probe_checks_its_labels(data, fitted, y, match):
    X, labels = data
    y = {"unknown": labels + 10, "short": labels[:-1]}.get(y, y)
    with pytest.raises(ValueError, match=match):
        fitted.dimension_probe(X, y)


def test_exploding_connectors_raise_a_divergence_error(data, ensemble):
    # A connector driven to inf or NaN makes the complex's volumes non-finite; sampling
    # carries on and the divergence check names the phase and the rate to lower.
    from simplexens.exceptions import DivergenceError

    clf = spro(init_modes=ensemble[0], n_modes=2, connector_lr=1e6, epochs_per_connector=3)
    with pytest.raises(DivergenceError, match=r"connector 1.*connector_lr \(now 1000000\.0\)"):
        clf.fit(*data)
    with pytest.raises(NotFittedError):
        clf.predict(data[0])
