"""``member_memory`` and ``precision`` on the estimators: grouped members predict as ungrouped
ones, and bfloat16 training and prediction stay within a tolerance of float32."""

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.datasets import make_classification

from simplexens import CurveClassifier, DeepEnsembleClassifier, ESPROClassifier, SWAGClassifier
from simplexens.datasets import MLP

X, Y = make_classification(120, 6, n_informative=4, n_redundant=0, n_classes=3, random_state=5)
X = X.astype(np.float32)


def test_grouped_members_predict_as_ungrouped():
    """A budget that holds one member at a time gives bit-identical predictions (CPU)."""
    params = dict(n_modes=2, swa_start=2, n_predict_samples=3, max_epochs=3, random_state=0)
    plain = SWAGClassifier(MLP, **params).fit(X, Y)
    member_mib = sum(t[0].numel() * t.element_size() for t in plain.members_.tensors.values())
    grouped = SWAGClassifier(MLP, member_memory=1.5 * member_mib / 2**20, **params).fit(X, Y)
    assert grouped.members_.is_grouped
    assert_allclose(grouped.predict_proba(X), plain.predict_proba(X), rtol=0, atol=0)


@pytest.mark.parametrize(
    "make",
    [
        lambda **p: DeepEnsembleClassifier(MLP, n_estimators=2, **p),
        lambda **p: ESPROClassifier(MLP, n_modes=1, n_vertices=2, epochs_per_vertex=2, **p),
        lambda **p: CurveClassifier(MLP, curve_epochs=2, **p),
    ],
)
def test_bfloat16_trains_and_predicts_near_float32(make):
    """Tolerance: bfloat16 keeps 8 bits of mantissa, so logits differ by about 1e-2 after a
    few epochs; probabilities within 0.05 at most, 0.01 on average."""
    params = dict(max_epochs=4, lr=0.1, batch_size=32, random_state=0)
    full = make(**params).fit(X, Y).predict_proba(X)
    half = make(precision="bfloat16", **params).fit(X, Y).predict_proba(X)
    assert np.isfinite(half).all()
    assert np.abs(half - full).max() < 0.05
    assert np.abs(half - full).mean() < 0.01


def test_unknown_precision_is_an_error():
    with pytest.raises(ValueError, match="precision"):
        DeepEnsembleClassifier(MLP, precision="float8").fit(X, Y)
