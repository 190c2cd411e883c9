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
import os
import sys
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from nrm_verify.commands.arguments import nonnegative_int, one_line, positive_int
from nrm_verify.commands.progress import Progress

PROG = "nrm-verify explain"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class UsageError(Exception):
    """A bad argument: printed as one line, exit status 2."""


# -- the model ----------------------------------------------------------------------------------
def load_model(spec: str | None, state_dict: str | None, seed: int) -> tuple[nn.Module, str]:
    """The model to explain (in eval mode; always a new object, never one the caller holds)
    and a description of it."""
    if spec is None:
        from nrm_verify.zoo.models import vgg16
        model, what = vgg16(seed=seed), f"built-in VGG16 (seeded weights, seed {seed})"
    elif ":" in spec and not Path(spec).is_file():
        model, what = _model_from_object(spec), spec
    else:
        model, what = _model_from_torchscript(spec), f"TorchScript {spec}"
    if state_dict is not None:
        _load_state_dict(model, state_dict)
        what += f" with weights from {state_dict}"
    return model.eval(), what


def _model_from_object(spec: str) -> nn.Module:
    from nrm_verify.properties.codegen import load_object
    try:
        obj = load_object(spec)
    except (ImportError, AttributeError, FileNotFoundError, ValueError) as e:
        raise UsageError(f"cannot load --model {spec!r}: {e}") from None
    except Exception as e:  # the user's module raised while importing
        raise UsageError(f"importing --model {spec!r} raised {type(e).__name__}: {e}") from None
    if isinstance(obj, type) and issubclass(obj, nn.Module):
        try:
            obj = obj()
        except Exception as e:
            raise UsageError(f"{spec}() raised {type(e).__name__}: {e} (the class must build without arguments; "
                             "give a factory instead: module:make_net())") from None
    if not isinstance(obj, nn.Module):
        raise UsageError(f"--model {spec!r} gives a {type(obj).__name__}, not a torch.nn.Module")
    return obj


