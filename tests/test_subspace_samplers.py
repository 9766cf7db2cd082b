"""Tests for simplexens.backends.subspace: elliptical slice sampling and Gaussian VI.

Oracle: a conjugate Gaussian model in k = 2 and 3 dimensions, log L(z) = -|y - A z|² / (2 s²)
with prior N(0, diag σ²), whose posterior is Gaussian with precision Λ = AᵀA / s² + diag(σ⁻²),
covariance Λ⁻¹ and mean Λ⁻¹ Aᵀ y / s² (correlated, away from 0), and whose evidence is
Z = (2π s²)^(n/2) N(y; 0, s² I + A diag(σ²) Aᵀ).

ESS bounds. The chains are autocorrelated: the variance of a mean over N draws is
τ sd² / N, τ the integrated autocorrelation time. τ was measured on each target (16 chains
of 4,000 states, autocorrelations summed to below 0.01): at most 3.5 (2-D) and 5.5 (3-D);
the bounds assume TAU_FACTOR = 3 times that and allow N_SE = 5 such standard errors, for
the mean and for each covariance entry (standard error sqrt((C_ii C_jj + C_ij²) τ / N)).
The assumption is itself checked: the between-chain variance of the 16 chain means
estimates τ (15 degrees of freedom), and the test fails if that estimate exceeds the bound's
τ (probability below 1e-4 per dimension for a correct sampler).

VI tolerances. For a Gaussian likelihood and prior the ELBO's optimum is exact ("full": the
posterior; "diagonal": the exact mean with variances 1/Λ_ii) and its value is log Z minus
KL(q* || posterior) (0 for "full"). What remains is Adam's jitter under Monte Carlo
gradients, measured at ≤ 0.02 with n_mc=256, lr=0.02; tolerances are 0.05 (a tenth of a
posterior sd) for means, 0.03 for covariances (about a tenth of the variances).
"""

import math

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from torch.testing import assert_close

from simplexens.backends.subspace import (
    EllipticalSliceResult,
    GaussianVIResult,
    _kl_to_prior,
    elliptical_slice_sampling,
    fit_gaussian_vi,
)

DTYPE = torch.float64
N_CHAINS, N_KEPT, BURN_IN = 16, 400, 50
TAU_FACTOR = 3.0  # the bounds' τ over the measured one
N_SE = 5.0

pytestmark = pytest.mark.usefixtures("global_rng_untouched")


# --------------------------------------------------------------------------- the oracle


class Conjugate:
    """The conjugate Gaussian model and its closed-form posterior, on a device."""

    def __init__(self, A, y, s, sigma, tau, device="cpu"):
        opts = dict(dtype=DTYPE, device=device)
        self.A, self.y = torch.tensor(A, **opts), torch.tensor(y, **opts)
        self.s, self.k = s, self.A.shape[1]
        self.sigma = torch.as_tensor(sigma, **opts).expand(self.k)
        self.prior_scale = sigma
        self.precision = self.A.T @ self.A / s**2 + torch.diag(self.sigma**-2)
        self.cov = torch.linalg.inv(self.precision)
        self.mean = self.cov @ self.A.T @ self.y / s**2
        self.tau_max = TAU_FACTOR * tau  # τ measured for ESS on this target, made conservative
        self.calls = 0

    def log_likelihood(self, z):
        self.calls += 1
        # A z by broadcasting, not a matmul: on a loaded 2-core machine MKL's threaded
        # matmuls of these tiny shapes took milliseconds each, most of the tests' time.
        residual = self.y - (z[:, None, :] * self.A).sum(-1)
        return -0.5 * (residual**2).sum(-1) / self.s**2

    def log_evidence(self):
        n = self.y.shape[0]
        noise = self.s**2 * torch.eye(n, dtype=DTYPE, device=self.y.device)
        marginal = noise + self.A @ torch.diag(self.sigma**2) @ self.A.T
        normal = torch.distributions.MultivariateNormal(torch.zeros_like(self.y), marginal)
        return float(normal.log_prob(self.y)) + 0.5 * n * math.log(2 * math.pi * self.s**2)


