"""Subspace inference's likelihood: several z evaluated at once through the member stack,
against one z at a time.

Elliptical slice sampling runs ``n_chains`` chains; each step evaluates every chain's
proposal, a pass over the training data each. :class:`SubspaceClassifier` evaluates them
together as one member stack; the baseline evaluates them one after the other (a stack of
one member each, as a single chain would). Both give the same log-likelihoods (checked);
the table gives the time per step and the speed-up, for a digits MLP and the BatchNorm CNN.

    python benchmarks/subspace_likelihood.py [--chains 4] [--repeats 5]
"""

import argparse
import os
import platform
import time

import numpy as np
import torch
from sklearn.datasets import load_digits

from simplexens import SubspaceClassifier
from simplexens.datasets import MLP, SmallCNN


def fitted(module, X, y, **params):
    return SubspaceClassifier(
        module, rank=5, max_epochs=6, swa_start=3, swa_lr=0.05, lr=0.1, n_predict_samples=2,
        random_state=0, **params,
    ).fit(X, y)  # fmt: skip


def log_likelihood(model, X, y):
    """The estimator's tempered log-likelihood of z, over all rows (as in fit)."""
    from simplexens._base import TrainingData

    data = TrainingData(X, np.searchsorted(model.classes_, y), model.classes_)
    data.rows = np.arange(len(X))
    return model._log_likelihood(model._fitted_space(), data, float(len(X)))


def timed(fn, repeats):
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def case(name, model, X, y, chains, repeats):
    f = log_likelihood(model, X, y)
    z = torch.randn(chains, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    together = f(z)
    apart = torch.cat([f(z[i : i + 1]) for i in range(chains)])
    torch.testing.assert_close(together, apart, rtol=1e-5, atol=1e-7)
    t_together = timed(lambda: f(z), repeats)
    t_apart = timed(lambda: [f(z[i : i + 1]) for i in range(chains)], repeats)
    print(f"| {name} | {chains} | {1e3 * t_apart:.1f} | {1e3 * t_together:.1f} | "
          f"{t_apart / t_together:.2f}x |")  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; digits, {len(X)} rows\n"
    )
    print("| module | z per step | one at a time, ms | together, ms | speed-up |")
    print("|---|---|---|---|---|")
    case("MLP (64-128-10)", fitted(MLP, X, y), X, y, args.chains, args.repeats)
    images = X.reshape(-1, 1, 8, 8)
    cnn = fitted(SmallCNN, images, y, module__batchnorm=True)
    case("SmallCNN with BatchNorm", cnn, images, y, args.chains, args.repeats)


if __name__ == "__main__":
    main()
