"""What a new user with a transformers model meets: each family of a list (a small random
configuration, no download, eval mode, six seeded tokens at ``inputs_embeds``, the logits at the last
position — or the class logits, or the last hidden state at the last position for a bare
encoder; the target is its output of largest magnitude: OPT's logit of its padding token is
exactly 0) explained with nrm's defaults, ``check="full"``, nothing patched: f against the
model's output and L1 at every layer checked, or the first line of the refusal recorded.

Run from the peer environment (transformers is not a dependency of nrm-verify)::

    PYTHONPATH=. .venv-peers/bin/python benchmarks/transformers_survey.py [--dtype float32] [FAMILY ...]

Writes ``benchmarks/results/transformers_survey.json`` and prints one row per family.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from pathlib import Path

import torch

import nrm
from nrm_verify import laws

RESULTS = Path(__file__).parent / "results" / "transformers_survey.json"
COMMON = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
              max_position_embeddings=16)
GQA = dict(COMMON, num_key_value_heads=1)


def _families() -> dict:
    import transformers as T

    return {
        "bert": lambda: T.BertForSequenceClassification(T.BertConfig(**COMMON)),
        "roberta": lambda: T.RobertaForSequenceClassification(T.RobertaConfig(**COMMON)),
        "xlm_roberta": lambda: T.XLMRobertaForSequenceClassification(T.XLMRobertaConfig(**COMMON)),
        "distilbert": lambda: T.DistilBertForSequenceClassification(T.DistilBertConfig(
            vocab_size=50, dim=16, n_layers=2, n_heads=2, hidden_dim=24, max_position_embeddings=16)),
        "albert": lambda: T.AlbertForSequenceClassification(T.AlbertConfig(**COMMON, embedding_size=16)),
        "electra": lambda: T.ElectraForSequenceClassification(T.ElectraConfig(**COMMON, embedding_size=16)),
        "ernie": lambda: T.ErnieForSequenceClassification(T.ErnieConfig(**COMMON)),
        "megatron_bert": lambda: T.MegatronBertForSequenceClassification(T.MegatronBertConfig(**COMMON)),
        "mobilebert": lambda: T.MobileBertForSequenceClassification(T.MobileBertConfig(
            **COMMON, embedding_size=16, intra_bottleneck_size=16, true_hidden_size=16)),
        "squeezebert": lambda: T.SqueezeBertForSequenceClassification(T.SqueezeBertConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
            embedding_size=16, q_groups=2, k_groups=2, v_groups=2, post_attention_groups=2, intermediate_groups=2,
            output_groups=2)),
        "deberta_v2": lambda: T.DebertaV2ForSequenceClassification(T.DebertaV2Config(**COMMON)),
        "funnel": lambda: T.FunnelForSequenceClassification(T.FunnelConfig(
            vocab_size=50, d_model=16, n_head=2, d_head=8, d_inner=24, block_sizes=[1, 1])),
        "t5_encoder": lambda: T.T5EncoderModel(T.T5Config(vocab_size=50, d_model=16, d_kv=8, d_ff=24, num_layers=2,
                                                          num_heads=2)),
        "gpt2": lambda: T.GPT2LMHeadModel(T.GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=2, n_head=2)),
        "gpt_neo": lambda: T.GPTNeoForCausalLM(T.GPTNeoConfig(
            vocab_size=50, hidden_size=16, num_layers=2, num_heads=2, attention_types=[[["global", "local"], 1]],
            max_position_embeddings=16, window_size=4)),
        "gptj": lambda: T.GPTJForCausalLM(T.GPTJConfig(vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=16,
                                                       rotary_dim=4)),
        "gpt_neox": lambda: T.GPTNeoXForCausalLM(T.GPTNeoXConfig(**COMMON)),
        "gpt_bigcode": lambda: T.GPTBigCodeForCausalLM(T.GPTBigCodeConfig(
            vocab_size=50, n_positions=16, n_embd=16, n_layer=2, n_head=2, multi_query=True)),
        "opt": lambda: T.OPTForCausalLM(T.OPTConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, ffn_dim=24,
            max_position_embeddings=16, word_embed_proj_dim=16)),
        "bloom": lambda: T.BloomForCausalLM(T.BloomConfig(vocab_size=50, hidden_size=16, n_layer=2, n_head=2)),
        "xlnet": lambda: T.XLNetLMHeadModel(T.XLNetConfig(vocab_size=50, d_model=16, n_layer=2, n_head=2,
                                                          d_inner=24)),
        "falcon": lambda: T.FalconForCausalLM(T.FalconConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, new_decoder_architecture=False,
            multi_query=True, alibi=False, bias=False)),
        "llama": lambda: T.LlamaForCausalLM(T.LlamaConfig(**GQA)),
        "mistral": lambda: T.MistralForCausalLM(T.MistralConfig(**GQA)),
        "qwen2": lambda: T.Qwen2ForCausalLM(T.Qwen2Config(**GQA)),
        "qwen3": lambda: T.Qwen3ForCausalLM(T.Qwen3Config(**GQA, head_dim=8)),
        "gemma": lambda: T.GemmaForCausalLM(T.GemmaConfig(**GQA, head_dim=8)),
        "gemma2": lambda: T.Gemma2ForCausalLM(T.Gemma2Config(**GQA, head_dim=8)),
        "phi": lambda: T.PhiForCausalLM(T.PhiConfig(**COMMON)),
        "stablelm": lambda: T.StableLmForCausalLM(T.StableLmConfig(**GQA)),
        "starcoder2": lambda: T.Starcoder2ForCausalLM(T.Starcoder2Config(**GQA)),
        "granite": lambda: T.GraniteForCausalLM(T.GraniteConfig(**GQA)),
        "cohere": lambda: T.CohereForCausalLM(T.CohereConfig(**GQA)),
        "olmo": lambda: T.OlmoForCausalLM(T.OlmoConfig(**COMMON)),
        "olmo2": lambda: T.Olmo2ForCausalLM(T.Olmo2Config(**COMMON)),
        "helium": lambda: T.HeliumForCausalLM(T.HeliumConfig(**GQA, head_dim=8)),
        "nemotron": lambda: T.NemotronForCausalLM(T.NemotronConfig(**GQA)),
        "persimmon": lambda: T.PersimmonForCausalLM(T.PersimmonConfig(**COMMON)),
        "mamba": lambda: T.MambaForCausalLM(T.MambaConfig(
            vocab_size=50, hidden_size=16, state_size=4, num_hidden_layers=2, intermediate_size=32)),
        # added 2026-12-07 (a stranger's sweep of families no test named)
        "biogpt": lambda: T.BioGptForCausalLM(T.BioGptConfig(**COMMON)),
        "big_bird": lambda: T.BigBirdForSequenceClassification(T.BigBirdConfig(**COMMON,
                                                                                attention_type="original_full")),
        "deberta": lambda: T.DebertaForSequenceClassification(T.DebertaConfig(**COMMON)),
        "mpnet": lambda: T.MPNetForSequenceClassification(T.MPNetConfig(**COMMON)),
        "layoutlm": lambda: T.LayoutLMForSequenceClassification(T.LayoutLMConfig(**COMMON)),
        "roformer": lambda: T.RoFormerForSequenceClassification(T.RoFormerConfig(**COMMON)),
        "esm": lambda: T.EsmForSequenceClassification(T.EsmConfig(**COMMON, pad_token_id=1)),
        "gemma3_text": lambda: T.Gemma3ForCausalLM(T.Gemma3TextConfig(**GQA, head_dim=8)),
        "falcon_mamba": lambda: T.FalconMambaForCausalLM(T.FalconMambaConfig(
            vocab_size=50, hidden_size=16, state_size=4, num_hidden_layers=2, intermediate_size=32,
            use_mambapy=False)),
        "mamba2": lambda: T.Mamba2ForCausalLM(T.Mamba2Config(
            vocab_size=50, hidden_size=16, state_size=4, num_hidden_layers=2, num_heads=4, head_dim=8, n_groups=1,
            expand=2)),
        "rwkv": lambda: T.RwkvForCausalLM(T.RwkvConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=2, attention_hidden_size=16, intermediate_size=24,
            context_length=16)),
        "nystromformer": lambda: T.NystromformerForSequenceClassification(T.NystromformerConfig(
            **COMMON, num_landmarks=2, segment_means_seq_len=6)),
        "mixtral": lambda: T.MixtralForCausalLM(T.MixtralConfig(**GQA, num_local_experts=4, num_experts_per_tok=2)),
        "qwen2_moe": lambda: T.Qwen2MoeForCausalLM(T.Qwen2MoeConfig(
            **GQA, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=8, shared_expert_intermediate_size=8)),
        "olmoe": lambda: T.OlmoeForCausalLM(T.OlmoeConfig(**COMMON, num_experts=4, num_experts_per_tok=2)),
        "jamba": lambda: T.JambaForCausalLM(T.JambaConfig(
            **GQA, num_experts=2, expert_layer_period=2, attn_layer_period=2, attn_layer_offset=1, mamba_d_state=4,
            mamba_expand=2, use_mamba_kernels=False)),
    }


class Output(torch.nn.Module):
    """inputs_embeds → the last position's logits (an LM), the class logits, or a bare encoder's
    last hidden state at the last position."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, e):
        out = self.model(inputs_embeds=e)
        y = out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state
        return y[:, -1, :] if y.dim() == 3 else y


