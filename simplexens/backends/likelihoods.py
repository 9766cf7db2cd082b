"""Likelihoods of the regressors: output layouts, training criteria and predictive splits.

A regressor member is the user's module seen through one of three likelihoods
(:data:`LIKELIHOODS`), each fixing how many columns the module outputs per target and which
criterion trains it:

================  ======================  ===============================  ==================
likelihood        module output (B, W)    criterion                        predictive std
================  ======================  ===============================  ==================
``gaussian``      ``[mu | raw]``, W = 2T  :class:`GaussianNLLLoss`         per input
``homoscedastic`` ``mu``, W = T           :class:`GaussianNLLLoss` after   one per target,
                                          :class:`Homoscedastic`           learned
``mse``           ``mu``, W = T           :class:`SquaredErrorLoss`        none
================  ======================  ===============================  ==================

**Layout.** A Gaussian output of width ``2T`` holds the ``T`` means ``mu`` in its first
``T`` columns and the ``T`` raw scales in the last ``T``, target ``t`` in columns ``t`` and
``T + t``. A raw scale ``r`` becomes a standard deviation by
``sigma = softplus(r) + sigma_min`` (:func:`scale_from_raw`), positive for any real ``r``,
with gradient ``sigmoid(r)`` that neither explodes (as ``exp`` does) nor dies on one side
(as a clamp does). ``sigma_min`` (``min_scale``, default 1e-3) is in the units of the
targets the network is trained on: the regressors standardise ``y``, so it is a thousandth of
each target's standard deviation. It bounds ``log sigma`` below, so that a member cannot win
unbounded likelihood by collapsing its variance onto a training point.

This is the mean-variance network of Nix and Weigend (1994) with the positivity transform of
Lakshminarayanan et al. (2017). The module is pure torch: no skorch, no scikit-learn.

References
----------
.. [1] D. A. Nix and A. S. Weigend, "Estimating the Mean and Variance of the Target
   Probability Distribution", IEEE International Conference on Neural Networks (ICNN), 1994.
.. [2] B. Lakshminarayanan, A. Pritzel and C. Blundell, "Simple and Scalable Predictive
   Uncertainty Estimation using Deep Ensembles", NeurIPS 2017.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DEFAULT_MIN_SCALE",
    "LIKELIHOODS",
    "GaussianNLLLoss",
    "Homoscedastic",
    "SquaredErrorLoss",
    "criterion_for",
    "output_width",
    "raw_from_scale",
    "scale_from_raw",
    "split_output",
]

#: The likelihoods a regressor accepts, in the order its docstring lists them.
LIKELIHOODS = ("gaussian", "homoscedastic", "mse")

#: Floor ``sigma_min`` added to ``softplus(raw)``, in the units of the (standardised) targets.
DEFAULT_MIN_SCALE = 1e-3

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_REDUCTIONS = ("mean", "sum", "none")
_GAUSSIAN_WIDTH = "the module must output a mean and a scale per target: 2 × n_targets columns"
_MEAN_WIDTH = "the module must output one mean per target: n_targets columns"


# ----------------------------------------------------------------------------- checks


def _check_likelihood(likelihood) -> str:
    if not isinstance(likelihood, str) or likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}; got {likelihood!r}.")
    return likelihood


def _check_n_targets(n_targets) -> int:
    if isinstance(n_targets, bool) or not isinstance(n_targets, numbers.Integral):
        raise ValueError(f"n_targets must be a positive integer; got {n_targets!r}.")
    if n_targets < 1:
        raise ValueError(f"n_targets must be a positive integer; got {n_targets!r}.")
    return int(n_targets)


def _check_min_scale(min_scale) -> float:
    if isinstance(min_scale, bool) or not isinstance(min_scale, numbers.Real):
        raise ValueError(f"min_scale must be a positive finite number; got {min_scale!r}.")
    if not (math.isfinite(min_scale) and min_scale > 0):
        raise ValueError(f"min_scale must be a positive finite number; got {min_scale!r}.")
    return float(min_scale)


def _width_error(likelihood: str, n_targets: int, shape, where: str) -> ValueError:
    expected = output_width(likelihood, n_targets)
    rule = _MEAN_WIDTH if likelihood == "mse" else _GAUSSIAN_WIDTH
    return ValueError(
        f"{where}: {rule} (likelihood={likelihood!r}, n_targets={n_targets}: {expected} "
        f"columns); got an output of shape {tuple(shape)}."
    )


# ------------------------------------------------------------------------- functions


def output_width(likelihood: str, n_targets: int) -> int:
    """Number of output columns the module must have under ``likelihood``.

    Parameters
    ----------
    likelihood : {"gaussian", "homoscedastic", "mse"}
        See :data:`LIKELIHOODS`.
    n_targets : int
        ``T``, the number of regression targets, at least 1.

    Returns
    -------
    int
        ``2T`` for ``"gaussian"`` (a mean and a raw scale per target); ``T`` for
        ``"homoscedastic"`` (the user's module outputs the means, :class:`Homoscedastic`
        appends the scales) and ``"mse"``.

    Raises
    ------
    ValueError
        If ``likelihood`` is not in :data:`LIKELIHOODS` or ``n_targets`` is not a positive
        integer.

    Examples
    --------
    >>> output_width("gaussian", 3), output_width("homoscedastic", 3), output_width("mse", 3)
    (6, 3, 3)
    """
    likelihood = _check_likelihood(likelihood)
    n_targets = _check_n_targets(n_targets)
    return 2 * n_targets if likelihood == "gaussian" else n_targets


def criterion_for(likelihood: str) -> type[nn.Module]:
    """The criterion class that trains a member under ``likelihood``.

    Parameters
    ----------
    likelihood : {"gaussian", "homoscedastic", "mse"}
        See :data:`LIKELIHOODS`.

    Returns
    -------
    type
        :class:`GaussianNLLLoss` for ``"gaussian"`` and ``"homoscedastic"`` (the latter on
        the output of :class:`Homoscedastic`), :class:`SquaredErrorLoss` for ``"mse"``. A
        class, not an instance, as skorch's ``criterion`` parameter takes it.

    Raises
    ------
    ValueError
        If ``likelihood`` is not in :data:`LIKELIHOODS`.

    Notes
    -----
    ``torch.nn.MSELoss(reduction="none")`` returns one loss per value, shape ``(B, T)``,
    where sample weights need one per row, and broadcasts an output of shape ``(B, 1)``
    against a target of shape ``(B,)`` to ``(B, B)``; :class:`SquaredErrorLoss` returns one
    per row and checks the shapes, and equals ``MSELoss`` under ``"mean"``.

    Examples
    --------
    >>> criterion_for("homoscedastic").__name__, criterion_for("mse").__name__
    ('GaussianNLLLoss', 'SquaredErrorLoss')
    """
    return SquaredErrorLoss if _check_likelihood(likelihood) == "mse" else GaussianNLLLoss


def scale_from_raw(raw: torch.Tensor, min_scale: float = DEFAULT_MIN_SCALE) -> torch.Tensor:
    """Standard deviations ``sigma = softplus(raw) + sigma_min`` of raw network outputs.

    Parameters
    ----------
    raw : Tensor of any shape
        Raw scales, any real values.
    min_scale : float, default=1e-3
        ``sigma_min``, the floor, in the units of the standardised targets.

    Returns
    -------
    Tensor of the shape of ``raw``
        ``softplus(raw) + sigma_min``, at least ``sigma_min``; ``softplus(r) = log(1 + e^r)``
        (computed as ``r`` for ``r > 20``).
    """
    return F.softplus(raw) + _check_min_scale(min_scale)


def raw_from_scale(scale, min_scale: float = DEFAULT_MIN_SCALE) -> torch.Tensor:
    """The raw value whose :func:`scale_from_raw` is ``scale``: the inverse transform.

    ``raw = s + log(1 - e^{-s})`` with ``s = sigma - sigma_min``, the inverse softplus
    ``log(e^s - 1)`` written so that it does not overflow for large ``s``.

    Parameters
    ----------
    scale : float or Tensor
        Standard deviations ``sigma``, each greater than ``min_scale``.
    min_scale : float, default=1e-3
        ``sigma_min``, as in :func:`scale_from_raw`.

    Returns
    -------
    Tensor
        Raw scales, in the dtype of a floating tensor ``scale``, else torch's default dtype
        (a 0-d tensor for a float ``scale``).

    Raises
    ------
    ValueError
        If a ``scale`` is not greater than ``min_scale``.
    """
    scale = torch.as_tensor(scale)
    if not scale.is_floating_point():
        scale = scale.to(torch.get_default_dtype())
    excess = scale - _check_min_scale(min_scale)
    if not bool((excess > 0).all()):
        raise ValueError(f"scale must be greater than min_scale={min_scale}; got {scale!r}.")
    return excess + torch.log(-torch.expm1(-excess))


def split_output(
    output: torch.Tensor, likelihood: str, n_targets: int, min_scale: float = DEFAULT_MIN_SCALE
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Predictive means and standard deviations from a member's (or members') raw outputs.

    Parameters
    ----------
    output : Tensor of shape (..., width)
        Raw module outputs, e.g. ``(B, width)`` for one member or
        ``(n_members, B, width)`` for a stack; for ``"homoscedastic"`` the output of the
        :class:`Homoscedastic` wrapper, whose width is ``2T``.
    likelihood : {"gaussian", "homoscedastic", "mse"}
        See :data:`LIKELIHOODS`.
    n_targets : int
        ``T``.
    min_scale : float, default=1e-3
        ``sigma_min`` of :func:`scale_from_raw`; the value the member was trained with.

    Returns
    -------
    means : Tensor of shape (..., T)
        The first ``T`` columns (a view of ``output``).
    stds : Tensor of shape (..., T) or None
        ``softplus(raw) + sigma_min`` of the last ``T`` columns; None for ``"mse"``, whose
        members predict no noise.

    Raises
    ------
    ValueError
        If ``likelihood`` or ``n_targets`` is invalid, or the last axis of ``output`` is not
        ``2T`` wide (``T`` for ``"mse"``); the message says "the module must output a mean
        and a scale per target: 2 × n_targets columns".
    """
    likelihood = _check_likelihood(likelihood)
    n_targets = _check_n_targets(n_targets)
    # The homoscedastic wrapper has already appended its scales: its output is Gaussian.
    width = n_targets if likelihood == "mse" else 2 * n_targets
    if output.dim() == 0 or output.shape[-1] != width:
        where = "split_output"
        if likelihood == "homoscedastic":
            raise _width_error("gaussian", n_targets, output.shape, where)
        raise _width_error(likelihood, n_targets, output.shape, where)
    if likelihood == "mse":
        return output, None
    return output[..., :n_targets], scale_from_raw(output[..., n_targets:], min_scale)


