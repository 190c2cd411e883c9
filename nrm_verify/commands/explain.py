"""``nrm-verify explain``: explain one input of a model and write figures and JSON.

    nrm-verify explain                                   # built-in VGG16 (seeded weights), 224×224 seeded image
    nrm-verify explain --size 64 --out report/           # quicker
    nrm-verify explain --model net.pt --input cat.png    # a TorchScript nn.Sequential
    nrm-verify explain --model mypkg.nets:Net --state-dict net.pt --input x.pt --rules "Epsilon(1e-6)"

Exit status 0 when the report was written, 2 on a usage error (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nrm_verify.commands import explain_graph
from nrm_verify.commands.arguments import UsageError, nonnegative_int, one_line, output_folder, positive_int
from nrm_verify.commands.loading import load_input, load_model
from nrm_verify.commands.progress import Progress

PROG = "nrm-verify explain"


# -- the rules ----------------------------------------------------------------------------------
def parse_rules(text: str, x: torch.Tensor):
    """A preset name (``EpsilonGammaFlat``), a preset or a rule with literal arguments
    (``EpsilonGammaBox(-2, 2)``, ``Epsilon(1e-6)``, ``Gamma(gamma=0.25)``), or ``Zero`` (LRP-0);
    :func:`nrm_verify.properties.specs.builtin` reads it. ``EpsilonGammaBox`` without
    arguments takes the box [min x, max x] of the input."""
    from nrm_verify.properties.specs import RuleSpecError, builtin

    try:
        return builtin(text, x=x)
    except RuleSpecError as e:
        message = str(e) if str(e).startswith(repr(text)) else f"{text!r}: {e}"
        raise UsageError(f"--rules {message}") from None


def check_box_bounds(rules, x: torch.Tensor) -> None:
    """A ZBox's tensor bounds must fit one sample of the input, and such a ZBox can only be
    the first layer's rule (the hidden layers have other shapes): a bad box is a usage
    error here, not a broadcasting error deep in the engine."""
    from nrm.presets import RuleMap
    from nrm.rules import ZBox

    def shape(bound):
        return tuple(torch.as_tensor(bound).shape) if not isinstance(bound, (int, float)) else ()

    sample = tuple(x.shape[1:])
    if isinstance(rules, ZBox):
        if shape(rules.low) or shape(rules.high):
            raise UsageError("--rules: a ZBox with array bounds can only be the first layer's rule; give numbers "
                             "(ZBox(-2, 2)) or the preset EpsilonGammaBox(low, high)")
        return
    if isinstance(rules, RuleMap) and isinstance(rules.first, ZBox):
        for name in ("low", "high"):
            s = shape(getattr(rules.first, name))
            try:
                fits = torch.broadcast_shapes(s, sample) == sample
            except RuntimeError:
                fits = False
            if not fits:
                raise UsageError(f"--rules: the box's {name} has shape {s}, which does not fit one input sample "
                                 f"of shape {sample}; give a number or an array of that shape")


# -- the run ------------------------------------------------------------------------------------
def default_flow_layers(model: nn.Module, names: list[str], measure=None) -> list[str]:
    """The last four convolutions, or else the last three hidden layers — on a branched
    model (with ``measure``) the last ones along one path, each read by the next
    (:func:`nrm_verify.report.on_one_path`: a layer and its parallel shortcut have no walk
    in common, so their joint is 0)."""
    modules = dict(model.named_modules())
    hidden = names[1:-1]
    convs = [n for n in hidden if isinstance(modules.get(n), (nn.Conv1d, nn.Conv2d))]
    if measure is not None:
        from nrm_verify.report import on_one_path
        chosen = on_one_path(measure, convs, 4)
        if len(chosen) < 2:
            chosen = on_one_path(measure, hidden, 3)
    else:
        chosen = convs[-4:] if len(convs) >= 2 else hidden[-3:]
    if len(chosen) < 2:
        chosen = names[-3:-1] if len(names) >= 3 else names[:2]
    return chosen


def _check_layers(measure, layers: list[str], what: str) -> None:
    for name in layers:
        if name not in measure.layers:
            raise UsageError(f"{what}: unknown layer {name!r}; valid layers: {', '.join(measure.layers)}")
        if name == "output" or measure.layer_index(name) == measure.depth:
            raise UsageError(f"{what}: {name!r} is the output layer; choose hidden layers or 'input'")


def run(args) -> int:
    import nrm

    if args.modality == "graph" or explain_graph.given(args):
        return explain_graph.run(args)
    if args.modality == "text":
        from nrm_verify.commands import explain_text
        return explain_text.run(args)
    args.rules = "EpsilonGammaFlat" if args.rules is None else args.rules

    bar = Progress(8 + bool(args.selection), enabled=not args.quiet)
    try:
        return _run(args, bar)
    except (UsageError, nrm.NRMError) as e:  # an NRMError names what was wrong with the model, input or rules
        message = str(e)
    except OSError as e:
        message = f"cannot write into --out {args.out}: {e.strerror or e}" + (f" ({e.filename})" if e.filename else "")
    bar.abort()
    print(f"{PROG}: error: {one_line(message)}", file=sys.stderr)
    return 2


def _run(args, bar) -> int:
    """The stages of the command, each writing its files into ``--out``."""
    out = _Output(_prepare(args))
    bar.step("load the model and the input")
    model, model_what = load_model(args.model, args.state_dict, args.seed)
    x, input_what = load_input(args.input, model, args.size, args.seed, args.normalize)
    rules = parse_rules(args.rules or "EpsilonGammaFlat", x)
    check_box_bounds(rules, x)
    bar.step("forward pass and kernels (nrm.explain)")
    target, m = _measure(model, x, rules, args.target)
    layers = _choose_layers(args, model, m)
    bar.step("input heatmap")
    heat = _write_heatmap(out, m, x, target)
    bar.step("per-layer masses")
    _write_masses(out, m, bar.tick)
    bar.step(f"joint {layers.joint[0]} × {layers.joint[1]}")
    _write_joint(out, m, layers.joint)
    bar.step(f"flow and critical paths through {len(layers.flow)} layers")
    fl = _write_flow(out, m, layers.flow, args, bar.tick)
    bar.step(f"conditional heatmaps of {layers.concept}")
    _write_concepts(out, m, x, heat, layers.concept, args.concepts, bar.tick)
    if args.selection:
        bar.step(f"neuron selection at {args.selection}")
        _write_selection(out, model, x, target, m, args)
    bar.step("summary")
    summary = {"model": model_what, "input": input_what, "input_shape": list(x.shape), "target": target,
               "f": float(m.f[0]), "rules": repr(rules), "layers": layers.names, "flow_layers": fl["layers"],
               "joint_layers": list(layers.joint), "concept_layer": layers.concept,
               "critical_paths": fl["paths"], "notes": fl["notes"], "files": out.files}
    _write_json(out.folder / "summary.json", summary)
    summary["seconds"] = bar.finish()
    summary["stage_seconds"] = bar.times
    _write_json(out.folder / "summary.json", summary)
    print(f"explained {model_what} at {input_what}: target {target}, f = {float(m.f[0]):.6g}; "
          f"{len(out.files) + 1} files in {out.folder}/ ({summary['seconds']:.1f} s)")
    for note in fl["notes"]:
        print(f"note: flow figure: {note}")
    return 0


def _prepare(args) -> Path:
    """Check the arguments that argparse cannot check alone and make the output folder;
    a usage error before any work is done."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.size < 1:
        raise UsageError(f"--size must be positive, got {args.size}")
    if args.state_dict and args.model and ":" not in args.model:
        raise UsageError("--state-dict goes with --model module:Class (a TorchScript file has its own weights)")
    for flag in ("top", "paths", "beam", "concepts"):
        if getattr(args, flag) < (0 if flag == "paths" else 1):
            raise UsageError(f"--{flag} must be positive, got {getattr(args, flag)}")
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        raise UsageError("the figures need matplotlib: pip install 'nrm-verify[report]'") from None
    return output_folder(args.out)


