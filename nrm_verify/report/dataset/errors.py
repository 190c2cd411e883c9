"""The exceptions of a dataset run. Each says what was wrong and what to give instead; each
is raised before anything is written into the output folder (a bad sample is not an
exception: it is recorded in its row, with its reason)."""

from __future__ import annotations


class RunError(Exception):
    """Base class of the errors of :func:`nrm_verify.report.dataset.run`."""


class DatasetError(RunError, TypeError):
    """A dataset that cannot be read as samples: not a tensor, torch ``Dataset``, folder or
    Parquet index; no samples; no sample that fits the model."""


class TargetError(RunError, ValueError):
    """``targets=`` of the wrong type, dtype, shape or length, or an index out of the
    output's range."""


class SpecError(RunError, ValueError):
    """What to compute is malformed: an unknown law, a negative top-k, an event that is not
    an ``nrm.Event``, a layer name that is not a string."""


class OutputFolderError(RunError, OSError):
    """The output folder cannot be created or written."""


class RunMismatchError(RunError, ValueError):
    """The output folder holds a run of another model, rules, dataset or spec: results are
    never mixed. Give a new folder (or delete the old one)."""
