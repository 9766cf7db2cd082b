"""Tests for simplexens.backends.simplex and the simplex training in backends.skorch.

Oracles: explicit per-point loops of ``functional_call`` over the same chunks and the same
sampled barycentric weights (the generator state cloned before the forward pass),
:mod:`simplexens.geometry.simplex` evaluated on the stacked vertices, closed forms for a
2-vertex simplex, and a fresh ``fit_member`` / ``fit_simplex`` run with the same seed.
"""

import math

import numpy as np
import pytest
import torch
from nets import MLP
from sklearn.datasets import make_classification
from torch import nn
from torch.func import functional_call
from torch.testing import assert_close

from simplexens.backends.functional import module_tensors
from simplexens.backends.modules import ModuleSpec
from simplexens.backends.parallel import private_rng
from simplexens.backends.simplex import chunked_forward, initial_vertex, simplex_module
from simplexens.backends.skorch import (
    AnchorNet,
    AnchorPhases,
    fit_member,
    fit_simplex,
    make_net,
)
from simplexens.geometry.simplex import (
    cayley_menger_volume_squared,
    log_volume,
    sample_barycentric,
)

N_FEATURES = 5
N_CLASSES = 3


pytestmark = pytest.mark.usefixtures("global_rng_untouched")


# --------------------------------------------------------------------------- helpers


class Tiny(nn.Module):
    """Linear -> ReLU -> (Dropout) -> (BatchNorm1d) -> Linear."""

    def __init__(self, dropout=False, batchnorm=False, hidden=7):
        super().__init__()
        layers = [nn.Linear(N_FEATURES, hidden), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(0.5))
        if batchnorm:
            layers.append(nn.BatchNorm1d(hidden))
        layers.append(nn.Linear(hidden, N_CLASSES))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def build(seed, **kwargs):
    with private_rng(seed):
        return Tiny(**kwargs)


