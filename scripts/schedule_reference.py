#!/usr/bin/env python3
"""Reference learning rates for tests/fixtures/schedules.json.

The formulas of Yano et al. (2026), Section 2.4 and Appendix B (equations 7-11),
written out again in plain Python, independently of src/schedule.rs, plus the extra
kinds of DESIGN.md section 5 (constant, inverse square root, SGDR restarts, WSD decay
of fixed length). The Rust unit test `schedule::tests::matches_the_python_reference`
compares `ScheduleSpec::lr` with these numbers.

Usage: python3 scripts/schedule_reference.py > tests/fixtures/schedules.json
"""

import json
import math
import sys


def pre_lr(spec, t):
    """LR at step t <= T of pre-training (equations 7-10 and the extra kinds)."""
    eta = spec["peak_lr"]
    w = spec.get("warmup", 0)
    big_t = spec["total_steps"]
    kind = spec["kind"]
    t = min(t, big_t)
    if w > 0 and t <= w:
        return eta * t / w
    if kind in ("wso", "constant"):
        return eta
    alpha = spec.get("alpha", 0.0)
    if kind == "wsd":
        if "decay_steps" in spec:
            s = big_t - spec["decay_steps"]
        else:
            s = w + spec.get("stable_ratio", 0.75) * (big_t - w)
        if t <= s:
            return eta
        return eta * ((1 - alpha) * (big_t - t) / (big_t - s) + alpha)
    if kind == "cosine":
        return eta * (alpha + (1 - alpha) / 2 * (1 + math.cos((t - w) / (big_t - w) * math.pi)))
    if kind == "linear":
        return eta * ((1 - alpha) * (big_t - t) / (big_t - w) + alpha)
    if kind == "inv-sqrt":
        return eta * math.sqrt(max(w, 1) / max(t, 1))
    if kind == "cyclic":
        # Walk the cycles: cycle i starts where cycle i-1 ended and lasts cycle * mult^i.
        start, length = w, spec["cycle"]
        while t >= start + length:
            start += length
            length *= spec.get("mult", 1.0)
        progress = (t - start) / length
        return eta * (alpha + (1 - alpha) / 2 * (1 + math.cos(math.pi * progress)))
    raise ValueError(kind)


def lr(spec, t):
    """Pre-training, then mid-training (equation 11), then the last value held."""
    big_t = spec["total_steps"]
    m = spec.get("mid_steps")
    if m is None or t <= big_t:
        return pre_lr(spec, t)
    t = min(t, big_t + m)
    a = spec["alpha_mid"]
    return pre_lr(spec, big_t) * ((1 - a) * (big_t + m - t) / m + a)


PAPER = {"peak_lr": 3e-4, "warmup": 1000, "total_steps": 80000}

CASES = [
    dict(PAPER, kind="wso"),
    dict(PAPER, kind="wsd", alpha=0.1),
    dict(PAPER, kind="wsd", alpha=0.0, stable_ratio=0.9),
    dict(PAPER, kind="cosine", alpha=0.1),
    dict(PAPER, kind="linear", alpha=0.0),
    dict(PAPER, kind="wso", mid_steps=36000, alpha_mid=1.0),
    dict(PAPER, kind="wso", mid_steps=36000, alpha_mid=0.0),
    dict(PAPER, kind="cosine", alpha=0.1, mid_steps=36000, alpha_mid=0.0),
    dict(PAPER, kind="wsd", alpha=0.1, mid_steps=36000, alpha_mid=0.5),
    # A decay branched from the stable phase of a WSO run: 8,000 steps down to 0.
    {"kind": "wsd", "peak_lr": 3e-4, "warmup": 1000, "total_steps": 48000,
     "decay_steps": 8000, "alpha": 0.0},
    {"kind": "constant", "peak_lr": 1e-3, "total_steps": 5000},
    {"kind": "inv-sqrt", "peak_lr": 1e-3, "warmup": 400, "total_steps": 10000},
    {"kind": "cyclic", "peak_lr": 1e-3, "warmup": 100, "total_steps": 10000,
     "cycle": 1000, "mult": 2.0, "alpha": 0.05},
    {"kind": "cyclic", "peak_lr": 1e-3, "total_steps": 3000, "cycle": 700},
    # SFT: cosine with 100 warmup steps to 0.
    {"kind": "cosine", "peak_lr": 1e-5, "warmup": 100, "total_steps": 1234, "alpha": 0.0},
]


def steps_of(spec):
    """t = 0, W, S, T, T + M, the points between them, and some past the end."""
    w, big_t = spec.get("warmup", 0), spec["total_steps"]
    end = big_t + spec.get("mid_steps", 0)
    steps = {0, 1, w // 2, w, w + 1, big_t // 3, big_t // 2, big_t - 1, big_t, big_t + 1,
             end - 1, end, end + 1, end + 5000}
    if spec["kind"] == "wsd":
        if "decay_steps" in spec:
            s = big_t - spec["decay_steps"]
        else:
            s = w + spec.get("stable_ratio", 0.75) * (big_t - w)
        steps |= {math.floor(s), math.ceil(s), math.floor(s) + 1, round((s + big_t) / 2)}
    if "mid_steps" in spec:
        steps |= {big_t + spec["mid_steps"] // 4, big_t + spec["mid_steps"] // 2}
    if spec["kind"] == "cyclic":
        steps |= {w + 999, w + 1000, w + 1500, w + 2999, w + 3000, 1399, 1400, 2100}
    return sorted(s for s in steps if s >= 0)


def main():
    # One line per case keeps the committed file small and its diffs readable.
    cases = [
        json.dumps({"spec": spec, "points": [[t, lr(spec, t)] for t in steps_of(spec)]})
        for spec in CASES
    ]
    sys.stdout.write('{"generated_by": "scripts/schedule_reference.py", "cases": [\n')
    sys.stdout.write(",\n".join(cases))
    sys.stdout.write("\n]}\n")


if __name__ == "__main__":
    main()
