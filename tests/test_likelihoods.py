"""Tests for simplexens.backends.likelihoods against scipy, closed forms and a known noise."""

import math
import re

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from scipy import stats
from torch import nn
from torch.testing import assert_close

from simplexens.backends.functional import ParameterStack, module_tensors
from simplexens.backends.likelihoods import (
    DEFAULT_MIN_SCALE,
    LIKELIHOODS,
    GaussianNLLLoss,
    Homoscedastic,
    SquaredErrorLoss,
    criterion_for,
    output_width,
    raw_from_scale,
    scale_from_raw,
    split_output,
)

GAUSSIAN_WIDTH = "the module must output a mean and a scale per target: 2 × n_targets columns"

pytestmark = pytest.mark.usefixtures("global_rng_untouched")


def _gaussian_batch(seed, n_rows, n_targets, dtype=torch.float64):
    """Means, raw scales spanning softplus's curved and linear parts, and targets."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(n_rows, n_targets, generator=g, dtype=dtype) * 3
    raw = torch.randn(n_rows, n_targets, generator=g, dtype=dtype) * 2
    y = mean + torch.randn(n_rows, n_targets, generator=g, dtype=dtype) * 2
    return torch.cat([mean, raw], dim=1), y


def _scipy_nll_rows(output, y, min_scale=DEFAULT_MIN_SCALE):
    """-sum_t norm.logpdf per row, with numpy's own softplus (logaddexp(0, r))."""
    out, y = output.detach().numpy(), y.detach().numpy().reshape(len(output), -1)
    n_targets = y.shape[1]
    sigma = np.logaddexp(0.0, out[:, n_targets:]) + min_scale
    return -stats.norm.logpdf(y, loc=out[:, :n_targets], scale=sigma).sum(axis=1)


# ----------------------------------------------------------------- widths and criteria


def test_output_width_values():
    assert LIKELIHOODS == ("gaussian", "homoscedastic", "mse")
    assert [output_width("gaussian", t) for t in (1, 3)] == [2, 6]
    assert [output_width("homoscedastic", t) for t in (1, 3)] == [1, 3]
    assert [output_width("mse", t) for t in (1, 3)] == [1, 3]
    assert output_width("gaussian", np.int64(2)) == 4


@pytest.mark.parametrize("n_targets", [0, -1, 1.0, True, None])
def test_output_width_rejects_bad_n_targets(n_targets):
    with pytest.raises(ValueError, match="n_targets must be a positive integer"):
        output_width("gaussian", n_targets)


@pytest.mark.parametrize("likelihood", ["Gaussian", "nll", None])
def test_unknown_likelihood_is_named(likelihood):
    for call in (
        lambda: output_width(likelihood, 1),
        lambda: criterion_for(likelihood),
        lambda: split_output(torch.zeros(2, 2), likelihood, 1),
    ):
        with pytest.raises(ValueError, match=re.escape(f"one of {LIKELIHOODS}; got")):
            call()


def test_criterion_for():
    assert criterion_for("gaussian") is GaussianNLLLoss
    assert criterion_for("homoscedastic") is GaussianNLLLoss
    assert criterion_for("mse") is SquaredErrorLoss


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_squared_error_loss_against_mse_loss(reduction):
    """Per row: the mean over targets of torch's per-value squared error; reduced over rows
    as MSELoss reduces (its mean over all values equals the mean of the row means)."""
    generator = torch.Generator().manual_seed(0)
    output, y = torch.randn(6, 3, generator=generator), torch.randn(6, 3, generator=generator)
    per_value = nn.MSELoss(reduction="none")(output, y)
    expected = {"none": per_value.mean(1), "sum": per_value.mean(1).sum()}
    expected["mean"] = nn.MSELoss()(output, y)
    torch.testing.assert_close(SquaredErrorLoss(reduction)(output, y), expected[reduction])


