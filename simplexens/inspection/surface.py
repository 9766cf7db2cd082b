"""Loss along paths and on planes of parameter space, evaluated many points at a time.

Every point of a path or a plane is an affine combination of a few parameter sets of the
estimator's module (members, simplex vertices, complex anchors, curve bends), so the points
are built as coefficients x anchors (as the estimators' own members are) and evaluated
together through a :class:`~simplexens.backends.functional.ParameterStack`, a chunk of
points per call, with BatchNorm statistics recomputed for every point when the module has
BatchNorm. No point is ever loaded into the module one ``state_dict`` at a time.

References
----------
.. [1] T. Garipov, P. Izmailov, D. Podoprikhin, D. Vetrov, A. G. Wilson. "Loss Surfaces,
   Mode Connectivity, and Fast Ensembling of DNNs." NeurIPS 2018 (loss along curves).
.. [2] G. W. Benton, W. J. Maddox, S. Lotfi, A. G. Wilson. "Loss Surface Simplexes for Mode
   Connecting Volumes and Fast Ensembling." ICML 2021, section 4 (planes through three
   parameter vectors, Gram-Schmidt basis, grid around their centroid).
"""

from __future__ import annotations

import numbers
import time

import numpy as np
import torch
from sklearn.base import is_regressor
from sklearn.utils import Bunch
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
from torch.func import functional_call

from ..backends.batching import batch_size_for, batch_slices
from ..backends.batchnorm import batchnorm_layers, recalibrate_batchnorm
from ..backends.functional import ParameterStack
from ..geometry.curves import curve_coefficients
from ..geometry.simplex import simplex_points
from ..geometry.subspace import flatten

#: Points evaluated together in one parameter stack.
POINTS_PER_STACK = 64


def parameter_sets(estimator) -> dict[str, list[dict[str, torch.Tensor]]]:
    """The named parameter sets of a fitted estimator that paths and planes can go through.

    Parameters
    ----------
    estimator : fitted simplexens estimator

    Returns
    -------
    dict of str to list of dict of str to Tensor
        ``"members"``: every member (parameters and buffers); ``"vertices"``: ESPRO's
        vertices, mode by mode (``n_modes * n_vertices``, mode ``i``'s vertex ``j`` at
        ``i * n_vertices + j``); ``"anchors"``: SPRO's modes then connectors, or a curve's
        bends (endpoints first and last). Vertices and anchors carry the first mode's
        buffers.
    """
    check_is_fitted(estimator)
    members = estimator.members_
    sets = {"members": [dict(members.member(i)) for i in range(members.n_members)]}
    if hasattr(estimator, "simplex_vertices_"):
        vertices = estimator.simplex_vertices_
        sets["vertices"] = [
            {**{n: v[i, j] for n, v in vertices.items()}, **estimator.mode_buffers_[i]}
            for i in range(len(estimator.mode_buffers_))
            for j in range(next(iter(vertices.values())).shape[1])
        ]
    for name in ("complex_vertices_", "curve_anchors_"):
        if hasattr(estimator, name):
            anchors = getattr(estimator, name)
            count = next(iter(anchors.values())).shape[0]
            buffers = estimator.mode_buffers_[0]
            sets["anchors"] = [
                {**{n: a[i] for n, a in anchors.items()}, **buffers} for i in range(count)
            ]
    return sets


def _pick(estimator, spec, sets) -> dict[str, torch.Tensor]:
    """One parameter set: a member index, ``(kind, index)``, or a dict of tensors."""
    if isinstance(spec, dict):
        return spec
    kind, index = ("members", spec) if isinstance(spec, numbers.Integral) else spec
    if kind not in sets:
        raise ValueError(
            f"{type(estimator).__name__} has no {kind!r} parameter sets; it has {sorted(sets)}."
        )
    if not 0 <= index < len(sets[kind]):
        raise ValueError(f"{kind}[{index}] does not exist: there are {len(sets[kind])}.")
    return sets[kind][index]


def _names(estimator) -> list[str]:
    return [n for n, _ in estimator.members_.template.named_parameters()]


def _flat(point: dict, names: list[str]) -> torch.Tensor:
    """The parameters of a point as one float64 vector on the CPU (buffers left out)."""
    return flatten(point, names).detach().cpu()


