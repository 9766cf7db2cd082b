"""Ctrl-C stops a fit; skorch's EarlyStopping still only ends one member's training.

skorch's ``NeuralNet.partial_fit`` swallows ``KeyboardInterrupt``, which is also how its
``EarlyStopping`` stops a run. Each interrupt test fits in a fresh Python process, waits until
training is under way, sends it a real SIGINT and checks that ``fit`` raises
``KeyboardInterrupt`` promptly, leaves the estimator unfitted, and leaves no process behind.

The fitting process runs in a session of its own, so that its whole process group can be
signalled (what Ctrl-C in a terminal does: the parent and its loky workers all get SIGINT),
searched for leftover processes, and killed if a test fails.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import skorch
from nets import MLP
from sklearn.datasets import make_classification
from skorch.callbacks import EarlyStopping

import simplexens
from simplexens import DeepEnsembleClassifier

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads process states from /proc"
)

#: Seconds to wait for training to be under way (torch import, loky workers, first epochs).
START_TIMEOUT = 60.0
#: Seconds the fitting process may take to exit after SIGINT.
EXIT_TIMEOUT = 20.0
#: Seconds worker processes may outlive the fitting process.
ORPHAN_GRACE = 10.0
#: Seconds between "training is under way" and SIGINT, so that it lands anywhere in training,
#: not just after the marker's callback.
SIGNAL_DELAY = 0.5
#: The epoch of a net at which the marker is written: later than any short phase lasts.
MARKER_EPOCH = 5
#: Epochs (or snapshots) of the phase meant to be interrupted: minutes of training.
LONG = 10_000

_FIT_UNTIL_INTERRUPTED = r"""
import json
import os
import sys
import time

from sklearn.datasets import make_classification
from skorch.callbacks import Callback

import simplexens
from nets import MLP

config = json.loads(sys.argv[1])


class TrainingMarker(Callback):
    # When its net reaches an epoch, writes <pid>.pid into a directory, from the process that
    # trains the net (a loky worker with n_jobs > 1); then keeps working for `seconds`, as a
    # slow callback (a checkpoint writer, a remote logger) would.

    def __init__(self, directory, epoch, seconds):
        self.directory = directory
        self.epoch = epoch
        self.seconds = seconds

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == self.epoch:
            path = os.path.join(self.directory, f"{os.getpid()}.pid")
            with open(path + ".tmp", "w") as f:
                f.write(str(os.getpid()))
            os.replace(path + ".tmp", path)
            time.sleep(self.seconds)


long, short = config["long"], 2
common = dict(
    lr=0.05,
    batch_size=128,
    random_state=0,
    n_jobs=config["n_jobs"],
    verbose=config["verbose"],
    callbacks=[
        TrainingMarker(config["markers"], config["marker_epoch"], config["callback_seconds"])
    ],
)
estimator, phase = config["estimator"], config["phase"]
if estimator == "DeepEnsembleClassifier":
    clf = simplexens.DeepEnsembleClassifier(
        MLP, n_estimators=config["n_members"], max_epochs=long, **common
    )
elif estimator == "ESPROClassifier":
    # The mode trains max_epochs, then every vertex epochs_per_vertex.
    clf = simplexens.ESPROClassifier(
        MLP,
        n_modes=config["n_members"],
        n_vertices=3,
        max_epochs=long if phase == "mode" else short,
        epochs_per_vertex=long,
        **common,
    )
elif estimator == "FGEClassifier":
    # Pretraining runs max_epochs, then the cycles as many epochs as n_snapshots need.
    clf = simplexens.FGEClassifier(
        MLP,
        max_epochs=long if phase == "pretraining" else short,
        n_snapshots=long,
        cycle_length=2,
        **common,
    )
elif estimator == "SWAGClassifier":
    clf = simplexens.SWAGClassifier(
        MLP, n_modes=config["n_members"], max_epochs=long, swa_start=short, max_rank=5, **common
    )
else:
    raise SystemExit(f"unknown estimator {estimator}")

X, y = make_classification(
    n_samples=2000, n_features=20, n_informative=10, n_classes=3, random_state=0
)
try:
    clf.fit(X, y)
