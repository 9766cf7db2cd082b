"""Points = coefficients x anchor tensors, over any ``nn.Module``: one mechanism for simplexes,
simplicial complexes and curves.

:class:`AnchorModule` wraps the user's module from the outside: the anchors (a simplex's
vertices, a complex's modes and connectors, a curve's endpoints and bends) are stacked tensors,
one per parameter of the module, and every forward pass evaluates the module with
:func:`torch.func.functional_call` at points ``φ = Σ_i a_i v_i`` whose coefficients ``a`` a
sampler draws: Dirichlet in a simplex (:class:`SimplexSampler`), volume-weighted over a
complex (:class:`ComplexSampler`), Bernstein or hat functions of ``t`` on a curve
(:class:`CurveSampler`). A mask says which anchors train; the others are frozen buffers and
stay bit-identical. An optional volume term gives ``log V`` of every simplex of the complex
with a closed-form gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.func import functional_call, vmap

from ..geometry.complex import SimplicialComplex, sample_complex
from ..geometry.curves import curve_coefficients
from ..geometry.simplex import sample_barycentric
from .fused_linear import NotFusableError, SimplexParameter
from .parallel import private_rng


def initial_vertex(
    vertices: dict[str, torch.Tensor], scale: float, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Starting point of a new vertex: the centroid of the simplex, moved off it at random.

    The centroid alone would give the second vertex the mode's own position: a simplex of
    zero volume, where ``log V`` and its gradient are undefined. Each parameter tensor is
    moved along a random Gaussian direction whose norm is ``scale`` times the norm of that
    tensor at the centroid (layer-wise relative scale, so no layer is swamped). A random
    direction in a space of many parameters is almost orthogonal to the existing simplex, so
    the new simplex has positive volume.

    Parameters
    ----------
    vertices : dict of str to Tensor of shape (k + 1, *shape)
        The existing vertices.
    scale : float
        Relative size of the move (``vertex_init_scale``).
    generator : torch.Generator
        Source of the random directions, on the vertices' device.

    Returns
    -------
    dict of str to Tensor of shape (*shape)
    """
    start = {}
    for name, stacked in vertices.items():
        centre = stacked.mean(dim=0)
        direction = torch.randn(
            centre.shape, generator=generator, device=centre.device, dtype=centre.dtype
        )
        norm = centre.norm()
        if norm == 0:  # e.g. biases initialised at zero: move by the scale itself
            norm = torch.ones((), device=centre.device, dtype=centre.dtype)
        start[name] = centre + scale * norm * direction / direction.norm().clamp_min(1e-12)
    return start


def chunked_forward(
    template: nn.Module,
    points: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    x: torch.Tensor,
) -> torch.Tensor:
    """Evaluate ``m`` parameter points on ``m`` consecutive chunks of one batch, in one call.

    The batch is padded (by repeating its first rows) to ``m * ceil(n / m)`` rows, cut into
    ``m`` equal chunks, and chunk ``i`` goes through the module at point ``i``; outputs of the
    padding rows are dropped. The cost is about one ordinary forward pass of the batch.

    Parameters
    ----------
    template : nn.Module
        The module's structure; its own tensors are not used.
    points : dict of str to Tensor of shape (m, *shape)
        Parameter points.
    buffers : dict of str to Tensor of shape (m, *shape)
        Per-point buffers (BatchNorm statistics updated in training mode land here).
    x : Tensor of shape (n, ...)
        The batch.

    Returns
    -------
    Tensor of shape (n, ...)
        Row ``r`` is the output at point ``r // ceil(n / m)``.
    """
    m = next(iter(points.values())).shape[0]
    padded = pad_rows(x, m)
    chunks = padded.reshape(m, -1, *x.shape[1:])

    def call(params, bufs, inputs):
        return functional_call(template, (params, bufs), (inputs,))

    out = vmap(call, randomness="different")(points, buffers, chunks)
    return out.reshape(len(padded), *out.shape[2:])[: len(x)]


def pad_rows(x: torch.Tensor, m: int) -> torch.Tensor:
    """``x`` with its first rows repeated at the end, to ``m * ceil(n / m)`` rows."""
    n = x.shape[0]
    return x[torch.arange(m * math.ceil(n / m), device=x.device) % n]


