"""skorch nets and callbacks shared by every method's training.

:class:`MemberNet` is skorch's ``NeuralNet`` with the guarantees an ensemble member needs
(Ctrl-C stops the whole fit; divergence raises), built by :func:`make_net` with a divergence
check, the user's callbacks and a progress report. The train/validation split is applied
once per fit (:func:`fixed_split`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import math
import signal
import threading
from dataclasses import dataclass

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import Callback, Checkpoint, EpochScoring, TrainEndCheckpoint
from skorch.dataset import Dataset, ValidSplit, unpack_data
from skorch.utils import TeeGenerator
from torch.utils.data import Subset

from ...exceptions import DivergenceError
from ..devices import resolve_member_device
from ..functional import autocast, autocast_dtype, module_tensors
from ..progress import Progress
from ..rows import INPUT_KEY, WEIGHT_KEY, DatasetRows, WeightedRows


@dataclass
class MemberResult:
    """What training one member returns to the parent process.

    Attributes
    ----------
    tensors : dict of str to Tensor
        The trained parameters and buffers, on the CPU.
    epochs : int
        Epochs of gradient training run (early stopping included).
    """

    tensors: dict[str, torch.Tensor]
    epochs: int


def cpu_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copy a module's parameters and buffers to the CPU."""
    return {name: t.to("cpu", copy=True) for name, t in module_tensors(module).items()}


class FixedSplit:
    """A train/validation split computed once, handed to every member's net.

    skorch calls ``train_split(dataset, y)`` at every ``fit``; a ``ValidSplit`` without a
    ``random_state`` then draws new validation rows for every member and phase, so a later
    phase would validate on rows an earlier one trained on. This callable returns the same
    rows each time.

    Parameters
    ----------
    train, valid : ndarray of int, Dataset or None
        Row indices into the training data, or a dataset the user's split returned as it is
        (e.g. skorch's ``predefined_split``).
    source : callable, optional
        The user's ``train_split`` it was computed from, for messages.
    """

    def __init__(self, train, valid, source=None):
        self.train = train
        self.valid = valid
        self.source = source

    def __call__(self, dataset, y=None, **fit_params):
        return self._part(self.train, dataset), self._part(self.valid, dataset)

    @staticmethod
    def _part(part, dataset):
        return Subset(dataset, part.tolist()) if isinstance(part, np.ndarray) else part

    def train_rows(self, n_rows: int) -> np.ndarray:
        """Indices of the rows members train on (all rows if the split did not say)."""
        return self.train if isinstance(self.train, np.ndarray) else np.arange(n_rows)


def fixed_split(train_split, X: np.ndarray, y: np.ndarray, seed: int) -> FixedSplit:
    """Apply the user's ``train_split`` once and fix the result.

    A skorch ``ValidSplit`` without a ``random_state`` gets ``seed``; other callables are
    called as they are (their own randomness is theirs).

    Raises
    ------
    ValueError
        If the split's training and validation rows overlap, or it leaves no training row.
    """
    if isinstance(train_split, ValidSplit) and train_split.random_state is None:
        train_split = copy.copy(train_split)
        train_split.random_state = seed
    X = X.X if isinstance(X, WeightedRows) else X  # the split needs the rows, not weights
    dataset = X.training_dataset(y) if isinstance(X, DatasetRows) else Dataset(X, y)
    try:
        parts = train_split(dataset, y)
    except Exception as exc:
        raise ValueError(
            f"train_split={train_split!r} failed on the training data: {exc}"
        ) from exc
    train, valid = (_indices(part, dataset) for part in parts)
    if isinstance(train, np.ndarray) and len(train) == 0:
        raise ValueError(f"train_split={train_split!r} left no training rows.")
    if isinstance(train, np.ndarray) and isinstance(valid, np.ndarray):
        shared = np.intersect1d(train, valid)
        if len(shared):
            raise ValueError(
                f"train_split={train_split!r} put {len(shared)} row(s) in both the training "
                "and the validation part."
            )
    return FixedSplit(train, valid, source=train_split)


def _indices(part, dataset):
    """Row indices of a split part taken from ``dataset``; any other part as it is."""
    if part is dataset:
        return np.arange(len(dataset))
    if isinstance(part, Subset) and part.dataset is dataset:
        return np.asarray(part.indices, dtype=np.int64)
    return part


