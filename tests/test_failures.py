"""No silent failures: bad settings, diverging runs, degenerate batches and failed calls."""

import inspect
import math
import os
import signal

import numpy as np
import pytest
import torch
from nets import MLP, BatchNormMLP
from numpy.testing import assert_array_equal
from sklearn.datasets import make_classification
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted
from skorch.callbacks import Callback, EarlyStopping, EpochScoring
from skorch.dataset import ValidSplit
from torch import nn

from simplexens import DeepEnsembleClassifier, ESPROClassifier, FGEClassifier, SWAGClassifier
from simplexens.backends.batchnorm import recalibrate_batchnorm
from simplexens.exceptions import DivergenceError

ESTIMATORS = [DeepEnsembleClassifier, ESPROClassifier, FGEClassifier, SWAGClassifier]

#: Small settings per estimator so that a fit takes well under a second.
QUICK = {
    DeepEnsembleClassifier: dict(n_estimators=2),
    ESPROClassifier: dict(n_modes=1, n_vertices=2, epochs_per_vertex=1, n_predict_samples=2),
    FGEClassifier: dict(n_snapshots=2, cycle_length=1),
    SWAGClassifier: dict(swa_start=1, n_predict_samples=2, max_rank=2),
}

#: Parameters whose default is None but which take a number when set, and a real-valued
#: parameter whose default is written as an integer.
OPTIONAL_REALS = {"vertex_lr", "working_memory", "cycle_length"}
OPTIONAL_INTEGERS = {"collect_every", "n_jobs"}


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(
        n_samples=120, n_features=8, n_informative=5, n_classes=3, random_state=0
    )
    return X.astype(np.float32), y


def quick(cls, **params):
    settings = dict(max_epochs=2, lr=0.05, batch_size=32, random_state=0, **QUICK[cls])
    settings.update(params)
    return cls(MLP, **settings)


def defaults(cls):
    return {
        name: p.default
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def real_parameters(cls):
    """Parameters with a float default, or a None default that takes a real number."""
    found = [n for n, d in defaults(cls).items() if isinstance(d, float)]
    return sorted({*found, *(OPTIONAL_REALS & set(defaults(cls)))})


def integer_parameters(cls):
    """Parameters with an integer (not bool) default, or a None default that takes an int."""
    found = [n for n, d in defaults(cls).items() if isinstance(d, int) and not isinstance(d, bool)]
    return sorted({*found, *(OPTIONAL_INTEGERS & set(defaults(cls)))} - OPTIONAL_REALS)


def cases(collect):
    return [(cls, name) for cls in ESTIMATORS for name in collect(cls)]


def assert_unfitted(clf):
    with pytest.raises(NotFittedError):
        check_is_fitted(clf)
    assert not [k for k in vars(clf) if k.endswith("_") and not k.startswith("_")]


# -- parameters -------------------------------------------------------------------------------


def test_the_parameter_lists_cover_the_documented_ones():
    assert {"lr", "volume_lambda", "vertex_init_scale", "vertex_lr"} <= set(
        real_parameters(ESPROClassifier)
    )
    assert {"alpha1", "alpha2", "cycle_length"} <= set(real_parameters(FGEClassifier))
    assert {"swa_lr", "scale", "var_clamp"} <= set(real_parameters(SWAGClassifier))
    assert {"max_rank", "swa_start", "collect_every", "n_jobs", "verbose"} <= set(
        integer_parameters(SWAGClassifier)
    )


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize(("cls", "name"), cases(real_parameters))
def test_real_parameters_reject_nan_and_inf(data, cls, name, value):
    clf = quick(cls, **{name: value})
    with pytest.raises(ValueError, match=f"^{name} must be"):
        clf.fit(*data)
    assert_unfitted(clf)


@pytest.mark.parametrize(("cls", "name"), cases(integer_parameters))
def test_integer_parameters_reject_bool(data, cls, name):
    clf = quick(cls, **{name: True})
    with pytest.raises(TypeError, match=f"^{name} must be an integer"):
        clf.fit(*data)


@pytest.mark.parametrize(("cls", "name"), cases(real_parameters))
def test_real_parameters_reject_bool(data, cls, name):
    with pytest.raises(TypeError, match=f"^{name} must be a real number"):
        quick(cls, **{name: False}).fit(*data)


@pytest.mark.parametrize("cls", ESTIMATORS)
@pytest.mark.parametrize(
    "route", ["optimizer__weight_decay", "optimizer__momentum", "criterion__label_smoothing"]
)
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_routed_numbers_reject_nan_and_inf(data, cls, route, value):
    with pytest.raises(ValueError, match=f"^{route} must be finite"):
        quick(cls, **{route: value}).fit(*data)


@pytest.mark.parametrize("cls", ESTIMATORS)
@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        (dict(device="meta"), ValueError, "device='meta' cannot train"),
        (dict(device="gpu"), ValueError, "device='gpu' is not a torch device"),
        (dict(callbacks="abc"), TypeError, "callbacks must be None or a list"),
        (dict(callbacks=[EarlyStopping]), TypeError, r"pass an instance, e.g. EarlyStopping\(\)"),
        (dict(callbacks=[object()]), TypeError, "skorch Callback instances"),
        (dict(n_jobs="abc"), TypeError, "n_jobs must be an integer other than 0 or None"),
        (dict(n_jobs=0), ValueError, "n_jobs must be an integer other than 0 or None"),
        (dict(lrr=0.1), TypeError, r"'lrr' \(did you mean 'lr'\?\)"),
        (dict(callbacks=[EarlyStopping()]), ValueError, "monitors 'valid_loss'.*train_split"),
    ],
)
def test_bad_settings_fail_before_training_with_a_clear_message(data, cls, params, error, match):
    clf = quick(cls, **params)
    with pytest.raises(error, match=match):
        clf.fit(*data)
    assert_unfitted(clf)


