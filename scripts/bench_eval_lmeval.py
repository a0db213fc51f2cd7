#!/usr/bin/env python3
"""Times lm-evaluation-harness's HF backend on the work of `cargo bench --bench eval`.

Loads the random checkpoint and the (context, continuation) pairs the Rust benchmark
wrote to target/bench/eval/, runs `HFLM.loglikelihood` on them (the same call lm-eval
makes for multiple-choice tasks) at several batch sizes, and prints one JSON line each,
with the largest difference from ckpt's log-likelihoods.

Run: cargo bench --bench eval && /work/pyref/bin/python scripts/bench_eval_lmeval.py
(venv: pip install -r scripts/requirements-reference.txt)
"""
import argparse
import json
import pathlib
import time

import torch
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM


def main():
    root = pathlib.Path(__file__).resolve().parent.parent / "target/bench/eval"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=pathlib.Path, default=root)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-sizes", default="1,16")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pairs = json.loads((args.dir / "requests.json").read_text())
    ours = json.loads((args.dir / "ckpt_logprobs.json").read_text())
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        lm = HFLM(pretrained=str(args.dir / "model"), batch_size=bs, device="cpu", dtype="float32")
        reqs = [Instance("loglikelihood", {}, (c, k), i) for i, (c, k) in enumerate(pairs)]
        started = time.perf_counter()
        results = lm.loglikelihood(reqs, disable_tqdm=True)
        seconds = time.perf_counter() - started
        diff = max(abs(r[0] - o) for r, o in zip(results, ours))
        print(json.dumps({
            "bench": "eval_multiple_choice", "impl": "lm-eval HF", "batch_size": bs,
            "threads": args.threads, "requests": len(pairs), "seconds": seconds,
            "requests_per_second": len(pairs) / seconds, "max_abs_diff_vs_ckpt": diff,
        }))


if __name__ == "__main__":
    main()