def check_callbacks(callbacks, train_split) -> None:
    """Check the ``callbacks`` parameter before any training.

    It must be None or a list of skorch :class:`~skorch.callbacks.Callback` instances or
    ``(name, callback)`` pairs; a callback that monitors a ``valid_*`` score needs a
    ``train_split``.

    Raises
    ------
    TypeError
        If ``callbacks`` or one of its items has the wrong type.
    ValueError
        If a callback monitors a validation score and ``train_split`` is None.
    """
    if callbacks is None:
        return
    if not isinstance(callbacks, list | tuple):
        raise TypeError(
            f"callbacks must be None or a list of skorch Callback instances, got {callbacks!r}."
        )
    for item in callbacks:
        named = isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
        callback = item[1] if named else item
        if not isinstance(callback, Callback):
            hint = (
                " (pass an instance, e.g. EarlyStopping())" if isinstance(callback, type) else ""
            )
            raise TypeError(
                f"callbacks must hold skorch Callback instances or (name, callback) pairs; got "
                f"{item!r}{hint}."
            )
        monitor = getattr(callback, "monitor", None)
        if train_split is None and _is_validation_score(monitor, callbacks):
            raise ValueError(
                f"callback {type(callback).__name__} monitors {monitor!r}, a validation score, "
                "but train_split=None holds out no validation data; pass e.g. "
                "train_split=skorch.dataset.ValidSplit(0.2) or monitor a train_* score."
            )


#: A training loss above this many times the untrained network's marks an exploding run (a
#: healthy one stays far below; see :class:`FiniteLoss`).
DIVERGENCE_RATIO = 10.0

#: Epochs in a row above that bound that end training.
DIVERGENCE_EPOCHS = 3


@dataclass
class Phase:
    """Who is training and what, for messages: a member of an estimator in one phase.

    Attributes
    ----------
    estimator : str
        The estimator's class name.
    member : int
        0-based index of the member (mode, run) being trained.
    n_members : int
        Number of members trained by the fit.
    label : str
        The phase: ``"training"``, ``"mode"``, ``"vertex 1"``, ``"pretraining"``,
        ``"cycles"``, ``"before SWA"``, ``"SWA"``.
    rates : tuple of (str, float) pairs
        The parameters a user would lower if this phase diverges, with their values.
    reference : float or None
        The member's untrained loss, for phases that start from a trained network; None
        reads it from the phase's own first batch.
    progress : Progress
        Where the member reports its epochs (and, with ``verbose=2``, skorch's tables).
    """

    estimator: str
    member: int
    n_members: int
    label: str = "training"
    rates: tuple = ()
    reference: float | None = None
    progress: Progress = dataclasses.field(default_factory=Progress)

    def but(self, label: str, rates: tuple | None = None, reference=None) -> Phase:
        """The same member in another phase."""
        rates = self.rates if rates is None else rates
        reference = self.reference if reference is None else reference
        return dataclasses.replace(self, label=label, rates=rates, reference=reference)

    def where(self) -> str:
        return (
            f"{self.estimator} diverged in member {self.member + 1} of {self.n_members}, "
            f"phase {self.label!r}"
        )

    def advice(self) -> str:
        named = [f"{name} (now {value})" for name, value in self.rates]
        lower = " or ".join([", ".join(named[:-1]), named[-1]] if len(named) > 2 else named)
        return f"Try a lower {lower}." if lower else "Try a lower learning rate."


def default_phase(net_kwargs: dict) -> Phase:
    """The phase of a net trained outside an estimator (tests, direct use)."""
    return Phase("NeuralNet", 0, 1, "training", (("lr", net_kwargs.get("lr")),))


def on_member_device(net_kwargs: dict, phase: Phase | None) -> dict:
    """``net_kwargs`` with the device that this process trains ``phase``'s member on.

    Every trainer calls it first, in the worker that runs it, so that ``device="cuda"``
    becomes the worker's GPU, or one chosen by the member's index
    (:func:`~simplexens.backends.devices.resolve_member_device`); everything the trainer
    builds (nets, generators, anchors) then uses that device.
    """
    member = 0 if phase is None else phase.member
    device = resolve_member_device(net_kwargs.get("device", "cpu"), member)
    return {**net_kwargs, "device": device}


