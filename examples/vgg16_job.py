"""Explain a VGG16-shaped network with the Normalized Relevance Measure.

    python examples/vgg16_job.py                       # 224×224, preset EpsilonGammaFlat
    python examples/vgg16_job.py --size 64 --rules EpsilonPlusFlat

The network has torchvision's VGG16 layout with seeded random weights
(:func:`nrm_verify.zoo.models.vgg16`, nothing is downloaded) and the input is a smooth seeded
image. The job prints

1. per layer (the input, every convolution, pooling and linear layer) the mass on the
   layer's real neurons Σ_j m_l(j), the mass of its absorber m_l(⊥_l), and their sum,
   which is 1 by law L1 (NRM-SPEC §4); the job fails (exit 1) when the largest deviation,
   relative to the size of what was added up on the way down (max over layers of
   Σ_j |m_l(j)| + |m_l(⊥)|, at least 1), exceeds the tolerance (1e-4 in float32, 1e-10 in
   float64);
2. the channel-by-channel joint μ(X_features.21 ∈ channel i, X_features.28 ∈ channel k):
   its shape, total, the row-sum check of law L3 and the five largest channel pairs;
3. the conditional μ(X_input ∈ centre | X_features.28 ∈ channel c) for the most relevant
   channel c of features.28, with its complement (they add up to 1, law L2);

then the wall time of each part and a final ``OK`` line.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

import nrm
from nrm.presets import PRESETS
from nrm_verify.zoo.models import seeded_image, vgg16

JOINT_LAYERS = ("features.21", "features.28")
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-10}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224, help="input height and width (>= 32; default 224)")
    parser.add_argument("--rules", default="EpsilonGammaFlat",
                        choices=list(PRESETS),
                        help="a preset of nrm.presets (default EpsilonGammaFlat); EpsilonGammaBox uses the box [-2, 2]")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and of the image (default 0)")
    parser.add_argument("--target", type=int, default=None, help="output index to explain (default: the argmax)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    return parser.parse_args(argv)


def make_rules(name: str):
    if name == "EpsilonGammaBox":
        return PRESETS[name](-2.0, 2.0)  # seeded_image lies in [-2, 2]
    return PRESETS[name]()


def layer_table(measure: nrm.Measure) -> tuple[list[tuple], float]:
    """One row per layer of the proper FFNN: (name, module, shape, real mass, absorbed, sum),
    and the largest |sum − 1| relative to the largest Σ_j |m_l(j)| + |m_l(⊥)| of any layer
    (float cancellation is of the size of the terms added on the way down, which rules with
    negative shares such as αβ make large; nrm_verify.laws measures L1 the same way)."""
    rows = []
    worst, size = 0.0, 1.0
    for block in measure.network.blocks:
        name = block.name
        step = block.producer
        module = "input" if step is None else type(step.module or step.layer_kind).__name__
        marginal = measure.marginal(name).reshape(measure.engine.batch, -1)
        real = marginal.sum(1)[0].item()
        absorbed = measure.absorbed(name)[0].item()
        total = real + absorbed
        size = max(size, marginal.abs().sum(1)[0].item() + abs(absorbed))
        worst = max(worst, abs(total - 1.0))
        rows.append((name, module, measure.layer_shape(name), real, absorbed, total))
    return rows, worst / size


def print_table(rows: list[tuple]) -> None:
    header = f"{'layer':<14} {'module':<18} {'shape':<16} {'Σ_j m_l(j)':>14} {'m_l(⊥)':>14} {'sum':>14}"
    print(header)
    print("-" * len(header))
    for name, module, shape, real, absorbed, total in rows:
        shown = "×".join(str(s) for s in shape)
        print(f"{name:<14} {module:<18} {shown:<16} {real:>14.8f} {absorbed:>14.8f} {total:>14.8f}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.size < 32:
        print(f"--size must be at least 32 (VGG16 halves the image five times), got {args.size}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    tolerance = TOLERANCE[dtype]

    t0 = time.perf_counter()
    model = vgg16(seed=args.seed, dtype=dtype)
    x = seeded_image(args.size, seed=args.seed, dtype=dtype)
    with torch.no_grad():
        logits = model(x)
    target = int(logits[0].argmax()) if args.target is None else args.target
    rules = make_rules(args.rules)
    t_build = time.perf_counter() - t0

    print(f"NRM of a VGG16-shaped network (seeded weights, seed {args.seed}), input 1×3×{args.size}×{args.size} "
          f"{args.dtype}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"rules: {rules!r}")

    t0 = time.perf_counter()
    measure = nrm.explain(model, x, target=target, rules=rules)
    t_explain = time.perf_counter() - t0
    print(f"target class {target}: f_c(x) = {measure.f[0].item():.6g}")
    print()

    # 1. normalization at every layer (L1)
    t0 = time.perf_counter()
    rows, worst = layer_table(measure)
    t_table = time.perf_counter() - t0
    print("Mass per layer: real neurons, absorber, and their sum (law L1: the sum is 1)")
    print_table(rows)
    print(f"max |Σ_j m_l(j) + m_l(⊥) − 1| / max(1, max_l Σ_j |m_l(j)| + |m_l(⊥)|) over {len(rows)} layers = "
          f"{worst:.3e} (tolerance {tolerance:.0e})")
    print()

    # 2. a channel-by-channel joint between two convolutions
    low, high = JOINT_LAYERS
    t0 = time.perf_counter()
    joint = measure.joint(low, high, by="channel")[0]  # (channels of low, channels of high)
    t_joint = time.perf_counter() - t0
    low_channels = measure.marginal(low)[0].reshape(joint.shape[0], -1).sum(1)
    # walks through a real neuron of features.21 pass through a real neuron of features.28
    # (the absorber chain only feeds absorbers), so the row sums are features.21's marginal (L3)
    row_check = (joint.sum(1) - low_channels).abs().max().item()
    print(f"Joint μ(X_{low} ∈ channel i, X_{high} ∈ channel k)")
    print(f"  shape {tuple(joint.shape)}, total {joint.sum().item():.8f}, "
          f"max |row sum − marginal of {low}| = {row_check:.3e}")
    flat = joint.flatten()
    top = torch.topk(flat, 5).indices.tolist()
    print(f"  top 5 channel pairs ({low} channel i, {high} channel k):")
    for rank, idx in enumerate(top, 1):
        i, k = divmod(idx, joint.shape[1])
        print(f"    {rank}. i = {i:3d}, k = {k:3d}: {flat[idx].item():.6e}")
    print()

    # 3. a conditional: where in the image does the most relevant channel of features.28 look?
    t0 = time.perf_counter()
    high_channels = measure.marginal(high)[0].reshape(joint.shape[1], -1).sum(1)
    c = int(high_channels.argmax())
    h = w = args.size
    centre = torch.zeros(measure.layer_shape("input"), dtype=torch.bool)
    centre[:, h // 4: h - h // 4, w // 4: w - w // 4] = True
    given = nrm.At(high, channels=[c])
    inside = nrm.At("input", mask=centre)
    p_centre = measure.conditional(inside, given=given)[0].item()
    p_complement = measure.conditional(~inside, given=given)[0].item()
    p_absorbed = measure.conditional(nrm.At("input", index=[], absorber=True), given=given)[0].item()
    t_conditional = time.perf_counter() - t0
    additivity = abs(p_centre + p_complement - 1.0)
    print(f"Conditional on the most relevant channel of {high}: c = {c} (m = {high_channels[c].item():.6f})")
    print(f"  μ(input ∈ centre {h // 2}×{w // 2} | {high} channel {c}) = {p_centre:.8f}")
    print(f"  μ(complement              | {high} channel {c}) = {p_complement:.8f}  "
          f"(of which ⊥_input: {p_absorbed:.8f})")
    print(f"  sum − 1 = {p_centre + p_complement - 1.0:.3e}")
    print()

    print(f"wall time: build {t_build:.2f} s, explain {t_explain:.2f} s, layer table {t_table:.2f} s, "
          f"joint {t_joint:.2f} s, conditional {t_conditional:.2f} s")
    failures = []
    if not worst <= tolerance:
        failures.append(f"normalization deviates by {worst:.3e} > {tolerance:.0e}")
    if not row_check <= tolerance:
        failures.append(f"joint row sums deviate from the marginal by {row_check:.3e} > {tolerance:.0e}")
    if not additivity <= tolerance:
        failures.append(f"conditional and complement add up to 1 + {additivity:.3e}")
    if failures:
        print("FAILED: " + "; ".join(failures))
        return 1
    print(f"OK: every layer's mass sums to 1 within {tolerance:.0e} (max deviation {worst:.3e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
