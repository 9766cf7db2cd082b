"""Top-label calibration of classifiers: reliability bins, ECE and adaptive ECE."""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np
from sklearn.utils import check_scalar

from ._validation import _check_proba

__all__ = ["ReliabilityBins", "adaptive_ece", "expected_calibration_error", "reliability_bins"]

_STRATEGIES = ("uniform", "quantile")


class ReliabilityBins(NamedTuple):
    """Per-bin statistics of a top-label reliability diagram.

    Attributes
    ----------
    edges : ndarray of shape (n_bins + 1,)
        Bin edges; bin ``b`` is the interval ``(edges[b], edges[b + 1]]``,
        and the first bin also contains ``edges[0]``.
    counts : ndarray of shape (n_bins,), dtype int
        Number of samples whose confidence falls in each bin.
    accuracy : ndarray of shape (n_bins,)
        Fraction of correct top-label predictions per bin (NaN if empty).
    confidence : ndarray of shape (n_bins,)
        Mean top-label confidence per bin (NaN if empty).
    ece : float
        Expected calibration error, ``sum_b (counts[b] / n) *
        |accuracy[b] - confidence[b]|`` over the non-empty bins.
    """

    edges: np.ndarray
    counts: np.ndarray
    accuracy: np.ndarray
    confidence: np.ndarray
    ece: float


def _reliability(y_index, y_proba, n_bins, strategy):
    """Compute :class:`ReliabilityBins` from validated inputs."""
    check_scalar(n_bins, "n_bins", target_type=numbers.Integral, min_val=1)
    if strategy not in _STRATEGIES:
        raise ValueError(f"strategy must be one of {_STRATEGIES}, got {strategy!r}.")
    confidence = y_proba.max(axis=1)
    correct = y_proba.argmax(axis=1) == y_index
    grid = np.linspace(0.0, 1.0, n_bins + 1)
    if strategy == "uniform":
        edges = grid
    else:
        edges = np.maximum.accumulate(np.quantile(confidence, grid))
        edges[0], edges[-1] = 0.0, 1.0
    # side="left" puts a value equal to edges[b + 1] into bin b: bins are (lo, hi].
    bin_id = (np.searchsorted(edges, confidence, side="left") - 1).clip(0, n_bins - 1)
    counts = np.bincount(bin_id, minlength=n_bins)
    hits = np.bincount(bin_id, weights=correct, minlength=n_bins)
    mass = np.bincount(bin_id, weights=confidence, minlength=n_bins)
    nonempty = counts > 0
    accuracy = np.divide(hits, counts, out=np.full(n_bins, np.nan), where=nonempty)
    mean_conf = np.divide(mass, counts, out=np.full(n_bins, np.nan), where=nonempty)
    # (n_b / n) * |acc_b - conf_b| == |hits_b - mass_b| / n, and 0 for empty bins.
    ece = float(np.abs(hits - mass).sum() / y_index.shape[0])
    return ReliabilityBins(edges, counts, accuracy, mean_conf, ece)


def reliability_bins(y_true, y_proba, *, n_bins=15, strategy="uniform", labels=None):
    """Top-label reliability diagram statistics and expected calibration error.

    Each sample's confidence is ``max_k p_ik`` and it counts as correct when
    ``labels[argmax_k p_ik] == y_true[i]``. Samples are grouped by confidence
    into bins ``(edges[b], edges[b + 1]]`` (the first bin also contains
    ``edges[0]``, so a confidence of 1.0 lands in the last bin and one equal to
    an inner edge lands in the bin below it).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels; any type.
    y_proba : array-like of shape (n_samples, n_classes)
        Predicted probabilities; column ``k`` belongs to ``labels[k]``.
    n_bins : int, default=15
        Number of bins, at least 1.
    strategy : {"uniform", "quantile"}, default="uniform"
        ``"uniform"``: equal-width bins on ``[0, 1]``. ``"quantile"``: inner
        edges at the ``np.linspace(0, 1, n_bins + 1)`` quantiles of the
        confidences, with the outer edges set to 0 and 1; bins hold roughly
        equal counts but may be empty when confidences tie.
    labels : array-like of shape (n_classes,), default=None
        Class labels in column order; ``np.unique(y_true)`` if None.

    Returns
    -------
    ReliabilityBins
        Named tuple ``(edges, counts, accuracy, confidence, ece)``; see
        :class:`ReliabilityBins`. ``accuracy`` and ``confidence`` are NaN for
        empty bins.

    Raises
    ------
    ValueError
        On invalid shapes, labels or probabilities as for :func:`nll`, if
        ``n_bins < 1`` or if ``strategy`` is unknown.
    TypeError
        If ``n_bins`` is not an integer.

    References
    ----------
    .. [1] M. P. Naeini, G. F. Cooper and M. Hauskrecht, "Obtaining Well
       Calibrated Probabilities Using Bayesian Binning", AAAI 2015.
    .. [2] C. Guo, G. Pleiss, Y. Sun and K. Q. Weinberger, "On Calibration of
       Modern Neural Networks", ICML 2017.
    .. [3] J. Nixon, M. Dusenberry, L. Zhang, G. Jerfel and D. Tran,
       "Measuring Calibration in Deep Learning", CVPR Workshops 2019.

    Examples
    --------
    >>> bins = reliability_bins([0, 1], [[0.9, 0.1], [0.8, 0.2]], n_bins=2)
    >>> bins.counts.tolist(), bins.accuracy.tolist()
    ([0, 2], [nan, 0.5])
    >>> round(bins.ece, 4)
    0.35
    """
    return _reliability(*_check_proba(y_true, y_proba, labels), n_bins, strategy)


