"""scikit-learn's own estimator checks on every public estimator."""

from nets import MLP
from sklearn.utils.estimator_checks import parametrize_with_checks

from simplexens import (
    CurveClassifier,
    CurveRegressor,
    DeepEnsembleClassifier,
    DeepEnsembleRegressor,
    ESPROClassifier,
    ESPRORegressor,
    FGEClassifier,
    FGERegressor,
    SPROClassifier,
    SPRORegressor,
    SubspaceClassifier,
    SubspaceRegressor,
    SWAGClassifier,
    SWAGRegressor,
)

ESTIMATORS = [
    DeepEnsembleClassifier(
        MLP, n_estimators=2, max_epochs=15, lr=0.1, batch_size=32, random_state=0
    ),
    ESPROClassifier(
        MLP,
        n_modes=1,
        n_vertices=2,
        n_predict_samples=3,
        max_epochs=15,
        epochs_per_vertex=2,
        lr=0.1,
        batch_size=32,
        random_state=0,
    ),
    FGEClassifier(
        MLP, n_snapshots=2, cycle_length=1, max_epochs=15, lr=0.1, batch_size=32, random_state=0
    ),
    SWAGClassifier(
        MLP,
        swa_start=10,
        max_epochs=15,
        n_predict_samples=3,
        lr=0.1,
        swa_lr=0.05,
        batch_size=32,
        random_state=0,
    ),
    SPROClassifier(
        MLP,
        n_connectors=1,
        n_predict_samples=3,
        max_epochs=15,
        epochs_per_connector=2,
        lr=0.1,
        batch_size=32,
        random_state=0,
    ),
    CurveClassifier(
        MLP,
        n_predict_samples=3,
        max_epochs=15,
        curve_epochs=2,
        lr=0.1,
        batch_size=32,
        random_state=0,
    ),
    SubspaceClassifier(
        MLP,
        rank=2,
        max_rank=5,
        n_predict_samples=3,
        swa_start=10,
        max_epochs=15,
        lr=0.1,
        swa_lr=0.05,
        batch_size=32,
        random_state=0,
    ),
]


#: The regressors, at the classifiers' sizes (``lr`` lower: the Gaussian likelihood's
#: gradient grows as its scale shrinks; ESPRO's vertices a mode-norm away diverged on these
#: tiny sets: a far point's Gaussian NLL with a small scale is huge).
REGRESSORS = [
    DeepEnsembleRegressor(
        MLP, n_estimators=2, max_epochs=15, lr=0.05, batch_size=32, random_state=0
    ),
    ESPRORegressor(
        MLP,
        n_modes=1,
        n_vertices=2,
        n_predict_samples=3,
        max_epochs=15,
        epochs_per_vertex=2,
        lr=0.05,
        vertex_init_scale=0.3,
        batch_size=32,
        random_state=0,
    ),
    FGERegressor(
        MLP, n_snapshots=2, cycle_length=1, max_epochs=15, lr=0.05, batch_size=32, random_state=0
    ),
    SWAGRegressor(
        MLP,
        swa_start=10,
        max_epochs=15,
        n_predict_samples=3,
        lr=0.05,
        swa_lr=0.02,
        batch_size=32,
        random_state=0,
    ),
    SPRORegressor(
        MLP,
        n_connectors=1,
        n_predict_samples=3,
        max_epochs=15,
        epochs_per_connector=2,
        lr=0.05,
        batch_size=32,
        random_state=0,
    ),
    CurveRegressor(
        MLP,
        n_predict_samples=3,
        max_epochs=15,
        curve_epochs=2,
        lr=0.05,
        batch_size=32,
        random_state=0,
    ),
    SubspaceRegressor(
        MLP,
        rank=2,
        max_rank=5,
        n_predict_samples=3,
        swa_start=10,
        max_epochs=15,
        lr=0.05,
        swa_lr=0.02,
        batch_size=32,
        random_state=0,
    ),
]

#: Checks expected to fail, with the reason: duplicating rows changes the minibatches and the
#: shuffle of stochastic training, so weight 2 on a row equals a duplicated row only in
#: expectation (and exactly on a fixed batch: tests/test_weights.py). They pass by chance
#: for some estimators at these sizes; the mark does not require them to fail.
SAMPLE_WEIGHT_REASON = (
    "stochastic minibatches: a duplicated row changes the batches, so sample_weight=2 matches "
    "duplication in expectation only"
)


def expected_failures(estimator):
    return {
        "check_sample_weight_equivalence_on_dense_data": SAMPLE_WEIGHT_REASON,
        "check_sample_weight_equivalence_on_sparse_data": SAMPLE_WEIGHT_REASON,
    }


@parametrize_with_checks(ESTIMATORS + REGRESSORS, expected_failed_checks=expected_failures)
def test_sklearn_compatible(estimator, check):
    check(estimator)
