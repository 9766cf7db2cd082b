"""The public estimators: their parameters, their docstrings, and which trainer each uses."""

from .curve import CurveClassifier
from .deep_ensemble import DeepEnsembleClassifier
from .espro import ESPROClassifier
from .fge import FGEClassifier
from .spro import SPROClassifier
from .subspace import SubspaceClassifier
from .swag import SWAGClassifier

__all__ = [
    "CurveClassifier",
    "DeepEnsembleClassifier",
    "ESPROClassifier",
    "FGEClassifier",
    "SPROClassifier",
    "SWAGClassifier",
    "SubspaceClassifier",
]