def survey(name: str, build, dtype: torch.dtype) -> dict:
    row: dict = {"family": name}
    torch.manual_seed(0)
    try:
        inner = build().to(dtype).eval()
        ids = torch.randint(2, 50, (1, 6), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            e = inner.get_input_embeddings()(ids).detach()
            model = Output(inner).eval()
            y = model(e)
    except Exception as err:  # a configuration this transformers cannot build or run: not nrm's
        row.update(status="not built", reason=f"{type(err).__name__}: {err}".splitlines()[0][:200])
        return row
    row["class"] = type(inner).__name__
    target = int(y[0].abs().argmax())
    start = time.perf_counter()
    try:
        m = nrm.explain(model, e, target=target, check="full")
        deviation = float(laws.normalization(m).deviation)
    except nrm.NRMError as err:
        row.update(status="refused", error=type(err).__name__, reason=str(err).splitlines()[0][:300],
                   detail=" | ".join(str(err).splitlines()[1:3])[:400])
        return row
    except Exception as err:
        reason = str(err).splitlines()[0][:300] if str(err) else ""
        row.update(status="crashed", error=type(err).__name__, reason=reason,
                   where=traceback.format_exc().splitlines()[-3][:200])
        return row
    row["seconds"] = round(time.perf_counter() - start, 2)
    f = float(y[0, target])
    row.update(status="explained", l1_every_layer=deviation,
               f_relative_error=abs(float(m.f[0]) - f) / max(abs(f), 1e-30),
               computed_in_narrower_dtype=sum(c.computed_in is not None for c in m.network.captured.calls))
    return row


def main(argv=None) -> int:
    families = _families()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("families", nargs="*", default=list(families))
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    unknown = [f for f in args.families if f not in families]
    if unknown:
        p.error(f"unknown families {unknown}; known: {', '.join(families)}")
    torch.set_num_threads(args.threads)
    import transformers

    rows = []
    for name in args.families:
        row = survey(name, families[name], getattr(torch, args.dtype))
        rows.append(row)
        what = (f"L1 {row['l1_every_layer']:.1e}  f {row['f_relative_error']:.1e}  {row['seconds']} s"
                if row["status"] == "explained" else f"{row.get('error', '')}: {row.get('reason', '')}")
        print(f"{name:16s} {row['status']:10s} {what}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"dtype": args.dtype, "torch": torch.__version__,
                                    "transformers": transformers.__version__, "rows": rows}, indent=1))
    explained = sum(r["status"] == "explained" for r in rows)
    print(f"{explained} of {len(rows)} explained")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
