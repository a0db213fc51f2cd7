#!/usr/bin/env python3
"""Generate the Python-reference parity fixtures for ckpt's scorer.

Why this exists
---------------
ckpt re-implements, in Rust, the lm-evaluation-harness ``loglikelihood_rolling``
computation for decoder-only transformers loaded from Hugging Face style
checkpoint directories.  To test that it agrees with the reference stack
(transformers + lm-eval) without downloading anything, this script builds
everything from scratch and deterministically:

* a tiny byte-level BPE tokenizer trained on synthetic text,
* five tiny randomly-initialised checkpoints covering the architecture
  variants the Rust loader must handle (GQA, Llama 3 rope scaling in the
  transformers 4.x config dialect, Qwen2 q/k/v biases, tied embeddings with an
  explicit head_dim, Mistral sliding window saved as sharded safetensors),
* a handful of synthetic texts, and
* ``reference.json`` with per-token log-probabilities computed by transformers
  (eager attention, float32 and bfloat16) using lm-eval's rolling windows, plus
  the totals from lm-eval's own ``HFLM.loglikelihood_rolling`` when lm-eval is
  installed.

All text is synthetic: sentences are assembled from an invented word list with
a fixed random seed.  Nothing is downloaded.

Usage::

    python3 -m venv ~/.venvs/ckpt-ref
    ~/.venvs/ckpt-ref/bin/pip install -r scripts/requirements-reference.txt
    ~/.venvs/ckpt-ref/bin/python scripts/make_parity_fixtures.py [OUT_DIR]

OUT_DIR defaults to ``tests/fixtures/parity`` under the repository root.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import random
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from tokenizers import (  # noqa: E402
    Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers)
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

try:  # lm-eval is optional: used for cross-checking when available.
    import lm_eval  # noqa: E402
    import lm_eval.utils  # noqa: E402
    from lm_eval.api.instance import Instance  # noqa: E402
    from lm_eval.models.huggingface import HFLM  # noqa: E402
except Exception as exc:  # pragma: no cover - depends on the environment
    lm_eval = None
    _LM_EVAL_IMPORT_ERROR = repr(exc)
else:
    _LM_EVAL_IMPORT_ERROR = None

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "tests" / "fixtures" / "parity"

SEED = 20240611
MAX_LEN = 64  # max_position_embeddings == lm-eval max_length
VOCAB_SIZE = 360
SPECIAL_TOKENS = ["<s>", "</s>", "<unk>", "<pad>"]  # ids 0, 1, 2, 3
BOS_ID, EOS_ID, PAD_ID = 0, 1, 3

# Tolerances.
LM_EVAL_TOL_PER_TOKEN = 1e-4
RELOAD_TOL = 1e-5

# ---------------------------------------------------------------------------
# Synthetic text
# ---------------------------------------------------------------------------

# An invented vocabulary; none of these words come from any corpus.
NOUNS = [
    "zorblat", "quinnet", "mavro", "tessik", "plumbar", "vandrel", "orrish",
    "kelpin", "drazzle", "fennow", "glimmet", "yarrowby", "pontik", "sulvane",
    "brisket", "noddle", "caravex", "hubbin", "lortan", "mizzet", "café",
    "naïvet", "zwölf", "piñaro",
]
VERBS = [
    "grobbles", "fenches", "wandrops", "scrimmels", "tolvers", "blicks",
    "maraunds", "quiffs", "splondes", "hastrels", "dornicks", "flemmers",
]
ADJECTIVES = [
    "blue", "vorny", "quell", "brisk", "ombre", "tallish", "sprockety",
    "green", "dimmer", "frazzled", "old", "wobbly", "crisp",
]
ADVERBS = ["slowly", "twice", "never", "quietly", "often", "sideways", "again"]
PLACES = ["Ostrava Minor", "the Quell Basin", "Port Zibbon", "Lower Fennick", "Mount Arvel"]
NAMES = ["Alvo", "Brinna", "Castor", "Dweela", "Ember", "Fitzu", "Gorran", "Hesper"]


def _sentence(rng: random.Random) -> str:
    """One synthetic sentence from a few templates (with digits/punctuation)."""
    n1, n2 = rng.choice(NOUNS), rng.choice(NOUNS)
    v, a, adv = rng.choice(VERBS), rng.choice(ADJECTIVES), rng.choice(ADVERBS)
    name, place = rng.choice(NAMES), rng.choice(PLACES)
    num = rng.randint(0, 9999)
    templates = [
        f"The {a} {n1} {v} the {n2} {adv}.",
        f"{name} {v} {num} {n1}s near {place}.",
        f"Why does the {n1} {v} so {adv}?",
        f"In {1700 + num % 400}, {name} saw a {a} {n2}; it {v} {adv}!",
        f"\"{n1.capitalize()} {v},\" said {name}, \"but the {n2} is {a}.\"",
        f"Item #{num % 97}: {a} {n1} ({num / 7:.2f} units) - {v} {adv}.",
        f"{name}'s {n1} and {rng.choice(NAMES)}'s {n2} {v} at {num % 24}:{num % 60:02d}.",
    ]
    return rng.choice(templates)


def _paragraph(rng: random.Random, n_sentences: int) -> str:
    return " ".join(_sentence(rng) for _ in range(n_sentences))


def training_corpus(seed: int, n_lines: int = 600) -> list[str]:
    """Synthetic lines used only to train the tokenizer (not written out)."""
    rng = random.Random(seed)
    return [_paragraph(rng, rng.randint(1, 4)) for _ in range(n_lines)]


def _grow_to_tokens(rng: random.Random, tok: Tokenizer, target: int, first: str = "") -> str:
    """Append sentences until the text encodes to >= target tokens."""
    text = first
    while len(tok.encode(text).ids) < target:
        text = (text + " " + _sentence(rng)) if text else _sentence(rng)
    return text


def _trim_to_exact(tok: Tokenizer, text: str, n_tokens: int) -> str:
    """Shorten text character-wise until it encodes to exactly n_tokens."""
    for end in range(len(text), 0, -1):
        cand = text[:end]
        if len(tok.encode(cand).ids) == n_tokens:
            return cand
    raise RuntimeError(f"could not trim text to exactly {n_tokens} tokens")


def make_texts(tok: Tokenizer, seed: int) -> list[str]:
    """The evaluated texts: varied lengths and edge cases, all synthetic."""
    rng = random.Random(seed + 1)
    texts = [
        # Short texts (5-20 tokens).
        "The blue zorblat grobbles.",
        _trim_to_exact(tok, _grow_to_tokens(rng, tok, 18), 15),
        # Exactly one full window, and one token more (boundary cases).
        _trim_to_exact(tok, _grow_to_tokens(rng, tok, MAX_LEN + 5), MAX_LEN),
        _trim_to_exact(tok, _grow_to_tokens(rng, tok, MAX_LEN + 6), MAX_LEN + 1),
        # Medium texts, one with a newline (and a blank line) inside.
        _grow_to_tokens(rng, tok, 100, first=_sentence(rng) + "\n" + _sentence(rng) + "\n\n"),
        _grow_to_tokens(rng, tok, 150, first="Report 2024-06-11, total = 3,141.59; ratio 7/8."),
        # Leading and trailing spaces, with a run of inner spaces.
        "   " + _grow_to_tokens(rng, tok, 120, first="Spaced   out:") + "  ",
        # Long: several windows.  Non-ASCII, a tab, and a decomposed accent
        # ("e" + U+0301, which NFC-normalising tokenizers compose).
        _grow_to_tokens(rng, tok, 200,
                        first="Tab\there, naïve café crème, zwölf piñaro; cafe\u0301 twice."),
    ]
    for t in texts:
        assert not t.startswith("<s>")  # lm-eval would otherwise drop special tokens
    return texts


# ---------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------


def train_tokenizer(corpus: list[str]) -> Tokenizer:
    """Byte-level BPE, no post-processor (the scorer adds BOS itself)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    for i, s in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))
    assert tok.post_processor is None
    return tok


