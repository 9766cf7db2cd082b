"""The dimensionality probe of SPRO: how the complex's volume grows, connector by connector."""

from __future__ import annotations

import numpy as np
from sklearn.utils import Bunch
from sklearn.utils.validation import check_is_fitted

from .._params import Integer, Real
from ._plot import _figure_and_axes, _matplotlib

__all__ = ["VolumeDisplay", "connector_volumes"]


def _check_spro(spro, caller: str) -> None:
    """``spro`` must be a fitted SPROClassifier (anything with its probe and log-volumes)."""
    if not hasattr(spro, "dimension_probe"):
        raise TypeError(
            f"{caller} needs a fitted SPROClassifier (an estimator with "
            f"complex_log_volumes_ and dimension_probe); got {type(spro).__name__}."
        )
    check_is_fitted(spro)
    if not hasattr(spro, "complex_log_volumes_"):
        raise TypeError(
            f"{caller} needs a fitted SPROClassifier; {type(spro).__name__} has no "
            "complex_log_volumes_."
        )


def _connector_heights(log_volumes: np.ndarray) -> np.ndarray:
    """Mean height over the simplexes of each connector above the earlier anchors' face.

    Connector ``c`` multiplies a simplex's volume by ``h_c / c``, so
    ``h_c = exp(log V_c - log V_{c-1} + log c)`` with ``log V_0 = 0``: the formula of
    :meth:`SPROClassifier.dimension_probe`.
    """
    counts = np.arange(1, len(log_volumes) + 1)
    previous = np.vstack([np.zeros((1, log_volumes.shape[1])), log_volumes[:-1]])
    return np.exp(log_volumes - previous + np.log(counts)[:, None]).mean(axis=1)


def connector_volumes(spro, X=None, y=None, *, tolerance=1e-2, n_samples=10):
    """Log-volumes, connector heights and collapse point of a fitted SPRO complex.

    With ``X`` and ``y`` this is :meth:`SPROClassifier.dimension_probe` (which also measures
    the accuracy on ``(X, y)`` of points of the complex at each connector count). Without
    them, it needs no data: the heights follow from the recorded ``complex_log_volumes_``
    by the same formula, and ``accuracy`` is None.

    Parameters
    ----------
    spro : SPROClassifier
        A fitted SPRO estimator.
    X : array-like of shape (n_samples, ...), default=None
        Inputs on which to measure accuracy (training data in the paper); give ``y`` too.
    y : array-like of shape (n_samples,), default=None
        Their labels.
    tolerance : float, default=1e-2
        A connector whose mean height is below ``tolerance`` times the first connector's
        counts as collapsed; in ``(0, 1)``.
    n_samples : int, default=10
        Points drawn over the complex at each connector count to measure accuracy (unused
        without ``X``).

    Returns
    -------
    Bunch
        n_connectors : ndarray of shape (C,)
            Connector counts ``1..C``.
        log_volumes : ndarray of shape (C, n_modes)
            log V of each simplex ``S(w_i, θ_0, ..., θ_{c-1})`` after connector ``c``.
        heights : ndarray of shape (C,)
            Height of each connector above the face of the earlier anchors, mean over the
            simplexes.
        collapsed_after : int or None
            The connector count after which the volume collapses (None if it never does).
        accuracy : ndarray of shape (C,) or None
            Mean accuracy on ``(X, y)`` of points of the complex with each connector count;
            None without ``X``, and for an ``SPRORegressor``, whose probe adds ``r2`` (the
            points' mean R²) instead; :class:`VolumeDisplay` then draws no score.

    Raises
    ------
    TypeError
        If ``spro`` is not an SPRO estimator.
    sklearn.exceptions.NotFittedError
        If it is not fitted.
    ValueError
        If only one of ``X`` and ``y`` is given, or ``tolerance``/``n_samples`` are out of
        range.

    See Also
    --------
    VolumeDisplay : Draws these arrays.

    References
    ----------
    .. [1] G. W. Benton, W. J. Maddox, S. Lotfi, A. G. Wilson. "Loss Surface Simplexes for
       Mode Connecting Volumes and Fast Ensembling." ICML 2021, section 4 and Figure 5.
    """
    _check_spro(spro, "connector_volumes")
    if (X is None) != (y is None):
        raise ValueError("connector_volumes needs both X and y (to measure accuracy) or neither.")
    if X is not None:
        probe = spro.dimension_probe(X, y, n_samples=n_samples, tolerance=tolerance)
        probe.log_volumes = np.array(probe.log_volumes)
        probe.setdefault("accuracy", None)  # a regressor's probe scores R² (``r2``)
        return probe
    Integer(1).check("n_samples", n_samples)
    Real(0, 1, "neither").check("tolerance", tolerance)
    log_volumes = np.array(spro.complex_log_volumes_, dtype=np.float64)
    heights = _connector_heights(log_volumes)
    low = np.flatnonzero(heights < tolerance * heights[0])
    return Bunch(
        n_connectors=np.arange(1, len(log_volumes) + 1),
        log_volumes=log_volumes,
        heights=heights,
        accuracy=None,
        collapsed_after=int(low[0]) if len(low) else None,
    )


