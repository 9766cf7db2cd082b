"""Tests for AnchorModule with several trainable anchors, complexes and curves.

Oracles: explicit per-point loops of ``functional_call`` at points summed by hand from the
same coefficients (the generator state cloned before the forward pass), ``F.linear`` chunk by
chunk and ``torch.autograd.gradcheck`` for :class:`ChunkedLinear`, autograd through the float64
geometry of :mod:`simplexens.geometry.complex` for the volume term, closed-form edge lengths
and a chi-square test for the complex sampler, and the polygonal chain of
:mod:`simplexens.geometry.curves` for the 2-mode, 1-connector complex.
"""

import math
import pickle

import pytest
import torch
from nets import FixedMLP
from scipy.stats import chisquare
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F
from torch.testing import assert_close

from simplexens.backends.fused_linear import ChunkedLinear
from simplexens.backends.parallel import private_rng
from simplexens.backends.simplex import (
    AnchorModule,
    ComplexSampler,
    CurveSampler,
    SimplexSampler,
    simplex_module,
)
from simplexens.geometry.complex import (
    SimplicialComplex,
    complex_log_volumes,
    connector_complex,
    sample_complex,
)
from simplexens.geometry.curves import curve_coefficients, polychain_coefficients
from simplexens.geometry.simplex import log_volume, sample_barycentric, simplex_points

pytestmark = pytest.mark.usefixtures("global_rng_untouched")

N_IN, N_OUT, HIDDEN = 5, 3, 6


# --------------------------------------------------------------------------- helpers


def build(seed):
    with private_rng(seed):
        return FixedMLP(n_in=N_IN, n_out=N_OUT, hidden=HIDDEN)


def stacked_params(seeds):
    """One stacked tensor per parameter, one row per seed-built module."""
    members = [{n: p.detach().clone() for n, p in build(s).named_parameters()} for s in seeds]
    return {name: torch.stack([m[name] for m in members]) for name in members[0]}


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def labels(n, seed=0):
    return torch.randint(N_OUT, (n,), generator=torch.Generator().manual_seed(seed))


def clone_generator(generator):
    return torch.Generator().set_state(generator.get_state())


def loop_forward(template, points, x):
    """Point i on chunk i (the batch padded with its first rows), one functional_call each."""
    m = next(iter(points.values())).shape[0]
    n = x.shape[0]
    chunk = math.ceil(n / m)
    padded = x[torch.arange(m * chunk) % n]
    outs = [
        functional_call(
            template,
            {name: t[i] for name, t in points.items()},
            (padded[i * chunk : (i + 1) * chunk],),
        )
        for i in range(m)
    ]
    return torch.cat(outs)[:n]


def hand_points(coefficients, anchors, mask, trainable):
    """Points ``sum_i c[j, i] * anchor_i`` summed by hand, in natural anchor order.

    ``trainable[name]`` of shape (t, *shape) stands for the anchors where ``mask`` is True.
    """
    ids = [i for i, moving in enumerate(mask) if moving]

    def anchor(name, i):
        return trainable[name][ids.index(i)] if mask[i] else anchors[name][i]

    return {
        name: torch.stack(
            [
                sum(coefficients[j, i] * anchor(name, i) for i in range(len(mask)))
                for j in range(len(coefficients))
            ]
        )
        for name in anchors
    }


class FixedRows:
    """A sampler handing out given coefficient rows (natural anchor order)."""

    def __init__(self, rows):
        self.rows = rows

    def __call__(self, m, module):
        return self.rows[:m]