# Qwen2's pre-tokenizer regex (transformers' Qwen2Tokenizer).
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def qwen2_style(tok: Tokenizer) -> Tokenizer:
    """Same vocab/merges, but the normalizer + pre-tokenizer real Qwen2 checkpoints ship.

    transformers 5 always loads model_type "qwen2" through Qwen2Tokenizer, which
    rebuilds this pipeline from vocab + merges and ignores the one in
    tokenizer.json.  Shipping the matching pipeline keeps tokenizer.json, HF's
    AutoTokenizer and lm-eval in agreement (as they are for real Qwen2 models).
    """
    q = Tokenizer.from_str(tok.to_str())
    q.normalizer = normalizers.NFC()
    q.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    return q


def tokenizer_config(tokenizer_class: str = "PreTrainedTokenizerFast") -> dict:
    return {
        "tokenizer_class": tokenizer_class,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": MAX_LEN,
    }


def write_tokenizer(tok: Tokenizer, ckpt_dir: Path, tokenizer_class: str) -> None:
    tok.save(str(ckpt_dir / "tokenizer.json"))
    cfg = tokenizer_config(tokenizer_class)
    (ckpt_dir / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")


# ---------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------

COMMON = dict(
    hidden_size=32,
    num_hidden_layers=2,
    intermediate_size=64,
    num_attention_heads=4,
    max_position_embeddings=MAX_LEN,
    rms_norm_eps=1e-5,
    bos_token_id=BOS_ID,
    eos_token_id=EOS_ID,
    pad_token_id=PAD_ID,
)

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
}


