"""Transformer families at real (or real-ish) size through ``nrm.explain`` — issue 14's opt-in larger run.

Run from ``.venv-peers`` (torchvision and transformers are installed there):

    PYTHONPATH=. .venv-peers/bin/python benchmarks/zoo_transformers.py                  # every family
    PYTHONPATH=. .venv-peers/bin/python benchmarks/zoo_transformers.py gpt2 llama --timeout 480
    PYTHONPATH=. .venv-peers/bin/python benchmarks/zoo_transformers.py --table           # README table

Each model is built with seeded random weights (no download), in float64 and eval mode, batch 1:

* ``vit_b_16``: torchvision, 224×224 (its zero-initialized head drawn N(0, 0.02²), seeded);
* ``maxvit_t``: torchvision, 224×224;
* ``gpt2``: ``GPT2LMHeadModel`` with GPT-2 small's shape (12 layers, hidden 768, 12 heads,
  vocabulary 50257), its default activation ``gelu_new`` (read as one GELU), 32 tokens;
* ``bert``: ``BertForSequenceClassification`` with BERT-base's shape (12 layers, 768, 12 heads,
  intermediate 3072, 2 labels), 32 tokens of which the last 2 are padding (``attention_mask``);
* ``llama``, ``qwen2``, ``mistral``, ``phi``: causal LMs of one Llama-like shape (8 layers, hidden
  512, 8 heads, 4 key/value heads — Phi: 8 — intermediate 1376, vocabulary 32000), 32 tokens.
  Their RMSNorms compute in float32 whatever the model's dtype (read widened since 2026-12-07):
  here the same formula in the input's dtype replaces it (as ``peer_tests/test_hf_families.py``).

transformers models are explained at ``inputs_embeds`` (the embedding of seeded token ids), the
target being the last position's logit (an LM) or the class logit; the images' target is the
arg-max logit. Each is captured with ``check="full"`` (every map reproduces the model's values)
under nrm's defaults (LRP-0) and, for the transformers LMs and BERT, also under LXT's AttnLRP
conventions (:func:`nrm_verify.peers.lxt.conventions`). Recorded per model and convention: L1's
worst deviation over every layer (:func:`nrm_verify.laws.normalization`), |f − the model's
logit|, the number of layers, the parameter count and the seconds of ``explain`` and of L1.

Each model runs in a child process with a time limit (``--timeout``); ``NRM_ZOO_THREADS`` sets
its torch threads (default 1), ``--jobs`` how many children run at once. Rows are merged into
``benchmarks/results/zoo_transformers.json`` (a model run again replaces its row).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "zoo_transformers.json"
VISION = ["vit_b_16", "maxvit_t"]
HF = ["gpt2", "bert", "llama", "qwen2", "mistral", "phi"]
MODELS = VISION + HF
TOKENS = 32
PADDED = 2
LLAMA_LIKE = dict(vocab_size=32000, hidden_size=512, num_hidden_layers=8, num_attention_heads=8,
                  intermediate_size=1376, max_position_embeddings=256)


def first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".splitlines()[0][:300]


def build(name: str):
    """(wrapped model taking the input, input, target, parameter count, description)."""
    import torch

    D = torch.float64
    torch.manual_seed(0)
    if name in VISION:
        import torchvision

        kwargs = {"weights": None}
        if name.startswith("vit_"):
            kwargs.update(image_size=224)
        model = getattr(torchvision.models, name)(**kwargs).to(D).eval()
        if name.startswith("vit_"):
            with torch.no_grad():
                model.heads.head.weight.normal_(0.0, 0.02, generator=torch.Generator().manual_seed(2))
        x = torch.randn(1, 3, 224, 224, dtype=D, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            target = int(model(x).argmax(1))
        return model, x, target, sum(p.numel() for p in model.parameters()), "224×224"

    import transformers

    mask = None
    if name == "gpt2":
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=12, n_embd=768, n_head=12))
    elif name == "bert":
        hf = transformers.BertForSequenceClassification(transformers.BertConfig(
            num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072, num_labels=2))
        mask = torch.ones(1, TOKENS, dtype=torch.long)
        mask[0, -PADDED:] = 0
    elif name == "llama":
        hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA_LIKE, num_key_value_heads=4))
    elif name == "qwen2":
        hf = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**LLAMA_LIKE, num_key_value_heads=4))
    elif name == "mistral":
        hf = transformers.MistralForCausalLM(transformers.MistralConfig(**LLAMA_LIKE, num_key_value_heads=4))
    elif name == "phi":
        hf = transformers.PhiForCausalLM(transformers.PhiConfig(**LLAMA_LIKE))
    else:
        raise ValueError(name)
    hf = hf.to(D).eval()
    ids = torch.randint(2, 1000, (1, TOKENS), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        e = hf.get_input_embeddings()(ids).detach()

    class Logits(torch.nn.Module):
        def __init__(self, model, mask):
            super().__init__()
            self.model = model
            if mask is None:
                self.mask = None
            else:
                self.register_buffer("mask", mask)

        def forward(self, e):
            out = self.model(inputs_embeds=e, attention_mask=self.mask).logits
            return out[:, -1, :] if out.dim() == 3 else out

    desc = f"{TOKENS} tokens" + (f", {PADDED} padded" if mask is not None else "")
    return Logits(hf, mask).eval(), e, 1, sum(p.numel() for p in hf.parameters()), desc


def child(name: str) -> dict:
    import torch

    import nrm
    from nrm_verify import laws
    from nrm_verify.peers import lxt as peer
    from nrm_verify.peers.base import rms_norms_in_input_dtype

    model, x, target, params, desc = build(name)
    row = {"model": name, "input": desc, "params": params, "target": target, "conventions": {}}
    variants = {"default": contextlib.nullcontext}
    if name in HF:
        variants["attnlrp"] = lambda: peer.conventions("attnlrp")
    for label, ctx in variants.items():
        try:
            with rms_norms_in_input_dtype(model), ctx():
                start = time.perf_counter()
                m = nrm.explain(model, x, target, check="full")
                seconds = time.perf_counter() - start
                with torch.no_grad():
                    f = float(model(x)[0, target])
                row["conventions"][label] = {  # recorded before L1, which may not finish in time
                    "accepted": True, "layers": len(m.layers), "f": float(m.f[0]),
                    "f_error": abs(float(m.f[0]) - f), "seconds": seconds, "l1": None}
                print(json.dumps({"partial": row}), flush=True)
                start = time.perf_counter()
                l1 = laws.normalization(m)
                l1_seconds = time.perf_counter() - start
            row["conventions"][label] = {
                "accepted": True, "layers": len(m.layers), "l1": float(l1.deviation), "l1_holds": l1.holds,
                "f": float(m.f[0]), "f_error": abs(float(m.f[0]) - f), "seconds": seconds, "l1_seconds": l1_seconds}
        except Exception as e:  # noqa: BLE001 — the refusal is the result
            row["conventions"][label] = {"accepted": False, "error": first_line(e)}
        print(json.dumps({"partial": row}), flush=True)
    return row


def run_child(name: str, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child", name]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        lines = [json.loads(line)["partial"] for line in out.splitlines() if line.startswith('{"partial"')]
        row = lines[-1] if lines else {"model": name}
        row["failed"] = f"not finished within the time limit of {timeout:.0f} s"
        return row
    wall = time.perf_counter() - start
    lines = [line for line in out.splitlines() if line.startswith("{") and not line.startswith('{"partial"')]
    if proc.returncode != 0 or not lines:
        tail = (err.strip().splitlines() or ["(no output)"])[-1][:300]
        return {"model": name, "failed": f"exit {proc.returncode}: {tail}"}
    row = json.loads(lines[-1])
    row["wall"] = wall
    return row


def table(rows: list[dict]) -> str:
    out = ["| model | params | input | conventions | layers | L1 worst | \\|f − logit\\| | explain s | L1 s |",
           "|---|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        params = f"{r['params'] / 1e6:.1f} M" if "params" in r else ""
        convs = r.get("conventions", {})
        for label, c in convs.items():
            if c["accepted"] and c.get("l1") is None:
                out.append(f"| {r['model']} | {params} | {r['input']} | {label} | {c['layers']} | not finished "
                           f"| {c['f_error']:.1e} | {c['seconds']:.1f} | |")
            elif c["accepted"]:
                out.append(f"| {r['model']} | {params} | {r['input']} | {label} | {c['layers']} | {c['l1']:.1e} "
                           f"| {c['f_error']:.1e} | {c['seconds']:.1f} | {c['l1_seconds']:.1f} |")
            else:
                out.append(f"| {r['model']} | {params} | {r['input']} | {label} | **refused**: {c['error']} "
                           "| | | | |")
        if "failed" in r:
            out.append(f"| {r['model']} | {params} | {r.get('input', '')} | | **{r['failed']}** | | | | |")
    return "\n".join(out)


def load(path: Path) -> list[dict]:
    return json.loads(path.read_text())["rows"] if path.is_file() else []


def save(path: Path, rows: list[dict]) -> None:
    merged = {r["model"]: r for r in load(path)}
    merged.update({r["model"]: r for r in rows})
    order = {name: i for i, name in enumerate(MODELS)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rows": sorted(merged.values(), key=lambda r: order.get(r["model"], len(order)))},
                               indent=1))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*", help=f"model names (default: {' '.join(MODELS)})")
    p.add_argument("--timeout", type=float, default=480, help="seconds per model (default 480)")
    p.add_argument("--jobs", type=int, default=1, help="children at once (default 1)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--table", action="store_true", help="print the table of the results file and stop")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        import torch

        torch.set_num_threads(int(os.environ.get("NRM_ZOO_THREADS", "1")))
        print(json.dumps(child(args.child)), flush=True)
        return 0
    if args.table:
        if not args.out.is_file():
            p.error(f"no results at {args.out}: run the zoo first")
        print(table(load(args.out)))
        return 0
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        p.error(f"not a model of this run: {', '.join(unknown)} (one of {', '.join(MODELS)})")
    import torch
    import torchvision
    import transformers

    meta = {"torch": torch.__version__, "torchvision": torchvision.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "cpus": os.cpu_count(),
            "threads": int(os.environ.get("NRM_ZOO_THREADS", "1")), "jobs": args.jobs}
    rows, lock = [], threading.Lock()

    def one(name):
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        load_start = os.getloadavg()
        row = run_child(name, args.timeout)
        row.update(meta, started=started, load_start=load_start, load_end=os.getloadavg())
        with lock:
            rows.append(row)
            save(args.out, [row])  # after each model, first: a run that is stopped keeps what it did
            print(table([row]).split("\n", 2)[-1], flush=True)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(one, args.models or MODELS))
    order = {name: i for i, name in enumerate(MODELS)}
    rows.sort(key=lambda r: order[r["model"]])
    print()
    print(table(rows))
    return 0 if all("failed" not in r and all(c["accepted"] for c in r["conventions"].values()) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
