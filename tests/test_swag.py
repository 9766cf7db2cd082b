"""SWAGClassifier (SWA, SWAG, SWAG-diagonal, MultiSWAG) through the public API."""

import pickle
import typing

import numpy as np
import pytest
import torch
from nets import MLP, SmallCNN
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from skorch.callbacks import Callback
from torch.optim.swa_utils import AveragedModel, update_bn

from simplexens import SWAGClassifier
from simplexens.backends.skorch import SWACollector

BATCH = 64


def swag(module=MLP, **params):
    defaults = dict(
        swa_start=1,
        max_epochs=3,
        n_predict_samples=3,
        max_rank=5,
        lr=0.1,
        swa_lr=0.05,
        batch_size=BATCH,
        random_state=0,
    )
    return SWAGClassifier(module, **{**defaults, **params})


def n_batches(X):
    return -(-len(X) // BATCH)


class Trajectory(Callback):
    """Oracle: follows one run's SWA phase from outside the library.

    At the collection points (the end of every epoch after ``swa_start``, or every ``every``
    training steps after it) it averages the weights with torch's ``AveragedModel`` and keeps
    plain copies of them. It also records each epoch's learning rate, the final buffers, and
    where the run's SWAG statistics live before the first collection. Everything goes to the
    class attribute ``record``, rebuilt when the net initialises its callbacks.
    """

    record: typing.ClassVar[dict] = {}

    def __init__(self, swa_start, every=None):
        self.swa_start = swa_start
        self.every = every

    def initialize(self):
        type(self).record = dict(averaged=None, snapshots=[], lrs=[], steps=0)
        return self

    def _in_swa_phase(self, net):
        return len(net.history) > self.swa_start

    def _collect(self, net):
        record = type(self).record
        if record["averaged"] is None:
            record["averaged"] = AveragedModel(net.module_)
        record["averaged"].update_parameters(net.module_)
        params = net.module_.named_parameters()
        record["snapshots"].append({name: p.detach().clone() for name, p in params})

    def on_train_begin(self, net, **kwargs):
        collector = next(cb for _, cb in net.callbacks_ if isinstance(cb, SWACollector))
        type(self).record["stats_device"] = collector.moments.device

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        if training and self.every is not None and self._in_swa_phase(net):
            type(self).record["steps"] += 1
            if type(self).record["steps"] % self.every == 0:
                self._collect(net)

    def on_epoch_end(self, net, **kwargs):
        type(self).record["lrs"].append(net.optimizer_.param_groups[0]["lr"])
        if self.every is None and self._in_swa_phase(net):
            self._collect(net)

    def on_train_end(self, net, **kwargs):
        buffers = net.module_.named_buffers()
        type(self).record["buffers"] = {name: b.detach().clone() for name, b in buffers}


def traced_fit(X, y, **params):
    """Fit one run with a Trajectory oracle attached; the fitted estimator and its record."""
    oracle = Trajectory(params["swa_start"], params.get("collect_every"))
    clf = swag(n_modes=1, callbacks=[oracle], **params).fit(X, y)
    return clf, dict(Trajectory.record)


# ---------------------------------------------------------------- the SWA trajectory

SWA_START, MAX_EPOCHS, MAX_RANK, LR, SWA_LR = 1, 4, 4, 0.1, 0.03


@pytest.fixture(scope="module", params=[None, 2], ids=["per-epoch", "every-2-steps"])
def traced(request, small_digits):
    X, y = small_digits
    clf, record = traced_fit(
        X,
        y,
        swa_start=SWA_START,
        max_epochs=MAX_EPOCHS,
        max_rank=MAX_RANK,
        lr=LR,
        swa_lr=SWA_LR,
        collect_every=request.param,
    )
    swa_steps = (MAX_EPOCHS - SWA_START) * n_batches(X)
    expected = MAX_EPOCHS - SWA_START if request.param is None else swa_steps // request.param
    return clf, record, expected


def test_swa_mean_is_torch_averaged_model(traced):
    clf, record, _ = traced
    averaged = dict(record["averaged"].module.named_parameters())
    mean = clf.swag_moments_[0].mean
    assert set(mean) == set(averaged)
    for name, tensor in mean.items():
        torch.testing.assert_close(tensor, averaged[name].detach())


def test_second_moment_and_deviations_of_the_collected_weights(traced):
    # Oracle in float64 from the weights the callback saw: the mean of squares, and the
    # last K deviations θ_i - θ̄_i from the running mean, oldest first.
    clf, record, _ = traced
    moments = clf.swag_moments_[0]
    snapshots = record["snapshots"]
    n = len(snapshots)
    for name in moments.mean:
        thetas = torch.stack([s[name] for s in snapshots]).double()
        counts = torch.arange(1, n + 1, dtype=torch.float64).view(-1, *[1] * (thetas.dim() - 1))
        running_mean = thetas.cumsum(0) / counts
        torch.testing.assert_close(
            moments.sq_mean[name].double(), (thetas**2).mean(0), rtol=1e-5, atol=1e-7
        )
        torch.testing.assert_close(
            moments.deviations[name].double(),
            (thetas - running_mean)[-min(n, MAX_RANK) :],
            rtol=1e-4,
            atol=1e-6,
        )


def test_number_collected_and_deviation_rows(traced):
    clf, record, expected = traced
    moments = clf.swag_moments_[0]
    assert moments.n_collected == expected == len(record["snapshots"])
    for name, deviations in moments.deviations.items():
        assert deviations.shape == (min(expected, MAX_RANK), *moments.mean[name].shape)


def test_learning_rate_is_swa_lr_in_the_swa_phase(traced):
    clf, record, _ = traced
    assert_allclose(record["lrs"], [LR] * SWA_START + [SWA_LR] * (MAX_EPOCHS - SWA_START))
    assert clf.epochs_spent_ == len(record["lrs"]) == MAX_EPOCHS


# ---------------------------------------------------------------- members


def test_swa_members_are_the_means(small_digits):
    X, y = small_digits
    clf = swag(covariance="none", n_modes=2, n_predict_samples=7).fit(X, y)
    assert clf.n_members_ == 2
    for i, moments in enumerate(clf.swag_moments_):
        for name, mean in moments.mean.items():
            torch.testing.assert_close(clf.members_.tensors[name][i], mean, rtol=0, atol=0)


def flat_members(clf, start, stop):
    """Members start..stop-1 as rows of their concatenated parameters, in float64."""
    names = clf.swag_moments_[0].mean
    return torch.cat(
        [clf.members_.tensors[name][start:stop].flatten(1).double() for name in names], dim=1
    )


@pytest.mark.parametrize("covariance", ["full", "diagonal"])
def test_samples_are_distinct_and_distributed_around_the_mean(small_digits, covariance):
    # Oracle: the SWAG Gaussian's per-weight variance written out from the statistics,
    # scale · (max(E[θ²] - θ̄², ε) + Σ_k D_k² / (K - 1)), the second term for "full" only.
    X, y = small_digits
    n, scale = 300, 0.5
    clf = swag(
        module__hidden=4,
        n_modes=2,
        n_predict_samples=n,
        swa_start=1,
        max_epochs=3,
        collect_every=1,
        max_rank=5,
        scale=scale,
        covariance=covariance,
    ).fit(X, y)
    assert clf.n_members_ == 2 * n
    everyone = flat_members(clf, 0, 2 * n)
    assert torch.unique(everyone, dim=0).shape[0] == 2 * n
    for mode, moments in enumerate(clf.swag_moments_):
        samples = flat_members(clf, mode * n, (mode + 1) * n)
        # The moments as accumulated (float64), not cast back to the weights' float32.
        state = moments.state_dict()
        mean = torch.cat([m.flatten().double() for m in state["mean"].values()])
        sq_mean = torch.cat([m.flatten().double() for m in state["sq_mean"].values()])
        variance = (sq_mean - mean**2).clamp(min=1e-30)
        if covariance == "full":
            deviations = torch.cat(
                [d.flatten(1).double() for d in moments.deviations.values()], dim=1
            )
            variance = variance + (deviations**2).sum(0) / (len(deviations) - 1)
        variance = scale * variance
        # The empirical mean is within 5 standard errors of θ̄ for every weight.
        z = (samples.mean(0) - mean) / ((variance / n).sqrt() + 1e-7)
        assert_allclose(z.numpy(), 0.0, rtol=0, atol=5.0)
        # The empirical variances match the Gaussian's (median ratio over varying weights).
        varying = variance > 1e-10
        assert varying.sum() > 100
        ratio = samples.var(0)[varying] / variance[varying]
        assert_allclose(float(ratio.median()), 1.0, rtol=0.2)


# ---------------------------------------------------------------- MultiSWAG, seeds, pickle


@pytest.fixture(scope="module")
def multi(small_digits):
    X, y = small_digits
    return swag(n_modes=2).fit(X, y)


def test_multiswag_runs_are_independent(multi):
    assert len(multi.swag_moments_) == 2
    assert multi.n_members_ == 2 * 3
    first, second = (m.mean for m in multi.swag_moments_)
    for name in first:
        assert (first[name] - second[name]).abs().max() > 1e-3


def test_n_jobs_two_matches_sequential(small_digits, multi):
    X, y = small_digits
    parallel = swag(n_modes=2, n_jobs=2).fit(X, y)
    assert_allclose(
        parallel.predict_member_proba(X), multi.predict_member_proba(X), rtol=1e-5, atol=1e-6
    )


def test_same_seed_same_predictions_and_pickle(small_digits, multi):
    X, y = small_digits
    assert multi.epochs_spent_ == 2 * 3
    again = swag(n_modes=2).fit(X, y)
    assert_array_equal(again.predict_proba(X), multi.predict_proba(X))
    restored = pickle.loads(pickle.dumps(multi))
    assert_array_equal(restored.predict_proba(X), multi.predict_proba(X))
    other = swag(n_modes=2, random_state=1).fit(X, y)
    assert np.abs(other.predict_proba(X) - multi.predict_proba(X)).max() > 1e-3


def test_fit_leaves_torch_global_rng_alone(small_digits):
    X, y = small_digits
    before = torch.get_rng_state()
    swag().fit(X, y)
    torch.testing.assert_close(torch.get_rng_state(), before)


# ---------------------------------------------------------------- BatchNorm


@pytest.fixture(scope="module")
def images(small_digits):
    X, y = small_digits
    return X.reshape(-1, 1, 8, 8), y


@pytest.mark.parametrize("covariance", ["full", "none"])
def test_batchnorm_statistics_recomputed_for_every_sample(images, covariance):
    # Oracle: torch's update_bn on each member's weights, same batches in the same order.
    X, y = images
    clf = swag(SmallCNN, covariance=covariance, lr=0.05, iterator_valid__batch_size=BATCH)
    clf.fit(X, y)
    assert clf.n_members_ == (1 if covariance == "none" else 3)
    batches = [torch.tensor(X[i : i + BATCH]) for i in range(0, len(X), BATCH)]
    for i in range(clf.n_members_):
        with torch.random.fork_rng():
            module = SmallCNN(10)
        state = clf.members_.member(i)
        module.load_state_dict({k: v.clone() for k, v in state.items()})
        update_bn(batches, module)
        for name, expected in module.features[1].named_buffers():
            torch.testing.assert_close(state[f"features.1.{name}"], expected, rtol=1e-4, atol=1e-5)


def test_without_recalibration_members_keep_the_runs_final_statistics(images):
    X, y = images
    stale, record = traced_fit(X, y, module=SmallCNN, swa_start=1, lr=0.05, recalibrate_bn=False)
    recalibrated = swag(SmallCNN, lr=0.05).fit(X, y)  # same seed: the same run
    final = record["buffers"]["features.1.running_mean"]
    for i in range(stale.n_members_):
        torch.testing.assert_close(
            stale.members_.tensors["features.1.running_mean"][i], final, rtol=0, atol=0
        )
        fresh = recalibrated.members_.tensors["features.1.running_mean"][i]
        assert (fresh - final).abs().max() > 1e-4


# ---------------------------------------------------------------- grid search


def test_grid_search_over_swag_parameters(small_digits):
    X, y = small_digits
    grid = GridSearchCV(
        swag(max_epochs=2),
        {
            "swa_lr": [0.01, 0.05],
            "covariance": ["full", "diagonal", "none"],
            "n_predict_samples": [2, 3],
        },
        cv=2,
    ).fit(X, y)
    assert len(grid.cv_results_["params"]) == 12
    assert np.all(np.isfinite(grid.cv_results_["mean_test_score"]))
    best, chosen = grid.best_estimator_, grid.best_params_
    assert (best.swa_lr, best.covariance, best.n_predict_samples) == (
        chosen["swa_lr"],
        chosen["covariance"],
        chosen["n_predict_samples"],
    )
    expected = 1 if chosen["covariance"] == "none" else chosen["n_predict_samples"]
    assert best.n_members_ == expected
    assert best.members_.tensors["net.1.weight"].shape[0] == expected


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        (dict(max_rank=0), ValueError, "max_rank must be .*>= 1.*, got 0"),
        (dict(n_predict_samples=0), ValueError, "n_predict_samples must be .*>= 1.*, got 0"),
        (dict(swa_start=3), ValueError, r"swa_start \(3\) must be below max_epochs \(3\)"),
        (dict(swa_start=5), ValueError, r"swa_start \(5\) must be below max_epochs \(3\)"),
        (dict(swa_start=-1), ValueError, "swa_start must be .*>= 0.*, got -1"),
        (dict(covariance="low-rank"), ValueError, "covariance must be one of .*'low-rank'"),
        (dict(swa_lr=0), ValueError, "swa_lr must be .*> 0.*, got 0"),
        (dict(collect_every=0), ValueError, "collect_every must be .*>= 1.*, got 0"),
        (dict(stats_on_cpu="yes"), TypeError, "stats_on_cpu must be True or False"),
        (dict(n_modes=0), ValueError, "n_modes must be .*>= 1.*, got 0"),
        (dict(scale=-1), ValueError, "scale must be .*>= 0.*, got -1"),
    ],
)
def test_bad_parameters_fail_in_fit(small_digits, params, error, match):
    X, y = small_digits
    clf = swag(**params)
    with pytest.raises(error, match=match):
        clf.fit(X, y)
    with pytest.raises(NotFittedError):
        clf.predict(X)


