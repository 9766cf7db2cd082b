"""The only module that imports skorch: the nets that train each member.

Every member is an ordinary skorch :class:`~skorch.NeuralNet` built inside the worker that
trains it, from a :class:`~simplexens.backends.modules.ModuleSpec`, the estimator's skorch
arguments, and the member's seed. What comes back to the parent is small and device-free:
the trained tensors on the CPU and the number of epochs run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from skorch import NeuralNet

from .functional import module_tensors
from .modules import ModuleSpec
from .parallel import private_rng


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


def make_net(module: torch.nn.Module, net_kwargs: dict, seed: int, net_class=NeuralNet):
    """Build a skorch net around an already-built module.

    The training loader shuffles with its own generator seeded by ``seed``, unless the caller
    routed another through ``iterator_train__generator``.
    """
    kwargs = dict(net_kwargs)
    kwargs.setdefault("iterator_train__shuffle", True)
    kwargs.setdefault("iterator_train__generator", torch.Generator().manual_seed(seed))
    return net_class(module, **kwargs)


def fit_member(
    spec: ModuleSpec, net_kwargs: dict, X: np.ndarray, y: np.ndarray, seed: int
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

    Returns
    -------
    MemberResult
    """
    # joblib hands large arrays to worker processes as read-only memory maps, which torch
    # cannot wrap; one private copy per worker.
    X = np.require(X, requirements="W")
    with private_rng(seed, net_kwargs.get("device", "cpu")):
        net = make_net(spec.build(), net_kwargs, seed)
        net.fit(X, y)
    return MemberResult(cpu_tensors(net.module_), len(net.history))
