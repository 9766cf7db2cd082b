"""Tests for mixed precision (``precision``) in training (MemberNet) and prediction (stacks).

Oracles: the recipe of :mod:`torch.amp` written out by hand (autocast around forward and
loss, ``GradScaler`` for float16) for the nets, which must give bit-identical weights; the
float32 path for the stacks and for training from the same seed, within tolerances derived
from bfloat16's 8 significant bits; float32 gradients for float16's loss scaling; the volume
term recomputed with autocast disabled.

float16 on the CPU: supported (torch 2.13 autocasts to float16 there), with the same
``GradScaler`` as on a GPU: the underflow of small gradients is float16's, not the device's.

Tolerances. bfloat16 rounds each product's inputs to 8 significant bits (relative error up
to 2**-9 = 0.2%); a few layers make logits wrong by a few tenths of a percent of their scale
(measured: 0.004 on logits of scale 1, 0.001 on probabilities), hence ``rtol=atol=2e-2`` on
one forward pass. Training adds the drift of the trajectories: after 5 epochs of SGD
(lr 0.5) on 300 digits, bfloat16's probabilities were within 0.015 of float32's (mean 7e-4),
hence 0.05 on the largest difference and 5e-3 on the mean.
"""

import copy

import numpy as np
import pytest
import torch
from nets import MLP
from skorch import NeuralNet
from skorch.callbacks import Callback
from torch import nn
from torch.testing import assert_close

from simplexens.backends.batching import FLOAT64_OUTPUTS, bytes_per_row
from simplexens.backends.batchnorm import recalibrate_batchnorm
from simplexens.backends.functional import ParameterStack, autocast, module_tensors
from simplexens.backends.parallel import private_rng
from simplexens.backends.rows import WeightedRows
from simplexens.backends.simplex import simplex_module
from simplexens.backends.skorch import AnchorNet, make_net
from simplexens.datasets import SmallCNN

pytestmark = pytest.mark.usefixtures("global_rng_untouched")

N_FEATURES, N_CLASSES, S = 64, 10, 4
LOW = {"bfloat16": torch.bfloat16, "float16": torch.float16}
EXACT = dict(rtol=0, atol=0)


def net_kwargs(precision="float32", **kwargs):
    base = dict(
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.SGD,
        lr=0.5,
        max_epochs=5,
        batch_size=64,
        train_split=None,
        verbose=0,
        device="cpu",
        precision=precision,
    )
    return {**base, **kwargs}


def mlp(seed=0, hidden=32):
    with private_rng(seed):
        return MLP(N_FEATURES, N_CLASSES, hidden=hidden)


def trained(precision, X, y, **kwargs):
    net = make_net(mlp(), net_kwargs(precision, **kwargs), seed=0)
    return net.fit(X, y)


# --------------------------------------------------------------------------- settings


