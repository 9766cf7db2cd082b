"""Tests for simplexens.metrics against scikit-learn and hand-computed oracles."""

import re
from itertools import combinations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss

from simplexens.metrics import (
    ReliabilityBins,
    brier_score,
    evaluate,
    expected_calibration_error,
    member_disagreement,
    nll,
    reliability_bins,
)


def _dirichlet_problem(seed, n_samples=300, n_classes=4):
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(np.ones(n_classes), size=n_samples)
    y = rng.integers(0, n_classes, size=n_samples)
    return y, proba


# --------------------------------------------------------------------------- nll


def test_nll_matches_log_loss_integer_labels():
    y, proba = _dirichlet_problem(0)
    assert_allclose(nll(y, proba), log_loss(y, proba), rtol=1e-12)


def test_nll_matches_log_loss_string_labels():
    y, proba = _dirichlet_problem(1)
    names = np.array(["ant", "bee", "cat", "dog"])
    assert_allclose(nll(names[y], proba), log_loss(names[y], proba), rtol=1e-12)


def test_nll_with_labels_when_class_missing():
    y, proba = _dirichlet_problem(2)
    y = np.where(y == 2, 3, y)  # class 2 never occurs in y_true
    labels = [0, 1, 2, 3]
    assert_allclose(nll(y, proba, labels=labels), log_loss(y, proba, labels=labels), rtol=1e-12)


def test_nll_zero_probability_is_finite():
    value = nll([0], [[0.0, 1.0]], labels=[0, 1])
    assert_allclose(value, -np.log(np.finfo(np.float64).tiny))


def test_nll_matches_log_loss_inside_its_clipping_range():
    # True-class probabilities within [eps, 1 - eps], where log_loss's clipping is inactive.
    eps = np.finfo(np.float64).eps
    proba = np.array([[1e-15, 1 - 1e-15], [1 - 1e-15, 1e-15], [0.3, 0.7], [0.999, 0.001]])
    y = np.array([0, 0, 1, 1])
    assert np.all(proba[np.arange(4), y] >= eps)
    assert_allclose(nll(y, proba), log_loss(y, proba), rtol=1e-12)
    assert_allclose(nll(y, proba), -np.mean(np.log([1e-15, 1 - 1e-15, 0.7, 0.001])), rtol=1e-12)


def test_nll_matches_log_loss_float32():
    # log_loss computes in float32 for float32 input, nll in float64: equal to float32 precision.
    y, proba = _dirichlet_problem(14, n_samples=200, n_classes=3)
    proba32 = proba.astype(np.float32)
    assert_allclose(nll(y, proba32), log_loss(y, proba32), rtol=1e-6)


@pytest.mark.parametrize(
    ("p_true", "ours", "theirs"),
    [
        # Exactly 0: nll clips at float64's tiny, log_loss at float64's eps.
        (0.0, -np.log(np.finfo(np.float64).tiny), -np.log(np.finfo(np.float64).eps)),
        # Between tiny and eps: nll does not clip, log_loss does.
        (1e-20, -np.log(1e-20), -np.log(np.finfo(np.float64).eps)),
        # Exactly 1: nll does not clip from above, log_loss clips to 1 - eps.
        (1.0, 0.0, -np.log(1 - np.finfo(np.float64).eps)),
    ],
)
def test_nll_clipping_differs_from_log_loss(p_true, ours, theirs):
    proba = [[p_true, 1 - p_true]]
    assert_allclose(nll([0], proba, labels=[0, 1]), ours, rtol=1e-12)
    assert_allclose(log_loss([0], proba, labels=[0, 1]), theirs, rtol=1e-12)
    assert abs(ours - theirs) > 1e-17


def test_nll_clipping_float32_differs_from_log_loss():
    # For float32 input log_loss clips at float32's eps (1.2e-7); nll keeps the value.
    p_true = np.float32(1e-9)
    proba = np.array([[p_true, 1 - p_true]], dtype=np.float32)
    assert_allclose(nll([0], proba, labels=[0, 1]), -np.log(np.float64(p_true)), rtol=1e-12)
    expected = -np.log(np.finfo(np.float32).eps)
    assert_allclose(log_loss([0], proba, labels=[0, 1]), expected, rtol=1e-6)


# ------------------------------------------------------------------------- brier


def test_brier_matches_sklearn_multiclass():
    y, proba = _dirichlet_problem(3, n_classes=5)
    expected = brier_score_loss(y, proba, labels=np.arange(5), scale_by_half=False)
    assert_allclose(brier_score(y, proba), expected, rtol=1e-12)


