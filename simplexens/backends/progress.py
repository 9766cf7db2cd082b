"""Progress of a fit: one tqdm bar over all members, phases and epochs, drawn by the parent.

The functions that train members receive a :class:`Progress` handle and report through it the
phases they run, the end of every epoch and, at ``verbose >= 2``, the lines of skorch's epoch
tables. The parent opens :func:`progress_bar` around :func:`~.parallel.run_members` and alone
draws the bar and prints the tables.

When joblib runs the members one after another in this process, the handle calls the parent's
display directly and table lines are printed as they come. When members run in other
processes (loky, Dask, Ray) or threads, the handle sends small messages through a queue served
by a :class:`multiprocessing.managers.SyncManager`; a thread of the parent reads them, and each
phase's table lines are held back until the phase ends, so that tables of members running at
the same time do not interleave.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from multiprocessing.managers import RebuildProxy, SyncManager
from typing import Any, TextIO

from joblib.parallel import get_active_backend
from tqdm import tqdm

__all__ = ["Progress", "progress_bar", "runs_in_process", "strip_ansi"]

# The name of the thread reading workers' messages in the parent.
LISTENER_NAME = "simplexens-progress"

# ECMA-48 control sequences (colours, cursor moves), as skorch's PrintLog writes them.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
# Seconds the listener waits on the queue before looking at its stop flag again.
_POLL = 0.05
# Seconds the listener keeps reading messages still queued after the fit ends.
_DRAIN = 2.0
# What reaching a parent that is gone or unreachable raises in a worker.
_UNREACHABLE = (OSError, EOFError, multiprocessing.ProcessError)


def strip_ansi(text: str) -> str:
    """Remove ANSI escape sequences (colours) from ``text``.

    Parameters
    ----------
    text : str
        A line, e.g. a row of skorch's epoch table with its best values coloured.

    Returns
    -------
    str
        ``text`` without escape sequences.
    """
    return _ANSI.sub("", text)


def runs_in_process(n_jobs: int | None) -> bool:
    """Whether ``joblib.Parallel(n_jobs=n_jobs)`` calls its functions here, one at a time.

    This asks the active joblib backend, as :class:`joblib.Parallel` does.
    :func:`joblib.effective_n_jobs` is not enough: it answers 1 for ``n_jobs=1`` even under
    ``joblib.parallel_backend("dask")``, whose backend ignores ``n_jobs`` and sends the calls
    to the cluster's workers.

    Parameters
    ----------
    n_jobs : int or None
        joblib's ``n_jobs``; ``None`` defers to the active backend context.

    Returns
    -------
    bool
    """
    backend, context_n_jobs = get_active_backend()
    if n_jobs is None:
        n_jobs = backend.default_n_jobs if context_n_jobs is None else context_n_jobs
    return backend.effective_n_jobs(n_jobs) == 1


class Progress:
    """A handle through which the training of members reports progress to the parent.

    Handles are made by :func:`progress_bar`; ``Progress()`` is a disabled handle, whose
    methods do nothing. A handle pickles, so it can be passed to a worker process as an
    argument; copies (``copy.deepcopy`` included) share the parent's display. Reporting never
    raises: a worker that cannot reach the parent (it has closed its bar, or the worker runs
    on another machine) stops reporting and trains on.

    Parameters
    ----------
    verbose : int, default=0
        0: report nothing; 1: phases and epochs; 2: also the lines given to :meth:`write`.
    display : optional
        The parent's display, when members are trained in the parent's process, one at a
        time. Not pickled: an unpickled copy of such a handle is disabled.
    channel : multiprocessing queue proxy, optional
        The parent's queue, when members are trained in other processes or threads.
    authkey : bytes, optional
        The key of the manager serving ``channel``.

    Notes
    -----
    ``member`` is the 0-based index of a member (or mode, or run) and ``phase`` a short name
    of the phase it runs (e.g. ``"training"``, ``"vertex 1"``, ``"SWA"``); the pair names one
    phase of the fit.
    """

    def __init__(self, verbose: int = 0, *, display=None, channel=None, authkey=None):
        self.verbose = verbose if display is not None or channel is not None else 0
        self._display = display
        self._channel = channel
        # What a worker needs to reach the parent's queue: the proxy's own pickling recipe and
        # the manager's key, which workers not started by this process do not share.
        self._remote = None if channel is None else (channel.__reduce__()[1], authkey)

    def phase_begin(self, member: int, phase: str, n_epochs: int) -> None:
        """Report that a phase of ``n_epochs`` planned epochs begins."""
        if self.verbose >= 1:
            self._send(("begin", member, phase, n_epochs))

    def epoch_end(self, member: int, phase: str) -> None:
        """Report the end of one epoch of gradient training."""
        if self.verbose >= 1:
            self._send(("epoch", member, phase))

    def phase_end(self, member: int, phase: str) -> None:
        """Report that a phase ended (also early), which prints its table lines."""
        if self.verbose >= 1:
            self._send(("end", member, phase))

    def write(self, member: int, phase: str, text: str) -> None:
        """Print one line (or several) of a phase's output under the phase's header.

        Ignored unless ``verbose >= 2``.
        """
        if self.verbose >= 2:
            self._send(("line", member, phase, text))

    def sink(self, member: int, phase: str) -> Callable[[str], None]:
        """A callable printing each string it receives with :meth:`write`.

        Suitable as the ``sink`` of skorch's ``PrintLog``.
        """
        return partial(self.write, member, phase)

    def _send(self, message: tuple) -> None:
        if self._display is not None:
            self._display.handle(message)
            return
        try:
            if self._channel is None:
                self._channel = _reach(self._remote)
            self._channel.put(message)
        except _UNREACHABLE:
            self.verbose = 0

    def __getstate__(self) -> dict:
        return {"verbose": self.verbose if self._remote else 0, "_remote": self._remote}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _display=None, _channel=None)

    def __copy__(self) -> Progress:
        return self

    def __deepcopy__(self, memo: dict) -> Progress:
        return self


def _reach(remote: tuple) -> Any:
    """Rebuild a proxy of the parent's queue in a worker, with the manager's key.

    Without a reference count: the parent keeps the queue alive as long as it listens.
    """
    (build, token, serializer, kwds), authkey = remote
    return RebuildProxy(build, token, serializer, {**kwds, "authkey": authkey, "incref": False})


def _is_terminal(file: TextIO) -> bool:
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):
        return False


def _can_encode(file: TextIO, text: str) -> bool:
    try:
        text.encode(getattr(file, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


class _Display:
    """The parent's side: the bar, the phases under way, and table lines not printed yet.

    Phases are keyed by ``(member, phase)``. A phase announces its planned epochs when it
    begins; if it runs more, the bar's total grows, and if it ends early, the total shrinks by
    what it did not run.
    """

    def __init__(self, bar: tqdm, file: TextIO, *, desc: str, n_members: int, buffered: bool):
        self.bar, self.file = bar, file
        self.desc, self.n_members, self.buffered = desc, n_members, buffered
        self.strip = not _is_terminal(file)
        self.separator = "·" if _can_encode(file, "·") else "-"
        self.lock = threading.Lock()
        self.planned: dict[tuple, int] = {}
        self.done: dict[tuple, int] = {}
        self.pending: dict[tuple, list[str]] = {}
        self.headed: set[tuple] = set()

    def label(self, key: tuple) -> str:
        member, phase = key
        return f"{self.desc} {member + 1}/{self.n_members} {self.separator} {phase}"

    def handle(self, message: tuple) -> None:
        kind, member, phase, *args = message
        with self.lock:
            getattr(self, f"_on_{kind}")((member, phase), *args)

    def _on_begin(self, key: tuple, n_epochs: int) -> None:
        self.planned[key], self.done[key] = n_epochs, 0
        self.bar.set_description_str(self.label(key))

    def _on_epoch(self, key: tuple) -> None:
        self.done[key] = self.done.get(key, 0) + 1
        if self.bar.n >= self.bar.total:
            self.bar.total = self.bar.n + 1
        self.bar.set_description_str(self.label(key), refresh=False)
        self.bar.update(1)

    def _on_end(self, key: tuple) -> None:
        unrun = self.planned.pop(key, 0) - self.done.pop(key, 0)
        if unrun > 0:
            self.bar.total = max(self.bar.n, self.bar.total - unrun)
            self.bar.refresh()
        self._flush(key)
        self.headed.discard(key)

    def _on_line(self, key: tuple, text: str) -> None:
        lines = self.pending.setdefault(key, [])
        if key not in self.headed:
            self.headed.add(key)
            lines.append(self.label(key))
        lines.append(strip_ansi(text) if self.strip else text)
        if not self.buffered:
            self._flush(key)

    def _flush(self, key: tuple) -> None:
        lines = self.pending.pop(key, None)
        if lines:
            # One write: a phase's lines stay together whatever else prints.
            self.bar.write("\n".join(lines), file=self.file)

    def close(self, completed: bool) -> None:
        """Print what is still held back and close the bar; a completed fit fills it."""
        with self.lock:
            for key in list(self.pending):
                self._flush(key)
            if completed and self.bar.n != self.bar.total:
                self.bar.total = self.bar.n
                self.bar.refresh()
            self.bar.close()


def _listen(channel: Any, display: _Display, stop: threading.Event) -> None:
    """Hand every queued message to the display until ``stop`` is set and the queue is empty.

    Gives up on messages still arriving ``_DRAIN`` seconds after ``stop`` (members that go on
    after an interrupted fit), and as soon as the manager is gone.
    """
    deadline = None
    while deadline is None or time.monotonic() < deadline:
        if deadline is None and stop.is_set():
            deadline = time.monotonic() + _DRAIN
        try:
            message = channel.get(timeout=_POLL)
        except queue.Empty:
            if deadline is not None:
                return
            continue
        except _UNREACHABLE:
            return
        display.handle(message)


def _ignore_interrupts() -> None:
    """Leave Ctrl-C to the parent, which shuts the manager down after the last messages."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _listening(display: _Display, verbose: int) -> Iterator[Progress]:
    """Serve a queue in a manager process and hand its messages to ``display`` in a thread.

    Yields a handle sending to the queue. On exit, the messages already sent are displayed,
    then the thread and the manager stop.
    """
    authkey = os.urandom(32)
    manager = SyncManager(authkey=authkey)
    manager.start(_ignore_interrupts)
    try:
        channel = manager.Queue()
        stop = threading.Event()
        listener = threading.Thread(
            target=_listen, args=(channel, display, stop), name=LISTENER_NAME, daemon=True
        )
        listener.start()
        try:
            yield Progress(verbose, channel=channel, authkey=authkey)
        finally:
            stop.set()
            listener.join(_DRAIN + 2 * _POLL)
            if listener.is_alive():
                manager.shutdown()  # breaks the listener's pending read
                listener.join(4 * _POLL)
    finally:
        manager.shutdown()


