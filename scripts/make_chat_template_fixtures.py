#!/usr/bin/env python3
"""Generate the chat-template fixtures: what transformers' ``apply_chat_template`` renders.

Why this exists
---------------
ckpt renders Hugging Face chat templates (Jinja source in ``tokenizer_config.json``
or ``chat_template.jinja``) with minijinja, and computes assistant-token masks for
SFT.  To test that it renders byte-identically to the reference stack, with no
Python at test time, this script writes ``tests/fixtures/chat/``:

* ``templates/*.jinja``: chat templates written here from scratch, in the styles
  real models ship (ChatML with a default system message; Llama 3 headers; a
  Mistral/Llama 2 ``[INST]`` template that raises on a bad role order; a
  SmolLM3/OLMo-style template with ``{% generation %}`` blocks; a multimodal
  template with content parts, a macro, tool calls and ``tojson``), plus a small
  old-style ``Role: text`` template whose generation spans start and end inside
  pre-tokens (the edge cases of the assistant mask);
* ``tokenizer/``: a tiny byte-level BPE (Llama 3 split regex, ``trim_offsets``
  false, BOS-adding post-processor) trained on synthetic text, with the chat
  control tokens added as special tokens; its ``tokenizer_config.json`` carries
  a legacy list of named chat templates (``default`` and ``tool_use``), a
  model-specific ``image_token`` and a ``bos_token`` in the ``AddedToken`` dict form;
* ``conversations.json``: synthetic conversations (all text invented here);
* ``reference.json``: for every template x conversation, the text transformers
  renders with ``add_generation_prompt`` false and true (or the error it raises),
  the named-template pick, and ``input_ids`` / ``assistant_masks`` from
  ``apply_chat_template(..., tokenize=True, return_dict=True,
  return_assistant_tokens_mask=True)`` together with the token offsets and the
  character spans of the ``{% generation %}`` blocks they were computed from.

Nothing is downloaded.  Output is deterministic (no dates, fixed seed).

Usage::

    python3 -m venv ~/.venvs/ckpt-ref
    ~/.venvs/ckpt-ref/bin/pip install -r scripts/requirements-reference.txt jinja2
    HF_HUB_OFFLINE=1 ~/.venvs/ckpt-ref/bin/python scripts/make_chat_template_fixtures.py [OUT_DIR]

OUT_DIR defaults to ``tests/fixtures/chat`` under the repository root.
Made with transformers 5.24.0, tokenizers 0.23.3 and Jinja2 3.1.6 (recorded
in ``reference.json``); other versions may render differently, which is the
point of re-running it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import jinja2  # noqa: E402
import tokenizers  # noqa: E402
import transformers  # noqa: E402
from tokenizers import (  # noqa: E402
    Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers)
from transformers import AutoTokenizer  # noqa: E402
from transformers.utils.chat_template_utils import (  # noqa: E402
    _normalize_chat_messages, render_jinja_template)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "tests" / "fixtures" / "chat"
SCRIPT_NAME = "scripts/make_chat_template_fixtures.py"

SEED = 20261203
VOCAB_SIZE = 480

# ---------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------

BOS, EOS, EOT, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|end_of_text|>"
IMAGE_TOKEN = "<|image|>"
SPECIAL_TOKENS = [  # ids 0.. in this order
    BOS, EOS, "<|im_start|>", "<|im_end|>", "<|start_header_id|>", "<|end_header_id|>",
    EOT, "[INST]", "[/INST]", IMAGE_TOKEN, "<|vision_start|>", "<|vision_end|>",
]

# The split regex of Llama 3's tokenizer.json.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# An invented vocabulary for the tokenizer's training text and the conversations.
NOUNS = ["zorblat", "quinnet", "mavro", "tessik", "plumbar", "vandrel", "kelpin",
         "drazzle", "fennow", "glimmet", "noddle", "hubbin", "caravex", "café"]
VERBS = ["grobbles", "fenches", "wandrops", "scrimmels", "tolvers", "blicks", "quiffs"]
ADJECTIVES = ["blue", "vorny", "brisk", "tallish", "wobbly", "crisp", "naïve"]
NAMES = ["Alvo", "Brinna", "Castor", "Dweela", "Tessik"]
PLACES = ["Ostrava Minor", "Port Zibbon", "the Quell Basin"]
CHAT_WORDS = ["user", "assistant", "system", "tool", "function", "arguments", "name",
              "You are", "Please", "answer", "question", "weather", "celsius", "image"]


def _sentence(rng: random.Random) -> str:
    n1, n2 = rng.choice(NOUNS), rng.choice(NOUNS)
    v, a = rng.choice(VERBS), rng.choice(ADJECTIVES)
    name, place, word = rng.choice(NAMES), rng.choice(PLACES), rng.choice(CHAT_WORDS)
    num = rng.randint(0, 999)
    return rng.choice([
        f"The {a} {n1} {v} the {n2}.",
        f"{name} {v} {num} {n1}s near {place}.",
        f"Why does the {n1} {v}?",
        f"{word}: {name} asked about the {a} {n2}, {num} times!",
        f'{{"{word}": "{n1}", "count": {num}}}',
        f"  {word}\n{name}'s {n1} is {a}.\n",
    ])


def training_corpus(seed: int, n_lines: int = 500) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(_sentence(rng) for _ in range(rng.randint(1, 3))) for _ in range(n_lines)]


def train_tokenizer(corpus: list[str]) -> Tokenizer:
    """Byte-level BPE with Llama 3's pipeline; the post-processor adds BOS (as Llama 3's does)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, min_frequency=2, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    for i, s in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
        processors.TemplateProcessing(
            single=f"{BOS}:0 $A:0", pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1",
            special_tokens=[(BOS, 0)]),
    ])
    return tok


