"""``nrm-verify explain --modality text``: explain one token sequence of a transformer and
write the token heatmap (coloured text), the head × layer matrix and the token-to-token flow
across layers (issue 14, item 6; :mod:`nrm_verify.report.text`).

    nrm-verify explain --modality text                                # built-in seeded causal LM, seeded ids
    nrm-verify explain --modality text --input ids.json --tokens The cat sat --position -1
    nrm-verify explain --modality text --model mypkg.lm:make --input ids.pt --rules CP-LRP

**The model** (``--model MODULE:CLASS`` or ``MODULE:FACTORY()``, optionally ``--state-dict``)
is a torch module with ``get_input_embeddings()`` returning its ``nn.Embedding`` (the protocol of
``transformers``' models, which a plain module can follow in one line). nrm explains the model as
a function of the embeddings (``docs/attention.md``, "Embeddings: the explained input"):

* a ``transformers`` ``PreTrainedModel`` is called as ``model(inputs_embeds=e)`` (with
  ``use_cache=False`` where its config has a cache) and its ``.logits`` are read;
* any other module is called as ``model(e)`` with e of shape (1, T, hidden) and returns the
  logits (a tensor, or an object with ``.logits``, or a tuple whose first element they are).

Logits of shape (1, T, V) are a language model's: ``--position`` (default −1, the last token)
picks the position whose next-token logit ``--target`` (default the arg-max) is explained.
Logits of shape (1, C) are a classifier's, and ``--position`` is refused. The ids are embedded
with the model's own embedding outside the explanation (the lookup is not differentiable in
the token); position embeddings and other constants the model adds go to ⊥ (``AddConstant``).

Without ``--model``: a seeded causal transformer written with torch only (:func:`builtin_model`:
2 pre-norm blocks of 4-head causal self-attention and a GELU MLP, hidden 32, vocabulary 64,
float64), so the command works on a fresh machine without ``transformers``. Without
``--input``: 8 seeded token ids.

**Rules** (``--rules``): ``AttnLRP`` (default: LRP-0 everywhere, every matrix product split
θ = ½ and SwiGLU's product uniform; LXT's efficient AttnLRP), ``CP-LRP`` (LRP-0, θ = 0: the
attention weights held constant, SwiGLU's gate taking nothing), or any preset or rule of
``nrm-verify explain`` (``Epsilon(1e-6)``, ``EpsilonPlus``…) with AttnLRP's splits.

**Files** written into ``--out``: ``index.html`` (the tokens coloured by relevance, the head ×
layer table and the flow tables: :func:`nrm_verify.report.text.text_report`), ``tokens.json``
(R_t = f · Σ_d μ(X_input = (t, d))), ``heads.json`` and ``heads.png`` (R_{l,h} = f · μ(At(l,
heads=[h])) over the attention-weight layers), ``flow.json`` and ``flow.png`` (F_ij = f · μ(At(a,
tokens=[i]) ∩ At(b, tokens=[j])) between consecutive ``--flow-layers``; default the input and
the outputs of up to three transformer blocks) and ``summary.json``.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from nrm_verify.commands.arguments import UsageError, one_line, output_folder
from nrm_verify.commands.progress import Progress

PROG = "nrm-verify explain --modality text"
CONVENTIONS = {"AttnLRP": "equal", "CP-LRP": "values"}
"""The two named conventions of ``--rules``: the split θ of every matrix product (``MatMul``)."""
DEFAULT_LENGTH = 8
MAX_FLOW_BLOCKS = 3


# -- the built-in model -------------------------------------------------------------------------
class _CausalSelfAttention(nn.Module):
    """h-head causal self-attention written with Linear, view/transpose, ``@``, a causal
    ``torch.where`` with finfo.min and softmax: per head A = softmax(Q Kᵀ / √d), O = A V."""

    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads, self.size = heads, hidden // heads
        self.q, self.k, self.v, self.o = (nn.Linear(hidden, hidden) for _ in range(4))

    def split(self, t: torch.Tensor) -> torch.Tensor:
        B, T, _ = t.shape
        return t.view(B, T, self.heads, self.size).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, E = x.shape
        q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.size)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        a = torch.softmax(torch.where(causal, scores, torch.finfo(scores.dtype).min), dim=-1)
        return self.o((a @ v).transpose(1, 2).reshape(B, T, E))


class _PreNormBlock(nn.Module):
    """x + attn(LN(x)), then h + MLP(LN(h)) with MLP = Linear → GELU → Linear."""

    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.ln1, self.attn, self.ln2 = nn.LayerNorm(hidden), _CausalSelfAttention(hidden, heads), nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Linear(2 * hidden, hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class _TinyCausalLM(nn.Module):
    """Token embedding, a learned position embedding (an added constant), pre-norm blocks, a
    final LayerNorm and a language-model head: embeddings (B, T, hidden) → logits (B, T, vocab)."""

    def __init__(self, vocab: int, hidden: int, heads: int, layers: int, positions: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.position = nn.Parameter(torch.zeros(positions, hidden))
        self.blocks = nn.ModuleList(_PreNormBlock(hidden, heads) for _ in range(layers))
        self.ln, self.head = nn.LayerNorm(hidden), nn.Linear(hidden, vocab)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        x = e + self.position[: e.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def builtin_model(seed: int = 0, *, vocab: int = 64, hidden: int = 32, heads: int = 4, layers: int = 2,
                  positions: int = 64) -> nn.Module:
    """The built-in causal LM in float64, eval mode, every weight drawn N(0, 1/fan-in) from
    ``seed`` (LayerNorm scales 1 + N(0, 0.1²), embeddings N(0, 1), position embeddings N(0, 0.1²))."""
    g = torch.Generator().manual_seed(seed)
    model = _TinyCausalLM(vocab, hidden, heads, layers, positions).double().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "position" or ".ln" in name or name.startswith("ln"):
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn(p.shape, generator=g,
                                                                                        dtype=p.dtype))
            elif name == "embed.weight":
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
            else:
                fan_in = p.shape[-1] if p.dim() == 2 else hidden
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) / math.sqrt(fan_in))
    return model


# -- the explained function ---------------------------------------------------------------------
def _is_transformers_model(model: nn.Module) -> bool:
    transformers = sys.modules.get("transformers")
    return transformers is not None and isinstance(model, transformers.PreTrainedModel)


class TokenLogits(nn.Module):
    """embeddings (B, T, hidden) → the logits explained: those at token ``position`` of a
    language model's (B, T, V) output, or a classifier's (B, C) (``position`` None)."""

    def __init__(self, model: nn.Module, position: int | None):
        super().__init__()
        self.model, self.position = model, position
        self.hf = _is_transformers_model(model)

    def logits(self, e: torch.Tensor) -> torch.Tensor:
        if self.hf:
            cache = {"use_cache": False} if getattr(self.model.config, "use_cache", None) is not None else {}
            out = self.model(inputs_embeds=e, **cache)
        else:
            out = self.model(e)
        if hasattr(out, "logits"):
            out = out.logits
        elif isinstance(out, (tuple, list)):
            out = out[0]
        return out

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        out = self.logits(e)
        return out if self.position is None else out[:, self.position, :]


@contextlib.contextmanager
def conventions(split: str):
    """Every ``MatMul`` split ``split`` ("equal": θ = ½, AttnLRP; "values": θ = 0, CP-LRP) and
    SwiGLU's product uniform (AttnLRP) or its SiLU gate taking nothing (CP-LRP) while the
    measure is built; the kinds registered before (the built-in ones or a user's) are
    registered again on exit."""
    import nrm
    from nrm.layers.attention import MatMul
    from nrm.layers.products import Multiply

    before = {name: nrm.layers.REGISTRY.kinds.get(name) for name in ("MatMul", "Multiply")}
    nrm.layers.register(MatMul(theta=split))
    nrm.layers.register(Multiply(split="equal") if split == "equal" else Multiply(gates=("SiLU",)))
    try:
        yield
    finally:
        for name, kind in before.items():
            if kind is None:
                nrm.layers.unregister(name)
            else:
                nrm.layers.register(kind)


def parse_text_rules(text: str | None, x: torch.Tensor):
    """``--rules``: (the rules for ``nrm.explain``, the MatMul split, a description)."""
    from nrm_verify.properties.specs import RuleSpecError, builtin

    text = "AttnLRP" if text is None else text
    if text in CONVENTIONS:
        return None, CONVENTIONS[text], f"{text} (LRP-0, θ = {'½' if text == 'AttnLRP' else '0'})"
    try:
        rules = builtin(text, x=x)
    except RuleSpecError as e:
        message = str(e) if str(e).startswith(repr(text)) else f"{text!r}: {e}"
        raise UsageError(f"--rules {message} (or AttnLRP, CP-LRP)") from None
    return rules, "equal", f"{rules!r} with AttnLRP's θ = ½"


# -- the model and the input --------------------------------------------------------------------
def load_text_model(spec: str | None, state_dict: str | None, seed: int) -> tuple[nn.Module, nn.Embedding, str]:
    """The model (eval mode), its embedding and a description."""
    from nrm_verify.commands.loading import load_model

    if spec is None:
        if state_dict is not None:
            raise UsageError("--state-dict goes with --model module:Class (the built-in text model is seeded)")
        model, what = builtin_model(seed), f"built-in causal LM (2 blocks, 4 heads, hidden 32, seed {seed})"
    else:
        if ":" not in spec:
            raise UsageError(f"--model {spec!r}: a text model is given as module:Class or module:factory()")
        model, what = load_model(spec, state_dict, seed)
    get = getattr(model, "get_input_embeddings", None)
    embedding = get() if callable(get) else None
    if not isinstance(embedding, nn.Embedding):
        raise UsageError(f"--model {what}: has no get_input_embeddings() returning an nn.Embedding; a text model "
                         "must give its token embedding (transformers' models do; add the method to a plain module)")
    return model.eval(), embedding, what


def load_ids(spec: str | None, vocab: int, seed: int) -> tuple[torch.Tensor, str]:
    """Token ids (1, T): from a .pt tensor or a .json list of whole numbers, or seeded."""
    if spec is None:
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, vocab, (1, DEFAULT_LENGTH), generator=g)
        return ids, f"{DEFAULT_LENGTH} seeded token ids (seed {seed})"
    path = Path(spec)
    if not path.is_file():
        raise UsageError(f"--input: no such file: {spec}")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise UsageError(f"--input {spec}: not JSON ({one_line(e)})") from None
        ok = isinstance(data, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in data)
        if not ok:
            raise UsageError(f"--input {spec}: a text input is a JSON list of token ids (whole numbers)")
        ids = torch.tensor(data, dtype=torch.long).reshape(-1)
    elif path.suffix.lower() in (".pt", ".pth"):
        try:
            ids = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise UsageError(f"--input {spec}: cannot read it with torch.load ({type(e).__name__})") from None
        if not isinstance(ids, torch.Tensor) or ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise UsageError(f"--input {spec}: holds a {getattr(ids, 'dtype', type(ids).__name__)}; a text input is "
                             "an integer tensor of token ids, shape (T,) or (1, T)")
        if ids.dim() == 2 and ids.shape[0] == 1:
            ids = ids[0]
        if ids.dim() != 1:
            raise UsageError(f"--input {spec}: token ids of shape {tuple(ids.shape)}; give one sequence, (T,) or "
                             "(1, T)")
    else:
        raise UsageError(f"--input {spec}: a text input is token ids in a .json list or a .pt tensor")
    return _checked_ids(ids.long(), vocab, spec), f"{spec} ({ids.numel()} tokens)"


def _checked_ids(ids: torch.Tensor, vocab: int, spec: str) -> torch.Tensor:
    if ids.numel() == 0:
        raise UsageError(f"--input {spec}: holds no token ids")
    bad = [int(i) for i in ids if not 0 <= int(i) < vocab]
    if bad:
        raise UsageError(f"--input {spec}: token id {bad[0]} is not in the model's vocabulary 0 … {vocab - 1}")
    return ids.reshape(1, -1)


def display_tokens(tokens: list[str] | None, ids: torch.Tensor) -> list[str]:
    """``--tokens`` (one string per position) or, by default, "t<i>:<id>"."""
    n = ids.shape[1]
    if tokens is None:
        return [f"t{i}:{int(v)}" for i, v in enumerate(ids[0])]
    if len(tokens) != n:
        raise UsageError(f"--tokens: {len(tokens)} strings for the {n} token ids of the input; give one per token")
    return list(tokens)


def embed(embedding: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
    """The explained input: the embedding rows of ``ids``, detached, finite."""
    with torch.no_grad():
        e = embedding(ids).detach().clone()
    if not bool(torch.isfinite(e).all()):
        rows = sorted({int(ids[0, t]) for t in torch.nonzero(~torch.isfinite(e).all(-1)[0]).reshape(-1)})
        raise UsageError(f"the embeddings of token ids {rows[:5]} hold NaN or Inf; the model's embedding table is "
                         "not finite there")
    return e


# -- the measure --------------------------------------------------------------------------------
def resolve_position(position: int | None, logits: torch.Tensor) -> int | None:
    """The output position explained: None for a classifier's (1, C) logits; for (1, T, V)
    logits ``position`` in −T … T − 1 (default −1), returned in 0 … T − 1."""
    if logits.dim() == 2:
        if position is not None:
            raise UsageError(f"--position {position}: the model's logits have shape {tuple(logits.shape)} (a "
                             "classifier, no token dimension); leave --position out")
        return None
    if logits.dim() != 3:
        raise UsageError(f"the model returns logits of shape {tuple(logits.shape)}; expected (1, T, V) for a "
                         "language model or (1, C) for a classifier")
    T = logits.shape[1]
    position = -1 if position is None else position
    if not -T <= position < T:
        raise UsageError(f"--position {position}: the output has {T} positions; give -{T} … {T - 1} (-1: the last)")
    return position % T


def measure_text(model: nn.Module, e: torch.Tensor, *, position: int | None = None, target: int | None = None,
                 rules=None, split: str = "equal"):
    """(the explained module, the position, the target, the measure) of the embeddings ``e``
    (1, T, hidden) for the logit ``target`` (default the arg-max) at ``position``; the
    Python form of what the command computes."""
    import nrm

    probe = TokenLogits(model, None).eval()
    with torch.no_grad():
        try:
            logits = probe(e)
        except Exception as ex:
            raise UsageError(f"the model does not run on embeddings of shape {tuple(e.shape)}: "
                             f"{type(ex).__name__}: {one_line(ex)[:300]}") from None
    position = resolve_position(position, torch.as_tensor(logits))
    f_all = logits if position is None else logits[:, position, :]
    if target is None:
        target = int(f_all[0].argmax())
    elif target >= f_all.shape[-1]:
        raise UsageError(f"--target {target}: the model has {f_all.shape[-1]} outputs (0 … {f_all.shape[-1] - 1})")
    wrapped = TokenLogits(model, position).eval()
    with conventions(split):
        m = nrm.explain(wrapped, e, target=target, rules=rules)
    return wrapped, position, target, m


# -- the layers shown ---------------------------------------------------------------------------
def attention_layers(m) -> list[str]:
    """The attention-weight layers: a softmax layer of per-sample shape (heads, T, S)."""
    return [n for n in m.layers if n.split(".")[-1].startswith("softmax") and len(m.layer_shape(n)) == 3]


def default_flow_layers(m) -> list[str]:
    """The input and the outputs of the last (up to three) transformer blocks: of the layers
    named ``<prefix>.<number>`` (an ``nn.ModuleList``'s entries) with the input's per-sample
    shape, those of the prefix with the most entries; else the last layer of that shape (a
    transformers block returns a tuple, so its output is no layer of its own: GPT-2's default is
    the input and the last token layer)."""
    shape = tuple(m.layer_shape("input"))
    same = [n for n in m.layers[1:] if tuple(m.layer_shape(n)) == shape and n != "output"]
    groups: dict[str, list[str]] = {}
    for n in same:
        found = re.fullmatch(r"(.+)\.\d+", n)
        if found:
            groups.setdefault(found.group(1), []).append(n)
    if groups:
        blocks = max(groups.values(), key=lambda names: (len(names), -len(names[0])))
        chosen = sorted(blocks, key=m.layer_index)[-MAX_FLOW_BLOCKS:]
    else:
        chosen = sorted(same, key=m.layer_index)[-1:]
    return ["input"] + sorted(chosen, key=m.layer_index)


def check_flow_layers(m, layers: list[str]) -> list[str]:
    if len(layers) < 2:
        raise UsageError(f"--flow-layers: give at least two token layers, got {layers}")
    for name in layers:
        if name not in m.layers:
            raise UsageError(f"--flow-layers: unknown layer {name!r}; token layers: "
                             f"{', '.join(n for n in m.layers if len(m.layer_shape(n)) == 2)}")
        if len(m.layer_shape(name)) != 2 or name == "output":
            raise UsageError(f"--flow-layers: {name!r} has per-sample shape {tuple(m.layer_shape(name))}; a token "
                             "layer is (tokens, hidden)")
    index = [m.layer_index(n) for n in layers]
    if index != sorted(index) or len(set(index)) != len(index):
        raise UsageError(f"--flow-layers: {layers} are not in the order of the network (input first), each once")
    return layers


# -- the files ----------------------------------------------------------------------------------
@dataclass
class TextResult:
    """What the command writes, in numbers: token, head and flow relevance of sample 0."""

    tokens: list[str]
    relevance: list[float]
    attention: list[str]
    heads: list[list[float]]
    flow: list[dict]


def text_relevance(m, tokens: list[str], flow_layers: list[str]) -> TextResult:
    from nrm_verify.report.text import head_relevance, token_flow, token_relevance

    layers = attention_layers(m)
    heads = head_relevance(m, layers).tolist() if layers else []
    pairs = [{"below": a, "above": b, "matrix": token_flow(m, a, b).tolist()}
             for a, b in zip(flow_layers, flow_layers[1:])]
    return TextResult(tokens, token_relevance(m).tolist(), layers, heads, pairs)


def _figure_heads(path: Path, result: TextResult) -> Path:
    from nrm_verify.report import figures

    plt = figures.pyplot()
    H = torch.tensor(result.heads, dtype=torch.float64) if result.heads else torch.zeros(0, 0, dtype=torch.float64)
    fig, ax = plt.subplots(figsize=(2 + 0.6 * max(1, H.shape[1]), 1.5 + 0.45 * max(1, H.shape[0])))
    if H.numel():
        limit = figures.symmetric_limit(H.numpy())
        im = ax.imshow(H.numpy(), cmap="bwr", vmin=-limit, vmax=limit, aspect="auto")
        fig.colorbar(im, ax=ax, label="f · μ(At(layer, heads=[h]))")
        ax.set_xticks(range(H.shape[1]), [str(h) for h in range(H.shape[1])])
        ax.set_yticks(range(H.shape[0]), result.attention)
    else:
        ax.text(0.5, 0.5, "no attention-weight (softmax) layer", ha="center", va="center")
    ax.set_xlabel("head")
    ax.set_title("relevance through each head")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _figure_flow(path: Path, result: TextResult) -> Path:
    from nrm_verify.report import figures

    plt = figures.pyplot()
    n = len(result.flow)
    size = max(3.0, 0.35 * len(result.tokens))
    fig, axes = plt.subplots(1, n, figsize=(1 + (size + 1) * n, size + 1), squeeze=False)
    for ax, pair in zip(axes[0], result.flow):
        F = torch.tensor(pair["matrix"], dtype=torch.float64).numpy()
        limit = figures.symmetric_limit(F)
        im = ax.imshow(F, cmap="bwr", vmin=-limit, vmax=limit)
        fig.colorbar(im, ax=ax, fraction=0.046)
        labels = result.tokens if len(result.tokens) <= 40 else None
        if labels is not None and F.shape[0] == len(labels) and F.shape[1] == len(labels):
            ax.set_yticks(range(len(labels)), labels, fontsize=7)
            ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=90)
        ax.set_ylabel(f"token i at {pair['below']}")
        ax.set_xlabel(f"token j at {pair['above']}")
    fig.suptitle("token flow f · μ(At(a, tokens=[i]) ∩ At(b, tokens=[j]))")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_files(out: Path, m, result: TextResult, ids: torch.Tensor) -> dict[str, str]:
    """index.html, tokens.json, heads.json/png, flow.json/png; returns {key: path}."""
    from nrm_verify.report.text import text_report

    ends = (result.flow[0]["below"], result.flow[-1]["above"]) if result.flow else None
    files = {"page": str(text_report(m, result.tokens, out, attention=result.attention, flow=ends))}
    data = {"tokens": {"tokens": result.tokens, "ids": [int(i) for i in ids[0]], "relevance": result.relevance,
                       "f": float(m.f[0]), "sum": sum(result.relevance)},
            "heads": {"layers": result.attention, "relevance": result.heads},
            "flow": {"layers": [result.flow[0]["below"]] + [p["above"] for p in result.flow] if result.flow else [],
                     "pairs": result.flow}}
    for key, value in data.items():
        (out / f"{key}.json").write_text(json.dumps(value, indent=1))
        files[f"{key}_json"] = str(out / f"{key}.json")
    files["heads"] = str(_figure_heads(out / "heads.png", result))
    files["flow"] = str(_figure_flow(out / "flow.png", result))
    return files


# -- the run ------------------------------------------------------------------------------------
def run(args) -> int:
    """The command; 0 when everything was written, 2 with one line on stderr on a usage error."""
    import nrm

    bar = Progress(5, enabled=not args.quiet)
    try:
        return _run(args, bar)
    except (UsageError, nrm.NRMError) as e:
        message = str(e)
    except OSError as e:
        message = f"cannot write into --out {args.out}: {e.strerror or e}" + (f" ({e.filename})" if e.filename else "")
    bar.abort()
    print(f"{PROG}: error: {one_line(message)}", file=sys.stderr)
    return 2


def _prepare(args) -> Path:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tokens is not None and not args.tokens:
        raise UsageError("--tokens: give one string per token")
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        raise UsageError("the figures need matplotlib: pip install 'nrm-verify[report]'") from None
    return output_folder(args.out)


def _run(args, bar) -> int:
    out = _prepare(args)
    bar.step("load the model and the token ids")
    model, embedding, model_what = load_text_model(args.model, args.state_dict, args.seed)
    ids, input_what = load_ids(args.input, embedding.num_embeddings, args.seed)
    tokens = display_tokens(args.tokens, ids)
    e = embed(embedding, ids)
    rules, split, rules_what = parse_text_rules(args.rules, e)
    bar.step("forward pass and kernels (nrm.explain)")
    _, position, target, m = measure_text(model, e, position=args.position, target=args.target, rules=rules,
                                          split=split)
    flow_layers = check_flow_layers(m, args.flow_layers or default_flow_layers(m))
    bar.step(f"token, head and flow relevance ({len(flow_layers) - 1} flow pairs)")
    result = text_relevance(m, tokens, flow_layers)
    bar.step("figures and page")
    files = write_files(out, m, result, ids)
    bar.step("summary")
    summary = {"modality": "text", "model": model_what, "input": input_what, "ids": [int(i) for i in ids[0]],
               "tokens": tokens, "position": position, "target": target, "f": float(m.f[0]), "rules": rules_what,
               "token_relevance_sum": sum(result.relevance), "attention_layers": result.attention,
               "flow_layers": flow_layers, "files": files}
    summary["seconds"] = bar.finish()
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"explained {model_what} at {input_what}: position {position}, target {target}, f = {float(m.f[0]):.6g}; "
          f"{len(files) + 1} files in {out}/ ({summary['seconds']:.1f} s)")
    return 0
