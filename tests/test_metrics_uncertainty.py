"""Tests for the uncertainty, OOD, selective-classification and adaptive-ECE metrics."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.stats import entropy
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from simplexens.metrics import (
    adaptive_ece,
    entropy_decomposition,
    ood_scores,
    reliability_bins,
    risk_coverage,
    uncertainty_scores,
)


def _members(seed, n_members=5, n_samples=50, n_classes=4):
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.full(n_classes, 0.5), size=(n_members, n_samples))


def _ood_problem(seed, n_in=200, n_out=70, levels=12):
    """In/out scores rounded to a few levels so that many ties occur, within and across sets."""
    rng = np.random.default_rng(seed)
    scores_in = np.round(rng.normal(0.0, 1.0, n_in) * levels / 4) / levels
    scores_out = np.round(rng.normal(0.8, 1.0, n_out) * levels / 4) / levels
    return scores_in, scores_out


def _sklearn_view(scores_in, scores_out):
    labels = np.r_[np.zeros(len(scores_in)), np.ones(len(scores_out))]
    return labels, np.r_[scores_in, scores_out]


# -------------------------------------------------------- entropy decomposition


def test_identical_members_have_no_epistemic_uncertainty():
    p = np.array([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5], [1.0, 0.0, 0.0]])
    parts = entropy_decomposition(np.stack([p, p, p, p]))
    expected = [entropy(row) for row in p]
    assert_allclose(parts["epistemic"], 0.0, atol=1e-12)
    assert_allclose(parts["total"], expected, rtol=1e-12, atol=1e-15)
    assert_allclose(parts["aleatoric"], expected, rtol=1e-12, atol=1e-15)
    assert parts.total is parts["total"]  # Bunch: attribute access too


@pytest.mark.parametrize("n", [2, 3, 5])
def test_one_hot_members_disagreeing_on_all_classes(n):
    # Member m puts all mass on class m (sample 0) or class (m + 1) % n (sample 1).
    eye = np.eye(n)
    member_proba = np.stack([eye, np.roll(eye, 1, axis=1)], axis=1)
    assert member_proba.shape == (n, 2, n)
    parts = entropy_decomposition(member_proba)
    assert_allclose(parts["total"], np.log(n), rtol=1e-12)
    assert_array_equal(parts["aleatoric"], 0.0)
    assert_allclose(parts["epistemic"], np.log(n), rtol=1e-12)


def test_entropy_decomposition_matches_loop():
    member_proba = _members(0)
    member_proba[1, 3] = [0.0, 0.0, 1.0, 0.0]  # exact zeros: 0 log 0 = 0
    n_members, n_samples, _ = member_proba.shape
    total = np.empty(n_samples)
    aleatoric = np.empty(n_samples)
    for i in range(n_samples):
        total[i] = entropy(member_proba[:, i].mean(axis=0))
        aleatoric[i] = np.mean([entropy(member_proba[m, i]) for m in range(n_members)])
    parts = entropy_decomposition(member_proba)
    assert set(parts) == {"total", "aleatoric", "epistemic"}
    assert_allclose(parts["total"], total, rtol=1e-12)
    assert_allclose(parts["aleatoric"], aleatoric, rtol=1e-12)
    assert_allclose(parts["epistemic"], total - aleatoric, rtol=1e-9, atol=1e-14)
    assert np.all(parts["epistemic"] >= 0.0)


def test_uncertainty_scores():
    member_proba = _members(1)
    parts = entropy_decomposition(member_proba)
    assert_allclose(uncertainty_scores(member_proba, "entropy"), parts["total"])
    assert_allclose(uncertainty_scores(member_proba, "mutual_information"), parts["epistemic"])
    expected = [1.0 - member_proba[:, i].mean(axis=0).max() for i in range(50)]
    assert_allclose(uncertainty_scores(member_proba, "max_probability"), expected, rtol=1e-12)
    for name in ("max_probability", "entropy", "mutual_information"):
        assert uncertainty_scores(member_proba, name).shape == (50,)


# ----------------------------------------------------------------- OOD detection


@pytest.mark.parametrize("seed", range(4))
def test_ood_scores_match_sklearn_with_ties(seed):
    scores_in, scores_out = _ood_problem(seed)
    assert len(np.unique(np.r_[scores_in, scores_out])) < 40  # ties are present
    labels, scores = _sklearn_view(scores_in, scores_out)
    result = ood_scores(scores_in, scores_out)
    assert_allclose(result["auroc"], roc_auc_score(labels, scores), rtol=1e-12)
    assert_allclose(result["aupr"], average_precision_score(labels, scores), rtol=1e-12)


@pytest.mark.parametrize("n_out", [1, 7, 20, 40, 70, 101])
def test_fpr_at_95_tpr_matches_roc_curve(n_out):
    scores_in, scores_out = _ood_problem(10 + n_out, n_out=n_out)
    fpr, tpr, _ = roc_curve(*_sklearn_view(scores_in, scores_out), drop_intermediate=False)
    expected = fpr[tpr >= 0.95].min()
    assert_allclose(ood_scores(scores_in, scores_out)["fpr_at_95_tpr"], expected, rtol=1e-12)


def test_fpr_at_95_tpr_exact_boundary():
    # 20 OOD scores: detecting 19 of them is exactly 95%, so the threshold is the 19th largest.
    scores_out = np.arange(20.0)  # 19th largest is 1.0
    scores_in = np.array([0.5, 1.0, 1.5, 30.0])
    assert_allclose(ood_scores(scores_in, scores_out)["fpr_at_95_tpr"], 0.75)


def test_ood_scores_perfect_and_reversed():
    scores_in = np.array([0.1, 0.2, 0.2, 0.3])
    scores_out = np.array([0.5, 0.9, 0.9])
    perfect = ood_scores(scores_in, scores_out)
    assert perfect == {"auroc": 1.0, "aupr": 1.0, "fpr_at_95_tpr": 0.0}
    reversed_ = ood_scores(scores_out, scores_in)
    assert reversed_["auroc"] == 0.0
    assert reversed_["fpr_at_95_tpr"] == 1.0


def test_ood_scores_all_tied_is_chance():
    result = ood_scores(np.zeros(6), np.zeros(3))
    assert_allclose([result["auroc"], result["aupr"]], [0.5, 3 / 9])
    assert result["fpr_at_95_tpr"] == 1.0


def test_auroc_is_mann_whitney_by_pairs():
    scores_in, scores_out = _ood_problem(7, n_in=30, n_out=20, levels=4)
    diff = scores_out[:, None] - scores_in[None, :]
    expected = np.mean((diff > 0) + 0.5 * (diff == 0))
    assert_allclose(ood_scores(scores_in, scores_out)["auroc"], expected, rtol=1e-12)


# ---------------------------------------------------------------- risk-coverage

# Six samples, predictions argmax = [0, 0, 1, 1, 0, 1]; with y_true below, samples 1 and 4
# are wrong.
_RC_PROBA = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7], [0.55, 0.45], [0.1, 0.9]])
_RC_Y = np.array([0, 1, 1, 1, 1, 1])


def test_risk_coverage_perfect_ranking_closed_form():
    # Errors (samples 1 and 4) get the lowest confidences: risk 0 until coverage 4/6,
    # then 1/5 and 2/6. AURC = (1/5 + 2/6) / 6 = 4/45.
    confidence = np.array([0.9, 0.1, 0.8, 0.7, 0.2, 0.95])
    curve = risk_coverage(_RC_Y, _RC_PROBA, confidence=confidence)
    assert_allclose(curve["coverage"], np.arange(1, 7) / 6)
    assert_allclose(curve["risk"], [0, 0, 0, 0, 1 / 5, 2 / 6], rtol=1e-12)
    assert_allclose(curve["aurc"], 4 / 45, rtol=1e-12)


def test_risk_coverage_worst_ranking_is_larger():
    # Errors first: risk 1, 1, 2/3, 2/4, 2/5, 2/6.
    confidence = np.array([0.5, 0.99, 0.4, 0.3, 0.98, 0.2])
    curve = risk_coverage(_RC_Y, _RC_PROBA, confidence=confidence)
    assert_allclose(curve["risk"], [1, 1, 2 / 3, 2 / 4, 2 / 5, 2 / 6], rtol=1e-12)
    expected = (1 + 1 + 2 / 3 + 2 / 4 + 2 / 5 + 2 / 6) / 6
    assert_allclose(curve["aurc"], expected, rtol=1e-12)
    assert curve["aurc"] > 4 / 45


def test_risk_coverage_default_confidence_is_top_probability():
    # Top-label probabilities .9, .6, .8, .7, .55, .9; the tie of samples 0 and 5 is broken
    # by index. Order: 0, 5, 2, 3, 1 (wrong), 4 (wrong).
    curve = risk_coverage(_RC_Y, _RC_PROBA)
    assert_allclose(curve["risk"], [0, 0, 0, 0, 1 / 5, 2 / 6], rtol=1e-12)


def test_risk_coverage_ties_are_stable():
    # All equally confident: samples are covered in index order.
    y = np.array([0, 1, 0, 1])
    proba = np.full((4, 2), 0.5)  # always predicts label 0: samples 1 and 3 wrong
    curve = risk_coverage(y, proba)
    assert_allclose(curve["risk"], [0, 1 / 2, 1 / 3, 2 / 4], rtol=1e-12)


def test_risk_coverage_shapes_and_endpoints():
    rng = np.random.default_rng(3)
    proba = rng.dirichlet(np.ones(3), size=123)
    y = rng.integers(0, 3, size=123)
    curve = risk_coverage(y, proba, labels=[0, 1, 2])
    assert curve["coverage"].shape == curve["risk"].shape == (123,)
    assert_allclose(curve["coverage"][[0, -1]], [1 / 123, 1.0])
    assert_allclose(curve["risk"][-1], np.mean(proba.argmax(axis=1) != y), rtol=1e-12)
    assert_allclose(curve["aurc"], curve["risk"].mean(), rtol=1e-12)
    assert np.all((curve["risk"] >= 0) & (curve["risk"] <= 1))


# ------------------------------------------------------------------ adaptive ECE


@pytest.mark.parametrize("n_bins", [1, 5, 15])
def test_adaptive_ece_equals_quantile_reliability_bins(n_bins):
    rng = np.random.default_rng(4)
    proba = rng.dirichlet(np.ones(4), size=500)
    y = rng.integers(0, 4, size=500)
    expected = reliability_bins(y, proba, n_bins=n_bins, strategy="quantile").ece
    assert adaptive_ece(y, proba, n_bins=n_bins) == expected


def test_adaptive_ece_small_for_calibrated_predictions():
    rng = np.random.default_rng(5)
    proba = rng.dirichlet(np.ones(3), size=50_000)
    cumulative = proba.cumsum(axis=1)
    y = (rng.random((50_000, 1)) > cumulative).sum(axis=1).clip(max=2)  # y ~ proba
    assert adaptive_ece(y, proba) < 0.02
    # The same confidences with the labels shuffled are far from calibrated.
    assert adaptive_ece(rng.permutation(y), proba) > 0.1


# ------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "func", [entropy_decomposition, lambda p: uncertainty_scores(p, "entropy")]
)
@pytest.mark.parametrize(
    ("member_proba", "match"),
    [
        (np.full((4, 2), 0.5), "member_proba must be 3-D"),
        (np.full((2, 4, 2, 1), 0.5), "member_proba must be 3-D"),
        (np.full((0, 4, 2), 0.5), "at least one member, sample and class"),
        (np.full((2, 3, 2), 0.4), r"rows must sum to 1 .*member 0, row 0 sums to 0\.8"),
        (np.full((2, 3, 2), np.nan), "contains NaN or infinite values"),
        (np.full((2, 3, 2), [1.5, -0.5]), "contains negative values"),
    ],
)
def test_member_inputs_raise(func, member_proba, match):
    with pytest.raises(ValueError, match=match):
        func(member_proba)


def test_unknown_score_raises():
    with pytest.raises(ValueError, match=r"score must be one of \('max_probability', 'entropy'"):
        uncertainty_scores(_members(2), "variance")


@pytest.mark.parametrize(
    ("scores_in", "scores_out", "match"),
    [
        ([0.1, 0.2], [], r"^scores_out is empty; at least one score is required\.$"),
        ([], [0.1], "scores_in is empty"),
        ([[0.1, 0.2]], [0.3], r"scores_in must be 1-D, got an array of shape \(1, 2\)"),
        ([0.1, 0.2], 0.3, r"scores_out must be 1-D, got an array of shape \(\)"),
        (
            [0.1, np.nan],
            [0.3],
            r"scores_in contains NaN or infinite values: scores_in\[1\] is nan",
        ),
        ([0.1, 0.2], [np.inf], r"scores_out\[0\] is inf; scores must be finite"),
    ],
)
def test_ood_scores_invalid_inputs(scores_in, scores_out, match):
    with pytest.raises(ValueError, match=match):
        ood_scores(scores_in, scores_out)


@pytest.mark.parametrize(
    ("confidence", "match"),
    [
        ([0.1, 0.2], "confidence has 2 values but there are 6 samples"),
        (np.ones((6, 1)), "confidence must be 1-D"),
        ([0.1, 0.2, np.nan, 0.3, 0.4, 0.5], r"confidence\[2\] is nan"),
    ],
)
def test_risk_coverage_invalid_confidence(confidence, match):
    with pytest.raises(ValueError, match=match):
        risk_coverage(_RC_Y, _RC_PROBA, confidence=confidence)


@pytest.mark.parametrize("func", [risk_coverage, adaptive_ece])
@pytest.mark.parametrize(
    ("y_true", "y_proba", "match"),
    [
        ([0, 1], [0.5, 0.5], "y_proba must be 2-D"),
        ([[0], [1]], [[0.5, 0.5], [0.5, 0.5]], "y_true must be 1-D"),
        ([0, 1], [[0.5, 0.5], [0.9, 0.8]], r"row 1 sums to 1\.7"),
        ([0, 1], [[np.nan, 0.5], [0.5, 0.5]], "NaN or infinite"),
        ([0, 1, 1], [[0.5, 0.5], [0.5, 0.5]], "3 samples but y_proba has 2"),
    ],
)
def test_label_metrics_invalid_inputs(func, y_true, y_proba, match):
    with pytest.raises(ValueError, match=match):
        func(y_true, y_proba)
