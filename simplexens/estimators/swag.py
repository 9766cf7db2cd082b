"""SWAGClassifier: a Gaussian over weights from the SWA trajectory (SWA, SWAG, MultiSWAG)."""

from __future__ import annotations

from typing import ClassVar

import torch
from sklearn.utils.validation import check_is_fitted
from torch import nn

from .._base import BaseEnsemble, FitResult, store_parameters
from .._classifier import ClassifierHead
from .._docs import fill_doc, regressor_doc
from .._params import Boolean, Integer, Options, Real
from .._regressor import RegressorHead
from ..backends.parallel import member_seeds, run_members
from ..backends.skorch import fit_swag

COVARIANCES = ("full", "diagonal", "none")

#: ``collect_every`` other than ``"auto"``.
COLLECT_EVERY = Integer(1, none=True)


class SWAPhaseMixin:
    """The SWA phase shared by SWAG and subspace inference: the parameters ``swa_start``,
    ``swa_lr``, ``max_rank``, ``collect_every`` and ``stats_on_cpu``, checked and resolved."""

    def _check_swa_params(self):
        if not (self.collect_every == "auto" and isinstance(self.collect_every, str)):
            try:
                COLLECT_EVERY.check("collect_every", self.collect_every)
            except (TypeError, ValueError) as exc:
                raise type(exc)(
                    f"collect_every must be an integer >= 1, None or 'auto', got "
                    f"{self.collect_every!r}."
                ) from None
        if self.swa_start >= self.max_epochs:
            raise ValueError(
                f"swa_start ({self.swa_start}) must be below max_epochs ({self.max_epochs}): "
                "the SWA phase is the epochs after swa_start and needs at least one."
            )

    def _swa_settings(self, data) -> dict:
        """The ``swa`` argument of :func:`~simplexens.backends.skorch.fit_swag`."""
        return dict(
            swa_start=self.swa_start,
            swa_lr=float(self.swa_lr),
            max_rank=self.max_rank,
            collect_every=self._collect_steps(data),
            at_least_once=self.collect_every == "auto",
            stats_device="cpu" if self.stats_on_cpu else None,
            expected_collections=self._collections(data),
        )

    def _swa_steps(self, data) -> int:
        """Training steps of the SWA phase."""
        step, drop = self._training_loader(data)
        n_batches = len(data.rows) // step if drop else -(-len(data.rows) // step)
        return (self.max_epochs - self.swa_start) * n_batches

    def _collect_steps(self, data):
        """``collect_every`` resolved: steps between collections, or None (every epoch)."""
        if self.collect_every == "auto" and isinstance(self.collect_every, str):
            return max(1, self._swa_steps(data) // self.max_rank)
        return self.collect_every

    def _collections(self, data):
        """How many times the schedule collects weights (bounds the deviation buffer)."""
        every = self._collect_steps(data)
        if every is None:
            return self.max_epochs - self.swa_start
        return self._swa_steps(data) // every


class _SWAG(SWAPhaseMixin, BaseEnsemble):
    """The SWAG method without a head: :class:`SWAGClassifier` and
    :class:`SWAGRegressor` add theirs."""

    _constraints: ClassVar[dict] = {
        "n_modes": Integer(1),
        "max_rank": Integer(1),
        "n_predict_samples": Integer(1),
        "swa_start": Integer(0),
        "swa_lr": Real(0, None, "neither"),
        "scale": Real(0),
        "var_clamp": Real(0, None, "neither"),
        "covariance": Options(COVARIANCES),
        "stats_on_cpu": Boolean(),
        "recalibrate_bn": Boolean(),
    }

    def _check_method_params(self):
        self._check_swa_params()

    def _fit_members(self, spec, data, rng):
        swa = self._swa_settings(data)
        fitted = self._fitted_count(data, "n_modes")
        seeds = member_seeds(rng, self.n_modes - fitted)
        inits = data.init or [None] * len(seeds)
        jobs = [
            (spec, self._net_kwargs(data), swa, data.X, data.y, seed, phase, init)
            for seed, phase, init in zip(seeds, self._phases(data, fitted), inits, strict=True)
        ]
        runs = run_members(fit_swag, jobs, self.n_jobs)
        sample_seeds = member_seeds(rng, len(runs))
        members = [
            {**weights, **run.buffers}
            for run, seed in zip(runs, sample_seeds, strict=True)
            for weights in self._draw(run.moments, seed)
        ]
        before = (self.swag_moments_, self.mode_buffers_) if fitted else ([], [])
        return FitResult(
            members,
            sum(run.epochs for run in runs),
            {
                "swag_moments_": before[0] + [run.moments for run in runs],
                "mode_buffers_": before[1] + [run.buffers for run in runs],
            },
            recalibrate=self.recalibrate_bn,
            appended=True,
        )

    _member_name = "run"
    _growable = ("n_modes",)
    _fixed_when_warm = ("n_predict_samples", "covariance")
    _fixed_when_warm_reason = "the fitted runs keep their samples."

    def _init_mode_tensors(self):
        check_is_fitted(self)
        return [
            {**{n: t.to("cpu", copy=True) for n, t in m.mean.items()}, **buffers}
            for m, buffers in zip(self.swag_moments_, self.mode_buffers_, strict=True)
        ]

    def _n_trained(self):
        return self.n_modes

    def _planned_epochs(self):
        before = self.swa_start if self.init_modes is None else 0
        return self.n_modes * (self.max_epochs - self.swa_start + before)

    def _divergence_advice(self):
        return f"Try a lower swa_lr (now {self.swa_lr}) or scale (now {self.scale})."

    def _draw(self, moments, seed):
        """The members of one run: its samples, or its mean for SWA."""
        if self.covariance == "none":
            return [{name: t.clone() for name, t in moments.mean.items()}]
        generator = torch.Generator(moments.device).manual_seed(seed)
        batch = moments.sample_batch(
            generator,
            self.n_predict_samples,
            scale=float(self.scale),
            covariance=self.covariance,
            var_clamp=float(self.var_clamp),
        )
        return [{name: t[i] for name, t in batch.items()} for i in range(self.n_predict_samples)]


@fill_doc
class SWAGClassifier(ClassifierHead, _SWAG):
    """SWAG: a Gaussian over weights fitted to the SGD trajectory; MultiSWAG with several.

    Each of ``n_modes`` runs trains the module for ``max_epochs`` epochs: ``swa_start``
    epochs as usual, then the rest at the constant rate ``swa_lr``, collecting the weights
    about ``max_rank`` times spread evenly over the SWA phase (``collect_every="auto"``;
    an integer collects every that many steps, None at the end of every epoch). The
    collected weights give the
    running mean θ̄, the running mean of squares, and the last K = ``max_rank`` deviations
    D = [θ_i - θ̄_i]. Prediction averages the softmax probabilities of ``n_predict_samples``
    samples per run,

        θ̃ = θ̄ + √scale · (Σ_diag^½ z₁ + D z₂ / √(K - 1)),   z₁, z₂ ~ N(0, I),

    with Σ_diag = max(mean of squares - θ̄², ``var_clamp``) and K the number of deviations
    actually collected (``scale=0.5`` is the paper's ½ factors). BatchNorm statistics are
    recomputed for every sample. With ``n_modes > 1`` this is MultiSWAG: a uniform mixture of
    the runs' samples.

    ``covariance="diagonal"`` drops the low-rank term (SWAG-diagonal); ``covariance="none"``
    is SWA: each run predicts with θ̄ alone (BatchNorm recalibrated), one member per run.

    SWAG differs from SWA (the mean alone) only when the SWA phase explores: measured on two
    non-digits datasets (``benchmarks/README.md``), ``swa_lr`` a fifth of the modes' peak
    rate gave SWAG and SWA within 0.003 NLL of each other, and 0.6 of it made SWAG better by
    0.015 on one dataset and equal on the other. Enough snapshots matter too: the default
    ``collect_every="auto"`` collects about ``max_rank`` of them however short the phase.

    Memory: each run keeps (2 + K)·P numbers for a module of P parameters (θ̄ and the mean of
    squares in float64, K deviations in the parameters' dtype), on the training device
    unless ``stats_on_cpu=True``.

    Parameters
    ----------
    {module}
    n_modes : int, default=1
        Independent SWAG runs; more than 1 is MultiSWAG.
    swa_start : int, default=5
        Epochs of ordinary training before the SWA phase; must be below ``max_epochs``.
    swa_lr : float, default=0.01
        The constant learning rate of the SWA phase.
    max_rank : int, default=20
        K, the number of deviations kept (paper: 20).
    n_predict_samples : int, default=30
        Samples per run for prediction (paper: 30).
    scale : float, default=0.5
        Multiplies the covariance (paper: 0.5, its ½ factors).
    covariance : {{"full", "diagonal", "none"}}, default="full"
        The posterior approximation: low-rank plus diagonal (SWAG), diagonal only
        (SWAG-diagonal), or none (SWA: the mean alone).
    var_clamp : float, default=1e-30
        Floor of the diagonal variance.
    collect_every : int, "auto" or None, default="auto"
        When to collect the weights in the SWA phase of S training steps: ``"auto"`` every
        ``max(1, S // max_rank)`` steps (so at least ``max_rank`` collections, spread over
        the phase whatever its length: the deviations fill D); an integer, every that many
        steps; None, once per epoch (the paper's choice for long runs; on a short SWA phase
        it collects few weights, and SWAG then barely differs from SWA). With ``"auto"``, a
        SWA phase ended early (``EarlyStopping``) before its first collection collects its
        final weights.
    stats_on_cpu : bool, default=False
        Keep the SWAG statistics on the CPU while training on a GPU.
    recalibrate_bn : bool, default=True
        Recompute BatchNorm statistics for every sample with one pass over the training data.
    {init_modes}
        Each run's SWA phase (the ``max_epochs - swa_start`` epochs at ``swa_lr``) starts
        from its given network; the epochs before it are skipped.
    {training}

    Attributes
    ----------
    {attributes}
    mode_buffers_ : list of dict of str to Tensor
        Each run's final buffers (e.g. BatchNorm statistics).
    swag_moments_ : list of SWAGMoments
        Each run's statistics: ``mean``, ``sq_mean``, ``deviations`` (oldest first),
        ``n_collected``.

    References
    ----------
    .. [1] W. J. Maddox, T. Garipov, P. Izmailov, D. Vetrov, A. G. Wilson. "A Simple Baseline
       for Bayesian Uncertainty in Deep Learning." NeurIPS 2019.
    .. [2] P. Izmailov, D. Podoprikhin, T. Garipov, D. Vetrov, A. G. Wilson. "Averaging
       Weights Leads to Wider Optima and Better Generalization." UAI 2018.
    .. [3] A. G. Wilson, P. Izmailov. "Bayesian Deep Learning and a Probabilistic
       Perspective of Generalization." NeurIPS 2020 (MultiSWAG).
    """

    def __init__(
        self,
        module,
        *,
        n_modes=1,
        swa_start=5,
        swa_lr=0.01,
        max_rank=20,
        n_predict_samples=30,
        scale=0.5,
        covariance="full",
        var_clamp=1e-30,
        collect_every="auto",
        stats_on_cpu=False,
        recalibrate_bn=True,
        init_modes=None,
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.SGD,
        lr=0.01,
        max_epochs=10,
        batch_size=128,
        device="cpu",
        callbacks=None,
        verbose=0,
        train_split=None,
        class_weight=None,
        warm_start=False,
        random_state=None,
        n_jobs=None,
        working_memory=None,
        member_memory=None,
        precision="float32",
        **kwargs,
    ):
        store_parameters(self, locals())


_SWAG_EXAMPLE = """\
>>> from sklearn.datasets import make_regression
>>> from simplexens import SWAGRegressor
>>> from simplexens.datasets import MLP
>>> X, y = make_regression(n_samples=200, n_features=5, noise=10.0, random_state=0)
>>> reg = SWAGRegressor(MLP, max_epochs=20, swa_start=10,
...                     random_state=0).fit(X, y)
>>> mean, std = reg.predict(X[:4], return_std=True)
>>> mean.shape, std.shape, bool((std > 0).all())
((4,), (4,), True)
"""


@regressor_doc(SWAGClassifier, _SWAG_EXAMPLE)
class SWAGRegressor(RegressorHead, _SWAG):
    """SWAG as a regressor (see :func:`~simplexens._docs.regressor_doc`)."""

    def __init__(
        self,
        module,
        *,
        likelihood="gaussian",
        n_modes=1,
        swa_start=5,
        swa_lr=0.01,
        max_rank=20,
        n_predict_samples=30,
        scale=0.5,
        covariance="full",
        var_clamp=1e-30,
        collect_every="auto",
        stats_on_cpu=False,
        recalibrate_bn=True,
        init_modes=None,
        criterion=None,
        optimizer=torch.optim.SGD,
        lr=0.01,
        max_epochs=10,
        batch_size=128,
        device="cpu",
        callbacks=None,
        verbose=0,
        train_split=None,
        warm_start=False,
        random_state=None,
        n_jobs=None,
        working_memory=None,
        member_memory=None,
        precision="float32",
        **kwargs,
    ):
        store_parameters(self, locals())