def test_squared_error_loss_reads_1d_targets_as_one_column_and_checks_shapes():
    output = torch.tensor([[1.0], [3.0]])
    torch.testing.assert_close(
        SquaredErrorLoss("none")(output, torch.tensor([0.0, 1.0])), torch.tensor([1.0, 4.0])
    )
    with pytest.raises(ValueError, match="one mean per target"):
        SquaredErrorLoss()(torch.zeros(2, 2), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="reduction must be one of"):
        SquaredErrorLoss("max")


# ------------------------------------------------------------------------ the criterion


@pytest.mark.parametrize("n_targets", [1, 3])
def test_gaussian_nll_equals_scipy_logpdf(n_targets):
    output, y = _gaussian_batch(0, 64, n_targets)
    expected = _scipy_nll_rows(output, y)
    assert_allclose(GaussianNLLLoss(reduction="none")(output, y).numpy(), expected, rtol=1e-12)
    assert_allclose(float(GaussianNLLLoss()(output, y)), expected.mean(), rtol=1e-12)


def test_gaussian_nll_one_target_accepts_1d_y():
    output, y = _gaussian_batch(1, 20, 1)
    assert_close(GaussianNLLLoss()(output, y[:, 0]), GaussianNLLLoss()(output, y))
    expected = _scipy_nll_rows(output, y[:, 0])
    assert_allclose(GaussianNLLLoss(reduction="sum")(output, y[:, 0]), expected.sum())


def test_gaussian_nll_matches_torch_gaussian_nll_on_variances():
    """A second oracle: torch's loss on sigma^2, full=True, averages over the B T values."""
    output, y = _gaussian_batch(2, 50, 3)
    variance = scale_from_raw(output[:, 3:]) ** 2
    torch_loss = nn.GaussianNLLLoss(full=True, eps=1e-300)(output[:, :3], y, variance)
    assert_close(GaussianNLLLoss()(output, y), 3 * torch_loss, rtol=1e-12, atol=0)


def test_gaussian_nll_float32_and_min_scale():
    output, y = _gaussian_batch(3, 30, 2, dtype=torch.float32)
    loss = GaussianNLLLoss(min_scale=0.1, reduction="none")(output, y.double())
    assert loss.dtype == torch.float32
    assert_allclose(loss.numpy(), _scipy_nll_rows(output, y, min_scale=0.1), rtol=1e-5)


@pytest.mark.parametrize("n_targets", [1, 3])
def test_reductions_are_consistent(n_targets):
    output, y = _gaussian_batch(4, 17, n_targets)
    rows = GaussianNLLLoss(reduction="none")(output, y)
    assert rows.shape == (17,)
    assert_close(GaussianNLLLoss(reduction="mean")(output, y), rows.mean())
    assert_close(GaussianNLLLoss(reduction="sum")(output, y), rows.sum())


def test_gradient_matches_closed_form_and_is_finite():
    """d l / d mu = -(y - mu) / sigma^2, d l / d r = (1/sigma - (y - mu)^2 / sigma^3) sigmoid(r),
    and finite where softplus saturates (r = +-60) and for a residual of 1e4."""
    output, y = _gaussian_batch(5, 8, 2)
    output[0, 2:] = torch.tensor([-60.0, 60.0], dtype=torch.float64)
    y[1, 0] = output[1, 0] + 1e4
    output.requires_grad_(True)
    GaussianNLLLoss(reduction="sum")(output, y).backward()
    mean, raw = output.detach()[:, :2], output.detach()[:, 2:]
    sigma = torch.nn.functional.softplus(raw) + DEFAULT_MIN_SCALE
    resid = y - mean
    expected = torch.cat([-resid / sigma**2, (1 / sigma - resid**2 / sigma**3) * raw.sigmoid()], 1)
    assert torch.isfinite(output.grad).all()
    assert_close(output.grad, expected, rtol=1e-10, atol=0)


def test_gradcheck():
    output, y = _gaussian_batch(6, 5, 2)
    output.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda o: GaussianNLLLoss()(o, y), (output,))


