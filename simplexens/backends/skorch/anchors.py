"""Training anchors one phase at a time: ESPRO vertices, SPRO connectors, curve bends.

Every method that builds points from anchors trains them the same way: an
:class:`~simplexens.backends.simplex.AnchorModule` over the trained modes, wrapped in an
:class:`AnchorNet` whose loss is the criterion on the sampled points minus
``volume_lambda * Σ log V``, run for a phase of its own with its own learning-rate schedule
(:class:`PhaseRate`). The trainers differ only in which anchors they stack, which are
trainable, how coefficients are drawn and how many phases they run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from skorch.callbacks import Callback, LRScheduler

from ...geometry.complex import complex_log_volumes, connector_complex
from ..functional import module_tensors
from ..modules import ModuleSpec
from ..parallel import private_rng
from ..rows import writable
from ..simplex import AnchorModule, ComplexSampler, CurveSampler, initial_vertex, simplex_module
from .nets import MemberNet, Phase, default_phase, make_net, on_member_device, training_batches

#: Schedules of the learning rate within an anchor phase.
PHASE_SCHEDULES = ("cosine", "constant")


class AnchorNet(MemberNet):
    """A skorch net training the trainable anchors of an :class:`AnchorModule`.

    Its loss is the criterion on the sampled points' outputs minus
    ``volume_lambda * Σ log V`` over the simplexes of the module's complex.

    Parameters
    ----------
    volume_lambda : float, default=0.0
        λ, the weight of the ``-Σ log V`` term.
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
        kept = self.module_.take_step_volumes()
        if self.volume_lambda == 0:
            return loss
        volumes = kept if kept is not None else self.module_.log_volumes()
        return loss - self.volume_lambda * volumes.sum().to(loss.dtype)

    def on_epoch_begin(self, net, **kwargs):
        super().on_epoch_begin(net, **kwargs)
        self.data_loss_sum_, self.data_loss_steps_ = 0.0, 0

    def epoch_data_loss(self) -> float:
        """The last epoch's mean data term (the criterion, without ``-λ Σ log V``)."""
        return float(self.data_loss_sum_) / max(self.data_loss_steps_, 1)


class PhaseRate(Callback):
    """The learning rate of an anchor phase, set at every training step.

    ``"cosine"`` anneals from ``lr`` to 0 over the phase's steps (the phase's own cosine
    schedule, as the modes' in the papers); ``"constant"`` keeps ``lr``, leaving the rate to
    any learning-rate scheduler among the phase's callbacks.

    Attributes
    ----------
    rates_ : list of float
        The rate of every training step (``"cosine"`` only).
    """

    def __init__(self, schedule: str, lr: float):
        self.schedule = schedule
        self.lr = lr

    def initialize(self):
        self.step_ = 0
        self.total_ = None
        self.rates_ = []
        return self

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self.total_ = max(1, net.max_epochs * training_batches(net, X, y))

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        if not training or self.schedule != "cosine":
            return
        rate = 0.5 * self.lr * (1 + math.cos(math.pi * min(self.step_ / self.total_, 1.0)))
        for group in net.optimizer_.param_groups:
            group["lr"] = rate
        self.rates_.append(rate)
        self.step_ += 1


@dataclass
class AnchorPhases:
    """How each anchor after the modes is trained (ESPRO vertices, SPRO connectors, bends).

    Attributes
    ----------
    n_train_samples : int
        M, points per training step.
    volume_lambda : float
        λ, weight of ``-Σ log V`` (no effect on curves).
    epochs : int
        Epochs of each phase.
    lr : float
        The phase's learning rate (its peak with the cosine schedule).
    init_scale : float
        Relative size of the random move that starts a new vertex or connector.
    schedule : str
        ``"cosine"`` or ``"constant"`` (:class:`PhaseRate`).
    callbacks : list or None
        The phase's callbacks; None: the user's callbacks without learning-rate schedulers.
    """

    n_train_samples: int
    volume_lambda: float
    epochs: int
    lr: float
    init_scale: float = 0.1
    schedule: str = "cosine"
    callbacks: list | None = None

    def net_kwargs(self, net_kwargs: dict) -> dict:
        """The phase's skorch arguments: its rate, epochs and callbacks."""
        callbacks = self.callbacks
        if callbacks is None:
            user = net_kwargs.get("callbacks") or []
            callbacks = [c for c in user if not is_lr_scheduler(c)]
        return {**net_kwargs, "lr": self.lr, "max_epochs": self.epochs, "callbacks": callbacks}

    def rates(self, name: str) -> tuple:
        """The parameters to lower if the phase diverges, for messages."""
        return ((f"{name}_lr", self.lr), ("volume_lambda", self.volume_lambda)) + (
            ((f"{name}_init_scale", self.init_scale),) if self.init_scale else ()
        )


