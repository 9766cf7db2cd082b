"""Which device a member trains on, decided in the process that trains it.

``device="cuda"`` names no particular GPU. Members trained in parallel (``n_jobs > 1``, or
tasks of a Dask cluster through :func:`joblib.parallel_backend`) each resolve it in their
worker process, where the worker's own devices are visible:

1. A worker that owns one GPU trains on it: a process whose ``CUDA_VISIBLE_DEVICES`` lists
   a single device (inside the process that device is ``cuda:0``), or a dask-cuda worker
   (``LocalCUDACluster``, ``dask cuda worker``), to which dask-cuda gives a
   ``CUDA_VISIBLE_DEVICES`` that lists its own GPU first (so, again, ``cuda:0``).
2. Otherwise members go round-robin over the devices the process sees: member ``i`` on
   ``cuda:{i % torch.cuda.device_count()}``. The rule does not know ``n_jobs``: with
   ``n_jobs=1`` the members trained one after another in this process are spread over its
   GPUs in the same way.

An explicit ``cuda:k``, the CPU and other devices are kept as given. Dask worker resources
(``--resources GPU=1``) only limit how many tasks a worker runs at once; they do not say
which device, and play no part here.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Mapping

import torch


def resolve_member_device(
    device: str | torch.device,
    member_index: int,
    device_count: int | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """The device member ``member_index`` trains on in this process.

    Parameters
    ----------
    device : str or torch.device
        The estimator's ``device``, already checked by the estimator.
    member_index : int
        0-based index of the member (mode, run) being trained.
    device_count : int, optional
        Number of CUDA devices this process sees; default :func:`torch.cuda.device_count`.
    env : mapping of str to str, optional
        The process's environment variables. Default: :data:`os.environ`, and then a
        dask-cuda worker is recognised too (:func:`in_dask_cuda_worker`); a mapping given
        here is all that is read, which makes the result a pure function of the arguments.

    Returns
    -------
    str
        ``device`` with a CUDA index when it had none: the worker's own GPU
        (:func:`owned_cuda_index`) or ``cuda:{member_index % device_count}``; any other
        device unchanged.

    Raises
    ------
    ValueError
        If ``device`` is a CUDA device and this process sees no CUDA device (e.g. a Dask
        worker on a machine without a GPU), or ``cuda:k`` with ``k`` not below the number
        of devices it sees.

    Examples
    --------
    >>> [resolve_member_device("cuda", i, device_count=3, env={}) for i in range(4)]
    ['cuda:0', 'cuda:1', 'cuda:2', 'cuda:0']
    >>> resolve_member_device("cuda", 5, device_count=1, env={"CUDA_VISIBLE_DEVICES": "2"})
    'cuda:0'
    >>> resolve_member_device("cpu", 5, device_count=3)
    'cpu'
    """
    parsed = torch.device(device)
    if parsed.type != "cuda":
        return str(parsed)
    count = torch.cuda.device_count() if device_count is None else device_count
    if count < 1:
        raise ValueError(
            f"device={str(parsed)!r}, but the process training member {member_index + 1} "
            f"({_process_name()}) sees no CUDA device{_visible_note(env)}; train on "
            "workers with a GPU, or use device='cpu'."
        )
    if parsed.index is not None:
        if parsed.index >= count:
            raise ValueError(
                f"device={str(parsed)!r}, but the process training member {member_index + 1} "
                f"({_process_name()}) sees {count} CUDA device(s), cuda:0 to "
                f"cuda:{count - 1}{_visible_note(env)}."
            )
        return str(parsed)
    owned = owned_cuda_index(env)
    index = owned if owned is not None else member_index % count
    return f"cuda:{index}"


def owned_cuda_index(env: Mapping[str, str] | None = None) -> int | None:
    """The index of the one GPU this worker process owns, or None if it owns none alone.

    Parameters
    ----------
    env : mapping of str to str, optional
        The process's environment variables. Default: :data:`os.environ`, and then a
        dask-cuda worker counts as owning its first visible device; a mapping given here is
        all that is read.

    Returns
    -------
    int or None
        0 when ``CUDA_VISIBLE_DEVICES`` lists exactly one device (the process's only CUDA
        device, whatever its physical number) or, with ``env=None``, inside a dask-cuda
        worker; None otherwise (no restriction, or several devices to share).

    Examples
    --------
    >>> owned_cuda_index({"CUDA_VISIBLE_DEVICES": "3"})
    0
    >>> owned_cuda_index({"CUDA_VISIBLE_DEVICES": "0,1"}) is None
    True
    """
    live = env is None
    visible = visible_cuda_devices(os.environ if live else env)
    if visible is not None and len(visible) == 1:
        return 0
    if live and in_dask_cuda_worker():
        return 0
    return None


def visible_cuda_devices(env: Mapping[str, str]) -> list[str] | None:
    """The entries of ``CUDA_VISIBLE_DEVICES`` in ``env``, or None when it is not set.

    Parameters
    ----------
    env : mapping of str to str
        Environment variables.

    Returns
    -------
    list of str or None
        The device numbers or UUIDs listed, in order (empty entries dropped; an empty list
        hides every device).
    """
    value = env.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [entry.strip() for entry in value.split(",") if entry.strip()]


def in_dask_cuda_worker() -> bool:
    """Whether this code runs in a task of a dask-cuda worker.

    dask-cuda starts one worker per GPU and gives each a ``CUDA_VISIBLE_DEVICES`` that lists
    its own GPU first, with the others after it; such a worker carries dask-cuda's worker
    plugins. Plain Dask workers, and processes that are no Dask worker, give False.

    Returns
    -------
    bool
    """
    if "distributed" not in sys.modules:  # no Dask worker runs in this process
        return False
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:
        return False
    plugins = getattr(worker, "plugins", {}).values()
    return any(type(p).__module__.partition(".")[0] == "dask_cuda" for p in plugins)


def _process_name() -> str:
    return f"{multiprocessing.current_process().name}, pid {os.getpid()}"


def _visible_note(env: Mapping[str, str] | None) -> str:
    value = (os.environ if env is None else env).get("CUDA_VISIBLE_DEVICES")
    return "" if value is None else f" (CUDA_VISIBLE_DEVICES={value!r})"
