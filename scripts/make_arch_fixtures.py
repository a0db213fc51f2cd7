#!/usr/bin/env python3
"""Generate the transformers-reference fixtures for ckpt's non-Llama architectures.

Companion of ``scripts/make_parity_fixtures.py`` (whose tokenizer, texts, rolling
window scorer and reference.json layout it reuses).  It builds, deterministically
and without downloading anything, one tiny randomly-initialised float32 checkpoint
per architecture variant ckpt supports beyond Llama/Mistral/Qwen2:

* ``gpt_neox_parallel``   GPTNeoXForCausalLM, Pythia-like (parallel residual,
                          rotary_pct 0.25, exact GELU, untied ``embed_out``),
                          config.json in the transformers 4.x dialect Pythia ships.
* ``gpt_neox_sequential`` GPTNeoXForCausalLM, sequential residual, rotary 0.5,
                          ``gelu_new`` (tanh GELU), transformers 5 dialect.
* ``olmo2``               Olmo2ForCausalLM (post-norms only, q/k RMSNorm over the
                          whole projection), GQA, untied.
* ``olmo3``               Olmo3ForCausalLM, explicit ``layer_types`` mixing sliding
                          (window 4) and full attention, per-layer-type rope_theta.
* ``qwen3``               Qwen3ForCausalLM, per-head q/k norm, attention biases,
                          explicit head_dim != hidden/heads, GQA, tied, 4.x dialect.
* ``gemma2``              Gemma2ForCausalLM, attention + final logit soft-capping,
                          sliding window 4 on even layers, query_pre_attn_scalar !=
                          head_dim, gelu_pytorch_tanh, tied, 4.x dialect.
* ``gemma3``              Gemma3ForCausalLM (gemma3_text), q/k norm, sliding
                          pattern from ``sliding_window_pattern``, local/global
                          rope bases, linear rope scaling on global layers, tied,
                          4.x dialect.
* ``smollm3``             SmolLM3ForCausalLM, NoPE every 4th layer, GQA, tied.
* ``gemma3_nested``       the ``gemma3`` weights and text config wrapped in a
                          ``Gemma3ForConditionalGeneration``-style config (nested
                          ``text_config``), loaded text-only by Gemma3ForCausalLM.

For each it records in ``reference.json`` (same layout as the parity fixtures):
per-token log-probs (f32 and bf16) of the parity texts with lm-eval's rolling
windows, greedy generations, a next-token loss check, config keys and versions.

Usage (reference venv, see scripts/requirements-reference.txt)::

    ~/.venvs/ckpt-ref/bin/python scripts/make_arch_fixtures.py [OUT_DIR]

OUT_DIR defaults to ``tests/fixtures/arch`` under the repository root.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_parity_fixtures as P  # noqa: E402  (sets the offline env vars too)

import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3Config,
    Gemma3ForCausalLM,
    Gemma3ForConditionalGeneration,
    Gemma3TextConfig,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
    Olmo3Config,
    Olmo3ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
    SmolLM3Config,
    SmolLM3ForCausalLM,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "tests" / "fixtures" / "arch"
PARITY = REPO_ROOT / "tests" / "fixtures" / "parity"
TOKENIZER_SRC = PARITY / "llama_gqa"

SEED = 20250301
MAX_LEN = P.MAX_LEN  # 64: max_position_embeddings == lm-eval max_length
BOS_ID, EOS_ID, PAD_ID = P.BOS_ID, P.EOS_ID, P.PAD_ID
RELOAD_TOL = 1e-5
MAX_NEW_TOKENS = 12
GREEDY_PROMPTS = [  # candidates, in order; the first 3 with a clear argmax at every step are kept
    "The blue zorblat grobbles the",
    "Alvo fenches 42 mavros near Port",
    "Why does the quinnet tolver so",
    "In 1789, Brinna saw a crisp",
    "Item #12: old pontik",
    "Castor's kelpin and Ember's",
    "\"Mizzet blicks,\" said Hesper, \"but",
    "The wobbly hubbin quiffs the lortan",
    "Gorran splondes 7 caravexs near Mount",
    "Why does the sulvane dornick so",
]
NUM_GREEDY = 3
MIN_MARGIN = 0.02  # smallest accepted top1-top2 logit gap (f32) at any generated step
LOSS_ROWS = (2, 3)  # texts whose first 31 tokens (after BOS) form the loss batch
LOSS_LEN = 32

# Initialisation scales (see init_weights).
W_STD, BIAS_STD, NORM_STD = 0.2, 0.05, 0.1

SLIDING, FULL = "sliding_attention", "full_attention"

# ---------------------------------------------------------------------------
# Variants
# ---------------------------------------------------------------------------

COMMON = dict(
    vocab_size=None,  # filled in from the tokenizer
    max_position_embeddings=MAX_LEN,
    bos_token_id=BOS_ID,
    eos_token_id=EOS_ID,
    pad_token_id=PAD_ID,
)


@dataclass
class Variant:
    cls: type
    config_cls: type
    kwargs: dict
    gemma_norms: bool = False  # RMSNorm computes x * (1 + w): init w ~ N(0, NORM_STD)
    to_4x: Callable[[dict], dict] | None = None  # rewrite config.json after saving
    checks: list = field(default_factory=list)  # extra checks: f(ckpt_dir, model, token_lists)
    notes: str = ""


def _rope_4x(cfg: dict) -> dict:
    """Common part of the 4.x rewrite: dtype -> torch_dtype, flat rope -> rope_theta."""
    new = {}
    for k, v in cfg.items():
        if k == "dtype":
            new["torch_dtype"] = v
        elif k != "rope_parameters":
            new[k] = v
    return new


def neox_to_4x(cfg: dict) -> dict:
    """Pythia's config.json: rotary_pct / rotary_emb_base, no rope_parameters/attention_bias."""
    rope = cfg["rope_parameters"]
    assert rope["rope_type"] == "default", rope
    new = _rope_4x(cfg)
    new.pop("attention_bias")  # Pythia configs omit it (default True)
    new["rotary_pct"] = rope["partial_rotary_factor"]
    new["rotary_emb_base"] = int(rope["rope_theta"])
    return new


