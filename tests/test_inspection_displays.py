"""Reliability, volume and decision-region Displays: their arrays against independent oracles."""

import copy
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from nets import MLP
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.datasets import make_classification
from sklearn.exceptions import NotFittedError

from simplexens import DeepEnsembleClassifier, SPROClassifier
from simplexens.inspection import (
    DecisionRegionsDisplay,
    ReliabilityDisplay,
    VolumeDisplay,
    connector_volumes,
    decision_regions,
    reliability_diagram,
)
from simplexens.metrics import reliability_bins

BIN_FIELDS = ("edges", "counts", "accuracy", "confidence")


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(
        200,
        n_features=2,
        n_informative=2,
        n_redundant=0,
        n_classes=3,
        n_clusters_per_class=1,
        random_state=0,
    )
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def ensemble(data):
    return DeepEnsembleClassifier(
        MLP, n_estimators=3, max_epochs=3, lr=0.1, batch_size=50, random_state=0
    ).fit(*data)


@pytest.fixture(scope="module")
def spro(data):
    return SPROClassifier(
        MLP,
        n_modes=2,
        n_connectors=3,
        max_epochs=2,
        epochs_per_connector=1,
        n_predict_samples=10,
        lr=0.1,
        batch_size=50,
        random_state=0,
    ).fit(*data)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def assert_same_bins(arrays, bins):
    for field in BIN_FIELDS:
        assert_array_equal(getattr(arrays, field), getattr(bins, field))
    assert arrays.ece == bins.ece


def legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


# --------------------------------------------------------------------------- reliability


@pytest.mark.parametrize(("n_bins", "strategy"), [(15, "uniform"), (5, "quantile")])
def test_reliability_diagram_is_reliability_bins(ensemble, data, n_bins, strategy):
    X, y = data
    proba = ensemble.predict_proba(X)
    arrays = reliability_diagram(y, proba, n_bins=n_bins, strategy=strategy)
    bins = reliability_bins(y, proba, n_bins=n_bins, strategy=strategy)
    assert_same_bins(arrays, bins)
    assert_array_equal(arrays.counts, np.histogram(proba.max(axis=1), bins.edges)[0])
    assert_allclose(arrays.frequency, bins.counts / len(y))


def test_reliability_display_from_estimator(ensemble, data):
    X, y = data
    display = ReliabilityDisplay.from_estimator(ensemble, X, y, n_bins=10)
    bins = reliability_bins(y, ensemble.predict_proba(X), n_bins=10, labels=ensemble.classes_)
    assert_same_bins(display, bins)
    assert display.figure_ is display.ax_.figure is display.hist_ax_.figure
    assert display.ax_.get_shared_x_axes().joined(display.ax_, display.hist_ax_)
    display.figure_.canvas.draw()
    filled = bins.counts > 0
    assert_allclose(display.line_.get_xdata(), bins.confidence[filled])
    assert_allclose(display.line_.get_ydata(), bins.accuracy[filled])
    assert_allclose(display.histogram_.get_data().values, bins.counts / len(y))
    assert f"DeepEnsembleClassifier (ECE = {bins.ece:.3f})" in legend_texts(display.ax_)
    # the histogram lies under the diagram
    assert display.hist_ax_.get_position().y1 <= display.ax_.get_position().y0


def test_reliability_display_from_predictions_on_given_axes(ensemble, data):
    X, y = data
    names = np.array(["cat", "dog", "eel"])
    proba = ensemble.predict_proba(X)
    _, ax = plt.subplots()
    first = ReliabilityDisplay.from_predictions(
        names[y], proba, labels=names, n_bins=8, strategy="quantile", name="first", ax=ax
    )
    bins = reliability_bins(y, proba, n_bins=8, strategy="quantile")
    assert_same_bins(first, bins)
    assert first.ax_ is ax and first.figure_ is ax.figure
    # a second classifier on the same axes shares the histogram axes and the diagonal
    second = ReliabilityDisplay.from_predictions(y, np.full_like(proba, 1 / 3), ax=ax)
    assert second.hist_ax_ is first.hist_ax_
    assert legend_texts(ax).count("Perfectly calibrated") == 1
    assert len(ax.figure.axes) == 2
    ax.figure.canvas.draw()


def test_reliability_plot_redraws_on_given_axes(ensemble, data):
    X, y = data
    display = ReliabilityDisplay.from_estimator(ensemble, X, y, name="ens")
    _, ax = plt.subplots()
    assert display.plot(ax=ax, name="again") is display
    assert display.ax_ is ax
    assert any(text.startswith("again (ECE") for text in legend_texts(ax))


def test_reliability_refuses_bad_input(ensemble, data):
    X, y = data
    with pytest.raises(ValueError, match="strategy"):
        reliability_diagram(y, ensemble.predict_proba(X), strategy="equal")
    with pytest.raises(ValueError, match="columns"):
        ReliabilityDisplay.from_predictions(y, ensemble.predict_proba(X)[:, :2])
    with pytest.raises(TypeError, match="predict_proba"):
        ReliabilityDisplay.from_estimator(object(), X, y)


