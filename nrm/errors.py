"""The exceptions of :mod:`nrm`. Each message says what was wrong and what to do."""

from __future__ import annotations


class NRMError(Exception):
    """Base class of every error raised by nrm."""


class UnsupportedModuleError(NRMError, TypeError):
    """A module (or a placement of one) that the proper-FFNN view cannot represent."""


class UnsupportedOperationError(UnsupportedModuleError):
    """An operation of a traced model (a function, a method, a module) without a rule."""


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
