"""Predictive quality at a training budget: single network, deep ensembles, ESPRO, FGE, SWAG.

scikit-learn's digits, split 75/25 with random_state 0, inputs scaled to [0, 1]; an MLP
64-128-128-10 trained with SGD (momentum 0.9, weight decay 5e-4), modes at lr 0.05 and
simplex vertices at lr 0.01 as in the paper. Test accuracy, NLL, Brier score and ECE, and
``epochs_spent_`` (passes over the training data), each the mean (± standard deviation)
over several seeds.

Claims to check: ESPRO beats the deep ensemble with the same number of modes, at a small
extra cost (Benton et al. 2021), and how it compares with a deep ensemble given the same
number of epochs; FGE beats a single network trained for the same epochs (Garipov et al.
2018); SWAG's NLL and ECE beat the SWA point and plain SGD (Maddox et al. 2019).

    python benchmarks/quality.py [--seeds 3] [--epochs 20]
"""

import argparse
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from simplexens import DeepEnsembleClassifier, ESPROClassifier, FGEClassifier, SWAGClassifier
from simplexens.metrics import evaluate

METRICS = ("accuracy", "nll", "brier", "ece")


class MLP(nn.Module):
    def __init__(self, n_features_in, n_classes, hidden=128):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_features_in, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x):
        return self.net(x)


def models(epochs):
    """Name -> factory(seed) of each compared model.

    ESPRO's 3 modes of ``epochs`` epochs each grow 2 vertices of ``e`` epochs: 3 (epochs + 2e)
    epochs in all; the same-budget deep ensemble trains its 3 members for epochs + 2e each.
    """
    common = dict(lr=0.05, optimizer__momentum=0.9, optimizer__weight_decay=5e-4, batch_size=64)

    def ensemble(n, max_epochs):
        return lambda s: DeepEnsembleClassifier(
            MLP, n_estimators=n, max_epochs=max_epochs, random_state=s, **common
        )

    def espro(per_vertex, lam):
        return lambda s: ESPROClassifier(
            MLP,
            n_modes=3,
            n_vertices=3,
            epochs_per_vertex=per_vertex,
            vertex_lr=0.01,
            volume_lambda=lam,
            max_epochs=epochs,
            random_state=s,
            **common,
        )

    cheap, long = max(1, epochs // 10), epochs // 2
    table = {
        "single network": ensemble(1, epochs),
        "DeepEnsemble(3)": ensemble(3, epochs),
    }
    for lam in (0.0, 1e-3, 1e-2, 1e-1, 1.0):
        table[f"ESPRO(3 modes, 3 vertices, {cheap} epochs/vertex), λ={lam:g}"] = espro(cheap, lam)
    table["DeepEnsemble(3), same epochs as ESPRO above"] = ensemble(3, epochs + 2 * cheap)
    table[f"ESPRO(3 modes, 3 vertices, {long} epochs/vertex), λ=0.001"] = espro(long, 1e-3)
    table["DeepEnsemble(3), same epochs as ESPRO above "] = ensemble(3, epochs + 2 * long)
    table.update(fge_and_swag(epochs, common, ensemble))
    return table


def fge_and_swag(epochs, common, ensemble, n_train=1347):
    """FGE after ``epochs`` of pretraining; SWAG with an SWA phase of epochs/2 after them."""
    n_batches = -(-n_train // common["batch_size"])
    cycle = 2
    # FGE runs whole epochs up to its 8th snapshot, in the middle of the 8th 2-epoch cycle.
    fge_epochs = epochs + -(-(7 * cycle * n_batches + cycle * n_batches // 2 + 1) // n_batches)

    def fge(s):
        return FGEClassifier(
            MLP, n_snapshots=8, cycle_length=cycle, max_epochs=epochs, random_state=s, **common
        )

    swag_epochs = epochs + epochs // 2

    def swag(covariance, n_modes=1):
        return lambda s: SWAGClassifier(
            MLP,
            n_modes=n_modes,
            swa_start=epochs,
            swa_lr=0.01,
            covariance=covariance,
            max_epochs=swag_epochs,
            random_state=s,
            **common,
        )

    return {
        "FGE(8 snapshots, 2-epoch cycles)": fge,
        "single network, same epochs as FGE": ensemble(1, fge_epochs),
        "plain SGD, same epochs as SWA/SWAG": ensemble(1, swag_epochs),
        "SWA": swag("none"),
        "SWAG-diagonal": swag("diagonal"),
        "SWAG": swag("full"),
        "MultiSWAG(3)": swag("full", n_modes=3),
        "DeepEnsemble(3), same epochs as MultiSWAG(3)": ensemble(3, swag_epochs),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        (X / 16).astype(np.float32), y, test_size=0.25, random_state=0
    )
    print(
        f"digits: {len(X_train)} training / {len(X_test)} test rows; "
        f"{args.seeds} seeds; mode epochs {args.epochs}\n"
    )
    print("| model | accuracy | NLL | Brier | ECE | epochs_spent_ | fit s |")
    print("|---|---|---|---|---|---|---|")
    for name, make in models(args.epochs).items():
        rows, epochs, seconds = [], [], []
        for seed in range(args.seeds):
            start = time.perf_counter()
            clf = make(seed).fit(X_train, y_train)
            seconds.append(time.perf_counter() - start)
            scores = evaluate(clf, X_test, y_test)
            rows.append([scores[m] for m in METRICS])
            epochs.append(clf.epochs_spent_)
        mean, std = np.mean(rows, axis=0), np.std(rows, axis=0)
        cells = " | ".join(f"{m:.4f} ± {s:.4f}" for m, s in zip(mean, std, strict=True))
        print(f"| {name} | {cells} | {int(np.mean(epochs))} | {np.mean(seconds):.1f} |")


if __name__ == "__main__":
    main()
