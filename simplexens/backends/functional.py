"""Many parameter sets of one module, held as stacked tensors and evaluated together.

Every estimator of simplexens ends as the same object: a :class:`ParameterStack`, one user
module and, for each of its parameters and buffers, a tensor whose leading axis runs over the
members (ensemble members, FGE snapshots, SWAG samples, simplex points).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

#: Above this many (rows x parameters per member) in one call, a loop of ordinary forward
#: passes beats one vectorised call on a CPU: the stacked activations leave the cache and the
#: batched matrix products run slower than plain ones. Measured in ``benchmarks/predict.py``.
VMAP_MAX_WORK = 10_000_000

#: Layers whose vectorised form is slower than a loop whatever the size: vmap turns a
#: convolution with per-member weights into one grouped convolution, slower on a CPU than the
#: members' own convolutions (``benchmarks/bn_update.py``).
LOOP_LAYERS = (nn.modules.conv._ConvNd,)


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

    Attributes
    ----------
    n_members : int
        Number of parameter sets.
    n_parameters : int
        Number of parameter values in one member.
    """

    def __init__(self, template: nn.Module, tensors: Mapping[str, torch.Tensor]):
        expected = set(module_tensors(template))
        if set(tensors) != expected:
            missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
            raise ValueError(
                f"stacked tensors do not match the module: missing {missing}, unexpected {extra}."
            )
        sizes = {t.shape[0] for t in tensors.values()}
        if len(sizes) != 1:
            raise ValueError(f"stacked tensors disagree on the member count: {sorted(sizes)}.")
        self.template = template.eval()
        self.tensors = dict(tensors)
        self._strategy: str | None = None
        self._replicas: list[nn.Module] | None = None
        self._loop_only = any(isinstance(m, LOOP_LAYERS) for m in template.modules())

    @classmethod
    def from_members(
        cls, template: nn.Module, members: Sequence[Mapping[str, torch.Tensor]], device=None
    ) -> ParameterStack:
        """Stack per-member tensor dicts (as returned by :func:`module_tensors`)."""
        device = torch.device(device) if device is not None else _device_of(template)
        names = module_tensors(template)
        stacked = {name: torch.stack([m[name] for m in members]).to(device) for name in names}
        return cls(template.to(device), stacked)

    @property
    def n_members(self) -> int:
        return next(iter(self.tensors.values())).shape[0]

    @property
    def n_parameters(self) -> int:
        names = dict(self.template.named_parameters())
        return sum(self.tensors[n][0].numel() for n in names)

    @property
    def device(self) -> torch.device:
        return next(iter(self.tensors.values())).device

    def member(self, index: int) -> dict[str, torch.Tensor]:
        """The tensors of one member, as views into the stack."""
        return {name: t[index] for name, t in self.tensors.items()}

    def forward(self, x: torch.Tensor, strategy: str = "auto") -> torch.Tensor:
        """Evaluate every member on one batch, in eval mode.

        Parameters
        ----------
        x : Tensor of shape (n_rows, ...)
            A batch on the stack's device.
        strategy : {"auto", "vmap", "loop"}, default="auto"
            ``"vmap"``: one :func:`torch.func.vmap` call over the member axis; ``"loop"``: one
            ordinary forward pass per member; ``"auto"``: :meth:`choose_strategy`. A module
            that vmap cannot run falls back to the loop, for good once the loop has
            succeeded; a batch that fails both ways raises and leaves the stack as it was.

        Returns
        -------
        Tensor of shape (n_members, n_rows, ...)
            The members' outputs.
        """
        if strategy == "auto":
            strategy = self.choose_strategy(x)
        if strategy == "loop":
            return self._forward_loop(x)
        try:
            return self._forward_vmap(x)
        except RuntimeError as exc:
            # Switch for good only if the members run one by one on this batch: a batch the
            # module cannot take at all (a wrong shape) fails here and changes nothing.
            out = self._forward_loop(x)
            self.prefer_loop()
            warnings.warn(
                f"vectorised evaluation failed ({exc}); evaluating members one by one.",
                RuntimeWarning,
                stacklevel=2,
            )
            return out

    def _forward_loop(self, x: torch.Tensor) -> torch.Tensor:
        replicas = self.replicas()  # built outside inference mode: they outlive this call
        with torch.inference_mode():
            return torch.stack([replica(x) for replica in replicas])

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

        # eval() again in case someone switched the shared template to training mode, where
        # BatchNorm would overwrite the stacked running statistics.
        self.template.eval()
        with torch.inference_mode():
            return vmap(call, in_dims=(0, None))(self.tensors, x)

    def replicas(self) -> list[nn.Module]:
        """One eval-mode module per member whose tensors are views into the stack.

        Built on first use; no parameter memory is duplicated.
        """
        if self._replicas is None:
            self._replicas = [self._replica(i) for i in range(self.n_members)]
        return self._replicas

    def _replica(self, index: int) -> nn.Module:
        replica = copy.deepcopy(self.template)
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
        self.__dict__.update(state)
        self.tensors = {k: v.to(device) for k, v in self.tensors.items()}
        self.template = self.template.to(device)


def _lookup(module: nn.Module, name: str) -> torch.Tensor:
    owner, _, leaf = name.rpartition(".")
    sub = module.get_submodule(owner) if owner else module
    return getattr(sub, leaf)


def _device_of(module: nn.Module) -> torch.device:
    first = next(iter(module_tensors(module).values()), None)
    return first.device if first is not None else torch.device("cpu")