@dataclass
class Spec:
    cls: type
    config: object
    save_kwargs: dict = field(default_factory=dict)
    tokenizer_class: str = "PreTrainedTokenizerFast"  # "Qwen2Tokenizer" => Qwen2 pipeline


def model_specs(vocab_size: int) -> dict[str, Spec]:
    c = dict(COMMON, vocab_size=vocab_size)
    default_rope = {"rope_type": "default", "rope_theta": 10000.0}
    return {
        "llama_gqa": Spec(LlamaForCausalLM, LlamaConfig(
            **c, num_key_value_heads=2, tie_word_embeddings=False, rope_parameters=default_rope)),
        "llama3_rope": Spec(LlamaForCausalLM, LlamaConfig(
            **c, num_key_value_heads=1, tie_word_embeddings=False,
            rope_parameters=dict(LLAMA3_ROPE, rope_theta=500000.0))),
        "qwen2_bias": Spec(Qwen2ForCausalLM, Qwen2Config(
            **c, num_key_value_heads=2, tie_word_embeddings=False, rope_parameters=default_rope),
            tokenizer_class="Qwen2Tokenizer"),
        "llama_tied": Spec(LlamaForCausalLM, LlamaConfig(
            **c, num_key_value_heads=4, head_dim=16, tie_word_embeddings=True,
            rope_parameters=default_rope)),
        "mistral_sharded": Spec(MistralForCausalLM, MistralConfig(
            **c, num_key_value_heads=2, sliding_window=16, tie_word_embeddings=False,
            rope_parameters=default_rope), save_kwargs={"max_shard_size": "100KB"}),
    }