def evaluate_points(estimator, points, X, y, *, recalibrate_bn=None) -> Bunch:
    """NLL and accuracy on ``(X, y)`` of parameter sets of the estimator's module.

    Parameters
    ----------
    estimator : fitted simplexens estimator
        Gives the module, the classes and the batching.
    points : list of dict of str to Tensor
        Parameter sets (parameters and buffers of the module).
    X : array-like of shape (n_samples, ...)
    y : array-like of shape (n_samples,)
    recalibrate_bn : bool or None, default=None
        Recompute each point's BatchNorm statistics on ``X`` (None: when the module has
        BatchNorm).

    Returns
    -------
    Bunch
        ``nll`` and ``accuracy``, arrays of shape (n_points,).
    """
    X, y_index = _data(estimator, X, y)
    template = estimator.members_.template
    if recalibrate_bn is None:
        recalibrate_bn = bool(batchnorm_layers(template))
    nll, accuracy, strategy = [], [], None
    for start in range(0, len(points), POINTS_PER_STACK):
        chunk = points[start : start + POINTS_PER_STACK]
        stack = ParameterStack.from_members(template, chunk, estimator.members_.device)
        if recalibrate_bn:
            recalibrate_batchnorm(stack, estimator._batches(X, np.arange(len(X)), stack))
        strategy = strategy or _fastest(stack, X)
        scores = _scores(estimator, stack, X, y_index, strategy)
        nll.append(scores[0])
        accuracy.append(scores[1])
    return Bunch(nll=np.concatenate(nll), accuracy=np.concatenate(accuracy))


def _data(estimator, X, y):
    check_is_fitted(estimator)
    if is_regressor(estimator):
        raise TypeError(
            f"the loss surfaces measure a classifier's NLL and accuracy; "
            f"{type(estimator).__name__} is a regressor (its members' Gaussian NLL on a path "
            "is not supported yet)."
        )
    X = validate_data(estimator, X, reset=False, dtype=np.float32, allow_nd=True)
    y = column_or_1d(y)
    if len(y) != len(X):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)} labels.")
    index = np.searchsorted(estimator.classes_, y)
    index = np.clip(index, 0, len(estimator.classes_) - 1)
    if not np.array_equal(estimator.classes_[index], y):
        raise ValueError("y holds labels that the estimator was not fitted on.")
    return X, index


def _fastest(stack: ParameterStack, X: np.ndarray) -> str:
    """The faster way to evaluate this stack, measured on a batch of ``X``: one vmap call
    over all points, or a loop of ordinary forward passes through the module (which wins
    depends on the module, the sizes and the machine)."""
    x = torch.tensor(X[: min(len(X), 256)], device=stack.device)
    times = {}
    for strategy in ("vmap", "loop"):
        try:
            _forward(stack, x[:2], strategy)  # warm-up, and whether the strategy runs at all
        except RuntimeError:
            continue
        begin = time.perf_counter()
        _forward(stack, x, strategy)
        times[strategy] = time.perf_counter() - begin
    return min(times, key=times.get) if times else "loop"


def _forward(stack: ParameterStack, x: torch.Tensor, strategy: str) -> torch.Tensor:
    """All points' outputs on ``x``: vmap through the stack, or one functional call of the
    module per point (no copy of the module per point, as a one-off evaluation wants)."""
    if strategy == "vmap":
        return stack._forward_vmap(x)
    with torch.no_grad():
        outputs = [
            functional_call(stack.template, stack.member(i), (x,)) for i in range(stack.n_members)
        ]
    return torch.stack(outputs)


def _scores(estimator, stack, X, y_index, strategy="loop") -> tuple[np.ndarray, np.ndarray]:
    """Each member's mean NLL and accuracy on (X, y), in batches."""
    step = batch_size_for(stack, X, None, estimator.working_memory)
    total = torch.zeros(stack.n_members, dtype=torch.float64, device=stack.device)
    correct = torch.zeros_like(total)
    for rows in batch_slices(len(X), step):
        x = torch.tensor(X[rows], device=stack.device)
        target = torch.tensor(y_index[rows], device=stack.device)
        log_proba = _forward(stack, x, strategy).to(torch.float64).log_softmax(dim=-1)
        total -= log_proba[:, torch.arange(len(target)), target].sum(dim=1)
        correct += (log_proba.argmax(dim=-1) == target).sum(dim=1)
    return (total / len(X)).cpu().numpy(), (correct / len(X)).cpu().numpy()


def _combine(anchors: list[dict], weights: torch.Tensor) -> list[dict]:
    """Points ``weights @ anchors`` (parameters), each with the first anchor's buffers."""
    names = [n for n in anchors[0] if anchors[0][n].is_floating_point()]
    stacked = {n: torch.stack([a[n] for a in anchors]) for n in names}
    points = simplex_points(stacked, weights)
    fixed = {n: t for n, t in anchors[0].items() if n not in points}
    return [{**{n: p[i] for n, p in points.items()}, **fixed} for i in range(len(weights))]


