"""Inputs that are not one in-memory array: torch Datasets and scipy sparse matrices.

:class:`DatasetRows` gives such an input the two faces the estimators need: indexing by row
numbers returns a float32 numpy array (for checks, loss probes, BatchNorm recalibration and
prediction, batch by batch), and :meth:`DatasetRows.training_dataset` returns a torch
Dataset of ``(x, encoded label)`` pairs that skorch's loaders iterate during training, so
that a Dataset's per-item transform (augmentation, reading from disk) runs at every epoch.
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import Dataset

__all__ = ["DatasetRows", "WeightedRows", "is_row_source", "writable"]


def is_row_source(X) -> bool:
    """Whether ``X`` is read item by item: a torch Dataset or a scipy sparse matrix/array."""
    return isinstance(X, Dataset | DatasetRows) or sp.issparse(X)


def writable(X):
    """``X`` as an array torch can wrap (a private copy of a read-only one), or the row
    source as it is; joblib hands large arrays to workers as read-only memory maps."""
    if isinstance(X, WeightedRows):
        return WeightedRows(writable(X.X), X.weights)
    return X if isinstance(X, DatasetRows) else np.require(X, requirements="W")


def _as_float32(x, where: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"{where} is a {x.dtype} tensor; inputs must be real numbers")
        return x.to(torch.float32).numpy()
    array = np.asarray(x)
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"{where} is not numeric (dtype {array.dtype}); inputs must be numbers, as arrays "
            "or tensors"
        )
    return array.astype(np.float32, copy=False)


class DatasetRows:
    """The rows of a torch Dataset or sparse matrix, read on demand as float32 arrays.

    Parameters
    ----------
    source : torch.utils.data.Dataset or scipy sparse matrix of shape (n_samples, n_features)
        A map-style Dataset (``len`` and integer indexing) whose items are ``(x, y)`` pairs
        when ``labelled``, else ``x`` or ``(x, anything)``; or a sparse matrix, densified
        row by row.
    labelled : bool, default=False
        Items are ``(x, y)`` pairs (training data).

    Attributes
    ----------
    shape : tuple of int
        ``(n_samples, *x.shape)``, the shape of the first item's ``x``.
    """

    def __init__(self, source, *, labelled: bool = False):
        if isinstance(source, DatasetRows):
            source = source.source
        if not sp.issparse(source) and not (
            hasattr(source, "__len__") and hasattr(source, "__getitem__")
        ):
            raise TypeError(
                f"a {type(source).__name__} has no len() or item access; only map-style "
                "Datasets are supported (e.g. a torch TensorDataset of the items)"
            )
        self.source = source.tocsr() if sp.issparse(source) else source
        self.labelled = labelled
        n = self.source.shape[0] if sp.issparse(self.source) else len(self.source)
        if n < 1:
            raise ValueError("the Dataset is empty: found 0 samples, at least 1 is required")
        self.shape = (n, *self.x(0).shape)

    def __len__(self) -> int:
        return self.shape[0]

    def item(self, i: int):
        """Item ``i`` of the source as it is (a sparse row densified to shape (n_features,))."""
        if sp.issparse(self.source):
            return self.source[[i]].toarray()[0]
        return self.source[i]

    def x(self, i: int) -> np.ndarray:
        """The input of item ``i``, float32."""
        item = self.item(int(i))
        if self.labelled:
            if not isinstance(item, tuple | list) or len(item) != 2:
                raise TypeError(
                    f"item {i} of the Dataset is a {type(item).__name__}"
                    f"{f' of length {len(item)}' if isinstance(item, tuple | list) else ''}; "
                    "fit(dataset) needs items of the form (x, y), or y passed to fit"
                )
            item = item[0]
        elif isinstance(item, tuple):  # (x, anything): a labelled Dataset at predict time
            item = item[0]
        x = _as_float32(item, f"item {i}'s x")
        if not np.isfinite(x).all():  # per item: a Dataset is never read whole up front
            raise ValueError(f"item {i}'s x contains NaN or infinity.")
        return x

    def label(self, i: int):
        """The label of item ``i`` (training data): a scalar."""
        y = self.item(int(i))[1]
        if isinstance(y, torch.Tensor | np.ndarray):
            if y.ndim != 0 and y.shape != (1,):
                raise ValueError(
                    f"item {i}'s y has shape {tuple(y.shape)}; labels must be scalars (for "
                    "several regression targets, pass y to fit)"
                )
            y = y.reshape(()).item()
        if not isinstance(y, numbers.Number | str | np.generic):
            raise TypeError(f"item {i}'s y is a {type(y).__name__}; labels must be scalars")
        return y

    def labels(self) -> np.ndarray:
        """Every item's label, in order: one pass over the Dataset."""
        return np.asarray([self.label(i) for i in range(len(self))])

    def __getitem__(self, index) -> np.ndarray:
        """Rows ``index`` (a slice or integer array) stacked into one float32 array."""
        if isinstance(index, slice):
            positions = np.arange(*index.indices(len(self)))
        else:
            positions = np.asarray(index, dtype=np.int64).reshape(-1)
        if sp.issparse(self.source):
            return self.source[positions].toarray().astype(np.float32, copy=False)
        rows = [self.x(i) for i in positions]
        for i, row in zip(positions, rows, strict=True):
            if row.shape != self.shape[1:]:
                raise ValueError(
                    f"item {i}'s x has shape {row.shape}, but item 0's has {self.shape[1:]}; "
                    "every input must have the same shape"
                )
        return np.stack(rows) if rows else np.empty((0, *self.shape[1:]), np.float32)

    def net_inputs(self, y: np.ndarray):
        """``(X, y)`` for skorch's ``fit``: the training Dataset, and None."""
        return self.training_dataset(y), None

    def training_dataset(self, y: np.ndarray) -> Dataset:
        """A torch Dataset of ``(x, y[i])``: the item's input and the encoded label."""
        return _Labelled(self, np.asarray(y))


