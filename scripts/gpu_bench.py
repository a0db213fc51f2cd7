#!/usr/bin/env python3
"""Helpers of scripts/gpu_bench.sh (run on the GPU machine, with its PyTorch's python).

  inputs CKPT DIR [--rows R --len L --seed S]   inputs of the PyTorch bench scripts
  parity CPU.json GPU.json [--tol T --mean-tol M] per-token log-prob parity of `ckpt score`
  sharpness CPU.json GPU.json                    `ckpt sharpness` estimates, CPU vs GPU
  mfu METRICS.jsonl CKPT [--seq L --peak-tflops P --skip N]  tokens/s and MFU of a run

Each prints one JSON line; parity and sharpness exit 1 when the check fails.
The PyTorch scripts read DIR/model (a symlink to CKPT), DIR/windows.json (score),
DIR/batches.json (train), DIR/batch.json and DIR/probe.safetensors (hvp).
"""
import argparse
import json
import math
import pathlib
import random
import struct
import sys


def safetensors_shapes(ckpt):
    """Name -> shape of the weights in CKPT/model*.safetensors (not optimizer state), from
    the headers alone."""
    shapes = {}
    for path in sorted(pathlib.Path(ckpt).glob("model*.safetensors")):
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        shapes.update({k: v["shape"] for k, v in header.items() if k != "__metadata__"})
    return shapes


def cmd_inputs(args):
    ckpt, out = pathlib.Path(args.ckpt).resolve(), pathlib.Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    model = out / "model"
    if model.is_symlink() or model.exists():
        model.unlink()
    model.symlink_to(ckpt, target_is_directory=True)
    vocab = json.loads((ckpt / "config.json").read_text())["vocab_size"]
    rng = random.Random(args.seed)
    ids = lambda n: [rng.randrange(vocab) for _ in range(n)]  # noqa: E731
    width = args.len + 1
    (out / "windows.json").write_text(json.dumps([ids(width) for _ in range(args.rows * 4)]))
    batches = [ids(args.rows * width) for _ in range(args.steps + 1)]
    (out / "batches.json").write_text(json.dumps({"rows": args.rows, "len": width, "batches": batches}))
    (out / "batch.json").write_text(json.dumps(
        {"rows": args.rows, "len": args.len, "exact_rows": 1, "ids": ids(args.rows * args.len)}))
    import torch  # only here: the other commands run without it
    from safetensors.torch import save_file
    gen = torch.Generator().manual_seed(args.seed)
    probe = {name: torch.randint(0, 2, shape, generator=gen, dtype=torch.uint8)
             for name, shape in safetensors_shapes(ckpt).items()}
    save_file(probe, out / "probe.safetensors")
    print(json.dumps({"inputs": str(out), "vocab": vocab, "rows": args.rows, "len": args.len}))


def token_logprobs(path):
    report = json.loads(pathlib.Path(path).read_text())
    out = []
    for text in report["texts"]:
        if text.get("token_logprobs") is None:
            sys.exit(f"{path}: no token_logprobs (run ckpt score with --per-token --json)")
        out.extend(text["token_logprobs"])
    return out, report


def cmd_parity(args):
    cpu, cpu_report = token_logprobs(args.cpu)
    gpu, gpu_report = token_logprobs(args.gpu)
    if len(cpu) != len(gpu):
        sys.exit(f"token counts differ: {len(cpu)} in {args.cpu}, {len(gpu)} in {args.gpu}")
    diffs = [abs(a - b) for a, b in zip(cpu, gpu)]
    result = {
        "check": "score-parity", "cpu": args.cpu, "gpu": args.gpu, "tokens": len(diffs),
        "max_abs_diff": max(diffs), "mean_abs_diff": sum(diffs) / len(diffs),
        "tol": args.tol, "mean_tol": args.mean_tol,
        "cpu_tokens_per_second": cpu_report.get("tokens_per_second"),
        "gpu_tokens_per_second": gpu_report.get("tokens_per_second"),
    }
    ok = result["max_abs_diff"] <= args.tol and (
        args.mean_tol is None or result["mean_abs_diff"] <= args.mean_tol)
    result["ok"] = ok
    print(json.dumps(result))
    return 0 if ok else 1


def one_result(path):
    results = json.loads(pathlib.Path(path).read_text())
    if not results:
        sys.exit(f"{path}: no sharpness result")
    return results[0]


def cmd_sharpness(args):
    cpu, gpu = one_result(args.cpu), one_result(args.gpu)
    diff = abs(cpu["estimate"] - gpu["estimate"])
    stderr = cpu.get("stderr") or 0.0
    result = {
        "check": "sharpness", "cpu_estimate": cpu["estimate"], "cpu_stderr": stderr,
        "gpu_estimate": gpu["estimate"], "gpu_stderr": gpu.get("stderr"), "abs_diff": diff,
        "probes": cpu["probes"], "parameters": cpu["parameters"],
        "cpu_seconds": cpu["seconds"], "gpu_seconds": gpu["seconds"],
        # fd: one Hessian-vector product is two gradients; a probe over all batches.
        "cpu_seconds_per_probe": cpu["seconds"] / cpu["probes"],
        "gpu_seconds_per_probe": gpu["seconds"] / gpu["probes"],
        "ok": diff <= stderr,
    }
    print(json.dumps(result))
    return 0 if result["ok"] else 1


def cmd_mfu(args):
    lines = pathlib.Path(args.metrics).read_text().splitlines()
    rows = [r for r in map(json.loads, filter(None, lines)) if "tokens_per_s" in r]
    timed = rows[args.skip:] or rows
    tokens = sum(r["tokens"] for r in timed)
    seconds = sum(r["tokens"] / r["tokens_per_s"] for r in timed)
    cfg = json.loads((pathlib.Path(args.ckpt) / "config.json").read_text())
    params = sum(math.prod(s) for s in safetensors_shapes(args.ckpt).values())
    layers, hidden = cfg["num_hidden_layers"], cfg["hidden_size"]
    # 6N per token for forward + backward, plus attention's 12 * layers * hidden * seq
    # (PaLM's appendix B convention, causal mask not discounted).
    flops_per_token = 6 * params + 12 * layers * hidden * args.seq
    tps = tokens / seconds
    print(json.dumps({
        "check": "train-throughput", "metrics": args.metrics, "params": params,
        "seq_len": args.seq, "steps_timed": len(timed), "tokens_per_second": tps,
        "flops_per_token": flops_per_token, "peak_tflops": args.peak_tflops,
        "mfu": tps * flops_per_token / (args.peak_tflops * 1e12),
        "final_loss": rows[-1]["loss"],
    }))
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("inputs")
    p.add_argument("ckpt")
    p.add_argument("dir")
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--len", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("parity")
    p.add_argument("cpu")
    p.add_argument("gpu")
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--mean-tol", type=float)
    p = sub.add_parser("sharpness")
    p.add_argument("cpu")
    p.add_argument("gpu")
    p = sub.add_parser("mfu")
    p.add_argument("metrics")
    p.add_argument("ckpt")
    p.add_argument("--seq", type=int, required=True)
    p.add_argument("--peak-tflops", type=float, default=989.0)
    p.add_argument("--skip", type=int, default=2, help="warm-up steps left out")
    args = parser.parse_args()
    sys.exit({"inputs": cmd_inputs, "parity": cmd_parity, "sharpness": cmd_sharpness,
              "mfu": cmd_mfu}[args.cmd](args))


if __name__ == "__main__":
    main()