class FiniteLoss(Callback):
    """Ends training with :class:`DivergenceError` when a run diverges.

    At the end of every epoch: the training loss skorch recorded must be finite, and the
    epoch's mean data loss (the criterion alone, without ESPRO's volume term) must not stay
    above ``DIVERGENCE_RATIO`` times the untrained network's loss (when that is positive)
    for ``DIVERGENCE_EPOCHS`` epochs in a row, nor be above it at the phase's last epoch. A
    single exploding epoch that training recovers from (common in the first epoch on
    unscaled inputs) is let through. Only numbers already recorded are read, so no training
    step waits for the device.

    Parameters
    ----------
    phase_at : callable
        Maps the epoch number (1-based) to the :class:`Phase` it belongs to.
    """

    def __init__(self, phase_at):
        self.phase_at = phase_at

    def initialize(self):
        self.exploded_ = 0
        return self

    def on_epoch_end(self, net, **kwargs):
        epoch = len(net.history)
        loss, data = net.history[-1, "train_loss"], net.epoch_data_loss()
        finite = math.isfinite(loss) and math.isfinite(data)
        reference = self.phase_at(epoch).reference
        reference = net.initial_loss() if reference is None else reference
        exploding = not finite or data > DIVERGENCE_RATIO * reference > 0
        self.exploded_ = self.exploded_ + 1 if exploding else 0
        if not exploding:
            return
        started = epoch - self.exploded_ + 1  # the phase where it began is to blame
        phase = self.phase_at(started)
        since = f" (above {DIVERGENCE_RATIO:g} times the untrained network's {reference:.4g} "
        since += f"since epoch {started})" if started < epoch else "in this epoch)"
        if not finite:
            before = f" (exploding since epoch {started})" if started < epoch else ""
            raise DivergenceError(
                f"{phase.where()}, epoch {epoch}: the training loss is {loss}{before}. "
                f"{phase.advice()}"
            )
        if self.exploded_ >= DIVERGENCE_EPOCHS or epoch >= net.max_epochs:
            raise DivergenceError(
                f"{phase.where()}, epoch {epoch}: the training loss is {data:.4g}{since}. "
                f"{phase.advice()}"
            )


class ReportProgress(Callback):
    """Reports a phase's start, epochs and end to a :class:`Progress` handle."""

    def __init__(self, progress: Progress, member: int, phase: str):
        self.progress = progress
        self.member = member
        self.phase = phase

    def on_train_begin(self, net, **kwargs):
        self.progress.phase_begin(self.member, self.phase, net.max_epochs)

    def on_epoch_end(self, net, **kwargs):
        self.progress.epoch_end(self.member, self.phase)

    def on_train_end(self, net, **kwargs):
        self.progress.phase_end(self.member, self.phase)


class _Signals:
    """Whether SIGINT arrived while a net was training."""

    seen = False


@contextlib.contextmanager
def _watch_interrupts():
    """Note every SIGINT (Ctrl-C) while the block runs, then let the handler in place act.

    A ``KeyboardInterrupt`` raised by a callback is skorch's way to stop a run early; one
    raised by Ctrl-C is not, even when it lands while a callback runs. The handler that
    was installed (Python's, raising ``KeyboardInterrupt``, or the user's) still handles
    every signal, and is put back on exit. Only in the main thread (the one Python delivers
    signals to) and only over a callable handler; elsewhere nothing is installed and the
    place the interrupt was raised decides.
    """
    signals = _Signals()
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield signals
        return

    def note(signum, frame):
        try:
            previous(signum, frame)
        except KeyboardInterrupt:
            signals.seen = True
            raise

    signal.signal(signal.SIGINT, note)
    try:
        yield signals
    finally:
        signal.signal(signal.SIGINT, previous)


class _Interrupted(BaseException):
    """Carries a real KeyboardInterrupt past skorch, which swallows KeyboardInterrupt."""


