"""The only package that imports skorch: the nets that train each member.

Every member is an ordinary skorch :class:`~skorch.NeuralNet` built inside the worker that
trains it (:mod:`.nets`), by one trainer per method (:mod:`.trainers`). What comes back to the
parent is small and device-free: the trained tensors on the CPU and the number of epochs run.
"""

from .anchors import (
    PHASE_SCHEDULES,
    AnchorNet,
    AnchorPhases,
    AnchorResult,
    PhaseRate,
    cosine_schedule,
    fit_complex,
    fit_curve,
    fit_simplex,
    is_lr_scheduler,
    load_tensors,
    start_mode,
)
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
    training_batches,
)
from .trainers import (
    CyclicRate,
    FGEResult,
    SWACollector,
    SWAGResult,
    fit_fge,
    fit_member,
    fit_swag,
)

__all__ = [
    "DIVERGENCE_EPOCHS",
    "DIVERGENCE_RATIO",
    "PHASE_SCHEDULES",
    "AnchorNet",
    "AnchorPhases",
    "AnchorResult",
    "CyclicRate",
    "FGEResult",
    "FiniteLoss",
    "FixedSplit",
    "MemberNet",
    "MemberResult",
    "Phase",
    "PhaseRate",
    "ReportProgress",
    "SWACollector",
    "SWAGResult",
    "check_callbacks",
    "cosine_schedule",
    "cpu_tensors",
    "default_phase",
    "fit_complex",
    "fit_curve",
    "fit_fge",
    "fit_member",
    "fit_simplex",
    "fit_swag",
    "fixed_split",
    "is_lr_scheduler",
    "load_tensors",
    "make_net",
    "start_mode",
    "training_batches",
]
