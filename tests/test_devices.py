"""Which device each member trains on: simplexens.backends.devices and its use by the trainers.

``device="cuda"`` is resolved in the process that trains the member: its own GPU when it
owns one, else round-robin over the GPUs it sees by member index. The assignment is tested
with given or mocked device counts (so it runs on any machine); the trainers' use of it with
a spy that maps ``"cuda"`` to the CPU; the worker side on a real Dask cluster; and on a
machine with CUDA, with real devices.
"""

import dataclasses
import importlib
import sys
from typing import ClassVar

import joblib
import numpy as np
import pytest
import torch
from nets import MLP
from numpy.testing import assert_allclose
from sklearn.datasets import make_classification
from skorch.callbacks import Callback
from torch.testing import assert_close

from simplexens import DeepEnsembleClassifier
from simplexens.backends import devices
from simplexens.backends.devices import (
    in_dask_cuda_worker,
    owned_cuda_index,
    resolve_member_device,
    visible_cuda_devices,
)
from simplexens.backends.modules import ModuleSpec
from simplexens.backends.skorch import (
    AnchorPhases,
    fit_complex,
    fit_curve,
    fit_fge,
    fit_member,
    fit_simplex,
    fit_swag,
)
from simplexens.backends.skorch import nets as skorch_nets
from simplexens.backends.skorch.nets import Phase, on_member_device

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def no_visible_devices_variable(monkeypatch):
    """This process as a worker with no CUDA_VISIBLE_DEVICES and no dask-cuda."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(devices, "in_dask_cuda_worker", lambda: False)


# --------------------------------------------------------------------------- the assignment


def test_round_robin_over_three_devices():
    resolved = [resolve_member_device("cuda", i, device_count=3, env={}) for i in range(7)]
    assert resolved == ["cuda:0", "cuda:1", "cuda:2", "cuda:0", "cuda:1", "cuda:2", "cuda:0"]
    # the same from a torch.device without an index
    assert resolve_member_device(torch.device("cuda"), 4, device_count=3, env={}) == "cuda:1"


def test_round_robin_reads_torch_device_count(monkeypatch, no_visible_devices_variable):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert [resolve_member_device("cuda", i) for i in range(7)] == [
        f"cuda:{i % 3}" for i in range(7)
    ]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert [resolve_member_device("cuda", i) for i in range(4)] == ["cuda:0", "cuda:1"] * 2


def test_explicit_cuda_index_is_kept():
    assert [resolve_member_device("cuda:1", i, device_count=3, env={}) for i in range(7)] == [
        "cuda:1"
    ] * 7
    assert resolve_member_device(torch.device("cuda", 2), 0, device_count=3, env={}) == "cuda:2"
    # even in a worker that owns one GPU: the user chose
    owner = {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert resolve_member_device("cuda:1", 5, device_count=2, env=owner) == "cuda:1"


def test_explicit_cuda_index_beyond_the_worker_devices_is_a_clear_error():
    with pytest.raises(ValueError, match=r"device='cuda:3'.* sees 3 CUDA device\(s\), cuda:0 to"):
        resolve_member_device("cuda:3", 0, device_count=3, env={})


def test_single_visible_device_worker_uses_cuda_0(monkeypatch):
    # Inside a process started with CUDA_VISIBLE_DEVICES=2, physical GPU 2 is cuda:0, and it
    # is the only one: every member goes there, whatever the count says.
    env = {"CUDA_VISIBLE_DEVICES": "2"}
    assert [resolve_member_device("cuda", i, device_count=3, env=env) for i in range(7)] == [
        "cuda:0"
    ] * 7
    assert owned_cuda_index(env) == 0
    assert owned_cuda_index({"CUDA_VISIBLE_DEVICES": " GPU-9baca7f5 , "}) == 0  # a UUID
    # the same read from this process's environment
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    monkeypatch.setattr(devices, "in_dask_cuda_worker", lambda: False)
    assert [resolve_member_device("cuda", i, device_count=3) for i in range(3)] == ["cuda:0"] * 3


def test_several_visible_devices_are_shared_round_robin():
    env = {"CUDA_VISIBLE_DEVICES": "0,2"}
    assert owned_cuda_index(env) is None
    assert owned_cuda_index({}) is None
    assert [resolve_member_device("cuda", i, device_count=2, env=env) for i in range(3)] == [
        "cuda:0",
        "cuda:1",
        "cuda:0",
    ]
    assert visible_cuda_devices(env) == ["0", "2"]
    assert visible_cuda_devices({}) is None
    assert visible_cuda_devices({"CUDA_VISIBLE_DEVICES": ""}) == []


def test_dask_cuda_worker_trains_on_its_first_visible_device(monkeypatch):
    # dask-cuda gives worker 2 of 4 CUDA_VISIBLE_DEVICES=2,3,0,1: its own GPU first.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3,0,1")
    monkeypatch.setattr(devices, "in_dask_cuda_worker", lambda: True)
    assert [resolve_member_device("cuda", i, device_count=4) for i in range(5)] == ["cuda:0"] * 5
    # A plain worker with the same variable shares the devices round-robin.
    monkeypatch.setattr(devices, "in_dask_cuda_worker", lambda: False)
    assert [resolve_member_device("cuda", i, device_count=4) for i in range(5)] == [
        f"cuda:{i % 4}" for i in range(5)
    ]
    # An explicit environment is all that is read (a pure function of the arguments).
    monkeypatch.setattr(devices, "in_dask_cuda_worker", lambda: True)
    env = {"CUDA_VISIBLE_DEVICES": "2,3,0,1"}
    assert resolve_member_device("cuda", 3, device_count=4, env=env) == "cuda:3"


def test_in_dask_cuda_worker_is_false_outside_a_worker():
    assert in_dask_cuda_worker() is False


def test_cpu_and_other_devices_are_untouched(monkeypatch):
    def no_cuda_query():
        raise AssertionError("a non-CUDA device must not query CUDA")

    monkeypatch.setattr(torch.cuda, "device_count", no_cuda_query)
    for i in range(4):
        assert resolve_member_device("cpu", i) == "cpu"
        assert resolve_member_device(torch.device("cpu"), i, env={}) == "cpu"
        assert resolve_member_device("mps", i) == "mps"


def test_cuda_without_a_device_in_the_worker_is_a_clear_error():
    # The estimator checks device="cuda" in the parent (``_check_device``); a worker on a
    # machine without a GPU (a Dask worker) is only seen here.
    with pytest.raises(ValueError, match=r"device='cuda', but the process training member 3 "):
        resolve_member_device("cuda", 2, device_count=0, env={})
    with pytest.raises(ValueError, match=r"sees no CUDA device \(CUDA_VISIBLE_DEVICES=''\)"):
        resolve_member_device("cuda:0", 0, device_count=0, env={"CUDA_VISIBLE_DEVICES": ""})


# --------------------------------------------------------------------------- the trainers

N_FEATURES, N_CLASSES = 5, 3
NET_KWARGS = dict(
    max_epochs=2,
    lr=0.05,
    batch_size=16,
    train_split=None,
    verbose=0,
    criterion=torch.nn.CrossEntropyLoss,
    optimizer=torch.optim.SGD,
)
PHASES = AnchorPhases(n_train_samples=2, volume_lambda=0.1, epochs=1, lr=0.02, schedule="constant")


@pytest.fixture(scope="module")
def small():
    X, y = make_classification(
        64, N_FEATURES, n_informative=3, n_redundant=0, n_classes=N_CLASSES, random_state=0
    )
    spec = ModuleSpec(MLP, dict(n_features_in=N_FEATURES, n_classes=N_CLASSES, hidden=8))
    return spec, X.astype(np.float32), y.astype(np.int64)


@pytest.fixture(scope="module")
def modes(small):
    spec, X, y = small
    cpu = {**NET_KWARGS, "device": "cpu"}
    return [fit_member(spec, cpu, X, y, seed).tensors for seed in (1, 2)]


def _run(trainer, spec, kwargs, X, y, modes, phase):
    seed = 7
    if trainer == "member":
        return fit_member(spec, kwargs, X, y, seed, phase).tensors
    if trainer == "fge":
        cycle = dict(alpha1=0.05, alpha2=0.01, cycle_length=1.0, n_snapshots=2)
        run = fit_fge(spec, kwargs, cycle, X, y, seed, phase)
        return {f"{i}.{n}": t for i, s in enumerate(run.snapshots) for n, t in s.items()}
    if trainer == "swag":
        swa = dict(swa_start=1, swa_lr=0.01, max_rank=2, collect_every=None, stats_device=None)
        run = fit_swag(spec, kwargs, swa, X, y, seed, phase)
        return {**run.moments.mean, **run.buffers}
    if trainer == "simplex":
        return fit_simplex(spec, kwargs, 2, PHASES, X, y, seed, phase).anchors
    if trainer == "complex":
        return fit_complex(spec, kwargs, modes, 1, PHASES, X, y, seed, phase).anchors
    no_volume = dataclasses.replace(PHASES, volume_lambda=0.0)  # curves have no volume term
    return fit_curve(spec, kwargs, modes, "bezier", 3, no_volume, X, y, seed, phase).anchors


@pytest.mark.parametrize("trainer", ["member", "fge", "swag", "simplex", "complex", "curve"])
def test_trainers_resolve_the_device_first_by_member_index(monkeypatch, small, modes, trainer):
    """Every trainer asks for its member's device once, before anything is built, and uses
    the answer everywhere: a spy that sends ``"cuda"`` to the CPU gives the CPU run's
    results bit for bit (an unresolved ``"cuda"`` left anywhere would fail on a machine
    without CUDA, or change the numbers on one with it)."""
    spec, X, y = small
    expected = _run(trainer, spec, {**NET_KWARGS, "device": "cpu"}, X, y, modes, None)
    calls = []

    def spy(device, member_index):
        calls.append((str(device), member_index))
        return "cpu"

    monkeypatch.setattr(skorch_nets, "resolve_member_device", spy)
    phase = Phase("Test", 4, 6, "training", (("lr", 0.05),))
    result = _run(trainer, spec, {**NET_KWARGS, "device": "cuda"}, X, y, modes, phase)
    assert calls == [("cuda", 4)]
    assert list(result) == list(expected)
    for name, t in result.items():
        assert t.device.type == "cpu", name  # returned on the CPU, as before
        assert_close(t, expected[name], rtol=0, atol=0, msg=name)


def test_on_member_device_keeps_the_other_arguments(no_visible_devices_variable, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    kwargs = {**NET_KWARGS, "device": "cuda"}
    resolved = on_member_device(kwargs, Phase("Test", 3, 4))
    assert resolved == {**NET_KWARGS, "device": "cuda:1"}
    assert kwargs["device"] == "cuda"  # the caller's dict is not changed
    assert on_member_device(NET_KWARGS, None)["device"] == "cpu"  # skorch's default


def test_trainer_in_a_worker_without_cuda_raises_before_training(monkeypatch, small):
    spec, X, y = small
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(spec, "build", lambda: pytest.fail("built a module"))
    with pytest.raises(ValueError, match="sees no CUDA device"):
        fit_member(spec, {**NET_KWARGS, "device": "cuda"}, X, y, 0, Phase("Test", 1, 2))


# --------------------------------------------------------------------------- a Dask cluster


@pytest.fixture(scope="module")
def dask_client():
    """Two worker processes that see CUDA_VISIBLE_DEVICES=1 (this process does not)."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            env={"CUDA_VISIBLE_DEVICES": "1"},
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def test_dask_workers_fit_as_one_process_does(dask_client):
    import distributed

    X, y = make_classification(200, 8, n_informative=5, n_classes=3, random_state=0)
    X = X.astype(np.float32)
    params = dict(n_estimators=2, max_epochs=2, device="cpu", random_state=0)
    expected = DeepEnsembleClassifier(MLP, n_jobs=1, **params).fit(X, y).predict_proba(X)
    with joblib.parallel_backend("dask"), distributed.get_task_stream(dask_client) as tasks:
        clf = DeepEnsembleClassifier(MLP, n_jobs=2, **params).fit(X, y)
    assert len({task["worker"] for task in tasks.data}) == 2  # trained on both workers
    assert_allclose(clf.predict_proba(X), expected, rtol=1e-5, atol=1e-6)