class MemberNet(NeuralNet):
    """skorch's :class:`~skorch.NeuralNet`, with two guarantees for ensemble members.

    - Ctrl-C stops the whole fit: skorch ends only the current training on
      ``KeyboardInterrupt`` (which is also how its ``EarlyStopping`` stops a run), so a
      ``KeyboardInterrupt`` raised by a callback stays a stop request, and one raised
      anywhere else, or while a SIGINT (Ctrl-C) was seen, is raised again from :meth:`fit`.
      To see the signal, :meth:`fit` wraps the SIGINT handler in place with one that notes
      it and calls it, and puts it back afterwards (main thread only; in a thread, as in a
      Dask worker, only the place the interrupt was raised decides).
    - Weights that are not finite after training raise :class:`DivergenceError`.

    And one option, mixed precision (``precision``): the forward pass and the loss of every
    training, validation and evaluation step run under :func:`torch.autocast`; the backward
    pass and the optimiser step run outside it, on the float32 parameters (the recipe of
    :mod:`torch.amp`).

    Parameters
    ----------
    phase_at : callable, optional
        Maps an epoch number (1-based) to the :class:`Phase` it belongs to; for messages.
    precision : {"float32", "bfloat16", "float16"}, default="float32"
        ``"float32"``: no autocast, skorch's own steps. ``"bfloat16"``: autocast in
        bfloat16, which has float32's exponent range, so no loss scaling. ``"float16"``:
        autocast in float16 with a :class:`torch.amp.GradScaler` on the training device
        (``grad_scaler_``, made by :meth:`initialize`): the loss is scaled before the
        backward pass so that small gradients do not underflow float16's range (on any
        device: the range is the format's), the gradients are unscaled before the
        ``on_grad_computed`` callbacks (gradient clipping sees true values) and a step whose
        gradients are not finite is skipped. The scaler reads one flag from the device per
        step (its own host sync) and needs an optimiser stepping without a closure (not
        LBFGS). The parameters, the optimiser state and the loss stay float32; outputs
        (``y_pred``) are handed to callbacks in float32.
    """

    def __init__(self, *args, phase_at=None, precision="float32", **kwargs):
        super().__init__(*args, **kwargs)
        self.phase_at = phase_at
        self.precision = precision

    def initialize(self):
        """Initialise as skorch does; check ``precision`` and make ``grad_scaler_``."""
        dtype = autocast_dtype(self.precision)
        super().initialize()
        self.amp_device_ = _module_device(self.module_, self.device).type
        autocast(self.precision, self.amp_device_)  # the device must support autocast
        scaled = dtype is torch.float16
        self.grad_scaler_ = torch.amp.GradScaler(self.amp_device_) if scaled else None
        return self

    def _autocast(self):
        device = getattr(self, "amp_device_", None)  # None: not initialised, skorch says so
        return contextlib.nullcontext() if device is None else autocast(self.precision, device)

    def train_step_single(self, batch, **fit_params):
        """Forward pass and loss under autocast, backward pass (of the scaled loss for
        float16) outside it."""
        if self.precision == "float32":
            return super().train_step_single(batch, **fit_params)
        self._set_training(True)
        Xi, yi = unpack_data(batch)
        with self._autocast():
            y_pred = self.infer(Xi, **fit_params)
            loss = self.get_loss(y_pred, yi, X=Xi, training=True)
        scaler = self.grad_scaler_
        (loss if scaler is None else scaler.scale(loss)).backward()
        return {"loss": loss, "y_pred": self._full_precision(y_pred)}

    def train_step(self, batch, **fit_params):
        """skorch's step; with float16's scaler, ``scaler.step`` in place of the optimisers'
        ``step``, then ``scaler.update()``."""
        scaler = self.grad_scaler_
        if scaler is None:
            return super().train_step(batch, **fit_params)
        accumulator = self.get_train_step_accumulator()
        self._zero_grad_optimizer()
        accumulator.store_step(self.train_step_single(batch, **fit_params))
        optimizers = [getattr(self, name + "_") for name in self._optimizers]
        for optimizer in optimizers:
            scaler.unscale_(optimizer)
        self.notify(
            "on_grad_computed",
            named_parameters=TeeGenerator(self.get_all_learnable_params()),
            batch=batch,
            training=True,
        )
        for optimizer in optimizers:
            scaler.step(optimizer)
        scaler.update()
        return accumulator.get_step()

    def validation_step(self, batch, **fit_params):
        """skorch's validation step, under autocast."""
        with self._autocast():
            step = super().validation_step(batch, **fit_params)
        return {**step, "y_pred": self._full_precision(step["y_pred"])}

    def evaluation_step(self, batch, training=False):
        """skorch's evaluation step (``forward``, ``predict``), under autocast; outputs in
        float32."""
        with self._autocast():
            return self._full_precision(super().evaluation_step(batch, training=training))

    def _full_precision(self, output):
        """Tensors computed in the autocast dtype, cast to float32 (numpy has no bfloat16);
        tuples, lists and dicts of them likewise."""
        low = autocast_dtype(self.precision)
        if isinstance(output, torch.Tensor):
            return output.float() if low is not None and output.dtype == low else output
        if type(output) in (tuple, list):
            return type(output)(self._full_precision(o) for o in output)
        if isinstance(output, dict):
            return {k: self._full_precision(v) for k, v in output.items()}
        return output

    def notify(self, method_name, **cb_kwargs):
        try:
            super().notify(method_name, **cb_kwargs)
        except KeyboardInterrupt:
            self.stop_requested_ = True
            raise

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        self.stop_requested_ = False
        try:
            return super().fit_loop(X, y, epochs=epochs, **fit_params)
        except KeyboardInterrupt as exc:
            if self.stop_requested_ and not getattr(self, "signals_", _Signals).seen:
                raise
            raise _Interrupted(exc) from None

    def infer(self, x, **fit_params):
        """The module's output; a weighted input dict passes the module its input alone."""
        if isinstance(x, dict) and WEIGHT_KEY in x:
            x = x[INPUT_KEY]
        return super().infer(x, **fit_params)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """The criterion; for weighted inputs, the weighted mean of the per-row losses
        (``Σ w_i l_i / Σ w_i`` over the batch: a row of weight 2 counts as two copies)."""
        if not (isinstance(X, dict) and WEIGHT_KEY in X):
            loss = super().get_loss(y_pred, y_true, X=X, training=training)
            # Rows without weights (a validation Dataset given as is) under the per-row
            # criterion that weighted training builds: their plain mean.
            return loss.mean() if loss.dim() > 0 else loss
        losses = self.criterion_(y_pred, y_true.to(y_pred.device))
        if losses.shape != y_pred.shape[:1]:
            raise ValueError(
                f"sample weights need one loss per row from the criterion; "
                f"{type(self.criterion_).__name__}(reduction='none') returned shape "
                f"{tuple(losses.shape)} for {len(y_pred)} rows."
            )
        weights = X[WEIGHT_KEY].to(device=losses.device, dtype=losses.dtype)
        return (losses * weights).sum() / weights.sum().clamp_min(torch.finfo(losses.dtype).tiny)

    def torch_compile(self, module, name):
        """With ``compile=True``, compile ``module`` in place (``nn.Module.compile``, passing
        ``compile__*``): its class, parameter names and state dict stay those of the module,
        which the members are read from."""
        if not self.compile or not isinstance(module, torch.nn.Module):
            return module
        module.compile(**self.get_params_for("compile"))
        return module

    def epoch_data_loss(self) -> float:
        """The last epoch's mean training loss of the criterion alone."""
        return self.history[-1, "train_loss"]

    def initial_loss(self) -> float:
        """The loss on the first training batch, before the first step."""
        return self.history[0, "batches", 0, "train_loss"]

    def fit(self, X, y=None, **fit_params):
        X, y = net_inputs(X, y)
        try:
            with _watch_interrupts() as self.signals_:
                super().fit(X, y, **fit_params)
        except _Interrupted as wrapped:
            raise wrapped.args[0] from None
        if not all(bool(torch.isfinite(t).all()) for t in module_tensors(self.module_).values()):
            phase = self.phase_at(max(len(self.history), 1))
            raise DivergenceError(
                f"{phase.where()}: the weights are not finite (NaN or inf) after training. "
                f"{phase.advice()}"
            )
        return self


