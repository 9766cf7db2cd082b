"""CoverageDisplay: the drawn curve is coverage_curve's, on the axes it was given."""

import sys

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import NotFittedError

from simplexens.inspection import CoverageDisplay
from simplexens.metrics import coverage_curve


def _problem(seed=0, n_members=4, shape=(300,)):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(n_members, *shape))
    stds = rng.uniform(0.3, 1.5, size=(n_members, *shape))
    y = means.mean(axis=0) + rng.normal(size=shape)
    return y, means, stds


def _axes():
    """Axes on a figure of its own with an Agg canvas: no pyplot state."""
    figure = Figure()
    FigureCanvasAgg(figure)
    return figure.subplots()


def _legend_texts(ax):
    return [text.get_text() for text in ax.get_legend().get_texts()]


class MemberGaussians:
    """The documented duck type: ``predict_member_distribution(X) -> (means, stds)``."""

    def __init__(self, means, stds):
        self.means, self.stds = means, stds
        self.seen = None

    def predict_member_distribution(self, X):
        self.seen = X
        return self.means, self.stds


class UnfittedRegressor(RegressorMixin, BaseEstimator):
    """An sklearn-style regressor with the method but no fitted state."""

    def fit(self, X, y):
        self.fitted_ = True
        return self

    def predict_member_distribution(self, X):
        raise AssertionError("must not be called before fit")


def test_from_predictions_draws_coverage_curve_on_the_given_axes():
    y, means, stds = _problem()
    ax = _axes()
    display = CoverageDisplay.from_predictions(y, means, stds, ax=ax, name="ensemble")
    curve = coverage_curve(y, means, stds)
    assert isinstance(display, CoverageDisplay)
    assert display.ax_ is ax and display.figure_ is ax.figure
    assert_array_equal(display.levels, curve.levels)
    assert_array_equal(display.coverage, curve.coverage)
    assert_allclose(display.line_.get_xdata(), curve.levels)
    assert_allclose(display.line_.get_ydata(), curve.coverage)
    assert display.line_ in ax.lines
    assert _legend_texts(ax) == ["Perfectly calibrated", "ensemble"]
    (diagonal,) = [line for line in ax.lines if line.get_label() == "Perfectly calibrated"]
    assert_allclose(diagonal.get_xydata(), [[0, 0], [1, 1]])
    ax.figure.canvas.draw()


def test_from_predictions_with_levels_and_several_targets():
    y, means, stds = _problem(1, shape=(200, 3))
    levels = [0.2, 0.5, 0.9]
    display = CoverageDisplay.from_predictions(y, means, stds, levels=levels, ax=_axes())
    curve = coverage_curve(y, means, stds, levels=levels)
    assert_allclose(display.line_.get_xydata(), np.column_stack([levels, curve.coverage]))
    assert _legend_texts(display.ax_) == ["Perfectly calibrated", "Observed"]


def test_unsorted_levels_are_drawn_left_to_right():
    y, means, stds = _problem(2)
    levels = [0.9, 0.1, 0.5]
    display = CoverageDisplay.from_predictions(y, means, stds, levels=levels, ax=_axes())
    sorted_curve = coverage_curve(y, means, stds, levels=sorted(levels))
    assert_array_equal(display.levels, levels)  # the display keeps what it was given
    assert_allclose(
        display.line_.get_xydata(), np.column_stack([sorted_curve.levels, sorted_curve.coverage])
    )


def test_from_estimator_uses_predict_member_distribution():
    y, means, stds = _problem(2)
    model = MemberGaussians(means, stds)
    X = np.arange(300.0)[:, None]
    display = CoverageDisplay.from_estimator(model, X, y, levels=[0.3, 0.6], ax=_axes())
    assert model.seen is X
    assert_allclose(display.coverage, coverage_curve(y, means, stds, levels=[0.3, 0.6]).coverage)
    assert display.estimator_name == "MemberGaussians"
    assert "MemberGaussians" in _legend_texts(display.ax_)


def test_two_curves_share_the_axes_and_the_diagonal():
    y, means, stds = _problem(3)
    ax = _axes()
    first = CoverageDisplay.from_predictions(y, means, stds, ax=ax, name="wide")
    centre = means.mean(axis=0)  # the mixture shrunk 3-fold about its mean
    shrunk = centre + (means - centre) / 3, stds / 3
    second = CoverageDisplay.from_predictions(y, *shrunk, ax=ax, name="narrow")
    assert first.ax_ is second.ax_ is ax
    assert _legend_texts(ax) == ["Perfectly calibrated", "wide", "narrow"]
    # too narrow intervals cover less at every level
    assert np.all(second.line_.get_ydata() < first.line_.get_ydata())


def test_plot_redraws_on_other_axes_and_returns_itself():
    y, means, stds = _problem(4)
    display = CoverageDisplay.from_predictions(y, means, stds, ax=_axes(), name="first")
    ax = _axes()
    assert display.plot(ax=ax, name="again") is display
    assert display.ax_ is ax
    assert _legend_texts(ax) == ["Perfectly calibrated", "again"]


def test_plot_without_axes_makes_a_figure():
    plt = pytest.importorskip("matplotlib.pyplot")
    display = CoverageDisplay(np.array([0.5, 0.9]), np.array([0.4, 0.95]))
    try:
        assert display.plot() is display
        assert display.ax_.figure is display.figure_
        assert_allclose(display.line_.get_ydata(), [0.4, 0.95])
    finally:
        plt.close(display.figure_)


def test_from_estimator_refuses_objects_without_the_contract():
    y, means, stds = _problem(5)
    X = np.zeros((300, 1))
    with pytest.raises(TypeError, match="predict_member_distribution"):
        CoverageDisplay.from_estimator(object(), X, y)

    class ReturnsMeansOnly(MemberGaussians):
        def predict_member_distribution(self, X):
            return self.means

    with pytest.raises(TypeError, match=r"must return a pair \(means, stds\), got ndarray"):
        CoverageDisplay.from_estimator(ReturnsMeansOnly(means, stds), X, y)
    with pytest.raises(NotFittedError):
        CoverageDisplay.from_estimator(UnfittedRegressor(), X, y)


def test_invalid_predictions_fail_before_drawing():
    y, means, stds = _problem(6)
    stds[1, 7] = 0.0
    ax = _axes()
    with pytest.raises(ValueError, match=r"stds must be positive: stds\[1, 7\]"):
        CoverageDisplay.from_predictions(y, means, stds, ax=ax)
    with pytest.raises(ValueError, match=r"y has shape \(299,\)"):
        CoverageDisplay.from_estimator(MemberGaussians(means, np.ones_like(stds)), None, y[1:])
    assert not ax.lines


def test_plot_without_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    display = CoverageDisplay(np.array([0.5]), np.array([0.5]))
    with pytest.raises(
        ImportError, match=r"requires matplotlib: pip install 'simplexens\[plot\]'"
    ):
        display.plot()