# ---------------------------------------------------------------------------
# Templates (original text, written for these fixtures)
# ---------------------------------------------------------------------------

# 1. ChatML relying on trim_blocks / lstrip_blocks (no `-` anywhere): the newline
#    after a block tag is dropped, the indentation before one is stripped, and the
#    newline after `}}` is kept.
CHATML_DEFAULT_SYSTEM = """\
{% if messages[0]['role'] != 'system' %}
<|im_start|>system
You are Quill, a careful assistant from Port Zibbon.<|im_end|>
{% endif %}
{% for message in messages %}
    {% if message['role'] == 'system' and not loop.first %}
        {{ raise_exception('A system message is only allowed first.') }}
    {% endif %}
{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' }}
{% endfor %}
{% if add_generation_prompt %}
<|im_start|>assistant
{% endif %}
"""

# 2. Llama 3 headers: bos first, `{%- -%}` everywhere, namespace(), loop.index0,
#    `| trim`, and an optional `date_string` variable (passed as a kwarg).
HEADER_BOS = """\
{{- bos_token }}
{%- set ns = namespace(turns=0, system_seen=false) %}
{%- for message in messages %}
    {%- if loop.index0 == 0 and message['role'] == 'system' %}
        {%- set ns.system_seen = true %}
        {{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}
        {%- if date_string is defined %}
            {{- 'Today Date: ' + date_string + '\\n\\n' }}
        {%- endif %}
        {{- message['content'] | trim + '<|eot_id|>' }}
    {%- else %}
        {%- if message['role'] == 'user' %}
            {%- set ns.turns = ns.turns + 1 %}
        {%- endif %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' -}}
        {{- message['content'] | trim -}}
        {{- '<|eot_id|>' -}}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt -%}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif -%}
"""

