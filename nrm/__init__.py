"""nrm — the reference implementation of the Normalized Relevance Measure.

Xiong, Schnake, Montavon, Müller, Nakajima, *Normalized Relevance Measure as a Unifying
Framework to Explain Neural Network Latent Structures*, arXiv:2606.00557 (2026).

    import nrm
    m = nrm.explain(model, x, target=c, rules=nrm.presets.EpsilonGammaFlat())
    m.marginal("input")                                   # μ(X_input = i)
    m(nrm.At("features.28", channels=[3]) & nrm.At("input", mask=region))
"""

from . import gnn, layers, presets, rules
from .capture import capture
from .errors import (
    AmbiguousProductError,
    CaptureMismatchError,
    DataDependentControlFlowError,
    DeviceMismatchError,
    DtypeMismatchError,
    EventIndexError,
    InPlaceViewError,
    NonFiniteError,
    NRMError,
    NullEventError,
    RelevanceDependentRuleError,
    RuleAssignmentError,
    RuleParameterError,
    ShapeError,
    StaleMeasureError,
    TrainingModeError,
    UnknownLayerError,
    UnsupportedModuleError,
    UnsupportedOperationError,
    ZeroOutputError,
)
from .events import EMPTY, OMEGA, At, Event, Walk
from .graph import ProperFFNN
from .markers import Concat, Sum
from .measure import Measure, explain
from .presets import FIRST, RuleMap

__version__ = "0.1.0"

__all__ = [
    "explain", "capture", "layers", "Measure",
    "At", "Event", "Walk", "OMEGA", "EMPTY", "FIRST", "RuleMap", "ProperFFNN", "Sum", "Concat",
    "rules", "presets", "gnn",
    "NRMError", "UnsupportedModuleError", "UnsupportedOperationError", "AmbiguousProductError",
    "RuleParameterError", "RuleAssignmentError",
    "ZeroOutputError",
    "NullEventError", "RelevanceDependentRuleError", "UnknownLayerError", "EventIndexError", "NonFiniteError",
    "DeviceMismatchError",
    "DtypeMismatchError", "TrainingModeError", "ShapeError", "CaptureMismatchError", "DataDependentControlFlowError",
    "InPlaceViewError", "StaleMeasureError",
]
