"""nrm_verify — what checks the NRM core and other people's explainers: exact oracles,
symbolic proofs, law checks, property strategies, a rule validator and peer adapters.

The core :mod:`nrm` needs only torch and numpy; nrm_verify also needs sympy, hypothesis
and tqdm, the ``verify`` extra: ``pip install 'nrm-verify[verify]'``. Without them,
importing nrm_verify (or any module in it) raises one :class:`ImportError` that says so,
before a submodule would fail on the first missing import.
"""

from importlib.util import find_spec

EXTRA = "verify"
"""The name of the optional dependencies of nrm_verify in ``pyproject.toml``."""
REQUIRES = ("sympy", "hypothesis", "tqdm")
"""The modules of the ``verify`` extra that nrm_verify imports."""


def _is_missing(module: str) -> bool:
    try:
        return find_spec(module) is None
    except (ImportError, ValueError):  # a finder refused it, or a broken entry in sys.modules
        return True


def missing_message(missing: list[str]) -> str:
    """The one line that explains a missing ``verify`` extra and how to install it."""
    return (f"nrm_verify needs {', '.join(missing)} (the 'verify' extra; the core nrm needs only torch and numpy): "
            f"pip install 'nrm-verify[{EXTRA}]'")


_missing = [module for module in REQUIRES if _is_missing(module)]
if _missing:
    # name="nrm_verify": the entry points (_nrm_verify_entry) tell this error from a bug in nrm_verify
    raise ImportError(missing_message(_missing), name="nrm_verify")
