"""simplexens: loss-surface ensembles for any PyTorch module, in scikit-learn's shape."""

from .estimators import DeepEnsembleClassifier, ESPROClassifier

__all__ = ["DeepEnsembleClassifier", "ESPROClassifier"]
__version__ = "0.1.0.dev0"
