"""The public estimators: their parameters, their docstrings, and which trainer each uses."""

from .deep_ensemble import DeepEnsembleClassifier
from .espro import ESPROClassifier

__all__ = ["DeepEnsembleClassifier", "ESPROClassifier"]
