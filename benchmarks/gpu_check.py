"""A check of simplexens on a CUDA machine: the CUDA tests, then three costs on the GPU.

1. Runs the tests that need a GPU (``pytest -k cuda``: each has ``cuda`` in its name and is
   skipped on a machine without one).
2. Times, each against a baseline measured in the same run on the same device:

   (a) one ESPRO training step (the newest vertex of a 3-vertex simplex, M = 5 points, minus
       λ log V; ``anchor_step.anchor_step``) against one plain SGD step of the same module:
       the 64-512-512-10 MLP at batch 256 and ``simplexens.datasets.SmallCNN`` on 3x32x32
       images at batch 128 (median of turns, ``espro_step.median_step_times``);
   (b) ``predict_proba`` of a ``DeepEnsembleClassifier`` of 100 members (64-512-512-10 MLP),
       and the member stack's two evaluation strategies, against a loop of plain forward
       passes over the same members (``predict.plain_members``);
   (c) BatchNorm recalibration of S = 30 samples (``recalibrate_batchnorm``) against 30
       passes of ``torch.optim.swa_utils.update_bn`` over the same batches
       (``bn_update.samples``).

Prediction and recalibration are checked against their baselines before timing (the
largest difference is printed; a mismatch makes the exit status 1, as failed tests do).
Every timed call ends with ``torch.cuda.synchronize``, so that a time covers the kernels and
not only their launch. Without CUDA it says so and exits 0. ``--device cpu`` runs the
timings alone on the CPU (a smoke test; ``--quick`` makes them smaller).

    python benchmarks/gpu_check.py [--device cuda:1] [--rounds 10] [--quick] [--skip-tests]
"""

import argparse
import copy
import os
import platform
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import torch
from anchor_step import anchor_step
from bn_update import mlp as bn_mlp
from bn_update import samples
from espro_step import median_step_times, simplex_for
from espro_step import mlp as step_mlp
from predict import data, plain_members
from torch import nn
from torch.optim.swa_utils import update_bn

from simplexens import DeepEnsembleClassifier
from simplexens.backends.batchnorm import batchnorm_layers, recalibrate_batchnorm
from simplexens.backends.functional import ParameterStack, module_tensors
from simplexens.datasets import MLP, SmallCNN

ROOT = Path(__file__).resolve().parent.parent

#: Members of the prediction case, samples of the recalibration case.
N_MEMBERS, S = 100, 30

#: Largest differences accepted by the checks: probabilities, BatchNorm statistics (relative).
PROBA_TOL, STATS_RTOL = 1e-4, 1e-3


def synced(fn, device):
    """``fn`` followed by a wait for the device, so that timing it times its kernels."""
    if device.type != "cuda":
        return fn

    def call():
        fn()
        torch.cuda.synchronize(device)

    return call


def run_cuda_tests(timeout):
    """Run the CUDA tests in a fresh interpreter; return pytest's exit status."""
    command = [sys.executable, "-m", "pytest", "-q", "-k", "cuda", "-p", "no:cacheprovider"]
    print("$ " + " ".join(command[1:]), flush=True)
    try:
        return subprocess.run(command, cwd=ROOT, timeout=timeout, check=False).returncode
    except subprocess.TimeoutExpired:
        print(f"the CUDA tests did not finish in {timeout} s")
        return 1


def row(measure, module, size, baseline, t_base, t_ours, check="-"):
    print(
        f"| {measure} | {module} | {size} | {baseline} | {t_base * 1e3:.2f} | {t_ours * 1e3:.2f} "
        f"| {t_ours / t_base:.2f} | {check} |",
        flush=True,
    )


def step_case(label, make, shape, batch, device, rounds):
    """(a) An ESPRO step against a plain step of the same module and batch."""
    generator = torch.Generator(device).manual_seed(0)
    x = torch.randn(batch, *shape, generator=generator, device=device)
    y = torch.randint(10, (batch,), generator=generator, device=device)
    module = make().to(device)
    simplex = simplex_for(module, generator)
    with torch.no_grad():
        simplex(x)  # decides the path
    optimizer = torch.optim.SGD(module.parameters(), lr=1e-3, momentum=0.9)

    def plain():
        optimizer.zero_grad()
        nn.functional.cross_entropy(module(x), y).backward()
        optimizer.step()

    steps = {"plain": plain, "espro": partial(anchor_step(simplex, True), x, y)}
    times = median_step_times({k: synced(f, device) for k, f in steps.items()}, rounds)
    path = "fused" if simplex.fused else "generic (vmap)"
    row(f"ESPRO step, {path}", label, f"batch {batch}", "plain step", times["plain"],
        times["espro"])  # fmt: skip