def test_float32_is_no_autocast_and_the_others_are():
    with autocast("float32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    for name, dtype in LOW.items():
        with autocast(name, "cpu"):
            assert torch.is_autocast_enabled("cpu")
            assert torch.get_autocast_dtype("cpu") == dtype
    assert not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("bad", ["half", "fp16", None, torch.bfloat16])
def test_unknown_precisions_are_refused(bad, small_digits):
    with pytest.raises(ValueError, match="precision must be one of"):
        autocast(bad, "cpu")
    module = mlp()
    with pytest.raises(ValueError, match="precision must be one of"):
        ParameterStack.from_members(module, [module_tensors(module)], precision=bad)
    with pytest.raises(ValueError, match="precision must be one of"):
        make_net(mlp(), net_kwargs(bad), seed=0).fit(*small_digits)


def test_float32_net_trains_as_skorchs_own_net(small_digits):
    net = trained("float32", *small_digits, max_epochs=1, iterator_train__shuffle=False)
    assert net.grad_scaler_ is None
    kwargs = net_kwargs(max_epochs=1, iterator_train__shuffle=False)
    del kwargs["precision"]
    # a loader generator of its own, as make_net gives: the global RNG stays untouched
    kwargs["iterator_train__generator"] = torch.Generator().manual_seed(0)
    reference = NeuralNet(mlp(), **kwargs).fit(*small_digits)
    for name, t in net.module_.state_dict().items():
        assert_close(t, reference.module_.state_dict()[name], **EXACT)


# --------------------------------------------------------------------------- training


def amp_reference(precision, X, y, epochs, lr=0.5, batch_size=64):
    """The torch.amp recipe by hand, in skorch's order of batches (no shuffling)."""
    module = mlp()
    optimizer = torch.optim.SGD(module.parameters(), lr=lr)
    criterion = nn.CrossEntropyLoss()
    scaler = torch.amp.GradScaler("cpu") if precision == "float16" else None
    X, y = torch.as_tensor(X), torch.as_tensor(y)
    for _ in range(epochs):
        for start in range(0, len(X), batch_size):
            xb, yb = X[start : start + batch_size], y[start : start + batch_size]
            optimizer.zero_grad()
            module.train()
            with torch.autocast("cpu", dtype=LOW[precision]):
                loss = criterion(module(xb), yb)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
    return module


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_net_follows_the_torch_amp_recipe(precision, small_digits):
    X, y = small_digits
    net = trained(precision, X, y, max_epochs=2, iterator_train__shuffle=False)
    assert (net.grad_scaler_ is not None) == (precision == "float16")
    expected = amp_reference(precision, X, y, epochs=2)
    assert any(
        not torch.equal(t, mlp().state_dict()[n]) for n, t in net.module_.state_dict().items()
    )
    for name, t in net.module_.state_dict().items():
        assert t.dtype == torch.float32  # the parameters stay float32
        assert_close(t, expected.state_dict()[name], **EXACT)


def test_bfloat16_training_is_close_to_float32(small_digits, digits):
    X, y = small_digits
    X_test = digits[1][:200]
    # skorch's prediction loader would draw its seed from the global RNG without a generator
    reference = trained("float32", X, y, iterator_valid__generator=torch.Generator())
    net = trained("bfloat16", X, y, iterator_valid__generator=torch.Generator())
    losses = np.array(net.history[:, "train_loss"])
    assert np.isfinite(losses).all()
    assert (np.diff(losses) < 0).all() and losses[-1] < 0.75 * losses[0]
    assert_close(losses, np.array(reference.history[:, "train_loss"]), rtol=0.05, atol=0.02)
    proba, expected = net.predict_proba(X_test), reference.predict_proba(X_test)
    assert proba.dtype == np.float32  # cast back: numpy has no bfloat16
    assert np.abs(proba - expected).max() > 0  # bfloat16 really ran
    assert np.abs(proba - expected).max() < 0.05
    assert np.abs(proba - expected).mean() < 5e-3


def test_float16_on_the_cpu_trains_with_a_grad_scaler(small_digits):
    net = trained("float16", *small_digits)
    assert isinstance(net.grad_scaler_, torch.amp.GradScaler)
    assert net.grad_scaler_.get_scale() > 1  # the loss really is scaled
    losses = np.array(net.history[:, "train_loss"])
    assert np.isfinite(losses).all()
    assert (np.diff(losses) < 0).all() and losses[-1] < 0.75 * losses[0]


class GradNorms(Callback):
    def initialize(self):
        self.norms_ = []
        return self

    def on_grad_computed(self, net, named_parameters, **kwargs):
        grads = [p.grad for _, p in named_parameters]
        self.norms_.append(
            float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads])))
        )


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_callbacks_see_unscaled_gradients(precision, small_digits):
    norms = {}
    for name in ("float32", precision):
        kwargs = net_kwargs(name, max_epochs=1, callbacks=[("grad_norms", GradNorms())])
        net = make_net(mlp(), kwargs, seed=0).fit(*small_digits)
        norms[name] = np.array(dict(net.callbacks_)["grad_norms"].norms_)
    # float16's scale is 65536 at the first step: scaled gradients would be that much larger
    assert_close(norms[precision][:2], norms["float32"][:2], rtol=0.05, atol=0)


