#!/usr/bin/env python3
"""Generate the tokenizer-quirk fixtures: what lm-eval's HF backend feeds the model.

Why this exists
---------------
lm-evaluation-harness's Hugging Face backend (``lm_eval.models.huggingface.HFLM``)
decides per request whether a BOS token is added, which token an empty context is
conditioned on, how a trailing space moves into the continuation, how contexts are
left-truncated, and so on, and the answers depend on the tokenizer's own layout
(post-processor, ``tokenizer_config.json`` flags, how transformers 5 rebuilds the
tokenizer class).  ckpt re-implements this in Rust; these fixtures let the Rust
tests replay lm-eval's exact token ids and scores with no Python.

This script builds, under ``tests/fixtures/tokenizers/``, four tiny random Llama
checkpoints that differ only in their tokenizer's quirks:

* ``llama3_bytelevel_bos``: byte-level BPE with a Llama-3 split regex and
  ``ignore_merges``, specials appended after the vocabulary, post-processor
  ``Sequence([ByteLevel, TemplateProcessing("<|begin_of_text|> $A")])``,
  ``tokenizer_class: PreTrainedTokenizerFast`` with no ``add_bos_token`` key; untied.
* ``llama2_metaspace_bos``: SentencePiece-style BPE (``<unk>``/``<s>``/``</s>`` = 0/1/2,
  byte-fallback tokens ``<0x00>``..``<0xFF>``, Prepend/Replace normalizer, no
  pre-tokenizer), post-processor ``"<s>:0 $A:0"``, ``tokenizer_class: LlamaTokenizer``,
  ``add_bos_token: true``; tied embeddings.
* ``gpt2_no_bos``: GPT-2-style byte-level BPE, ``<|endoftext|>`` (last id) as bos, eos
  and unk, ByteLevel post-processor that adds nothing, ``tokenizer_class:
  GPT2Tokenizer``, ``add_bos_token: false``; untied.
* ``bos_eos_both``: the ``llama2_metaspace_bos`` vocabulary with a post-processor
  ``"<s> $A </s>"`` and ``tokenizer_class: LlamaTokenizer``, ``add_bos_token: true``,
  ``add_eos_token: true``; tied.

and then runs lm-eval 0.4.13's ``HFLM`` (CPU, float32, batch size 1, max_length 24)
on a fixed set of synthetic requests (``loglikelihood``, ``loglikelihood_rolling``,
``generate_until``; plus per kind the requests that start with its BOS text and one
loglikelihood request continued with the model's own greedy token) for several
``add_bos_token`` / ``prefix_token_id`` settings (every kind with lm-eval's default;
llama3 and gpt2 also with True and False; gpt2 also with ``prefix_token_id`` = the id
of "The", alone and with ``add_bos_token=True``),
recording the token ids lm-eval hands the model (by wrapping the instance's
``_loglikelihood_tokens``, ``tok_batch_encode`` and ``_model_generate``) and the
results it returns, into ``reference.json``.  It also records, per kind, whether
``tokenizers.Tokenizer.from_file(tokenizer.json)`` and ``AutoTokenizer`` agree on every
string used (transformers 5 rebuilds ``LlamaTokenizer``/``GPT2Tokenizer`` from the
vocab and merges instead of using the pipeline in tokenizer.json).

All text (tokenizer training corpus and requests) is synthetic, written in this
script; nothing is downloaded.  Seeds are fixed: re-running gives identical files.

Usage::

    ~/.venvs/ckpt-ref/bin/python scripts/make_tokenizer_fixtures.py [OUT_DIR]

OUT_DIR defaults to ``tests/fixtures/tokenizers`` under the repository root.
Made with torch 2.15, transformers 5.24, tokenizers 0.23, lm-eval 0.4.13
(``scripts/requirements-reference.txt``); the versions used are written into
reference.json and README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import logging
import os
import random
import re
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from tokenizers import (  # noqa: E402
    AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers,
    processors, trainers)
from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM  # noqa: E402

import lm_eval.utils  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "tests" / "fixtures" / "tokenizers"

SEED = 20261203
MAX_LEN = 24  # lm-eval max_length
MAX_POS = 64  # max_position_embeddings
GEN_KWARGS = {"until": ["\n\n", "."], "max_gen_toks": 6, "do_sample": False}

# ---------------------------------------------------------------------------
# Synthetic text (invented; no corpus or benchmark item is copied)
# ---------------------------------------------------------------------------

ANIMALS = ["dog", "cat", "cow", "bird", "horse", "goat", "fox", "owl", "duck", "sheep", "frog"]
SOUNDS = {"dog": "barks", "cat": "meows", "cow": "moos", "bird": "sings", "horse": "neighs",
          "goat": "bleats", "fox": "yips", "owl": "hoots", "duck": "quacks", "sheep": "bleats",
          "frog": "croaks"}
THINGS = ["mat", "hat", "lamp", "kettle", "box", "chair", "hill", "river", "boat", "garden",
          "table", "window", "bridge", "basket"]
ADJS = ["red", "small", "old", "quiet", "happy", "green", "tall", "naïve", "sleepy", "brave"]
NAMES = ["Mira", "Tobin", "Ana", "Olek", "Suri", "Pell", "Hanno", "Vida"]
VERBS = ["sat on", "jumped over", "looked at", "walked to", "slept under", "ran past"]
PLACES = ["the café", "the market", "the farm", "the station", "the old mill"]
# Rare words: "über" and "日本" appear only a few times, so they stay out of the
# SentencePiece-style alphabet and go through byte fallback there.
RARE = ["über", "日本"]


def _sentence(rng: random.Random) -> str:
    a, b = rng.choice(ANIMALS), rng.choice(ANIMALS)
    t, adj, name, other = rng.choice(THINGS), rng.choice(ADJS), rng.choice(NAMES), rng.choice(NAMES)
    v, place, n = rng.choice(VERBS), rng.choice(PLACES), rng.randint(0, 999)
    templates = [
        f"The {a} {v} the {t}.",
        f"The {adj} {a} {SOUNDS[a]} at the {b}.",
        f"Question: Which animal {SOUNDS[a]}?\nAnswer: The {a}.",
        f"{name} gave the {t} to {other} because {name} wanted to help.",
        f"Hello, my name is {name} and I have {n} {a}s.",
        f"A {adj} {t} stood near {place}, where the {a} slept.",
        f"{name} said: \"The {a} and the {b} are {adj}.\"",
        f"At {place}, {name} drank a café au lait with the {adj} {a}.",
        f"Is the {a} {adj}? Yes, the {a} is {adj} and the {b} is not.",
    ]
    return rng.choice(templates)


def training_corpus(seed: int, n_lines: int = 400) -> list[str]:
    """Synthetic lines used only to train the tokenizers (not written out)."""
    rng = random.Random(seed)
    lines = []
    for i in range(n_lines):
        line = " ".join(_sentence(rng) for _ in range(rng.randint(1, 3)))
        if i % 7 == 0:
            line += "\n\n" + _sentence(rng)
        lines.append(line)
    # A few rare non-ASCII words (fewer than the SentencePiece alphabet's cut-off).
    lines += [f"The {w} {rng.choice(ANIMALS)} {rng.choice(VERBS)} the {rng.choice(THINGS)}." for w in RARE]
    return lines


# The request strings (the same for every kind; BOS-text ones are built per kind).
MC_CONTEXT = "Question: Which animal barks?\nAnswer:"
MC_CHOICES = [" dog", " cat", " cow", " bird"]
LONG_CONTEXT = ("Mira gave the old lamp to Tobin because the quiet fox slept under the table, "
                "and then the brave duck walked to the garden where Olek and Suri sat on the "
                "small red chair near the river")
LONG_ROLLING = ("Hello, my name is Vida and I have 12 owls. The sleepy cow jumped over the green "
                "basket. Question: Which animal moos?\nAnswer: The cow.\n\nAt the market, Pell "
                "drank a café au lait with the happy goat; the frog croaks at the window while "
                "Hanno looked at the bridge.")
GEN_LONG_CONTEXT = ("The tall horse ran past the bridge, the small goat slept under the window, "
                    "and the happy bird looked at the")


# Contexts tried (in order) for the kind-specific request whose continuation is the
# model's own greedy next token, so that some is_greedy is true.
GREEDY_CONTEXTS = ["The cat sat on the", "Hello, my name is", "The dog", MC_CONTEXT,
                   "Mira gave the lamp to", "At the market, Pell", "The happy goat"]


def loglikelihood_requests(bos_text: str | None,
                           greedy: tuple[str, str] | None = None) -> list[tuple[str, str]]:
    reqs = [(MC_CONTEXT, c) for c in MC_CHOICES]
    reqs += [
        ("The cat sat on the ", "mat."),                                   # trailing space
        ("Mira gave the lamp to Tobin because Mira", " wanted to help."),  # partial scoring
        ("Mira gave the lamp to Tobin because Tobin", " wanted to help."),
        ("", "The dog barks."),                                           # empty context
        ("", " the dog barks."),                                          # ... leading space
        ("The naïve owl drank a café", " in 日本, über the hill."),          # non-ASCII
        (LONG_CONTEXT, " and barked."),                                    # > max_length
    ]
    if bos_text is not None:
        reqs += [
            ("", bos_text + "Hello there."),        # prefix_token_id == continuation_enc[0]
            (bos_text + MC_CONTEXT, " dog"),         # has_bos_prefix path
        ]
    if greedy is not None:
        reqs.append(greedy)
    return reqs


def rolling_texts(bos_text: str | None) -> list[str]:
    texts = ["Hello world.", LONG_ROLLING, "Café, naïve, über: 日本 has a café for every owl.",
             " The owl hoots."]
    if bos_text is not None:
        texts.append(bos_text + "The dog barks at the cat.")
    return texts


def generation_contexts(bos_text: str | None) -> list[str]:
    ctxs = [MC_CONTEXT, "The cat sat on the", "Hello, my name is", GEN_LONG_CONTEXT]
    if bos_text is not None:
        ctxs.append(bos_text + "The dog")
    return ctxs


def all_strings(bos_text: str | None, greedy: tuple[str, str] | None) -> list[str]:
    """Every string lm-eval encodes for the requests above (for the tokenizer cross-check)."""
    out: list[str] = []
    for ctx, cont in loglikelihood_requests(bos_text, greedy):
        n = len(ctx) - len(ctx.rstrip())
        c, k = (ctx[:-n], ctx[-n:] + cont) if n else (ctx, cont)
        out += [ctx, cont, c, k, c + k]
    out += rolling_texts(bos_text) + generation_contexts(bos_text)
    seen, uniq = set(), []
    for s in out:
        if s and s not in seen:
            seen.add(s)
            uniq.append(s)
    return uniq


# ---------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------

# Llama 3's pre-tokenizer split pattern (numbers in groups of up to three).
LLAMA3_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                   "<|reserved_special_token_1|>", "<|start_header_id|>", "<|end_header_id|>",
                   "<|reserved_special_token_2|>", "<|eot_id|>"]
BYTELEVEL_VOCAB = 400   # before the specials
METASPACE_VOCAB = 460   # including <unk>, <s>, </s> and the 256 byte tokens
GPT2_VOCAB = 400        # before <|endoftext|>


def _special(content: str) -> AddedToken:
    return AddedToken(content, special=True, normalized=False, lstrip=False, rstrip=False,
                      single_word=False)


def _with_model(tok: Tokenizer, **model_fields) -> Tokenizer:
    """Copy of tok with fields of its model replaced (via the JSON form)."""
    d = json.loads(tok.to_str())
    d["model"].update(model_fields)
    return Tokenizer.from_str(json.dumps(d))


def build_llama3(corpus: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=BYTELEVEL_VOCAB, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer=trainer)
    tok = _with_model(tok, ignore_merges=True)  # as Llama 3's tokenizer.json
    base = tok.get_vocab_size()
    tok.add_special_tokens([_special(s) for s in LLAMA3_SPECIALS])
    for i, s in enumerate(LLAMA3_SPECIALS):
        assert tok.token_to_id(s) == base + i
    bos = LLAMA3_SPECIALS[0]
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
        processors.TemplateProcessing(
            single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
            special_tokens=[(bos, tok.token_to_id(bos))]),
    ])
    return tok


def build_metaspace(corpus: list[str], eos_too: bool,
                    trained: Tokenizer | None = None) -> tuple[Tokenizer, Tokenizer]:
    """SentencePiece-style BPE as Llama 2 / Mistral / TinyLlama ship it in tokenizer.json.

    Returns (tokenizer, trained): `trained` is the raw trainer output, reused for the
    second kind so both share one vocabulary.
    """
    if trained is None:
        t = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
        t.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        # Train on pieces split before each "▁" (as SentencePiece does); the shipped
        # tokenizer has no pre-tokenizer.
        t.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
        counts: dict[str, int] = {}
        for line in corpus:
            for ch in line.replace(" ", "▁"):
                counts[ch] = counts.get(ch, 0) + 1
        alphabet = sorted(ch for ch, c in counts.items() if c >= 10) + ["▁"]
        alphabet = sorted(set(alphabet))
        for rare in "ü日本":
            assert rare not in alphabet, rare
        trainer = trainers.BpeTrainer(
            vocab_size=METASPACE_VOCAB - 256, min_frequency=2, show_progress=False,
            special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=alphabet,
            limit_alphabet=len(alphabet))
        t.train_from_iterator(corpus, trainer=trainer)
        trained = t
    d = json.loads(trained.to_str())
    old_vocab = d["model"]["vocab"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece, _ in sorted(old_vocab.items(), key=lambda kv: kv[1]):
        if piece not in vocab:
            vocab[piece] = len(vocab)
    model = models.BPE(vocab=vocab, merges=[tuple(m) if isinstance(m, list) else tuple(m.split(" "))
                                            for m in d["model"]["merges"]],
                       unk_token="<unk>", fuse_unk=True, byte_fallback=True)
    tok = Tokenizer(model)
    tok.add_special_tokens([_special(s) for s in ("<unk>", "<s>", "</s>")])
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    if eos_too:
        single, pair = "<s>:0 $A:0 </s>:0", "<s>:0 $A:0 </s>:0 <s>:1 $B:1 </s>:1"
        specials = [("<s>", 1), ("</s>", 2)]
    else:
        single, pair = "<s>:0 $A:0", "<s>:0 $A:0 <s>:1 $B:1"
        specials = [("<s>", 1)]
    tok.post_processor = processors.TemplateProcessing(single=single, pair=pair,
                                                       special_tokens=specials)
    assert tok.get_vocab_size() == len(vocab)
    return tok, trained


def build_gpt2(corpus: list[str]) -> Tokenizer:
    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    t.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=GPT2_VOCAB, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    t.train_from_iterator(corpus, trainer=trainer)
    d = json.loads(t.to_str())
    eot = "<|endoftext|>"
    d["model"]["vocab"][eot] = len(d["model"]["vocab"])  # last id, in the model vocab (as GPT-2)
    tok = Tokenizer.from_str(json.dumps(d))
    tok.add_special_tokens([_special(eot)])
    assert tok.token_to_id(eot) == len(d["model"]["vocab"]) - 1
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    return tok


# ---------------------------------------------------------------------------
# Kinds: tokenizer files, config and checkpoint
# ---------------------------------------------------------------------------


def _added_token_dict(content: str, with_type: bool = False) -> dict:
    d = {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
         "single_word": False}
    if with_type:
        d = {"__type": "AddedToken", **d}
    return d


def _added_tokens_decoder(tok: Tokenizer, names: list[str]) -> dict:
    return {str(tok.token_to_id(n)): {**_added_token_dict(n), "special": True} for n in names}


@dataclass
class Kind:
    name: str
    imitates: str
    tok: Tokenizer
    tokenizer_config: dict
    special_tokens_map: dict | None
    bos_text: str | None
    eos_text: str
    tied: bool
    rope_theta: float
    generation_extra: dict


def make_kinds(corpus: list[str]) -> list[Kind]:
    kinds = []

    t1 = build_llama3(corpus)
    kinds.append(Kind(
        name="llama3_bytelevel_bos",
        imitates="Meta Llama 3 (byte-level BPE, BOS added by the post-processor, "
                 "tokenizer_class PreTrainedTokenizerFast, no add_bos_token key)",
        tok=t1,
        tokenizer_config={
            "added_tokens_decoder": _added_tokens_decoder(t1, LLAMA3_SPECIALS),
            "bos_token": "<|begin_of_text|>",
            "clean_up_tokenization_spaces": True,
            "eos_token": "<|end_of_text|>",
            "model_input_names": ["input_ids", "attention_mask"],
            "model_max_length": MAX_POS,
            "tokenizer_class": "PreTrainedTokenizerFast",
        },
        special_tokens_map={"bos_token": _added_token_dict("<|begin_of_text|>"),
                            "eos_token": _added_token_dict("<|end_of_text|>")},
        bos_text="<|begin_of_text|>", eos_text="<|end_of_text|>", tied=False, rope_theta=500000.0,
        generation_extra={"do_sample": True, "temperature": 0.6, "top_p": 0.9},
    ))

    t2, trained = build_metaspace(corpus, eos_too=False)
    llama_cfg = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": _added_tokens_decoder(t2, ["<unk>", "<s>", "</s>"]),
        "bos_token": _added_token_dict("<s>", with_type=True),
        "clean_up_tokenization_spaces": False,
        "eos_token": _added_token_dict("</s>", with_type=True),
        "legacy": False,
        "model_max_length": MAX_POS,
        "pad_token": None,
        "padding_side": "right",
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": _added_token_dict("<unk>", with_type=True),
    }
    llama_stm = {"bos_token": _added_token_dict("<s>"), "eos_token": _added_token_dict("</s>"),
                 "unk_token": _added_token_dict("<unk>")}
    kinds.append(Kind(
        name="llama2_metaspace_bos",
        imitates="Llama 2 / Mistral 7B v0.1 / TinyLlama (SentencePiece-converted BPE with byte "
                 "fallback, tokenizer_class LlamaTokenizer, add_bos_token true)",
        tok=t2, tokenizer_config=llama_cfg, special_tokens_map=llama_stm,
        bos_text="<s>", eos_text="</s>", tied=True, rope_theta=10000.0, generation_extra={},
    ))

    t3 = build_gpt2(corpus)
    eot = "<|endoftext|>"
    kinds.append(Kind(
        name="gpt2_no_bos",
        imitates="GPT-2 style (byte-level BPE, <|endoftext|> as bos/eos/unk, nothing added; "
                 "tokenizer_class GPT2Tokenizer, add_bos_token false)",
        tok=t3,
        tokenizer_config={
            "add_bos_token": False,
            "add_prefix_space": False,
            "added_tokens_decoder": _added_tokens_decoder(t3, [eot]),
            "bos_token": eot,
            "clean_up_tokenization_spaces": False,
            "eos_token": eot,
            "errors": "replace",
            "model_max_length": MAX_POS,
            "pad_token": None,
            "tokenizer_class": "GPT2Tokenizer",
            "unk_token": eot,
        },
        special_tokens_map={"bos_token": eot, "eos_token": eot, "unk_token": eot},
        bos_text=eot, eos_text=eot, tied=False, rope_theta=10000.0, generation_extra={},
    ))

    t4, _ = build_metaspace(corpus, eos_too=True, trained=trained)
    kinds.append(Kind(
        name="bos_eos_both",
        imitates="a Llama-2-style checkpoint re-saved with add_eos_token true (LlamaTokenizer; "
                 "the post-processor adds <s> and </s>)",
        tok=t4, tokenizer_config=dict(llama_cfg, add_eos_token=True), special_tokens_map=llama_stm,
        bos_text="<s>", eos_text="</s>", tied=True, rope_theta=10000.0, generation_extra={},
    ))
    return kinds


def init_weights(model: torch.nn.Module, seed: int) -> None:
    """Large-ish random weights so log-likelihoods are far from uniform."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            p.copy_(1.0 + 0.1 * noise if "norm" in name else 0.3 * noise)