# 3. [INST] style: roles must alternate, the system message is folded into the
#    first user turn, `.strip()`, bos/eos variables; add_generation_prompt is
#    ignored (as in the Mistral and Llama 2 templates).
RAISE_ON_BAD_ROLE = """\
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'].strip() %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set system_message = none %}
    {%- set loop_messages = messages %}
{%- endif %}
{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is not none %}
            {{- '[INST] ' + system_message + '\\n\\n' + message['content'].strip() + ' [/INST]' }}
        {%- else %}
            {{- '[INST] ' + message['content'].strip() + ' [/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'].strip() + eos_token }}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, got ' + message['role']) }}
    {%- endif %}
{%- endfor %}
"""

# 4. SmolLM3/OLMo-style: the assistant's text and its end token are inside
#    {% generation %}.  Reasoning (`reasoning_content`, which transformers fills in
#    from `reasoning`/`thinking`) is kept only after the last user turn, found with a
#    reversed loop and `break`; messages with other roles are skipped with `continue`.
GENERATION_BLOCKS = """\
{%- set ns = namespace(last_user=-1) %}
{%- for message in messages[::-1] %}
    {%- if message['role'] == 'user' %}
        {%- set ns.last_user = messages | length - 1 - loop.index0 %}
        {%- break %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message['role'] not in ['system', 'user', 'assistant'] %}
        {%- continue %}
    {%- endif %}
    {%- if message['role'] == 'assistant' -%}
        {{- '<|im_start|>assistant\\n' -}}
        {%- generation -%}
            {%- if message['reasoning_content'] is defined and (loop.last or loop.index0 > ns.last_user) -%}
                {{- '<think>\\n' + message['reasoning_content'] | trim + '\\n</think>\\n\\n' -}}
            {%- endif -%}
            {{- message['content'] | trim + '<|im_end|>' -}}
        {%- endgeneration -%}
        {{- '\\n' -}}
    {%- else -%}
        {{- '<|im_start|>' + message['role'] + '\\n' + message['content'] | trim + '<|im_end|>\\n' -}}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

# 5. Content parts (text / image), a macro, `is string`, `is not none`,
#    `message.get(...)`, `... is defined`, tool calls with `tojson`, and the tool
#    list (when `tools` is passed) with `tojson(sort_keys=true, separators=...)`.
CONTENT_PARTS = """\
{%- macro render_content(content) -%}
    {%- if content is string -%}
        {{- content -}}
    {%- elif content is not none -%}
        {%- for part in content -%}
            {%- if part['type'] == 'text' -%}
                {{- part['text'] -}}
            {%- elif part['type'] == 'image' -%}
                {{- '<|vision_start|>' + image_token + '<|vision_end|>' -}}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro -%}
{%- if tools is not none %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- render_content(messages[0]['content']) + '\\n\\n' }}
    {%- endif %}
    {{- 'You may call these functions:\\n<tools>' }}
    {%- for tool in tools %}
        {{- '\\n' + tool | tojson(sort_keys=true, separators=(',', ':')) }}
    {%- endfor %}
    {{- '\\n</tools><|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if message['role'] == 'system' and loop.first and tools is not none %}
        {#- already in the tools header -#}
    {%- elif message['role'] == 'assistant' %}
        {{- '<|im_start|>assistant\\n' + render_content(message.get('content', '')) }}
        {%- if message.get('tool_calls') is not none %}
            {%- for tool_call in message['tool_calls'] %}
                {%- if tool_call['function'] is defined %}
                    {%- set tool_call = tool_call['function'] %}
                {%- endif %}
                {{- '\\n<tool_call>\\n{"name": "' + tool_call['name'] + '", "arguments": ' }}
                {%- if tool_call['arguments'] is string %}
                    {{- tool_call['arguments'] }}
                {%- else %}
                    {{- tool_call['arguments'] | tojson }}
                {%- endif %}
                {{- '}\\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message['role'] == 'tool' %}
        {{- '<|im_start|>tool\\n<tool_response' }}
        {%- if message['name'] is defined %}
            {{- ' name="' + message['name'] + '"' }}
        {%- endif %}
        {{- '>\\n' + render_content(message['content']) + '\\n</tool_response><|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>' + message['role'] + '\\n' + render_content(message['content']) + '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

# Extra: an old-style template whose generation span starts right after "Assistant: "
# (so the pre-token " Hello" straddles the span start) and covers only the content
# (so trailing whitespace in the content joins the template's "\n" across the span end).
GENERATION_EDGES = """\
{% for message in messages %}
{% if message['role'] == 'assistant' %}
{{ 'Assistant: ' }}{% generation %}{{ message['content'] }}{% endgeneration %}

{% elif message['role'] in ['system', 'user'] %}
{{ message['role'] | capitalize }}: {{ message['content'] }}
{% endif %}
{% endfor %}
{% if add_generation_prompt %}
Assistant:{% else %}{{ eos_token }}{% endif %}
"""

TEMPLATES = {
    "chatml_default_system.jinja": CHATML_DEFAULT_SYSTEM,
    "header_bos.jinja": HEADER_BOS,
    "raise_on_bad_role.jinja": RAISE_ON_BAD_ROLE,
    "generation_blocks.jinja": GENERATION_BLOCKS,
    "content_parts.jinja": CONTENT_PARTS,
    "generation_edges.jinja": GENERATION_EDGES,
}
MASK_TEMPLATES = ["generation_blocks.jinja", "generation_edges.jinja"]

# 6. A legacy `tokenizer_config.json` list of named templates.
# Both end in `}}` + newline: Jinja drops that last newline (keep_trailing_newline=False).
NAMED_DEFAULT = """\
{% for message in messages %}
{{ '### ' + message['role'] + '\\n' + message['content'] }}

{% endfor %}
{{ '### assistant\\n' if add_generation_prompt else '' }}
"""
NAMED_TOOL_USE = """\
{% if tools %}
### tools
{{ tools | tojson(indent=2) }}

{% endif %}
{% for message in messages %}
{{ '### ' + message['role'] + '\\n' + message['content'] }}

{% endfor %}
{{ '### assistant\\n' if add_generation_prompt else '' }}
"""
NAMED_TEMPLATES = [
    {"name": "default", "template": NAMED_DEFAULT},
    {"name": "tool_use", "template": NAMED_TOOL_USE},
]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Météo for a place in the Quell Basin.",
            "parameters": {
                "type": "object",
                "properties": {
                    "place": {"type": "string", "description": "Town name, e.g. Port Zibbon"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                    "days": {"type": "integer", "minimum": 1},
                },
                "required": ["place"],
            },
        },
    },
]

# ---------------------------------------------------------------------------
# Conversations (all text invented here)
# ---------------------------------------------------------------------------

CONVERSATIONS = [
    {"name": "single_user", "messages": [
        {"role": "user", "content": "How often does the vorny zorblat grobble?"},
    ]},
    {"name": "system_user_assistant", "messages": [
        {"role": "system", "content": "You are Tessik, a terse guide to Port Zibbon."},
        {"role": "user", "content": "Where is the quinnet market?"},
        {"role": "assistant", "content": "Two streets past the old mavro tower."},
    ]},
    {"name": "multi_turn", "messages": [
        {"role": "user", "content": "Name a brisk fennow."},
        {"role": "assistant", "content": "Brinna's fennow is brisk."},
        {"role": "user", "content": "And a wobbly one?"},
        {"role": "assistant", "content": "Castor's, after 7:45 pm."},
    ]},
    {"name": "unicode_whitespace", "messages": [
        {"role": "system", "content": "  Réponds en français, s'il te plaît.\n"},
        {"role": "user", "content": "\n  Où est le café « Zwölf » ? 東京から 🙂  \n"},
        {"role": "assistant", "content": "  Très bien — à gauche 🙂, puis tout droit.\t\n"},
    ]},
    {"name": "content_parts", "messages": [
        {"role": "system", "content": [{"type": "text", "text": "Describe images plainly."}]},
        {"role": "user", "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image", "url": "https://example.invalid/kelpin.png"},
            {"type": "text", "text": " Be brief."},
        ]},
        {"role": "assistant", "content": [{"type": "text", "text": "A kelpin beside a drazzle."}]},
        {"role": "user", "content": "Thanks!"},
    ]},
    {"name": "bad_role_order", "messages": [
        {"role": "user", "content": "First question: is the hubbin crisp?"},
        {"role": "user", "content": "Second question, same speaker."},
        {"role": "assistant", "content": "Yes, and yes."},
    ]},
    {"name": "tool_calls", "messages": [
        {"role": "user", "content": "Weather in Ostrava Minor and Port Zibbon, in celsius?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {
                "place": "Ostrava Minor", "unit": "celsius", "days": 2, "hourly": False,
                "ratio": 0.5, "scale": 1.0, "tags": ["wet", "naïve 東"], "note": None}}},
            {"type": "function", "function": {
                "name": "get_weather", "arguments": "{\"place\": \"Port Zibbon\"}"}},
        ]},
        {"role": "tool", "name": "get_weather", "content": "{\"temp_c\": 11.5, \"sky\": \"drizzle\"}"},
        {"role": "tool", "name": "get_weather", "content": "{\"temp_c\": 14}"},
        {"role": "assistant", "content": "Ostrava Minor: 11.5 °C and drizzle; Port Zibbon: 14 °C."},
    ]},
    {"name": "reasoning_and_skips", "messages": [
        {"role": "user", "content": "Which is heavier, a noddle or a hubbin?"},
        {"role": "assistant", "content": "The hubbin.",
         "reasoning_content": "A hubbin holds 3 noddles."},
        {"role": "memo", "content": "internal note: skip me"},
        {"role": "user", "content": "Now say nothing."},
        {"role": "assistant", "content": "", "reasoning": "  They want silence.  ", "tool_calls": None},
    ]},
]

