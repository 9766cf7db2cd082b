"""Embedded demo data and the demo modules used by examples, benchmarks and docs.

Nothing is downloaded: :func:`make_spirals` (the two-spirals problem of the simplex paper's
Section 5.3) and :func:`make_shapes` (small synthetic images for convolutional networks) are
generated from a seed. :class:`MLP` and :class:`SmallCNN` are the modules the examples train
on them; their constructors take ``n_features_in`` / ``n_classes``, which the estimators fill
from the data.

Every generator draws from ``check_random_state(random_state)`` only: given a seed or a
``RandomState``, the global NumPy and torch random states are left alone (``None`` means
NumPy's global generator, as everywhere in scikit-learn). Torch is not used for the data.

Robustness to dataset shift is evaluated with :func:`corrupt`, which applies one of the
corruptions :data:`IMAGE_CORRUPTIONS` or :data:`TABULAR_CORRUPTIONS` at a severity 0 to 5.
"""

from __future__ import annotations

import numbers
from itertools import pairwise

import numpy as np
from sklearn.utils import check_random_state
from torch import nn

__all__ = [
    "IMAGE_CORRUPTIONS",
    "MLP",
    "SHAPE_NAMES",
    "TABULAR_CORRUPTIONS",
    "SmallCNN",
    "corrupt",
    "make_shapes",
    "make_spirals",
]

SHAPE_NAMES = ("square", "disk", "horizontal_bar", "vertical_bar", "cross", "triangle")
"""The classes of :func:`make_shapes`, in label order (label ``k`` is ``SHAPE_NAMES[k]``)."""

# Smallest image on which every shape fits at its minimum size and stays recognisable: below
# radius 2 (5 px across) a pixel disk is a plus sign or a 3x3 square.
_MIN_IMAGE_SIZE = 8


# --------------------------------------------------------------------------- validation


def _check_int(value, name, *, low):
    """Return ``value`` as an int, or raise ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}.")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}.")
    return int(value)


def _check_float(value, name, *, positive=False):
    """Return ``value`` as a finite float (>= 0, or > 0 if ``positive``) or raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}.")
    value = float(value)
    if not np.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value}.")
    return value


def _balanced_labels(n_samples, n_classes):
    """Labels ``0..n_classes-1`` with counts differing by at most one (lower labels first)."""
    return np.arange(n_samples, dtype=np.int64) % n_classes


# --------------------------------------------------------------------------- spirals


def make_spirals(n_samples=1000, *, n_turns=1.5, noise=0.05, random_state=None):
    """Two interleaved spirals, the classic two-spirals classification problem.

    Arm 0 is the Archimedean spiral ``r = θ / θ_max`` at angle ``θ``, for
    ``θ ∈ [0, θ_max]`` with ``θ_max = 2π · n_turns``; arm 1 is arm 0 rotated by π
    (``x₁(θ) = −x₀(θ)``). So every point lies in the unit disk before noise, and neighbouring
    windings of the two arms are ``1 / (2 · n_turns)`` apart radially. The parameter is drawn
    as ``θ = θ_max · √u`` with ``u`` uniform on ``[0, 1]``: the arc length of an Archimedean
    spiral grows like ``θ²``, so points are spread roughly uniformly along each arm rather than
    crowded at the centre, where the arms meet.

    Parameters
    ----------
    n_samples : int, default=1000
        Total number of points, at least 2. Class 0 gets ``ceil(n_samples / 2)`` of them,
        class 1 the rest.
    n_turns : float, default=1.5
        Number of windings of each arm (> 0). The two-spirals notebook accompanying
        Benton et al. (2021) draws its arms over 600°, i.e. ``n_turns=5/3``; 1.5 is a little
        easier, so that the small MLP of the examples learns it in a few seconds. More turns
        make a harder problem (the arms get closer together).
    noise : float, default=0.05
        Standard deviation of the isotropic Gaussian noise added to each coordinate (>= 0),
        in units of the outer radius. That notebook's noise is about 0.064 in these units.
    random_state : int, RandomState instance or None, default=None
        Seeds the parameters, the noise and the row order.

    Returns
    -------
    X : ndarray of shape (n_samples, 2), dtype float32
        The points, in shuffled order; coordinates lie in ``[-1, 1]`` up to the noise.
    y : ndarray of shape (n_samples,), dtype int64
        The arm of each point, 0 or 1.

    Raises
    ------
    ValueError
        If ``n_samples`` is not an integer >= 2, ``n_turns`` is not finite and > 0, or
        ``noise`` is not finite and >= 0.

    References
    ----------
    .. [1] Benton, G. W., Maddox, W. J., Lotfi, S. and Wilson, A. G. "Loss Surface Simplexes
       for Mode Connecting Volumes and Fast Ensembling." ICML 2021, Section 5.3.
    .. [2] Huang, W. R., Emam, Z., Goldblum, M., Fowl, L., Terry, J. K., Huang, F. and
       Goldstein, T. "Understanding Generalization through Visualizations." 2019.
    .. [3] Lang, K. J. and Witbrock, M. J. "Learning to Tell Two Spirals Apart."
       Proceedings of the 1988 Connectionist Models Summer School.

    Examples
    --------
    >>> import numpy as np
    >>> from simplexens.datasets import make_spirals
    >>> X, y = make_spirals(101, random_state=0)
    >>> X.shape, X.dtype, y.dtype
    ((101, 2), dtype('float32'), dtype('int64'))
    >>> np.bincount(y).tolist()
    [51, 50]
    """
    n_samples = _check_int(n_samples, "n_samples", low=2)
    n_turns = _check_float(n_turns, "n_turns", positive=True)
    noise = _check_float(noise, "noise")
    rng = check_random_state(random_state)
    y = _balanced_labels(n_samples, 2)
    theta_max = 2 * np.pi * n_turns
    theta = theta_max * np.sqrt(rng.uniform(size=n_samples))
    radius = theta / theta_max
    arm0 = np.column_stack([radius * np.cos(theta), radius * np.sin(theta)])
    X = np.where(y[:, None] == 0, arm0, -arm0)
    X += noise * rng.standard_normal(X.shape)
    order = rng.permutation(n_samples)
    return X[order].astype(np.float32), y[order]