class AnchorPoints(torch.autograd.Function):
    """Points ``φ_m = Σ_i a_mi v_i`` of anchors of which only some are trainable.

    ``apply(weights, frozen, trainable)`` with ``weights`` of shape (m, k + t) (the frozen
    anchors' columns first), ``frozen`` of shape (k, *shape) and ``trainable`` of shape
    (t, *shape) returns (m, *shape). The backward pass returns ``Σ_m a_mj ∂L/∂φ_m`` for each
    trainable anchor j, accumulated point by point: the gradients vmap hands back for a layer's
    weights are often transposed in memory, and a matrix product or a reduction over the
    point axis would first copy them.
    """

    @staticmethod
    def forward(weights, frozen, trainable):
        k = frozen.shape[0]
        # The points are parameters: computed in their own dtype, outside any autocast.
        with torch.autocast(weights.device.type, enabled=False):
            # reshape, not flatten(1): a scalar parameter's anchors have shape (K,).
            flat = torch.mm(weights[:, :k], frozen.reshape(k, -1))
            flat.addmm_(weights[:, k:], trainable.reshape(len(trainable), -1))
        return flat.reshape(len(weights), *trainable.shape[1:])

    @staticmethod
    def setup_context(ctx, inputs, output):
        weights, frozen, _ = inputs
        ctx.save_for_backward(weights[:, frozen.shape[0] :])

    @staticmethod
    def backward(ctx, grad):
        (scales,) = ctx.saved_tensors
        grads = []
        for scale in scales.T:
            total = grad[0] * scale[0]
            for m in range(1, len(scale)):
                total.addcmul_(grad[m], scale[m])
            grads.append(total)
        return None, None, torch.stack(grads)


class LogVolumes(torch.autograd.Function):
    """log V of every simplex of a complex, each with at most one trainable anchor.

    ``apply(module, *trainable)`` for an :class:`AnchorModule` and its trainable anchors'
    tensors returns a float64 tensor of shape (n_simplexes,). For a simplex whose trainable
    anchor is ``v`` and whose frozen vertices are ``u_0, ..., u_{k-1}``, with ``E`` the frozen
    edges (rows ``u_i - u_0``), ``G_f = E E^T`` and the new edge ``e = v - u_0``, the bordered
    Gram matrix has ``det G = det G_f * h^2`` where ``h^2 = e.e - (E e)^T G_f^{-1} E e`` is the
    squared height of ``v`` above the frozen face. Hence
    ``log V = (log det G_f + log h^2) / 2 - log k!`` and ``d log V / d v = r / h^2`` with
    ``r = e - E^T G_f^{-1} E e``.

    Every quantity is expressed through inner products with the frozen anchors, centred on
    their mean (:class:`FrozenAnchors`): one pass over the frozen anchors per step gives
    ``E e`` and ``e.e`` for every simplex at once, and the gradient of all simplexes is one
    combination of the frozen anchors and ``v``. So a complex of many simplexes (SPRO) costs
    what one simplex does. In float64, and centred, the subtraction in ``h^2`` keeps about
    ``16 - 2 log10(|e| / h)`` digits: exact enough until the height is below 1e-6 of the
    edge lengths, where the volume has collapsed anyway. Simplexes without a trainable anchor
    have a constant log V.
    """

    @staticmethod
    def forward(ctx, module, *trainable):
        frozen, values, saved, moving = module.frozen_geometry, [], [], {}
        for face in module.faces:
            if face.anchor is None:
                values.append(face.constant)
                continue
            if face.anchor not in moving:  # one float64 vector of all parameters, centred
                v = torch.cat([t[face.anchor].flatten() for t in trainable]).double()
                v = v - frozen.centre
                moving[face.anchor] = (v, frozen.anchors @ v, v @ v)
            _, products, norm2 = moving[face.anchor]
            log_v, height2, coefficients = face.log_volume(frozen.gram, products, norm2)
            values.append(log_v)
            saved.append((face.anchor, height2, coefficients))
        ctx.saved, ctx.moving, ctx.frozen = saved, moving, frozen
        ctx.trainable = [(t.shape, t.dtype) for t in trainable]
        ctx.active = [i for i, face in enumerate(module.faces) if face.anchor is not None]
        return torch.stack(values)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        totals = {}  # per trainable anchor: weight of v, coefficients of the frozen anchors
        for i, (anchor, height2, coefficients) in zip(ctx.active, ctx.saved, strict=True):
            weight = grad[i] / height2
            own, others = totals.get(anchor, (0.0, 0.0))
            totals[anchor] = (own + weight, others + weight * coefficients)
        grads = [
            torch.zeros(shape, dtype=dtype, device=grad.device) for shape, dtype in ctx.trainable
        ]
        sizes = [math.prod(shape[1:]) for shape, _ in ctx.trainable]
        for anchor, (own, others) in totals.items():
            v = ctx.moving[anchor][0]
            flat = torch.addmv(own * v, ctx.frozen.anchors.T, others, alpha=-1)
            for g, part in zip(grads, flat.split(sizes), strict=True):
                g[anchor] = part.view(g.shape[1:])
        return None, *grads


