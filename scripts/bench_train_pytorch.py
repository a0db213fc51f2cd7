#!/usr/bin/env python3
"""Times PyTorch eager on the training work of `cargo bench --bench train`.

Loads the random checkpoint and batches that the Rust benchmark wrote to
target/bench/train/, and runs the same step: forward, token-mean cross-entropy,
backward, clip_grad_norm_(1.0), AdamW (betas 0.9/0.95, weight decay 0.1 on matrices).
Prints one JSON line per attention implementation: seconds per step and tokens/s over
the timed steps (the first step is a warm-up, as on the Rust side).

Run: cargo bench --bench train && /path/to/venv/bin/python scripts/bench_train_pytorch.py
(venv: pip install -r scripts/requirements-reference.txt)
"""
import argparse
import json
import pathlib
import time

import torch
from transformers import AutoModelForCausalLM


def main():
    root = pathlib.Path(__file__).resolve().parent.parent / "target/bench/train"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=pathlib.Path, default=root)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", choices=["f32", "bf16"], default="f32",
                        help="bf16: autocast over f32 master weights, as ckpt's trainer")
    parser.add_argument("--attn", nargs="+", default=["eager", "sdpa"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    saved = json.loads((args.dir / "batches.json").read_text())
    rows, width, batches = saved["rows"], saved["len"], saved["batches"]
    steps = len(batches) - 1
    for attn in args.attn:
        model = AutoModelForCausalLM.from_pretrained(
            args.dir / "model", dtype=torch.float32, attn_implementation=attn
        ).to(args.device).train()
        decay = [p for n, p in model.named_parameters() if "norm" not in n]
        no_decay = [p for n, p in model.named_parameters() if "norm" in n]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
            lr=3e-4, betas=(0.9, 0.95), eps=1e-8,
        )
        losses = []
        for i, flat in enumerate(batches):
            if i == 1:
                started = time.perf_counter()
            run = torch.tensor(flat, device=args.device).view(rows, width)
            with torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16,
                                enabled=args.dtype == "bf16"):
                logits = model(run[:, :-1]).logits
            loss = torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), run[:, 1:].reshape(-1)
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())  # .item() synchronizes a GPU each step
        seconds = time.perf_counter() - started
        tokens = steps * rows * (width - 1)
        print(json.dumps({
            "bench": "train", "impl": f"pytorch-{attn}", "dtype": args.dtype,
            "torch": torch.__version__, "threads": args.threads, "device": args.device,
            "rows": rows, "seq_len": width - 1, "steps": steps,
            "seconds_per_step": seconds / steps, "tokens_per_second": tokens / seconds,
            "losses": losses,
        }))


if __name__ == "__main__":
    main()
