"""Recurrent layers: ``nn.LSTM`` and ``nn.GRU`` read as the operations that define them.

torch runs either as one fused call (``torch.lstm``, ``torch.gru``) that nrm cannot see into.
The capture runs the module's own forward unrecorded, then these decompositions recorded —
step by step, layer by layer, direction by direction — and requires the two outputs to agree
within 10³ ulp of the largest value (:class:`~nrm.errors.CaptureMismatchError` otherwise);
the model goes on with the decomposition's output. For the layer l, direction d, step t
(x_t the layer's input, h and c the previous step's state, zero at the first step)::

    LSTM   i, f, g, o = chunk₄(W_ih x_t + b_ih + W_hh h + b_hh)
           c_t = σ(f) ⊙ c + σ(i) ⊙ tanh(g),     h_t = σ(o) ⊙ tanh(c_t)
    GRU    r, z, n = chunk₃(W_ih x_t + b_ih),  r', z', n' = chunk₃(W_hh h + b_hh)
           n_t = tanh(n + σ(r + r') ⊙ n'),       h_t = σ(−(z + z')) ⊙ n_t + σ(z + z') ⊙ h

(GRU's 1 − σ(a) written σ(−a), the same number within rounding, so that both are gates; its
zero initial state written 0 · (an input-derived tensor), so that at the first step too the
reset gate multiplies W_hh h + b_hh = b_hh as a product of activations, whose signal takes all.)
Every product has a sigmoid factor, a gate: under the products' default split (``"signal"``)
the gates take nothing and the signal — the cell's candidate, the previous cell state, the
hidden projection — takes all, which is LSTM-LRP's rule (Arras et al. 2017, 2019: "signal
takes all"). ``Multiply(split="equal")`` or ``"proportional"`` choose otherwise, as for any
product. Sigmoid and tanh take the identity rule (the defaults of the activation kinds).

``nn.RNN`` (tanh or relu, no gate) is read the same way, and the cells ``nn.LSTMCell``,
``nn.GRUCell``, ``nn.RNNCell`` as one step in the model's own loop (:class:`CellDecomposition`:
their state is batch first, so it is read wherever the model uses it).

Read: ``batch_first=True``, and ``batch_first=False`` when nrm explains one sample (the input
(T, B, F) transposed to (B, T, F), a view with one sample, and the output back); any number of layers, one or both
directions, with or without biases, an initial state given as constants (a product of a gate
with a constant state — σ(f) ⊙ c₀ — is then a diagonal linear map of the gate, which takes its
share at the first step; from the default zero state the gates take nothing at every step). The
final state ``(h_n, c_n)`` is (layers · directions, batch, hidden), the batch in dimension 1:
read for a batch of one sample (:mod:`nrm.layers.one_sample`: ``h_n[-1]``), refused by name at
its use for more (``output[:, -1, :hidden]`` is ``h_n[-1]`` of a one-directional model).
Refused, by name: ``batch_first=False`` when nrm explains more than one sample
(``nrm.capture``), LSTM's ``proj_size``, dropout in training mode, unbatched and packed inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import handle_torch_function, has_torch_function


def final_state(states: list) -> torch.Tensor:
    """h_n (or c_n) as the module returns it: the last step's state of each layer and
    direction, stacked in dimension 0 (layers · directions, batch, hidden)."""
    if has_torch_function(tuple(states)):
        return handle_torch_function(final_state, tuple(states), states)
    return torch.stack(states)


FINAL_STATE_REFUSAL = (
    "is the final state (h_n, c_n) of an nn.LSTM, nn.GRU or nn.RNN: (layers·directions, batch, hidden), the batch in "
    "dimension 1, which nrm does not read; read the output instead (output[:, -1, :hidden] is h_n[-1] of a "
    "one-directional model)")


class RecurrentDecomposition:
    """What :class:`LSTMDecomposition`, :class:`GRUDecomposition` and :class:`RNNDecomposition`
    share: the arguments, the refusals, the loop over layers, directions and steps."""

    module: type = nn.RNNBase

    def refusal(self, module: nn.Module, args: tuple, kwargs: dict) -> str | None:
        try:
            x, hx = self._arguments(*args, **kwargs)
        except TypeError as e:
            return f"its arguments are not those of {type(module).__name__}.forward ({e})"
        if getattr(module, "proj_size", 0):
            return "has proj_size > 0 (a projected LSTM), which nrm does not decompose"
        if module.training and module.dropout:
            return "applies dropout between layers in training mode; call model.eval()"
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            return ("takes a PackedSequence or an unbatched input; nrm reads (B, T, F) tensors (pad the sequences and "
                    "read the output at each sequence's last position)")
        return None

    @staticmethod
    def _arguments(input, hx=None):
        return input, hx

    def _weights(self, module: nn.Module, layer: int, direction: int):
        suffix = f"_l{layer}" + ("_reverse" if direction else "")
        w_ih, w_hh = getattr(module, "weight_ih" + suffix), getattr(module, "weight_hh" + suffix)
        if not module.bias:
            return w_ih, w_hh, None, None
        return w_ih, w_hh, getattr(module, "bias_ih" + suffix), getattr(module, "bias_hh" + suffix)

    def _initial(self, module: nn.Module, hx, k: int):
        """The initial state of layer · direction k, or None for zeros."""
        if hx is None:
            return None
        if isinstance(hx, (tuple, list)):
            return tuple(t[k] for t in hx)
        return hx[k]

    def __call__(self, module: nn.Module, *args, **kwargs):
        x, hx = self._arguments(*args, **kwargs)
        if module.batch_first:
            return self._batch_first(module, x, hx)
        output, final = self._batch_first(module, x.transpose(0, 1), hx)  # one sample: the transposes are views
        return output.transpose(0, 1), final

    def _batch_first(self, module: nn.Module, x: torch.Tensor, hx):
        """The output (B, T, directions · H) and the final state from the input (B, T, F)."""
        directions = 2 if module.bidirectional else 1
        layer_in, finals = x, []
        for layer in range(module.num_layers):
            outs = []
            for d in range(directions):
                k = layer * directions + d
                weights = self._weights(module, layer, d)
                projected = F.linear(layer_in, weights[0], weights[2])  # W_ih x_t + b_ih for every step at once
                state = self._initial(module, hx, k)
                hs = [None] * x.shape[1]
                for t in (range(x.shape[1]) if d == 0 else reversed(range(x.shape[1]))):
                    state = self.step(module, projected[:, t], state, weights)
                    hs[t] = state[0] if isinstance(state, tuple) else state
                outs.append(torch.stack(hs, dim=1))
                finals.append(state)
            layer_in = outs[0] if directions == 1 else torch.cat(outs, dim=2)
        return layer_in, self.final(finals)

    def step(self, module: nn.Module, projected, state, weights):
        """One step: the new state from W_ih x_t + b_ih (``projected``), the previous state (None:
        zeros) and the weights (W_ih, W_hh, b_ih, b_hh)."""
        raise NotImplementedError(f"{type(self).__name__} must define step()")  # abstract

    def final(self, finals: list):
        """The module's final state from each layer and direction's last state."""
        raise NotImplementedError(f"{type(self).__name__} must define final()")  # abstract


class LSTMDecomposition(RecurrentDecomposition):
    """``nn.LSTM(batch_first=True)`` (see the module docstring for the equations)."""

    module = nn.LSTM

    def step(self, module, projected, state, weights):
        _, w_hh, _, b_hh = weights
        if state is None:  # zero state: W_hh 0 + b_hh is the bias alone, f ⊙ 0 vanishes
            pre = projected if b_hh is None else projected + b_hh
        else:
            pre = projected + F.linear(state[0], w_hh, b_hh)
        i, f, g, o = pre.chunk(4, 1)
        cell = torch.sigmoid(i) * torch.tanh(g)
        if state is not None:
            cell = torch.sigmoid(f) * state[1] + cell
        return torch.sigmoid(o) * torch.tanh(cell), cell

    def final(self, finals):
        return final_state([s[0] for s in finals]), final_state([s[1] for s in finals])


class GRUDecomposition(RecurrentDecomposition):
    """``nn.GRU(batch_first=True)`` (see the module docstring for the equations)."""

    module = nn.GRU

    def step(self, module, projected, state, weights):
        _, w_hh, _, b_hh = weights
        r, z, n = projected.chunk(3, 1)
        if state is None and b_hh is None:  # zero state, no bias: W_hh 0 = 0
            return torch.sigmoid(-z) * torch.tanh(n)
        first = state is None
        if first:  # the zero state as 0 · (an input-derived tensor): the reset gate then multiplies W_hh 0 + b_hh
            # as at every later step, a product whose signal (here the bias alone) takes all
            state = projected[:, :w_hh.shape[1]] * 0.0
        hr, hz, hn = F.linear(state, w_hh, b_hh).chunk(3, 1)
        r, z = r + hr, z + hz
        n = torch.tanh(n + torch.sigmoid(r) * hn)
        if first:  # σ(z) ⊙ 0 vanishes
            return torch.sigmoid(-z) * n
        return torch.sigmoid(-z) * n + torch.sigmoid(z) * state

    def final(self, finals):
        return final_state(finals)


class RNNDecomposition(RecurrentDecomposition):
    """``nn.RNN(batch_first=True)``: h_t = act(W_ih x_t + b_ih + W_hh h + b_hh), act tanh or relu
    (its ``nonlinearity``); no product, so no gate."""

    module = nn.RNN

    def step(self, module, projected, state, weights):
        _, w_hh, _, b_hh = weights
        if state is None:
            pre = projected if b_hh is None else projected + b_hh
        else:
            pre = projected + F.linear(state, w_hh, b_hh)
        return torch.tanh(pre) if module.nonlinearity == "tanh" else torch.relu(pre)

    def final(self, finals):
        return final_state(finals)


class CellDecomposition:
    """``nn.LSTMCell``, ``nn.GRUCell``, ``nn.RNNCell`` (one step, in a loop the model writes
    itself): the step of the matching layer's equations (:class:`LSTMDecomposition`,
    :class:`GRUDecomposition`, :class:`RNNDecomposition`) on (B, F) and the given state (h, or
    (h, c) for the LSTM cell; zeros when none), batch first, so the new state is read wherever
    the model uses it. Checked against the module's own output like the layers. Refused, by
    name: an unbatched input."""

    def __init__(self, layer: RecurrentDecomposition):
        self.layer = layer

    @staticmethod
    def _arguments(input, hx=None):
        return input, hx

    def refusal(self, module: nn.Module, args: tuple, kwargs: dict) -> str | None:
        try:
            x, _ = self._arguments(*args, **kwargs)
        except TypeError as e:
            return f"its arguments are not those of {type(module).__name__}.forward ({e})"
        if not isinstance(x, torch.Tensor) or x.dim() != 2:
            return "takes an unbatched input; nrm reads (B, F)"
        return None

    def __call__(self, module: nn.Module, *args, **kwargs):
        x, hx = self._arguments(*args, **kwargs)
        weights = (module.weight_ih, module.weight_hh, module.bias_ih, module.bias_hh)
        return self.layer.step(module, F.linear(x, module.weight_ih, module.bias_ih), hx, weights)
