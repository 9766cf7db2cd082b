"""A faster simplex training step for modules whose trainable parameters are all linear layers.

The generic step (:func:`simplexens.backends.simplex.chunked_forward`) treats the module as a
black box: under ``torch.func.vmap`` every chunk of the batch gets its own parameter point,
and autograd returns one weight gradient per point (M x P numbers), which are then summed with
the barycentric weights of the new vertex. For a linear layer that sum is one matrix product
over the whole batch,

.. math:: \\frac{\\partial L}{\\partial V} = \\sum_m a_{mk} \\delta_m^T x_m
          = (a \\odot \\delta)^T x,

with :math:`\\delta_m` the output gradient of chunk m and :math:`a_{mk}` the weight of the
new vertex in point m. :class:`ChunkedLinear` computes the forward pass (one batched matrix
product, chunk m at point m) and this backward pass without per-point weight gradients.

The module is still called as written, through :func:`torch.func.functional_call`: its
trainable parameters are replaced by :class:`SimplexParameter` tensors, which answer
``torch.nn.functional.linear`` with :class:`ChunkedLinear` and raise :class:`NotFusableError` on
any other operation, so a module that uses its parameters otherwise (convolutions, BatchNorm,
a bare ``x @ w``) goes back to the generic path.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable
from torch.nn import functional as F


class NotFusableError(Exception):
    """The module does something with its parameters that the fused path does not cover."""


class ChunkedLinear(torch.autograd.Function):
    """``F.linear`` with chunk m of the rows at simplex point m, only the new vertex trainable.

    ``apply(x, weights, frozen_w, vertex_w, frozen_b, vertex_b)``:

    - ``x`` of shape (m * c, ..., in): chunk m is rows ``m * c`` to ``(m + 1) * c``;
    - ``weights`` of shape (m, k + 1): barycentric coordinates of the m points;
    - ``frozen_w`` (k, out, in) and ``vertex_w`` (out, in): the layer's weight at the frozen
      vertices and at the new one; ``frozen_b`` (k, out) and ``vertex_b`` (out) likewise, or
      both None for a layer without bias.

    Returns the output of shape (m * c, ..., out). Gradients flow to ``x`` and to the new
    vertex only.
    """

    @staticmethod
    def forward(ctx, x, weights, frozen_w, vertex_w, frozen_b, vertex_b):
        m, k = weights.shape[0], frozen_w.shape[0]
        w = torch.mm(weights[:, :k], frozen_w.reshape(k, -1))
        w.addmm_(weights[:, k:], vertex_w.reshape(1, -1))
        w = w.view(m, *vertex_w.shape)
        chunks = x.reshape(m, -1, x.shape[-1])
        if vertex_b is None:
            out = torch.bmm(chunks, w.transpose(1, 2))
        else:
            b = torch.addmm(torch.mm(weights[:, :k], frozen_b), weights[:, k:], vertex_b[None])
            out = torch.baddbmm(b[:, None, :], chunks, w.transpose(1, 2))
        ctx.save_for_backward(chunks, weights[:, k], w)
        ctx.x_shape = x.shape
        ctx.has_bias = vertex_b is not None
        return out.view(*x.shape[:-1], w.shape[1])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        chunks, scale, w = ctx.saved_tensors
        m, n_out = len(scale), w.shape[1]
        grad_chunks = grad.reshape(m, -1, n_out)
        scaled = grad_chunks * scale[:, None, None]
        grad_vertex_w = scaled.reshape(-1, n_out).T @ chunks.reshape(-1, chunks.shape[-1])
        grad_vertex_b = scaled.sum(dim=(0, 1)) if ctx.has_bias else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.bmm(grad_chunks, w).view(ctx.x_shape)
        return grad_x, None, None, grad_vertex_w, None, grad_vertex_b


class SimplexParameter(torch.Tensor):
    """Stand-in for one trainable parameter while the module runs on the fused path.

    It holds the new vertex's values (so shape, dtype and device are right) and carries the
    frozen vertices, the sampled barycentric weights and the number of rows the module is
    called with. ``F.linear`` on it runs :class:`ChunkedLinear`; any other operation raises
    :class:`NotFusableError`.
    """

    @staticmethod
    def wrap(vertex, frozen, weights, n_rows):
        """A stand-in for ``vertex`` (the new vertex's ``nn.Parameter``)."""
        wrapped = torch.Tensor._make_subclass(SimplexParameter, vertex.detach(), False)
        wrapped.vertex, wrapped.frozen = vertex, frozen
        wrapped.weights, wrapped.n_rows = weights, n_rows
        return wrapped

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is F.linear:
            return _linear(*args, **(kwargs or {}))
        name = getattr(func, "__name__", repr(func))
        raise NotFusableError(f"{name} on a parameter")


def _linear(input, weight, bias=None):  # F.linear's own argument names, for keyword calls
    if not isinstance(weight, SimplexParameter) or isinstance(input, SimplexParameter):
        raise NotFusableError("linear with a frozen weight or a parameter as input")
    if bias is not None and not isinstance(bias, SimplexParameter):
        raise NotFusableError("linear with a frozen bias")
    if input.ndim < 2 or input.shape[0] != weight.n_rows:
        raise NotFusableError("linear on an input whose first axis is not the batch")
    frozen_b = None if bias is None else bias.frozen
    vertex_b = None if bias is None else bias.vertex
    return ChunkedLinear.apply(
        input, weight.weights, weight.frozen, weight.vertex, frozen_b, vertex_b
    )
