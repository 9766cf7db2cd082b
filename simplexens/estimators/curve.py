"""CurveClassifier: two modes connected by a low-loss Bezier curve or polygonal chain."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from torch import nn

from .._base import BaseEnsemble, FitResult, store_parameters
from .._classifier import ClassifierHead
from .._docs import fill_doc, regressor_doc
from .._params import Boolean, Integer, Options, Real
from .._regressor import RegressorHead
from ..backends.parallel import member_seeds
from ..backends.skorch import fit_curve
from ..geometry.curves import CURVES, curve_coefficients
from ._anchors import (
    ConnectingMixin,
    anchor_members,
    anchor_phases,
    check_phase_callbacks,
    phase_constraints,
    phase_lr,
)


class _Curve(ConnectingMixin, BaseEnsemble):
    """The Curve method without a head: :class:`CurveClassifier` and
    :class:`CurveRegressor` add theirs."""

    _phase_names = ("curve", "curve")

    _constraints: ClassVar[dict] = {
        "curve": Options(CURVES),
        "n_bends": Integer(3),
        "n_train_samples": Integer(1),
        "n_predict_samples": Integer(1),
        "curve_epochs": Integer(1),
        "curve_lr": Real(0, None, "neither", none=True),
        "recalibrate_bn": Boolean(),
        **phase_constraints("curve"),
    }

    _init_count_name = "the two endpoints of the curve"

    def _check_method_params(self):
        check_phase_callbacks(self, "curve")

    def _n_trained(self):
        return 2

    def _planned_epochs(self):
        modes = 0 if self.init_modes is not None else 2 * self.max_epochs
        return modes + self.curve_epochs

    def _divergence_advice(self):
        curve_lr = phase_lr(self, "curve")
        return f"Try a lower lr (now {self.lr}) or curve_lr (now {curve_lr})."

    def _fit_members(self, spec, data, rng):
        *seeds, seed = member_seeds(rng, 3)
        modes, epochs = self._train_modes(spec, data, seeds)
        self._check_connectable(spec, modes)
        phases = anchor_phases(self, "curve", self.curve_epochs)
        result = fit_curve(
            spec, self._net_kwargs(data), modes, self.curve, self.n_bends, phases,
            data.X, data.y, seed, self._stage(data),
        )  # fmt: skip
        t = torch.linspace(0, 1, self.n_predict_samples, dtype=torch.float64)
        weights = curve_coefficients(t, self.curve, self.n_bends)
        return FitResult(
            anchor_members(result.anchors, weights, result.buffers),
            epochs + result.epochs,
            {
                "curve_anchors_": result.anchors,
                "predict_t_": t.numpy(),
                "mode_buffers_": [
                    {n: v for n, v in m.items() if n not in result.anchors} for m in modes
                ],
            },
            recalibrate=self.recalibrate_bn,
        )

    def _init_mode_tensors(self):
        check_is_fitted(self)
        return [
            {**{n: v[end].clone() for n, v in self.curve_anchors_.items()}, **buffers}
            for end, buffers in zip((0, -1), self.mode_buffers_, strict=True)
        ]

    def curve_parameters(self, t):
        """The curve's parameters at positions ``t``.

        Parameters
        ----------
        t : float or array-like of shape (n_points,)
            Positions in [0, 1]; 0 and 1 give the endpoints bit-exactly.

        Returns
        -------
        dict of str to Tensor of shape (n_points, *shape)
            The trainable parameters of the module at each point, on the CPU. Buffers
            (BatchNorm statistics) are not part of the curve: recompute them for each point.
        """
        check_is_fitted(self)
        t = torch.as_tensor(np.atleast_1d(np.asarray(t, dtype=np.float64)))
        weights = curve_coefficients(t, self.curve, self.n_bends)
        return {
            n: torch.tensordot(weights.to(a.dtype), a, dims=1)
            for n, a in self.curve_anchors_.items()
        }


@fill_doc
class CurveClassifier(ClassifierHead, _Curve):
    """Mode connectivity: two networks joined by a curve of low loss, its points averaged.

    Two modes ``w_0, w_1`` are trained as ordinary networks, in parallel (``max_epochs`` at
    ``lr``), or given (``init_modes``). A curve ``φ(t)``, ``t`` in [0, 1], with ``φ(0) = w_0``
    and ``φ(1) = w_1`` is then trained for ``curve_epochs`` epochs with its own schedule from
    ``curve_lr``: ``curve="bezier"`` is the Bezier curve of ``n_bends`` control points (the
    paper's ``(1-t)² w_0 + 2t(1-t) θ + t² w_1`` for 3), ``curve="polychain"`` the polygonal
    chain through them (``w_0 → θ → w_1`` for 3). The ``n_bends - 2`` interior bends start
    evenly spaced on the segment ``w_0 w_1`` and train together, the endpoints frozen, on the
    mean criterion over M = ``n_train_samples`` values of ``t ~ U(0, 1)`` drawn at every step
    (the paper's tractable loss, not the length-weighted one), each evaluating its own chunk
    of the batch in one vectorised call. There is no volume term.

    Prediction averages the softmax probabilities of ``n_predict_samples`` points at evenly
    spaced ``t = 0, 1/(n-1), ..., 1`` (the two modes included: with 2 points this is their
    deep ensemble), with BatchNorm statistics recomputed for every point.

    Parameters
    ----------
    {module}
    curve : {{"bezier", "polychain"}}, default="bezier"
        The curve's family.
    n_bends : int, default=3
        Control points of the curve, the two endpoints included (at least 3: one trainable
        bend; the paper uses 3).
    n_train_samples : int, default=5
        M, values of ``t`` per training step.
    n_predict_samples : int, default=10
        Points of the curve averaged for prediction.
    curve_epochs : int, default=20
        Epochs of training of the curve (a budget comparable to a mode's).
    curve_lr : float or None, default=None
        The peak learning rate of the curve phase; None uses ``2 * lr`` (as ESPRO's
        vertices).
    {phases}
    recalibrate_bn : bool, default=True
        Recompute BatchNorm statistics for every prediction point with one pass over the
        training data.
    {init_modes}
    {training}

    Attributes
    ----------
    {attributes}
    curve_anchors_ : dict of str to Tensor of shape (n_bends, *shape)
        The control points, the endpoints first and last, per parameter, on the CPU.
    predict_t_ : ndarray of shape (n_predict_samples,)
        The positions of the prediction points.
    mode_buffers_ : list of dict of str to Tensor
        Each endpoint's buffers and frozen parameters.

    See Also
    --------
    SPROClassifier : with 2 modes and 1 connector, the same polygonal chain sampled uniformly.

    References
    ----------
    .. [1] T. Garipov, P. Izmailov, D. Podoprikhin, D. Vetrov, A. G. Wilson. "Loss Surfaces,
       Mode Connectivity, and Fast Ensembling of DNNs." NeurIPS 2018, section 3.

    Examples
    --------
    >>> from torch import nn
    >>> from sklearn.datasets import make_classification
    >>> from simplexens import CurveClassifier
    >>> def MLP(n_features_in, n_classes):
    ...     return nn.Sequential(nn.Linear(n_features_in, 32), nn.ReLU(), nn.Linear(32, n_classes))
    >>> X, y = make_classification(200, 8, n_informative=5, n_classes=3, random_state=0)
    >>> clf = CurveClassifier(MLP, max_epochs=3, curve_epochs=2, random_state=0).fit(X, y)
    >>> clf.curve_parameters([0.0, 0.5, 1.0])["0.weight"].shape
    torch.Size([3, 32, 8])
    """

    def __init__(
        self,
        module,
        *,
        curve="bezier",
        n_bends=3,
        n_train_samples=5,
        n_predict_samples=10,
        curve_epochs=20,
        curve_lr=None,
        curve_schedule="cosine",
        curve_callbacks=None,
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


_CURVE_EXAMPLE = """\
>>> from sklearn.datasets import make_regression
>>> from simplexens import CurveRegressor
>>> from simplexens.datasets import MLP
>>> X, y = make_regression(n_samples=200, n_features=5, noise=10.0, random_state=0)
>>> reg = CurveRegressor(MLP, max_epochs=20, curve_epochs=5,
...                     random_state=0).fit(X, y)
>>> mean, std = reg.predict(X[:4], return_std=True)
>>> mean.shape, std.shape, bool((std > 0).all())
((4,), (4,), True)
"""


@regressor_doc(CurveClassifier, _CURVE_EXAMPLE)
class CurveRegressor(RegressorHead, _Curve):
    """Curve as a regressor (see :func:`~simplexens._docs.regressor_doc`)."""

    def __init__(
        self,
        module,
        *,
        likelihood="gaussian",
        curve="bezier",
        n_bends=3,
        n_train_samples=5,
        n_predict_samples=10,
        curve_epochs=20,
        curve_lr=None,
        curve_schedule="cosine",
        curve_callbacks=None,
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
