"""Tests for simplexens._init_modes.resolve_init_modes: trained networks to start from.

The oracle throughout is the source itself: every accepted form must give, for each name of
the template, a tensor equal (``torch.equal``) to the one the user passed, as a fresh copy.
"""

import numpy as np
import pytest
import torch
from nets import MLP, BatchNormMLP
from sklearn.exceptions import NotFittedError
from torch import nn

from simplexens._init_modes import resolve_init_modes
from simplexens.backends.functional import ParameterStack, module_tensors

pytestmark = pytest.mark.usefixtures("global_rng_untouched")


# --------------------------------------------------------------------------- helpers


def build(cls, seed, *args, **kwargs):
    """A module with seeded weights, leaving torch's global random state alone."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return cls(*args, **kwargs)


def mlp(seed=0, n_features_in=4):
    return build(MLP, seed, n_features_in=n_features_in, n_classes=3)


def resolve(init_modes, template=None, expected=None):
    template = mlp(99) if template is None else template
    return resolve_init_modes(
        init_modes, template, expected=expected, count_name="n_modes", owner="SimplexClassifier"
    )


def snapshot(tensors):
    return {name: t.detach().clone() for name, t in tensors.items()}


def assert_bit_identical(tensors, before):
    assert set(tensors) == set(before)
    for name, t in tensors.items():
        assert t.dtype == before[name].dtype
        assert torch.equal(t, before[name]), name


class FittedFake:
    """Stands for a fitted estimator: its modes are views into a stack, as members are."""

    def __init__(self, modules):
        self.stack = ParameterStack.from_members(
            mlp(99), [module_tensors(m) for m in modules], device="cpu"
        )

    def _init_mode_tensors(self):
        return [self.stack.member(i) for i in range(self.stack.n_members)]


class UnfittedFake:
    def _init_mode_tensors(self):
        raise NotFittedError("This UnfittedFake instance is not fitted yet.")


class Scaled(nn.Module):
    """A linear layer with a non-persistent buffer, which state_dict() leaves out."""

    def __init__(self, scale=2.0):
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.register_buffer("scale", torch.full((2,), scale), persistent=False)

    def forward(self, x):
        return self.linear(x) * self.scale


class Tied(nn.Module):
    """Two layers sharing one weight: state_dict() names it twice, module_tensors once."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(4, 4, bias=False)
        self.decoder = nn.Linear(4, 4, bias=False)
        self.decoder.weight = self.encoder.weight

    def forward(self, x):
        return self.decoder(self.encoder(x))