def _load_state_dict(model: nn.Module, path: str) -> None:
    if not Path(path).is_file():
        raise UsageError(f"--state-dict: no such file: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UsageError(f"--state-dict {path}: cannot read it as a torch state dict ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UsageError(f"--state-dict {path}: holds a {type(state).__name__}, not a state dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UsageError(f"--state-dict {path} does not fit the model: {' '.join(str(e).split())}") from None


def _model_from_torchscript(path: str) -> nn.Sequential:
    if not Path(path).is_file():
        raise UsageError(f"--model: no such file: {path}")
    try:
        scripted = torch.jit.load(path, map_location="cpu")
    except Exception as e:
        raise UsageError(f"--model {path} is not a TorchScript archive ({type(e).__name__}); save one with "
                         "torch.jit.script(model).save(path), or give --model module:Class --state-dict file") from None
    model = sequential_from_script(scripted)
    return model


def _first_float(module: nn.Module) -> torch.dtype:
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def sequential_from_script(scripted) -> nn.Sequential:
    """An ``nn.Sequential`` equal to a scripted one: the same module names, types,
    hyperparameters, parameters and buffers, rebuilt from the submodules of the
    ScriptModule (each keeps its type in ``original_name`` and, when scripted, its
    constants as attributes). Raises :class:`UsageError` when it is not possible."""
    kind = getattr(scripted, "original_name", type(scripted).__name__)
    if kind != "Sequential":
        raise UsageError(f"the TorchScript model is a scripted {kind}, not an nn.Sequential; nrm reads Sequential "
                         "models: give --model module:Class --state-dict file instead")
    model = _rebuild(scripted, "")
    state = scripted.state_dict()
    model = model.to(_first_float(scripted))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UsageError(f"cannot copy the TorchScript model's parameters: {' '.join(str(e).split())}") from None
    return model


def _rebuild(sm, path: str) -> nn.Module:
    kind = getattr(sm, "original_name", type(sm).__name__)
    where = f"at {path!r}" if path else "at the top"
    if kind == "Sequential":
        return nn.Sequential(OrderedDict((name, _rebuild(child, f"{path}.{name}" if path else name))
                                         for name, child in sm.named_children()))
    builder = _BUILDERS.get(kind)
    if builder is None:
        raise UsageError(f"the TorchScript model has a {kind} {where}, which nrm cannot rebuild; supported: "
                         f"{', '.join(sorted(_BUILDERS))} and Sequential")
    try:
        return builder(sm)
    except (AttributeError, RuntimeError):
        raise UsageError(f"the TorchScript {kind} {where} does not keep its hyperparameters (a torch.jit.trace "
                         "archive?); save the model with torch.jit.script, or give --model module:Class "
                         "--state-dict file") from None


def _conv(cls):
    return lambda c: cls(c.in_channels, c.out_channels, c.kernel_size, stride=c.stride, padding=c.padding,
                         dilation=c.dilation, groups=c.groups, bias=c.bias is not None, padding_mode=c.padding_mode)


def _batchnorm(cls):
    return lambda c: cls(c.num_features, eps=c.eps, momentum=c.momentum, affine=c.affine,
                         track_running_stats=c.track_running_stats)


_BUILDERS = {
    "Linear": lambda c: nn.Linear(c.in_features, c.out_features, bias=c.bias is not None),
    "Conv1d": _conv(nn.Conv1d),
    "Conv2d": _conv(nn.Conv2d),
    "ReLU": lambda c: nn.ReLU(),
    "LeakyReLU": lambda c: nn.LeakyReLU(c.negative_slope),
    "MaxPool2d": lambda c: nn.MaxPool2d(c.kernel_size, c.stride, c.padding, c.dilation, ceil_mode=c.ceil_mode),
    "AvgPool2d": lambda c: nn.AvgPool2d(c.kernel_size, c.stride, c.padding, ceil_mode=c.ceil_mode,
                                        count_include_pad=c.count_include_pad, divisor_override=c.divisor_override),
    "AdaptiveAvgPool2d": lambda c: nn.AdaptiveAvgPool2d(c.output_size),
    "Flatten": lambda c: nn.Flatten(c.start_dim, c.end_dim),
    "Dropout": lambda c: nn.Dropout(c.p),
    "Identity": lambda c: nn.Identity(),
    "BatchNorm1d": _batchnorm(nn.BatchNorm1d),
    "BatchNorm2d": _batchnorm(nn.BatchNorm2d),
}


# -- the input ----------------------------------------------------------------------------------
def _first_leaf(model: nn.Module) -> nn.Module | None:
    for m in model.modules():
        if not list(m.children()):
            return m
    return None


def load_input(spec: str | None, model: nn.Module, size: int, seed: int, normalize: str) -> tuple[torch.Tensor, str]:
    """One sample (1, …) in the model's dtype, and a description of it."""
    dtype = _first_float(model)
    first = _first_leaf(model)
    channels = getattr(first, "in_channels", 3)
    if spec is None:
        from nrm_verify.zoo.models import seeded_image
        if isinstance(first, nn.Linear):
            x = seeded_image((1, first.in_features), seed=seed, channels=1).reshape(1, first.in_features)
            return x.to(dtype), f"seeded vector of {first.in_features} values (seed {seed})"
        if isinstance(first, nn.Conv1d):
            x = seeded_image((1, size), seed=seed, channels=channels)[:, :, 0, :]
            return x.to(dtype), f"seeded signal {channels}×{size} (seed {seed})"
        return seeded_image(size, seed=seed, channels=channels).to(dtype), f"seeded image {size}×{size} (seed {seed})"
    path = Path(spec)
    if not path.is_file():
        raise UsageError(f"--input: no such file: {spec}")
    if path.suffix.lower() in (".pt", ".pth"):
        try:
            x = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise UsageError(f"--input {spec}: cannot read it with torch.load ({type(e).__name__})") from None
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise UsageError(f"--input {spec} holds a {type(x).__name__}, not a floating-point tensor")
        batched = x.dim() >= 2 and x.shape[0] == 1  # already a batch of one sample
        dense = isinstance(first, nn.Linear)
        unbatched = dense and x.dim() == 1 or not dense and x.dim() in (2, 3)
        if not batched and not unbatched:
            raise UsageError(f"--input {spec} has shape {tuple(x.shape)}; give one sample, e.g. (1, C, H, W) or "
                             "(C, H, W)")
        if not batched:
            x = x.unsqueeze(0)  # one sample without its batch dimension
        return x.to(dtype), f"tensor {spec} of shape {tuple(x.shape)}"
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise UsageError(f"--input {spec}: expected an image ({', '.join(IMAGE_SUFFIXES)}) or a tensor (.pt)")
    img = _read_image(path, grey=channels == 1)  # (C, H, W) in [0, 1]
    x = torch.nn.functional.interpolate(img.unsqueeze(0), size=(size, size), mode="bilinear", antialias=True,
                                        align_corners=False)
    if normalize == "imagenet" and x.shape[1] == 3:
        mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype).reshape(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=x.dtype).reshape(1, 3, 1, 1)
        x = (x - mean) / std
    return x.to(dtype), f"image {spec} resized to {size}×{size}" + (", ImageNet-normalized" if normalize ==
                                                                       "imagenet" and x.shape[1] == 3 else "")


def _read_image(path: Path, grey: bool) -> torch.Tensor:
    try:
        from PIL import Image
    except ModuleNotFoundError:
        Image = None
    try:
        if Image is not None:
            import numpy as np
            with Image.open(path) as im:
                a = np.asarray(im.convert("L" if grey else "RGB"), dtype=np.float32) / 255.0
            arr = torch.from_numpy(a[..., None] if a.ndim == 2 else a)
        else:
            import matplotlib.image
            import numpy as np
            a = np.asarray(matplotlib.image.imread(path), dtype=np.float32)
            a = a / 255.0 if a.max() > 1.0 else a
            a = a[..., None] if a.ndim == 2 else a[..., :3]
            arr = torch.from_numpy(a.mean(-1, keepdims=True) if grey else (a if a.shape[-1] == 3 else a.repeat(3, -1)))
    except Exception as e:
        raise UsageError(f"--input {path}: cannot read the image ({type(e).__name__}: {e})") from None
    return arr.permute(2, 0, 1).contiguous()


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
    import nrm
    from nrm_verify import report
    from nrm_verify.report import figures

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
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {args.out}: cannot create the folder ({e.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"--out {args.out}: the folder is not writable")
    bar.step("load the model and the input")
    model, model_what = load_model(args.model, args.state_dict, args.seed)
    x, input_what = load_input(args.input, model, args.size, args.seed, args.normalize)
    rules = parse_rules(args.rules, x)
    check_box_bounds(rules, x)
    bar.step("forward pass and kernels (nrm.explain)")
    with torch.no_grad():
        try:
            logits = model(x)
        except Exception as e:
            raise UsageError(f"the input of shape {tuple(x.shape)} does not fit the model: "
                             f"{type(e).__name__}: {' '.join(str(e).split())[:300]}") from None
    target = int(logits.reshape(1, -1).argmax()) if args.target is None else args.target
    try:
        m = nrm.explain(model, x, target=target, rules=rules)
    except nrm.NRMError as e:
        raise UsageError(" ".join(str(e).split())) from None
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
    files: dict[str, str] = {}

    def written(key: str, path: Path) -> None:
        files[key] = str(path)

    bar.step("input heatmap")
    plain = report.input_map(m.marginal("input"))[0]
    heat = plain.double().cpu().numpy()
    written("heatmap", figures.heatmap(out / "heatmap.png", x[0], heat,
                                       f"μ(X_input = i), target {target}, f = {float(m.f[0]):.4g}"))
    import numpy as np
    np.save(out / "heatmap.npy", heat)
    written("heatmap_npy", out / "heatmap.npy")

    bar.step("per-layer masses")
    rows = report.layer_masses(m, tick=bar.tick)
    _write_json(out / "masses.json", rows)
    written("masses_json", out / "masses.json")
    written("masses", figures.masses(out / "masses.png", rows))

    bar.step(f"joint {joint_layers[0]} × {joint_layers[1]}")
    J = m.joint(joint_layers[0], joint_layers[1], by="channel")[0].double().cpu().numpy()
    np.save(out / "joint.npy", J)
    written("joint_npy", out / "joint.npy")
    _write_json(out / "joint.json", report.joint_summary(torch.from_numpy(J), *joint_layers))
    written("joint_json", out / "joint.json")
    written("joint", figures.joint(out / "joint.png", J, *joint_layers))

    bar.step(f"flow and critical paths through {len(flow_layers)} layers")
    fl = report.flow(m, flow_layers, top=args.top, paths=args.paths, beam=args.beam, tick=bar.tick).to_dict()
    _write_json(out / "flow.json", fl)
    written("flow_json", out / "flow.json")
    written("flow", figures.flow(out / "flow.png", fl))

    bar.step(f"conditional heatmaps of {concept_layer}")
    marg = report.channel_marginals(m, concept_layer)
    top = report.top_channels(marg, args.concepts)
    maps = report.concept_heatmaps(m, concept_layer, top, tick=bar.tick).double().cpu().numpy()
    np.save(out / "concepts.npy", maps)
    written("concepts_npy", out / "concepts.npy")
    _write_json(out / "concepts.json", {"layer": concept_layer, "channels": top,
                                        "mu": [float(marg[c]) for c in top],
                                        "heatmap_sums": [float(h.sum()) for h in maps],
                                        "input_absorbed": m.absorbed("input", within=[
                                            nrm.At(concept_layer, channels=[c]) for c in top])[:, 0].tolist()})
    written("concepts_json", out / "concepts.json")
    written("concepts", figures.concepts(out / "concepts.png", x[0], heat, maps, concept_layer, top,
                                         [float(marg[c]) for c in top]))

    if args.selection:
        from nrm_verify.report.selection import selection_curves
        bar.step(f"neuron selection at {args.selection}")
        try:
            curves = selection_curves(model, x, args.selection, target, measure=m, random_draws=args.random_draws,
                                      seed=args.seed).to_dict()
        except ValueError as e:
            raise UsageError(f"--selection: {e}") from None
        _write_json(out / "selection.json", curves)
        written("selection_json", out / "selection.json")
        written("selection", figures.selection(out / "selection.png", curves))

    bar.step("summary")
    summary = {"model": model_what, "input": input_what, "input_shape": list(x.shape), "target": target,
               "f": float(m.f[0]), "rules": repr(rules), "layers": names, "flow_layers": fl["layers"],
               "joint_layers": list(joint_layers), "concept_layer": concept_layer,
               "critical_paths": fl["paths"], "notes": fl["notes"], "files": files}
    _write_json(out / "summary.json", summary)
    summary["seconds"] = bar.finish()
    summary["stage_seconds"] = bar.times
    _write_json(out / "summary.json", summary)
    print(f"explained {model_what} at {input_what}: target {target}, f = {float(m.f[0]):.6g}; "
          f"{len(files) + 1} files in {out}/ ({summary['seconds']:.1f} s)")
    for note in fl["notes"]:
        print(f"note: flow figure: {note}")
    return 0


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
    g.add_argument("--model", metavar="FILE.pt|MODULE:CLASS",
                   help="a TorchScript file of an nn.Sequential (torch.jit.script(model).save(FILE)), or "
                        "package.module:Class / path/to/file.py:Class / module:factory() building an nn.Sequential "
                        "(default: the built-in VGG16 layout with seeded weights)")
    g.add_argument("--state-dict", metavar="FILE",
                   help="weights to load into the model (torch.save(model.state_dict())); with the built-in model, "
                        "torchvision's vgg16 weights fit")
    g.add_argument("--input", metavar="FILE", help="an image (.png, .jpg, …; resized to --size×--size) or a tensor "
                                                   "(.pt, one sample) (default: a seeded smooth image)")
    g.add_argument("--size", type=positive_int, default=224,
                   help="image height and width (default 224; ≥ 32 for VGG16)")
    g.add_argument("--normalize", choices=["imagenet", "none"], default="imagenet",
                   help="how an image file's [0, 1] pixels are normalized (default imagenet)")
    g.add_argument("--target", type=nonnegative_int, default=None, help="output index to explain (default: the argmax)")
    g.add_argument("--rules", default="EpsilonGammaFlat",
                   help="a preset of nrm.presets (EpsilonGammaFlat, EpsilonPlus, …) or a rule for every layer with "
                        "literal arguments: 'Epsilon(1e-6)', 'Gamma(0.25)', 'Zero()' (default EpsilonGammaFlat)")
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
    p.set_defaults(run=run)

