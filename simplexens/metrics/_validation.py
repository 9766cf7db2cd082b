"""Input validation of the metrics: probabilities and labels, Gaussian predictions, levels.

See the package docstring of :mod:`simplexens.metrics` for the rules these checks enforce.
"""

from __future__ import annotations

import numpy as np

# float32's machine epsilon is 1.2e-7: 1e-6 admits several units of rounding (1.0000001
# from averaging float32 softmax outputs); a value further out is a bug, not rounding.
_RANGE_TOL = 1e-6
# Row sums accumulate one rounding error per class, hence a looser bound.
_SUM_TOL = 1e-3


def _tolerance_text(tol):
    """Write a tolerance as ``1e-3`` rather than ``0.001`` or ``1e-03``."""
    return f"{tol:.0e}".replace("e-0", "e-")


def _first(mask):
    """Index tuple of the first True entry of ``mask`` in C order, or None."""
    if not mask.any():
        return None
    return tuple(int(i) for i in np.unravel_index(np.argmax(mask), mask.shape))


def _check_proba_values(proba, name):
    """Check that every vector along the last axis of ``proba`` is a probability vector.

    Parameters
    ----------
    proba : array-like of shape (..., n_classes)
        Probabilities; any leading axes (samples, or members and samples).
    name : str
        Name of the argument, used in error messages.

    Returns
    -------
    proba : ndarray of shape (..., n_classes), dtype float64
        The probabilities, clipped into ``[0, 1]`` (this only moves values
        that lay within ``_RANGE_TOL`` outside it). Rows are not renormalised.

    Raises
    ------
    ValueError
        If a value is NaN or infinite, lies more than ``_RANGE_TOL`` outside
        ``[0, 1]``, or a row sums to a value more than ``_SUM_TOL`` from 1.
    """
    proba = np.asarray(proba, dtype=np.float64)
    bounds = f"probabilities must lie in [0, 1] (tolerance {_tolerance_text(_RANGE_TOL)})"
    for mask, problem in (
        (~np.isfinite(proba), "NaN or infinite values"),
        (proba < -_RANGE_TOL, "negative values"),
        (proba > 1.0 + _RANGE_TOL, "values greater than 1"),
    ):
        at = _first(mask)
        if at is not None:
            raise ValueError(
                f"{name} contains {problem}: {name}{list(at)} is {proba[at]:.10g}; {bounds}."
            )
    sums = proba.sum(axis=-1)
    at = _first(np.abs(sums - 1.0) > _SUM_TOL)
    if at is not None:
        row = f"row {at[-1]}" if len(at) == 1 else f"member {at[0]}, row {at[-1]}"
        raise ValueError(
            f"{name} rows must sum to 1 (tolerance {_tolerance_text(_SUM_TOL)}); "
            f"{row} sums to {sums[at]:.10g}."
        )
    return np.clip(proba, 0.0, 1.0)


def _check_shapes(y_true, y_proba, labels):
    """Check the shapes of targets, probabilities and labels against each other."""
    if y_true.ndim != 1:
        raise ValueError(f"y_true must be 1-D, got an array of shape {y_true.shape}.")
    if y_proba.ndim != 2:
        raise ValueError(f"y_proba must be 2-D (n_samples, n_classes), got shape {y_proba.shape}.")
    if y_proba.shape[0] != y_true.shape[0]:
        raise ValueError(
            f"y_true has {y_true.shape[0]} samples but y_proba has {y_proba.shape[0]}."
        )
    if y_true.shape[0] == 0:
        raise ValueError("At least one sample is required, got 0.")
    if labels.ndim != 1 or np.unique(labels).shape[0] != labels.shape[0]:
        raise ValueError("labels must be a 1-D array of unique values.")
    if y_proba.shape[1] != labels.shape[0]:
        raise ValueError(
            f"y_proba has {y_proba.shape[1]} columns but there are {labels.shape[0]} "
            f"labels {labels.tolist()!r}; pass labels= matching the columns."
        )


def _label_index(y_true, labels):
    """Column index of each value of ``y_true`` in ``labels``."""
    order = np.argsort(labels, kind="stable")
    try:
        pos = np.searchsorted(labels[order], y_true).clip(max=labels.shape[0] - 1)
        found = labels[order][pos] == y_true
    except TypeError as exc:
        raise ValueError("y_true values are not comparable with labels.") from exc
    if not np.all(found):
        missing = np.unique(y_true[~found])[:5].tolist()
        raise ValueError(f"y_true values {missing!r} are not in labels {labels.tolist()!r}.")
    return order[pos]


def _check_proba(y_true, y_proba, labels=None):
    """Validate targets and probabilities; map targets to column indices.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels, of any type comparable with ``labels``.
    y_proba : array-like of shape (n_samples, n_classes)
        Predicted probabilities; column ``k`` belongs to ``labels[k]``.
    labels : array-like of shape (n_classes,), default=None
        Class labels in column order; ``np.unique(y_true)`` if None.

    Returns
    -------
    y_index : ndarray of shape (n_samples,), dtype intp
        Column index of each sample's true label.
    y_proba : ndarray of shape (n_samples, n_classes), dtype float64
        The probabilities, clipped into ``[0, 1]`` (see
        :func:`_check_proba_values`).

    Raises
    ------
    ValueError
        If a shape is wrong, the lengths differ, ``labels`` is not unique,
        a probability row is invalid or a value of ``y_true`` is not in
        ``labels``.
    """
    y_true = np.asarray(y_true)
    y_proba = np.asarray(y_proba, dtype=np.float64)
    labels = np.unique(y_true) if labels is None else np.asarray(labels)
    _check_shapes(y_true, y_proba, labels)
    y_proba = _check_proba_values(y_proba, "y_proba")
    return _label_index(y_true, labels), y_proba


