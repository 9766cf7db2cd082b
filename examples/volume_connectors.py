"""Volume against the number of connectors (Benton et al. 2021, Figure 5): the
dimensionality probe of an SPRO complex between two modes.

Two MLP modes on a 4-class ``make_classification`` set are connected by connectors added
one at a time, each started close to the complex and pushed out by the volume term; the
log-volume, each connector's height above the earlier ones and the train accuracy of points
of the complex are drawn against the connector count. A collapse of the heights would mark
the dimension of the low-loss set SPRO can find. About a minute on 2 cores.

    python examples/volume_connectors.py [--quick] [--out docs]
"""

import matplotlib

matplotlib.use("Agg")

from _common import parse, save
from sklearn.datasets import make_classification
from sklearn.preprocessing import StandardScaler

from simplexens import DeepEnsembleClassifier, SPROClassifier
from simplexens.datasets import MLP
from simplexens.inspection import VolumeDisplay


def main(argv=None):
    args = parse(__doc__.splitlines()[0], argv)
    n, epochs, connectors = (200, 3, 2) if args.quick else (2000, 20, 8)
    X, y = make_classification(n, 20, n_informative=10, n_redundant=4, n_classes=4, random_state=0)
    X = StandardScaler().fit_transform(X).astype("float32")
    training = dict(
        module__hidden=32, lr=0.05, optimizer__momentum=0.9, batch_size=128, random_state=0
    )
    modes = DeepEnsembleClassifier(MLP, n_estimators=2, max_epochs=epochs, **training).fit(X, y)
    spro = SPROClassifier(
        MLP, n_modes=2, n_connectors=connectors, init_modes=modes, volume_lambda=0.01,
        connector_init_scale=0.05, epochs_per_connector=epochs // 2, n_predict_samples=5,
        **training,
    ).fit(X, y)  # fmt: skip
    display = VolumeDisplay.from_estimator(spro, X, y, n_samples=5)
    display.ax_.set_title("SPRO: volume against connectors")
    save(display, args.out / "volume_connectors.png", args)


if __name__ == "__main__":
    main()
