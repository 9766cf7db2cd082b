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

from ..geometry.simplex import gram_matrix, log_volume_from_gram, sample_barycentric
from .fused_linear import NotFusableError, SimplexParameter


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
    face. Hence ``d log V / d v_k = r / h^2``.

    Cost: per parameter tensor, one subtraction, k - 1 inner products and one squared norm
    forward, one matrix-vector update and one scaling backward, in the parameters' dtype;
    the per-tensor sums and the k x k algebra are in float64. (An autograd graph through
    float64 copies of every tensor cost as much as the rest of the step.)
    """

    @staticmethod
    def forward(ctx, simplex, *vertex):
        edges = [(v - simplex._frozen(i)[0]).reshape(-1) for i, v in enumerate(vertex)]
        frozen_gram = simplex.frozen_gram
        frozen_edges = [getattr(simplex, f"edges_{i}") for i in range(len(edges))]
        cross = [f @ e for f, e in zip(frozen_edges, edges, strict=True)]
        cross = torch.stack(cross).double().sum(0)
        square = torch.stack([e @ e for e in edges]).double().sum()
        gram = torch.cat(
            [
                torch.cat([frozen_gram, cross[:, None]], dim=1),
                torch.cat([cross, square[None]])[None],
            ]
        )
        # beta = G_f^{-1} E e and h^2 = e.e - (E e).beta, the squared height of v_k.
        beta = torch.linalg.solve_ex(frozen_gram, cross).result if len(cross) else cross
        ctx.frozen_edges = frozen_edges
        ctx.vertex_shapes = [v.shape for v in vertex]
        ctx.save_for_backward(beta, square - cross @ beta, *edges)
        return log_volume_from_gram(gram)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        beta, height2, *edges = ctx.saved_tensors
        scale = (grad / height2).to(edges[0].dtype)
        beta = beta.to(edges[0].dtype)
        grads = []
        for frozen, edge, vertex in zip(ctx.frozen_edges, edges, ctx.vertex_shapes, strict=True):
            residual = torch.addmv(edge, frozen.T, beta, alpha=-1)
            grads.append(residual.mul_(scale).view(vertex))
        return None, *grads


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
        self.register_load_state_dict_post_hook(lambda module, _: module._cache_frozen_geometry())
        self.vertex = nn.ParameterList(
            nn.Parameter(start[name].detach().clone()) for name in self.names
        )
        # Whether forward uses the fused path for linear layers (None: not decided yet).
        self.fused = None

    def _cache_frozen_geometry(self) -> None:
        """Cache the frozen edges and their Gram matrix (float64), which never change."""
        frozen = {name: self._frozen(i) for i, name in enumerate(self.names)}
        for i, vertices in enumerate(frozen.values()):
            edges = (vertices[1:] - vertices[:1]).flatten(1)
            self.register_buffer(f"edges_{i}", edges, persistent=False)
        self.register_buffer("frozen_gram", gram_matrix(frozen).detach(), persistent=False)

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
        if self.fused is None:
            self.fused = self._fused_agrees(weights, x)
        if self.fused:
            return self._fused_forward(weights, x)
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
        """Whether the fused path covers this module: decided once, on the first batch.

        It needs a module without buffers (BatchNorm's statistics are per chunk) whose
        trainable parameters are only used by linear layers on batch-first inputs, and whose
        rows do not interact; the last is checked by comparing both paths' outputs, in
        evaluation mode (no dropout) and without gradients.
        """
        if any(True for _ in self.template.buffers()):
            return False
        was_training = self.template.training
        self.template.eval()
        try:
            with torch.no_grad():
                fused = self._fused_forward(weights, x)
                generic = self._generic_forward(weights, x)
        except NotFusableError:
            return False
        finally:
            self.template.train(was_training)
        tolerance = 1e-5 * (1.0 + generic.abs().max())
        return bool((fused - generic).abs().max() <= tolerance)