class SmallLoss(nn.CrossEntropyLoss):
    """Cross-entropy times 1e-4: the size of a loss late in training."""

    def forward(self, input, target):
        return super().forward(input, target) * 1e-4


class FirstGradient(Callback):
    def on_grad_computed(self, net, named_parameters, **kwargs):
        if not hasattr(self, "grad_"):
            self.grad_ = next(iter(named_parameters))[1].grad.clone()


def test_float16_gradients_do_not_underflow_on_the_cpu(small_digits):
    # Without loss scaling, 80% of this layer's float16 gradients are 0 (measured): the
    # scaler is needed on a CPU as on a GPU, float16's range being the format's.
    grads = {}
    for precision in ("float32", "float16"):
        kwargs = net_kwargs(
            precision, max_epochs=1, criterion=SmallLoss, callbacks=[("first", FirstGradient())]
        )
        net = make_net(mlp(), kwargs, seed=0).fit(*small_digits)
        grads[precision] = dict(net.callbacks_)["first"].grad_
    assert (grads["float32"] != 0).float().mean() > 0.5
    error = torch.linalg.vector_norm(grads["float16"] - grads["float32"])
    assert error < 0.02 * torch.linalg.vector_norm(grads["float32"])


def test_sample_weights_under_autocast(small_digits):
    X, y = small_digits
    weights = np.ones(len(X), dtype=np.float32)
    plain = trained("bfloat16", X, y, max_epochs=2, iterator_train__shuffle=False)
    weighted = make_net(
        mlp(),
        net_kwargs(
            "bfloat16", max_epochs=2, iterator_train__shuffle=False, criterion__reduction="none"
        ),
        seed=0,
    ).fit(WeightedRows(X, weights), y)
    for name, t in plain.module_.state_dict().items():
        assert_close(weighted.module_.state_dict()[name], t, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- volume term


def make_simplex(n_frozen=2):
    template = mlp(100, hidden=8)
    modes = [module_tensors(mlp(seed, hidden=8)) for seed in range(10, 10 + n_frozen + 1)]
    names = [n for n, _ in template.named_parameters()]
    frozen = {n: torch.stack([m[n] for m in modes[:-1]]) for n in names}
    start = {n: modes[-1][n] for n in names}
    generator = torch.Generator().manual_seed(0)
    return simplex_module(template, frozen, start, 3, generator)


def test_log_volumes_stay_float64_under_autocast():
    module = make_simplex()
    expected = module.log_volumes()
    (expected_grad,) = torch.autograd.grad(expected.sum(), module.trainable[0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        volumes = module.log_volumes()
        (grad,) = torch.autograd.grad(volumes.sum(), module.trainable[0])
    assert volumes.dtype == torch.float64
    assert_close(volumes, expected, **EXACT)
    assert_close(grad, expected_grad, **EXACT)


def test_anchor_net_loss_keeps_the_volume_term_float64_under_autocast(small_digits):
    module = make_simplex()
    net = make_net(
        module, net_kwargs("bfloat16"), seed=0, net_class=AnchorNet, volume_lambda=0.5
    ).initialize()
    seen = []
    log_volumes = module.log_volumes

    def spy():
        volumes = log_volumes()
        seen.append((torch.is_autocast_enabled("cpu"), volumes))
        return volumes

    module.log_volumes = spy
    g = torch.Generator().manual_seed(1)
    y_pred = torch.randn(16, N_CLASSES, generator=g)
    y_true = torch.as_tensor(small_digits[1][:16])
    net.on_epoch_begin(net)
    expected = nn.functional.cross_entropy(y_pred, y_true) - 0.5 * log_volumes().sum()
    with net._autocast():  # where train_step_single computes the loss
        loss = net.get_loss(y_pred.bfloat16(), y_true, training=True)
    (enabled, volumes), *_ = seen
    assert enabled and volumes.dtype == torch.float64
    assert_close(volumes, log_volumes(), **EXACT)
    assert loss.dtype == torch.float32
    # only the logits' rounding to bfloat16 separates it from the float32 loss
    assert_close(loss, expected.float(), rtol=1e-2, atol=1e-2)


def test_anchor_net_trains_in_bfloat16_with_a_float64_volume_term(small_digits):
    module = make_simplex()
    seen = []
    log_volumes = module.log_volumes

    def spy():
        volumes = log_volumes()
        with torch.autocast("cpu", enabled=False):
            reference = log_volumes().detach()
        seen.append((torch.is_autocast_enabled("cpu"), volumes.dtype, volumes.detach(), reference))
        return volumes

    module.log_volumes = spy
    kwargs = net_kwargs("bfloat16", max_epochs=1, lr=0.05)
    net = make_net(module, kwargs, seed=0, net_class=AnchorNet, volume_lambda=0.5)
    net.fit(*small_digits)
    assert np.isfinite(net.history[-1, "train_loss"])
    assert len(seen) >= 5
    for enabled, dtype, volumes, reference in seen:
        assert enabled  # it ran inside the autocast region
        assert dtype == torch.float64
        assert_close(volumes, reference, **EXACT)


# --------------------------------------------------------------------------- prediction


def stack_of(kind, precision="float32", **kwargs):
    modules = []
    for seed in range(S):
        with private_rng(seed):
            modules.append(
                MLP(N_FEATURES, N_CLASSES)
                if kind == "mlp"
                else SmallCNN(N_CLASSES, batchnorm=True)
            )
    return ParameterStack.from_members(
        copy.deepcopy(modules[0]),
        [module_tensors(m) for m in modules],
        precision=precision,
        **kwargs,
    )


def inputs(kind, n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    if kind == "cnn":
        return torch.rand(n, 1, 8, 8, generator=g)
    return torch.rand(n, N_FEATURES, generator=g)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_stack_forward_in_bfloat16_is_close_to_float32(kind, strategy):
    stack = stack_of(kind)
    x = inputs(kind)
    expected = stack.forward(x, strategy)
    out = stack.forward(x, strategy, precision="bfloat16")
    assert out.dtype == torch.float32
    assert not torch.equal(out, expected)  # bfloat16 really ran
    assert_close(out, expected, rtol=2e-2, atol=2e-2)
    # the stack's own setting is forward's default
    assert_close(stack_of(kind, "bfloat16").forward(x, strategy), out, **EXACT)


def test_grouped_stack_in_bfloat16_matches_the_ordinary_one():
    stack = stack_of("cnn", "bfloat16")
    one = sum(t[0].numel() * t.element_size() for t in stack.tensors.values())
    grouped = stack_of("cnn", "bfloat16", member_memory=1.5 * one / 2**20)
    assert grouped.is_grouped
    x = inputs("cnn")
    assert_close(grouped.forward(x), stack.forward(x), **EXACT)


def test_recalibration_in_bfloat16_keeps_float32_statistics():
    stack, low = stack_of("cnn"), stack_of("cnn", "bfloat16")
    batches = [inputs("cnn", n=16, seed=s) for s in range(3)]
    recalibrate_batchnorm(stack, batches)
    recalibrate_batchnorm(low, batches)
    for name, t in stack.tensors.items():
        assert low.tensors[name].dtype == t.dtype
        assert_close(low.tensors[name], t, rtol=2e-2, atol=2e-2)
    assert not torch.equal(
        low.tensors["features.0.1.running_mean"], stack.tensors["features.0.1.running_mean"]
    )


def test_batch_sizing_counts_bfloat16_activations_at_two_bytes():
    row = inputs("mlp", n=1)
    fixed = row.numel() * row.element_size() + S * N_CLASSES * 8 * FLOAT64_OUTPUTS
    full = bytes_per_row(stack_of("mlp"), row) - fixed
    half = bytes_per_row(stack_of("mlp", "bfloat16"), row) - fixed
    assert full > 0 and half * 2 == full
