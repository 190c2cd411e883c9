"""Transformers on CPU (issue 14, "Speed"): nrm's input marginal with AttnLRP beside a plain
input gradient and LXT 2.1's efficient mode, and the head-conditional token heatmaps of every
head of one layer in one nrm call beside one LXT run per head.

Run from ``.venv-peers`` (torchvision, transformers and lxt are installed there):

    .venv-peers/bin/python benchmarks/bench_transformers.py --repeats 3          # full size
    .venv-peers/bin/python benchmarks/bench_transformers.py --small --repeats 2  # a check in seconds

Models (float32, eval mode, batch 1, frozen parameters, seeded weights, no downloads):

* ``vit``: torchvision's ``vit_b_16`` at 224×224 (its zero-initialized head drawn N(0, 0.02²));
  target = the arg-max logit. LXT's efficient map for torchvision's ViT (``vit_torch``) is
  CP-LRP only, so nrm is timed with AttnLRP (θ = ½) and CP-LRP (θ = 0), LXT with CP-LRP.
* ``gpt2``: ``transformers.GPT2LMHeadModel`` with GPT-2 small's shape (12 layers, hidden 768,
  12 heads, vocabulary 50257) on 128 seeded token ids, explained at ``inputs_embeds``; target =
  the arg-max next-token logit at the last position. ``activation_function="gelu_pytorch_tanh"``
  (GPT-2's ``gelu_new`` is the same function written as a composite, which nrm reads as such;
  LXT applies its identity rule either way) and ``attn_implementation="sdpa"`` for nrm (GPT-2's
  eager attention adds finfo.min twice, which nrm refuses).

Cases, timed in interleaved rounds in one process (round r runs every case once, in order):

* ``gradient``: d f / d x by autograd of the unpatched model;
* ``nrm_attnlrp`` (``nrm_cp``): ``nrm.explain`` (LRP-0, θ = ½ or 0) + ``m.marginal("input")``;
* ``lxt_<setting>``: LXT's efficient mode (patched model, x · ∂f/∂x); the settings swept are
  what changes its speed: GPT-2's ``attn_implementation`` (``sdpa``, ``eager``) and
  transformers' gradient checkpointing (LXT's documented memory option: train mode, its dropout
  patched to the identity); the best median is LXT's figure;
* ``heads_nrm``: ``nrm.explain`` + ``m.marginal("input", within=[At(av, heads=[h]) for h …])``
  with ``av`` the attention output A·V (heads, T, d) of layer ``--head-layer``: every walk through
  head h of that layer;
* ``heads_lxt``: one LXT run per head, the gradient at the input of that layer's output
  projection (``c_proj``: the heads' outputs side by side) multiplied by a mask keeping head h —
  how a head-conditional heatmap is made with LXT (masking the other heads' relevance).

Before timing, each nrm figure is compared with LXT's (relative max deviation printed and
recorded: the same quantity is timed). Peak memory: each case's first run in a fresh
subprocess, VmHWM after ``clear_refs`` (or ``ru_maxrss``) above the resident memory of the
built model. Figures are recorded in ``benchmarks/results/transformers.json``, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "transformers.json"
MODELS = ("vit", "gpt2")
TARGETS = {"marginal_to_gradient": 1.3, "marginal_to_lxt": 1.0, "heads_speedup": 5.0}


# -- the models ----------------------------------------------------------------------------------
def build_vit(small: bool, layers: int = 12):
    import torchvision
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    if small:
        model, size = VisionTransformer(32, 16, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32), 32
    else:
        model, size = (torchvision.models.vit_b_16(weights=None) if layers == 12 else  # ViT-B/16's shape, fewer blocks
                       VisionTransformer(224, 16, num_layers=layers, num_heads=12, hidden_dim=768, mlp_dim=3072)), 224
    with torch.no_grad():
        model.heads.head.weight.normal_(0, 0.02)
    model = model.eval().requires_grad_(False)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        target = int(model(x)[0].argmax())
    return model, x, target


def build_gpt2(small: bool, attn: str = "sdpa", tokens: int = 128, layers: int = 12):
    import transformers

    torch.manual_seed(0)
    shape = (dict(n_embd=16, n_layer=2, n_head=2, vocab_size=50) if small
             else dict(n_embd=768, n_layer=layers, n_head=12, vocab_size=50257))
    tokens = 8 if small else tokens
    config = transformers.GPT2Config(n_positions=max(1024, tokens), activation_function="gelu_pytorch_tanh",
                                     attn_implementation=attn, **shape)
    model = transformers.GPT2LMHeadModel(config).eval().requires_grad_(False)
    ids = torch.randint(0, shape["vocab_size"], (1, tokens), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        x = model.get_input_embeddings()(ids).detach()
        target = int(model(inputs_embeds=x, use_cache=False).logits[0, -1].argmax())
    return model, x, target


def build(name: str, args):
    if name == "vit":
        return build_vit(args.small, args.layers)
    return build_gpt2(args.small, tokens=args.tokens, layers=args.layers)


class LastLogits(torch.nn.Module):
    """inputs_embeds → the next-token logits at the last position."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, e):
        return self.model(inputs_embeds=e, use_cache=False).logits[:, -1, :]


