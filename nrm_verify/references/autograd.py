"""Standard LRP, layer by layer, computed the way LRP libraries compute it — the reference
side of L8 (NRM-SPEC §4: m_l(j) = R_j^(l) / f_c(x)).

For a layer z = W a + b with a rule whose shares are c_s(j, k) = Σ_p u_p(a_j) v_p(w_jk),

    R_j = Σ_s Σ_p u_p(a_j) Σ_k v_p(w_jk) κ_s(k) R_k / D_s(k),

and the inner sum is obtained with **autograd** (the "gradient trick" of zennit and
LXT): z_p = W_p u_p is computed with the modified weight, and R_j = u_p(a_j) ·
∂⟨z_p, κ_s R / D_s⟩/∂u_p(a_j). Max-pooling sends R to the winner through the gradient of
``max_pool2d``; elementwise activations pass R unchanged. What is shared with
:mod:`nrm.engine` is the proper-FFNN structure (which module makes which layer, batch norm
folded into its linear map, :mod:`nrm.graph`) and the rule objects with their
``column`` (the conventions); the forward pass, the transposes and the relevance
bookkeeping are this module's own. The absorbed relevance of a layer is what LRP loses
on the way: f − Σ_j R_j.

Rules that read the incoming relevance (``reads_relevance``) get it here as ``column(…,
relevance=R)`` with a leading stack dimension of 1, as in the engine.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nrm.errors import UnsupportedModuleError
from nrm.graph import ProperFFNN, check_eval_mode
from nrm.ops import TORCH
from nrm.presets import assign


def relevance(model: nn.Module, x: torch.Tensor, target=None, *, rules=None,
              start: torch.Tensor | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Standard LRP of ``model`` at ``x``: ({canonical layer name: R^(l) (B, *shape)}, f).

    ``target`` starts from R^(L) = f_c δ_c; ``start`` from a given R^(L). Layer names are
    those :meth:`nrm.Measure.walk` uses (the first name of a layer with its own shape)."""
    check_eval_mode(model)
    network = ProperFFNN(model, x)
    branch = next((b for b in network.blocks[1:] if b.inputs != [b.index - 1]), None)
    if branch is not None:
        raise UnsupportedModuleError(
            f"the autograd LRP reference reads sequential models; layer '{branch.name}' reads "
            f"{'the layers ' + str(branch.inputs) if len(branch.inputs) > 1 else 'layer ' + str(branch.inputs[0])}, "
            f"not the layer before it (a branch). Compare a branched model with the explicit reference "
            f"(nrm_verify.references.explicit) or pass L8 a reference of your own")
    assign(network, rules)
    inputs, outputs, shapes, names = {}, {}, {0: tuple(x.shape[1:])}, {0: "input"}
    with torch.no_grad():
        a = _trailing(network, network.blocks[0], x)
        for block in network.blocks[1:]:
            l = block.index
            inputs[l] = a
            if block.producer.kind == "linear":
                lmap = network.linear_map(block, a)
                out = lmap.forward(a, lmap.weight)
                bias = lmap.bias_for(out)
                out = out if bias is None else out + bias
            elif block.producer.kind == "maxpool":
                out = _maxpool(block.producer, a)
            elif block.route() is not None:  # an index map: each output is one input neuron
                out = routed(network, block, a)
            else:
                raise UnsupportedModuleError(f"the autograd LRP reference reads sequential models; "
                                             f"'{block.name}' is a {block.kind} layer")
            shapes[l] = tuple(out.shape[1:])
            names[l] = block.producer.name
            outputs[l] = out
            a = _trailing(network, block, out)
    L = network.depth
    flat = a.reshape(a.shape[0], -1)
    if start is None:
        c = torch.as_tensor(target).reshape(-1).expand(x.shape[0]).to(x.device)
        R = torch.zeros_like(flat)
        R[torch.arange(x.shape[0]), c] = flat[torch.arange(x.shape[0]), c]
    else:
        R = start.reshape(flat.shape).to(flat.dtype)
    f = R.sum(1)
    R = R.reshape((x.shape[0],) + shapes[L])
    out = {names[L]: R}
    for l in range(L, 0, -1):
        block = network.blocks[l]
        inp = inputs[l]
        if block.producer.kind == "linear":
            R_in = _linear_step(network, block, inp, R)
        else:
            leaf = inp.detach().clone().requires_grad_(True)
            y = _maxpool(block.producer, leaf) if block.route() is None else routed(network, block, leaf)
            (R_in,) = torch.autograd.grad(y, leaf, R.reshape(y.shape))
        R = R_in.reshape((x.shape[0],) + shapes[l - 1])
        out[names[l - 1]] = R
    return out, f


def _trailing(network: ProperFFNN, block, out: torch.Tensor) -> torch.Tensor:
    """The layer's elementwise steps and reshapes on its value."""
    for step in block.trailing:
        if step.role == "elementwise":
            out = step.layer_kind.evaluate(step.call, out)
        elif step.role == "reshape":
            out = out.reshape((out.shape[0],) + tuple(network.value(step.value).shape[1:]))
    return out


def routed(network: ProperFFNN, block, a: torch.Tensor) -> torch.Tensor:
    """An index-map layer (permute, slicing, a piece of chunk) on ``a``: output k is input
    neuron index[k] (:meth:`nrm.graph.Block.route`); autograd sends R back along it."""
    index = torch.tensor(block.route(), dtype=torch.long, device=a.device)  # a copy: routes are read-only
    shape = tuple(network.value(block.producer.value).shape[1:])
    return a.reshape(a.shape[0], -1).index_select(1, index).reshape((a.shape[0],) + shape)


def _maxpool(step, a: torch.Tensor) -> torch.Tensor:
    k, s, p, d, ceil = step.layer_kind.params(step.call)
    return (F.max_pool1d, F.max_pool2d, F.max_pool3d)[a.dim() - 3](a, k, s, p, d, ceil)


def _linear_step(network: ProperFFNN, block, inp: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """R over the layer's outputs → R over its inputs, with the rule's shares and autograd."""
    rule = block.rule
    lmap = network.linear_map(block, inp)
    terms, contributions, biases = [], [], []
    for share in rule.shares():
        parts, z = [], None
        for part in share.parts:
            u = part.input(TORCH, inp).detach().clone().requires_grad_(True)
            w = lmap.structured(part.weight(TORCH, lmap.weight))
            zp = lmap.forward(u, w)
            parts.append((u, zp))
            z = zp.detach() if z is None else z + zp.detach()
        bias = lmap.bias_for(z)
        contributions.append(z)
        biases.append(None if share.bias is None or bias is None else share.bias(TORCH, bias))
        terms.append(parts)
    if getattr(rule, "reads_relevance", False):
        scales, _ = rule.column(TORCH, tuple(contributions), tuple(biases), relevance=R.unsqueeze(0))
        scales = [s.reshape(R.shape) for s in scales]
    else:
        scales, _ = rule.column(TORCH, tuple(contributions), tuple(biases))
    R_in = torch.zeros_like(inp)
    for scale, parts in zip(scales, terms):
        for u, zp in parts:
            (g,) = torch.autograd.grad(zp, u, (scale * R).detach().reshape(zp.shape), retain_graph=False)
            R_in = R_in + u.detach() * g
    return R_in


__all__ = ["relevance"]