def model_2d(device="cpu"):
    """k = 2, one prior scale, a strong likelihood; posterior correlation -0.5, mean
    (0.77, 1.14)."""
    A = [[1.0, 0.8], [0.3, 1.2], [0.5, -0.4]]
    return Conjugate(A, [1.5, 2.0, 0.3], 0.6, 1.5, tau=3.5, device=device)


def model_3d(device="cpu"):
    """k = 3, one prior scale per dimension, a weak likelihood (the prior matters: σ² in
    place of σ would move the covariance by 2 bounds); mean (0.27, 0.19, 0.61), correlations
    to -0.66."""
    A = [[1.0, 1.0, 0.5], [0.5, 1.0, 1.0], [0.2, 0.6, 1.0], [1.0, 0.5, 0.0]]
    return Conjugate(A, [1.5, -1.5, 3.0, 1.5], 1.0, [0.5, 1.0, 2.0], tau=5.5, device=device)


MODELS = {"2d": model_2d, "3d": model_3d}


def _run_ess(model, seed=0, n_chains=N_CHAINS, n_kept=N_KEPT, **kwargs):
    """ESS on ``model`` from prior draws, with a generator seeded ``seed``."""
    g = torch.Generator().manual_seed(seed)
    initial = torch.randn(n_chains, model.k, generator=g, dtype=DTYPE) * model.sigma
    kwargs.setdefault("burn_in", BURN_IN)
    return elliptical_slice_sampling(
        model.log_likelihood, model.prior_scale, initial, n_kept, generator=g, **kwargs
    )


@pytest.fixture(scope="module", params=sorted(MODELS))
def ess_run(request):
    model = MODELS[request.param]()
    return model, _run_ess(model)


# --------------------------------------------------------------------------- ESS


def test_ess_shapes_and_cost(ess_run):
    model, result = ess_run
    assert isinstance(result, EllipticalSliceResult)
    assert result.samples.shape == (N_CHAINS, N_KEPT, model.k)
    assert result.flat_samples.shape == (N_CHAINS * N_KEPT, model.k)
    assert result.log_likelihoods.shape == (N_CHAINS, N_KEPT)
    assert result.shrinks.shape == (N_CHAINS, BURN_IN + N_KEPT)
    assert result.shrinks.dtype == torch.long and int(result.shrinks.min()) >= 0
    assert int(result.shrinks.max()) > 0  # the likelihood is narrower than the prior
    expected = 1 + int((1 + result.shrinks.max(0).values).sum())
    assert result.n_evaluations == expected == model.calls
    recomputed = model.log_likelihood(result.flat_samples).reshape(N_CHAINS, N_KEPT)
    assert_close(result.log_likelihoods, recomputed)


def test_ess_mean_matches_posterior(ess_run):
    model, result = ess_run
    n = N_CHAINS * N_KEPT
    bound = N_SE * model.cov.diag().sqrt() * math.sqrt(model.tau_max / n)
    error = (result.flat_samples.mean(0) - model.mean).abs()
    assert torch.all(error < bound), (error, bound)


def test_ess_covariance_matches_posterior(ess_run):
    model, result = ess_run
    n = N_CHAINS * N_KEPT
    var = model.cov.diag()
    se = ((var[:, None] * var[None, :] + model.cov**2) * model.tau_max / n).sqrt()
    error = (torch.cov(result.flat_samples.T) - model.cov).abs()
    assert torch.all(error < N_SE * se), (error, N_SE * se)


def test_ess_autocorrelation_within_assumed_bound(ess_run):
    """Checks the bounds' assumption: τ estimated from the spread of the chain means."""
    model, result = ess_run
    chain_means = result.samples.mean(1)  # (n_chains, k)
    tau = N_KEPT * chain_means.var(0) / model.cov.diag()
    assert torch.all(tau < model.tau_max), tau
    assert torch.all(tau > 0.3), tau  # chains sharing their randomness would give τ ≈ 0


