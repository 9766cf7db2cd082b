"""The machinery the regressors share with the classifiers, with a regression head: the
validation split (and the standardisation it implies), parallel members, BatchNorm
recalibration, devices."""

import numpy as np
import pytest
import torch
from nets import MLP, BatchNormMLP
from numpy.testing import assert_allclose
from sklearn.datasets import make_regression
from skorch.callbacks import Callback
from skorch.dataset import Dataset, ValidSplit
from skorch.helper import predefined_split
from torch.testing import assert_close
from torch.utils.data import Subset

from simplexens import DeepEnsembleRegressor, SWAGRegressor
from simplexens.backends.likelihoods import GaussianNLLLoss

X, Y = make_regression(160, 5, n_informative=4, noise=5.0, random_state=1)
X = X.astype(np.float32)
Y = 3.0 * Y + 50.0  # a mean and scale far from 0 and 1
COMMON = dict(max_epochs=3, lr=0.01, batch_size=32, random_state=0)


def _train_rows(split, n_rows):
    """The training rows skorch's split picks, computed by skorch on its own."""
    train, _ = split(Dataset(X[:n_rows], Y[:n_rows]), Y[:n_rows])
    return np.asarray(train.indices)


@pytest.mark.parametrize("weighted", [False, True])
def test_the_validation_rows_do_not_enter_the_standardisation(weighted):
    """With a validation split, y_mean_ and y_scale_ are the (weighted) mean and standard
    deviation of the training rows alone."""
    split = ValidSplit(0.25, random_state=0)
    weights = np.linspace(0.5, 2.0, len(Y)) if weighted else None
    reg = DeepEnsembleRegressor(MLP, n_estimators=1, train_split=split, **COMMON)
    reg.fit(X, Y, sample_weight=weights)
    rows = _train_rows(split, len(Y))
    assert 0 < len(rows) < len(Y)
    w = None if weights is None else weights[rows].astype(np.float32)
    mean = np.average(Y[rows], weights=w)
    assert_allclose(reg.y_mean_, [mean], rtol=1e-12)
    assert_allclose(reg.y_scale_, [np.sqrt(np.average((Y[rows] - mean) ** 2, weights=w))])


class _ValidLossCheck(Callback):
    """At every epoch end: skorch's valid_loss against the criterion recomputed here on the
    validation rows, standardised with the training rows' moments. Each member's net gets
    a copy of the callback: the epochs checked are counted in ``checked``, shared."""

    checked: list = []  # noqa: RUF012 (shared by the copies on purpose)

    def __init__(self, X_valid, z_valid):
        self.X_valid, self.z_valid = X_valid, z_valid

    def on_epoch_end(self, net, **kwargs):
        module = net.module_
        was_training = module.training
        module.eval()
        with torch.no_grad():
            out = module(torch.from_numpy(self.X_valid))
        module.train(was_training)
        expected = GaussianNLLLoss()(out, torch.from_numpy(self.z_valid)).item()
        assert_allclose(net.history[-1, "valid_loss"], expected, rtol=1e-5)
        self.checked.append(len(net.history))


def test_a_predefined_validation_dataset_is_scored_in_the_training_units():
    """A validation Dataset of the user's (skorch's predefined_split) holds targets in y's
    units; its loss is the members' loss on them standardised as the training targets."""
    X_train, Y_train, X_valid, Y_valid = X[:120], Y[:120], X[120:], Y[120:]
    z_valid = ((Y_valid - Y_train.mean()) / Y_train.std()).astype(np.float32)[:, None]
    check = _ValidLossCheck(X_valid, z_valid)
    check.checked.clear()
    split = predefined_split(Dataset(X_valid, Y_valid.astype(np.float32)))
    reg = DeepEnsembleRegressor(
        MLP, n_estimators=1, train_split=split, callbacks=[check], **COMMON
    ).fit(X_train, Y_train)
    assert check.checked == list(range(1, reg.max_epochs + 1))
    assert_allclose(reg.y_mean_, [Y_train.mean()], rtol=1e-12)


def test_a_validation_dataset_with_other_targets_is_refused_before_training():
    split = predefined_split(Dataset(X[120:], np.c_[Y[120:], Y[120:]].astype(np.float32)))
    reg = DeepEnsembleRegressor(MLP, n_estimators=1, train_split=split, **COMMON)
    with pytest.raises(ValueError, match=r"yields targets of 2 value\(s\); y has 1 target"):
        reg.fit(X[:120], Y[:120])


def test_members_trained_in_worker_processes_match_sequential_ones():
    """n_jobs=2 (loky): the same members as in this process, to float32 rounding (workers
    run torch on one thread, so reductions may be summed in another order)."""
    params = dict(n_estimators=3, **COMMON)
    sequential = DeepEnsembleRegressor(MLP, n_jobs=1, **params).fit(X, Y)
    parallel = DeepEnsembleRegressor(MLP, n_jobs=2, **params).fit(X, Y)
    for a, b in zip(
        parallel.predict_member_distribution(X),
        sequential.predict_member_distribution(X),
        strict=True,
    ):
        assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())
    assert parallel.epochs_spent_ == sequential.epochs_spent_


