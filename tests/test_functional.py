"""Tests for simplexens.backends.functional.ParameterStack against per-member forward passes.

The oracle throughout is ``torch.stack([m.eval()(x) for m in members])``: K ordinary modules,
evaluated one by one, that the stack must reproduce whatever strategy it uses.
"""

import copy
import pickle
import re
import warnings

import pytest
import torch
from nets import MLP, SmallCNN
from torch import nn
from torch.testing import assert_close

from simplexens.backends import functional
from simplexens.backends.functional import ParameterStack, module_tensors

K = 4
N_ROWS = 5
N_FEATURES = 6
N_CLASSES = 3


pytestmark = pytest.mark.usefixtures("global_rng_untouched")


# --------------------------------------------------------------------------- helpers


class TiedNet(nn.Module):
    """Two layers sharing one weight matrix."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(N_FEATURES, N_FEATURES)
        self.b = nn.Linear(N_FEATURES, N_FEATURES)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


class NonPersistentNet(nn.Module):
    """A linear layer scaled by a random non-persistent buffer."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(N_FEATURES, N_CLASSES)
        self.register_buffer("scale", torch.rand(N_CLASSES) + 0.5, persistent=False)

    def forward(self, x):
        return self.linear(x) * self.scale


class ItemNet(nn.Module):
    """A module whose forward calls .item(), which vmap cannot batch."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(N_FEATURES, N_CLASSES)

    def forward(self, x):
        norm = self.linear.weight.abs().sum().item()
        return self.linear(x) / norm


FACTORIES = {
    "mlp": lambda: MLP(N_FEATURES, N_CLASSES),
    "cnn": lambda: SmallCNN(N_CLASSES),
    "tied": TiedNet,
    "nonpersistent": NonPersistentNet,
    "item": ItemNet,
}


def _build(kind, seed):
    """One module of ``kind`` drawn from ``seed``, without touching torch's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = FACTORIES[kind]()
    if kind == "cnn":
        # Non-trivial, member-specific BatchNorm statistics: seed + 2 train-mode batches.
        g = torch.Generator().manual_seed(seed)
        module.train()
        with torch.no_grad():
            for _ in range(seed % 7 + 2):
                module(torch.randn(16, 1, 8, 8, generator=g) * 2 + 1)
        bn = module.features[1]
        assert (bn.running_var - 1).abs().max() > 0.05  # precondition: stats were moved
        assert (bn.running_mean).abs().max() > 0.05
    return module.eval()


def _members(kind):
    return [_build(kind, 100 + k) for k in range(K)]


def _inputs(kind, n=N_ROWS):
    g = torch.Generator().manual_seed(7)
    if kind == "cnn":
        return torch.randn(n, 1, 8, 8, generator=g)
    return torch.randn(n, N_FEATURES, generator=g)


def _oracle(members, x):
    with torch.no_grad():
        out = torch.stack([m.eval()(x) for m in members])
    # precondition: members really differ, so a stack that repeats one member cannot pass
    assert (out[0] - out[1]).abs().max() > 1e-4
    return out


def _stack(kind, members):
    """A stack whose template is a separate module with its own (unused) values."""
    return ParameterStack.from_members(_build(kind, 999), [module_tensors(m) for m in members])


def _all_eval(module):
    return [name for name, m in module.named_modules() if m.training]


# --------------------------------------------------------------------------- forward


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("strategy", ["vmap", "loop", "auto"])
def test_forward_matches_members(kind, strategy):
    members = _members(kind)
    x = _inputs(kind)
    expected = _oracle(members, x)
    stack = _stack(kind, members)
    out = stack.forward(x, strategy=strategy)
    assert out.shape == (K, N_ROWS, N_CLASSES)
    assert_close(out, expected)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_replicas_built_by_forward_work_outside_inference_mode(kind):
    # forward() runs under inference mode; replicas it builds on first use must still be
    # ordinary modules afterwards (regression: they used to hold inference tensors and fail
    # with "Inference tensors do not track version counter").
    members = _members(kind)
    x = _inputs(kind)
    expected = _oracle(members, x)
    stack = _stack(kind, members)
    assert_close(stack.forward(x, strategy="loop"), expected)
    replicas = stack.replicas()
    assert not any(t.is_inference() for r in replicas for t in module_tensors(r).values())
    with torch.no_grad():
        assert_close(torch.stack([r(x) for r in replicas]), expected)


def test_auto_above_threshold_uses_loop_on_fresh_stack(monkeypatch):
    members = _members("mlp")
    x = _inputs("mlp")
    expected = _oracle(members, x)
    stack = _stack("mlp", members)
    monkeypatch.setattr(functional, "VMAP_MAX_WORK", 0)
    assert_close(stack.forward(x), expected)