def qwen3_to_4x(cfg: dict) -> dict:
    rope = cfg["rope_parameters"]
    assert rope["rope_type"] == "default", rope
    new = _rope_4x(cfg)
    new.pop("layer_types")  # Qwen3 hub configs have no layer_types
    new["rope_theta"] = rope["rope_theta"]
    new["rope_scaling"] = None
    new["sliding_window"] = None  # as Qwen3 hub configs (use_sliding_window false)
    return new


def gemma2_to_4x(cfg: dict) -> dict:
    rope = cfg["rope_parameters"]
    assert rope["rope_type"] == "default", rope
    new = _rope_4x(cfg)
    new.pop("layer_types")  # derived: even layers (0, 2, ...) slide
    new["rope_theta"] = rope["rope_theta"]
    new["hidden_act"] = cfg["hidden_activation"]  # gemma-2 hub configs carry both keys
    new["cache_implementation"] = "hybrid"
    return new


GEMMA3_PATTERN = 3


def gemma3_to_4x(cfg: dict) -> dict:
    rope = cfg["rope_parameters"]
    full, local = rope[FULL], rope[SLIDING]
    assert local["rope_type"] == "default", local
    new = _rope_4x(cfg)
    new.pop("layer_types")  # derived from sliding_window_pattern
    new.pop("_sliding_window_pattern", None)  # private attribute transformers 5 leaks into config.json
    new["sliding_window_pattern"] = GEMMA3_PATTERN
    new["rope_theta"] = full["rope_theta"]
    new["rope_local_base_freq"] = local["rope_theta"]
    new["rope_scaling"] = {k: full[k] for k in ("rope_type", "factor")}
    return new


