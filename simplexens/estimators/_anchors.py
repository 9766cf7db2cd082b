"""What the estimators built on anchors share: their points as members, their phases' checks."""

from __future__ import annotations

import torch

from .._params import Options
from ..backends.skorch import PHASE_SCHEDULES, check_callbacks
from ..geometry.simplex import simplex_points


def anchor_members(anchors: dict, weights: torch.Tensor, buffers: dict) -> list[dict]:
    """Members at the points ``weights @ anchors``, each with the mode's ``buffers``.

    Parameters
    ----------
    anchors : dict of str to Tensor of shape (K, *shape)
        The anchors' parameters.
    weights : Tensor of shape (S, K)
        Coefficients of the S points.
    buffers : dict of str to Tensor
        Buffers and frozen parameters every point shares.

    Returns
    -------
    list of S dicts of str to Tensor
    """
    points = simplex_points(anchors, weights)
    return [{**{n: p[i] for n, p in points.items()}, **buffers} for i in range(len(weights))]


def phase_constraints(name: str) -> dict:
    """Constraints of an anchor phase's schedule parameter (``vertex``, ``connector``...)."""
    return {f"{name}_schedule": Options(PHASE_SCHEDULES)}


def check_phase_callbacks(estimator, name: str) -> None:
    """``{name}_callbacks`` must be None or a list of skorch callbacks."""
    callbacks = getattr(estimator, f"{name}_callbacks")
    try:
        check_callbacks(callbacks, estimator.train_split)
    except TypeError as exc:
        raise TypeError(f"{name}_callbacks: {exc}") from exc
