"""The only package that imports skorch: the nets that train each member.

Every member is an ordinary skorch :class:`~skorch.NeuralNet` built inside the worker that
trains it (:mod:`.nets`), by one trainer per method (:mod:`.trainers`). What comes back to the
parent is small and device-free: the trained tensors on the CPU and the number of epochs run.
"""

from .nets import (
    DIVERGENCE_EPOCHS,
    DIVERGENCE_RATIO,
    FiniteLoss,
    FixedSplit,
    MemberNet,
    MemberResult,
    Phase,
    ReportProgress,
    check_callbacks,
    cpu_tensors,
    default_phase,
    fixed_split,
    make_net,
)
from .trainers import (
    CyclicRate,
    FGEResult,
    SimplexNet,
    SimplexResult,
    SWACollector,
    SWAGResult,
    VertexSchedule,
    fit_fge,
    fit_member,
    fit_simplex,
    fit_swag,
    training_batches,
)

__all__ = [
    "DIVERGENCE_EPOCHS",
    "DIVERGENCE_RATIO",
    "CyclicRate",
    "FGEResult",
    "FiniteLoss",
    "FixedSplit",
    "MemberNet",
    "MemberResult",
    "Phase",
    "ReportProgress",
    "SWACollector",
    "SWAGResult",
    "SimplexNet",
    "SimplexResult",
    "VertexSchedule",
    "check_callbacks",
    "cpu_tensors",
    "default_phase",
    "fit_fge",
    "fit_member",
    "fit_simplex",
    "fit_swag",
    "fixed_split",
    "make_net",
    "training_batches",
]