# --------------------------------------------------------------------------- volume


def closed_form_heights(log_volumes):
    """h_c = exp(log V_c - log V_{c-1} + log c), log V_0 = 0, averaged over the simplexes."""
    heights = []
    for c in range(1, len(log_volumes) + 1):
        before = log_volumes[c - 2] if c > 1 else np.zeros(log_volumes.shape[1])
        heights.append(np.mean(np.exp(log_volumes[c - 1] - before + np.log(c))))
    return np.array(heights)


def test_connector_volumes_without_data(spro):
    volumes = connector_volumes(spro)
    assert_array_equal(volumes.n_connectors, [1, 2, 3])
    assert_array_equal(volumes.log_volumes, spro.complex_log_volumes_)
    assert volumes.log_volumes is not spro.complex_log_volumes_
    assert_allclose(volumes.heights, closed_form_heights(spro.complex_log_volumes_))
    assert volumes.accuracy is None


def test_connector_volumes_with_data_is_dimension_probe(spro, data):
    X, y = data
    volumes = connector_volumes(spro, X, y, n_samples=4, tolerance=0.5)
    probe = spro.dimension_probe(X, y, n_samples=4, tolerance=0.5)
    for key in ("n_connectors", "log_volumes", "heights", "accuracy"):
        assert_allclose(volumes[key], probe[key])
    assert volumes.collapsed_after == probe.collapsed_after
    assert_allclose(volumes.heights, closed_form_heights(spro.complex_log_volumes_))
    assert_allclose(connector_volumes(spro, tolerance=0.5).heights, probe.heights)
    assert connector_volumes(spro, tolerance=0.5).collapsed_after == probe.collapsed_after


def test_connector_volumes_finds_the_collapse(spro):
    # heights 2, 1, 0.003 → the third connector is collapsed at tolerance 1e-2; the second
    # simplex's volumes are e^0.1 times larger, which changes only its first height
    heights = np.array([2.0, 1.0, 0.003])
    log_v = np.cumsum(np.log(heights) - np.log([1, 2, 3]))
    fake = copy.copy(spro)
    fake.complex_log_volumes_ = np.column_stack([log_v, log_v + 0.1])
    volumes = connector_volumes(fake)
    assert_allclose(volumes.heights, [2.0 * (1 + np.exp(0.1)) / 2, 1.0, 0.003])
    assert volumes.collapsed_after == 2
    assert connector_volumes(fake, tolerance=0.001).collapsed_after is None
    display = VolumeDisplay.from_estimator(fake)
    assert any(line.get_xdata()[0] == 2.5 for line in display.ax_.get_lines())
    assert "collapse after 2 connector(s)" in legend_texts(display.ax_)


def test_volume_display(spro, data):
    X, y = data
    display = VolumeDisplay.from_estimator(spro, X, y, n_samples=4)
    volumes = connector_volumes(spro, X, y, n_samples=4)
    for key in ("n_connectors", "log_volumes", "heights", "accuracy"):
        assert_allclose(getattr(display, key), volumes[key])
    assert display.collapsed_after == volumes.collapsed_after
    assert display.figure_ is display.ax_.figure
    assert_allclose(display.lines_["log_volume"].get_ydata(), volumes.log_volumes.mean(axis=1))
    assert_allclose(display.lines_["log_height"].get_ydata(), np.log(volumes.heights))
    assert_allclose(display.lines_["accuracy"].get_ydata(), volumes.accuracy)
    assert display.accuracy_ax_ is not None
    display.figure_.canvas.draw()

    _, ax = plt.subplots()
    without = VolumeDisplay.from_estimator(spro, ax=ax)
    assert without.ax_ is ax and without.accuracy_ax_ is None and without.accuracy is None
    assert "accuracy" not in without.lines_
    ax.figure.canvas.draw()


def test_volume_refuses_other_estimators(spro, ensemble, data):
    X, y = data
    with pytest.raises(TypeError, match="SPROClassifier"):
        connector_volumes(ensemble)
    with pytest.raises(TypeError, match="SPROClassifier"):
        VolumeDisplay.from_estimator(ensemble, X, y)
    with pytest.raises(ValueError, match="both X and y"):
        connector_volumes(spro, X)
    with pytest.raises(ValueError, match="tolerance"):
        connector_volumes(spro, tolerance=1.5)


# --------------------------------------------------------------------------- decision regions


def grid_points(regions):
    return np.c_[regions.xx0.ravel(), regions.xx1.ravel()]


def test_decision_regions_against_the_estimator(ensemble, data):
    X, _ = data
    regions = decision_regions(ensemble, X, grid_resolution=30, members=[2, 0])
    assert regions.xx0.shape == regions.xx1.shape == (30, 30)
    assert regions.xx0.min() <= X[:, 0].min() and regions.xx0.max() >= X[:, 0].max()
    assert regions.xx1.min() <= X[:, 1].min() and regions.xx1.max() >= X[:, 1].max()
    corners = [regions.xx0.min(), regions.xx1.max()]
    assert_allclose(corners, [X[:, 0].min() - 0.5, X[:, 1].max() + 0.5], rtol=1e-6)
    points = grid_points(regions)
    member_proba = ensemble.predict_member_proba(points)
    expected = ensemble.classes_[member_proba[[2, 0]].argmax(axis=-1)]
    assert_array_equal(regions.member_labels, expected.reshape(2, 30, 30))
    assert_array_equal(regions.ensemble, ensemble.predict(points).reshape(30, 30))
    assert_array_equal(regions.members, [2, 0])
    assert regions.n_members == 3


