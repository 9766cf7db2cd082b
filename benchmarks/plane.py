"""A 21 x 21 loss plane for the digits MLP: many points per call against one point at a time.

Three members of a deep ensemble fitted on scikit-learn's digits span a plane; the NLL is
evaluated at every point of a 21 x 21 grid on the 1347 training rows, two ways:

- ours: ``simplexens.inspection.loss_on_plane`` (grid points built as coefficients x
  anchors and evaluated 64 at a time through the member stack; with BatchNorm, every point's
  statistics recomputed in one pass over the data for the whole chunk);
- reference design: every grid point loaded into the module (``load_state_dict``) and
  evaluated on its own (with BatchNorm: ``torch.optim.swa_utils.update_bn`` per point first),
  as the research scripts do.

Both compute the same numbers (checked); the table gives wall times and the speed-up, for
the MLP without and with BatchNorm, in one run.

    python benchmarks/plane.py [--grid 21]
"""

import argparse
import copy
import os
import platform
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.optim.swa_utils import update_bn

from simplexens import DeepEnsembleClassifier
from simplexens.inspection.surface import (
    _combine,
    _names,
    loss_on_plane,
    parameter_sets,
    plane_basis,
    plane_weights,
)


class MLP(nn.Module):
    def __init__(self, n_features_in, n_classes, hidden=128, batchnorm=False):
        super().__init__()
        norm = [nn.BatchNorm1d(hidden)] if batchnorm else []
        self.net = nn.Sequential(
            nn.Linear(n_features_in, hidden), *norm, nn.ReLU(),
            nn.Linear(hidden, hidden), *copy.deepcopy(norm), nn.ReLU(),
            nn.Linear(hidden, n_classes),
        )  # fmt: skip

    def forward(self, x):
        return self.net(x)


def reference(estimator, X, y, grid, batchnorm):
    """One point at a time: load it into the module, (recalibrate,) evaluate."""
    sets = parameter_sets(estimator)["members"][:3]
    basis = plane_basis(*sets, _names(estimator))
    plane = loss_on_plane(estimator, X, y, grid_resolution=2)  # the grid's extent only
    axes = [np.linspace(plane.xx0.min(), plane.xx0.max(), grid)]
    axes.append(np.linspace(plane.xx1.min(), plane.xx1.max(), grid))
    xx0, xx1 = np.meshgrid(*axes)
    coords = torch.tensor(np.stack([xx0.ravel(), xx1.ravel()], axis=1), dtype=torch.float64)
    points = _combine(sets, plane_weights(basis, coords))
    module = copy.deepcopy(estimator.members_.template)
    data, target = torch.tensor(X), torch.tensor(y)
    loader = torch.utils.data.DataLoader(data, batch_size=len(X))
    nll = []
    start = time.perf_counter()
    for point in points:
        module.load_state_dict(point)
        if batchnorm:
            update_bn(loader, module)
        module.eval()
        with torch.no_grad():
            nll.append(float(nn.functional.cross_entropy(module(data), target)))
    return np.array(nll).reshape(xx0.shape), time.perf_counter() - start


def case(batchnorm, grid, X, y):
    estimator = DeepEnsembleClassifier(
        MLP, module__batchnorm=batchnorm, n_estimators=3, max_epochs=10, lr=0.05,
        optimizer__momentum=0.9, batch_size=64, iterator_valid__batch_size=len(X),
        random_state=0,
    ).fit(X, y)  # fmt: skip
    start = time.perf_counter()
    ours = loss_on_plane(estimator, X, y, grid_resolution=grid)
    t_ours = time.perf_counter() - start
    expected, t_ref = reference(estimator, X, y, grid, batchnorm)
    gap = np.abs(ours.nll - expected).max()
    label = "with BatchNorm" if batchnorm else "without BatchNorm"
    print(f"| MLP 64-128-128-10 {label} | {grid}x{grid} | {t_ref:.2f} | {t_ours:.2f} "
          f"| {t_ref / t_ours:.1f}x | {gap:.1e} |")  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=21)
    args = parser.parse_args()
    X, y = load_digits(return_X_y=True)
    X = (X[:1347] / 16).astype(np.float32)
    y = y[:1347]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads; {len(X)} rows\n"
    )
    print("| module | grid | reference s | ours s | speed-up | max NLL difference |")
    print("|---|---|---|---|---|---|")
    for batchnorm in (False, True):
        case(batchnorm, args.grid, X, y)


if __name__ == "__main__":
    main()