def _measure(model: nn.Module, x: torch.Tensor, rules, target: int | None):
    """The target (``target``, or else the model's argmax) and the measure of ``x`` for it."""
    import nrm

    with torch.no_grad():
        try:
            logits = model(x)
        except Exception as e:
            raise UsageError(f"the input of shape {tuple(x.shape)} does not fit the model: "
                             f"{type(e).__name__}: {' '.join(str(e).split())[:300]}") from None
    target = int(logits.reshape(1, -1).argmax()) if target is None else target
    try:
        return target, nrm.explain(model, x, target=target, rules=rules)
    except nrm.NRMError as e:
        raise UsageError(" ".join(str(e).split())) from None


@dataclass
class _Layers:
    """The layers that the figures show: every layer's name, the flow layers, the two
    layers of the joint and the layer of the conditional heatmaps."""

    names: list[str]
    flow: list[str]
    joint: list[str]
    concept: str


def _choose_layers(args, model: nn.Module, m) -> _Layers:
    """The layers given by the arguments, or the defaults, each checked against ``m``."""
    from nrm_verify import report

    names = report.layer_names(m)
    flow_layers = args.flow_layers or default_flow_layers(model, names, m)
    _check_layers(m, flow_layers, "--flow-layers")
    joint_layers = args.joint or flow_layers[-2:]
    _check_layers(m, joint_layers, "--joint")
    if m.layer_index(joint_layers[0]) == m.layer_index(joint_layers[1]):
        raise UsageError(f"--joint needs two different layers, got {joint_layers}")
    concept_layer = args.concept_layer or flow_layers[-1]
    _check_layers(m, [concept_layer], "--concept-layer")
    if args.selection:
        _check_layers(m, [args.selection], "--selection")
    try:
        report.sort_layers(m, flow_layers)
    except ValueError as e:
        raise UsageError(f"--flow-layers: {e}") from None
    return _Layers(names, flow_layers, joint_layers, concept_layer)