@contextlib.contextmanager
def progress_bar(
    total_epochs: int,
    verbose: int,
    n_jobs: int | None,
    *,
    n_members: int,
    desc: str = "member",
    file: TextIO | None = None,
) -> Iterator[Progress]:
    """Draw one progress bar over a fit, fed by the members wherever they train.

    Parameters
    ----------
    total_epochs : int
        Epochs the fit plans, all members and phases together. The total grows if phases run
        more, and shrinks when a phase ends early.
    verbose : int
        0: nothing (a disabled handle, no bar, no thread, no process); 1: the bar; 2: the bar
        and the lines members :meth:`~Progress.write`, each phase's under a header line.
    n_jobs : int or None
        The ``n_jobs`` the members are trained with, in the joblib context they are trained
        in; see :func:`runs_in_process`.
    n_members : int
        Number of members (modes, runs), for the labels.
    desc : str, default="member"
        What a member is called in labels: ``"{desc} 2/5 · {phase}"``.
    file : text stream, default=sys.stderr
        Where the bar and the lines go. ANSI colours are removed from the lines unless it is
        a terminal.

    Yields
    ------
    Progress
        The handle to give to each member's training.

    Notes
    -----
    When the members run elsewhere than this process, a manager process and a thread of this
    process serve their messages while the context is open. Whatever ends the context (also
    an exception or ``KeyboardInterrupt``), the messages sent are displayed, the lines held
    back are printed, and the thread, the manager and the bar are closed.
    """
    if verbose < 1:
        yield Progress()
        return
    file = sys.stderr if file is None else file
    in_process = runs_in_process(n_jobs)
    bar = tqdm(
        total=total_epochs,
        desc=desc,
        unit="epoch",
        file=file,
        dynamic_ncols=True,
        mininterval=0.05,
        miniters=1,
    )
    display = _Display(bar, file, desc=desc, n_members=n_members, buffered=not in_process)
    completed = False
    try:
        if in_process:
            yield Progress(verbose, display=display)
        else:
            with _listening(display, verbose) as progress:
                yield progress
        completed = True
    finally:
        display.close(completed)
