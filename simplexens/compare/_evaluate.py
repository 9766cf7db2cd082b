"""Evaluation of one fitted method: clean scores, scores under shift, OOD detection."""

from __future__ import annotations

import numpy as np

from ..metrics import (
    adaptive_ece,
    brier_score,
    expected_calibration_error,
    nll,
    ood_scores,
    risk_coverage,
    uncertainty_scores,
)
from ._protocol import OOD_SCORES, SEVERITIES


def _scores(y, proba, classes):
    return {
        "accuracy": float(np.mean(classes[proba.argmax(axis=1)] == y)),
        "nll": nll(y, proba, labels=classes),
        "brier": brier_score(y, proba, labels=classes),
        "ece": expected_calibration_error(y, proba, labels=classes),
        "adaptive_ece": adaptive_ece(y, proba, labels=classes),
        "aurc": risk_coverage(y, proba, labels=classes)["aurc"],
    }


def evaluate(model, data, kinds, sets):
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
        for severity in SEVERITIES:
            scores = _scores(y, parts[f"{kind}/{severity}"].mean(axis=0), classes)
            shift[kind]["nll"].append(scores["nll"])
            shift[kind]["accuracy"].append(scores["accuracy"])
    ood = {
        score: ood_scores(
            uncertainty_scores(parts["clean"], score), uncertainty_scores(parts["ood"], score)
        )
        for score in OOD_SCORES
    }
    return {"clean": _scores(y, clean, classes), "shift": shift, "ood": ood}, clean


def row(method, seed, evaluation, epochs, seconds, kinds):
    """One flat record per (seed, method): the numbers the tables summarise."""
    clean, shift = evaluation["clean"], evaluation["shift"]
    record = {"method": method, "seed": seed, **clean, "epochs_spent": epochs}
    record["fit_seconds"] = seconds
    for metric in ("nll", "accuracy"):
        by_severity = np.mean([shift[kind][metric] for kind in kinds], axis=0)
        for severity, value in zip(SEVERITIES, by_severity, strict=True):
            record[f"shift_{metric}_{severity}"] = float(value)
        record[f"shift_{metric}_mean"] = float(by_severity.mean())
    for score, detection in evaluation["ood"].items():
        for name in ("auroc", "aupr", "fpr_at_95_tpr"):
            record[f"ood_{name}_{score}"] = float(detection[name])
    record["shift_by_kind"] = shift
    return record
