"""Shared test setup. Builders of random networks live in ``tests/nets.py``.

Every test builds float64 tensors explicitly (``dtype=torch.float64``, ``.double()``); the
guard below makes sure no test changes torch's global default dtype for the tests after it.
"""

from __future__ import annotations

import pathlib
import sys

import pytest
import torch

sys.path.insert(0, str(pathlib.Path(__file__).parent))  # `import nets` from every test module


@pytest.fixture(autouse=True)
def _default_dtype_unchanged():
    before = torch.get_default_dtype()
    yield
    after = torch.get_default_dtype()
    torch.set_default_dtype(before)
    assert after == before, f"the test changed torch's default dtype to {after}; build float64 tensors explicitly"


@pytest.fixture(autouse=True)
def _figures_closed():
    """Close the matplotlib figures a test leaves open (the report builders return figures
    for the caller to inspect): without it pyplot keeps every one of them alive."""
    yield
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close("all")


@pytest.fixture
def single_thread():
    """One intra-op thread for tests of tiny tensors: on a loaded 2-core machine torch's
    thread pool makes a 3×3 convolution take ~10 ms instead of ~30 µs. Restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
