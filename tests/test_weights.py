"""``class_weight`` and ``fit(..., sample_weight=)``: the weighted loss against closed forms, the
effect on an imbalanced set against no weighting, and clear errors."""

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.exceptions import NotFittedError
from sklearn.metrics import recall_score
from sklearn.model_selection import train_test_split
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from simplexens import (
    CurveClassifier,
    DeepEnsembleClassifier,
    ESPROClassifier,
    FGEClassifier,
    SPROClassifier,
    SWAGClassifier,
)
from simplexens.backends.rows import INPUT_KEY, WEIGHT_KEY
from simplexens.backends.skorch.nets import MemberNet
from simplexens.datasets import MLP

X, Y = make_classification(
    300, 6, n_informative=4, n_redundant=0, weights=[0.9, 0.1], flip_y=0, random_state=0
)
X = X.astype(np.float32)

SMALL = {
    DeepEnsembleClassifier: {"n_estimators": 2},
    ESPROClassifier: {"n_modes": 1, "n_vertices": 2, "epochs_per_vertex": 1,
                      "n_predict_samples": 2},
    FGEClassifier: {"n_snapshots": 2},
    SWAGClassifier: {"n_modes": 1, "swa_start": 2, "n_predict_samples": 2},
    SPROClassifier: {"n_modes": 2, "n_connectors": 1, "epochs_per_connector": 1,
                     "n_predict_samples": 2},
    CurveClassifier: {"curve_epochs": 1, "n_predict_samples": 3},
}  # fmt: skip


def _small(cls, **params):
    return cls(
        MLP, **{"max_epochs": 3, "batch_size": 32, "random_state": 0, **SMALL[cls], **params}
    )


def _net(n_classes=3):
    net = MemberNet(
        nn.Linear(4, n_classes), criterion=nn.CrossEntropyLoss, criterion__reduction="none"
    )
    return net.initialize()


def test_weight_two_equals_a_duplicated_row_on_a_fixed_batch():
    torch.manual_seed(0)
    net = _net()
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    weights = torch.ones(6)
    weights[4] = 2.0
    logits = net.infer({INPUT_KEY: x, WEIGHT_KEY: weights})
    loss = net.get_loss(logits, y, X={INPUT_KEY: x, WEIGHT_KEY: weights})
    duplicated = torch.cat([x, x[4:5]]), torch.cat([y, y[4:5]])
    expected = F.cross_entropy(net.module_(duplicated[0]), duplicated[1])
    torch.testing.assert_close(loss, expected)
    # general weights: the weighted mean of per-row losses
    weights = torch.tensor([0.5, 1.0, 3.0, 0.0, 2.0, 1.5])
    loss = net.get_loss(logits, y, X={INPUT_KEY: x, WEIGHT_KEY: weights})
    rows = F.cross_entropy(net.module_(x), y, reduction="none")
    torch.testing.assert_close(loss, (rows * weights).sum() / weights.sum())


@pytest.mark.parametrize("cls", list(SMALL))
def test_unit_weights_change_nothing(cls):
    plain = _small(cls).fit(X, Y)
    weighted = _small(cls).fit(X, Y, sample_weight=np.ones(len(Y)))
    assert_allclose(weighted.predict_proba(X), plain.predict_proba(X), rtol=0, atol=0)


def test_a_weight_negligible_in_float32_counts_as_zero():
    """A weight far below float32's range next to weights of 1 is accepted, as its row's
    zero weight (its share of the total is below float32's precision)."""
    tiny, zero = np.ones(len(Y)), np.ones(len(Y))
    tiny[0], zero[0] = 1e-100, 0.0
    model = _small(DeepEnsembleClassifier)
    expected = clone(model).fit(X, Y, sample_weight=zero).predict_proba(X)
    assert_allclose(model.fit(X, Y, sample_weight=tiny).predict_proba(X), expected, rtol=0)


