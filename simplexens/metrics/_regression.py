"""Scoring rules of Gaussian regressors and of uniform mixtures of them: NLL, CRPS, RMSE.

An ensemble regressor's members each predict a Gaussian ``N(mu_m(x), sigma_m(x)^2)``; the
ensemble predicts their uniform mixture ``p(y | x) = (1/M) sum_m N(y; mu_m, sigma_m^2)``
(Lakshminarayanan et al. 2017). Shapes, the averaging over targets and the validation rules
are described in the package docstring of :mod:`simplexens.metrics`.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp, ndtr
from sklearn.utils import Bunch

from ._validation import _check_gaussian, _check_members, _check_predictive, _check_y

__all__ = [
    "crps_gaussian",
    "crps_gaussian_mixture",
    "gaussian_mixture_moments",
    "gaussian_mixture_nll",
    "gaussian_nll",
    "rmse",
]

_LOG_2PI = float(np.log(2.0 * np.pi))
_INV_SQRT_2PI = float(1.0 / np.sqrt(2.0 * np.pi))
_INV_SQRT_PI = float(1.0 / np.sqrt(np.pi))


# -------------------------------------------------------------------------- mixture math


def _mixture_mean(means):
    """The members' mean per value, taken over the means divided by their largest
    magnitude: finite for any finite means (a plain sum of two 1e308 overflows)."""
    peak = np.abs(means).max(axis=0)
    peak = np.where(peak > 0, peak, 1.0)
    return peak * np.mean(means / peak, axis=0)


def _moments(means, stds):
    """Mixture mean, aleatoric and epistemic variance from validated member arrays."""
    mean = _mixture_mean(means)
    # avg(σ² + μ²) − μ*² written as avg σ² + avg (μ − μ*)²: the same number without the
    # cancellation of two large terms when |μ| >> σ.
    return mean, np.mean(stds**2, axis=0), np.mean((means - mean) ** 2, axis=0)


def _mixture_std(means, stds, mean):
    """The mixture's standard deviation, from member arrays scaled by their largest spread
    per value first: finite (and not 0) wherever the mixture's std is, even where its
    variance over- or underflows."""
    unit = np.maximum(stds.max(axis=0), np.abs(means - mean).max(axis=0))
    scaled = np.mean((stds / unit) ** 2, axis=0) + np.mean(((means - mean) / unit) ** 2, axis=0)
    return unit * np.sqrt(scaled)


def _gaussian_logpdf(y, mean, std):
    z = (y - mean) / std
    return -0.5 * (_LOG_2PI + z * z) - np.log(std)


def _abs_moment(mu, sigma):
    """``E|X|``, ``X ~ N(mu, sigma^2)``: ``sigma 2 phi(mu/sigma) + mu (2 Phi(mu/sigma) - 1)``."""
    z = mu / sigma
    return 2.0 * sigma * _INV_SQRT_2PI * np.exp(-0.5 * z * z) + mu * (2.0 * ndtr(z) - 1.0)


def _crps_mixture(y, means, stds):
    """Per-value CRPS of the uniform mixture, ``E|X - y| - E|X - X'| / 2``."""
    n_members = means.shape[0]
    to_y = _abs_moment(y - means, stds).mean(axis=0)
    between = np.zeros_like(to_y)
    # One row of the member-pair matrix at a time: O(M^2) work per value, O(M) memory; the
    # pair's std sqrt(s_m^2 + s_k^2) as hypot, which neither over- nor underflows.
    for m in range(n_members):
        between += _abs_moment(means[m] - means, np.hypot(stds[m], stds)).sum(axis=0)
    return to_y - between / (2.0 * n_members**2)


# ------------------------------------------------------------------------ public metrics


