"""The progress bar of a fit: counts, labels and tables, from this process and from workers.

Training is simulated by :func:`train`, which reports phases, epochs and table rows as a
member's training does; the counts and rows it reports are the oracle.
"""

import copy
import io
import multiprocessing
import os
import pickle
import threading
import time

import joblib
import pytest

from simplexens.backends.progress import (
    LISTENER_NAME,
    Progress,
    progress_bar,
    runs_in_process,
    strip_ansi,
)

PHASES = (("training", 3), ("vertex 1", 2))
EPOCHS = sum(n for _, n in PHASES)
CYAN, END = "\x1b[36m", "\x1b[0m"


def row(member, phase, epoch, colour=""):
    """One table row; coloured, as skorch's PrintLog colours the best values."""
    return f"{member} | {phase} | {epoch} | {colour}0.5{END if colour else ''}"


def train(progress, member, phases=PHASES):
    """Report a member's phases, one coloured table row and one epoch at a time."""
    for phase, n_epochs in phases:
        progress.phase_begin(member, phase, n_epochs)
        sink = progress.sink(member, phase)
        for epoch in range(n_epochs):
            time.sleep(0.01)  # members running at once report in turns
            sink(row(member, phase, epoch, colour=CYAN))
            progress.epoch_end(member, phase)
        progress.phase_end(member, phase)
    return os.getpid()


def shown(text):
    """The lines as a terminal leaves them: each line's text after its last carriage return."""
    return [line.rsplit("\r", 1)[-1] for line in text.split("\n")]


def final_bar(text):
    return [line for line in shown(text) if line][-1]


def assert_tables(text, n_members, phases=PHASES):
    """Each phase's rows are printed once, together, right under their header."""
    lines = shown(text)
    for member in range(n_members):
        for phase, n_epochs in phases:
            header = f"member {member + 1}/{n_members} · {phase}"
            assert lines.count(header) == 1, header
            start = lines.index(header) + 1
            assert lines[start : start + n_epochs] == [
                row(member, phase, epoch) for epoch in range(n_epochs)
            ]


def listeners():
    return [t for t in threading.enumerate() if t.name == LISTENER_NAME]


def test_strip_ansi_removes_colours_only():
    assert strip_ansi(f"a {CYAN}0.5{END} b\x1b[1;31mc") == "a 0.5 bc"


def test_runs_in_process_agrees_with_where_joblib_runs():
    here = (os.getpid(), threading.get_ident())

    def where(n_jobs):
        calls = joblib.Parallel(n_jobs=n_jobs)(
            joblib.delayed(lambda: (os.getpid(), threading.get_ident()))() for _ in range(4)
        )
        return set(calls) == {here}

    with joblib.parallel_backend("threading", n_jobs=2):
        for n_jobs in (None, 1, 2):
            assert runs_in_process(n_jobs) == where(n_jobs)
        assert not runs_in_process(None)
    assert runs_in_process(None) and runs_in_process(1) and not runs_in_process(2)


def test_sequential_bar_counts_every_epoch_under_the_last_label():
    file = io.StringIO()
    with progress_bar(2 * EPOCHS, 1, 1, n_members=2, file=file) as progress:
        for member in range(2):
            train(progress, member)
    text = file.getvalue()
    assert "member 2/2 · vertex 1" in final_bar(text)
    assert f"{2 * EPOCHS}/{2 * EPOCHS}" in final_bar(text)
    assert "| 0.5" not in text


def test_sequential_lines_print_at_once_without_colour():
    file = io.StringIO()
    with progress_bar(EPOCHS, 2, None, n_members=1, file=file) as progress:
        progress.phase_begin(0, "training", 3)
        progress.write(0, "training", row(0, "training", 0, colour=CYAN))
        assert shown(file.getvalue())[-3:-1] == ["member 1/1 · training", row(0, "training", 0)]
    assert "\x1b" not in file.getvalue()


def test_colours_kept_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    file = Terminal()
    with progress_bar(1, 2, 1, n_members=1, file=file) as progress:
        progress.write(0, "training", row(0, "training", 0, colour=CYAN))
    assert row(0, "training", 0, colour=CYAN) in shown(file.getvalue())


