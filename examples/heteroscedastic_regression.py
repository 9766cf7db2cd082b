"""Regression with a Gaussian predictive: a deep ensemble on noise that grows with |x|.

Left: the ensemble's mean and 90% interval, with the part of the variance the members
predict as noise (aleatoric) and the part from their disagreement (epistemic), which grows
outside the training range [-3, 3]. The same ensemble trained on the squared error
(``likelihood="mse"``) knows only the disagreement. Right: the coverage of their central
intervals at every level on held-out points (the diagonal is calibration). 15-35 s on
2 cores.

    python examples/heteroscedastic_regression.py [--quick] [--out docs]
"""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import torch
from _common import parse, save
from matplotlib.figure import Figure

from simplexens import DeepEnsembleRegressor
from simplexens.datasets import MLP
from simplexens.inspection import CoverageDisplay


def noisy_sine(n, rng):
    """x uniform in [-3, 3], y = sin(x) + noise of standard deviation 0.1 + 0.3 |x|."""
    x = rng.uniform(-3, 3, size=(n, 1)).astype(np.float32)
    return x, np.sin(x[:, 0]) + (0.1 + 0.3 * np.abs(x[:, 0])) * rng.standard_normal(n)


def main(argv=None):
    args = parse(__doc__.splitlines()[0], argv)
    n, epochs = (300, 5) if args.quick else (1000, 100)
    rng = np.random.default_rng(0)
    X, y = noisy_sine(n, rng)
    X_test, y_test = noisy_sine(1000, rng)
    fits = {
        likelihood: DeepEnsembleRegressor(
            MLP, likelihood=likelihood, n_estimators=5, module__hidden=50, max_epochs=epochs,
            optimizer=torch.optim.Adam, lr=0.01, batch_size=128, random_state=0,
        ).fit(X, y)
        for likelihood in ("gaussian", "mse")
    }  # fmt: skip
    figure = Figure(figsize=(11, 4))
    band_ax, coverage_ax = figure.subplots(1, 2, width_ratios=[1.6, 1])
    grid = np.linspace(-5, 5, 400, dtype=np.float32)[:, None]
    moments = fits["gaussian"].predict_moments(grid)
    lower, upper = fits["gaussian"].predict_interval(grid, level=0.9)
    band_ax.scatter(X[:, 0], y, s=3, color="0.6", label="training data")
    band_ax.fill_between(grid[:, 0], lower, upper, alpha=0.25, label="90% interval (gaussian)")
    band_ax.plot(grid[:, 0], lower, "C0", lw=0.6)
    band_ax.plot(grid[:, 0], upper, "C0", lw=0.6)
    noise = 1.645 * np.sqrt(moments.aleatoric)
    band_ax.plot(grid[:, 0], moments.mean + noise, "C0--", lw=1, label="aleatoric part only")
    band_ax.plot(grid[:, 0], moments.mean - noise, "C0--", lw=1)
    band_ax.plot(grid[:, 0], moments.mean, "C0", label="mean (gaussian)")
    mse_lower, mse_upper = fits["mse"].predict_interval(grid, level=0.9)
    band_ax.plot(grid[:, 0], mse_lower, "C3:", label="90% interval (mse)")
    band_ax.plot(grid[:, 0], mse_upper, "C3:")
    band_ax.axvspan(-5, -3, color="0.95", zorder=0)
    band_ax.axvspan(3, 5, color="0.95", zorder=0)
    band_ax.set(xlabel="x (shaded: outside the training range)", ylabel="y", ylim=(-6, 6))
    band_ax.legend(loc="upper left", fontsize=8)
    for likelihood, fitted in fits.items():
        display = CoverageDisplay.from_estimator(
            fitted, X_test, y_test, name=likelihood, ax=coverage_ax
        )
    coverage_ax.set_title("held-out coverage")
    save(display, args.out / "regression_intervals.png", args)


if __name__ == "__main__":
    main()