def _replay(record, shrinks):
    """Split the recorded calls into transitions and chains, using ``shrinks``.

    Returns, per transition, per chain, the list of (proposal, value) evaluated, in order.
    The chains in call j of a transition are those with at least j shrinks, by index.
    """
    calls = iter(record[1:])  # record[0] is the initial evaluation
    transitions = []
    for s in shrinks.T:
        per_chain = [[] for _ in s]
        for j in range(int(s.max()) + 1):
            z, value = next(calls)
            chains = (s >= j).nonzero().flatten().tolist()
            assert z.shape[0] == len(chains)  # only the chains still shrinking
            for row, c in enumerate(chains):
                per_chain[c].append((z[row], value[row]))
        transitions.append(per_chain)
    assert next(calls, None) is None
    return transitions


def test_ess_slice_invariants_on_instrumented_run():
    """Every rejected proposal lies below the slice, the accepted one above it.

    With log y = log L(z) + log u ≤ log L(z): rejected values ≤ log y ≤ log L(z_previous)
    and rejected values ≤ log y < accepted value, for every chain and transition.
    """
    model = model_2d()
    record = []

    def log_likelihood(z):
        value = model.log_likelihood(z)
        record.append((z.clone(), value.clone()))
        return value

    g = torch.Generator().manual_seed(3)
    initial = torch.randn(5, 2, generator=g, dtype=DTYPE) * 1.5
    result = elliptical_slice_sampling(log_likelihood, 1.5, initial, 30, generator=g)
    assert result.n_evaluations == len(record)
    previous = record[0][1]
    transitions = _replay(record, result.shrinks)
    n_rejected = 0
    for t, per_chain in enumerate(transitions):
        for c, evaluated in enumerate(per_chain):
            *rejected, (z_new, accepted) = evaluated
            assert_close(z_new, result.samples[c, t])
            assert_close(accepted, result.log_likelihoods[c, t])
            for _, value in rejected:
                assert value <= previous[c] and value < accepted
            n_rejected += len(rejected)
        previous = result.log_likelihoods[:, t]
    assert n_rejected == int(result.shrinks.sum()) > 0


def test_ess_burn_in_and_thin_keep_the_right_states():
    model = model_2d()
    record = []

    def log_likelihood(z):
        record.append((z.clone(), model.log_likelihood(z)))
        return record[-1][1]

    burn_in, thin, n_kept = 3, 2, 5
    g = torch.Generator().manual_seed(1)
    result = elliptical_slice_sampling(
        log_likelihood,
        1.5,
        torch.zeros(4, 2, dtype=DTYPE),
        n_kept,
        burn_in=burn_in,
        thin=thin,
        generator=g,
    )
    assert result.shrinks.shape == (4, burn_in + n_kept * thin)
    states = torch.stack(
        [
            torch.stack([ev[-1][0] for ev in per_chain])
            for per_chain in _replay(record, result.shrinks)
        ]
    )  # (n_steps, n_chains, k): the state after each transition
    kept = [burn_in + thin * (j + 1) - 1 for j in range(n_kept)]
    assert_close(result.samples, states[kept].transpose(0, 1))


def test_ess_reproducible_with_seed():
    a = _run_ess(model_2d(), seed=7, n_chains=3, n_kept=20)
    b = _run_ess(model_2d(), seed=7, n_chains=3, n_kept=20)
    c = _run_ess(model_2d(), seed=8, n_chains=3, n_kept=20)
    assert torch.equal(a.samples, b.samples) and torch.equal(a.shrinks, b.shrinks)
    assert a.n_evaluations == b.n_evaluations
    assert not torch.equal(a.samples, c.samples)