# ---------------------------------------------------------------------------- modules


def _loss_precision(output: torch.Tensor) -> torch.Tensor:
    """Half-precision outputs (autocast) in float32: the standardised targets and the
    squared z-scores of the Gaussian NLL need more than float16's range and bfloat16's
    three digits."""
    if output.dtype in (torch.float16, torch.bfloat16):
        return output.float()
    return output


class GaussianNLLLoss(nn.Module):
    """Negative log-likelihood of independent Gaussians, one per target, for training.

    For an output row ``[mu_1..mu_T | r_1..r_T]`` and target row ``y``, with
    ``sigma_t = softplus(r_t) + sigma_min``, the loss of the row is the exact negative log
    density of ``y`` under ``prod_t N(mu_t, sigma_t^2)``::

        l = sum_t [ log sigma_t + (y_t - mu_t)^2 / (2 sigma_t^2) ] + (T / 2) log(2 pi)

    (``-sum_t scipy.stats.norm.logpdf(y_t, mu_t, sigma_t)``), the criterion of the
    mean-variance network [1]_ and of the members of a deep ensemble [2]_. Targets are
    summed within a row (the joint NLL of the target vector), so the loss of a row grows with
    ``T``; the metrics of :mod:`simplexens.metrics` report the mean per value instead.

    Usable as a skorch ``criterion`` (``criterion__min_scale``, ``criterion__reduction``).

    Parameters
    ----------
    min_scale : float, default=1e-3
        ``sigma_min``, the floor of the standard deviation, in the units of the targets the
        network sees (the regressors standardise ``y``: a thousandth of each target's standard
        deviation). Positive and finite.
    reduction : {"mean", "sum", "none"}, default="mean"
        ``"mean"``: the mean of ``l`` over rows; ``"sum"``: their sum; ``"none"``: ``l`` per
        row, shape ``(B,)``, which sample-weighted training averages with its weights.

    Raises
    ------
    ValueError
        At construction, for an invalid ``min_scale`` or ``reduction``; in :meth:`forward`,
        for mismatched shapes.

    See Also
    --------
    torch.nn.GaussianNLLLoss : takes a variance, clamps it below, averages over values and
        drops the constant by default.

    References
    ----------
    .. [1] D. A. Nix and A. S. Weigend, "Estimating the Mean and Variance of the Target
       Probability Distribution", IEEE ICNN 1994.
    .. [2] B. Lakshminarayanan, A. Pritzel and C. Blundell, "Simple and Scalable Predictive
       Uncertainty Estimation using Deep Ensembles", NeurIPS 2017.

    Examples
    --------
    >>> loss = GaussianNLLLoss()
    >>> output = torch.tensor([[0.0, 100.0]])  # mu = 0, sigma = softplus(100) + 1e-3
    >>> round(float(loss(output, torch.tensor([0.0])) - math.log(100.001)), 4)
    0.9189
    """

    def __init__(self, min_scale: float = DEFAULT_MIN_SCALE, reduction: str = "mean"):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}; got {reduction!r}.")
        self.min_scale = _check_min_scale(min_scale)
        self.reduction = reduction

    def extra_repr(self) -> str:
        return f"min_scale={self.min_scale}, reduction={self.reduction!r}"

    def forward(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss of ``output`` for targets ``y``.

        Parameters
        ----------
        output : Tensor of shape (B, 2T)
            Means in the first ``T`` columns, raw scales in the last ``T``.
        y : Tensor of shape (B, T), or (B,) when T = 1
            Targets; cast to the dtype (at least float32) and device of ``output``.
            ``T`` is read from ``y``.

        Returns
        -------
        Tensor
            A scalar for ``reduction="mean"`` or ``"sum"``; shape ``(B,)`` for ``"none"``.

        Raises
        ------
        ValueError
            If ``output`` is not ``2T`` columns wide for the ``T`` of ``y`` ("the module must
            output a mean and a scale per target: 2 × n_targets columns"), or the rows differ.
        """
        output = _loss_precision(output)
        y = y.to(device=output.device, dtype=output.dtype)
        if y.dim() == output.dim() - 1:
            y = y.unsqueeze(-1)
        n_targets = y.shape[-1] if y.dim() > 0 else 0
        if output.dim() == 0 or n_targets == 0 or output.shape[-1] != 2 * n_targets:
            raise ValueError(
                f"GaussianNLLLoss: {_GAUSSIAN_WIDTH} (n_targets={n_targets} from y of shape "
                f"{tuple(y.shape)}: {2 * n_targets} columns); got an output of shape "
                f"{tuple(output.shape)}."
            )
        if output.shape[:-1] != y.shape[:-1]:
            raise ValueError(
                f"GaussianNLLLoss: output of shape {tuple(output.shape)} and y of shape "
                f"{tuple(y.shape)} have different rows."
            )
        mean, raw = output[..., :n_targets], output[..., n_targets:]
        sigma = F.softplus(raw) + self.min_scale
        z = (y - mean) / sigma
        losses = (torch.log(sigma) + 0.5 * z * z).sum(dim=-1) + n_targets * _HALF_LOG_2PI
        if self.reduction == "none":
            return losses
        return losses.sum() if self.reduction == "sum" else losses.mean()


class SquaredErrorLoss(nn.Module):
    """Squared error averaged over targets, one loss per row: the ``"mse"`` likelihood.

    For an output row ``mu`` and target row ``y`` of ``T`` values the loss of the row is
    ``(1/T) sum_t (y_t - mu_t)^2``; under ``reduction="mean"`` the mean over rows, which is
    :class:`torch.nn.MSELoss`. Unlike it, ``reduction="none"`` gives one loss per row
    (what sample-weighted training averages with its weights), and the shapes must agree
    (a target of shape ``(B,)`` is read as ``(B, 1)``).

    Parameters
    ----------
    reduction : {"mean", "sum", "none"}, default="mean"
        ``"mean"``: the mean over rows; ``"sum"``: the sum; ``"none"``: per row, ``(B,)``.

    Raises
    ------
    ValueError
        At construction, for an invalid ``reduction``; in :meth:`forward`, if ``output`` is
        not ``(B, T)`` for targets ``(B, T)``.

    Examples
    --------
    >>> SquaredErrorLoss(reduction="none")(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]]))
    tensor([2.5000])
    """

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}; got {reduction!r}.")
        self.reduction = reduction

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"

    def forward(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss of ``output`` (B, T) for targets ``y`` (B, T) or (B,)."""
        output = _loss_precision(output)
        y = y.to(device=output.device, dtype=output.dtype)
        if y.dim() == output.dim() - 1:
            y = y.unsqueeze(-1)
        if output.shape != y.shape or output.dim() == 0:
            raise ValueError(
                f"SquaredErrorLoss: {_MEAN_WIDTH}; got an output of shape "
                f"{tuple(output.shape)} for y of shape {tuple(y.shape)}."
            )
        losses = (output - y).square().mean(dim=-1)
        if self.reduction == "none":
            return losses
        return losses.sum() if self.reduction == "sum" else losses.mean()


