"""Regression-testing an explainer that is not nrm: record a snapshot once, compare later runs.

    .venv/bin/python examples/regression_external.py [--dir DIR]

1. ``gradient_x_input`` — a plain Gradient × Input explainer, written here the way a user
   would write one: ``explainer(model, x, target) -> tensor | dict[str, tensor]``;
2. its outputs on the seeded ``quick`` cases (an MLP with two samples, a small CNN) are
   recorded into DIR/gxi.json + DIR/gxi.npz;
3. the same function is compared against the snapshot: it passes (exit status 0);
4. a "refactored" version that silently computes in float32 is compared under the same
   label: the snapshot catches it (exit status 1) and says where the deviation is worst;
5. if captum is installed, captum's InputXGradient is recorded and compared too
   (``captum:InputXGradient``); otherwise the script says how to install it.

The same steps on the command line (see docs/regression.md):

    nrm-verify snapshot record  DIR/gxi --explainer gxi=examples/regression_external.py:gradient_x_input \
        --cases quick
    nrm-verify snapshot compare DIR/gxi                                                        # exit 0
    nrm-verify snapshot compare DIR/gxi --explainer gxi=examples/regression_external.py:gxi_float32  # exit 1
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
from pathlib import Path

import torch

from nrm_verify.report.snapshots import compare, record


def gradient_x_input(model, x, target):
    """Gradient × Input: R_i = x_i · ∂f_c/∂x_i (Shrikumar et al. 2016; = LRP-0 on ReLU nets, law L9)."""
    x = x.clone().requires_grad_(True)
    out = model(x)
    picked = out[torch.arange(out.shape[0]), torch.as_tensor(target).expand(out.shape[0])]
    (grad,) = torch.autograd.grad(picked.sum(), x)
    return {"input": (grad * x).detach()}


def gxi_float32(model, x, target):
    """The same explainer after a careless change: the product is taken in float32."""
    out = gradient_x_input(model, x, target)["input"]
    return {"input": out.float().double()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None, help="where to write the snapshots (default: a temporary folder)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    folder = Path(args.dir or tempfile.mkdtemp(prefix="nrm-snapshots-"))
    path = folder / "gxi"

    record(path, {"gxi": gradient_x_input}, cases="quick", overwrite=True)
    print(f"recorded {path}.json and {path}.npz")

    same = compare(path, {"gxi": gradient_x_input})
    print(same, end="\n\n")

    changed = compare(path, {"gxi": gxi_float32})
    print(changed, end="\n\n")

    if importlib.util.find_spec("captum") is None:
        print("captum is not installed: pip install captum (or pip install -e '.[peers]') to snapshot "
              "captum:InputXGradient as well; skipped")
        captum_ok = True
    else:
        record(folder / "captum", ["captum:InputXGradient"], cases="quick", overwrite=True)
        captum = compare(folder / "captum")
        print(captum)
        captum_ok = captum.ok

    print(f"unchanged explainer passes: {same.ok}; float32 change caught: {not changed.ok}")
    return 0 if same.ok and not changed.ok and captum_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