def write_checkpoint(kind: Kind, out: Path, seed: int) -> Path:
    d = out / kind.name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    tok = kind.tok
    bos_id = tok.token_to_id(kind.bos_text)
    eos_id = tok.token_to_id(kind.eos_text)
    cfg = LlamaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
        max_position_embeddings=MAX_POS, rms_norm_eps=1e-5, bos_token_id=bos_id,
        eos_token_id=eos_id, tie_word_embeddings=kind.tied,
        rope_parameters={"rope_type": "default", "rope_theta": kind.rope_theta})
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).to(torch.float32).eval()
    init_weights(model, seed)
    model.generation_config = GenerationConfig(bos_token_id=bos_id, eos_token_id=eos_id,
                                               **kind.generation_extra)
    model.save_pretrained(d)
    tok.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(
        json.dumps(kind.tokenizer_config, indent=2, ensure_ascii=False) + "\n")
    if kind.special_tokens_map is not None:
        (d / "special_tokens_map.json").write_text(
            json.dumps(kind.special_tokens_map, indent=2, ensure_ascii=False) + "\n")
    return d


# ---------------------------------------------------------------------------
# transformers vs tokenizer.json
# ---------------------------------------------------------------------------


def compare_tokenizers(ckpt: Path, strings: list[str]) -> dict:
    raw = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    hf = AutoTokenizer.from_pretrained(ckpt)
    diffs, diffs_special = [], []
    for s in strings:
        a = raw.encode(s, add_special_tokens=False).ids
        b = hf(s, add_special_tokens=False)["input_ids"]
        if a != b:
            diffs.append({"string": s, "tokenizer_json": a, "transformers": b})
        a2 = raw.encode(s).ids
        b2 = hf(s)["input_ids"]
        if a2 != b2:
            diffs_special.append({"string": s, "tokenizer_json": a2, "transformers": b2})
    return {"class": type(hf).__name__, "diffs": diffs, "diffs_with_specials": diffs_special,
            "hf_add_bos_token": getattr(hf, "add_bos_token", None),
            "hf_add_eos_token": getattr(hf, "add_eos_token", None)}