# -- LXT -----------------------------------------------------------------------------------------
@contextlib.contextmanager
def lxt_vit_cp():
    """LXT's ``vit_torch.cp_LRP`` map (it patches torch.nn's GELU, LayerNorm and
    MultiheadAttention classes), undone on exit."""
    from lxt.efficient import monkey_patch
    from lxt.efficient.models import vit_torch
    from torch import nn

    classes = (nn.GELU, nn.LayerNorm, nn.MultiheadAttention)
    saved = {c: {a: c.__dict__.get(a) for a in ("forward", "original_forward")} for c in classes}
    try:
        monkey_patch(vit_torch.vision_transformer, vit_torch.cp_LRP)
        yield
    finally:
        for c, attrs in saved.items():
            for a, v in attrs.items():
                if v is None:
                    with contextlib.suppress(AttributeError):
                        delattr(c, a)
                else:
                    setattr(c, a, v)


def lxt_gpt2(model, x, target, checkpointing: bool = False, heads=None):
    """LXT's efficient AttnLRP relevance x · ∂f/∂x of GPT-2. With ``heads`` = (layer, [h, …], H):
    for each head h the relevance of the walks through head h of that layer only — the gradient
    at the layer's output projection input (``c_proj``: the H heads' outputs side by side) masked
    to head h, then carried down to x; a tensor (len([h, …]), 1, T, D). One head per call is one
    LXT run per head; several share the forward pass and the backward pass above the layer."""
    from nrm_verify.peers import lxt as peer

    kept, handles = {}, []
    if heads is not None:
        layer, chosen, n = heads
        handles.append(model.transformer.h[layer].attn.c_proj.register_forward_pre_hook(
            lambda module, args: kept.__setitem__("h", args[0])))
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
    try:
        with peer.patched("gpt2", "attnlrp"):
            xx = x.detach().clone().requires_grad_(True)
            f = model(inputs_embeds=xx, use_cache=False).logits[0, -1, target]
            if heads is None:
                (g,) = torch.autograd.grad(f, xx)
                return (xx * g).detach()
            (above,) = torch.autograd.grad(f, kept["h"], retain_graph=True)
            out = []
            for h in chosen:
                keep = torch.zeros(n, 1, dtype=above.dtype)
                keep[h] = 1.0
                masked = (above.unflatten(-1, (n, -1)) * keep).flatten(-2)
                (g,) = torch.autograd.grad(kept["h"], xx, grad_outputs=masked, retain_graph=True)
                out.append((xx * g).detach())
            return torch.stack(out)
    finally:
        for handle in handles:
            handle.remove()
        if checkpointing:
            model.gradient_checkpointing_disable()
            model.eval()