@dataclass
class FrozenAnchors:
    """The frozen anchors as one float64 matrix, centred on their mean, and their Gram matrix.

    Attributes
    ----------
    centre : Tensor of shape (P,)
        The mean of the frozen anchors, all parameters flattened into one vector.
    anchors : Tensor of shape (K_f, P)
        The frozen anchors minus ``centre``.
    gram : Tensor of shape (K_f, K_f)
        Their inner products.
    """

    centre: torch.Tensor
    anchors: torch.Tensor
    gram: torch.Tensor

    @classmethod
    def of(cls, frozen: list[torch.Tensor]) -> FrozenAnchors:
        """From the frozen buffers, one ``(K_f, *shape)`` tensor per parameter."""
        stacked = torch.cat([t.detach().reshape(len(t), -1) for t in frozen], dim=1).double()
        centre = stacked.mean(dim=0) if len(stacked) else stacked.new_zeros(stacked.shape[1])
        anchors = stacked - centre
        return cls(centre, anchors, anchors @ anchors.T)


@dataclass
class Face:
    """One simplex of the complex, its frozen part cached for :class:`LogVolumes`.

    With ``u`` the centred frozen anchors, the simplex's frozen vertices are ``u[base]`` and
    the rows of ``select @ u`` added to it: its frozen edges are ``E = select @ u``, where
    ``select`` has one row per edge, 1 at the edge's end and -1 at ``base``.

    Attributes
    ----------
    anchor : int or None
        Index among the trainable anchors of the simplex's trainable vertex (None: all frozen).
    base : int
        Index among the frozen anchors of the vertex the edges start from.
    select : Tensor of shape (k - 1, K_f)
        The frozen edges as combinations of the frozen anchors.
    gram, sign, logdet : Tensor
        The frozen edges' Gram matrix and its signed log-determinant.
    constant : Tensor
        log V of a simplex without a trainable anchor.
    """

    anchor: int | None
    base: int
    select: torch.Tensor
    gram: torch.Tensor
    sign: torch.Tensor
    logdet: torch.Tensor
    constant: torch.Tensor | None = None

    def log_volume(self, frozen_gram, products, norm2):
        """log V, the squared height ``h^2`` and the coefficients ``a`` of ``r = v - a @ u``,
        from the trainable vertex's inner products with the frozen anchors and itself."""
        base = self.base
        cross = self.select @ (products - frozen_gram[:, base])
        edge2 = norm2 - 2 * products[base] + frozen_gram[base, base]
        beta = torch.linalg.solve_ex(self.gram, cross).result
        height2 = edge2 - cross @ beta
        log_v = 0.5 * (self.logdet + torch.log(height2)) - math.lgamma(len(beta) + 2)
        # torch.where rather than an `if`: no host synchronisation inside a training step.
        ok = (self.sign > 0) & (height2 > 0)
        log_v = torch.where(ok, log_v, torch.full_like(log_v, -math.inf))
        coefficients = self.select.T @ beta
        coefficients[base] += 1
        return log_v, height2, coefficients


class SimplexSampler:
    """Uniform points of the simplex spanned by all anchors: Dirichlet(1, ..., 1)."""

    def __call__(self, m: int, module: AnchorModule) -> torch.Tensor:
        return sample_barycentric(
            m,
            module.n_anchors,
            generator=module.generator,
            device=module.device,
            dtype=module.dtype,
        )


