"""ESPROClassifier through the public API."""

import math
import pickle
import typing

import numpy as np
import pytest
import torch
from nets import MLP, SmallCNN
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from skorch.callbacks import Callback, LRScheduler, ProgressBar
from torch.optim.swa_utils import update_bn

from simplexens import DeepEnsembleClassifier, ESPROClassifier
from simplexens.geometry.simplex import log_volume


def espro(module=MLP, **params):
    defaults = dict(
        n_modes=2,
        n_vertices=3,
        n_predict_samples=4,
        max_epochs=3,
        epochs_per_vertex=2,
        lr=0.1,
        batch_size=64,
        random_state=0,
    )
    return ESPROClassifier(module, **{**defaults, **params})


@pytest.fixture(scope="module")
def fitted(small_digits):
    X, y = small_digits
    return espro().fit(X, y)


def test_fitted_state(fitted):
    assert fitted.n_members_ == 2 * 4
    assert fitted.epochs_spent_ == 2 * (3 + 2 * 2)
    assert fitted.simplex_log_volumes_.shape == (2, 2)
    assert np.all(np.isfinite(fitted.simplex_log_volumes_))
    assert fitted.simplex_vertices_["net.1.weight"].shape == (2, 3, 16, 64)
    assert fitted.predict_weights_.shape == (2, 4, 3)
    assert_allclose(fitted.predict_weights_.sum(-1), 1.0)


def test_log_volumes_are_those_of_the_stored_vertices(fitted):
    for mode in range(2):
        vertices = {name: v[mode] for name, v in fitted.simplex_vertices_.items()}
        assert_allclose(fitted.simplex_log_volumes_[mode, -1], float(log_volume(vertices)))
        first_two = {name: v[:2] for name, v in vertices.items()}
        assert_allclose(fitted.simplex_log_volumes_[mode, 0], float(log_volume(first_two)))


def test_members_are_the_drawn_points_of_each_simplex(fitted):
    # Oracle: member (mode, s) = Σ_i w[mode, s, i] v_i computed by hand in float64.
    for name, vertices in fitted.simplex_vertices_.items():
        members = fitted.members_.tensors[name].cpu().double()
        for mode in range(2):
            for s in range(4):
                w = torch.from_numpy(fitted.predict_weights_[mode, s])
                point = w.reshape(-1, *[1] * (vertices.dim() - 2)) * vertices[mode].double()
                torch.testing.assert_close(
                    members[mode * 4 + s], point.sum(0), rtol=1e-5, atol=1e-6
                )


def test_mode_is_the_deep_ensemble_member_and_earlier_vertices_stay_frozen(small_digits):
    # Same random_state, same per-mode seed: vertex 0 is exactly the network a deep ensemble
    # trains, and growing a simplex further never moves the vertices already found.
    X, y = small_digits
    ensemble = DeepEnsembleClassifier(
        MLP, n_estimators=2, max_epochs=3, lr=0.1, batch_size=64, random_state=0
    ).fit(X, y)
    two = espro(n_vertices=2).fit(X, y)
    three = espro(n_vertices=3).fit(X, y)
    for name, vertices in three.simplex_vertices_.items():
        assert torch.equal(vertices[:, 0], ensemble.members_.tensors[name].cpu())
        assert torch.equal(vertices[:, :2], two.simplex_vertices_[name])
        assert not torch.equal(vertices[:, 2], vertices[:, 1])
    assert_array_equal(three.simplex_log_volumes_[:, 0], two.simplex_log_volumes_[:, 0])


def test_larger_volume_lambda_gives_larger_volume(small_digits):
    X, y = small_digits
    small = espro(n_modes=1, volume_lambda=0.0).fit(X, y).simplex_log_volumes_
    large = espro(n_modes=1, volume_lambda=1.0).fit(X, y).simplex_log_volumes_
    assert np.all(large > small)


def test_simplex_points_keep_low_training_loss(digits):
    # The points of a trained simplex classify the training data about as well as the mode:
    # their mean training accuracy is within 2 points of the mode's.
    X_train, _, y_train, _ = digits
    params = dict(
        module__hidden=64,
        n_modes=1,
        n_vertices=3,
        n_predict_samples=10,
        max_epochs=15,
        epochs_per_vertex=5,
        lr=0.05,
        optimizer__momentum=0.9,
        random_state=0,
    )
    clf = espro(**params).fit(X_train, y_train)
    mode = espro(**{**params, "n_vertices": 1, "n_predict_samples": 1}).fit(X_train, y_train)
    points = clf.predict_member_proba(X_train).argmax(-1)
    point_accuracy = np.mean(clf.classes_[points] == y_train[None], axis=1)
    assert mode.score(X_train, y_train) - point_accuracy.mean() < 0.02
    assert clf.simplex_log_volumes_.min() > -np.inf