# --------------------------------------------------------------------------- shapes
#
# Each drawer takes (rng, n, size) and returns boolean masks of shape (n, size, size). Sizes
# and positions are integers, so a square's pixels form an exact square and a disk (integer
# centre, integer radius >= 2) never degenerates into a rectangle.


def _column(values):
    """``values`` as shape (n, 1, 1), ready to broadcast against an image grid."""
    return np.asarray(values)[:, None, None]


def _grid(size):
    """Row and column indices of a ``size x size`` image, shapes (size, 1) and (1, size)."""
    return np.arange(size)[:, None], np.arange(size)[None, :]


def _rect(size, top, left, height, width):
    """Masks of axis-aligned rectangles; all arguments are integer arrays of shape (n,)."""
    rows, cols = _grid(size)
    top, left = _column(top), _column(left)
    return (
        (rows >= top)
        & (rows < top + _column(height))
        & (cols >= left)
        & (cols < left + _column(width))
    )


def _place(rng, size, extent):
    """Top/left offsets: centred, jittered by up to ``size // 8`` pixels, kept inside the image.

    The jitter is bounded so that the classes stay distinguishable by a linear model on the
    pixels (a CNN does not need this, but the demos compare both).
    """
    extent = np.asarray(extent)
    jitter = size // 8
    centred = (size - extent) // 2
    return np.clip(centred + rng.randint(-jitter, jitter + 1, size=extent.shape), 0, size - extent)


