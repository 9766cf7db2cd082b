"""Scoring rules, calibration and diversity metrics for probabilistic classifiers and regressors.

All functions take plain array-likes (NumPy in) and return Python floats or
NumPy arrays, so they work for any estimator exposing ``predict_proba`` and
``classes_``, not only for the ensembles of this package.

Column convention
-----------------
Probability matrices have shape ``(n_samples, n_classes)`` and column ``k``
holds the probability of ``labels[k]``. When ``labels`` is omitted it
defaults to ``np.unique(y_true)``, as in :func:`sklearn.metrics.log_loss`.
Unlike scikit-learn, an explicitly given ``labels`` is used in the order given
(it is not sorted), so passing ``labels=estimator.classes_`` is always safe.

Input validation
----------------
Every function checks that its probabilities are probabilities and raises
``ValueError`` naming the first offending entry otherwise:

- no value may be NaN or infinite;
- values must lie in ``[0, 1]`` up to an absolute tolerance of 1e-6, which
  admits float32 rounding (e.g. 1.0000001 from averaging float32 softmax
  outputs); values inside the tolerance are clipped into ``[0, 1]``;
- each row (each member's row, for member arrays) must sum to 1 up to an
  absolute tolerance of 1e-3. Rows are not renormalised.

Shapes are checked too: ``y_true`` 1-D, ``y_proba`` 2-D with as many rows as
``y_true`` and one column per label, member arrays 3-D
``(n_members, n_samples, n_classes)``.
Score arrays (the inputs of :func:`ood_scores`, ``confidence`` of
:func:`risk_coverage`) must be 1-D, non-empty and finite.

Regression
----------
An ensemble regressor's members each predict a Gaussian ``N(mu_m, sigma_m^2)`` per target
and the ensemble predicts their uniform mixture (Lakshminarayanan et al. 2017). Member
arrays ``means`` and ``stds`` have shape ``(n_members, n_samples)`` for one target or
``(n_members, n_samples, n_targets)`` for several; ``y`` (and the single-Gaussian
``mean``, ``std``, and interval bounds) have shape ``(n_samples,)`` or
``(n_samples, n_targets)`` to match, exactly (no broadcasting). Targets are treated as
independent: a scalar score is the mean over samples *and* targets of the per-value score,
which is the average over targets of each target's mean score (so the NLL is per value,
not the joint NLL of a target vector, which would be the sum over targets).
:func:`rmse` is the exception: each target's RMSE, then their average, as
:func:`sklearn.metrics.root_mean_squared_error` computes it. Every value must be finite and
every standard deviation positive (interval bounds may be infinite, never NaN); otherwise
a ``ValueError`` names the argument and the first offending entry.
"""

from ._calibration import (
    ReliabilityBins,
    adaptive_ece,
    expected_calibration_error,
    reliability_bins,
)
from ._classification import brier_score, evaluate, member_disagreement, nll
from ._intervals import coverage_curve, interval_coverage, mixture_interval, mixture_quantiles
from ._regression import (
    crps_gaussian,
    crps_gaussian_mixture,
    gaussian_mixture_moments,
    gaussian_mixture_nll,
    gaussian_nll,
    rmse,
)
from ._uncertainty import entropy_decomposition, ood_scores, risk_coverage, uncertainty_scores

__all__ = [
    "ReliabilityBins",
    "adaptive_ece",
    "brier_score",
    "coverage_curve",
    "crps_gaussian",
    "crps_gaussian_mixture",
    "entropy_decomposition",
    "evaluate",
    "expected_calibration_error",
    "gaussian_mixture_moments",
    "gaussian_mixture_nll",
    "gaussian_nll",
    "interval_coverage",
    "member_disagreement",
    "mixture_interval",
    "mixture_quantiles",
    "nll",
    "ood_scores",
    "reliability_bins",
    "risk_coverage",
    "rmse",
    "uncertainty_scores",
]
