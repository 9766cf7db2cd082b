"""The protocol of :func:`simplexens.compare.compare`: methods, budgets, how each is built."""

from __future__ import annotations

import ast
import time
from dataclasses import dataclass

from .. import (
    CurveClassifier,
    DeepEnsembleClassifier,
    ESPROClassifier,
    FGEClassifier,
    SPROClassifier,
    SWAGClassifier,
)
from .._base import SKORCH_PASSTHROUGH
from ..backends.skorch import cosine_schedule
from ..datasets import MLP

METHODS = ("single", "deep_ensemble", "espro", "fge", "swag", "spro", "curve")
"""The methods :func:`compare` knows."""

CONTROL = "deep_ensemble_extra"
"""The same-budget control, a deep ensemble given the extra low-rate epochs; always reported."""

DEFAULT_METHODS = METHODS
"""All seven: the default digits run, SPRO and the curve included, takes 30-75 s on
two cores, and ``quick=True`` a few seconds."""

DATASETS = ("digits", "spirals", "shapes")
"""The embedded data sets; any other ``data`` is a path to a ``.csv`` or ``.npz`` file."""

# Rows of the report, in order; the references (single, deep_ensemble, the control) always.
ORDER = ("single", "deep_ensemble", CONTROL, "espro", "swag", "spro", "curve", "fge")
GROWN = ("espro", "swag", "spro", "curve")  # grow from the deep ensemble's modes
SEVERITIES = (1, 2, 3, 4, 5)
OOD_SCORES = ("max_probability", "entropy", "mutual_information")
OOD_SETS = ("noise", "classes")
SPLIT_SEED = 0
OOD_SCALE = 5.0


@dataclass(frozen=True)
class Budget:
    """Sizes of one comparison (see the module docstring for what each means)."""

    mode_epochs: int = 20  # E
    extra_epochs: int = 10  # X, per mode
    n_modes: int = 3  # K
    n_predict_samples: int = 10  # per simplex, SWAG run, complex or curve
    n_snapshots: int = 8
    cycle_length: float = 2.0
    swa_lr: float = 0.03
    max_rank: int = 20
    lr: float = 0.05
    batch_size: int = 64
    max_rows: int | None = None  # subsample the data set to this many rows


DEFAULT_BUDGET = Budget()
QUICK_BUDGET = Budget(
    mode_epochs=3,
    extra_epochs=2,
    n_modes=2,
    n_predict_samples=3,
    n_snapshots=2,
    cycle_length=1.0,
    max_rank=5,
    max_rows=320,
)


# --------------------------------------------------------------------------- validation


def parse_methods(methods):
    """Method names from a comma-separated string or a sequence, checked and in report order.

    The references ``single``, ``deep_ensemble`` and the control :data:`CONTROL` are always
    added: every verdict compares against them, and the other methods grow from them.

    Raises
    ------
    ValueError
        If a name is unknown or none is given.
    """
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",")]
    names = [m for m in methods if m]
    if not names:
        raise ValueError(f"no method given; choose from {', '.join(METHODS)}")
    for name in names:
        if name not in (*METHODS, CONTROL):
            raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    chosen = {*names, "single", "deep_ensemble", CONTROL}
    return tuple(m for m in ORDER if m in chosen)


_CLASSES = {
    "single": DeepEnsembleClassifier,
    "deep_ensemble": DeepEnsembleClassifier,
    CONTROL: DeepEnsembleClassifier,
    "espro": ESPROClassifier,
    "fge": FGEClassifier,
    "swag": SWAGClassifier,
    "spro": SPROClassifier,
    "curve": CurveClassifier,
}


def check_params(params, methods):
    """``{method: {name: value}}`` overrides, for methods in the run, with known names (or
    routed ``prefix__name`` names, which the estimator checks in ``fit``)."""
    params = {} if params is None else dict(params)
    for method, values in params.items():
        if method not in methods:
            raise ValueError(f"parameters given for {method!r}, which is not among the methods")
        if not isinstance(values, dict):
            raise ValueError(f"parameters of {method!r} must be a dict, got {values!r}")
        known = _CLASSES[method](MLP).get_params(deep=False)
        for name in values:
            if name not in known and "__" not in name and name not in SKORCH_PASSTHROUGH:
                raise ValueError(
                    f"{_CLASSES[method].__name__} ({method}) has no parameter {name!r}"
                )
    return params


# --------------------------------------------------------------------------- the methods


def _cosine(epochs):
    return cosine_schedule(epochs)


