"""Regressions found in review: frozen parameters, small batches, callbacks, vmap failures."""

import numpy as np
import pytest
import torch
from nets import MLP, BatchNormMLP
from numpy.testing import assert_allclose
from skorch.callbacks import EarlyStopping, LRScheduler
from torch import nn

from simplexens import (
    DeepEnsembleClassifier,
    ESPROClassifier,
    FGEClassifier,
    SWAGClassifier,
)


class FrozenFeatures(nn.Module):
    """A feature layer the user froze, under a trainable head."""

    def __init__(self, n_features_in, n_classes):
        super().__init__()
        self.features = nn.Linear(n_features_in, 16).requires_grad_(False)
        self.head = nn.Linear(16, n_classes)

    def forward(self, x):
        return self.head(torch.relu(self.features(x)))


class BatchNormItem(BatchNormMLP):
    """Calls .item() in forward: vmap cannot run it, a loop can."""

    def forward(self, x):
        h = self.net[1](self.net[0](x))
        if h.abs().max().item() > 1e6:
            h = h / 2
        return self.net[3](torch.relu(h))


def test_espro_leaves_frozen_parameters_at_the_mode(small_digits):
    X, y = small_digits
    clf = ESPROClassifier(
        FrozenFeatures,
        n_modes=1,
        n_vertices=3,
        max_epochs=2,
        epochs_per_vertex=1,
        lr=0.1,
        random_state=0,
    ).fit(X, y)
    assert set(clf.simplex_vertices_) == {"head.weight", "head.bias"}
    # Oracle: the frozen layer keeps its initial value, the same in every member.
    start = clf.members_.tensors["features.weight"]
    assert torch.equal(start, start[:1].expand_as(start))
    assert clf.simplex_log_volumes_.shape == (1, 2)
    assert np.all(np.isfinite(clf.simplex_log_volumes_))


@pytest.mark.parametrize("n_rows", [261, 258])  # last batch of 5 and of 2 rows
def test_espro_batchnorm_with_a_small_last_batch(small_digits, n_rows):
    X, y = small_digits
    clf = ESPROClassifier(
        BatchNormMLP,
        n_modes=1,
        n_vertices=2,
        max_epochs=1,
        epochs_per_vertex=1,
        n_predict_samples=2,
        random_state=0,
    ).fit(X[:n_rows], y[:n_rows])
    assert clf.n_members_ == 2


def test_fge_stopped_early_by_a_callback_keeps_its_snapshots_with_a_warning(small_digits):
    X, y = small_digits
    stop = EarlyStopping(
        monitor="train_loss",
        patience=1,
        threshold=10.0,
        threshold_mode="abs",
        sink=lambda *_: None,
    )
    clf = FGEClassifier(
        MLP,
        max_epochs=2,
        n_snapshots=4,
        cycle_length=2,
        batch_size=64,
        callbacks=[stop],
        random_state=0,
    )
    with pytest.warns(UserWarning, match="ended the cycles after 1 of n_snapshots=4 snapshots"):
        clf.fit(X, y)
    assert clf.n_members_ == 1


def test_batchnorm_recalibration_falls_back_when_vmap_fails(small_digits):
    X, y = small_digits
    clf = SWAGClassifier(
        BatchNormItem, max_epochs=4, swa_start=1, n_predict_samples=3, random_state=0
    )
    clf.fit(X, y)
    proba = clf.predict_proba(X)
    assert_allclose(proba.sum(axis=1), 1.0)
    # The loop gave every sample its own statistics.
    means = clf.members_.tensors["net.1.running_mean"]
    assert (means[0] - means[1]).abs().max() > 0


def test_user_callbacks_are_not_mutated_by_fit(small_digits):
    X, y = small_digits
    scheduler = LRScheduler(policy=torch.optim.lr_scheduler.StepLR, step_size=1)
    clf = DeepEnsembleClassifier(
        MLP, n_estimators=2, max_epochs=1, callbacks=[scheduler], random_state=0
    )
    before = dict(vars(scheduler))
    clf.fit(X, y)
    assert vars(scheduler).keys() == before.keys()
    assert not hasattr(scheduler, "lr_scheduler_")


def test_swa_rate_stays_constant_under_a_batch_scheduler(small_digits):
    X, y = small_digits
    seen = []

    from skorch.callbacks import Callback

    class Record(Callback):
        def on_batch_end(self, net, batch=None, training=False, **kwargs):
            if training:
                seen.append((len(net.history), net.optimizer_.param_groups[0]["lr"]))

    scheduler = LRScheduler(
        policy=torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5, step_every="batch"
    )
    # The recorder runs after the SWA collector set the rate and before the scheduler's step
    # changes it for the next batch: every SWA-phase step ran at swa_lr.
    SWAGClassifier(
        MLP,
        max_epochs=3,
        swa_start=1,
        swa_lr=0.02,
        n_predict_samples=2,
        batch_size=100,
        callbacks=[Record(), scheduler],
        random_state=0,
    ).fit(X, y)
    swa_rates = [lr for epoch, lr in seen if epoch > 1]
    assert swa_rates
    assert_allclose(swa_rates, 0.02)


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        (dict(optimizer="sgd"), TypeError, "optimizer must be a class or callable"),
        (dict(criterion=3), TypeError, "criterion must be a class or callable"),
        (dict(train_split=0.2), TypeError, "train_split must be None or a callable"),
        (
            dict(iterator_valid__batch_size=0),
            ValueError,
            "iterator_valid__batch_size must be .* got 0",
        ),
    ],
)
def test_more_bad_training_parameters_fail_in_fit(small_digits, params, error, match):
    X, y = small_digits
    with pytest.raises(error, match=match):
        DeepEnsembleClassifier(MLP, n_estimators=1, max_epochs=1, **params).fit(X, y)
