"""benchmarks/bench_transformers.py's argument handling (the benchmark itself runs in
``.venv-peers`` and is never run by the test suite): bad values exit with status 2 before any
model is built; the defaults are the issue's configuration."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_transformers.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_transformers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_defaults_are_the_issue_s_configuration(bench):
    args = bench.parse([])
    assert (args.models, args.layers, args.tokens, args.head_layer, args.small) == (["vit", "gpt2"], 12, 128, 5,
                                                                                   False)
    assert bench.parse(["gpt2", "--small"]).head_layer == 0


@pytest.mark.parametrize("argv, words", [
    (["bert"], "unknown model bert"), (["--repeats", "0"], "--repeats must be at least 1"),
    (["--tokens", "0"], "--tokens must be"), (["--warmup", "-1"], "--warmup must be 0 or more"),
    (["--head-layer", "12"], "--head-layer must be in 0 … 11"), (["--small", "--head-layer", "2"], "0 … 1"),
])
def test_bad_values_exit_2_naming_the_argument(bench, argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        bench.parse(argv)
    assert e.value.code == 2 and words in capsys.readouterr().err
