"""What the estimators built on anchors share: their points as members, their phases' checks."""

from __future__ import annotations

import torch

from .._params import Options
from ..backends.parallel import run_members
from ..backends.skorch import PHASE_SCHEDULES, Phase, check_callbacks, fit_member
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


class ConnectingMixin:
    """Training of the methods that connect modes (SPRO, curves): the modes first, trained
    in parallel or given (``init_modes``), then one connecting stage in the parent process.

    The progress bar counts ``n_modes + 1`` parts: each mode, then the connecting stage.
    """

    _member_name = "part"

    def _progress_members(self):
        return self._n_trained() + 1

    def _train_modes(self, spec, data, seeds) -> tuple[list, int]:
        """The modes' tensors (given, or trained from ``seeds``) and the epochs spent."""
        if data.init is not None:
            return data.init, 0
        kwargs = self._net_kwargs(data)
        jobs = [
            (spec, kwargs, data.X, data.y, seed, phase)
            for seed, phase in zip(seeds, self._phases(data), strict=True)
        ]
        results = run_members(fit_member, jobs, self.n_jobs)
        return [r.tensors for r in results], sum(r.epochs for r in results)

    def _stage(self, data) -> Phase:
        """The connecting stage, for messages and progress."""
        n = self._n_trained()
        name = type(self).__name__
        return Phase(
            name, n, n + 1, "connecting", reference=data.untrained, progress=data.progress
        )
