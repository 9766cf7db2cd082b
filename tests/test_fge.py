"""FGEClassifier and its cyclical schedule."""

import pickle

import pytest
import torch
from nets import MLP
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV

from simplexens import FGEClassifier
from simplexens.backends.schedules import CyclicSchedule

BATCH = 64


def fge(**params):
    defaults = dict(
        n_snapshots=3, cycle_length=2, max_epochs=3, lr=0.1, batch_size=BATCH, random_state=0
    )
    return FGEClassifier(MLP, **{**defaults, **params})


def closed_form_rate(i, alpha1, alpha2, length):
    """The schedule written out independently: down over [0, m], up over [m, C]."""
    j, m = i % length, length // 2
    if j <= m:
        return alpha1 - (alpha1 - alpha2) * j / m
    return alpha2 + (alpha1 - alpha2) * (j - m) / (length - m)


@pytest.mark.parametrize("length", [2, 3, 7, 10])
def test_schedule_matches_closed_form_and_hits_alpha2_at_snapshots(length):
    schedule = CyclicSchedule(0.05, 1e-4, length, n_snapshots=3)
    steps = range(3 * length)
    assert_allclose(
        [schedule.rate(i) for i in steps],
        [closed_form_rate(i, 0.05, 1e-4, length) for i in steps],
        rtol=1e-12,
    )
    snapshots = [i for i in steps if schedule.is_snapshot(i)]
    assert snapshots == [s * length + length // 2 for s in range(3)]
    assert_allclose([schedule.rate(i) for i in snapshots], 1e-4, rtol=1e-12)
    assert schedule.rate(0) == 0.05
    assert schedule.total_iterations == snapshots[-1] + 1


@pytest.mark.parametrize("cycle_length", [2, 3, 1.5])
def test_learning_rate_of_every_step_and_snapshots(small_digits, cycle_length):
    X, y = small_digits
    clf = fge(cycle_length=cycle_length).fit(X, y)
    n_batches = -(-len(X) // BATCH)
    length = max(2, round(cycle_length * n_batches))
    rates = clf.learning_rates_
    assert_allclose(rates, [closed_form_rate(i, 0.05, 1e-4, length) for i in range(len(rates))])
    expected = [s * length + length // 2 for s in range(3)]
    assert_array_equal(clf.snapshot_steps_, expected)
    assert_allclose(rates[expected], 1e-4)
    # Whole epochs, just enough for the last snapshot; all of them counted.
    cyclic_epochs = -(-(expected[-1] + 1) // n_batches)
    assert len(rates) == cyclic_epochs * n_batches
    assert clf.epochs_spent_ == 3 + cyclic_epochs
    assert clf.n_members_ == 3


def test_snapshots_differ(small_digits):
    X, y = small_digits
    clf = fge(n_snapshots=4).fit(X, y)
    weights = clf.members_.tensors["net.1.weight"]
    for i in range(4):
        for j in range(i):
            assert (weights[i] - weights[j]).abs().max() > 1e-4


def test_predict_proba_averages_the_snapshots(small_digits):
    X, y = small_digits
    clf = fge().fit(X, y)
    assert_allclose(clf.predict_proba(X), clf.predict_member_proba(X).mean(axis=0), rtol=1e-12)


def test_reproducible_and_picklable(small_digits):
    X, y = small_digits
    a = fge().fit(X, y)
    assert_array_equal(a.predict_proba(X), fge().fit(X, y).predict_proba(X))
    assert_array_equal(pickle.loads(pickle.dumps(a)).predict_proba(X), a.predict_proba(X))
    before = torch.get_rng_state()
    fge(random_state=1).fit(X, y)
    torch.testing.assert_close(torch.get_rng_state(), before)


def test_grid_search_over_cycle_parameters(small_digits):
    X, y = small_digits
    grid = GridSearchCV(
        fge(max_epochs=1, n_snapshots=2),
        {"cycle_length": [1, 2], "alpha1": [0.05, 0.1], "n_snapshots": [1, 2]},
        cv=2,
    ).fit(X, y)
    assert len(grid.cv_results_["params"]) == 8
    assert grid.best_estimator_.n_members_ == grid.best_params_["n_snapshots"]


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        (dict(n_snapshots=0), ValueError, "n_snapshots must be .*>= 1.*, got 0"),
        (dict(cycle_length=0), ValueError, "cycle_length must be .*> 0.*, got 0"),
        (dict(cycle_length=-2), ValueError, "cycle_length must be .*> 0.*, got -2"),
        (dict(alpha1=0.0), ValueError, "alpha1 must be .*> 0.*, got 0.0"),
        (dict(alpha2=0.1, alpha1=0.05), ValueError, r"alpha2 \(0.1\) must not exceed alpha1"),
        (dict(n_snapshots=1.5), TypeError, "n_snapshots must be an integer"),
    ],
)
def test_bad_parameters_fail_in_fit(small_digits, params, error, match):
    X, y = small_digits
    clf = fge(**params)
    with pytest.raises(error, match=match):
        clf.fit(X, y)
    with pytest.raises(NotFittedError):
        clf.predict(X)