@pytest.mark.parametrize("cls", [DeepEnsembleClassifier, ESPROClassifier])
def test_balanced_class_weight_raises_minority_recall(cls):
    """Against no weighting, on held-out rows, over 3 seeds: higher recall at every seed."""
    gains = []
    for seed in range(3):
        X_train, X_test, y_train, y_test = train_test_split(
            X, Y, test_size=0.3, stratify=Y, random_state=seed
        )
        recall = {}
        for weight in (None, "balanced"):
            model = _small(cls, class_weight=weight, random_state=seed, max_epochs=5)
            model.fit(X_train, y_train)
            recall[weight] = recall_score(y_test, model.predict(X_test))
        gains.append(recall["balanced"] - recall[None])
    assert min(gains) > 0, gains
    assert np.mean(gains) > 0.2, gains


def test_class_weight_dict_equals_the_same_sample_weights():
    by_class = _small(DeepEnsembleClassifier, class_weight={0: 1.0, 1: 4.0}).fit(X, Y)
    by_row = _small(DeepEnsembleClassifier).fit(X, Y, sample_weight=np.where(Y == 1, 4.0, 1.0))
    assert_allclose(by_class.predict_proba(X), by_row.predict_proba(X), rtol=0, atol=0)


class Pairs(Dataset):
    def __len__(self):
        return len(X)

    def __getitem__(self, i):
        return torch.from_numpy(X[i]), Y[i]


def test_weights_with_a_dataset_equal_weights_with_arrays():
    weights = np.random.RandomState(0).uniform(0.5, 2.0, len(Y))
    arrays = _small(ESPROClassifier).fit(X, Y, sample_weight=weights)
    dataset = _small(ESPROClassifier).fit(Pairs(), sample_weight=weights)
    assert_allclose(dataset.predict_proba(X), arrays.predict_proba(X), rtol=0, atol=0)


class ScalarLoss(nn.Module):
    """A criterion that always averages (it takes ``reduction`` but ignores it)."""

    def __init__(self, reduction="mean"):
        super().__init__()

    def forward(self, logits, y):
        return F.cross_entropy(logits, y)


BAD = {
    "negative weight": ({"sample_weight": -np.ones(len(Y))}, {}, "(?i)negative"),
    "wrong length": ({"sample_weight": np.ones(5)}, {}, "shape"),
    "all zero": ({"sample_weight": np.zeros(len(Y))}, {}, "non-zero"),
    "non-finite": ({"sample_weight": np.full(len(Y), np.nan)}, {}, "NaN|finite"),
    "beyond float32": ({"sample_weight": np.full(len(Y), 1e39)}, {}, "float32.s range"),
    "below float32": (
        {"sample_weight": np.r_[1e-40, np.full(len(Y) - 1, 1e-46)]},
        {},
        "float32's range",
    ),
    "unknown class_weight string": ({}, {"class_weight": "equal"}, "class_weight"),
    "class_weight of an absent label": ({}, {"class_weight": {7: 2.0}}, "7"),
    "reduction set by the user": (
        {"sample_weight": np.ones(len(Y))},
        {"criterion__reduction": "sum"},
        "reduction",
    ),
    "criterion without per-row losses": (
        {"sample_weight": np.ones(len(Y))},
        {"criterion": ScalarLoss},
        "one loss per row",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_weights_fail_in_fit(case):
    fit_params, params, words = BAD[case]
    model = _small(DeepEnsembleClassifier, **params)
    with pytest.raises(ValueError, match=words):
        model.fit(X, Y, **fit_params)
    with pytest.raises(NotFittedError):
        model.predict(X)


def test_weights_with_a_predefined_validation_dataset():
    """A validation Dataset given as is has no weights: its loss is the plain mean."""
    from skorch.dataset import Dataset as SkorchDataset
    from skorch.helper import predefined_split

    split = predefined_split(SkorchDataset(X[:40], Y[:40]))
    model = _small(DeepEnsembleClassifier, train_split=split)
    model.fit(X, Y, sample_weight=np.ones(len(Y)))
    plain = _small(DeepEnsembleClassifier, train_split=split).fit(X, Y)
    assert_allclose(model.predict_proba(X), plain.predict_proba(X), rtol=0, atol=0)
