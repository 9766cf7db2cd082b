"""Per-member seeds, private random streams, and joblib dispatch of member training.

Members are trained by top-level functions so that any joblib process backend (loky by default,
Dask or Ray through :func:`joblib.parallel_backend`) can ship them to another process. Each
member draws all its randomness from its own integer seed, so the result does not depend on
which process trained it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from joblib import Parallel, delayed

SEED_HIGH = np.iinfo(np.int32).max


def member_seeds(rng: np.random.RandomState, n: int) -> list[int]:
    """Draw one integer seed per member.

    Parameters
    ----------
    rng : numpy.random.RandomState
        The estimator's random state, from :func:`sklearn.utils.check_random_state`.
    n : int
        Number of seeds.

    Returns
    -------
    list of int
        ``n`` seeds in ``[0, 2**31 - 1)``.
    """
    return [int(s) for s in rng.randint(0, SEED_HIGH, size=n)]


@contextlib.contextmanager
def private_rng(seed: int, device: str | torch.device = "cpu") -> Iterator[None]:
    """Run a block with torch's global generators seeded by ``seed``, restored afterwards.

    Module constructors and dropout draw from torch's global generators, which library code
    must not disturb as seen by the caller. Inside this context the CPU generator (and, when
    ``device`` is a CUDA device, that device's generator) start from ``seed``; on exit they are
    put back exactly as they were.

    Parameters
    ----------
    seed : int
        Seed for the block.
    device : str or torch.device, default="cpu"
        The device whose generator is forked along with the CPU's.
    """
    device = torch.device(device)
    forked = []
    if device.type == "cuda":
        forked = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=forked):
        torch.random.default_generator.manual_seed(seed)
        for index in forked:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


def run_members(
    fn: Callable[..., Any], jobs: Iterable[Sequence[Any]], n_jobs: int | None
) -> list[Any]:
    """Call ``fn(*job)`` for every job through joblib and return the results in order.

    Parameters
    ----------
    fn : callable
        A picklable, top-level function.
    jobs : iterable of tuple
        Positional arguments of each call.
    n_jobs : int or None
        joblib's ``n_jobs``; ``None`` means 1 unless a :func:`joblib.parallel_backend` context
        says otherwise.

    Returns
    -------
    list
        ``[fn(*job) for job in jobs]``.

    Notes
    -----
    The threading backend shares torch's global generators between threads and so is not
    reproducible; use a process backend (loky, Dask, Ray).
    """
    return Parallel(n_jobs=n_jobs)(delayed(fn)(*job) for job in jobs)
