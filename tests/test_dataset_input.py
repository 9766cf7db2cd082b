"""torch Datasets and sparse matrices as training and prediction inputs.

The oracle is the same estimator fitted on the same rows as an in-memory array: a Dataset that
yields those rows, a memory-mapped file on disk and a sparse matrix must give bit-identical
members; an augmenting Dataset must be read anew at every epoch.
"""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.exceptions import NotFittedError
from torch.utils.data import Dataset, IterableDataset

from simplexens import (
    CurveClassifier,
    DeepEnsembleClassifier,
    ESPROClassifier,
    FGEClassifier,
    SPROClassifier,
    SWAGClassifier,
)
from simplexens.datasets import MLP, SmallCNN

X, Y = make_classification(90, 6, n_informative=4, n_redundant=0, n_classes=3, random_state=0)
X = X.astype(np.float32)
LABELS = np.array(["ant", "bee", "cat"])[Y]

ESTIMATORS = {
    "deep_ensemble": lambda: DeepEnsembleClassifier(MLP, n_estimators=2),
    "espro": lambda: ESPROClassifier(
        MLP, n_modes=1, n_vertices=2, epochs_per_vertex=1, n_predict_samples=2
    ),
    "fge": lambda: FGEClassifier(MLP, n_snapshots=2),
    "swag": lambda: SWAGClassifier(MLP, n_modes=1, swa_start=1, n_predict_samples=2),
    "spro": lambda: SPROClassifier(
        MLP, n_modes=2, n_connectors=1, epochs_per_connector=1, n_predict_samples=2
    ),
    "curve": lambda: CurveClassifier(MLP, curve_epochs=1, n_predict_samples=3),
}


class Pairs(Dataset):
    """``(x, label)`` items over arrays; counts every item read."""

    def __init__(self, X, y=None):
        self.X, self.y, self.reads = X, y, 0

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        self.reads += 1
        x = torch.from_numpy(np.array(self.X[i]))
        return x if self.y is None else (x, self.y[i])


def _make(name, **params):
    return ESTIMATORS[name]().set_params(
        **{"max_epochs": 2, "batch_size": 16, "random_state": 0, **params}
    )


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_dataset_fit_and_predict_equal_arrays(name):
    on_arrays = _make(name).fit(X, LABELS)
    on_dataset = _make(name).fit(Pairs(X, LABELS))
    assert_array_equal(on_dataset.classes_, ["ant", "bee", "cat"])
    assert on_dataset.epochs_spent_ == on_arrays.epochs_spent_
    assert on_dataset.n_features_in_ == 6
    expected = on_arrays.predict_proba(X)
    assert_allclose(on_dataset.predict_proba(X), expected, rtol=0, atol=0)
    # prediction from a Dataset of x, and of (x, anything), equals prediction from arrays
    assert_allclose(on_arrays.predict_proba(Pairs(X)), expected, rtol=0, atol=0)
    assert_array_equal(on_arrays.predict(Pairs(X, LABELS)), on_arrays.predict(X))


def test_dataset_with_y_given_uses_y():
    """Items may be bare x when y is given to fit."""
    a = _make("deep_ensemble").fit(X, LABELS)
    b = _make("deep_ensemble").fit(Pairs(X), LABELS)
    assert_allclose(b.predict_proba(X), a.predict_proba(X), rtol=0, atol=0)


def test_sparse_matrix_equals_dense():
    a = _make("espro").fit(X, LABELS)
    b = _make("espro").fit(sp.csr_matrix(X), LABELS)
    assert_allclose(b.predict_proba(sp.csc_matrix(X)), a.predict_proba(X), rtol=0, atol=0)


class OnDisk(Dataset):
    """Rows read from a memory-mapped .npy file at each access."""

    def __init__(self, path, labels):
        self.path, self.labels = path, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        rows = np.load(self.path, mmap_mode="r")
        return torch.tensor(rows[i]), self.labels[i]


