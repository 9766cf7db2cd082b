"""simplexens: loss-surface ensembles for any PyTorch module, in scikit-learn's shape."""

from .estimators import (
    DeepEnsembleClassifier,
    ESPROClassifier,
    FGEClassifier,
    SWAGClassifier,
)

__all__ = [
    "DeepEnsembleClassifier",
    "ESPROClassifier",
    "FGEClassifier",
    "SWAGClassifier",
]
__version__ = "0.1.0.dev0"
