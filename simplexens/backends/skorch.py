"""The only module that imports skorch: the nets that train each member.

Every member is an ordinary skorch :class:`~skorch.NeuralNet` built inside the worker that
trains it, from a :class:`~simplexens.backends.modules.ModuleSpec`, the estimator's skorch
arguments, and the member's seed. What comes back to the parent is small and device-free:
the trained tensors on the CPU and the number of epochs run.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import math
import signal
import threading
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import Callback
from skorch.dataset import Dataset, ValidSplit
from torch.utils.data import Subset

from ..exceptions import DivergenceError
from ..geometry.simplex import log_volume
from .functional import module_tensors
from .modules import ModuleSpec
from .parallel import private_rng
from .progress import Progress
from .schedules import CyclicSchedule
from .simplex import SimplexModule, initial_vertex
from .swag import SWAGMoments


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
    """

    def __init__(self, train, valid):
        self.train = train
        self.valid = valid

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
    dataset = Dataset(X, y)
    train, valid = (_indices(part, dataset) for part in train_split(dataset, y))
    if isinstance(train, np.ndarray) and len(train) == 0:
        raise ValueError(f"train_split={train_split!r} left no training rows.")
    if isinstance(train, np.ndarray) and isinstance(valid, np.ndarray):
        shared = np.intersect1d(train, valid)
        if len(shared):
            raise ValueError(
                f"train_split={train_split!r} put {len(shared)} row(s) in both the training "
                "and the validation part."
            )
    return FixedSplit(train, valid)


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
        if train_split is None and isinstance(monitor, str) and monitor.startswith("valid_"):
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
        lower = " or ".join(f"{name} (now {value})" for name, value in self.rates)
        return f"Try a lower {lower}." if lower else "Try a lower learning rate."


