"""How many rows one batch of prediction or BatchNorm recalibration may hold.

Evaluating the S members of a :class:`~simplexens.backends.functional.ParameterStack` on a
batch of n rows allocates, for every row, the activations of every member. The training batch
size says nothing about that cost (it was chosen for the optimiser), and one batch of all rows
can need gigabytes. Here the cost of one row is measured on the module itself, by running it
once on a row or two, and a batch holds as many rows as a memory budget in MiB allows, as
scikit-learn does with its ``working_memory`` setting.
"""

from __future__ import annotations

import itertools
import math
import numbers
import warnings

import numpy as np
import sklearn
import torch

from .functional import ParameterStack, autocast

#: Rows the module is run on to measure the cost of one row.
PROBE_ROWS = 2

#: float64 buffers of shape (n_members, n_rows, n_classes) alive at once after the forward
#: pass: the logits cast to float64 and their log-softmax (then the log-softmax and its exp).
FLOAT64_OUTPUTS = 2


def bytes_per_row(stack: ParameterStack, sample: torch.Tensor) -> int:
    """Estimated memory, in bytes, that one input row costs when every member evaluates it.

    The stack's template module is run once on ``sample`` (in eval mode, under
    :func:`torch.inference_mode`) with a forward hook on every submodule. The estimate per
    row is::

        input + R * (module outputs) + S * n_outputs * 8 * FLOAT64_OUTPUTS

    divided by the number of rows of ``sample``, where S is the number of members, R the
    members resident on the device at once (:attr:`ParameterStack.resident_members`: S,
    or the size of a group when the stack moves its members to the device in groups: the
    activations of one group are freed before the next group runs), "module outputs" the
    bytes (``numel * element_size``) of every tensor returned by a submodule,
    each storage counted once (so the output of a container, a view such as ``Flatten`` or
    an in-place ``ReLU`` adds nothing new), and the last term the float64 logits and
    log-probabilities that prediction makes of the ``n_outputs`` values per row. The input is
    counted once: all members read the same batch.

    It is an estimate of the activations, not of what the process will allocate: workspaces
    inside operators, tensors made by functions called inside a ``forward`` (``torch.relu``
    rather than ``nn.ReLU``), the allocator's caching and fragmentation are not seen. On the
    other hand every output is counted as if it were alive until the end of the forward pass,
    whereas under inference mode a layer's output is freed once the next layer has read it.

    The template runs under the stack's ``precision`` (:func:`autocast`), so activations
    computed in bfloat16 or float16 count two bytes a value.

    Counting every resident member is right for the vectorised path
    (:meth:`ParameterStack.forward` with vmap), which holds the activations of all R members
    of a batch at once. The loop path runs one member at a time, so there the estimate is
    conservative by up to a factor R; it is kept so, because which path runs depends on the
    batch size, which this estimate decides.

    Parameters
    ----------
    stack : ParameterStack
        The members; only the template module runs. Its training flags are restored and
        its hooks removed, whether the forward pass succeeds or raises.
    sample : Tensor of shape (n_rows, ...)
        A few input rows (one or two suffice) on the stack's device.

    Returns
    -------
    int
        Bytes per row, at least 1.
    """
    template = stack.template
    n_rows = max(1, sample.shape[0])
    input_bytes = sample.numel() * sample.element_size()
    seen = {_storage_key(sample)}
    kept = []  # keeps every output alive, so that no two of them can share an address
    output_bytes = 0

    def count(module, args, output):
        nonlocal output_bytes
        for tensor in _tensors(output):
            key = _storage_key(tensor)
            if key not in seen:
                seen.add(key)
                kept.append(tensor)
                output_bytes += tensor.numel() * tensor.element_size()

    flags = {module: module.training for module in template.modules()}
    handles = [module.register_forward_hook(count) for module in flags]
    try:
        template.eval()
        with torch.inference_mode(), autocast(stack.precision, stack.device):
            out = template(sample)
    finally:
        for handle in handles:
            handle.remove()
        for module, training in flags.items():
            module.training = training
    float64_bytes = sum(t.numel() for t in _tensors(out)) * 8 * FLOAT64_OUTPUTS
    total = input_bytes + stack.resident_members * output_bytes + stack.n_members * float64_bytes
    return max(1, math.ceil(total / n_rows))