@torch.no_grad()
def find_greedy_request(ckpt: Path, kind: Kind) -> tuple[str, str]:
    """(context, continuation) whose continuation is the model's greedy next token.

    Uses the tokenizer's default encoding of the context (what lm-eval does with
    add_bos_token unset) and keeps the first context whose greedy token decodes to
    clean text that re-encodes to the same single token after the context.
    """
    tok = AutoTokenizer.from_pretrained(ckpt)
    model = transformers.AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
    special = set(tok.all_special_ids)
    for ctx in GREEDY_CONTEXTS:
        ids = tok(ctx)["input_ids"]
        t = int(model(torch.tensor([ids])).logits[0, -1].argmax())
        if t in special:
            continue
        plain = tok(ctx, add_special_tokens=False)["input_ids"]
        piece = tok.decode([t])
        for text in (piece, " " + piece):
            if not text.strip() or "\ufffd" in text or text != text.rstrip():
                continue
            if tok(ctx + text, add_special_tokens=False)["input_ids"] == plain + [t]:
                return ctx, text
    raise RuntimeError(f"{kind.name}: no context with a clean greedy next token")


# ---------------------------------------------------------------------------
# lm-eval
# ---------------------------------------------------------------------------


@torch.no_grad()
def check_greedy(model, context_ids: list[int], new_ids: list[int]) -> None:
    """The generated ids must be plain argmax decoding (no sampling, no penalties)."""
    seq = list(context_ids)
    for t in new_ids:
        nxt = int(model(torch.tensor([seq])).logits[0, -1].argmax())
        assert nxt == t, (context_ids, new_ids)
        seq.append(t)


