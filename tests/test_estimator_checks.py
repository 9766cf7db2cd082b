"""scikit-learn's own estimator checks on every public estimator."""

from nets import MLP
from sklearn.utils.estimator_checks import parametrize_with_checks

from simplexens import (
    CurveClassifier,
    DeepEnsembleClassifier,
    ESPROClassifier,
    FGEClassifier,
    SPROClassifier,
    SWAGClassifier,
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
]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_compatible(estimator, check):
    check(estimator)
