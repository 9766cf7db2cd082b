r"""Posterior inference in a low-dimensional subspace: elliptical slice sampling and Gaussian VI.

Subspace inference (Izmailov et al. 2019, [2]_) restricts a network's weights to an affine
subspace :math:`w = \hat w + P z` of dimension :math:`k` (a handful) and does Bayesian
inference on the coordinates :math:`z`,

.. math::

    p(z \mid \mathcal D) \propto \mathcal L(z)\, p(z), \qquad
    \mathcal L(z) = p(\mathcal D \mid w = \hat w + P z)^{1/T}, \qquad
    p(z) = \mathcal N(0, \operatorname{diag}(\sigma^2)),

with a temperature :math:`T` and a Gaussian prior centred on the shift :math:`\hat w`. This
module holds the two samplers of [2]_ and nothing about networks: both take a *batched*
log-likelihood callable ``log_likelihood(z) -> Tensor``, mapping subspace coordinates of shape
``(n, k)`` to :math:`\log \mathcal L(z)` of shape ``(n,)`` (any tempering already applied), so
the caller decides how the :math:`n` parameter sets ``ŵ + P z`` are evaluated (e.g. stacked
and run in one forward pass over the training data).

- :func:`elliptical_slice_sampling`, elliptical slice sampling (ESS; Murray, Adams and MacKay
  2010, [1]_), exact MCMC with no step size, run as a batch of independent chains.
- :func:`fit_gaussian_vi`, a Gaussian :math:`q(z)` (diagonal or full covariance) fitted by
  maximising the reparameterised evidence lower bound.

Pure torch: no skorch, no scikit-learn. Nothing here touches global state (the global torch
RNG, the default dtype, thread counts): all randomness comes from a ``torch.Generator``.

References
----------
.. [1] Murray, I., Adams, R. P. and MacKay, D. J. C. (2010). Elliptical slice sampling.
   AISTATS, JMLR W&CP 9, 541-548. Figure 2 (the algorithm).
.. [2] Izmailov, P., Maddox, W. J., Kirichenko, P., Garipov, T., Vetrov, D. and Wilson, A. G.
   (2019). Subspace Inference for Bayesian Deep Learning. UAI.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "COVARIANCES",
    "EllipticalSliceResult",
    "GaussianVIResult",
    "elliptical_slice_sampling",
    "fit_gaussian_vi",
]

COVARIANCES = ("diagonal", "full")

LogLikelihood = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- checks


def _check_int(value, name: str, minimum: int) -> int:
    """``value`` as an int >= ``minimum`` (bools refused), else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def _check_positive_float(value, name: str) -> float:
    """``value`` as a finite float > 0 (bools refused), else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}.")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}.")
    return float(value)


def _prior_scale(prior_scale, k: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    r""":math:`\sigma` as a tensor of shape (k,) on ``device``; ValueError unless all > 0."""
    if isinstance(prior_scale, bool):
        raise ValueError(f"prior_scale must be a number or a tensor; got {prior_scale!r}.")
    try:
        sigma = torch.as_tensor(prior_scale, dtype=dtype).to(device)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(
            f"prior_scale must be a number or a vector of k={k} numbers; got {prior_scale!r}."
        ) from exc
    if sigma.ndim > 1 or (sigma.ndim == 1 and sigma.shape[0] not in (1, k)):
        raise ValueError(
            f"prior_scale must be a scalar or have shape ({k},) (one σ per subspace "
            f"dimension); got shape {tuple(sigma.shape)}."
        )
    if not bool(torch.all(torch.isfinite(sigma) & (sigma > 0))):
        raise ValueError(f"prior_scale σ must be finite and > 0; got {prior_scale!r}.")
    return sigma.expand(k).clone()


def _generator(generator: torch.Generator | None, device: torch.device) -> torch.Generator:
    """``generator`` checked to live on ``device``; a freshly seeded one when None."""
    if generator is None:
        fresh = torch.Generator(device=device)
        fresh.seed()  # a non-deterministic seed of its own; the global RNG is not touched
        return fresh
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator; got {type(generator).__name__}.")
    if generator.device.type != device.type:
        raise ValueError(
            f"generator is on {generator.device} but the tensors are on {device}; "
            f"build it with torch.Generator(device={str(device)!r})."
        )
    return generator


def _evaluate(log_likelihood: LogLikelihood, z: torch.Tensor) -> torch.Tensor:
    """``log_likelihood(z)`` checked to be a floating tensor of shape (n,) on z's device."""
    out = log_likelihood(z)
    if not isinstance(out, torch.Tensor):
        raise ValueError(
            f"log_likelihood must return a tensor of shape ({z.shape[0]},); "
            f"got {type(out).__name__}."
        )
    if out.shape != z.shape[:1]:
        raise ValueError(
            f"log_likelihood must map z of shape (n, k) = {tuple(z.shape)} to a tensor of "
            f"shape (n,) = ({z.shape[0]},); got shape {tuple(out.shape)}."
        )
    if not torch.is_floating_point(out):
        raise ValueError(f"log_likelihood must return floating-point values; got {out.dtype}.")
    return out.to(device=z.device, dtype=z.dtype)