def variants() -> dict[str, Variant]:
    return {
        "gpt_neox_parallel": Variant(GPTNeoXForCausalLM, GPTNeoXConfig, dict(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=40,
            hidden_act="gelu", layer_norm_eps=1e-5, use_parallel_residual=True,
            attention_bias=True, tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
        ), to_4x=neox_to_4x, checks=[check_neox_files]),
        "gpt_neox_sequential": Variant(GPTNeoXForCausalLM, GPTNeoXConfig, dict(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
            hidden_act="gelu_new", layer_norm_eps=1e-6, use_parallel_residual=False,
            attention_bias=True, tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
        ), checks=[check_neox_files]),
        "olmo2": Variant(Olmo2ForCausalLM, Olmo2Config, dict(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=40, rms_norm_eps=1e-6, tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        )),
        "olmo3": Variant(Olmo3ForCausalLM, Olmo3Config, dict(
            hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=40, rms_norm_eps=1e-6, tie_word_embeddings=False,
            sliding_window=4, layer_types=[SLIDING, FULL, SLIDING],
            rope_parameters={
                FULL: {"rope_type": "default", "rope_theta": 500000.0},
                SLIDING: {"rope_type": "default", "rope_theta": 10000.0},
            },
        ), checks=[check_sliding_matters]),
        "qwen3": Variant(Qwen3ForCausalLM, Qwen3Config, dict(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, intermediate_size=40, rms_norm_eps=1e-6, attention_bias=True,
            tie_word_embeddings=True, use_sliding_window=False, max_window_layers=2,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        ), to_4x=qwen3_to_4x, checks=[check_tied]),
        "gemma2": Variant(Gemma2ForCausalLM, Gemma2Config, dict(
            hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, intermediate_size=40, rms_norm_eps=1e-6, tie_word_embeddings=True,
            hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=24,
            attn_logit_softcapping=2.0, final_logit_softcapping=2.5, sliding_window=4,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        ), gemma_norms=True, to_4x=gemma2_to_4x,
            checks=[check_tied, check_sliding_matters, check_softcaps_matter]),
        "gemma3": Variant(Gemma3ForCausalLM, Gemma3TextConfig, dict(
            hidden_size=32, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=1,
            head_dim=8, intermediate_size=40, rms_norm_eps=1e-6, tie_word_embeddings=True,
            hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=12, sliding_window=4,
            # The 4.x kwargs real Gemma 3 configs carry; transformers 5 converts them.
            sliding_window_pattern=GEMMA3_PATTERN, rope_theta=1000000.0, rope_local_base_freq=10000.0,
            rope_scaling={"rope_type": "linear", "factor": 8.0},
            final_logit_softcapping=None, attn_logit_softcapping=None,
        ), gemma_norms=True, to_4x=gemma3_to_4x,
            checks=[check_tied, check_sliding_matters, check_gemma3_rope]),
        "smollm3": Variant(SmolLM3ForCausalLM, SmolLM3Config, dict(
            hidden_size=32, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=40, rms_norm_eps=1e-6, tie_word_embeddings=True,
            no_rope_layer_interval=4,
            rope_parameters={"rope_type": "default", "rope_theta": 5000000.0},
        ), checks=[check_tied, check_nope_matters]),
    }


# ---------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------


