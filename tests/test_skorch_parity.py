"""skorch's ``iterator_train``, ``iterator_valid``, ``dataset`` and ``compile`` pass through to
every member's net, as in skorch; each test sees the user's object being used."""

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from sklearn.base import clone
from sklearn.datasets import make_classification
from skorch.dataset import Dataset as SkorchDataset
from skorch.dataset import ValidSplit
from torch.utils.data import DataLoader

from simplexens import DeepEnsembleClassifier, ESPROClassifier, SWAGClassifier
from simplexens.datasets import MLP

X, Y = make_classification(80, 5, n_informative=3, n_redundant=0, n_classes=3, random_state=1)
X = X.astype(np.float32)

CALLS = {"train": 0, "valid": 0, "dataset": 0, "compiled": 0}


class TrainLoader(DataLoader):
    def __init__(self, *args, **kwargs):
        CALLS["train"] += 1
        super().__init__(*args, **kwargs)


class ValidLoader(DataLoader):
    def __init__(self, *args, **kwargs):
        CALLS["valid"] += 1
        super().__init__(*args, **kwargs)


class CountingDataset(SkorchDataset):
    def __init__(self, *args, **kwargs):
        CALLS["dataset"] += 1
        super().__init__(*args, **kwargs)


def counting_backend(graph, example_inputs):
    """A torch.compile backend that runs the captured graph as it is, and counts graphs."""
    CALLS["compiled"] += 1
    return graph.forward


@pytest.fixture(autouse=True)
def _reset_calls():
    CALLS.update(dict.fromkeys(CALLS, 0))
    torch._dynamo.reset()  # graphs compiled by an earlier test would be reused, not counted


def _small(cls=DeepEnsembleClassifier, **params):
    extra = {"n_estimators": 2} if cls is DeepEnsembleClassifier else {}
    if cls is ESPROClassifier:
        extra = {"n_modes": 1, "n_vertices": 2, "epochs_per_vertex": 1, "n_predict_samples": 2}
    if cls is SWAGClassifier:
        extra = {"n_modes": 1, "swa_start": 1, "n_predict_samples": 2}
    return cls(MLP, max_epochs=2, batch_size=16, random_state=0, **extra, **params)


def test_loaders_and_dataset_class_are_the_users():
    model = _small(
        iterator_train=TrainLoader,
        iterator_valid=ValidLoader,
        dataset=CountingDataset,
        train_split=ValidSplit(4, stratified=True),
    ).fit(X, Y)
    assert CALLS["train"] >= 2  # at least a loader per member
    assert CALLS["valid"] >= 2
    assert CALLS["dataset"] >= 2
    # the loader classes change nothing else: same members as skorch's defaults
    plain = _small(train_split=ValidSplit(4, stratified=True)).fit(X, Y)
    assert_allclose(model.predict_proba(X), plain.predict_proba(X), rtol=0, atol=0)


def test_passthrough_parameters_survive_clone_and_set_params():
    model = _small(iterator_train=TrainLoader, compile=False)
    params = clone(model).get_params()
    assert params["iterator_train"] is TrainLoader
    assert params["compile"] is False
    model.set_params(dataset=CountingDataset, compile__dynamic=False)
    assert model.get_params()["dataset"] is CountingDataset
    assert model.get_params()["compile__dynamic"] is False


@pytest.mark.parametrize("cls", [DeepEnsembleClassifier, ESPROClassifier, SWAGClassifier])
def test_compile_compiles_the_training_module_and_changes_no_result(cls):
    compiled = _small(cls, compile=True, compile__backend=counting_backend).fit(X, Y)
    assert CALLS["compiled"] >= 1
    plain = _small(cls).fit(X, Y)
    assert_allclose(compiled.predict_proba(X), plain.predict_proba(X), rtol=1e-5, atol=1e-6)


def test_misspelt_passthrough_name_is_reported():
    with pytest.raises(TypeError, match="did you mean 'compile'"):
        _small(compil=True).fit(X, Y)