def test_espro_refuses_more_vertices_than_parameters_plus_one(data):
    clf = ESPROClassifier(nn.Linear(8, 3), n_modes=1, n_vertices=29, max_epochs=1)
    # nn.Linear(8, 3) has 8 * 3 + 3 = 27 trainable parameters: at most 28 vertices.
    with pytest.raises(ValueError, match=r"n_vertices=29 .* 27 trainable parameters \+ 1"):
        clf.fit(*data)
    clf.set_params(n_vertices=28, epochs_per_vertex=1, n_predict_samples=1)
    log_volumes = clf.fit(*data).simplex_log_volumes_
    assert np.isfinite(log_volumes).all()


# -- divergence -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "params", "phase", "advice"),
    [
        (DeepEnsembleClassifier, dict(lr=1e6), "training", "lr"),
        (ESPROClassifier, dict(lr=1e6), "mode", "lr"),
        (ESPROClassifier, dict(vertex_lr=1e6), "vertex 1", "vertex_lr"),
        (ESPROClassifier, dict(volume_lambda=1e6), "vertex 1", "vertex_lr"),
        (FGEClassifier, dict(lr=1e6), "pretraining", "lr"),
        (FGEClassifier, dict(alpha1=1e6), "cycles", "alpha1"),
        (SWAGClassifier, dict(lr=1e6), "before SWA", "lr"),
        (SWAGClassifier, dict(swa_lr=1e6), "SWA", "swa_lr"),
    ],
)
def test_a_diverging_run_raises_naming_member_phase_and_rate(data, cls, params, phase, advice):
    clf = quick(cls, **params)
    with pytest.raises(DivergenceError, match=f"member 1 of .* phase '{phase}', epoch") as info:
        clf.fit(*data)
    assert cls.__name__ in str(info.value)
    assert f"Try a lower {advice} (now" in str(info.value)
    assert_unfitted(clf)


def test_divergence_in_a_later_member_names_it(data):
    class Poisoned(MLP):
        """Member seeds differ; the second member's module starts with an infinite weight."""

        built = 0

        def __init__(self, n_features_in, n_classes):
            super().__init__(n_features_in, n_classes)
            Poisoned.built += 1
            if Poisoned.built == 3:  # the template is built first, then member 1, member 2
                with torch.no_grad():
                    self.net[1].weight[0, 0] = math.inf

    clf = DeepEnsembleClassifier(Poisoned, n_estimators=2, max_epochs=1, random_state=0)
    with pytest.raises(DivergenceError, match="member 2 of 2, phase 'training', epoch 1"):
        clf.fit(*data)


class RecordLoss(Callback):
    """Records the first batch's loss and every epoch's training loss (in-process fits)."""

    losses: list = []  # noqa: RUF012 (shared on purpose: nets get deep copies of callbacks)

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == 1:
            RecordLoss.losses.append(net.history[0, "batches", 0, "train_loss"])
        RecordLoss.losses.append(net.history[-1, "train_loss"])


