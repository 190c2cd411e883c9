"""The exceptions of :mod:`nrm`. Each message says what was wrong and what to do."""

from __future__ import annotations


class NRMError(Exception):
    """Base class of every error raised by nrm."""


class UnsupportedModuleError(NRMError, TypeError):
    """A module (or a placement of one) that the proper-FFNN view cannot represent."""


class UnsupportedOperationError(UnsupportedModuleError):
    """An operation of a traced model (a function, a method, a module) without a rule."""


class AmbiguousProductError(UnsupportedOperationError):
    """A product of activations whose split does not say which factor takes the relevance
    (split="signal" with no gate or several signals)."""


class RuleParameterError(NRMError, ValueError):
    """A rule constructed with invalid parameters."""


class RuleAssignmentError(NRMError, ValueError):
    """A layer without a rule, or a rule mapping that names no layer."""


class ZeroOutputError(NRMError, ValueError):
    """f_c(x) = 0: the measure π = δ_c · R / f cannot be normalized."""


class NullEventError(NRMError, ZeroDivisionError):
    """Conditioning on an event of measure 0."""


class UnknownLayerError(NRMError, KeyError):
    """A layer name that the model does not have."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class EventIndexError(NRMError, IndexError):
    """A neuron index, channel or mask that does not fit its layer."""


class NonFiniteError(NRMError, ValueError):
    """NaN or Inf in the input or in the model's parameters."""


class DeviceMismatchError(NRMError, RuntimeError):
    """Model and input on different devices."""


class DtypeMismatchError(NRMError, TypeError):
    """Model and input of different or unsupported dtypes."""


class TrainingModeError(NRMError, RuntimeError):
    """The model (or a submodule) is in training mode."""


class ShapeError(NRMError, ValueError):
    """An input, target or start vector of the wrong shape."""


class RelevanceDependentRuleError(NRMError, TypeError):
    """An operation that needs a fixed kernel, asked of a rule that reads the incoming relevance."""


class DataDependentControlFlowError(UnsupportedOperationError):
    """forward() reads the values of an input-derived tensor into Python (``if t.sum() > 0``,
    ``t.item()``): the computation would depend on the input in a way nrm does not follow."""


class InPlaceViewError(UnsupportedOperationError):
    """An input-derived tensor changed in place through a view and read afterwards."""


class CaptureMismatchError(NRMError, RuntimeError):
    """The self-check of a capture failed: a layer kind's map does not reproduce what the
    model computed (the message names the layer and the deviation)."""


class StaleMeasureError(NRMError, RuntimeError):
    """A tensor a Measure reads (a parameter, a buffer, a recorded activation) changed after
    ``explain``: its results would silently mix two models. Explain again."""


class ArgumentError(NRMError, TypeError, ValueError):
    """An argument of ``explain``, of a Measure method or of an event that is of the wrong type
    or out of its domain (``chunk=0``, ``check="yes"``, ``At(0)``, ``event & 3``); the message
    says what the argument takes."""


class EventTooLargeError(NRMError, ValueError):
    """An event that would hold more cylinders than nrm measures (one masked pass each);
    the message says how to write it smaller."""


class GraphError(NRMError, ValueError):
    """A malformed graph (:mod:`nrm.gnn`): ``edge_index`` of the wrong dtype or shape, node ids out
    of range, edge weights that do not match the edges or that a rule cannot take, features
    that are not finite."""