def test_ascii_stream_gets_an_ascii_label():
    file = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    with progress_bar(1, 2, 1, n_members=1, desc="mode", file=file) as progress:
        train(progress, 0, phases=[("SWA", 1)])
    file.flush()
    text = file.buffer.getvalue().decode("ascii")
    assert "mode 1/1 - SWA" in shown(text)
    assert "1/1" in final_bar(text)


def test_total_grows_when_phases_run_more_epochs():
    file = io.StringIO()
    with pytest.raises(RuntimeError), progress_bar(2, 1, 1, n_members=1, file=file) as progress:
        train(progress, 0, phases=[("training", 5)])
        raise RuntimeError  # an interrupted fit's bar is not filled up: what it shows is its own
    assert "5/5" in final_bar(file.getvalue())


def test_total_shrinks_when_a_phase_stops_early():
    file = io.StringIO()
    with pytest.raises(RuntimeError), progress_bar(6, 1, 1, n_members=1, file=file) as progress:
        progress.phase_begin(0, "training", 3)
        progress.epoch_end(0, "training")
        progress.phase_end(0, "training")
        raise RuntimeError
    # 6 planned, 2 of them not run: the interrupted fit shows 1 of the remaining 4.
    assert "1/4" in final_bar(file.getvalue())


def test_queued_phases_print_together_when_they_end():
    file = io.StringIO()
    with progress_bar(2 * EPOCHS, 2, 2, n_members=2, file=file) as progress:
        # Two members report in turns, as they do when they train at the same time.
        for phase, n_epochs in PHASES:
            for member in range(2):
                progress.phase_begin(member, phase, n_epochs)
            for epoch in range(n_epochs):
                for member in range(2):
                    progress.write(member, phase, row(member, phase, epoch, colour=CYAN))
                    progress.epoch_end(member, phase)
            for member in range(2):
                progress.phase_end(member, phase)
    text = file.getvalue()
    assert_tables(text, 2)
    assert f"{2 * EPOCHS}/{2 * EPOCHS}" in final_bar(text)
    assert "\x1b" not in text


def test_pickled_handle_reports_to_the_parent():
    file = io.StringIO()
    with progress_bar(EPOCHS, 2, 2, n_members=1, file=file) as progress:
        assert copy.deepcopy(progress) is progress
        train(pickle.loads(pickle.dumps(progress)), 0)
    assert_tables(file.getvalue(), 1)
    assert f"{EPOCHS}/{EPOCHS}" in final_bar(file.getvalue())


def test_pickled_in_process_handle_is_disabled():
    with progress_bar(1, 2, 1, n_members=1, file=io.StringIO()) as progress:
        assert progress.verbose == 2
        assert pickle.loads(pickle.dumps(progress)).verbose == 0


def test_verbose_zero_writes_nothing_and_starts_nothing():
    file = io.StringIO()
    children = set(multiprocessing.active_children())
    with progress_bar(EPOCHS, 0, 2, n_members=1, file=file) as progress:
        assert not listeners()
        assert set(multiprocessing.active_children()) == children
        train(pickle.loads(pickle.dumps(progress)), 0)
        train(progress, 0)
    assert file.getvalue() == ""
    assert Progress().verbose == 0


def test_verbose_one_prints_no_lines():
    file = io.StringIO()
    with progress_bar(EPOCHS, 1, 2, n_members=1, file=file) as progress:
        train(progress, 0)
    assert "| 0.5" not in file.getvalue()
    assert f"{EPOCHS}/{EPOCHS}" in final_bar(file.getvalue())


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_error_inside_closes_thread_manager_and_bar(error):
    threads = set(threading.enumerate())
    children = set(multiprocessing.active_children())
    file = io.StringIO()
    with pytest.raises(error), progress_bar(5, 2, 2, n_members=1, file=file) as progress:
        assert len(listeners()) == 1
        (manager,) = set(multiprocessing.active_children()) - children
        progress.phase_begin(0, "training", 5)
        progress.write(0, "training", row(0, "training", 0))
        progress.epoch_end(0, "training")
        raise error
    assert not listeners()
    assert not [t for t in set(threading.enumerate()) - threads if not t.daemon]
    assert not manager.is_alive()
    # What was sent before the error is shown: the held-back row, the epoch counted.
    assert shown(file.getvalue()).count(row(0, "training", 0)) == 1
    assert "1/5" in final_bar(file.getvalue())
    # A worker still reporting after the parent closed is ignored, not failed.
    before = file.getvalue()
    progress.epoch_end(0, "training")
    assert progress.verbose == 0
    assert file.getvalue() == before