def test_one_exploding_epoch_that_training_recovers_from_is_let_through():
    # Unscaled inputs (around 100) make the first epoch's loss explode; training recovers.
    rng = np.random.RandomState(0)
    X = rng.normal(loc=100, size=(100, 2)).astype(np.float32)
    y = (X[:, 0] > 100).astype(int)
    RecordLoss.losses = []
    clf = DeepEnsembleClassifier(
        MLP, n_estimators=1, max_epochs=6, lr=0.1, batch_size=32, callbacks=[RecordLoss()]
    )
    clf.set_params(random_state=0).fit(X, y)
    initial, first, *rest = RecordLoss.losses
    assert first > 10 * initial  # the bound was crossed once...
    assert max(rest) < 10 * initial  # ...and training came back under it
    assert np.isfinite(clf.predict_proba(X)).all()


def test_a_run_that_explodes_in_its_last_step_is_caught_on_the_final_members(data):
    # One step per vertex phase (a single batch): the phase's loss is recorded before the
    # step that explodes, so only the final members' loss can tell.
    clf = quick(ESPROClassifier, vertex_lr=1e6, batch_size=128)
    with pytest.raises(DivergenceError, match=r"member\(s\) 0, 1 of 2 .* loss of .*"):
        clf.fit(*data)
    assert_unfitted(clf)


def test_non_finite_members_after_training_raise(data):
    # A SWAG covariance scaled by 1e38 draws samples whose outputs overflow float32.
    clf = quick(SWAGClassifier, scale=1e38, covariance="diagonal", var_clamp=1.0)
    with pytest.raises(
        DivergenceError, match=r"member\(s\) 0, 1 of 2 .* loss of .*scale \(now 1e\+38\)"
    ):
        clf.fit(*data)
    assert_unfitted(clf)


def test_healthy_runs_never_return_non_finite_probabilities(data):
    for cls in ESTIMATORS:
        proba = quick(cls).fit(*data).predict_proba(data[0])
        assert np.isfinite(proba).all()


# -- validation split and early stopping ---------------------------------------------------------


class RecordSplit(Callback):
    """Records the training and validation rows every phase sees (in-process fits only)."""

    seen: list = []  # noqa: RUF012 (shared on purpose: nets get deep copies of callbacks)

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        RecordSplit.seen.append(
            (frozenset(dataset_train.indices), frozenset(dataset_valid.indices))
        )


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_validation_rows_are_the_same_for_every_member_and_phase(data, cls):
    RecordSplit.seen = []
    clf = quick(cls, train_split=ValidSplit(0.25), callbacks=[RecordSplit()], random_state=3)
    clf.fit(*data)
    phases = set(RecordSplit.seen)
    assert len(RecordSplit.seen) == clf.epochs_spent_  # one record per epoch of every phase
    assert len(phases) == 1, "members or phases saw different validation rows"
    ((train, valid),) = phases
    assert not train & valid
    assert len(valid) == 30 and len(train | valid) == 120
    # The same random_state gives the same rows; another gives others.
    RecordSplit.seen = []
    quick(cls, train_split=ValidSplit(0.25), callbacks=[RecordSplit()], random_state=3).fit(*data)
    assert set(RecordSplit.seen) == phases
    RecordSplit.seen = []
    quick(cls, train_split=ValidSplit(0.25), callbacks=[RecordSplit()], random_state=4).fit(*data)
    assert set(RecordSplit.seen) != phases


def early_stop():
    # A relative threshold of 10 counts every epoch after the first as no improvement, so
    # with patience 1 every phase stops after exactly 2 epochs.
    return EarlyStopping(monitor="valid_loss", patience=1, threshold=10.0)


@pytest.mark.parametrize(
    ("cls", "params", "epochs", "members"),
    [
        (DeepEnsembleClassifier, dict(n_estimators=2), 2 * 2, 2),
        (ESPROClassifier, dict(n_modes=2, n_vertices=3, epochs_per_vertex=5), 2 * 3 * 2, 4),
        (SWAGClassifier, dict(swa_start=1, max_rank=5), 2, 2),
    ],
)
def test_early_stopping_ends_each_phase(data, cls, params, epochs, members):
    clf = quick(
        cls, max_epochs=20, train_split=ValidSplit(0.25), callbacks=[early_stop()], **params
    )
    clf.fit(*data)
    assert clf.epochs_spent_ == epochs
    assert clf.n_members_ == members