@pytest.mark.parametrize(("slack", "expected_path"), [(0, "vmap"), (-1, "loop")])
def test_auto_threshold_boundary(monkeypatch, slack, expected_path):
    members = _members("mlp")
    x = _inputs("mlp")
    expected = _oracle(members, x)
    stack = _stack("mlp", members)
    monkeypatch.setattr(functional, "VMAP_MAX_WORK", N_ROWS * stack.n_parameters + slack)
    calls = []
    real_vmap, real_replicas = stack._forward_vmap, stack.replicas
    monkeypatch.setattr(stack, "_forward_vmap", lambda b: calls.append("vmap") or real_vmap(b))
    monkeypatch.setattr(stack, "replicas", lambda: calls.append("loop") or real_replicas())
    out = stack.forward(x, strategy="auto")
    assert calls == [expected_path]
    assert_close(out, expected)


@pytest.mark.parametrize("kind", ["tied", "nonpersistent"])
@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_tied_weights_and_non_persistent_buffers(kind, strategy):
    members = _members(kind)
    x = _inputs(kind)
    expected = _oracle(members, x)
    stack = _stack(kind, members)
    if kind == "tied":
        assert "b.weight" not in stack.tensors  # stored once
    else:
        assert stack.tensors["scale"].shape == (K, N_CLASSES)
    assert_close(stack.forward(x, strategy=strategy), expected)