def make_lm(ckpt: Path, add_bos_token, prefix_token_id) -> HFLM:
    kw = {}
    if prefix_token_id is not None:
        kw["prefix_token_id"] = prefix_token_id
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        return HFLM(pretrained=str(ckpt), backend="causal", device="cpu", dtype="float32",
                    batch_size=1, max_length=MAX_LEN, add_bos_token=add_bos_token, **kw)


def run_lm_eval(ckpt: Path, kind: Kind, add_bos_token, prefix_token_id,
                greedy: tuple[str, str]) -> dict:
    lm = make_lm(ckpt, add_bos_token, prefix_token_id)
    seen_ll: list = []
    seen_enc: list = []
    seen_gen: list = []

    orig_ll = lm._loglikelihood_tokens
    orig_enc = lm.tok_batch_encode
    orig_gen = lm._model_generate

    def ll_wrapper(requests, *a, **k):
        reqs = [(r[0], list(r[1]), list(r[2])) for r in requests]
        res = orig_ll(requests, *a, **k)
        seen_ll.append((reqs, list(res)))
        return res

    def enc_wrapper(strings, *a, **k):
        ids, mask = orig_enc(strings, *a, **k)
        seen_enc.append((list(strings), ids.tolist(), mask.tolist()))
        return ids, mask

    def gen_wrapper(context, max_length, stop, **k):
        out = orig_gen(context=context, max_length=max_length, stop=stop, **k)
        seen_gen.append({"new_ids": out[0, context.shape[1]:].tolist(), "stop": list(stop),
                         "max_length": int(max_length)})
        return out

    lm._loglikelihood_tokens = ll_wrapper
    lm.tok_batch_encode = enc_wrapper
    lm._model_generate = gen_wrapper

    quiet = contextlib.redirect_stderr(io.StringIO())
    run = {"add_bos_token": add_bos_token, "prefix_token_id": prefix_token_id,
           "prefix_token_id_used": int(lm.prefix_token_id)}

    # loglikelihood: one call with every request (as a task would make them).
    ll_reqs = loglikelihood_requests(kind.bos_text, greedy)
    instances = [Instance(request_type="loglikelihood", doc={}, arguments=(c, k), idx=0)
                 for c, k in ll_reqs]
    with quiet:
        results = lm.loglikelihood(instances, disable_tqdm=True)
    assert len(seen_ll) == 1
    given, _ = seen_ll.pop()
    run["loglikelihood"] = []
    for (ctx, cont), (req_str, ctx_ids, cont_ids), (lp, greedy) in zip(ll_reqs, given, results, strict=True):
        assert req_str == (ctx, cont)
        run["loglikelihood"].append({"context": ctx, "continuation": cont, "context_ids": ctx_ids,
                                     "continuation_ids": cont_ids, "logprob": float(lp),
                                     "is_greedy": bool(greedy)})

    # loglikelihood_rolling: one call per text, so its windows are easy to attribute.
    run["rolling"] = []
    for text in rolling_texts(kind.bos_text):
        token_ids = lm.tok_encode(text)
        expect = list(map(lm_eval.utils.make_disjoint_window,
                          lm_eval.utils.get_rolling_token_windows(
                              token_list=token_ids, prefix_token=lm.prefix_token_id,
                              max_seq_len=lm.max_length, context_len=1)))
        with quiet:
            (total,) = lm.loglikelihood_rolling(
                [Instance(request_type="loglikelihood_rolling", doc={}, arguments=(text,), idx=0)],
                disable_tqdm=True)
        windows = []
        for reqs, res in seen_ll:
            for (req_str, ctx_ids, cont_ids), (lp, _) in zip(reqs, res, strict=True):
                assert req_str is None
                windows.append({"input": ctx_ids, "targets": cont_ids, "logprob": float(lp)})
        seen_ll.clear()
        assert [(w["input"], w["targets"]) for w in windows] == [(list(a), list(b)) for a, b in expect]
        run["rolling"].append({"text": text, "token_ids": token_ids, "windows": windows,
                               "logprob": float(total)})

    # generate_until: one call per context.
    run["generate_until"] = []
    for ctx in generation_contexts(kind.bos_text):
        gk = copy.deepcopy(GEN_KWARGS)
        with quiet:
            (text,) = lm.generate_until(
                [Instance(request_type="generate_until", doc={}, arguments=(ctx, gk), idx=0)],
                disable_tqdm=True)
        assert len(seen_enc) == 1 and len(seen_gen) == 1 and seen_enc[0][0] == [ctx]
        (_, ids, mask), g = seen_enc.pop(), seen_gen.pop()
        assert all(m == 1 for m in mask[0])
        check_greedy(lm.model, ids[0], g["new_ids"])
        run["generate_until"].append({
            "context": ctx, "until": GEN_KWARGS["until"], "max_gen_toks": GEN_KWARGS["max_gen_toks"],
            "context_ids": ids[0], "text": text,
            "until_used": g["stop"], "generated_ids": g["new_ids"],
        })
    return run