def test_early_stopping_ends_fge_cycles_with_the_snapshots_taken(data):
    # Cycles of one epoch take a snapshot mid-epoch: 2 epochs give 2 of the 6 snapshots.
    clf = quick(
        FGEClassifier,
        max_epochs=20,
        n_snapshots=6,
        cycle_length=1,
        batch_size=16,  # 90 training rows: 6 steps a cycle, a snapshot after the third
        train_split=ValidSplit(0.25),
        callbacks=[early_stop()],
    )
    with pytest.warns(UserWarning, match="after 2 of n_snapshots=6 snapshots"):
        clf.fit(*data)
    assert clf.n_members_ == 2
    assert clf.epochs_spent_ == 2 + 2


# -- degenerate batches, module outputs, input shapes -----------------------------------------


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_batchnorm_with_a_one_row_last_batch_trains(data, cls):
    X, y = data
    clf = cls(BatchNormMLP, max_epochs=2, batch_size=40, random_state=0, **QUICK[cls])
    clf.fit(X[:81], y[:81])  # 81 = 2 * 40 + 1
    assert np.isfinite(clf.predict_proba(X)).all()


def test_batchnorm_with_batches_of_one_row_is_refused(data):
    clf = DeepEnsembleClassifier(BatchNormMLP, n_estimators=1, batch_size=1)
    with pytest.raises(ValueError, match=r"BatchNorm.*at least 2 rows.*batch_size=1"):
        clf.fit(*data)


def test_a_module_returning_probabilities_gets_a_warning(data):
    def softmax_mlp(n_features_in, n_classes):
        return nn.Sequential(nn.Linear(n_features_in, n_classes), nn.Softmax(dim=1))

    with pytest.warns(UserWarning, match="look like probabilities.*return logits"):
        DeepEnsembleClassifier(softmax_mlp, n_estimators=1, max_epochs=1).fit(*data)


def test_a_module_returning_logits_gets_no_warning(data, recwarn):
    DeepEnsembleClassifier(MLP, n_estimators=1, max_epochs=1).fit(*data)
    assert not [w for w in recwarn if "probabilities" in str(w.message)]


@pytest.fixture(scope="module")
def images():
    rng = np.random.RandomState(0)
    return rng.rand(40, 8, 8).astype(np.float32), np.arange(40) % 2


def test_prediction_needs_the_trailing_shape_seen_in_fit(images):
    X, y = images
    clf = DeepEnsembleClassifier(
        MLP, module__n_features_in=64, n_estimators=2, max_epochs=1, random_state=0
    ).fit(X, y)
    assert clf.input_shape_ == (8, 8)
    before = clf.predict_proba(X)
    strategy = clf.members_._strategy
    with pytest.raises(
        ValueError, match=r"rows of shape \(8, 9\).*fitted on rows of shape \(8, 8\)"
    ):
        clf.predict_proba(np.zeros((3, 8, 9), np.float32))
    assert clf.members_._strategy == strategy
    assert_array_equal(clf.predict_proba(X), before)


def test_a_module_failing_on_nd_input_names_the_filled_value(images):
    X, y = images
    clf = DeepEnsembleClassifier(MLP, n_estimators=1, max_epochs=1)
    with pytest.raises(ValueError, match=r"filled from the data: n_features_in=8, n_classes=2"):
        clf.fit(X, y)


# -- a failed call changes nothing ------------------------------------------------------------


class ItemMLP(MLP):
    """Calls .item() (vmap cannot) and refuses inputs above 100 (neither can the loop)."""

    def forward(self, x):
        if x.abs().max().item() > 100:
            raise ValueError("inputs above 100")
        out = super().forward(x)
        if out.abs().max().item() > 1e30:  # the outputs are batched under vmap: it fails
            out = out / 2
        return out


def test_a_failing_predict_changes_nothing(data):
    X, y = data
    clf = DeepEnsembleClassifier(ItemMLP, n_estimators=3, max_epochs=1, random_state=0)
    with pytest.warns(RuntimeWarning, match="vectorised evaluation failed"):
        clf.fit(X, y)
    before = clf.predict_proba(X)
    stack = clf.members_
    strategy, tensors = stack._strategy, {k: t.clone() for k, t in stack.tensors.items()}
    fitted = {k: v for k, v in vars(clf).items() if k.endswith("_")}
    with pytest.raises(ValueError, match="inputs above 100"):
        clf.predict_proba(X * 1000)
    assert stack._strategy == strategy == "loop"
    for name, tensor in stack.tensors.items():
        torch.testing.assert_close(tensor, tensors[name], rtol=0, atol=0)
    assert {k: v for k, v in vars(clf).items() if k.endswith("_")}.keys() == fitted.keys()
    assert all(vars(clf)[k] is v for k, v in fitted.items())
    assert_array_equal(clf.predict_proba(X), before)


