"""FGEClassifier: snapshots along a cyclical learning-rate trajectory."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from .._base import BaseEnsemble, FitResult, store_parameters
from .._classifier import ClassifierHead
from .._docs import fill_doc, regressor_doc
from .._params import Integer, Real
from .._regressor import RegressorHead
from ..backends.parallel import member_seeds
from ..backends.skorch import fit_fge


class _FGE(BaseEnsemble):
    """The FGE method without a head: :class:`FGEClassifier` and
    :class:`FGERegressor` add theirs."""

    _constraints: ClassVar[dict] = {
        "n_snapshots": Integer(1),
        "cycle_length": Real(0, None, "neither"),
        "alpha1": Real(0, None, "neither"),
        "alpha2": Real(0, None, "neither"),
    }

    def _check_method_params(self):
        if self.alpha2 > self.alpha1:
            raise ValueError(
                f"alpha2 ({self.alpha2}) must not exceed alpha1 ({self.alpha1}): the rate falls "
                "from alpha1 to alpha2 within each cycle."
            )

    _member_name = "network"
    _growable = ("n_snapshots",)

    def _fitted_counts(self):
        # The snapshots taken: fewer than asked when a callback ended the cycles early.
        return {"n_snapshots": self.n_members_}

    _init_count_name = "the network its cycles start from"

    def _n_trained(self):
        return 1

    def _planned_epochs(self):
        pretraining = 0 if self.init_modes is not None else self.max_epochs
        return pretraining + math.ceil(self.cycle_length * self.n_snapshots)

    def _fit_members(self, spec, data, rng):
        fitted = self._fitted_count(data, "n_snapshots")
        cycle = dict(
            alpha1=float(self.alpha1),
            alpha2=float(self.alpha2),
            cycle_length=float(self.cycle_length),
            n_snapshots=self.n_snapshots - fitted,
        )
        (seed,) = member_seeds(rng, 1)
        (phase,) = self._phases(data)
        init = data.init[0] if data.init else None
        rates, steps = np.empty(0), np.empty(0, dtype=np.int64)
        if fitted:  # more cycles from the last snapshot (with a fresh optimizer state)
            init = self.members_.member(self.n_members_ - 1)
            rates, steps = self.learning_rates_, self.snapshot_steps_
        run = fit_fge(spec, self._net_kwargs(data), cycle, data.X, data.y, seed, phase, init)
        return FitResult(
            run.snapshots,
            run.epochs,
            {
                "learning_rates_": np.concatenate([rates, run.rates]),
                "snapshot_steps_": np.concatenate(
                    [steps, len(rates) + np.asarray(run.snapshot_steps, dtype=np.int64)]
                ),
            },
            appended=True,
        )


@fill_doc
class FGEClassifier(ClassifierHead, _FGE):
    """Fast Geometric Ensembling: snapshots of one network along a cyclical learning rate.

    The network is first trained for ``max_epochs`` epochs as usual (the pretraining
    budget), or given (``init_modes``). Then the learning rate follows cycles of
    ``cycle_length`` epochs: within each cycle it falls linearly from α1 (``alpha1``) to α2
    (``alpha2``) over the first half and rises back to α1 over the second, set at every
    training step; the weights are collected each time the rate reaches α2, ``n_snapshots``
    times. Prediction averages the snapshots' softmax probabilities.

    A cycle has ``C = round(cycle_length * n_batches)`` steps (at least 2), so the length may
    be fractional or odd; the rate is exactly α2 at step ``floor(C / 2)`` of each cycle. The
    cyclic phase runs whole epochs, as many as the last snapshot needs; they count in
    ``epochs_spent_``. The cyclical schedule overrides any learning-rate scheduler among the
    callbacks during the cyclic phase.

    Parameters
    ----------
    {module}
    n_snapshots : int, default=8
        Number of snapshots, one per cycle.
    cycle_length : float, default=4
        c, the length of a cycle in epochs (the paper uses 2 to 4).
    alpha1 : float, default=0.05
        α1, the learning rate at the start and end of each cycle (paper: 0.05).
    alpha2 : float, default=1e-4
        α2, the learning rate at the middle of each cycle, where snapshots are taken (paper:
        1e-4; 0.01 for ResNets).
    {init_modes}
        FGE starts from one network: the cycles run from it and the pretraining is skipped.
    {training}

    Attributes
    ----------
    {attributes}
    learning_rates_ : ndarray of shape (n_cyclic_steps,)
        The learning rate every step of the cyclic phase ran with.
    snapshot_steps_ : ndarray of shape (n_snapshots,)
        The cyclic-phase steps (0-based) after which the snapshots were taken.

    References
    ----------
    .. [1] T. Garipov, P. Izmailov, D. Podoprikhin, D. Vetrov, A. G. Wilson. "Loss Surfaces,
       Mode Connectivity, and Fast Ensembling of DNNs." NeurIPS 2018.
    """

    def __init__(
        self,
        module,
        *,
        n_snapshots=8,
        cycle_length=4,
        alpha1=0.05,
        alpha2=1e-4,
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


_FGE_EXAMPLE = """\
>>> from sklearn.datasets import make_regression
>>> from simplexens import FGERegressor
>>> from simplexens.datasets import MLP
>>> X, y = make_regression(n_samples=200, n_features=5, noise=10.0, random_state=0)
>>> reg = FGERegressor(MLP, n_snapshots=3, cycle_length=2, max_epochs=20,
...                     random_state=0).fit(X, y)
>>> mean, std = reg.predict(X[:4], return_std=True)
>>> mean.shape, std.shape, bool((std > 0).all())
((4,), (4,), True)
"""


@regressor_doc(FGEClassifier, _FGE_EXAMPLE)
class FGERegressor(RegressorHead, _FGE):
    """FGE as a regressor (see :func:`~simplexens._docs.regressor_doc`)."""

    def __init__(
        self,
        module,
        *,
        likelihood="gaussian",
        n_snapshots=8,
        cycle_length=4,
        alpha1=0.05,
        alpha2=1e-4,
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
