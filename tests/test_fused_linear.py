"""Tests for simplexens.backends.fused_linear and the choice of path in AnchorModule.

Oracles: ``F.linear`` called chunk by chunk at explicitly summed points (autograd through
the sum gives the new vertex's gradient), ``torch.autograd.gradcheck`` in float64, and the
generic vmap path of :class:`AnchorModule` (built by ``simplex_module``) on the same sampled
weights. Here the newest vertex is the only trainable anchor: ``ChunkedLinear`` gets it as a
stack of one, ``vertex_w[None]`` of shape (1, out, in) and ``vertex_b[None]`` of shape (1, out).
"""

import pickle
from unittest import mock

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.testing import assert_close

from simplexens.backends.fused_linear import ChunkedLinear
from simplexens.backends.parallel import private_rng
from simplexens.backends.simplex import simplex_module
from simplexens.geometry.simplex import sample_barycentric

pytestmark = pytest.mark.usefixtures("global_rng_untouched")


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def layer(m=3, k=2, n_in=4, n_out=5, rows=2, extra=(), bias=True, dtype=torch.float32):
    """Inputs of ChunkedLinear: x (m * rows, *extra, n_in), weights, frozen and new vertex."""
    x = randn(m * rows, *extra, n_in, seed=1, dtype=dtype)
    weights = sample_barycentric(m, k + 1, generator=torch.Generator().manual_seed(2))
    weights = weights.to(dtype)
    frozen_w, vertex_w = randn(k, n_out, n_in, seed=3, dtype=dtype), randn(n_out, n_in, seed=4)
    frozen_b, vertex_b = randn(k, n_out, seed=5, dtype=dtype), randn(n_out, seed=6)
    if not bias:
        frozen_b = vertex_b = None
    return (
        x,
        weights,
        frozen_w,
        vertex_w.to(dtype),
        frozen_b,
        None if not bias else vertex_b.to(dtype),
    )


def chunked_linear(x, weights, frozen_w, vertex_w, frozen_b, vertex_b):
    """ChunkedLinear with the new vertex as its single trainable anchor (a stack of one)."""
    trainable_b = None if vertex_b is None else vertex_b[None]
    return ChunkedLinear.apply(x, weights, frozen_w, vertex_w[None], frozen_b, trainable_b)


def loop_linear(x, weights, frozen_w, vertex_w, frozen_b, vertex_b):
    """Chunk i through F.linear at point i = sum_j weights[i, j] * vertex j, by hand."""
    m, k = weights.shape[0], frozen_w.shape[0]
    outs = []
    for i, chunk in enumerate(x.chunk(m)):
        w = sum(weights[i, j] * frozen_w[j] for j in range(k)) + weights[i, k] * vertex_w
        b = None
        if vertex_b is not None:
            b = sum(weights[i, j] * frozen_b[j] for j in range(k)) + weights[i, k] * vertex_b
        outs.append(F.linear(chunk, w, b))
    return torch.cat(outs)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(("m", "k", "extra"), [(1, 1, ()), (3, 2, ()), (5, 3, ()), (2, 1, (3,))])
def test_chunked_linear_output_and_gradients_equal_a_loop(m, k, extra, bias):
    x, weights, frozen_w, vertex_w, frozen_b, vertex_b = layer(m, k, extra=extra, bias=bias)
    x.requires_grad_(True)
    vertex_w.requires_grad_(True)
    if bias:
        vertex_b.requires_grad_(True)
    target = randn(*x.shape[:-1], 5, seed=7)

    out = chunked_linear(x, weights, frozen_w, vertex_w, frozen_b, vertex_b)
    grads = torch.autograd.grad((out * target).sum(), [x, vertex_w, *([vertex_b] * bias)])
    expected = loop_linear(x, weights, frozen_w, vertex_w, frozen_b, vertex_b)
    expected_grads = torch.autograd.grad(
        (expected * target).sum(), [x, vertex_w, *([vertex_b] * bias)]
    )

    assert out.shape == (*x.shape[:-1], 5)
    assert_close(out, expected)
    for got, want in zip(grads, expected_grads, strict=True):
        assert want.abs().sum() > 0
        assert_close(got, want)


def test_chunked_linear_gradcheck():
    x, weights, frozen_w, vertex_w, frozen_b, vertex_b = layer(dtype=torch.float64)
    inputs = (
        x.requires_grad_(True),
        weights,
        frozen_w,
        vertex_w.requires_grad_(True),
        frozen_b,
        vertex_b.requires_grad_(True),
    )
    assert torch.autograd.gradcheck(chunked_linear, inputs)


@pytest.mark.parametrize("needs_input_grad", [False, True])
def test_chunked_linear_computes_the_input_gradient_only_when_needed(needs_input_grad):
    x, weights, frozen_w, vertex_w, frozen_b, vertex_b = layer()
    x.requires_grad_(needs_input_grad)
    vertex_w.requires_grad_(True)
    out = chunked_linear(x, weights, frozen_w, vertex_w, frozen_b, vertex_b)
    # With a bias the forward pass uses baddbmm; bmm is the input gradient's product alone.
    with mock.patch("torch.bmm", wraps=torch.bmm) as bmm:
        out.sum().backward()
    assert bmm.call_count == int(needs_input_grad)
    assert vertex_w.grad is not None


# --------------------------------------------------------------------------- path choice


class RowMixing(nn.Module):
    """Linear layers, but each row is centred on the batch mean: rows interact."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(5, 6), nn.Linear(6, 3)

    def forward(self, x):
        h = self.a(x)
        return self.b(h - h.mean(dim=0))


class BareMatmul(nn.Module):
    """A parameter used through ``@`` instead of a linear layer."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(5, 3))

    def forward(self, x):
        return x @ self.w


