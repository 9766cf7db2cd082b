"""Tests for simplexens.backends.modules: ModuleSpec.resolve / build and reinitialise."""

import functools
import re
import warnings

import pytest
import torch
from nets import MLP, FixedMLP, SmallCNN
from torch import nn
from torch.testing import assert_close

from simplexens.backends.modules import ModuleSpec, reinitialise
from simplexens.backends.parallel import private_rng

DATA = {"n_features_in": 64, "n_classes": 10}


pytestmark = pytest.mark.usefixtures("global_rng_untouched")


def _seeded(seed, factory):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def _snapshot(module):
    return {name: t.detach().clone() for name, t in module.state_dict().items()}


def _assert_same_state(actual, expected):
    assert set(actual) == set(expected)
    for name, value in expected.items():
        assert_close(actual[name], value, rtol=0, atol=0, msg=f"{name} differs")


def _random_names(module):
    """Parameters drawn at random by reset_parameters (BatchNorm's are constants)."""
    return [n for n, _ in module.named_parameters() if not n.startswith("features.1.")]


def _cnn_with_moved_state(seed=3):
    module = _seeded(seed, lambda: SmallCNN(n_classes=4))
    g = torch.Generator().manual_seed(seed)
    module.train()
    with torch.no_grad():
        for _ in range(3):
            module(torch.randn(8, 1, 8, 8, generator=g) * 2 + 1)
        module.features[1].weight.uniform_(2.0, 3.0, generator=g)
        module.features[1].bias.uniform_(1.0, 2.0, generator=g)
    return module.eval()


# --------------------------------------------------------------------------- resolve


def _factory_features(n_features_in, width=5):
    return nn.Linear(n_features_in, width)


def _factory_keyword_only(*, n_classes, n_features_in=3):
    return nn.Linear(n_features_in, n_classes)


def _factory_kwargs_only(**kwargs):
    return nn.Linear(2, 2)


def _make_int():
    return 3


@pytest.mark.parametrize(
    ("module", "user", "expected"),
    [
        # accepts both: both filled, user arguments kept
        (MLP, {"hidden": 4}, {"hidden": 4, "n_features_in": 64, "n_classes": 10}),
        # accepts neither: nothing added
        (FixedMLP, {"hidden": 4}, {"hidden": 4}),
        (nn.Linear, {"in_features": 2, "out_features": 3}, {"in_features": 2, "out_features": 3}),
        # accepts only n_classes
        (SmallCNN, {}, {"n_classes": 10}),
        # factories: positional-or-keyword and keyword-only arguments both count
        (_factory_features, {}, {"n_features_in": 64}),
        (_factory_keyword_only, {}, {"n_classes": 10, "n_features_in": 64}),
        # **kwargs does not name the data arguments, so nothing is filled
        (_factory_kwargs_only, {}, {}),
        # user-set values win
        (MLP, {"n_classes": 7}, {"n_classes": 7, "n_features_in": 64}),
        (MLP, {"n_features_in": 5, "n_classes": 2}, {"n_features_in": 5, "n_classes": 2}),
    ],
)
def test_resolve_fills_data_arguments(module, user, expected):
    user_before = dict(user)
    spec = ModuleSpec.resolve(module, user, **DATA)
    assert spec.module is module
    assert spec.kwargs == expected
    assert user == user_before  # the caller's dict is not modified


def test_resolve_then_build_sizes_module_from_data():
    spec = ModuleSpec.resolve(MLP, {"hidden": 7}, n_features_in=12, n_classes=5)
    module = _seeded(0, spec.build)
    assert isinstance(module, MLP)
    assert (module.net[1].in_features, module.net[1].out_features) == (12, 7)
    assert (module.net[3].in_features, module.net[3].out_features) == (7, 5)
    with torch.no_grad():
        assert module(torch.zeros(2, 12)).shape == (2, 5)


def test_resolve_instance_keeps_instance_and_no_arguments():
    instance = _seeded(0, lambda: MLP(3, 2))
    spec = ModuleSpec.resolve(instance, {}, **DATA)
    assert spec.module is instance
    assert spec.kwargs == {}


def test_build_from_class_under_same_seed_is_reproducible():
    spec = ModuleSpec.resolve(MLP, {}, **DATA)
    with private_rng(5):
        a = spec.build()
    with private_rng(5):
        b = spec.build()
    with private_rng(6):
        c = spec.build()
    assert a is not b
    _assert_same_state(_snapshot(a), _snapshot(b))
    for name in _random_names(a):
        assert not torch.equal(a.get_parameter(name), c.get_parameter(name)), name


# --------------------------------------------------------------------------- build on an instance


def test_build_instance_redraws_parameters_and_leaves_original():
    original = _cnn_with_moved_state()
    saved = _snapshot(original)
    spec = ModuleSpec.resolve(original, {}, **DATA)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every parameter is covered: no warning
        with private_rng(11):
            a = spec.build()
        with private_rng(11):
            b = spec.build()
        with private_rng(12):
            c = spec.build()

    # original untouched, and not aliased
    _assert_same_state(_snapshot(original), saved)
    assert a is not original
    for (name, p), q in zip(a.named_parameters(), original.parameters(), strict=True):
        assert p is not q
        assert p.data_ptr() != q.data_ptr(), name

    # randomly initialised parameters are re-drawn, and depend on the seed only
    _assert_same_state(_snapshot(a), _snapshot(b))
    for name in _random_names(original):
        assert not torch.equal(a.get_parameter(name), original.get_parameter(name)), name
        assert not torch.equal(a.get_parameter(name), c.get_parameter(name)), name

    # BatchNorm goes back to its closed-form initial state
    bn = a.features[1]
    assert_close(bn.weight.detach(), torch.ones(8))
    assert_close(bn.bias.detach(), torch.zeros(8))
    assert_close(bn.running_mean, torch.zeros(8))
    assert_close(bn.running_var, torch.ones(8))
    assert int(bn.num_batches_tracked) == 0


