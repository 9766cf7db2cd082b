"""The regressors' targets: standardisation per target, and a validation Dataset's targets
in the same units.

``fit`` trains the members on ``(y - mean) / scale`` per target, the moments taken over the
training rows; every prediction is mapped back to the units of ``y``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch.utils.data import Dataset


@dataclass(frozen=True)
class TargetScaling:
    """How ``fit`` standardised ``y``: ``(y - mean) / scale`` per target.

    Attributes
    ----------
    mean, scale : ndarray of shape (n_targets,)
        The (sample-weighted) mean and standard deviation of each target; a constant target
        gets scale 1.
    ndim : int
        1 when ``y`` was 1-D (predictions are then 1-D), else 2.
    """

    mean: np.ndarray
    scale: np.ndarray
    ndim: int

    def transform(self, y, dtype=np.float32) -> np.ndarray:
        """``y`` (numeric, shape (n_samples,) or (n_samples, n_targets)) in these units, as
        ``dtype`` of shape (n_samples, n_targets)."""
        Y = np.asarray(y, dtype=np.float64)
        return ((Y.reshape(len(Y), -1) - self.mean) / self.scale).astype(dtype)


def standardise(
    y, weights=None, owner: str = "the regressor", rows: np.ndarray | None = None
) -> tuple[np.ndarray, TargetScaling]:
    """``y`` checked (numeric, finite, 1-D or 2-D) and standardised per target.

    The mean and standard deviation are those of ``y[rows]`` (all rows if None; the
    training rows when a validation part is held out), weighted by ``weights[rows]``; every
    row is standardised with them.

    Returns ``(float32 array of shape (n_samples, n_targets), TargetScaling)``.
    """
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        try:
            y = y.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{owner} needs numeric targets y; got dtype {y.dtype}.") from exc
    if y.ndim not in (1, 2) or (y.ndim == 2 and y.shape[1] == 0):
        raise ValueError(
            f"{owner} needs y of shape (n_samples,) or (n_samples, n_targets); got {y.shape}."
        )
    if len(y) < 2:
        raise ValueError(
            f"{owner} needs at least 2 samples to standardise y (and to fit a variance); got "
            f"{len(y)} sample."
        )
    Y = y.reshape(len(y), -1).astype(np.float64)
    if not np.isfinite(Y).all():
        raise ValueError("Input y contains NaN or infinity.")
    rows = np.arange(len(Y)) if rows is None else rows
    weights = None if weights is None else np.asarray(weights)[rows]
    # Moments of y / max|y| per target, then scaled back: no overflow near float64's limits.
    peak = np.abs(Y).max(axis=0)
    unit = np.where(peak > 0, peak, 1.0)
    Z = Y / unit
    mean = np.average(Z[rows], axis=0, weights=weights)
    scale = np.sqrt(np.average((Z[rows] - mean) ** 2, axis=0, weights=weights))
    # Constant up to rounding (the bound of sklearn's StandardScaler): variance below
    # n eps var + (n eps mean)^2, relative to the target's own magnitude.
    n, eps = len(rows), np.finfo(np.float64).eps
    constant = ~(scale**2 > n * eps * scale**2 + (n * eps * mean) ** 2)
    # A constant target (its spread is rounding) gets scale 1 in y's units: its rows
    # standardise to y - mean, its fitted rows to 0 exactly; no division by its zero spread
    # or by a subnormal max|y|.
    scaling = TargetScaling(mean * unit, np.where(constant, 1.0, scale * unit), y.ndim)
    standard = np.where(constant, (Z - mean) * unit, (Z - mean) / np.where(constant, 1.0, scale))
    standard[np.ix_(rows, np.flatnonzero(constant))] = 0.0
    return standard.astype(np.float32), scaling


class StandardisedTargets(Dataset):
    """A validation Dataset whose targets are standardised as the training targets were.

    A ``train_split`` may return a Dataset of its own as the validation part (skorch's
    ``predefined_split``); its targets are in the units of ``y``, while the members predict
    standardised values. This wrapper yields each item ``(x, (y - mean) / scale)``, the
    target as a float32 array of shape ``(n_targets,)``, so that the validation loss is in
    the training loss's units.

    Parameters
    ----------
    dataset : torch.utils.data.Dataset
        Items ``(x, y)``; ``y`` a number or an array of ``n_targets`` numbers (or None,
        passed on as it is).
    scaling : TargetScaling
        The standardisation of the training targets.
    """

    def __init__(self, dataset, scaling: TargetScaling):
        self.dataset = dataset
        self.scaling = scaling

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        x, y = self.dataset[index]
        if y is None:
            return x, y
        y = np.asarray(y.cpu() if hasattr(y, "cpu") else y, dtype=np.float64).reshape(-1)
        if y.shape != self.scaling.mean.shape:
            raise ValueError(
                f"the validation Dataset yields targets of {y.size} value(s); y has "
                f"{self.scaling.mean.size} target(s)."
            )
        return x, self.scaling.transform(y[None])[0]
