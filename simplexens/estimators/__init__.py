"""The public estimators: their parameters, their docstrings, and which trainer each uses."""

from .deep_ensemble import DeepEnsembleClassifier
from .espro import ESPROClassifier
from .fge import FGEClassifier
from .swag import SWAGClassifier

__all__ = ["DeepEnsembleClassifier", "ESPROClassifier", "FGEClassifier", "SWAGClassifier"]