def test_dask_worker_resolves_with_its_own_environment(dask_client, no_visible_devices_variable):
    # Here: no CUDA_VISIBLE_DEVICES, so member 5 of 4 devices goes round-robin to cuda:1; in
    # a worker started with CUDA_VISIBLE_DEVICES=1 its only device is cuda:0.
    assert resolve_member_device("cuda", 5, device_count=4) == "cuda:1"
    in_worker = dask_client.submit(resolve_member_device, "cuda", 5, 4, pure=False)
    assert in_worker.result() == "cuda:0"
    # a plain Dask worker is not a dask-cuda worker
    assert dask_client.submit(in_dask_cuda_worker, pure=False).result() is False


FAKE_DASK_CUDA = """
from distributed import WorkerPlugin


class CPUAffinity(WorkerPlugin):
    \"\"\"Stands for one of the plugins dask-cuda gives its workers.\"\"\"
"""


def _on_path(path, present):
    """Put ``path`` on a worker's import path, or take it (and what came from it) away."""
    if present:
        sys.path.insert(0, path)
    else:
        sys.path.remove(path)
        sys.modules.pop("dask_cuda", None)
    importlib.invalidate_caches()


def test_dask_worker_with_rapids_gpu_plugins_is_recognised(dask_client, tmp_path, monkeypatch):
    # dask-cuda is not installed here: a package of that name holding a worker plugin, on
    # the workers' path, shows that detection reads the plugins of the worker it runs in.
    (tmp_path / "dask_cuda").mkdir()
    (tmp_path / "dask_cuda" / "__init__.py").write_text(FAKE_DASK_CUDA)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "dask_cuda", raising=False)
    import dask_cuda

    dask_client.run(_on_path, str(tmp_path), True)
    try:
        dask_client.register_plugin(dask_cuda.CPUAffinity(), name="fake-dask-cuda")
        assert dask_client.submit(in_dask_cuda_worker, pure=False).result() is True
        dask_client.unregister_worker_plugin("fake-dask-cuda")
    finally:
        dask_client.run(_on_path, str(tmp_path), False)
        sys.modules.pop("dask_cuda", None)
    assert dask_client.submit(in_dask_cuda_worker, pure=False).result() is False


