"""Validation of inputs read item by item (torch Datasets, sparse matrices) for fit and predict.

Arrays go through scikit-learn's ``validate_data``; these inputs cannot be checked whole
without reading them, so the first :data:`CHECK_ROWS` rows are read and checked as strictly
(numeric, finite, one shape), and the labels are read once when ``y`` is not given.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.utils.validation import column_or_1d

from .backends.rows import DatasetRows

#: Rows of a Dataset read and checked before training or prediction.
CHECK_ROWS = 8


def training_rows(X, y, owner: str) -> tuple[DatasetRows, np.ndarray]:
    """A Dataset or sparse ``X`` and its labels, checked: ``(rows, y)``.

    With ``y`` None a Dataset's items must be ``(x, y)`` pairs and the labels are read in one
    pass over it; a given ``y`` is used as the labels (items may then be ``x`` or
    ``(x, anything)``).
    """
    if y is None and sp.issparse(X):
        raise ValueError(
            f"{owner} requires y to be passed, but the target y is None (a sparse X carries "
            "no labels)"
        )
    rows = DatasetRows(X, labelled=y is None)
    if y is None:
        y = rows.labels()
    else:
        y = column_or_1d(y, warn=True)
        if len(y) != len(rows):
            raise ValueError(
                f"X has {len(rows)} samples but y has {len(y)}: found input variables with "
                "inconsistent numbers of samples"
            )
    check_rows(rows, owner)
    return rows, y


def prediction_rows(X, input_shape: tuple, owner: str) -> DatasetRows:
    """A Dataset or sparse ``X`` to predict on, checked against the fitted input shape."""
    rows = DatasetRows(X)
    if rows.shape[1:] != tuple(input_shape):
        raise ValueError(
            f"X has rows of shape {rows.shape[1:]}, but {owner} was fitted on rows of shape "
            f"{tuple(input_shape)}."
        )
    check_rows(rows, owner)
    return rows


def check_rows(rows: DatasetRows, owner: str) -> None:
    """The first :data:`CHECK_ROWS` rows: one shape, at least 2-D as a batch, finite."""
    first = rows[:CHECK_ROWS]
    if first.ndim < 2:
        raise ValueError(
            f"{owner} needs each input x to be an array (e.g. features of shape (d,)); the "
            f"Dataset's x is a scalar"
        )
    if not np.isfinite(first).all():
        raise ValueError("Input X contains NaN or infinity (in the first rows of the Dataset).")