@pytest.mark.parametrize("covariance", ["full", "none"])
def test_collect_every_beyond_the_swa_phase_is_a_clear_error(small_digits, covariance):
    X, y = small_digits
    swa_steps = (3 - 1) * n_batches(X)
    clf = swag(collect_every=swa_steps + 1, covariance=covariance)
    with pytest.raises(ValueError, match="collect_every"):
        clf.fit(X, y)
    with pytest.raises(NotFittedError):
        clf.predict(X)


# ---------------------------------------------------------------- stats_on_cpu


def test_stats_on_cpu(small_digits):
    # Before the first collection the statistics are pinned to the CPU with stats_on_cpu=True,
    # and follow the weights (device not yet known) otherwise; on a CPU machine both runs
    # are the same computation.
    X, y = small_digits
    on_cpu, record_on_cpu = traced_fit(X, y, swa_start=1, stats_on_cpu=True)
    default, record_default = traced_fit(X, y, swa_start=1, stats_on_cpu=False)
    assert record_on_cpu["stats_device"] == torch.device("cpu")
    assert record_default["stats_device"] is None
    for moments in on_cpu.swag_moments_:
        assert moments.device == torch.device("cpu")
        for store in (moments.mean, moments.sq_mean, moments.deviations):
            assert {t.device for t in store.values()} == {torch.device("cpu")}
    assert_array_equal(on_cpu.predict_proba(X), default.predict_proba(X))
    for name, mean in on_cpu.swag_moments_[0].mean.items():
        torch.testing.assert_close(mean, default.swag_moments_[0].mean[name], rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_stats_on_cpu_while_training_on_cuda(small_digits):
    X, y = small_digits
    on_cpu, record = traced_fit(X, y, swa_start=1, stats_on_cpu=True, device="cuda")
    on_gpu = swag(stats_on_cpu=False, device="cuda").fit(X, y)
    assert record["stats_device"] == torch.device("cpu")
    assert on_cpu.members_.device.type == "cuda"
    assert_allclose(on_cpu.predict_proba(X), on_gpu.predict_proba(X), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("max_rank", "expected"), [(4, 4), (3, 3), (50, 20)])
def test_auto_collects_about_max_rank_snapshots_over_the_swa_phase(
    small_digits, max_rank, expected
):
    # 300 rows in batches of 32: 10 steps per epoch, 20 in the 2-epoch SWA phase; "auto"
    # collects every max(1, 20 // max_rank) steps: 20 // 5 = 4, 20 // 6 = 3, 20 // 1 = 20.
    X, y = small_digits
    clf = SWAGClassifier(
        MLP, swa_start=1, max_epochs=3, max_rank=max_rank, batch_size=32,
        n_predict_samples=2, random_state=0,
    ).fit(X, y)  # fmt: skip
    assert clf.swag_moments_[0].n_collected == expected