# -- the cases -----------------------------------------------------------------------------------
def gradient(model, x, target):
    xx = x.detach().clone().requires_grad_(True)
    out = model(xx) if not hasattr(model, "transformer") else model(inputs_embeds=xx, use_cache=False).logits[:, -1]
    (g,) = torch.autograd.grad(out[0, target], xx)
    return g


def nrm_marginal(model, x, target, theta, within=None):
    """f · m_input (or, with ``within``, f · μ(X_input = i, E_k) per event) with every MatMul split θ."""
    import nrm
    from nrm_verify.peers.lxt import conventions

    explained = LastLogits(model).eval() if hasattr(model, "transformer") else model
    with conventions("attnlrp" if theta else "cp"):
        m = nrm.explain(explained, x, target=target)
        heat = m.marginal("input", within=within)
    return heat * m.f.reshape((1,) * (heat.dim() - x.dim()) + (-1,) + (1,) * (x.dim() - 1)), m


def av_layer(model, x, target, layer: int) -> tuple[str, int]:
    """The name of layer ``layer``'s attention output A·V (per-sample shape (heads, T, d)) in nrm's
    capture of GPT-2, and the number of heads."""
    _, m = nrm_marginal(model, x, target, theta=True)
    heads = model.config.n_head
    producers = {n: m.network.blocks[m.layer_index(n)].producer for n in m.layers}
    found = [n for n, p in producers.items() if p is not None and p.layer_kind.name == "MatMul"]
    found = list({m.layer_index(n): n for n in reversed(found)}.values())[::-1]  # one name per layer
    if len(found) != 2 * model.config.n_layer:  # per block Q·Kᵀ, then A·V
        raise RuntimeError(f"expected two matrix products per block, found {found}")
    found = found[1::2]
    d = model.config.n_embd // heads
    if any(tuple(m.layer_shape(n)) != (heads, x.shape[1], d) for n in found):
        raise RuntimeError(f"the A·V layers {found} are not of per-sample shape (heads, T, d)")
    return found[layer], heads


def cases_for(name: str, model, x, target, head_layer: int, needed=None) -> dict:
    """{case: a function running it once}; what a case needs beforehand (GPT-2's eager copy, the
    A·V layer found by a capture) is made here, for the ``needed`` cases (default all)."""
    import nrm

    if name == "vit":
        def lxt_cp():
            with lxt_vit_cp():
                xx = x.detach().clone().requires_grad_(True)
                (g,) = torch.autograd.grad(model(xx)[0, target], xx)
            return xx * g
        return {"gradient": lambda: gradient(model, x, target),
                "nrm_attnlrp": lambda: nrm_marginal(model, x, target, True)[0],
                "nrm_cp": lambda: nrm_marginal(model, x, target, False)[0],
                "lxt_cp": lxt_cp}
    import functools

    import transformers

    @functools.cache
    def eager():  # GPT-2 with attn_implementation="eager", the same weights
        other = transformers.GPT2LMHeadModel(transformers.GPT2Config(**{**model.config.to_dict(),
                                                                        "attn_implementation": "eager"}))
        other.load_state_dict(model.state_dict())
        return other.eval().requires_grad_(False)

    @functools.cache
    def events():  # found by a capture outside the timed runs
        av, _ = av_layer(model, x, target, head_layer)
        return [nrm.At(av, heads=[h]) for h in range(heads)]

    heads = model.config.n_head
    if needed is None or "lxt_eager" in needed:
        eager()
    if needed is None or "heads_nrm" in needed:
        events()
    return {"gradient": lambda: gradient(model, x, target),
            "nrm_attnlrp": lambda: nrm_marginal(model, x, target, True)[0],
            "lxt_sdpa": lambda: lxt_gpt2(model, x, target),
            "lxt_eager": lambda: lxt_gpt2(eager(), x, target),
            "lxt_sdpa_checkpointing": lambda: lxt_gpt2(model, x, target, checkpointing=True),
            "heads_nrm": lambda: nrm_marginal(model, x, target, True, within=events())[0],
            "heads_lxt": lambda: torch.cat([lxt_gpt2(model, x, target, heads=(head_layer, [h], heads))
                                            for h in range(heads)]),
            "heads_lxt_shared": lambda: lxt_gpt2(model, x, target, heads=(head_layer, range(heads), heads))}


