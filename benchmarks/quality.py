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

``--suite connectivity`` compares the mode-connecting methods instead, on two datasets that
are not digits (a 4-class ``make_classification`` set and ``load_breast_cancer``, standardised,
75/25 splits): SPRO (3 modes, 2 connectors) and a Bezier-curve ensemble against deep
ensembles with the same modes and with the same ``epochs_spent_`` (a fresh run under one
cosine schedule over the whole budget, so that every model ends at a low rate), and ESPRO
grown from given modes (``init_modes``) against ESPRO trained from scratch: the same seeds
give the same modes, so the results must agree while the epochs spent fall.

    python benchmarks/quality.py --suite connectivity [--seeds 3] [--epochs 30]

``--suite swag`` checks when SWAG differs from SWA on the same two datasets: SWA against
SWAG collecting once per epoch (the former default) and about ``max_rank`` times over the
SWA phase (``collect_every="auto"``, the default), at two SWA learning rates.

    python benchmarks/quality.py --suite swag [--seeds 3] [--epochs 30]

``--suite subspace`` compares SGD, SWA, SWAG and subspace inference (elliptical slice
sampling in a random, a PCA and a curve subspace) at the same budget on the same two
datasets.

    python benchmarks/quality.py --suite subspace [--seeds 3] [--epochs 30]
"""

import argparse
import time

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_digits, make_classification
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from skorch.callbacks import LRScheduler
from torch import nn

from simplexens import (
    CurveClassifier,
    DeepEnsembleClassifier,
    ESPROClassifier,
    FGEClassifier,
    SPROClassifier,
    SubspaceClassifier,
    SWAGClassifier,
)
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


def cosine(epochs):
    """A cosine schedule over the modes' training, ending at a low rate."""
    return [LRScheduler(policy=torch.optim.lr_scheduler.CosineAnnealingLR, T_max=epochs)]


def connectivity_models(epochs, extra=20):
    """Name -> fit(seed, X, y) of each model of the connectivity suite.

    SPRO and the curve start from the deep ensembles' own modes (``init_modes``) and add
    ``extra`` epochs per connector or curve; their budgets count the modes' epochs too.
    """
    common = dict(lr=0.05, optimizer__momentum=0.9, optimizer__weight_decay=5e-4, batch_size=64)

    def ensemble(n, max_epochs):
        def fit(seed, X, y):
            return DeepEnsembleClassifier(
                MLP, n_estimators=n, max_epochs=max_epochs, callbacks=cosine(max_epochs),
                random_state=seed, **common,
            ).fit(X, y)  # fmt: skip

        return fit

    def connected(estimator, n_given, **params):
        def fit(seed, X, y):
            modes = ensemble(n_given, epochs)(seed, X, y)
            model = estimator(MLP, init_modes=modes, random_state=seed, **params, **common)
            model.fit(X, y)
            model.epochs_spent_ += modes.epochs_spent_  # the modes' budget counts too
            return model

        return fit

    def espro(given):
        def fit(seed, X, y):
            modes = ensemble(3, epochs)(seed, X, y) if given else None
            return ESPROClassifier(
                MLP, n_modes=3, n_vertices=3, epochs_per_vertex=extra // 2, vertex_lr=0.05,
                max_epochs=epochs, callbacks=cosine(epochs), init_modes=modes,
                random_state=seed, **common,
            ).fit(X, y)  # fmt: skip

        return fit

    spro = dict(n_modes=3, n_connectors=2, epochs_per_connector=extra, connector_lr=0.05)
    curve = dict(curve="bezier", curve_epochs=extra, curve_lr=0.05)
    return {
        "DeepEnsemble(2)": ensemble(2, epochs),
        "Bezier curve between the 2 modes": connected(CurveClassifier, 2, **curve),
        f"DeepEnsemble(2), same epochs as the curve ({epochs + extra // 2}/member)": ensemble(
            2, epochs + extra // 2
        ),
        "DeepEnsemble(3)": ensemble(3, epochs),
        "SPRO(3 modes, 2 connectors)": connected(SPROClassifier, 3, **spro),
        f"DeepEnsemble(3), same epochs as SPRO ({epochs + 2 * extra // 3}/member)": ensemble(
            3, epochs + 2 * extra // 3
        ),
        "ESPRO(3 modes, 3 vertices) from scratch": espro(False),
        "ESPRO(3 modes, 3 vertices) from given modes": espro(True),
    }


def connectivity_data(seed):
    """The two non-digits datasets of the connectivity suite, standardised on training rows."""
    X1, y1 = make_classification(
        2000, 20, n_informative=10, n_redundant=4, n_classes=4, random_state=seed
    )
    X2, y2 = load_breast_cancer(return_X_y=True)
    for name, X, y in (("make_classification, 4 classes", X1, y1), ("breast cancer", X2, y2)):
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=0.25, random_state=seed, stratify=y
        )
        scaler = StandardScaler().fit(X_train)
        yield (
            name,
            (scaler.transform(X_train).astype(np.float32), y_train),
            (
                scaler.transform(X_test).astype(np.float32),
                y_test,
            ),
        )