def test_brier_matches_sklearn_binary():
    y, proba = _dirichlet_problem(4, n_classes=2)
    expected = brier_score_loss(y, proba, scale_by_half=False)
    assert_allclose(brier_score(y, proba), expected, rtol=1e-12)
    # Also twice the classical binary Brier score on the positive column.
    assert_allclose(brier_score(y, proba), 2 * np.mean((proba[:, 1] - y) ** 2), rtol=1e-12)


def test_brier_string_labels_with_missing_class():
    y, proba = _dirichlet_problem(5, n_classes=3)
    names = np.array(["a", "b", "c"])
    y = np.where(y == 1, 0, y)
    expected = brier_score_loss(names[y], proba, labels=names, scale_by_half=False)
    assert_allclose(brier_score(names[y], proba, labels=names), expected, rtol=1e-12)


# --------------------------------------------------------------------------- ECE

# Hand example: 4 classes, 6 samples, 3 uniform bins with edges 0, 1/3, 2/3, 1.
#   sample  proba                    conf  argmax  y  correct  bin
#   0       [.30, .25, .25, .20]     .30   0       0  yes      0
#   1       [.25, .25, .20, .30]     .30   3       1  no       0
#   2       [.50, .20, .20, .10]     .50   0       0  yes      1
#   3       [.10, .70, .20, .00]     .70   1       2  no       2
#   4       [.00, .00, .90, .10]     .90   2       2  yes      2
#   5       [.00, .00, .00, 1.0]     1.0   3       3  yes      2
# bin 0: n=2, acc=1/2, conf=(.3+.3)/2=.3,         gap=.2
# bin 1: n=1, acc=1,   conf=.5,                   gap=.5
# bin 2: n=3, acc=2/3, conf=(.7+.9+1)/3=2.6/3,    gap=.6/3=.2
# ece = 2/6*.2 + 1/6*.5 + 3/6*.2 = (.4 + .5 + .6)/6 = .25
HAND_PROBA = np.array(
    [
        [0.30, 0.25, 0.25, 0.20],
        [0.25, 0.25, 0.20, 0.30],
        [0.50, 0.20, 0.20, 0.10],
        [0.10, 0.70, 0.20, 0.00],
        [0.00, 0.00, 0.90, 0.10],
        [0.00, 0.00, 0.00, 1.00],
    ]
)
HAND_Y = np.array([0, 1, 0, 2, 2, 3])


def test_reliability_bins_hand_example():
    bins = reliability_bins(HAND_Y, HAND_PROBA, n_bins=3)
    assert isinstance(bins, ReliabilityBins)
    assert_allclose(bins.edges, [0.0, 1 / 3, 2 / 3, 1.0])
    assert_array_equal(bins.counts, [2, 1, 3])
    assert bins.counts.dtype.kind == "i"
    assert_allclose(bins.accuracy, [0.5, 1.0, 2 / 3])
    assert_allclose(bins.confidence, [0.3, 0.5, 2.6 / 3])
    assert_allclose(bins.ece, 0.25)
    assert isinstance(bins.ece, float)
    assert_allclose(expected_calibration_error(HAND_Y, HAND_PROBA, n_bins=3), 0.25)


def test_reliability_bins_hand_example_string_labels():
    names = np.array(["w", "x", "y", "z"])
    ece = expected_calibration_error(names[HAND_Y], HAND_PROBA, n_bins=3, labels=names)
    assert_allclose(ece, 0.25)


def test_reliability_bins_empty_bins_are_nan():
    # Binary confidences are >= 0.5, so with 4 bins the first two are empty.
    bins = reliability_bins([0, 1, 1], [[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]], n_bins=4)
    assert_array_equal(bins.counts, [0, 0, 1, 2])
    assert_array_equal(np.isnan(bins.accuracy), [True, True, False, False])
    assert_array_equal(np.isnan(bins.confidence), [True, True, False, False])
    # bin 2: conf .6 wrong -> gap .6; bin 3: confs .9 (right), .8 (right) -> gap .15
    assert_allclose(bins.ece, (0.6 + 2 * 0.15) / 3)


def test_perfectly_calibrated_has_small_ece():
    rng = np.random.default_rng(42)
    n = 200_000
    conf = rng.uniform(0.5, 1.0, size=n)
    correct = rng.random(n) < conf
    proba = np.column_stack([conf, 1 - conf])  # always predicts class 0
    y = np.where(correct, 0, 1)
    assert expected_calibration_error(y, proba) < 0.01
    assert expected_calibration_error(y, proba, strategy="quantile") < 0.01