def test_loky_workers_report_every_epoch_and_whole_tables():
    file = io.StringIO()
    with progress_bar(2 * EPOCHS, 2, 2, n_members=2, file=file) as progress:
        pids = joblib.Parallel(n_jobs=2, backend="loky")(
            joblib.delayed(train)(progress, member) for member in range(2)
        )
    assert os.getpid() not in pids
    text = file.getvalue()
    assert f"{2 * EPOCHS}/{2 * EPOCHS}" in final_bar(text)
    assert_tables(text, 2)
    assert "\x1b" not in text


def test_dask_workers_report_every_epoch_and_whole_tables():
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster),
        joblib.parallel_backend("dask"),
    ):
        # n_jobs=1 too: the dask backend sends the calls to its workers all the same.
        for n_jobs in (None, 1):
            file = io.StringIO()
            with progress_bar(2 * EPOCHS, 2, n_jobs, n_members=2, file=file) as progress:
                pids = joblib.Parallel(n_jobs=n_jobs)(
                    joblib.delayed(train)(progress, member) for member in range(2)
                )
            assert os.getpid() not in pids
            assert f"{2 * EPOCHS}/{2 * EPOCHS}" in final_bar(file.getvalue())
            assert_tables(file.getvalue(), 2)


# -- through the estimators -------------------------------------------------------------------


def _estimator_fit(verbose, n_jobs, capsys):
    import sys

    import numpy as np

    sys.path.insert(0, os.path.dirname(__file__))
    from nets import MLP

    from simplexens import ESPROClassifier

    rng = np.random.RandomState(0)
    X, y = rng.rand(90, 6).astype(np.float32), np.arange(90) % 3
    clf = ESPROClassifier(
        MLP,
        n_modes=2,
        n_vertices=2,
        max_epochs=2,
        epochs_per_vertex=1,
        n_predict_samples=2,
        verbose=verbose,
        n_jobs=n_jobs,
        random_state=0,
    ).fit(X, y)
    return clf, capsys.readouterr()


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_an_estimator_shows_one_bar_over_every_member_and_phase(capsys, n_jobs):
    clf, out = _estimator_fit(1, n_jobs, capsys)
    assert out.out == ""  # nothing on stdout: no skorch tables at verbose=1
    epochs = clf.epochs_spent_  # 2 modes x (2 + 1) epochs
    assert epochs == 6
    assert f"{epochs}/{epochs}" in final_bar(out.err)
    redraws = out.err.replace("\r", "\n").split("\n")
    labels = {line.split(":")[0] for line in redraws if " · " in line}
    assert labels >= {"mode 1/2 · mode", "mode 2/2 · mode", "mode 2/2 · vertex 1"}
    assert "\x1b[" not in out.err


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_verbose_2_prints_each_phase_table_under_its_header(capsys, n_jobs):
    _, out = _estimator_fit(2, n_jobs, capsys)
    lines = shown(out.err)
    assert "\x1b[" not in out.err
    for mode in (1, 2):
        for phase, n_epochs in (("mode", 2), ("vertex 1", 1)):
            start = lines.index(f"mode {mode}/2 · {phase}")
            table = lines[start + 1 : start + 3 + n_epochs]
            assert table[0].split() == ["epoch", "train_loss", "dur"]
            assert [row.split()[0] for row in table[2:]] == [str(e + 1) for e in range(n_epochs)]


def test_verbose_0_prints_nothing(capsys):
    _, out = _estimator_fit(0, 1, capsys)
    assert out.out == "" and out.err == ""