def params_of(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def stacked_params(seeds, **kwargs):
    """One stacked tensor per parameter, one row per seed-built module."""
    members = [params_of(build(s, **kwargs)) for s in seeds]
    return {name: torch.stack([m[name] for m in members]) for name in members[0]}


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def labels(n, seed=0):
    return torch.randint(N_CLASSES, (n,), generator=torch.Generator().manual_seed(seed))


def padded_chunks(x, m):
    """The m chunks of chunk_forward's contract, built by hand: pad with the first rows."""
    n = x.shape[0]
    chunk = math.ceil(n / m)
    pad = m * chunk - n
    padded = x
    while pad > 0:  # repeat the first rows (n may be shorter than the padding)
        take = min(pad, n)
        padded = torch.cat([padded, x[:take]])
        pad -= take
    return [padded[i * chunk : (i + 1) * chunk] for i in range(m)]


def loop_forward(template, points, buffers, x):
    """Point i on chunk i, one ordinary functional_call each; padded outputs dropped."""
    m = next(iter(points.values())).shape[0]
    outs = []
    for i, chunk in enumerate(padded_chunks(x, m)):
        point = {name: t[i] for name, t in points.items()}
        bufs = {name: t[i] for name, t in buffers.items()}
        outs.append(functional_call(template, (point, bufs), (chunk,)))
    return torch.cat(outs)[: x.shape[0]]


def stacked_buffers(template, m):
    return {name: b.detach().expand(m, *b.shape).clone() for name, b in template.named_buffers()}


# --------------------------------------------------------------------------- chunked_forward

SIZES = [(10, 3), (2, 2), (7, 7), (12, 4), (5, 4)]


@pytest.mark.parametrize(("n", "m"), SIZES)
@pytest.mark.parametrize(
    ("kwargs", "training"),
    [({}, False), ({}, True), ({"dropout": True}, False)],
    ids=["mlp-eval", "mlp-train", "dropout-eval"],
)
def test_chunked_forward_equals_a_loop_over_chunks(n, m, kwargs, training):
    template = build(100, **kwargs).train(training)
    points = stacked_params(range(m), **kwargs)
    x = randn(n, N_FEATURES, seed=n)
    out = chunked_forward(template, points, {}, x)
    expected = loop_forward(template, points, {}, x)
    assert out.shape == (n, N_CLASSES)
    assert_close(out, expected)


@pytest.mark.parametrize(("n", "m"), SIZES)
def test_chunked_forward_row_r_is_point_r_over_chunk(n, m):
    # Second opinion from the docstring: row r is the module at point r // ceil(n / m) on row r.
    template = build(100).eval()
    points = stacked_params(range(m))
    x = randn(n, N_FEATURES, seed=1)
    out = chunked_forward(template, points, {}, x)
    chunk = math.ceil(n / m)
    for r in range(n):
        point = {name: t[r // chunk] for name, t in points.items()}
        assert_close(out[r], functional_call(template, point, (x[r : r + 1],))[0])


@pytest.mark.parametrize(("n", "m"), [(10, 3), (9, 2), (12, 4)])
def test_chunked_forward_batchnorm_train_uses_per_chunk_statistics(n, m):
    # In training mode BatchNorm normalises each chunk with its own statistics and updates the
    # per-point buffers; the loop on the same padded chunks does the same.
    template = build(100, batchnorm=True).train()
    points = stacked_params(range(m), batchnorm=True)
    x = randn(n, N_FEATURES, seed=2)
    buffers = stacked_buffers(template, m)
    loop_buffers = stacked_buffers(template, m)
    out = chunked_forward(template, points, buffers, x)
    expected = loop_forward(template, points, loop_buffers, x)
    assert_close(out, expected)
    for name in buffers:
        assert_close(buffers[name], loop_buffers[name])
    assert buffers["net.2.num_batches_tracked"].tolist() == [1] * m


@pytest.mark.parametrize(("n", "m"), [(10, 3), (2, 2), (7, 7)])
def test_chunked_forward_gradient_equals_loop_gradient(n, m):
    template = build(100).train()
    base = stacked_params(range(m))
    x = randn(n, N_FEATURES, seed=3)
    y = labels(n, seed=3)

    points = {k: v.clone().requires_grad_(True) for k, v in base.items()}
    loss = nn.functional.cross_entropy(chunked_forward(template, points, {}, x), y)
    grads = torch.autograd.grad(loss, list(points.values()))

    loop_points = {k: v.clone().requires_grad_(True) for k, v in base.items()}
    loop_loss = nn.functional.cross_entropy(loop_forward(template, loop_points, {}, x), y)
    loop_grads = torch.autograd.grad(loop_loss, list(loop_points.values()))

    assert_close(loss, loop_loss)
    for g, expected in zip(grads, loop_grads, strict=True):
        assert g.abs().sum() > 0
        assert_close(g, expected)


# --------------------------------------------------------------------------- simplex_module


def make_simplex(n_frozen=2, n_train_samples=4, seed=0):
    template = build(100)
    frozen = stacked_params(range(10, 10 + n_frozen))
    start = {k: v[0] for k, v in stacked_params([99]).items()}
    generator = torch.Generator().manual_seed(seed)
    module = simplex_module(template, frozen, start, n_train_samples, generator)
    return module, template, frozen, start


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize(("n", "n_train_samples"), [(10, 3), (8, 4), (3, 5)])
def test_simplex_module_loss_and_gradient_equal_a_loop(n, n_train_samples, fused):
    module, template, frozen, start = make_simplex(n_train_samples=n_train_samples)
    module.train()
    if not fused:
        module.fused = False  # the generic vmap path; Tiny would take the fused one
    x = randn(n, N_FEATURES, seed=4)
    y = labels(n, seed=4)
    k1 = 3
    m = min(n_train_samples, max(1, n // 2))  # at least two rows per point
    clone = torch.Generator().set_state(module.generator.get_state())

    loss = nn.functional.cross_entropy(module(x), y)
    loss.backward()

    # The oracle: same weights from the cloned stream, points summed by hand.
    weights = sample_barycentric(m, k1, generator=clone)
    new = {name: t.clone().requires_grad_(True) for name, t in start.items()}
    points = {
        name: torch.stack(
            [
                sum(weights[j, i] * frozen[name][i] for i in range(k1 - 1))
                + weights[j, k1 - 1] * new[name]
                for j in range(m)
            ]
        )
        for name in start
    }
    expected = nn.functional.cross_entropy(loop_forward(template, points, {}, x), y)
    expected.backward()

    assert_close(loss, expected)
    # With one point both paths are the same and the choice waits for a larger batch.
    assert module.fused is (fused if m > 1 or not fused else None)
    names = module.names
    for i, name in enumerate(names):
        # The only trainable anchor is the newest vertex: trainable[i] has shape (1, *shape).
        assert module.trainable[i].grad is not None
        assert module.trainable[i].grad.shape == (1, *new[name].shape)
        assert module.trainable[i].grad.abs().sum() > 0
        assert_close(module.trainable[i].grad[0], new[name].grad)
    # The cloned stream has been consumed exactly as much as the module's own.
    assert torch.equal(clone.get_state(), module.generator.get_state())


def test_simplex_module_gradients_reach_only_the_newest_vertex():
    module, template, frozen, _ = make_simplex()
    module.train()
    x, y = randn(9, N_FEATURES, seed=5), labels(9, seed=5)
    loss = nn.functional.cross_entropy(module(x), y) - module.log_volume()
    loss.backward()

    trainable = [name for name, p in module.named_parameters() if p.requires_grad]
    assert trainable == [f"trainable.{i}" for i in range(len(module.names))]
    assert all(p.grad is not None for p in module.trainable)
    for name, p in template.named_parameters():
        assert not p.requires_grad, name
        assert p.grad is None, name
    for i, name in enumerate(module.names):
        buffer = getattr(module, f"frozen_{i}")
        assert not buffer.requires_grad
        assert buffer.grad is None
        assert torch.equal(buffer, frozen[name])


def test_simplex_module_log_volume_matches_geometry():
    module, _, frozen, start = make_simplex(n_frozen=2)
    stacked = {name: torch.cat([frozen[name], start[name][None]]) for name in start}
    log_v = module.log_volume()
    assert log_v.dtype == torch.float64
    assert torch.isfinite(log_v)
    assert_close(log_v, log_volume(stacked))
    cm = cayley_menger_volume_squared(stacked)
    assert cm > 0
    assert_close(log_v, 0.5 * torch.log(cm), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("n_frozen", [1, 2, 3])
def test_simplex_module_log_volume_gradient_matches_geometry(n_frozen):
    module, _, frozen, start = make_simplex(n_frozen=n_frozen)
    module.log_volume().backward()
    new = {name: t.clone().requires_grad_(True) for name, t in start.items()}
    stacked = {name: torch.cat([frozen[name], new[name][None]]) for name in start}
    expected = log_volume(stacked)
    expected.backward()
    assert_close(module.log_volume().detach(), expected.detach())
    for i, name in enumerate(module.names):
        assert new[name].grad.abs().sum() > 0
        assert_close(module.trainable[i].grad[0], new[name].grad, rtol=1e-5, atol=1e-7)


def test_simplex_module_log_volume_after_load_state_dict():
    source, *_ = make_simplex(n_frozen=2, seed=0)
    target = simplex_module(
        build(100),
        {k: 2 * v for k, v in stacked_params([20, 21]).items()},
        {k: v[0] for k, v in stacked_params([98]).items()},
        4,
        torch.Generator().manual_seed(0),
    )
    target.load_state_dict(source.state_dict())
    for name, t in target.anchors().items():
        assert torch.equal(t, source.anchors()[name])
    assert_close(target.log_volume(), log_volume(target.anchors()))


def test_simplex_module_log_volume_two_vertices_is_log_distance():
    module, _, frozen, start = make_simplex(n_frozen=1)
    squared = sum(((start[n] - frozen[n][0]).double() ** 2).sum() for n in start)
    assert_close(module.log_volume(), 0.5 * torch.log(squared))


# --------------------------------------------------------------------------- initial_vertex


def mode_vertices(zero_bias=True):
    vertices = {k: v[:1] for k, v in stacked_params([7]).items()}
    if zero_bias:
        vertices["net.0.bias"] = torch.zeros_like(vertices["net.0.bias"])
    return vertices


@pytest.mark.parametrize("scale", [0.1, 0.5])
def test_initial_vertex_moves_each_tensor_by_scale_times_its_norm(scale):
    vertices = mode_vertices()
    start = initial_vertex(vertices, scale, torch.Generator().manual_seed(0))
    assert set(start) == set(vertices)
    expected_sq = 0.0
    for name, stacked in vertices.items():
        centre = stacked[0]
        assert start[name].shape == centre.shape
        norm = float(centre.norm()) if name != "net.0.bias" else 1.0
        move = (start[name] - centre).norm()
        assert_close(move, torch.tensor(scale * norm), rtol=1e-5, atol=1e-7)
        expected_sq += (scale * norm) ** 2

    two = {name: torch.cat([vertices[name], start[name][None]]) for name in vertices}
    log_v = log_volume(two)
    assert torch.isfinite(log_v)
    # A 2-simplex's volume is its length: the norm of the whole move.
    assert_close(log_v, torch.tensor(0.5 * math.log(expected_sq), dtype=torch.float64))


def test_initial_vertex_centroid_and_off_the_simplex():
    vertices = stacked_params([1, 2])
    start = initial_vertex(vertices, 0.2, torch.Generator().manual_seed(3))
    for name, stacked in vertices.items():
        move = (start[name] - stacked.mean(0)).norm()
        assert_close(move, 0.2 * stacked.mean(0).norm(), rtol=1e-5, atol=1e-7)
    three = {name: torch.cat([vertices[name], start[name][None]]) for name in vertices}
    assert torch.isfinite(log_volume(three))
    assert cayley_menger_volume_squared(three) > 0


def test_initial_vertex_same_seed_same_start():
    vertices = mode_vertices()
    a = initial_vertex(vertices, 0.1, torch.Generator().manual_seed(5))
    b = initial_vertex(vertices, 0.1, torch.Generator().manual_seed(5))
    c = initial_vertex(vertices, 0.1, torch.Generator().manual_seed(6))
    for name in vertices:
        assert torch.equal(a[name], b[name])
        assert not torch.equal(a[name], c[name])


# --------------------------------------------------------------------------- skorch


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(
        n_samples=96,
        n_features=N_FEATURES,
        n_informative=4,
        n_redundant=0,
        n_classes=N_CLASSES,
        random_state=0,
    )
    return X.astype(np.float32), y.astype(np.int64)


NET_KWARGS = dict(
    max_epochs=2,
    lr=0.05,
    batch_size=32,
    train_split=None,
    verbose=0,
    criterion=torch.nn.CrossEntropyLoss,
    optimizer=torch.optim.SGD,
)


@pytest.mark.parametrize("lam", [0.0, 0.5])
def test_simplex_net_trains_only_the_new_vertex(data, lam):
    X, y = data
    module, template, frozen, start = make_simplex(n_frozen=2, n_train_samples=3)
    template_before = {k: v.clone() for k, v in module_tensors(template).items()}
    with private_rng(0):
        net = make_net(module, NET_KWARGS, seed=0, net_class=AnchorNet, volume_lambda=lam)
        net.fit(X, y)

    assert len(net.history) == 2
    for i, name in enumerate(module.names):
        assert torch.equal(getattr(net.module_, f"frozen_{i}"), frozen[name])
    for name, t in module_tensors(template).items():
        assert torch.equal(t, template_before[name]), name
    moved = [
        not torch.equal(net.module_.trainable[i][0], start[n]) for i, n in enumerate(module.names)
    ]
    assert all(moved)

    y_pred = randn(16, N_CLASSES, seed=8)
    y_true = torch.as_tensor(y[:16])
    expected = nn.functional.cross_entropy(y_pred, y_true) - lam * net.module_.log_volume()
    assert_close(net.get_loss(y_pred, y_true), expected.float())


@pytest.fixture(scope="module")
def simplex_runs(data):
    X, y = data
    spec = ModuleSpec(MLP, dict(n_features_in=N_FEATURES, n_classes=N_CLASSES, hidden=8))

    def phases(lam):
        # A constant rate in the vertex phases, as these runs were designed with.
        return AnchorPhases(
            n_train_samples=3,
            volume_lambda=lam,
            epochs=2,
            lr=0.05,
            init_scale=0.1,
            schedule="constant",
        )

    def simplex(n_vertices, lam):
        return fit_simplex(spec, NET_KWARGS, n_vertices, phases(lam), X, y, seed=3)

    before = torch.get_rng_state()
    runs = {
        "member": fit_member(spec, NET_KWARGS, X, y, seed=3),
        (3, 0.0): simplex(3, 0.0),
        (2, 0.0): simplex(2, 0.0),
        (3, 1.0): simplex(3, 1.0),
    }
    assert_close(torch.get_rng_state(), before, rtol=0, atol=0)
    return runs


def test_fit_simplex_shapes_and_volumes(simplex_runs):
    with private_rng(0):
        names = [n for n, _ in MLP(N_FEATURES, N_CLASSES, hidden=8).named_parameters()]
    for n_vertices in (2, 3):
        result = simplex_runs[(n_vertices, 0.0)]
        assert list(result.anchors) == names
        for name, t in result.anchors.items():
            assert t.shape[0] == n_vertices, name
            assert t.device.type == "cpu"
        assert len(result.log_volumes) == n_vertices - 1
        assert all(len(phase) == 1 for phase in result.log_volumes)  # one simplex per phase
        assert np.all(np.isfinite(result.log_volumes))
        # The reported final log V is that of the returned vertices (second opinion: CM).
        cm = cayley_menger_volume_squared(result.anchors)
        assert_close(result.log_volumes[-1][0], 0.5 * math.log(float(cm)), rtol=1e-5, atol=1e-5)
        assert result.epochs == NET_KWARGS["max_epochs"] + (n_vertices - 1) * 2


def test_fit_simplex_first_vertex_is_the_fit_member_mode(simplex_runs):
    mode = simplex_runs["member"].tensors
    for n_vertices in (2, 3):
        result = simplex_runs[(n_vertices, 0.0)]
        for name, t in result.anchors.items():
            assert torch.equal(t[0], mode[name]), name
        for name, b in result.buffers.items():
            assert torch.equal(b, mode[name]), name


def test_fit_simplex_earlier_vertices_are_frozen_and_streams_match(simplex_runs):
    two, three = simplex_runs[(2, 0.0)], simplex_runs[(3, 0.0)]
    for name in two.anchors:
        assert torch.equal(three.anchors[name][:2], two.anchors[name]), name
        assert not torch.equal(three.anchors[name][2], three.anchors[name][1]), name
    assert three.log_volumes[0] == two.log_volumes[0]


def test_fit_simplex_volume_lambda_grows_the_simplex(simplex_runs):
    plain, pushed = simplex_runs[(3, 0.0)], simplex_runs[(3, 1.0)]
    assert pushed.log_volumes[-1][0] > plain.log_volumes[-1][0]
    assert pushed.log_volumes[0][0] > plain.log_volumes[0][0]


@pytest.mark.parametrize("height", [1e-1, 1e-3])
def test_simplex_module_log_volume_near_the_frozen_face(height):
    # A new vertex at relative height `height` above the frozen face: the closed form must
    # not lose accuracy where e.e - (E e)^T G^-1 E e would cancel. What is left is float32's
    # rounding of the vertex minus v_0, eps * |v| / h relative.
    module, _, frozen, _ = make_simplex(n_frozen=2)
    inside = {name: 0.3 * t[0] + 0.7 * t[1] for name, t in frozen.items()}
    offset = {name: randn(*t.shape[1:], seed=7) for name, t in frozen.items()}
    scale = height * math.sqrt(
        sum(((frozen[n][1] - frozen[n][0]) ** 2).sum() for n in frozen)
        / sum((o**2).sum() for o in offset.values())
    )
    start = {name: inside[name] + scale * offset[name] for name in frozen}
    with torch.no_grad():
        for i, name in enumerate(module.names):
            module.trainable[i][0].copy_(start[name])
    module.log_volume().backward()
    new = {name: t.double().requires_grad_(True) for name, t in start.items()}
    stacked = {name: torch.cat([frozen[name].double(), new[name][None]]) for name in start}
    expected = log_volume(stacked)
    expected.backward()
    assert_close(module.log_volume().detach(), expected.detach(), rtol=1e-5, atol=1e-6)
    for i, name in enumerate(module.names):
        rtol = max(1e-4, 1e-6 / height)
        assert_close(module.trainable[i].grad[0].double(), new[name].grad, rtol=rtol, atol=1e-6)