class Wrapper(nn.Module):
    """Names everything "module.<name>", as DataParallel does."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x)


# --------------------------------------------------------------------------- accepted forms


def _forms():
    """(form name, init_modes, the sources' tensors)."""
    a, b = mlp(1), mlp(2)
    tensors = [module_tensors(a), module_tensors(b)]
    return {
        "list of modules": ([a, b], tensors),
        "tuple of modules": ((a, b), tensors),
        "ModuleList": (nn.ModuleList([a, b]), tensors),
        "list of state dicts": ([a.state_dict(), b.state_dict()], tensors),
        "mixed list": ([a, b.state_dict()], tensors),
        "single module": (a, tensors[:1]),
        "single state dict": (a.state_dict(), tensors[:1]),
        "fitted estimator": (FittedFake([a, b]), tensors),
    }


@pytest.mark.parametrize("form", list(_forms()))
def test_each_form_gives_the_source_tensors(form):
    init_modes, expected = _forms()[form]
    template = mlp(99)
    modes = resolve(init_modes, template, expected=len(expected))
    assert len(modes) == len(expected)
    for mode, source in zip(modes, expected, strict=True):
        assert list(mode) == list(module_tensors(template))
        for name, t in mode.items():
            assert torch.equal(t, source[name]), name
            assert t.device.type == "cpu" and t.is_contiguous() and not t.requires_grad


@pytest.mark.parametrize("form", list(_forms()))
def test_outputs_are_copies_and_inputs_unchanged(form):
    init_modes, sources = _forms()[form]
    before = [snapshot(s) for s in sources]
    modes = resolve(init_modes)
    for s, b in zip(sources, before, strict=True):
        assert_bit_identical(s, b)
    pointers = {t.data_ptr() for s in sources for t in s.values()}
    for mode in modes:
        assert not pointers & {t.data_ptr() for t in mode.values()}
        for t in mode.values():
            t.add_(1.0)
    for s, b in zip(sources, before, strict=True):
        assert_bit_identical(s, b)


def test_same_source_twice_gives_independent_copies():
    a = mlp(1)
    first, second = resolve([a, a])
    first["net.1.weight"].zero_()
    assert torch.equal(second["net.1.weight"], a.net[1].weight)


def test_non_contiguous_and_parameter_values_are_copied_contiguous():
    a = mlp(1)
    state = dict(a.named_parameters())  # nn.Parameter values, requiring gradients
    state["net.1.weight"] = a.net[1].weight.detach().t().contiguous().t()
    assert not state["net.1.weight"].is_contiguous()
    (mode,) = resolve(state)
    assert all(t.is_contiguous() and not t.requires_grad for t in mode.values())
    assert torch.equal(mode["net.1.weight"], a.net[1].weight)


def test_expected_none_accepts_any_number():
    assert len(resolve([mlp(i) for i in range(3)], expected=None)) == 3


def test_non_persistent_buffer_missing_from_a_state_dict_comes_from_the_template():
    template, trained = build(Scaled, 0, scale=2.0), build(Scaled, 1, scale=5.0)
    state = trained.state_dict()
    assert "scale" not in state
    (mode,) = resolve([state], template)
    assert torch.equal(mode["scale"], template.scale)
    assert mode["scale"].data_ptr() != template.scale.data_ptr()
    assert torch.equal(mode["linear.weight"], trained.linear.weight)
    # A module carries its own non-persistent buffers, which are used.
    (from_module,) = resolve([trained], template)
    assert torch.equal(from_module["scale"], trained.scale)


def test_tied_parameters_second_name_is_accepted():
    template, trained = build(Tied, 0), build(Tied, 1)
    state = trained.state_dict()
    assert set(state) == {"encoder.weight", "decoder.weight"}
    (mode,) = resolve([state], template)
    assert list(mode) == ["encoder.weight"]
    assert torch.equal(mode["encoder.weight"], trained.encoder.weight)


# --------------------------------------------------------------------------- dtypes


def test_float64_state_dict_is_cast_and_integer_buffer_stays_integer():
    template, trained = build(BatchNormMLP, 0, 4, 3), build(BatchNormMLP, 1, 4, 3)
    trained.net[1].num_batches_tracked.fill_(7)
    state = {name: t.double() for name, t in trained.state_dict().items()}
    (mode,) = resolve([state], template)
    for name, t in mode.items():
        assert t.dtype == module_tensors(template)[name].dtype, name
    counter = mode["net.1.num_batches_tracked"]
    assert counter.dtype == torch.int64 and counter.item() == 7
    assert torch.equal(mode["net.1.running_mean"], trained.net[1].running_mean)


def test_integer_buffer_refuses_fractions():
    template, trained = build(BatchNormMLP, 0, 4, 3), build(BatchNormMLP, 1, 4, 3)
    state = trained.state_dict()
    state["net.1.num_batches_tracked"] = torch.tensor(2.5)
    with pytest.raises(ValueError, match=r"'net.1.num_batches_tracked' .* cannot hold exactly"):
        resolve([state], template)


@pytest.mark.parametrize("dtype", [torch.bool, torch.complex64])
def test_bool_and_complex_weights_are_refused(dtype):
    state = mlp(1).state_dict()
    state["net.1.weight"] = state["net.1.weight"].to(dtype)
    with pytest.raises(TypeError, match=rf"'net.1.weight' of init_modes\[0\] has dtype {dtype}"):
        resolve([state])


def test_float64_overflowing_float32_is_refused():
    state = {name: t.double() for name, t in mlp(1).state_dict().items()}
    state["net.3.bias"][0] = 1e300
    with pytest.raises(ValueError, match=r"'net.3.bias' .* after conversion to torch\.float32"):
        resolve([state])


# --------------------------------------------------------------------------- refusals


def test_wrong_count_names_both_numbers_and_the_parameter():
    msg = (
        r"init_modes has 3 networks but n_modes=2 in SimplexClassifier; set n_modes=3 to start"
        r" from all of them, or pass 2"
    )
    with pytest.raises(ValueError, match=msg):
        resolve([mlp(i) for i in range(3)], expected=2)
    with pytest.raises(ValueError, match="init_modes has 1 network but n_modes=2"):
        resolve(mlp(1), expected=2)


def test_missing_name():
    state = mlp(1).state_dict()
    del state["net.3.bias"]
    with pytest.raises(ValueError, match=r"init_modes\[0\] .*1 missing \('net.3.bias'\)"):
        resolve([state])


def test_missing_persistent_buffer():
    state = build(BatchNormMLP, 1, 4, 3).state_dict()
    del state["net.1.running_var"]
    with pytest.raises(ValueError, match=r"missing \('net.1.running_var'\)"):
        resolve([state], build(BatchNormMLP, 0, 4, 3))


def test_extra_name():
    state = mlp(1).state_dict()
    state["net.5.weight"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"1 unexpected \('net.5.weight'\)") as info:
        resolve([state])
    assert "missing" not in str(info.value)


def test_misspelled_name_gets_a_suggestion():
    state = mlp(1).state_dict()
    state["net.1.wieght"] = state.pop("net.1.weight")
    with pytest.raises(ValueError, match=r"'net.1.wieght' \(did you mean 'net.1.weight'\?\)"):
        resolve([state])


def test_many_names_are_counted_not_all_listed():
    state = {f"layer{i}.weight": torch.zeros(2) for i in range(9)}
    with pytest.raises(ValueError, match=r"9 unexpected \(.*, and 4 more\)"):
        resolve([state])


def test_module_prefix_is_pointed_out_not_stripped():
    state = {f"module.{k}": v for k, v in mlp(1).state_dict().items()}
    with pytest.raises(ValueError, match=r"starts with 'module\.' .*removeprefix\('module\.'\)"):
        resolve([state])
    with pytest.raises(ValueError, match=r"init_modes\[0\] starts with 'module\.'"):
        resolve([Wrapper(mlp(1))])


def test_missing_prefix_is_pointed_out():
    state = mlp(1).net.state_dict()  # saved from the inner Sequential: "1.weight"
    with pytest.raises(ValueError, match=r"The module's names start with 'net\.'"):
        resolve([state])


def test_shape_mismatch_names_tensor_and_mode():
    msg = (
        r"tensor 'net.1.weight' of init_modes\[1\] has shape \(16, 5\) "
        r"but the module's has shape \(16, 4\)"
    )
    with pytest.raises(ValueError, match=msg):
        resolve([mlp(1), mlp(2, n_features_in=5)])


def test_nan_weights_name_tensor_and_mode():
    bad = mlp(2)
    with torch.no_grad():
        bad.net[3].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"tensor 'net.3.weight' of init_modes\[1\] has 1 NaN"):
        resolve([mlp(1), bad])