def init_weights(model: torch.nn.Module, seed: int) -> None:
    """Large-ish random weights so log-likelihoods are far from uniform."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if "norm" in name:
                p.copy_(1.0 + 0.1 * noise)
            elif name.endswith(".bias"):
                p.copy_(0.1 * noise)
            else:
                p.copy_(0.2 * noise)


def build_checkpoint(name: str, spec: Spec, tok: Tokenizer, out: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = spec.cls(spec.config).to(torch.float32).eval()
    init_weights(model, seed)
    ckpt_dir = out / name
    if ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True)
    model.save_pretrained(ckpt_dir, **spec.save_kwargs)
    write_tokenizer(tok, ckpt_dir, spec.tokenizer_class)
    # Drop generation_config.json: not needed for scoring, keeps dirs minimal.
    gen_cfg = ckpt_dir / "generation_config.json"
    if gen_cfg.exists():
        gen_cfg.unlink()
    return ckpt_dir


def rewrite_config_to_4x_dialect(ckpt_dir: Path) -> dict:
    """Turn a transformers-5 config.json into the transformers-4.x dialect."""
    path = ckpt_dir / "config.json"
    cfg = json.loads(path.read_text())
    rope = cfg.pop("rope_parameters")
    rope_theta = rope.pop("rope_theta")
    assert rope["rope_type"] == "llama3"
    new = {}
    for k, v in cfg.items():
        if k == "dtype":
            new["torch_dtype"] = v
        else:
            new[k] = v
    new["rope_theta"] = rope_theta
    new["rope_scaling"] = {k: rope[k] for k in (
        "rope_type", "factor", "low_freq_factor", "high_freq_factor",
        "original_max_position_embeddings")}
    new = dict(sorted(new.items()))
    path.write_text(json.dumps(new, indent=2) + "\n")
    return new


# ---------------------------------------------------------------------------
# Rolling log-likelihood (lm-eval's algorithm, re-implemented)
# ---------------------------------------------------------------------------


def rolling_windows(tokens: list[int], prefix_token: int, max_len: int) -> list[tuple[list[int], list[int]]]:
    """get_rolling_token_windows(context_len=1) + make_disjoint_window."""
    if not tokens:
        return []
    windows = []
    first = min(max_len, len(tokens))
    windows.append(([prefix_token] + tokens[: first - 1], tokens[:first]))
    predicted = first
    pred_len = max_len  # max_seq_len - context_len + 1 with context_len = 1
    while predicted < len(tokens):
        n = min(len(tokens) - predicted, pred_len)
        end = predicted + n
        windows.append((tokens[end - max_len - 1: end - 1], tokens[end - n: end]))
        predicted += n
    return [(ctx[: len(ctx) - (len(cont) - 1)], cont) for ctx, cont in windows]


def lm_eval_windows(tokens: list[int], prefix_token: int, max_len: int):
    return list(map(lm_eval.utils.make_disjoint_window,
                    lm_eval.utils.get_rolling_token_windows(
                        token_list=tokens, prefix_token=prefix_token,
                        max_seq_len=max_len, context_len=1)))


@torch.no_grad()
def score_text(model, tokens: list[int], max_len: int) -> list[float]:
    """Per-token log-probs of `tokens`, in order, via rolling windows."""
    out: list[float] = []
    for ctx, cont in rolling_windows(tokens, BOS_ID, max_len):
        inp = (ctx + cont)[-(max_len + 1):][:-1]
        logits = model(torch.tensor([inp])).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)[-len(cont):]
        out.extend(logp[torch.arange(len(cont)), torch.tensor(cont)].tolist())
    assert len(out) == len(tokens)
    return out


def load_model(ckpt_dir: Path, dtype: torch.dtype):
    return AutoModelForCausalLM.from_pretrained(
        ckpt_dir, dtype=dtype, attn_implementation="eager").eval()


def score_all(model, token_lists: list[list[int]]) -> list[dict]:
    results = []
    for toks in token_lists:
        lps = score_text(model, toks, MAX_LEN)
        results.append({
            "num_tokens": len(toks),
            "total_logprob": math.fsum(lps),
            "token_logprobs": lps,
            "token_ids": toks,
        })
    return results


def max_abs_diff(a: list[dict], b: list[dict]) -> float:
    return max(abs(x - y) for ra, rb in zip(a, b)
               for x, y in zip(ra["token_logprobs"], rb["token_logprobs"]))


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------


def check_hf_tokenizer(ckpt_dir: Path, texts: list[str], token_lists: list[list[int]]) -> None:
    """transformers' AutoTokenizer must give the same ids and not add BOS."""
    hf_tok = AutoTokenizer.from_pretrained(ckpt_dir)
    assert hf_tok.bos_token_id == BOS_ID and hf_tok.eos_token_id == EOS_ID
    for text, toks in zip(texts, token_lists):
        assert hf_tok.encode(text, add_special_tokens=False) == toks
        assert hf_tok.encode(text) == toks, "tokenizer must not add BOS itself"


