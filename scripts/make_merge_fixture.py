"""Makes the fixture of `tests/merge.rs`: a tiny run of four checkpoints, the model a
cosine WSM merge of them should give (computed here in float64, independently of
ckpt), and that model's per-token log-probabilities under transformers.

What it writes under tests/fixtures/merge/:
  run/step-0000100, -200, -260, -400   tiny Llama checkpoints saved by transformers
      (float32 safetensors, config.json, the tiny-wso tokenizer, a ckpt.json sidecar);
      unevenly spaced, each a random step away from the previous one.
  reference.json   the merge `ckpt merge run --emulate cosine --window 200` must make:
      its steps and coefficients (from the WSM formula, written out below) and, for
      each text of tests/fixtures/trained/texts.jsonl, the token ids and the
      log-probability of each token after the BOS prefix (lm-eval's rolling
      log-likelihood), from transformers on the float64-merged weights.

Round trip: with `--ckpt BINARY` (default target/debug/ckpt when it exists) the script
also runs that merge with ckpt, loads ckpt's output with transformers'
AutoModelForCausalLM and AutoTokenizer, and checks that its coefficients and
log-probabilities equal the reference; reference.json records the largest difference.

Run from the repository root with the reference venv (scripts/requirements-reference.txt):
    python scripts/make_merge_fixture.py [--ckpt target/debug/ckpt]
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM  # noqa: E402

ROOT = os.path.join("tests", "fixtures", "merge")
TOKENIZER = os.path.join("tests", "fixtures", "trained", "tiny-wso")
TEXTS = os.path.join("tests", "fixtures", "trained", "texts.jsonl")
STEPS = [100, 200, 260, 400]
WINDOW = 200
SHAPE = "cosine"


def cosine_coefficients(steps):
    """c_j = w_j - w_{j+1}, c_k = w_k, with w_0 = 1 and w_i = (1 + cos(pi x_i)) / 2 at
    x_i = (s_i - s_0) / (s_k - s_0 + h), h the mean interval (DESIGN.md section 9)."""
    k = len(steps) - 1
    span = steps[-1] - steps[0]
    h = span / k
    w = [1.0] + [(1 + math.cos(math.pi * (s - steps[0]) / (span + h))) / 2 for s in steps[1:]]
    return [w[j] - (w[j + 1] if j < k else 0.0) for j in range(k + 1)], w


def make_sources():
    cfg = LlamaConfig(
        vocab_size=320, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=64,
        tie_word_embeddings=True, bos_token_id=0, eos_token_id=0, rms_norm_eps=1e-5,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        # Larger weights than the usual init, so the logits (and a wrong merge) show.
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if p.dim() == 1 else 0.0))
    run = os.path.join(ROOT, "run")
    shutil.rmtree(run, ignore_errors=True)
    dirs = []
    for i, step in enumerate(STEPS):
        if i > 0:
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn_like(p) * 0.1)
        out = os.path.join(run, f"step-{step:07d}")
        model.save_pretrained(out, safe_serialization=True)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(TOKENIZER, name), out)
        sidecar = {
            "step": step, "stage": "pre", "tokens_seen": step * 512, "lr": 3e-3,
            "schedule": {"kind": "wso", "peak_lr": 3e-3, "warmup": 10, "total_steps": 400, "alpha_pre": 1.0},
        }
        with open(os.path.join(out, "ckpt.json"), "w") as f:
            json.dump(sidecar, f, indent=2)
        dirs.append(out)
    return cfg, dirs


def token_logprobs(model, tok, texts):
    out = []
    with torch.no_grad():
        for text in texts:
            ids = tok(text, add_special_tokens=False)["input_ids"]
            run = torch.tensor([[0] + ids])
            logprobs = torch.log_softmax(model(run[:, :-1]).logits.double(), dim=-1)
            picked = logprobs[0].gather(-1, run[0, 1:].unsqueeze(-1)).squeeze(-1)
            out.append({"text": text, "token_ids": ids, "token_logprobs": picked.tolist()})
    return out


def main():
    parser = argparse.ArgumentParser()
    default_ckpt = os.path.join("target", "debug", "ckpt")
    parser.add_argument("--ckpt", default=default_ckpt if os.path.exists(default_ckpt) else None)
    args = parser.parse_args()

    cfg, dirs = make_sources()
    selected = [(s, d) for s, d in zip(STEPS, dirs) if s >= STEPS[-1] - WINDOW]
    steps = [s for s, _ in selected]
    coefficients, multipliers = cosine_coefficients(steps)
    states = [load_file(os.path.join(d, "model.safetensors")) for _, d in selected]
    merged = {
        name: sum(c * s[name].double() for c, s in zip(coefficients, states)).float()
        for name in states[0]
    }
    model = LlamaForCausalLM(cfg).eval()
    model.load_state_dict(merged, strict=False)
    model.tie_weights()
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    texts = [json.loads(line)["text"] for line in open(TEXTS)]
    reference = {
        "transformers": __import__("transformers").__version__,
        "shape": SHAPE, "window": WINDOW, "steps": steps,
        "coefficients": coefficients, "multipliers": multipliers,
        "texts": token_logprobs(model, tok, texts),
    }

    if args.ckpt:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "merged")
            env = dict(os.environ, CKPT_CACHE_DIR=os.path.join(tmp, "cache"))
            subprocess.run([args.ckpt, "merge", os.path.join(ROOT, "run"), "--emulate", SHAPE,
                            "--window", str(WINDOW), "--out", out, "-q"], check=True, env=env,
                           stdout=subprocess.DEVNULL)
            meta = json.load(open(os.path.join(out, "ckpt.json")))["merge"]
            got_c = [s["coefficient"] for s in meta["sources"]]
            assert max(abs(a - b) for a, b in zip(got_c, coefficients)) < 1e-12, got_c
            loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
            loaded_tok = AutoTokenizer.from_pretrained(out)
            got = token_logprobs(loaded, loaded_tok, texts)
            diff = max(abs(a - b)
                       for g, r in zip(got, reference["texts"])
                       for a, b in zip(g["token_logprobs"], r["token_logprobs"]))
            assert all(g["token_ids"] == r["token_ids"] for g, r in zip(got, reference["texts"]))
            assert diff < 1e-5, diff
            reference["transformers_loaded_ckpt_merge"] = {"max_abs_logprob_diff": diff}
            print(f"transformers loaded ckpt's merge: max |logprob diff| {diff:.2e}")
    with open(os.path.join(ROOT, "reference.json"), "w") as f:
        json.dump(reference, f, indent=1)
    print("wrote", ROOT, "coefficients", coefficients)


if __name__ == "__main__":
    main()
