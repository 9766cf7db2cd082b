"""BatchNorm statistics recomputed for every member of a stack, in one pass over the data.

A point sampled inside a simplex (or from SWAG's Gaussian) never saw the data, so the running
statistics it inherits from a trained mode are wrong for it. The exact fix is to run the
training data through the network once with BatchNorm in training mode and a cumulative
average of the batch statistics (what :func:`torch.optim.swa_utils.update_bn` does for one
network). Here all members are run together, with one :func:`torch.func.vmap` call per batch.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn.modules.batchnorm import _BatchNorm

from .functional import ParameterStack, autocast


def batchnorm_layers(module: nn.Module) -> dict[str, _BatchNorm]:
    """The BatchNorm layers of a module that keep running statistics, by name."""
    return {
        name: m
        for name, m in module.named_modules()
        if isinstance(m, _BatchNorm) and m.track_running_stats
    }


def recalibrate_batchnorm(
    stack: ParameterStack, batches: Iterable[torch.Tensor], precision: str | None = None
) -> int:
    """Recompute every member's BatchNorm running statistics from ``batches``, in place.

    The statistics are reset and then averaged over the batches with equal weight per batch
    (momentum ``1/t`` at batch ``t``: the cumulative average, as
    :func:`torch.optim.swa_utils.update_bn` computes it). Only the BatchNorm layers run in
    training mode, so dropout stays off, as at prediction. Members are evaluated as
    :meth:`ParameterStack.choose_strategy` decides for the first batch: all at once with
    one vmap call per batch, or one after another. A grouped stack
    (:attr:`ParameterStack.is_grouped`) recalibrates one group of members at a time on its
    device, over all the batches, and writes the group's statistics back to its storage
    before the next group is copied.

    Parameters
    ----------
    stack : ParameterStack
        The members; their BatchNorm buffers are overwritten.
    batches : iterable of Tensor of shape (batch, ...)
        Training inputs on the stack's device. They are all read once per group, so they
        are kept in a list for the duration of the call.
    precision : {"float32", "bfloat16", "float16"} or None, default=None
        Autocast setting of the forward passes; None: the stack's ``precision``, so that
        the statistics describe the activations prediction computes. The running statistics
        themselves stay in their own dtype (float32).

    Returns
    -------
    int
        The number of batches seen (0 leaves the statistics reset).
    """
    layers = batchnorm_layers(stack.template)
    if not layers:
        return 0
    batches = list(batches)
    saved = {name: t.clone() for name, t in _statistics(stack, layers).items()}
    precision = stack.precision if precision is None else precision
    try:
        with autocast(precision, stack.device):
            return _recalibrate(stack, layers, batches)
    except BaseException:
        # A failed recalibration leaves the statistics as they were.
        for name, t in saved.items():
            stack.tensors[name].copy_(t)
        raise


def _recalibrate(stack: ParameterStack, layers: dict, batches: list) -> int:
    _reset(stack, layers)
    names = list(_statistics(stack, layers))
    vectorised = bool(batches) and stack.choose_strategy(batches[0]) == "vmap"
    if vectorised:

        def call(tensors, x):
            return functional_call(stack.template, tensors, (x,))

        def vectorised_group(members, tensors):
            forward = vmap(call, in_dims=(0, None))
            _average_over(layers, batches, lambda x: forward(tensors, x))
            stack.store(members, tensors, names)

        try:
            stack.map_groups(vectorised_group)
            return len(batches)
        except RuntimeError:  # a module vmap cannot run: one member after another
            _reset(stack, layers)
    if stack.is_grouped:
        stack.map_groups(functools.partial(_loop_group, stack, layers, batches, names))
    else:
        for replica in stack.replicas():
            _average_over(batchnorm_layers(replica), batches, replica)
    if vectorised:
        stack.prefer_loop()  # only now that the loop has worked
    return len(batches)


def _loop_group(stack: ParameterStack, layers: dict, batches: list, names, members, tensors):
    """Recalibrate a group one member at a time, through the template (no module copies)."""
    for j in range(members.stop - members.start):
        member = {name: t[j] for name, t in tensors.items()}
        _average_over(
            layers, batches, lambda x, m=member: functional_call(stack.template, m, (x,))
        )
    stack.store(members, tensors, names)


def _statistics(stack: ParameterStack, layers: dict) -> dict:
    names = []
    for name in layers:
        prefix = f"{name}." if name else ""
        names += [f"{prefix}{k}" for k in ("running_mean", "running_var", "num_batches_tracked")]
    return {name: stack.tensors[name] for name in names}


def _reset(stack: ParameterStack, layers: dict[str, _BatchNorm]) -> None:
    for name in layers:
        prefix = f"{name}." if name else ""  # the template may itself be a BatchNorm layer
        stack.tensors[f"{prefix}running_mean"].zero_()
        stack.tensors[f"{prefix}running_var"].fill_(1.0)
        stack.tensors[f"{prefix}num_batches_tracked"].zero_()


def _average_over(layers: dict[str, _BatchNorm], batches: list, forward) -> None:
    """Run ``forward`` on every batch with ``layers`` training at momentum 1/t; restore them."""
    saved = {name: (m.momentum, m.training) for name, m in layers.items()}
    try:
        with torch.no_grad():
            for layer in layers.values():
                layer.train()
            for seen, x in enumerate(batches, start=1):
                for layer in layers.values():
                    layer.momentum = 1.0 / seen
                forward(x)
    finally:
        for name, layer in layers.items():
            layer.momentum, training = saved[name]
            layer.train(training)
