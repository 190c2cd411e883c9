"""The core ``nrm`` needs only torch and numpy (``pyproject.toml``: ``dependencies``), and
nrm_verify says in one line what it needs when its ``verify`` extra is missing.

Shown two ways: no module of ``nrm/`` names sympy, hypothesis, tqdm, scipy or nrm_verify
in an import statement or an import call (also inside functions), and a fresh interpreter
whose import system refuses those packages explains three models (batch norm, a residual
sum, local response normalization) with results that are finite and normalized (law L1).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import nrm_verify

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = ("sympy", "hypothesis", "tqdm", "scipy", "nrm_verify")
INSTALL = "pip install 'nrm-verify[verify]'"

BLOCKER = """
import sys

class Blocker:
    '''Refuses the packages in BLOCKED as if they were not installed.'''
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by test_core_alone)", name=name)
        return None

sys.meta_path.insert(0, Blocker())
"""

EXPLAIN = """
import json
import torch
from torch import nn
import nrm

torch.manual_seed(0)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.conv1, self.bn1 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x):
        h = torch.relu(self.stem(x))
        return self.head(torch.relu(h + self.conv2(torch.relu(self.bn1(self.conv1(h))))))


def seeded_batchnorm(model):
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.double().eval()


models = {
    "cnn_batchnorm": (nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                                    nn.Flatten(), nn.Linear(4 * 4 * 4, 5)), nrm.presets.EpsilonGammaFlat()),
    "residual": (Residual(), nrm.presets.EpsilonPlusFlat()),
    "lrn": (nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.LocalResponseNorm(3, alpha=0.5, k=1.0),
                          nn.Flatten(), nn.Linear(6 * 8 * 8, 4)), nrm.presets.EpsilonPlus()),
}
x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
result = {}
for name, (model, rules) in models.items():
    m = nrm.explain(seeded_batchnorm(model), x, target=1, rules=rules)
    layers = {}
    for layer in m.layers:
        marginal = m.marginal(layer)
        total = marginal.flatten(1).sum(1) + m.absorbed(layer) + m.bypassing(layer)
        layers[layer] = {"finite": bool(torch.isfinite(marginal).all()), "total": total.tolist()}
    result[name] = layers
blocked = sorted({name.split(".")[0] for name in sys.modules} & set(FORBIDDEN))
print(json.dumps({"models": result, "loaded": blocked}))
"""


def _run(script: str, *args: str, blocked: tuple[str, ...] = FORBIDDEN) -> subprocess.CompletedProcess:
    """``script`` in a fresh interpreter run from the repository root, where importing any
    of ``blocked`` fails as if it were not installed."""
    code = f"BLOCKED = FORBIDDEN = {blocked!r}\n" + BLOCKER + script
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def _imported_modules(tree: ast.AST) -> list[tuple[str, int]]:
    """(module, line) of every import statement and every ``import_module``/``__import__``
    call with a literal name in ``tree``, at any depth."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node.lineno))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append((node.args[0].value, node.lineno))
    return found


def test_no_module_of_the_core_imports_a_verify_dependency():
    files = sorted((ROOT / "nrm").rglob("*.py"))
    assert len(files) > 10
    bad = [f"{path.relative_to(ROOT)}:{line} imports {module}"
           for path in files for module, line in _imported_modules(ast.parse(path.read_text(encoding="utf-8")))
           if module.split(".")[0] in FORBIDDEN]
    assert not bad, "the core must need only torch and numpy:\n" + "\n".join(bad)


def test_the_scan_sees_imports_inside_functions():
    tree = ast.parse("def f():\n    import sympy\n    from tqdm import tqdm\n"
                     "    importlib.import_module('hypothesis.strategies')\n    __import__('scipy')\n")
    assert [m for m, _ in _imported_modules(tree)] == ["sympy", "tqdm", "hypothesis.strategies", "scipy"]


def test_explain_runs_with_the_verify_dependencies_blocked():
    run = _run(EXPLAIN)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)
    assert result["loaded"] == [], f"the core imported {result['loaded']}"
    assert set(result["models"]) == {"cnn_batchnorm", "residual", "lrn"}
    for name, layers in result["models"].items():
        assert len(layers) >= 4, (name, list(layers))
        for layer, values in layers.items():
            assert values["finite"], (name, layer)
            assert values["total"] == pytest.approx([1.0, 1.0], abs=1e-9), (name, layer, values["total"])


def test_the_blocker_blocks():
    run = _run("import sympy\n")
    assert run.returncode == 1 and "blocked by test_core_alone" in run.stderr


def test_importing_nrm_verify_without_its_extra_says_what_to_install():
    run = _run("try:\n    import nrm_verify.laws\nexcept ImportError as e:\n    print(e.name, '|', e)\n",
               blocked=nrm_verify.REQUIRES)
    assert run.returncode == 0, run.stderr[-3000:]
    name, _, message = run.stdout.strip().partition(" | ")
    assert name == "nrm_verify"
    assert "sympy, hypothesis, tqdm" in message and message.endswith(INSTALL)
    assert "\n" not in message


def test_the_command_without_the_extra_is_one_line_and_exit_2():
    run = _run("import _nrm_verify_entry\nsys.exit(_nrm_verify_entry.main())\n", "check", "--quick",
               blocked=nrm_verify.REQUIRES)
    assert run.returncode == 2, run.stderr[-3000:]
    assert run.stdout == ""
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nrm-verify: error: nrm_verify needs ") and INSTALL in lines[0]


def test_pytest_starts_without_the_extra(tmp_path):
    """The pytest11 entry point (_nrm_verify_entry) registers no plugin then, instead of
    stopping pytest in a project that only uses the core."""
    (tmp_path / "test_user.py").write_text("import nrm\n\ndef test_core():\n    assert nrm.explain\n")
    options = ["-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest",  # hypothesis is not installed either
               "-p", "no:nrm_verify", "-p", "_nrm_verify_entry"]  # this checkout's entry point, not an installed one
    run = _run(f"import pytest\nsys.exit(pytest.main({options + [str(tmp_path)]!r}))\n", blocked=nrm_verify.REQUIRES)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "1 passed" in run.stdout
    assert "nrm-verify: hypothesis profile" not in run.stdout  # the plugin's report header: not loaded


def test_with_the_extra_the_entry_point_loads_the_plugin():
    import _nrm_verify_entry

    assert _nrm_verify_entry.pytest_plugins == ["nrm_verify.pytest_plugin"]


def test_the_verify_extra_is_what_nrm_verify_checks_for():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = [spec.split(">")[0].split("=")[0].split("<")[0].strip() for spec in project["dependencies"]]
    assert names == ["torch", "numpy"]
    verify = [spec.split(">")[0].split("=")[0].strip() for spec in project["optional-dependencies"]["verify"]]
    assert verify == list(nrm_verify.REQUIRES)
    assert "nrm-verify[verify]" in project["optional-dependencies"]["test"]
    assert project["scripts"]["nrm-verify"] == "_nrm_verify_entry:main"
    assert project["entry-points"]["pytest11"] == {"nrm_verify": "_nrm_verify_entry"}
