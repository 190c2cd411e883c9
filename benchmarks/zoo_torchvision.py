"""Every convolutional classification model of torchvision, and its attention models, through ``nrm.explain``.

Run from ``.venv-peers`` (torchvision does not import beside ``.venv``'s torch):

    .venv-peers/bin/python benchmarks/zoo_torchvision.py                 # every model, 64×64
    .venv-peers/bin/python benchmarks/zoo_torchvision.py resnet18 convnext_tiny --size 32

Each model is built with random weights (``weights=None``, seed 0), in float64 (those of
:data:`DTYPE` in float32) and eval mode, and explained for one seeded image (batch 1), target =
the arg-max logit, with LRP-0, LRP-ε and every preset of :data:`nrm.presets.PRESETS`. Per model
and rule: accepted or the refusal's first line, L1's worst deviation
(:func:`nrm_verify.laws.normalization`, every layer with ⊥ and the bypassing walks), and the
time of ``explain`` plus the input heatmap; per model L9
(:func:`nrm_verify.laws.gradient_x_input`, LRP-0 = gradient × input, or not applicable with its
reason) and its general form (``detached=True``: the gradient of the model with activation
ratios, gates and layer norms' σ detached, which applies to every model). Each model runs in a
child process with a time limit (a refusal, a crash or running out of memory stays with that
model).

Rows are merged into ``benchmarks/results/zoo_torchvision.json`` (a model run again replaces
its row; the others stay, in the order of :data:`MODELS`), so that the zoo can be run
in parts; ``--table`` prints the README's table from that file without running anything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "zoo_torchvision.json"

CONVOLUTIONAL = [
    "alexnet",
    "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2",
    "densenet121", "densenet161", "densenet169", "densenet201",
    "googlenet", "inception_v3", "squeezenet1_0", "squeezenet1_1",
    "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
    "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0",
    "mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3",
    "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4",
    "efficientnet_b5", "efficientnet_b6", "efficientnet_b7",
    "efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l",
    "regnet_x_400mf", "regnet_x_800mf", "regnet_x_1_6gf", "regnet_x_3_2gf", "regnet_x_8gf", "regnet_x_16gf",
    "regnet_x_32gf",
    "regnet_y_400mf", "regnet_y_800mf", "regnet_y_1_6gf", "regnet_y_3_2gf", "regnet_y_8gf", "regnet_y_16gf",
    "regnet_y_32gf", "regnet_y_128gf",
    "convnext_tiny", "convnext_small", "convnext_base", "convnext_large",
]
"""torchvision's convolutional classifiers."""

ATTENTION = ["vit_b_16", "vit_b_32", "swin_t", "swin_v2_t", "maxvit_t"]
"""torchvision's attention classifiers (docs/attention.md: ViT, MaxViT and Swin — its window attention
through a batch-first decomposition — are read). ViT is built for the image size of the run (a multiple of
its patch size); MaxViT only at 224 (its partitions of 7)."""

MODELS = CONVOLUTIONAL + ATTENTION
"""Every model the zoo runs by default, in the order of its table."""

MIN_SIZE = {"inception_v3": 80, "googlenet": 64, "alexnet": 64, "maxvit_t": 224}
"""Models whose stem needs a larger image than the default."""


DTYPE = {"regnet_y_128gf": "float32"}
"""Models run in another dtype than float64, and why: regnet_y_128gf's 644 M parameters are
5.2 GB in float64, and an αβ preset holds about four times that (the model, its folded batch
norms, the positive and the negative parts of every folded weight) — over this machine's 24 GB;
in float32 every rule set fits (L1 then holds to float32's round-off)."""

FULL_L1 = ("LRP-0", "EpsilonGammaFlat")
"""Rules whose L1 is checked at every layer (with ⊥ and the bypassing walks)."""


def rules_to_try():
    import nrm
    out = {"LRP-0": nrm.rules.Zero(), "Epsilon(1e-6)": nrm.rules.Epsilon(1e-6)}
    for name, preset in nrm.presets.PRESETS.items():
        out[name] = preset(-3.0, 3.0) if name == "EpsilonGammaBox" else preset()
    return out


