"""Tests for simplexens.datasets: generators against their closed forms, learnability bounds
with fixed seeds, and the demo modules."""

import math

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from scipy.stats import kstest
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from torch import nn

from simplexens import DeepEnsembleClassifier
from simplexens.datasets import MLP, SHAPE_NAMES, SmallCNN, make_shapes, make_spirals


@pytest.fixture
def numpy_global_rng_untouched():
    """Fails the test if it changed NumPy's global random state."""
    before = np.random.get_state()  # noqa: NPY002 (the legacy global state is what we guard)
    yield
    after = np.random.get_state()  # noqa: NPY002
    assert before[0] == after[0]
    assert_array_equal(before[1], after[1])
    assert before[2:] == after[2:]


pytestmark = pytest.mark.usefixtures("global_rng_untouched", "numpy_global_rng_untouched")

GENERATORS = [make_spirals, make_shapes]


def _flat(X):
    return X.reshape(len(X), -1)


# --------------------------------------------------------------------------- common


@pytest.mark.parametrize("n_samples", [2, 7, 1000])
def test_spirals_shapes_dtypes_and_balance(n_samples):
    X, y = make_spirals(n_samples, random_state=0)
    assert X.shape == (n_samples, 2)
    assert X.dtype == np.float32
    assert y.shape == (n_samples,)
    assert y.dtype == np.int64
    assert np.bincount(y).tolist() == [math.ceil(n_samples / 2), n_samples // 2]


@pytest.mark.parametrize(
    ("n_samples", "n_classes", "image_size"), [(10, 3, 8), (1000, 4, 16), (13, 6, 21), (2, 2, 8)]
)
def test_shapes_shapes_dtypes_and_balance(n_samples, n_classes, image_size):
    X, y = make_shapes(n_samples, n_classes=n_classes, image_size=image_size, random_state=0)
    assert X.shape == (n_samples, 1, image_size, image_size)
    assert X.dtype == np.float32
    assert y.dtype == np.int64
    expected = [n_samples // n_classes + (k < n_samples % n_classes) for k in range(n_classes)]
    assert np.bincount(y, minlength=n_classes).tolist() == expected


@pytest.mark.parametrize("make", GENERATORS)
def test_same_seed_same_data_other_seed_other_data(make):
    X0, y0 = make(200, random_state=3)
    X1, y1 = make(200, random_state=3)
    X2, y2 = make(200, random_state=4)
    assert_array_equal(X0, X1)
    assert_array_equal(y0, y1)
    assert not np.array_equal(X0, X2)
    assert not np.array_equal(y0, y2)  # the row order is shuffled with the seed


@pytest.mark.parametrize("make", GENERATORS)
def test_random_state_instance_is_consumed_like_its_seed(make):
    X0, _ = make(50, random_state=np.random.RandomState(11))
    X1, _ = make(50, random_state=11)
    assert_array_equal(X0, X1)


# --------------------------------------------------------------------------- spirals


@pytest.mark.parametrize("n_turns", [0.5, 1.5, 3.0])
def test_noiseless_spiral_points_lie_on_their_arms(n_turns):
    X, y = make_spirals(500, n_turns=n_turns, noise=0, random_state=0)
    X = X.astype(np.float64)
    radius = np.linalg.norm(X, axis=1)
    assert radius.max() <= 1 + 1e-6
    # Arm 0 is r = θ / θ_max at angle θ, so the radius alone gives the angle; arm 1 is arm 0
    # rotated by π at the same parameter.
    theta = radius * 2 * np.pi * n_turns
    on_arm0 = radius[:, None] * np.column_stack([np.cos(theta), np.sin(theta)])
    sign = np.where(y == 0, 1.0, -1.0)[:, None]
    assert_allclose(X, sign * on_arm0, atol=1e-5)


def test_spiral_parameter_is_spread_as_documented():
    # θ = θ_max · √u with u uniform, so r² = u must be uniform on [0, 1] on both arms.
    X, y = make_spirals(2000, noise=0, random_state=1)
    for arm in (0, 1):
        radius_sq = (X[y == arm].astype(np.float64) ** 2).sum(axis=1)
        assert kstest(radius_sq, "uniform").pvalue > 0.01


def test_spiral_noise_is_gaussian_with_the_given_std():
    # The noise is the last draw before the shuffle, so the same seed gives the same clean
    # points and row order; the difference is noise alone.
    clean, y_clean = make_spirals(3000, noise=0, random_state=2)
    noisy, y_noisy = make_spirals(3000, noise=0.2, random_state=2)
    assert_array_equal(y_clean, y_noisy)
    residual = (noisy - clean).astype(np.float64).ravel()
    assert abs(residual.mean()) < 0.01  # 4 standard errors of 0.2 / √6000
    assert abs(residual.std() - 0.2) < 0.01


def test_spirals_are_learnable_by_nearest_neighbours_but_not_linearly():
    X, y = make_spirals(1000, noise=0.05, random_state=0)
    X_test, y_test = make_spirals(1000, noise=0.05, random_state=1)
    knn = KNeighborsClassifier(n_neighbors=5).fit(X, y)
    assert knn.score(X_test, y_test) > 0.95
    linear = LogisticRegression().fit(X, y)
    assert linear.score(X_test, y_test) < 0.75


# --------------------------------------------------------------------------- shapes


def _bounding_box(mask):
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def _noiseless_masks(label, image_size=16, n_samples=120):
    X, y = make_shapes(n_samples, n_classes=6, image_size=image_size, noise=0, random_state=label)
    return X[y == label, 0], X[y == label, 0] > 0


def test_shape_names_are_six_distinct_classes():
    assert len(SHAPE_NAMES) == len(set(SHAPE_NAMES)) == 6
    assert SHAPE_NAMES[:4] == ("square", "disk", "horizontal_bar", "vertical_bar")


@pytest.mark.parametrize("noise", [0.0, 0.1, 1.0])
def test_shape_pixels_lie_in_the_unit_interval(noise):
    X, _ = make_shapes(200, noise=noise, random_state=0)
    assert X.min() >= 0
    assert X.max() <= 1
    if noise > 0:
        assert ((X > 0) & (X < 1)).mean() > 0.2  # noise is there, not clipped away


@pytest.mark.parametrize("image_size", [8, 16, 23])
def test_noiseless_images_have_one_intensity_in_the_documented_range(image_size):
    images, masks = _noiseless_masks(0, image_size)
    for image, mask in zip(images, masks, strict=True):
        values = np.unique(image[mask])
        assert values.size == 1
        assert 0.5 <= values[0] <= 1


@pytest.mark.parametrize("image_size", [8, 16, 23])
def test_squares_are_filled_squares(image_size):
    _, masks = _noiseless_masks(SHAPE_NAMES.index("square"), image_size)
    for mask in masks:
        height, width = _bounding_box(mask)
        assert height == width
        assert mask.sum() == height * width


@pytest.mark.parametrize("image_size", [8, 16, 23])
def test_disks_are_round_not_rectangles(image_size):
    _, masks = _noiseless_masks(SHAPE_NAMES.index("disk"), image_size)
    for mask in masks:
        height, width = _bounding_box(mask)
        assert height == width
        assert height % 2 == 1  # 2 · radius + 1 around a pixel centre
        assert mask.sum() < height * width
        rows, cols = np.nonzero(mask)
        box = mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert_array_equal(box, box[::-1])
        assert_array_equal(box, box.T)


@pytest.mark.parametrize(("name", "axis"), [("horizontal_bar", 1), ("vertical_bar", 0)])
def test_bars_are_filled_rectangles_along_their_axis(name, axis):
    _, masks = _noiseless_masks(SHAPE_NAMES.index(name))
    for mask in masks:
        extent = _bounding_box(mask)
        assert mask.sum() == extent[0] * extent[1]
        assert extent[axis] > extent[1 - axis]


def test_crosses_are_two_centred_bars():
    _, masks = _noiseless_masks(SHAPE_NAMES.index("cross"))
    for mask in masks:
        height, width = _bounding_box(mask)
        assert height == width
        assert mask.sum() < height * width
        rows, cols = np.nonzero(mask)
        box = mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert_array_equal(box, box[::-1])
        assert_array_equal(box, box[:, ::-1])
        assert_array_equal(box, box.T)


def test_triangles_widen_downwards_from_a_one_pixel_apex():
    _, masks = _noiseless_masks(SHAPE_NAMES.index("triangle"))
    for mask in masks:
        rows = np.flatnonzero(mask.any(axis=1))
        widths = mask[rows].sum(axis=1)
        assert widths[0] == 1
        assert np.all(np.diff(widths) >= 0)
        assert widths[-1] > widths[0]
        assert mask.sum() < len(rows) * widths[-1]


def test_shapes_are_linearly_learnable_with_default_noise():
    X, y = make_shapes(1000, random_state=0)
    X_test, y_test = make_shapes(500, random_state=1)
    linear = LogisticRegression(max_iter=1000).fit(_flat(X), y)
    assert linear.score(_flat(X_test), y_test) > 0.6  # chance is 0.25


def test_class_mean_images_differ_beyond_sampling_noise():
    X, y = make_shapes(2000, random_state=0)
    means, within = [], []
    for label in range(4):
        images = _flat(X[y == label]).astype(np.float64)
        half = len(images) // 2
        within.append(np.linalg.norm(images[:half].mean(0) - images[half:].mean(0)))
        means.append(images.mean(0))
    between = [np.linalg.norm(a - b) for i, a in enumerate(means) for b in means[i + 1 :]]
    assert min(between) > 2 * max(within)


# --------------------------------------------------------------------------- modules


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_mlp_has_depth_hidden_layers_and_returns_logits(depth):
    X, _ = make_spirals(10, random_state=0)
    with torch.random.fork_rng():
        module = MLP(n_features_in=2, n_classes=3, hidden=8, depth=depth)
    linears = [layer for layer in module.modules() if isinstance(layer, nn.Linear)]
    assert len(linears) == depth + 1
    assert module(torch.from_numpy(X)).shape == (10, 3)


@pytest.mark.parametrize(("image_size", "in_channels"), [(8, 1), (16, 1), (21, 3)])
def test_small_cnn_returns_logits_for_any_image_size(image_size, in_channels):
    X, _ = make_shapes(6, image_size=image_size, random_state=0)
    X = np.repeat(X, in_channels, axis=1)
    with torch.random.fork_rng():
        module = SmallCNN(n_classes=4, in_channels=in_channels, width=4)
    assert module(torch.from_numpy(X)).shape == (6, 4)


def test_small_cnn_with_batchnorm_trains_on_two_images():
    X, _ = make_shapes(2, n_classes=2, random_state=0)
    with torch.random.fork_rng():  # initialisation draws from torch's global generator
        module = SmallCNN(n_classes=2, batchnorm=True).train()
    assert sum(isinstance(layer, nn.BatchNorm2d) for layer in module.modules()) == 2
    logits = module(torch.from_numpy(X))
    logits.sum().backward()
    assert logits.shape == (2, 2)
    assert all(p.grad is not None for p in module.parameters())


def test_mlp_learns_the_spirals_through_an_estimator():
    X, y = make_spirals(500, random_state=0)
    clf = DeepEnsembleClassifier(
        MLP,
        module__hidden=128,
        n_estimators=1,
        max_epochs=40,
        lr=0.1,
        optimizer__momentum=0.9,
        batch_size=64,
        random_state=0,
    )
    assert clf.fit(X, y).score(X, y) > 0.9


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("make", "kwargs", "match"),
    [
        (make_spirals, {"n_samples": 1}, "n_samples"),
        (make_spirals, {"n_samples": 10.0}, "n_samples"),
        (make_spirals, {"n_samples": True}, "n_samples"),
        (make_spirals, {"n_turns": 0}, "n_turns"),
        (make_spirals, {"n_turns": math.inf}, "n_turns"),
        (make_spirals, {"noise": -0.1}, "noise"),
        (make_spirals, {"noise": math.nan}, "noise"),
        (make_spirals, {"noise": "0.1"}, "noise"),
        (make_shapes, {"image_size": 7}, "image_size"),
        (make_shapes, {"image_size": 16.0}, "image_size"),
        (make_shapes, {"n_classes": 1}, "n_classes"),
        (make_shapes, {"n_classes": 7}, "n_classes"),
        (make_shapes, {"n_samples": 3, "n_classes": 4}, "n_samples"),
        (make_shapes, {"noise": -1}, "noise"),
        (make_shapes, {"noise": math.inf}, "noise"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_them(make, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)
