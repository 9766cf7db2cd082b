"""Compare the ensembling methods at matched budgets and write a report: the ``simplexens`` job.

:func:`compare` trains every chosen method on one data set under one protocol, evaluates it
on the clean test set, under dataset shift and on out-of-distribution (OOD) inputs, and
writes a report folder (``report.md``, PNG figures, ``results.json``). The command
``simplexens compare`` (:mod:`simplexens.cli`) is a thin layer over it.

The protocol (the same for every data set):

- Every mode is an ordinary network trained for ``E`` epochs under a cosine schedule
  (skorch's ``LRScheduler`` with ``CosineAnnealingLR``, ``T_max = E``) from ``lr`` to about 0,
  with SGD (momentum 0.9, weight decay 5e-4).
- ``single``: one such network. ``deep_ensemble``: ``K`` of them. ``deep_ensemble_extra`` (the
  control, always reported): ``K`` networks of ``E + X`` epochs each, the cosine spread over
  the whole ``E + X``: a deep ensemble given the same extra low-rate epochs as the methods
  that grow from its modes.
- ``espro`` (2 vertices of ``X / 2`` epochs per mode), ``swag`` (MultiSWAG: an SWA phase of
  ``X`` epochs per mode at a constant ``swa_lr``, about ``max_rank`` = 20 snapshots spread over
  it) and ``spro`` (2 connectors of ``K X / 2`` epochs each) grow from the ``K`` modes of the
  deep ensemble (``init_modes``): their ``epochs_spent_`` add the modes' ``K E`` and equal the
  control's ``K (E + X)``. ``curve`` (a Bezier curve, ``K X`` epochs) joins the first two modes
  and counts their ``2 E``. ``fge`` runs ``n_snapshots`` cycles from the single network and
  counts its ``E``. Fit seconds include the seconds of the modes a method grew from.
- Evaluation on the clean test set (accuracy, NLL, Brier score, ECE with 15 bins); under
  dataset shift (:func:`simplexens.datasets.corrupt`, every kind valid for the data at
  severities 1-5, the same corrupted sets for every method); and OOD detection: AUROC of the
  scores ``max_probability`` (1 - confidence), ``entropy`` and ``mutual_information``
  (:func:`simplexens.metrics.uncertainty_scores`) of the clean test set against an OOD set
  as large: uniform-noise images of the test images' shape for image data, and for tabular
  data Gaussian points ``N(0, 25 I)`` in the standardised feature space (features 5 standard
  deviations wide, far outside the training data).
- Seeds ``0 .. seeds - 1`` seed the networks; the train/test split (75/25, stratified), the
  corruptions and the OOD set use seed 0 for every seed, so all methods and seeds are judged
  on the same test inputs.

Torch runs single-threaded for the duration (restored afterwards): these small networks train
fastest that way, and many times faster on a busy machine.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from . import (
    CurveClassifier,
    DeepEnsembleClassifier,
    ESPROClassifier,
    FGEClassifier,
    SPROClassifier,
    SWAGClassifier,
)
from . import __version__ as _version
from .backends.skorch import cosine_schedule
from .datasets import (
    IMAGE_CORRUPTIONS,
    MLP,
    TABULAR_CORRUPTIONS,
    SmallCNN,
    corrupt,
    make_shapes,
    make_spirals,
)
from .metrics import (
    adaptive_ece,
    brier_score,
    expected_calibration_error,
    nll,
    ood_scores,
    risk_coverage,
    uncertainty_scores,
)

__all__ = ["CONTROL", "DATASETS", "DEFAULT_METHODS", "METHODS", "compare", "parse_methods"]

METHODS = ("single", "deep_ensemble", "espro", "fge", "swag", "spro", "curve")
"""The methods :func:`compare` knows."""

CONTROL = "deep_ensemble_extra"
"""The same-budget control, a deep ensemble given the extra low-rate epochs; always reported."""

DEFAULT_METHODS = METHODS
"""All seven: the default digits run, SPRO and the curve included, takes 65-75 s on
two cores, and ``quick=True`` a few seconds."""

DATASETS = ("digits", "spirals", "shapes")
"""The embedded data sets; any other ``data`` is a path to a ``.csv`` or ``.npz`` file."""

# Rows of the report, in order; the references (single, deep_ensemble, the control) always.
_ORDER = ("single", "deep_ensemble", CONTROL, "espro", "swag", "spro", "curve", "fge")
_GROWN = ("espro", "swag", "spro", "curve")  # grow from the deep ensemble's modes
_SEVERITIES = (1, 2, 3, 4, 5)
_OOD_SCORES = ("max_probability", "entropy", "mutual_information")
_SPLIT_SEED = 0
_OOD_SCALE = 5.0


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
    return tuple(m for m in _ORDER if m in chosen)


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


def _check_params(params, methods):
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
            if name not in known and "__" not in name:
                raise ValueError(
                    f"{_CLASSES[method].__name__} ({method}) has no parameter {name!r}"
                )
    return params


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
        X, y = make_spirals(1000, random_state=_SPLIT_SEED)
        return X, y, "tabular"
    if data == "shapes":
        X, y = make_shapes(1000, random_state=_SPLIT_SEED)
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


def load_data(data, target=None, *, budget=DEFAULT_BUDGET):
    """Load, subsample (``budget.max_rows``), split 75/25 stratified and scale a data set.

    Tabular features are standardised on the training rows; images stay in [0, 1].

    Raises
    ------
    FileNotFoundError
        If ``data`` names a file that does not exist.
    ValueError
        If ``data`` is unknown, the file is malformed (a non-numeric feature column, a
        missing target column) or the target has one class.
    """
    X, y, kind = _load(data, target)
    _check_labels(y, data)
    if budget.max_rows is not None and len(y) > budget.max_rows:
        X, _, y, _ = train_test_split(
            X, y, train_size=budget.max_rows, stratify=y, random_state=_SPLIT_SEED
        )
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=_SPLIT_SEED
    )
    if kind == "tabular":
        scaler = StandardScaler().fit(X_train)
        X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
        module, params = MLP, {"hidden": 64}
    else:
        module, params = SmallCNN, {"in_channels": X.shape[1], "batchnorm": True}
    f32 = np.float32
    name = Path(str(data)).name
    return Data(
        name, kind, X_train.astype(f32), X_test.astype(f32), y_train, y_test, module, params
    )


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
        vertex_lr=budget.lr,
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


def _fit(method, data, budget, seed, fitted, params):
    """Fit one method; return it with its budget (modes included) and fit seconds."""
    model = _build(method, data, budget, seed, fitted)
    model.set_params(**params.get(method, {}))
    start = time.perf_counter()
    model.fit(data.X_train, data.y_train)
    seconds = time.perf_counter() - start
    epochs = int(model.epochs_spent_)
    base = {"fge": "single", **dict.fromkeys(_GROWN, "deep_ensemble")}.get(method)
    if base is not None:
        share = 2 / budget.n_modes if method == "curve" else 1.0  # the curve uses 2 modes
        epochs += round(share * fitted[base].epochs_spent_)
        seconds += share * fitted[base + "_seconds"]
    fitted[method], fitted[method + "_seconds"] = model, seconds
    return model, epochs, seconds


# --------------------------------------------------------------------------- evaluation


def _evaluation_sets(data):
    """``[(key, X)]``: the clean test set, every corruption at every severity, the OOD set."""
    kinds = IMAGE_CORRUPTIONS if data.kind == "image" else TABULAR_CORRUPTIONS
    sets = [("clean", data.X_test)]
    for k, kind in enumerate(kinds):
        for severity in _SEVERITIES:
            # One seed per kind: the same draws at every severity (see `corrupt`).
            sets.append((f"{kind}/{severity}", corrupt(data.X_test, kind, severity, 1000 + k)))
    rng = np.random.RandomState(_SPLIT_SEED)
    if data.kind == "image":
        ood = rng.uniform(size=data.X_test.shape)
    else:
        ood = _OOD_SCALE * rng.standard_normal(data.X_test.shape)
    sets.append(("ood", ood.astype(np.float32)))
    return kinds, sets


def _scores(y, proba, classes):
    return {
        "accuracy": float(np.mean(classes[proba.argmax(axis=1)] == y)),
        "nll": nll(y, proba, labels=classes),
        "brier": brier_score(y, proba, labels=classes),
        "ece": expected_calibration_error(y, proba, labels=classes),
        "adaptive_ece": adaptive_ece(y, proba, labels=classes),
        "aurc": risk_coverage(y, proba, labels=classes)["aurc"],
    }


def _evaluate(model, data, kinds, sets):
    """Clean scores, shift scores and OOD AUROCs of one fitted model, from one prediction."""
    member_proba = model.predict_member_proba(np.concatenate([X for _, X in sets]))
    bounds = np.cumsum([0] + [len(X) for _, X in sets])
    parts = {
        key: member_proba[:, a:b]
        for (key, _), a, b in zip(sets, bounds[:-1], bounds[1:], strict=True)
    }
    y, classes = data.y_test, model.classes_
    clean = parts["clean"].mean(axis=0)
    shift = {kind: {"nll": [], "accuracy": []} for kind in kinds}
    for kind in kinds:
        for severity in _SEVERITIES:
            scores = _scores(y, parts[f"{kind}/{severity}"].mean(axis=0), classes)
            shift[kind]["nll"].append(scores["nll"])
            shift[kind]["accuracy"].append(scores["accuracy"])
    ood = {
        score: ood_scores(
            uncertainty_scores(parts["clean"], score), uncertainty_scores(parts["ood"], score)
        )
        for score in _OOD_SCORES
    }
    return {"clean": _scores(y, clean, classes), "shift": shift, "ood": ood}, clean


def _row(method, seed, evaluation, epochs, seconds, kinds):
    """One flat record per (seed, method): the numbers the tables summarise."""
    clean, shift = evaluation["clean"], evaluation["shift"]
    record = {"method": method, "seed": seed, **clean, "epochs_spent": epochs}
    record["fit_seconds"] = seconds
    for metric in ("nll", "accuracy"):
        by_severity = np.mean([shift[kind][metric] for kind in kinds], axis=0)
        for severity, value in zip(_SEVERITIES, by_severity, strict=True):
            record[f"shift_{metric}_{severity}"] = float(value)
        record[f"shift_{metric}_mean"] = float(by_severity.mean())
    for score, detection in evaluation["ood"].items():
        for name in ("auroc", "aupr", "fpr_at_95_tpr"):
            record[f"ood_{name}_{score}"] = float(detection[name])
    record["shift_by_kind"] = shift
    return record


# --------------------------------------------------------------------------- the run


def _progress(total, verbose):
    from tqdm.auto import tqdm

    return tqdm(
        total=total, disable=verbose < 1, desc="simplexens compare", unit="fit", file=sys.stderr
    )


def _command(data, methods, seeds, out, quick, target, params):
    words = ["simplexens", "compare", "--data", str(data), "--methods", ",".join(methods)]
    words += ["--seeds", str(seeds), "--out", str(out)]
    words += ["--target", str(target)] if target is not None else []
    words += ["--quick"] if quick else []
    for method, values in (params or {}).items():
        words += [f"--set {method}.{k}={v!r}" for k, v in values.items()]
    return " ".join(words)


def _environment():
    import sklearn
    import skorch

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count()
    return {
        "simplexens": _version,
        "torch": torch.__version__,
        "scikit-learn": sklearn.__version__,
        "skorch": skorch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cores": cores,
        "torch_threads": 1,
    }


def compare(
    data="digits",
    *,
    methods=DEFAULT_METHODS,
    seeds=1,
    out="simplexens-report",
    quick=False,
    target=None,
    verbose=1,
    params=None,
):
    """Train the methods at matched budgets, evaluate them, and write a report folder.

    Parameters
    ----------
    data : {"digits", "spirals", "shapes"} or path, default="digits"
        An embedded data set (digits as 8x8 images with a BatchNorm :class:`SmallCNN`;
        spirals with an :class:`MLP`; shapes with the CNN), or a ``.csv`` file (numeric
        feature columns and a ``target`` column) or ``.npz`` file (arrays ``X`` and ``y``; ``X``
        of shape (n, d) is tabular, (n, H, W) or (n, C, H, W) images).
    methods : str or sequence of str, default=DEFAULT_METHODS
        Names from :data:`METHODS` (a comma-separated string is accepted). ``single``,
        ``deep_ensemble`` and the control :data:`CONTROL` are always included.
    seeds : int, default=1
        Repeats with seeds ``0 .. seeds - 1``; the report gives mean ± sd over them.
    out : path, default="simplexens-report"
        The report folder, created if needed; its files are overwritten.
    quick : bool, default=False
        Tiny sizes (at most 320 rows, 3 + 2 epochs per mode, 2 modes, 3 prediction samples):
        seconds, for tests and CI. The numbers then mean little.
    target : str, default=None
        The target column of a CSV file.
    verbose : int, default=1
        0 is silent; 1 shows a tqdm progress bar over the (seed, method) fits on stderr.
    params : dict of str to dict, default=None
        Estimator parameters per method, applied with ``set_params`` before fitting, e.g.
        ``{"espro": {"volume_lambda": 0.1}}``.

    Returns
    -------
    dict
        What ``results.json`` holds: ``"config"``, ``"environment"``, ``"records"`` (one
        per seed and method: clean ``accuracy``, ``nll``, ``brier``, ``ece``,
        ``epochs_spent``, ``fit_seconds``, ``shift_{nll,accuracy}_{1..5,mean}`` averaged over
        corruption kinds, ``shift_by_kind``, ``ood_auroc_{score}``), ``"table"`` (per method,
        ``{column: {"mean", "sd"}}``), ``"verdicts"`` (sentences) and ``"total_seconds"``.

    Raises
    ------
    ValueError
        On an unknown method or data set, a malformed file, a target with one class, or a
        bad parameter; raised before any training.
    FileNotFoundError
        If ``data`` names a missing file.
    """
    start = time.perf_counter()
    methods = parse_methods(methods)
    params = _check_params(params, methods)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive integer, got {seeds!r}")
    budget = QUICK_BUDGET if quick else DEFAULT_BUDGET
    dataset = load_data(data, target, budget=budget)
    config = {
        "data": str(data),
        "methods": list(methods),
        "seeds": seeds,
        "quick": quick,
        "target": target,
        "params": params,
        "budget": asdict(budget),
        "command": _command(data, methods, seeds, out, quick, target, params),
        "kind": dataset.kind,
        "n_train": len(dataset.y_train),
        "n_test": len(dataset.y_test),
    }
    records, reliability = _run(dataset, methods, seeds, budget, params, verbose)
    results = {"config": config, "environment": _environment(), "records": records}
    results["table"] = _summarise(records, methods)
    results["verdicts"] = _verdicts(results["table"], methods, seeds)
    results["total_seconds"] = time.perf_counter() - start
    _write_report(Path(out), results, reliability, dataset)
    return results


def _run(data, methods, seeds, budget, params, verbose):
    kinds, sets = _evaluation_sets(data)
    records, reliability = [], {}
    with _progress(seeds * len(methods), verbose) as bar:
        for seed in range(seeds):
            fitted = {}
            for method in methods:
                bar.set_postfix_str(f"seed {seed}, {method}")
                model, epochs, seconds = _fit(method, data, budget, seed, fitted, params)
                evaluation, proba = _evaluate(model, data, kinds, sets)
                records.append(_row(method, seed, evaluation, epochs, seconds, kinds))
                if seed == 0:
                    reliability[method] = (proba, model.classes_)
                bar.update()
    return records, reliability


# --------------------------------------------------------------------------- summaries

# (key, header, higher is better)
CLEAN_COLUMNS = (
    ("accuracy", "accuracy", True),
    ("nll", "NLL", False),
    ("brier", "Brier", False),
    ("ece", "ECE", False),
    ("adaptive_ece", "adaptive ECE", False),
    ("aurc", "AURC", False),
    ("epochs_spent", "epochs_spent_", False),
    ("fit_seconds", "fit s", False),
)
OOD_COLUMNS = tuple((f"ood_auroc_{s}", f"AUROC {s}", True) for s in _OOD_SCORES)
OOD_DETAIL_COLUMNS = tuple(
    column
    for s in _OOD_SCORES
    for column in (
        (f"ood_aupr_{s}", f"AUPR {s}", True),
        (f"ood_fpr_at_95_tpr_{s}", f"FPR@95 {s}", False),
    )
)


def _shift_columns(metric):
    higher = metric == "accuracy"
    clean = (metric, "clean", higher)
    return (
        clean,
        *((f"shift_{metric}_{s}", f"severity {s}", higher) for s in _SEVERITIES),
        (f"shift_{metric}_mean", "mean 1-5", higher),
    )


def _numeric_keys(records):
    return [k for k, v in records[0].items() if isinstance(v, (int, float)) and k != "seed"]


def _summarise(records, methods):
    table = {}
    for method in methods:
        rows = [r for r in records if r["method"] == method]
        table[method] = {}
        for key in _numeric_keys(records):
            values = np.array([r[key] for r in rows], dtype=float)
            sd = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            table[method][key] = {"mean": float(values.mean()), "sd": sd}
    return table


def _judge(a, b, key, higher, seeds):
    """``a`` (method) against ``b`` (reference) on ``key``: a phrase."""
    diff = a[key]["mean"] - b[key]["mean"]
    better = diff > 0 if higher else diff < 0
    if diff == 0:
        return f"{a[key]['mean']:.4f} for both: equal"
    text = f"{a[key]['mean']:.4f} vs {b[key]['mean']:.4f} ({diff:+.4f})"
    if seeds == 1:
        return f"{text}: {'better' if better else 'worse'} (single seed: no noise estimate)"
    pooled = np.sqrt((a[key]["sd"] ** 2 + b[key]["sd"] ** 2) / 2)
    if abs(diff) < pooled:
        return f"{text}: within seed noise (pooled sd {pooled:.4f})"
    return f"{text}: {'better' if better else 'worse'} (pooled sd {pooled:.4f})"


_VERDICT_KEYS = (
    ("nll", "NLL", False),
    ("shift_nll_mean", "NLL under shift", False),
    ("ood_auroc_entropy", "OOD AUROC (entropy)", True),
)


def _verdicts(table, methods, seeds):
    lines = []
    for method in methods:
        references = [] if method == "deep_ensemble" else ["deep_ensemble"]
        if method in _GROWN or method == "deep_ensemble":
            references.append(CONTROL)
        for ref in references:
            if method == CONTROL:
                continue
            parts = [
                f"{label} {_judge(table[method], table[ref], key, higher, seeds)}"
                for key, label, higher in _VERDICT_KEYS
            ]
            budgets = f"{table[method]['epochs_spent']['mean']:.0f} vs "
            budgets += f"{table[ref]['epochs_spent']['mean']:.0f} epochs"
            lines.append(f"**{method} vs {ref}** ({budgets}): " + "; ".join(parts) + ".")
    return lines


# --------------------------------------------------------------------------- the report


def _cell(stats, key, seeds):
    mean, sd = stats["mean"], stats["sd"]
    if key == "epochs_spent":
        text = f"{mean:.0f}"
        return text if seeds == 1 else f"{text} ± {sd:.0f}"
    digits = 1 if key == "fit_seconds" else 4
    return f"{mean:.{digits}f}" if seeds == 1 else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def _markdown_table(table, methods, columns, seeds):
    """A markdown table; the best mean of each column (as printed) in bold."""
    header = "| method | " + " | ".join(f"{h} {'↑' if up else '↓'}" for _, h, up in columns)
    lines = [header + " |", "|---" * (len(columns) + 1) + "|"]
    best = {}
    for key, _, up in columns:
        means = [round(table[m][key]["mean"], 4) for m in methods]
        best[key] = max(means) if up else min(means)
    for method in methods:
        cells = []
        for key, _, _ in columns:
            text = _cell(table[method][key], key, seeds)
            cells.append(
                f"**{text}**" if round(table[method][key]["mean"], 4) == best[key] else text
            )
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _descriptions(config):
    b = Budget(**config["budget"])
    E, X, K = b.mode_epochs, b.extra_epochs, b.n_modes
    text = {
        "single": f"one network, {E} epochs (cosine)",
        "deep_ensemble": f"{K} networks of {E} epochs each (cosine)",
        CONTROL: f"control: {K} networks of {E + X} epochs each, the cosine over all {E + X}",
        "espro": f"ESPRO: a 3-vertex simplex from each of the {K} modes, {X // 2 or 1} "
        f"epochs per vertex, {b.n_predict_samples} points per simplex",
        "swag": f"MultiSWAG from the {K} modes: {X} SWA epochs each at lr {b.swa_lr}, about "
        f"{b.max_rank} snapshots, {b.n_predict_samples} samples per run",
        "spro": f"SPRO: the {K} modes joined by 2 connectors of {K * X // 2 or 1} epochs each",
        "curve": f"Bezier curve between the first 2 modes, {K * X} epochs",
        "fge": f"FGE from the single network: {b.n_snapshots} snapshots, cycles of "
        f"{b.cycle_length:g} epochs",
    }
    return "\n".join(f"- `{m}`: {text[m]}" for m in config["methods"])


def _report_markdown(results, figures):
    config, env, table = results["config"], results["environment"], results["table"]
    methods, seeds = config["methods"], config["seeds"]
    header = [
        "# simplexens compare",
        "",
        f"- command: `{config['command']}`",
        f"- data: {config['data']} ({config['n_train']} training / {config['n_test']} test rows)",
        f"- seeds: {', '.join(str(s) for s in range(seeds))} (networks; split, corruptions and "
        "OOD set use seed 0)",
        "- versions: "
        + ", ".join(
            f"{k} {env[k]}" for k in ("simplexens", "torch", "scikit-learn", "skorch", "numpy")
        ),
        f"- Python {env['python']} on {env['platform']}, {env['cores']} cores "
        f"(torch threads: {env['torch_threads']})",
        f"- total time: {results['total_seconds']:.1f} s",
    ]
    cells = "mean ± sd over seeds" if seeds > 1 else "one seed"
    sections = [
        "\n".join(header),
        "## Methods\n\n" + _descriptions(config),
        f"## Clean test set ({cells}; best in bold)\n\n"
        + _markdown_table(table, methods, CLEAN_COLUMNS, seeds),
        "## NLL under dataset shift (mean over corruption kinds)\n\n"
        + _markdown_table(table, methods, _shift_columns("nll"), seeds),
        "## Accuracy under dataset shift (mean over corruption kinds)\n\n"
        + _markdown_table(table, methods, _shift_columns("accuracy"), seeds),
        f"## Out-of-distribution detection\n\n{_ood_text(config)}\n\n"
        + _markdown_table(table, methods, OOD_COLUMNS, seeds)
        + "\n\nAUPR (OOD the positive class) and the false-positive rate on in-distribution "
        "inputs when 95% of the OOD inputs are flagged:\n\n"
        + _markdown_table(table, methods, OOD_DETAIL_COLUMNS, seeds),
        "## Verdicts\n\nWithin seed noise means |difference| < the pooled sd over seeds.\n\n"
        + "\n".join(f"- {line}" for line in results["verdicts"]),
        "## Figures\n\n" + "\n".join(f"![{name}]({name})" for name in figures),
    ]
    return "\n\n".join(sections) + "\n"


def _ood_text(config):
    if config.get("kind") == "image":
        return "OOD set: uniform-noise images of the test images' shape, as many as test rows."
    if config.get("kind") == "tabular":
        return (
            "OOD set: Gaussian points N(0, 25 I) in the standardised feature space, as many "
            "as test rows."
        )
    return ""


def _figure(n_panels=1, size=(5, 4)):
    from matplotlib.figure import Figure  # no pyplot: no backend, no global state

    fig = Figure(figsize=(size[0] * n_panels, size[1]), layout="constrained")
    return fig, fig.subplots(1, n_panels, squeeze=False)[0]


def _plot_reliability(path, reliability, y):
    from matplotlib.figure import Figure

    from .inspection import ReliabilityDisplay

    n = len(reliability)
    cols = min(4, n)
    rows = -(-n // cols)
    # No constrained layout: the Display carves its histogram out of each axes itself.
    fig = Figure(figsize=(4 * cols, 5 * rows))
    fig.subplots_adjust(left=0.05, right=0.98, top=0.97, bottom=0.06, wspace=0.3, hspace=0.35)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (method, (proba, classes)) in zip(axes[:n], reliability.items(), strict=True):
        ReliabilityDisplay.from_predictions(y, proba, labels=classes, name=method, ax=ax)
    for ax in axes[n:]:
        ax.set_axis_off()
    fig.savefig(path, dpi=80)


def _plot_shift(path, table, methods):
    fig, (ax_nll, ax_acc) = _figure(2)
    severities = [0, *_SEVERITIES]
    for method in methods:
        for ax, metric in ((ax_nll, "nll"), (ax_acc, "accuracy")):
            keys = [metric, *(f"shift_{metric}_{s}" for s in _SEVERITIES)]
            means = [table[method][k]["mean"] for k in keys]
            sds = [table[method][k]["sd"] for k in keys]
            ax.errorbar(severities, means, yerr=sds, marker="o", capsize=2, label=method)
    ax_nll.set(xlabel="shift severity (0 = clean)", ylabel="NLL (lower is better)")
    ax_acc.set(xlabel="shift severity (0 = clean)", ylabel="accuracy (higher is better)")
    ax_nll.legend(fontsize="small")
    fig.savefig(path, dpi=80)


def _plot_cost(path, table, methods):
    fig, (ax,) = _figure(1, (6, 4.5))
    for method in methods:
        x, y = table[method]["epochs_spent"]["mean"], table[method]["nll"]
        ax.errorbar(x, y["mean"], yerr=y["sd"], marker="o", capsize=2, label=method)
        ax.annotate(
            method, (x, y["mean"]), textcoords="offset points", xytext=(4, 4), fontsize="small"
        )
    ax.set(
        xlabel="epochs_spent_ (passes over the training data)",
        ylabel="clean test NLL (lower is better)",
    )
    fig.savefig(path, dpi=80)


FIGURES = ("reliability.png", "shift.png", "cost.png")
"""The figures every report holds."""


def _write_report(out, results, reliability, data):
    out.mkdir(parents=True, exist_ok=True)
    methods, table = results["config"]["methods"], results["table"]
    _plot_reliability(out / FIGURES[0], reliability, data.y_test)
    _plot_shift(out / FIGURES[1], table, methods)
    _plot_cost(out / FIGURES[2], table, methods)
    (out / "report.md").write_text(_report_markdown(results, FIGURES), encoding="utf-8")
    (out / "results.json").write_text(json.dumps(results, indent=1, default=_json_default))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


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