def _is_validation_score(monitor, callbacks) -> bool:
    """Whether a monitored name is computed on validation data: ``valid_*``, or a score of
    an ``EpochScoring(on_train=False)`` among the callbacks (and its ``*_best`` flag)."""
    if not isinstance(monitor, str):
        return False
    scored = [c[1] if isinstance(c, tuple) else c for c in callbacks]
    names = {c.name or c.scoring for c in scored if isinstance(c, EpochScoring) and not c.on_train}
    return monitor.startswith("valid_") or monitor.removesuffix("_best") in names


def make_net(
    module: torch.nn.Module,
    net_kwargs: dict,
    seed: int,
    net_class=MemberNet,
    extra_callbacks=(),
    phase: Phase | None = None,
    phase_at=None,
    **extra,
):
    """Build a skorch net around an already-built module.

    Every net gets a :class:`FiniteLoss` check first, then ``extra_callbacks``, then its own
    deep copy of the user's callbacks (skorch would otherwise share and mutate the instances
    the user passed). The training loader shuffles with its own generator seeded by
    ``seed``, unless the caller routed another through ``iterator_train__generator``.
    ``phase`` names the member and phase in error messages (``phase_at``, a function of the
    epoch, overrides it there for a net spanning two phases) and carries the progress handle
    the net reports to. ``extra`` goes to ``net_class``. ``net_kwargs`` may hold
    ``precision`` (``"float32"``, ``"bfloat16"`` or ``"float16"``): mixed-precision
    training, see :class:`MemberNet`.
    """
    phase = phase or default_phase(net_kwargs)
    phase_at = phase_at or functools.partial(_constant, phase)
    kwargs = dict(net_kwargs)
    user = kwargs.get("callbacks")
    user = [] if user is None else copy.deepcopy(list(user))
    _separate_checkpoints(user, phase)
    guard = ("simplexens_finite_loss", FiniteLoss(phase_at))
    # The method's own callbacks run before the user's, so that a user callback ending the
    # phase at an epoch's end (EarlyStopping) cannot cost that epoch's collection.
    kwargs["callbacks"] = [guard, *extra_callbacks, *user, *_reporting(phase, kwargs)]
    kwargs.setdefault("iterator_train__shuffle", True)
    kwargs.setdefault("iterator_train__generator", torch.Generator().manual_seed(seed))
    return net_class(module, **kwargs, phase_at=phase_at, **extra)