def test_a_failed_vmap_and_loop_keep_the_vectorised_strategy(data):
    X, y = data
    clf = DeepEnsembleClassifier(MLP, n_estimators=3, max_epochs=1, random_state=0).fit(X, y)
    stack = clf.members_
    assert stack.choose_strategy(torch.tensor(X)) == "vmap"
    with pytest.raises(RuntimeError):
        stack.forward(torch.zeros(4, 7))  # the module cannot take 7 features either way
    assert stack._strategy is None
    assert stack.choose_strategy(torch.tensor(X)) == "vmap"


def test_a_failed_recalibration_restores_the_statistics(data):
    X, y = data
    clf = SWAGClassifier(BatchNormMLP, swa_start=1, max_epochs=2, n_predict_samples=3)
    clf.fit(X, y)
    stack = clf.members_
    saved = {name: t.clone() for name, t in stack.tensors.items()}
    good, bad = torch.tensor(X[:40]), torch.zeros(40, 7)
    with pytest.raises(RuntimeError):
        recalibrate_batchnorm(stack, [good, bad])
    for name, tensor in stack.tensors.items():
        torch.testing.assert_close(tensor, saved[name], rtol=0, atol=0)
    assert stack._strategy is None


# -- training batches, splits and monitors ------------------------------------------------------


def test_no_training_batch_at_all_is_refused(data):
    clf = quick(DeepEnsembleClassifier, batch_size=200, iterator_train__drop_last=True)
    with pytest.raises(ValueError, match=r"drop_last=True with batches of 200 rows .* 120"):
        clf.fit(*data)


def test_numpy_integers_are_accepted_as_batch_sizes(data):
    clf = quick(
        DeepEnsembleClassifier, batch_size=np.int64(32), iterator_valid__batch_size=np.int32(7)
    )
    reference = quick(DeepEnsembleClassifier, batch_size=32, iterator_valid__batch_size=7)
    assert_array_equal(
        clf.fit(*data).predict_proba(data[0]), reference.fit(*data).predict_proba(data[0])
    )


def test_a_split_leaving_a_class_without_training_rows_is_refused(data):
    X, y = data
    order = np.argsort(y, kind="stable")  # unshuffled folds: the first third is all class 0
    with pytest.raises(ValueError, match=r"train_split=.* left no training rows of class\(es\) 0"):
        quick(DeepEnsembleClassifier, train_split=ValidSplit(3, stratified=False)).fit(
            X[order], y[order]
        )


def test_a_failing_split_names_train_split(data):
    with pytest.raises(
        ValueError, match=r"train_split=.*ValidSplit.* failed on the training data"
    ):
        quick(DeepEnsembleClassifier, train_split=ValidSplit(0.999)).fit(*data)


def test_a_validation_score_of_epoch_scoring_needs_a_split(data):
    callbacks = [EpochScoring("accuracy", name="acc"), EarlyStopping(monitor="acc")]
    with pytest.raises(ValueError, match="monitors 'acc', a validation score"):
        quick(DeepEnsembleClassifier, callbacks=callbacks).fit(*data)


class SignalSelf(Callback):
    """Sends this process SIGINT at the end of the first epoch."""

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == 1:
            os.kill(os.getpid(), signal.SIGINT)


class StopAtTwo(Callback):
    """Asks skorch to stop after the second epoch, as EarlyStopping does."""

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == 2:
            raise KeyboardInterrupt


def test_a_user_sigint_handler_that_does_not_raise_leaves_stop_requests_alone(data):
    seen = []
    previous = signal.signal(signal.SIGINT, lambda *args: seen.append(True))
    try:
        clf = quick(DeepEnsembleClassifier, max_epochs=5, callbacks=[SignalSelf(), StopAtTwo()])
        clf.fit(*data)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert len(seen) == 2  # the user's handler saw both members' signals...
    assert clf.epochs_spent_ == 2 * 2  # ...and both members stopped as asked, at epoch 2


