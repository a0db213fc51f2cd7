#!/usr/bin/env python3
"""Times PyTorch's double-backward Hessian-vector product on the work of
`cargo bench --bench sharpness`.

Loads the random checkpoint, token batch and Rademacher probe that the Rust benchmark
wrote to target/bench/sharpness/, and computes z^T H z of the mean next-token loss by
double backward (torch.autograd.grad with create_graph=True, then the gradient of
<g, z>), eager attention (PyTorch's sdpa kernel cannot be differentiated twice on CPU),
f32, 2 threads by default. One warm-up product, then --reps timed ones; the same on the
first `exact_rows` rows (the rows candle's double backward is timed on). Prints one
JSON line.

Run: cargo bench --bench sharpness && python scripts/bench_hvp_pytorch.py
SmolLM2-135M's shape at 512 tokens (the sharpness issue's comparison):
  CKPT_BENCH_SHAPE=smollm2-135m CKPT_BENCH_ROWS=1 CKPT_BENCH_LEN=512 \
  CKPT_BENCH_EXACT_ROWS=1 CKPT_BENCH_REPS=2 cargo bench --bench sharpness
  python scripts/bench_hvp_pytorch.py --reps 2
"""
import argparse
import json
import pathlib
import time

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM


def quadratic_form(model, ids, z):
    params = [p for _, p in model.named_parameters()]
    zs = [z[n] for n, _ in model.named_parameters()]
    logits = model(input_ids=ids).logits
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    grads = torch.autograd.grad(loss, params, create_graph=True)
    inner = sum((g * v).sum() for g, v in zip(grads, zs))
    hz = torch.autograd.grad(inner, params)
    return sum((h * v).sum() for h, v in zip(hz, zs)).item()


def timed(model, ids, z, reps):
    value = quadratic_form(model, ids, z)
    started = time.perf_counter()
    for _ in range(reps):
        quadratic_form(model, ids, z)
    return value, (time.perf_counter() - started) / reps


def main():
    root = pathlib.Path(__file__).resolve().parent.parent / "target/bench/sharpness"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=pathlib.Path, default=root)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    saved = json.loads((args.dir / "batch.json").read_text())
    rows, width, exact_rows = saved["rows"], saved["len"], saved["exact_rows"]
    ids = torch.tensor(saved["ids"], device=args.device).view(rows, width)
    model = AutoModelForCausalLM.from_pretrained(
        args.dir / "model", dtype=torch.float32, attn_implementation="eager").to(args.device).eval()
    z = {n: b.float().to(args.device) * 2 - 1
         for n, b in load_file(args.dir / "probe.safetensors").items()}
    zhz, seconds = timed(model, ids, z, args.reps)
    if exact_rows == rows:
        part_zhz, part_seconds = zhz, seconds
    elif exact_rows == 0:
        part_zhz, part_seconds = None, None
    else:
        part_zhz, part_seconds = timed(model, ids[:exact_rows], z, args.reps)
    print(json.dumps({
        "bench": "hvp", "impl": "pytorch-eager-double-backward", "dtype": "f32",
        "torch": torch.__version__, "threads": args.threads, "device": args.device,
        "params": sum(p.numel() for p in model.parameters()),
        "rows": rows, "seq_len": width, "reps": args.reps,
        "seconds": seconds, "zhz": zhz,
        "exact_rows": exact_rows, "exact_rows_seconds": part_seconds,
        "exact_rows_zhz": part_zhz,
    }))


if __name__ == "__main__":
    main()
