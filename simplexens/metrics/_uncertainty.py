"""Uncertainty of ensembles: entropy decomposition, OOD detection, selective classification."""

from __future__ import annotations

import numpy as np
from sklearn.utils import Bunch

from ._validation import _check_member_proba, _check_proba, _first

__all__ = ["entropy_decomposition", "ood_scores", "risk_coverage", "uncertainty_scores"]

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