def test_scale_is_at_least_the_floor():
    raw = torch.tensor([-1e4, -200.0, -30.0, 0.0, 30.0, 1e4])
    for floor in (1e-3, 0.5):
        sigma = scale_from_raw(raw, floor)
        assert (sigma >= floor).all()
        assert_close(sigma[:2], torch.full((2,), floor))
    assert_close(scale_from_raw(torch.tensor(0.0)), torch.tensor(math.log(2) + 1e-3))


def test_raw_from_scale_inverts_scale_from_raw():
    sigma = torch.tensor([0.0011, 0.01, 0.5, 1.0, 7.0, 100.0], dtype=torch.float64)
    raw = raw_from_scale(sigma)
    assert torch.isfinite(raw).all()
    assert_close(scale_from_raw(raw), sigma, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="greater than min_scale"):
        raw_from_scale(1e-3)


@pytest.mark.parametrize(
    ("output_shape", "y_shape", "n_targets"),
    [((4, 3), (4,), 1), ((4, 4), (4,), 1), ((4, 2), (4, 2), 2), ((4, 5), (4, 3), 3)],
)
def test_bad_width_is_a_clear_error(output_shape, y_shape, n_targets):
    message = f"{GAUSSIAN_WIDTH} (n_targets={n_targets}"
    with pytest.raises(ValueError, match=re.escape(message)):
        GaussianNLLLoss()(torch.zeros(output_shape), torch.zeros(y_shape))


def test_row_mismatch_is_an_error():
    with pytest.raises(ValueError, match="different rows"):
        GaussianNLLLoss()(torch.zeros(4, 2), torch.zeros(5, 1))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(reduction="batchmean"), "reduction must be one of"),
        (dict(min_scale=0.0), "min_scale must be a positive finite number"),
        (dict(min_scale=float("nan")), "min_scale must be a positive finite number"),
        (dict(min_scale="1e-3"), "min_scale must be a positive finite number"),
    ],
)
def test_bad_criterion_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GaussianNLLLoss(**kwargs)


# -------------------------------------------------------------------------- homoscedastic


def _seeded(seed, factory):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def test_homoscedastic_layout_and_state_dict():
    inner = _seeded(0, lambda: nn.Linear(4, 3))
    net = Homoscedastic(inner, n_targets=3)
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    out = net(x)
    assert out.shape == (6, 6)
    assert_close(out[:, :3], inner(x))
    assert_close(out[:, 3:], net.raw_scale.expand(6, 3))
    # sigma = 1 at initialisation, through the same transform the criterion uses
    means, stds = split_output(out, "homoscedastic", 3)
    assert_close(means, inner(x))
    assert_close(stds, torch.ones(6, 3))
    state = net.state_dict()
    assert set(state) == {"raw_scale", "module.weight", "module.bias"}
    assert state["raw_scale"].shape == (3,)
    assert dict(net.named_parameters())["raw_scale"] is net.raw_scale
    assert net.module is inner


def test_homoscedastic_reset_parameters_restores_unit_scale():
    net = Homoscedastic(nn.Identity(), n_targets=2, min_scale=0.2)
    with torch.no_grad():
        net.raw_scale.fill_(-3.0)
    net.reset_parameters()
    assert_close(scale_from_raw(net.raw_scale, 0.2), torch.ones(2))


def test_homoscedastic_rejects_wrong_module_width():
    net = Homoscedastic(nn.Identity(), n_targets=2)
    with pytest.raises(ValueError, match="one mean per target: n_targets columns"):
        net(torch.zeros(5, 3))


