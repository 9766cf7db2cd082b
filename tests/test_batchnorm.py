"""Tests for simplexens.backends.batchnorm.recalibrate_batchnorm.

The oracle is :func:`torch.optim.swa_utils.update_bn` run on one ordinary module per member
(loaded with that member's weights), or, where dropout must stay off, a hand-written
cumulative average with BatchNorm alone in training mode.
"""

import copy

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import update_bn
from torch.testing import assert_close

from simplexens.backends.batchnorm import batchnorm_layers, recalibrate_batchnorm
from simplexens.backends.functional import ParameterStack, module_tensors
from simplexens.backends.parallel import private_rng

S = 4
N_CLASSES = 3
STATS = ("running_mean", "running_var", "num_batches_tracked")
TOL = dict(rtol=1e-5, atol=1e-6)


pytestmark = pytest.mark.usefixtures("global_rng_untouched")


# --------------------------------------------------------------------------- helpers


class BNNet(nn.Module):
    """conv -> BN2d -> ReLU -> flatten -> linear -> (dropout) -> BN1d -> ReLU -> linear."""

    def __init__(self, channels=3, hidden=6, dropout=0.0, track_2d=True):
        super().__init__()
        self.conv = nn.Conv2d(1, channels, 3, padding=1)
        self.bn2d = nn.BatchNorm2d(channels, track_running_stats=track_2d)
        self.fc = nn.Linear(channels * 16, hidden)
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()
        self.bn1d = nn.BatchNorm1d(hidden)
        self.head = nn.Linear(hidden, N_CLASSES)

    def forward(self, x):
        h = torch.relu(self.bn2d(self.conv(x))).flatten(1)
        return self.head(torch.relu(self.bn1d(self.drop(self.fc(h)))))


def generator(seed):
    return torch.Generator().manual_seed(seed)


def members(n=S, **kwargs):
    """n modules with different weights, non-trivial affine BN parameters and stale stats."""
    out = []
    for seed in range(n):
        with private_rng(seed):
            module = BNNet(**kwargs)
        g = generator(100 + seed)
        with torch.no_grad():
            for bn in batchnorm_layers(module).values():
                bn.weight.copy_(1 + 0.3 * torch.randn(bn.weight.shape, generator=g))
                bn.bias.copy_(0.3 * torch.randn(bn.bias.shape, generator=g))
                bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=g))
                bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) + 2)
                bn.num_batches_tracked.fill_(17)
        out.append(module.eval())
    return out


def batches(sizes=(8, 8, 8, 3), seed=0):
    g = generator(seed)
    return [2 * torch.randn(n, 1, 4, 4, generator=g) + 0.5 for n in sizes]


def stack_of(modules):
    template = copy.deepcopy(modules[0])
    return ParameterStack.from_members(template, [module_tensors(m) for m in modules])


def updated_references(modules, data):
    """update_bn on a copy of each member, the oracle."""
    refs = []
    for module in modules:
        ref = copy.deepcopy(module)
        update_bn(data, ref)
        refs.append(ref.eval())
    return refs


def assert_stats_match(stack, refs):
    for i, ref in enumerate(refs):
        member = stack.member(i)
        for name in batchnorm_layers(ref):
            bn = ref.get_submodule(name)
            for stat in STATS:
                key = f"{name}.{stat}" if name else stat
                if stat == "num_batches_tracked":
                    assert torch.equal(member[key], bn.num_batches_tracked), key
                else:
                    assert_close(member[key], getattr(bn, stat), **TOL, msg=f"{i}: {key}")


# --------------------------------------------------------------------------- tests


def test_statistics_equal_update_bn_per_member():
    modules = members()
    data = batches()
    stack = stack_of(modules)
    seen = recalibrate_batchnorm(stack, data)
    assert seen == len(data)
    refs = updated_references(modules, data)
    assert_stats_match(stack, refs)
    for i in range(S):
        assert stack.member(i)["bn1d.num_batches_tracked"].item() == len(data)
    # The members really differ, so per-member statistics are being checked.
    assert not torch.allclose(
        stack.tensors["bn1d.running_mean"][0], stack.tensors["bn1d.running_mean"][1]
    )


def test_statistics_from_a_generator_of_batches():
    modules = members(n=2)
    data = batches(sizes=(5, 7, 2), seed=1)
    stack = stack_of(modules)
    assert recalibrate_batchnorm(stack, (x for x in data)) == 3
    assert_stats_match(stack, updated_references(modules, data))


def test_momentum_and_training_flags_are_restored():
    modules = members()
    stack = stack_of(modules)
    stack.template.bn2d.momentum = 0.3
    stack.template.bn1d.momentum = None
    recalibrate_batchnorm(stack, batches())
    assert stack.template.bn2d.momentum == 0.3
    assert stack.template.bn1d.momentum is None
    assert not any(m.training for m in stack.template.modules())


