"""Warm start in scikit-learn's ensemble sense: raise a count, refit, train only what is new.

A fit records a :class:`WarmState`: the random state as it was left (new members draw their
seeds from where the earlier ones stopped), the validation split's seed (new members hold out
the same rows), a fingerprint of the training data, and the counts it fitted. A warm refit
checks the data and the counts against it (:func:`check_growth`) before training anything.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field

import joblib
import numpy as np
from torch import nn

from .backends.rows import DatasetRows, WeightedRows


@dataclass
class WarmState:
    """What a warm refit continues from.

    Attributes
    ----------
    rng : numpy.random.RandomState
        The estimator's random state after the last fit.
    split_seed : int or None
        The seed of the validation split (None without ``train_split``).
    fingerprint : str
        :func:`fingerprint` of the training data.
    counts : dict of str to int
        The growable counts fitted (``n_estimators``, ``n_vertices``...), and those that
        must not change.
    module : str
        :func:`spec_hash` of the module recipe.
    """

    rng: np.random.RandomState
    split_seed: int | None
    fingerprint: str
    counts: dict
    module: str = ""
    head: dict = field(default_factory=dict)


def fingerprint(X, y: np.ndarray, classes: np.ndarray) -> str:
    """A hash of the training data: every row of an array, or a Dataset's length (reading it
    again would cost an epoch, and an augmenting one changes at every read), the labels,
    classes and weights."""
    weights = X.weights if isinstance(X, WeightedRows) else None
    X = X.X if isinstance(X, WeightedRows) else X
    rows = ("dataset", len(X)) if isinstance(X, DatasetRows) else X
    # Arrays as their shape and flat C-order values: joblib's hash depends on the memory
    # layout (order, strides of size-1 axes), equal data must not.
    rows, y = (_canonical(a) if isinstance(a, np.ndarray) else a for a in (rows, y))
    return joblib.hash((rows, y, classes, weights))


def _canonical(array: np.ndarray) -> tuple:
    return array.shape, np.ascontiguousarray(array).reshape(-1)


def spec_hash(spec) -> str:
    """A hash of a module recipe: the qualified name of its class or factory (an instance's
    class) and its arguments (their ``repr`` when they cannot be pickled)."""
    module = type(spec.module) if isinstance(spec.module, nn.Module) else spec.module
    name = f"{getattr(module, '__module__', '')}.{getattr(module, '__qualname__', module)}"
    try:
        arguments = joblib.hash((spec.kwargs, spec.wrap))
    except Exception:  # e.g. a lambda among the arguments
        arguments = repr(sorted(spec.kwargs.items(), key=lambda item: item[0]))
    return joblib.hash((name, arguments))


def continued_rng(state: WarmState) -> np.random.RandomState:
    """A copy of the stored random state: a failed refit leaves the stored one as it was."""
    return copy.deepcopy(state.rng)


def check_growth(estimator, state: WarmState, data_fingerprint: str, spec) -> dict:
    """``{count: (fitted, now)}`` of the estimator's growable counts, checked.

    Raises
    ------
    ValueError
        If a count was lowered, a count that cannot grow changed, or the data or the module
        differ.
    """
    name = type(estimator).__name__
    # Settings first, then data, then the module: a changed setting or target count also
    # changes the module's width, and the message should name the cause.
    for setting, fitted in state.head.items():
        now = estimator._head_settings()[setting]
        if now != fitted:
            raise ValueError(
                f"{name} cannot change {setting} ({fitted!r} fitted, now {now!r}) with "
                "warm_start=True: the fitted members were trained under it. Set "
                "warm_start=False to fit anew."
            )
    if data_fingerprint != state.fingerprint:
        raise ValueError(
            f"warm_start=True refits {name} on the data it was fitted on, to add members; "
            "these data (rows, targets or labels and their shape, or weights) differ. Set "
            "warm_start=False to fit anew."
        )
    if spec_hash(spec) != state.module:
        raise ValueError(
            f"warm_start=True adds members of the module {name} was fitted with; the module "
            "or its module__* parameters changed. Set warm_start=False to fit anew."
        )
    for count in estimator._fixed_when_warm:
        if getattr(estimator, count) != state.counts[count]:
            raise ValueError(
                f"{name} cannot change {count} ({state.counts[count]} fitted, now "
                f"{getattr(estimator, count)}) with warm_start=True: "
                f"{estimator._fixed_when_warm_reason} Set warm_start=False to fit anew."
            )
    growth = {c: (state.counts[c], getattr(estimator, c)) for c in estimator._growable}
    for count, (fitted, now) in growth.items():
        if now < fitted:
            raise ValueError(
                f"{count}={now} is below the {fitted} already fitted; with warm_start=True "
                f"{name} only adds. Set warm_start=False to fit a smaller ensemble."
            )
    if all(now == fitted for fitted, now in growth.values()):
        raised = " or ".join(estimator._growable)
        why = f"{raised} not raised" if raised else "it has no count to raise"
        warnings.warn(
            f"warm_start=True and {why}: {name} trains nothing new.", UserWarning, stacklevel=3
        )
    return growth


def counts_of(estimator) -> dict:
    """The counts a warm refit compares against."""
    names = (*estimator._growable, *estimator._fixed_when_warm)
    return {name: getattr(estimator, name) for name in names}
