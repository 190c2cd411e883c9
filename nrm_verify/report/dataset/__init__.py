"""Dataset-wide runs: every analysis of nrm over a dataset, resumable, in formats that read
without nrm (Parquet rows, Zarr arrays, JSON manifest and reductions). ``docs/run.md``.

    from nrm_verify.report.dataset import run
    result = run(model, images, "runs/vgg", rules=nrm.presets.EpsilonGammaFlat(), layers=["features.28"])
    result.reductions["channel_top/features.28"].rows     # per channel, the samples where it is most relevant

Needs pyarrow and zarr, the ``run`` extra: ``pip install 'nrm-verify[run]'``; without them,
importing this package raises one :class:`ImportError` that says so (the rest of
nrm_verify does not need them).
"""

from importlib.util import find_spec

EXTRA = "run"
REQUIRES = ("pyarrow", "zarr")


def _missing() -> list[str]:
    out = []
    for module in REQUIRES:
        try:
            if find_spec(module) is None:
                out.append(module)
        except (ImportError, ValueError):
            out.append(module)
    return out


if _missing():
    raise ImportError(f"dataset runs need {', '.join(_missing())} (the 'run' extra): pip install 'nrm-verify[run]'",
                      name="nrm_verify.report.dataset")

from nrm_verify.report.dataset.compute import LAWS, Spec  # noqa: E402
from nrm_verify.report.dataset.errors import (  # noqa: E402
    DatasetError,
    OutputFolderError,
    RunError,
    RunMismatchError,
    SpecError,
    TargetError,
)
from nrm_verify.report.dataset.reduce import Extreme, Histogram, Moments, Reductions, TopK, merge_all  # noqa: E402
from nrm_verify.report.dataset.regress import RunComparison, SampleDeviation, compare_run  # noqa: E402
from nrm_verify.report.dataset.report import build_report, figures  # noqa: E402
from nrm_verify.report.dataset.runner import ENGINES, RunResult, run  # noqa: E402
from nrm_verify.report.dataset.sources import Source, as_source  # noqa: E402

__all__ = ["run", "RunResult", "Spec", "LAWS", "ENGINES", "as_source", "Source",
           "compare_run", "RunComparison", "SampleDeviation", "build_report", "figures",
           "Moments", "Histogram", "TopK", "Extreme", "Reductions", "merge_all",
           "RunError", "DatasetError", "TargetError", "SpecError", "OutputFolderError", "RunMismatchError"]