def test_sampled_members_get_batchnorm_statistics_of_the_training_rows():
    """SWAG's samples are recalibrated: each BatchNorm layer's running mean and (unbiased)
    variance are those of its input over the training rows, validation rows left out
    (one batch of all rows, so the statistics are exact)."""
    split = ValidSplit(0.25, random_state=0)
    reg = SWAGRegressor(
        BatchNormMLP,
        swa_start=2,
        n_predict_samples=2,
        max_rank=2,
        train_split=split,
        iterator_valid__batch_size=-1,
        **COMMON,
    ).fit(X, Y)
    rows = _train_rows(split, len(Y))
    for i in range(reg.n_members_):
        member = reg.members_.member(i, device="cpu")
        hidden = torch.from_numpy(X[rows]) @ member["net.0.weight"].T + member["net.0.bias"]
        assert_close(member["net.1.running_mean"], hidden.mean(dim=0), rtol=1e-4, atol=1e-5)
        assert_close(member["net.1.running_var"], hidden.var(dim=0), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_regressor_on_cuda_predicts_as_on_the_cpu():
    cpu = DeepEnsembleRegressor(MLP, n_estimators=2, **COMMON).fit(X, Y)
    cuda = DeepEnsembleRegressor(MLP, n_estimators=2, device="cuda", **COMMON).fit(X, Y)
    pairs = zip(cuda.predict(X, return_std=True), cpu.predict(X, return_std=True), strict=True)
    for a, b in pairs:
        assert_allclose(a, b, rtol=1e-3, atol=1e-3 * np.abs(b).max())


class _TrainingTargets(Callback):
    """Records, for every member's net, its training rows and the targets it trains on."""

    seen: list = []  # noqa: RUF012 (shared by the members' copies on purpose)

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        train, _ = net.get_split_datasets(X, y)
        targets = np.array([np.asarray(train[i][1]) for i in range(len(train))]).ravel()
        self.seen.append((np.asarray(train.indices), targets))


def test_a_warm_refit_trains_its_members_in_the_fitted_units():
    """A split with randomness of its own (sklearn's ShuffleSplit inside ValidSplit) holds
    out other rows in the refit; the new members still train on (y - y_mean_) / y_scale_,
    the units prediction decodes with."""
    from sklearn.model_selection import ShuffleSplit

    record = _TrainingTargets()
    record.seen.clear()
    split = ValidSplit(ShuffleSplit(n_splits=1, test_size=0.5))
    reg = DeepEnsembleRegressor(
        MLP, n_estimators=1, warm_start=True, train_split=split, callbacks=[record], **COMMON
    ).fit(X, Y)
    mean, scale = reg.y_mean_.copy(), reg.y_scale_.copy()
    reg.set_params(n_estimators=2).fit(X, Y)
    assert_allclose(reg.y_mean_, mean, rtol=0)
    assert len(record.seen) == 2
    for rows, targets in record.seen:
        assert_allclose(targets, (Y[rows] - mean[0]) / scale[0], rtol=1e-5, atol=1e-6)


def test_a_validation_dataset_the_split_builds_from_its_targets_is_in_ys_units():
    """A split may copy rows into a Dataset of its own: it is handed the targets as given,
    so its validation targets are standardised once, with the training rows' moments."""

    def copy_split(dataset, y):
        return Subset(dataset, list(range(120))), Dataset(dataset.X[120:], y[120:])

    z_valid = ((Y[120:] - Y[:120].mean()) / Y[:120].std()).astype(np.float32)[:, None]
    check = _ValidLossCheck(X[120:], z_valid)
    check.checked.clear()
    DeepEnsembleRegressor(
        MLP, n_estimators=1, train_split=copy_split, callbacks=[check], **COMMON
    ).fit(X, Y)
    assert len(check.checked) == COMMON["max_epochs"]


def test_split_problems_a_regressor_cannot_train_with_are_named():
    foreign = Dataset(X[:100], Y[:100].astype(np.float32))
    reg = DeepEnsembleRegressor(
        MLP, n_estimators=1, train_split=lambda dataset, y: (foreign, None), **COMMON
    )
    with pytest.raises(ValueError, match="returned a training Dataset of its own"):
        reg.fit(X, Y)
    weights = np.r_[np.zeros(120), np.ones(40)]
    split = lambda dataset, y: (Subset(dataset, range(120)), Subset(dataset, range(120, 160)))  # noqa: E731
    reg = DeepEnsembleRegressor(MLP, n_estimators=1, train_split=split, **COMMON)
    with pytest.raises(ValueError, match="sample weights are all zero"):
        reg.fit(X, Y, sample_weight=weights)
