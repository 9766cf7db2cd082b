"""The trainers: one top-level function per method, run in the worker that trains a member.

Each builds fresh skorch nets from a :class:`~simplexens.backends.modules.ModuleSpec`, the
estimator's skorch arguments and the member's seed, and returns what the parent needs: the
trained tensors on the CPU and the number of epochs run.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np
from skorch.callbacks import Callback

from ..modules import ModuleSpec
from ..parallel import private_rng
from ..rows import writable
from ..schedules import CyclicSchedule
from ..swag import SWAGMoments
from .anchors import load_tensors, start_mode
from .nets import (
    MemberResult,
    Phase,
    cpu_tensors,
    default_phase,
    make_net,
    on_member_device,
    training_batches,
)


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
    X = writable(X)
    net_kwargs = on_member_device(net_kwargs, phase)
    with private_rng(seed, net_kwargs["device"]):
        net = make_net(spec.build(), net_kwargs, seed, phase=phase)
        net.fit(X, y)
    return MemberResult(cpu_tensors(net.module_), len(net.history))


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
    training steps. With ``at_least_once``, a SWA phase that ends (early stopping) before
    its first scheduled collection collects its final weights.
    """

    def __init__(
        self, moments: SWAGMoments, swa_start: int, swa_lr: float, every=None, at_least_once=False
    ):
        self.moments = moments
        self.swa_start = swa_start
        self.swa_lr = swa_lr
        self.every = every
        self.at_least_once = at_least_once

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

    def on_train_end(self, net, **kwargs):
        if self.at_least_once and self.moments.n_collected == 0 and self._in_swa_phase(net):
            self.moments.collect(dict(net.module_.named_parameters()))


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
    init: dict | None = None,
) -> FGEResult:
    """Pretrain a network (or start from ``init``), then run cyclical-rate cycles and collect
    a snapshot per cycle.

    ``cycle`` holds ``alpha1``, ``alpha2``, ``cycle_length`` (epochs) and ``n_snapshots``.
    The cyclic phase runs whole epochs, as many as the last snapshot needs. A callback that
    stops the cyclic phase early (``EarlyStopping``) ends the cycles: the snapshots taken so
    far are kept, with a warning.
    """
    X = writable(X)
    phase = phase or default_phase(net_kwargs)
    net_kwargs = on_member_device(net_kwargs, phase)
    with private_rng(seed, net_kwargs["device"]):
        pretrained, epochs = start_mode(
            spec, net_kwargs, X, y, seed, phase.but("pretraining"), init
        )
        rate = CyclicRate(None)
        cyclic = make_net(
            pretrained,
            net_kwargs,
            seed + 1,
            extra_callbacks=[("fge_cycle", rate)],
            phase=phase.but("cycles", (("alpha1", cycle["alpha1"]),)),
        ).initialize()
        n_batches = training_batches(cyclic, X, y)
        rate.schedule = CyclicSchedule(
            cycle["alpha1"],
            cycle["alpha2"],
            max(2, round(cycle["cycle_length"] * n_batches)),
            cycle["n_snapshots"],
        )
        cyclic.max_epochs = -(-rate.schedule.total_iterations // n_batches)
        cyclic.fit(X, y)
    _check_snapshots(len(rate.snapshots_), cycle["n_snapshots"])
    epochs += len(cyclic.history)
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
    init: dict | None = None,
) -> SWAGResult:
    """Train a network with a SWA phase from ``swa["swa_start"]`` on, collecting SWAG moments.

    With ``init`` (a trained network's tensors), only the SWA phase runs, from ``init``.
    ``swa`` holds ``swa_start``, ``swa_lr``, ``max_rank``, ``collect_every`` and
    ``stats_device``. A callback that stops training early (``EarlyStopping``) ends the run:
    the weights collected so far make the moments.
    """
    X = writable(X)
    net_kwargs = on_member_device(net_kwargs, phase)
    moments = SWAGMoments(
        swa["max_rank"],
        device=swa["stats_device"],
        expected_collections=swa.get("expected_collections"),
    )
    swa_start = swa["swa_start"] if init is None else 0
    collector = SWACollector(
        moments, swa_start, swa["swa_lr"], swa["collect_every"], swa.get("at_least_once", False)
    )
    phase = phase or default_phase(net_kwargs)
    before, during = (
        phase.but("before SWA"),
        phase.but("SWA", (("swa_lr", swa["swa_lr"]),)),
    )
    with private_rng(seed, net_kwargs["device"]):
        module, kwargs = spec.build(), net_kwargs
        if init is not None:
            module = load_tensors(module, init)
            kwargs = {**net_kwargs, "max_epochs": net_kwargs["max_epochs"] - swa["swa_start"]}
        net = make_net(
            module,
            kwargs,
            seed,
            extra_callbacks=[("swa_collector", collector)],
            phase=phase.but("SWAG"),
            phase_at=functools.partial(_swa_phase, swa_start, before, during),
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