def expected_calibration_error(y_true, y_proba, *, n_bins=15, strategy="uniform", labels=None):
    """Top-label expected calibration error (ECE).

    ``sum_b (n_b / n) * |accuracy_b - confidence_b|`` over non-empty bins;
    shorthand for ``reliability_bins(...).ece``, see :func:`reliability_bins`
    for the binning rule.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels; any type.
    y_proba : array-like of shape (n_samples, n_classes)
        Predicted probabilities; column ``k`` belongs to ``labels[k]``.
    n_bins : int, default=15
        Number of bins, at least 1.
    strategy : {"uniform", "quantile"}, default="uniform"
        Equal-width or equal-mass bins.
    labels : array-like of shape (n_classes,), default=None
        Class labels in column order; ``np.unique(y_true)`` if None.

    Returns
    -------
    float
        ECE in ``[0, 1]`` (lower is better).

    Raises
    ------
    ValueError
        On invalid shapes, labels or probabilities as for :func:`nll`, if
        ``n_bins < 1`` or if ``strategy`` is unknown.
    TypeError
        If ``n_bins`` is not an integer.

    References
    ----------
    .. [1] C. Guo, G. Pleiss, Y. Sun and K. Q. Weinberger, "On Calibration of
       Modern Neural Networks", ICML 2017.

    Examples
    --------
    >>> round(expected_calibration_error([0, 1], [[0.9, 0.1], [0.8, 0.2]]), 4)
    0.45
    """
    return reliability_bins(y_true, y_proba, n_bins=n_bins, strategy=strategy, labels=labels).ece


def adaptive_ece(y_true, y_proba, *, n_bins=15, labels=None):
    """Top-label expected calibration error with equal-mass (adaptive) bins.

    Shorthand for ``expected_calibration_error(..., strategy="quantile")``:
    the inner bin edges are quantiles of the top-label confidences, so the
    bins hold roughly equal numbers of samples (see :func:`reliability_bins`
    for the exact binning rule and for tied confidences).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels; any type.
    y_proba : array-like of shape (n_samples, n_classes)
        Predicted probabilities; column ``k`` belongs to ``labels[k]``.
    n_bins : int, default=15
        Number of bins, at least 1.
    labels : array-like of shape (n_classes,), default=None
        Class labels in column order; ``np.unique(y_true)`` if None.

    Returns
    -------
    float
        Adaptive ECE in ``[0, 1]`` (lower is better).

    Raises
    ------
    ValueError
        On invalid shapes, labels or probabilities as for :func:`nll`, or if
        ``n_bins < 1``.
    TypeError
        If ``n_bins`` is not an integer.

    References
    ----------
    .. [1] J. Nixon, M. Dusenberry, L. Zhang, G. Jerfel and D. Tran,
       "Measuring Calibration in Deep Learning", CVPR Workshops 2019.

    Examples
    --------
    >>> round(adaptive_ece([0, 1], [[0.9, 0.1], [0.8, 0.2]], n_bins=2), 4)
    0.45
    """
    return expected_calibration_error(
        y_true, y_proba, n_bins=n_bins, strategy="quantile", labels=labels
    )