# ---------------------------------------------------------------------------
# Summaries and output
# ---------------------------------------------------------------------------


def _starts_with_special(s: str) -> bool:
    return s.startswith(("<s>", "<|"))


def describe_run(run: dict, kind: Kind) -> dict:
    """What lm-eval added, as observed in the recorded ids."""
    bos_id, eos_id = kind.tok.token_to_id(kind.bos_text), kind.tok.token_to_id(kind.eos_text)
    plain = [r for r in run["loglikelihood"] if r["context"] and not _starts_with_special(r["context"])
             and len(r["context_ids"]) < MAX_LEN]
    starts = {r["context_ids"][0] == bos_id for r in plain}
    ends = {r["context_ids"][-1] == eos_id for r in plain}
    cont_ends = {r["continuation_ids"][-1] == eos_id for r in plain}
    gens = [g for g in run["generate_until"] if not _starts_with_special(g["context"])
            and len(g["context_ids"]) < MAX_LEN - GEN_KWARGS["max_gen_toks"]]
    gen_starts = {g["context_ids"][0] == bos_id for g in gens}
    rolls = {r["windows"][0]["targets"][0] == bos_id for r in run["rolling"]
             if not _starts_with_special(r["text"])}

    def tri(s: set) -> str:
        return "mixed" if len(s) > 1 else ("yes" if True in s else "no")

    return {"context_starts_with_bos": tri(starts), "context_ends_with_eos": tri(ends),
            "continuation_ends_with_eos": tri(cont_ends),
            "generation_context_starts_with_bos": tri(gen_starts),
            "first_rolling_target_is_bos": tri(rolls)}