def _callback(item):
    return item[1] if isinstance(item, tuple) else item


def is_lr_scheduler(item) -> bool:
    """Whether a callback (or a ``(name, callback)`` pair) is skorch's ``LRScheduler``."""
    return isinstance(_callback(item), LRScheduler)


def cosine_schedule(epochs: int) -> list:
    """A cosine learning-rate schedule over ``epochs`` epochs, as a skorch callbacks list
    (``LRScheduler`` with ``CosineAnnealingLR``, ``T_max=epochs``): the modes' schedule of the
    papers, ending at a low rate."""
    return [LRScheduler(policy=torch.optim.lr_scheduler.CosineAnnealingLR, T_max=epochs)]


def train_anchors(
    module: AnchorModule,
    net_kwargs: dict,
    phases: AnchorPhases,
    X: np.ndarray,
    y: np.ndarray,
    phase: Phase,
) -> tuple[dict[str, torch.Tensor], int]:
    """Train the trainable anchors of ``module`` for one phase.

    Parameters
    ----------
    module : AnchorModule
        The anchors, some trainable; its generator also seeds the net (data order).
    net_kwargs : dict
        The estimator's skorch arguments; ``phases`` sets the rate, epochs and callbacks.
    phases : AnchorPhases
        How the phase trains.
    X : ndarray of shape (n_samples, ...), float32
    y : ndarray of shape (n_samples,), int64
    phase : Phase
        Names the member and phase in messages and progress.

    Returns
    -------
    anchors : dict of str to Tensor of shape (K, *shape)
        All anchors after the phase, on the training device.
    epochs : int
        Epochs run.
    """
    seed = int(torch.randint(2**31 - 1, (1,), generator=module.generator, device=module.device))
    net = make_net(
        module,
        phases.net_kwargs(net_kwargs),
        seed,
        net_class=AnchorNet,
        extra_callbacks=[("simplexens_phase_rate", PhaseRate(phases.schedule, phases.lr))],
        phase=phase,
        volume_lambda=phases.volume_lambda,
    )
    net.fit(X, y)
    return {n: a.detach() for n, a in net.module_.anchors().items()}, len(net.history)


def load_tensors(module: torch.nn.Module, tensors: dict) -> torch.nn.Module:
    """Copy ``tensors`` (parameters and buffers by name) into ``module``, in place."""
    with torch.no_grad():
        for name, t in module_tensors(module).items():
            t.copy_(tensors[name])
    return module


def start_mode(spec, net_kwargs, X, y, seed, phase, init=None):
    """The network a method starts from: trained from ``seed``, or built from ``init``.

    Parameters
    ----------
    spec : ModuleSpec
        How to build the module.
    net_kwargs : dict
        The skorch arguments of its training.
    X, y : ndarray
        Training data.
    seed : int
        The member's seed.
    phase : Phase
        Names the member in messages.
    init : dict of str to Tensor, optional
        A trained network's parameters and buffers; nothing is trained then.

    Returns
    -------
    module : nn.Module
        On the training device.
    epochs : int
        Epochs spent (0 when given).
    """
    if init is not None:
        device = net_kwargs.get("device", "cpu")
        return load_tensors(spec.build(), init).to(device), 0
    net = make_net(spec.build(), net_kwargs, seed, phase=phase)
    net.fit(X, y)
    return net.module_, len(net.history)


