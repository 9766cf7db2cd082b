"""ESPROClassifier: low-loss simplexes grown from independently trained modes."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from torch import nn

from .._base import BaseEnsemble, FitResult, store_parameters
from .._classifier import ClassifierHead
from .._docs import fill_doc, regressor_doc
from .._params import Boolean, Integer, Real
from .._regressor import RegressorHead
from ..backends.parallel import member_seeds, run_members
from ..backends.skorch import fit_simplex
from ._anchors import (
    anchor_members,
    anchor_phases,
    check_phase_callbacks,
    phase_constraints,
    phase_lr,
)


class _ESPRO(BaseEnsemble):
    """The ESPRO method without a head: :class:`ESPROClassifier` and
    :class:`ESPRORegressor` add theirs."""

    _constraints: ClassVar[dict] = {
        "n_modes": Integer(1),
        "n_vertices": Integer(1),
        "n_train_samples": Integer(1),
        "n_predict_samples": Integer(1),
        "epochs_per_vertex": Integer(1),
        "volume_lambda": Real(0),
        "vertex_init_scale": Real(0, None, "neither"),
        "vertex_lr": Real(0, None, "neither", none=True),
        "recalibrate_bn": Boolean(),
        **phase_constraints("vertex"),
    }

    def _check_method_params(self):
        check_phase_callbacks(self, "vertex")

    def _check_module(self, template):
        trainable = sum(p.numel() for p in template.parameters() if p.requires_grad)
        if self.n_vertices > trainable + 1:
            raise ValueError(
                f"n_vertices={self.n_vertices} is more than the module's {trainable} trainable "
                f"parameters + 1: a simplex of that many vertices has no volume in a "
                f"{trainable}-dimensional parameter space. Use n_vertices <= {trainable + 1}."
            )

    _member_name = "mode"

    _growable = ("n_modes", "n_vertices")
    _fixed_when_warm = ("n_predict_samples",)
    _fixed_when_warm_reason = "the fitted simplexes keep their points."

    def _n_trained(self):
        return self.n_modes

    def _planned_epochs(self):
        mode = 0 if self.init_modes is not None else self.max_epochs
        return self.n_modes * (mode + (self.n_vertices - 1) * self.epochs_per_vertex)

    def _divergence_advice(self):
        vertex_lr = phase_lr(self, "vertex")
        return (
            f"Try a lower lr (now {self.lr}), vertex_lr (now {vertex_lr}), volume_lambda "
            f"(now {self.volume_lambda}) or vertex_init_scale (now {self.vertex_init_scale})."
        )

    def _fit_members(self, spec, data, rng):
        phases = anchor_phases(
            self, "vertex", self.epochs_per_vertex, self.vertex_init_scale, self.volume_lambda
        )
        kwargs = self._net_kwargs(data)
        fitted = self._fitted_count(data, "n_modes")
        seeds = member_seeds(rng, self.n_modes - (0 if self._grows_vertices(data) else fitted))
        grown = fitted if self._grows_vertices(data) else 0  # simplexes continued, not new
        modes = self._init_mode_tensors()[:grown] if grown else []
        starts = [
            (mode, {n: v[i] for n, v in self.simplex_vertices_.items()})
            for i, mode in enumerate(modes)
        ]
        starts += [(init, None) for init in data.init or [None] * (len(seeds) - grown)]
        first = self.n_modes - len(seeds)
        jobs = [
            (spec, kwargs, self.n_vertices, phases, data.X, data.y, seed, phase, *start)
            for seed, phase, start in zip(seeds, self._phases(data, first), starts, strict=True)
        ]
        simplexes = run_members(fit_simplex, jobs, self.n_jobs)
        weights = torch.from_numpy(
            rng.dirichlet(np.ones(self.n_vertices), size=(len(simplexes), self.n_predict_samples))
        )
        members = [
            member
            for simplex, w in zip(simplexes, weights, strict=True)
            for member in anchor_members(simplex.anchors, w, simplex.buffers)
        ]
        return FitResult(
            members,
            sum(s.epochs for s in simplexes),
            self._simplex_attributes(simplexes, weights, first, grown),
            recalibrate=self.recalibrate_bn,
            appended=first > 0,
        )

    def _grows_vertices(self, data) -> bool:
        """Whether a warm refit adds vertices to the fitted simplexes."""
        return bool(data.warm) and data.warm["n_vertices"][1] > data.warm["n_vertices"][0]

    def _simplex_attributes(self, simplexes, weights, first: int, grown: int) -> dict:
        """The fitted attributes: those of simplexes ``0 .. first - 1`` kept (a warm refit
        that only adds modes), the others from ``simplexes``, of which the first ``grown``
        continue fitted simplexes (a warm refit that adds vertices) and keep their volumes."""
        old = [list(v) for v in self.simplex_log_volumes_] if first or grown else []
        volumes = old[:first] + [
            (old[i] if i < grown else []) + [v[0] for v in s.log_volumes]
            for i, s in enumerate(simplexes)
        ]
        names = simplexes[0].anchors
        vertices = {n: torch.stack([s.anchors[n] for s in simplexes]) for n in names}
        buffers = [s.buffers for s in simplexes]
        if first:
            vertices = {n: torch.cat([self.simplex_vertices_[n], v]) for n, v in vertices.items()}
            weights = torch.cat([torch.from_numpy(self.predict_weights_), weights])
            buffers = self.mode_buffers_ + buffers
        return {
            "simplex_vertices_": vertices,
            "simplex_log_volumes_": np.array(volumes, dtype=np.float64).reshape(
                self.n_modes, self.n_vertices - 1
            ),
            "predict_weights_": weights.numpy(),
            "mode_buffers_": buffers,
        }

    def _init_mode_tensors(self):
        check_is_fitted(self)
        return [
            {**{n: v[i, 0].clone() for n, v in self.simplex_vertices_.items()}, **buffers}
            for i, buffers in enumerate(self.mode_buffers_)
        ]


@fill_doc
class ESPROClassifier(ClassifierHead, _ESPRO):
    """ESPRO: an ensemble of low-loss simplexes, one grown from each of ``n_modes`` networks.

    Each mode is trained as an ordinary network (``max_epochs`` at ``lr``), or given
    (``init_modes``). Vertices are then added one at a time: vertex ``j`` starts off the
    simplex of the vertices before it (at their centroid moved along a random direction of
    relative size ``vertex_init_scale``, so that the second vertex does not sit on the mode
    with zero volume) and is trained for ``epochs_per_vertex`` epochs, with its own learning
    rate schedule from ``vertex_lr`` (``vertex_schedule``) and the earlier vertices frozen, on

        L = (1/M) Σ_m CE(f(x; φ_m), y) - λ log V(S),   φ_m uniform in S,

    where the M = ``n_train_samples`` points are drawn afresh at every step and each
    evaluates its own chunk of the batch, in one vectorised call (about the cost of one
    forward pass). Prediction averages the softmax probabilities of ``n_predict_samples``
    points drawn uniformly in every simplex (once, in ``fit``), with BatchNorm statistics
    recomputed for every point.

    A module whose trainable parameters are only used by linear layers (``F.linear``), has
    no buffers and treats rows independently (an MLP, with or without dropout) takes a fused
    path: one weight-gradient product per layer over the whole batch instead of one per
    point (a 1.2-1.5x faster step for a wide MLP). Whether it applies is decided on the
    first batch (of at least two points) of every vertex phase, by comparing both paths in
    training and evaluation mode. Any other module's forward must run under
    :func:`torch.func.vmap` (no ``.item()`` or data-dependent Python control flow on
    tensors); parameters with ``requires_grad=False``
    are not part of the simplex and keep the mode's values. With BatchNorm, each point sees
    at least two rows of every batch (fewer points are drawn for a batch smaller than 2M).

    The data term is the mean over the M points (the reference code sums them, making its
    data term M times larger), and λ multiplies ``log V`` itself (V the simplex volume, not
    V² and not rescaled by a random simplex's volume), so values of ``volume_lambda`` do not
    carry over from the reference code.

    Parameters
    ----------
    {module}
    n_modes : int, default=3
        Number of independently trained modes, one simplex each (the paper uses up to 8).
    n_vertices : int, default=3
        Vertices per simplex, the mode included (k + 1; the paper adds up to 3 vertices to
        the mode). 1 gives a deep ensemble of the modes.
    volume_lambda : float, default=1e-3
        λ, weight of the ``-log V`` term. Measured on held-out data
        (``benchmarks/simplex_diversity.py``): up to about 0.1 it changes nothing (the
        gradient of ``log V`` is ``1/h`` for a vertex at height ``h``, far smaller than a
        vertex's move over a phase), so the simplex's size is set by
        ``vertex_init_scale``; λ = 1 grows the simplex to the same size through the volume
        term, but its points then close less of the NLL gap to a deep ensemble than points
        of a simplex grown from a far start. 0 trains vertices for low loss alone.
    n_train_samples : int, default=5
        M, simplex points per training step (paper: 5).
    n_predict_samples : int, default=10
        Points drawn per simplex for prediction.
    epochs_per_vertex : int, default=20
        Epochs of training for each added vertex (paper: 10). A vertex started far from the
        mode needs them to return to low loss.
    vertex_lr : float or None, default=None
        The peak learning rate of each vertex phase; None uses ``2 * lr``. (The paper trains
        vertices at 0.01 after modes at 0.05; from a far start, a rate above the mode's end
        rate is what brings the vertex back to low loss.)
    vertex_init_scale : float, default=1.0
        Relative size of the random move that starts each new vertex off the simplex (per
        parameter tensor, as a fraction of its norm at the centroid). This sets the
        simplex's size: with the defaults, vertices end about one mode-norm from the mode
        and the simplex's points disagree with it on 0.53-0.77 times as many test points as
        an independent mode does, at the same train accuracy (``benchmarks/README.md``);
        0.1 gives a simplex whose points are functionally almost the mode itself.
    {phases}
    recalibrate_bn : bool, default=True
        Recompute BatchNorm statistics for every prediction point with one pass over the
        training data (no effect on a module without BatchNorm).
    {init_modes}
    {training}

    Attributes
    ----------
    {attributes}
    simplex_vertices_ : dict of str to Tensor of shape (n_modes, n_vertices, *shape)
        The vertices of every simplex, per parameter of the module, on the CPU.
    simplex_log_volumes_ : ndarray of shape (n_modes, n_vertices - 1)
        log V of each simplex after each added vertex.
    predict_weights_ : ndarray of shape (n_modes, n_predict_samples, n_vertices)
        Barycentric coordinates of the prediction points.
    mode_buffers_ : list of dict of str to Tensor
        Each mode's buffers (e.g. BatchNorm statistics) and frozen parameters.

    References
    ----------
    .. [1] G. W. Benton, W. J. Maddox, S. Lotfi, A. G. Wilson. "Loss Surface Simplexes for
       Mode Connecting Volumes and Fast Ensembling." ICML 2021.
    """

    def __init__(
        self,
        module,
        *,
        n_modes=3,
        n_vertices=3,
        volume_lambda=1e-3,
        n_train_samples=5,
        n_predict_samples=10,
        epochs_per_vertex=20,
        vertex_lr=None,
        vertex_init_scale=1.0,
        vertex_schedule="cosine",
        vertex_callbacks=None,
        recalibrate_bn=True,
        init_modes=None,
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.SGD,
        lr=0.01,
        max_epochs=10,
        batch_size=128,
        device="cpu",
        callbacks=None,
        verbose=0,
        train_split=None,
        class_weight=None,
        warm_start=False,
        random_state=None,
        n_jobs=None,
        working_memory=None,
        member_memory=None,
        precision="float32",
        **kwargs,
    ):
        store_parameters(self, locals())


_ESPRO_EXAMPLE = """\
>>> from sklearn.datasets import make_regression
>>> from simplexens import ESPRORegressor
>>> from simplexens.datasets import MLP
>>> X, y = make_regression(n_samples=200, n_features=5, noise=10.0, random_state=0)
>>> reg = ESPRORegressor(MLP, n_modes=2, n_vertices=2, max_epochs=20,
...                     epochs_per_vertex=5,
...                     random_state=0).fit(X, y)
>>> mean, std = reg.predict(X[:4], return_std=True)
>>> mean.shape, std.shape, bool((std > 0).all())
((4,), (4,), True)
"""


@regressor_doc(ESPROClassifier, _ESPRO_EXAMPLE)
class ESPRORegressor(RegressorHead, _ESPRO):
    """ESPRO as a regressor (see :func:`~simplexens._docs.regressor_doc`)."""

    def __init__(
        self,
        module,
        *,
        likelihood="gaussian",
        n_modes=3,
        n_vertices=3,
        volume_lambda=1e-3,
        n_train_samples=5,
        n_predict_samples=10,
        epochs_per_vertex=20,
        vertex_lr=None,
        vertex_init_scale=1.0,
        vertex_schedule="cosine",
        vertex_callbacks=None,
        recalibrate_bn=True,
        init_modes=None,
        criterion=None,
        optimizer=torch.optim.SGD,
        lr=0.01,
        max_epochs=10,
        batch_size=128,
        device="cpu",
        callbacks=None,
        verbose=0,
        train_split=None,
        warm_start=False,
        random_state=None,
        n_jobs=None,
        working_memory=None,
        member_memory=None,
        precision="float32",
        **kwargs,
    ):
        store_parameters(self, locals())