def _common(data, budget, seed):
    module_params = {f"module__{k}": v for k, v in data.module_params.items()}
    return dict(
        lr=budget.lr,
        optimizer__momentum=0.9,
        optimizer__weight_decay=5e-4,
        batch_size=budget.batch_size,
        random_state=seed,
        **module_params,
    )


def _ensemble(data, budget, fitted, common, n, epochs):
    return DeepEnsembleClassifier(
        data.module, n_estimators=n, max_epochs=epochs, callbacks=_cosine(epochs), **common
    )


def _espro(data, budget, fitted, common):
    return ESPROClassifier(
        data.module,
        n_modes=budget.n_modes,
        n_vertices=3,
        epochs_per_vertex=max(1, budget.extra_epochs // 2),
        # A short vertex phase: vertices start half a mode-norm away (the estimator's default
        # is a full one, for 20 epochs per vertex), at the default rate 2 lr.
        vertex_init_scale=0.5,
        init_modes=fitted["deep_ensemble"],
        **common,
    )


def _swag(data, budget, fitted, common):
    # About max_rank snapshots spread evenly over the SWA phase, whatever its length.
    steps = budget.extra_epochs * -(-len(data.y_train) // budget.batch_size)
    return SWAGClassifier(
        data.module,
        n_modes=budget.n_modes,
        swa_start=budget.mode_epochs,
        swa_lr=budget.swa_lr,
        max_rank=budget.max_rank,
        collect_every=max(1, steps // budget.max_rank),
        init_modes=fitted["deep_ensemble"],
        **{**common, "max_epochs": budget.mode_epochs + budget.extra_epochs},
    )


def _spro(data, budget, fitted, common):
    return SPROClassifier(
        data.module,
        n_modes=budget.n_modes,
        n_connectors=2,
        epochs_per_connector=max(1, budget.n_modes * budget.extra_epochs // 2),
        connector_lr=budget.lr,
        init_modes=fitted["deep_ensemble"],
        **common,
    )


def _curve(data, budget, fitted, common):
    return CurveClassifier(
        data.module,
        curve="bezier",
        curve_epochs=budget.n_modes * budget.extra_epochs,
        curve_lr=budget.lr,
        init_modes=fitted["deep_ensemble"].mode_state_dicts()[:2],
        **common,
    )


def _fge(data, budget, fitted, common):
    return FGEClassifier(
        data.module,
        n_snapshots=budget.n_snapshots,
        cycle_length=budget.cycle_length,
        alpha1=budget.lr,
        init_modes=fitted["single"],
        **common,
    )


_BUILDERS = {"espro": _espro, "swag": _swag, "spro": _spro, "curve": _curve, "fge": _fge}


def _build(method, data, budget, seed, fitted):
    """The estimator of ``method`` (unfitted); ``fitted`` holds the references it grows from."""
    E, X, K = budget.mode_epochs, budget.extra_epochs, budget.n_modes
    common = _common(data, budget, seed)
    if method == "single":
        return _ensemble(data, budget, fitted, common, 1, E)
    if method in ("deep_ensemble", CONTROL):
        return _ensemble(data, budget, fitted, common, K, E + X if method == CONTROL else E)
    # Modes come from init_modes; the cosine over max_epochs is what they were trained with.
    common.update(max_epochs=E, callbacks=_cosine(E))
    if method != "fge":
        common["n_predict_samples"] = budget.n_predict_samples
    return _BUILDERS[method](data, budget, fitted, common)


def fit_method(method, data, budget, seed, fitted, params):
    """Fit one method; return it with its budget (modes included) and fit seconds."""
    model = _build(method, data, budget, seed, fitted)
    model.set_params(**params.get(method, {}))
    start = time.perf_counter()
    model.fit(data.X_train, data.y_train)
    seconds = time.perf_counter() - start
    epochs = int(model.epochs_spent_)
    base = {"fge": "single", **dict.fromkeys(GROWN, "deep_ensemble")}.get(method)
    if base is not None:
        share = 2 / budget.n_modes if method == "curve" else 1.0  # the curve uses 2 modes
        epochs += round(share * fitted[base].epochs_spent_)
        seconds += share * fitted[base + "_seconds"]
    fitted[method], fitted[method + "_seconds"] = model, seconds
    return model, epochs, seconds


def parse_param(text):
    """``"method.name=value"`` as ``(method, name, value)``; the value read as a Python literal
    when it is one (``0.1``, ``True``, ``None``, ``"x"``), else kept as a string."""
    left, sep, raw = text.partition("=")
    method, dot, name = left.partition(".")
    if not (sep and dot and method and name):
        raise ValueError(f"--set expects METHOD.PARAMETER=VALUE, got {text!r}")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return method, name, value
