"""Many parameter sets of one module, held as stacked tensors and evaluated together.

Every estimator of simplexens ends as the same object: a :class:`ParameterStack`, one user
module and, for each of its parameters and buffers, a tensor whose leading axis runs over the
members (ensemble members, FGE snapshots, SWAG samples, simplex points).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from . import groups as _groups

#: Above this many (rows x parameters per member) in one call, a loop of ordinary forward
#: passes beats one vectorised call on a CPU: the stacked activations leave the cache and the
#: batched matrix products run slower than plain ones. Measured in ``benchmarks/predict.py``.
VMAP_MAX_WORK = 10_000_000

#: Layers whose vectorised form is slower than a loop whatever the size: vmap turns a
#: convolution with per-member weights into one grouped convolution, slower on a CPU than the
#: members' own convolutions (``benchmarks/bn_update.py``).
LOOP_LAYERS = (nn.modules.conv._ConvNd,)

#: The settings of ``precision``: the dtype :func:`torch.autocast` computes in (None: no
#: autocast, every operation in the tensors' own dtype).
PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a ``precision`` setting (None for ``"float32"``).

    Raises
    ------
    ValueError
        If ``precision`` is not one of :data:`PRECISIONS`.
    """
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}."
        )
    return PRECISIONS[precision]


def autocast(precision: str, device) -> contextlib.AbstractContextManager:
    """A context in which the forward passes run at ``precision`` on ``device``.

    Parameters
    ----------
    precision : {"float32", "bfloat16", "float16"}
        ``"float32"``: no autocast (a null context: every operation runs in its tensors'
        dtype, as without this setting). Otherwise :func:`torch.autocast` with that dtype:
        matrix products and convolutions run in it, reductions, softmax, losses and
        normalisations in float32, and float64 operations are never cast.
    device : str or torch.device
        The device the computation runs on (its type chooses the autocast backend).

    Returns
    -------
    context manager

    Raises
    ------
    ValueError
        For an unknown ``precision`` or a device type without autocast.
    """
    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    device_type = torch.device(device).type
    if not torch.amp.is_autocast_available(device_type):
        raise ValueError(f"precision={precision!r} needs autocast, which {device_type} lacks.")
    return torch.autocast(device_type, dtype=dtype)


def module_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """Return a module's parameters and buffers by name, detached."""
    named = dict(module.named_parameters())
    named.update(module.named_buffers())
    return {name: t.detach() for name, t in named.items()}