class VolumeDisplay:
    """SPRO's dimensionality probe: log-volume and connector heights against connectors.

    As Figure 5 of [1]_: each simplex's log-volume (faint lines) and their mean, the log of
    each connector's height above the earlier anchors, a dotted line where the volume
    collapses (the connectors before it span low-loss directions: a lower bound on the
    dimension of the low-loss manifold), and, when measured, the accuracy of points of the
    complex on a second y axis.

    Parameters
    ----------
    n_connectors : ndarray of shape (C,)
        Connector counts.
    log_volumes : ndarray of shape (C, n_modes)
        log V of each simplex at each connector count.
    heights : ndarray of shape (C,)
        Mean height of each connector.
    collapsed_after : int or None
        Connector count after which the volume collapses.
    accuracy : ndarray of shape (C,) or None, default=None
        Accuracy at each connector count.
    estimator_name : str, default=None
        Name shown in the title.

    Attributes
    ----------
    lines_ : dict of str to matplotlib Line2D
        ``"log_volume"`` (the mean), ``"log_height"``, and ``"accuracy"`` when drawn.
    ax_ : matplotlib Axes
        Axes of the log-volumes and heights.
    accuracy_ax_ : matplotlib Axes or None
        Twin axes of the accuracy (None without accuracy).
    figure_ : matplotlib Figure

    See Also
    --------
    connector_volumes : Computes the arrays.

    References
    ----------
    .. [1] G. W. Benton, W. J. Maddox, S. Lotfi, A. G. Wilson. "Loss Surface Simplexes for
       Mode Connecting Volumes and Fast Ensembling." ICML 2021, Figure 5.

    Examples
    --------
    >>> from torch import nn
    >>> from sklearn.datasets import make_classification
    >>> from simplexens import SPROClassifier
    >>> from simplexens.inspection import VolumeDisplay
    >>> def MLP(n_features_in, n_classes):
    ...     return nn.Sequential(nn.Linear(n_features_in, 16), nn.ReLU(),
    ...                          nn.Linear(16, n_classes))
    >>> X, y = make_classification(200, 6, n_informative=4, n_classes=3, random_state=0)
    >>> spro = SPROClassifier(MLP, n_modes=2, n_connectors=3, max_epochs=3,
    ...                       epochs_per_connector=1, random_state=0).fit(X, y)
    >>> disp = VolumeDisplay.from_estimator(spro, X, y, n_samples=5)
    >>> disp.log_volumes.shape
    (3, 2)
    """

    def __init__(
        self,
        n_connectors,
        log_volumes,
        heights,
        collapsed_after,
        accuracy=None,
        *,
        estimator_name=None,
    ):
        self.n_connectors = n_connectors
        self.log_volumes = log_volumes
        self.heights = heights
        self.collapsed_after = collapsed_after
        self.accuracy = accuracy
        self.estimator_name = estimator_name

    def plot(self, ax=None, *, name=None):
        """Draw the probe.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; None creates a figure.
        name : str, default=None
            Name in the title; ``estimator_name`` if None.

        Returns
        -------
        display : VolumeDisplay
            This display, with ``ax_``, ``accuracy_ax_``, ``figure_`` and ``lines_`` set.
        """
        caller = f"{type(self).__name__}.plot"
        _matplotlib(caller)
        self.figure_, self.ax_ = _figure_and_axes(ax, caller)
        counts = np.asarray(self.n_connectors)
        log_volumes = np.asarray(self.log_volumes)
        for j in range(log_volumes.shape[1]):
            self.ax_.plot(
                counts,
                log_volumes[:, j],
                color="C0",
                alpha=0.3,
                linewidth=1,
                label="log V, each simplex" if j == 0 else "_nolegend_",
            )
        (mean,) = self.ax_.plot(
            counts, log_volumes.mean(axis=1), "o-", color="C0", label="log V, mean"
        )
        with np.errstate(divide="ignore"):
            log_heights = np.log(np.asarray(self.heights, dtype=np.float64))
        (height,) = self.ax_.plot(
            counts, log_heights, "s--", color="C1", label="log height of the connector"
        )
        self.lines_ = {"log_volume": mean, "log_height": height}
        if self.collapsed_after is not None:
            self.ax_.axvline(
                self.collapsed_after + 0.5,
                color="k",
                linestyle=":",
                label=f"collapse after {self.collapsed_after} connector(s)",
            )
        self.accuracy_ax_ = self._plot_accuracy(counts)
        self._decorate(name)
        return self

    def _plot_accuracy(self, counts):
        """The accuracy on a twin y axis, or None when there is none."""
        if self.accuracy is None:
            return None
        twin = self.ax_.twinx()
        (line,) = twin.plot(counts, self.accuracy, "^-", color="C2", label="accuracy")
        twin.set(ylabel="Accuracy", ylim=(0, 1.02))
        self.lines_["accuracy"] = line
        return twin

    def _decorate(self, name):
        name = self.estimator_name if name is None else name
        handles, labels = self.ax_.get_legend_handles_labels()
        if self.accuracy_ax_ is not None:
            more = self.accuracy_ax_.get_legend_handles_labels()
            handles, labels = handles + more[0], labels + more[1]
        self.ax_.legend(handles, labels, loc="best")
        self.ax_.set(xlabel="Connectors", ylabel="log volume, log height (nats)")
        self.ax_.locator_params(axis="x", integer=True)
        if name is not None:
            self.ax_.set_title(name)

    @classmethod
    def from_estimator(
        cls, spro, X=None, y=None, *, n_samples=10, tolerance=1e-2, name=None, ax=None
    ):
        """Dimensionality probe of a fitted SPROClassifier.

        Parameters
        ----------
        spro : SPROClassifier
            A fitted SPRO estimator.
        X : array-like of shape (n_samples, ...), default=None
            Inputs on which to measure the accuracy of points of the complex at each
            connector count; without them, no accuracy is drawn.
        y : array-like of shape (n_samples,), default=None
            Their labels.
        n_samples : int, default=10
            Points of the complex drawn at each connector count (with ``X``).
        tolerance : float, default=1e-2
            Relative height below which a connector counts as collapsed.
        name : str, default=None
            Title; the estimator's class name if None.
        ax : matplotlib Axes, default=None
            Axes to draw on; None creates a figure.

        Returns
        -------
        display : VolumeDisplay

        Raises
        ------
        TypeError
            If ``spro`` is not an SPRO estimator.
        sklearn.exceptions.NotFittedError
            If it is not fitted.
        """
        arrays = connector_volumes(spro, X, y, tolerance=tolerance, n_samples=n_samples)
        display = cls(
            arrays.n_connectors,
            arrays.log_volumes,
            arrays.heights,
            arrays.collapsed_after,
            arrays.accuracy,
            estimator_name=type(spro).__name__ if name is None else name,
        )
        return display.plot(ax=ax)