def rows_per_batch(
    stack: ParameterStack, sample: torch.Tensor, n_rows: int, working_memory=None
) -> int:
    """Rows per batch such that one batch of all members' work fits in ``working_memory``.

    Parameters
    ----------
    stack : ParameterStack
        The members that will evaluate the batches.
    sample : Tensor of shape (n_probe, ...)
        One or two input rows on the stack's device, to measure the cost of a row
        (:func:`bytes_per_row`).
    n_rows : int
        Rows to be evaluated in all: the largest useful answer.
    working_memory : float or None, default=None
        Budget in MiB for one batch; ``None`` takes ``sklearn.get_config()["working_memory"]``
        (1024 MiB unless configured otherwise).

    Returns
    -------
    int
        ``floor(working_memory * 2**20 / bytes_per_row)``, clipped to ``[1, n_rows]``.

    Warns
    -----
    UserWarning
        When even one row is estimated to exceed the budget: batches then hold one row each,
        which is slow, and the budget is not honoured. Raise ``working_memory`` or set the
        batch size explicitly.
    """
    if working_memory is None:
        working_memory = sklearn.get_config()["working_memory"]
    if (
        isinstance(working_memory, bool)
        or not isinstance(working_memory, numbers.Real)
        or not working_memory > 0
    ):
        raise ValueError(
            f"working_memory must be a positive number of MiB, got {working_memory!r}."
        )
    if n_rows <= 1:
        return 1
    if math.isinf(working_memory):  # no limit (e.g. sklearn.config_context(working_memory=inf))
        return n_rows
    row_bytes = bytes_per_row(stack, sample)
    rows = int(working_memory * 2**20 // row_bytes)
    if rows < 1:
        warnings.warn(
            f"one input row costs about {row_bytes / 2**20:.3g} MiB for the "
            f"{stack.n_members} members, more than working_memory={working_memory} MiB; "
            "evaluating one row per batch. Raise working_memory or set "
            "iterator_valid__batch_size.",
            UserWarning,
            stacklevel=2,
        )
    return max(1, min(rows, n_rows))


def batch_size_for(
    stack: ParameterStack, X: np.ndarray, batch_size=None, working_memory=None
) -> int:
    """Rows per batch for evaluating ``X``: ``batch_size`` if given, else by memory.

    Parameters
    ----------
    stack : ParameterStack
        The members.
    X : ndarray of shape (n_rows, ...)
        All the rows to evaluate; its first :data:`PROBE_ROWS` rows measure a row's cost.
    batch_size : int or None, default=None
        An explicit size (``-1``: all rows at once) that wins over ``working_memory``.
    working_memory : float or None, default=None
        See :func:`rows_per_batch`.

    Returns
    -------
    int
        At least 1, at most ``len(X)`` (unless ``len(X)`` is 0).
    """
    n_rows = len(X)
    if batch_size is not None:
        return max(1, n_rows) if batch_size == -1 else min(batch_size, max(1, n_rows))
    sample = torch.tensor(X[:PROBE_ROWS], device=stack.device)
    return rows_per_batch(stack, sample, n_rows, working_memory)


def batch_slices(n_rows: int, batch_size: int, min_rows: int = 1) -> list[slice]:
    """Consecutive slices of ``batch_size`` rows covering ``range(n_rows)``, in order.

    Parameters
    ----------
    n_rows : int
        Rows to cover.
    batch_size : int
        Rows per slice (at least 1); the last slice holds the remainder.
    min_rows : int, default=1
        No slice holds fewer rows than this unless all the rows are fewer: the batch size is
        raised to ``min_rows`` and a shorter remainder is merged into the slice before it.
        BatchNorm in training mode needs ``min_rows=2`` (one value per channel has no
        variance, and torch refuses it).

    Returns
    -------
    list of slice
    """
    step = max(batch_size, min_rows, 1)
    bounds = [*range(0, n_rows, step), n_rows]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < min_rows:
        del bounds[-2]
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


def _tensors(output):
    """The tensors in a module's output: a tensor, or tuples, lists and dicts of them."""
    if isinstance(output, torch.Tensor):
        yield output
    elif isinstance(output, (tuple, list)):
        for item in output:
            yield from _tensors(item)
    elif isinstance(output, dict):
        for item in output.values():
            yield from _tensors(item)


def _storage_key(tensor: torch.Tensor) -> tuple:
    return (tensor.device, tensor.untyped_storage().data_ptr())
