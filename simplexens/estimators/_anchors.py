"""What the estimators built on anchors share: their points as members, their phases' checks."""

from __future__ import annotations

import torch

from .._params import Options
from ..backends.batchnorm import batchnorm_layers
from ..backends.parallel import private_rng, run_members
from ..backends.skorch import (
    PHASE_SCHEDULES,
    AnchorPhases,
    Phase,
    check_callbacks,
    fit_member,
    is_lr_scheduler,
)
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


def phase_lr(estimator, name: str) -> float:
    """The peak rate of an anchor phase: ``{name}_lr``, or ``2 * lr`` when it is None (a
    vertex, connector or bend started away from low loss needs a rate above the mode's end
    rate to return to it; ``benchmarks/README.md``)."""
    rate = getattr(estimator, f"{name}_lr")
    return 2 * estimator.lr if rate is None else rate


def anchor_phases(estimator, name: str, epochs: int, init_scale=0.0, volume_lambda=0.0):
    """The :class:`AnchorPhases` of an estimator's ``{name}`` phases (``vertex``,
    ``connector``, ``curve``), from its ``{name}_*`` parameters."""
    return AnchorPhases(
        n_train_samples=estimator.n_train_samples,
        volume_lambda=float(volume_lambda),
        epochs=epochs,
        lr=phase_lr(estimator, name),
        init_scale=float(init_scale),
        schedule=getattr(estimator, f"{name}_schedule"),
        callbacks=getattr(estimator, f"{name}_callbacks"),
    )


def phase_constraints(name: str) -> dict:
    """Constraints of an anchor phase's schedule parameter (``vertex``, ``connector``...)."""
    return {f"{name}_schedule": Options(PHASE_SCHEDULES)}


def check_phase_callbacks(estimator, name: str) -> None:
    """``{name}_callbacks`` must be None or a list of skorch callbacks, without a
    learning-rate scheduler unless the phase's own schedule is constant (the cosine schedule
    sets the rate at every step and would silently override it)."""
    callbacks = getattr(estimator, f"{name}_callbacks")
    try:
        check_callbacks(callbacks, estimator.train_split)
    except TypeError as exc:
        raise TypeError(f"{name}_callbacks: {exc}") from exc
    schedulers = [c for c in callbacks or () if is_lr_scheduler(c)]
    if schedulers and getattr(estimator, f"{name}_schedule") != "constant":
        raise ValueError(
            f"{name}_callbacks holds a learning-rate scheduler, but {name}_schedule="
            f"{getattr(estimator, f'{name}_schedule')!r} sets the rate at every step and would "
            f"override it; pass {name}_schedule='constant' to let the scheduler set it."
        )


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

    def _check_connectable(self, spec, modes: list) -> None:
        """Points between modes share what is not an anchor: the modes must agree on their
        frozen parameters, and BatchNorm statistics must be recomputed per point."""
        with private_rng(0):
            template = spec.build()
        if batchnorm_layers(template) and not self.recalibrate_bn:
            raise ValueError(
                f"{type(self).__name__} with recalibrate_bn=False on a module with BatchNorm: "
                "points between the modes have no BatchNorm statistics of their own (those "
                "of one mode would be used for all); use recalibrate_bn=True."
            )
        frozen = [n for n, p in template.named_parameters() if not p.requires_grad]
        for name in frozen:
            for i, mode in enumerate(modes[1:], start=1):
                if not torch.equal(mode[name], modes[0][name]):
                    raise ValueError(
                        f"the frozen parameter {name!r} (requires_grad=False) differs between "
                        f"mode 0 and mode {i}: {type(self).__name__} connects the parameters "
                        "it trains and shares the frozen ones, so the modes must agree on "
                        "them (e.g. a frozen layer loaded from a file, not initialised at "
                        "random)."
                    )

    def _stage(self, data) -> Phase:
        """The connecting stage, for messages and progress."""
        n = self._n_trained()
        name = type(self).__name__
        return Phase(
            name, n, n + 1, "connecting", reference=data.untrained, progress=data.progress
        )