def _check_member_proba(member_proba):
    """Validate member probabilities of shape (n_members, n_samples, n_classes)."""
    member_proba = np.asarray(member_proba, dtype=np.float64)
    if member_proba.ndim != 3:
        raise ValueError(
            "member_proba must be 3-D (n_members, n_samples, n_classes), "
            f"got shape {member_proba.shape}."
        )
    if 0 in member_proba.shape:
        raise ValueError(
            "member_proba must have at least one member, sample and class, "
            f"got shape {member_proba.shape}."
        )
    return _check_proba_values(member_proba, "member_proba")


# ------------------------------------------------------------- regression: Gaussians, levels


def _check_finite(array, name, *, positive=False, allow_inf=False):
    """Raise a ValueError naming the first NaN/infinite (or non-positive) entry of ``array``."""
    bad = np.isnan(array) if allow_inf else ~np.isfinite(array)
    at = _first(bad)
    if at is not None:
        kind = "NaN" if allow_inf else "NaN or infinite"
        raise ValueError(
            f"{name} contains {kind} values: {name}{list(at)} is {array[at]:.10g}; "
            f"{name} must be {'free of NaN' if allow_inf else 'finite'}."
        )
    if positive:
        at = _first(array <= 0.0)
        if at is not None:
            raise ValueError(
                f"{name} must be positive: {name}{list(at)} is {array[at]:.10g}; "
                "a standard deviation is > 0."
            )


def _check_predictive(value, name, *, allow_inf=False):
    """A per-sample array of shape (n_samples,) or (n_samples, n_targets), float64."""
    value = np.asarray(value, dtype=np.float64)
    if value.ndim not in (1, 2):
        raise ValueError(
            f"{name} must be 1-D (n_samples,) or 2-D (n_samples, n_targets), "
            f"got shape {value.shape}."
        )
    if 0 in value.shape:
        raise ValueError(f"{name} needs at least one sample and target, got shape {value.shape}.")
    _check_finite(value, name, allow_inf=allow_inf)
    return value


def _check_same_shape(array, name, reference, reference_name):
    if array.shape != reference.shape:
        raise ValueError(
            f"{name} has shape {array.shape} but {reference_name} has shape "
            f"{reference.shape}; they must match."
        )


def _check_y(y, shape, source):
    """Validate targets against the shape ``(n_samples[, n_targets])`` predicted by ``source``."""
    y = np.asarray(y, dtype=np.float64)
    if y.shape != shape:
        raise ValueError(
            f"y has shape {y.shape} but {source} gives predictions of shape {shape} "
            "(n_samples[, n_targets]); they must match."
        )
    _check_finite(y, "y")
    return y


def _single_target_like(y, means):
    """``y`` of one target given as ``(n,)`` or ``(n, 1)``, shaped as an estimator's member
    ``means`` predict it (an estimator's output follows the y it was fitted on, a user's y
    at scoring may have either shape, as ``score`` accepts)."""
    y = np.asarray(y)
    means_shape = np.shape(means)
    if y.ndim == 1 and len(means_shape) == 3 and means_shape[2] == 1:
        return y[:, None]
    if y.ndim == 2 and y.shape[1] == 1 and len(means_shape) == 2:
        return y[:, 0]
    return y


def _check_members(means, stds):
    """Validate member means and standard deviations, (n_members, n_samples[, n_targets])."""
    means = np.asarray(means, dtype=np.float64)
    stds = np.asarray(stds, dtype=np.float64)
    if means.ndim not in (2, 3):
        raise ValueError(
            "means must be 2-D (n_members, n_samples) or 3-D (n_members, n_samples, "
            f"n_targets), got shape {means.shape}."
        )
    _check_same_shape(stds, "stds", means, "means")
    if 0 in means.shape:
        raise ValueError(
            f"means and stds need at least one member, sample and target, got shape {means.shape}."
        )
    _check_finite(means, "means")
    _check_finite(stds, "stds", positive=True)
    return means, stds


def _check_gaussian(y, mean, std):
    """Validate one Gaussian per value: y, mean and std of one shape (n_samples[, n_targets])."""
    mean = _check_predictive(mean, "mean")
    std = np.asarray(std, dtype=np.float64)
    _check_same_shape(std, "std", mean, "mean")
    _check_finite(std, "std", positive=True)
    return _check_y(y, mean.shape, "mean"), mean, std


def _check_level_values(levels, name):
    levels = np.asarray(levels, dtype=np.float64)
    at = _first(~((levels > 0.0) & (levels < 1.0)))  # also catches NaN
    if at is not None:
        where = f"{name}{list(at)}" if levels.ndim else name
        raise ValueError(f"{name} must lie in the open interval (0, 1); {where} is {levels[at]}.")
    return levels


def _check_levels(levels, name="levels"):
    """A non-empty 1-D array of levels in (0, 1)."""
    levels = np.asarray(levels, dtype=np.float64)
    if levels.ndim != 1 or levels.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {levels.shape}.")
    return _check_level_values(levels, name)