def _separate_checkpoints(callbacks: list, phase: Phase) -> None:
    """Give each member's and phase's checkpoint files their own names.

    Every net gets a copy of the user's ``Checkpoint`` and ``TrainEndCheckpoint``; with one
    ``fn_prefix`` they would all write (and, with ``load_best``, read) the same files. The
    prefix gains ``member{i}_{phase}_``, e.g. ``member2_vertex1_params.pt``.
    """
    tag = f"member{phase.member + 1}_{phase.label.replace(' ', '')}_"
    for item in callbacks:
        callback = item[1] if isinstance(item, tuple) else item
        if isinstance(callback, Checkpoint | TrainEndCheckpoint):
            callback.fn_prefix = f"{callback.fn_prefix}{tag}"


def _reporting(phase: Phase, kwargs: dict) -> list:
    """The progress callback of a net, and its verbosity (changed in ``kwargs``).

    With a progress bar, skorch's own table is printed only at ``verbose=2``, through the
    handle, so that it lands under a line naming member and phase.
    """
    if phase.progress.verbose < 1:
        return []
    kwargs["verbose"] = int(phase.progress.verbose >= 2)
    if kwargs["verbose"]:
        kwargs["callbacks__print_log__sink"] = phase.progress.sink(phase.member, phase.label)
    report = ReportProgress(phase.progress, phase.member, phase.label)
    return [("simplexens_progress", report)]


def net_inputs(X, y):
    """What skorch's ``fit`` takes for (X, y): arrays as they are; rows read item by item
    (:class:`DatasetRows`) as a torch Dataset of ``(x, encoded label)`` pairs with y None;
    weighted rows (:class:`WeightedRows`) with each input carrying its weight."""
    return X.net_inputs(y) if isinstance(X, DatasetRows | WeightedRows) else (X, y)


def training_batches(net, X, y) -> int:
    """Number of training steps per epoch of an initialised net on (X, y)."""
    dataset, _ = net.get_split_datasets(*net_inputs(X, y))
    return len(net.get_iterator(dataset, training=True))


def _module_device(module: torch.nn.Module, device) -> torch.device:
    """The device a net computes on: its ``device`` setting, or (None) its module's."""
    if device is not None:
        return torch.device(device)
    first = next(iter(module_tensors(module).values()), None)
    return first.device if first is not None else torch.device("cpu")


def _constant(value, *args):
    return value