def check_llama3_scaling(model) -> None:
    """The 4.x config must load as llama3 rope, and must bend the frequencies."""
    rp = model.config.rope_parameters
    assert rp["rope_type"] == "llama3" and rp["rope_theta"] == 500000.0, rp
    inv = model.model.rotary_emb.inv_freq.double()
    head_dim = model.config.head_dim
    base = 1.0 / (500000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    assert not torch.allclose(inv, base), "llama3 scaling did not change inv_freq"


def check_tied(ckpt_dir: Path) -> None:
    """No lm_head.weight in the file; q_proj reflects the explicit head_dim."""
    from safetensors import safe_open
    with safe_open(ckpt_dir / "model.safetensors", framework="pt") as f:
        assert "lm_head.weight" not in set(f.keys()), "tied checkpoint must not store lm_head"
        q_shape = tuple(f.get_slice("model.layers.0.self_attn.q_proj.weight").get_shape())
    assert q_shape == (64, 32), q_shape  # heads * head_dim (4 * 16) x hidden


def check_sharded(ckpt_dir: Path) -> None:
    shards = sorted(ckpt_dir.glob("model-*.safetensors"))
    assert len(shards) >= 2, shards
    assert (ckpt_dir / "model.safetensors.index.json").exists()
    assert not (ckpt_dir / "model.safetensors").exists()


@torch.no_grad()
def check_sliding_window_matters(ckpt_dir: Path, tokens: list[int]) -> None:
    """Scores with sliding_window=16 must differ from full causal attention."""
    a = load_model(ckpt_dir, torch.float32)
    cfg = transformers.AutoConfig.from_pretrained(ckpt_dir)
    cfg.sliding_window = None
    b = AutoModelForCausalLM.from_pretrained(ckpt_dir, config=cfg, dtype=torch.float32,
                                             attn_implementation="eager").eval()
    inp = torch.tensor([[BOS_ID] + tokens[: MAX_LEN - 1]])
    assert not torch.allclose(a(inp).logits, b(inp).logits, atol=1e-4), "sliding window had no effect"


# ---------------------------------------------------------------------------
# lm-eval
# ---------------------------------------------------------------------------


def lm_eval_totals(ckpt_dir: Path, texts: list[str]) -> tuple[list[float], str]:
    lm = HFLM(pretrained=str(ckpt_dir), device="cpu", dtype="float32", batch_size=1,
              max_length=MAX_LEN, attn_implementation="eager")
    attn = getattr(lm.model.config, "_attn_implementation", "unknown")
    reqs = [Instance(request_type="loglikelihood_rolling", doc={}, arguments=(t,), idx=i)
            for i, t in enumerate(texts)]
    with contextlib.redirect_stderr(io.StringIO()):  # per-window tqdm bars
        totals = lm.loglikelihood_rolling(reqs, disable_tqdm=True)
    return [float(x) for x in totals], attn


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def versions() -> dict:
    v = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
    }
    if lm_eval is not None:
        from importlib.metadata import version
        v["lm_eval"] = version("lm_eval")
    return v


def write_readme(out: Path, vers: dict, lm_eval_note: str) -> None:
    lines = [
        "# Parity fixtures (generated — do not edit by hand)",
        "",
        "Produced by `python scripts/make_parity_fixtures.py` in a venv made from `scripts/requirements-reference.txt` (fixed seeds; re-running reproduces them).",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()) + ".",
        "Five tiny random-weight checkpoints (float32 safetensors) use one byte-level BPE vocabulary trained on synthetic text;",
        "`qwen2_bias/tokenizer.json` wraps the same vocab/merges in Qwen2's NFC + split-regex pipeline, because transformers 5",
        "always loads model_type qwen2 through Qwen2Tokenizer (so its `token_ids` can differ, e.g. on the decomposed accent in text 8).",
        "`reference.json` holds per-token log-probs from transformers (eager attention, f32 and bf16) using lm-eval's",
        "`loglikelihood_rolling` windows (BOS prefix id 0, max_length 64, context_len 1). " + lm_eval_note,
        "All text (`texts.jsonl` and the tokenizer training data) is synthetic, generated from an invented word list; nothing was downloaded.",
    ]
    (out / "README.md").write_text("\n".join(lines) + "\n")