# -- the files ----------------------------------------------------------------------------------
@dataclass
class _Output:
    """The output folder and the files written into it, by key, in the order written
    (``summary.json`` lists them)."""

    folder: Path
    files: dict[str, str] = field(default_factory=dict)

    def written(self, key: str, path: Path) -> None:
        self.files[key] = str(path)

    def json(self, key: str, name: str, data) -> None:
        _write_json(self.folder / name, data)
        self.written(key, self.folder / name)

    def npy(self, key: str, name: str, array: np.ndarray) -> None:
        np.save(self.folder / name, array)
        self.written(key, self.folder / name)


def _write_heatmap(out: _Output, m, x: torch.Tensor, target: int) -> np.ndarray:
    """heatmap.png and heatmap.npy: μ(X_input = i), summed over the input's channels."""
    from nrm_verify import report
    from nrm_verify.report import figures

    heat = report.input_map(m.marginal("input"))[0].double().cpu().numpy()
    out.written("heatmap", figures.heatmap(out.folder / "heatmap.png", x[0], heat,
                                           f"μ(X_input = i), target {target}, f = {float(m.f[0]):.4g}"))
    out.npy("heatmap_npy", "heatmap.npy", heat)
    return heat


def _write_masses(out: _Output, m, tick) -> None:
    """masses.json and masses.png: per layer Σ_j m_l(j), m_l(⊥) and the signed parts."""
    from nrm_verify import report
    from nrm_verify.report import figures

    rows = report.layer_masses(m, tick=tick)
    out.json("masses_json", "masses.json", rows)
    out.written("masses", figures.masses(out.folder / "masses.png", rows))


def _write_joint(out: _Output, m, layers: list[str]) -> None:
    """joint.npy, joint.json and joint.png: μ(X_a ∈ i, X_b ∈ k) over the channels of two layers."""
    from nrm_verify import report
    from nrm_verify.report import figures

    J = m.joint(layers[0], layers[1], by="channel")[0].double().cpu().numpy()
    out.npy("joint_npy", "joint.npy", J)
    out.json("joint_json", "joint.json", report.joint_summary(torch.from_numpy(J), *layers))
    out.written("joint", figures.joint(out.folder / "joint.png", J, *layers))