def default_phase(net_kwargs: dict) -> Phase:
    """The phase of a net trained outside an estimator (tests, direct use)."""
    return Phase("NeuralNet", 0, 1, "training", (("lr", net_kwargs.get("lr")),))


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
        phase = self.phase_at(epoch)
        loss, data = net.history[-1, "train_loss"], net.epoch_data_loss()
        if not (math.isfinite(loss) and math.isfinite(data)):
            raise DivergenceError(
                f"{phase.where()}, epoch {epoch}: the training loss is {loss}. {phase.advice()}"
            )
        reference = net.initial_loss() if phase.reference is None else phase.reference
        self.exploded_ = self.exploded_ + 1 if data > DIVERGENCE_RATIO * reference > 0 else 0
        if self.exploded_ >= DIVERGENCE_EPOCHS or (self.exploded_ and epoch >= net.max_epochs):
            raise DivergenceError(
                f"{phase.where()}, epoch {epoch}: the training loss is {data:.4g}, over "
                f"{DIVERGENCE_RATIO:g} times the untrained network's {reference:.4g}, for "
                f"{self.exploded_} epoch(s) in a row. {phase.advice()}"
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
        signals.seen = True
        previous(signum, frame)

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

    Parameters
    ----------
    phase_at : callable, optional
        Maps an epoch number (1-based) to the :class:`Phase` it belongs to; for messages.
    """

    def __init__(self, *args, phase_at=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.phase_at = phase_at

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

    def epoch_data_loss(self) -> float:
        """The last epoch's mean training loss of the criterion alone."""
        return self.history[-1, "train_loss"]

    def initial_loss(self) -> float:
        """The loss on the first training batch, before the first step."""
        return self.history[0, "batches", 0, "train_loss"]

    def fit(self, X, y=None, **fit_params):
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
    the net reports to. ``extra`` goes to ``net_class``.
    """
    phase = phase or default_phase(net_kwargs)
    phase_at = phase_at or functools.partial(_constant, phase)
    kwargs = dict(net_kwargs)
    user = kwargs.get("callbacks")
    user = [] if user is None else copy.deepcopy(list(user))
    guard = ("simplexens_finite_loss", FiniteLoss(phase_at))
    # The method's own callbacks run before the user's, so that a user callback ending the
    # phase at an epoch's end (EarlyStopping) cannot cost that epoch's collection.
    kwargs["callbacks"] = [guard, *extra_callbacks, *user, *_reporting(phase, kwargs)]
    kwargs.setdefault("iterator_train__shuffle", True)
    kwargs.setdefault("iterator_train__generator", torch.Generator().manual_seed(seed))
    return net_class(module, **kwargs, phase_at=phase_at, **extra)


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


def _constant(value, *args):
    return value


def fit_member(
    spec: ModuleSpec,
    net_kwargs: dict,
    X: np.ndarray,
    y: np.ndarray,
    seed: int,
    phase: Phase | None = None,
) -> MemberResult:
    """Build a fresh module from ``spec`` and train it with skorch, all randomness from ``seed``.

    Parameters
    ----------
    spec : ModuleSpec
        How to build the module.
    net_kwargs : dict
        Arguments of :class:`skorch.NeuralNet` other than ``module``.
    X : ndarray of shape (n_samples, ...), float32
        Training inputs.
    y : ndarray of shape (n_samples,), int64
        Encoded labels.
    seed : int
        The member's seed: initial weights, data order, dropout.
    phase : Phase, optional
        Names the member in error messages.

    Returns
    -------
    MemberResult
    """
    # joblib hands large arrays to worker processes as read-only memory maps, which torch
    # cannot wrap; one private copy per worker.
    X = np.require(X, requirements="W")
    with private_rng(seed, net_kwargs.get("device", "cpu")):
        net = make_net(spec.build(), net_kwargs, seed, phase=phase)
        net.fit(X, y)
    return MemberResult(cpu_tensors(net.module_), len(net.history))


class SimplexNet(MemberNet):
    """A skorch net training the newest vertex of a :class:`SimplexModule`.

    Its loss is the criterion on the simplex points' outputs minus ``volume_lambda * log V``.

    Parameters
    ----------
    volume_lambda : float, default=0.0
        λ, the weight of the ``-log V`` term.
    """

    def __init__(self, *args, volume_lambda=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.volume_lambda = volume_lambda

    def get_loss(self, y_pred, y_true, X=None, training=False):
        loss = super().get_loss(y_pred, y_true, X=X, training=training)
        if training:
            # Summed on the device; read once per epoch by epoch_data_loss.
            self.data_loss_sum_ = self.data_loss_sum_ + loss.detach()
            self.data_loss_steps_ += 1
        if self.volume_lambda == 0:
            return loss
        return loss - self.volume_lambda * self.module_.log_volume().to(loss.dtype)

    def on_epoch_begin(self, net, **kwargs):
        super().on_epoch_begin(net, **kwargs)
        self.data_loss_sum_, self.data_loss_steps_ = 0.0, 0

    def epoch_data_loss(self) -> float:
        """The last epoch's mean data term (the criterion, without ``-λ log V``)."""
        return float(self.data_loss_sum_) / max(self.data_loss_steps_, 1)


@dataclass
class SimplexResult:
    """What growing one ESPRO simplex returns to the parent process.

    Attributes
    ----------
    vertices : dict of str to Tensor of shape (n_vertices, *shape)
        The vertices, parameters only, on the CPU.
    buffers : dict of str to Tensor
        The mode's buffers (e.g. BatchNorm statistics) and the parameters the user froze, on
        the CPU.
    log_volumes : list of float
        log V after each added vertex.
    epochs : int
        Epochs of gradient training, the mode's and every vertex's.
    """

    vertices: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    log_volumes: list
    epochs: int


@dataclass
class VertexSchedule:
    """How each vertex after the mode is trained (the ESPRO-specific parameters)."""

    n_vertices: int
    n_train_samples: int
    volume_lambda: float
    epochs_per_vertex: int
    lr: float
    init_scale: float


def fit_simplex(
    spec: ModuleSpec,
    net_kwargs: dict,
    schedule: VertexSchedule,
    X: np.ndarray,
    y: np.ndarray,
    seed: int,
    phase: Phase | None = None,
) -> SimplexResult:
    """Train a mode, then grow a simplex from it one vertex at a time (ESPRO).

    Parameters
    ----------
    spec, net_kwargs, X, y, seed, phase
        As in :func:`fit_member`; ``net_kwargs`` trains the mode.
    schedule : VertexSchedule
        The vertex phases.

    Returns
    -------
    SimplexResult
    """
    X = np.require(X, requirements="W")
    device = torch.device(net_kwargs.get("device", "cpu"))
    phase = phase or default_phase(net_kwargs)
    with private_rng(seed, device):
        mode = make_net(spec.build(), net_kwargs, seed, phase=phase.but("mode"))
        mode.fit(X, y)
        module, epochs = mode.module_, len(mode.history)
        # Vertices span the parameters the user trains; frozen ones stay at the mode's value.
        vertices = {n: p.detach()[None] for n, p in module.named_parameters() if p.requires_grad}
        names = list(vertices)
        generator = torch.Generator(device).manual_seed(seed)
        log_volumes = []
        vertex_kwargs = {**net_kwargs, "lr": schedule.lr, "max_epochs": schedule.epochs_per_vertex}
        rates = (("vertex_lr", schedule.lr), ("volume_lambda", schedule.volume_lambda))
        for j in range(1, schedule.n_vertices):
            start = initial_vertex(vertices, schedule.init_scale, generator)
            simplex = SimplexModule(module, vertices, start, schedule.n_train_samples, generator)
            net = make_net(
                simplex,
                vertex_kwargs,
                int(torch.randint(2**31 - 1, (1,), generator=generator, device=device)),
                net_class=SimplexNet,
                phase=phase.but(f"vertex {j}", rates, mode.initial_loss()),
                volume_lambda=schedule.volume_lambda,
            )
            net.fit(X, y)
            vertices = {n: v.detach() for n, v in net.module_.vertices().items()}
            log_volumes.append(float(log_volume(vertices)))
            epochs += len(net.history)
        fixed = {n: p for n, p in module.named_parameters() if n not in vertices}
        buffers = {**fixed, **dict(module.named_buffers())}
    return SimplexResult(
        {n: vertices[n].to("cpu", copy=True) for n in names},
        {n: b.detach().to("cpu", copy=True) for n, b in buffers.items()},
        log_volumes,
        epochs,
    )


class CyclicRate(Callback):
    """Sets the learning rate of every training step from a :class:`CyclicSchedule` and
    collects a snapshot of the module whenever the schedule says so (FGE).

    Attributes
    ----------
    snapshots_ : list of dict of str to Tensor
        The collected module tensors, on the CPU.
    snapshot_steps_ : list of int
        The steps after which they were collected.
    rates_ : list of float
        The learning rate each training step ran with.
    """

    def __init__(self, schedule: CyclicSchedule):
        self.schedule = schedule

    def initialize(self):
        self.iteration_ = 0
        self.snapshots_ = []
        self.snapshot_steps_ = []
        self.rates_ = []
        return self

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        if training:
            rate = self.schedule.rate(self.iteration_)
            for group in net.optimizer_.param_groups:
                group["lr"] = rate
            self.rates_.append(rate)

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        if not training:
            return
        if self.schedule.is_snapshot(self.iteration_):
            self.snapshots_.append(cpu_tensors(net.module_))
            self.snapshot_steps_.append(self.iteration_)
        self.iteration_ += 1


class SWACollector(Callback):
    """Runs the SWA phase: after ``swa_start`` epochs, trains at ``swa_lr`` and collects the
    weights into a :class:`SWAGMoments` at the end of every epoch, or every ``every``
    training steps.
    """

    def __init__(self, moments: SWAGMoments, swa_start: int, swa_lr: float, every=None):
        self.moments = moments
        self.swa_start = swa_start
        self.swa_lr = swa_lr
        self.every = every

    def initialize(self):
        self.steps_ = 0
        return self

    def _in_swa_phase(self, net) -> bool:
        return len(net.history) > self.swa_start

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        # Every step, so that a learning-rate scheduler among the callbacks cannot move it.
        if training and self._in_swa_phase(net):
            for group in net.optimizer_.param_groups:
                group["lr"] = self.swa_lr

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        if training and self.every is not None and self._in_swa_phase(net):
            self.steps_ += 1
            if self.steps_ % self.every == 0:
                self.moments.collect(dict(net.module_.named_parameters()))

    def on_epoch_end(self, net, **kwargs):
        if self.every is None and self._in_swa_phase(net):
            self.moments.collect(dict(net.module_.named_parameters()))


def training_batches(net, X, y) -> int:
    """Number of training steps per epoch of an initialised net on (X, y)."""
    dataset, _ = net.get_split_datasets(X, y)
    return len(net.get_iterator(dataset, training=True))


@dataclass
class FGEResult:
    """What an FGE run returns: snapshots, their steps, every cyclic step's rate, epochs."""

    snapshots: list
    snapshot_steps: list
    rates: list
    epochs: int


def fit_fge(
    spec: ModuleSpec,
    net_kwargs: dict,
    cycle: dict,
    X: np.ndarray,
    y: np.ndarray,
    seed: int,
    phase: Phase | None = None,
) -> FGEResult:
    """Pretrain a network, then run cyclical-rate cycles and collect a snapshot per cycle.

    ``cycle`` holds ``alpha1``, ``alpha2``, ``cycle_length`` (epochs) and ``n_snapshots``.
    The cyclic phase runs whole epochs, as many as the last snapshot needs. A callback that
    stops the cyclic phase early (``EarlyStopping``) ends the cycles: the snapshots taken so
    far are kept, with a warning.
    """
    X = np.require(X, requirements="W")
    phase = phase or default_phase(net_kwargs)
    with private_rng(seed, net_kwargs.get("device", "cpu")):
        pretrained = make_net(spec.build(), net_kwargs, seed, phase=phase.but("pretraining"))
        pretrained.fit(X, y)
        n_batches = training_batches(pretrained, X, y)
        schedule = CyclicSchedule(
            cycle["alpha1"],
            cycle["alpha2"],
            max(2, round(cycle["cycle_length"] * n_batches)),
            cycle["n_snapshots"],
        )
        rate = CyclicRate(schedule)
        cyclic_kwargs = {**net_kwargs, "max_epochs": -(-schedule.total_iterations // n_batches)}
        cyclic = make_net(
            pretrained.module_,
            cyclic_kwargs,
            seed + 1,
            extra_callbacks=[("fge_cycle", rate)],
            phase=phase.but("cycles", (("alpha1", cycle["alpha1"]),), pretrained.initial_loss()),
        )
        cyclic.fit(X, y)
    _check_snapshots(len(rate.snapshots_), cycle["n_snapshots"])
    epochs = len(pretrained.history) + len(cyclic.history)
    return FGEResult(rate.snapshots_, rate.snapshot_steps_, rate.rates_, epochs)


def _check_snapshots(taken: int, wanted: int) -> None:
    if taken == 0:
        raise ValueError(
            f"the cyclic phase ended before its first snapshot (of n_snapshots={wanted}): a "
            "callback such as EarlyStopping stopped it; loosen its patience or leave it out."
        )
    if taken < wanted:
        warnings.warn(
            f"a callback such as EarlyStopping ended the cycles after {taken} of "
            f"n_snapshots={wanted} snapshots; the ensemble has {taken} members.",
            UserWarning,
            stacklevel=3,
        )


@dataclass
class SWAGResult:
    """What a SWAG run returns: its moments, the final buffers, its epochs."""

    moments: SWAGMoments
    buffers: dict
    epochs: int


def fit_swag(
    spec: ModuleSpec,
    net_kwargs: dict,
    swa: dict,
    X: np.ndarray,
    y: np.ndarray,
    seed: int,
    phase: Phase | None = None,
) -> SWAGResult:
    """Train a network with a SWA phase from ``swa["swa_start"]`` on, collecting SWAG moments.

    ``swa`` holds ``swa_start``, ``swa_lr``, ``max_rank``, ``collect_every`` and
    ``stats_device``. A callback that stops training early (``EarlyStopping``) ends the run:
    the weights collected so far make the moments.
    """
    X = np.require(X, requirements="W")
    moments = SWAGMoments(
        swa["max_rank"],
        device=swa["stats_device"],
        expected_collections=swa.get("expected_collections"),
    )
    collector = SWACollector(moments, swa["swa_start"], swa["swa_lr"], swa["collect_every"])
    phase = phase or default_phase(net_kwargs)
    before, during = (
        phase.but("before SWA"),
        phase.but("SWA", (("swa_lr", swa["swa_lr"]),)),
    )
    with private_rng(seed, net_kwargs.get("device", "cpu")):
        net = make_net(
            spec.build(),
            net_kwargs,
            seed,
            extra_callbacks=[("swa_collector", collector)],
            phase=phase.but("SWAG"),
            phase_at=functools.partial(_swa_phase, swa["swa_start"], before, during),
        )
        net.fit(X, y)
    if moments.n_collected == 0:
        raise ValueError(
            f"no weights were collected: the SWA phase (epochs after swa_start="
            f"{swa['swa_start']}, {len(net.history)} epochs run) had fewer training steps than "
            f"collect_every={swa['collect_every']}, or a callback such as EarlyStopping ended "
            "training before it began."
        )
    buffers = {name: b.to("cpu", copy=True) for name, b in net.module_.named_buffers()}
    return SWAGResult(moments.to("cpu"), buffers, len(net.history))


def _swa_phase(swa_start: int, before: Phase, during: Phase, epoch: int) -> Phase:
    return during if epoch > swa_start else before