def test_homoscedastic_learns_known_noise():
    """y = 1.5 + 0.5 eps: maximum likelihood puts sigma at the residuals' sd (ddof=0)."""
    g = torch.Generator().manual_seed(0)
    n = 2000
    x = torch.randn(n, 2, generator=g)
    y = 1.5 + 0.5 * torch.randn(n, 1, generator=g)
    net = Homoscedastic(_seeded(1, lambda: nn.Linear(2, 1)), n_targets=1)
    criterion = GaussianNLLLoss()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(300):
        optimizer.zero_grad()
        criterion(net(x), y).backward()
        optimizer.step()
    with torch.no_grad():
        means, stds = split_output(net(x), "homoscedastic", 1)
    mle = float((y - means).std(correction=0))
    assert_allclose(float(stds[0, 0]), mle, rtol=0.01)
    assert_allclose(float(stds[0, 0]), 0.5, atol=0.03)
    # least squares with an intercept: the fitted means average to the targets' mean
    assert_allclose(float(means.mean()), float(y.mean()), atol=1e-3)


# ---------------------------------------------------------------------------- split_output


def test_split_output_on_member_stack():
    g = torch.Generator().manual_seed(7)
    output = torch.randn(4, 10, 6, generator=g)
    means, stds = split_output(output, "gaussian", 3, min_scale=0.01)
    assert means.shape == stds.shape == (4, 10, 3)
    for m in range(4):
        mean_m, std_m = split_output(output[m], "gaussian", 3, min_scale=0.01)
        assert_close(means[m], mean_m)
        assert_close(stds[m], std_m)
    assert_close(means, output[..., :3])
    expected = np.logaddexp(0.0, output[..., 3:].numpy()) + 0.01
    assert_allclose(stds.numpy(), expected, rtol=1e-6)


def test_split_output_mse_has_no_std():
    output = torch.randn(3, 5, 2, generator=torch.Generator().manual_seed(8))
    means, stds = split_output(output, "mse", 2)
    assert stds is None
    assert_close(means, output)


@pytest.mark.parametrize(
    ("likelihood", "width", "n_targets", "message"),
    [
        ("gaussian", 3, 2, GAUSSIAN_WIDTH),
        ("gaussian", 2, 2, GAUSSIAN_WIDTH),
        ("homoscedastic", 2, 2, GAUSSIAN_WIDTH),
        ("mse", 4, 2, "the module must output one mean per target: n_targets columns"),
    ],
)
def test_split_output_bad_width(likelihood, width, n_targets, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        split_output(torch.zeros(3, 5, width), likelihood, n_targets)


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_split_output_of_a_stack_of_homoscedastic_members(strategy):
    """Members differing in their learned noise: the stack's (M, B, 2T) output splits into
    each member's own means and scales (the oracle: each member run on its own)."""
    members = []
    for seed in range(3):
        member = Homoscedastic(_seeded(seed, lambda: nn.Linear(4, 2)), n_targets=2)
        with torch.no_grad():
            member.raw_scale.copy_(raw_from_scale(torch.tensor([0.2, 3.0]) * (seed + 1)))
        members.append(member.eval())
    stack = ParameterStack.from_members(members[0], [module_tensors(m) for m in members])
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        means, stds = split_output(stack.forward(x, strategy=strategy), "homoscedastic", 2)
        assert means.shape == stds.shape == (3, 5, 2)
        for m, member in enumerate(members):
            assert_close(means[m], member.module(x))
            assert_close(stds[m], (torch.tensor([0.2, 3.0]) * (m + 1)).expand(5, 2))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("criterion", [GaussianNLLLoss(), SquaredErrorLoss()], ids=type)
def test_half_precision_outputs_are_scored_in_float32(dtype, criterion):
    """Under autocast the module's output is half precision; the loss is the float32 loss of
    the same (rounded) output, not one computed in float16 (which overflows for a z-score
    above 256) or bfloat16 (which rounds the targets to three digits)."""
    width = 2 if isinstance(criterion, GaussianNLLLoss) else 1
    output = torch.tensor([[0.0, -20.0][:width], [1.5, 0.3][:width]], dtype=dtype)
    y = torch.tensor([0.5, 1.2345678])
    loss = criterion(output, y)
    assert loss.dtype == torch.float32
    assert_close(loss, criterion(output.float(), y))
    assert torch.isfinite(loss)