def compact_json(obj) -> str:
    """Indented JSON with lists of numbers kept on one line."""
    text = json.dumps(obj, indent=1, ensure_ascii=False)
    return re.sub(r"\[\s*(-?\d+(?:,\s*-?\d+)*)\s*\]",
                  lambda m: "[" + ",".join(x.strip() for x in m.group(1).split(",")) + "]", text)


def versions() -> dict:
    from importlib.metadata import version
    return {"transformers": transformers.__version__, "lm_eval": version("lm_eval"),
            "tokenizers": tokenizers.__version__, "torch": torch.__version__,
            "python": sys.version.split()[0]}


def run_settings(kind: Kind) -> list[tuple[bool | None, int | None]]:
    settings: list[tuple[bool | None, int | None]] = [(None, None)]
    if kind.name in ("llama3_bytelevel_bos", "gpt2_no_bos"):
        settings += [(True, None), (False, None)]
    if kind.name == "gpt2_no_bos":
        # A non-special id whose text ("The") starts some requests: lm-eval's tok_encode
        # compares strings with decode(prefix_token_id), so those strings count as
        # already carrying the "BOS" (visible with add_bos_token=True).
        the_id = kind.tok.token_to_id("The")
        assert the_id is not None
        settings += [(None, the_id), (True, the_id)]
    return settings


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
    for name in ("lm-eval", "lm_eval", "lm_eval.models.huggingface", "lm_eval.models.utils"):
        logging.getLogger(name).setLevel(logging.ERROR)
    vers = versions()
    for k, v in vers.items():
        print(f"{k:>12}: {v}")

    kinds = make_kinds(training_corpus(SEED))
    reference = {"made_by": "scripts/make_tokenizer_fixtures.py", "versions": vers,
                 "max_length": MAX_LEN, "kinds": {}}
    summaries: dict[str, list[dict]] = {}
    loud = []
    for i, kind in enumerate(kinds):
        print(f"== {kind.name}: vocab {kind.tok.get_vocab_size()}")
        ckpt = write_checkpoint(kind, out, SEED + 1000 * (i + 1))
        greedy = find_greedy_request(ckpt, kind)
        print(f"   greedy request: {greedy!r}")

        cmp = compare_tokenizers(ckpt, all_strings(kind.bos_text, greedy))
        agree = not cmp["diffs"]
        print(f"   AutoTokenizer class: {cmp['class']}; tokenizer.json == transformers "
              f"(add_special_tokens=False): {agree}; with specials: {not cmp['diffs_with_specials']}")
        for dd in cmp["diffs"]:
            loud.append((kind.name, dd))
            print(f"   !!! MISMATCH {dd['string']!r}\n"
                  f"       tokenizer.json: {dd['tokenizer_json']}\n"
                  f"       transformers:   {dd['transformers']}")

        entry = {"imitates": kind.imitates,
                 "bos_text": kind.bos_text, "eos_text": kind.eos_text,
                 "bos_token_id": kind.tok.token_to_id(kind.bos_text),
                 "eos_token_id": kind.tok.token_to_id(kind.eos_text),
                 "prefix_token_id_default": None,
                 "transformers_tokenizer_class": cmp["class"],
                 "transformers_vs_tokenizers_json": agree,
                 "transformers_vs_tokenizers_json_diffs": cmp["diffs"],
                 "transformers_vs_tokenizers_json_with_specials": not cmp["diffs_with_specials"],
                 "greedy_request": list(greedy),
                 "runs": []}
        summaries[kind.name] = []
        for add_bos, prefix in run_settings(kind):
            run = run_lm_eval(ckpt, kind, add_bos, prefix, greedy)
            if add_bos is None and prefix is None:
                entry["prefix_token_id_default"] = run["prefix_token_id_used"]
            entry["runs"].append(run)
            s = describe_run(run, kind)
            summaries[kind.name].append(s)
            n_greedy = sum(r["is_greedy"] for r in run["loglikelihood"])
            print(f"   add_bos_token={add_bos} prefix_token_id={prefix} "
                  f"(used {run['prefix_token_id_used']}): {s}, is_greedy true: {n_greedy}")
        reference["kinds"][kind.name] = entry

    (out / "reference.json").write_text(compact_json(reference) + "\n", encoding="utf-8")
    write_readme(out, vers, kinds, reference, summaries)
    if loud:
        print("\n" + "!" * 78)
        print(f"!!! transformers and tokenizer.json DISAGREE on {len(loud)} string(s):")
        for name, dd in loud:
            print(f"!!!   {name}: {dd['string']!r}: tokenizer.json {dd['tokenizer_json']} "
                  f"vs transformers {dd['transformers']}")
        print("!" * 78)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote fixtures to {out} ({total / 1024:.0f} KiB)")


