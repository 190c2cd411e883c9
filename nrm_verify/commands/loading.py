"""What ``nrm-verify explain`` explains: the model (the built-in VGG16, a class or factory
with a state dict, or a TorchScript ``nn.Sequential`` rebuilt as a plain one) and one input
(a seeded one, a tensor file or an image). Every problem is a :class:`UsageError` that
says what to give instead.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from nrm_verify.commands.arguments import UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# -- the model ----------------------------------------------------------------------------------
def load_model(spec: str | None, state_dict: str | None, seed: int) -> tuple[nn.Module, str]:
    """The model to explain (in eval mode; always a new object, never one the caller holds)
    and a description of it."""
    if spec is None:
        from nrm_verify.zoo.models import vgg16
        model, what = vgg16(seed=seed), f"built-in VGG16 (seeded weights, seed {seed})"
    elif ":" in spec and not Path(spec).is_file():
        model, what = model_from_object(spec), spec
    else:
        model, what = _model_from_torchscript(spec), f"TorchScript {spec}"
    if state_dict is not None:
        load_state_dict(model, state_dict)
        what += f" with weights from {state_dict}"
    return model.eval(), what


def model_from_object(spec: str) -> nn.Module:
    """The nn.Module that ``spec`` (module:Class, module:factory(), file.py:Class) names; usage errors otherwise."""
    from nrm_verify.properties.loader import load_object
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


def load_state_dict(model: nn.Module, path: str) -> None:
    """Load the state dict in ``path`` (or its ``state_dict`` entry) into ``model``; usage errors otherwise."""
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


# -- TorchScript → nn.Sequential ----------------------------------------------------------------
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
    """One sample (1, …) in the model's dtype, and a description of it: a seeded vector,
    signal or image shaped for the model's first layer (``spec`` None), a tensor file
    (.pt, .pth) or an image file resized to ``size`` × ``size``."""
    dtype = _first_float(model)
    first = _first_leaf(model)
    channels = getattr(first, "in_channels", 3)
    if spec is None:
        return _seeded_input(first, channels, size, seed, dtype)
    path = Path(spec)
    if not path.is_file():
        raise UsageError(f"--input: no such file: {spec}")
    if path.suffix.lower() in (".pt", ".pth"):
        return _tensor_input(spec, path, first, dtype)
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


def _seeded_input(first: nn.Module | None, channels: int, size: int, seed: int,
                  dtype: torch.dtype) -> tuple[torch.Tensor, str]:
    from nrm_verify.zoo.models import seeded_image
    if isinstance(first, nn.Linear):
        x = seeded_image((1, first.in_features), seed=seed, channels=1).reshape(1, first.in_features)
        return x.to(dtype), f"seeded vector of {first.in_features} values (seed {seed})"
    if isinstance(first, nn.Conv1d):
        x = seeded_image((1, size), seed=seed, channels=channels)[:, :, 0, :]
        return x.to(dtype), f"seeded signal {channels}×{size} (seed {seed})"
    return seeded_image(size, seed=seed, channels=channels).to(dtype), f"seeded image {size}×{size} (seed {seed})"


def _tensor_input(spec: str, path: Path, first: nn.Module | None, dtype: torch.dtype) -> tuple[torch.Tensor, str]:
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