class ParameterStack:
    """Parameter sets of one module, stacked along a leading member axis.

    Parameters
    ----------
    template : nn.Module
        The module whose structure every member shares. It is kept in eval mode on the
        stack's device; its own values are never used.
    tensors : dict of str to Tensor
        For each name of ``module_tensors(template)``, a tensor of shape
        ``(n_members, *shape)``.
    device : str, torch.device or None, default=None
        The device the members are evaluated on (inputs go there, outputs come from there).
        None: the device ``tensors`` are on, the template staying where it is. Given, the
        template is moved there, and so are the tensors unless they are grouped.
    member_memory : float or None, default=None
        Budget in MiB for the members' tensors resident on ``device`` at once. None, or a
        budget all members fit in: all of them live on ``device``. Otherwise they are stored
        on the CPU (:attr:`storage`, page-locked for a CUDA device) and every evaluation
        copies consecutive groups of as many members as the budget holds
        (:mod:`~simplexens.backends.groups`). Results are the same either way. The
        template (one member's worth, never evaluated with its own values) stays on
        ``device`` in both cases.
    precision : {"float32", "bfloat16", "float16"}, default="float32"
        The default of :meth:`forward`'s ``precision``: ``"float32"`` computes as the
        tensors are (no autocast), the others under :func:`torch.autocast` in that dtype.

    Attributes
    ----------
    n_members : int
        Number of parameter sets.
    n_parameters : int
        Number of parameter values in one member.
    """

    def __init__(
        self,
        template: nn.Module,
        tensors: Mapping[str, torch.Tensor],
        *,
        device=None,
        member_memory=None,
        precision: str = "float32",
    ):
        expected = set(module_tensors(template))
        if set(tensors) != expected:
            missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
            raise ValueError(
                f"stacked tensors do not match the module: missing {missing}, unexpected {extra}."
            )
        sizes = {t.shape[0] for t in tensors.values()}
        if len(sizes) != 1:
            raise ValueError(f"stacked tensors disagree on the member count: {sorted(sizes)}.")
        autocast_dtype(precision)
        self.member_memory = _groups.check_member_memory(member_memory)
        self.precision = precision
        self._device = torch.device(device) if device is not None else _first_device(tensors)
        self.template = template.eval() if device is None else template.to(self._device).eval()
        self.tensors = self._place(dict(tensors))
        self._strategy: str | None = None
        self._replicas: list[nn.Module] | None = None
        self._loop_only = any(isinstance(m, LOOP_LAYERS) for m in template.modules())

    @classmethod
    def from_members(
        cls,
        template: nn.Module,
        members: Sequence[Mapping[str, torch.Tensor]],
        device=None,
        *,
        member_memory=None,
        precision: str = "float32",
    ) -> ParameterStack:
        """Stack per-member tensor dicts (as returned by :func:`module_tensors`).

        Parameters
        ----------
        template : nn.Module
            The members' module.
        members : sequence of dict of str to Tensor
            One dict of tensors per member, on any device.
        device : str, torch.device or None, default=None
            The compute device; None: the template's.
        member_memory : float or None, default=None
            See :class:`ParameterStack`. Members that do not fit in it are stacked on the
            CPU and never all copied to ``device`` at once.
        precision : {"float32", "bfloat16", "float16"}, default="float32"
            See :class:`ParameterStack`.
        """
        device = torch.device(device) if device is not None else _device_of(template)
        names = module_tensors(template)
        stacked = {name: torch.stack([m[name] for m in members]) for name in names}
        return cls(
            template, stacked, device=device, member_memory=member_memory, precision=precision
        )

    def _place(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The tensors where the stack keeps them, and its group size decided.

        On the compute device when they fit in ``member_memory`` (or it is None), else on
        the CPU storage.
        """
        n_members = next(iter(tensors.values())).shape[0]
        self._group_size = _groups.members_per_group(
            n_members, _groups.bytes_per_member(tensors), self.member_memory
        )
        self._grouped = self._group_size < n_members
        if not self._grouped:
            return {name: t.to(self._device) for name, t in tensors.items()}
        return {name: _groups.to_storage(t, self._device) for name, t in tensors.items()}

    @property
    def n_members(self) -> int:
        return next(iter(self.tensors.values())).shape[0]

    @property
    def n_parameters(self) -> int:
        names = dict(self.template.named_parameters())
        return sum(self.tensors[n][0].numel() for n in names)

    @property
    def device(self) -> torch.device:
        """The device members are evaluated on: inputs must be there."""
        return self._device

    @property
    def storage(self) -> torch.device:
        """The device the stacked tensors live on: :attr:`device`, or the CPU when grouped."""
        return _first_device(self.tensors)

    @property
    def is_grouped(self) -> bool:
        """Whether the members are evaluated a group at a time (``member_memory`` too small
        for all of them)."""
        return self._grouped

    @property
    def resident_members(self) -> int:
        """The most members whose tensors and activations are on the device at once."""
        return min(self._group_size, self.n_members)

    def groups(self) -> list[slice]:
        """The groups of members evaluated together, as slices of the member axis."""
        size = self._group_size if self.is_grouped else self.n_members
        return _groups.group_slices(self.n_members, size)

    def map_groups(self, fn):
        """``[fn(members, tensors) for each group]``, the group's tensors on :attr:`device`.

        Not grouped: one call with all members and :attr:`tensors` themselves. Grouped: one
        call per group with copies (views when the device is the storage) that are released
        before the next group is copied. See :func:`~simplexens.backends.groups.map_groups`.
        """
        if not self.is_grouped:
            return [fn(slice(0, self.n_members), self.tensors)]
        return _groups.map_groups(self.tensors, self.groups(), self._device, fn)

    def store(self, members: slice, group: Mapping[str, torch.Tensor], names) -> None:
        """Write the tensors ``names`` of a group evaluated by :meth:`map_groups` back into
        the stack (e.g. BatchNorm statistics updated on the device)."""
        _groups.store(self.tensors, members, group, names)

    def member(self, index: int, device=None) -> dict[str, torch.Tensor]:
        """The tensors of one member.

        Parameters
        ----------
        index : int
            The member.
        device : str, torch.device or None, default=None
            None: views into the stack, on :attr:`storage`. Else copies on ``device``
            (views when it is the storage device).
        """
        if device is None:
            return {name: t[index] for name, t in self.tensors.items()}
        return {name: t[index].to(device) for name, t in self.tensors.items()}

    def forward(
        self, x: torch.Tensor, strategy: str = "auto", precision: str | None = None
    ) -> torch.Tensor:
        """Evaluate every member on one batch, in eval mode.

        Parameters
        ----------
        x : Tensor of shape (n_rows, ...)
            A batch on the stack's device.
        strategy : {"auto", "vmap", "loop"}, default="auto"
            ``"vmap"``: one :func:`torch.func.vmap` call over the member axis (per group);
            ``"loop"``: one ordinary forward pass per member; ``"auto"``:
            :meth:`choose_strategy`. A module that vmap cannot run falls back to the loop,
            for good once the loop has succeeded; a batch that fails both ways raises and
            leaves the stack as it was.
        precision : {"float32", "bfloat16", "float16"} or None, default=None
            Run the members under :func:`autocast` in this dtype; None: the stack's
            :attr:`precision`. Outputs computed in a lower precision are cast back to the
            dtype of the members' parameters.

        Returns
        -------
        Tensor of shape (n_members, n_rows, ...)
            The members' outputs, on the stack's device.
        """
        if strategy == "auto":
            strategy = self.choose_strategy(x)
        precision = self.precision if precision is None else precision
        with autocast(precision, self._device):
            if strategy == "loop":
                return self._full_precision(self._forward_loop(x), precision)
            try:
                return self._full_precision(self._forward_vmap(x), precision)
            except RuntimeError as exc:
                # Switch for good only if the members run one by one on this batch: a batch
                # the module cannot take at all (a wrong shape) fails here and changes nothing.
                out = self._forward_loop(x)
                self.prefer_loop()
                warnings.warn(
                    f"vectorised evaluation failed ({exc}); evaluating members one by one.",
                    RuntimeWarning,
                    stacklevel=2,
                )
                return self._full_precision(out, precision)

    def _full_precision(self, out: torch.Tensor, precision: str) -> torch.Tensor:
        """Outputs computed under autocast, cast back to the members' parameter dtype."""
        low = autocast_dtype(precision)
        if low is None or out.dtype != low:
            return out
        dtype = next((t.dtype for t in self.tensors.values() if t.is_floating_point()), low)
        return out.to(dtype)

    def _forward_loop(self, x: torch.Tensor) -> torch.Tensor:
        if not self.is_grouped:
            replicas = self.replicas()  # built outside inference mode: they outlive this call
            with torch.inference_mode():
                return torch.stack([replica(x) for replica in replicas])
        self.template.eval()

        def run(members, tensors):
            # One functional call per member: no module copy per member on the device.
            return [
                functional_call(self.template, {n: t[j] for n, t in tensors.items()}, (x,))
                for j in range(members.stop - members.start)
            ]

        with torch.inference_mode():
            return torch.stack([out for part in self.map_groups(run) for out in part])

    def prefer_loop(self) -> None:
        """Evaluate members one by one from now on (after vmap failed on the module)."""
        self._strategy = "loop"

    def choose_strategy(self, x: torch.Tensor) -> str:
        """``"vmap"`` where it beats a loop on a CPU, else ``"loop"``.

        vmap while ``n_rows * n_parameters <= VMAP_MAX_WORK`` and the module has no
        convolution (``LOOP_LAYERS``) and vmap has not failed on it before.
        """
        small = x.shape[0] * self.n_parameters <= VMAP_MAX_WORK
        vectorisable = not self._loop_only and self._strategy != "loop"
        return "vmap" if small and vectorisable else "loop"

    def _forward_vmap(self, x: torch.Tensor) -> torch.Tensor:
        def call(tensors, batch):
            return functional_call(self.template, tensors, (batch,))

        def run(members, tensors):
            return vmap(call, in_dims=(0, None))(tensors, x)

        # eval() again in case someone switched the shared template to training mode, where
        # BatchNorm would overwrite the stacked running statistics.
        self.template.eval()
        with torch.inference_mode():
            parts = self.map_groups(run)
            return parts[0] if len(parts) == 1 else torch.cat(parts)

    def replicas(self) -> list[nn.Module]:
        """One eval-mode module per member whose tensors are views into the stack.

        Built on first use; no parameter memory is duplicated. They live on :attr:`storage`
        (the CPU for a grouped stack).
        """
        if self._replicas is None:
            self._replicas = [self._replica(i) for i in range(self.n_members)]
        return self._replicas

    def _replica(self, index: int) -> nn.Module:
        replica = copy.deepcopy(self.template)
        if self.is_grouped:
            replica = replica.to(self.storage)
        views = self.member(index)
        for name in module_tensors(replica):
            # `.data` swaps storage in place, so tied parameters stay tied.
            _lookup(replica, name).data = views[name]
        return replica.eval()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_replicas"] = None
        state["tensors"] = {k: v.cpu() for k, v in self.tensors.items()}
        state["template"] = copy.deepcopy(self.template).cpu()
        state["_device"] = str(self.device)
        return state

    def __setstate__(self, state):
        device = torch.device(state.pop("_device"))
        if device.type == "cuda" and not torch.cuda.is_available():
            warnings.warn(
                f"parameters were saved on {device}, which is not available; loading on the CPU.",
                RuntimeWarning,
                stacklevel=2,
            )
            device = torch.device("cpu")
        state.setdefault("member_memory", None)  # stacks pickled before these settings
        state.setdefault("precision", "float32")
        self.__dict__.update(state)
        self._device = device
        self.template = self.template.to(device)
        self.tensors = self._place(self.tensors)


def _lookup(module: nn.Module, name: str) -> torch.Tensor:
    owner, _, leaf = name.rpartition(".")
    sub = module.get_submodule(owner) if owner else module
    return getattr(sub, leaf)


def _first_device(tensors: Mapping[str, torch.Tensor]) -> torch.device:
    first = next(iter(tensors.values()), None)
    return first.device if first is not None else torch.device("cpu")


def _device_of(module: nn.Module) -> torch.device:
    first = next(iter(module_tensors(module).values()), None)
    return first.device if first is not None else torch.device("cpu")