def agreement(name: str, runs: dict) -> dict:
    """Runs every case once (the warm-up) and gives the relative max deviation of nrm's relevance
    from LXT's on the benchmark's own case."""
    out = {c: run().detach() for c, run in runs.items()}

    def rel(a, b):
        return float((out[a] - out[b]).abs().max() / out[b].abs().max())

    if name == "vit":
        return {"nrm_cp_vs_lxt_cp": rel("nrm_cp", "lxt_cp")}
    return {"nrm_attnlrp_vs_lxt": rel("nrm_attnlrp", "lxt_sdpa"), "lxt_eager_vs_sdpa": rel("lxt_eager", "lxt_sdpa"),
            "lxt_checkpointing_vs_not": rel("lxt_sdpa_checkpointing", "lxt_sdpa"),
            "heads_nrm_vs_lxt": rel("heads_nrm", "heads_lxt"),
            "heads_lxt_shared_vs_per_head": rel("heads_lxt_shared", "heads_lxt")}


def interleaved(runs: dict, warmup: int, repeats: int) -> dict:
    for _ in range(warmup):
        for run in runs.values():
            run()
    samples, rss = {c: [] for c in runs}, {}
    for _ in range(repeats):
        for c, run in runs.items():
            gc.collect()
            t0, c0 = time.perf_counter(), time.process_time()
            run()
            samples[c].append((time.perf_counter() - t0, time.process_time() - c0))
            rss.setdefault(c, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    # the process's peak resident memory after the case's first timed run (cumulative: it only grows)
    return {c: {"median_s": statistics.median(s for s, _ in v), "min_s": min(s for s, _ in v),
                "runs_s": [round(s, 4) for s, _ in v], "cpu_median_s": statistics.median(c for _, c in v),
                "process_max_rss_after_mib": rss[c]} for c, v in samples.items()}


# -- peak memory in fresh processes --------------------------------------------------------------
def _kib(field: str) -> int | None:
    with contextlib.suppress(OSError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    return None


def child(name: str, case: str, args) -> dict:
    """In this (fresh) process: peak resident memory of the first run of ``case`` above the
    resident memory of the built model and input."""
    torch.set_num_threads(args.threads)
    model, x, target = build(name, args)
    run = cases_for(name, model, x, target, args.head_layer, needed={case})[case]
    gc.collect()
    resident = _kib("VmRSS")
    method = "VmHWM after clear_refs"
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        method = "ru_maxrss"
    run()
    peak = _kib("VmHWM") if method.startswith("VmHWM") else None
    if peak is None or resident is None:
        method, peak = "ru_maxrss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_mib": peak / 1024, "growth_mib": (peak - (resident or 0)) / 1024, "method": method}


def memory(name: str, cases, args) -> dict:
    out = {}
    for case in cases:
        cmd = [sys.executable, __file__, name, "--child", case, "--threads", str(args.threads), "--head-layer",
               str(args.head_layer), "--tokens", str(args.tokens), "--layers", str(args.layers)] + (
                   ["--small"] if args.small else [])
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[case] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


# -- the run -------------------------------------------------------------------------------------
def ratios(name: str, t: dict) -> dict:
    med = {c: v["median_s"] for c, v in t.items()}
    if name == "vit":
        return {"nrm_attnlrp_to_gradient": med["nrm_attnlrp"] / med["gradient"],
                "nrm_cp_to_gradient": med["nrm_cp"] / med["gradient"],
                "nrm_cp_to_lxt_cp": med["nrm_cp"] / med["lxt_cp"]}
    lxt = min((c for c in med if c.startswith("lxt_")), key=med.get)
    return {"nrm_attnlrp_to_gradient": med["nrm_attnlrp"] / med["gradient"], "lxt_best_setting": lxt,
            "nrm_attnlrp_to_lxt_best": med["nrm_attnlrp"] / med[lxt],
            "lxt_best_to_gradient": med[lxt] / med["gradient"],
            "heads_speedup_nrm_over_lxt_per_head": med["heads_lxt"] / med["heads_nrm"],
            "heads_speedup_nrm_over_lxt_shared": med["heads_lxt_shared"] / med["heads_nrm"]}


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*", default=list(MODELS), help=f"of {', '.join(MODELS)} (default both)")
    p.add_argument("--small", action="store_true", help="tiny configurations: a check of the script in seconds")
    p.add_argument("--tokens", type=int, default=128, help="GPT-2's sequence length (default 128)")
    p.add_argument("--layers", type=int, default=12, help="transformer blocks of both models (default 12)")
    p.add_argument("--head-layer", type=int, default=None,
                   help="GPT-2 layer of the head heatmaps (default the middle one: 5 of 0 … 11)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--warmup", type=int, default=0,
                   help="rounds before timing, after the one run of every case that checks the agreement (default 0)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--no-check", action="store_true",
                   help="skip the agreement run (every case once before timing); warm only the cheap cases")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        p.error(f"unknown model {', '.join(unknown)}: choose from {', '.join(MODELS)}")
    for flag in ("tokens", "layers", "threads", "repeats"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    if args.warmup < 0:
        p.error(f"--warmup must be 0 or more, got {args.warmup}")
    layers = 2 if args.small else args.layers
    args.head_layer = layers // 2 - 1 if args.head_layer is None else args.head_layer
    if not 0 <= args.head_layer < layers:
        p.error(f"--head-layer must be in 0 … {layers - 1}, got {args.head_layer}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.child:
        print(json.dumps(child(args.models[0], args.child, args)))
        return 0
    torch.set_num_threads(args.threads)
    args.uptime_at_start = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    rows = {}
    for name in args.models:
        model, x, target = build(name, args)
        runs = cases_for(name, model, x, target, args.head_layer)
        if args.no_check:  # warm the cheap cases only (imports, LXT's patching); nrm's ran in cases_for or runs cold
            for case in [c for c in runs if not c.startswith(("nrm", "heads"))]:
                runs[case]()
        row = {"input_shape": list(x.shape), "target": target,
               "agreement": {} if args.no_check else agreement(name, runs),
               "times": interleaved(runs, args.warmup, args.repeats)}
        row["ratios"] = ratios(name, row["times"])
        if not args.no_memory:
            row["memory"] = memory(name, list(runs), args)
        rows[name] = row
        print(f"{name} {tuple(x.shape)}, batch 1, {args.threads} threads, median of {args.repeats}:")
        for case, t in row["times"].items():
            mem = f"  peak +{row['memory'][case]['growth_mib']:.0f} MiB" if "memory" in row else ""
            print(f"  {case:24s} {t['median_s'] * 1e3:9.1f} ms{mem}")
        print("  " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in
                               {**row["ratios"], **row["agreement"]}.items()), flush=True)
        write(args, rows)
    return 0


def write(args, rows: dict) -> None:
    """The figures so far (after each model: a run cut short keeps the models it finished)."""
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load": os.getloadavg(),
            "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
            "torch": torch.__version__, "threads": args.threads, "repeats": args.repeats, "warmup": args.warmup,
            "small": args.small, "layers": args.layers, "tokens": args.tokens, "head_layer": args.head_layer,
            "cpus": os.cpu_count(), "uptime_at_start": args.uptime_at_start, "targets": TARGETS}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "models": rows}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