class _Labelled(Dataset):
    """``(x_i, y_i)`` with ``x_i`` read from the rows at every access (transforms re-run)."""

    def __init__(self, rows: DatasetRows, y: np.ndarray):
        self.rows = rows
        self.y = y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return torch.from_numpy(np.array(self.rows.x(i), copy=True)), self.y[i]


#: The key of the per-row weight in the input dicts weighted training feeds to skorch.
WEIGHT_KEY = "simplexens_sample_weight"
#: The key of the input itself in those dicts.
INPUT_KEY = "simplexens_x"


class WeightedRows:
    """Training inputs with a weight per row: indexing returns the inputs alone, training
    feeds ``({INPUT_KEY: x, WEIGHT_KEY: w}, y)`` so that the loss can weight each row.

    Parameters
    ----------
    X : ndarray or DatasetRows
        The inputs.
    weights : ndarray of shape (n_samples,), float32
        Non-negative per-row weights.
    """

    def __init__(self, X, weights: np.ndarray):
        self.X = X
        self.weights = np.asarray(weights, dtype=np.float32)
        self.shape = X.shape

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, index) -> np.ndarray:
        return self.X[index]

    def net_inputs(self, y: np.ndarray):
        """``(X, y)`` for skorch's ``fit``: a dict of arrays, or a Dataset of dict items."""
        if isinstance(self.X, DatasetRows):
            return _WeightedItems(self.X.training_dataset(y), self.weights), None
        return {INPUT_KEY: self.X, WEIGHT_KEY: self.weights}, y


class _WeightedItems(Dataset):
    def __init__(self, items: Dataset, weights: np.ndarray):
        self.items, self.weights = items, weights

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        x, y = self.items[i]
        return {INPUT_KEY: x, WEIGHT_KEY: self.weights[i]}, y