def process_model(name: str, spec: Spec, tok: Tokenizer, texts: list[str], out: Path,
                  seed: int) -> dict:
    """Build one checkpoint, run its checks, and score every text."""
    print(f"== {name}")
    if spec.tokenizer_class == "Qwen2Tokenizer":
        tok = qwen2_style(tok)
    ckpt_dir = build_checkpoint(name, spec, tok, out, seed)
    token_lists = [tok.encode(t).ids for t in texts]
    check_hf_tokenizer(ckpt_dir, texts, token_lists)
    if lm_eval is not None:
        for toks in token_lists:
            assert rolling_windows(toks, BOS_ID, MAX_LEN) == lm_eval_windows(toks, BOS_ID, MAX_LEN)

    if name == "llama3_rope":
        f32_v5 = score_all(load_model(ckpt_dir, torch.float32), token_lists)
        rewrite_config_to_4x_dialect(ckpt_dir)
        model = load_model(ckpt_dir, torch.float32)
        check_llama3_scaling(model)
        f32 = score_all(model, token_lists)
        d = max_abs_diff(f32_v5, f32)
        assert d <= RELOAD_TOL, f"4.x-dialect config changed log-likelihoods by {d}"
        print(f"   4.x-dialect config reloads with identical scores (max diff {d:.3g})")
    else:
        f32 = score_all(load_model(ckpt_dir, torch.float32), token_lists)
    if name == "llama_tied":
        check_tied(ckpt_dir)
    if name == "mistral_sharded":
        check_sharded(ckpt_dir)
        check_sliding_window_matters(ckpt_dir, token_lists[-1])

    bf16 = score_all(load_model(ckpt_dir, torch.bfloat16), token_lists)
    result = {"f32": f32, "bf16": bf16, "bf16_max_diff": max_abs_diff(f32, bf16)}
    print(f"   token counts: {[r['num_tokens'] for r in f32]}")
    print(f"   f32 totals: {[round(r['total_logprob'], 4) for r in f32]}")
    print(f"   max |f32 - bf16| token logprob: {result['bf16_max_diff']:.4g}")

    if lm_eval is not None:
        totals, attn = lm_eval_totals(ckpt_dir, texts)
        for r, t in zip(f32, totals):
            tol = LM_EVAL_TOL_PER_TOKEN * r["num_tokens"]
            assert abs(r["total_logprob"] - t) <= tol, (name, r["total_logprob"], t)
        worst = max(abs(r["total_logprob"] - t) for r, t in zip(f32, totals))
        print(f"   lm_eval HFLM ({attn} attention) totals match (max |diff| {worst:.3g})")
        result.update(lm_eval=totals, lm_eval_attn=attn, lm_eval_max_diff=worst)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir", nargs="?", default=str(DEFAULT_OUT))
    args = ap.parse_args()
    out = Path(args.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    vers = versions()
    for k, v in vers.items():
        print(f"{k:>12}: {v}")
    if lm_eval is None:
        print(f"WARNING: lm_eval not importable ({_LM_EVAL_IMPORT_ERROR}); "
              "skipping the lm_eval cross-check section", file=sys.stderr)

    tok = train_tokenizer(training_corpus(SEED))
    vocab_size = tok.get_vocab_size()
    print(f"tokenizer vocab size: {vocab_size}")
    texts = make_texts(tok, SEED)
    with open(out / "texts.jsonl", "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")

    results = {name: process_model(name, spec, tok, texts, out, SEED + 100 * i)
               for i, (name, spec) in enumerate(model_specs(vocab_size).items())}

    reference = {
        "max_length": MAX_LEN,
        "bos_token_id": BOS_ID,
        "versions": vers,
        "models": {n: {"f32": r["f32"], "bf16": r["bf16"]} for n, r in results.items()},
    }
    if lm_eval is not None:
        reference["lm_eval"] = {n: r["lm_eval"] for n, r in results.items()}
        reference["lm_eval_attn_implementation"] = {n: r["lm_eval_attn"] for n, r in results.items()}
        note = ("The `lm_eval` section holds totals from lm-eval's `HFLM.loglikelihood_rolling` "
                "(asserted to match the f32 totals within 1e-4 per token).")
    else:
        note = "lm-eval was not available, so there is no `lm_eval` section."
    (out / "reference.json").write_text(json.dumps(reference) + "\n")
    write_readme(out, vers, note)

    print("max |f32 - bf16| token logprob per model:",
          {n: float(f"{r['bf16_max_diff']:.4g}") for n, r in results.items()})
    if lm_eval is not None:
        print("max |f32 - lm_eval| total per model:",
              {n: float(f"{r['lm_eval_max_diff']:.3g}") for n, r in results.items()})
    print(f"wrote fixtures to {out}")


if __name__ == "__main__":
    warnings.filterwarnings("ignore", category=FutureWarning)
    main()
