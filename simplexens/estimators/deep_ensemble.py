"""DeepEnsembleClassifier: independently trained networks."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from .._base import BaseEnsemble, FitResult, store_parameters
from .._classifier import ClassifierHead
from .._docs import fill_doc, regressor_doc
from .._params import Boolean, Integer
from .._regressor import RegressorHead
from ..backends.parallel import member_seeds, run_members
from ..backends.skorch import fit_member


class _DeepEnsemble(BaseEnsemble):
    """The DeepEnsemble method without a head: :class:`DeepEnsembleClassifier` and
    :class:`DeepEnsembleRegressor` add theirs."""

    _constraints: ClassVar[dict] = {"n_estimators": Integer(1), "recalibrate_bn": Boolean()}

    _init_count_name = "n_estimators"
    _growable = ("n_estimators",)

    def _n_trained(self):
        return self.n_estimators

    def _planned_epochs(self):
        return 0 if self.init_modes is not None else self.n_estimators * self.max_epochs

    def _fit_members(self, spec, data, rng):
        if data.init is not None:  # the given networks are the members
            return FitResult(data.init, 0, recalibrate=self.recalibrate_bn)
        kwargs = self._net_kwargs(data)
        fitted = self._fitted_count(data, "n_estimators")
        seeds = member_seeds(rng, self.n_estimators - fitted)
        jobs = [
            (spec, kwargs, data.X, data.y, seed, phase)
            for seed, phase in zip(seeds, self._phases(data, fitted), strict=True)
        ]
        results = run_members(fit_member, jobs, self.n_jobs)
        return FitResult(
            [r.tensors for r in results],
            sum(r.epochs for r in results),
            recalibrate=self.recalibrate_bn,
            appended=True,
        )


@fill_doc
class DeepEnsembleClassifier(ClassifierHead, _DeepEnsemble):
    """Deep ensemble: ``n_estimators`` networks trained independently, probabilities averaged.

    Each member is the user's module trained with skorch from its own seed, so members differ
    in their initial weights and in the order they see the data (or a network given in
    ``init_modes``, then not trained). Prediction is the mean of the members' softmax
    probabilities.

    Parameters
    ----------
    {module}
    n_estimators : int, default=5
        Number of networks (M in the paper, which uses M = 5).
    recalibrate_bn : bool, default=False
        Recompute every member's BatchNorm statistics with one pass over the training data
        (exact averages instead of the running ones; useful for networks given as
        ``init_modes`` that were trained on other data).
    {init_modes}
    {training}

    Attributes
    ----------
    {attributes}

    See Also
    --------
    ESPROClassifier, FGEClassifier, SWAGClassifier

    References
    ----------
    .. [1] B. Lakshminarayanan, A. Pritzel, C. Blundell. "Simple and Scalable Predictive
       Uncertainty Estimation using Deep Ensembles." NeurIPS 2017.

    Examples
    --------
    >>> from torch import nn
    >>> from sklearn.datasets import load_digits
    >>> from simplexens import DeepEnsembleClassifier
    >>> class MLP(nn.Module):
    ...     def __init__(self, n_features_in, n_classes, hidden=32):
    ...         super().__init__()
    ...         self.net = nn.Sequential(
    ...             nn.Linear(n_features_in, hidden), nn.ReLU(), nn.Linear(hidden, n_classes)
    ...         )
    ...     def forward(self, x):
    ...         return self.net(x)
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = DeepEnsembleClassifier(MLP, n_estimators=3, max_epochs=5, lr=0.01,
    ...                              random_state=0).fit(X / 16, y)
    >>> clf.predict_member_proba(X[:4] / 16).shape
    (3, 4, 10)
    """

    def __init__(
        self,
        module,
        *,
        n_estimators=5,
        recalibrate_bn=False,
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


_DEEPENSEMBLE_EXAMPLE = """\
>>> from sklearn.datasets import make_regression
>>> from simplexens import DeepEnsembleRegressor
>>> from simplexens.datasets import MLP
>>> X, y = make_regression(n_samples=200, n_features=5, noise=10.0, random_state=0)
>>> reg = DeepEnsembleRegressor(MLP, n_estimators=3, max_epochs=20,
...                     random_state=0).fit(X, y)
>>> mean, std = reg.predict(X[:4], return_std=True)
>>> mean.shape, std.shape, bool((std > 0).all())
((4,), (4,), True)
"""


@regressor_doc(DeepEnsembleClassifier, _DEEPENSEMBLE_EXAMPLE)
class DeepEnsembleRegressor(RegressorHead, _DeepEnsemble):
    """DeepEnsemble as a regressor (see :func:`~simplexens._docs.regressor_doc`)."""

    def __init__(
        self,
        module,
        *,
        likelihood="gaussian",
        n_estimators=5,
        recalibrate_bn=False,
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