def gaussian_mixture_moments(means, stds):
    """Mean and variance of a uniform Gaussian mixture, split into its two sources.

    For members ``N(mu_m, sigma_m^2)``, ``m = 1..M``, the mixture has mean
    ``mu* = (1/M) sum_m mu_m`` and variance
    ``sigma*^2 = (1/M) sum_m (sigma_m^2 + mu_m^2) - mu*^2``, which splits into the aleatoric
    part ``(1/M) sum_m sigma_m^2`` (the noise the members predict) and the epistemic part
    ``(1/M) sum_m (mu_m - mu*)^2`` (their disagreement; a population variance, ``ddof=0``).

    Parameters
    ----------
    means : array-like of shape (n_members, n_samples) or (n_members, n_samples, n_targets)
        Members' predictive means ``mu_m``.
    stds : array-like of the same shape
        Members' predictive standard deviations ``sigma_m``, positive.

    Returns
    -------
    sklearn.utils.Bunch
        With keys ``mean``, ``std``, ``variance``, ``aleatoric`` and ``epistemic``, each an
        ndarray of shape ``means.shape[1:]``; ``variance == aleatoric + epistemic`` (computed
        so, which avoids the cancellation of the textbook form) and ``std = sqrt(variance)``,
        computed from the members divided by their largest spread so that it stays finite
        where the variance over- or underflows (stds beyond about ``1e154`` or below
        ``1e-154``).

    Raises
    ------
    ValueError
        If ``means`` is not 2-D or 3-D, ``stds`` has another shape, an axis is empty, a
        value is NaN or infinite, or a standard deviation is not positive.

    References
    ----------
    .. [1] B. Lakshminarayanan, A. Pritzel and C. Blundell, "Simple and Scalable Predictive
       Uncertainty Estimation using Deep Ensembles", NeurIPS 2017.

    Examples
    --------
    >>> moments = gaussian_mixture_moments([[0.0], [2.0]], [[1.0], [1.0]])
    >>> moments.mean.tolist(), moments.aleatoric.tolist(), moments.epistemic.tolist()
    ([1.0], [1.0], [1.0])
    """
    means, stds = _check_members(means, stds)
    with np.errstate(over="ignore", under="ignore"):  # variances beyond float64: inf or 0
        mean, aleatoric, epistemic = _moments(means, stds)
        variance = aleatoric + epistemic
    return Bunch(
        mean=mean,
        std=_mixture_std(means, stds, mean),
        variance=variance,
        aleatoric=aleatoric,
        epistemic=epistemic,
    )


def gaussian_nll(y, mean, std):
    """Mean negative log density of ``y`` under one Gaussian per value.

    ``-mean_i log N(y_i; mu_i, sigma_i^2)`` with
    ``-log N(y; mu, sigma^2) = log(sigma) + log(2 pi) / 2 + (y - mu)^2 / (2 sigma^2)``,
    averaged over samples and targets.

    Parameters
    ----------
    y : array-like of shape (n_samples,) or (n_samples, n_targets)
        Observed targets.
    mean : array-like of the same shape
        Predictive means ``mu``.
    std : array-like of the same shape
        Predictive standard deviations ``sigma``, positive.

    Returns
    -------
    float
        Mean negative log predictive density in nats (lower is better; may be negative).

    Raises
    ------
    ValueError
        If the shapes differ or are not 1-D/2-D, an axis is empty, a value is NaN or
        infinite, or a standard deviation is not positive.

    References
    ----------
    .. [1] T. Gneiting and A. E. Raftery, "Strictly Proper Scoring Rules, Prediction, and
       Estimation", JASA 102(477), 2007.

    Examples
    --------
    >>> round(gaussian_nll([0.0], [0.0], [1.0]), 4)
    0.9189
    """
    y, mean, std = _check_gaussian(y, mean, std)
    return float(-np.mean(_gaussian_logpdf(y, mean, std)))


def gaussian_mixture_nll(y, means, stds):
    """Mean negative log density of ``y`` under the uniform mixture of the members.

    ``-mean_i log[(1/M) sum_m N(y_i; mu_mi, sigma_mi^2)]``, computed as
    ``log M - logsumexp_m log N(y_i; mu_mi, sigma_mi^2)`` so that values far in every
    member's tail give a large finite loss instead of ``log 0``. Averaged over samples and
    targets.

    Parameters
    ----------
    y : array-like of shape (n_samples,) or (n_samples, n_targets)
        Observed targets.
    means : array-like of shape (n_members, n_samples[, n_targets])
        Members' predictive means.
    stds : array-like of the same shape as ``means``
        Members' predictive standard deviations, positive.

    Returns
    -------
    float
        Mean negative log predictive density in nats (lower is better).

    Raises
    ------
    ValueError
        On invalid member arrays (see :func:`gaussian_mixture_moments`), or if ``y`` is not
        finite or its shape is not ``means.shape[1:]``.

    References
    ----------
    .. [1] B. Lakshminarayanan, A. Pritzel and C. Blundell, "Simple and Scalable Predictive
       Uncertainty Estimation using Deep Ensembles", NeurIPS 2017.

    Examples
    --------
    >>> round(gaussian_mixture_nll([0.0], [[0.0], [0.0]], [[1.0], [1.0]]), 4)
    0.9189
    """
    means, stds = _check_members(means, stds)
    y = _check_y(y, means.shape[1:], "means")
    log_density = logsumexp(_gaussian_logpdf(y, means, stds), axis=0) - np.log(means.shape[0])
    return float(-np.mean(log_density))


