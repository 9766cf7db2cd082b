"""Inspection of fitted ensembles: compute functions returning arrays, and Displays drawing them.

Each Display follows scikit-learn's visualisation API (``sklearn.calibration.CalibrationDisplay``,
``sklearn.inspection.DecisionBoundaryDisplay``): ``from_estimator`` (and ``from_predictions``
where it applies) computes the arrays with the public compute function, builds the Display
from them and calls ``plot(ax=None)``, which sets ``ax_`` and ``figure_``. matplotlib is
needed only by ``plot`` (``pip install 'simplexens[plot]'``); importing this package does not
import it.
"""

from .coverage import CoverageDisplay
from .decision import DecisionRegionsDisplay, decision_regions
from .reliability import ReliabilityDisplay, reliability_diagram
from .surface import (
    evaluate_points,
    loss_along_curve,
    loss_along_path,
    loss_on_plane,
    parameter_sets,
    plane_basis,
    plane_weights,
)
from .surface_display import PathDisplay, PlaneDisplay
from .volume import VolumeDisplay, connector_volumes

__all__ = [
    "CoverageDisplay",
    "DecisionRegionsDisplay",
    "PathDisplay",
    "PlaneDisplay",
    "ReliabilityDisplay",
    "VolumeDisplay",
    "connector_volumes",
    "decision_regions",
    "evaluate_points",
    "loss_along_curve",
    "loss_along_path",
    "loss_on_plane",
    "parameter_sets",
    "plane_basis",
    "plane_weights",
    "reliability_diagram",
]