def test_ess_without_generator_runs_and_leaves_global_rng_alone():
    model = model_2d()
    result = elliptical_slice_sampling(
        model.log_likelihood, 1.5, torch.zeros(2, 2, dtype=DTYPE), 5
    )
    assert result.samples.shape == (2, 5, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ess_outputs_on_input_device_and_dtype(dtype):
    model = model_2d()

    def log_likelihood(z):
        return model.log_likelihood(z.double()).to(z.dtype)

    initial = torch.zeros(3, 2, dtype=dtype)
    result = elliptical_slice_sampling(
        log_likelihood, 1.5, initial, 4, generator=torch.Generator().manual_seed(0)
    )
    for t in (result.samples, result.log_likelihoods, result.shrinks):
        assert t.device == initial.device
    assert result.samples.dtype == result.log_likelihoods.dtype == dtype


def _ll2(z):
    return model_2d().log_likelihood(z)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(prior_scale=0.0), "prior_scale"),
        (dict(prior_scale=-1.0), "prior_scale"),
        (dict(prior_scale=float("nan")), "prior_scale"),
        (dict(prior_scale=[1.0, -1.0]), "prior_scale"),
        (dict(prior_scale=[1.0, 1.0, 1.0]), r"shape \(2,\)"),
        (dict(n_samples=0), "n_samples"),
        (dict(n_samples=2.5), "n_samples"),
        (dict(thin=0), "thin"),
        (dict(burn_in=-1), "burn_in"),
        (dict(max_shrinks=0), "max_shrinks"),
        (dict(initial=torch.zeros(2, dtype=DTYPE)), r"\(n_chains, k\)"),
        (dict(initial=torch.zeros(2, 2, dtype=torch.long)), "floating"),
        (dict(initial=torch.tensor([[0.0, math.nan]], dtype=DTYPE)), "NaN"),
        (dict(generator="0"), "torch.Generator"),
        (dict(log_likelihood=lambda z: torch.zeros(len(z), 1)), r"shape \(n,\)"),
        (dict(log_likelihood=lambda z: torch.full((len(z),), -math.inf)), "not finite"),
        (dict(log_likelihood=lambda z: torch.full((len(z),), math.nan)), "not finite"),
    ],
)
def test_ess_rejects_bad_input(kwargs, match):
    args = dict(
        log_likelihood=_ll2,
        prior_scale=1.0,
        initial=torch.zeros(2, 2, dtype=DTYPE),
        n_samples=3,
    )
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        elliptical_slice_sampling(**args)


def test_ess_non_finite_initial_names_the_chain():
    def log_likelihood(z):
        return torch.where(z[:, 0] > 0, -math.inf, 0.0)

    initial = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=DTYPE)
    with pytest.raises(ValueError, match=r"chain\(s\) \[1\]"):
        elliptical_slice_sampling(log_likelihood, 1.0, initial, 3)


def _finite_once(later):
    """A log-likelihood that is 0 on its first call and ``later`` on every call after."""
    calls = []

    def log_likelihood(z):
        calls.append(1)
        return torch.full((len(z),), 0.0 if len(calls) == 1 else later, dtype=z.dtype)

    return log_likelihood


@pytest.mark.parametrize(
    ("later", "match"), [(math.nan, "NaN or \\+inf"), (-1e30, "not deterministic")]
)
def test_ess_max_shrinks_raises_with_the_likely_cause(later, match):
    with pytest.raises(RuntimeError, match=match):
        elliptical_slice_sampling(
            _finite_once(later),
            1.0,
            torch.zeros(2, 2, dtype=DTYPE),
            3,
            max_shrinks=20,
            generator=torch.Generator().manual_seed(0),
        )


def test_ess_prior_only_recovers_the_prior():
    """A constant likelihood: every first proposal is accepted and z ~ N(0, σ²).

    Then z' = z cos θ + ν sin θ with θ ~ U[0, 2π]: corr(z, z') = E cos θ = 0 and
    corr(z², z'²) = 1/2 per step, so τ = 1 for the mean and exactly 3 for the variance.
    """
    sigma = torch.tensor([0.5, 2.0], dtype=DTYPE)

    def log_likelihood(z):
        return torch.zeros(len(z), dtype=z.dtype)

    g = torch.Generator().manual_seed(0)
    result = elliptical_slice_sampling(
        log_likelihood, sigma, torch.zeros(64, 2, dtype=DTYPE), 100, burn_in=20, generator=g
    )
    assert int(result.shrinks.max()) == 0
    assert result.n_evaluations == 1 + 120
    n = 64 * 100
    z = result.flat_samples
    assert torch.all(z.mean(0).abs() < N_SE * sigma * math.sqrt(1 / n))
    assert_close(z.std(0), sigma, rtol=N_SE * math.sqrt(3 / (2 * n)), atol=0)


