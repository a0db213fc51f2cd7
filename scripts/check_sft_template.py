#!/usr/bin/env python
"""End-to-end check that `ckpt train` (stage "sft") carries the parent's own chat
template into the fine-tune, as transformers 5 sees it.

For each of two variants, the template in tokenizer_config.json (`chat_template`) and
the template in `chat_template.jinja` (no `chat_template` key in the config):

1. parent: a copy of tests/fixtures/trained/tiny-wso given a ChatML chat template
   written here (with a default system message). The tiny tokenizer (320 tokens, almost
   characters) would spend ~12 tokens on each `<|im_start|>` / `<|im_end|>`, and no
   synthetic chat would have an assistant token within the fixture's 64 positions;
   so, as models that adopt ChatML do, the two markers are added as special tokens
   (ids 320, 321) and the tied embedding gets two rows (the mean embedding), vocab 322.
2. `ckpt synth --out data --sft-chats 60` and `ckpt train trainer/tiny-sft.toml` with
   init.parent = the parent, seq_len 64, batch_tokens 512, warmup 1.
3. transformers: AutoTokenizer on the parent and on the fine-tune's last checkpoint;
   the template each loads; for synthetic conversations (whole, and cut after a user
   turn), apply_chat_template(tokenize=False) with and without the generation prompt
   must be identical between parent and fine-tune (and the token ids too), must be
   ChatML (equal to a plain-Python ChatML rendering, no Tulu `<|user|>` markers);
   AutoModelForCausalLM loads the fine-tune with no missing / unexpected weights and a
   forward pass on the rendered chat (its first 64 tokens) gives finite logits.

Writes a short report to tests/fixtures/chat/sft_check.txt (unless --no-fixture); exits
non-zero if any check fails.

Run: ~/.venvs/ckpt-ref/bin/python scripts/check_sft_template.py [--ckpt target/debug/ckpt]
No network: HF_HUB_OFFLINE is set; everything is local.
"""

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jinja2  # noqa: E402
import numpy as np  # noqa: E402
import safetensors  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests/fixtures/trained/tiny-wso"
RECIPE = ROOT / "trainer/tiny-sft.toml"
REPORT = ROOT / "tests/fixtures/chat/sft_check.txt"

DEFAULT_SYSTEM = "You are a helpful assistant."
# ChatML, written here: a default system message when the chat has none, a system
# message only first, the generation prompt opens an assistant turn.
CHATML = (
    "{% if messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' and not loop.first %}"
    "{{ raise_exception('A system message is only allowed first.') }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHATML_TOKENS = ["<|im_start|>", "<|im_end|>"]
TULU_MARKERS = ["<|system|>", "<|user|>", "<|assistant|>"]
SYNTH = ["--sft-chats", "60", "--seed", "0"]
SETS = ["training.seq_len=64", "training.batch_tokens=512", "schedule.warmup=1"]
CONVERSATIONS = 6  # synthetic conversations rendered per variant


def chatml_reference(messages, add_generation_prompt):
    """ChatML in plain Python, what the template must render."""
    out = "" if messages[0]["role"] == "system" else f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n"
    out += "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return out + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def run(cmd, cwd):
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True)


