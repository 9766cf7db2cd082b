"""SubspaceClassifier: a Bayesian model average over a low-dimensional subspace of weights."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from torch import nn

from .._base import BaseEnsemble, FitResult, store_parameters
from .._classifier import ClassifierHead
from .._docs import fill_doc, regressor_doc
from .._params import Boolean, Integer, Options, Real
from .._regressor import RegressorHead
from ..backends.batchnorm import batchnorm_layers, recalibrate_batchnorm
from ..backends.functional import ParameterStack, module_tensors
from ..backends.parallel import member_seeds, private_rng
from ..backends.rows import DatasetRows, WeightedRows
from ..backends.skorch import fit_swag
from ..backends.subspace import elliptical_slice_sampling, fit_gaussian_vi
from ..geometry.subspace import curve_basis, flatten, pca_basis, random_basis, unflatten
from .swag import SWAPhaseMixin

SUBSPACES = ("pca", "random", "curve")
SAMPLERS = ("ess", "vi")


class _Subspace(SWAPhaseMixin, BaseEnsemble):
    """The Subspace method without a head: :class:`SubspaceClassifier` and
    :class:`SubspaceRegressor` add theirs."""

    _constraints: ClassVar[dict] = {
        "subspace": Options(SUBSPACES),
        "rank": Integer(1),
        "sampler": Options(SAMPLERS),
        "prior_scale": Real(0, None, "neither"),
        "temperature": Real(0, None, "neither", none=True),
        "n_predict_samples": Integer(1),
        "n_chains": Integer(1),
        "burn_in": Integer(0),
        "thin": Integer(1),
        "vi_covariance": Options(("diagonal", "full")),
        "vi_iterations": Integer(1),
        "max_rank": Integer(2),
        "swa_start": Integer(0),
        "swa_lr": Real(0, None, "neither"),
        "stats_on_cpu": Boolean(),
        "recalibrate_bn": Boolean(),
    }

    _member_name = "run"

    def _check_method_params(self):
        if self.subspace == "curve":
            if self.init_modes is None:
                raise ValueError(
                    "subspace='curve' needs a curve: pass a fitted "
                    f"Curve{'Classifier' if self._head == 'classifier' else 'Regressor'} "
                    "(n_bends=3) or its three anchors [w_0, bend, w_1] as init_modes."
                )
            return
        self._check_swa_params()
        if self.subspace == "pca" and self.rank >= self.max_rank:
            raise ValueError(
                f"rank={self.rank} principal directions need at least rank + 1 deviations, "
                f"but max_rank={self.max_rank} keeps fewer: raise max_rank or lower rank."
            )

    def _n_trained(self):
        return 1

    def _planned_epochs(self):
        if self.subspace == "curve":
            return 0
        before = self.swa_start if self.init_modes is None else 0
        return self.max_epochs - self.swa_start + before

    _init_count_name = "the networks it starts from"

    def _init_count(self):
        return 3 if self.subspace == "curve" else 1

    def _resolve_init_modes(self, template):
        modes = self.init_modes
        if self.subspace == "curve" and hasattr(modes, "curve_anchors_"):
            modes = _curve_anchors(modes)
        if modes is None:
            return None
        return self._resolve_modes(modes, template)

    def _fit_members(self, spec, data, rng):
        (seed,) = member_seeds(rng, 1)
        with private_rng(seed, self.device):
            template = spec.build().to(self.device)
        names = _trainable_names(template)
        if self.subspace == "curve":
            shift, basis, buffers, epochs = self._curve_space(data, names)
        else:
            shift, basis, buffers, epochs = self._swa_space(spec, data, seed, names)
        space = _Space(template, names, shift, basis, buffers, self.device)
        if self.recalibrate_bn and batchnorm_layers(template):
            space.buffers = self._recalibrated(space, data)
        inputs = _likelihood_inputs(data)
        weights = inputs[3]
        n = len(inputs[2]) if weights is None else float(weights[inputs[2]].sum())
        temperature = float(self.temperature or n)
        log_likelihood = self._log_likelihood(space, inputs, temperature)
        generator = torch.Generator(self.device).manual_seed(seed)
        samples, diagnostics = self._sample(log_likelihood, basis.shape[0], generator)
        return FitResult(
            space.members(samples),
            epochs,
            {
                "subspace_shift_": shift.cpu(),
                "subspace_basis_": basis.cpu(),
                "posterior_samples_": samples.cpu().numpy(),
                "temperature_": temperature,
                "mode_buffers_": [space.buffers],
                **diagnostics,
            },
            recalibrate=self.recalibrate_bn and bool(batchnorm_layers(template)),
        )

    def _swa_space(self, spec, data, seed, names):
        """Shift and basis from one SWAG run (PCA or random directions)."""
        (phase,) = self._phases(data)
        init = data.init[0] if data.init else None
        run = fit_swag(
            spec, self._net_kwargs(data), self._swa_settings(data), data.X, data.y, seed,
            phase, init,
        )  # fmt: skip
        deviations = run.moments.deviations
        n = len(deviations[names[0]])
        flat = torch.stack(
            [flatten({k: d[i] for k, d in deviations.items()}, names) for i in range(n)]
        )
        flat = flat.to(self.device)
        if self.subspace == "pca":
            directions = pca_basis(flat, self.rank)
        elif n < 2:
            raise ValueError(
                f"subspace='random' scales its directions by the principal directions of the "
                f"SWA phase, which needs 2 collected deviations or more; there are {n}. Collect "
                "more (a longer SWA phase, or collect_every='auto')."
            )
        else:  # random, with the principal directions' mean norm
            scale = float(pca_basis(flat, min(self.rank, n - 1)).norm(dim=1).mean())
            generator = torch.Generator(self.device).manual_seed(seed)
            directions = random_basis(self.rank, flat.shape[1], scale, generator, self.device)
        shift = flatten(run.moments.mean, names).to(self.device)
        return shift, directions, run.buffers, run.epochs

    def _curve_space(self, data, names):
        start, bend, end = (flatten(m, names).to(self.device) for m in data.init)
        shift, basis = curve_basis(start, bend, end)
        buffers = {n: t for n, t in data.init[0].items() if n not in names}
        return shift, basis, buffers, 0

    def _recalibrated(self, space, data):
        """BatchNorm statistics of the shift ŵ, from one pass over the training rows (or
        ``recalibration_X``)."""
        stack = space.stack(torch.zeros(1, space.rank, dtype=torch.float64, device=self.device))
        X, rows = data.X, data.rows
        if data.recalibration is not None:
            X, rows = data.recalibration, np.arange(len(data.recalibration))
        recalibrate_batchnorm(stack, self._batches(X, rows, stack))
        member = stack.member(0)
        return {n: member[n].clone() for n in space.buffers}

    def _log_likelihood(self, space, inputs, temperature):
        X, y, rows, weights = inputs

        def log_likelihood(z):
            stack = space.stack(z)
            return (
                -self._summed_loss(stack, X, y, rows, self.working_memory, weights) / temperature
            )

        return log_likelihood

    def _sample(self, log_likelihood, rank, generator):
        if self.sampler == "vi":
            fit = fit_gaussian_vi(
                log_likelihood,
                float(self.prior_scale),
                rank,
                covariance=self.vi_covariance,
                n_iterations=self.vi_iterations,
                generator=generator,
                device=self.device,
            )
            samples = fit.sample(self.n_predict_samples, generator)
            return samples, {"vi_elbo_": np.asarray(fit.elbo), "ess_shrinks_": None}
        per_chain = -(-self.n_predict_samples // self.n_chains)
        initial = torch.zeros(self.n_chains, rank, dtype=torch.float64, device=self.device)
        run = elliptical_slice_sampling(
            log_likelihood,
            float(self.prior_scale),
            initial,
            per_chain,
            burn_in=self.burn_in,
            thin=self.thin,
            generator=generator,
        )
        samples = run.samples.reshape(-1, rank)[: self.n_predict_samples]
        return samples, {"ess_shrinks_": np.asarray(run.shrinks), "vi_elbo_": None}

    def _init_mode_tensors(self):
        check_is_fitted(self)
        space = self._fitted_space()
        zero = torch.zeros(1, space.rank, dtype=torch.float64, device=self.device)
        return [{n: t.to("cpu", copy=True) for n, t in space.members(zero)[0].items()}]

    def _fitted_space(self):
        template = self.members_.template
        names = _trainable_names(template)
        return _Space(
            template, names, self.subspace_shift_, self.subspace_basis_, self.mode_buffers_[0],
            self.device,
        )  # fmt: skip


@fill_doc
class SubspaceClassifier(ClassifierHead, _Subspace):
    """Subspace inference: posterior samples of z in ``w = ŵ + Pᵀz``, averaged as members.

    The module's trainable parameters are restricted to an affine subspace of ``rank`` (k)
    dimensions, the shift ŵ plus the span of the rows of a basis P (k x P numbers):

    - ``"pca"``: ŵ is the SWA mean of one SWAG run (``max_epochs`` epochs, the last
      ``max_epochs - swa_start`` at ``swa_lr``, weights collected about ``max_rank`` times),
      and the rows of P are the top k principal directions of the collected deviations,
      each scaled by its singular value over √(K - 1) (K deviations): z ~ N(0, I) spreads
      as the SWA trajectory did;
    - ``"random"``: ŵ the same SWA mean, and k random orthogonal directions, each with the
      mean norm of the k principal directions (as the paper's random subspace);
    - ``"curve"``: the plane of a trained quadratic Bezier curve, from ``init_modes`` (a
      fitted :class:`CurveClassifier` with ``n_bends=3``, or its three anchors
      ``[w_0, bend, w_1]``): ŵ is the mean of the endpoints and the curve's midpoint, the
      directions the endpoints' difference and the midpoint's offset from it (scaled by
      1/√3 and 1/1.5). Nothing is trained.

    The posterior over z is ``p(z | D) ∝ exp(log p(D | ŵ + Pᵀz) / T) N(z; 0, σ² I)``, σ =
    ``prior_scale``, T = ``temperature``, the log-likelihood summed over all training rows
    (in batches, every z of a step evaluated at once through the member stack). The
    BatchNorm statistics in the likelihood are those of ŵ, recalibrated once; prediction
    recalibrates them for every sample (both on ``recalibration_X`` when ``fit`` gets it).
    A Dataset's training rows are read once into an array for the likelihood: the samplers
    need the same likelihood at every evaluation, which augmentation would break. With
    ``sampler="ess"``, elliptical slice sampling
    runs ``n_chains`` chains from z = 0 for ``burn_in`` steps, then keeps every ``thin``-th
    state until it has ``n_predict_samples`` samples; each step costs one pass over the
    training data per shrinkage (``ess_shrinks_``), all chains at once. With
    ``sampler="vi"``, a Gaussian q(z) (``vi_covariance`` diagonal or full) is fitted by the
    reparameterised ELBO over ``vi_iterations`` steps of Adam (each a pass over the
    training data) and ``n_predict_samples`` samples are drawn from it.

    Prediction averages the softmax probabilities of the samples' networks.

    Memory: the basis holds k·P numbers (float64) beside the shift's P; the SWAG run keeps
    (2 + K)·P while training.

    Parameters
    ----------
    {module}
    subspace : {{"pca", "random", "curve"}}, default="pca"
        The subspace (see above).
    rank : int, default=5
        k, the subspace's dimension (paper: 5-10). ``"pca"`` needs k + 1 collected
        deviations at least; ``"curve"`` ignores it (a plane: k = 2).
    sampler : {{"ess", "vi"}}, default="ess"
        Elliptical slice sampling or variational inference.
    prior_scale : float, default=1.0
        σ of the prior N(0, σ² I) on z.
    temperature : float or None, default=None
        T, dividing the log-likelihood. None: the number of training rows (the sum of their
        weights with ``sample_weight`` or ``class_weight``), so that the
        likelihood is the mean per row and the posterior keeps the spread the prior gives
        the subspace's scaled directions, whatever the data size. T = 1 is the untempered
        posterior. The paper tempers the likelihood as well. Measured on two non-digits sets
        (2 seeds, PCA subspace, ``benchmarks/README.md``): T = n gave a test NLL at or
        below SWA's (make_classification 0.524 and 0.517 against 0.530 and 0.522), T = 1
        drew z far from ŵ and was worse (0.549 and 0.552); on breast cancer all three
        tied within 0.001.
    n_predict_samples : int, default=20
        Posterior samples averaged in prediction.
    n_chains : int, default=4
        ESS chains run together (each step evaluates all of them at once).
    burn_in : int, default=10
        ESS steps per chain discarded before keeping samples.
    thin : int, default=2
        ESS steps per chain between kept samples.
    vi_covariance : {{"diagonal", "full"}}, default="diagonal"
        The covariance of q(z).
    vi_iterations : int, default=200
        ELBO steps of VI.
    swa_start : int, default=5
        As in :class:`SWAGClassifier` (``"pca"``, ``"random"``).
    swa_lr : float, default=0.01
        As in :class:`SWAGClassifier`.
    max_rank : int, default=20
        K, the deviations kept, as in :class:`SWAGClassifier`.
    collect_every : int, "auto" or None, default="auto"
        As in :class:`SWAGClassifier`.
    stats_on_cpu : bool, default=False
        As in :class:`SWAGClassifier`.
    recalibrate_bn : bool, default=True
        Recompute the BatchNorm statistics of ŵ (for the likelihood) and of every sample.
    {init_modes}
        For ``"pca"`` and ``"random"`` one network, from which the SWA phase starts; for
        ``"curve"`` the curve (required).
    {training}

    Attributes
    ----------
    {attributes}
    subspace_shift_ : Tensor of shape (P,)
        ŵ, the trainable parameters flattened (float64, CPU).
    subspace_basis_ : Tensor of shape (rank, P)
        P, one direction per row (float64, CPU).
    posterior_samples_ : ndarray of shape (n_predict_samples, rank)
        (``rank`` is 2 for ``"curve"``.)
        The samples of z the members are.
    ess_shrinks_ : ndarray or None
        ESS: the shrinkage steps of every step of every chain (diagnostic).
    vi_elbo_ : ndarray or None
        VI: the ELBO at every iteration.
    temperature_ : float
        T used.

    References
    ----------
    .. [1] P. Izmailov, W. J. Maddox, P. Kirichenko, T. Garipov, D. Vetrov, A. G. Wilson.
       "Subspace Inference for Bayesian Deep Learning." UAI 2019.
    .. [2] I. Murray, R. P. Adams, D. J. C. MacKay. "Elliptical slice sampling." AISTATS
       2010.
    """

    def __init__(
        self,
        module,
        *,
        subspace="pca",
        rank=5,
        sampler="ess",
        prior_scale=1.0,
        temperature=None,
        n_predict_samples=20,
        n_chains=4,
        burn_in=10,
        thin=2,
        vi_covariance="diagonal",
        vi_iterations=200,
        swa_start=5,
        swa_lr=0.01,
        max_rank=20,
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


_SUBSPACE_EXAMPLE = """\
>>> from sklearn.datasets import make_regression
>>> from simplexens import SubspaceRegressor
>>> from simplexens.datasets import MLP
>>> X, y = make_regression(n_samples=200, n_features=5, noise=10.0, random_state=0)
>>> reg = SubspaceRegressor(MLP, max_epochs=20, swa_start=10, rank=2,
...                     random_state=0).fit(X, y)
>>> mean, std = reg.predict(X[:4], return_std=True)
>>> mean.shape, std.shape, bool((std > 0).all())
((4,), (4,), True)
"""


@regressor_doc(SubspaceClassifier, _SUBSPACE_EXAMPLE)
class SubspaceRegressor(RegressorHead, _Subspace):
    """Subspace as a regressor (see :func:`~simplexens._docs.regressor_doc`)."""

    def __init__(
        self,
        module,
        *,
        likelihood="gaussian",
        subspace="pca",
        rank=5,
        sampler="ess",
        prior_scale=1.0,
        temperature=None,
        n_predict_samples=20,
        n_chains=4,
        burn_in=10,
        thin=2,
        vi_covariance="diagonal",
        vi_iterations=200,
        swa_start=5,
        swa_lr=0.01,
        max_rank=20,
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


class _Space:
    """The subspace ``ŵ + Pᵀz`` of a module: parameter sets and member stacks from z."""

    def __init__(self, template, names, shift, basis, buffers, device):
        tensors = module_tensors(template)
        self.template, self.device = template, torch.device(device)
        self.shapes = {n: tensors[n].shape for n in names}
        self.dtypes = {n: tensors[n].dtype for n in names}
        self.shift = shift.to(self.device)
        self.basis = basis.to(self.device)
        self.buffers = {n: t.to(self.device) for n, t in buffers.items()}
        self.rank = basis.shape[0]

    def members(self, z: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """The networks at the rows of z (shape (n, k)): parameters and the buffers."""
        flat = self.shift + z.to(self.device, torch.float64) @ self.basis
        return [{**params, **self.buffers} for params in unflatten(flat, self.shapes, self.dtypes)]

    def stack(self, z: torch.Tensor) -> ParameterStack:
        return ParameterStack.from_members(self.template, self.members(z), self.device)


def _trainable_names(template) -> list[str]:
    """The parameters the subspace moves: those that train (frozen ones stay in ŵ's place)."""
    return [n for n, p in template.named_parameters() if p.requires_grad]


def _likelihood_inputs(data):
    """``(X, y, rows, weights)`` the likelihood reads. Rows of a Dataset are read once into
    an array: the samplers need the same likelihood at every evaluation, which an augmenting
    Dataset would not give, and a pass over an array is cheaper."""
    weights = getattr(data.X, "weights", None)
    X = data.X.X if isinstance(data.X, WeightedRows) else data.X
    if not isinstance(X, DatasetRows):
        return X, data.y, data.rows, weights
    rows = np.arange(len(data.rows))
    kept = None if weights is None else weights[data.rows]
    return X[data.rows], data.y[data.rows], rows, kept


def _curve_anchors(curve) -> list[dict[str, torch.Tensor]]:
    """A fitted curve's three anchors (endpoints and bend) as networks, with its buffers."""
    check_is_fitted(curve)
    anchors = curve.curve_anchors_
    n_anchors = len(next(iter(anchors.values())))
    if n_anchors != 3 or curve.curve != "bezier":
        raise ValueError(
            f"subspace='curve' takes the plane of a quadratic Bezier curve (curve='bezier', "
            f"n_bends=3); the curve given has curve={curve.curve!r} and {n_anchors} anchors."
        )
    buffers = curve.mode_buffers_[0]
    return [{**{n: a[i] for n, a in anchors.items()}, **buffers} for i in range(3)]
