"""DIG's GNN-LRP (``dig.xgraph.method.gnn_lrp.GNN_LRP``, dive-into-graphs 1.1.0) as an
algorithm: one forward and one backward pass **per walk**, re-implemented here from its
source (read, not copied), so that it reads PyG 2.8's own ``GCNConv``/``GINConv`` models (DIG's
reads only its own layer classes, written against PyG 2.0). DIG itself runs in the peer
environment through ``peer_tests/dig_native.py`` (shims for imports its GNN-LRP never calls,
adapters to PyG 2.8's renamed internals), and ``peer_tests/test_dig.py`` checks this
re-implementation against it walk by walk.

What DIG computes for a walk (i_0, i_1, …, i_L) through L graph layers (its
``compute_walk_score``):

* each graph layer l runs twice on the same input h: the standard layer, std = act(layer(h)),
  and a copy whose weight is ρ(W) = W + γ_l W⁺ (bias unchanged), p = layer_γ(h); the layer's
  output is q = p · (std / p).detach() (DIG adds 1e-30 to p, negligible here), so that its
  value is std and its gradient is the γ-rule's (Schnake et al. 2022, eq. 8, the rule on the
  dense map Â ⊗ W: a GCN layer is one linear map, normalized once over every (i', f'));
* the walk is picked by masking: h = q · 1[node = i_{l+1}] + q.detach() · (1 − 1[…]);
* the layers after the walk (DIG's ``fc_steps``: pooling, linear head) run the same γ trick
  with γ = 1;
* the walk's relevance is x[i_0] · ∂f/∂x[i_0], from one ``torch.autograd.grad``.

DIG's γ are ``[2, 1, 1]`` for the graph layers and 1 for the head (hard-coded). For a
GIN layer DIG modifies each Linear of its MLP as ``W + γ W`` (not ``W⁺``: with bias-free
Linears this is LRP-0 for any γ, since the factor (1 + γ) cancels in p and std / p; with a
bias it is LRP-0 with the bias divided by 1 + γ) — kept here as DIG does it
(``gin_plus=False``), with ``gin_plus=True`` giving the γ-rule proper.

Models read: an ``nn.Module`` with ``convs`` (a ModuleList of ``GCNConv`` / ``GINConv`` whose
``nn`` is an ``nn.Sequential`` of Linear and ReLU), a ReLU after every conv, an optional
``pool`` (a callable ``pool(h, batch)``), and ``head`` (an ``nn.Linear``), as built by
``benchmarks/gnn_groundtruth.py``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["DIG_GAMMAS", "walk_relevance", "walk_relevances"]

DIG_GAMMAS = (2.0, 1.0, 1.0)  # DIG's gamma = [2, 1, 1]; layers past the third get 1
DIG_HEAD_GAMMA = 1.0
_EPS = 1e-30


def _gamma_linear(lin: nn.Linear, gamma: float, plus: bool = True) -> nn.Linear:
    out = copy.deepcopy(lin)
    with torch.no_grad():
        w = lin.weight
        out.weight.copy_(w + gamma * (w.clamp(min=0) if plus else w))
    return out


def _trick(std_pre: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Value std_pre, gradient the γ-modified layer's scaled by std_pre / p."""
    return (p + _EPS) * (std_pre / (p + _EPS)).detach()


class _Prepared:
    """The γ copies of every layer, made once (DIG builds them once per explained node)."""

    def __init__(self, model: nn.Module, gammas, head_gamma: float, gin_plus: bool):
        from torch_geometric.nn import GCNConv, GINConv

        self.model, self.steps = model, []
        for i, conv in enumerate(model.convs):
            g = gammas[i] if i < len(gammas) else 1.0
            if isinstance(conv, GCNConv):
                twin = copy.deepcopy(conv)
                with torch.no_grad():
                    w = conv.lin.weight
                    twin.lin.weight.copy_(w + g * w.clamp(min=0))
                self.steps.append(("gcn", conv, twin))
            elif isinstance(conv, GINConv):
                lins = [(m, _gamma_linear(m, g, gin_plus)) if isinstance(m, nn.Linear) else (m, None) for m in conv.nn]
                self.steps.append(("gin", conv, lins))
            else:
                raise TypeError(f"DIG's GNN-LRP reads GCNConv and GINConv layers, got {type(conv).__name__}")
        self.head = (model.head, _gamma_linear(model.head, head_gamma))

    def layer(self, i: int, h: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        kind, conv, twin = self.steps[i]
        if kind == "gcn":
            return torch.relu(_trick(conv(h, edge_index), twin(h, edge_index)))
        a = (1 + conv.eps) * h + conv.propagate(edge_index, x=(h, h), size=None)  # GIN's sum, as a gradient
        for module, gamma_module in twin:
            a = _trick(module(a), gamma_module(a)) if gamma_module is not None else module(a)
        return torch.relu(a)


def _score(prep: _Prepared, x, edge_index, walk, target: int, row: int, batch) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    h = x
    for i in range(len(prep.steps)):
        q = prep.layer(i, h, edge_index)
        mask = torch.zeros(h.shape[0], 1, dtype=q.dtype)
        mask[walk[i + 1]] = 1
        h = q * mask + q.detach() * (1 - mask)
    if getattr(prep.model, "pool", None) is not None:
        h = prep.model.pool(h, batch)
    lin, twin = prep.head
    h = _trick(lin(h), twin(h))
    (grad,) = torch.autograd.grad(h[row, target], x)
    return (grad[walk[0]] * x[walk[0]]).sum().detach()


def walk_relevance(model: nn.Module, x: torch.Tensor, edge_index: torch.Tensor, walk, target: int, row: int = 0,
                   *, batch=None, gammas=DIG_GAMMAS, head_gamma: float = DIG_HEAD_GAMMA,
                   gin_plus: bool = False) -> torch.Tensor:
    """DIG's relevance of one node walk (i_0, …, i_L) for output ``[row, target]`` (row: the node,
    or the graph with ``batch``): one forward and one backward pass."""
    return walk_relevances(model, x, edge_index, [walk], target, row, batch=batch, gammas=gammas,
                           head_gamma=head_gamma, gin_plus=gin_plus)[0]


def walk_relevances(model: nn.Module, x: torch.Tensor, edge_index: torch.Tensor, walks, target: int, row: int = 0,
                    *, batch=None, gammas=DIG_GAMMAS, head_gamma: float = DIG_HEAD_GAMMA,
                    gin_plus: bool = False) -> torch.Tensor:
    """DIG's relevances of many walks, one backward pass each (its loop), tensor (len(walks),)."""
    prep = _Prepared(model, gammas, head_gamma, gin_plus)
    return torch.stack([_score(prep, x, edge_index, list(w), target, row, batch) for w in walks])
