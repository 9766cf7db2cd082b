"""A simplex of parameter vectors over any ``nn.Module``, trained one vertex at a time.

:class:`SimplexModule` wraps the user's module from the outside: the vertices are stacked
tensors, one per parameter of the module, and every forward pass evaluates the module with
:func:`torch.func.functional_call` at points of the simplex. No layer is rewritten. Only the
newest vertex is an ``nn.Parameter``; the earlier ones are frozen buffers and stay
bit-identical.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.func import functional_call, vmap

from ..geometry.simplex import gram_matrix, sample_barycentric
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


class NewVertexPoints(torch.autograd.Function):
    """Points ``φ_m = Σ_i a_mi v_i`` of a simplex whose last vertex alone is trainable.

    ``apply(weights, frozen, vertex)`` with ``weights`` of shape (m, k + 1), ``frozen`` of
    shape (k, *shape) and ``vertex`` of shape (*shape) returns (m, *shape). The backward pass
    returns ``Σ_m a_mk ∂L/∂φ_m`` for the vertex alone, accumulated point by point: the
    gradients vmap hands back for a layer's weights are often transposed in memory, and a
    matrix product or a reduction over the point axis would first copy them.
    """

    @staticmethod
    def forward(weights, frozen, vertex):
        k = frozen.shape[0]
        flat = torch.mm(weights[:, :k], frozen.reshape(k, -1))
        flat.addmm_(weights[:, k:], vertex.reshape(1, -1))
        return flat.reshape(len(weights), *vertex.shape)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0][:, -1])

    @staticmethod
    def backward(ctx, grad):
        (scale,) = ctx.saved_tensors
        grad_vertex = grad[0] * scale[0]
        for m in range(1, len(scale)):
            grad_vertex.addcmul_(grad[m], scale[m])
        return None, None, grad_vertex


class NewVertexLogVolume(torch.autograd.Function):
    """log V of a simplex whose last vertex alone is trainable, with a closed-form gradient.

    ``apply(simplex, *vertex)`` for a :class:`SimplexModule` and its newest vertex's tensors.
    With ``E`` the frozen edges (rows ``v_i - v_0``, i < k), ``G_f = E E^T`` and the new edge
    ``e = v_k - v_0``, the bordered Gram matrix has ``det G = det G_f * h^2`` where
    ``h = |r|``, ``r = e - E^T G_f^{-1} E e`` is the height of the new vertex above the frozen
    face. Hence ``log V = (log det G_f + log h^2) / 2 - log k!`` and
    ``d log V / d v_k = r / h^2``.

    ``h^2`` is taken as ``r . r`` from the explicit residual, in float64, not as
    ``e . e - (E e)^T G_f^{-1} E e``, which cancels when the new vertex is close to the frozen
    face. Cost per parameter tensor: a few passes forward, one scaling backward, instead of
    an autograd graph through float64 copies of every tensor.
    """

    @staticmethod
    def forward(ctx, simplex, *vertex):
        edges = [(v - simplex._frozen(i)[0]).reshape(-1).double() for i, v in enumerate(vertex)]
        frozen = [getattr(simplex, f"edges_{i}") for i in range(len(edges))]
        cross = sum(f @ e for f, e in zip(frozen, edges, strict=True))
        beta = torch.linalg.solve_ex(simplex.frozen_gram, cross).result
        residuals = [
            torch.addmv(e, f.T, beta, alpha=-1) for f, e in zip(frozen, edges, strict=True)
        ]
        height2 = sum(r @ r for r in residuals)
        sign, logdet = simplex.frozen_sign, simplex.frozen_logdet
        k = len(beta) + 1
        log_v = 0.5 * (logdet + torch.log(height2)) - math.lgamma(k + 1)
        # torch.where rather than an `if`: no host synchronisation inside a training step.
        log_v = torch.where((sign > 0) & (height2 > 0), log_v, torch.full_like(log_v, -math.inf))
        ctx.vertex = [(v.shape, v.dtype) for v in vertex]
        ctx.save_for_backward(height2, *residuals)
        return log_v

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        height2, *residuals = ctx.saved_tensors
        scale = grad / height2
        return None, *(
            (r * scale).to(dtype).view(shape)
            for r, (shape, dtype) in zip(residuals, ctx.vertex, strict=True)
        )


class SimplexModule(nn.Module):
    """The simplex ``S(v_0, ..., v_k)`` over a module, with ``v_k`` trainable.

    Each forward pass draws ``n_train_samples`` (M) points uniformly from the simplex and
    evaluates chunk ``i`` of the batch at point ``i`` (:func:`chunked_forward`), so the
    criterion on the output is the mean over M points of the loss, estimated from disjoint
    parts of the batch at the cost of one forward pass.

    Only ``v_k`` carries gradients, so the frozen part of the Gram matrix (the frozen edges'
    inner products) is computed once, and the volume term costs k inner products of length P
    per step.

    Parameters
    ----------
    template : nn.Module
        The user's module, giving the structure and the buffers (e.g. a trained mode).
    frozen : dict of str to Tensor of shape (k, *shape)
        The fixed vertices ``v_0 ... v_{k-1}``, one entry per trainable parameter of
        ``template``; its other parameters (frozen by the user) keep the template's values.
    start : dict of str to Tensor of shape (*shape)
        The starting point of the new vertex ``v_k``.
    n_train_samples : int
        M, the number of simplex points per forward pass (paper: 5).
    generator : torch.Generator
        Source of the sampled points, on the module's device.
    """

    def __init__(self, template, frozen, start, n_train_samples, generator):
        super().__init__()
        self.template = template.requires_grad_(False)
        self.names = list(frozen)
        self.n_train_samples = n_train_samples
        self.generator = generator
        for i, name in enumerate(self.names):
            self.register_buffer(f"frozen_{i}", frozen[name].detach().clone())
        self._cache_frozen_geometry()
        # Loading a state (skorch's load_params, checkpoints) replaces the frozen vertices.
        self.register_load_state_dict_post_hook(_refresh_frozen_geometry)
        self.vertex = nn.ParameterList(
            nn.Parameter(start[name].detach().clone()) for name in self.names
        )
        # Whether forward uses the fused path for linear layers (None: not decided yet).
        self.fused = None

    def _cache_frozen_geometry(self) -> None:
        """Cache the frozen edges, their Gram matrix and its log-determinant (float64)."""
        frozen = {name: self._frozen(i) for i, name in enumerate(self.names)}
        for i, vertices in enumerate(frozen.values()):
            edges = (vertices[1:] - vertices[:1]).flatten(1).double()
            self.register_buffer(f"edges_{i}", edges, persistent=False)
        self.register_buffer("frozen_gram", gram_matrix(frozen).detach(), persistent=False)
        sign, logdet = torch.linalg.slogdet(self.frozen_gram)
        self.register_buffer("frozen_sign", sign, persistent=False)
        self.register_buffer("frozen_logdet", logdet, persistent=False)

    def _frozen(self, i: int) -> torch.Tensor:
        return getattr(self, f"frozen_{i}")

    def vertices(self) -> dict[str, torch.Tensor]:
        """All vertices, ``(k + 1, *shape)`` per parameter; differentiable in the newest."""
        return {
            name: torch.cat([self._frozen(i), self.vertex[i][None]])
            for i, name in enumerate(self.names)
        }

    def log_volume(self) -> torch.Tensor:
        """log V of the simplex, in float64 (differentiable in the newest vertex).

        The Gram matrix is the frozen one bordered by the new edge ``e = v_k - v_0``:
        ``[[G_frozen, E e], [(E e)^T, e^T e]]`` with ``E`` the frozen edges. Its gradient is
        computed in closed form (:class:`NewVertexLogVolume`).
        """
        return NewVertexLogVolume.apply(self, *self.vertex)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # At least two rows per point, so that BatchNorm can train on every chunk.
        m = min(self.n_train_samples, max(1, x.shape[0] // 2))
        k = self.frozen_gram.shape[0] + 1
        weights = sample_barycentric(
            m, k + 1, generator=self.generator, device=x.device, dtype=self.vertex[0].dtype
        )
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
            name: NewVertexPoints.apply(weights, self._frozen(i), self.vertex[i])
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
                "ESPRO evaluates the simplex points of a training step in one "
                f"torch.func.vmap call, which failed on this module: {exc}"
            ) from exc

    def _fused_forward(self, weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The same as :meth:`_generic_forward` for modules built of linear layers."""
        padded = pad_rows(x, len(weights))
        params = {
            name: SimplexParameter.wrap(self.vertex[i], self._frozen(i), weights, len(padded))
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


def _refresh_frozen_geometry(module: SimplexModule, incompatible_keys) -> None:
    """``load_state_dict`` post-hook (a module-level function, so the module pickles)."""
    module._cache_frozen_geometry()


def _same(a, b) -> bool:
    """Equal up to float32 rounding, relative to the largest output."""
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape:
        return False
    return bool((a - b).abs().max() <= 1e-5 * (1.0 + b.abs().max()))