# --------------------------------------------------------------------------- VI

VI_SETTINGS = dict(n_iterations=1000, n_mc=256, lr=0.02, dtype=DTYPE)


@pytest.fixture(
    scope="module", params=[(m, c) for m in sorted(MODELS) for c in ("full", "diagonal")]
)
def vi_run(request):
    name, covariance = request.param
    model = MODELS[name]()
    result = fit_gaussian_vi(
        model.log_likelihood,
        model.prior_scale,
        model.k,
        covariance=covariance,
        generator=torch.Generator().manual_seed(0),
        **VI_SETTINGS,
    )
    return model, covariance, result


def _kl_gaussians(m0, c0, m1, c1):
    """KL(N(m0, c0) || N(m1, c1)) in closed form."""
    p1 = torch.linalg.inv(c1)
    d = m1 - m0
    log_det = torch.logdet(c1) - torch.logdet(c0)
    return 0.5 * float(torch.trace(p1 @ c0) + d @ p1 @ d - len(m0) + log_det)


def test_vi_recovers_the_closed_form(vi_run):
    model, covariance, result = vi_run
    assert isinstance(result, GaussianVIResult) and result.covariance == covariance
    assert_close(result.mean, model.mean, atol=0.05, rtol=0)
    if covariance == "full":
        target = model.cov
    else:  # mean field: precision diagonal Λ_ii, no correlations
        target = torch.diag(1 / model.precision.diag())
        assert torch.count_nonzero(result.scale_tril - torch.diag(result.scale_tril.diag())) == 0
    assert_close(result.covariance_matrix, target, atol=0.03, rtol=0)
    assert torch.all(torch.tril(result.scale_tril) == result.scale_tril)
    assert torch.all(result.scale_tril.diag() > 0)


def test_vi_elbo_reaches_evidence_minus_gap(vi_run):
    """At the optimum the ELBO is log Z - KL(q* || posterior); it is 0 for "full"."""
    model, covariance, result = vi_run
    assert isinstance(result.elbo, np.ndarray) and result.elbo.shape == (1000,)
    q_cov = model.cov if covariance == "full" else torch.diag(1 / model.precision.diag())
    gap = _kl_gaussians(model.mean, q_cov, model.mean, model.cov)
    assert gap < 1e-12 if covariance == "full" else gap > 0.01
    final = result.elbo[-200:].mean()
    assert_allclose(final, model.log_evidence() - gap, atol=0.02)
    assert final > result.elbo[:10].mean()


def test_vi_sample_matches_fitted_gaussian(vi_run):
    _, _, result = vi_run
    n = 20000
    z = result.sample(n, torch.Generator().manual_seed(1))
    assert z.shape == (n, result.mean.shape[0]) and z.dtype == DTYPE
    cov = result.covariance_matrix
    sd = cov.diag().sqrt()
    assert torch.all((z.mean(0) - result.mean).abs() < N_SE * sd / math.sqrt(n))
    se = ((sd[:, None] ** 2 * sd[None, :] ** 2 + cov**2) / n).sqrt()
    assert torch.all((torch.cov(z.T) - cov).abs() < N_SE * se)
    again = result.sample(n, torch.Generator().manual_seed(1))
    assert torch.equal(z, again)
    assert result.sample(3).shape == (3, result.mean.shape[0])  # generator=None


