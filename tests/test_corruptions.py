"""Tests for simplexens.datasets.corrupt: identity at severity 0, monotone strength, seeding,
the documented effect of each corruption, and validation."""

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from simplexens.datasets import (
    _SEVERITIES,
    IMAGE_CORRUPTIONS,
    TABULAR_CORRUPTIONS,
    corrupt,
    make_shapes,
)


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

RANDOM_IMAGE_KINDS = ("gaussian_noise", "pixel_shift", "occlusion")
DETERMINISTIC_IMAGE_KINDS = ("blur", "contrast")
SEVERITIES = range(1, 6)


@pytest.fixture(scope="module")
def images():
    X, _ = make_shapes(50, random_state=0)
    return X


@pytest.fixture(scope="module")
def tabular():
    X, _ = make_classification(200, n_features=8, random_state=0)
    return StandardScaler().fit_transform(X).astype(np.float32)


@pytest.fixture
def data(request, images, tabular):
    """The clean data matching the corruption ``kind`` the test is parametrised with."""
    return images if request.node.callspec.params["kind"] in IMAGE_CORRUPTIONS else tabular


ALL_KINDS = pytest.mark.parametrize("kind", IMAGE_CORRUPTIONS + TABULAR_CORRUPTIONS)


def _rms(a, b):
    return float(np.sqrt(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def _total_variation(X):
    return np.abs(np.diff(X, axis=2)).sum(axis=(1, 2, 3)) + np.abs(np.diff(X, axis=3)).sum(
        axis=(1, 2, 3)
    )


def _zero_bordered_images(n=20, border=8):
    """make_shapes images padded with a zero border wider than the largest blur kernel."""
    X, _ = make_shapes(n, random_state=1)
    return np.pad(X, [(0, 0), (0, 0), (border, border), (border, border)])


# --------------------------------------------------------------------------- common


def test_severity_table_covers_every_kind_with_five_levels():
    assert set(_SEVERITIES) == set(IMAGE_CORRUPTIONS) | set(TABULAR_CORRUPTIONS)
    assert not set(IMAGE_CORRUPTIONS) & set(TABULAR_CORRUPTIONS)
    assert all(len(levels) == 5 for levels in _SEVERITIES.values())


@ALL_KINDS
def test_severity_zero_is_an_identity_copy(kind, data):
    out = corrupt(data, kind, 0, random_state=0)
    assert_array_equal(out, data)
    assert out.dtype == np.float32
    assert out is not data
    assert not np.shares_memory(out, data)


@ALL_KINDS
def test_distance_to_clean_data_grows_strictly_with_severity(kind, data):
    distances = [_rms(corrupt(data, kind, s, random_state=0), data) for s in SEVERITIES]
    assert distances[0] > 0
    assert np.all(np.diff(distances) > 0), distances


@ALL_KINDS
@pytest.mark.parametrize("severity", [0, 3, 5])
def test_input_untouched_and_output_float32_of_same_shape(kind, data, severity):
    X = data.astype(np.float64)  # another dtype than the output's, to see that it is cast
    before = X.copy()
    out = corrupt(X, kind, severity, random_state=0)
    assert_array_equal(X, before)
    assert out.dtype == np.float32
    assert out.shape == X.shape


@pytest.mark.parametrize("kind", IMAGE_CORRUPTIONS)
@pytest.mark.parametrize("severity", SEVERITIES)
def test_images_stay_in_the_unit_interval(kind, images, severity):
    out = corrupt(images, kind, severity, random_state=0)
    assert out.min() >= 0
    assert out.max() <= 1


@pytest.mark.parametrize("kind", RANDOM_IMAGE_KINDS + TABULAR_CORRUPTIONS)
def test_same_seed_same_output_other_seed_other_output(kind, images, tabular):
    X = images if kind in IMAGE_CORRUPTIONS else tabular
    assert_array_equal(corrupt(X, kind, 3, random_state=7), corrupt(X, kind, 3, random_state=7))
    assert not np.array_equal(
        corrupt(X, kind, 3, random_state=7), corrupt(X, kind, 3, random_state=8)
    )
    from_instance = corrupt(X, kind, 3, random_state=np.random.RandomState(7))
    assert_array_equal(from_instance, corrupt(X, kind, 3, random_state=7))


@pytest.mark.parametrize("kind", DETERMINISTIC_IMAGE_KINDS)
def test_deterministic_kinds_ignore_the_seed(kind, images):
    assert_array_equal(corrupt(images, kind, 4, random_state=0), corrupt(images, kind, 4))


def test_integer_input_is_accepted():
    X = np.arange(24).reshape(6, 4)
    out = corrupt(X, "noise", 2, random_state=0)
    assert out.dtype == np.float32
    assert_array_equal(corrupt(X, "noise", 0), X)


# --------------------------------------------------------------------------- images


@pytest.mark.parametrize("severity", SEVERITIES)
def test_gaussian_noise_is_clipped_additive_noise_of_the_documented_std(images, severity):
    sigma = _SEVERITIES["gaussian_noise"][severity - 1]
    out = corrupt(images, "gaussian_noise", severity, random_state=0)
    # The standard normal draw is the only one, so the noise can be reproduced.
    noise = np.random.RandomState(0).standard_normal(images.shape)
    assert_allclose(out, np.clip(images + sigma * noise, 0, 1), atol=1e-6)
    X = np.full((200, 1, 16, 16), 0.5, dtype=np.float32)
    residual = corrupt(X, "gaussian_noise", severity, random_state=0) - 0.5
    inside = np.abs(residual) < 0.5  # not clipped
    assert abs(residual[inside].mean()) < 0.1 * sigma
    if severity <= 2:  # 0.5 is at least 4 sigmas away: clipping is negligible
        assert abs(residual.std() - sigma) < 0.02 * sigma


@pytest.mark.parametrize("severity", SEVERITIES)
def test_blur_preserves_the_mean_of_zero_bordered_images_and_smooths(severity):
    X = _zero_bordered_images()
    out = corrupt(X, "blur", severity)
    assert_allclose(out.mean(axis=(1, 2, 3)), X.mean(axis=(1, 2, 3)), rtol=1e-5)
    assert np.all(_total_variation(out) < _total_variation(X))


def test_blur_matches_a_direct_two_dimensional_gaussian_convolution():
    X = np.zeros((1, 2, 21, 21))
    X[0, 0, 10, 10] = 1.0  # the impulse response is the kernel itself
    X[0, 1, 3, 15] = 0.5
    sigma = _SEVERITIES["blur"][2]
    out = corrupt(X, "blur", 3).astype(np.float64)
    radius = math.ceil(3 * sigma)
    offsets = np.arange(-radius, radius + 1)
    kernel_1d = np.exp(-(offsets**2) / (2 * sigma**2))
    kernel = np.outer(kernel_1d, kernel_1d) / kernel_1d.sum() ** 2
    expected = np.zeros((21, 21))
    expected[10 - radius : 11 + radius, 10 - radius : 11 + radius] = kernel
    assert_allclose(out[0, 0], expected, atol=1e-7)
    assert_allclose(out[0, 1].sum(), 0.5, rtol=1e-6)  # channels are blurred separately
    assert out[0, 1, 10, 10] == 0


@pytest.mark.parametrize("severity", SEVERITIES)
def test_contrast_scales_the_per_image_std_and_keeps_the_mean(images, severity):
    out = corrupt(images, "contrast", severity).astype(np.float64)
    X = images.astype(np.float64)
    factor = _SEVERITIES["contrast"][severity - 1]
    assert np.all(out.std(axis=(1, 2, 3)) < X.std(axis=(1, 2, 3)))
    assert_allclose(out.std(axis=(1, 2, 3)), factor * X.std(axis=(1, 2, 3)), rtol=1e-4)
    assert_allclose(out.mean(axis=(1, 2, 3)), X.mean(axis=(1, 2, 3)), rtol=1e-5)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_pixel_shift_translates_each_image_along_one_axis_with_zero_fill(images, severity):
    out = corrupt(images, "pixel_shift", severity, random_state=0)
    k = _SEVERITIES["pixel_shift"][severity - 1]
    directions = []
    for image, shifted in zip(images, out, strict=True):
        candidates = []
        for axis in (1, 2):
            for sign in (1, -1):
                expected = np.roll(image, sign * k, axis=axis)
                vacated = [slice(None)] * 3
                vacated[axis] = slice(0, k) if sign > 0 else slice(-k, None)
                expected[tuple(vacated)] = 0
                candidates.append(np.array_equal(shifted, expected))
        assert any(candidates)
        directions.append(candidates.index(True))
    assert len(set(directions)) == 4  # all four directions occur among 50 images


@pytest.mark.parametrize(("severity", "side"), [(1, 3), (2, 5), (3, 6), (4, 8), (5, 10)])
def test_occlusion_zeroes_a_square_of_the_documented_size(severity, side):
    X = np.ones((40, 3, 16, 16), dtype=np.float32)
    out = corrupt(X, "occlusion", severity, random_state=0)
    tops = set()
    for image in out:
        zero = image == 0
        assert_array_equal(zero, np.broadcast_to(zero[0], zero.shape))  # same in all channels
        rows, cols = np.flatnonzero(zero[0].any(axis=1)), np.flatnonzero(zero[0].any(axis=0))
        assert len(rows) == len(cols) == side
        assert zero[0].sum() == side * side  # a filled square
        assert np.all(image[~zero] == 1)
        tops.add((rows[0], cols[0]))
    assert len(tops) > 10  # the position is drawn per image


def test_occlusion_side_is_relative_to_the_smaller_image_side():
    X = np.ones((5, 1, 10, 30), dtype=np.float32)
    out = corrupt(X, "occlusion", 5, random_state=0)
    assert np.all((out == 0).sum(axis=(1, 2, 3)) == 6 * 6)


def test_a_linear_model_loses_accuracy_as_gaussian_noise_grows():
    X, y = make_shapes(300, random_state=0)
    X_test, y_test = make_shapes(400, random_state=1)
    model = LogisticRegression(max_iter=500).fit(X.reshape(len(X), -1), y)

    def accuracy(severity):
        noisy = corrupt(X_test, "gaussian_noise", severity, random_state=2)
        return model.score(noisy.reshape(len(noisy), -1), y_test)

    clean, mild, severe = accuracy(0), accuracy(1), accuracy(5)
    assert severe < mild
    assert severe < clean - 0.05


# --------------------------------------------------------------------------- tabular


@pytest.mark.parametrize("severity", SEVERITIES)
def test_tabular_noise_is_relative_to_each_feature_std(severity):
    rng = np.random.RandomState(0)
    scales = np.array([0.01, 1.0, 100.0])
    X = rng.standard_normal((5000, 3)) * scales + np.array([5.0, -3.0, 1000.0])
    residual = corrupt(X, "noise", severity, random_state=1).astype(np.float64) - X
    expected = _SEVERITIES["noise"][severity - 1] * X.std(axis=0)
    assert_allclose(residual.std(axis=0), expected, rtol=0.05)


def test_tabular_noise_leaves_a_constant_feature_alone(tabular):
    X = tabular.copy()
    X[:, 2] = 4.0
    out = corrupt(X, "noise", 5, random_state=0)
    assert np.all(out[:, 2] == 4.0)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_feature_dropout_replaces_the_documented_fraction_by_feature_means(severity):
    rng = np.random.RandomState(0)
    X = rng.standard_normal((1000, 5)) + np.arange(5)
    out = corrupt(X.astype(np.float32), "feature_dropout", severity, random_state=0)
    X32 = X.astype(np.float32)
    changed = out != X32
    p = _SEVERITIES["feature_dropout"][severity - 1]
    assert abs(changed.mean() - p) < 4 * np.sqrt(p * (1 - p) / changed.size)
    means = np.broadcast_to(X32.astype(np.float64).mean(axis=0), X.shape)
    assert_allclose(out[changed], means[changed], rtol=1e-6)


def test_feature_dropout_entries_are_nested_across_severities(tabular):
    changed = [corrupt(tabular, "feature_dropout", s, random_state=0) != tabular for s in (1, 5)]
    assert np.all(changed[1][changed[0]])


@pytest.mark.parametrize("severity", SEVERITIES)
def test_scaling_multiplies_each_feature_by_one_positive_factor(tabular, severity):
    out = corrupt(tabular, "scaling", severity, random_state=0).astype(np.float64)
    ratio = out / tabular.astype(np.float64)
    assert_allclose(ratio, np.broadcast_to(ratio[0], ratio.shape), rtol=1e-6)
    assert np.all(ratio[0] > 0)
    assert len(np.unique(ratio[0])) == tabular.shape[1]


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("X", "kwargs", "match"),
    [
        ("images", {"kind": "fog"}, r"Unknown kind='fog'.*gaussian_noise.*occlusion"),
        ("tabular", {"kind": "fog"}, r"Unknown kind='fog'.*noise.*feature_dropout.*scaling"),
        ("images", {"kind": None}, "kind must be a string"),
        ("tabular", {"kind": "blur"}, "'blur' is an image corruption"),
        ("tabular", {"kind": "gaussian_noise"}, "image corruption"),
        ("images", {"kind": "noise"}, "'noise' is a tabular corruption"),
        ("images", {"kind": "feature_dropout"}, "tabular corruption"),
        ("images", {"severity": 6}, "severity must be <= 5"),
        ("images", {"severity": -1}, "severity must be >= 0"),
        ("images", {"severity": 2.0}, "severity must be an integer"),
        ("tabular", {"severity": True}, "severity must be an integer"),
        ("tabular", {"severity": "3"}, "severity must be an integer"),
        ("nan", {}, "finite"),
        ("inf", {}, "finite"),
        ("3d", {}, "ndim=3"),
        ("1d", {}, "ndim=1"),
        ("empty", {}, "empty"),
        ("strings", {}, "numeric"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_the_problem(images, tabular, X, kwargs, match):
    bad = {
        "images": images,
        "tabular": tabular,
        "nan": np.where(np.arange(tabular.size).reshape(tabular.shape) == 5, np.nan, tabular),
        "inf": np.where(np.arange(tabular.size).reshape(tabular.shape) == 5, np.inf, tabular),
        "3d": images[:, 0],
        "1d": tabular[:, 0],
        "empty": tabular[:0],
        "strings": np.array([["a", "b"], ["c", "d"]]),
    }[X]
    default_kind = "blur" if bad.ndim == 4 else "noise"
    arguments = {"kind": default_kind, "severity": 1} | kwargs
    with pytest.raises(ValueError, match=match):
        corrupt(bad, arguments["kind"], arguments["severity"], random_state=0)