# --------------------------------------------------------------------------- ESS


@dataclass(frozen=True)
class EllipticalSliceResult:
    r"""The kept states of a batch of elliptical slice sampling chains, and diagnostics.

    All tensors are on the device of ``initial``.

    Attributes
    ----------
    samples : Tensor of shape (n_chains, n_samples, k)
        The kept states :math:`z`, chain by chain, in the order visited. The chain axis is
        kept explicit (chains are independent, states within a chain are autocorrelated);
        :attr:`flat_samples` stacks them for a model average.
    log_likelihoods : Tensor of shape (n_chains, n_samples)
        :math:`\log \mathcal L(z)` of each kept state, as returned by ``log_likelihood``.
    shrinks : LongTensor of shape (n_chains, burn_in + n_samples * thin)
        The number of shrinkage steps (rejected proposals) of every transition, burn-in
        and thinned-out transitions included. A transition of a chain costs ``1 + shrinks``
        likelihood evaluations of that chain's proposals; many shrinks mean the ellipse
        crosses the slice only in a small arc (a likelihood much narrower than the prior).
    n_evaluations : int
        The number of calls to ``log_likelihood``, the initial evaluation included. Each
        call evaluates every chain still shrinking at that point (between 1 and
        ``n_chains`` rows), so a transition of the batch costs ``1 + max(shrinks)`` calls.
        In a subspace estimator each call is one pass over the training data.
    """

    samples: torch.Tensor
    log_likelihoods: torch.Tensor
    shrinks: torch.Tensor
    n_evaluations: int

    @property
    def flat_samples(self) -> torch.Tensor:
        """The kept states of all chains stacked, shape (n_chains * n_samples, k)."""
        return self.samples.reshape(-1, self.samples.shape[-1])


def _check_initial(initial) -> torch.Tensor:
    """``initial`` checked to be a finite floating tensor of shape (n_chains, k)."""
    if not isinstance(initial, torch.Tensor):
        raise ValueError(
            f"initial must be a tensor of shape (n_chains, k); got {type(initial).__name__}."
        )
    if initial.ndim != 2 or initial.shape[0] < 1 or initial.shape[1] < 1:
        raise ValueError(
            f"initial must have shape (n_chains, k) with n_chains, k >= 1; "
            f"got {tuple(initial.shape)}. Use initial[None] for a single chain."
        )
    if not torch.is_floating_point(initial):
        raise ValueError(f"initial must be floating point; got {initial.dtype}.")
    if not bool(torch.isfinite(initial).all()):
        raise ValueError("initial contains NaN or infinite coordinates.")
    return initial.detach().clone()