# --------------------------------------------------------------------------- real GPUs


class _RecordDevice(Callback):
    #: A class attribute: skorch deep-copies the callback instances.
    seen: ClassVar[list] = []

    def on_train_begin(self, net, **kwargs):
        _RecordDevice.seen.append(str(next(net.module_.parameters()).device))


@CUDA
def test_cuda_member_trains_on_its_round_robin_device(small, no_visible_devices_variable):
    spec, X, y = small
    count = torch.cuda.device_count()
    _RecordDevice.seen.clear()
    for member in range(count + 1):
        kwargs = {**NET_KWARGS, "device": "cuda", "callbacks": [_RecordDevice()]}
        result = fit_member(spec, kwargs, X, y, 0, Phase("Test", member, count + 1))
        assert all(t.device.type == "cpu" for t in result.tensors.values())
    assert _RecordDevice.seen == [f"cuda:{i % count}" for i in range(count + 1)]


@CUDA
def test_cuda_parallel_members_match_sequential(small_digits):
    X, y = small_digits
    params = dict(n_estimators=2, max_epochs=2, lr=0.1, batch_size=64, device="cuda")
    sequential = DeepEnsembleClassifier(MLP, random_state=0, n_jobs=1, **params).fit(X, y)
    parallel = DeepEnsembleClassifier(MLP, random_state=0, n_jobs=2, **params).fit(X, y)
    assert_allclose(
        parallel.predict_member_proba(X), sequential.predict_member_proba(X), rtol=1e-4, atol=1e-5
    )
