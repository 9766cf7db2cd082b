"""Coverage curves of probabilistic regressors: observed against nominal interval coverage.

The numbers are :func:`simplexens.metrics.coverage_curve`'s; this module only draws them.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ..metrics import coverage_curve
from ..metrics._validation import _single_target_like
from ._plot import _figure_and_axes, _matplotlib

__all__ = ["CoverageDisplay"]

_REFERENCE_LABEL = "Perfectly calibrated"


def _member_distribution(estimator, X, caller: str):
    """``estimator.predict_member_distribution(X)``, checked to be a ``(means, stds)`` pair."""
    predict = getattr(estimator, "predict_member_distribution", None)
    if not callable(predict):
        raise TypeError(
            f"{caller} needs a regressor with predict_member_distribution(X) returning "
            f"(means, stds); {type(estimator).__name__} has none."
        )
    if hasattr(estimator, "fit"):
        check_is_fitted(estimator)
    result = predict(X)
    if not isinstance(result, tuple | list) or len(result) != 2:
        raise TypeError(
            f"{caller}: {type(estimator).__name__}.predict_member_distribution must return "
            f"a pair (means, stds), got {type(result).__name__}."
        )
    return result


class CoverageDisplay:
    """Coverage curve of a probabilistic regressor: a reliability diagram for regression.

    For each nominal level, the fraction of targets that fall inside the predictive
    distribution's central interval at that level, drawn against the level, with the
    diagonal of perfect calibration. Below the diagonal the intervals are too narrow
    (overconfident), above it too wide. Create it with :meth:`from_estimator` or
    :meth:`from_predictions`; several regressors drawn on the same ``ax`` share the axes
    and the diagonal.

    Parameters
    ----------
    levels : ndarray of shape (n_levels,)
        Nominal coverage levels, in ``(0, 1)``.
    coverage : ndarray of shape (n_levels,)
        Observed coverage at each level.
    estimator_name : str, default=None
        Name shown in the legend.

    Attributes
    ----------
    line_ : matplotlib Line2D
        Observed against nominal coverage.
    ax_ : matplotlib Axes
        Axes of the curve.
    figure_ : matplotlib Figure
        Figure holding it.

    See Also
    --------
    simplexens.metrics.coverage_curve : Computes the arrays.
    simplexens.metrics.mixture_interval : The intervals whose coverage is measured.
    ReliabilityDisplay : The classification counterpart.

    References
    ----------
    .. [1] V. Kuleshov, N. Fenner and S. Ermon, "Accurate Uncertainties for Deep Learning
       Using Calibrated Regression", ICML 2018.

    Examples
    --------
    >>> import numpy as np
    >>> from matplotlib.figure import Figure
    >>> from simplexens.inspection import CoverageDisplay
    >>> rng = np.random.default_rng(0)
    >>> means, stds = rng.normal(size=(3, 500)), np.ones((3, 500))
    >>> y = means[0] + rng.normal(size=500)  # one member is right, the others are noise
    >>> ax = Figure().subplots()
    >>> disp = CoverageDisplay.from_predictions(y, means, stds, levels=[0.5, 0.9], ax=ax)
    >>> disp.levels.tolist(), bool(disp.ax_ is ax)
    ([0.5, 0.9], True)
    """

    def __init__(self, levels, coverage, *, estimator_name=None):
        self.levels = levels
        self.coverage = coverage
        self.estimator_name = estimator_name

    def plot(self, ax=None, *, name=None):
        """Draw the curve.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; None creates a new figure.
        name : str, default=None
            Name in the legend; ``estimator_name`` if None.

        Returns
        -------
        display : CoverageDisplay
            This display, with ``ax_``, ``figure_`` and ``line_`` set; the line joins
            the points in increasing order of level.
        """
        caller = f"{type(self).__name__}.plot"
        _matplotlib(caller)
        self.figure_, self.ax_ = _figure_and_axes(ax, caller, figsize=(5, 5))
        name = self.estimator_name if name is None else name

        if _REFERENCE_LABEL not in self.ax_.get_legend_handles_labels()[1]:
            self.ax_.plot([0, 1], [0, 1], "k:", label=_REFERENCE_LABEL)
        order = np.argsort(np.asarray(self.levels), kind="stable")  # one line, left to right
        (self.line_,) = self.ax_.plot(
            np.asarray(self.levels)[order],
            np.asarray(self.coverage)[order],
            marker="o",
            label="Observed" if name is None else name,
        )
        self.ax_.set(
            xlim=(0, 1),
            ylim=(0, 1),
            xlabel="Nominal coverage (central interval level)",
            ylabel="Observed coverage",
        )
        self.ax_.legend(loc="upper left")
        return self

    @classmethod
    def from_estimator(cls, estimator, X, y, *, levels=None, name=None, ax=None):
        """Coverage curve of a fitted ensemble regressor on ``(X, y)``.

        Parameters
        ----------
        estimator : object
            A fitted regressor whose method ``predict_member_distribution(X)`` returns a
            pair ``(means, stds)`` of arrays of shape ``(n_members, n_samples)`` or
            ``(n_members, n_samples, n_targets)``: each member's predictive mean and
            standard deviation (positive), the ensemble's predictive distribution being
            their uniform Gaussian mixture. Any object with that method is accepted; one
            that also has ``fit`` is checked with
            :func:`sklearn.utils.validation.check_is_fitted`.
        X : array-like of shape (n_samples, ...)
            Inputs.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Their true targets.
        levels : array-like of shape (n_levels,), default=None
            Nominal levels in ``(0, 1)``; None means ``np.linspace(0.05, 0.95, 19)``.
        name : str, default=None
            Name in the legend; the estimator's class name if None.
        ax : matplotlib Axes, default=None
            Axes to draw on; None creates a figure.

        Returns
        -------
        display : CoverageDisplay

        Raises
        ------
        TypeError
            If the estimator has no ``predict_member_distribution``, or it does not
            return a pair.
        sklearn.exceptions.NotFittedError
            If the estimator has ``fit`` and is not fitted.
        ValueError
            If the predictions or ``y`` are invalid (see
            :func:`simplexens.metrics.coverage_curve`).
        """
        means, stds = _member_distribution(estimator, X, f"{cls.__name__}.from_estimator")
        return cls.from_predictions(
            _single_target_like(y, means),
            means,
            stds,
            levels=levels,
            name=type(estimator).__name__ if name is None else name,
            ax=ax,
        )

    @classmethod
    def from_predictions(cls, y, means, stds, *, levels=None, name=None, ax=None):
        """Coverage curve from true targets and the members' Gaussian predictions.

        Parameters
        ----------
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            True targets.
        means : array-like of shape (n_members, n_samples[, n_targets])
            Members' predictive means.
        stds : array-like of the same shape as ``means``
            Members' predictive standard deviations, positive.
        levels : array-like of shape (n_levels,), default=None
            Nominal levels in ``(0, 1)``; None means ``np.linspace(0.05, 0.95, 19)``.
        name : str, default=None
            Name in the legend.
        ax : matplotlib Axes, default=None
            Axes to draw on; None creates a figure.

        Returns
        -------
        display : CoverageDisplay

        Raises
        ------
        ValueError
            If the inputs are invalid (see :func:`simplexens.metrics.coverage_curve`).
        """
        curve = coverage_curve(y, means, stds, levels=levels)
        return cls(curve.levels, curve.coverage, estimator_name=name).plot(ax=ax)
