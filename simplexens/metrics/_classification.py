"""Scoring rules and diversity of probabilistic classifiers: NLL, Brier score, disagreement."""

from __future__ import annotations

import numpy as np

from ._calibration import _reliability
from ._validation import _check_member_proba, _check_proba, _single_target_like

__all__ = ["brier_score", "evaluate", "member_disagreement", "nll"]


def _nll(y_index, y_proba):
    """Mean negative log-likelihood from validated inputs."""
    p_true = y_proba[np.arange(y_index.shape[0]), y_index]
    return float(-np.mean(np.log(np.maximum(p_true, np.finfo(np.float64).tiny))))


def _brier(y_index, y_proba):
    """Multiclass Brier score from validated inputs."""
    one_hot = np.zeros_like(y_proba)
    one_hot[np.arange(y_index.shape[0]), y_index] = 1.0
    return float(np.mean(np.sum((y_proba - one_hot) ** 2, axis=1)))


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
    """Accuracy, NLL, Brier score and ECE of a fitted probabilistic classifier; RMSE, NLL,
    CRPS and 90% coverage of a fitted ensemble regressor.

    Parameters
    ----------
    estimator : object
        Fitted classifier with ``predict_proba`` and ``classes_``; the columns
        of ``predict_proba`` are taken to follow ``classes_``. Or a fitted regressor: an
        object with ``predict_member_distribution(X)`` returning the ``(means, stds)`` of
        its predictive mixture (as the simplexens regressors have) and no ``predict_proba``.
    X : array-like of shape (n_samples, ...)
        Input accepted by ``estimator.predict_proba``.
    y : array-like of shape (n_samples,)
        True labels; every value must be in ``estimator.classes_``. For a regressor, the
        targets, of shape (n_samples,) or (n_samples, n_targets).
    n_bins : int, default=15
        Number of uniform bins for the ECE.

    Returns
    -------
    dict
        ``{"accuracy": float, "nll": float, "brier": float, "ece": float}``,
        with accuracy ``mean(classes_[argmax] == y)`` and the other entries as
        :func:`nll`, :func:`brier_score` and :func:`expected_calibration_error`. For a
        regressor ``{"rmse": float, "nll": float, "crps": float, "coverage_90": float}``:
        :func:`rmse` of the mixture mean, :func:`gaussian_mixture_nll`,
        :func:`crps_gaussian_mixture` and the :func:`interval_coverage` of the central 90%
        :func:`mixture_interval`.

    Raises
    ------
    ValueError
        If ``y`` and ``estimator.predict_proba(X)`` fail the checks of
        :func:`nll` with ``labels=estimator.classes_``: wrong shapes or
        lengths, a label not in ``classes_``, or rows that are not
        probabilities.
    """
    if hasattr(estimator, "predict_member_distribution") and not hasattr(
        estimator, "predict_proba"
    ):
        return _evaluate_regressor(estimator, X, y)
    y_index, proba = _check_proba(y, estimator.predict_proba(X), estimator.classes_)
    return {
        "accuracy": float(np.mean(proba.argmax(axis=1) == y_index)),
        "nll": _nll(y_index, proba),
        "brier": _brier(y_index, proba),
        "ece": _reliability(y_index, proba, n_bins, "uniform").ece,
    }


def _evaluate_regressor(estimator, X, y) -> dict:
    # Imported here: the regression metrics import nothing of the classification ones.
    from ._intervals import interval_coverage, mixture_interval
    from ._regression import crps_gaussian_mixture, gaussian_mixture_nll, rmse

    means, stds = estimator.predict_member_distribution(X)
    y = _single_target_like(y, means)
    lower, upper = mixture_interval(means, stds, 0.9)
    return {
        "rmse": rmse(y, np.mean(means, axis=0)),
        "nll": gaussian_mixture_nll(y, means, stds),
        "crps": crps_gaussian_mixture(y, means, stds),
        "coverage_90": interval_coverage(y, lower, upper),
    }
