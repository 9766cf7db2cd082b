r"""SWA and SWAG statistics of a weight trajectory, and sampling from SWAG's Gaussian.

Stochastic weight averaging (SWA; Izmailov et al. 2018) predicts with the running mean
:math:`\bar\theta` of weights collected along an SGD trajectory at a constant or cyclic
learning rate. SWAG (Maddox et al. 2019) fits a Gaussian to the same trajectory: a diagonal
covariance from the running second moment, plus a low-rank covariance from the last
:math:`K` deviations :math:`D`, and samples weights from it,

.. math::

    \tilde\theta = \bar\theta
        + \tfrac{1}{\sqrt{2}} \Sigma_{\mathrm{diag}}^{1/2} z_1
        + \tfrac{1}{\sqrt{2(K - 1)}} D^\top z_2,
    \qquad z_1 \sim \mathcal N(0, I_P),\; z_2 \sim \mathcal N(0, I_K).

:class:`SWAGMoments` holds the statistics per named tensor and is pure torch; it does not know
about modules, optimisers or BatchNorm (sampled weights need their BatchNorm statistics
recomputed, see :mod:`simplexens.backends.batchnorm`).

References
----------
.. [1] Izmailov, P., Podoprikhin, D., Garipov, T., Vetrov, D. and Wilson, A. G. (2018).
   Averaging Weights Leads to Wider Optima and Better Generalization. UAI.
.. [2] Maddox, W. J., Izmailov, P., Garipov, T., Vetrov, D. P. and Wilson, A. G. (2019).
   A Simple Baseline for Bayesian Uncertainty in Deep Learning. NeurIPS.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import torch

COVARIANCES = ("full", "diagonal")


class SWAGMoments:
    r"""Running SWAG statistics of a weight trajectory, per named tensor.

    Each :meth:`collect` adds one snapshot :math:`\theta_n` and updates, with :math:`n` the
    number of snapshots so far (this one included),

    - the mean :math:`\bar\theta_n = \bar\theta_{n-1} + (\theta_n - \bar\theta_{n-1})/n`
      (the SWA weights),
    - the second moment :math:`\overline{\theta^2}_n`, the same running mean of the squares,
    - the deviation :math:`\theta_n - \bar\theta_n` from the *updated* mean (as in
      Algorithm 1 of [2]_), appended to a first-in-first-out buffer that keeps the newest
      :math:`K` = ``max_rank``.

    The mean and second moment are accumulated in float64; the deviations are kept, and the
    samples returned, in each tensor's own dtype.

    Memory: for :math:`P` numbers in the collected tensors the object holds
    :math:`(2 + K_{\mathrm{eff}}) P` numbers (and room for at most :math:`K_{\mathrm{eff}} P`
    more), :math:`K_{\mathrm{eff}} = \min(n, K)` the deviations collected so far: the mean
    and the second moment in float64 (their difference is the variance, which float32 would
    lose when the trajectory moves little against the weights' size) and the deviations in
    the tensors' own dtype. The deviation buffer is allocated as the snapshots arrive, not
    for ``max_rank`` up front: when it is full its capacity doubles, up to :math:`K` (and up
    to ``expected_collections`` while the collections stay within that hint). It so holds at
    most :math:`2 K_{\mathrm{eff}}` rows, exactly :math:`K` once :math:`K` deviations are
    collected. Growing copies the rows held: fewer than two copies per deviation on average
    (four if the collections outrun ``expected_collections``), and the old and the new
    buffer briefly coexist. Pickles and :meth:`state_dict` carry the :math:`K_{\mathrm{eff}}`
    deviations only, so their size does not depend on ``max_rank``.

    Parameters
    ----------
    max_rank : int, default=20
        :math:`K`, the number of deviations kept, which bounds the rank of the low-rank
        covariance term. At least 1 (but the low-rank term needs 2). The paper uses 20.
    device : str or torch.device, optional
        Where the statistics live. ``None`` (the default) keeps them on the device of the
        first collected tensors (the first of them if they are spread over several devices);
        ``"cpu"`` keeps them in host memory while training on a GPU.
    expected_collections : int, optional
        How many snapshots the caller expects to collect (e.g. from its training schedule),
        a hint that caps the growth of the deviation buffer: as long as at most this many
        snapshots are collected, the buffer never holds more than
        ``min(max_rank, expected_collections)`` rows. More collections than announced are
        still taken, the buffer then grows again as without the hint. ``None`` (the default)
        gives no hint. Neither statistics nor samples depend on it.

    Attributes
    ----------
    max_rank : int
        :math:`K`.
    device : torch.device or None
        Where the statistics live; ``None`` until the first :meth:`collect` when not given.
    expected_collections : int or None
        The hint given.

    Notes
    -----
    The object has only plain attributes and pickles them, the deviation buffers cut to the
    rows in use; :meth:`state_dict` and :meth:`load_state_dict` give and take plain dicts of
    tensors. Either way the restored object draws the same samples from the same generator.

    References
    ----------
    .. [1] Izmailov, P., Podoprikhin, D., Garipov, T., Vetrov, D. and Wilson, A. G. (2018).
       Averaging Weights Leads to Wider Optima and Better Generalization. UAI.
    .. [2] Maddox, W. J., Izmailov, P., Garipov, T., Vetrov, D. P. and Wilson, A. G. (2019).
       A Simple Baseline for Bayesian Uncertainty in Deep Learning. NeurIPS.

    Examples
    --------
    >>> import torch
    >>> moments = SWAGMoments(max_rank=3)
    >>> for step in range(5):
    ...     moments.collect({"w": torch.full((2,), float(step))})
    >>> moments.mean["w"]
    tensor([2., 2.])
    >>> moments.deviations["w"].shape
    torch.Size([3, 2])
    >>> sample = moments.sample(torch.Generator().manual_seed(0))
    >>> sample["w"].shape
    torch.Size([2])
    """

    def __init__(
        self,
        max_rank: int = 20,
        device: str | torch.device | None = None,
        *,
        expected_collections: int | None = None,
    ) -> None:
        if not _is_int_at_least(max_rank, 1):
            raise ValueError(f"max_rank must be an integer >= 1, got {max_rank!r}")
        if expected_collections is not None and not _is_int_at_least(expected_collections, 0):
            raise ValueError(
                f"expected_collections must be None or an integer >= 0, "
                f"got {expected_collections!r}"
            )
        self.max_rank = int(max_rank)
        self.device = None if device is None else torch.device(device)
        self.expected_collections = (
            None if expected_collections is None else int(expected_collections)
        )
        self._n = 0
        self._mean: dict[str, torch.Tensor] = {}
        self._sq_mean: dict[str, torch.Tensor] = {}
        # (capacity, *shape): rows 0..n-1 in collection order until n reaches max_rank; from
        # then on capacity == max_rank and the rows form a ring (see _oldest_slot).
        self._buffer: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ collecting

    @torch.no_grad()
    def collect(self, tensors: Mapping[str, torch.Tensor]) -> None:
        r"""Add one snapshot :math:`\theta_n` of the trajectory.

        The tensors are detached and moved to the statistics' device; they are not kept (the
        statistics are updated in place and the deviation is written into the buffer, which
        first grows if it is full and holds fewer than ``max_rank`` rows). Nothing waits for
        the device (no host synchronisation), except the copy itself when the statistics live
        on another device than the tensors.

        Parameters
        ----------
        tensors : mapping of str to Tensor
            The snapshot, e.g. ``dict(module.named_parameters())``: floating-point tensors,
            with the same names and shapes at every call.

        Raises
        ------
        ValueError
            If ``tensors`` is empty, or its names or shapes differ from the first snapshot's.
        TypeError
            If a tensor is not floating point.
        """
        if self._n == 0:
            self._start(tensors)
        else:
            self._check_like_first(tensors)
        slot = self._next_slot()
        self._n += 1
        weight = 1.0 / self._n
        for name, mean in self._mean.items():
            # Moments in float64: the variance is a difference of two close numbers.
            theta = tensors[name].detach().to(device=mean.device, dtype=torch.float64)
            mean.lerp_(theta, weight)
            self._sq_mean[name].mul_(1.0 - weight).addcmul_(theta, theta, value=weight)
            self._buffer[name][slot].copy_(theta - mean)

    def _start(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Allocate zeroed moments shaped like the first snapshot, and empty buffers."""
        if not tensors:
            raise ValueError("collect() needs at least one tensor; got an empty mapping")
        for name, tensor in tensors.items():
            if not tensor.is_floating_point():
                raise TypeError(f"tensor {name!r} has dtype {tensor.dtype}; need floating point")
        if self.device is None:
            self.device = next(iter(tensors.values())).device
        for name, tensor in tensors.items():
            wide = dict(device=self.device, dtype=torch.float64)
            self._mean[name] = torch.zeros(tensor.shape, **wide)
            self._sq_mean[name] = torch.zeros(tensor.shape, **wide)
            self._buffer[name] = torch.empty(
                (0, *tensor.shape), device=self.device, dtype=tensor.dtype
            )

    def _next_slot(self) -> int:
        """The buffer row for the next deviation, after growing the buffer if it is full."""
        if self._n >= self.max_rank:
            return self._n % self.max_rank
        if self._n == self.capacity:
            self._grow(self._grown_capacity())
        return self._n

    def _grown_capacity(self) -> int:
        """The capacity after the next growth step: doubled, capped by K and by the hint."""
        needed = self.capacity + 1
        capacity = max(2 * self.capacity, 1)
        if self.expected_collections is not None and needed <= self.expected_collections:
            capacity = min(capacity, self.expected_collections)
        return min(capacity, self.max_rank)

    def _grow(self, capacity: int) -> None:
        """Move the deviations held into buffers of ``capacity`` rows (rows past n unset)."""
        for name, old in self._buffer.items():
            new = old.new_empty((capacity, *old.shape[1:]))
            new[: self._n].copy_(old[: self._n])
            self._buffer[name] = new

    def _check_like_first(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Raise if the names or shapes of ``tensors`` differ from the first snapshot's."""
        if set(tensors) != set(self._mean):
            missing = sorted(set(self._mean) - set(tensors))
            extra = sorted(set(tensors) - set(self._mean))
            raise ValueError(
                f"collect() got other tensors than the first snapshot: missing {missing}, "
                f"unexpected {extra}"
            )
        for name, mean in self._mean.items():
            if tensors[name].shape != mean.shape:
                raise ValueError(
                    f"tensor {name!r} has shape {tuple(tensors[name].shape)}, "
                    f"but {tuple(mean.shape)} in the first snapshot"
                )

    # ------------------------------------------------------------------ statistics

    @property
    def n_collected(self) -> int:
        """int : :math:`n`, the number of snapshots collected."""
        return self._n

    @property
    def n_deviations(self) -> int:
        r"""int : :math:`K_{\mathrm{eff}} = \min(n, K)`, the number of deviations held."""
        return min(self._n, self.max_rank)

    @property
    def capacity(self) -> int:
        r"""int : The number of deviation rows allocated per tensor (0 before any collect).

        At least :attr:`n_deviations`, at most :math:`\min(K, 2 K_{\mathrm{eff}})`, exactly
        :math:`K` once :math:`n \ge K`, and at most ``expected_collections`` as long as
        :math:`n` does not exceed it.
        """
        return next(iter(self._buffer.values())).shape[0] if self._buffer else 0

    @property
    def mean(self) -> dict[str, torch.Tensor]:
        r"""dict of str to Tensor : :math:`\bar\theta`, the SWA weights.

        In the collected tensors' dtype (accumulated in float64; new tensors).
        """
        return {name: m.to(self._dtype(name), copy=True) for name, m in self._mean.items()}

    @property
    def sq_mean(self) -> dict[str, torch.Tensor]:
        r"""dict of str to Tensor : :math:`\overline{\theta^2}`, the mean of the squares.

        In the collected tensors' dtype (accumulated in float64; new tensors).
        """
        return {name: m.to(self._dtype(name), copy=True) for name, m in self._sq_mean.items()}

    def _dtype(self, name: str) -> torch.dtype:
        """The dtype of the collected tensor ``name`` (that of its deviation buffer)."""
        return self._buffer[name].dtype

    @property
    def deviations(self) -> dict[str, torch.Tensor]:
        r"""dict of str to Tensor of shape (n_deviations, \*shape) : the deviations :math:`D`.

        Row :math:`i` is :math:`\theta_i - \bar\theta_i`, oldest first, newest last. Once the
        buffer has wrapped around the rows are a reordered copy; before, a view (which later
        collects may leave behind when the buffer grows).
        """
        start = self._oldest_slot()
        if start == 0:
            return {name: self._used_buffer(name) for name in self._buffer}
        return {name: torch.roll(buf, -start, dims=0) for name, buf in self._buffer.items()}

    def _oldest_slot(self) -> int:
        """The buffer row holding the oldest deviation (0 until the buffer wraps)."""
        return self._n % self.max_rank if self._n >= self.max_rank else 0

    def variance(self, var_clamp: float = 1e-30) -> dict[str, torch.Tensor]:
        r"""The diagonal variances, :math:`\max(\overline{\theta^2} - \bar\theta^2, \epsilon)`.

        :math:`\Sigma_{\mathrm{diag}}` (Maddox et al. 2019), the variance of the collected
        snapshots (with denominator :math:`n`).

        Parameters
        ----------
        var_clamp : float, default=1e-30
            :math:`\epsilon`, the smallest variance returned (the difference of moments can
            round to a small negative number).

        Returns
        -------
        dict of str to Tensor
            The diagonal variances, each shaped like its tensor (new float64 tensors).
        """
        return {
            name: torch.addcmul(self._sq_mean[name], mean, mean, value=-1.0).clamp_(min=var_clamp)
            for name, mean in self._mean.items()
        }

    # ------------------------------------------------------------------ sampling

    def sample(
        self,
        generator: torch.Generator,
        *,
        scale: float = 0.5,
        covariance: str = "full",
        var_clamp: float = 1e-30,
    ) -> dict[str, torch.Tensor]:
        r"""Draw one set of weights :math:`\tilde\theta` from the SWAG Gaussian.

        .. math::

            \tilde\theta = \bar\theta + \sqrt{s}\,\Bigl(\Sigma_{\mathrm{diag}}^{1/2} z_1
                + \frac{D^\top z_2}{\sqrt{K_{\mathrm{eff}} - 1}}\Bigr),

        with :math:`z_1 \sim \mathcal N(0, I)` drawn per tensor and one
        :math:`z_2 \sim \mathcal N(0, I_{K_{\mathrm{eff}}})` shared by all tensors (the
        low-rank term couples every parameter). :math:`K_{\mathrm{eff}}` is the number of
        deviations collected, not ``max_rank``. The covariance of :math:`\tilde\theta` is
        :math:`s\,(\Sigma_{\mathrm{diag}} + D^\top D / (K_{\mathrm{eff}} - 1))`.

        Parameters
        ----------
        generator : torch.Generator
            The source of all randomness, on the statistics' device. The global RNG is not used.
        scale : float, default=0.5
            :math:`s`, a factor on the covariance; 0.5 gives the paper's :math:`1/\sqrt{2}`
            factors.
        covariance : {"full", "diagonal"}, default="full"
            ``"full"``: diagonal plus low-rank (SWAG). ``"diagonal"``: drop the :math:`D` term
            (SWAG-diagonal). ``"full"`` with fewer than 2 deviations also drops it (no
            low-rank term can be formed from one), drawing exactly what ``"diagonal"`` draws.
        var_clamp : float, default=1e-30
            :math:`\epsilon`, see :meth:`variance`.

        Returns
        -------
        dict of str to Tensor
            The sampled weights, each shaped like its tensor.

        Raises
        ------
        ValueError
            If ``covariance`` is not one of the allowed values, or ``scale`` is negative.
        RuntimeError
            If nothing was collected yet.
        """
        batch = self.sample_batch(
            generator, 1, scale=scale, covariance=covariance, var_clamp=var_clamp
        )
        return {name: tensor[0] for name, tensor in batch.items()}

    @torch.no_grad()
    def sample_batch(
        self,
        generator: torch.Generator,
        n: int,
        *,
        scale: float = 0.5,
        covariance: str = "full",
        var_clamp: float = 1e-30,
    ) -> dict[str, torch.Tensor]:
        r"""Draw ``n`` independent sets of weights at once, stacked along a leading dimension.

        Same distribution as :meth:`sample` (see there for the parameters), but the draws are
        made in another order, so ``sample_batch(g, n)`` and ``n`` calls of :meth:`sample`
        give different (equally distributed) weights for the same seed. Needs memory for
        ``n`` copies of the weights.

        The draws from ``generator``, in this order: :math:`z_2` of shape (n, K_eff), row
        entries matching the deviations oldest first (only when the low-rank term is used),
        then :math:`z_1` of shape (n, \*shape) for each tensor, in the order collected.

        Parameters
        ----------
        generator : torch.Generator
            The source of all randomness, on the statistics' device.
        n : int
            The number of samples.
        scale, covariance, var_clamp
            As in :meth:`sample`.

        Returns
        -------
        dict of str to Tensor of shape (n, \*shape)
            The sampled weights.
        """
        self._check_sample_args(scale, covariance)
        z2 = self._draw_z2(generator, n) if covariance == "full" else None
        out = {}
        for name, variance in self.variance(var_clamp).items():
            z1 = torch.randn(
                (n, *variance.shape), generator=generator, device=self.device, dtype=variance.dtype
            )
            theta = z1.mul_(variance.sqrt_())
            if z2 is not None:
                deviations = self._used_buffer(name).to(variance.dtype)
                low_rank = torch.tensordot(z2.to(variance.dtype), deviations, dims=1)
                theta.add_(low_rank, alpha=1.0 / math.sqrt(self.n_deviations - 1))
            theta = theta.mul_(math.sqrt(scale)).add_(self._mean[name])
            out[name] = theta.to(self._dtype(name))
        return out

    def _check_sample_args(self, scale: float, covariance: str) -> None:
        """Raise if sampling is impossible or the arguments are invalid."""
        if covariance not in COVARIANCES:
            raise ValueError(f"covariance must be one of {COVARIANCES}, got {covariance!r}")
        if scale < 0:
            raise ValueError(f"scale must be >= 0, got {scale!r}")
        if self._n == 0:
            raise RuntimeError(
                "SWAGMoments has no statistics to sample from: call collect() at least once"
            )

    def _draw_z2(self, generator: torch.Generator, n: int) -> torch.Tensor | None:
        """:math:`z_2` of shape (n, K_eff), reordered to the buffer's rows; None if K_eff < 2.

        :math:`z_2` is drawn for the deviations oldest first, so the samples depend on the
        statistics only, not on where the ring buffer happens to start.
        """
        if self.n_deviations < 2:
            return None
        dtype = _widest_dtype(self._mean.values())
        z2 = torch.randn(
            (n, self.n_deviations), generator=generator, device=self.device, dtype=dtype
        )
        return torch.roll(z2, self._oldest_slot(), dims=1)

    def _used_buffer(self, name: str) -> torch.Tensor:
        """The rows of the deviation buffer that hold deviations, in buffer order."""
        return self._buffer[name][: self.n_deviations]

    def _held_deviations(self, name: str) -> torch.Tensor:
        """The used rows in buffer order, in a tensor whose storage holds nothing else.

        A view would pickle its whole storage, spare rows included.
        """
        buffer = self._buffer[name]
        if buffer.shape[0] == self.n_deviations:
            return buffer
        return self._used_buffer(name).clone()

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        """The statistics as plain data (copies), for pickling or sending to other processes.

        Returns
        -------
        dict
            ``"max_rank"`` (int), ``"n_collected"`` (int), and ``"mean"``, ``"sq_mean"``,
            ``"deviations"``: dicts of str to Tensor as the properties of the same names give
            them (deviations oldest first).
        """
        return {
            "max_rank": self.max_rank,
            "n_collected": self._n,
            "mean": {name: t.clone() for name, t in self._mean.items()},
            "sq_mean": {name: t.clone() for name, t in self._sq_mean.items()},
            "deviations": {name: t.clone() for name, t in self.deviations.items()},
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Replace the statistics with those of :meth:`state_dict` (copied).

        The tensors go to this object's ``device`` if it was given, else they stay where they
        are.

        Parameters
        ----------
        state : mapping
            As returned by :meth:`state_dict`.

        Raises
        ------
        ValueError
            If ``state`` was made with another ``max_rank`` or is inconsistent.
        """
        self._check_state(state)
        n = int(state["n_collected"])
        means = state["mean"]
        if self.device is None and means:
            self.device = next(iter(means.values())).device
        self._n = n
        wide = dict(device=self.device, dtype=torch.float64, copy=True)
        self._mean = {name: t.to(**wide) for name, t in means.items()}
        self._sq_mean = {name: state["sq_mean"][name].to(**wide) for name in means}
        self._buffer = {
            name: self._ring(state["deviations"][name].to(self.device)) for name in self._mean
        }

    def __getstate__(self) -> dict:
        """The attributes to pickle: the buffers cut to the deviations held, no spare rows.

        The rows keep their buffer order, so the unpickled object samples exactly as this one.
        """
        state = self.__dict__.copy()
        state["_buffer"] = {name: self._held_deviations(name) for name in self._buffer}
        return state

    def __setstate__(self, state: dict) -> None:
        """Restore pickled attributes (pickles without ``expected_collections`` get None)."""
        self.__dict__.update(state)
        self.__dict__.setdefault("expected_collections", None)

    def to(self, device: str | torch.device) -> SWAGMoments:
        """Move the statistics to ``device``, in place; returns ``self``."""
        self.device = torch.device(device)
        for store in (self._mean, self._sq_mean, self._buffer):
            for name, tensor in store.items():
                store[name] = tensor.to(self.device)
        return self

    def _ring(self, deviations: torch.Tensor) -> torch.Tensor:
        """A buffer of ``deviations`` (oldest first) laid out as collect does (a new tensor).

        It has no spare rows: the next collect grows it if fewer than K are held.
        """
        shift = self._oldest_slot()
        return torch.roll(deviations, shift, dims=0) if shift else deviations.clone()

    def _check_state(self, state: Mapping) -> None:
        """Raise if ``state`` does not fit this object."""
        if state["max_rank"] != self.max_rank:
            raise ValueError(
                f"state has max_rank {state['max_rank']}, this object {self.max_rank}"
            )
        n = int(state["n_collected"])
        names = set(state["mean"])
        if n < 0 or (n == 0) != (not names):
            raise ValueError(f"state has n_collected {n} and {len(names)} tensors")
        if set(state["sq_mean"]) != names or set(state["deviations"]) != names:
            raise ValueError("state's mean, sq_mean and deviations name different tensors")
        for name, mean in state["mean"].items():
            expected = (min(n, self.max_rank), *mean.shape)
            if state["sq_mean"][name].shape != mean.shape or (
                tuple(state["deviations"][name].shape) != expected
            ):
                raise ValueError(f"state's tensors for {name!r} have inconsistent shapes")


def sample_many(
    moments: SWAGMoments, n_samples: int, generator: torch.Generator, **kwargs
) -> list[dict[str, torch.Tensor]]:
    """Draw ``n_samples`` sets of weights one after the other.

    The same as ``[moments.sample(generator, **kwargs) for _ in range(n_samples)]``: one set
    of weights in memory per sample, no batch of them (see :meth:`SWAGMoments.sample_batch`).

    Parameters
    ----------
    moments : SWAGMoments
        The statistics to sample from.
    n_samples : int
        The number of samples (30 in [2]_).
    generator : torch.Generator
        The source of all randomness, on the statistics' device.
    **kwargs
        ``scale``, ``covariance``, ``var_clamp``, as in :meth:`SWAGMoments.sample`.

    Returns
    -------
    list of dict of str to Tensor
        The samples.

    References
    ----------
    .. [2] Maddox, W. J., Izmailov, P., Garipov, T., Vetrov, D. P. and Wilson, A. G. (2019).
       A Simple Baseline for Bayesian Uncertainty in Deep Learning. NeurIPS.
    """
    return [moments.sample(generator, **kwargs) for _ in range(n_samples)]


def _is_int_at_least(value, minimum: int) -> bool:
    """Whether ``value`` is an integer (not a bool) of at least ``minimum``."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum


def _widest_dtype(tensors) -> torch.dtype:
    """The promoted dtype of some floating-point tensors."""
    dtypes = [t.dtype for t in tensors]
    widest = dtypes[0]
    for dtype in dtypes[1:]:
        widest = torch.promote_types(widest, dtype)
    return widest
