"""Prediction and parallel-fit speed of the shared member machinery.

Part 1 times ``predict_proba`` of a fitted ensemble against a hand-written loop of ordinary
forward passes over the same members (``torch.stack([m(X).softmax(-1) for m in members])
.mean(0)``), measured in the same run, and prints the ratio ours / loop:

- 25 members of a 64-512-512-10 MLP on 2,000 rows (compute-bound: target ratio <= 1.1);
- 50 members of a 64-32-32-10 MLP on 256 rows (overhead-bound: target >= 1.5x faster).

Part 2 times ``fit`` with ``n_jobs=2`` against ``n_jobs=1`` (target >= 1.6x on 2 cores).

    python benchmarks/predict.py [--repeats 20] [--skip-fit]
"""

import argparse
import copy
import itertools
import os
import platform
import time

import numpy as np
import torch
from torch import nn

from simplexens import DeepEnsembleClassifier


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
    print(
        f"| {label} | {n_members} | {n_rows} | {params.get('iterator_valid__batch_size', 128)} "
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
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--skip-fit", action="store_true")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads\n"
    )
    print(
        "| members of | n members | rows | predict batch | loop ms | ours ms | ours/loop "
        "| speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|")
    big, small = (512, 512), (32, 32)
    predict_case("64-512-512-10", big, 25, 2000, args.repeats)
    predict_case("64-512-512-10", big, 25, 2000, args.repeats, iterator_valid__batch_size=2000)
    predict_case("64-32-32-10", small, 50, 256, args.repeats * 5)
    predict_case("64-32-32-10", small, 50, 256, args.repeats * 5, iterator_valid__batch_size=256)
    if not args.skip_fit:
        print("\nfit: 4 members x 5 epochs, 8,000 rows; n_jobs=2 timed with its workers started")
        print("(cold: the first call, which starts them)\n")
        print("| members of | batch | n_jobs=1 s | n_jobs=2 s | n_jobs=2 cold s | speed-up |")
        print("|---|---|---|---|---|---|")
        for widths, batch_size in [((128, 128), 32), ((256, 256), 64), ((1024, 1024), 128)]:
            fit_case(widths, batch_size, repeats=3)


if __name__ == "__main__":
    main()
