#!/usr/bin/env python3
"""Times transformers (PyTorch eager) on the scoring work of `cargo bench --bench score`.

Loads the random checkpoint and token windows that the Rust benchmark wrote to
target/bench/score/, computes the same target log-probabilities (log_softmax of the
logits at every position, gathered at the next token) in batches of the same token
budget, and prints one JSON line per dtype and attention implementation, best of 3.

Run: cargo bench --bench score && /path/to/venv/bin/python scripts/bench_score_transformers.py
(venv: pip install torch transformers safetensors)
"""
import argparse
import json
import pathlib
import time

import torch
from transformers import AutoModelForCausalLM


def score(model, windows, batch_rows, device="cpu"):
    total = 0.0
    with torch.inference_mode():
        for start in range(0, len(windows), batch_rows):
            run = torch.tensor(windows[start:start + batch_rows], device=device)
            logits = model(run[:, :-1]).logits.float()
            logprobs = torch.log_softmax(logits, dim=-1)
            targets = run[:, 1:].unsqueeze(-1)
            total += logprobs.gather(-1, targets).sum().item()
    return total


def main():
    root = pathlib.Path(__file__).resolve().parent.parent / "target/bench/score"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=pathlib.Path, default=root)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batch-tokens", type=int, default=4096)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", choices=["f32", "bf16"], help="one dtype only")
    parser.add_argument("--attn", choices=["eager", "sdpa"], help="one attention implementation only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    windows = json.loads((args.dir / "windows.json").read_text())
    length = len(windows[0]) - 1  # model inputs per window; the run has one more token
    batch_rows = max(1, args.batch_tokens // length)
    tokens = len(windows) * length
    for dtype_name, dtype in [("f32", torch.float32), ("bf16", torch.bfloat16)]:
        if args.dtype and args.dtype != dtype_name:
            continue
        for attn in ["eager", "sdpa"]:
            if args.attn and args.attn != attn:
                continue
            try:
                model = AutoModelForCausalLM.from_pretrained(
                    args.dir / "model", dtype=dtype, attn_implementation=attn
                ).to(args.device).eval()
            except ValueError as e:  # e.g. Gemma 2 has no sdpa
                print(json.dumps({"bench": "score", "impl": f"transformers-{attn}", "skipped": str(e)[:120]}))
                continue
            score(model, windows[:1], 1, args.device)  # warm-up
            best = float("inf")
            for _ in range(3):
                started = time.perf_counter()
                checksum = score(model, windows, batch_rows, args.device)  # .item() syncs
                best = min(best, time.perf_counter() - started)
            print(json.dumps({
                "bench": "score", "impl": f"transformers-{attn}", "dtype": dtype_name,
                "torch": torch.__version__, "threads": args.threads,
                "device": args.device, "tokens": tokens, "window": length, "seconds": best,
                "tokens_per_second": tokens / best, "sum_logprob": checksum,
                "architecture": type(model).__name__,
            }))


if __name__ == "__main__":
    main()