def test_training_flag_restored_when_template_was_in_train_mode():
    stack = stack_of(members(n=2))
    stack.template.bn1d.train()
    recalibrate_batchnorm(stack, batches())
    assert stack.template.bn1d.training
    assert not stack.template.bn2d.training


def test_module_without_batchnorm_returns_zero_and_is_untouched():
    with private_rng(0):
        modules = [nn.Sequential(nn.Flatten(), nn.Linear(16, 5), nn.ReLU()) for _ in range(3)]
    stack = ParameterStack.from_members(
        copy.deepcopy(modules[0]), [module_tensors(m) for m in modules]
    )
    before = {k: v.clone() for k, v in stack.tensors.items()}
    assert recalibrate_batchnorm(stack, batches()) == 0
    for name, t in stack.tensors.items():
        assert torch.equal(t, before[name]), name


def test_layers_without_running_stats_are_skipped():
    modules = members(track_2d=False)
    assert "bn2d.running_mean" not in module_tensors(modules[0])
    data = batches()
    stack = stack_of(modules)
    assert recalibrate_batchnorm(stack, data) == len(data)
    assert_stats_match(stack, updated_references(modules, data))
    x = batches(sizes=(6,), seed=9)[0]
    expected = torch.stack([ref(x) for ref in updated_references(modules, data)])
    assert_close(stack.forward(x, strategy="vmap"), expected, **TOL)


def test_no_batches_leaves_reset_statistics():
    stack = stack_of(members(n=2))
    assert recalibrate_batchnorm(stack, []) == 0
    assert torch.equal(stack.tensors["bn2d.running_mean"], torch.zeros(2, 3))
    assert torch.equal(stack.tensors["bn2d.running_var"], torch.ones(2, 3))
    assert torch.equal(stack.tensors["bn1d.num_batches_tracked"], torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_stack_forward_matches_recalibrated_references(strategy):
    modules = members()
    data = batches()
    stack = stack_of(modules)
    recalibrate_batchnorm(stack, data)
    refs = updated_references(modules, data)
    x = batches(sizes=(10,), seed=5)[0]
    with torch.no_grad():
        expected = torch.stack([ref(x) for ref in refs])
        stale = torch.stack([m(x) for m in modules])
    out = stack.forward(x, strategy=strategy)
    assert_close(out, expected, **TOL)
    # The recalibration changed the predictions (stale statistics give other outputs).
    assert (out - stale).abs().max() > 1e-2


def hand_recalibrated(module, data):
    """Dropout in eval mode, BN in train mode with a cumulative average."""
    model = copy.deepcopy(module).eval()
    for bn in batchnorm_layers(model).values():
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    with torch.no_grad():
        for x in data:
            model(x)
    return model.eval()


def test_dropout_stays_off_during_recalibration():
    modules = members(dropout=0.5)
    data = batches()
    stack = stack_of(modules)
    recalibrate_batchnorm(stack, data)
    refs = [hand_recalibrated(m, data) for m in modules]
    assert_stats_match(stack, refs)
    assert not stack.template.drop.training

    # The check discriminates: with dropout on (update_bn puts the whole module in train
    # mode) the BN1d statistics after the dropout come out different.
    with private_rng(0):
        noisy = updated_references(modules[:1], data)[0]
    assert not torch.allclose(
        noisy.bn1d.running_var, stack.tensors["bn1d.running_var"][0], rtol=1e-3, atol=1e-4
    )


def test_template_that_is_itself_a_batchnorm_layer():
    with private_rng(0):
        modules = [nn.BatchNorm1d(3) for _ in range(2)]
    with torch.no_grad():
        modules[1].weight.fill_(2.0)
    data = [torch.randn(6, 3, generator=generator(s)) for s in range(3)]
    stack = ParameterStack.from_members(
        copy.deepcopy(modules[0]), [module_tensors(m) for m in modules]
    )
    assert recalibrate_batchnorm(stack, data) == 3
    assert_stats_match(stack, updated_references(modules, data))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_statistics_on_cuda_match_cpu():
    modules = members(n=2)
    data = batches()
    cpu = stack_of(modules)
    recalibrate_batchnorm(cpu, data)
    gpu = ParameterStack.from_members(
        copy.deepcopy(modules[0]), [module_tensors(m) for m in modules], device="cuda"
    )
    recalibrate_batchnorm(gpu, [x.cuda() for x in data])
    for name, t in cpu.tensors.items():
        assert_close(gpu.tensors[name].cpu(), t, rtol=1e-4, atol=1e-5)