def test_build_instance_equals_fresh_construction_under_same_seed():
    # reset_parameters() runs in module order, as the constructor's initialisation does, so
    # re-initialising an instance under a seed gives the module the class builds under it.
    original = _cnn_with_moved_state()
    with private_rng(21):
        rebuilt = ModuleSpec.resolve(original, {}, **DATA).build()
    with private_rng(21):
        fresh = SmallCNN(n_classes=4)
    _assert_same_state(_snapshot(rebuilt), _snapshot(fresh))


def test_reinitialise_in_place():
    module = _seeded(0, lambda: MLP(4, 3))
    saved = _snapshot(module)
    with private_rng(1):
        reinitialise(module)
    expected = _seeded(1, lambda: MLP(4, 3))
    _assert_same_state(_snapshot(module), _snapshot(expected))
    assert not torch.equal(module.net[1].weight, saved["net.1.weight"])


class BareScale(nn.Module):
    """A linear layer times a bare parameter that no reset_parameters covers."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.scale = nn.Parameter(torch.full((2,), 2.5))

    def forward(self, x):
        return self.linear(x) * self.scale


class Wrapper(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = BareScale()


class ManyBare(nn.Module):
    def __init__(self):
        super().__init__()
        self.ps = nn.ParameterList([nn.Parameter(torch.full((1,), float(i))) for i in range(7)])


def test_build_warns_about_uncovered_parameter():
    original = _seeded(0, BareScale)
    spec = ModuleSpec.resolve(original, {}, **DATA)
    with (
        pytest.warns(UserWarning, match=r"no reset_parameters\(\) re-initialises \(scale\)"),
        private_rng(1),
    ):
        built = spec.build()
    # the uncovered parameter is copied, the covered ones are re-drawn
    assert_close(built.scale.detach(), torch.full((2,), 2.5), rtol=0, atol=0)
    assert not torch.equal(built.linear.weight, original.linear.weight)


def test_uncovered_parameter_warning_names_nested_parameter_and_caller():
    spec = ModuleSpec.resolve(_seeded(0, Wrapper), {}, **DATA)
    with pytest.warns(UserWarning, match=r"\(inner\.scale\)") as record, private_rng(1):
        spec.build()
    assert len(record) == 1
    assert record[0].filename == __file__  # stacklevel points at build()'s caller


def test_uncovered_parameter_warning_lists_at_most_five():
    expected = "(ps.0, ps.1, ps.2, ps.3, ps.4, ...)"
    with pytest.warns(UserWarning, match=re.escape(expected)) as record:
        ModuleSpec.resolve(ManyBare(), {}, **DATA).build()
    assert "ps.5" not in str(record[0].message)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("bad", [3, "MLP", None])
def test_resolve_rejects_non_callable(bad):
    with pytest.raises(
        TypeError,
        match=re.escape(
            "module must be an nn.Module subclass, a callable returning an nn.Module, or an "
            f"nn.Module instance; got {bad!r}."
        ),
    ):
        ModuleSpec.resolve(bad, {}, **DATA)


def test_resolve_rejects_arguments_for_instance():
    instance = _seeded(0, FixedMLP)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "module__* parameters (hidden, n_out) cannot be applied to a module instance "
            "(FixedMLP)"
        ),
    ):
        ModuleSpec.resolve(instance, {"n_out": 3, "hidden": 4}, **DATA)


def test_build_rejects_factory_returning_non_module():
    spec = ModuleSpec.resolve(_make_int, {}, **DATA)
    with pytest.raises(
        TypeError, match=re.escape("module factory _make_int returned int, not an nn.Module.")
    ):
        spec.build()


def test_build_reports_bad_keyword_with_module_name():
    spec = ModuleSpec.resolve(FixedMLP, {"bogus": 1}, **DATA)
    with pytest.raises(
        TypeError, match=re.escape("could not build module FixedMLP(bogus=1): ")
    ) as info:
        spec.build()
    assert "bogus" in str(info.value.__cause__)
    assert isinstance(info.value.__cause__, TypeError)


def test_build_reports_missing_argument_with_module_name():
    spec = ModuleSpec.resolve(SmallCNN, {"channels": 4}, **DATA)
    spec.kwargs.pop("n_classes")
    with pytest.raises(TypeError, match=re.escape("could not build module SmallCNN(channels=4)")):
        spec.build()


def test_arguments_bound_in_a_partial_count_as_set_by_the_user():
    factory = functools.partial(MLP, n_classes=5)
    spec = ModuleSpec.resolve(factory, {}, n_features_in=4, n_classes=3)
    assert spec.kwargs == {"n_features_in": 4}
    assert _seeded(0, spec.build).net[-1].out_features == 5
