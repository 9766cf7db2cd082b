"""Mode connectivity (Garipov et al. 2018): the loss along a straight line between two
trained networks, and along a trained Bezier curve between the same two.

Two MLPs trained on the two-spirals data (``simplexens.datasets.make_spirals``) are
joined by the straight segment and by a quadratic Bezier curve whose bend is trained with
t ~ U(0, 1) (``CurveClassifier`` with ``init_modes``); the train NLL along both is drawn
against t. The segment crosses a barrier; the curve does not. About a minute on 2 cores.

    python examples/curve_profile.py [--quick] [--out docs]
"""

import matplotlib

matplotlib.use("Agg")

from _common import parse, save

from simplexens import CurveClassifier, DeepEnsembleClassifier
from simplexens.datasets import MLP, make_spirals
from simplexens.inspection import PathDisplay, loss_along_curve


def main(argv=None):
    args = parse(__doc__.splitlines()[0], argv)
    n, epochs = (200, 5) if args.quick else (1000, 40)
    X, y = make_spirals(n, random_state=0)
    training = dict(
        module__hidden=64, lr=0.05, optimizer__momentum=0.9, batch_size=64, random_state=0
    )
    modes = DeepEnsembleClassifier(MLP, n_estimators=2, max_epochs=epochs, **training).fit(X, y)
    curve = CurveClassifier(
        MLP, init_modes=modes, curve_epochs=epochs, n_predict_samples=5, **training
    ).fit(X, y)
    points = 9 if args.quick else 25
    line = PathDisplay.from_estimator(modes, X, y, n_points=points, name="straight segment")
    along = loss_along_curve(curve, X, y, n_points=points)
    PathDisplay(t=along.t, nll=along.nll, accuracy=along.accuracy, name="Bezier curve").plot(
        ax=line.ax_
    )
    line.ax_.set_title("Train NLL between two trained MLPs (two spirals)")
    save(line, args.out / "curve_profile.png", args)


if __name__ == "__main__":
    main()