def swag_models(epochs):
    """SWA and SWAG variants: modes of ``epochs`` epochs, then ``epochs // 2`` SWA epochs."""
    common = dict(lr=0.05, optimizer__momentum=0.9, optimizer__weight_decay=5e-4, batch_size=64)

    def swag(covariance, swa_lr, collect_every):
        def fit(seed, X, y):
            return SWAGClassifier(
                MLP, swa_start=epochs, max_epochs=epochs + epochs // 2, swa_lr=swa_lr,
                covariance=covariance, collect_every=collect_every,
                callbacks=cosine(epochs), random_state=seed, **common,
            ).fit(X, y)  # fmt: skip

        return fit

    table = {}
    for swa_lr in (0.01, 0.03):
        table[f"SWA, swa_lr {swa_lr}"] = swag("none", swa_lr, "auto")
        table[f"SWAG, once per epoch, swa_lr {swa_lr}"] = swag("full", swa_lr, None)
        table[f"SWAG, auto (about max_rank), swa_lr {swa_lr}"] = swag("full", swa_lr, "auto")
    return table


def subspace_models(epochs):
    """SGD, SWA, SWAG and subspace inference (ESS in a random, PCA and curve subspace).

    All but the curve spend ``epochs + epochs // 2`` epochs: a cosine-scheduled mode, then a
    SWA phase at a constant rate (SGD: one network, the cosine over all of them). The curve
    subspace needs a curve: two modes of ``epochs`` and ``epochs // 2`` curve epochs, which
    its ``epochs_spent_`` counts.
    """
    common = dict(lr=0.05, optimizer__momentum=0.9, optimizer__weight_decay=5e-4, batch_size=64)
    total = epochs + epochs // 2
    swa = dict(swa_start=epochs, max_epochs=total, swa_lr=0.03, callbacks=cosine(epochs))

    def sgd(seed, X, y):
        return DeepEnsembleClassifier(
            MLP, n_estimators=1, max_epochs=total, callbacks=cosine(total), random_state=seed,
            **common,
        ).fit(X, y)  # fmt: skip

    def swag(covariance):
        def fit(seed, X, y):
            return SWAGClassifier(
                MLP, covariance=covariance, random_state=seed, **swa, **common
            ).fit(X, y)

        return fit

    def subspace(kind):
        def fit(seed, X, y):
            return SubspaceClassifier(
                MLP, subspace=kind, rank=5, random_state=seed, **swa, **common
            ).fit(X, y)

        return fit

    def curve_subspace(seed, X, y):
        curve = CurveClassifier(
            MLP, max_epochs=epochs, callbacks=cosine(epochs), curve_epochs=epochs // 2,
            curve_lr=0.05, random_state=seed, **common,
        ).fit(X, y)  # fmt: skip
        model = SubspaceClassifier(MLP, subspace="curve", init_modes=curve, random_state=seed)
        model.set_params(**common).fit(X, y)
        model.epochs_spent_ += curve.epochs_spent_  # the curve's budget counts
        return model

    def curve_control(seed, X, y):  # two networks, the curve's budget: its gain may be theirs
        each = epochs + epochs // 4
        return DeepEnsembleClassifier(
            MLP, n_estimators=2, max_epochs=each, callbacks=cosine(each), random_state=seed,
            **common,
        ).fit(X, y)  # fmt: skip

    return {
        "SGD": sgd,
        "SWA": swag("none"),
        "SWAG": swag("full"),
        "subspace random, ESS": subspace("random"),
        "subspace PCA, ESS": subspace("pca"),
        "subspace curve, ESS": curve_subspace,
        f"DeepEnsemble(2), the curve's budget ({epochs + epochs // 4}/member)": curve_control,
    }


def run_suite(models, seeds, epochs):
    results = {}
    for seed in range(seeds):
        for data, train, test in connectivity_data(seed):
            for name, fit in models(epochs).items():
                start = time.perf_counter()
                model = fit(seed, *train)
                scores = evaluate(model, *test)
                seconds = time.perf_counter() - start
                row = [*(scores[m] for m in METRICS), model.epochs_spent_, seconds]
                results.setdefault(data, {}).setdefault(name, []).append(row)
    for data, table in results.items():
        print(f"\n### {data}: {seeds} seeds, modes of {epochs} epochs (cosine)\n")
        print("| model | accuracy ↑ | NLL ↓ | Brier ↓ | ECE ↓ | epochs_spent_ | fit s |")
        print("|---|---|---|---|---|---|---|")
        for name, rows in table.items():
            rows = np.asarray(rows)
            mean, std = rows.mean(axis=0), rows.std(axis=0)
            cells = " | ".join(
                f"{m:.4f} ± {s:.4f}" for m, s in zip(mean[:4], std[:4], strict=True)
            )
            print(f"| {name} | {cells} | {int(mean[4])} | {mean[5]:.1f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    suites = {"connectivity": connectivity_models, "swag": swag_models}
    suites["subspace"] = subspace_models
    parser.add_argument("--suite", choices=("methods", *suites), default="methods")
    args = parser.parse_args()
    if args.suite in suites:
        run_suite(suites[args.suite], args.seeds, args.epochs)
        return
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
