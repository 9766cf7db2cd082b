"""simplexens: loss-surface ensembles for any PyTorch module, in scikit-learn's shape."""

from .estimators import (
    CurveClassifier,
    DeepEnsembleClassifier,
    ESPROClassifier,
    FGEClassifier,
    SPROClassifier,
    SubspaceClassifier,
    SWAGClassifier,
)

__all__ = [
    "CurveClassifier",
    "DeepEnsembleClassifier",
    "ESPROClassifier",
    "FGEClassifier",
    "SPROClassifier",
    "SWAGClassifier",
    "SubspaceClassifier",
]
__version__ = "0.1.0.dev0"
