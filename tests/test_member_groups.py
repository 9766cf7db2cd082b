"""Tests for members kept on the CPU and evaluated on the device in groups (``member_memory``).

The oracle throughout is the same members in an ordinary stack (``member_memory=None``, all
of them on the device): on a CPU the grouped path must give bit-identical outputs and
BatchNorm statistics, since every member's computation is the same and only the number of
members resident at a time changes.
"""

import copy
import pickle
import weakref

import pytest
import torch
from nets import MLP
from torch import nn
from torch.testing import assert_close

from simplexens.backends.batching import FLOAT64_OUTPUTS, bytes_per_row
from simplexens.backends.batchnorm import batchnorm_layers, recalibrate_batchnorm
from simplexens.backends.functional import ParameterStack, module_tensors
from simplexens.backends.parallel import private_rng
from simplexens.datasets import SmallCNN

S = 5
N_FEATURES = 6
N_CLASSES = 3
MiB = 2**20
EXACT = dict(rtol=0, atol=0)

pytestmark = pytest.mark.usefixtures("global_rng_untouched")


class BatchNormMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(N_FEATURES, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, N_CLASSES)
        )

    def forward(self, x):
        return self.net(x)


FACTORIES = {
    "mlp": lambda: MLP(N_FEATURES, N_CLASSES),
    "bn_mlp": BatchNormMLP,
    "cnn": lambda: SmallCNN(N_CLASSES, width=4, batchnorm=True),
}


def members(kind, n=S):
    """n modules with different weights and different, stale BatchNorm statistics."""
    out = []
    for seed in range(n):
        with private_rng(seed):
            module = FACTORIES[kind]()
        for i, layer in enumerate(batchnorm_layers(module).values()):
            with torch.no_grad():
                layer.running_mean.fill_(seed + i + 1.0)
                layer.running_var.fill_(2.0 + seed)
                layer.weight.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(seed))
        out.append(module.eval())
    return out


def inputs(kind, n=9, seed=7):
    g = torch.Generator().manual_seed(seed)
    if kind == "cnn":
        return torch.rand(n, 1, 8, 8, generator=g) * 2 - 0.5
    return torch.randn(n, N_FEATURES, generator=g) * 2 + 0.5


def member_mib(modules, factor):
    """A budget of ``factor`` members, in MiB."""
    one = sum(t.numel() * t.element_size() for t in module_tensors(modules[0]).values())
    return factor * one / MiB


def stacks(kind, per_group, n=S, **kwargs):
    """The same members in an ordinary stack and in one grouped by ``per_group``."""
    modules = members(kind, n)
    tensors = [module_tensors(m) for m in modules]
    plain = ParameterStack.from_members(copy.deepcopy(modules[0]), tensors, **kwargs)
    budget = member_mib(modules, per_group + 0.5)
    grouped = ParameterStack.from_members(
        copy.deepcopy(modules[0]), tensors, member_memory=budget, **kwargs
    )
    return plain, grouped


# --------------------------------------------------------------------------- groups


@pytest.mark.parametrize("per_group", [1, 2])
def test_groups_hold_what_the_budget_allows(per_group):
    plain, grouped = stacks("mlp", per_group)
    assert not plain.is_grouped and plain.resident_members == S
    assert grouped.is_grouped and grouped.resident_members == per_group
    expected = [slice(a, min(a + per_group, S)) for a in range(0, S, per_group)]
    assert grouped.groups() == expected
    assert plain.groups() == [slice(0, S)]
    assert grouped.storage == torch.device("cpu")
    assert grouped.device == plain.device


def test_a_budget_all_members_fit_in_is_the_ordinary_stack():
    modules = members("mlp")
    stack = ParameterStack.from_members(
        modules[0], [module_tensors(m) for m in modules], member_memory=member_mib(modules, S)
    )
    assert not stack.is_grouped
    assert stack.groups() == [slice(0, S)]


def test_a_member_over_the_budget_warns_and_goes_alone():
    modules = members("mlp")
    with pytest.warns(UserWarning, match="more than member_memory"):
        stack = ParameterStack.from_members(
            modules[0], [module_tensors(m) for m in modules], member_memory=1e-9
        )
    assert stack.resident_members == 1


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), True, "1"])
def test_bad_member_memory_is_refused(bad):
    modules = members("mlp", 2)
    with pytest.raises(ValueError, match="member_memory must be None or a positive number"):
        ParameterStack.from_members(
            modules[0], [module_tensors(m) for m in modules], member_memory=bad
        )