except KeyboardInterrupt:
    caught_at = time.time()
    state = sorted(k for k in vars(clf) if k.endswith("_"))
    print(f"INTERRUPTED fitted={bool(state)} state={state} caught_at={caught_at!r}", flush=True)
    sys.exit(130)
print(f"FINISHED epochs_spent_={clf.epochs_spent_} n_members_={clf.n_members_}", flush=True)
sys.exit(0)
"""

#: (estimator, phase the interrupt lands in): each method's own, longest phase.
CASES = [
    ("DeepEnsembleClassifier", "training"),
    ("ESPROClassifier", "vertex"),
    ("FGEClassifier", "cycles"),
    ("SWAGClassifier", "SWA"),
]


def _proc_stat(pid):
    """(state, process group) of a process, or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[2])


def _alive(pid):
    """Whether ``pid`` is a process that still runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _group_members(group):
    """PIDs of the processes of process group ``group`` that still run."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(entry.name)
            if stat is not None and stat[1] == group and stat[0] not in ("Z", "X"):
                members.append(int(entry.name))
    return members


def _marker_pids(directory):
    return sorted(int(p.stem) for p in directory.glob("*.pid"))


def _kill_group(group):
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)


def interrupt_fit(tmp_path, estimator, phase, n_jobs, target="process", **options):
    """Start a fit in a new session, SIGINT it once training is under way, collect the outcome.

    ``target`` is ``"process"`` (SIGINT to the fitting process alone) or ``"group"`` (to its
    whole process group, workers included, as Ctrl-C in a terminal). ``options`` override the
    script's configuration (``n_members``, ``verbose``, ``callback_seconds``, ``long``).
    Returns a dict with the return code and output, the seconds from start to training, from
    SIGINT to ``KeyboardInterrupt`` caught in the script and to exit, the PIDs that trained,
    and the processes still running after the grace period.
    """
    markers = tmp_path / "markers"
    markers.mkdir()
    script = tmp_path / "fit_until_interrupted.py"
    script.write_text(_FIT_UNTIL_INTERRUPTED)
    out_path = tmp_path / "output.txt"
    config = dict(
        estimator=estimator,
        phase=phase,
        n_jobs=n_jobs,
        n_members=2 if n_jobs > 1 else 4,
        verbose=0,
        markers=str(markers),
        marker_epoch=MARKER_EPOCH,
        callback_seconds=0.0,
        long=LONG,
    )
    config.update(options)
    tests_dir = str(Path(__file__).resolve().parent)
    package_root = str(Path(simplexens.__file__).resolve().parents[1])
    paths = [tests_dir, package_root, os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        # One torch thread: a thread pool on a busy machine slows these tiny networks
        # several-fold, and interrupts do not depend on it.
        "OMP_NUM_THREADS": "1",
    }
    # Markers to wait for: one per worker; FGE trains its single run in the fitting process
    # whatever n_jobs is.
    expected = 1 if estimator == "FGEClassifier" else min(n_jobs, config["n_members"])

    def output():
        return out_path.read_text() if out_path.exists() else ""

    started = time.monotonic()
    with open(out_path, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(script), json.dumps(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tests_dir,
            env=env,
            start_new_session=True,
        )
    group = proc.pid  # a session leader's pid is also its process group's id
    try:
        deadline = started + START_TIMEOUT
        while len(_marker_pids(markers)) < expected:
            if proc.poll() is not None:
                pytest.fail(f"the fit ended before training was under way:\n{output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"training not under way after {START_TIMEOUT} s:\n{output()}")
            time.sleep(0.05)
        trained_in = _marker_pids(markers)
        start_seconds = time.monotonic() - started
        if not config["callback_seconds"]:
            time.sleep(SIGNAL_DELAY)

        sent_at, sent_mono = time.time(), time.monotonic()
        if target == "group":
            os.killpg(group, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"the fit was still running {EXIT_TIMEOUT} s after SIGINT to the {target}:\n"
                f"{output()}"
            )
        exit_seconds = time.monotonic() - sent_mono

        deadline = time.monotonic() + ORPHAN_GRACE
        while True:
            survivors = sorted({p for p in trained_in if _alive(p)} | set(_group_members(group)))
            if not survivors or time.monotonic() > deadline:
                break
            time.sleep(0.1)

        text = output()
        caught_seconds = None
        for line in text.splitlines():
            if line.startswith("INTERRUPTED") and "caught_at=" in line:
                caught_seconds = float(line.rsplit("caught_at=", 1)[1]) - sent_at
        return dict(
            returncode=proc.returncode,
            output=text,
            start_seconds=start_seconds,
            caught_seconds=caught_seconds,
            exit_seconds=exit_seconds,
            trained_in=trained_in,
            survivors=survivors,
        )
    finally:
        if proc.poll() is None:
            proc.kill()
        _kill_group(group)
        proc.wait(timeout=10)


def check_interrupted(outcome):
    """The fit raised KeyboardInterrupt, kept no fitted state, and nothing outlived it."""
    caught = outcome["caught_seconds"]
    print(
        f"\ntraining under way after {outcome['start_seconds']:.2f} s; after SIGINT: "
        f"KeyboardInterrupt caught {'-' if caught is None else f'{caught:.2f}'} s, "
        f"exit {outcome['exit_seconds']:.2f} s; trained in {outcome['trained_in']}"
    )
    assert "FINISHED" not in outcome["output"], outcome["output"]
    assert "INTERRUPTED fitted=False" in outcome["output"], outcome["output"]
    assert outcome["returncode"] == 130, outcome["output"]
    assert outcome["exit_seconds"] < EXIT_TIMEOUT
    assert outcome["survivors"] == [], (
        f"processes still running {ORPHAN_GRACE} s after the fit ended: "
        f"{outcome['survivors']} (training ran in {outcome['trained_in']})"
    )


@linux_only
@pytest.mark.parametrize("n_jobs", [1, 2])
@pytest.mark.parametrize(("estimator", "phase"), CASES)
def test_sigint_stops_fit(tmp_path, estimator, phase, n_jobs):
    """SIGINT to the fitting process: fit raises KeyboardInterrupt and keeps no state."""
    check_interrupted(interrupt_fit(tmp_path, estimator, phase, n_jobs))


@linux_only
def test_sigint_to_process_group_stops_parallel_fit(tmp_path):
    """Ctrl-C in a terminal: SIGINT reaches the parent and every loky worker at once.

    Workers are dispatched alike for every estimator, so one suffices. With a progress bar
    (verbose=1), so that the manager process the workers report through is checked as well:
    it must not outlive the fit either.
    """
    outcome = interrupt_fit(
        tmp_path, "DeepEnsembleClassifier", "training", 2, target="group", verbose=1
    )
    check_interrupted(outcome)


@linux_only
def test_sigint_while_a_callback_runs_stops_fit(tmp_path):
    """Ctrl-C that arrives while a callback is working is still Ctrl-C, not a stop request.

    The callback keeps working for 2 s once training is under way (as a checkpoint writer
    or a remote logger may), and SIGINT arrives meanwhile. Taken for EarlyStopping's stop
    request, it would end only the first member's training and the fit would go on (here:
    to completion, as the members train only a few epochs more).
    """
    outcome = interrupt_fit(
        tmp_path,
        "DeepEnsembleClassifier",
        "training",
        1,
        n_members=2,
        callback_seconds=2.0,
        long=MARKER_EPOCH + 1,
    )
    check_interrupted(outcome)


def test_early_stopping_ends_each_member_not_the_fit():
    """EarlyStopping's KeyboardInterrupt is a stop request: every member trains, then stops.

    With ``threshold=10.0`` (relative) the first epoch sets the bar at ``-9 * valid_loss``,
    which no loss reaches, so the second epoch is a miss and ``patience=1`` stops there:
    2 epochs per member.
    """
    X, y = make_classification(
        n_samples=300, n_features=20, n_informative=10, n_classes=3, random_state=0
    )
    clf = DeepEnsembleClassifier(
        MLP,
        n_estimators=2,
        max_epochs=50,
        train_split=skorch.dataset.ValidSplit(0.2, random_state=0),
        callbacks=[EarlyStopping(patience=1, threshold=10.0)],
        random_state=0,
    ).fit(X, y)
    assert clf.n_members_ == 2
    assert clf.epochs_spent_ == 4
