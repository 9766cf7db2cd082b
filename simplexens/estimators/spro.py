"""SPROClassifier: modes connected by a simplicial complex of shared connectors."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from sklearn.utils import Bunch
from sklearn.utils.validation import (
    check_is_fitted,
)
from torch import nn

from .._base import BaseEnsemble, FitResult, store_parameters
from .._classifier import ClassifierHead
from .._docs import fill_doc, regressor_doc
from .._params import Boolean, Integer, Options, Real
from .._regressor import RegressorHead
from ..backends.batchnorm import recalibrate_batchnorm
from ..backends.parallel import member_seeds
from ..backends.skorch import fit_complex
from ..geometry.complex import WEIGHTINGS, connector_complex, sample_complex
from ._anchors import (
    ConnectingMixin,
    anchor_members,
    anchor_phases,
    check_phase_callbacks,
    phase_constraints,
    phase_lr,
)


class _SPRO(ConnectingMixin, BaseEnsemble):
    """The SPRO method without a head: :class:`SPROClassifier` and
    :class:`SPRORegressor` add theirs."""

    _phase_names = ("connector", "connector")

    _constraints: ClassVar[dict] = {
        "n_modes": Integer(2),
        "n_connectors": Integer(1),
        "n_train_samples": Integer(1),
        "n_predict_samples": Integer(1),
        "epochs_per_connector": Integer(1),
        "volume_lambda": Real(0),
        "connector_init_scale": Real(0, None, "neither"),
        "connector_lr": Real(0, None, "neither", none=True),
        "complex_weighting": Options(WEIGHTINGS),
        "recalibrate_bn": Boolean(),
        **phase_constraints("connector"),
    }

    def _check_method_params(self):
        check_phase_callbacks(self, "connector")

    def _n_trained(self):
        return self.n_modes

    _growable = ("n_connectors",)
    _fixed_when_warm = ("n_modes",)
    _fixed_when_warm_reason = "its connectors are shared by every mode and would need retraining."

    def _planned_epochs(self):
        modes = 0 if self.init_modes is not None else self.n_modes * self.max_epochs
        return modes + self.n_connectors * self.epochs_per_connector

    def _divergence_advice(self):
        connector_lr = phase_lr(self, "connector")
        return (
            f"Try a lower lr (now {self.lr}), connector_lr (now {connector_lr}), volume_lambda "
            f"(now {self.volume_lambda}) or connector_init_scale (now "
            f"{self.connector_init_scale})."
        )

    def _fit_members(self, spec, data, rng):
        fitted = self._fitted_count(data, "n_connectors")
        if fitted:  # a warm refit: more connectors joining the fitted modes
            (seed,) = member_seeds(rng, 1)
            modes, epochs = self._init_mode_tensors(), 0
            connectors = {n: v[self.n_modes :] for n, v in self.complex_vertices_.items()}
        else:
            *seeds, seed = member_seeds(rng, self.n_modes + 1)
            modes, epochs = self._train_modes(spec, data, seeds)
            self._check_connectable(spec, modes)
            connectors = None
        phases = anchor_phases(
            self,
            "connector",
            self.epochs_per_connector,
            self.connector_init_scale,
            self.volume_lambda,
        )
        kwargs = self._net_kwargs(data)
        result = fit_complex(
            spec, kwargs, modes, self.n_connectors, phases, data.X, data.y, seed,
            self._stage(data), self.complex_weighting, connectors,
        )  # fmt: skip
        volumes = [*(self.complex_log_volumes_[:fitted] if fitted else []), *result.log_volumes]
        complex_ = connector_complex(self.n_modes, self.n_connectors)
        weights = self._draw_points(complex_, volumes[-1], self.n_predict_samples, seed)
        return FitResult(
            anchor_members(result.anchors, weights, result.buffers),
            epochs + result.epochs,
            {
                "complex_": complex_,
                "complex_vertices_": result.anchors,
                "complex_log_volumes_": np.asarray(volumes, dtype=np.float64),
                "predict_weights_": weights.numpy(),
                "mode_buffers_": [_fixed(m, result.anchors) for m in modes],
            },
            recalibrate=self.recalibrate_bn,
        )

    def _draw_points(self, complex_, log_volumes, n, seed) -> torch.Tensor:
        """Coefficients of ``n`` points over the complex, drawn with its weighting."""
        weights, _ = sample_complex(
            n,
            complex_,
            torch.as_tensor(log_volumes, dtype=torch.float64),
            weighting=self.complex_weighting,
            generator=torch.Generator().manual_seed(int(seed)),
            dtype=torch.float64,
        )
        return weights

    def _init_mode_tensors(self):
        check_is_fitted(self)
        return [
            {**{n: v[i].clone() for n, v in self.complex_vertices_.items()}, **buffers}
            for i, buffers in enumerate(self.mode_buffers_)
        ]

    def dimension_probe(self, X, y, n_samples=10, tolerance=1e-2):
        """The dimensionality probe (the paper's Figure 5): where the complex's volume collapses.

        Adding connector ``c`` multiplies each simplex's volume by ``h_c / c``, ``h_c`` the
        connector's height above the face of the earlier anchors, so the heights follow
        from the recorded log-volumes: ``log h_c = log V_c - log V_{c-1} + log c``. The
        volume collapses at the first connector whose mean height falls below ``tolerance``
        times the first connector's: the connectors before it span the low-loss directions
        SPRO found (a lower bound on the dimension of the low-loss manifold).

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Training inputs, for the score of the points at each connector count (and
            their BatchNorm statistics).
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Their labels (a classifier) or targets (a regressor).
        n_samples : int, default=10
            Points drawn uniformly over the complex at each connector count.
        tolerance : float, default=1e-2
            Relative height below which a connector counts as collapsed.

        Returns
        -------
        Bunch
            ``n_connectors`` (1..C), ``log_volumes`` (C, n_modes), ``heights`` (C,) mean
            over the simplexes, the mean score on ``(X, y)`` of the points of the complex with
            that many connectors, (C,): ``accuracy`` for the classifier, ``r2`` (R² of each
            point's mean prediction, averaged over targets) for the regressor; and
            ``collapsed_after``: the connector count after which the volume collapses (None
            if it never does).
        """
        check_is_fitted(self)
        Integer(1).check("n_samples", n_samples)
        Real(0, 1, "neither").check("tolerance", tolerance)
        if y is None:
            kind = "labels" if self._head == "classifier" else "targets"
            raise ValueError(f"dimension_probe needs the {kind} y of X.")
        X = self._prediction_input(X)
        y = self._probe_targets(X, y)
        log_v = self.complex_log_volumes_
        counts = np.arange(1, len(log_v) + 1)
        previous = np.vstack([np.zeros((1, log_v.shape[1])), log_v[:-1]])
        heights = np.exp(log_v - previous + np.log(counts)[:, None]).mean(axis=1)
        low = np.flatnonzero(heights < tolerance * heights[0])
        scores = np.array([self._probe_score(X, y, c, n_samples) for c in counts])
        return Bunch(
            n_connectors=counts,
            log_volumes=log_v,
            heights=heights,
            collapsed_after=int(low[0]) if len(low) else None,
            **{self._probe_score_name: scores},
        )

    def _probe_score(self, X, y, n_connectors: int, n_samples: int) -> float:
        """Mean score on (X, y) of points drawn over the complex with ``n_connectors``."""
        complex_ = connector_complex(self.n_modes, n_connectors)
        anchors = {n: v[: self.n_modes + n_connectors] for n, v in self.complex_vertices_.items()}
        log_v = self.complex_log_volumes_[n_connectors - 1]
        weights = self._draw_points(complex_, log_v, n_samples, n_connectors)
        members = anchor_members(anchors, weights, self.mode_buffers_[0])
        stack, rows = self._stack(self.members_.template, members), np.arange(len(X))
        if self.recalibrate_bn:
            recalibrate_batchnorm(stack, self._batches(X, rows, stack))
        outputs = [stack.forward(batch) for batch in self._batches(X, rows, stack)]
        return self._points_score(torch.cat(outputs, 1), y)


@fill_doc
class SPROClassifier(ClassifierHead, _SPRO):
    """SPRO: ``n_modes`` networks connected through shared connectors into a low-loss complex.

    The modes ``w_i`` are trained as ordinary networks, in parallel (``max_epochs`` at
    ``lr``), or given (``init_modes``). Connectors ``θ_0, θ_1, ...`` are then added one at a
    time; after ``j`` of them the simplicial complex is the union of the simplexes
    ``S(w_i, θ_0, ..., θ_{{j-1}})``, one per mode, all sharing the connectors. Connector ``θ_j``
    starts at the centroid of all anchors moved along a random direction of relative size
    ``connector_init_scale`` and is trained for ``epochs_per_connector`` epochs, with its own
    schedule from ``connector_lr`` and every other anchor frozen, on

        L = (1/M) Σ_m CE(f(x; φ_m), y) - λ Σ_i log V(S_i),   φ_m uniform over the complex,

    the volume term over *all* the complex's simplexes (the reference code regularises only
    the first). A point uniform over the complex is drawn by choosing a simplex with
    probability proportional to its current volume, then Dirichlet(1) weights inside it
    (``complex_weighting="equal"`` chooses simplexes with equal probability, as the reference
    code does: not uniform when volumes differ). The M = ``n_train_samples`` points of a step
    each evaluate their own chunk of the batch in one vectorised call, as ESPRO's. Prediction
    averages ``n_predict_samples`` points drawn uniformly over the final complex, with
    BatchNorm statistics recomputed for every point.

    With 2 modes and 1 connector the complex is a polygonal chain ``w_0 - θ_0 - w_1``. The
    log-volume of every simplex is recorded after each connector: the dimensionality probe
    (:meth:`dimension_probe`) reads it. For the probe to measure the loss surface rather
    than the random start, start connectors close to the complex (a small
    ``connector_init_scale``) and let the volume term push them out (``volume_lambda``
    around 1: below about 0.1 it barely moves a connector, as for ESPRO's vertices).

    Parameters
    ----------
    {module}
    n_modes : int, default=2
        Number of modes to connect (at least 2).
    n_connectors : int, default=2
        Connectors added one at a time (the paper: up to about 10 before the volume
        collapses for a VGG-16 on CIFAR-10).
    volume_lambda : float, default=1e-3
        λ, weight of the ``-Σ log V`` term (as ESPRO's).
    n_train_samples : int, default=5
        M, points of the complex per training step.
    n_predict_samples : int, default=10
        Points of the complex drawn for prediction, in total.
    epochs_per_connector : int, default=20
        Epochs of training for each connector. Connecting paths need a budget comparable to
        a mode's: with too few steps the complex's points lose train accuracy
        (``benchmarks/README.md``).
    connector_lr : float or None, default=None
        The peak learning rate of each connector phase; None uses ``2 * lr`` (as ESPRO's
        vertices).
    connector_init_scale : float, default=0.1
        Relative size of the random move that starts each connector off the centroid of the
        anchors (per parameter tensor, as a fraction of its norm at the centroid).
    {phases}
    complex_weighting : {{"volume", "equal"}}, default="volume"
        How a simplex is chosen for each sampled point: in proportion to its volume (uniform
        over the complex) or with equal probability (the reference code's choice).
    recalibrate_bn : bool, default=True
        Recompute BatchNorm statistics for every prediction point with one pass over the
        training data.
    {init_modes}
    {training}

    Attributes
    ----------
    {attributes}
    complex_ : SimplicialComplex
        The final complex: simplexes as vertex indices into ``complex_vertices_``.
    complex_vertices_ : dict of str to Tensor of shape (n_modes + n_connectors, *shape)
        The modes, then the connectors, per parameter of the module, on the CPU.
    complex_log_volumes_ : ndarray of shape (n_connectors, n_modes)
        log V of each simplex ``S(w_i, θ_0, ..., θ_j)`` after connector ``j + 1``.
    predict_weights_ : ndarray of shape (n_predict_samples, n_modes + n_connectors)
        Coefficients of the prediction points over ``complex_vertices_``.
    mode_buffers_ : list of dict of str to Tensor
        Each mode's buffers and frozen parameters.

    See Also
    --------
    ESPROClassifier, CurveClassifier

    References
    ----------
    .. [1] G. W. Benton, W. J. Maddox, S. Lotfi, A. G. Wilson. "Loss Surface Simplexes for
       Mode Connecting Volumes and Fast Ensembling." ICML 2021, sections 3-4.

    Examples
    --------
    >>> from torch import nn
    >>> from sklearn.datasets import make_classification
    >>> from simplexens import SPROClassifier
    >>> def MLP(n_features_in, n_classes):
    ...     return nn.Sequential(nn.Linear(n_features_in, 32), nn.ReLU(), nn.Linear(32, n_classes))
    >>> X, y = make_classification(200, 8, n_informative=5, n_classes=3, random_state=0)
    >>> clf = SPROClassifier(MLP, n_modes=2, n_connectors=1, max_epochs=3,
    ...                      epochs_per_connector=2, random_state=0).fit(X, y)
    >>> clf.complex_.simplexes
    ((0, 2), (1, 2))
    """

    def __init__(
        self,
        module,
        *,
        n_modes=2,
        n_connectors=2,
        volume_lambda=1e-3,
        n_train_samples=5,
        n_predict_samples=10,
        epochs_per_connector=20,
        connector_lr=None,
        connector_init_scale=0.1,
        connector_schedule="cosine",
        connector_callbacks=None,
        complex_weighting="volume",
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


_SPRO_EXAMPLE = """\
>>> from sklearn.datasets import make_regression
>>> from simplexens import SPRORegressor
>>> from simplexens.datasets import MLP
>>> X, y = make_regression(n_samples=200, n_features=5, noise=10.0, random_state=0)
>>> reg = SPRORegressor(MLP, n_connectors=1, max_epochs=20, epochs_per_connector=5,
...                     random_state=0).fit(X, y)
>>> mean, std = reg.predict(X[:4], return_std=True)
>>> mean.shape, std.shape, bool((std > 0).all())
((4,), (4,), True)
"""


@regressor_doc(SPROClassifier, _SPRO_EXAMPLE)
class SPRORegressor(RegressorHead, _SPRO):
    """SPRO as a regressor (see :func:`~simplexens._docs.regressor_doc`)."""

    def __init__(
        self,
        module,
        *,
        likelihood="gaussian",
        n_modes=2,
        n_connectors=2,
        volume_lambda=1e-3,
        n_train_samples=5,
        n_predict_samples=10,
        epochs_per_connector=20,
        connector_lr=None,
        connector_init_scale=0.1,
        connector_schedule="cosine",
        connector_callbacks=None,
        complex_weighting="volume",
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


def _fixed(mode: dict, anchors: dict) -> dict:
    """A mode's tensors that are not anchors (buffers, frozen parameters)."""
    return {n: t for n, t in mode.items() if n not in anchors}
