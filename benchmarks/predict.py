"""Prediction and parallel-fit speed of the shared member machinery.

Part 1 times ``predict_proba`` of a fitted ensemble against a hand-written loop of ordinary
forward passes over the same members (``torch.stack([m(X).softmax(-1) for m in members])
.mean(0)``), measured in the same run, and prints the ratio ours / loop:

- 25 members of a 64-512-512-10 MLP on 2,000 rows (compute-bound: target ratio <= 1.1);
- 50 members of a 64-32-32-10 MLP on 256 rows (overhead-bound: target >= 1.5x faster);

each with prediction batches of 128 rows (the former default: the training batch size) and
of the size ``working_memory`` chooses (the default).

Part 2 times ``fit`` with ``n_jobs=2`` against ``n_jobs=1`` (target >= 1.6x on 2 cores).

Part 3 (``--part memory``) times ``predict_proba`` of 30 members (a DeepEnsemble of a
30-64-64-2 MLP, and SWAG with 30 samples of the same MLP) on 200,000 rows, and measures the
increase of the process's peak resident memory during the call, for several batch sizes: the
former default (``iterator_valid__batch_size=128``, what the training ``batch_size`` gave),
one batch of all rows (``-1``), and batches sized by ``working_memory`` (the default, 1024
MiB, and 256 MiB). Every measurement runs in a fresh process, and the variants take turns,
``--rounds`` times; the fastest time of each is kept, and its ratio to the former default.

    python benchmarks/predict.py [--repeats 20] [--skip-fit]
    python benchmarks/predict.py --part memory [--rounds 2]
"""

import argparse
import copy
import itertools
import json
import os
import pickle
import platform
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import torch
from torch import nn

from simplexens import DeepEnsembleClassifier, SWAGClassifier
from simplexens.backends.batching import PROBE_ROWS, batch_size_for, bytes_per_row


class MLP(nn.Module):
    def __init__(self, n_features_in, n_classes, widths=(512, 512)):
        super().__init__()
        sizes = (n_features_in, *widths)
        layers = []
        for a, b in itertools.pairwise(sizes):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(sizes[-1], n_classes))

    def forward(self, x):
        return self.net(x)


