"""The regressor head: standardised targets, Gaussian likelihoods, the members' mixture.

:class:`RegressorHead` is what a simplexens regressor adds to its method (a subclass of
:class:`~simplexens._base.BaseEnsemble`): target checks and standardisation, the module's
output width under the ``likelihood``, the Gaussian negative log-likelihood that judges
divergence, and prediction as the uniform mixture of the members' Gaussians (Lakshminarayanan
et al. 2017), returned in the units of ``y``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import ClassVar

import numpy as np
import torch
from sklearn.base import RegressorMixin
from sklearn.metrics import r2_score
from sklearn.utils import Bunch
from sklearn.utils.validation import check_array, check_consistent_length, check_is_fitted
from torch import nn

from ._base import BaseEnsemble, loss_batches, summed_terms
from ._inputs import CHECK_ROWS
from ._params import Options, Real
from ._targets import StandardisedTargets, standardise
from .backends.functional import module_tensors
from .backends.likelihoods import (
    DEFAULT_MIN_SCALE,
    LIKELIHOODS,
    GaussianNLLLoss,
    Homoscedastic,
    SquaredErrorLoss,
    criterion_for,
    output_width,
    split_output,
)
from .backends.rows import WeightedRows
from .backends.skorch.nets import FixedSplit
from .metrics import mixture_interval, mixture_quantiles

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class RegressorHead(RegressorMixin):
    """The regressor side of an estimator; combine as ``class X(RegressorHead, Method)``.

    Members output, per target, a mean and a raw scale (``likelihood="gaussian"``), or a
    mean (``"homoscedastic"``, whose learned noise scale the head appends, and ``"mse"``).
    """

    _head = "regressor"
    _multi_output = True
    _head_constraints: ClassVar[dict] = {"likelihood": Options(LIKELIHOODS)}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    def _criterion(self):
        return criterion_for(self.likelihood) if self.criterion is None else self.criterion

    def _criterion_instance(self):
        """The criterion as a member's net builds it (``criterion__*`` but ``reduction``)."""
        criterion = self._criterion()
        if isinstance(criterion, nn.Module):
            return criterion
        routed = {k: v for k, v in self._routed("criterion").items() if k != "reduction"}
        return criterion(**routed)

    def _min_scale(self) -> float:
        """``sigma_min`` of the Gaussian likelihoods: the criterion's ``min_scale``
        (``criterion__min_scale``, or set in a given criterion), else 1e-3. The value set
        now; prediction uses the one the members were fitted with."""
        if "min_scale" in self._routed("criterion"):
            return float(self._routed("criterion")["min_scale"])
        try:
            instance = self._criterion_instance()
        except Exception:  # a criterion that cannot be built: fit reports it
            return DEFAULT_MIN_SCALE
        return float(getattr(instance, "min_scale", DEFAULT_MIN_SCALE))

    def _check_head_params(self) -> None:
        routed = self._routed("criterion")
        if "min_scale" not in routed:
            return
        if self.likelihood == "mse":
            raise ValueError(
                "criterion__min_scale is the floor of a Gaussian likelihood's scale; "
                "likelihood='mse' predicts no scale. Remove criterion__min_scale."
            )
        Real(0, None, "neither").check("criterion__min_scale", routed["min_scale"])

    def _head_settings(self) -> dict:
        return {"likelihood": self.likelihood, "criterion__min_scale": self._min_scale()}

    def _encode_targets(self, y, weights) -> dict:
        standard, scaling = standardise(y, weights, type(self).__name__)
        return {"y": standard, "classes": None, "scaling": scaling, "raw_y": y}

    def _training_targets(self, data, rows, split, warm):
        """``y`` standardised with the training rows' moments (all rows without a split;
        the fitted moments in a warm refit, whatever rows this fit's split holds out), and a
        validation Dataset of the split's own (skorch's ``predefined_split``) yielding its
        targets in those units."""
        if warm:
            scaling = self._scaling_
            data = dataclasses.replace(data, y=scaling.transform(data.raw_y), scaling=scaling)
        if split is None:
            return data, split
        if not isinstance(split.train, np.ndarray):
            raise ValueError(
                f"train_split={split.source!r} returned a training Dataset of its own; a "
                "regressor trains on the rows of X, y it is given (their targets "
                "standardised): return a Subset of the dataset the split receives."
            )
        if not warm:
            weights = data.X.weights if isinstance(data.X, WeightedRows) else None
            if weights is not None and not weights[rows].sum() > 0:
                raise ValueError(
                    f"train_split={split.source!r} left training rows whose sample weights "
                    "are all zero."
                )
            y, scaling = standardise(data.raw_y, weights, type(self).__name__, rows=rows)
            data = dataclasses.replace(data, y=y, scaling=scaling)
        return data, self._valid_in_units(split, data.scaling)

    def _valid_in_units(self, split, scaling):
        """``split`` with a validation Dataset of its own yielding standardised targets."""
        valid = split.valid
        if valid is None or isinstance(valid, np.ndarray):
            return split
        valid = StandardisedTargets(valid, scaling)
        if len(valid):
            valid[0]  # a validation Dataset whose targets do not fit y: refused here
        return FixedSplit(split.train, valid, source=split.source)

    def _output_width(self, data) -> int:
        return output_width(self.likelihood, data.y.shape[1])

    def _head_spec(self, spec, data):
        if self.likelihood != "homoscedastic":
            return spec
        wrap = functools.partial(
            Homoscedastic, n_targets=data.y.shape[1], min_scale=self._min_scale()
        )
        return dataclasses.replace(spec, wrap=wrap)

    def _resolve_modes(self, modes, template):
        """``init_modes`` under ``"homoscedastic"``: networks of a homoscedastic regressor as
        they are; networks of the user's module (no ``raw_scale``) wrapped, with the noise
        scale the wrapper starts from."""
        try:
            return super()._resolve_modes(modes, template)
        except ValueError as wrapped:
            if not isinstance(template, Homoscedastic):
                raise
            try:
                inner = super()._resolve_modes(modes, template.module)
            except ValueError as exc:
                raise exc from wrapped
        start = {n: t.to("cpu", copy=True) for n, t in module_tensors(template).items()}
        return [
            {n: mode[n[7:]] if n.startswith("module.") else start[n] for n in start}
            for mode in inner
        ]

    def _check_output(self, out, spec, data) -> None:
        n_rows, n_targets = min(len(data.X), CHECK_ROWS), data.y.shape[1]
        width = n_targets if self.likelihood == "mse" else 2 * n_targets
        if isinstance(out, torch.Tensor) and out.shape == (n_rows, width):
            return self._check_criterion(out, data.y[:n_rows])
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        rule = (
            "one mean per target: n_targets"
            if self.likelihood != "gaussian"
            else "a mean and a raw scale per target: 2 × n_targets"
        )
        raise ValueError(
            f"with likelihood={self.likelihood!r} the module must output {rule} columns, "
            f"shape (n_samples, {output_width(self.likelihood, n_targets)}) for the "
            f"{n_targets} target(s) in y, but returned {shape}; a constructor argument named "
            "n_outputs or n_classes is filled with that width."
        )

    def _check_criterion(self, out: torch.Tensor, y: np.ndarray) -> None:
        """The criterion must score the module's output against the targets: a finite loss,
        no broadcasting of mismatched shapes."""
        name = getattr(self._criterion(), "__name__", type(self._criterion()).__name__)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", UserWarning)  # torch's broadcasting warning
                loss = self._criterion_instance()(
                    out.float(), torch.as_tensor(y, device=out.device)
                )
            finite = bool(torch.isfinite(torch.as_tensor(loss)).all())
        except Exception as exc:
            raise ValueError(
                f"the criterion {name} cannot score the module's output (shape "
                f"{tuple(out.shape)}, likelihood={self.likelihood!r}) against y of shape "
                f"{y.shape}: {type(exc).__name__}: {exc}. Leave criterion=None for the "
                "likelihood's own."
            ) from exc
        if not finite:
            raise ValueError(
                f"the criterion {name} gives a non-finite loss on the module's first outputs "
                f"(likelihood={self.likelihood!r})."
            )

    def _summed_loss(self, stack, X, y, rows, working_memory=None, weights=None):
        """Each member's summed Gaussian NLL (over rows and targets) in standardised units;
        for ``"mse"``, with unit noise (``sigma = 1``, one standard deviation of ``y``)."""
        total = torch.zeros(stack.n_members, dtype=torch.float64, device=stack.device)
        mse = self.likelihood == "mse"
        criterion = SquaredErrorLoss("none") if mse else GaussianNLLLoss(self._min_scale(), "none")
        for inputs, targets, w in loss_batches(stack, X, y, rows, working_memory, weights):
            out = stack.forward(inputs).to(torch.float64)
            terms = criterion(out, targets.expand(*out.shape[:-1], y.shape[1]))
            if mse:  # the NLL of a unit-variance Gaussian, summed over the targets
                terms = y.shape[1] * (0.5 * terms + _HALF_LOG_2PI)
            total += summed_terms(terms, w)
        return total

    def _in_criterion_units(self, loss: float, data) -> float:
        """For ``"mse"``, the per-row summed unit-noise NLL ``T (m / 2 + log(2 pi) / 2)``
        back to the criterion's mean squared error over the ``T`` targets, ``m``."""
        if self.likelihood != "mse":
            return loss
        return 2.0 * (loss / data.y.shape[1] - _HALF_LOG_2PI)

    def _set_targets(self, data) -> None:
        self._scaling_ = data.scaling
        self._fitted_min_scale_ = self._min_scale()
        self._fitted_likelihood_ = self.likelihood
        self.n_targets_ = len(data.scaling.mean)
        self.y_mean_ = data.scaling.mean
        self.y_scale_ = data.scaling.scale

    def _target_key(self, data):
        return data.scaling.mean, data.scaling.scale, data.scaling.ndim

    def fit(self, X, y=None, sample_weight=None, recalibration_X=None):
        return super().fit(X, y, sample_weight, recalibration_X)

    fit.__doc__ = BaseEnsemble.fit.__doc__.replace(
        """y : array-like of shape (n_samples,), default=None
            Labels of any type; ``predict`` returns them as given. Required with arrays; with
            a Dataset, None reads the labels from its items (one pass over it), and a given
            ``y`` is used instead of them.""",
        """y : array-like of shape (n_samples,) or (n_samples, n_targets), default=None
            Numeric, finite targets, at least 2 rows; standardised per target inside ``fit``
            (``y_mean_``, ``y_scale_``: the moments of the training rows, without the
            validation rows of ``train_split``, whose targets, and those of a validation
            Dataset it returns, are standardised with them); predictions come back in
            their units and shape.
            Required with arrays; with a Dataset, None reads scalar targets from its items
            (one pass over it); pass ``y`` for several targets.""",
    ).replace(
        """every phase (see
            ``class_weight``, which multiplies them). A row of weight 2 counts as two copies
            of it in its batch's loss.""",
        """every phase and in
            the mean and standard deviation that standardise ``y``. A row of weight 2 counts
            as two copies of it.""",
    )

    # -- SPRO's dimension probe ----------------------------------------------------------

    _probe_score_name = "r2"

    def _probe_targets(self, X, y) -> np.ndarray:
        """``y`` checked against ``fit``'s targets and standardised as in ``fit``."""
        y = check_array(y, ensure_2d=False, dtype=np.float64, input_name="y")
        check_consistent_length(X, y)
        Y = y.reshape(len(y), -1)
        if y.ndim > 2 or Y.shape[1] != self.n_targets_:
            raise ValueError(
                f"y has shape {y.shape}, but {type(self).__name__} was fitted on "
                f"{self.n_targets_} target(s)."
            )
        if len(Y) < 2 or np.all(Y[0] == Y):
            raise ValueError(
                "dimension_probe scores the complex's points by R², which needs y to vary; "
                f"every target of the {len(Y)} row(s) given is constant."
            )
        return self._scaling_.transform(Y, np.float64)

    def _points_score(self, outputs: torch.Tensor, y: np.ndarray) -> float:
        """Mean R² of each parameter set's mean prediction, ``outputs`` of shape
        ``(n_points, n_samples, width)``, ``y`` standardised (R² is unit-free)."""
        means, _ = split_output(
            outputs.to(torch.float64),
            self._fitted_likelihood_,
            self.n_targets_,
            self._fitted_min_scale_,
        )
        Y = torch.as_tensor(y, device=means.device)
        residual = (means - Y).square().sum(dim=1)
        total = (Y - Y.mean(dim=0)).square().sum(dim=0)
        varying = total > 0  # R² is undefined for a constant target: left out (NaN if all)
        return float((1 - residual[:, varying] / total[varying]).mean())

    # -- predict ----------------------------------------------------------------------------

    def _member_gaussians(self, X):
        """The members' means and standard deviations (None for ``"mse"``) in standardised
        units, float64 of shape (n_members, n_rows_in_batch, n_targets), batch by batch."""
        check_is_fitted(self)
        for out in self._output_batches(X):
            yield split_output(
                out.to(torch.float64),
                self._fitted_likelihood_,
                self.n_targets_,
                self._fitted_min_scale_,
            )

    def _moments(self, X) -> Bunch:
        """Mixture mean, std, aleatoric and epistemic variance, each (n_samples, n_targets),
        in the units of ``y``. Computed in standardised units and scaled back, so that the
        std stays finite for any finite ``y_scale_``."""
        parts = []
        for means, stds in self._member_gaussians(X):
            mean = means.mean(dim=0)
            epistemic = (means - mean).square().mean(dim=0)
            aleatoric = torch.zeros_like(mean) if stds is None else stds.square().mean(0)
            parts.append(torch.stack([mean, aleatoric, epistemic]).cpu().numpy())
        mean, aleatoric, epistemic = np.concatenate(parts, axis=1)
        variance = aleatoric + epistemic
        if self._fitted_likelihood_ == "mse":  # the floor of predict_member_distribution
            variance = np.maximum(variance, self._fitted_min_scale_**2)
        with np.errstate(over="ignore", under="ignore"):  # documented in predict_moments
            squared = self.y_scale_**2
            return Bunch(
                mean=self._in_units(mean),
                std=np.sqrt(variance) * self.y_scale_,
                variance=variance * squared,
                aleatoric=aleatoric * squared,
                epistemic=epistemic * squared,
            )

    def _components(self, X) -> tuple[np.ndarray, np.ndarray]:
        """The predictive mixture's components in standardised units, each of shape
        (n_components, n_samples, n_targets) (see :meth:`predict_member_distribution`)."""
        means, stds = [], []
        for mu, sigma in self._member_gaussians(X):
            if sigma is None:
                spread = (mu - mu.mean(dim=0)).square().mean(dim=0).sqrt()
                mu, sigma = (
                    mu.mean(dim=0, keepdim=True),
                    spread.clamp_min(self._fitted_min_scale_)[None],
                )
            means.append(mu.cpu().numpy())
            stds.append(sigma.cpu().numpy())
        return np.concatenate(means, 1), np.concatenate(stds, 1)

    def _in_units(self, standardised: np.ndarray) -> np.ndarray:
        """Values of shape (..., n_samples, n_targets) from standardised units to ``y``'s."""
        return standardised * self.y_scale_ + self.y_mean_

    def _shaped(self, values: np.ndarray) -> np.ndarray:
        """(..., n_samples, n_targets) arrays as ``y`` was given: without the target axis for
        1-D ``y``."""
        return values[..., 0] if self._scaling_.ndim == 1 else values

    def predict(self, X, return_std=False):
        """Mean of the predictive mixture, and optionally its standard deviation.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...), sparse matrix, or torch Dataset
            Inputs of the training inputs' shape.
        return_std : bool, default=False
            Also return the standard deviation of the predictive mixture (as
            :class:`~sklearn.gaussian_process.GaussianProcessRegressor` does).

        Returns
        -------
        y_mean : ndarray of shape (n_samples,) or (n_samples, n_targets)
            ``mu* = (1/M) sum_m mu_m(x)``, in the units of ``y`` (the shape ``y`` had in
            ``fit``).
        y_std : ndarray of the same shape, only if ``return_std``
            ``sigma*`` with ``sigma*^2 = (1/M) sum_m (sigma_m^2 + mu_m^2) - mu*^2``: the
            aleatoric plus the epistemic variance (see :meth:`predict_moments`, and its
            floor under ``"mse"``).
        """
        moments = self._moments(X)
        mean = self._shaped(moments.mean)
        if not return_std:
            return mean
        return mean, self._shaped(moments.std)

    def predict_moments(self, X) -> Bunch:
        """The predictive mixture's mean and variance, split into its two sources.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...), sparse matrix, or torch Dataset
            Inputs of the training inputs' shape.

        Returns
        -------
        sklearn.utils.Bunch
            With ``mean``, ``std``, ``variance``, ``aleatoric`` and ``epistemic``, each of
            shape (n_samples,) or (n_samples, n_targets), in the units of ``y`` (squared
            for the variances). ``aleatoric = (1/M) sum_m sigma_m^2`` is the noise the
            members predict (0 for ``likelihood="mse"``), ``epistemic = (1/M) sum_m
            (mu_m - mu*)^2`` their disagreement, and ``variance`` their sum; for ``"mse"``
            at least ``(sigma_min * y_scale_)^2``, the floor of
            :meth:`predict_member_distribution` (a one-member ``"mse"`` ensemble has no
            other variance). The variances are ``y_scale_**2`` times standardised ones, so
            they overflow to inf (or underflow to 0) where ``y_scale_`` is beyond about
            ``1e154`` (or below ``1e-154``); ``std`` is scaled once and stays finite.
        """
        return Bunch(**{key: self._shaped(value) for key, value in self._moments(X).items()})

    def predict_member_distribution(self, X):
        """The Gaussian components of the predictive mixture, in the units of ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...), sparse matrix, or torch Dataset
            Inputs of the training inputs' shape.

        Returns
        -------
        means, stds : ndarray of shape (n_components, n_samples[, n_targets])
            For ``"gaussian"`` and ``"homoscedastic"``: each member's mean and standard
            deviation (``n_components = n_members_``). For ``"mse"``, whose members predict
            no noise: one component, the Gaussian with the members' mean and spread (at least
            ``sigma_min`` times ``y_scale_``). The input of :mod:`simplexens.metrics`'
            mixture metrics and of :class:`~simplexens.inspection.CoverageDisplay`.
        """
        means, stds = self._components(X)
        return self._shaped(self._in_units(means)), self._shaped(stds * self.y_scale_)

    def predict_quantiles(self, X, quantiles=(0.05, 0.5, 0.95)):
        """Quantiles of the predictive mixture.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...), sparse matrix, or torch Dataset
            Inputs of the training inputs' shape.
        quantiles : float or array-like of shape (n_quantiles,), default=(0.05, 0.5, 0.95)
            Levels in the open interval (0, 1).

        Returns
        -------
        ndarray of shape (n_samples[, n_targets], n_quantiles)
            Without the last axis for a scalar ``quantiles``; solved as in
            :func:`simplexens.metrics.mixture_quantiles`.
        """
        levels = np.asarray(quantiles, dtype=np.float64)
        if levels.ndim > 1 or levels.size == 0 or not np.all((levels > 0) & (levels < 1)):
            raise ValueError(
                f"quantiles must be a level or a 1-D list of levels in the open interval "
                f"(0, 1); got {quantiles!r}."
            )
        result = self._shaped(
            self._in_units(mixture_quantiles(*self._components(X), np.atleast_1d(levels)))
        )
        return result[0] if np.ndim(quantiles) == 0 else np.moveaxis(result, 0, -1)

    def predict_interval(self, X, level=0.9):
        """Central interval of the predictive mixture holding probability ``level``.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...), sparse matrix, or torch Dataset
            Inputs of the training inputs' shape.
        level : float, default=0.9
            In the open interval (0, 1); each tail holds ``(1 - level) / 2``.

        Returns
        -------
        lower, upper : ndarray of shape (n_samples,) or (n_samples, n_targets)
            The mixture's ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles, in the
            units of ``y``.
        """
        lower, upper = mixture_interval(*self._components(X), level)
        return self._shaped(self._in_units(lower)), self._shaped(self._in_units(upper))

    def score(self, X, y, sample_weight=None):
        """R² of :meth:`predict` (as :meth:`sklearn.base.RegressorMixin.score`), after
        checking that ``y`` has the targets seen in ``fit``.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...), sparse matrix, or torch Dataset
            Inputs of the training inputs' shape.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            True targets; one target may be given as (n_samples,) or (n_samples, 1).
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the rows.

        Returns
        -------
        float
            ``r2_score(y, predict(X))``, averaged uniformly over targets.

        Raises
        ------
        ValueError
            If ``y`` has another number of targets than ``fit``'s ``y``.
        """
        y_shape = np.shape(y)
        n_targets = 1 if len(y_shape) == 1 else (y_shape[1] if len(y_shape) == 2 else None)
        if hasattr(self, "n_targets_") and n_targets != self.n_targets_:
            raise ValueError(
                f"y has shape {y_shape}, but {type(self).__name__} was fitted on "
                f"{self.n_targets_} target(s): y must be (n_samples,"
                f"{'' if self.n_targets_ == 1 else f' {self.n_targets_}'})."
            )
        y = check_array(y, ensure_2d=False, dtype=np.float64, input_name="y")
        prediction = self._moments(X).mean
        check_consistent_length(prediction, y, sample_weight)
        Y = y.reshape(len(y), -1)
        # R² is unit-free: y and the prediction divided by a power of two per target (exact,
        # so equal to r2_score in y's units, a constant y included), near 1 in magnitude so
        # that no square over- or underflows for targets near float64's limits.
        peak = np.maximum(np.abs(Y).max(axis=0), np.abs(prediction).max(axis=0))
        unit = np.exp2(np.floor(np.log2(np.where(peak > 0, peak, 1.0))))
        return r2_score(Y / unit, prediction / unit, sample_weight=sample_weight)
