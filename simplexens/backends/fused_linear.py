"""A faster simplex training step for modules whose trainable parameters are all linear layers.

The generic step (:func:`simplexens.backends.simplex.chunked_forward`) treats the module as a
black box: under ``torch.func.vmap`` every chunk of the batch gets its own parameter point,
and autograd returns one weight gradient per point (M x P numbers), which are then summed with
the barycentric weights of the new vertex. For a linear layer that sum is one matrix product
over the whole batch,

.. math:: \\frac{\\partial L}{\\partial V} = \\sum_m a_{mk} \\delta_m^T x_m
          = (a \\odot \\delta)^T x,

with :math:`\\delta_m` the output gradient of chunk m and :math:`a_{mk}` the coefficient of
the trainable anchor in point m (one such product per trainable anchor: the newest vertex or
connector, or every interior bend of a curve). :class:`ChunkedLinear` computes the forward
pass (one batched matrix product, chunk m at point m) and this backward pass without
per-point weight gradients.

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
    """``F.linear`` with chunk m of the rows at point m, only the trainable anchors trainable.

    ``apply(x, weights, frozen_w, trainable_w, frozen_b, trainable_b)``:

    - ``x`` of shape (m * c, ..., in): chunk m is rows ``m * c`` to ``(m + 1) * c``;
    - ``weights`` of shape (m, k + t): coefficients of the m points, the k frozen anchors'
      columns first, then the t trainable anchors';
    - ``frozen_w`` (k, out, in) and ``trainable_w`` (t, out, in): the layer's weight at the
      frozen and at the trainable anchors; ``frozen_b`` (k, out) and ``trainable_b`` (t, out)
      likewise, or both None for a layer without bias.

    Returns the output of shape (m * c, ..., out). Gradients flow to ``x`` and to the
    trainable anchors only.
    """

    @staticmethod
    def forward(ctx, x, weights, frozen_w, trainable_w, frozen_b, trainable_b):
        m, k = weights.shape[0], frozen_w.shape[0]
        w = _combine(weights, k, frozen_w, trainable_w)
        chunks = x.reshape(m, -1, x.shape[-1])
        if trainable_b is None:
            out = torch.bmm(chunks, w.transpose(1, 2))
        else:
            b = _combine(weights, k, frozen_b, trainable_b)
            out = torch.baddbmm(b[:, None, :], chunks, w.transpose(1, 2))
        ctx.save_for_backward(chunks, weights[:, k:], w)
        ctx.x_shape = x.shape
        ctx.has_bias = trainable_b is not None
        return out.view(*x.shape[:-1], w.shape[1])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        chunks, scales, w = ctx.saved_tensors
        m, n_out = len(scales), w.shape[1]
        grad_chunks = grad.reshape(m, -1, n_out)
        rows = chunks.reshape(-1, chunks.shape[-1])
        grads_w, grads_b = [], []
        for scale in scales.T:  # one weight-gradient product per trainable anchor
            scaled = grad_chunks * scale[:, None, None]
            grads_w.append(scaled.reshape(-1, n_out).T @ rows)
            grads_b.append(scaled.sum(dim=(0, 1)) if ctx.has_bias else None)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.bmm(grad_chunks, w).view(ctx.x_shape)
        grad_b = torch.stack(grads_b) if ctx.has_bias else None
        return grad_x, None, None, torch.stack(grads_w), None, grad_b


def _combine(weights, k, frozen, trainable):
    """Points ``weights @ [frozen; trainable]``, shape (m, *anchor shape)."""
    flat = torch.mm(weights[:, :k], frozen.reshape(k, -1))
    flat.addmm_(weights[:, k:], trainable.reshape(len(trainable), -1))
    return flat.view(len(weights), *trainable.shape[1:])


class SimplexParameter(torch.Tensor):
    """Stand-in for one trainable parameter while the module runs on the fused path.

    It holds the first trainable anchor's values (so shape, dtype and device are right) and
    carries the trainable and frozen anchors, the sampled coefficients and the number of rows
    the module is called with. ``F.linear`` on it runs :class:`ChunkedLinear`; any other
    operation raises :class:`NotFusableError`.
    """

    @staticmethod
    def wrap(trainable, frozen, weights, n_rows):
        """A stand-in for the parameter whose anchors are ``trainable`` (t, *shape)."""
        wrapped = torch.Tensor._make_subclass(SimplexParameter, trainable[0].detach(), False)
        wrapped.trainable, wrapped.frozen = trainable, frozen
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
    trainable_b = None if bias is None else bias.trainable
    return ChunkedLinear.apply(
        input, weight.weights, weight.frozen, weight.trainable, frozen_b, trainable_b
    )
