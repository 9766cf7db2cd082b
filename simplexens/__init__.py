"""simplexens: loss-surface ensembles for any PyTorch module, in scikit-learn's shape."""

from .estimators import (
    CurveClassifier,
    CurveRegressor,
    DeepEnsembleClassifier,
    DeepEnsembleRegressor,
    ESPROClassifier,
    ESPRORegressor,
    FGEClassifier,
    FGERegressor,
    SPROClassifier,
    SPRORegressor,
    SubspaceClassifier,
    SubspaceRegressor,
    SWAGClassifier,
    SWAGRegressor,
)

__all__ = [
    "CurveClassifier",
    "CurveRegressor",
    "DeepEnsembleClassifier",
    "DeepEnsembleRegressor",
    "ESPROClassifier",
    "ESPRORegressor",
    "FGEClassifier",
    "FGERegressor",
    "SPROClassifier",
    "SPRORegressor",
    "SWAGClassifier",
    "SWAGRegressor",
    "SubspaceClassifier",
    "SubspaceRegressor",
]
__version__ = "0.1.0.dev0"