def test_tied_weights_stay_tied_in_replicas():
    members = _members("tied")
    stack = _stack("tied", members)
    for i, replica in enumerate(stack.replicas()):
        assert replica.a.weight is replica.b.weight
        assert replica.b.weight.data_ptr() == stack.tensors["a.weight"][i].data_ptr()
        assert_close(replica.b.weight.detach(), members[i].a.weight.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("strategy", ["vmap", "auto"])
def test_vmap_failure_falls_back_to_loop(strategy):
    members = _members("item")
    x = _inputs("item")
    expected = _oracle(members, x)
    stack = _stack("item", members)
    with pytest.warns(RuntimeWarning, match=r"vectorised evaluation failed \(.*\.item\(\)"):
        out = stack.forward(x, strategy=strategy)
    assert_close(out, expected)
    # The failure is remembered: "auto" now goes straight to the loop, without a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_close(stack.forward(x, strategy="auto"), expected)


def test_fallback_warning_points_at_caller():
    members = _members("item")
    stack = _stack("item", members)
    with pytest.warns(RuntimeWarning) as record:
        stack.forward(_inputs("item"), strategy="vmap")
    assert record[0].filename == __file__


# --------------------------------------------------------------------------- replicas, modes


def test_replicas_share_storage_with_the_stack():
    members = _members("mlp")
    x = _inputs("mlp")
    stack = _stack("mlp", members)
    replicas = stack.replicas()
    assert len(replicas) == K
    weight = stack.tensors["net.1.weight"]
    storage = weight.untyped_storage()
    low, high = storage.data_ptr(), storage.data_ptr() + storage.nbytes()
    for i, replica in enumerate(replicas):
        ptr = replica.net[1].weight.data_ptr()
        assert low <= ptr < high
        assert ptr == weight[i].data_ptr()

    with torch.no_grad():
        before = torch.stack([r(x) for r in replicas])
        stack.tensors["net.3.bias"][2] += 1.5  # in place, on the stack only
        after = torch.stack([r(x) for r in replicas])
    expected = before.clone()
    expected[2] += 1.5
    assert_close(after, expected)
    assert_close(stack.forward(x, strategy="vmap"), expected)


def test_template_and_replicas_are_in_eval_mode():
    members = _members("cnn")
    x = _inputs("cnn")
    expected = _oracle(members, x)
    template = _build("cnn", 999).train()
    stack = ParameterStack.from_members(template, [module_tensors(m) for m in members])
    assert _all_eval(stack.template) == []
    replicas = stack.replicas()
    assert all(_all_eval(r) == [] for r in replicas)
    for strategy in ("vmap", "loop", "auto"):
        assert_close(stack.forward(x, strategy=strategy), expected)
        assert _all_eval(stack.template) == []
        assert all(_all_eval(r) == [] for r in replicas)


def test_forward_stays_in_eval_mode_if_template_set_to_train():
    members = _members("cnn")
    x = _inputs("cnn")
    expected = _oracle(members, x)
    template = _build("cnn", 999)
    stack = ParameterStack.from_members(template, [module_tensors(m) for m in members])
    saved = {name: t.clone() for name, t in stack.tensors.items()}
    template.train()  # e.g. the caller goes on training the module it passed as template
    out = stack.forward(x, strategy="vmap")
    for name, t in stack.tensors.items():
        assert_close(t, saved[name], rtol=0, atol=0, msg=f"forward() modified {name}")
    assert_close(out, expected)


# --------------------------------------------------------------------------- attributes, pickle


N_PARAMETERS = {
    "mlp": (N_FEATURES * 16 + 16) + (16 * N_CLASSES + N_CLASSES),
    "cnn": (8 * 1 * 3 * 3 + 8) + (8 + 8) + (8 * 16 * N_CLASSES + N_CLASSES),
    "tied": N_FEATURES * N_FEATURES + 2 * N_FEATURES,
}


@pytest.mark.parametrize("kind", sorted(N_PARAMETERS))
def test_sizes(kind):
    members = _members(kind)
    stack = _stack(kind, members)
    assert stack.n_members == K
    assert stack.n_parameters == N_PARAMETERS[kind]
    assert stack.device == torch.device("cpu")


def test_member_returns_views_of_each_member():
    members = _members("cnn")
    stack = _stack("cnn", members)
    for i, member in enumerate(members):
        views = stack.member(i)
        original = module_tensors(member)
        assert set(views) == set(original)
        for name, view in views.items():
            assert view.data_ptr() == stack.tensors[name][i].data_ptr()
            assert_close(view, original[name], rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_pickle_round_trip(kind, strategy):
    members = _members(kind)
    x = _inputs(kind)
    expected = _oracle(members, x)
    stack = _stack(kind, members)
    stack.replicas()  # built replicas must not break pickling
    restored = pickle.loads(pickle.dumps(stack))
    assert restored.n_members == K
    assert restored.n_parameters == N_PARAMETERS[kind]
    assert set(restored.tensors) == set(stack.tensors)
    for name, t in stack.tensors.items():
        assert_close(restored.tensors[name], t, rtol=0, atol=0)
    assert_close(restored.forward(x, strategy=strategy), expected)
    # the original still works and does not share memory with the copy
    restored.tensors["net.3.bias" if kind == "mlp" else "head.bias"].add_(1.0)
    assert_close(stack.forward(x, strategy="vmap"), expected)


# --------------------------------------------------------------------------- constructor errors


def _stacked(kind="mlp"):
    members = _members(kind)
    names = module_tensors(members[0])
    return _build(kind, 999), {
        n: torch.stack([module_tensors(m)[n] for m in members]) for n in names
    }


def test_direct_construction_matches_members():
    template, tensors = _stacked("cnn")
    members = _members("cnn")
    x = _inputs("cnn")
    assert_close(ParameterStack(template, tensors).forward(x, "vmap"), _oracle(members, x))


def test_missing_tensor_raises():
    template, tensors = _stacked()
    del tensors["net.3.bias"]
    with pytest.raises(ValueError, match=re.escape("missing ['net.3.bias'], unexpected []")):
        ParameterStack(template, tensors)


def test_unexpected_tensor_raises():
    template, tensors = _stacked()
    tensors["bogus"] = torch.zeros(K, 2)
    with pytest.raises(ValueError, match=re.escape("missing [], unexpected ['bogus']")):
        ParameterStack(template, tensors)


def test_renamed_tensor_raises():
    template, tensors = _stacked()
    tensors["net.1.w"] = tensors.pop("net.1.weight")
    with pytest.raises(
        ValueError,
        match=re.escape(
            "stacked tensors do not match the module: missing ['net.1.weight'], "
            "unexpected ['net.1.w']"
        ),
    ):
        ParameterStack(template, tensors)


def test_inconsistent_member_counts_raise():
    template, tensors = _stacked()
    tensors["net.1.bias"] = tensors["net.1.bias"][:-1]
    with pytest.raises(
        ValueError, match=re.escape(f"disagree on the member count: [{K - 1}, {K}]")
    ):
        ParameterStack(template, tensors)


# --------------------------------------------------------------------------- CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_stack_matches_cpu_members_and_pickles():
    members = _members("cnn")
    x = _inputs("cnn")
    expected = _oracle(members, x)
    stack = ParameterStack.from_members(
        copy.deepcopy(members[0]), [module_tensors(m) for m in members], device="cuda"
    )
    assert stack.device.type == "cuda"
    assert_close(stack.forward(x.cuda(), "vmap").cpu(), expected, rtol=1e-4, atol=1e-4)
    restored = pickle.loads(pickle.dumps(stack))
    assert restored.device.type == "cuda"
    assert_close(restored.forward(x.cuda(), "vmap").cpu(), expected, rtol=1e-4, atol=1e-4)