def test_same_seed_same_predictions_and_pickle(small_digits, fitted):
    X, y = small_digits
    again = espro().fit(X, y)
    assert_array_equal(again.predict_proba(X), fitted.predict_proba(X))
    restored = pickle.loads(pickle.dumps(fitted))
    assert_array_equal(restored.predict_proba(X), fitted.predict_proba(X))
    other = espro(random_state=1).fit(X, y)
    assert np.abs(other.predict_proba(X) - fitted.predict_proba(X)).max() > 1e-3


def test_n_jobs_two_matches_sequential(small_digits, fitted):
    X, y = small_digits
    parallel = espro(n_jobs=2).fit(X, y)
    assert_allclose(
        parallel.predict_member_proba(X), fitted.predict_member_proba(X), rtol=1e-5, atol=1e-6
    )


def test_fit_leaves_torch_global_rng_alone(small_digits):
    X, y = small_digits
    before = torch.get_rng_state()
    espro(n_modes=1).fit(X, y)
    torch.testing.assert_close(torch.get_rng_state(), before)


def test_grid_search_over_simplex_parameters(small_digits):
    X, y = small_digits
    grid = GridSearchCV(
        espro(n_modes=1, max_epochs=2, epochs_per_vertex=1),
        {
            "n_vertices": [1, 2],
            "volume_lambda": [0.0, 0.1],
            "n_train_samples": [1, 3],
            "n_predict_samples": [2, 3],
        },
        cv=2,
    ).fit(X, y)
    assert len(grid.cv_results_["params"]) == 16
    best, chosen = grid.best_estimator_, grid.best_params_
    assert best.n_members_ == chosen["n_predict_samples"]
    assert best.simplex_vertices_["net.1.weight"].shape[1] == chosen["n_vertices"]
    assert (best.volume_lambda, best.n_train_samples) == (
        chosen["volume_lambda"],
        chosen["n_train_samples"],
    )


def test_batchnorm_cnn_on_images_with_recalibration(digits):
    X_train, X_test, y_train, y_test = digits
    images, test_images = X_train.reshape(-1, 1, 8, 8), X_test.reshape(-1, 1, 8, 8)
    clf = espro(
        SmallCNN, n_modes=1, n_vertices=2, max_epochs=4, lr=0.05, iterator_valid__batch_size=64
    ).fit(images, y_train)
    assert clf.score(test_images, y_test) > 0.85
    # Oracle: torch's update_bn on each point, with the same batches (recalibration batches
    # are sized as prediction's: iterator_valid__batch_size) in the same order.
    batches = [torch.tensor(images[i : i + 64]) for i in range(0, len(images), 64)]
    for i in range(clf.n_members_):
        module = SmallCNN(10)
        state = clf.members_.member(i)
        module.load_state_dict({k: v.clone() for k, v in state.items()})
        update_bn(batches, module)
        bn = module.features[1]
        torch.testing.assert_close(
            state["features.1.running_mean"], bn.running_mean, rtol=1e-4, atol=1e-5
        )
        torch.testing.assert_close(
            state["features.1.running_var"], bn.running_var, rtol=1e-4, atol=1e-5
        )
    # Without recalibration the points keep the mode's statistics, which differ.
    stale = espro(
        SmallCNN, n_modes=1, n_vertices=2, max_epochs=4, lr=0.05, recalibrate_bn=False
    ).fit(images, y_train)
    means = stale.members_.tensors["features.1.running_mean"]
    assert torch.equal(means[0], means[1])
    assert not torch.equal(clf.members_.tensors["features.1.running_mean"], means)


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        (dict(n_vertices=0), ValueError, "n_vertices must be .*>= 1.*, got 0"),
        (dict(n_train_samples=0), ValueError, "n_train_samples must be .*>= 1.*, got 0"),
        (dict(n_predict_samples=0), ValueError, "n_predict_samples must be .*>= 1.*, got 0"),
        (dict(volume_lambda=-0.1), ValueError, "volume_lambda must be .*>= 0.*, got -0.1"),
        (dict(n_modes=0), ValueError, "n_modes must be .*>= 1.*, got 0"),
        (dict(epochs_per_vertex=0), ValueError, "epochs_per_vertex must be .*>= 1.*, got 0"),
        (dict(vertex_lr=0.0), ValueError, "vertex_lr must be .*> 0.*, got 0.0"),
        (dict(vertex_init_scale=0), ValueError, "vertex_init_scale must be .*> 0.*, got 0"),
        (dict(recalibrate_bn="yes"), TypeError, "recalibrate_bn must be True or False"),
        (dict(n_vertices=2.0), TypeError, "n_vertices must be an integer"),
    ],
)
def test_bad_parameters_fail_in_fit(small_digits, params, error, match):
    X, y = small_digits
    clf = espro(**params)
    with pytest.raises(error, match=match):
        clf.fit(X, y)
    with pytest.raises(NotFittedError):
        clf.predict(X)