class ComplexSampler:
    """Uniform points of a simplicial complex: a simplex chosen with probability proportional
    to its current volume, then Dirichlet(1) inside it (``weighting="equal"``: the reference
    code's equal-probability choice, not uniform over the complex)."""

    def __init__(self, weighting: str = "volume"):
        self.weighting = weighting

    def __call__(self, m: int, module: AnchorModule) -> torch.Tensor:
        log_volumes = _samplable(module.keep_step_volumes().detach())
        weights, _ = sample_complex(
            m,
            module.complex,
            log_volumes,
            weighting=self.weighting,
            generator=module.generator,
            device=module.device,
            dtype=module.dtype,
            check=False,
        )
        return weights


def _samplable(log_volumes: torch.Tensor) -> torch.Tensor:
    """Log-volumes that a training step can always sample from, without waiting for the
    device: NaN or +inf (a diverging connector) count as equal volumes, and a complex whose
    every simplex is degenerate is sampled with equal weights. The step's loss is then not
    finite, and the divergence check ends training with a clear error at the epoch's end."""
    finite = log_volumes.nan_to_num(nan=0.0, posinf=0.0)
    return torch.where(torch.isneginf(finite).all(), torch.zeros_like(finite), finite)


class CurveSampler:
    """Points of a curve at ``t ~ U(0, 1)``: Bernstein (Bezier) or hat (polygonal chain)
    coefficients of ``t`` over the bends, endpoints included."""

    def __init__(self, curve: str):
        self.curve = curve

    def __call__(self, m: int, module: AnchorModule) -> torch.Tensor:
        t = torch.rand(m, generator=module.generator, device=module.device, dtype=module.dtype)
        return curve_coefficients(t, self.curve, module.n_anchors, check=False)