def test_miscalibrated_has_large_ece():
    # Always 90% confident but right only half of the time: ece ~ 0.4.
    rng = np.random.default_rng(7)
    n = 10_000
    proba = np.tile([0.9, 0.1], (n, 1))
    y = rng.integers(0, 2, size=n)
    assert_allclose(expected_calibration_error(y, proba), 0.9 - np.mean(y == 0))


def test_quantile_bins_have_roughly_equal_counts():
    y, proba = _dirichlet_problem(8, n_samples=1000, n_classes=3)
    bins = reliability_bins(y, proba, n_bins=10, strategy="quantile")
    assert bins.edges[0] == 0.0
    assert bins.edges[-1] == 1.0
    assert np.all(np.diff(bins.edges) >= 0)
    assert np.all(np.abs(bins.counts - 100) <= 2)


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
@pytest.mark.parametrize("n_bins", [1, 5, 15])
def test_counts_sum_to_n(strategy, n_bins):
    y, proba = _dirichlet_problem(9, n_samples=257, n_classes=3)
    bins = reliability_bins(y, proba, n_bins=n_bins, strategy=strategy)
    assert bins.edges.shape == (n_bins + 1,)
    assert bins.counts.shape == bins.accuracy.shape == bins.confidence.shape == (n_bins,)
    assert bins.counts.sum() == 257


def test_quantile_ties_give_empty_bins():
    proba = np.tile([0.7, 0.3], (20, 1))
    bins = reliability_bins([0] * 20, proba, n_bins=4, strategy="quantile", labels=[0, 1])
    assert bins.counts.sum() == 20
    assert np.sum(bins.counts > 0) == 1
    assert_allclose(bins.ece, 0.3)


def test_confidence_one_lands_in_last_bin():
    bins = reliability_bins([0], [[1.0, 0.0]], labels=[0, 1])
    expected = np.zeros(15, dtype=int)
    expected[-1] = 1
    assert_array_equal(bins.counts, expected)


def test_bin_rule_on_edges():
    # 4 uniform bins: edges 0, .25, .5, .75, 1 (exact in binary floating point).
    # With 4 classes no confidence is below .25, so bin 0 holds only the uniform rows.
    proba = np.array(
        [
            [0.25, 0.25, 0.25, 0.25],  # conf 0.25 -> bin 0 (right-closed)
            [0.25, 0.25, 0.25, 0.25],  # conf 0.25 -> bin 0
            [0.26, 0.25, 0.25, 0.24],  # conf 0.26 -> bin 1
            [0.50, 0.50, 0.00, 0.00],  # conf 0.50 -> bin 1
            [0.75, 0.25, 0.00, 0.00],  # conf 0.75 -> bin 2
            [1.00, 0.00, 0.00, 0.00],  # conf 1.00 -> bin 3
        ]
    )
    bins = reliability_bins([0] * 6, proba, n_bins=4, labels=[0, 1, 2, 3])
    assert_allclose(bins.edges, [0.0, 0.25, 0.5, 0.75, 1.0])
    assert_array_equal(bins.counts, [2, 2, 1, 1])
    assert_allclose(bins.confidence, [0.25, 0.38, 0.75, 1.0])


# ------------------------------------------------------------------ disagreement


def _brute_force_disagreement(member_proba):
    preds = np.asarray(member_proba).argmax(axis=2)
    pairs = list(combinations(range(preds.shape[0]), 2))
    return np.mean([np.mean(preds[i] != preds[j]) for i, j in pairs])


def test_member_disagreement_hand_example():
    preds = np.array([[0, 1, 2, 0], [0, 1, 1, 2], [0, 2, 1, 1]])
    member_proba = np.eye(3)[preds] * 0.7 + 0.1
    # Per sample, disagreeing pairs out of 3: 0, 2, 2, 3 -> mean (0+2/3+2/3+1)/4 = 7/12.
    assert_allclose(member_disagreement(member_proba), 7 / 12)


def test_member_disagreement_matches_brute_force():
    rng = np.random.default_rng(11)
    member_proba = rng.dirichlet(np.ones(4), size=(6, 50))
    assert_allclose(
        member_disagreement(member_proba), _brute_force_disagreement(member_proba), rtol=1e-12
    )


