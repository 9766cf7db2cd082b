"""Predictive intervals of uniform Gaussian mixtures and their coverage: regression calibration.

The mixture's CDF ``F(x) = (1/M) sum_m Phi((x - mu_m) / sigma_m)`` has no closed-form
inverse; its quantiles are found by a vectorised safeguarded Newton iteration. Shapes,
averaging over targets and validation are as described in :mod:`simplexens.metrics`.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr, ndtri
from sklearn.utils import Bunch

from ._regression import _INV_SQRT_2PI, _mixture_mean, _mixture_std
from ._validation import (
    _check_finite,
    _check_level_values,
    _check_levels,
    _check_members,
    _check_predictive,
    _check_same_shape,
    _check_y,
)

__all__ = ["coverage_curve", "interval_coverage", "mixture_interval", "mixture_quantiles"]

# Quantiles are solved to this many mixture standard deviations, or to this many units in
# the last place of the value when that is coarser (|mu| >> sigma leaves no finer float).
_QUANTILE_XTOL = 1e-10
_QUANTILE_ULPS = 16
# Bisection alone needs ~log2(width / tol) < 60 steps from the members' quantile bracket;
# rtsafe's rule (a Newton step must halve the step before last) at most doubles that.
_QUANTILE_MAX_ITER = 200


def _cdf_and_pdf(x, means, stds):
    z = (x - means) / stds
    return ndtr(z).mean(axis=0), (np.exp(-0.5 * z * z) / stds).mean(axis=0) * _INV_SQRT_2PI


def _solve_quantile(means, stds, level, scale):
    """``F^{-1}(level)`` of each mixture column, by safeguarded Newton (rtsafe).

    ``means`` and ``stds`` are ``(n_members, n)``, ``scale`` the mixture std ``(n,)``. The
    root is kept in a bracket ``[lo, hi]`` that starts at the smallest and largest member
    quantile (where every member CDF is <= and >= ``level``, hence so is their mean). A
    Newton step is taken when it stays in the bracket and at least halves the step before
    last, otherwise the bracket is bisected (Press et al., Numerical Recipes, ``rtsafe``).
    """
    member = means + stds * ndtri(level)
    lo, hi = member.min(axis=0), member.max(axis=0)
    x = np.clip(_mixture_mean(means) + scale * ndtri(level), lo, hi)
    ulp = np.finfo(np.float64).eps * np.maximum(np.abs(lo), np.abs(hi))
    tol = np.maximum(_QUANTILE_XTOL * scale, _QUANTILE_ULPS * ulp)
    step, step_before = hi - lo, hi - lo
    active = np.flatnonzero(hi - lo > tol)
    for _ in range(_QUANTILE_MAX_ITER):
        if active.size == 0:
            break
        a = active
        cdf, pdf = _cdf_and_pdf(x[a], means[:, a], stds[:, a])
        excess = cdf - level
        below = excess < 0.0
        lo[a] = np.where(below, x[a], lo[a])
        hi[a] = np.where(below, hi[a], x[a])
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = excess / pdf
            bisect = ~((x[a] - newton >= lo[a]) & (x[a] - newton <= hi[a]))
            bisect |= np.abs(2.0 * excess) > np.abs(step_before[a] * pdf)
        half = 0.5 * (hi[a] - lo[a])
        step_before[a] = step[a]
        step[a] = np.where(bisect, half, newton)
        x[a] = np.where(bisect, lo[a] + half, x[a] - newton)
        done = (np.abs(step[a]) <= tol[a]) | (hi[a] - lo[a] <= tol[a])
        active = a[~done]
    return x


def _flat_quantiles(means, stds, levels):
    """Quantiles at each level in ``levels``; member arrays validated, shape (M, n[, t])."""
    flat_means = means.reshape(means.shape[0], -1)
    flat_stds = stds.reshape(stds.shape[0], -1)
    scale = _mixture_std(flat_means, flat_stds, _mixture_mean(flat_means))
    # One level at a time keeps the working set at (n_members, n_values).
    return np.stack(
        [
            _solve_quantile(flat_means, flat_stds, level, scale).reshape(means.shape[1:])
            for level in levels
        ]
    )


def interval_coverage(y, lower, upper):
    """Fraction of targets that fall inside their predicted intervals.

    ``mean_i 1{lower_i <= y_i <= upper_i}`` over samples and targets (the average over
    targets of each target's coverage). Bounds may be infinite (one-sided intervals).

    Parameters
    ----------
    y : array-like of shape (n_samples,) or (n_samples, n_targets)
        Observed targets, finite.
    lower : array-like of the same shape
        Lower interval bounds; ``-inf`` allowed, NaN not.
    upper : array-like of the same shape
        Upper interval bounds, ``>= lower``; ``+inf`` allowed, NaN not.

    Returns
    -------
    float
        Observed coverage in ``[0, 1]``.

    Raises
    ------
    ValueError
        If the shapes differ or are not 1-D/2-D, an axis is empty, ``y`` is not finite, a
        bound is NaN, or a lower bound exceeds its upper bound.

    See Also
    --------
    mixture_interval : Central intervals of an ensemble's predictive mixture.

    Examples
    --------
    >>> interval_coverage([0.0, 2.0], [-1.0, -1.0], [1.0, 1.0])
    0.5
    """
    lower = _check_predictive(lower, "lower", allow_inf=True)
    upper = np.asarray(upper, dtype=np.float64)
    _check_same_shape(upper, "upper", lower, "lower")
    _check_finite(upper, "upper", allow_inf=True)
    y = _check_y(y, lower.shape, "lower")
    # NaN-free by now, so `>` is the whole check
    crossed = np.argwhere(lower > upper)
    if crossed.size:
        at = tuple(int(i) for i in crossed[0])
        raise ValueError(
            f"lower must not exceed upper: lower{list(at)} is {lower[at]:.10g} and "
            f"upper{list(at)} is {upper[at]:.10g}."
        )
    return float(np.mean((lower <= y) & (y <= upper)))


def mixture_quantiles(means, stds, levels):
    """Quantiles of the uniform mixture of the members' Gaussians.

    Solves ``F(x) = q`` with ``F(x) = (1/M) sum_m Phi((x - mu_m) / sigma_m)`` for every
    sample, target and level ``q``. The root is bracketed by the smallest and largest member
    quantile ``mu_m + sigma_m Phi^{-1}(q)`` and found by Newton steps safeguarded by
    bisection (Numerical Recipes' ``rtsafe``), vectorised over samples and targets. Iteration
    stops when the step or the bracket falls below ``1e-10 sigma*`` (``sigma*`` the mixture's
    standard deviation, see :func:`gaussian_mixture_moments`) or 16 units in the last place
    of the quantile, whichever is coarser; the returned values are accurate to that
    tolerance. For one member the result is the Gaussian quantile exactly. Where ``F`` is
    flat at ``q`` (members many standard deviations apart, ``q`` between their masses) the
    quantile is not unique and a point of the flat stretch is returned.

    Parameters
    ----------
    means : array-like of shape (n_members, n_samples[, n_targets])
        Members' predictive means.
    stds : array-like of the same shape as ``means``
        Members' predictive standard deviations, positive.
    levels : float or array-like of shape (n_levels,)
        Probabilities ``q`` in the open interval ``(0, 1)``.

    Returns
    -------
    ndarray of shape (n_levels, n_samples[, n_targets])
        ``F^{-1}(q)`` for each level; without the first axis if ``levels`` is a scalar.

    Raises
    ------
    ValueError
        On invalid member arrays (see :func:`gaussian_mixture_moments`), or if a level is
        outside ``(0, 1)`` or ``levels`` has more than one axis or none.

    See Also
    --------
    mixture_interval : The central interval between two of these quantiles.

    Examples
    --------
    >>> q = mixture_quantiles([[-1.0], [1.0]], [[1.0], [1.0]], [0.25, 0.5, 0.75])
    >>> q.ravel().round(4).tolist()
    [-1.0505, 0.0, 1.0505]
    """
    means, stds = _check_members(means, stds)
    scalar = np.ndim(levels) == 0
    levels = _check_levels(np.atleast_1d(levels) if scalar else levels)
    quantiles = _flat_quantiles(means, stds, levels)
    return quantiles[0] if scalar else quantiles


def mixture_interval(means, stds, level=0.95):
    """Central predictive interval of the uniform mixture at one level.

    The interval ``[F^{-1}((1 - level) / 2), F^{-1}((1 + level) / 2)]`` between two
    quantiles of :func:`mixture_quantiles`, which holds probability ``level`` under the
    mixture with equal mass in each tail.

    Parameters
    ----------
    means : array-like of shape (n_members, n_samples[, n_targets])
        Members' predictive means.
    stds : array-like of the same shape as ``means``
        Members' predictive standard deviations, positive.
    level : float, default=0.95
        Probability the interval holds, in ``(0, 1)``.

    Returns
    -------
    lower, upper : ndarray of shape (n_samples[, n_targets])
        The interval bounds.

    Raises
    ------
    ValueError
        As for :func:`mixture_quantiles`, or if ``level`` is not a scalar.

    Examples
    --------
    >>> lower, upper = mixture_interval([[0.0]], [[1.0]], 0.95)
    >>> round(float(lower[0]), 4), round(float(upper[0]), 4)
    (-1.96, 1.96)
    """
    if np.ndim(level) != 0:
        raise ValueError(f"level must be a scalar, got shape {np.shape(level)}.")
    level = float(_check_level_values(level, "level"))
    means, stds = _check_members(means, stds)
    lower, upper = _flat_quantiles(means, stds, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return lower, upper


def coverage_curve(y, means, stds, *, levels=None):
    """Observed coverage of the mixture's central intervals at each nominal level.

    The calibration curve of a probabilistic regressor: for each nominal ``level``, the
    fraction of targets inside the central interval of :func:`mixture_interval`. For a
    calibrated model it follows the diagonal (``coverage ~= levels``); below it the
    intervals are too narrow (overconfident), above it too wide. Because ``F`` is continuous
    and increasing, ``y`` lies in the central interval at ``level`` exactly when its
    probability integral transform ``u = F(y)`` satisfies ``|2u - 1| <= level``; the curve
    is computed that way, with one CDF evaluation per target and no quantile search.
    Coverage is averaged over samples and targets.

    Parameters
    ----------
    y : array-like of shape (n_samples,) or (n_samples, n_targets)
        Observed targets.
    means : array-like of shape (n_members, n_samples[, n_targets])
        Members' predictive means.
    stds : array-like of the same shape as ``means``
        Members' predictive standard deviations, positive.
    levels : array-like of shape (n_levels,), default=None
        Nominal levels in ``(0, 1)``; None means ``np.linspace(0.05, 0.95, 19)``.

    Returns
    -------
    sklearn.utils.Bunch
        With ``levels``, ndarray of shape (n_levels,): the nominal levels, as float64; and
        ``coverage``, ndarray of shape (n_levels,): the observed coverage at each level, in
        ``[0, 1]``.

    Raises
    ------
    ValueError
        As for :func:`gaussian_mixture_nll`, or if ``levels`` is not a non-empty 1-D array
        of values in ``(0, 1)``.

    References
    ----------
    .. [1] V. Kuleshov, N. Fenner and S. Ermon, "Accurate Uncertainties for Deep Learning
       Using Calibrated Regression", ICML 2018.
    .. [2] T. Gneiting, F. Balabdaoui and A. E. Raftery, "Probabilistic Forecasts,
       Calibration and Sharpness", JRSS B 69(2), 2007.

    Examples
    --------
    >>> curve = coverage_curve([0.0, 3.0], [[0.0, 0.0]], [[1.0, 1.0]], levels=[0.5, 0.999])
    >>> curve.coverage.tolist()
    [0.5, 1.0]
    """
    levels = _check_levels(np.linspace(0.05, 0.95, 19) if levels is None else levels)
    means, stds = _check_members(means, stds)
    y = _check_y(y, means.shape[1:], "means")
    pit = ndtr((y - means) / stds).mean(axis=0)
    distance = np.abs(2.0 * pit - 1.0).ravel()
    coverage = np.mean(distance[None, :] <= levels[:, None], axis=1)
    return Bunch(levels=levels, coverage=coverage)
