"""Members kept in host memory and moved to the compute device a group at a time.

A :class:`~simplexens.backends.functional.ParameterStack` of many members of a large module
may not fit on a GPU next to the activations of a batch. With a budget ``member_memory`` (in
MiB), the stacked tensors stay on the CPU (the *storage*) and every evaluation copies
consecutive groups of members, as many as the budget holds, to the compute device, evaluates
them there and drops them. Results are those of the members evaluated all at once: each
member's computation is the same, only the number of members resident at a time changes.

The cost is one host-to-device copy of every member per evaluated batch; large batches
(``working_memory``) amortise it.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Mapping
from typing import TypeVar

import torch

#: The device the members of a grouped stack are stored on.
STORAGE = torch.device("cpu")

T = TypeVar("T")


def check_member_memory(member_memory) -> float | None:
    """Check a ``member_memory`` budget: None or a positive number of MiB.

    Raises
    ------
    ValueError
        For anything else (a bool, a non-number, zero, a negative number, NaN).
    """
    if member_memory is None:
        return None
    if (
        isinstance(member_memory, bool)
        or not isinstance(member_memory, numbers.Real)
        or not member_memory > 0
    ):
        raise ValueError(
            f"member_memory must be None or a positive number of MiB, got {member_memory!r}."
        )
    return float(member_memory)


def bytes_per_member(tensors: Mapping[str, torch.Tensor]) -> int:
    """Bytes of one member's tensors in a stack (``numel * element_size`` per member)."""
    total = 0
    for t in tensors.values():
        total += (t.numel() // max(1, t.shape[0])) * t.element_size()
    return total


def members_per_group(n_members: int, member_bytes: int, member_memory: float | None) -> int:
    """How many members a group holds within ``member_memory`` MiB.

    Parameters
    ----------
    n_members : int
        Members in the stack.
    member_bytes : int
        Bytes of one member (:func:`bytes_per_member`).
    member_memory : float or None
        Budget in MiB for the members resident on the device at once; None: all.

    Returns
    -------
    int
        ``floor(member_memory * 2**20 / member_bytes)`` clipped to ``[1, n_members]``;
        ``n_members`` when the budget is None or infinite.

    Warns
    -----
    UserWarning
        When one member alone exceeds the budget: groups then hold one member each and the
        budget is not honoured.
    """
    n_members = max(1, n_members)
    if member_memory is None or math.isinf(member_memory):
        return n_members
    size = int(member_memory * 2**20 // max(1, member_bytes))
    if size < 1:
        warnings.warn(
            f"one member's tensors take {member_bytes / 2**20:.3g} MiB, more than "
            f"member_memory={member_memory} MiB; moving one member at a time to the device.",
            UserWarning,
            stacklevel=3,
        )
    return max(1, min(size, n_members))


def group_slices(n_members: int, size: int) -> list[slice]:
    """Consecutive slices of ``size`` members covering ``range(n_members)``, in order."""
    return [slice(a, min(a + size, n_members)) for a in range(0, n_members, max(1, size))]


def to_storage(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` in host memory, page-locked when it will be copied to a CUDA device (so that
    the copies can run asynchronously)."""
    t = t.to(STORAGE)
    if device.type == "cuda" and torch.cuda.is_available() and not t.is_pinned():
        t = t.pin_memory()
    return t


def on_device(
    tensors: Mapping[str, torch.Tensor], members: slice, device: torch.device
) -> dict[str, torch.Tensor]:
    """The tensors of ``members``, on ``device``.

    On the storage device itself they are views into ``tensors`` (nothing is copied).
    From page-locked memory the copies are asynchronous; kernels that read them later on
    the same stream wait for them.
    """
    return {name: t[members].to(device, non_blocking=True) for name, t in tensors.items()}


def store(
    tensors: Mapping[str, torch.Tensor],
    members: slice,
    group: Mapping[str, torch.Tensor],
    names,
) -> None:
    """Copy the tensors ``names`` of a group back into the storage, in place.

    A group that is a view into the storage (evaluated on the storage device) was updated
    in place already. The copy back to host memory is synchronous: the host may read it at
    once.

    Parameters
    ----------
    tensors : dict of str to Tensor of shape (n_members, ...)
        The stack's storage.
    members : slice
        The group's members.
    group : dict of str to Tensor of shape (n_group, ...)
        The group's tensors as evaluated (from :func:`on_device`).
    names : iterable of str
        The tensors to write back (e.g. the BatchNorm buffers).
    """
    for name in names:
        target, source = tensors[name][members], group[name]
        if source.data_ptr() != target.data_ptr() or source.device != target.device:
            target.copy_(source)


def map_groups(
    tensors: Mapping[str, torch.Tensor],
    slices: list[slice],
    device: torch.device,
    fn: Callable[[slice, dict[str, torch.Tensor]], T],
) -> list[T]:
    """``[fn(members, tensors of members on device) for members in slices]``.

    One group is resident at a time: its device tensors are made just before ``fn`` is
    called and released when it returns (unless ``fn`` keeps them), before the next group
    is copied. A loop over a generator of groups would hold the previous group in its loop
    variable while the next one is copied, twice the budget.

    Parameters
    ----------
    tensors : dict of str to Tensor of shape (n_members, ...)
        The stack's storage.
    slices : list of slice
        The groups (:func:`group_slices`).
    device : torch.device
        The compute device.
    fn : callable
        ``fn(members, group_tensors)``; its results are returned in order.

    Returns
    -------
    list
    """
    return [fn(members, on_device(tensors, members, device)) for members in slices]