def test_member_disagreement_identical_and_single():
    _, proba = _dirichlet_problem(12)
    assert member_disagreement(np.stack([proba, proba, proba])) == 0.0
    assert member_disagreement(proba[None]) == 0.0


# ---------------------------------------------------------------------- evaluate


@pytest.mark.parametrize("string_targets", [False, True])
def test_evaluate_logistic_regression(string_targets):
    X, y = load_iris(return_X_y=True)
    if string_targets:
        y = load_iris().target_names[y]
    clf = LogisticRegression(max_iter=1000).fit(X, y)
    proba = clf.predict_proba(X)
    result = evaluate(clf, X, y, n_bins=10)
    assert set(result) == {"accuracy", "nll", "brier", "ece"}
    assert all(isinstance(v, float) for v in result.values())
    assert_allclose(result["accuracy"], accuracy_score(y, clf.predict(X)))
    assert_allclose(result["nll"], log_loss(y, proba, labels=clf.classes_), rtol=1e-12)
    expected_brier = brier_score_loss(y, proba, labels=clf.classes_, scale_by_half=False)
    assert_allclose(result["brier"], expected_brier, rtol=1e-12)
    assert_allclose(result["ece"], expected_calibration_error(y, proba, n_bins=10))


# ------------------------------------------------------------------------ errors


class _FixedProba:
    """Stand-in for a fitted classifier whose ``predict_proba`` returns a given matrix."""

    def __init__(self, proba, classes):
        self.proba = proba
        self.classes_ = np.asarray(classes)

    def predict_proba(self, X):
        return self.proba


def _evaluate(y_true, y_proba, labels=None):
    """Call ``evaluate`` with ``y_proba`` as the predictions, as the other metrics are called."""
    classes = np.unique(y_true) if labels is None else labels
    return evaluate(_FixedProba(y_proba, classes), np.zeros((len(y_proba), 1)), y_true)


def _disagreement(y_true, y_proba, labels=None):
    """Call ``member_disagreement`` with a valid member 0 and ``y_proba`` as member 1."""
    y_proba = np.asarray(y_proba, dtype=float)
    valid = np.full_like(y_proba, 1 / y_proba.shape[-1])
    return member_disagreement(np.stack([valid, y_proba]))


METRICS = [nll, brier_score, reliability_bins, expected_calibration_error, _evaluate]
ALL_METRICS = [*METRICS, _disagreement]


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(
    ("y_true", "y_proba", "labels", "match"),
    [
        ([0, 1], [0.5, 0.5], None, "y_proba must be 2-D"),
        ([0, 1], [[[0.5, 0.5]], [[0.5, 0.5]]], None, "y_proba must be 2-D"),
        ([[0], [1]], [[0.5, 0.5], [0.5, 0.5]], None, "y_true must be 1-D"),
        ([0, 1], [[0.2, 0.3, 0.5], [0.2, 0.3, 0.5]], None, "3 columns but there are 2"),
        ([0, 1], [[0.5, 0.5], [0.5, 0.5]], [0, 1, 2], "2 columns but there are 3"),
        ([0, 5], [[0.5, 0.5], [0.5, 0.5]], [0, 1], r"\[5\] are not in labels"),
        (["a", "c"], [[0.5, 0.5], [0.5, 0.5]], ["a", "b"], "not in labels"),
        ([0, 1, 1], [[0.5, 0.5], [0.5, 0.5]], None, "3 samples but y_proba has 2"),
        ([], np.zeros((0, 2)), [0, 1], "At least one sample"),
        ([0, 1], [[np.nan, 0.5], [0.5, 0.5]], None, "NaN or infinite"),
        ([0, 1], [[np.inf, 0.5], [0.5, 0.5]], None, "NaN or infinite"),
        ([0, 1], [[1.5, -0.5], [0.5, 0.5]], None, "negative"),
        ([0, 1], [[0.5, 0.5], [0.5, 0.5]], [1, 1], "unique"),
    ],
)
def test_invalid_inputs_raise(metric, y_true, y_proba, labels, match):
    with pytest.raises(ValueError, match=match):
        metric(y_true, y_proba, labels=labels)


