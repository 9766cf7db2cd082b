"""Warm start in scikit-learn's ensemble sense: raising a count and refitting trains only what
is new. Oracles: the fitted tensors before the refit (bit-identical after it), the epochs the
added parts must spend, and a cold fit of the larger ensemble where the seeds line up."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from sklearn.base import clone
from sklearn.datasets import make_classification

from simplexens import (
    CurveClassifier,
    DeepEnsembleClassifier,
    ESPROClassifier,
    FGEClassifier,
    SPROClassifier,
    SWAGClassifier,
)
from simplexens.datasets import MLP

X, Y = make_classification(96, 6, n_informative=4, n_redundant=0, n_classes=3, random_state=2)
X = X.astype(np.float32)
COMMON = {"max_epochs": 2, "batch_size": 32, "random_state": 0, "warm_start": True}


def _tensors(model):
    return [
        {k: v.clone() for k, v in model.members_.member(i).items()}
        for i in range(model.n_members_)
    ]


def _assert_same(before, after):
    assert before.keys() == after.keys()
    for name in before:
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=0)


def test_deep_ensemble_adds_members_and_equals_a_cold_fit():
    model = DeepEnsembleClassifier(MLP, n_estimators=2, **COMMON).fit(X, Y)
    before = _tensors(model)
    model.set_params(n_estimators=4).fit(X, Y)
    assert model.n_members_ == 4
    assert model.epochs_spent_ == 4 * 2
    for i in range(2):
        _assert_same(before[i], model.members_.member(i))
    # new members draw their seeds where the first ones stopped: a cold fit of 4 is the same
    cold = DeepEnsembleClassifier(MLP, n_estimators=4, **{**COMMON, "warm_start": False})
    cold.fit(X, Y)
    assert_allclose(model.predict_proba(X), cold.predict_proba(X), rtol=0, atol=0)


def test_swag_adds_runs():
    model = SWAGClassifier(MLP, n_modes=1, swa_start=1, n_predict_samples=2, **COMMON)
    model.fit(X, Y)
    before = _tensors(model)
    model.set_params(n_modes=3).fit(X, Y)
    assert model.n_members_ == 3 * 2
    assert model.epochs_spent_ == 3 * 2
    assert len(model.swag_moments_) == len(model.mode_buffers_) == 3
    for i in range(2):
        _assert_same(before[i], model.members_.member(i))


def test_fge_adds_snapshots_from_the_last_one():
    model = FGEClassifier(MLP, n_snapshots=2, cycle_length=1, **COMMON).fit(X, Y)
    before, steps = _tensors(model), model.snapshot_steps_.copy()
    model.set_params(n_snapshots=4).fit(X, Y)
    assert model.n_members_ == 4
    # pretraining 2 + 2 cycles of 1 epoch, then 2 more cycles (no pretraining)
    assert model.epochs_spent_ == 2 + 2 + 2
    for i in range(2):
        _assert_same(before[i], model.members_.member(i))
    assert np.all(np.diff(model.snapshot_steps_) > 0)
    np.testing.assert_array_equal(model.snapshot_steps_[:2], steps)
    assert len(model.learning_rates_) > model.snapshot_steps_[-1]


def _espro(**params):
    return ESPROClassifier(
        MLP, n_modes=1, n_vertices=2, epochs_per_vertex=1, n_predict_samples=2, **COMMON
    ).set_params(**params)


def test_espro_adds_modes_then_vertices():
    model = _espro().fit(X, Y)
    before, vertices = _tensors(model), {k: v.clone() for k, v in model.simplex_vertices_.items()}
    model.set_params(n_modes=2).fit(X, Y)
    assert model.epochs_spent_ == 2 * (2 + 1)
    assert model.simplex_log_volumes_.shape == (2, 1)
    for i in range(2):  # the first simplex's points are kept
        _assert_same(before[i], model.members_.member(i))
    model.set_params(n_vertices=3).fit(X, Y)
    assert model.epochs_spent_ == 2 * (2 + 1) + 2 * 1  # one more vertex per simplex
    assert model.simplex_log_volumes_.shape == (2, 2)
    assert model.predict_weights_.shape == (2, 2, 3)
    for name, v in vertices.items():  # the first simplex's two vertices are kept
        torch.testing.assert_close(model.simplex_vertices_[name][0, :2], v[0], rtol=0, atol=0)
    assert np.isfinite(model.predict_proba(X)).all()


def test_spro_adds_connectors_and_keeps_the_complex():
    model = SPROClassifier(
        MLP, n_modes=2, n_connectors=1, epochs_per_connector=1, n_predict_samples=2, **COMMON
    ).fit(X, Y)
    anchors = {k: v.clone() for k, v in model.complex_vertices_.items()}
    volumes = model.complex_log_volumes_.copy()
    model.set_params(n_connectors=2).fit(X, Y)
    assert model.epochs_spent_ == 2 * 2 + 1 + 1
    for name, v in anchors.items():
        torch.testing.assert_close(model.complex_vertices_[name][:3], v, rtol=0, atol=0)
    assert model.complex_log_volumes_.shape == (2, 2)
    assert_allclose(model.complex_log_volumes_[0], volumes[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="cannot change n_modes"):
        model.set_params(n_modes=3).fit(X, Y)


def test_misuse_is_an_error_and_keeps_the_fit():
    model = DeepEnsembleClassifier(MLP, n_estimators=2, **COMMON).fit(X, Y)
    expected = model.predict_proba(X)
    with pytest.raises(ValueError, match="below the 2 already fitted"):
        model.set_params(n_estimators=1).fit(X, Y)
    model.set_params(n_estimators=3)
    with pytest.raises(ValueError, match=r"data .* differ"):
        model.fit(X[:-1], Y[:-1])
    with pytest.raises(ValueError, match=r"data .* differ"):
        model.fit(X, np.where(Y == 2, 5, Y))  # other classes
    with pytest.raises(ValueError, match=r"data .* differ"):
        model.fit(X, Y, sample_weight=np.full(len(Y), 2.0))
    assert model.n_members_ == 2  # the failed refits kept the fit
    assert_allclose(model.predict_proba(X), expected, rtol=0, atol=0)


def test_nothing_to_grow_warns_and_trains_nothing():
    model = CurveClassifier(MLP, curve_epochs=1, n_predict_samples=3, **COMMON).fit(X, Y)
    spent, expected = model.epochs_spent_, model.predict_proba(X)
    with pytest.warns(UserWarning, match="no count to raise"):
        model.fit(X, Y)
    assert model.epochs_spent_ == spent
    assert_allclose(model.predict_proba(X), expected, rtol=0, atol=0)


def test_without_warm_start_a_refit_starts_over():
    model = DeepEnsembleClassifier(MLP, n_estimators=2, **{**COMMON, "warm_start": False})
    model.fit(X, Y).set_params(n_estimators=3).fit(X, Y)
    assert model.n_members_ == 3
    assert model.epochs_spent_ == 3 * 2


def test_warm_start_survives_pickle_and_not_clone():
    model = DeepEnsembleClassifier(MLP, n_estimators=1, **COMMON).fit(X, Y)
    restored = pickle.loads(pickle.dumps(model))
    restored.set_params(n_estimators=2).fit(X, Y)
    model.set_params(n_estimators=2).fit(X, Y)
    assert_allclose(restored.predict_proba(X), model.predict_proba(X), rtol=0, atol=0)
    fresh = clone(model)  # unfitted: its first fit is a cold one, without warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh.fit(X, Y)
    assert fresh.epochs_spent_ == 2 * 2


def test_changed_sample_count_module_or_width_is_an_error_before_training():
    espro = _espro().fit(X, Y)
    with pytest.raises(ValueError, match="cannot change n_predict_samples"):
        espro.set_params(n_modes=2, n_predict_samples=3).fit(X, Y)
    swag = SWAGClassifier(MLP, n_modes=1, swa_start=1, n_predict_samples=2, **COMMON).fit(X, Y)
    with pytest.raises(ValueError, match="cannot change covariance"):
        swag.set_params(n_modes=2, covariance="diagonal").fit(X, Y)
    model = DeepEnsembleClassifier(MLP, n_estimators=1, module__hidden=16, **COMMON).fit(X, Y)
    with pytest.raises(ValueError, match="module"):
        model.set_params(n_estimators=2, module__hidden=32).fit(X, Y)
    model.set_params(module__hidden=16)
    with pytest.raises(ValueError, match="these data"):  # n_features_in changed
        model.fit(np.hstack([X, X]), Y)
    assert model.n_features_in_ == 6  # the failed refits kept the fitted state
    assert model.predict_proba(X).shape == (len(X), 3)


def test_unseeded_estimators_grow_with_different_seeds():
    """random_state=None: each estimator continues its own random state, not a shared one."""
    params = {**COMMON, "random_state": None}
    a = DeepEnsembleClassifier(MLP, n_estimators=1, **params).fit(X, Y)
    b = DeepEnsembleClassifier(MLP, n_estimators=1, **params).fit(X, Y)
    a.set_params(n_estimators=2).fit(X, Y)
    b.set_params(n_estimators=2).fit(X, Y)
    new_a, new_b = a.members_.member(1), b.members_.member(1)
    assert any(not torch.equal(new_a[k], new_b[k]) for k in new_a)


def test_fge_counts_the_snapshots_taken_after_early_stopping():
    from skorch.callbacks import EarlyStopping

    model = FGEClassifier(
        MLP, n_snapshots=6, cycle_length=1,
        callbacks=[EarlyStopping(monitor="train_loss", patience=1, threshold=10.0)], **COMMON,
    )  # fmt: skip
    with pytest.warns(UserWarning):
        model.fit(X, Y)
    taken = model.n_members_
    assert taken < 6
    model.set_params(n_snapshots=taken + 2, callbacks=None).fit(X, Y)
    assert model.n_members_ == taken + 2
    assert len(model.snapshot_steps_) == taken + 2


def _factory(n_features_in, n_classes):
    return MLP(n_features_in, n_classes, hidden=8)


def test_a_factory_module_grows():
    """A module given as a factory function (or a lambda) is recognised across refits."""
    model = DeepEnsembleClassifier(_factory, n_estimators=1, **COMMON).fit(X, Y)
    model.set_params(n_estimators=2).fit(X, Y)
    assert model.n_members_ == 2
    lam = DeepEnsembleClassifier(
        lambda n_features_in, n_classes: MLP(n_features_in, n_classes, hidden=8),
        n_estimators=1, **COMMON,
    ).fit(X, Y)  # fmt: skip
    lam.set_params(n_estimators=2).fit(X, Y)
    assert lam.n_members_ == 2


def test_the_data_fingerprint_ignores_memory_layout():
    """Equal data in C or Fortran order, or with a size-1 axis made by indexing (stride 0)
    or by reshape, has one fingerprint; other data another."""
    from simplexens._warm import fingerprint

    images = np.random.default_rng(0).random((6, 8, 8), dtype=np.float32)
    labels = np.arange(6)
    reference = fingerprint(images.reshape(6, 1, 8, 8), labels, None)
    assert fingerprint(images[:, None], labels, None) == reference
    assert fingerprint(np.asfortranarray(images.reshape(6, 1, 8, 8)), labels, None) == reference
    assert fingerprint(images[:, None] + 1.0, labels, None) != reference
    assert fingerprint(images.reshape(6, 8, 1, 8), labels, None) != reference