def test_each_group_is_released_before_the_next_is_made():
    _, grouped = stacks("mlp", 2)
    alive = []

    def fn(members, tensors):
        assert all(ref() is None for ref in alive), "a previous group is still alive"
        assert len({t.shape[0] for t in tensors.values()}) == 1
        alive.append(weakref.ref(next(iter(tensors.values()))))
        return members.stop - members.start

    assert grouped.map_groups(fn) == [2, 2, 1]


# --------------------------------------------------------------------------- forward


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("strategy", ["vmap", "loop", "auto"])
@pytest.mark.parametrize("per_group", [1, 2])
def test_grouped_forward_is_bit_identical(kind, strategy, per_group):
    plain, grouped = stacks(kind, per_group)
    x = inputs(kind)
    expected = plain.forward(x, strategy)
    assert (expected[0] - expected[1]).abs().max() > 1e-4  # members really differ
    assert_close(grouped.forward(x, strategy), expected, **EXACT)


def test_grouped_forward_matches_modules_one_by_one():
    modules = members("cnn")
    _, grouped = stacks("cnn", 2)
    x = inputs("cnn")
    with torch.no_grad():
        expected = torch.stack([m(x) for m in modules])
    assert_close(grouped.forward(x), expected, rtol=1e-5, atol=1e-6)


def test_grouped_vmap_failure_falls_back_to_the_loop():
    class ItemNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(N_FEATURES, N_CLASSES)

        def forward(self, x):
            return self.linear(x) / self.linear.weight.abs().sum().item()

    modules = []
    for seed in range(S):
        with private_rng(seed):
            modules.append(ItemNet())
    tensors = [module_tensors(m) for m in modules]
    budget = member_mib(modules, 2.5)
    grouped = ParameterStack.from_members(modules[0], tensors, member_memory=budget)
    x = inputs("mlp")
    with torch.no_grad():
        expected = torch.stack([m(x) for m in modules])
    with pytest.warns(RuntimeWarning, match="evaluating members one by one"):
        assert_close(grouped.forward(x, "vmap"), expected, **EXACT)
    assert grouped.choose_strategy(x) == "loop"


def test_member_gives_the_same_tensors():
    plain, grouped = stacks("cnn", 2)
    for i in range(S):
        mine, theirs = grouped.member(i), plain.member(i)
        assert mine.keys() == theirs.keys()
        for name in mine:
            assert mine[name].device == torch.device("cpu")
            assert_close(mine[name], theirs[name], **EXACT)
            assert_close(grouped.member(i, device="cpu")[name], theirs[name], **EXACT)


def test_replicas_of_a_grouped_stack_share_its_storage():
    plain, grouped = stacks("mlp", 2)
    replica = grouped.replicas()[3]
    for name, t in module_tensors(replica).items():
        assert t.data_ptr() == grouped.member(3)[name].data_ptr()
    x = inputs("mlp")
    with torch.no_grad():
        assert_close(replica(x), plain.forward(x, "loop")[3], **EXACT)


def test_pickled_grouped_stack_stays_grouped():
    plain, grouped = stacks("cnn", 2)
    restored = pickle.loads(pickle.dumps(grouped))
    assert restored.is_grouped and restored.resident_members == 2
    x = inputs("cnn")
    assert_close(restored.forward(x), plain.forward(x), **EXACT)


# --------------------------------------------------------------------------- BatchNorm


@pytest.mark.parametrize("kind", ["bn_mlp", "cnn"])
@pytest.mark.parametrize("per_group", [1, 2])
def test_grouped_recalibration_is_bit_identical(kind, per_group):
    plain, grouped = stacks(kind, per_group)
    batches = [inputs(kind, n=8, seed=s) for s in range(3)]
    assert recalibrate_batchnorm(plain, batches) == 3
    assert recalibrate_batchnorm(grouped, batches) == 3
    buffers = [n for n, _ in plain.template.named_buffers()]
    for name in buffers:
        assert grouped.tensors[name].device == torch.device("cpu")
        assert_close(grouped.tensors[name], plain.tensors[name], **EXACT)
    # the statistics really moved, and differ between members
    first = f"{next(iter(batchnorm_layers(plain.template)))}.running_mean"
    assert (plain.tensors[first] - members(kind)[0].get_buffer(first)).abs().max() > 0.1
    assert (plain.tensors[first][0] - plain.tensors[first][1]).abs().max() > 1e-3
    x = inputs(kind)
    assert_close(grouped.forward(x), plain.forward(x), **EXACT)