# Pairs whose text transformers renders but which are meaningless (content parts
# rendered as a Python list repr): left out of the fixture, listed in reference.json.
NOT_APPLICABLE_REASON = "content is a list of parts, which this template renders as a Python repr"

# Extra renders with `tools` or template kwargs: (template, conversation, extra args).
EXTRA_RENDERS = [
    ("content_parts.jinja", "tool_calls", {"tools": TOOLS}),
    ("content_parts.jinja", "single_user", {"tools": TOOLS}),
    ("content_parts.jinja", "content_parts", {"tools": TOOLS}),
    ("header_bos.jinja", "system_user_assistant", {"kwargs": {"date_string": "03 Dec 2026"}}),
]

# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------


def write_tokenizer(tok: Tokenizer, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        # The AddedToken dict form older configs use; templates still get the plain string.
        "bos_token": {"__type": "AddedToken", "content": BOS, "lstrip": False, "normalized": False,
                      "rstrip": False, "single_word": False, "special": True},
        "eos_token": EOT,
        "pad_token": PAD,
        # A model-specific named token: transformers 5 passes it to templates as `image_token`.
        "extra_special_tokens": {"image_token": IMAGE_TOKEN},
        "clean_up_tokenization_spaces": False,
        "model_max_length": 4096,
        "chat_template": NAMED_TEMPLATES,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n",
                                               encoding="utf-8")