def predict_case(n_rows, device, rounds, n_fit=256):
    """(b) Prediction of N_MEMBERS members against a loop of plain forward passes.

    The members are trained for one epoch on ``n_fit`` rows. Returns the largest difference
    between the probabilities.
    """
    X, y = data(max(n_rows, n_fit))
    clf = DeepEnsembleClassifier(
        MLP, module__hidden=512, module__depth=2, n_estimators=N_MEMBERS, max_epochs=1,
        batch_size=n_fit, device=str(device), random_state=0,
    ).fit(X[:n_fit], y[:n_fit])  # fmt: skip
    X = X[:n_rows]
    modules = plain_members(clf)
    stack = clf.members_

    def loop():
        with torch.inference_mode():
            x = torch.from_numpy(X).to(device)
            return torch.stack([m(x).softmax(-1) for m in modules]).mean(0).cpu()

    def strategy(name):  # what predict_proba runs, without its checks and float64 average
        x = torch.from_numpy(X).to(device)
        return stack.forward(x, name).softmax(-1).mean(0).cpu()

    expected = loop().numpy()
    gap = max(
        np.abs(clf.predict_proba(X) - expected).max(),
        *(np.abs(strategy(name).numpy() - expected).max() for name in ("vmap", "loop")),
    )
    calls = {
        "loop": loop,
        "predict_proba": partial(clf.predict_proba, X),
        "vmap": partial(strategy, "vmap"),
        "stack loop": partial(strategy, "loop"),
    }
    times = median_step_times({k: synced(f, device) for k, f in calls.items()}, rounds, block=3)
    size = f"{N_MEMBERS} members, {n_rows} rows"
    check = f"{gap:.1e}"
    for name, label in [
        ("predict_proba", "predict_proba"),
        ("vmap", "stack forward, vmap"),
        ("stack loop", "stack forward, loop"),
    ]:
        row(label, "64-512-512-10 MLP", size, "loop of plain modules", times["loop"],
            times[name], check)  # fmt: skip
    return gap


def recalibration_case(label, make, shape, n_rows, device, rounds):
    """(c) BatchNorm statistics of S samples against S passes of ``update_bn``.

    Returns the largest relative difference between the statistics.
    """
    generator = torch.Generator().manual_seed(0)
    base, modules = samples(make, generator)
    base, modules = base.to(device), [m.to(device) for m in modules]
    x = torch.randn(n_rows, *shape, generator=generator).to(device)
    batches = list(x.split(128))
    stack = ParameterStack.from_members(copy.deepcopy(base), [module_tensors(m) for m in modules])

    def ours():
        recalibrate_batchnorm(stack, batches)

    def reference():
        for module in modules:
            update_bn(batches, module)

    ours()
    reference()
    gap = 0.0
    for name in batchnorm_layers(base):
        for i, module in enumerate(modules):
            for buffer in ("running_mean", "running_var"):
                theirs = getattr(module.get_submodule(name), buffer)
                mine = stack.tensors[f"{name}.{buffer}"][i]
                scale = theirs.abs().max().clamp_min(1e-6)
                gap = max(gap, float((mine - theirs).abs().max() / scale))
    calls = {"update_bn": reference, "ours": ours}
    times = median_step_times({k: synced(f, device) for k, f in calls.items()}, rounds, block=3)
    row(f"BatchNorm recalibration, S = {S}", label, f"{n_rows} rows, {len(batches)} batches",
        f"{S} x update_bn", times["update_bn"], times["ours"], f"{gap:.1e} (rel.)")  # fmt: skip
    return gap


def header(device):
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {count} CUDA device(s); "
        f"timing on {device} ({name or 'CPU'}); torch {torch.__version__} "
        f"(CUDA {torch.version.cuda}), {torch.get_num_threads()} torch threads\n"
    )


def timings(device, rounds, quick):
    """Print the table of (a), (b), (c); return whether every check agreed."""
    print(
        "| measurement | module | size | baseline | baseline ms | ours ms | ours/baseline "
        "| max difference |"
    )
    print("|---|---|---|---|---|---|---|---|")
    image = (3, 8, 8) if quick else (3, 32, 32)
    cnn_label = f"SmallCNN, {'x'.join(map(str, image))} images"
    step_case("64-512-512-10 MLP", step_mlp, (64,), 256, device, rounds)
    step_case(cnn_label, partial(SmallCNN, 10, in_channels=3), image, 128, device, rounds)
    n_rows, n_fit = (64, 32) if quick else (2000, 256)
    agree = predict_case(n_rows, device, rounds, n_fit) <= PROBA_TOL
    n_rows = 256 if quick else 2000
    bn_cnn = partial(SmallCNN, 10, in_channels=3, batchnorm=True)
    for label, make, shape in [
        (f"SmallCNN with BatchNorm, {'x'.join(map(str, image))} images", bn_cnn, image),
        ("MLP 64-256-BN-256-BN-10", bn_mlp, (64,)),
    ]:
        agree &= recalibration_case(label, make, shape, n_rows, device, rounds) <= STATS_RTOL
    return agree


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="where to time (default: cuda)")
    parser.add_argument("--rounds", type=int, default=10, help="turns of each timing")
    parser.add_argument("--quick", action="store_true", help="fewer turns, smaller inputs")
    parser.add_argument("--skip-tests", action="store_true", help="only the timings")
    parser.add_argument("--test-timeout", type=float, default=180.0, help="seconds")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            f"CUDA is not available here (torch {torch.__version__}, built with CUDA "
            f"{torch.version.cuda}): nothing to check. Use --device cpu for a smoke test."
        )
        return 0
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    status = 0
    if device.type == "cuda" and not args.skip_tests:
        status = run_cuda_tests(args.test_timeout)
        print(f"\nCUDA tests: {'passed' if status == 0 else f'FAILED (pytest exit {status})'}\n")
    header(device)
    if not timings(device, 1 if args.quick else args.rounds, args.quick):
        print("\nMISMATCH: a result differs from its baseline beyond the tolerance")
        status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