def best_time(fn, repeats):
    """Fastest of ``repeats`` calls after one warm-up (the least disturbed by other load)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def data(n_rows, n_features=64, n_classes=10, seed=0):
    rng = np.random.RandomState(seed)
    return rng.randn(n_rows, n_features).astype(np.float32), rng.randint(n_classes, size=n_rows)


def fitted(widths, n_members, X, y, **params):
    clf = DeepEnsembleClassifier(
        MLP, module__widths=widths, n_estimators=n_members, max_epochs=1, random_state=0, **params
    )
    return clf.fit(X, y)


def plain_members(clf):
    """The members as ordinary modules, for the hand-written baseline."""
    modules = []
    for i in range(clf.n_members_):
        module = copy.deepcopy(clf.members_.template)
        module.load_state_dict(clf.members_.member(i))
        modules.append(module.eval())
    return modules


def predict_case(label, widths, n_members, n_rows, repeats, **params):
    X, y = data(n_rows)
    clf = fitted(widths, n_members, X, y, **params)
    modules = plain_members(clf)
    X_tensor = torch.from_numpy(X)

    def loop():
        with torch.inference_mode():
            return torch.stack([m(X_tensor).softmax(-1) for m in modules]).mean(0)

    np.testing.assert_allclose(clf.predict_proba(X), loop().numpy(), rtol=1e-4, atol=1e-6)
    ours = best_time(lambda: clf.predict_proba(X), repeats)
    base = best_time(loop, repeats)
    size = params.get("iterator_valid__batch_size")
    batch = f"{size}" if size else f"{batch_size_for(clf.members_, X)} (working_memory)"
    print(
        f"| {label} | {n_members} | {n_rows} | {batch} "
        f"| {base * 1e3:.2f} | {ours * 1e3:.2f} | {ours / base:.2f} | {base / ours:.2f}x |"
    )


def fit_case(widths, batch_size, repeats):
    """Fit time with n_jobs=1 and (warm worker pool) n_jobs=2, fastest of ``repeats``."""
    X, y = data(8000)
    params = dict(module__widths=widths, n_estimators=4, max_epochs=5, random_state=0)

    def seconds(n_jobs):
        clf = DeepEnsembleClassifier(MLP, n_jobs=n_jobs, batch_size=batch_size, **params)
        start = time.perf_counter()
        clf.fit(X, y)
        return time.perf_counter() - start

    cold = seconds(2)
    sequential = min(seconds(1) for _ in range(repeats))
    parallel = min(seconds(2) for _ in range(repeats))
    label = "-".join(map(str, (64, *widths, 10)))
    print(
        f"| {label} | {batch_size} | {sequential:.2f} | {parallel:.2f} | {cold:.2f} "
        f"| {sequential / parallel:.2f}x |"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["speed", "memory"], default="speed")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--skip-fit", action="store_true")
    parser.add_argument("--rounds", type=int, default=2, help="turns of the memory part")
    parser.add_argument("--memory-worker", nargs=3, metavar=("MODEL", "VARIANT", "OUT"))
    args = parser.parse_args()
    if args.memory_worker:
        memory_worker(*args.memory_worker)
        return
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads\n"
    )
    if args.part == "memory":
        memory_part(args.rounds)
        return
    print(
        "| members of | n members | rows | predict batch | loop ms | ours ms | ours/loop "
        "| speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|")
    big, small = (512, 512), (32, 32)
    predict_case("64-512-512-10", big, 25, 2000, args.repeats, iterator_valid__batch_size=128)
    predict_case("64-512-512-10", big, 25, 2000, args.repeats)
    predict_case("64-32-32-10", small, 50, 256, args.repeats * 5, iterator_valid__batch_size=128)
    predict_case("64-32-32-10", small, 50, 256, args.repeats * 5)
    if not args.skip_fit:
        print("\nfit: 4 members x 5 epochs, 8,000 rows; n_jobs=2 timed with its workers started")
        print("(cold: the first call, which starts them)\n")
        print("| members of | batch | n_jobs=1 s | n_jobs=2 s | n_jobs=2 cold s | speed-up |")
        print("|---|---|---|---|---|---|")
        for widths, batch_size in [((128, 128), 32), ((256, 256), 64), ((1024, 1024), 128)]:
            fit_case(widths, batch_size, repeats=3)


# ------------------------------------------------------------------ part 3: batch size and memory

MEMORY_ROWS, MEMORY_FIT_ROWS, MEMORY_FEATURES, MEMORY_MEMBERS = 200_000, 2_000, 30, 30

#: Variants of the memory part: label -> parameters set before predicting.
MEMORY_VARIANTS = {
    "former default (batch 128)": dict(iterator_valid__batch_size=128),
    "one batch (-1)": dict(iterator_valid__batch_size=-1),
    "working_memory default (1024 MiB)": {},
    "working_memory=256": dict(working_memory=256),
}


def memory_data(n_rows=MEMORY_ROWS, seed=0):
    """Two classes split by a plane, in ``MEMORY_FEATURES`` dimensions."""
    rng = np.random.RandomState(seed)
    X = rng.randn(n_rows, MEMORY_FEATURES).astype(np.float32)
    return X, (X[:, 0] + X[:, 1] > 0).astype(np.int64)


def memory_models():
    """The two fitted models of the memory part, 30 members each, by name."""
    X, y = memory_data(MEMORY_FIT_ROWS, seed=1)
    common = dict(module__widths=(64, 64), max_epochs=2, lr=0.05, random_state=0)
    deep = DeepEnsembleClassifier(MLP, n_estimators=MEMORY_MEMBERS, **common)
    swag = SWAGClassifier(
        MLP, n_predict_samples=MEMORY_MEMBERS, swa_start=1, max_rank=5, swa_lr=0.02, **common
    )
    return {"DeepEnsemble(30)": deep.fit(X, y), "SWAG(30 samples)": swag.fit(X, y)}


class PeakMemory:
    """Increase of the peak resident memory over the resident memory at the start.

    Linux resets the peak (``VmHWM``) when 5 is written to ``/proc/self/clear_refs``; where
    that is refused, a thread samples the resident memory every millisecond instead.
    """

    def __enter__(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._sampler = None
        except OSError:
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._stop, self._peak = threading.Event(), 0
        self.start = _status_bytes("VmRSS")
        if self._sampler is not None:
            self._sampler.start()
        return self

    def _sample(self):
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.wait(0.001):
            with open("/proc/self/statm") as f:
                self._peak = max(self._peak, int(f.read().split()[1]) * page)

    def __exit__(self, *exc):
        if self._sampler is None:
            self.peak = _status_bytes("VmHWM")
        else:
            self._stop.set()
            self._sampler.join()
            self.peak = max(self._peak, _status_bytes("VmRSS"))
        self.increase = self.peak - self.start


def _status_bytes(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def memory_worker(model_path, variant, out_path):
    """In a fresh process: one timed predict_proba with its peak memory; writes JSON."""
    with open(model_path, "rb") as f:
        clf = pickle.load(f)
    params = MEMORY_VARIANTS[variant]
    clf.set_params(**params)
    X, _ = memory_data()
    clf.predict_proba(X[:1000])  # warm-up: threads, allocator, lazy module copies
    rows = batch_size_for(
        clf.members_, X, params.get("iterator_valid__batch_size"), clf.working_memory
    )
    estimate = rows * bytes_per_row(clf.members_, torch.from_numpy(X[:PROBE_ROWS]))
    with PeakMemory() as memory:
        start, cpu = time.perf_counter(), time.process_time()
        proba = clf.predict_proba(X)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    np.save(out_path + ".npy", proba)
    result = dict(rows=rows, seconds=seconds, cpu=cpu, increase=memory.increase)
    with open(out_path, "w") as f:
        json.dump({**result, "estimate": estimate}, f)


def memory_part(rounds):
    print(
        f"predict_proba on {MEMORY_ROWS:,} rows x {MEMORY_FEATURES} features, "
        f"{MEMORY_MEMBERS} members of a 30-64-64-2 MLP; each call in a fresh process, "
        f"fastest of {rounds} turns (CPU s: of the same call, both threads); peak = increase "
        "of the peak resident memory during the call, lowest and highest over the turns; "
        "estimate = rows per batch x estimated bytes per row\n"
    )
    print(
        "| model | batches | rows per batch | predict s | CPU s | time / former "
        "| estimate MiB | peak increase MiB (min-max) | max peak / former |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, clf in memory_models().items():
            model_path = os.path.join(tmp, "model.pkl")
            with open(model_path, "wb") as f:
                pickle.dump(clf, f)
            results = {variant: [] for variant in MEMORY_VARIANTS}
            for _ in range(rounds):
                for variant in MEMORY_VARIANTS:
                    out = os.path.join(tmp, "result.json")
                    command = [sys.executable, __file__, "--memory-worker", model_path, variant]
                    subprocess.run([*command, out], check=True)
                    with open(out) as f:
                        results[variant].append(json.load(f))
                    results[variant][-1]["proba"] = np.load(out + ".npy")
            memory_rows(name, results)


def memory_rows(name, results):
    """Print one model's table rows, after checking all variants predict the same."""
    first = next(iter(MEMORY_VARIANTS))
    best = {v: min(runs, key=lambda r: r["seconds"]) for v, runs in results.items()}
    peaks = {v: sorted(r["increase"] / 2**20 for r in runs) for v, runs in results.items()}
    for variant, result in best.items():
        np.testing.assert_allclose(result["proba"], best[first]["proba"], rtol=1e-6, atol=1e-9)
        low, high = peaks[variant][0], peaks[variant][-1]
        print(
            f"| {name} | {variant} | {result['rows']:,} | {result['seconds']:.2f} "
            f"| {result['cpu']:.2f} | {result['seconds'] / best[first]['seconds']:.2f} "
            f"| {result['estimate'] / 2**20:.0f} | {low:.0f}-{high:.0f} "
            f"| {high / peaks[first][-1]:.2f} |"
        )


if __name__ == "__main__":
    main()