def test_decision_regions_default_members(spro, data):
    X, _ = data
    regions = decision_regions(spro, X, grid_resolution=5)
    # six of the ten members, evenly spaced, the first and the last included
    assert_array_equal(regions.members, [0, 2, 4, 5, 7, 9])
    assert regions.member_labels.shape == (6, 5, 5)


@pytest.mark.parametrize("shape", [(200,), (200, 3), (200, 2, 1), (0, 2)])
def test_decision_regions_refuses_other_shapes(ensemble, shape):
    with pytest.raises(ValueError, match=rf"shape {re_shape(shape)}"):
        decision_regions(ensemble, np.zeros(shape))


def re_shape(shape):
    return str(shape).replace("(", r"\(").replace(")", r"\)")


def test_decision_regions_refuses_bad_arguments(ensemble, data):
    X, _ = data
    with pytest.raises(ValueError, match="grid_resolution"):
        decision_regions(ensemble, X, grid_resolution=1)
    with pytest.raises(ValueError, match="out of range"):
        decision_regions(ensemble, X, members=[3])
    with pytest.raises(ValueError, match="unique"):
        decision_regions(ensemble, X, members=[1, 1])
    with pytest.raises(ValueError, match="NaN"):
        decision_regions(ensemble, np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="labels"):
        DecisionRegionsDisplay.from_estimator(ensemble, X, np.full(len(X), 7))


def test_decision_regions_display(ensemble, data):
    X, y = data
    display = DecisionRegionsDisplay.from_estimator(ensemble, X, y, grid_resolution=20)
    regions = decision_regions(ensemble, X, grid_resolution=20)
    for key in ("xx0", "xx1", "ensemble", "member_labels", "members", "classes"):
        assert_array_equal(getattr(display, key), regions[key])
    assert len(display.axes_) == 4 and display.ax_ is display.axes_[-1]
    assert display.ax_.get_title() == "ensemble of 3"
    assert [a.get_title() for a in display.axes_[:-1]] == ["member 0", "member 1", "member 2"]
    assert display.figure_ is display.ax_.figure
    assert len(display.surfaces_) == 4
    display.figure_.canvas.draw()


def test_decision_regions_display_on_given_axes(ensemble, data):
    X, _ = data
    figure, axes = plt.subplots(1, 2)
    display = DecisionRegionsDisplay.from_estimator(
        ensemble, X, members=[1], grid_resolution=10, ax=axes
    )
    assert display.figure_ is figure
    assert display.ax_ is axes[1] and display.axes_[0] is axes[0]
    figure.canvas.draw()
    with pytest.raises(ValueError, match="needs as many axes"):
        display.plot(ax=axes[:1])


# --------------------------------------------------------------------------- matplotlib


def bare_displays():
    """One Display of each kind, built from arrays, not yet plotted."""
    edges = np.linspace(0, 1, 3)
    labels = np.zeros((2, 2), dtype=int)
    return [
        ReliabilityDisplay(
            edges, np.array([1, 1]), np.array([0.0, 1.0]), np.array([0.4, 0.9]), 0.25
        ),
        VolumeDisplay(np.arange(1, 3), np.zeros((2, 2)), np.ones(2), None),
        DecisionRegionsDisplay(
            labels, labels, labels, labels[None], np.array([0]), np.array([0, 1])
        ),
    ]


@pytest.mark.parametrize("display", bare_displays(), ids=lambda d: type(d).__name__)
def test_plot_without_matplotlib_names_the_extra(display, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    message = r"requires matplotlib: pip install 'simplexens\[plot\]'"
    with pytest.raises(ImportError, match=message):
        display.plot()


@pytest.mark.parametrize("display", bare_displays(), ids=lambda d: type(d).__name__)
def test_bare_displays_plot(display):
    assert display.plot() is display
    display.figure_.canvas.draw()


def test_importing_does_not_import_matplotlib():
    code = "import simplexens, simplexens.inspection, sys; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- unfitted


def test_unfitted_estimators_are_refused(data):
    X, y = data
    ensemble = DeepEnsembleClassifier(MLP)
    with pytest.raises(NotFittedError):
        ReliabilityDisplay.from_estimator(ensemble, X, y)
    with pytest.raises(NotFittedError):
        decision_regions(ensemble, X)
    with pytest.raises(NotFittedError):
        DecisionRegionsDisplay.from_estimator(ensemble, X, y)
    with pytest.raises(NotFittedError):
        connector_volumes(SPROClassifier(MLP))
    with pytest.raises(NotFittedError):
        VolumeDisplay.from_estimator(SPROClassifier(MLP), X, y)
