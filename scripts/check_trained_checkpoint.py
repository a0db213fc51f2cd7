"""Loads a checkpoint written by `ckpt train` with transformers and records what it
computes, for `tests/train_checkpoint.rs`.

The fixture under tests/fixtures/trained/ is a tiny WSO model trained by `ckpt train`
on the synthetic world (its model.safetensors, config.json, tokenizer files and
ckpt.json). This script checks that transformers' AutoModelForCausalLM and
AutoTokenizer load it, and writes reference.json with, for each text of texts.jsonl,
the token ids of AutoTokenizer and the log-probability of each token after the EOS
prefix (as lm-eval's rolling log-likelihood scores it), and, for each chat of
chats.jsonl, the text and ids of `apply_chat_template`.

Run from the repository root with the reference venv (scripts/requirements-reference.txt):
    python scripts/check_trained_checkpoint.py [tests/fixtures/trained/tiny-wso]
"""

import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.join("tests", "fixtures", "trained")


def main():
    ckpt = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tiny-wso")
    tok = AutoTokenizer.from_pretrained(ckpt)
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32, attn_implementation="eager").eval()
    texts = [json.loads(l)["text"] for l in open(os.path.join(ROOT, "texts.jsonl"))]
    chats = [json.loads(l)["messages"] for l in open(os.path.join(ROOT, "chats.jsonl"))]
    out = {"transformers": __import__("transformers").__version__, "texts": [], "chats": []}
    with torch.no_grad():
        for text in texts:
            ids = tok(text, add_special_tokens=False)["input_ids"]
            run = torch.tensor([[tok.eos_token_id] + ids])
            logprobs = torch.log_softmax(model(run[:, :-1]).logits.float(), dim=-1)
            picked = logprobs[0].gather(-1, run[0, 1:].unsqueeze(-1)).squeeze(-1)
            out["texts"].append({"text": text, "token_ids": ids, "token_logprobs": picked.tolist()})
    for messages in chats:
        rendered = tok.apply_chat_template(messages, tokenize=False)
        prompt = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        out["chats"].append({
            "rendered": rendered,
            "generation_prompt": prompt,
            "token_ids": tok(rendered, add_special_tokens=False)["input_ids"],
        })
    with open(os.path.join(ROOT, "reference.json"), "w") as f:
        json.dump(out, f, indent=1)
    print("transformers loaded", ckpt, "and scored", len(texts), "texts,", len(chats), "chats")


if __name__ == "__main__":
    main()
