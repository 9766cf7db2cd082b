"""Reliability diagrams: top-label accuracy against confidence, with the confidence histogram.

The numbers are :func:`simplexens.metrics.reliability_bins`'s; this module only arranges and
draws them.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils import Bunch
from sklearn.utils.validation import check_is_fitted

from ..metrics import reliability_bins
from ._plot import _axes_below, _figure_and_axes, _matplotlib

__all__ = ["ReliabilityDisplay", "reliability_diagram"]

#: Label of the histogram axes, by which later plots on the same axes find it.
_HISTOGRAM_LABEL = "simplexens reliability histogram"

_REFERENCE_LABEL = "Perfectly calibrated"


def reliability_diagram(y_true, y_proba, *, n_bins=15, strategy="uniform", labels=None):
    """The arrays of a top-label reliability diagram.

    Each sample's confidence is its largest class probability and it counts as correct when
    that class is the true one (multiclass, top-label calibration). Samples are binned by
    confidence exactly as :func:`simplexens.metrics.reliability_bins` does, which computes
    every number returned here.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels; any type.
    y_proba : array-like of shape (n_samples, n_classes)
        Predicted probabilities; column ``k`` belongs to ``labels[k]``.
    n_bins : int, default=15
        Number of confidence bins, at least 1.
    strategy : {"uniform", "quantile"}, default="uniform"
        Equal-width bins on ``[0, 1]``, or bins holding about equal numbers of samples.
    labels : array-like of shape (n_classes,), default=None
        Class labels in column order (e.g. ``estimator.classes_``); ``np.unique(y_true)``
        if None.

    Returns
    -------
    Bunch
        edges : ndarray of shape (n_bins + 1,)
            Bin edges; bin ``b`` is ``(edges[b], edges[b + 1]]``.
        counts : ndarray of shape (n_bins,), dtype int
            Samples per bin: the histogram of confidence.
        frequency : ndarray of shape (n_bins,)
            ``counts / n_samples``.
        accuracy : ndarray of shape (n_bins,)
            Fraction of correct top-label predictions per bin (NaN if empty).
        confidence : ndarray of shape (n_bins,)
            Mean top-label confidence per bin (NaN if empty).
        ece : float
            Expected calibration error.

    Raises
    ------
    ValueError
        On invalid shapes, labels or probabilities, ``n_bins < 1`` or an unknown
        ``strategy`` (see :func:`simplexens.metrics.reliability_bins`).

    See Also
    --------
    ReliabilityDisplay : Draws these arrays.
    simplexens.metrics.reliability_bins : Computes them.

    Examples
    --------
    >>> from simplexens.inspection import reliability_diagram
    >>> d = reliability_diagram([0, 1, 1], [[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]], n_bins=2)
    >>> d.counts.tolist(), d.accuracy.tolist()
    ([0, 3], [nan, 0.6666666666666666])
    >>> round(d.ece, 4)
    0.1333
    """
    bins = reliability_bins(y_true, y_proba, n_bins=n_bins, strategy=strategy, labels=labels)
    return Bunch(
        edges=bins.edges,
        counts=bins.counts,
        frequency=bins.counts / bins.counts.sum(),
        accuracy=bins.accuracy,
        confidence=bins.confidence,
        ece=bins.ece,
    )


class ReliabilityDisplay:
    """Reliability diagram of a multiclass classifier (top-label), with its ECE.

    The upper axes show each non-empty bin's accuracy against its mean confidence and the
    diagonal of perfect calibration; the lower axes show the histogram of confidence (the
    fraction of samples in each bin). The expected calibration error is given in the
    legend. Create it with :meth:`from_estimator` or :meth:`from_predictions`; several
    classifiers drawn on the same ``ax`` share the axes and the histogram axes.

    Parameters
    ----------
    edges : ndarray of shape (n_bins + 1,)
        Bin edges.
    counts : ndarray of shape (n_bins,)
        Samples per bin.
    accuracy : ndarray of shape (n_bins,)
        Accuracy per bin (NaN if empty).
    confidence : ndarray of shape (n_bins,)
        Mean confidence per bin (NaN if empty).
    ece : float
        Expected calibration error.
    estimator_name : str, default=None
        Name shown in the legend.

    Attributes
    ----------
    line_ : matplotlib Line2D
        Accuracy against confidence.
    histogram_ : matplotlib StepPatch
        The confidence histogram.
    ax_ : matplotlib Axes
        Axes of the diagram.
    hist_ax_ : matplotlib Axes
        Axes of the histogram, below ``ax_`` and sharing its x axis.
    figure_ : matplotlib Figure
        Figure holding both.

    See Also
    --------
    reliability_diagram : Computes the arrays.
    sklearn.calibration.CalibrationDisplay : The binary, positive-class counterpart.

    References
    ----------
    .. [1] C. Guo, G. Pleiss, Y. Sun and K. Q. Weinberger, "On Calibration of Modern
       Neural Networks", ICML 2017.

    Examples
    --------
    >>> from torch import nn
    >>> from sklearn.datasets import make_classification
    >>> from simplexens import DeepEnsembleClassifier
    >>> from simplexens.inspection import ReliabilityDisplay
    >>> def MLP(n_features_in, n_classes):
    ...     return nn.Sequential(nn.Linear(n_features_in, 16), nn.ReLU(),
    ...                          nn.Linear(16, n_classes))
    >>> X, y = make_classification(300, 6, n_informative=4, n_classes=3, random_state=0)
    >>> clf = DeepEnsembleClassifier(MLP, n_estimators=3, max_epochs=5,
    ...                              random_state=0).fit(X[:200], y[:200])
    >>> disp = ReliabilityDisplay.from_estimator(clf, X[200:], y[200:], n_bins=10)
    >>> disp.counts.sum()
    np.int64(100)
    """

    def __init__(self, edges, counts, accuracy, confidence, ece, *, estimator_name=None):
        self.edges = edges
        self.counts = counts
        self.accuracy = accuracy
        self.confidence = confidence
        self.ece = ece
        self.estimator_name = estimator_name

    def plot(self, ax=None, *, name=None):
        """Draw the diagram.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes for the diagram (the histogram takes a strip carved from its bottom, or
            the strip an earlier plot on ``ax`` made). None creates a new figure.
        name : str, default=None
            Name in the legend; ``estimator_name`` if None.

        Returns
        -------
        display : ReliabilityDisplay
            This display, with ``ax_``, ``hist_ax_``, ``figure_``, ``line_`` and
            ``histogram_`` set.
        """
        caller = f"{type(self).__name__}.plot"
        _matplotlib(caller)
        self.figure_, self.ax_ = _figure_and_axes(ax, caller, figsize=(5, 6))
        self.hist_ax_ = _axes_below(self.ax_, _HISTOGRAM_LABEL, caller=caller)
        name = self.estimator_name if name is None else name
        label = f"ECE = {self.ece:.3f}" if name is None else f"{name} (ECE = {self.ece:.3f})"

        if _REFERENCE_LABEL not in self.ax_.get_legend_handles_labels()[1]:
            self.ax_.plot([0, 1], [0, 1], "k:", label=_REFERENCE_LABEL)
        counts = np.asarray(self.counts)
        filled = counts > 0
        confidence = np.asarray(self.confidence)[filled]
        accuracy = np.asarray(self.accuracy)[filled]
        (self.line_,) = self.ax_.plot(confidence, accuracy, marker="s", label=label)
        self.histogram_ = self.hist_ax_.stairs(
            counts / counts.sum(),
            self.edges,
            fill=True,
            alpha=0.5,
            color=self.line_.get_color(),
            label=label,
        )

        self.ax_.set(xlim=(0, 1), ylim=(0, 1), ylabel="Accuracy")
        self.ax_.tick_params(labelbottom=False)
        self.ax_.legend(loc="upper left")
        self.hist_ax_.set(xlabel="Confidence (top-label probability)", ylabel="Fraction")
        return self

    @classmethod
    def from_estimator(cls, estimator, X, y, *, n_bins=15, strategy="uniform", name=None, ax=None):
        """Reliability diagram of a fitted classifier on ``(X, y)``.

        Parameters
        ----------
        estimator : fitted classifier
            Any classifier with ``predict_proba`` and ``classes_`` (a simplexens ensemble
            or a scikit-learn classifier).
        X : array-like of shape (n_samples, ...)
            Inputs.
        y : array-like of shape (n_samples,)
            Their true labels.
        n_bins : int, default=15
            Number of confidence bins.
        strategy : {"uniform", "quantile"}, default="uniform"
            Equal-width or equal-mass bins.
        name : str, default=None
            Name in the legend; the estimator's class name if None.
        ax : matplotlib Axes, default=None
            Axes to draw on; None creates a figure.

        Returns
        -------
        display : ReliabilityDisplay

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If ``estimator`` is not fitted.
        TypeError
            If it has no ``predict_proba``.
        """
        if not hasattr(estimator, "predict_proba"):
            raise TypeError(
                f"{cls.__name__}.from_estimator needs a classifier with predict_proba; "
                f"{type(estimator).__name__} has none."
            )
        check_is_fitted(estimator)
        y_proba = estimator.predict_proba(X)
        return cls.from_predictions(
            y,
            y_proba,
            labels=estimator.classes_,
            n_bins=n_bins,
            strategy=strategy,
            name=type(estimator).__name__ if name is None else name,
            ax=ax,
        )

    @classmethod
    def from_predictions(
        cls,
        y_true,
        y_proba,
        *,
        labels=None,
        n_bins=15,
        strategy="uniform",
        name=None,
        ax=None,
    ):
        """Reliability diagram from true labels and predicted probabilities.

        Parameters
        ----------
        y_true : array-like of shape (n_samples,)
            True labels.
        y_proba : array-like of shape (n_samples, n_classes)
            Predicted probabilities; column ``k`` belongs to ``labels[k]``.
        labels : array-like of shape (n_classes,), default=None
            Class labels in column order; ``np.unique(y_true)`` if None.
        n_bins : int, default=15
            Number of confidence bins.
        strategy : {"uniform", "quantile"}, default="uniform"
            Equal-width or equal-mass bins.
        name : str, default=None
            Name in the legend.
        ax : matplotlib Axes, default=None
            Axes to draw on; None creates a figure.

        Returns
        -------
        display : ReliabilityDisplay

        Examples
        --------
        >>> from simplexens.inspection import ReliabilityDisplay
        >>> disp = ReliabilityDisplay.from_predictions(
        ...     ["a", "b", "b"], [[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]], n_bins=5)
        >>> round(disp.ece, 4)
        0.2
        """
        arrays = reliability_diagram(
            y_true, y_proba, n_bins=n_bins, strategy=strategy, labels=labels
        )
        display = cls(
            arrays.edges,
            arrays.counts,
            arrays.accuracy,
            arrays.confidence,
            arrays.ece,
            estimator_name=name,
        )
        return display.plot(ax=ax)