@pytest.mark.parametrize("metric", ALL_METRICS)
@pytest.mark.parametrize(
    ("y_proba", "match"),
    [
        ([[np.nan, 0.5], [0.5, 0.5]], "contains NaN or infinite values"),
        ([[0.5, 0.5], [np.inf, 0.0]], "contains NaN or infinite values"),
        ([[0.5, 0.5], [-np.inf, 1.0]], "contains NaN or infinite values"),
        (np.full((2, 2), np.nan), "contains NaN or infinite values"),
        ([[1.5, -0.5], [0.5, 0.5]], "contains negative values"),
        ([[-2e-6, 1.0], [0.5, 0.5]], "contains negative values"),
        ([[1.88, 0.12], [0.5, 0.5]], "contains values greater than 1"),
        ([[1.0 + 2e-6, 0.0], [0.5, 0.5]], "contains values greater than 1"),
        (
            [[0.5, 0.5], [0.9, 0.8]],
            r"rows must sum to 1 \(tolerance 1e-3\);.*row 1 sums to 1\.7\.",
        ),
        (
            [[0.2, 0.2], [0.5, 0.5]],
            r"rows must sum to 1 \(tolerance 1e-3\);.*row 0 sums to 0\.4\.",
        ),
        ([[0.5, 0.5011], [0.5, 0.5]], r"row 0 sums to 1\.0011\."),
        ([[0.5, 0.5], [0.4989, 0.5]], r"row 1 sums to 0\.9989\."),
    ],
)
def test_invalid_probabilities_raise(metric, y_proba, match):
    with pytest.raises(ValueError, match=match):
        metric([0, 1], y_proba)


def _full(message):
    return f"^{re.escape(message)}$"


@pytest.mark.parametrize(
    ("y_proba", "message"),
    [
        (
            [[0.5, np.nan], [0.5, 0.5]],
            "y_proba contains NaN or infinite values: y_proba[0, 1] is nan; "
            "probabilities must lie in [0, 1] (tolerance 1e-6).",
        ),
        (
            [[0.5, 0.5], [-0.5, 1.5]],
            "y_proba contains negative values: y_proba[1, 0] is -0.5; "
            "probabilities must lie in [0, 1] (tolerance 1e-6).",
        ),
        (
            [[1.88, 0.12], [0.5, 0.5]],
            "y_proba contains values greater than 1: y_proba[0, 0] is 1.88; "
            "probabilities must lie in [0, 1] (tolerance 1e-6).",
        ),
        (
            [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.9, 0.8], [0.0, 0.0]],
            "y_proba rows must sum to 1 (tolerance 1e-3); row 3 sums to 1.7.",
        ),
    ],
)
def test_invalid_probability_messages(y_proba, message):
    y = [0, 1, 0, 1, 0][: len(y_proba)]
    with pytest.raises(ValueError, match=_full(message)):
        nll(y, y_proba)


def test_invalid_member_probability_messages():
    member_proba = np.full((3, 2, 2), 0.5)
    member_proba[2, 1] = [0.9, 0.8]
    message = "member_proba rows must sum to 1 (tolerance 1e-3); member 2, row 1 sums to 1.7."
    with pytest.raises(ValueError, match=_full(message)):
        member_disagreement(member_proba)
    message = (
        "member_proba contains NaN or infinite values: member_proba[0, 0, 0] is nan; "
        "probabilities must lie in [0, 1] (tolerance 1e-6)."
    )
    with pytest.raises(ValueError, match=_full(message)):
        member_disagreement(np.full((3, 4, 2), np.nan))


def test_evaluate_checks_predictions_of_estimator():
    estimator = _FixedProba(np.array([[0.9, 0.8], [0.5, 0.5]]), classes=[0, 1])
    with pytest.raises(ValueError, match=r"row 0 sums to 1\.7"):
        evaluate(estimator, np.zeros((2, 1)), [0, 1])
    with pytest.raises(ValueError, match="y_true has 3 samples but y_proba has 2"):
        evaluate(_FixedProba(np.full((2, 2), 0.5), [0, 1]), np.zeros((2, 1)), [0, 1, 1])


# Values on the edge of the tolerances, with y_true = [0, 1]:
#   float32 1.0000001 is 1 + 2**-23, inside the 1e-6 range tolerance and clipped to 1;
#   -5e-7 is inside it too and clipped to 0; row sums of 1 +- 9e-4 are inside 1e-3.
EDGE_PROBA = [
    np.array([[1.0000001, 0.0], [0.25, 0.75]], dtype=np.float32),
    np.array([[1.0000005, -5e-7], [0.25, 0.75]]),
    np.array([[1.0, 0.0009], [0.2491, 0.75]]),
]


