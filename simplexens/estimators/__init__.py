"""The public estimators: a classifier and a regressor per method."""

from .curve import CurveClassifier, CurveRegressor
from .deep_ensemble import DeepEnsembleClassifier, DeepEnsembleRegressor
from .espro import ESPROClassifier, ESPRORegressor
from .fge import FGEClassifier, FGERegressor
from .spro import SPROClassifier, SPRORegressor
from .subspace import SubspaceClassifier, SubspaceRegressor
from .swag import SWAGClassifier, SWAGRegressor

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