def loss_along_path(estimator, X, y, *, start=0, end=1, n_points=25, recalibrate_bn=None):
    """NLL and accuracy along the straight segment between two parameter sets.

    Parameters
    ----------
    estimator : fitted simplexens estimator
    X : array-like of shape (n_samples, ...)
        Data the loss is measured on (and BatchNorm statistics recomputed from).
    y : array-like of shape (n_samples,)
    start, end : int, (kind, int) or dict, default=0 and 1
        The segment's ends: a member index, ``("vertices", i)`` / ``("anchors", i)`` (see
        :func:`parameter_sets`), or a dict of tensors.
    n_points : int, default=25
        Points on the segment, ends included (at least 2).
    recalibrate_bn : bool or None, default=None
        Recompute BatchNorm statistics at every point (None: when the module has BatchNorm).

    Returns
    -------
    Bunch
        ``t`` (n_points,) in [0, 1], ``nll``, ``accuracy``.
    """
    _check_count("n_points", n_points)
    sets = parameter_sets(estimator)
    ends = [_pick(estimator, spec, sets) for spec in (start, end)]
    names = _names(estimator)
    if torch.equal(_flat(ends[0], names), _flat(ends[1], names)):
        raise ValueError("the path's two ends are the same parameter set; pick two different.")
    t = torch.linspace(0, 1, n_points, dtype=torch.float64)
    points = _combine(ends, torch.stack([1 - t, t], dim=1))
    scores = evaluate_points(estimator, points, X, y, recalibrate_bn=recalibrate_bn)
    return Bunch(t=t.numpy(), **scores)


def loss_along_curve(estimator, X, y, *, n_points=25, recalibrate_bn=None):
    """NLL and accuracy along a fitted curve: a :class:`~simplexens.CurveClassifier`'s, or the
    polygonal chain ``w_0 - θ_0 - w_1`` of an :class:`~simplexens.SPROClassifier` with 2 modes
    and 1 connector.

    Parameters and returns as :func:`loss_along_path`; ``t`` evenly spaced in [0, 1].
    """
    _check_count("n_points", n_points)
    check_is_fitted(estimator)
    anchors = parameter_sets(estimator).get("anchors")
    if hasattr(estimator, "curve_anchors_"):
        curve, n_bends = estimator.curve, estimator.n_bends
    elif anchors is not None and estimator.n_modes == 2 and len(anchors) == 3:
        curve, n_bends, anchors = "polychain", 3, [anchors[0], anchors[2], anchors[1]]
    else:
        raise TypeError(
            f"{type(estimator).__name__} has no curve: fit a CurveClassifier, or an "
            "SPROClassifier with 2 modes and 1 connector (a polygonal chain)."
        )
    t = torch.linspace(0, 1, n_points, dtype=torch.float64)
    points = _combine(anchors, curve_coefficients(t, curve, n_bends))
    scores = evaluate_points(estimator, points, X, y, recalibrate_bn=recalibrate_bn)
    return Bunch(t=t.numpy(), **scores)


def plane_basis(p0, p1, p2, names) -> Bunch:
    """An orthonormal basis of the plane through three parameter sets, by Gram-Schmidt in
    float64 across all parameter tensors.

    Parameters
    ----------
    p0, p1, p2 : dict of str to Tensor
        The three parameter sets.
    names : list of str
        The module's parameter names (buffers are not part of the plane).

    Returns
    -------
    Bunch
        ``origin`` (the centroid), ``u``, ``v``: (P,) float64 vectors; ``anchor`` (``p0``
        flattened) and ``edges_inverse``, which turn plane coordinates into coefficients of
        the three anchors (:func:`plane_weights`).

    Raises
    ------
    ValueError
        If the three points are (nearly) collinear: a plane needs three affinely
        independent points.
    """
    a, b, c = (_flat(p, names) for p in (p0, p1, p2))
    e1, e2 = b - a, c - a
    scale = max(float(e1.norm()), float(e2.norm()))
    if float(e1.norm()) <= 1e-12 * max(scale, 1e-300):
        raise ValueError("the first two anchors are the same point: no plane through them.")
    u = e1 / e1.norm()
    w = e2 - (e2 @ u) * u
    # Parameters are float32: a point on the line through the other two lies off it by
    # rounding, about 1e-7 of the distances.
    if float(w.norm()) <= 1e-5 * scale:
        raise ValueError(
            "the three anchors are collinear: a plane needs three affinely independent "
            "parameter sets."
        )
    v = w / w.norm()
    # Coordinates of e1, e2 in (u, v): a point origin + x u + y v = a + alpha e1 + beta e2.
    edges = torch.tensor([[e1 @ u, e2 @ u], [e1 @ v, e2 @ v]], dtype=torch.float64)
    origin = (a + b + c) / 3
    return Bunch(origin=origin, u=u, v=v, edges_inverse=torch.linalg.inv(edges), anchor=a)


