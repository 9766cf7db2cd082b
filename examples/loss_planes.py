"""Loss-surface planes (Benton et al. 2021, Figures 6 and 3): a face of an ESPRO simplex, and
a plane through an SPRO complex connecting two modes.

On the two-spirals data (``simplexens.datasets.make_spirals``), an MLP mode is grown into
a 3-vertex simplex (``ESPROClassifier``), and two modes are connected by an SPRO complex
with one connector. The train NLL is evaluated on a grid of the plane through the simplex's
three vertices, and of the plane through the two modes and the connector (log-scaled
colours, as in the paper); every grid point is a point of parameter space evaluated through
the member stack. About a minute on 2 cores.

    python examples/loss_planes.py [--quick] [--out docs]
"""

import matplotlib

matplotlib.use("Agg")

from _common import parse, save

from simplexens import DeepEnsembleClassifier, ESPROClassifier, SPROClassifier
from simplexens.datasets import MLP, make_spirals
from simplexens.inspection import PlaneDisplay


def main(argv=None):
    args = parse(__doc__.splitlines()[0], argv)
    n, epochs, grid = (200, 4, 5) if args.quick else (1000, 30, 21)
    X, y = make_spirals(n, random_state=0)
    training = dict(
        module__hidden=64, lr=0.05, optimizer__momentum=0.9, batch_size=64, random_state=0
    )
    modes = DeepEnsembleClassifier(MLP, n_estimators=2, max_epochs=epochs, **training).fit(X, y)
    espro = ESPROClassifier(
        MLP, n_modes=1, n_vertices=3, init_modes=modes.mode_state_dicts()[:1],
        epochs_per_vertex=epochs // 2, n_predict_samples=5, **training,
    ).fit(X, y)  # fmt: skip
    face = PlaneDisplay.from_simplex_face(espro, X, y, grid_resolution=grid)
    face.ax_.set_title("Train NLL on an ESPRO simplex (two spirals)")
    save(face, args.out / "simplex_face.png", args)
    spro = SPROClassifier(
        MLP, n_modes=2, n_connectors=1, init_modes=modes, epochs_per_connector=epochs,
        n_predict_samples=5, **training,
    ).fit(X, y)  # fmt: skip
    plane = PlaneDisplay.from_complex(spro, X, y, grid_resolution=grid)
    plane.ax_.set_title("Train NLL through two modes and their connector")
    save(plane, args.out / "complex_plane.png", args)


if __name__ == "__main__":
    main()