def render(tok, messages, template: str, add_generation_prompt: bool, extra: dict) -> dict:
    try:
        text = tok.apply_chat_template(
            messages, chat_template=template, tokenize=False,
            add_generation_prompt=add_generation_prompt, tools=extra.get("tools"),
            **extra.get("kwargs", {}))
    except Exception as exc:  # what transformers (Jinja) raised
        return {"error_type": type(exc).__name__, "error": str(exc)}
    assert isinstance(text, str)
    return {"text": text}


def _py_repr_leak(text: str) -> bool:
    return "[{'type'" in text or "{'type'" in text


def char_to_byte_offsets(text: str) -> list[int]:
    """b[i] = UTF-8 byte offset of character i (b[len(text)] = total bytes)."""
    out, n = [0], 0
    for ch in text:
        n += len(ch.encode("utf-8"))
        out.append(n)
    return out


def assistant_mask_case(tok, tok_json: Path, template_name: str, template: str, conv_index: int,
                        messages) -> dict:
    try:
        out = tok.apply_chat_template(
            messages, chat_template=template, tokenize=True, return_dict=True,
            return_assistant_tokens_mask=True)
    except Exception as exc:
        return {"template": template_name, "conversation": conv_index,
                "error_type": type(exc).__name__, "error": str(exc)}
    text = tok.apply_chat_template(messages, chat_template=template, tokenize=False)
    ids = list(out["input_ids"])
    mask = list(out["assistant_masks"])
    # The same tokenization transformers used (plain __call__, add_special_tokens=False).
    enc = tok(text, add_special_tokens=False)
    assert list(enc["input_ids"]) == ids
    offsets = [list(o) for o in enc.encodings[0].offsets]
    # tokenizer.json alone (what a Rust `tokenizers` reads) gives the same ids and offsets.
    raw = Tokenizer.from_file(str(tok_json)).encode(text, add_special_tokens=False)
    assert raw.ids == ids and [list(o) for o in raw.offsets] == offsets
    # The generation spans, from transformers' own renderer (what the mask was built from).
    # (apply_chat_template first drops the keys whose value is None.)
    rendered, spans = render_jinja_template(
        conversations=[_normalize_chat_messages(messages)], chat_template=template,
        return_assistant_tokens_mask=True, add_generation_prompt=False, **tok.special_tokens_map)
    assert rendered[0] == text
    spans = [list(s) for s in spans[0]]
    # Re-derive the mask: a token is 1 iff its [start, end) overlaps a span [s, e),
    # i.e. start < e and end > s.  (Zero-width spans mark only tokens straddling them.)
    expect = [int(any(a < e and b > s for s, e in spans)) for a, b in offsets]
    assert expect == mask, (template_name, conv_index, expect, mask)
    b = char_to_byte_offsets(text)
    return {
        "template": template_name,
        "conversation": conv_index,
        "text": text,
        "input_ids": ids,
        "assistant_masks": mask,
        "offsets": offsets,
        "offsets_bytes": [[b[s], b[e]] for s, e in offsets],
        "generation_spans": spans,
        "generation_spans_bytes": [[b[s], b[e]] for s, e in spans],
    }


