"""Which of torch.nn's modules and of torch's common tensor functions ``nrm.explain`` reads, as
a new user meets them: each one placed between two learned layers of a small float64 model
(seeded weights, eval mode, batch 2), explained for output 0 with LRP-0. A row is "explained"
(with the L1 residual at every layer) or "refused" (the error's name and its first line).

    .venv/bin/python benchmarks/torch_nn_survey.py [--out benchmarks/results/torch_nn_survey.json]

Recorded, never asserted: the test suite covers each kind that reads these (tests/test_*.py);
this is the survey that found the ones added on 2026-12-07 (docs/layers.md).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import nrm
from nrm_verify import laws

RESULTS = Path(__file__).resolve().parent / "results" / "torch_nn_survey.json"

# modules after conv → relu on (B, 3, 4, 4) images (features flattened into a lazy linear head)
IMAGE_MODULES = {
    "ReflectionPad2d": lambda: nn.ReflectionPad2d(1), "ReplicationPad2d": lambda: nn.ReplicationPad2d(1),
    "ZeroPad2d": lambda: nn.ZeroPad2d(1), "CircularPad2d": lambda: nn.CircularPad2d(1),
    "ConstantPad2d": lambda: nn.ConstantPad2d(1, 0.5), "PixelUnshuffle": lambda: nn.PixelUnshuffle(2),
    "PixelShuffle": lambda: nn.PixelShuffle(2), "ChannelShuffle": lambda: nn.ChannelShuffle(2),
    "LPPool2d": lambda: nn.LPPool2d(2, 2), "FractionalMaxPool2d": lambda: nn.FractionalMaxPool2d(2, output_size=2),
    "AdaptiveMaxPool2d": lambda: nn.AdaptiveMaxPool2d(2), "AvgPool2d": lambda: nn.AvgPool2d(2),
    "MaxPool2d (dilation 2)": lambda: nn.MaxPool2d(2, dilation=2),
    "Upsample (bilinear)": lambda: nn.Upsample(scale_factor=2, mode="bilinear"),
    "Upsample (nearest)": lambda: nn.Upsample(scale_factor=2),
    "InstanceNorm2d (affine)": lambda: nn.InstanceNorm2d(4, affine=True),
    "GroupNorm": lambda: nn.GroupNorm(2, 4), "LocalResponseNorm": lambda: nn.LocalResponseNorm(2),
    "Dropout2d": lambda: nn.Dropout2d(), "AlphaDropout": lambda: nn.AlphaDropout(), "Identity": lambda: nn.Identity(),
    "RMSNorm (last dim)": lambda: nn.RMSNorm(4), "LayerNorm (last dim)": lambda: nn.LayerNorm(4),
    "Softmax2d": lambda: nn.Softmax2d(), "LogSigmoid": lambda: nn.LogSigmoid(), "RReLU": lambda: nn.RReLU(),
    "CELU": lambda: nn.CELU(), "GELU": lambda: nn.GELU(), "SiLU": lambda: nn.SiLU(),
}
# modules after linear on (B, 4) vectors
VECTOR_MODULES = {
    "Softshrink": lambda: nn.Softshrink(), "Softsign": lambda: nn.Softsign(), "Tanhshrink": lambda: nn.Tanhshrink(),
    "Softmin": lambda: nn.Softmin(dim=1), "Hardshrink": lambda: nn.Hardshrink(),
    "Threshold": lambda: nn.Threshold(0.1, 0.0),
    "GLU": lambda: nn.GLU(), "LogSoftmax": lambda: nn.LogSoftmax(dim=1), "Unflatten": lambda: nn.Unflatten(1, (2, 2)),
}
# functions on h (B, 3, 4) between two linear layers
FUNCTIONS = {
    "torch.flip": lambda h: torch.flip(h, [2]), "torch.cumsum": lambda h: torch.cumsum(h, 2),
    "Tensor.expand": lambda h: h[:, :, :1].expand(-1, -1, 4),
    "torch.where (constant mask)": lambda h: torch.where(torch.arange(4) > 1, h, torch.zeros(())),
    "Tensor.masked_fill": lambda h: h.masked_fill(torch.arange(4) == 0, 0.0),
    "torch.gather (constant index)":
        lambda h: torch.gather(h, 2, torch.tensor([[[0, 2, 2, 1]]]).expand(h.shape[0], 3, 4)),
    "torch.bmm": lambda h: torch.bmm(h, h.transpose(1, 2))[:, :, :3].repeat(1, 1, 2)[:, :, :4],
    "F.cosine_similarity": lambda h: F.cosine_similarity(h, h.roll(1, 2), dim=1).unsqueeze(1).expand(-1, 3, -1),
    "x * 2 - 1": lambda h: h * 2 - 1, "1 - x": lambda h: 1 - h, "x / 3": lambda h: h / 3,
    "Tensor.pow(2)": lambda h: h.pow(2), "sqrt(x·x + 1)": lambda h: (h * h + 1).sqrt(),
    "Tensor.clamp": lambda h: h.clamp(-0.5, 0.5), "Tensor.abs": lambda h: h.abs(),
    "x − mean": lambda h: h - h.mean(2, keepdim=True), "x / (std + 1)": lambda h: h / (h.std(2, keepdim=True) + 1),
    "Tensor.max(dim)": lambda h: h.max(2, keepdim=True).values.expand(-1, -1, 4),
    "torch.logsumexp": lambda h: torch.logsumexp(h, 2, keepdim=True).expand(-1, -1, 4),
    "Tensor.amax": lambda h: h.amax(2, keepdim=True).expand(-1, -1, 4),
    "torch.einsum (row norms)": lambda h: torch.einsum("bij,bij->bi", h, h).unsqueeze(-1).expand(-1, -1, 4),
    "Tensor.sum (all)": lambda h: h.sum((1, 2), keepdim=True).expand(-1, 3, 4),
    "Tensor.narrow": lambda h: torch.cat([h.narrow(2, 0, 2), h.narrow(2, 2, 2)], 2),
    "torch.stack": lambda h: torch.stack([h, h], 1).sum(1),
    "torch.split (list)": lambda h: torch.cat(list(torch.split(h, [1, 3], 2))[::-1], 2),
    "Tensor.unbind": lambda h: torch.stack(h.unbind(1), 1), "Tensor.movedim": lambda h: h.movedim(1, 2).movedim(2, 1),
    "Tensor.contiguous": lambda h: h.transpose(1, 2).contiguous().transpose(1, 2),
    "torch.lerp": lambda h: torch.lerp(h, torch.zeros_like(h), 0.3),
    "x · sign(x) (detached)": lambda h: h * torch.sign(h.detach()),
    "torch.erf": lambda h: torch.erf(h), "F.softplus": lambda h: F.softplus(h), "F.hardtanh": lambda h: F.hardtanh(h),
    "x · sigmoid(x)": lambda h: h * torch.sigmoid(h), "torch.diff": lambda h: torch.diff(h, dim=2, prepend=h[:, :, :1]),
    "torch.tril": lambda h: torch.tril(h), "torch.triu": lambda h: torch.triu(h, 1),
    "F.dropout (eval)": lambda h: F.dropout(h, 0.5, training=False),
    "F.interpolate (linear)": lambda h: F.interpolate(h, size=4, mode="linear"),
    "F.max_pool1d": lambda h: F.max_pool1d(h, 2, 2).repeat(1, 1, 2),
    "F.avg_pool1d": lambda h: F.avg_pool1d(h, 2, 1).repeat(1, 1, 2)[:, :, :4],
}


class Between(nn.Module):
    """first → relu → op → flatten → head."""

    def __init__(self, first: nn.Module, op, head: nn.Module, shape: tuple):
        super().__init__()
        self.first, self.head, self.shape = first, head, shape
        self.op = op if isinstance(op, nn.Module) else None
        self.fn = None if isinstance(op, nn.Module) else op

    def forward(self, x):
        h = torch.relu(self.first(x)).reshape((x.shape[0],) + self.shape)
        h = self.op(h) if self.op is not None else self.fn(h)
        return self.head(h.flatten(1))


def _case(kind: str, op) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    if kind == "image":
        model, x = Between(nn.Conv2d(3, 4, 3, padding=1), op(), nn.LazyLinear(2), (4, 4, 4)), torch.randn(2, 3, 4, 4)
    elif kind == "vector":
        model, x = Between(nn.Linear(4, 4), op(), nn.LazyLinear(2), (4,)), torch.randn(2, 4)
    else:
        model, x = Between(nn.Linear(4, 12), op, nn.LazyLinear(2), (3, 4)), torch.randn(2, 4)
    model(x)  # the lazy head takes its shape
    return model.eval().double(), x.double()


def survey() -> list[dict]:
    rows = []
    groups = [("image", IMAGE_MODULES), ("vector", VECTOR_MODULES), ("function", FUNCTIONS)]
    for kind, table in groups:
        for name, op in table.items():
            row = {"name": name, "kind": "function" if kind == "function" else "module"}
            try:
                model, x = _case(kind, op)
            except Exception as e:  # noqa: BLE001 — torch itself refuses the configuration
                rows.append({**row, "status": "torch refuses", "detail": f"{type(e).__name__}: {str(e)[:200]}"})
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    m = nrm.explain(model, x, target=0)
                row.update(status="explained", l1_worst=float(laws.normalization(m).deviation))
            except nrm.NRMError as e:
                lines = str(e).splitlines()
                detail = (lines[1] if len(lines) > 1 else lines[0]).strip()
                row.update(status="refused", error=type(e).__name__, detail=detail[:300])
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows = survey()
    for r in rows:
        shown = f"L1 {r['l1_worst']:.1e}" if r["status"] == "explained" else r.get("error", r.get("detail", ""))
        print(f"{r['kind']:8s} {r['name']:32s} {r['status']:13s} {shown}")
    counts = {s: sum(r["status"] == s for r in rows) for s in ("explained", "refused", "torch refuses")}
    print(f"{len(rows)} rows: {counts} in {time.perf_counter() - start:.1f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"torch": torch.__version__, "nrm": nrm.__version__,
                                    "date": time.strftime("%Y-%m-%d %H:%M"), "counts": counts, "rows": rows},
                                   indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
