"""Scoring rules, calibration and diversity metrics for probabilistic classifiers.

All functions take plain array-likes (NumPy in) and return Python floats or
NumPy arrays, so they work for any estimator exposing ``predict_proba`` and
``classes_``, not only for the ensembles of this package.

Column convention
-----------------
Probability matrices have shape ``(n_samples, n_classes)`` and column ``k``
holds the probability of ``labels[k]``. When ``labels`` is omitted it
defaults to ``np.unique(y_true)``, as in :func:`sklearn.metrics.log_loss`.
Unlike scikit-learn, an explicitly given ``labels`` is used in the order given
(it is not sorted), so passing ``labels=estimator.classes_`` is always safe.

Input validation
----------------
Every function checks that its probabilities are probabilities and raises
``ValueError`` naming the first offending entry otherwise:

- no value may be NaN or infinite;
- values must lie in ``[0, 1]`` up to an absolute tolerance of 1e-6, which
  admits float32 rounding (e.g. 1.0000001 from averaging float32 softmax
  outputs); values inside the tolerance are clipped into ``[0, 1]``;
- each row (each member's row, for member arrays) must sum to 1 up to an
  absolute tolerance of 1e-3. Rows are not renormalised.

Shapes are checked too: ``y_true`` 1-D, ``y_proba`` 2-D with as many rows as
``y_true`` and one column per label, member arrays 3-D
``(n_members, n_samples, n_classes)``.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np
from sklearn.utils import check_scalar

__all__ = [
    "ReliabilityBins",
    "brier_score",
    "evaluate",
    "expected_calibration_error",
    "member_disagreement",
    "nll",
    "reliability_bins",
]

_STRATEGIES = ("uniform", "quantile")
# float32's machine epsilon is 1.2e-7: 1e-6 admits several units of rounding (1.0000001
# from averaging float32 softmax outputs); a value further out is a bug, not rounding.
_RANGE_TOL = 1e-6
# Row sums accumulate one rounding error per class, hence a looser bound.
_SUM_TOL = 1e-3


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


def _tolerance_text(tol):
    """Write a tolerance as ``1e-3`` rather than ``0.001`` or ``1e-03``."""
    return f"{tol:.0e}".replace("e-0", "e-")


def _first(mask):
    """Index tuple of the first True entry of ``mask`` in C order, or None."""
    if not mask.any():
        return None
    return tuple(int(i) for i in np.unravel_index(np.argmax(mask), mask.shape))


def _check_proba_values(proba, name):
    """Check that every vector along the last axis of ``proba`` is a probability vector.

    Parameters
    ----------
    proba : array-like of shape (..., n_classes)
        Probabilities; any leading axes (samples, or members and samples).
    name : str
        Name of the argument, used in error messages.

    Returns
    -------
    proba : ndarray of shape (..., n_classes), dtype float64
        The probabilities, clipped into ``[0, 1]`` (this only moves values
        that lay within ``_RANGE_TOL`` outside it). Rows are not renormalised.

    Raises
    ------
    ValueError
        If a value is NaN or infinite, lies more than ``_RANGE_TOL`` outside
        ``[0, 1]``, or a row sums to a value more than ``_SUM_TOL`` from 1.
    """
    proba = np.asarray(proba, dtype=np.float64)
    bounds = f"probabilities must lie in [0, 1] (tolerance {_tolerance_text(_RANGE_TOL)})"
    for mask, problem in (
        (~np.isfinite(proba), "NaN or infinite values"),
        (proba < -_RANGE_TOL, "negative values"),
        (proba > 1.0 + _RANGE_TOL, "values greater than 1"),
    ):
        at = _first(mask)
        if at is not None:
            raise ValueError(
                f"{name} contains {problem}: {name}{list(at)} is {proba[at]:.10g}; {bounds}."
            )
    sums = proba.sum(axis=-1)
    at = _first(np.abs(sums - 1.0) > _SUM_TOL)
    if at is not None:
        row = f"row {at[-1]}" if len(at) == 1 else f"member {at[0]}, row {at[-1]}"
        raise ValueError(
            f"{name} rows must sum to 1 (tolerance {_tolerance_text(_SUM_TOL)}); "
            f"{row} sums to {sums[at]:.10g}."
        )
    return np.clip(proba, 0.0, 1.0)


def _check_shapes(y_true, y_proba, labels):
    """Check the shapes of targets, probabilities and labels against each other."""
    if y_true.ndim != 1:
        raise ValueError(f"y_true must be 1-D, got an array of shape {y_true.shape}.")
    if y_proba.ndim != 2:
        raise ValueError(f"y_proba must be 2-D (n_samples, n_classes), got shape {y_proba.shape}.")
    if y_proba.shape[0] != y_true.shape[0]:
        raise ValueError(
            f"y_true has {y_true.shape[0]} samples but y_proba has {y_proba.shape[0]}."
        )
    if y_true.shape[0] == 0:
        raise ValueError("At least one sample is required, got 0.")
    if labels.ndim != 1 or np.unique(labels).shape[0] != labels.shape[0]:
        raise ValueError("labels must be a 1-D array of unique values.")
    if y_proba.shape[1] != labels.shape[0]:
        raise ValueError(
            f"y_proba has {y_proba.shape[1]} columns but there are {labels.shape[0]} "
            f"labels {labels.tolist()!r}; pass labels= matching the columns."
        )


def _label_index(y_true, labels):
    """Column index of each value of ``y_true`` in ``labels``."""
    order = np.argsort(labels, kind="stable")
    try:
        pos = np.searchsorted(labels[order], y_true).clip(max=labels.shape[0] - 1)
        found = labels[order][pos] == y_true
    except TypeError as exc:
        raise ValueError("y_true values are not comparable with labels.") from exc
    if not np.all(found):
        missing = np.unique(y_true[~found])[:5].tolist()
        raise ValueError(f"y_true values {missing!r} are not in labels {labels.tolist()!r}.")
    return order[pos]


def _check_proba(y_true, y_proba, labels=None):
    """Validate targets and probabilities; map targets to column indices.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels, of any type comparable with ``labels``.
    y_proba : array-like of shape (n_samples, n_classes)
        Predicted probabilities; column ``k`` belongs to ``labels[k]``.
    labels : array-like of shape (n_classes,), default=None
        Class labels in column order; ``np.unique(y_true)`` if None.

    Returns
    -------
    y_index : ndarray of shape (n_samples,), dtype intp
        Column index of each sample's true label.
    y_proba : ndarray of shape (n_samples, n_classes), dtype float64
        The probabilities, clipped into ``[0, 1]`` (see
        :func:`_check_proba_values`).

    Raises
    ------
    ValueError
        If a shape is wrong, the lengths differ, ``labels`` is not unique,
        a probability row is invalid or a value of ``y_true`` is not in
        ``labels``.
    """
    y_true = np.asarray(y_true)
    y_proba = np.asarray(y_proba, dtype=np.float64)
    labels = np.unique(y_true) if labels is None else np.asarray(labels)
    _check_shapes(y_true, y_proba, labels)
    y_proba = _check_proba_values(y_proba, "y_proba")
    return _label_index(y_true, labels), y_proba


def _check_member_proba(member_proba):
    """Validate member probabilities of shape (n_members, n_samples, n_classes)."""
    member_proba = np.asarray(member_proba, dtype=np.float64)
    if member_proba.ndim != 3:
        raise ValueError(
            "member_proba must be 3-D (n_members, n_samples, n_classes), "
            f"got shape {member_proba.shape}."
        )
    if 0 in member_proba.shape:
        raise ValueError(
            "member_proba must have at least one member, sample and class, "
            f"got shape {member_proba.shape}."
        )
    return _check_proba_values(member_proba, "member_proba")


def _nll(y_index, y_proba):
    """Mean negative log-likelihood from validated inputs."""
    p_true = y_proba[np.arange(y_index.shape[0]), y_index]
    return float(-np.mean(np.log(np.maximum(p_true, np.finfo(np.float64).tiny))))


def _brier(y_index, y_proba):
    """Multiclass Brier score from validated inputs."""
    one_hot = np.zeros_like(y_proba)
    one_hot[np.arange(y_index.shape[0]), y_index] = 1.0
    return float(np.mean(np.sum((y_proba - one_hot) ** 2, axis=1)))


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


def nll(y_true, y_proba, *, labels=None):
    """Mean negative log-likelihood (log loss) of the true labels.

    Computes ``-mean_i log p(y_i | x_i)``, where ``p(y_i | x_i)`` is the entry
    of ``y_proba`` in the column of the true label, computed in float64. Rows
    are not renormalised. The true-class probability is clipped from below at
    ``np.finfo(np.float64).tiny`` (about 2.2e-308) only, so that a zero
    probability gives a large finite loss (about 708.4) instead of ``inf``;
    apart from clipping values within 1e-6 of ``[0, 1]`` into it (see
    Raises), no other clipping is applied. See Notes for how this differs
    from :func:`sklearn.metrics.log_loss`.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels; any type (integers, strings, ...).
    y_proba : array-like of shape (n_samples, n_classes)
        Predicted probabilities; column ``k`` belongs to ``labels[k]``.
    labels : array-like of shape (n_classes,), default=None
        Class labels in column order. Defaults to ``np.unique(y_true)``; pass
        it (e.g. ``estimator.classes_``) when ``y_true`` may lack a class.

    Returns
    -------
    float
        Mean negative log-likelihood in nats (lower is better).

    Raises
    ------
    ValueError
        If ``y_true`` is not 1-D, ``y_proba`` is not 2-D, their lengths
        differ, ``y_proba`` has a column count different from
        ``len(labels)``, ``labels`` is not unique, a value of ``y_true`` is
        not in ``labels``, or ``y_proba`` is not a matrix of probabilities:
        a value is NaN or infinite, a value lies more than 1e-6 outside
        ``[0, 1]``, or a row sum is more than 1e-3 away from 1.

    See Also
    --------
    sklearn.metrics.log_loss : Same value whenever every true-class
        probability lies in ``[eps, 1 - eps]`` (see Notes).

    Notes
    -----
    Differences from :func:`sklearn.metrics.log_loss` as of scikit-learn 1.9:

    - Clipping. ``log_loss`` clips every probability to ``[eps, 1 - eps]``
      with ``eps = np.finfo(y_proba.dtype).eps`` (2.2e-16 for float64 input,
      1.2e-7 for float32) and computes in the input's dtype. ``nll`` clips
      only the true-class probability, only from below, at
      ``np.finfo(np.float64).tiny`` and computes in float64. A true-class
      probability of exactly 0 therefore costs ``-log(tiny)`` (about 708.40)
      here and ``-log(eps)`` (about 36.04 for float64) in ``log_loss``; one
      below ``eps`` costs ``-log(p)`` here and ``-log(eps)`` there; one of
      exactly 1 costs 0 here and ``-log(1 - eps)`` (about 2.2e-16) there.
    - Validation. ``log_loss`` raises for any value outside ``[0, 1]``
      without tolerance and only warns when a row does not sum to one;
      ``nll`` accepts and clips values within 1e-6 of ``[0, 1]`` and raises
      when a row sum is more than 1e-3 away from 1.
    - Neither renormalises the rows.

    References
    ----------
    .. [1] T. Gneiting and A. E. Raftery, "Strictly Proper Scoring Rules,
       Prediction, and Estimation", JASA 102(477), 2007.

    Examples
    --------
    >>> round(nll(["a", "b"], [[0.5, 0.5], [0.25, 0.75]]), 4)
    0.4904
    """
    return _nll(*_check_proba(y_true, y_proba, labels))


def brier_score(y_true, y_proba, *, labels=None):
    """Multiclass Brier score.

    Computes ``mean_i sum_k (p_ik - 1[y_i = k])^2``, which lies in ``[0, 2]``.
    This equals ``sklearn.metrics.brier_score_loss(y_true, y_proba,
    labels=labels, scale_by_half=False)`` (with the column order given by
    ``labels``; scikit-learn assumes sorted labels). For two classes it is
    twice the usual binary Brier score on the positive-class probability.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels; any type.
    y_proba : array-like of shape (n_samples, n_classes)
        Predicted probabilities; column ``k`` belongs to ``labels[k]``.
    labels : array-like of shape (n_classes,), default=None
        Class labels in column order; ``np.unique(y_true)`` if None.

    Returns
    -------
    float
        Multiclass Brier score (lower is better).

    Raises
    ------
    ValueError
        On invalid shapes, labels or probabilities, as for :func:`nll`.

    References
    ----------
    .. [1] G. W. Brier, "Verification of Forecasts Expressed in Terms of
       Probability", Monthly Weather Review 78(1), 1950.

    Examples
    --------
    >>> brier_score([0, 1], [[1.0, 0.0], [0.5, 0.5]])
    0.25
    """
    return _brier(*_check_proba(y_true, y_proba, labels))


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


def member_disagreement(member_proba):
    """Mean pairwise prediction disagreement between ensemble members.

    The fraction of (sample, unordered member pair ``i < j``) combinations in
    which the two members' arg-max predictions differ, as used by Fort et al.
    to measure functional diversity of ensembles.

    Parameters
    ----------
    member_proba : array-like of shape (n_members, n_samples, n_classes)
        Predicted probabilities of each member; each member's rows must be
        probability vectors, as ``y_proba`` for :func:`nll`.

    Returns
    -------
    float
        Disagreement in ``[0, 1]``; 0.0 for a single member.

    Raises
    ------
    ValueError
        If ``member_proba`` is not 3-D, has no members, samples or classes,
        or is not an array of probabilities: a value is NaN or infinite, a
        value lies more than 1e-6 outside ``[0, 1]``, or a row sum is more
        than 1e-3 away from 1.

    References
    ----------
    .. [1] S. Fort, H. Hu and B. Lakshminarayanan, "Deep Ensembles: A Loss
       Landscape Perspective", arXiv:1912.02757, 2019.

    Examples
    --------
    >>> round(member_disagreement([[[0.9, 0.1]], [[0.2, 0.8]], [[0.6, 0.4]]]), 4)
    0.6667
    """
    member_proba = _check_member_proba(member_proba)
    n_members, n_samples, n_classes = member_proba.shape
    if n_members < 2:
        return 0.0
    pred = member_proba.argmax(axis=2)  # (n_members, n_samples)
    # votes[s, k]: members predicting class k on sample s; agreeing pairs = C(votes, 2).
    flat = (pred + n_classes * np.arange(n_samples)).ravel()
    votes = np.bincount(flat, minlength=n_samples * n_classes)
    agree = np.sum(votes * (votes - 1)) / 2
    return float(1.0 - agree / (n_samples * n_members * (n_members - 1) / 2))


def evaluate(estimator, X, y, *, n_bins=15):
    """Accuracy, NLL, Brier score and ECE of a fitted probabilistic classifier.

    Parameters
    ----------
    estimator : object
        Fitted classifier with ``predict_proba`` and ``classes_``; the columns
        of ``predict_proba`` are taken to follow ``classes_``.
    X : array-like of shape (n_samples, ...)
        Input accepted by ``estimator.predict_proba``.
    y : array-like of shape (n_samples,)
        True labels; every value must be in ``estimator.classes_``.
    n_bins : int, default=15
        Number of uniform bins for the ECE.

    Returns
    -------
    dict
        ``{"accuracy": float, "nll": float, "brier": float, "ece": float}``,
        with accuracy ``mean(classes_[argmax] == y)`` and the other entries as
        :func:`nll`, :func:`brier_score` and :func:`expected_calibration_error`.

    Raises
    ------
    ValueError
        If ``y`` and ``estimator.predict_proba(X)`` fail the checks of
        :func:`nll` with ``labels=estimator.classes_``: wrong shapes or
        lengths, a label not in ``classes_``, or rows that are not
        probabilities.
    """
    y_index, proba = _check_proba(y, estimator.predict_proba(X), estimator.classes_)
    return {
        "accuracy": float(np.mean(proba.argmax(axis=1) == y_index)),
        "nll": _nll(y_index, proba),
        "brier": _brier(y_index, proba),
        "ece": _reliability(y_index, proba, n_bins, "uniform").ece,
    }