def _write_flow(out: _Output, m, layers: list[str], args, tick) -> dict:
    """flow.json and flow.png: the top channels of the flow layers, their joints and the
    critical paths; returns the flow as written."""
    from nrm_verify import report
    from nrm_verify.report import figures

    fl = report.flow(m, layers, top=args.top, paths=args.paths, beam=args.beam, tick=tick).to_dict()
    out.json("flow_json", "flow.json", fl)
    out.written("flow", figures.flow(out.folder / "flow.png", fl))
    return fl


def _write_concepts(out: _Output, m, x: torch.Tensor, heat: np.ndarray, layer: str, count: int, tick) -> None:
    """concepts.npy, concepts.json and concepts.png: μ(X_input = i, X_layer ∈ c) for the
    ``count`` channels c of ``layer`` with the largest |μ(X_layer ∈ c)|."""
    import nrm
    from nrm_verify import report
    from nrm_verify.report import figures

    marg = report.channel_marginals(m, layer)
    top = report.top_channels(marg, count)
    maps = report.concept_heatmaps(m, layer, top, tick=tick).double().cpu().numpy()
    out.npy("concepts_npy", "concepts.npy", maps)
    out.json("concepts_json", "concepts.json", {
        "layer": layer, "channels": top, "mu": [float(marg[c]) for c in top],
        "heatmap_sums": [float(h.sum()) for h in maps],
        "input_absorbed": m.absorbed("input", within=[nrm.At(layer, channels=[c]) for c in top])[:, 0].tolist()})
    out.written("concepts", figures.concepts(out.folder / "concepts.png", x[0], heat, maps, layer, top,
                                             [float(marg[c]) for c in top]))


def _write_selection(out: _Output, model: nn.Module, x: torch.Tensor, target: int, m, args) -> None:
    """selection.json and selection.png: the output error when only the top-k channels of
    ``--selection`` are kept, ranked by relevance, gradient × input or at random."""
    from nrm_verify.report import figures
    from nrm_verify.report.selection import selection_curves

    try:
        curves = selection_curves(model, x, args.selection, target, measure=m, random_draws=args.random_draws,
                                  seed=args.seed).to_dict()
    except ValueError as e:
        raise UsageError(f"--selection: {e}") from None
    out.json("selection_json", "selection.json", curves)
    out.written("selection", figures.selection(out.folder / "selection.png", curves))


def _write_json(path: Path, data) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1)