def plane_weights(basis: Bunch, coords: torch.Tensor) -> torch.Tensor:
    """Coefficients over the three anchors of the points ``origin + x u + y v``.

    Parameters
    ----------
    basis : Bunch
        From :func:`plane_basis`.
    coords : Tensor of shape (n, 2), float64
        Plane coordinates ``(x, y)``.

    Returns
    -------
    Tensor of shape (n, 3)
        Rows summing to 1: ``p = w0 p0 + w1 p1 + w2 p2``.
    """
    shift = basis.origin - basis.anchor
    offset = torch.stack([shift @ basis.u, shift @ basis.v])
    alpha_beta = (coords + offset) @ basis.edges_inverse.T
    return torch.cat([1 - alpha_beta.sum(dim=1, keepdim=True), alpha_beta], dim=1)


def project(basis: Bunch, point: dict, names: list[str]) -> np.ndarray:
    """Plane coordinates ``((q - origin) . u, (q - origin) . v)`` of a parameter set."""
    q = _flat(point, names) - basis.origin
    return np.array([float(q @ basis.u), float(q @ basis.v)])


def loss_on_plane(
    estimator, X, y, *, anchors=(0, 1, 2), grid_resolution=21, margin=0.2, recalibrate_bn=None
):
    """NLL and accuracy on a grid of the plane through three parameter sets.

    The plane's orthonormal basis comes from Gram-Schmidt on the anchors' differences (float64,
    across all parameter tensors); the grid is centred on the anchors' centroid and spans
    their projections with a relative ``margin`` on every side. Every grid point is evaluated
    through the member stack, :data:`POINTS_PER_STACK` points per call.

    Parameters
    ----------
    estimator : fitted simplexens estimator
    X : array-like of shape (n_samples, ...)
    y : array-like of shape (n_samples,)
    anchors : sequence of 3 parameter-set specs, default=(0, 1, 2)
        Member indices, ``("vertices", i)``, ``("anchors", i)`` or dicts of tensors.
    grid_resolution : int, default=21
        Grid points per axis (at least 2).
    margin : float, default=0.2
        Extra extent around the anchors, relative to their spread.
    recalibrate_bn : bool or None, default=None
        Recompute BatchNorm statistics at every grid point (None: when the module has
        BatchNorm).

    Returns
    -------
    Bunch
        ``xx0``, ``xx1`` (grid, grid) plane coordinates; ``nll``, ``accuracy`` (grid, grid);
        ``anchor_coords`` (3, 2); ``member_coords`` (n_members, 2), the estimator's members
        projected on the plane; ``basis`` (origin, u, v).
    """
    _check_count("grid_resolution", grid_resolution)
    sets = parameter_sets(estimator)
    chosen = [_pick(estimator, spec, sets) for spec in anchors]
    if len(chosen) != 3:
        raise ValueError(f"a plane goes through 3 parameter sets; got {len(chosen)}.")
    names = _names(estimator)
    basis = plane_basis(*chosen, names)
    anchor_coords = np.array([project(basis, p, names) for p in chosen])
    low, high = anchor_coords.min(axis=0), anchor_coords.max(axis=0)
    pad = margin * (high - low).max()
    axes = [np.linspace(low[k] - pad, high[k] + pad, grid_resolution) for k in range(2)]
    xx0, xx1 = np.meshgrid(*axes)
    coords = torch.tensor(np.stack([xx0.ravel(), xx1.ravel()], axis=1), dtype=torch.float64)
    points = _combine(chosen, plane_weights(basis, coords))
    scores = evaluate_points(estimator, points, X, y, recalibrate_bn=recalibrate_bn)
    shape = xx0.shape
    return Bunch(
        xx0=xx0,
        xx1=xx1,
        nll=scores.nll.reshape(shape),
        accuracy=scores.accuracy.reshape(shape),
        anchor_coords=anchor_coords,
        member_coords=np.array([project(basis, p, names) for p in sets["members"]]),
        basis=basis,
    )


def _check_count(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 2:
        raise ValueError(f"{name} must be an integer >= 2; got {value!r}.")