class EpochCounter(Callback):
    """Counts the epochs of every net it is attached to, and the learning rates seen."""

    epochs = 0
    lrs: typing.ClassVar[list] = []

    def on_epoch_end(self, net, **kwargs):
        type(self).epochs += 1
        type(self).lrs.append(net.optimizer_.param_groups[0]["lr"])


def test_skorch_callbacks_run_in_mode_and_vertex_phases(small_digits):
    # The callbacks list reaches the mode's net and every vertex's net (the counter sees
    # every epoch ESPRO spends), except the learning-rate scheduler, which acts in the mode's
    # training only: each vertex phase anneals its own rate from vertex_lr (cosine over the
    # phase's 2 x 5 steps; the rate seen at an epoch's end is that of its last step).
    X, y = small_digits
    EpochCounter.epochs, EpochCounter.lrs = 0, []
    scheduler = LRScheduler(policy="StepLR", step_size=1, gamma=0.5)
    clf = espro(
        n_modes=1,
        vertex_lr=0.02,
        callbacks=[EpochCounter(), scheduler, ProgressBar()],
    ).fit(X, y)
    assert EpochCounter.epochs == clf.epochs_spent_ == 3 + 2 * 2
    steps = -(-len(X) // 64)
    cosine = [0.01 * (1 + math.cos(math.pi * s / (2 * steps))) for s in (steps - 1, 2 * steps - 1)]
    assert_allclose(EpochCounter.lrs, [0.1, 0.05, 0.025, *cosine, *cosine])


@pytest.mark.parametrize(
    ("vertex_callbacks", "expected"),
    [(None, [0.02, 0.02]), ([LRScheduler(policy="StepLR", step_size=1, gamma=0.5)], [0.02, 0.01])],
)
def test_vertex_callbacks_choose_what_acts_in_the_vertex_phases(
    small_digits, vertex_callbacks, expected
):
    X, y = small_digits
    EpochCounter.epochs, EpochCounter.lrs = 0, []
    scheduler = LRScheduler(policy="StepLR", step_size=1, gamma=0.5)
    espro(
        n_modes=1,
        vertex_lr=0.02,
        vertex_schedule="constant",
        vertex_callbacks=None if vertex_callbacks is None else [EpochCounter(), *vertex_callbacks],
        callbacks=[EpochCounter(), scheduler],
    ).fit(X, y)
    assert_allclose(EpochCounter.lrs, [0.1, 0.05, 0.025, *expected, *expected])


def test_espro_from_given_modes_equals_espro_from_scratch(small_digits):
    # The same random_state gives a deep ensemble the same member seeds as ESPRO's modes, so
    # growing simplexes from that ensemble's members reproduces ESPRO from scratch exactly
    # (a module without dropout: the vertex phases draw only from the modes' seeds), while
    # spending only the vertex epochs.
    X, y = small_digits
    scratch = espro().fit(X, y)
    modes = DeepEnsembleClassifier(
        MLP, n_estimators=2, max_epochs=3, lr=0.1, batch_size=64, random_state=0
    ).fit(X, y)
    grown = espro(init_modes=modes).fit(X, y)
    assert_allclose(grown.predict_proba(X), scratch.predict_proba(X), rtol=0, atol=1e-6)
    assert grown.epochs_spent_ == scratch.epochs_spent_ - modes.epochs_spent_ == 2 * 2 * 2