def _initial_log_likelihood(log_likelihood: LogLikelihood, z: torch.Tensor) -> torch.Tensor:
    r""":math:`\log \mathcal L` of the starting states; ValueError if any is not finite."""
    log_lik = _evaluate(log_likelihood, z)
    bad = ~torch.isfinite(log_lik)
    if bool(bad.any()):
        chains = bad.nonzero().flatten().tolist()
        raise ValueError(
            f"log_likelihood is not finite at the initial state of chain(s) {chains} "
            f"(values {log_lik[bad].tolist()}); ESS needs a start with L(z) > 0. Start "
            "from a point of finite loss (e.g. z = 0, the subspace's shift ŵ)."
        )
    return log_lik


def _shrink_failure(max_shrinks: int, n_stuck: int, n_nonfinite: int, step: int) -> RuntimeError:
    """The error raised when a transition exceeds ``max_shrinks``, with the likely causes."""
    seen = (
        f"; {n_nonfinite} of the proposals in this transition had a NaN or +inf "
        "log-likelihood (rejected as zero likelihood): the likely cause"
        if n_nonfinite
        else ""
    )
    return RuntimeError(
        f"elliptical slice sampling: {n_stuck} chain(s) still rejected their proposals after "
        f"max_shrinks={max_shrinks} shrinkage steps in transition {step}{seen}. As the "
        "bracket shrinks, proposals approach the current state, which lies in the slice, "
        "so this happens only if log_likelihood is non-finite near the current state or "
        "not deterministic (dropout or train-mode BatchNorm left on, a minibatch estimate, "
        "data reshuffled between calls): ESS needs the same value for the same z."
    )