def trainable_parameters(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters the user trains (frozen ones stay at the mode's values)."""
    return {n: p.detach() for n, p in module.named_parameters() if p.requires_grad}


def fixed_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Buffers and frozen parameters of ``module``, on the CPU."""
    trainable = trainable_parameters(module)
    return {
        n: t.to("cpu", copy=True) for n, t in module_tensors(module).items() if n not in trainable
    }


@dataclass
class AnchorResult:
    """What a method's anchor training returns to the parent process.

    Attributes
    ----------
    anchors : dict of str to Tensor of shape (K, *shape)
        The anchors (trainable parameters only), on the CPU.
    buffers : dict of str to Tensor
        The first mode's buffers and frozen parameters, on the CPU.
    log_volumes : list of list of float
        log V of every simplex after each phase.
    epochs : int
        Epochs of gradient training, the modes' and every phase's.
    """

    anchors: dict
    buffers: dict
    log_volumes: list
    epochs: int


def _cpu(anchors: dict) -> dict:
    return {n: a.to("cpu", copy=True) for n, a in anchors.items()}


def fit_simplex(
    spec: ModuleSpec,
    net_kwargs: dict,
    n_vertices: int,
    phases: AnchorPhases,
    X: np.ndarray,
    y: np.ndarray,
    seed: int,
    phase: Phase | None = None,
    init: dict | None = None,
    vertices: dict | None = None,
) -> AnchorResult:
    """Train a mode (or start from ``init``), then grow a simplex from it one vertex at a time
    (ESPRO). Vertex ``j`` starts off the simplex of the vertices before it
    (:func:`initial_vertex`) and trains with them frozen.

    Parameters
    ----------
    spec, net_kwargs, X, y, seed, phase
        As in :func:`~simplexens.backends.skorch.fit_member`; ``net_kwargs`` trains the mode.
    n_vertices : int
        Vertices of the simplex, the mode included.
    phases : AnchorPhases
        How each vertex trains.
    init : dict of str to Tensor, optional
        A trained mode's tensors; the mode is not trained then.
    vertices : dict of str to Tensor, optional
        The simplex's vertices so far, shape ``(k, *parameter.shape)``, the mode (``init``)
        first: vertices ``k`` to ``n_vertices - 1`` are added to them (a warm refit).

    Returns
    -------
    AnchorResult
        ``log_volumes`` of the vertices added.
    """
    X = writable(X)
    phase = phase or default_phase(net_kwargs)
    net_kwargs = on_member_device(net_kwargs, phase)
    device = torch.device(net_kwargs["device"])
    with private_rng(seed, device):
        mode, epochs = start_mode(spec, net_kwargs, X, y, seed, phase.but("mode"), init)
        # Before the anchor modules freeze the mode's parameters for autograd.
        buffers = fixed_tensors(mode)
        if vertices is None:
            vertices = {n: p[None] for n, p in trainable_parameters(mode).items()}
        vertices = {n: v.to(device) for n, v in vertices.items()}
        generator = torch.Generator(device).manual_seed(seed)
        log_volumes = []
        for j in range(len(next(iter(vertices.values()))), n_vertices):
            start = initial_vertex(vertices, phases.init_scale, generator)
            module = simplex_module(mode, vertices, start, phases.n_train_samples, generator)
            label = phase.but(f"vertex {j}", phases.rates("vertex"))
            vertices, spent = train_anchors(module, net_kwargs, phases, X, y, label)
            log_volumes.append([float(module.log_volume().detach())])
            epochs += spent
    return AnchorResult(_cpu(vertices), buffers, log_volumes, epochs)


def fit_complex(
    spec: ModuleSpec,
    net_kwargs: dict,
    modes: list,
    n_connectors: int,
    phases: AnchorPhases,
    X: np.ndarray,
    y: np.ndarray,
    seed: int,
    phase: Phase | None = None,
    weighting: str = "volume",
    connectors: dict | None = None,
) -> AnchorResult:
    """Connect trained modes through shared connectors added one at a time (SPRO).

    After ``j`` connectors the complex is the union of the simplexes
    ``S(w_i, θ_0, ..., θ_{j-1})`` over the modes ``w_i``. Connector ``θ_j`` starts at the
    centroid of all anchors moved off at random (:func:`initial_vertex`) and trains with the
    others frozen on the mean criterion over points drawn uniformly over the complex
    (:class:`ComplexSampler`) minus ``λ Σ_i log V(S_i)`` over all its simplexes.

    Parameters
    ----------
    modes : list of dict of str to Tensor
        The trained modes' tensors (parameters and buffers), at least 2.
    n_connectors : int
        Connectors to add.
    weighting : {"volume", "equal"}
        How a simplex is chosen for each point (:func:`sample_complex`).
    connectors : dict of str to Tensor, optional
        Connectors trained before, shape ``(c, *parameter.shape)``: connectors ``c`` to
        ``n_connectors - 1`` are added to them (a warm refit); ``log_volumes`` then holds the
        rows of the connectors added.

    Other parameters as in :func:`fit_simplex`.

    Returns
    -------
    AnchorResult
        ``log_volumes[j]`` holds log V of each simplex after connector ``j + 1``.
    """
    X = writable(X)
    phase = phase or default_phase(net_kwargs)
    net_kwargs = on_member_device(net_kwargs, phase)
    device = torch.device(net_kwargs["device"])
    with private_rng(seed, device):
        template, _ = start_mode(spec, net_kwargs, X, y, seed, phase, modes[0])
        names, buffers = list(trainable_parameters(template)), fixed_tensors(template)
        anchors = {n: torch.stack([m[n] for m in modes]).to(device) for n in names}
        done = 0
        if connectors is not None:
            anchors = {n: torch.cat([a, connectors[n].to(device)]) for n, a in anchors.items()}
            done = len(connectors[names[0]])
        generator = torch.Generator(device).manual_seed(seed)
        log_volumes, epochs, n_modes = [], 0, len(modes)
        for j in range(done, n_connectors):
            start = initial_vertex(anchors, phases.init_scale, generator)
            anchors = {n: torch.cat([a, start[n][None]]) for n, a in anchors.items()}
            complex_ = connector_complex(n_modes, j + 1)
            module = AnchorModule(
                template, anchors, [False] * (n_modes + j) + [True], ComplexSampler(weighting),
                phases.n_train_samples, generator, complex_,
            )  # fmt: skip
            label = phase.but(f"connector {j + 1}", phases.rates("connector"))
            anchors, spent = train_anchors(module, net_kwargs, phases, X, y, label)
            log_volumes.append(complex_log_volumes(anchors, complex_).tolist())
            epochs += spent
    return AnchorResult(_cpu(anchors), buffers, log_volumes, epochs)


def fit_curve(
    spec: ModuleSpec,
    net_kwargs: dict,
    modes: list,
    curve: str,
    n_bends: int,
    phases: AnchorPhases,
    X: np.ndarray,
    y: np.ndarray,
    seed: int,
    phase: Phase | None = None,
) -> AnchorResult:
    """Connect two trained modes by a Bezier curve or a polygonal chain (Garipov et al.).

    The ``n_bends - 2`` interior bends start evenly spaced on the segment between the
    endpoints (bend ``i`` at ``i / (n_bends - 1)`` of the way, so that the initial curve is the
    segment itself, for Bezier curves as for chains) and train together with the endpoints
    frozen, on the mean criterion over ``M`` values of ``t ~ U(0, 1)`` per step
    (:class:`CurveSampler`). No volume term.

    Returns
    -------
    AnchorResult
        ``anchors`` of shape (n_bends, *shape): the endpoints first and last.
    """
    X = writable(X)
    phase = phase or default_phase(net_kwargs)
    net_kwargs = on_member_device(net_kwargs, phase)
    device = torch.device(net_kwargs["device"])
    with private_rng(seed, device):
        template, _ = start_mode(spec, net_kwargs, X, y, seed, phase, modes[0])
        names, buffers = list(trainable_parameters(template)), fixed_tensors(template)
        ends = {n: torch.stack([modes[0][n], modes[-1][n]]).to(device) for n in names}
        position = torch.linspace(0, 1, n_bends, device=device, dtype=torch.float64)
        line = torch.stack([1 - position, position], dim=1)
        anchors = {n: torch.tensordot(line.to(e.dtype), e, dims=1) for n, e in ends.items()}
        for n in names:  # the endpoints exactly as given
            anchors[n][0], anchors[n][-1] = ends[n][0], ends[n][1]
        generator = torch.Generator(device).manual_seed(seed)
        module = AnchorModule(
            template, anchors, [False] + [True] * (n_bends - 2) + [False], CurveSampler(curve),
            phases.n_train_samples, generator,
        )  # fmt: skip
        label = phase.but("curve", (("curve_lr", phases.lr),))
        anchors, epochs = train_anchors(module, net_kwargs, phases, X, y, label)
    return AnchorResult(_cpu(anchors), buffers, [], epochs)