def register(commands) -> None:
    p = commands.add_parser(
        "explain", help="explain one input: heatmaps, per-layer masses, joints, flow, critical paths",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compute the normalized relevance measure μ of one input for one output of a model and write, "
                    "into --out, PNG figures and JSON/NumPy data:\n"
                    "  heatmap.png    the input and μ(X_input = i)\n"
                    "  masses.png     per layer Σ_j m_l(j), m_l(⊥) and the positive/negative mass (masses.json)\n"
                    "  joint.png      μ(X_a ∈ i, X_b ∈ k) over the channels of two layers (--joint; joint.npy)\n"
                    "  flow.png       top channels of --flow-layers, their joint relevance and the critical "
                    "paths (flow.json)\n"
                    "  concepts.png   μ(X_input = i, X_layer ∈ c) for the top channels c of --concept-layer\n"
                    "  selection.png  with --selection LAYER: output error when only the top-k channels are kept\n"
                    "  summary.json   what was explained, the files, wall times\n\n"
                    "Examples:\n"
                    "  nrm-verify explain --size 64 --out report\n"
                    "  nrm-verify explain --input cat.jpg --state-dict vgg16-397923af.pth --selection features.28\n"
                    "  nrm-verify explain --model net.pt --input x.pt --rules 'Epsilon(1e-6)'\n\n"
                    "Exit status 0 when everything was written, 2 on a bad argument (one line on stderr).")
    g = p.add_argument_group("what to explain")
    g.add_argument("--modality", choices=["image", "text", "graph"], default="image",
                   help="image (default: the figures above), text (a transformer on token ids: token heatmap, "
                        "head × layer matrix, token flow; see nrm_verify/commands/explain_text.py) or graph (a PyG "
                        "model on --input graph.pt, see below)")
    g.add_argument("--model", metavar="FILE.pt|MODULE:CLASS",
                   help="a TorchScript file of an nn.Sequential (torch.jit.script(model).save(FILE)), or "
                        "package.module:Class / path/to/file.py:Class / module:factory() building an nn.Sequential "
                        "(default: the built-in VGG16 layout with seeded weights)")
    g.add_argument("--state-dict", metavar="FILE",
                   help="weights to load into the model (torch.save(model.state_dict())); with the built-in model, "
                        "torchvision's vgg16 weights fit")
    g.add_argument("--input", metavar="FILE",
                   help="an image (.png, .jpg, …; resized to --size×--size) or a tensor (.pt, one sample) (default: a "
                        "seeded smooth image); text: token ids, a .json list or a .pt integer tensor (default 8 seeded "
                        "ids)")
    g.add_argument("--size", type=positive_int, default=224,
                   help="image height and width (default 224; ≥ 32 for VGG16)")
    g.add_argument("--normalize", choices=["imagenet", "none"], default="imagenet",
                   help="how an image file's [0, 1] pixels are normalized (default imagenet)")
    g.add_argument("--target", type=nonnegative_int, default=None, help="output index to explain (default: the argmax)")
    g.add_argument("--rules", default=None,
                   help="a preset of nrm.presets (EpsilonGammaFlat, EpsilonPlus, …) or a rule for every layer with "
                        "literal arguments: 'Epsilon(1e-6)', 'Gamma(0.25)', 'Zero()' (default EpsilonGammaFlat; "
                        "Epsilon(0.1) with --modality graph; text: AttnLRP or CP-LRP, default AttnLRP)")
    g.add_argument("--tokens", nargs="+", metavar="TOKEN", help="text: one display string per token id "
                                                                "(default t<i>:<id>)")
    g.add_argument("--position", type=int, default=None,
                   help="text: the output position whose logits are explained (default -1, the last token)")
    g.add_argument("--seed", type=nonnegative_int, default=0,
                   help="seed of the built-in weights, the seeded input and the random ranking (default 0)")
    o = p.add_argument_group("what to draw")
    o.add_argument("--out", default="nrm-explain", metavar="DIR", help="output folder (default ./nrm-explain)")
    o.add_argument("--joint", nargs=2, metavar=("LAYER_A", "LAYER_B"),
                   help="two layers for the joint relevance matrix (default the last two flow layers)")
    o.add_argument("--flow-layers", nargs="+", metavar="LAYER",
                   help="layers of the flow figure and the critical paths (default the last four convolutions)")
    o.add_argument("--top", type=positive_int, default=6, help="channels per layer in the flow figure (default 6)")
    o.add_argument("--paths", type=nonnegative_int, default=5,
                   help="critical paths to list and draw (default 5; 0: none)")
    o.add_argument("--beam", type=positive_int, default=16, help="beam width of the critical-path search (default 16)")
    o.add_argument("--concept-layer", metavar="LAYER", help="layer of the conditional heatmaps (default the last flow "
                                                            "layer)")
    o.add_argument("--concepts", type=positive_int, default=6, help="conditional heatmaps to draw (default 6)")
    o.add_argument("--selection", metavar="LAYER", help="also run neuron selection at LAYER: keep its top-k channels "
                                                        "by relevance, gradient×input or at random (selection.png)")
    o.add_argument("--random-draws", type=positive_int, default=5,
                   help="random rankings averaged in the selection (default 5)")
    o.add_argument("--threads", type=positive_int, default=None, help="torch.set_num_threads (default: torch's choice)")
    o.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    explain_graph.add_arguments(p)
    p.set_defaults(run=run)