def mask_v4_style(case: dict) -> list[int]:
    """The mask transformers 4.x computed (char_to_token of span start and end - 1); for comparison."""
    offsets, mask = case["offsets"], [0] * len(case["input_ids"])

    def char_to_token(c: int) -> int | None:
        return next((i for i, (a, b) in enumerate(offsets) if a <= c < b), None)

    for start, end in case["generation_spans"]:
        start_token, end_token = char_to_token(start), char_to_token(end - 1)
        if start_token is None:
            break
        for i in range(start_token, end_token + 1 if end_token else len(mask)):
            mask[i] = 1
    return mask


def compact_int_lists(s: str) -> str:
    """Put JSON lists of integers on one line (JSON strings never hold a raw newline)."""
    return re.sub(r"\[\n\s*(-?\d+(?:,\n\s*-?\d+)*)\n\s*\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", s)


def versions() -> dict:
    return {
        "python": sys.version.split()[0],
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "jinja2": jinja2.__version__,
    }


def write_readme(out: Path, vers: dict, n_renders: int, n_errors: int, n_masks: int) -> None:
    lines = [
        "# Chat-template fixtures (generated — do not edit by hand)",
        "",
        f"Produced by `HF_HUB_OFFLINE=1 ~/.venvs/ckpt-ref/bin/python {SCRIPT_NAME}` (deterministic: "
        "fixed seed, no dates; re-running reproduces these files byte for byte).",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()) + ".",
        "",
        "- `templates/*.jinja`: chat templates written for these fixtures in the styles real models ship:",
        "  `chatml_default_system` (ChatML, default system message, relies on trim_blocks/lstrip_blocks),",
        "  `header_bos` (Llama 3 headers, `namespace()`, `loop.index0`, optional `date_string` kwarg),",
        "  `raise_on_bad_role` (`[INST]`, `raise_exception` on a bad role order), `generation_blocks`",
        "  (`{% generation %}`, `break`/`continue`, reasoning), `content_parts` (content parts, a macro,",
        "  tool calls and tools with `tojson`), and `generation_edges` (an old-style `Role: text` template",
        "  whose generation spans start/end inside pre-tokens: the assistant-mask edge cases).",
        "  The file bytes are the template source passed to transformers.",
        "- `tokenizer/`: a tiny byte-level BPE (Llama 3 split regex, BOS-adding post-processor with",
        "  `trim_offsets: false`) trained on synthetic text. `tokenizer_config.json` holds a legacy list of",
        "  named chat templates (`default`, `tool_use`), `bos_token` in the AddedToken dict form and",
        "  `extra_special_tokens: {image_token}` (passed to templates as the variable `image_token`).",
        "- `conversations.json`: synthetic conversations. A JSON `null` is a Python `None`: transformers",
        "  drops such keys from a message before rendering.",
        f"- `reference.json`: `renders` ({n_renders}; {n_errors} are errors, with `error_type` and `error`)",
        "  from `tok.apply_chat_template(messages, chat_template=<file text>, tokenize=False,",
        "  add_generation_prompt=...)`, plus `tools=` / template kwargs where an entry has `tools` /",
        "  `kwargs`; `not_applicable` (pairs left out: content parts rendered as a Python repr);",
        "  `named_templates` (which named template transformers picks, with and without tools, and by",
        f"  name); `assistant_masks` ({n_masks} cases) from `apply_chat_template(..., tokenize=True,",
        "  return_dict=True, return_assistant_tokens_mask=True)`, with the token `offsets` and the",
        "  `generation_spans` they come from (Python character = code-point offsets; the `*_bytes` twins",
        "  are UTF-8 byte offsets). A token is masked iff its offsets overlap a span:",
        "  `start < span_end and end > span_start`.",
        "",
        "All text is synthetic, generated from an invented word list; nothing was downloaded.",
    ]
    (out / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir", nargs="?", default=str(DEFAULT_OUT))
    args = ap.parse_args()
    out = Path(args.out_dir).resolve()
    if out.exists():
        shutil.rmtree(out)
    (out / "templates").mkdir(parents=True)

    transformers.logging.set_verbosity_error()
    vers = versions()
    for k, v in vers.items():
        print(f"{k:>12}: {v}")

    tok_dir = out / "tokenizer"
    write_tokenizer(train_tokenizer(training_corpus(SEED)), tok_dir)
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    print(f"tokenizer: {type(tok).__name__}, {len(tok)} tokens")

    # Templates go through the files: what the Rust side reads is what was rendered.
    templates = {}
    for name, source in TEMPLATES.items():
        (out / "templates" / name).write_text(source, encoding="utf-8")
        templates[name] = (out / "templates" / name).read_text(encoding="utf-8")
    (out / "conversations.json").write_text(
        json.dumps(CONVERSATIONS, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    conv_index = {c["name"]: i for i, c in enumerate(CONVERSATIONS)}

    renders, not_applicable = [], []
    for tname, source in templates.items():
        for ci, conv in enumerate(CONVERSATIONS):
            results = [render(tok, conv["messages"], source, agp, {}) for agp in (False, True)]
            if any(_py_repr_leak(r.get("text", "")) for r in results):
                assert all("text" in r for r in results)
                not_applicable.append({"template": tname, "conversation": ci,
                                       "reason": NOT_APPLICABLE_REASON})
                continue
            for agp, r in zip((False, True), results):
                renders.append({"template": tname, "conversation": ci,
                                "add_generation_prompt": agp, **r})
    for tname, cname, extra in EXTRA_RENDERS:
        for agp in (False, True):
            r = render(tok, CONVERSATIONS[conv_index[cname]]["messages"], templates[tname], agp, extra)
            assert "text" in r, (tname, cname, r)
            renders.append({"template": tname, "conversation": conv_index[cname],
                            "add_generation_prompt": agp, **extra, **r})

    # Which template of a named list transformers picks.
    assert isinstance(tok.chat_template, dict), tok.chat_template
    by_source = {v: k for k, v in tok.chat_template.items()}
    msgs0 = CONVERSATIONS[0]["messages"]
    named = {
        "config": NAMED_TEMPLATES,
        "conversation": 0,
        "picked": by_source[tok.get_chat_template()],
        "text": tok.apply_chat_template(msgs0, tokenize=False),
        "picked_with_tools": by_source[tok.get_chat_template(tools=TOOLS)],
        "tools": TOOLS,
        "text_with_tools": tok.apply_chat_template(msgs0, tools=TOOLS, tokenize=False),
        "by_name": "tool_use",
        "text_by_name": tok.apply_chat_template(msgs0, chat_template="tool_use", tokenize=False,
                                                add_generation_prompt=True),
    }

    masks = []
    for tname in MASK_TEMPLATES:
        for ci, conv in enumerate(CONVERSATIONS):
            if not any(m["role"] == "assistant" for m in conv["messages"]):
                continue
            if any(not isinstance(m.get("content", ""), (str, type(None))) for m in conv["messages"]):
                continue  # content parts: not for these templates
            case = assistant_mask_case(tok, tok_dir / "tokenizer.json", tname, templates[tname], ci,
                                       conv["messages"])
            masks.append(case)
            old = mask_v4_style(case)
            if old != case["assistant_masks"]:
                diff = [i for i, (x, y) in enumerate(zip(old, case["assistant_masks"])) if x != y]
                print(f"   note: {tname} x {ci}: transformers 4's char_to_token mask differs "
                      f"at tokens {diff}")

    # What the post-processor adds outside apply_chat_template (which passes add_special_tokens=False).
    probe = "Hello"
    bos_note = {
        "encode_add_special_tokens_true": tok(probe)["input_ids"],
        "encode_add_special_tokens_false": tok(probe, add_special_tokens=False)["input_ids"],
        "apply_chat_template_adds_bos": False,
    }
    ids = tok.apply_chat_template([{"role": "user", "content": probe}],
                                  chat_template="{{ messages[0]['content'] }}", return_dict=False)
    assert list(ids) == bos_note["encode_add_special_tokens_false"], ids

    reference = {
        "made_by": SCRIPT_NAME,
        "versions": vers,
        "special_tokens": dict(tok.special_tokens_map),
        "template_variables": {
            "messages": "the conversation; keys whose value is None removed; `reasoning`/`thinking` "
                        "copied to `reasoning_content` and `thinking`",
            "tools": None,
            "documents": None,
            "add_generation_prompt": "bool",
            "special_tokens": "every key of special_tokens, as a str",
            "kwargs": "extra keyword arguments of apply_chat_template (override special tokens)",
        },
        "bos": bos_note,
        "renders": renders,
        "not_applicable": not_applicable,
        "named_templates": named,
        "assistant_masks": masks,
    }
    text = compact_int_lists(json.dumps(reference, indent=1, ensure_ascii=False))
    (out / "reference.json").write_text(text + "\n", encoding="utf-8")
    n_err = sum("error" in r for r in renders)
    write_readme(out, vers, len(renders), n_err, len(masks))

    print(f"{len(renders)} renders ({n_err} errors), {len(not_applicable)} not applicable, "
          f"{len(masks)} assistant-mask cases")
    for r in renders:
        if "error" in r:
            print(f"   error: {r['template']} x {r['conversation']}: {r['error_type']}: {r['error']}")
    print(f"wrote fixtures to {out}")


if __name__ == "__main__":
    warnings.filterwarnings("ignore", category=FutureWarning)
    main()