def test_an_unlimited_working_memory_from_sklearn_config_predicts_in_one_batch(data):
    import sklearn

    clf = quick(DeepEnsembleClassifier).fit(*data)
    expected = clf.predict_proba(data[0])
    with sklearn.config_context(working_memory=math.inf):
        assert_array_equal(clf.predict_proba(data[0]), expected)


def test_each_member_and_phase_checkpoints_to_its_own_files(data, tmp_path):
    from skorch.callbacks import Checkpoint

    checkpoint = Checkpoint(monitor="train_loss_best", dirname=str(tmp_path))
    clf = quick(ESPROClassifier, n_modes=2, callbacks=[checkpoint]).fit(*data)
    names = sorted(p.name for p in tmp_path.glob("*params.pt"))
    expected = [f"member{m}_{phase}_params.pt" for m in (1, 2) for phase in ("mode", "vertex1")]
    assert names == sorted(expected)
    assert checkpoint.fn_prefix == ""  # the user's instance is left as it was
    # Each file holds its own member's weights: the two modes' final weights differ.
    modes = [torch.load(tmp_path / f"member{m}_mode_params.pt") for m in (1, 2)]
    assert not torch.equal(modes[0]["net.1.weight"], modes[1]["net.1.weight"])
    assert clf.n_members_ == 4


class _IntegerOutput(nn.Module):
    """A network whose forward casts its output to integers (e.g. a stray argmax/round)."""

    def __init__(self, n_features_in=8, n_outputs=3):
        super().__init__()
        self.linear = nn.Linear(n_features_in, n_outputs)

    def forward(self, x):
        return self.linear(x).round().long()


@pytest.mark.parametrize("regression", [False, True])
def test_a_module_with_integer_outputs_is_refused_before_training(data, regression):
    from simplexens import DeepEnsembleRegressor

    X, y = data
    cls = DeepEnsembleRegressor if regression else DeepEnsembleClassifier
    params = dict(likelihood="mse") if regression else {}
    est = cls(_IntegerOutput, n_estimators=2, max_epochs=1, **params)
    with pytest.raises(ValueError, match=r"torch\.int64 output; it must return floating-point"):
        est.fit(X, y.astype(np.float32) if regression else y)
    with pytest.raises(NotFittedError):
        est.predict(X)


class _InfOnLargeInputs(nn.Module):
    """Logits (or means) ``[x0, 0]``: infinite on rows whose first feature is infinite."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        first = self.scale * x[:, :1]
        return torch.cat([first, torch.zeros_like(first)], dim=1)


def _single_stack(module):
    from simplexens.backends.functional import ParameterStack, module_tensors

    return ParameterStack.from_members(module, [module_tensors(module)])


@pytest.mark.parametrize("head", ["classifier", "regressor"])
def test_a_non_finite_output_gives_an_infinite_summed_loss_unless_its_weight_is_zero(head):
    """The summed loss (divergence checks, the subspace posterior): a member with an
    infinite output on a row has loss +inf (not float64's largest number), and a row of
    weight 0 adds nothing, so the others' sum is recomputed here as the oracle."""
    from torch.nn import functional

    from simplexens import DeepEnsembleRegressor
    from simplexens._classifier import summed_nll

    X = np.array([[np.inf, 0.0], [0.5, 1.0], [-1.0, 2.0]], dtype=np.float32)
    rows = np.arange(3)
    stack = _single_stack(_InfOnLargeInputs())
    if head == "classifier":
        y = np.array([1, 0, 1])

        def loss(weights=None):
            return summed_nll(stack, X, y, rows, weights=weights)

        logits = torch.tensor([[0.5, 0.0], [-1.0, 0.0]], dtype=torch.float64)
        oracle = functional.cross_entropy(logits, torch.tensor([0, 1]), reduction="sum")
    else:
        y = np.zeros((3, 2), dtype=np.float32)
        reg = DeepEnsembleRegressor(_InfOnLargeInputs, likelihood="mse")

        def loss(weights=None):
            return reg._summed_loss(stack, X, y, rows, weights=weights)

        # Unit-noise Gaussian NLL of means [x0, 0] at y = 0, summed over both targets.
        oracle = sum(0.5 * m**2 + 2 * 0.5 * math.log(2 * math.pi) for m in (0.5, -1.0))
    assert torch.isposinf(loss()).all()
    got = loss(np.array([0.0, 1.0, 1.0], dtype=np.float32))
    torch.testing.assert_close(got, torch.tensor([float(oracle)], dtype=torch.float64))
