"""The data of :func:`simplexens.compare.compare`: loading, the split, shift and OOD sets."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from ..datasets import (
    IMAGE_CORRUPTIONS,
    MLP,
    TABULAR_CORRUPTIONS,
    SmallCNN,
    corrupt,
    make_shapes,
    make_spirals,
)
from ._protocol import DATASETS, OOD_SCALE, OOD_SETS, SEVERITIES, SPLIT_SEED


@dataclass
class Data:
    """A prepared data set: split, scaled, with the module that fits it."""

    name: str
    kind: str  # "image" or "tabular"
    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    module: type
    module_params: dict
    X_ood: np.ndarray | None = None  # the held-out classes' rows, when ood="classes"
    held_out: tuple = ()  # the held-out classes


def _read_csv(path, target):
    """Features (float32) and target (strings) of a CSV file with a header row."""
    if target is None:
        raise ValueError(f"{path} is a CSV file: name its target column (--target)")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"{path} is empty")
    header, body = rows[0], [r for r in rows[1:] if r]
    if target not in header:
        raise ValueError(f"target column {target!r} not found in {path}; columns: {header}")
    if not body or any(len(r) != len(header) for r in body):
        raise ValueError(f"{path} has no data rows, or rows with a wrong number of fields")
    t = header.index(target)
    columns = [j for j in range(len(header)) if j != t]
    if not columns:
        raise ValueError(f"{path} has no feature column besides the target {target!r}")
    X = np.empty((len(body), len(columns)), dtype=np.float64)
    for k, j in enumerate(columns):
        for i, row in enumerate(body):
            try:
                X[i, k] = float(row[j])
            except ValueError:
                raise ValueError(
                    f"column {header[j]!r} of {path} is not numeric (row {i + 2}: {row[j]!r}); "
                    "feature columns must be numbers"
                ) from None
        if not np.all(np.isfinite(X[:, k])):
            raise ValueError(f"column {header[j]!r} of {path} has missing or infinite values")
    return X, np.array([r[t] for r in body])


def _read_npz(path):
    with np.load(path, allow_pickle=False) as arrays:
        missing = [key for key in ("X", "y") if key not in arrays]
        if missing:
            raise ValueError(f"{path} lacks the array(s) {missing}; it needs X and y")
        X, y = arrays["X"], arrays["y"]
    if X.ndim == 3:
        X = X[:, None]
    if X.ndim not in (2, 4) or y.ndim != 1 or len(X) != len(y):
        raise ValueError(
            f"{path}: X must be (n, d) or images (n, [C,] H, W) and y (n,); got X {X.shape}, "
            f"y {y.shape}"
        )
    if X.dtype.kind not in "biuf" or not np.all(np.isfinite(X)):
        raise ValueError(f"{path}: X must be numeric and finite")
    return X.astype(np.float64), y


def _load(data, target):
    """``(X, y, kind)`` of an embedded data set or a file; images in [0, 1]."""
    if data == "digits":
        X, y = load_digits(return_X_y=True)
        return (X / 16.0).reshape(-1, 1, 8, 8), y, "image"
    if data == "spirals":
        X, y = make_spirals(1000, random_state=SPLIT_SEED)
        return X, y, "tabular"
    if data == "shapes":
        X, y = make_shapes(1000, random_state=SPLIT_SEED)
        return X, y, "image"
    path = Path(str(data))
    if path.suffix.lower() not in (".csv", ".npz"):
        raise ValueError(
            f"unknown data {str(data)!r}; choose {', '.join(DATASETS)} or a .csv/.npz file"
        )
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    X, y = _read_csv(path, target) if path.suffix.lower() == ".csv" else _read_npz(path)
    if X.ndim == 4:  # images: scaled into [0, 1], where the image corruptions work
        low, high = X.min(), X.max()
        X = (X - low) / (high - low) if high > low else np.zeros_like(X)
        return X, y, "image"
    return X, y, "tabular"


def _check_labels(y, data):
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"the target of {data} has one class ({classes[0]!r}); need at least 2")
    if counts.min() < 2:
        rare = classes[np.argmin(counts)]
        raise ValueError(
            f"class {rare!r} of the target of {data} has 1 row; each class needs 2 to split"
        )


def _hold_out(X, y, data):
    """Split off the top fifth of the sorted classes (at least one) as the OOD rows."""
    classes = np.unique(y)
    if len(classes) < 3:
        raise ValueError(
            f"ood='classes' holds out classes and needs at least 3 in the target of {data}; "
            f"it has {len(classes)}"
        )
    held_out = classes[len(classes) - max(1, len(classes) // 5) :]
    out = np.isin(y, held_out)
    return X[~out], y[~out], X[out], tuple(held_out.tolist())


def load_data(data, target=None, *, max_rows=None, ood="noise"):
    """Load, subsample, split 75/25 stratified and scale a data set; hold out OOD classes.

    Parameters
    ----------
    data, target
        As in :func:`simplexens.compare.compare`.
    max_rows : int, default=None
        Subsample the data set (stratified) to this many rows first.
    ood : {"noise", "classes"}, default="noise"
        With ``"classes"``, the top fifth of the sorted classes (at least one; for digits,
        8 and 9) is removed before the split, and all its rows form the OOD set.

    Tabular features are standardised on the training rows (the held-out rows too, with the
    same scaler); images stay in [0, 1].

    Raises
    ------
    FileNotFoundError
        If ``data`` names a file that does not exist.
    ValueError
        If ``data`` is unknown, the file is malformed (a non-numeric feature column, a
        missing target column), the target has one class, or ``ood`` is unknown or
        ``"classes"`` with fewer than 3 classes.
    """
    if ood not in OOD_SETS:
        raise ValueError(f"unknown ood {ood!r}; choose from {', '.join(OOD_SETS)}")
    X, y, kind = _load(data, target)
    _check_labels(y, data)
    if max_rows is not None and len(y) > max_rows:
        X, _, y, _ = train_test_split(
            X, y, train_size=max_rows, stratify=y, random_state=SPLIT_SEED
        )
    X_ood, held_out = None, ()
    if ood == "classes":
        X, y, X_ood, held_out = _hold_out(X, y, data)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=SPLIT_SEED
    )
    if kind == "tabular":
        scaler = StandardScaler().fit(X_train)
        X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
        X_ood = None if X_ood is None else scaler.transform(X_ood)
        module, params = MLP, {"hidden": 64}
    else:
        module, params = SmallCNN, {"in_channels": X.shape[1], "batchnorm": True}
    f32 = np.float32
    X_ood = None if X_ood is None else X_ood.astype(f32)
    name = Path(str(data)).name
    return Data(
        name,
        kind,
        X_train.astype(f32),
        X_test.astype(f32),
        y_train,
        y_test,
        module,
        params,
        X_ood,
        held_out,
    )


# --------------------------------------------------------------------------- evaluation


def evaluation_sets(data):
    """``[(key, X)]``: the clean test set, every corruption at every severity, the OOD set."""
    kinds = IMAGE_CORRUPTIONS if data.kind == "image" else TABULAR_CORRUPTIONS
    sets = [("clean", data.X_test)]
    for k, kind in enumerate(kinds):
        for severity in SEVERITIES:
            # One seed per kind: the same draws at every severity (see `corrupt`).
            sets.append((f"{kind}/{severity}", corrupt(data.X_test, kind, severity, 1000 + k)))
    rng = np.random.RandomState(SPLIT_SEED)
    if data.X_ood is not None:
        ood = data.X_ood
    elif data.kind == "image":
        ood = rng.uniform(size=data.X_test.shape)
    else:
        ood = OOD_SCALE * rng.standard_normal(data.X_test.shape)
    sets.append(("ood", ood.astype(np.float32)))
    return kinds, sets