def test_memmap_backed_dataset_equals_arrays(tmp_path):
    path = tmp_path / "rows.npy"
    np.save(path, X)
    a = _make("swag").fit(X, LABELS)
    b = _make("swag").fit(OnDisk(path, LABELS))
    assert_allclose(b.predict_proba(X), a.predict_proba(X), rtol=0, atol=0)


class Augmenting(Pairs):
    """Adds noise drawn from the item's read count: a new input at every epoch."""

    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        noise = torch.Generator().manual_seed(self.reads)
        return x + 0.5 * torch.randn(x.shape, generator=noise), y


def test_augmenting_dataset_is_read_at_every_epoch():
    data = Augmenting(X, LABELS)
    epochs = 3
    model = _make("deep_ensemble", max_epochs=epochs).fit(data)
    # every member reads every row at every epoch (plus the first rows' checks and the
    # divergence probe)
    assert data.reads >= 2 * epochs * len(X)
    plain = _make("deep_ensemble", max_epochs=epochs).fit(X, LABELS)
    difference = np.abs(model.predict_proba(X) - plain.predict_proba(X)).max()
    assert difference > 1e-3  # the augmentation reached training


class CNNPairs(Pairs):
    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return x.reshape(1, 2, 3), y


def test_batchnorm_recalibration_from_a_dataset_equals_arrays():
    """ESPRO recalibrates BatchNorm in every simplex point: from the Dataset's items."""
    params = dict(module__batchnorm=True, module__in_channels=1)
    images = X.reshape(-1, 1, 2, 3)
    make = lambda: ESPROClassifier(  # noqa: E731
        SmallCNN, n_modes=1, n_vertices=2, epochs_per_vertex=1, n_predict_samples=2
    ).set_params(max_epochs=2, batch_size=16, random_state=0, **params)
    a = make().fit(images, LABELS)
    b = make().fit(CNNPairs(X, LABELS))
    assert_allclose(b.predict_proba(images), a.predict_proba(images), rtol=0, atol=0)


class Broken(Dataset):
    def __init__(self, item, n=10):
        self.item_, self.n = item, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.item_(i)


class Stream(IterableDataset):
    def __iter__(self):
        return iter([])


BAD_FIT = {
    "items not pairs": (lambda: (Broken(lambda i: torch.zeros(3)), None), TypeError, "(x, y)"),
    "y of wrong length": (lambda: (Pairs(X), LABELS[:-1]), ValueError, "inconsistent"),
    "non-finite x": (
        lambda: (Broken(lambda i: (torch.full((3,), float("nan")), i % 2)), None),
        ValueError,
        "NaN",
    ),
    "non-numeric x": (
        lambda: (Broken(lambda i: (np.array(["a"] * 3), i % 2)), None),
        TypeError,
        "not numeric",
    ),
    "ragged x": (
        lambda: (Broken(lambda i: (torch.zeros(3 + (i == 1)), i % 2)), None),
        ValueError,
        "same shape",
    ),
    "scalar x": (lambda: (Broken(lambda i: (1.0, i % 2)), None), ValueError, "scalar"),
    "vector label": (
        lambda: (Broken(lambda i: (torch.zeros(3), torch.zeros(2))), None),
        ValueError,
        "scalars",
    ),
    "empty": (lambda: (Broken(lambda i: None, n=0), None), ValueError, "empty"),
    "one class": (lambda: (Broken(lambda i: (torch.zeros(3), 0)), None), ValueError, "one class"),
    "iterable dataset": (lambda: (Stream(), None), TypeError, "map-style"),
    "sparse without y": (lambda: (sp.csr_matrix(X), None), ValueError, "requires y"),
}


@pytest.mark.parametrize("case", sorted(BAD_FIT))
def test_bad_dataset_fails_in_fit_with_a_clear_error(case):
    make_input, error, words = BAD_FIT[case]
    model = _make("deep_ensemble").fit(X, LABELS)
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        model.fit(*make_input())
    with pytest.raises(NotFittedError):  # a failed fit leaves the estimator unfitted
        model.predict(X)


def test_predict_checks_the_dataset_shape():
    model = _make("deep_ensemble").fit(X, LABELS)
    with pytest.raises(ValueError, match="training inputs of DeepEnsembleClassifier have rows"):
        model.predict(Pairs(X[:, :4]))
    with pytest.raises(ValueError, match="NaN"):
        model.predict(Broken(lambda i: torch.full((6,), float("inf"))))