@pytest.mark.parametrize("proba", EDGE_PROBA)
def test_values_within_tolerance_are_accepted(proba):
    # After clipping into [0, 1]: sample 0 is right with confidence 1, sample 1 with .75.
    y = [0, 1]
    assert_allclose(nll(y, proba), -np.log(0.75) / 2, rtol=1e-12)
    expected_brier = np.mean(np.sum((np.clip(proba.astype(float), 0, 1) - np.eye(2)) ** 2, axis=1))
    assert_allclose(brier_score(y, proba), expected_brier, rtol=1e-12)
    bins = reliability_bins(y, proba, n_bins=4)
    assert_array_equal(bins.counts, [0, 0, 1, 1])
    assert_allclose(bins.confidence[2:], [0.75, 1.0], rtol=1e-12)
    assert_allclose(bins.ece, 0.125, rtol=1e-12)
    assert_allclose(expected_calibration_error(y, proba, n_bins=4), 0.125, rtol=1e-12)
    assert_allclose(member_disagreement(np.stack([proba, proba[:, ::-1]])), 1.0)
    result = _evaluate(y, proba)
    assert_allclose(
        [result["accuracy"], result["nll"], result["brier"], result["ece"]],
        [1.0, -np.log(0.75) / 2, expected_brier, 0.125],
        rtol=1e-12,
    )


def _loop_ece(y_index, proba, n_bins):
    """ECE with uniform right-closed bins, one bin at a time."""
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y_index
    bin_id = np.maximum(np.ceil(confidence * n_bins).astype(int) - 1, 0)
    ece = 0.0
    for b in range(n_bins):
        members = bin_id == b
        if members.any():
            gap = abs(correct[members].mean() - confidence[members].mean())
            ece += members.sum() / len(proba) * gap
    return ece


def test_float32_softmax_rows_are_accepted():
    rng = np.random.default_rng(15)
    logits = rng.normal(scale=3.0, size=(3, 400, 10)).astype(np.float32)
    member_proba = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
    proba = member_proba.mean(axis=0)
    assert proba.dtype == np.float32
    sums = proba.astype(np.float64).sum(axis=1)
    assert np.any(sums != 1.0)  # rounding is present, so the tolerance is exercised
    y = rng.integers(0, 10, size=400)
    proba64 = proba.astype(np.float64)
    assert_allclose(nll(y, proba), log_loss(y, proba, labels=np.arange(10)), rtol=1e-6)
    expected_brier = np.mean(np.sum((proba64 - np.eye(10)[y]) ** 2, axis=1))
    assert_allclose(brier_score(y, proba, labels=np.arange(10)), expected_brier, rtol=1e-12)
    expected_ece = _loop_ece(y, proba64, 15)
    assert_allclose(reliability_bins(y, proba).ece, expected_ece, rtol=1e-12)
    assert_allclose(expected_calibration_error(y, proba), expected_ece, rtol=1e-12)
    expected = _brute_force_disagreement(member_proba)
    assert_allclose(member_disagreement(member_proba), expected, rtol=1e-12)
    result = _evaluate(y, proba, labels=np.arange(10))
    assert_allclose(result["accuracy"], np.mean(proba.argmax(axis=1) == y))
    assert_allclose(result["ece"], expected_ece, rtol=1e-12)


@pytest.mark.parametrize("metric", [reliability_bins, expected_calibration_error])
def test_invalid_n_bins_and_strategy(metric):
    y, proba = _dirichlet_problem(13, n_samples=20)
    with pytest.raises(ValueError, match="n_bins == 0, must be >= 1"):
        metric(y, proba, n_bins=0)
    with pytest.raises(TypeError, match="n_bins must be an instance of int"):
        metric(y, proba, n_bins=2.5)
    with pytest.raises(ValueError, match=r"strategy must be one of \('uniform', 'quantile'\)"):
        metric(y, proba, strategy="equal")


def test_evaluate_rejects_unknown_label():
    X, y = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=1000).fit(X, y)
    with pytest.raises(ValueError, match="not in labels"):
        evaluate(clf, X[:3], np.array([0, 1, 7]))


@pytest.mark.parametrize("shape", [(4,), (4, 3), (2, 3, 4, 5)])
def test_member_disagreement_requires_3d(shape):
    with pytest.raises(ValueError, match="member_proba must be 3-D"):
        member_disagreement(np.ones(shape))


@pytest.mark.parametrize("shape", [(0, 4, 2), (3, 0, 2), (3, 4, 0)])
def test_member_disagreement_requires_members_samples_classes(shape):
    with pytest.raises(ValueError, match="at least one member, sample and class"):
        member_disagreement(np.ones(shape))
