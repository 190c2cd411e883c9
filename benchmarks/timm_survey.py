"""What a new user with a timm model meets: each model of a list of timm architectures (random
weights, eval mode, one image, target = the arg-max logit) explained under LRP-ε, with the
model's f and L1 at the input checked, or the first line of the refusal recorded.

Run from the peer environment (timm is not a dependency of nrm-verify)::

    pip install --no-deps timm          # into .venv-peers; pure Python
    PYTHONPATH=. .venv-peers/bin/python benchmarks/timm_survey.py [--dtype float64] [MODEL ...]

Writes ``benchmarks/results/timm_survey.json`` and prints one row per model.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from pathlib import Path

import torch

import nrm

RESULTS = Path(__file__).parent / "results" / "timm_survey.json"

MODELS = {  # name → input size (the smallest the model takes, or its fixed size)
    "resnet18": 64, "resnet50d": 64, "seresnet18": 64, "skresnet18": 64, "resnest14d": 64, "resnext26ts": 64,
    "cspresnet50": 64, "cspdarknet53": 64,
    "darknet53": 64, "dla34": 64, "dpn68": 64, "densenet121": 64, "vgg11": 64, "repvgg_a0": 64, "regnetx_002": 64,
    "rexnet_100": 64, "efficientnet_b0": 64, "tinynet_a": 64, "mobilenetv3_small_100": 64,
    "mobilenetv4_conv_small": 64, "lcnet_050": 64, "ghostnet_100": 64, "hrnet_w18_small": 64, "inception_v3": 75,
    "xception41": 64, "nf_resnet26": 64, "resnetv2_50x1_bit": 64, "convnext_atto": 64, "convnextv2_atto": 64,
    "poolformer_s12": 64, "poolformerv2_s12": 64, "edgenext_xx_small": 64, "fastvit_t8": 64, "hgnet_tiny": 64,
    "efficientvit_b0": 64, "mixer_s16_224": 224, "resmlp_12_224": 224, "gmlp_s16_224": 224,
    "vit_tiny_patch16_224": 224, "deit_tiny_patch16_224": 224, "cait_xxs24_224": 224, "pit_ti_224": 224,
    "xcit_nano_12_p16_224": 224, "swin_tiny_patch4_window7_224": 224, "levit_128s": 224, "mobilevit_xxs": 64,
    "efficientformer_l1": 224, "eva02_tiny_patch14_224": 224, "beit_base_patch16_224": 224,
    "coat_lite_tiny": 224, "twins_pcpvt_small": 224, "sequencer2d_s": 224, "gcvit_xxtiny": 224,
    # added 2026-12-07 (a stranger's sweep of architectures no test names), at each model's own input size
    "mambaout_femto": 224, "hiera_tiny_224": 224, "nextvit_small": 224, "repvit_m0_9": 224, "efficientvit_m0": 224,
    "tresnet_m": 224, "volo_d1_224": 224, "crossvit_tiny_240": 240, "convit_tiny": 224, "tnt_s_patch16_224": 224,
    "nest_tiny": 224, "mvitv2_tiny": 224, "inception_next_tiny": 224, "rdnet_tiny": 224, "starnet_s1": 224,
    "vitamin_small_224": 224, "ghostnetv2_100": 224, "selecsls42b": 224, "res2net50_14w_8s": 224,
    "cs3darknet_s": 256, "gernet_s": 224, "visformer_tiny": 224, "pvt_v2_b0": 224, "focalnet_tiny_srf": 224,
    "davit_tiny": 224, "tiny_vit_5m_224": 224, "maxvit_nano_rw_256": 256, "coatnet_nano_rw_224": 224,
    "efficientformerv2_s0": 224, "mobileone_s0": 224, "halonet26t": 256, "botnet26t_256": 256,
    "lambda_resnet26t": 256, "eca_nfnet_l0": 224, "regnetz_b16": 224, "repghostnet_050": 224, "hgnetv2_b0": 224,
    "sam2_hiera_tiny": 896, "vit_relpos_small_patch16_224": 224, "flexivit_small": 240,
    "deit3_small_patch16_224": 224, "shvit_s1": 224, "fasternet_t0": 224, "csatv2": 512,
}


def survey(name: str, size: int, dtype: torch.dtype) -> dict:
    import timm

    row: dict = {"model": name, "size": size}
    torch.manual_seed(0)
    try:
        model = timm.create_model(name, pretrained=False).eval().to(dtype)
    except Exception as e:  # a model this timm cannot build: not nrm's
        row.update(status="not built", reason=f"{type(e).__name__}: {e}".splitlines()[0][:200])
        return row
    row["parameters_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
    x = torch.randn(1, 3, size, size, dtype=dtype, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x)
        if not bool(y.any()):  # a zero-initialized classifier (MLP-Mixer, gMLP, ResMLP): redraw the zero parameters
            for p in model.parameters():
                if not bool(p.any()):
                    p.normal_(0, 0.02, generator=torch.Generator().manual_seed(2))
            row["note"] = "zero-initialized parameters redrawn N(0, 0.02²)"
            y = model(x)
    target = int(y[0].argmax())
    start = time.perf_counter()
    try:
        m = nrm.explain(model, x, target=target, rules=nrm.rules.Epsilon(1e-6))
        heat = m.marginal("input")
    except nrm.NRMError as e:
        row.update(status="refused", error=type(e).__name__, reason=str(e).splitlines()[0][:300],
                   detail=" | ".join(str(e).splitlines()[1:4])[:400])
        return row
    except Exception as e:
        row.update(status="crashed", error=type(e).__name__, reason=str(e).splitlines()[0][:300] if str(e) else "",
                   where=traceback.format_exc().splitlines()[-3][:200])
        return row
    row["seconds"] = round(time.perf_counter() - start, 2)
    f = float(m.f[0])
    row["f_relative_error"] = abs(f - float(y[0, target])) / max(abs(float(y[0, target])), 1e-30)
    total = float(heat.sum() + m.absorbed("input")[0] + (0 if m.network.sequential else m.bypassing("input")[0]))
    row.update(status="explained", l1_input=abs(total - 1))
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*", default=list(MODELS))
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    rows = []
    for name in args.models:
        row = survey(name, MODELS.get(name, 224), dtype)
        rows.append(row)
        what = (f"L1 {row['l1_input']:.1e}  f {row['f_relative_error']:.1e}  {row['seconds']} s"
                if row["status"] == "explained" else f"{row.get('error', '')}: {row.get('reason', '')}")
        print(f"{name:32s} {row['status']:10s} {what}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"dtype": args.dtype, "torch": torch.__version__, "rows": rows}, indent=1))
    explained = sum(r["status"] == "explained" for r in rows)
    print(f"{explained} of {len(rows)} explained")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
