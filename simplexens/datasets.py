"""Embedded demo data and the demo modules used by examples, benchmarks and docs.

Nothing is downloaded: :func:`make_spirals` (the two-spirals problem of the simplex paper's
Section 5.3) and :func:`make_shapes` (small synthetic images for convolutional networks) are
generated from a seed. :class:`MLP` and :class:`SmallCNN` are the modules the examples train
on them; their constructors take ``n_features_in`` / ``n_classes``, which the estimators fill
from the data.

Every generator draws from ``check_random_state(random_state)`` only: given a seed or a
``RandomState``, the global NumPy and torch random states are left alone (``None`` means
NumPy's global generator, as everywhere in scikit-learn). Torch is not used for the data.
"""

from __future__ import annotations

import numbers
from itertools import pairwise

import numpy as np
from sklearn.utils import check_random_state
from torch import nn

__all__ = ["MLP", "SHAPE_NAMES", "SmallCNN", "make_shapes", "make_spirals"]

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
    one logit per class.

    Parameters
    ----------
    n_features_in : int
        Width of the input, filled from ``X.shape[1]`` by the estimators.
    n_classes : int
        Number of outputs (logits), filled from the data by the estimators.
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