class AnchorModule(nn.Module):
    """Points ``φ = Σ_i a_i v_i`` over anchors ``v_i`` of a module, some of them trainable.

    Each forward pass draws ``n_train_samples`` (M) coefficient vectors from ``sampler`` and
    evaluates chunk ``i`` of the batch at point ``i`` (:func:`chunked_forward`), so the
    criterion on the output is the mean over M points of the loss, estimated from disjoint
    parts of the batch at the cost of one forward pass. A module whose trainable parameters
    are only used by linear layers takes a fused path (:mod:`.fused_linear`).

    Parameters
    ----------
    template : nn.Module
        The user's module, giving the structure and the buffers (e.g. a trained mode).
    anchors : dict of str to Tensor of shape (K, *shape)
        The anchors, one entry per trainable parameter of ``template``; its other parameters
        (frozen by the user) keep the template's values.
    trainable : sequence of bool of length K
        Which anchors train; the others are frozen.
    sampler : callable
        ``sampler(m, module)`` returns coefficients of shape (m, K) (:class:`SimplexSampler`,
        :class:`ComplexSampler`, :class:`CurveSampler`).
    n_train_samples : int
        M, the number of points per forward pass (paper: 5).
    generator : torch.Generator
        Source of the sampled points, on the module's device.
    complex : SimplicialComplex, optional
        Simplexes over the anchors, each with at most one trainable anchor: what
        :meth:`log_volumes` measures. None: no volume term (curves).
    """

    def __init__(
        self, template, anchors, trainable, sampler, n_train_samples, generator, complex=None
    ):
        super().__init__()
        self.template = template.requires_grad_(False)
        self.names = list(anchors)
        self.sampler = sampler
        self.n_train_samples = n_train_samples
        self.generator = generator
        mask = torch.as_tensor(list(trainable), dtype=torch.bool)
        self.n_anchors = len(mask)
        self.complex = complex
        first = next(iter(anchors.values()))
        order = torch.cat([(~mask).nonzero().flatten(), mask.nonzero().flatten()])
        self.register_buffer("order", order.to(first.device), persistent=False)
        self.frozen_ids, self.trainable_ids = (
            (~mask).nonzero().flatten().tolist(),
            mask.nonzero().flatten().tolist(),
        )
        for i, name in enumerate(self.names):
            self.register_buffer(f"frozen_{i}", anchors[name][~mask].detach().clone())
        self.trainable = nn.ParameterList(
            nn.Parameter(anchors[name][mask].detach().clone()) for name in self.names
        )
        self._cache_faces()
        # Loading a state (skorch's load_params, checkpoints) replaces the frozen anchors.
        self.register_load_state_dict_post_hook(_refresh_frozen_geometry)
        # Whether forward uses the fused path for linear layers (None: not decided yet).
        self.fused = None
        self._volumes = None

    @property
    def device(self) -> torch.device:
        return self.trainable[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self.trainable[0].dtype

    def _frozen(self, i: int) -> torch.Tensor:
        return getattr(self, f"frozen_{i}")

    def anchors(self) -> dict[str, torch.Tensor]:
        """All anchors in their order, ``(K, *shape)`` per parameter; differentiable in the
        trainable ones."""
        return {
            name: torch.cat([self._frozen(i), self.trainable[i]])[self._inverse_order()]
            for i, name in enumerate(self.names)
        }

    def _inverse_order(self) -> torch.Tensor:
        return torch.argsort(self.order)

    def _cache_faces(self) -> None:
        """Cache the frozen anchors' geometry and, per simplex of the complex, its frozen
        edges' Gram matrix (float64)."""
        frozen = [self._frozen(i) for i in range(len(self.names))]
        self.frozen_geometry = FrozenAnchors.of(frozen)
        frozen_index = {a: j for j, a in enumerate(self.frozen_ids)}
        position = {a: j for j, a in enumerate(self.trainable_ids)}
        self.faces = []
        for simplex in self.complex.simplexes if self.complex is not None else ():
            moving = [a for a in simplex if a in position]
            if len(moving) > 1:
                raise ValueError(
                    f"simplex {simplex} has {len(moving)} trainable anchors; the volume term "
                    "trains one anchor per simplex at a time."
                )
            fixed = [frozen_index[a] for a in simplex if a not in position]
            anchor = position[moving[0]] if moving else None
            self.faces.append(_face(self.frozen_geometry.gram, fixed, anchor))

    def log_volumes(self) -> torch.Tensor:
        """log V of every simplex of the complex, float64, shape (n_simplexes,);
        differentiable in the trainable anchors (closed form, :class:`LogVolumes`)."""
        if self.complex is None:
            raise ValueError("this AnchorModule has no complex, so no volume term.")
        return LogVolumes.apply(self, *self.trainable)

    def keep_step_volumes(self) -> torch.Tensor:
        """:meth:`log_volumes`, kept for the loss of the same training step (a sampler that
        needs the volumes computes them in the forward pass; the loss takes them once)."""
        volumes = self.log_volumes()
        self._volumes = volumes if torch.is_grad_enabled() else None
        return volumes

    def take_step_volumes(self) -> torch.Tensor | None:
        """The volumes kept by this step's forward pass, if any; the module forgets them."""
        volumes, self._volumes = self._volumes, None
        return volumes

    def log_volume(self) -> torch.Tensor:
        """Σ log V over the simplexes of the complex (the single simplex's log V for ESPRO)."""
        return self.log_volumes().sum()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._volumes = None
        # At least two rows per point, so that BatchNorm can train on every chunk.
        m = min(self.n_train_samples, max(1, x.shape[0] // 2))
        weights = self.sampler(m, self)[:, self.order]
        if self.fused is None and len(weights) > 1:  # one point: both paths are the same
            self.fused = self._fused_agrees(weights, x)
        if self.fused:
            try:
                return self._fused_forward(weights, x)
            except NotFusableError:  # e.g. a later batch whose shape the fused path refuses
                self.fused = False
        return self._generic_forward(weights, x)

    def _generic_forward(self, weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Chunk m of ``x`` at point m, the module a black box under ``vmap``."""
        m = len(weights)
        points = {
            name: AnchorPoints.apply(weights, self._frozen(i), self.trainable[i])
            for i, name in enumerate(self.names)
        }
        for name, p in self.template.named_parameters():
            if name not in points:  # parameters the user froze stay at the mode's value
                points[name] = p.detach().expand(m, *p.shape)
        buffers = {
            name: b.detach().expand(m, *b.shape).clone()
            for name, b in self.template.named_buffers()
        }
        try:
            return chunked_forward(self.template, points, buffers, x)
        except RuntimeError as exc:
            raise RuntimeError(
                "the points of a training step are evaluated in one torch.func.vmap call, "
                f"which failed on this module: {exc}"
            ) from exc

    def _fused_forward(self, weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The same as :meth:`_generic_forward` for modules built of linear layers."""
        padded = pad_rows(x, len(weights))
        params = {
            name: SimplexParameter.wrap(self.trainable[i], self._frozen(i), weights, len(padded))
            for i, name in enumerate(self.names)
        }
        return functional_call(self.template, params, (padded,))[: len(x)]

    def _fused_agrees(self, weights: torch.Tensor, x: torch.Tensor) -> bool:
        """Whether the fused path covers this module: decided once, on a batch of >= 2 points.

        It needs a module without buffers (BatchNorm's statistics are per chunk) whose
        trainable parameters are only used by linear layers on batch-first inputs, and whose
        rows do not interact. The last is checked by comparing both paths' outputs (without
        gradients, the global random state restored) in training and in evaluation mode; a
        module whose training-mode output is random (dropout) is compared in evaluation
        mode only.
        """
        if any(True for _ in self.template.buffers()):
            return False
        was_training = self.template.training
        try:
            try:
                fused = [self._trial(weights, x, True, mode, 0) for mode in (True, False)]
            except Exception:  # whatever the fused path cannot run goes the generic way
                return False
            generic = [self._trial(weights, x, False, mode, 0) for mode in (True, False)]
            if not _same(fused[1], generic[1]):
                return False
            if _same(fused[0], generic[0]):
                return True
            return not _same(generic[0], self._trial(weights, x, False, True, 1))
        finally:
            self.template.train(was_training)

    def _trial(self, weights, x, fused: bool, training: bool, seed: int) -> torch.Tensor:
        """One forward pass of either path, in the given mode, for :meth:`_fused_agrees`."""
        self.template.train(training)
        with torch.no_grad(), private_rng(seed, x.device):
            return (self._fused_forward if fused else self._generic_forward)(weights, x)


def simplex_module(template, frozen, start, n_train_samples, generator) -> AnchorModule:
    """The simplex ``S(v_0, ..., v_k)`` of ESPRO, with only the newest vertex trainable.

    Parameters
    ----------
    template : nn.Module
        The user's module (a trained mode).
    frozen : dict of str to Tensor of shape (k, *shape)
        The fixed vertices ``v_0 ... v_{k-1}``.
    start : dict of str to Tensor of shape (*shape)
        The starting point of the new vertex ``v_k``.
    n_train_samples : int
        M, simplex points per forward pass.
    generator : torch.Generator
        Source of the sampled points.

    Returns
    -------
    AnchorModule
        Anchors ``v_0 ... v_k``, the last trainable, points Dirichlet(1) in the simplex.
    """
    anchors = {name: torch.cat([frozen[name], start[name][None]]) for name in frozen}
    k = next(iter(frozen.values())).shape[0]
    simplex = SimplicialComplex([tuple(range(k + 1))], k + 1)
    return AnchorModule(
        template, anchors, [False] * k + [True], SimplexSampler(), n_train_samples, generator,
        simplex,
    )  # fmt: skip


def _face(frozen_gram: torch.Tensor, fixed: list[int], anchor: int | None) -> Face:
    """One simplex's frozen part (see :class:`Face`): ``fixed`` indexes its frozen vertices
    among the frozen anchors, ``anchor`` its trainable one among the trainable anchors."""
    base = fixed[0]
    select = torch.zeros(len(fixed) - 1, len(frozen_gram), dtype=frozen_gram.dtype)
    select = select.to(frozen_gram.device)
    for row, column in enumerate(fixed[1:]):
        select[row, column] += 1
        select[row, base] -= 1
    gram = select @ frozen_gram @ select.T
    sign, logdet = torch.linalg.slogdet(gram)
    face = Face(anchor, base, select, gram, sign, logdet)
    if anchor is None:
        constant = 0.5 * logdet - math.lgamma(len(fixed))
        face.constant = torch.where(sign > 0, constant, torch.full_like(logdet, -math.inf))
    return face


def _refresh_frozen_geometry(module: AnchorModule, incompatible_keys) -> None:
    """``load_state_dict`` post-hook (a module-level function, so the module pickles)."""
    module._cache_faces()


def _same(a, b) -> bool:
    """Equal up to float32 rounding, relative to the largest output."""
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape:
        return False
    return bool((a - b).abs().max() <= 1e-5 * (1.0 + b.abs().max()))
