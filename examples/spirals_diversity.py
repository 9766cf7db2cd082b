"""Functional diversity on two spirals (Benton et al. 2021, section 5.3): decision regions
of networks sampled from one ESPRO simplex, and of their ensemble.

One MLP mode is grown into a 3-vertex simplex on ``simplexens.datasets.make_spirals``;
points sampled in the simplex are different functions with the same low training loss, and
their average is the ensemble's prediction. About a minute on 2 cores.

    python examples/spirals_diversity.py [--quick] [--out docs]
"""

import matplotlib

matplotlib.use("Agg")

from _common import parse, save

from simplexens import ESPROClassifier
from simplexens.datasets import MLP, make_spirals
from simplexens.inspection import DecisionRegionsDisplay


def main(argv=None):
    args = parse(__doc__.splitlines()[0], argv)
    n, epochs, grid = (200, 4, 20) if args.quick else (1000, 40, 150)
    X, y = make_spirals(n, random_state=0)
    espro = ESPROClassifier(
        MLP, module__hidden=64, n_modes=1, n_vertices=3, max_epochs=epochs,
        epochs_per_vertex=epochs // 2, n_predict_samples=6, lr=0.05, optimizer__momentum=0.9,
        batch_size=64, random_state=0,
    ).fit(X, y)  # fmt: skip
    display = DecisionRegionsDisplay.from_estimator(
        espro, X, y, members=[0, 1, 2, 3], grid_resolution=grid
    )
    display.figure_.suptitle("Points of one ESPRO simplex, and their ensemble (two spirals)")
    save(display, args.out / "spirals_diversity.png", args)


if __name__ == "__main__":
    main()