def test_dataset_survives_clone_and_worker_processes():
    """A Dataset reaches joblib's worker processes by pickling; results match n_jobs=1."""
    one = _make("deep_ensemble").fit(Pairs(X, LABELS))
    two = clone(one).set_params(n_jobs=2).fit(Pairs(X, LABELS))
    # worker processes run torch with other thread counts: float rounding differs
    assert_allclose(two.predict_proba(X), one.predict_proba(X), rtol=1e-6, atol=1e-7)


class AugmentingImages(CNNPairs):
    """Noisy images: what BatchNorm statistics would see if recalibrated on them."""

    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return x + torch.randn(x.shape, generator=torch.Generator().manual_seed(i)), y


def test_recalibration_data_replaces_the_training_rows():
    """SWAG samples get BatchNorm statistics from recalibration_X: recalibrating on the clean
    images after training on augmented ones equals recalibrating the same samples on them."""
    params = dict(module__batchnorm=True, module__in_channels=1)
    images = X.reshape(-1, 1, 2, 3)
    make = lambda: SWAGClassifier(  # noqa: E731
        SmallCNN, n_modes=1, swa_start=1, n_predict_samples=2
    ).set_params(max_epochs=2, batch_size=16, random_state=0, **params)
    on_clean = make().fit(AugmentingImages(X, LABELS), recalibration_X=images)
    on_augmented = make().fit(AugmentingImages(X, LABELS))
    # same training, so same samples; only the BatchNorm statistics differ
    names = [n for n in on_clean.members_.tensors if "running_mean" in n]
    assert names
    for name in names:
        clean = on_clean.members_.tensors[name]
        assert not torch.allclose(clean, on_augmented.members_.tensors[name])
    # the oracle: the statistics of the same samples recalibrated on the clean images
    from simplexens.backends.batchnorm import recalibrate_batchnorm

    stack = on_augmented.members_
    recalibrate_batchnorm(stack, [torch.from_numpy(images)])
    for name in names:
        torch.testing.assert_close(on_clean.members_.tensors[name], stack.tensors[name])
    with pytest.raises(ValueError, match="recalibration_X has rows of shape"):
        make().fit(AugmentingImages(X, LABELS), recalibration_X=X)


def test_sparse_non_finite_values_anywhere_fail_in_fit():
    bad = sp.lil_matrix(X)
    bad[60, 2] = np.nan  # beyond the first rows that a Dataset's check reads
    with pytest.raises(ValueError, match="NaN or infinity"):
        _make("deep_ensemble").fit(bad.tocsr(), LABELS)


def test_subspace_reads_an_augmenting_dataset_once_for_its_likelihood():
    """The samplers need a deterministic likelihood: an augmenting Dataset's rows are read
    once into an array, so elliptical slice sampling runs as on arrays."""
    from simplexens import SubspaceClassifier

    data = Augmenting(X, LABELS)
    model = SubspaceClassifier(
        MLP, rank=2, max_epochs=4, swa_start=2, swa_lr=0.05, n_predict_samples=4, batch_size=16,
        random_state=0,
    ).fit(data)  # fmt: skip
    assert np.isfinite(model.predict_proba(X)).all()
    # 4 training epochs, one read for the likelihood, the first rows' checks and the
    # divergence probe; a read per likelihood evaluation would be far more
    n_evaluations = model.ess_shrinks_.size + int(model.ess_shrinks_.sum())
    assert n_evaluations > 10
    assert data.reads < 6 * len(X) + 2 * 256


def test_non_finite_values_past_the_first_rows_fail_when_read():
    """Only the first rows are checked up front; a later item is checked when it is read."""
    late = Broken(lambda i: (torch.full((6,), float("nan") if i >= 10 else 0.0), i % 2), n=20)
    with pytest.raises(ValueError, match=r"item 1[0-9]'s x contains NaN or infinity"):
        _make("deep_ensemble").fit(late)
