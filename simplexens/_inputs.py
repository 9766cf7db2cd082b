"""Validation of inputs read item by item (torch Datasets, sparse matrices) for fit and predict.

Arrays go through scikit-learn's ``validate_data``; these inputs cannot be checked whole
without reading them, so the first :data:`CHECK_ROWS` rows are read and checked as strictly
(numeric, finite, one shape), and the labels are read once when ``y`` is not given.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.validation import _check_sample_weight, check_array, column_or_1d

from .backends.rows import DatasetRows, is_row_source

#: Rows of a Dataset read and checked before training or prediction.
CHECK_ROWS = 8


def training_rows(X, y, owner: str, multi_output: bool = False) -> tuple[DatasetRows, np.ndarray]:
    """A Dataset or sparse ``X`` and its labels, checked: ``(rows, y)``.

    With ``y`` None a Dataset's items must be ``(x, y)`` pairs and the labels are read in one
    pass over it (scalars); a given ``y`` is used as the labels (items may then be ``x`` or
    ``(x, anything)``), one column or, with ``multi_output`` (regressors), several.
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
        y = (
            check_array(y, ensure_2d=False, dtype=None, input_name="y")
            if multi_output
            else column_or_1d(y, warn=True)
        )
        if len(y) != len(rows):
            raise ValueError(
                f"X has {len(rows)} samples but y has {len(y)}: found input variables with "
                "inconsistent numbers of samples"
            )
    check_rows(rows, owner)
    return rows, y


def prediction_rows(X, input_shape: tuple, owner: str, name: str = "X") -> DatasetRows:
    """A Dataset or sparse ``X`` to predict on, checked against the fitted input shape
    (``name``: the argument, for messages)."""
    rows = DatasetRows(X)
    if rows.shape[1:] != tuple(input_shape):
        raise ValueError(
            f"{name} has rows of shape {rows.shape[1:]}, but the training inputs of {owner} "
            f"have rows of shape {tuple(input_shape)}."
        )
    check_rows(rows, owner, name)
    return rows


def check_rows(rows: DatasetRows, owner: str, name: str = "X") -> None:
    """The first :data:`CHECK_ROWS` rows (all of a sparse matrix): one shape, at least 2-D
    as a batch, finite."""
    if sp.issparse(rows.source) and not np.isfinite(rows.source.data).all():
        raise ValueError(f"Input {name} contains NaN or infinity (a sparse matrix).")
    first = rows[:CHECK_ROWS]
    if first.ndim < 2:
        raise ValueError(
            f"{owner} needs each input x to be an array (e.g. features of shape (d,)); the "
            f"Dataset's x is a scalar"
        )
    if not np.isfinite(first).all():
        raise ValueError(
            f"Input {name} contains NaN or infinity (in the first rows of the Dataset)."
        )


_EPS32 = float(np.finfo(np.float32).eps)


def row_weights(class_weight, y: np.ndarray, sample_weight, n_rows: int) -> np.ndarray | None:
    """The weight of every training row, float32: ``sample_weight`` times the weight of its
    class under ``class_weight`` (labels as given); None when both are None.

    Raises
    ------
    ValueError
        If ``class_weight`` is neither None, ``"balanced"`` nor a dict, names labels not in
        ``y``, or if ``sample_weight`` has the wrong length, negative or non-finite values,
        or the weights sum to zero.
    """
    if class_weight is None and sample_weight is None:
        return None
    weights = np.ones(n_rows)
    if sample_weight is not None:
        weights = _check_sample_weight(
            sample_weight, np.empty((n_rows, 0)), dtype=np.float64, ensure_non_negative=True
        )
    if class_weight is not None:
        if not (class_weight == "balanced" or isinstance(class_weight, dict)):
            raise ValueError(
                f"class_weight must be None, 'balanced' or a dict of label: weight, got "
                f"{class_weight!r}."
            )
        if isinstance(class_weight, dict):
            absent = [k for k in class_weight if k not in set(np.unique(y).tolist())]
            if absent:
                raise ValueError(
                    f"class_weight names label(s) {absent} that are not in y; the labels are "
                    f"{np.unique(y).tolist()}."
                )
        weights = weights * compute_sample_weight(class_weight, y)
    if not np.isfinite(weights).all() or not weights.sum() > 0:
        raise ValueError("the sample weights must be finite and sum to a positive value.")
    with np.errstate(over="ignore"):  # reported below, naming sample_weight
        single = weights.astype(np.float32)
    flushed = (single == 0) & (weights > 0)
    if not np.isfinite(single).all() or weights[flushed].sum() > _EPS32 * weights.sum():
        raise ValueError(
            f"the sample weights run from {weights[weights > 0].min():.3g} to "
            f"{weights.max():.3g}, beyond float32's range (training's precision); rescale "
            "sample_weight into it."
        )
    return single


def recalibration_rows(X, input_shape: tuple, owner: str):
    """``fit``'s ``recalibration_X`` checked against the training inputs' shape: a float32
    array, :class:`DatasetRows` for a Dataset or sparse matrix, or None."""
    if X is None:
        return None
    if is_row_source(X):
        return prediction_rows(X, input_shape, owner, "recalibration_X")
    X = check_array(X, dtype=np.float32, allow_nd=True, input_name="recalibration_X")
    if X.shape[1:] != tuple(input_shape):
        raise ValueError(
            f"recalibration_X has rows of shape {X.shape[1:]}, but the training inputs have "
            f"rows of shape {tuple(input_shape)}."
        )
    return np.require(X, requirements="W")
