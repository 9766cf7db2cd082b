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
- ``espro`` (2 vertices of ``X / 2`` epochs per mode, at twice ``lr``, started half a mode-norm
  away), ``swag`` (MultiSWAG: an SWA phase of ``X`` epochs per mode at a constant ``swa_lr``,
  about ``max_rank`` = 20 snapshots spread over it) and ``spro`` (2 connectors of ``K X / 2``
  epochs each) grow from the ``K`` modes of the deep ensemble (``init_modes``): their
  ``epochs_spent_`` add the modes' ``K E`` and equal the control's ``K (E + X)``. ``curve`` (a
  Bezier curve, ``K X`` epochs) joins the first two modes and counts their ``2 E``. ``fge``
  runs ``n_snapshots`` cycles from the single network and counts its ``E``. Fit seconds include
  the seconds of the modes a method grew from.
- Evaluation on the clean test set (accuracy, NLL, Brier score, ECE with 15 bins); under
  dataset shift (:func:`simplexens.datasets.corrupt`, every kind valid for the data at
  severities 1-5, the same corrupted sets for every method); and OOD detection: AUROC of the
  scores ``max_probability`` (1 - confidence), ``entropy`` and ``mutual_information``
  (:func:`simplexens.metrics.uncertainty_scores`) of the clean test set against an OOD set.
  By default (``ood="noise"``) it is as large as the test set: uniform-noise images of the
  test images' shape for image data, and for tabular data Gaussian points ``N(0, 25 I)`` in
  the standardised feature space (features 5 standard deviations wide, far outside the
  training data). With ``ood="classes"`` the top fifth of the sorted classes (8 and 9 for
  digits) is held out of training and testing, and all its rows are the OOD set: inputs
  like the training data that belong to no class the networks know.
- Seeds ``0 .. seeds - 1`` seed the networks; the train/test split (75/25, stratified), the
  corruptions and the OOD set use seed 0 for every seed, so all methods and seeds are judged
  on the same test inputs.

The command runs torch single-threaded for its own process (restored afterwards): these small
networks train fastest that way, and many times faster on a busy machine. :func:`compare`
itself leaves the thread count alone.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .. import __version__ as _version
from ._data import evaluation_sets, load_data
from ._evaluate import evaluate, row
from ._protocol import (
    CONTROL,
    DATASETS,
    DEFAULT_BUDGET,
    DEFAULT_METHODS,
    METHODS,
    OOD_SETS,
    QUICK_BUDGET,
    Budget,
    check_params,
    fit_method,
    parse_methods,
    parse_param,
)
from ._report import FIGURES, summarise, verdicts, write_report

__all__ = [
    "CONTROL",
    "DATASETS",
    "DEFAULT_METHODS",
    "FIGURES",
    "METHODS",
    "OOD_SETS",
    "Budget",
    "compare",
    "parse_methods",
    "parse_param",
]


# --------------------------------------------------------------------------- the run


def _progress(total, verbose):
    from tqdm.auto import tqdm

    return tqdm(
        total=total, disable=verbose < 1, desc="simplexens compare", unit="fit", file=sys.stderr
    )


def _command(data, methods, seeds, out, quick, target, ood, params):
    words = ["simplexens", "compare", "--data", str(data), "--methods", ",".join(methods)]
    words += ["--seeds", str(seeds), "--out", str(out)]
    words += ["--target", str(target)] if target is not None else []
    words += ["--quick"] if quick else []
    words += ["--ood", ood] if ood != "noise" else []
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
    ood="noise",
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
    ood : {"noise", "classes"}, default="noise"
        The OOD set. ``"noise"``: uniform-noise images, or Gaussian points far outside the
        standardised features for tabular data. ``"classes"``: the top fifth of the sorted
        classes (at least one; for digits, 8 and 9) is held out of training and testing and
        all its rows are the OOD set (needs 3 or more classes).
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
        On an unknown method, data set or ``ood``, a malformed file, a target with one class
        (or fewer than 3 with ``ood="classes"``), or a
        bad parameter; raised before any training.
    FileNotFoundError
        If ``data`` names a missing file.
    """
    start = time.perf_counter()
    methods = parse_methods(methods)
    params = check_params(params, methods)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive integer, got {seeds!r}")
    budget = QUICK_BUDGET if quick else DEFAULT_BUDGET
    dataset = load_data(data, target, max_rows=budget.max_rows, ood=ood)
    config = {
        "data": str(data),
        "methods": list(methods),
        "seeds": seeds,
        "quick": quick,
        "target": target,
        "ood": ood,
        "held_out": list(dataset.held_out),
        "params": params,
        "budget": asdict(budget),
        "command": _command(data, methods, seeds, out, quick, target, ood, params),
        "kind": dataset.kind,
        "n_train": len(dataset.y_train),
        "n_test": len(dataset.y_test),
        "n_ood": len(dataset.X_ood) if dataset.X_ood is not None else len(dataset.y_test),
    }
    records, reliability = _run(dataset, methods, seeds, budget, params, verbose)
    results = {"config": config, "environment": _environment(), "records": records}
    results["table"] = summarise(records, methods)
    results["verdicts"] = verdicts(results["table"], methods, seeds)
    results["total_seconds"] = time.perf_counter() - start
    write_report(Path(out), results, reliability, dataset)
    return results


def _run(data, methods, seeds, budget, params, verbose):
    kinds, sets = evaluation_sets(data)
    records, reliability = [], {}
    with _progress(seeds * len(methods), verbose) as bar:
        for seed in range(seeds):
            fitted = {}
            for method in methods:
                bar.set_postfix_str(f"seed {seed}, {method}")
                model, epochs, seconds = fit_method(method, data, budget, seed, fitted, params)
                evaluation, proba = evaluate(model, data, kinds, sets)
                records.append(row(method, seed, evaluation, epochs, seconds, kinds))
                if seed == 0:
                    reliability[method] = (proba, model.classes_)
                bar.update()
    return records, reliability
