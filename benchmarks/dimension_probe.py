"""The dimensionality probe (Benton et al. 2021, Figure 5) on an MLP of two widths.

Two modes are trained (a cosine schedule ending low), then an SPRO complex connects them
through connectors added one at a time, far more than the complex needs. Each connector
starts close to the complex (``connector_init_scale=0.05``) and the volume term
(``volume_lambda``, ``--lam``, default 0.01) pushes it out as far as low loss allows (20
epochs per connector at twice the modes' rate, cosine). After each
connector SPRO records the log-volume of every simplex; ``SPROClassifier.dimension_probe``
turns that record into the connector's height above the face of the earlier anchors
(``log h_c = log V_c - log V_{c-1} + log c``), the connector count after which the height
collapses (below ``tolerance`` times the first connector's), and the mean train accuracy of
points drawn uniformly over the complex at every count. A wider network should have room
for more connectors before the volume collapses.

Data: ``make_classification`` (2000 rows, 20 features, 10 informative, 4 classes),
standardised. Not digits.

    python benchmarks/dimension_probe.py [--connectors 8] [--seeds 2]
"""

import argparse
import os
import platform
import time

import numpy as np
import torch
from sklearn.datasets import make_classification
from sklearn.preprocessing import StandardScaler
from skorch.callbacks import LRScheduler
from torch import nn

from simplexens import DeepEnsembleClassifier, SPROClassifier

MODE_EPOCHS = 30


class MLP(nn.Module):
    def __init__(self, n_features_in, n_classes, hidden=64):
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


def probe(hidden, n_connectors, seed, X, y, tolerance, lam):
    common = dict(lr=0.05, batch_size=128, optimizer__momentum=0.9, optimizer__weight_decay=5e-4)
    cosine = LRScheduler(policy=torch.optim.lr_scheduler.CosineAnnealingLR, T_max=MODE_EPOCHS)
    modes = DeepEnsembleClassifier(
        MLP, module__hidden=hidden, n_estimators=2, max_epochs=MODE_EPOCHS,
        callbacks=[cosine], random_state=seed, **common,
    ).fit(X, y)  # fmt: skip
    spro = SPROClassifier(
        MLP, module__hidden=hidden, n_modes=2, n_connectors=n_connectors,
        epochs_per_connector=20, connector_init_scale=0.05, volume_lambda=lam,
        init_modes=modes, random_state=seed, **common,
    ).fit(X, y)  # fmt: skip
    mode_acc = float((modes.predict_member_proba(X).argmax(-1) == y).mean())
    return spro.dimension_probe(X, y, n_samples=10, tolerance=tolerance), mode_acc


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connectors", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--tolerance", type=float, default=1e-2)
    parser.add_argument("--lam", type=float, default=0.01, help="volume_lambda")
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 256])
    args = parser.parse_args()
    start = time.time()
    X, y = make_classification(
        2000, 20, n_informative=10, n_redundant=4, n_classes=4, random_state=0
    )
    X = StandardScaler().fit_transform(X)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads\n"
    )
    for hidden in args.widths:
        for seed in range(args.seeds):
            result, mode_acc = probe(hidden, args.connectors, seed, X, y, args.tolerance, args.lam)
            print(f"### MLP width {hidden}, seed {seed}: modes' train accuracy {mode_acc:.3f}")
            print("| connectors | mean log V | height h_c | h_c / h_1 | train accuracy |")
            print("|---|---|---|---|---|")
            for c, log_v, h, acc in zip(
                result.n_connectors,
                result.log_volumes,
                result.heights,
                result.accuracy,
                strict=True,
            ):
                ratio = h / result.heights[0]
                print(f"| {c} | {np.mean(log_v):.2f} | {h:.3g} | {ratio:.3g} | {acc:.3f} |")
            after = result.collapsed_after
            verdict = "no collapse" if after is None else f"collapses after {after} connector(s)"
            print(f"\n{verdict} (tolerance {args.tolerance:g})\n")
    print(f"total time {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
