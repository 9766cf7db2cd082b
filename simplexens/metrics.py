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
Score arrays (the inputs of :func:`ood_scores`, ``confidence`` of
:func:`risk_coverage`) must be 1-D, non-empty and finite.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np
from sklearn.utils import Bunch, check_scalar

__all__ = [
    "ReliabilityBins",
    "adaptive_ece",
    "brier_score",
    "entropy_decomposition",
    "evaluate",
    "expected_calibration_error",
    "member_disagreement",
    "nll",
    "ood_scores",
    "reliability_bins",
    "risk_coverage",
    "uncertainty_scores",
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


# ------------------------------------------------------------ uncertainty and OOD

_UNCERTAINTY_SCORES = ("max_probability", "entropy", "mutual_information")
# fpr_at_95_tpr uses TPR >= 95/100, compared in integers to avoid rounding 0.95 * n.
_TPR_PERCENT = 95


def _entropy(proba):
    """Shannon entropy in nats along the last axis, with ``0 log 0 = 0``."""
    return -np.sum(proba * np.log(np.where(proba > 0.0, proba, 1.0)), axis=-1)


def _check_scores(scores, name, n_samples=None):
    """Validate a 1-D array of finite scores and return it as float64.

    Parameters
    ----------
    scores : array-like of shape (n_samples,)
        Scores to check.
    name : str
        Name of the argument, used in error messages.
    n_samples : int, default=None
        Required length; any non-zero length if None.

    Returns
    -------
    scores : ndarray of shape (n_samples,), dtype float64

    Raises
    ------
    ValueError
        If ``scores`` is not 1-D, is empty, has the wrong length or contains
        a NaN or infinite value.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got an array of shape {scores.shape}.")
    if scores.shape[0] == 0:
        raise ValueError(f"{name} is empty; at least one score is required.")
    if n_samples is not None and scores.shape[0] != n_samples:
        raise ValueError(f"{name} has {scores.shape[0]} values but there are {n_samples} samples.")
    at = _first(~np.isfinite(scores))
    if at is not None:
        raise ValueError(
            f"{name} contains NaN or infinite values: {name}[{at[0]}] is {scores[at]:.10g}; "
            "scores must be finite."
        )
    return scores


def _decompose(member_proba):
    """Total, aleatoric and epistemic entropy from validated member probabilities."""
    total = _entropy(member_proba.mean(axis=0))
    aleatoric = _entropy(member_proba).mean(axis=0)
    return total, aleatoric, np.maximum(total - aleatoric, 0.0)


def entropy_decomposition(member_proba):
    """Split the predictive entropy of an ensemble into aleatoric and epistemic parts.

    With member predictions ``p_m = member_proba[m, i]`` and their mean
    ``p_bar = mean_m p_m``, for each sample:

    - ``total = H[p_bar]``, the entropy of the ensemble's prediction;
    - ``aleatoric = mean_m H[p_m]``, the expected entropy of the members;
    - ``epistemic = total - aleatoric``, the mutual information between the
      label and the member index (the Jensen gap of the entropy), clipped
      from below at 0 to remove negative rounding errors.

    Entropies are in nats (natural logarithm) with ``0 log 0 = 0``. Rows are
    not renormalised.

    Parameters
    ----------
    member_proba : array-like of shape (n_members, n_samples, n_classes)
        Predicted probabilities of each member; each member's rows must be
        probability vectors, as for :func:`member_disagreement`.

    Returns
    -------
    sklearn.utils.Bunch
        Dictionary, also with attribute access, with keys ``"total"``,
        ``"aleatoric"`` and ``"epistemic"``, each an ndarray of shape
        ``(n_samples,)``. All lie in ``[0, log(n_classes)]`` and
        ``total == aleatoric + epistemic`` up to rounding.

    Raises
    ------
    ValueError
        If ``member_proba`` is not 3-D, has no members, samples or classes,
        or is not an array of probabilities: a value is NaN or infinite, a
        value lies more than 1e-6 outside ``[0, 1]``, or a row sum is more
        than 1e-3 away from 1.

    References
    ----------
    .. [1] S. Depeweg, J. M. Hernández-Lobato, F. Doshi-Velez and S. Udluft,
       "Decomposition of Uncertainty in Bayesian Deep Learning for Efficient
       and Risk-sensitive Learning", ICML 2018.
    .. [2] A. Malinin and M. Gales, "Predictive Uncertainty Estimation via
       Prior Networks", NeurIPS 2018.

    Examples
    --------
    >>> parts = entropy_decomposition([[[1.0, 0.0]], [[0.0, 1.0]]])
    >>> [round(float(parts[key][0]), 4) for key in ("total", "aleatoric", "epistemic")]
    [0.6931, 0.0, 0.6931]
    """
    total, aleatoric, epistemic = _decompose(_check_member_proba(member_proba))
    return Bunch(total=total, aleatoric=aleatoric, epistemic=epistemic)


def uncertainty_scores(member_proba, score):
    """Per-sample uncertainty of an ensemble; higher means more uncertain.

    Parameters
    ----------
    member_proba : array-like of shape (n_members, n_samples, n_classes)
        Predicted probabilities of each member, as for
        :func:`entropy_decomposition`.
    score : {"max_probability", "entropy", "mutual_information"}
        ``"max_probability"``: ``1 - max_k p_bar_k``, one minus the
        confidence of the mean prediction ``p_bar`` (so that higher means more
        uncertain). ``"entropy"``: total predictive entropy ``H[p_bar]``.
        ``"mutual_information"``: epistemic part of the entropy; see
        :func:`entropy_decomposition`. Entropies are in nats.

    Returns
    -------
    ndarray of shape (n_samples,)
        Uncertainty score of each sample.

    Raises
    ------
    ValueError
        If ``score`` is unknown, or ``member_proba`` is invalid as for
        :func:`entropy_decomposition`.

    References
    ----------
    .. [1] D. Hendrycks and K. Gimpel, "A Baseline for Detecting
       Misclassified and Out-of-Distribution Examples in Neural Networks",
       ICLR 2017.
    .. [2] A. Malinin and M. Gales, "Predictive Uncertainty Estimation via
       Prior Networks", NeurIPS 2018.

    Examples
    --------
    >>> uncertainty_scores([[[0.75, 0.25]], [[0.25, 0.75]]], "max_probability").tolist()
    [0.5]
    """
    if score not in _UNCERTAINTY_SCORES:
        raise ValueError(f"score must be one of {_UNCERTAINTY_SCORES}, got {score!r}.")
    member_proba = _check_member_proba(member_proba)
    if score == "max_probability":
        return 1.0 - member_proba.mean(axis=0).max(axis=1)
    total, _, epistemic = _decompose(member_proba)
    return total if score == "entropy" else epistemic


def _auroc(scores_in, scores_out):
    """AUROC as the Mann-Whitney statistic ``P(out > in) + P(out == in) / 2``."""
    sorted_in = np.sort(scores_in)
    below = np.searchsorted(sorted_in, scores_out, side="left")
    at_or_below = np.searchsorted(sorted_in, scores_out, side="right")
    wins = below.sum() + 0.5 * (at_or_below - below).sum()
    return float(wins / (scores_in.shape[0] * scores_out.shape[0]))


def _average_precision(scores_in, scores_out):
    """Average precision with OOD positive; one precision-recall point per distinct score."""
    scores = np.concatenate([scores_in, scores_out])
    is_out = np.concatenate([np.zeros(scores_in.shape[0]), np.ones(scores_out.shape[0])])
    order = np.argsort(-scores, kind="stable")
    scores, is_out = scores[order], is_out[order]
    # Last position of each run of equal scores: the threshold "score >= s" takes the whole run.
    last = np.flatnonzero(np.append(np.diff(scores) != 0, True))
    true_pos = np.cumsum(is_out)[last]
    precision = true_pos / (last + 1)
    recall_gain = np.diff(true_pos, prepend=0.0) / scores_out.shape[0]
    return float(np.sum(recall_gain * precision))


def _fpr_at_tpr(scores_in, scores_out):
    """Smallest FPR over thresholds ``score >= t`` with TPR >= 95%."""
    n_out = scores_out.shape[0]
    k = -(-_TPR_PERCENT * n_out // 100)  # ceil(0.95 * n_out): OOD samples to detect
    threshold = np.sort(scores_out)[::-1][k - 1]
    return float(np.mean(scores_in >= threshold))


def ood_scores(scores_in, scores_out):
    """Out-of-distribution (OOD) detection metrics from uncertainty scores.

    A sample is flagged as OOD when its score is at least a threshold ``t``;
    higher scores must therefore mean "more likely OOD" (e.g. the outputs of
    :func:`uncertainty_scores`; negate confidences first). OOD samples are the
    positive class throughout.

    Parameters
    ----------
    scores_in : array-like of shape (n_in,)
        Scores of in-distribution samples (negatives); finite, at least one.
    scores_out : array-like of shape (n_out,)
        Scores of out-of-distribution samples (positives); finite, at least
        one.

    Returns
    -------
    dict
        ``"auroc"`` : float
            Area under the ROC curve, computed as the Mann-Whitney statistic
            ``P(s_out > s_in) + P(s_out == s_in) / 2`` over all in/out pairs
            (ties count one half); 1 for perfect separation, 0.5 for chance,
            0 when every OOD score is below every in-distribution score. Equals
            :func:`sklearn.metrics.roc_auc_score` with OOD labelled 1.
        ``"aupr"`` : float
            Area under the precision-recall curve with OOD as the positive
            class, as average precision ``sum_t (R_t - R_{t-1}) P_t`` over the
            distinct score values ``t`` in decreasing order (tied scores enter
            together); equals :func:`sklearn.metrics.average_precision_score`.
        ``"fpr_at_95_tpr"`` : float
            Fraction of in-distribution samples flagged as OOD at the largest
            threshold that flags at least 95% of the OOD samples (i.e. the
            smallest FPR with TPR >= 0.95, with TPR computed exactly as
            ``ceil(0.95 * n_out)`` detected samples).

    Raises
    ------
    ValueError
        If either argument is not 1-D, is empty (so that one class is
        absent) or contains a NaN or infinite value.

    References
    ----------
    .. [1] D. Hendrycks and K. Gimpel, "A Baseline for Detecting
       Misclassified and Out-of-Distribution Examples in Neural Networks",
       ICLR 2017.
    .. [2] S. Liang, Y. Li and R. Srikant, "Enhancing The Reliability of
       Out-of-distribution Image Detection in Neural Networks", ICLR 2018.
    .. [3] J. A. Hanley and B. J. McNeil, "The Meaning and Use of the Area
       under a Receiver Operating Characteristic (ROC) Curve", Radiology
       143(1), 1982.

    Examples
    --------
    >>> ood_scores([0.1, 0.2, 0.6], [0.5, 0.9])
    {'auroc': 0.8333333333333334, 'aupr': 0.8333333333333333, 'fpr_at_95_tpr': 0.3333333333333333}
    """
    scores_in = _check_scores(scores_in, "scores_in")
    scores_out = _check_scores(scores_out, "scores_out")
    return {
        "auroc": _auroc(scores_in, scores_out),
        "aupr": _average_precision(scores_in, scores_out),
        "fpr_at_95_tpr": _fpr_at_tpr(scores_in, scores_out),
    }


def risk_coverage(y_true, y_proba, *, labels=None, confidence=None):
    """Risk-coverage curve of selective classification and its area (AURC).

    Samples are ranked by decreasing confidence; at coverage ``k / n`` the
    classifier predicts (top label) on the ``k`` most confident samples and
    abstains on the rest, and the risk is the error rate on those ``k``
    samples. Ties in confidence are broken deterministically by a stable
    sort: among equally confident samples the one with the smaller index is
    covered first.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels; any type.
    y_proba : array-like of shape (n_samples, n_classes)
        Predicted probabilities; column ``k`` belongs to ``labels[k]``. The
        prediction is ``labels[argmax_k p_ik]``.
    labels : array-like of shape (n_classes,), default=None
        Class labels in column order; ``np.unique(y_true)`` if None.
    confidence : array-like of shape (n_samples,), default=None
        Confidence used to rank the samples, higher = covered earlier (e.g.
        ``-uncertainty_scores(member_proba, "mutual_information")``); finite.
        Defaults to the top-label probability ``max_k p_ik``.

    Returns
    -------
    dict
        ``"coverage"`` : ndarray of shape (n_samples,)
            ``k / n`` for ``k = 1, ..., n``.
        ``"risk"`` : ndarray of shape (n_samples,)
            Error rate among the ``k`` most confident samples; the last entry
            is the overall error rate.
        ``"aurc"`` : float
            Area under the risk-coverage curve, ``mean(risk)`` (lower is
            better).

    Raises
    ------
    ValueError
        On invalid shapes, labels or probabilities as for :func:`nll`, or if
        ``confidence`` is not 1-D, has the wrong length or contains a NaN or
        infinite value.

    References
    ----------
    .. [1] R. El-Yaniv and Y. Wiener, "On the Foundations of Noise-free
       Selective Classification", JMLR 11, 2010.
    .. [2] Y. Geifman, G. Uziel and R. El-Yaniv, "Bias-Reduced Uncertainty
       Estimation for Deep Neural Classifiers", ICLR 2019.

    Examples
    --------
    >>> curve = risk_coverage([0, 1, 1], [[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    >>> curve["risk"].tolist(), round(curve["aurc"], 4)
    ([0.0, 0.0, 0.3333333333333333], 0.1111)
    """
    y_index, y_proba = _check_proba(y_true, y_proba, labels)
    n_samples = y_index.shape[0]
    if confidence is None:
        confidence = y_proba.max(axis=1)
    else:
        confidence = _check_scores(confidence, "confidence", n_samples)
    order = np.argsort(-confidence, kind="stable")
    errors = (y_proba.argmax(axis=1) != y_index)[order]
    covered = np.arange(1, n_samples + 1)
    risk = np.cumsum(errors) / covered
    return {"coverage": covered / n_samples, "risk": risk, "aurc": float(risk.mean())}


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