class SequenceFirst(nn.Module):
    """Linear layers on a (time, batch, feature) view of a (batch, time, feature) input."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(5, 3)

    def forward(self, x):
        return self.a(x.transpose(0, 1)).transpose(0, 1).sum(dim=1)


class KeywordLinear(nn.Module):
    """Calls F.linear with keyword arguments."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(5, 3)

    def forward(self, x):
        return F.linear(input=x, weight=self.a.weight, bias=self.a.bias)


class TrainOnlyRowMixing(RowMixing):
    """Rows interact in training mode only."""

    def forward(self, x):
        h = self.a(x)
        if self.training:
            h = h - h.mean(dim=0)
        return self.b(h)


class FlattenTime(nn.Module):
    """Folds a time axis into the batch: fine for one time step, not for more."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(5, 3)

    def forward(self, x):
        return self.a(x.reshape(-1, 5)).reshape(x.shape[0], -1)


def mlp(dropout=0.0, batchnorm=False):
    layers = [nn.Linear(5, 6), nn.ReLU(), nn.Dropout(dropout)]
    if batchnorm:
        layers.append(nn.BatchNorm1d(6))
    return nn.Sequential(*layers, nn.Linear(6, 3))


def conv():
    return nn.Sequential(
        nn.Unflatten(1, (1, 5)), nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(6, 3)
    )


def simplex_over(make, n_frozen=2, freeze=()):
    with private_rng(0):
        template = make()
        frozen = {}
        for name, p in template.named_parameters():
            if name not in freeze:
                noise = [0.1 * torch.randn_like(p) for _ in range(n_frozen)]
                frozen[name] = torch.stack([p.detach() + e for e in noise])
        start = {name: t[0] + 0.1 * torch.randn_like(t[0]) for name, t in frozen.items()}
    for name, p in template.named_parameters():
        p.requires_grad_(name not in freeze)
    return simplex_module(template, frozen, start, 4, torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("make", "freeze", "expected"),
    [
        (mlp, (), True),
        (lambda: mlp(dropout=0.5), (), True),
        (lambda: mlp(batchnorm=True), (), False),  # per-chunk BatchNorm statistics
        (conv, (), False),  # a convolution on a parameter
        (RowMixing, (), False),  # caught by comparing both paths
        (TrainOnlyRowMixing, (), False),  # caught in training mode
        (KeywordLinear, (), True),
        (BareMatmul, (), False),  # a parameter outside F.linear
        (mlp, ("0.bias",), False),  # a frozen bias next to a trainable weight
        (mlp, ("0.weight", "0.bias"), True),  # a layer frozen whole is ordinary code
    ],
    ids=[
        "mlp",
        "dropout",
        "batchnorm",
        "conv",
        "row-mixing",
        "train-row-mixing",
        "keywords",
        "matmul",
        "frozen-bias",
        "frozen",
    ],
)
def test_simplex_module_chooses_the_fused_path_only_when_it_is_exact(make, freeze, expected):
    module = simplex_over(make, freeze=freeze)
    module.train()
    with private_rng(1):  # dropout draws from torch's global generator
        out = module(randn(8, 5, seed=1))
    assert module.fused is expected
    assert module.template.training  # the comparison ran in eval mode and restored it
    assert out.shape == (8, 3)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("n", [8, 4])  # 4: as many rows as the time axis
def test_simplex_module_batch_not_first_takes_the_generic_path(n):
    module = simplex_over(SequenceFirst)
    out = module(randn(n, 4, 5, seed=1))
    assert module.fused is False
    assert out.shape == (n, 3)


def test_fused_and_generic_paths_agree_in_training_mode_without_dropout():
    fused, generic = simplex_over(mlp), simplex_over(mlp)
    generic.fused = False
    x, y = randn(10, 5, seed=1), torch.arange(10) % 3
    for module in (fused, generic):
        module.train()
        loss = F.cross_entropy(module(x), y) - 0.1 * module.log_volume()
        loss.backward()
    assert fused.fused is True
    assert_close(F.cross_entropy(fused(x), y), F.cross_entropy(generic(x), y))
    for a, b in zip(fused.trainable, generic.trainable, strict=True):
        assert_close(a.grad, b.grad)


def test_the_choice_waits_for_a_batch_with_two_points():
    module = simplex_over(RowMixing)
    module(randn(3, 5, seed=1))  # one point: both paths are the same, nothing to compare
    assert module.fused is None
    module(randn(16, 5, seed=2))
    assert module.fused is False


def test_a_later_batch_the_fused_path_refuses_goes_the_generic_way():
    module = simplex_over(FlattenTime)
    module(randn(8, 1, 5, seed=1))
    assert module.fused is True
    x = randn(8, 4, 5, seed=2)
    clone = torch.Generator().set_state(module.generator.get_state())
    out = module(x)
    assert module.fused is False
    generic = simplex_over(FlattenTime)
    generic.fused = False
    generic.generator = clone
    assert_close(out, generic(x))


def test_keyword_linear_matches_the_generic_path():
    fused, generic = simplex_over(KeywordLinear), simplex_over(KeywordLinear)
    generic.fused = False
    x = randn(10, 5, seed=1)
    assert_close(fused(x), generic(x))
    assert fused.fused is True


def test_simplex_module_pickles_after_choosing_a_path():
    module = simplex_over(mlp)
    x = randn(8, 5, seed=1)
    module(x)
    copy = pickle.loads(pickle.dumps(module))
    assert copy.fused is True
    assert_close(copy.log_volume(), module.log_volume())
    state = torch.Generator().set_state(module.generator.get_state())
    copy.generator = state
    assert_close(copy(x), module(x))