def add_chatml_tokens(parent):
    """<|im_start|>, <|im_end|> as special tokens 320, 321; two embedding rows more."""
    tok = json.loads((parent / "tokenizer.json").read_text())
    cfg = json.loads((parent / "config.json").read_text())
    first = cfg["vocab_size"]
    assert first == len(tok["model"]["vocab"]) == 320, "tiny-wso changed: revisit this script"
    for i, content in enumerate(CHATML_TOKENS):
        tok["added_tokens"].append({"id": first + i, "content": content, "single_word": False, "lstrip": False,
                                    "rstrip": False, "normalized": False, "special": True})
    (parent / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False))
    path = parent / "model.safetensors"
    metadata = safe_open(path, "np").metadata()
    weights = load_file(path)
    emb = weights["model.embed_tokens.weight"]
    assert "lm_head.weight" not in weights and cfg["tie_word_embeddings"]
    rows = np.repeat(emb.mean(axis=0, keepdims=True), len(CHATML_TOKENS), axis=0)
    weights["model.embed_tokens.weight"] = np.concatenate([emb, rows]).astype(emb.dtype)
    save_file(weights, path, metadata=metadata)
    cfg["vocab_size"] = first + len(CHATML_TOKENS)
    (parent / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def make_parent(tmp, variant, special_tokens=True, name=None):
    parent = tmp / f"parent-{name or variant}"
    shutil.copytree(FIXTURE, parent)
    config = json.loads((parent / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)  # the fixture's own (Tulu) template goes
    if variant == "config":
        config["chat_template"] = CHATML
    else:
        (parent / "chat_template.jinja").write_text(CHATML)
    (parent / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    if special_tokens:
        add_chatml_tokens(parent)
    return parent


def train(ckpt, tmp, parent, out):
    sets = [*SETS, f"init.parent={parent}", f"job.out={out}", f'data.paths=["{tmp / "data/sft.jsonl"}"]']
    return run([ckpt, "train", RECIPE, *[a for s in sets for a in ("--set", s)]], cwd=tmp)


def last_checkpoint(run_dir):
    steps = sorted(run_dir.glob("step-*"))
    return steps[-1] if steps else None


def conversations(path):
    """Synthetic chats, with and without a system message, each whole and cut after its
    last user turn."""
    chats = [json.loads(line)["messages"] for line in path.read_text().splitlines() if line]
    with_system = [c for c in chats if c[0]["role"] == "system"][: CONVERSATIONS // 2]
    without = [c for c in chats if c[0]["role"] != "system"][: CONVERSATIONS - len(with_system)]
    out = []
    for chat in with_system + without:
        last_user = max(i for i, m in enumerate(chat) if m["role"] == "user")
        out += [chat, chat[: last_user + 1]]
    return out


class Report:
    def __init__(self):
        self.lines, self.failed = [], 0

    def check(self, name, ok, detail=""):
        self.failed += not ok
        line = f"  {'PASS' if ok else 'FAIL'}  {name}" + (f": {detail}" if detail else "")
        self.lines.append(line)
        print(line, flush=True)

    def note(self, text):
        self.lines.append(text)
        print(text, flush=True)


def check_variant(ckpt, tmp, variant, chats_path, report):
    report.note(f"variant {variant}: ChatML in "
                + ("tokenizer_config.json `chat_template`" if variant == "config" else "chat_template.jinja"))
    parent = make_parent(tmp, variant)
    out = tmp / f"runs/ft-{variant}"
    res = train(ckpt, tmp, parent, out)
    dropped = re.search(r"(\d+) of (\d+) conversations have no assistant token", res.stderr)
    finished = re.search(r"finished at step (\d+)", res.stderr)
    detail = (f"{finished.group(1) if finished else '?'} steps, "
              + (f"{int(dropped.group(2)) - int(dropped.group(1))} of {dropped.group(2)} chats kept" if dropped
                 else "all chats kept"))
    report.check("ckpt train (sft) finishes", res.returncode == 0,
                 detail if res.returncode == 0 else res.stderr.strip().splitlines()[-1][:300])
    ft = last_checkpoint(out)
    if res.returncode != 0 or ft is None:
        report.check("fine-tune checkpoint written", False, "no step-* directory")
        return
    # What files hold the template in the fine-tune, byte for byte.
    p_cfg = json.loads((parent / "tokenizer_config.json").read_text())
    f_cfg = json.loads((ft / "tokenizer_config.json").read_text())
    if variant == "config":
        report.check("tokenizer_config.json chat_template equal to the parent's",
                     f_cfg.get("chat_template") == p_cfg["chat_template"])
        report.check("no chat_template.jinja added", not (ft / "chat_template.jinja").exists())
    else:
        jinja = ft / "chat_template.jinja"
        report.check("chat_template.jinja byte-identical to the parent's",
                     jinja.exists() and jinja.read_bytes() == (parent / "chat_template.jinja").read_bytes(),
                     "" if jinja.exists() else "missing in the fine-tune")
        report.check("no chat_template key added to tokenizer_config.json", "chat_template" not in f_cfg,
                     "" if "chat_template" not in f_cfg else
                     f"it holds {'the same' if f_cfg['chat_template'] == CHATML else 'another'} template")
    report.check("tokenizer.json equal to the parent's",
                 json.loads((ft / "tokenizer.json").read_text()) == json.loads((parent / "tokenizer.json").read_text()))

    p_tok = AutoTokenizer.from_pretrained(parent)
    f_tok = AutoTokenizer.from_pretrained(ft)
    report.check("AutoTokenizer loads the same template (parent == fine-tune == ChatML written)",
                 p_tok.chat_template == f_tok.chat_template == CHATML,
                 f"{type(f_tok).__name__}, {len(f_tok)} tokens")
    chats = conversations(chats_path)
    with_system = sum(c[0]["role"] == "system" for c in chats) // 2
    label = (f"{len(chats) // 2} chats ({with_system} with a system message), whole and cut after a user turn, "
             f"x add_generation_prompt False/True = {2 * len(chats)}")
    texts_equal = ids_equal = chatml = not_tulu = True
    first_diff = ""
    for chat in chats:
        for gen in (False, True):
            a = p_tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=gen)
            b = f_tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=gen)
            if a != b and texts_equal:
                first_diff = f"parent {a[:80]!r} vs fine-tune {b[:80]!r}"
            texts_equal &= a == b
            ids_equal &= (p_tok.apply_chat_template(chat, tokenize=True, add_generation_prompt=gen, return_dict=False)
                          == f_tok.apply_chat_template(chat, tokenize=True, add_generation_prompt=gen,
                                                       return_dict=False))
            chatml &= b == chatml_reference(chat, gen)
            not_tulu &= not any(m in b for m in TULU_MARKERS)
    n = 2 * len(chats)
    report.check(f"apply_chat_template(tokenize=False) identical, parent vs fine-tune: {label}", texts_equal,
                 first_diff)
    report.check(f"apply_chat_template token ids identical ({n})", ids_equal)
    report.check(f"rendered text is ChatML (== plain-Python ChatML, default system message; {n})", chatml)
    report.check(f"no Tulu markers {'/'.join(TULU_MARKERS)} in the rendered text ({n})", not_tulu)
    ids = f_tok.convert_tokens_to_ids(CHATML_TOKENS)
    report.check("<|im_start|>, <|im_end|> are single special tokens in the fine-tune", ids == [320, 321], str(ids))

    model, info = AutoModelForCausalLM.from_pretrained(ft, dtype=torch.float32, output_loading_info=True)
    missing = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    report.check("AutoModelForCausalLM loads the fine-tune (no missing/unexpected/mismatched weights)",
                 not missing, f"{type(model).__name__}, vocab {model.config.vocab_size}" if not missing else str(missing))
    text = f_tok.apply_chat_template(chats[0], tokenize=False, add_generation_prompt=True)
    ids = f_tok(text, return_tensors="pt")["input_ids"][:, : model.config.max_position_embeddings]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    report.check("forward pass on the rendered chat: finite logits", bool(torch.isfinite(logits).all()),
                 f"shape {tuple(logits.shape)} (first {ids.shape[1]} tokens)")
    parent_model = AutoModelForCausalLM.from_pretrained(parent, dtype=torch.float32)
    with torch.no_grad():
        moved = (parent_model(input_ids=ids).logits - logits).abs().max().item()
    report.check("the fine-tune's weights moved from the parent's", moved > 0, f"max |dlogit| {moved:.3g}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default=str(ROOT / "target/debug/ckpt"))
    ap.add_argument("--no-fixture", action="store_true", help=f"do not write {REPORT.relative_to(ROOT)}")
    args = ap.parse_args()
    ckpt = Path(args.ckpt).resolve()
    version = run([ckpt, "--version"], ROOT).stdout.strip()
    report = Report()
    report.note("# SFT keeps the parent's chat template, checked with transformers (scripts/check_sft_template.py)")
    report.note(f"# {version}; transformers {transformers.__version__}, tokenizers {tokenizers.__version__}, "
                f"jinja2 {jinja2.__version__}, torch {torch.__version__}, safetensors {safetensors.__version__}, "
                f"python {platform.python_version()}")
    report.note(f"# parent: tests/fixtures/trained/tiny-wso + ChatML template (default system message "
                f"{DEFAULT_SYSTEM!r}) + <|im_start|>/<|im_end|> as special tokens 320/321 (vocab 322)")
    report.note(f"# ckpt synth --out data {' '.join(SYNTH)}; ckpt train trainer/tiny-sft.toml --set "
                f"init.parent=PARENT --set job.out=RUN --set data.paths=[data/sft.jsonl] "
                + " ".join(f"--set {s}" for s in SETS))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        res = run([ckpt, "synth", "--out", tmp / "data", *SYNTH, "-q"], tmp)
        if res.returncode != 0:
            sys.exit(f"ckpt synth failed: {res.stderr}")
        # Without the two special tokens, each ChatML marker is ~12 tokens of this
        # tokenizer: ckpt refuses, as no chat has an assistant token within 65 tokens.
        plain = make_parent(tmp, "config", special_tokens=False, name="plain")
        res = train(ckpt, tmp, plain, tmp / "runs/ft-plain")
        last = re.sub(r"\x1b\[[0-9;]*m", "", (res.stderr.strip().splitlines() or [""])[-1])
        report.note(f"note: with the markers as plain text (no added tokens) ckpt train exits {res.returncode}: "
                    f"{last[:160]}")
        for variant in ("config", "jinja"):
            check_variant(ckpt, tmp, variant, tmp / "data/sft.jsonl", report)
    report.note(f"result: {'all checks pass' if not report.failed else f'{report.failed} check(s) FAIL'}")
    if not args.no_fixture:
        REPORT.write_text("\n".join(report.lines) + "\n")
        print(f"wrote {REPORT.relative_to(ROOT)} ({REPORT.stat().st_size} bytes)")
    sys.exit(1 if report.failed else 0)


if __name__ == "__main__":
    main()