def build(name: str, size: int):
    import torch
    import torchvision

    dtype = getattr(torch, DTYPE.get(name, "float64"))
    torch.manual_seed(0)
    kwargs = {"weights": None}
    if name == "inception_v3":
        kwargs.update(aux_logits=True, init_weights=False)
    if name == "googlenet":
        kwargs.update(aux_logits=False, init_weights=False)
    if name.startswith("vit_"):
        kwargs.update(image_size=size)
    model = getattr(torchvision.models, name)(**kwargs).to(dtype).eval()
    if name.startswith("vit_"):  # its head is zero at initialization (every logit 0): drawn, seeded
        with torch.no_grad():
            model.heads.head.weight.normal_(0.0, 0.02, generator=torch.Generator().manual_seed(2))
    x = torch.randn(1, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(dtype)
    return model, x


def first_line(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}"
    return text.splitlines()[0][:300]


def child(name: str, size: int) -> dict:
    """One model: every rule, L1, L9 (runs in its own process)."""
    import gc

    import torch

    import nrm
    from nrm_verify import laws

    size = max(size, MIN_SIZE.get(name, size))
    model, x = build(name, size)
    with torch.no_grad():
        logits = model(x)
    target = int(logits.argmax(1))
    row = {"model": name, "size": size, "params": sum(p.numel() for p in model.parameters()), "target": target,
           "dtype": str(x.dtype).replace("torch.", ""), "rules": {}}
    for label, rules in rules_to_try().items():
        start = time.perf_counter()
        try:
            m = nrm.explain(model, x, target, rules=rules)
            m.marginal("input")
            seconds = time.perf_counter() - start
            row["rules"][label] = {"accepted": True, "seconds": seconds, "layers": len(m.layers)}
            if label in FULL_L1:  # L1 at every layer costs one pass per layer of a branched model
                l1 = laws.normalization(m)
                row["rules"][label].update(l1=l1.deviation, l1_holds=l1.holds)
        except Exception as e:  # noqa: BLE001 — the refusal is the result
            row["rules"][label] = {"accepted": False, "error": first_line(e)}
        m = None  # this rule's measure and engine go before the next rule's are built
        gc.collect()
    for key, detached in (("l9", False), ("l9_detached", True)):
        try:
            l9 = laws.gradient_x_input(model, x, target, detached=detached)
            row[key] = {"holds": l9.holds, "deviation": l9.deviation, "detail": l9.detail[:300]}
        except Exception as e:  # noqa: BLE001
            row[key] = {"holds": None, "error": first_line(e)}
    return row


def run_child(name: str, size: int, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child", name, "--size", str(size)]
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"model": name, "size": size, "failed": f"over the time limit of {timeout:.0f} s"}
    wall = time.perf_counter() - start
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1][:300]
        return {"model": name, "size": size, "failed": f"exit {done.returncode}: {tail}"}
    row = json.loads(lines[-1])
    row["wall"] = wall
    return row


def _verdict(l9: dict) -> str:
    if "error" in l9:
        return "error"
    text = "held" if l9.get("holds") else "VIOLATED" if l9.get("holds") is False else "n/a" if l9 else "—"
    return text + (f" {l9['deviation']:.1e}" if l9.get("holds") is not None else "")


def table(rows: list[dict]) -> str:
    out = ["| model | params | image | rules accepted | L1 worst | L9: model's gradient / detached | LRP-0 s "
           "| EpsilonGammaFlat s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "failed" in r:
            out.append(f"| {r['model']} | | {r['size']} | **failed**: {r['failed']} | | | | |")
            continue
        rules = r["rules"]
        ok = [v for v in rules.values() if v["accepted"]]
        refused = [f"{k}: {v['error']}" for k, v in rules.items() if not v["accepted"]]
        accepted = f"{len(ok)}/{len(rules)}" + (f" (refused: {refused[0]})" if refused else "")
        l1 = max((v["l1"] for v in ok if "l1" in v), default=float("nan"))
        l9_text = " / ".join(_verdict(r.get(key, {})) for key in ("l9", "l9_detached"))
        t0 = rules.get("LRP-0", {}).get("seconds")
        tg = rules.get("EpsilonGammaFlat", {}).get("seconds")
        times = " | ".join("" if t is None else f"{t:.2f}" for t in (t0, tg))
        image = f"{r['size']}" + (f" ({r['dtype']})" if r.get("dtype", "float64") != "float64" else "")
        out.append(f"| {r['model']} | {r['params'] / 1e6:.1f} M | {image} | {accepted} | {l1:.1e} | {l9_text} "
                   f"| {times} |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*", help="model names (default: every convolutional and attention model)")
    p.add_argument("--size", type=int, default=64, help="image side (default 64)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per model (default 900)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--table", action="store_true", help="print the table of the results file and stop")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        import torch

        torch.set_num_threads(int(os.environ.get("NRM_ZOO_THREADS", "2")))
        print(json.dumps(child(args.child, args.size)))
        return 0
    if args.table:
        if not args.out.is_file():
            p.error(f"no results at {args.out}: run the zoo first")
        print(table(load(args.out)))
        return 0
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        p.error(f"not a classification model of the zoo: {', '.join(unknown)} (see --help; the names are "
                "torchvision.models' builders)")
    import torch
    import torchvision
    meta = {"torch": torch.__version__, "torchvision": torchvision.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}
    rows = []
    for name in args.models or MODELS:
        row = run_child(name, args.size, args.timeout)
        row.update(meta, load=os.getloadavg()[0])
        rows.append(row)
        print(table([row]).splitlines()[-1], flush=True)
        save(args.out, rows)  # after each model: a long run that is stopped keeps what it did
    print()
    print(table(rows))
    return 0 if all(good(r) for r in rows) else 1


def good(row: dict) -> bool:
    return "failed" not in row and all(v["accepted"] for v in row["rules"].values())


def load(path: Path) -> list[dict]:
    return json.loads(path.read_text())["rows"] if path.is_file() else []


def save(path: Path, rows: list[dict]) -> None:
    """Merge ``rows`` into the results file: a model's new row replaces its old one."""
    merged = {r["model"]: r for r in load(path)}
    merged.update({r["model"]: r for r in rows})
    order = {name: i for i, name in enumerate(MODELS)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rows": sorted(merged.values(), key=lambda r: order.get(r["model"], len(order)))},
                               indent=1))


if __name__ == "__main__":
    sys.exit(main())