def crps_gaussian(y, mean, std):
    """Continuous ranked probability score of one Gaussian per value, in closed form.

    ``CRPS(F, y) = int (F(x) - 1{x >= y})^2 dx``, which for ``F = N(mu, sigma^2)`` is
    ``sigma [z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)]`` with ``z = (y - mu) / sigma``
    (Gneiting and Raftery 2007, eq. 21). Averaged over samples and targets.

    Parameters
    ----------
    y : array-like of shape (n_samples,) or (n_samples, n_targets)
        Observed targets.
    mean : array-like of the same shape
        Predictive means ``mu``.
    std : array-like of the same shape
        Predictive standard deviations ``sigma``, positive.

    Returns
    -------
    float
        Mean CRPS, in the units of ``y`` (lower is better; 0 only for a point mass at y).

    Raises
    ------
    ValueError
        As for :func:`gaussian_nll`.

    References
    ----------
    .. [1] T. Gneiting and A. E. Raftery, "Strictly Proper Scoring Rules, Prediction, and
       Estimation", JASA 102(477), 2007.

    Examples
    --------
    >>> round(crps_gaussian([0.0], [0.0], [1.0]), 4)
    0.2337
    """
    y, mean, std = _check_gaussian(y, mean, std)
    z = (y - mean) / std
    crps = std * (z * (2.0 * ndtr(z) - 1.0) + 2.0 * _INV_SQRT_2PI * np.exp(-0.5 * z * z))
    return float(np.mean(crps - std * _INV_SQRT_PI))


def crps_gaussian_mixture(y, means, stds):
    """Continuous ranked probability score of the uniform mixture, in closed form.

    By the kernel form ``CRPS(F, y) = E|X - y| - E|X - X'| / 2`` (X, X' independent draws
    from F; Gneiting and Raftery 2007) and ``E|N(mu, s^2)| = A(mu, s) = s 2 phi(mu/s) +
    mu (2 Phi(mu/s) - 1)``, the mixture of ``M`` members has (Grimit et al. 2006)

    ``CRPS = (1/M) sum_m A(y - mu_m, sigma_m)
    - 1/(2 M^2) sum_{m,k} A(mu_m - mu_k, sqrt(sigma_m^2 + sigma_k^2))``.

    The double sum runs over all ``M^2`` member pairs: ``O(M^2)`` work per value, done one
    member row at a time so that memory stays ``O(M n_samples n_targets)``. For one member
    this is :func:`crps_gaussian`. Averaged over samples and targets.

    Parameters
    ----------
    y : array-like of shape (n_samples,) or (n_samples, n_targets)
        Observed targets.
    means : array-like of shape (n_members, n_samples[, n_targets])
        Members' predictive means.
    stds : array-like of the same shape as ``means``
        Members' predictive standard deviations, positive.

    Returns
    -------
    float
        Mean CRPS, in the units of ``y`` (lower is better).

    Raises
    ------
    ValueError
        As for :func:`gaussian_mixture_nll`.

    References
    ----------
    .. [1] T. Gneiting and A. E. Raftery, "Strictly Proper Scoring Rules, Prediction, and
       Estimation", JASA 102(477), 2007.
    .. [2] E. P. Grimit, T. Gneiting, V. J. Berrocal and N. A. Johnson, "The Continuous
       Ranked Probability Score for Circular Variables and its Application to Mesoscale
       Forecast Ensemble Verification", Q. J. R. Meteorol. Soc. 132(621C), 2006.

    Examples
    --------
    >>> round(crps_gaussian_mixture([0.0], [[-1.0], [1.0]], [[0.5], [0.5]]), 4)
    0.3672
    """
    means, stds = _check_members(means, stds)
    y = _check_y(y, means.shape[1:], "means")
    return float(np.mean(_crps_mixture(y, means, stds)))


def rmse(y, mean):
    """Root mean squared error of the predictive mean, averaged over targets.

    ``mean_j sqrt(mean_i (y_ij - mu_ij)^2)``: each target's RMSE, then their average, as
    :func:`sklearn.metrics.root_mean_squared_error` with ``multioutput="uniform_average"``.

    Parameters
    ----------
    y : array-like of shape (n_samples,) or (n_samples, n_targets)
        Observed targets.
    mean : array-like of the same shape
        Predictions, e.g. the mixture mean of :func:`gaussian_mixture_moments`.

    Returns
    -------
    float
        RMSE, in the units of ``y`` (lower is better).

    Raises
    ------
    ValueError
        If the shapes differ or are not 1-D/2-D, an axis is empty, or a value is NaN or
        infinite.

    Examples
    --------
    >>> rmse([0.0, 0.0], [3.0, 4.0]).__round__(4)
    3.5355
    """
    mean = _check_predictive(mean, "mean")
    y = _check_y(y, mean.shape, "mean")
    # Each target's values over their largest magnitude first: neither the residuals nor
    # their squares overflow.
    unit = np.maximum(np.abs(y).max(axis=0), np.abs(mean).max(axis=0))
    unit = np.where(unit > 0, unit, 1.0)
    residual = y / unit - mean / unit
    return float(np.mean(unit * np.sqrt(np.mean(residual**2, axis=0))))