def _cell(text: str) -> str:
    """Markdown table cell: pipes (as in <|endoftext|>) must be escaped, even in code."""
    return text.replace("|", "\\|")


def write_readme(out: Path, vers: dict, kinds: list[Kind], ref: dict,
                 summaries: dict[str, list[dict]]) -> None:
    lines = [
        "# Tokenizer-quirk fixtures (generated — do not edit by hand)",
        "",
        "Produced by `~/.venvs/ckpt-ref/bin/python scripts/make_tokenizer_fixtures.py` "
        "(fixed seeds; re-running reproduces every file byte for byte).",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()) + ".",
        "",
        "Four tiny random-weight Llama checkpoints (hidden 32, 2 layers, 4 heads, 2 kv heads, "
        "intermediate 64, max_position_embeddings 64, float32) that differ only in their "
        "tokenizer. Each tokenizer is trained with the `tokenizers` library on synthetic "
        "sentences written in the script (with café, naïve, über, 日本); nothing was downloaded "
        "or copied. `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json` are "
        "written as real repositories ship them (not re-saved by transformers).",
        "",
        "| kind | imitates | vocab | tied | AutoTokenizer class | tokenizer.json == transformers |",
        "|---|---|---|---|---|---|",
    ]
    for k in kinds:
        e = ref["kinds"][k.name]
        lines.append(f"| `{k.name}` | {_cell(k.imitates)} | {k.tok.get_vocab_size()} | {k.tied} | "
                     f"`{e['transformers_tokenizer_class']}` | {e['transformers_vs_tokenizers_json']} |")
    lines += [
        "",
        "`reference.json` records what lm-eval's `HFLM` (backend causal, CPU, float32, batch "
        f"size 1, max_length {MAX_LEN}) does with each checkpoint, per run (`add_bos_token`, "
        "`prefix_token_id` override):",
        "",
        "- `loglikelihood`: the context/continuation ids lm-eval hands `_loglikelihood_tokens` "
        "(before its left truncation to max_length + 1 tokens) and the (logprob, is_greedy) it "
        "returns. The last request of each kind (`greedy_request`) continues its context with "
        "the model's own greedy token, so is_greedy can be true.",
        "- `rolling`: the `tok_encode` ids, each disjoint window (`input` = the window's context "
        "ids, `targets` = the scored ids; the model input is `input + targets[:-1]`) with its "
        "log-likelihood, and the total lm-eval returns.",
        "- `generate_until`: the context ids from `tok_batch_encode` (after left truncation to "
        "max_length - max_gen_toks), the stop strings actually used (`until_used`: lm-eval "
        "appends the EOS text), the raw generated ids and the returned text (greedy).",
        "",
        "`transformers_vs_tokenizers_json` says whether `tokenizers.Tokenizer.from_file(tokenizer.json)` "
        "and `AutoTokenizer` give the same ids (add_special_tokens=False) on every request string; "
        "differences are listed in `transformers_vs_tokenizers_json_diffs`. lm-eval uses "
        "transformers, so the recorded ids follow transformers where the two disagree.",
        "",
        "## What lm-eval adds (observed)",
        "",
        "Plain contexts are the loglikelihood contexts that neither start with the BOS text "
        "nor exceed max_length; BOS and EOS are the kind's `bos_text` / `eos_text`.",
        "",
        "| kind | add_bos_token | prefix_token_id (used) | plain context starts with BOS | "
        "plain context ends with EOS | continuation ends with EOS | first rolling target is BOS "
        "| generation context starts with BOS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k in kinds:
        e = ref["kinds"][k.name]
        for run, s in zip(e["runs"], summaries[k.name]):
            lines.append(
                f"| `{k.name}` | {json.dumps(run['add_bos_token'])} | "
                f"{json.dumps(run['prefix_token_id'])} ({run['prefix_token_id_used']}) | "
                f"{s['context_starts_with_bos']} | {s['context_ends_with_eos']} | "
                f"{s['continuation_ends_with_eos']} | "
                f"{s['first_rolling_target_is_bos']} | {s['generation_context_starts_with_bos']} |")
    lines += [
        "",
        "Notes (all visible in `reference.json`):",
        "",
        "- `bos_eos_both`: the context is encoded `<s> … </s>` and the continuation ids are "
        "`whole[len(context_ids):]` (lm_eval/api/model.py `_encode_pair`), so every continuation "
        "loses its first token and ends with `</s>`; a one-token continuation becomes just "
        "`[</s>]`, and the four multiple-choice answers score the same.",
        "- Strings that start with the BOS text are encoded without added specials (lm-eval's "
        "`has_bos_prefix`), but the BOS text itself is still parsed as the special token. "
        "`tok_encode` compares with `decode(prefix_token_id)`, `tok_batch_encode` with "
        "`tokenizer.bos_token`: with `prefix_token_id` set to the id of \"The\" and "
        "`add_bos_token=True`, contexts starting with \"The\" get no BOS while a context starting "
        "with `<|endoftext|>` gets it twice (generation contexts are not affected).",
        "- An empty context is replaced by `[prefix_token_id]` unless the continuation's first "
        "id already equals it, in which case that id becomes the context.",
        "- `prefix_token_id` (BOS, else EOS) prefixes the first rolling window whatever "
        "`add_bos_token` is.",
        "- `llama2_metaspace_bos` and `bos_eos_both`: transformers 5 builds `LlamaTokenizer` from "
        "the vocab and merges with a `Metaspace(prepend_scheme=\"first\", split=False)` "
        "pre-tokenizer and no normalizer (transformers/models/llama/tokenization_llama.py), "
        "ignoring tokenizer.json's `Prepend`/`Replace` normalizer. So a string starting with a "
        "space gets one `▁` instead of two (`\" dog\"` is `[▁dog]`, not `[▁, ▁dog]`), and the text "
        "after a special token gets none (`<s>Hello` is `[<s>, Hello]`, not `[<s>, ▁Hello]`). "
        "lm-eval, and so this fixture, follows transformers.",
        "- `llama3_bytelevel_bos` ships `clean_up_tokenization_spaces: true` (as Llama 3 does); "
        "transformers 5 ignores it for BPE models when decoding, so generated text is not cleaned. "
        "Its `generation_config.json` asks for sampling (as Llama 3's does); lm-eval passes "
        "`do_sample=False`, and the recorded generations are greedy (checked by the script).",
        "",
    ]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    main()