def test_grouped_recalibration_one_member_at_a_time():
    plain, _ = stacks("bn_mlp", 2)
    batches = [inputs("bn_mlp", n=8, seed=s) for s in range(2)]
    recalibrate_batchnorm(plain, batches)  # vmap
    plain_loop, grouped_loop = stacks("bn_mlp", 2)
    plain_loop.prefer_loop()
    grouped_loop.prefer_loop()
    recalibrate_batchnorm(grouped_loop, batches)
    recalibrate_batchnorm(plain_loop, batches)
    for name, t in plain_loop.tensors.items():
        assert_close(grouped_loop.tensors[name], t, **EXACT)
        assert_close(t, plain.tensors[name], rtol=1e-5, atol=1e-6)


class ItemBatchNormMLP(BatchNormMLP):
    """BatchNormMLP whose forward calls .item(), which vmap cannot batch."""

    def forward(self, x):
        return self.net(x) / (1 + 0 * self.net[0].weight.sum().item())


def test_grouped_recalibration_falls_back_to_the_loop_when_vmap_fails():
    modules = []
    for seed in range(S):
        with private_rng(seed):
            modules.append(ItemBatchNormMLP().eval())
    tensors = [module_tensors(m) for m in modules]
    plain = ParameterStack.from_members(copy.deepcopy(modules[0]), tensors)
    plain.prefer_loop()
    grouped = ParameterStack.from_members(
        copy.deepcopy(modules[0]), tensors, member_memory=member_mib(modules, 2.5)
    )
    batches = [inputs("bn_mlp", n=8, seed=s) for s in range(2)]
    assert grouped.choose_strategy(batches[0]) == "vmap"
    recalibrate_batchnorm(plain, batches)
    recalibrate_batchnorm(grouped, batches)
    assert grouped.choose_strategy(batches[0]) == "loop"
    for name, t in plain.tensors.items():
        assert_close(grouped.tensors[name], t, **EXACT)
    assert grouped.tensors["net.1.num_batches_tracked"].tolist() == [2] * S


def test_failed_grouped_recalibration_leaves_the_statistics():
    _, grouped = stacks("bn_mlp", 2)
    before = {n: t.clone() for n, t in grouped.tensors.items()}
    with pytest.raises(RuntimeError):
        recalibrate_batchnorm(grouped, [inputs("bn_mlp", n=4), torch.zeros(4, N_FEATURES + 1)])
    for name, t in before.items():
        assert_close(grouped.tensors[name], t, **EXACT)


# --------------------------------------------------------------------------- batching


def test_batch_sizing_counts_the_resident_group_only():
    _, grouped = stacks("mlp", 2)
    modules = members("mlp", 2)
    two = ParameterStack.from_members(modules[0], [module_tensors(m) for m in modules])
    row = inputs("mlp", n=1)
    float64 = N_CLASSES * 8 * FLOAT64_OUTPUTS  # per member and row: every member's output
    assert bytes_per_row(grouped, row) == bytes_per_row(two, row) + (S - 2) * float64


# --------------------------------------------------------------------------- CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_grouped_on_cuda_matches_the_cpu():
    plain, _ = stacks("cnn", 2)
    modules = members("cnn")
    grouped = ParameterStack.from_members(
        copy.deepcopy(modules[0]),
        [module_tensors(m) for m in modules],
        device="cuda",
        member_memory=member_mib(modules, 2.5),
    )
    assert grouped.device.type == "cuda" and grouped.storage.type == "cpu"
    assert grouped.is_grouped and all(t.is_pinned() for t in grouped.tensors.values())
    x = inputs("cnn")
    out = grouped.forward(x.cuda())
    assert out.device.type == "cuda"
    assert_close(out.cpu(), plain.forward(x), rtol=1e-4, atol=1e-4)
    batches = [inputs("cnn", n=8, seed=s) for s in range(3)]
    recalibrate_batchnorm(plain, batches)
    recalibrate_batchnorm(grouped, [b.cuda() for b in batches])
    for name, t in plain.tensors.items():
        assert grouped.tensors[name].device.type == "cpu"
        assert_close(grouped.tensors[name], t, rtol=1e-4, atol=1e-4)
    restored = pickle.loads(pickle.dumps(grouped))
    assert restored.is_grouped and restored.device.type == "cuda"
    assert_close(restored.forward(x.cuda()).cpu(), plain.forward(x), rtol=1e-4, atol=1e-4)