class Homoscedastic(nn.Module):
    """A module predicting means, given one learned noise scale per target.

    The wrapped module maps the input to means of shape ``(..., T)``; this wrapper appends
    the raw scale ``r_t`` of target ``t``, the same for every input, and returns
    ``[mu | r]`` of shape ``(..., 2T)``: the layout of the ``"gaussian"`` likelihood, which
    :class:`GaussianNLLLoss` trains and :func:`split_output` reads
    (``sigma_t = softplus(r_t) + sigma_min``). Training both by maximum likelihood fits the
    noise variance with the means, so the learned noise is the member's own and lives in
    its state dict.

    Parameters
    ----------
    module : nn.Module
        The user's network; its output's last axis must be ``n_targets`` wide.
    n_targets : int
        ``T``.
    min_scale : float, default=1e-3
        ``sigma_min`` of the criterion, used only to initialise ``raw_scale`` so that
        ``sigma = 1`` (the standard deviation of a standardised target).

    Attributes
    ----------
    module : nn.Module
        The wrapped network: its state dict entries are prefixed ``module.``.
    raw_scale : nn.Parameter of shape (T,)
        ``r``, initialised to ``raw_from_scale(max(1, 2 min_scale), min_scale)``; state
        dict entry ``raw_scale``.

    Raises
    ------
    ValueError
        At construction, for an invalid ``n_targets`` or ``min_scale``; in :meth:`forward`,
        if the wrapped module's output is not ``n_targets`` wide.

    References
    ----------
    .. [1] D. A. Nix and A. S. Weigend, "Estimating the Mean and Variance of the Target
       Probability Distribution", IEEE ICNN 1994.
    .. [2] B. Lakshminarayanan, A. Pritzel and C. Blundell, "Simple and Scalable Predictive
       Uncertainty Estimation using Deep Ensembles", NeurIPS 2017.

    Examples
    --------
    >>> net = Homoscedastic(nn.Linear(4, 2), n_targets=2)
    >>> net(torch.zeros(5, 4)).shape, sorted(net.state_dict())
    (torch.Size([5, 4]), ['module.bias', 'module.weight', 'raw_scale'])
    """

    def __init__(self, module: nn.Module, n_targets: int, min_scale: float = DEFAULT_MIN_SCALE):
        super().__init__()
        self.module = module
        self.n_targets = _check_n_targets(n_targets)
        self.min_scale = _check_min_scale(min_scale)
        self.raw_scale = nn.Parameter(torch.empty(self.n_targets))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Set ``raw_scale`` back to ``sigma = max(1, 2 sigma_min)`` (1 unless the floor is at
        least 1/2); the wrapped module is left alone."""
        start = max(1.0, 2.0 * self.min_scale)
        with torch.no_grad():
            self.raw_scale.fill_(float(raw_from_scale(start, self.min_scale)))

    def extra_repr(self) -> str:
        return f"n_targets={self.n_targets}, min_scale={self.min_scale}"

    def forward(self, *args, **kwargs) -> torch.Tensor:
        """``[mu | r]`` of shape ``(..., 2T)``, ``mu = module(*args, **kwargs)``."""
        mean = self.module(*args, **kwargs)
        if mean.dim() == 0 or mean.shape[-1] != self.n_targets:
            raise ValueError(
                f"Homoscedastic: {_MEAN_WIDTH} (n_targets={self.n_targets}); got an output "
                f"of shape {tuple(mean.shape)}."
            )
        raw = self.raw_scale.expand(mean.shape)
        return torch.cat([mean, raw], dim=-1)