# --------------------------------------------------------------------------- curves


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize(("n", "n_train_samples"), [(10, 4), (7, 3)])
@pytest.mark.parametrize(
    ("curve", "mask"),
    [
        ("bezier", [False, True, False]),
        ("bezier", [False, True, True, False]),
        ("polychain", [False, True, False]),
    ],
    ids=["bezier-quadratic", "bezier-cubic", "polychain-3"],
)
def test_curve_module_loss_and_gradients_equal_a_loop(curve, mask, n, n_train_samples, fused):
    anchors = stacked_params(range(20, 20 + len(mask)))
    template = build(100)
    module = AnchorModule(
        template,
        anchors,
        mask,
        CurveSampler(curve),
        n_train_samples,
        torch.Generator().manual_seed(3),
    )
    module.train()
    if not fused:
        module.fused = False  # the generic vmap path; the MLP would take the fused one
    x, y = randn(n, N_IN, seed=4), labels(n, seed=4)
    m = min(n_train_samples, max(1, n // 2))
    clone = clone_generator(module.generator)

    loss = F.cross_entropy(module(x), y)
    loss.backward()

    # The oracle: the same t from the cloned stream, points summed by hand.
    t = torch.rand(m, generator=clone)
    coefficients = curve_coefficients(t, curve, len(mask))
    ids = [i for i, moving in enumerate(mask) if moving]
    bends = {name: a[ids].clone().requires_grad_(True) for name, a in anchors.items()}
    points = hand_points(coefficients, anchors, mask, bends)
    expected = F.cross_entropy(loop_forward(template, points, x), y)
    expected.backward()

    assert_close(loss, expected)
    assert module.fused is fused
    for i, name in enumerate(module.names):
        grad = module.trainable[i].grad
        assert grad.shape == (len(ids), *anchors[name].shape[1:])
        for r in range(len(ids)):  # every bend gets a gradient of its own
            assert bends[name].grad[r].abs().sum() > 0
        assert_close(grad, bends[name].grad)
    # The cloned stream has been consumed exactly as much as the module's own.
    assert torch.equal(clone.get_state(), module.generator.get_state())


# --------------------------------------------------------------------------- ChunkedLinear


def linear_inputs(m=3, k=2, t=2, rows=2, extra=(), bias=True, dtype=torch.float32):
    """x (m * rows, *extra, 4), weights (m, k + t) and the layer at k frozen, t trainable
    anchors."""
    n_in, n_out = 4, 5
    x = randn(m * rows, *extra, n_in, seed=1, dtype=dtype)
    weights = sample_barycentric(m, k + t, generator=torch.Generator().manual_seed(2))
    frozen_w = randn(k, n_out, n_in, seed=3, dtype=dtype)
    trainable_w = randn(t, n_out, n_in, seed=4, dtype=dtype)
    frozen_b = randn(k, n_out, seed=5, dtype=dtype) if bias else None
    trainable_b = randn(t, n_out, seed=6, dtype=dtype) if bias else None
    return x, weights.to(dtype), frozen_w, trainable_w, frozen_b, trainable_b


def loop_linear(x, weights, frozen_w, trainable_w, frozen_b, trainable_b):
    """Chunk i through F.linear at point i = sum_j weights[i, j] * anchor j, frozen first."""
    m = weights.shape[0]
    all_w = [*frozen_w, *trainable_w]
    all_b = None if trainable_b is None else [*frozen_b, *trainable_b]
    outs = []
    for i, chunk in enumerate(x.chunk(m)):
        w = sum(weights[i, j] * all_w[j] for j in range(len(all_w)))
        b = None if all_b is None else sum(weights[i, j] * all_b[j] for j in range(len(all_b)))
        outs.append(F.linear(chunk, w, b))
    return torch.cat(outs)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(("m", "k", "extra"), [(3, 2, ()), (4, 1, ()), (2, 2, (3,)), (1, 1, ())])
def test_chunked_linear_two_trainable_anchors_equal_a_loop(m, k, extra, bias):
    x, weights, frozen_w, trainable_w, frozen_b, trainable_b = linear_inputs(
        m, k, 2, extra=extra, bias=bias
    )
    inputs = [x.requires_grad_(True), trainable_w.requires_grad_(True)]
    if bias:
        inputs.append(trainable_b.requires_grad_(True))
    target = randn(*x.shape[:-1], 5, seed=7)

    out = ChunkedLinear.apply(x, weights, frozen_w, trainable_w, frozen_b, trainable_b)
    grads = torch.autograd.grad((out * target).sum(), inputs)
    expected = loop_linear(x, weights, frozen_w, trainable_w, frozen_b, trainable_b)
    expected_grads = torch.autograd.grad((expected * target).sum(), inputs)

    assert out.shape == (*x.shape[:-1], 5)
    assert_close(out, expected)
    for got, want in zip(grads, expected_grads, strict=True):
        assert got.shape == want.shape
        assert want.abs().sum() > 0
        assert_close(got, want)
    # Each trainable anchor gets its own gradient, not a shared one.
    assert not torch.equal(grads[1][0], grads[1][1])


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("k", [1, 2])
def test_chunked_linear_two_trainable_anchors_gradcheck(k, bias):
    x, weights, frozen_w, trainable_w, frozen_b, trainable_b = linear_inputs(
        3, k, 2, bias=bias, dtype=torch.float64
    )
    inputs = (
        x.requires_grad_(True),
        weights,
        frozen_w,
        trainable_w.requires_grad_(True),
        frozen_b,
        trainable_b.requires_grad_(True) if bias else None,
    )
    assert torch.autograd.gradcheck(ChunkedLinear.apply, inputs)


# --------------------------------------------------------------------------- complex volumes

COMPLEX_CASES = [
    ((3, 2), [False, False, False, False, True]),  # SPRO: the last connector
    ((3, 2), [True, False, True, False, False]),  # two modes, one per simplex
    ((2, 1), [False, False, True]),  # the chain w0 - theta - w1: the connector
    ((2, 1), [True, True, False]),  # the chain: both ends
]
COMPLEX_IDS = ["3+2-connector", "3+2-two-modes", "2+1-connector", "2+1-two-modes"]


def complex_module(shape, mask, seed=0, n_train_samples=4):
    complex_ = connector_complex(*shape)
    anchors = stacked_params(range(30, 30 + complex_.n_vertices))
    module = AnchorModule(
        build(100),
        anchors,
        mask,
        ComplexSampler("volume"),
        n_train_samples,
        torch.Generator().manual_seed(seed),
        complex_,
    )
    return module, anchors, complex_


@pytest.mark.parametrize(("shape", "mask"), COMPLEX_CASES, ids=COMPLEX_IDS)
def test_complex_log_volumes_match_geometry(shape, mask):
    module, anchors, complex_ = complex_module(shape, mask)
    log_v = module.log_volumes()
    assert log_v.dtype == torch.float64
    assert log_v.shape == (complex_.n_simplexes,)
    assert torch.isfinite(log_v).all()
    assert_close(log_v.detach(), complex_log_volumes(module.anchors(), complex_))
    assert_close(log_v.detach(), complex_log_volumes(anchors, complex_))
    assert_close(module.log_volume().detach(), log_v.detach().sum())


@pytest.mark.parametrize("after_forward", [False, True])
@pytest.mark.parametrize(("shape", "mask"), COMPLEX_CASES, ids=COMPLEX_IDS)
def test_complex_volume_term_gradient_equals_float64_autograd(shape, mask, after_forward):
    # The gradient of -lambda * sum log V equals autograd through the float64 geometry for
    # every trainable anchor. After a training-mode forward pass the sampler's volumes are
    # the ones the loss reads: the same value and gradient.
    lam = 0.7
    module, anchors, complex_ = complex_module(shape, mask)
    if after_forward:
        module.train()
        module(randn(8, N_IN, seed=1))  # not part of the loss: no gradient from the data
    (-lam * module.log_volumes().sum()).backward()

    ids = [i for i, moving in enumerate(mask) if moving]
    moving = {name: a[ids].double().clone().requires_grad_(True) for name, a in anchors.items()}
    copies = {}
    for name, a in anchors.items():
        rows = list(a.double())
        for r, i in enumerate(ids):
            rows[i] = moving[name][r]
        copies[name] = torch.stack(rows)
    expected = -lam * complex_log_volumes(copies, complex_).sum()
    expected.backward()

    for i, name in enumerate(module.names):
        grad = module.trainable[i].grad
        assert grad.shape == (len(ids), *anchors[name].shape[1:])
        for r in range(len(ids)):
            assert moving[name].grad[r].abs().sum() > 0
        assert_close(grad, moving[name].grad.float())


def test_a_simplex_with_two_trainable_anchors_is_refused():
    anchors = stacked_params(range(3))
    with pytest.raises(ValueError, match="2 trainable anchors"):
        AnchorModule(
            build(100),
            anchors,
            [False, True, True],
            SimplexSampler(),
            4,
            torch.Generator().manual_seed(0),
            SimplicialComplex([(0, 1, 2)], 3),
        )


# --------------------------------------------------------------------------- frozen anchors


@pytest.mark.parametrize(
    ("mask", "complex_"),
    [
        ([False, True, False], SimplicialComplex([(0, 1, 2)], 3)),
        ([True, False, False, True], None),  # no volume term
    ],
    ids=["middle-trainable", "ends-trainable"],
)
def test_frozen_anchors_stay_bit_identical_and_anchors_keep_natural_order(mask, complex_):
    anchors = stacked_params(range(40, 40 + len(mask)))
    template = build(100)
    template_before = {n: p.detach().clone() for n, p in template.named_parameters()}
    module = AnchorModule(
        template, anchors, mask, SimplexSampler(), 4, torch.Generator().manual_seed(0), complex_
    )
    module.train()
    ids = [i for i, moving in enumerate(mask) if moving]
    fixed = [i for i, moving in enumerate(mask) if not moving]
    # Momentum and weight decay would move anything the optimiser can see.
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    x, y = randn(12, N_IN, seed=2), labels(12, seed=2)
    for _ in range(2):
        optimizer.zero_grad()
        loss = F.cross_entropy(module(x), y)
        if complex_ is not None:
            loss = loss - 0.1 * module.log_volume()
        loss.backward()
        optimizer.step()

    trainable = [name for name, p in module.named_parameters() if p.requires_grad]
    assert trainable == [f"trainable.{i}" for i in range(len(module.names))]
    for name, p in template.named_parameters():
        assert not p.requires_grad, name
        assert p.grad is None, name
        assert torch.equal(p, template_before[name]), name
    natural = module.anchors()
    for i, name in enumerate(module.names):
        buffer = getattr(module, f"frozen_{i}")
        assert not buffer.requires_grad
        assert buffer.grad is None
        assert torch.equal(buffer, anchors[name][fixed])
        assert module.trainable[i].grad is not None
        for r in range(len(ids)):
            assert module.trainable[i].grad[r].abs().sum() > 0
            assert not torch.equal(module.trainable[i][r], anchors[name][ids[r]])
        # Natural order: the frozen anchors and the trained ones in their own positions.
        assert natural[name].shape == anchors[name].shape
        for r, j in enumerate(ids):
            assert torch.equal(natural[name][j], module.trainable[i][r])
        for j in fixed:
            assert torch.equal(natural[name][j], anchors[name][j])

    # anchors() is differentiable in the trainable anchors, each at its position: the
    # gradient of sum_j c_j * anchor_j is c at the trainable positions.
    scale = torch.arange(1.0, len(mask) + 1.0)
    total = sum((a * scale.view(-1, *[1] * (a.ndim - 1))).sum() for a in module.anchors().values())
    grads = torch.autograd.grad(total, list(module.trainable))
    for g in grads:
        for r, j in enumerate(ids):
            assert_close(g[r], torch.full_like(g[r], scale[j].item()))


# --------------------------------------------------------------------------- ComplexSampler


def line_module(points):
    """An AnchorModule over nn.Linear(2, 1) whose anchors are the given flat 3-vectors
    (weight[0, 0], weight[0, 1], bias[0]); the complex joins the first ones to the last."""
    points = torch.as_tensor(points, dtype=torch.float32)
    k = len(points)
    anchors = {"weight": points[:, :2].reshape(k, 1, 2), "bias": points[:, 2:].clone()}
    with private_rng(0):
        template = nn.Linear(2, 1)
    mask = [False] * (k - 1) + [True]
    return AnchorModule(
        template,
        anchors,
        mask,
        ComplexSampler("volume"),
        4,
        torch.Generator().manual_seed(11),
        connector_complex(k - 1, 1),
    )


def simplex_of_rows(coefficients, complex_):
    """The simplex each coefficient row lies in; checks that its support is exactly one
    simplex's vertices."""
    support = coefficients > 0
    matches = (support[:, None, :] == complex_.incidence()[None]).all(dim=2)
    assert matches.sum(dim=1).eq(1).all(), "a row is not supported on exactly one simplex"
    return matches.int().argmax(dim=1)


def test_complex_sampler_draws_simplexes_in_proportion_to_current_volumes():
    # Modes at distances 1, 2 and 4 from the connector: 1-simplexes (edges) of those lengths.
    module = line_module([[1, 0, 0], [0, 2, 0], [0, 0, 4], [0, 0, 0]])
    n = 2800
    # Then the trainable connector moves to (0, 0, 3): the volumes change with it.
    for bias, lengths in [(0.0, [1.0, 2.0, 4.0]), (3.0, [math.sqrt(10), math.sqrt(13), 1.0])]:
        with torch.no_grad():
            module.trainable[1][0].fill_(bias)  # the connector's bias entry
        assert_close(
            module.log_volumes().detach(), torch.tensor(lengths, dtype=torch.float64).log()
        )
        with torch.no_grad():
            coefficients = module.sampler(n, module)
        assert coefficients.shape == (n, 4)
        assert (coefficients >= 0).all()
        assert_close(coefficients.sum(dim=1), torch.ones(n))
        chosen = simplex_of_rows(coefficients, module.complex)
        observed = torch.bincount(chosen, minlength=3).numpy()
        expected = torch.tensor(lengths, dtype=torch.float64)
        expected = (n * expected / expected.sum()).numpy()
        assert chisquare(observed, expected).pvalue > 1e-3
        # Power: the equal-probability choice is rejected.
        assert chisquare(observed, [n / 3] * 3).pvalue < 1e-6


@pytest.mark.parametrize(("shape", "mask"), COMPLEX_CASES[:3], ids=COMPLEX_IDS[:3])
def test_complex_sampler_rows_lie_in_one_simplex(shape, mask):
    module, _, complex_ = complex_module(shape, mask)
    with torch.no_grad():
        coefficients = module.sampler(500, module)
    assert coefficients.shape == (500, complex_.n_vertices)
    assert (coefficients >= 0).all()
    assert_close(coefficients.sum(dim=1), torch.ones(500))
    chosen = simplex_of_rows(coefficients, complex_)
    # Every simplex is drawn (the volumes are of the same order).
    assert set(chosen.tolist()) == set(range(complex_.n_simplexes))


# --------------------------------------------------------------------------- chain = curve


def chain_times(coefficients, chosen):
    """t on the polygonal chain w0 - theta - w1 of rows of connector_complex(2, 1)
    (vertex order [w0, w1, theta]): a*w0 + (1-a)*theta is t = (1-a)/2, b*w1 + (1-b)*theta
    is t = 1 - (1-b)/2."""
    a, b = coefficients[:, 0], coefficients[:, 1]
    return torch.where(chosen == 0, (1 - a) / 2, 1 - (1 - b) / 2)


def test_two_mode_one_connector_complex_is_the_polygonal_chain():
    complex_ = connector_complex(2, 1)
    anchors = stacked_params([50, 51, 52])  # [w0, w1, theta]
    chain = {name: a[[0, 2, 1]] for name, a in anchors.items()}  # [w0, theta, w1]
    log_v = complex_log_volumes(anchors, complex_)
    generator = torch.Generator().manual_seed(5)
    for dtype in (torch.float64, torch.float32):
        coefficients, chosen = sample_complex(
            400, complex_, log_v, generator=generator, dtype=dtype
        )
        assert set(chosen.tolist()) == {0, 1}
        t = chain_times(coefficients, chosen)
        assert ((t >= 0) & (t <= 1)).all()
        # The two halves of the chain: simplex 0 is t <= 1/2, simplex 1 is t >= 1/2.
        assert (t[chosen == 0] <= 0.5).all() and (t[chosen == 1] >= 0.5).all()
        weights = polychain_coefficients(t, 3)
        assert_close(weights[:, [0, 2, 1]], coefficients)
        got = simplex_points({n: a.to(dtype) for n, a in anchors.items()}, coefficients)
        want = simplex_points({n: a.to(dtype) for n, a in chain.items()}, weights)
        for name in anchors:
            assert_close(got[name], want[name])


@pytest.mark.parametrize("fused", [True, False])
def test_spro_chain_module_equals_polychain_curve_module(fused):
    # The same points through both modules: same outputs and same connector gradient.
    complex_ = connector_complex(2, 1)
    anchors = stacked_params([50, 51, 52])  # [w0, w1, theta]
    log_v = complex_log_volumes(anchors, complex_)
    coefficients, chosen = sample_complex(
        4, complex_, log_v, weighting="equal", generator=torch.Generator().manual_seed(6)
    )
    weights = polychain_coefficients(chain_times(coefficients, chosen), 3)
    spro = AnchorModule(
        build(100),
        anchors,
        [False, False, True],
        FixedRows(coefficients),
        4,
        torch.Generator().manual_seed(0),
        complex_,
    )
    curve = AnchorModule(
        build(100),
        {name: a[[0, 2, 1]] for name, a in anchors.items()},
        [False, True, False],
        FixedRows(weights),
        4,
        torch.Generator().manual_seed(0),
    )
    x, y = randn(12, N_IN, seed=3), labels(12, seed=3)
    losses = []
    for module in (spro, curve):
        module.train()
        if not fused:
            module.fused = False
        loss = F.cross_entropy(module(x), y)
        loss.backward()
        losses.append(loss)
        assert module.fused is fused
    assert_close(losses[0], losses[1])
    for a, b in zip(spro.trainable, curve.trainable, strict=True):
        assert a.grad.abs().sum() > 0
        assert_close(a.grad, b.grad)


# --------------------------------------------------------------------------- pickling


def test_complex_module_pickle_round_trip():
    module, _, complex_ = complex_module((3, 2), [False] * 4 + [True])
    module.train()
    x, y = randn(10, N_IN, seed=8), labels(10, seed=8)
    # One training step's forward and loss: the path is chosen, the volumes are read.
    loss = F.cross_entropy(module(x), y) - 0.1 * module.log_volume()
    loss.backward()
    assert module.fused is True

    copy = pickle.loads(pickle.dumps(module))
    module.zero_grad(set_to_none=True)  # gradients do not travel with the pickle
    assert copy.fused is True
    assert copy.complex == complex_
    assert isinstance(copy.sampler, ComplexSampler)
    assert copy.sampler.weighting == "volume"
    state, copy_state = module.state_dict(), copy.state_dict()
    assert list(state) == list(copy_state)
    for name, t in state.items():
        assert torch.equal(t, copy_state[name]), name
    assert_close(copy.log_volumes(), module.log_volumes(), rtol=0, atol=0)

    module.eval()
    copy.eval()
    copy.generator = clone_generator(module.generator)
    assert_close(copy(x), module(x), rtol=0, atol=0)
    assert torch.equal(copy.generator.get_state(), module.generator.get_state())

    # The volume term's gradient survives the round trip.
    (-module.log_volume()).backward()
    (-copy.log_volume()).backward()
    for a, b in zip(module.trainable, copy.trainable, strict=True):
        assert_close(b.grad, a.grad)

    # So does the hook that refreshes the frozen geometry when a state is loaded.
    doubled = {k: 2 * v if k.startswith("frozen_") else v for k, v in state.items()}
    copy.load_state_dict(doubled)
    assert_close(copy.log_volumes().detach(), complex_log_volumes(copy.anchors(), complex_))


class ScaledLinear(nn.Module):
    """A linear layer times a learned scalar (a temperature): a 0-d parameter."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.scale = nn.Parameter(torch.tensor(1.5))

    def forward(self, x):
        return self.linear(x) * self.scale


def test_a_scalar_parameter_is_an_anchor_like_any_other():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        module = ScaledLinear()
        frozen = {
            n: torch.stack([p.detach(), p.detach() + 0.3]) for n, p in module.named_parameters()
        }
        start = {n: p.detach() + 0.5 * torch.randn_like(p) for n, p in module.named_parameters()}
    anchored = simplex_module(module, frozen, start, 3, torch.Generator().manual_seed(0))
    anchored.log_volume().backward()
    new = {n: t.clone().requires_grad_(True) for n, t in start.items()}
    stacked = {n: torch.cat([frozen[n], new[n][None]]) for n in start}
    log_volume(stacked).backward()
    for i, name in enumerate(anchored.names):
        assert_close(anchored.trainable[i].grad[0], new[name].grad, rtol=1e-5, atol=1e-7)
    out = anchored(torch.randn(6, 3, generator=torch.Generator().manual_seed(1)))
    assert out.shape == (6, 2)