def test_nan_in_estimator_mode_names_the_mode():
    bad = mlp(2)
    with torch.no_grad():
        bad.net[1].bias.fill_(float("inf"))
    with pytest.raises(ValueError, match=r"'net.1.bias' of mode 1 of init_modes \(FittedFake\)"):
        resolve(FittedFake([mlp(1), bad]))


@pytest.mark.parametrize("value", [np.zeros((16, 4), dtype=np.float32), 0.5, None])
def test_non_tensor_value(value):
    state = mlp(1).state_dict()
    state["net.1.weight"] = value
    with pytest.raises(TypeError, match=r"'net.1.weight' of init_modes\[0\] is .*not a torch"):
        resolve([state])


@pytest.mark.parametrize(
    ("init_modes", "error", "match"),
    [
        ("weights.pt", TypeError, r"got str 'weights.pt'.*torch.load"),
        (3, TypeError, r"init_modes must be a fitted simplexens estimator.*got int 3"),
        (np.zeros(3), TypeError, "got numpy.ndarray"),
        (None, TypeError, "got NoneType"),
        (MLP, TypeError, "got the class nets.MLP, not an instance"),
        ((m for m in [build(MLP, 0, 4, 3)]), TypeError, "got generator"),
        ([], ValueError, "init_modes holds no network"),
        ((), ValueError, "init_modes holds no network"),
        ([3], TypeError, r"init_modes\[0\] must be an nn.Module or a state dict .*; got int 3"),
        (["w.pt"], TypeError, r"init_modes\[0\] .*torch.load"),
        ([MLP], TypeError, r"init_modes\[0\] .*the class nets.MLP"),
        ([UnfittedFake()], TypeError, "not inside a list"),
        (
            {"a": build(MLP, 0, 4, 3)},
            TypeError,
            r"mapping of networks.*list\(init_modes.values\(\)\)",
        ),
        (FittedFake, TypeError, "the class .*FittedFake, not an instance"),
    ],
)
def test_wrong_types(init_modes, error, match):
    with pytest.raises(error, match=match):
        resolve(init_modes)


def test_unfitted_estimator():
    with pytest.raises(ValueError, match=r"init_modes is an unfitted estimator \(UnfittedFake\)"):
        resolve(UnfittedFake())


def test_lazy_module_is_refused():
    def lazy_mlp():
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(16), nn.ReLU(), nn.Linear(16, 3))

    lazy = build(lazy_mlp, 0)
    with pytest.raises(ValueError, match=r"init_modes\[0\] has uninitialised"):
        resolve([lazy])