def test_kl_to_prior_matches_torch_distributions():
    """The closed-form KL against torch's, for random full L and per-dimension σ."""
    g = torch.Generator().manual_seed(0)
    for k in (1, 2, 5):
        mean = torch.randn(k, generator=g, dtype=DTYPE)
        scale = torch.randn(k, k, generator=g, dtype=DTYPE).tril()
        scale.diagonal().copy_(torch.rand(k, generator=g, dtype=DTYPE) + 0.2)
        sigma = torch.rand(k, generator=g, dtype=DTYPE) * 2 + 0.1
        q = torch.distributions.MultivariateNormal(mean, scale_tril=scale)
        p = torch.distributions.MultivariateNormal(
            torch.zeros(k, dtype=DTYPE), torch.diag(sigma**2)
        )
        assert_close(_kl_to_prior(mean, scale, sigma), torch.distributions.kl_divergence(q, p))


def test_vi_reproducible_with_seed():
    model = model_2d()

    def fit(seed):
        return fit_gaussian_vi(
            model.log_likelihood,
            1.5,
            2,
            covariance="full",
            n_iterations=20,
            n_mc=4,
            generator=torch.Generator().manual_seed(seed),
            dtype=DTYPE,
        )

    a, b, c = fit(0), fit(0), fit(1)
    assert torch.equal(a.mean, b.mean) and torch.equal(a.scale_tril, b.scale_tril)
    assert np.array_equal(a.elbo, b.elbo)
    assert not torch.equal(a.mean, c.mean)


def test_vi_device_and_dtype_defaults():
    model = model_2d()

    def log_likelihood(z):
        return model.log_likelihood(z.double()).to(z.dtype)

    result = fit_gaussian_vi(log_likelihood, 1.5, 2, n_iterations=5)
    assert result.mean.device == torch.device("cpu") and result.mean.dtype == torch.float32
    assert result.scale_tril.shape == (2, 2) and not result.mean.requires_grad


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(covariance="low-rank"), "covariance"),
        (dict(k=0), "k must"),
        (dict(n_iterations=0), "n_iterations"),
        (dict(n_mc=0), "n_mc"),
        (dict(lr=0.0), "lr"),
        (dict(lr=True), "lr"),
        (dict(initial_scale=-0.1), "initial_scale"),
        (dict(prior_scale=0.0), "prior_scale"),
        (dict(prior_scale=[1.0, 2.0, 3.0]), "prior_scale"),
        (dict(log_likelihood=lambda z: z), r"shape \(n,\)"),
    ],
)
def test_vi_rejects_bad_input(kwargs, match):
    args = dict(log_likelihood=_ll2, prior_scale=1.0, k=2, n_iterations=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        fit_gaussian_vi(**args)


def test_vi_divergence_raises():
    def log_likelihood(z):
        return z.sum(-1) * math.nan

    with pytest.raises(RuntimeError, match="iteration 0"):
        fit_gaussian_vi(log_likelihood, 1.0, 2, n_iterations=3)


# --------------------------------------------------------------------------- GPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_samplers_on_gpu():
    model = model_2d(device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    initial = torch.zeros(N_CHAINS, 2, dtype=DTYPE, device="cuda")
    result = elliptical_slice_sampling(
        model.log_likelihood, 1.5, initial, 200, burn_in=BURN_IN, generator=g
    )
    for t in (result.samples, result.log_likelihoods, result.shrinks):
        assert t.device.type == "cuda"
    bound = N_SE * model.cov.diag().sqrt() * math.sqrt(model.tau_max / (N_CHAINS * 200))
    assert torch.all((result.flat_samples.mean(0) - model.mean).abs() < bound)
    vi = fit_gaussian_vi(
        model.log_likelihood,
        1.5,
        2,
        covariance="full",
        generator=g,
        device="cuda",
        **VI_SETTINGS,
    )
    assert vi.mean.device.type == "cuda" and vi.sample(4, g).device.type == "cuda"
    assert_close(vi.mean, model.mean, atol=0.05, rtol=0)
    with pytest.raises(ValueError, match="generator is on"):
        elliptical_slice_sampling(
            model.log_likelihood, 1.5, initial, 2, generator=torch.Generator()
        )