@torch.no_grad()
def _ess_transition(
    log_likelihood: LogLikelihood,
    z: torch.Tensor,
    log_lik: torch.Tensor,
    sigma: torch.Tensor,
    generator: torch.Generator,
    max_shrinks: int,
    step: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """One ESS transition of every chain; returns (z, log L, shrinks per chain, calls made).

    The chains still shrinking are held compactly (``active`` indexes them in the batch):
    those that accept are written out and dropped, the others shrink their bracket and
    propose again, all their proposals evaluated in one call. One host sync per call.
    """
    n_chains, k = z.shape
    opts = dict(generator=generator, device=z.device, dtype=z.dtype)
    nu = torch.randn((n_chains, k), **opts) * sigma  # ν ~ N(0, Σ)
    log_y = log_lik + torch.rand(n_chains, **opts).log()  # log y = log L(z) + log u
    theta = torch.rand(n_chains, **opts) * (2 * math.pi)  # θ ~ U[0, 2π]
    lower, upper = theta - 2 * math.pi, theta
    z_out, log_lik_out = z.clone(), log_lik.clone()
    shrinks = torch.zeros(n_chains, dtype=torch.long, device=z.device)
    active = torch.arange(n_chains, device=z.device)
    n_nonfinite = torch.zeros((), dtype=torch.long, device=z.device)
    for n_calls in range(1, max_shrinks + 2):
        proposal = z * torch.cos(theta)[:, None] + nu * torch.sin(theta)[:, None]
        value = _evaluate(log_likelihood, proposal)
        # NaN and +inf are rejected (zero likelihood), so one bad value cannot poison a chain.
        accept = (value > log_y) & (value < math.inf)
        n_nonfinite += torch.isnan(value).logical_or_(value == math.inf).sum()
        z_out[active] = torch.where(accept[:, None], proposal, z)
        log_lik_out[active] = torch.where(accept, value, log_lik)
        keep = (~accept).nonzero().flatten()  # the host sync: which chains still shrink?
        if keep.numel() == 0:
            return z_out, log_lik_out, shrinks, n_calls
        active, z, nu, log_y, log_lik = (t[keep] for t in (active, z, nu, log_y, log_lik))
        shrinks[active] = n_calls
        theta, lower, upper = theta[keep], lower[keep], upper[keep]
        negative = theta < 0
        lower, upper = torch.where(negative, theta, lower), torch.where(negative, upper, theta)
        theta = lower + torch.rand(keep.numel(), **opts) * (upper - lower)
    raise _shrink_failure(max_shrinks, active.numel(), int(n_nonfinite), step)


def elliptical_slice_sampling(
    log_likelihood: LogLikelihood,
    prior_scale,
    initial: torch.Tensor,
    n_samples: int,
    *,
    burn_in: int = 0,
    thin: int = 1,
    generator: torch.Generator | None = None,
    max_shrinks: int = 100,
) -> EllipticalSliceResult:
    r"""Sample :math:`p(z) \propto \mathcal L(z)\,\mathcal N(z; 0, \Sigma)` by elliptical slice
    sampling.

    Runs ``n_chains`` independent chains of the elliptical slice sampler of [1]_ (Figure 2)
    side by side, for the Gaussian prior :math:`\Sigma = \operatorname{diag}(\sigma^2)` of
    subspace inference [2]_. One transition of a chain at state :math:`z`:

    1. draw :math:`\nu \sim \mathcal N(0, \Sigma)`, which defines the ellipse
       :math:`z' = z \cos\theta + \nu \sin\theta` through :math:`z`;
    2. draw the log slice level :math:`\log y = \log \mathcal L(z) + \log u`,
       :math:`u \sim U[0, 1]`;
    3. draw :math:`\theta \sim U[0, 2\pi]` and set the bracket
       :math:`[\theta_{\min}, \theta_{\max}] = [\theta - 2\pi, \theta]`;
    4. propose :math:`z'`; if :math:`\log \mathcal L(z') > \log y`, accept it; otherwise
       shrink the bracket towards 0 (:math:`\theta_{\min} = \theta` if :math:`\theta < 0`,
       else :math:`\theta_{\max} = \theta`), draw :math:`\theta \sim U[\theta_{\min},
       \theta_{\max}]` and propose again.

    Every transition moves (there is no rejection of the whole step) and leaves the posterior
    invariant; there is no step size to tune. The proposals of all chains still shrinking
    are evaluated in one call of ``log_likelihood``; chains that accepted wait.

    Parameters
    ----------
    log_likelihood : callable
        ``log_likelihood(z)`` maps coordinates ``z`` of shape (n, k) to
        :math:`\log \mathcal L(z)` of shape (n,), with any temperature :math:`T` applied
        (:math:`\log p(\mathcal D \mid z) / T`). Called under ``torch.no_grad()`` with
        :math:`1 \le n \le` n_chains. It must be deterministic (the same value for the same
        :math:`z`: a full-data likelihood with dropout off and BatchNorm in eval mode), as
        slice sampling is exact only for a fixed target. :math:`-\infty` means zero
        likelihood; NaN and :math:`+\infty` of a proposal are treated the same way.
    prior_scale : float or Tensor of shape (k,)
        :math:`\sigma`, the prior standard deviation, one for all dimensions or one per
        dimension; finite and > 0. The reference code of [2]_ defaults to 1 (for
        subspace directions scaled as in the paper).
    initial : Tensor of shape (n_chains, k)
        The starting states, one row per chain, e.g. zeros (the shift :math:`\hat w`) or
        draws from the prior. Sets the device and dtype of everything. Must have a finite
        log-likelihood.
    n_samples : int
        The number of states kept per chain, >= 1.
    burn_in : int, default=0
        Transitions per chain discarded before the first kept state, >= 0.
    thin : int, default=1
        Keep every ``thin``-th state after burn-in, >= 1. Each chain makes
        ``burn_in + n_samples * thin`` transitions.
    generator : torch.Generator, optional
        The source of all randomness, on the device of ``initial``. ``None`` uses a fresh,
        non-deterministically seeded generator (the global RNG is never used). The draws
        depend on the number of chains, so a chain run alone differs from the same chain
        run in a batch.
    max_shrinks : int, default=100
        A cap on the shrinkage steps of one transition. Shrinking brings proposals to the
        current state, which is always in the slice, so a correct deterministic likelihood
        needs few (the bracket shrinks geometrically); hitting the cap means something is
        wrong, and raises.

    Returns
    -------
    EllipticalSliceResult
        ``samples`` of shape (n_chains, n_samples, k), their ``log_likelihoods``, the
        ``shrinks`` of every transition and ``n_evaluations``, all on the device of
        ``initial``.

    Raises
    ------
    ValueError
        If an argument is invalid (``prior_scale`` not > 0, ``n_samples`` or ``thin`` < 1,
        ``burn_in`` < 0, a malformed ``initial``), ``log_likelihood`` returns the wrong
        shape, or the log-likelihood at an initial state is not finite.
    RuntimeError
        If a transition needs more than ``max_shrinks`` shrinkage steps.

    Notes
    -----
    Cost: each call of ``log_likelihood`` is, in a subspace estimator, one pass over the
    training data for up to n_chains parameter sets. A run makes
    ``result.n_evaluations`` = :math:`1 + \sum_t (1 + \max_c s_{c,t})` calls, with
    :math:`s_{c,t}` the shrinks of chain :math:`c` at transition :math:`t`; a chain alone
    would need :math:`1 + \sum_t (1 + s_{c,t})`. The batch thus trades a longer wait for
    the slowest chain against evaluating the chains together. The loop synchronises with
    the host once per call, to learn whether any chain is still shrinking.

    References
    ----------
    .. [1] Murray, I., Adams, R. P. and MacKay, D. J. C. (2010). Elliptical slice sampling.
       AISTATS.
    .. [2] Izmailov, P., Maddox, W. J., Kirichenko, P., Garipov, T., Vetrov, D. and
       Wilson, A. G. (2019). Subspace Inference for Bayesian Deep Learning. UAI.

    Examples
    --------
    >>> import torch
    >>> def log_likelihood(z):  # a Gaussian likelihood centred at (1, -1)
    ...     return -0.5 * ((z - torch.tensor([1.0, -1.0])) ** 2).sum(-1) / 0.25
    >>> result = elliptical_slice_sampling(
    ...     log_likelihood, 1.0, torch.zeros(4, 2), 100, burn_in=20,
    ...     generator=torch.Generator().manual_seed(0))
    >>> result.samples.shape
    torch.Size([4, 100, 2])
    """
    n_samples = _check_int(n_samples, "n_samples", 1)
    burn_in = _check_int(burn_in, "burn_in", 0)
    thin = _check_int(thin, "thin", 1)
    max_shrinks = _check_int(max_shrinks, "max_shrinks", 1)
    z = _check_initial(initial)
    n_chains, k = z.shape
    sigma = _prior_scale(prior_scale, k, z.device, z.dtype)
    generator = _generator(generator, z.device)
    with torch.no_grad():
        log_lik = _initial_log_likelihood(log_likelihood, z)
    n_steps = burn_in + n_samples * thin
    samples = z.new_empty((n_chains, n_samples, k))
    kept_log_lik = z.new_empty((n_chains, n_samples))
    shrinks = torch.empty((n_chains, n_steps), dtype=torch.long, device=z.device)
    n_evaluations = 1
    for step in range(n_steps):
        z, log_lik, step_shrinks, calls = _ess_transition(
            log_likelihood, z, log_lik, sigma, generator, max_shrinks, step
        )
        shrinks[:, step] = step_shrinks
        n_evaluations += calls
        kept, offset = divmod(step - burn_in + 1, thin)
        if step >= burn_in and offset == 0:
            samples[:, kept - 1], kept_log_lik[:, kept - 1] = z, log_lik
    return EllipticalSliceResult(samples, kept_log_lik, shrinks, n_evaluations)


# --------------------------------------------------------------------------- VI


@dataclass(frozen=True)
class GaussianVIResult:
    r"""A fitted Gaussian :math:`q(z) = \mathcal N(\mu, L L^\top)` over subspace coordinates.

    Attributes
    ----------
    mean : Tensor of shape (k,)
        :math:`\mu`.
    scale_tril : Tensor of shape (k, k)
        :math:`L`, lower triangular with a positive diagonal (diagonal for
        ``covariance="diagonal"``).
    elbo : ndarray of shape (n_iterations,)
        The Monte Carlo estimate of the ELBO at each iteration, before that iteration's
        update, as a float64 NumPy array on the host (a training curve, like
        scikit-learn's ``loss_curve_``). Noisy: average the last iterations to compare.
    covariance : str
        ``"diagonal"`` or ``"full"``.
    """

    mean: torch.Tensor
    scale_tril: torch.Tensor
    elbo: np.ndarray
    covariance: str

    @property
    def covariance_matrix(self) -> torch.Tensor:
        r""":math:`L L^\top`, shape (k, k)."""
        return self.scale_tril @ self.scale_tril.T

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""Draw ``n`` coordinates :math:`z = \mu + L \varepsilon`, :math:`\varepsilon \sim
        \mathcal N(0, I_k)`.

        Parameters
        ----------
        n : int
            The number of draws, >= 1.
        generator : torch.Generator, optional
            The source of randomness, on the device of :attr:`mean`; ``None`` uses a fresh,
            non-deterministically seeded one.

        Returns
        -------
        Tensor of shape (n, k)
            On the device and in the dtype of :attr:`mean`.
        """
        n = _check_int(n, "n", 1)
        generator = _generator(generator, self.mean.device)
        eps = torch.randn(
            (n, self.mean.shape[0]),
            generator=generator,
            device=self.mean.device,
            dtype=self.mean.dtype,
        )
        return self.mean + eps @ self.scale_tril.T


class _GaussianFamily(torch.nn.Module):
    r"""The variational parameters: :math:`\mu`, :math:`\rho` (:math:`L_{ii} =
    \operatorname{softplus}(\rho_i)`) and, for a full covariance, the strictly lower
    entries of :math:`L`."""

    def __init__(self, k, covariance, initial_scale, device, dtype):
        super().__init__()
        opts = dict(device=device, dtype=dtype)
        self.k = k
        self.mean = torch.nn.Parameter(torch.zeros(k, **opts))
        rho = math.log(math.expm1(initial_scale))  # softplus⁻¹
        self.rho = torch.nn.Parameter(torch.full((k,), rho, **opts))
        self.rows, self.cols = torch.tril_indices(k, k, offset=-1, device=device)
        n_lower = self.rows.numel() if covariance == "full" else 0
        self.lower = torch.nn.Parameter(torch.zeros(n_lower, **opts))

    def scale_tril(self) -> torch.Tensor:
        scale = torch.diag(torch.nn.functional.softplus(self.rho))
        if self.lower.numel():
            scale = scale.index_put((self.rows, self.cols), self.lower)
        return scale


def _kl_to_prior(mean: torch.Tensor, scale: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    r"""Closed-form :math:`\mathrm{KL}(\mathcal N(\mu, LL^\top) \,\|\, \mathcal N(0,
    \operatorname{diag}\sigma^2))`.

    :math:`\tfrac12 [\sum_{ij} L_{ij}^2/\sigma_i^2 + \sum_i \mu_i^2/\sigma_i^2 - k
    + 2\sum_i \log\sigma_i - 2\sum_i \log L_{ii}]`.
    """
    trace = (scale.square() / sigma.square()[:, None]).sum()
    mahalanobis = (mean.square() / sigma.square()).sum()
    log_det = 2 * sigma.log().sum() - 2 * torch.diagonal(scale).log().sum()
    return 0.5 * (trace + mahalanobis - mean.shape[0] + log_det)


def _check_vi_args(covariance, k, n_iterations, n_mc, lr, initial_scale) -> tuple:
    """The validated (k, n_iterations, n_mc, lr, initial_scale); ValueError otherwise."""
    if covariance not in COVARIANCES:
        raise ValueError(f"covariance must be one of {COVARIANCES}; got {covariance!r}.")
    return (
        _check_int(k, "k", 1),
        _check_int(n_iterations, "n_iterations", 1),
        _check_int(n_mc, "n_mc", 1),
        _check_positive_float(lr, "lr"),
        _check_positive_float(initial_scale, "initial_scale"),
    )


def fit_gaussian_vi(
    log_likelihood: LogLikelihood,
    prior_scale,
    k: int,
    *,
    covariance: str = "diagonal",
    n_iterations: int,
    n_mc: int = 1,
    lr: float = 0.01,
    initial_scale: float = 0.05,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> GaussianVIResult:
    r"""Fit :math:`q(z) = \mathcal N(\mu, LL^\top)` to :math:`p(z) \propto \mathcal L(z)\,
    \mathcal N(z; 0, \operatorname{diag}\sigma^2)` by variational inference.

    Maximises the evidence lower bound of [1]_,

    .. math::

        \mathrm{ELBO}(\mu, L) = \mathbb E_{q}[\log \mathcal L(z)]
            - \mathrm{KL}(q \,\|\, p)
        = \mathbb E_{q}[\log \mathcal L(z)] + \mathbb E_{q}[\log p(z)]
            - \mathbb E_{q}[\log q(z)],

    with :func:`torch.optim.Adam`. The likelihood term is estimated by reparameterisation [2]_,
    :math:`z_s = \mu + L \varepsilon_s`, :math:`\varepsilon_s \sim \mathcal N(0, I_k)`,
    :math:`s = 1 \ldots S` (:math:`S` = ``n_mc``, all :math:`z_s` in one call of
    ``log_likelihood``); the KL term is taken in closed form,

    .. math::

        \mathrm{KL} = \tfrac12 \Bigl[\sum_{ij} L_{ij}^2 / \sigma_i^2
            + \sum_i \mu_i^2 / \sigma_i^2 - k + 2 \sum_i \log \sigma_i
            - 2 \sum_i \log L_{ii}\Bigr],

    which is exact and adds no Monte Carlo noise to the gradient (an MC estimate of
    :math:`\mathbb E_q[\log p - \log q]` would). For a Gaussian likelihood the optimum is
    the exact posterior (``"full"``) or its mean-field approximation (``"diagonal"``: the
    exact mean and variances :math:`1/\Lambda_{ii}`, :math:`\Lambda` the posterior
    precision).

    Parameters
    ----------
    log_likelihood : callable
        ``log_likelihood(z)`` maps ``z`` of shape (n_mc, k) to :math:`\log \mathcal L(z)` of
        shape (n_mc,), differentiable in ``z`` (temperature applied, as in
        :func:`elliptical_slice_sampling`). It may be a stochastic but unbiased estimate
        (e.g. a minibatch log-likelihood scaled by N/B): each iteration is then one Adam
        step of stochastic VI. Every call is, in a subspace estimator, one forward and
        backward pass for ``n_mc`` parameter sets over the data it sees.
    prior_scale : float or Tensor of shape (k,)
        :math:`\sigma`, the prior standard deviation; finite and > 0.
    k : int
        The subspace dimension, >= 1.
    covariance : {"diagonal", "full"}, default="diagonal"
        ``"diagonal"``: :math:`L = \operatorname{diag}(\operatorname{softplus}(\rho))`, the
        fully factorised Gaussian of [1]_. ``"full"``: :math:`L` lower triangular with
        diagonal :math:`\operatorname{softplus}(\rho)` and free entries below it.
    n_iterations : int
        Adam steps, >= 1.
    n_mc : int, default=1
        :math:`S`, Monte Carlo draws of :math:`z` per step (1 as in [1]_, one per
        minibatch step).
    lr : float, default=0.01
        Adam's learning rate.
    initial_scale : float, default=0.05
        The initial :math:`L = \text{initial\_scale} \cdot I`; :math:`\mu` starts at 0
        (the shift :math:`\hat w`). A small start (about :math:`\operatorname{softplus}(-3)`
        as in [1]_'s code) begins in the low-loss region around the shift.
    generator : torch.Generator, optional
        The source of :math:`\varepsilon`, on ``device``; ``None`` uses a fresh,
        non-deterministically seeded one (the global RNG is never used).
    device : str or torch.device, optional
        Where :math:`\mu, L` live and ``z`` is created; ``None`` means the CPU.
    dtype : torch.dtype, default=torch.float32
        The dtype of :math:`\mu, L` and ``z``.

    Returns
    -------
    GaussianVIResult
        ``mean`` (k,) and ``scale_tril`` (k, k) as detached tensors on ``device``, the
        ``elbo`` trace as a NumPy array, and a ``sample(n, generator)`` method.

    Raises
    ------
    ValueError
        If an argument is invalid or ``log_likelihood`` returns the wrong shape.
    RuntimeError
        If the ELBO becomes non-finite (e.g. ``lr`` too large, or a likelihood that
        overflows away from the shift).

    References
    ----------
    .. [1] Izmailov, P., Maddox, W. J., Kirichenko, P., Garipov, T., Vetrov, D. and
       Wilson, A. G. (2019). Subspace Inference for Bayesian Deep Learning. UAI.
    .. [2] Kingma, D. P. and Welling, M. (2014). Auto-Encoding Variational Bayes. ICLR.
       (The reparameterisation gradient.)
    """
    k, n_iterations, n_mc, lr, initial_scale = _check_vi_args(
        covariance, k, n_iterations, n_mc, lr, initial_scale
    )
    device = torch.device("cpu") if device is None else torch.device(device)
    sigma = _prior_scale(prior_scale, k, device, dtype)
    generator = _generator(generator, device)
    family = _GaussianFamily(k, covariance, initial_scale, device, dtype)
    optimizer = torch.optim.Adam(family.parameters(), lr=lr)
    trace = torch.empty(n_iterations, device=device, dtype=dtype)
    for i in range(n_iterations):
        scale = family.scale_tril()
        eps = torch.randn((n_mc, k), generator=generator, device=device, dtype=dtype)
        # L ε as a broadcast product, not eps @ L.T: that matmul's backward is a BLAS call
        # reducing over the n_mc rows, measured at 16 ms (vs 0.2) on a busy 2-core machine.
        z = family.mean + (scale * eps[:, None, :]).sum(-1)
        elbo = _evaluate(log_likelihood, z).mean() - _kl_to_prior(family.mean, scale, sigma)
        optimizer.zero_grad(set_to_none=True)
        (-elbo).backward()
        optimizer.step()
        trace[i] = elbo.detach()
    elbo_trace = trace.cpu().double().numpy()
    _check_finite_elbo(elbo_trace)
    with torch.no_grad():
        scale = family.scale_tril()
    return GaussianVIResult(family.mean.detach().clone(), scale, elbo_trace, covariance)


def _check_finite_elbo(elbo: np.ndarray) -> None:
    """RuntimeError naming the first iteration whose ELBO estimate is not finite."""
    bad = np.flatnonzero(~np.isfinite(elbo))
    if bad.size:
        raise RuntimeError(
            f"variational inference diverged: the ELBO estimate is {elbo[bad[0]]} at "
            f"iteration {bad[0]}. Lower lr, or check that log_likelihood is finite for z "
            "drawn around the shift (a smaller initial_scale starts closer to it)."
        )