def _bar_sizes(rng, n, size):
    """Thickness in [2, max(2, size // 5)] and length in [size // 2, size - 2]."""
    thickness = rng.randint(2, max(2, size // 5) + 1, size=n)
    length = rng.randint(size // 2, size - 1, size=n)
    return thickness, length


def _square(rng, n, size):
    side = rng.randint(size // 4 + 1, size // 2 + 1, size=n)
    return _rect(size, _place(rng, size, side), _place(rng, size, side), side, side)


def _disk(rng, n, size):
    radius = rng.randint(2, max(2, size // 4) + 1, size=n)
    rows, cols = _grid(size)
    centre_row = _place(rng, size, 2 * radius + 1) + radius
    centre_col = _place(rng, size, 2 * radius + 1) + radius
    squared = (rows - _column(centre_row)) ** 2 + (cols - _column(centre_col)) ** 2
    return squared <= _column(radius) ** 2


def _horizontal_bar(rng, n, size):
    thickness, length = _bar_sizes(rng, n, size)
    top, left = _place(rng, size, thickness), _place(rng, size, length)
    return _rect(size, top, left, thickness, length)


def _vertical_bar(rng, n, size):
    return _horizontal_bar(rng, n, size).transpose(0, 2, 1)


def _cross(rng, n, size):
    thickness, length = _bar_sizes(rng, n, size)
    length -= (length - thickness) % 2  # same parity, so both bars share one centre
    top, left = _place(rng, size, length), _place(rng, size, length)
    inset = (length - thickness) // 2
    across = _rect(size, top + inset, left, thickness, length)
    down = _rect(size, top, left + inset, length, thickness)
    return across | down


def _triangle(rng, n, size):
    """Upward isosceles triangles: row ``d`` below the apex spans ``|col - centre| <= d·slope``
    rounded to the nearest integer (so the row below the apex is already 3 pixels wide)."""
    height = rng.randint(size // 4 + 2, (size + 1) // 2 + 1, size=n)
    slope = rng.uniform(0.6, 1.0, size=n)
    half_base = np.floor((height - 1) * slope + 0.5).astype(int)
    top = _place(rng, size, height)
    centre = _place(rng, size, 2 * half_base + 1) + half_base
    rows, cols = _grid(size)
    depth = rows - _column(top)
    inside = (depth >= 0) & (depth < _column(height))
    return inside & (np.abs(cols - _column(centre)) <= np.floor(depth * _column(slope) + 0.5))


_DRAWERS = (_square, _disk, _horizontal_bar, _vertical_bar, _cross, _triangle)


def make_shapes(n_samples=1000, *, image_size=16, n_classes=4, noise=0.1, random_state=None):
    """Small grey-scale images of simple shapes, a demo data set for convolutional networks.

    Class ``k`` is the shape ``SHAPE_NAMES[k]``; ``n_classes`` takes the first ones. With
    ``s = image_size``, the random integer sizes are:

    - ``"square"``: filled, side ``s // 4 + 1`` to ``s // 2``;
    - ``"disk"``: filled, radius 2 to ``max(2, s // 4)`` around a pixel centre;
    - ``"horizontal_bar"``, ``"vertical_bar"``: thickness 2 to ``max(2, s // 5)``, length
      ``s // 2`` to ``s - 2``;
    - ``"cross"``: a horizontal and a vertical bar of those sizes sharing their centre (the
      length shortened by one where its parity differs from the thickness's);
    - ``"triangle"``: upward isosceles, height ``s // 4 + 2`` to ``(s + 1) // 2``, half-base
      0.6 to 1 times its height.

    Each shape sits at the image centre shifted by a random integer of at most ``s // 8``
    pixels per axis (less where the edge stops it): enough to need translation-tolerant
    features, little enough that a linear model on the pixels still does clearly better than
    chance. Its intensity is uniform in ``[0.5, 1]`` on a black background; Gaussian pixel
    noise of std ``noise`` is then added and the result clipped to ``[0, 1]``.

    Parameters
    ----------
    n_samples : int, default=1000
        Number of images, at least ``n_classes``. Classes are balanced: their counts differ
        by at most one, the lower labels getting the extra images.
    image_size : int, default=16
        Height and width of the images, at least 8.
    n_classes : int, default=4
        Number of shape classes, from 2 to ``len(SHAPE_NAMES)`` (6).
    noise : float, default=0.1
        Standard deviation of the Gaussian noise added to every pixel (>= 0).
    random_state : int, RandomState instance or None, default=None
        Seeds shapes, positions, sizes, intensities, noise and the row order.

    Returns
    -------
    X : ndarray of shape (n_samples, 1, image_size, image_size), dtype float32
        The images, in shuffled order, with values in ``[0, 1]``.
    y : ndarray of shape (n_samples,), dtype int64
        The class of each image, in ``range(n_classes)``.

    Raises
    ------
    ValueError
        If an argument is out of range or of the wrong type; the message names it.

    See Also
    --------
    SmallCNN : a convolutional network for these images.

    Examples
    --------
    >>> import numpy as np
    >>> from simplexens.datasets import SHAPE_NAMES, make_shapes
    >>> X, y = make_shapes(10, n_classes=3, random_state=0)
    >>> X.shape, X.dtype, np.bincount(y).tolist()
    ((10, 1, 16, 16), dtype('float32'), [4, 3, 3])
    >>> SHAPE_NAMES[:3]
    ('square', 'disk', 'horizontal_bar')
    """
    n_classes = _check_int(n_classes, "n_classes", low=2)
    if n_classes > len(SHAPE_NAMES):
        raise ValueError(f"n_classes must be <= {len(SHAPE_NAMES)}, got {n_classes}.")
    n_samples = _check_int(n_samples, "n_samples", low=n_classes)
    image_size = _check_int(image_size, "image_size", low=_MIN_IMAGE_SIZE)
    noise = _check_float(noise, "noise")
    rng = check_random_state(random_state)
    y = _balanced_labels(n_samples, n_classes)
    masks = np.empty((n_samples, image_size, image_size), dtype=bool)
    for label in range(n_classes):
        rows = np.flatnonzero(y == label)
        masks[rows] = _DRAWERS[label](rng, rows.size, image_size)
    X = masks * rng.uniform(0.5, 1.0, size=(n_samples, 1, 1))
    X = np.clip(X + noise * rng.standard_normal(X.shape), 0.0, 1.0)
    order = rng.permutation(n_samples)
    return X[order, None].astype(np.float32), y[order]


# --------------------------------------------------------------------------- demo modules


class MLP(nn.Module):
    """A multilayer perceptron for tabular data, sized from the data.

    ``depth`` hidden layers of width ``hidden`` with ReLU activations, then a linear layer to
    ``n_classes`` outputs: one logit per class for a classifier, the columns a regressor's
    likelihood asks for (a mean and a raw scale per target under ``"gaussian"``).

    Parameters
    ----------
    n_features_in : int
        Width of the input, filled from ``X.shape[1]`` by the estimators.
    n_classes : int
        Number of outputs, filled by the estimators: the number of classes, or a
        regressor's output width.
    hidden : int, default=64
        Width of each hidden layer.
    depth : int, default=2
        Number of hidden layers; 0 gives a linear model.

    Examples
    --------
    >>> from simplexens import DeepEnsembleClassifier
    >>> from simplexens.datasets import MLP, make_spirals
    >>> X, y = make_spirals(200, random_state=0)
    >>> clf = DeepEnsembleClassifier(MLP, module__hidden=32, max_epochs=5, random_state=0)
    >>> clf.fit(X, y).predict_proba(X).shape
    (200, 2)
    """

    def __init__(self, n_features_in, n_classes, hidden=64, depth=2):
        super().__init__()
        widths = [n_features_in] + [hidden] * depth
        layers = []
        for width_in, width_out in pairwise(widths):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], n_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        """Map inputs of shape (n, n_features_in) to logits of shape (n, n_classes)."""
        return self.layers(x)


def _conv_block(in_channels, out_channels, batchnorm):
    """3x3 convolution (padding 1), optional BatchNorm2d, ReLU."""
    # A bias before BatchNorm is cancelled by its mean subtraction.
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not batchnorm)
    norm = nn.BatchNorm2d(out_channels) if batchnorm else nn.Identity()
    return nn.Sequential(conv, norm, nn.ReLU())


class SmallCNN(nn.Module):
    """A two-layer convolutional network for small images of any size.

    ``conv(width) → pool 2 → conv(2·width) → global average pool → linear``, each convolution
    3x3 with padding 1, followed by an optional BatchNorm2d and a ReLU. Global average
    pooling makes the head independent of the image size, so the same class serves
    ``(n, C, 8, 8)`` and ``(n, C, 32, 32)`` inputs.

    Parameters
    ----------
    n_classes : int
        Number of outputs (logits), filled from the data by the estimators.
    in_channels : int, default=1
        Number of channels ``C`` of the input images (n, C, H, W).
    width : int, default=16
        Channels of the first convolution; the second has ``2 * width``.
    batchnorm : bool, default=False
        Whether to put a BatchNorm2d after each convolution (the estimators recalibrate its
        statistics for every ensemble member).

    Examples
    --------
    >>> import torch
    >>> from simplexens.datasets import SmallCNN
    >>> SmallCNN(n_classes=4)(torch.zeros(5, 1, 16, 16)).shape
    torch.Size([5, 4])
    """

    def __init__(self, n_classes, in_channels=1, width=16, batchnorm=False):
        super().__init__()
        self.features = nn.Sequential(
            _conv_block(in_channels, width, batchnorm),
            nn.MaxPool2d(2),
            _conv_block(width, 2 * width, batchnorm),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, n_classes)

    def forward(self, x):
        """Map images of shape (n, in_channels, H, W) to logits of shape (n, n_classes)."""
        return self.head(self.features(x))


# --------------------------------------------------------------------------- corruptions

IMAGE_CORRUPTIONS = ("gaussian_noise", "blur", "contrast", "pixel_shift", "occlusion")
"""The corruptions :func:`corrupt` applies to images of shape (n, C, H, W)."""

TABULAR_CORRUPTIONS = ("noise", "feature_dropout", "scaling")
"""The corruptions :func:`corrupt` applies to tabular data of shape (n, d)."""

_MAX_SEVERITY = 5

# The parameter of each corruption at severities 1..5 (index severity - 1); see the table in
# the docstring of `corrupt`, which must be kept in step with this one.
_SEVERITIES = {
    # images, values in [0, 1]
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),  # noise std
    "blur": (0.5, 0.75, 1.0, 1.5, 2.0),  # Gaussian kernel std, in pixels
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # factor kept of the deviation from the mean
    "pixel_shift": (1, 2, 3, 4, 5),  # shift, in pixels
    "occlusion": (0.2, 0.3, 0.4, 0.5, 0.6),  # patch side, as a fraction of min(H, W)
    # tabular, relative to each feature's standard deviation
    "noise": (0.1, 0.2, 0.4, 0.7, 1.0),  # noise std, in feature stds
    "feature_dropout": (0.05, 0.1, 0.2, 0.35, 0.5),  # probability that an entry is replaced
    "scaling": (0.1, 0.2, 0.3, 0.5, 0.75),  # s of the per-feature factor exp(N(0, s²))
}

# A Gaussian kernel is truncated at this many standard deviations (it keeps 99.7% of the mass
# before renormalisation).
_BLUR_TRUNCATE = 3.0


def _check_corruption_input(X, kind, severity):
    """Validate the arguments of `corrupt`; return X as float64 and severity as an int."""
    X = np.asarray(X)
    if X.dtype.kind not in "biuf":
        raise ValueError(f"X must be a numeric array, got dtype {X.dtype}.")
    if X.ndim not in (2, 4):
        raise ValueError(
            "X must be images of shape (n, C, H, W) (ndim 4) or tabular data of shape (n, d) "
            f"(ndim 2), got ndim={X.ndim}."
        )
    if X.size == 0:
        raise ValueError(f"X must not be empty, got shape {X.shape}.")
    X = X.astype(np.float64)
    if not np.all(np.isfinite(X)):
        raise ValueError("X must be finite; it contains NaN or infinite values.")
    if X.ndim == 4:
        valid, other, family = IMAGE_CORRUPTIONS, TABULAR_CORRUPTIONS, "images (ndim 4)"
    else:
        valid, other, family = TABULAR_CORRUPTIONS, IMAGE_CORRUPTIONS, "tabular data (ndim 2)"
    if not isinstance(kind, str):
        raise ValueError(f"kind must be a string, one of {valid} for {family}; got {kind!r}.")
    if kind in other:
        expected = "images of shape (n, C, H, W)" if X.ndim == 2 else "data of shape (n, d)"
        family_of_kind = "an image" if X.ndim == 2 else "a tabular"
        raise ValueError(
            f"kind={kind!r} is {family_of_kind} corruption and needs {expected}, got X of "
            f"shape {X.shape}; the corruptions for {family} are {valid}."
        )
    if kind not in valid:
        raise ValueError(f"Unknown kind={kind!r} for {family}; valid kinds are {valid}.")
    severity = _check_int(severity, "severity", low=0)
    if severity > _MAX_SEVERITY:
        raise ValueError(f"severity must be <= {_MAX_SEVERITY}, got {severity}.")
    return X, severity


def _gaussian_kernel(sigma):
    """Normalised 1-D Gaussian weights of std ``sigma`` on ``-r..r``, ``r = ceil(3·sigma)``."""
    radius = int(np.ceil(_BLUR_TRUNCATE * sigma))
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    return weights / weights.sum()


def _convolve_axis(X, weights, axis):
    """Convolve ``X`` along ``axis`` with the symmetric ``weights``, zero padding, same size."""
    X = np.moveaxis(X, axis, -1)
    radius = len(weights) // 2
    length = X.shape[-1]
    padded = np.pad(X, [(0, 0)] * (X.ndim - 1) + [(radius, radius)])
    out = np.zeros_like(X)
    for offset, weight in enumerate(weights):
        out += weight * padded[..., offset : offset + length]
    return np.moveaxis(out, -1, axis)


def _blur(X, sigma):
    weights = _gaussian_kernel(sigma)
    return _convolve_axis(_convolve_axis(X, weights, axis=2), weights, axis=3)


def _pixel_shift(X, shift, rng):
    """Shift each image by ``shift`` pixels up, down, left or right (drawn per image)."""
    n, _, height, width = X.shape
    direction = rng.randint(4, size=n)
    out = np.zeros_like(X)
    if shift < height:
        down, up = direction == 0, direction == 1
        out[down, :, shift:, :] = X[down, :, : height - shift, :]
        out[up, :, : height - shift, :] = X[up, :, shift:, :]
    if shift < width:
        right, left = direction == 2, direction == 3
        out[right, :, :, shift:] = X[right, :, :, : width - shift]
        out[left, :, :, : width - shift] = X[left, :, :, shift:]
    return out


def _occlusion_side(fraction, height, width):
    """Side of the occluding square: ``round(fraction · min(H, W))``, at least 1 pixel."""
    return max(1, int(np.floor(fraction * min(height, width) + 0.5)))


def _occlusion(X, fraction, rng):
    """Zero a square patch, at a uniformly drawn position inside each image, in all channels."""
    n, _, height, width = X.shape
    side = _occlusion_side(fraction, height, width)
    top = rng.randint(0, height - side + 1, size=n)[:, None, None]
    left = rng.randint(0, width - side + 1, size=n)[:, None, None]
    rows, cols = np.arange(height)[:, None], np.arange(width)[None, :]
    patch = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    return np.where(patch[:, None], 0.0, X)


def _corrupt_images(X, kind, value, rng):
    if kind == "gaussian_noise":
        out = X + value * rng.standard_normal(X.shape)
    elif kind == "blur":
        out = _blur(X, value)
    elif kind == "contrast":
        mean = X.mean(axis=(1, 2, 3), keepdims=True)
        out = mean + value * (X - mean)
    elif kind == "pixel_shift":
        out = _pixel_shift(X, value, rng)
    else:  # occlusion
        out = _occlusion(X, value, rng)
    return np.clip(out, 0.0, 1.0)


def _corrupt_tabular(X, kind, value, rng):
    if kind == "noise":
        return X + value * X.std(axis=0) * rng.standard_normal(X.shape)
    if kind == "feature_dropout":
        dropped = rng.uniform(size=X.shape) < value
        return np.where(dropped, X.mean(axis=0), X)
    # scaling
    return X * np.exp(value * rng.standard_normal(X.shape[1]))


def corrupt(X, kind, severity, random_state=None):
    """Corrupt images or tabular data to simulate a dataset shift, at a given severity.

    The corruptions follow the benchmarks of predictive uncertainty under dataset shift
    [1]_ [2]_: a model is trained on clean data and evaluated (accuracy, calibration) on
    ``corrupt(X_test, kind, s)`` for severities ``s = 1..5``; severity 0 is the clean data.

    Image corruptions, for ``X`` of shape (n, C, H, W) with values in ``[0, 1]`` (the result is
    clipped to ``[0, 1]``):

    - ``"gaussian_noise"``: adds independent Gaussian noise of std ``σ`` to every pixel.
    - ``"blur"``: Gaussian blur of std ``σ`` pixels over the spatial axes H and W (each channel
      separately), by a separable kernel truncated at ``ceil(3σ)`` pixels and renormalised;
      the image is zero-padded, so the mean is preserved except for mass blurred across the
      border.
    - ``"contrast"``: ``m + c · (x − m)``, with ``m`` the mean of each image over its channels
      and pixels; the mean is preserved and the standard deviation multiplied by ``c``.
    - ``"pixel_shift"``: translates each image by ``k`` pixels up, down, left or right (the
      direction drawn uniformly per image); vacated pixels are 0, pixels shifted out are lost.
    - ``"occlusion"``: sets a square patch of side ``round(f · min(H, W))`` (at least 1) to 0
      in all channels, at a position drawn uniformly per image among those where the patch
      lies wholly inside the image. For 16 x 16 images the sides are 3, 5, 6, 8 and 10.

    Tabular corruptions, for ``X`` of shape (n, d) on any scale. They are relative to the
    per-feature mean ``μ_j`` and standard deviation ``σ_j`` (population std, ``ddof=0``)
    computed on ``X`` itself (so corrupting a subset of the rows uses that subset's
    statistics); a constant feature gets no noise.

    - ``"noise"``: adds Gaussian noise of std ``a · σ_j`` to feature ``j``.
    - ``"feature_dropout"``: replaces each entry independently with probability ``p`` by its
      feature's mean ``μ_j`` (so a fraction ``p`` of the entries, in expectation).
    - ``"scaling"``: multiplies feature ``j`` by ``exp(s · z_j)``, ``z_j ~ N(0, 1)`` drawn once
      per feature (a change of units, e.g. a miscalibrated sensor).

    The parameter of each corruption by severity:

    ===================  ====================================  ====  ====  ====  ====  ====
    kind                 parameter                             1     2     3     4     5
    ===================  ====================================  ====  ====  ====  ====  ====
    ``gaussian_noise``   noise std ``σ``                       0.08  0.12  0.18  0.26  0.38
    ``blur``             kernel std ``σ`` (pixels)             0.5   0.75  1.0   1.5   2.0
    ``contrast``         factor ``c`` kept                     0.75  0.5   0.4   0.3   0.15
    ``pixel_shift``      shift ``k`` (pixels)                  1     2     3     4     5
    ``occlusion``        patch side ``f`` / min(H, W)          0.2   0.3   0.4   0.5   0.6
    ``noise``            noise std ``a`` (feature stds)        0.1   0.2   0.4   0.7   1.0
    ``feature_dropout``  probability ``p`` per entry           0.05  0.1   0.2   0.35  0.5
    ``scaling``          log-factor std ``s``                  0.1   0.2   0.3   0.5   0.75
    ===================  ====================================  ====  ====  ====  ====  ====

    With a given seed the random draws do not depend on the severity (the same noise
    directions, shift directions and dropped entries at every severity, the occlusion
    position aside): the distance to the clean data grows with the severity.

    Parameters
    ----------
    X : array-like of shape (n, C, H, W) or (n, d)
        Images (ndim 4) or tabular data (ndim 2); finite, numeric, not empty. Not modified.
    kind : str
        One of :data:`IMAGE_CORRUPTIONS` for images, of :data:`TABULAR_CORRUPTIONS` for
        tabular data.
    severity : int
        From 0 to 5. Severity 0 returns an unchanged copy of ``X`` (as float32).
    random_state : int, RandomState instance or None, default=None
        Seeds the noise, shift directions, occlusion positions, dropped entries and scaling
        factors. ``"blur"`` and ``"contrast"`` are deterministic and draw nothing.

    Returns
    -------
    X_corrupted : ndarray of the shape of X, dtype float32
        A new array; computed in float64 and cast.

    Raises
    ------
    ValueError
        If ``X`` is not 2-D or 4-D, not numeric, empty or not finite; if ``kind`` is unknown
        for that kind of input (the message lists the valid ones) or belongs to the other
        kind of input; or if ``severity`` is not an integer from 0 to 5.

    References
    ----------
    .. [1] Hendrycks, D. and Dietterich, T. "Benchmarking Neural Network Robustness to Common
       Corruptions and Perturbations." ICLR 2019.
    .. [2] Ovadia, Y., Fertig, E., Ren, J., Nado, Z., Sculley, D., Nowozin, S., Dillon, J. V.,
       Lakshminarayanan, B. and Snoek, J. "Can You Trust Your Model's Uncertainty? Evaluating
       Predictive Uncertainty Under Dataset Shift." NeurIPS 2019.

    Examples
    --------
    >>> import numpy as np
    >>> from simplexens.datasets import corrupt, make_shapes
    >>> X, y = make_shapes(20, random_state=0)
    >>> X_blurred = corrupt(X, "blur", 3)
    >>> X_blurred.shape, X_blurred.dtype
    ((20, 1, 16, 16), dtype('float32'))
    >>> bool(np.array_equal(corrupt(X, "occlusion", 0), X))
    True
    >>> rms = [np.sqrt(np.mean((corrupt(X, "gaussian_noise", s, 0) - X) ** 2)) for s in (1, 5)]
    >>> bool(rms[0] < rms[1])
    True
    """
    X, severity = _check_corruption_input(X, kind, severity)
    if severity == 0:
        return X.astype(np.float32)
    value = _SEVERITIES[kind][severity - 1]
    rng = check_random_state(random_state)
    if X.ndim == 4:
        out = _corrupt_images(X, kind, value, rng)
    else:
        out = _corrupt_tabular(X, kind, value, rng)
    return out.astype(np.float32)