def init_weights(model: torch.nn.Module, seed: int, gemma_norms: bool) -> None:
    """Random everything, so that a missing bias / 1+w / norm shows in the log-probs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            is_norm = "norm" in name
            if is_norm and name.endswith(".bias"):  # LayerNorm bias (GPT-NeoX)
                p.copy_(BIAS_STD * noise)
            elif is_norm:
                p.copy_((0.0 if gemma_norms else 1.0) + NORM_STD * noise)
            elif name.endswith(".bias"):
                p.copy_(BIAS_STD * noise)
            else:
                p.copy_(W_STD * noise)


def copy_tokenizer(ckpt_dir: Path) -> None:
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(TOKENIZER_SRC / f, ckpt_dir / f)


def build(name: str, v: Variant, vocab: int, out: Path, seed: int) -> tuple[Path, dict]:
    torch.manual_seed(seed)
    config = v.config_cls(**dict(COMMON, vocab_size=vocab), **v.kwargs)
    model = v.cls(config).to(torch.float32).eval()
    init_weights(model, seed, v.gemma_norms)
    ckpt_dir = out / name
    if ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True)
    model.save_pretrained(ckpt_dir)
    copy_tokenizer(ckpt_dir)
    gen_cfg = ckpt_dir / "generation_config.json"
    if gen_cfg.exists():
        gen_cfg.unlink()
    saved = json.loads((ckpt_dir / "config.json").read_text())
    return ckpt_dir, saved


def write_config(ckpt_dir: Path, cfg: dict) -> None:
    (ckpt_dir / "config.json").write_text(json.dumps(dict(sorted(cfg.items())), indent=2) + "\n")


def load(ckpt_dir: Path, dtype=torch.float32, cls=AutoModelForCausalLM, config=None):
    kw = {} if config is None else {"config": config}
    return cls.from_pretrained(ckpt_dir, dtype=dtype, attn_implementation="eager", **kw).eval()


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------


def tensor_names(ckpt_dir: Path) -> list[str]:
    with safe_open(ckpt_dir / "model.safetensors", framework="pt") as f:
        return sorted(f.keys())


def check_tied(ckpt_dir, model, token_lists):
    names = tensor_names(ckpt_dir)
    assert "lm_head.weight" not in names, "tied checkpoint must not store lm_head"
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    return "tied: no lm_head.weight in the file"


def check_neox_files(ckpt_dir, model, token_lists):
    names = tensor_names(ckpt_dir)
    assert "embed_out.weight" in names and "lm_head.weight" not in names, names
    assert "gpt_neox.layers.0.attention.query_key_value.bias" in names
    return "untied head saved as embed_out.weight (transformers 5 renames it to lm_head on load)"


def _logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def _variant_logits(ckpt_dir, ids, edit):
    cfg = AutoConfig.from_pretrained(ckpt_dir)
    edit(cfg)
    return _logits(load(ckpt_dir, config=cfg), ids)


def _long_ids(token_lists):
    return [BOS_ID] + token_lists[-1][: MAX_LEN - 1]


def check_sliding_matters(ckpt_dir, model, token_lists):
    ids = _long_ids(token_lists)
    base = _logits(model, ids)

    def no_window(cfg):
        cfg.sliding_window = 10_000  # > any length: sliding layers become full causal

    d = (base - _variant_logits(ckpt_dir, ids, no_window)).abs().max().item()
    assert d > 1e-2, f"sliding window had no effect ({d})"
    # Only the first `sliding_window` positions are unaffected.
    return f"sliding window changes logits by up to {d:.3g}"


def check_softcaps_matter(ckpt_dir, model, token_lists):
    ids = _long_ids(token_lists)
    base = _logits(model, ids)
    out = []
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        d = (base - _variant_logits(ckpt_dir, ids, lambda c: setattr(c, key, None))).abs().max().item()
        assert d > 5e-2, f"{key} had no effect ({d})"
        out.append(f"{key} off changes logits by up to {d:.3g}")
    return "; ".join(out)


def check_nope_matters(ckpt_dir, model, token_lists):
    assert list(model.config.no_rope_layers) == [1, 1, 1, 0], model.config.no_rope_layers
    ids = _long_ids(token_lists)
    d = (_logits(model, ids) - _variant_logits(
        ckpt_dir, ids, lambda c: setattr(c, "no_rope_layers", [1, 1, 1, 1]))).abs().max().item()
    assert d > 1e-2, f"NoPE layer had no effect ({d})"
    return f"RoPE on the NoPE layer would change logits by up to {d:.3g}"


def check_gemma3_rope(ckpt_dir, model, token_lists):
    cfg = model.config
    assert cfg.layer_types == [SLIDING, SLIDING, FULL, SLIDING], cfg.layer_types
    rp = cfg.rope_parameters
    assert rp[FULL] == {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0}, rp
    assert rp[SLIDING] == {"rope_type": "default", "rope_theta": 10000.0}, rp
    re = model.model.rotary_emb
    hd = cfg.head_dim
    exp = lambda base: 1.0 / (base ** (torch.arange(0, hd, 2, dtype=torch.float) / hd))  # noqa: E731
    assert torch.allclose(re.full_attention_inv_freq, exp(1e6) / 8.0)
    assert torch.allclose(re.sliding_attention_inv_freq, exp(1e4))
    return "layer_types [s,s,f,s]; full: theta 1e6 with linear factor 8 (inv_freq/8); sliding: theta 1e4"


# ---------------------------------------------------------------------------
# Reference computations
# ---------------------------------------------------------------------------


@torch.no_grad()
def greedy(model, tok: Tokenizer) -> list[dict]:
    """generate(do_sample=False) with EOS disabled, cross-checked by a no-cache argmax loop.

    Keeps the first NUM_GREEDY candidate prompts whose top1-top2 logit gap stays >= MIN_MARGIN
    at every step, so that float32 rounding differences cannot flip a token.
    """
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = PAD_ID
    results = []
    for prompt in GREEDY_PROMPTS:
        ids = [BOS_ID] + tok.encode(prompt).ids
        inp = torch.tensor([ids])
        out = model.generate(inp, attention_mask=torch.ones_like(inp), do_sample=False,
                             max_new_tokens=MAX_NEW_TOKENS, eos_token_id=None, pad_token_id=PAD_ID)
        new = out[0, len(ids):].tolist()
        assert len(new) == MAX_NEW_TOKENS, new
        # Reference loop: full forward each step, no cache.
        seq, margins = list(ids), []
        for _ in range(MAX_NEW_TOKENS):
            logits = _logits(model, seq)[-1]
            top2 = torch.topk(logits, 2)
            margins.append((top2.values[0] - top2.values[1]).item())
            seq.append(int(top2.indices[0]))
        assert seq[len(ids):] == new, (prompt, seq[len(ids):], new)
        if min(margins) < MIN_MARGIN:
            continue
        results.append({"prompt": prompt, "prompt_ids": ids, "new_ids": new,
                        "min_top1_margin": min(margins)})
        if len(results) == NUM_GREEDY:
            return results
    raise RuntimeError(f"only {len(results)} prompts with margin >= {MIN_MARGIN}")


@torch.no_grad()
def loss_check(model, token_lists) -> dict:
    rows = [[BOS_ID] + token_lists[i][: LOSS_LEN - 1] for i in LOSS_ROWS]
    inp = torch.tensor(rows)
    loss = model(input_ids=inp, labels=inp).loss.item()
    logp = torch.log_softmax(model(inp).logits.float(), dim=-1)
    manual = -logp[:, :-1].gather(-1, inp[:, 1:, None]).mean().item()
    assert abs(loss - manual) < 1e-5, (loss, manual)
    return {"token_ids": rows, "loss": loss}


def bf16_cast_matches(ckpt_dir: Path, token_lists, bf16_ref: list[dict]) -> float:
    """Max |diff| between from_pretrained(dtype=bf16) and from_pretrained(f32).to(bf16)."""
    m = load(ckpt_dir).to(torch.bfloat16)
    other = P.score_all(m, token_lists[:2])
    return P.max_abs_diff(bf16_ref[:2], other)


def process(name: str, v: Variant, tok: Tokenizer, texts: list[str], out: Path, seed: int) -> dict:
    print(f"== {name}")
    ckpt_dir, saved_cfg = build(name, v, tok.get_vocab_size(), out, seed)
    token_lists = [tok.encode(t).ids for t in texts]
    P.check_hf_tokenizer(ckpt_dir, texts, token_lists)

    f32 = P.score_all(load(ckpt_dir), token_lists)
    result: dict = {}
    if v.to_4x is not None:
        cfg4 = v.to_4x(saved_cfg)
        write_config(ckpt_dir, cfg4)
        f32_4x = P.score_all(load(ckpt_dir), token_lists)
        d = P.max_abs_diff(f32, f32_4x)
        assert d <= RELOAD_TOL, f"4.x-dialect config changed log-likelihoods by {d}"
        print(f"   4.x-dialect config reloads with identical scores (max diff {d:.3g})")
        result["config_as_saved_by_transformers5"] = saved_cfg
    model = load(ckpt_dir)
    notes = [chk(ckpt_dir, model, token_lists) for chk in v.checks]
    for n in notes:
        print("   " + n)

    bf16 = P.score_all(load(ckpt_dir, torch.bfloat16), token_lists)
    cast_diff = bf16_cast_matches(ckpt_dir, token_lists, bf16)
    cfg = model.config
    result.update({
        "f32": f32,
        "bf16": bf16,
        "greedy": greedy(model, tok),
        "loss_check": loss_check(model, token_lists),
        "config_keys": {"architectures": cfg.architectures, "model_type": cfg.model_type,
                        "layer_types": getattr(cfg, "layer_types", None),
                        "rope_parameters": getattr(cfg, "rope_parameters", None)},
        "_bf16_max_diff": P.max_abs_diff(f32, bf16),
        "_bf16_cast_diff": cast_diff,
        "_checks": notes,
    })
    print(f"   f32 totals: {[round(r['total_logprob'], 4) for r in f32]}")
    print(f"   max |f32 - bf16| token logprob: {result['_bf16_max_diff']:.4g}; "
          f"bf16 via from_pretrained(dtype) vs .to(bf16): {cast_diff:.3g}")
    print(f"   greedy: {[g['new_ids'] for g in result['greedy']]}")
    print(f"   loss_check: {result['loss_check']['loss']:.6f}")

    if P.lm_eval is not None:
        totals, attn = P.lm_eval_totals(ckpt_dir, texts)
        worst = max(abs(r["total_logprob"] - t) for r, t in zip(f32, totals))
        for r, t in zip(f32, totals):
            assert abs(r["total_logprob"] - t) <= P.LM_EVAL_TOL_PER_TOKEN * r["num_tokens"], (name, r, t)
        print(f"   lm_eval HFLM ({attn}) totals match (max |diff| {worst:.3g})")
        result.update(lm_eval=totals, lm_eval_attn=attn)
    return result


# ---------------------------------------------------------------------------
# gemma3_nested: Gemma3ForConditionalGeneration-style config, text-only load
# ---------------------------------------------------------------------------


def make_gemma3_nested(out: Path, texts: list[str], tok: Tokenizer, ref: dict, seed: int) -> dict:
    """The gemma3 text weights inside a tiny Gemma3ForConditionalGeneration, saved by transformers 5.

    config.json is the multimodal one (model_type gemma3, nested text_config in the transformers 5
    dialect); the tensors are laid out as transformers 5 saves them.  Gemma3ForCausalLM cannot load
    this text-only (it builds the text model but does not map the nested tensor names, leaving the
    weights random), so the reference is AutoModelForCausalLM, i.e. Gemma3ForConditionalGeneration,
    whose text-only forward must reproduce gemma3's scores exactly.
    """
    print("== gemma3_nested")
    src = out / "gemma3"
    dst = out / "gemma3_nested"
    if dst.exists():
        shutil.rmtree(dst)
    text = load(src)
    text_cfg = text.config.to_dict()
    for k in ("architectures", "transformers_version", "dtype", "_sliding_window_pattern"):
        text_cfg.pop(k, None)
    cfg = Gemma3Config(
        text_config=text_cfg,
        vision_config={"model_type": "siglip_vision_model", "hidden_size": 16, "intermediate_size": 32,
                       "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 32,
                       "patch_size": 8, "vision_use_head": False},
        mm_tokens_per_image=4, tie_word_embeddings=True)
    torch.manual_seed(seed)
    mm = Gemma3ForConditionalGeneration(cfg).to(torch.float32).eval()
    init_weights(mm, seed, gemma_norms=True)
    missing, unexpected = mm.model.language_model.load_state_dict(text.model.state_dict(), strict=True)
    assert not missing and not unexpected
    dst.mkdir()
    mm.save_pretrained(dst)
    saved = json.loads((dst / "config.json").read_text())
    for k in ("_name_or_path", "_sliding_window_pattern"):  # leaked by transformers 5's to_dict
        saved["text_config"].pop(k, None)
    write_config(dst, saved)
    copy_tokenizer(dst)
    gen_cfg = dst / "generation_config.json"
    if gen_cfg.exists():
        gen_cfg.unlink()
    names = tensor_names(dst)
    assert "lm_head.weight" not in names, names
    token_lists = [tok.encode(t).ids for t in texts]

    # Text-only class: does not pick up the weights (documented; asserted so a change is noticed).
    try:
        t_only = load(dst, cls=Gemma3ForCausalLM)
        d_text_only = P.max_abs_diff(ref["gemma3"]["f32"][:2], P.score_all(t_only, token_lists[:2]))
    except Exception as exc:  # pragma: no cover
        d_text_only = repr(exc)
    print(f"   Gemma3ForCausalLM.from_pretrained(nested) vs gemma3: {d_text_only}")

    model = load(dst)
    f32 = P.score_all(model, token_lists)
    d = P.max_abs_diff(ref["gemma3"]["f32"], f32)
    assert d <= RELOAD_TOL, f"nested gemma3 differs from gemma3 by {d}"
    bf16 = P.score_all(load(dst, torch.bfloat16), token_lists)
    g = greedy(model, tok)
    assert [x["new_ids"] for x in g] == [x["new_ids"] for x in ref["gemma3"]["greedy"]]
    lc = loss_check(model, token_lists)
    assert abs(lc["loss"] - ref["gemma3"]["loss_check"]["loss"]) < 1e-5
    checks = [f"AutoModelForCausalLM loads {type(model).__name__}; text scores equal gemma3's "
              f"(max diff {d:.3g}); Gemma3ForCausalLM.from_pretrained leaves the weights random "
              f"(max diff {d_text_only if isinstance(d_text_only, str) else f'{d_text_only:.3g}'})",
              f"tensor names: {[n for n in names if 'layers.0.self_attn.q_proj' in n or 'embed_tokens' in n or 'vision' in n][:3]}"]
    for c in checks:
        print("   " + c)
    return {
        "f32": f32,
        "bf16": bf16,
        "greedy": g,
        "loss_check": lc,
        "config_keys": {"architectures": model.config.architectures, "model_type": model.config.model_type,
                        "text_model_type": model.config.text_config.model_type,
                        "layer_types": model.config.text_config.layer_types,
                        "rope_parameters": model.config.text_config.rope_parameters},
        "_bf16_max_diff": P.max_abs_diff(f32, bf16),
        "_checks": checks,
    }


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir", nargs="?", default=str(DEFAULT_OUT))
    ap.add_argument("--only", nargs="*", help="build only these variants (debugging)")
    args = ap.parse_args()
    out = Path(args.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    vers = P.versions()
    for k, v in vers.items():
        print(f"{k:>12}: {v}")

    tok = Tokenizer.from_file(str(TOKENIZER_SRC / "tokenizer.json"))
    texts = [json.loads(line)["text"] for line in (PARITY / "texts.jsonl").read_text(encoding="utf-8").splitlines()]
    shutil.copyfile(PARITY / "texts.jsonl", out / "texts.jsonl")

    specs = variants()
    if args.only:
        specs = {k: v for k, v in specs.items() if k in args.only}
    results = {name: process(name, v, tok, texts, out, SEED + 100 * i)
               for i, (name, v) in enumerate(specs.items())}
    if "gemma3" in results:
        results["gemma3_nested"] = make_gemma3_nested(out, texts, tok, results, SEED + 100 * len(results))

    public = ("f32", "bf16", "greedy", "loss_check", "config_keys", "config_as_saved_by_transformers5")
    reference = {
        "max_length": MAX_LEN,
        "bos_token_id": BOS_ID,
        "texts": "texts.jsonl (a copy of tests/fixtures/parity/texts.jsonl)",
        "greedy_settings": {"max_new_tokens": MAX_NEW_TOKENS, "do_sample": False, "eos_token_id": None,
                            "dtype": "float32", "prompt": "BOS + tokenizer ids of the prompt",
                            "min_top1_margin": MIN_MARGIN},
        "versions": vers,
        "models": {n: {k: r[k] for k in public if k in r} for n, r in results.items()},
    }
    if P.lm_eval is not None:  # (not run for gemma3_nested, which equals gemma3)
        reference["lm_eval"] = {n: r["lm_eval"] for n, r in results.items() if "lm_eval" in r}
    for m in reference["models"].values():
        for dt in ("f32", "bf16"):
            for r in m[dt]:  # 9 significant digits identify a float32 exactly; keeps the file small
                r["token_logprobs"] = [float(f"{x:.9g}") for x in r["token_logprobs"]]
    (out / "reference.json").write_text(json.dumps(reference) + "\n")
    print("summary:", json.dumps(
        {n: {"bf16_max_diff": r["_bf16_max_diff"], "bf16_cast_diff": r.get("_bf16_cast_diff"),
             "checks": r["_checks"]} for n, r in results.items()}, indent=1))
    print(f"wrote fixtures to {out}")


if __name__ == "__main__":
    warnings.filterwarnings("ignore", category=FutureWarning)
    main()
