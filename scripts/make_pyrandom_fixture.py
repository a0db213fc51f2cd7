#!/usr/bin/env python3
"""Reference values for `src/eval/pyrandom.rs`: CPython's `random.Random` and
lm-evaluation-harness's few-shot sampling, on synthetic documents only.

Writes tests/fixtures/eval/pyrandom.json with
* `random`, `getrandbits`, `randbelow`, `sample`, `shuffle`, `choices` sequences of
  `random.Random(seed)` for several seeds (small and 64-bit and negative), including
  `sample` sizes on both sides of CPython's pool/set switch;
* `samplers`: lm-eval 0.4.13's real prompt construction (`ConfigurableTask`,
  `set_fewshot_seed(1234)`, `build_all_requests`) over synthetic multiple-choice
  datasets, with the few-shot documents read back from the built contexts, for the
  `default` (random) and `first_n` samplers, shots from another split, from the same
  split (the evaluated document removed), from an unset split equal to an unset
  test split, and a pool with duplicate documents (lm-eval's resampling path).

Run (from the repository root, with lm-eval 0.4.13 in the venv):
    /work/pyref/bin/python scripts/make_pyrandom_fixture.py
"""

import json
import logging
import random
import struct
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "eval" / "pyrandom.json"
SEEDS = [0, 1, 1234, 2**32 + 5, 2**64 - 1, -7]


def bits(x):
    """A float as the decimal string of its IEEE-754 bits (exact through JSON)."""
    return str(struct.unpack("<Q", struct.pack("<d", x))[0])


def generator_sequences():
    out = []
    for seed in SEEDS:
        r = random.Random(seed)
        case = {"seed": str(seed)}
        case["random"] = [bits(r.random()) for _ in range(5)]
        case["getrandbits"] = [[k, str(r.getrandbits(k))] for k in [1, 5, 31, 32, 33, 63, 64, 1, 64]]
        case["randbelow"] = [[n, r._randbelow(n)] for n in [1, 2, 3, 7, 1000, 2**33 + 1]]
        samples = []
        # (n, k): k <= 5 uses setsize 21; k = 6 gives setsize 85; k = 20 gives 277.
        for n, k in [(10, 3), (21, 5), (22, 5), (30, 5), (85, 6), (86, 6), (100, 50),
                     (1000, 10), (5, 5), (1, 1), (0, 0), (300, 20), (277, 20), (278, 20)]:
            samples.append({"n": n, "k": k, "result": r.sample(range(n), k)})
        case["sample"] = samples
        xs = list(range(20))
        r.shuffle(xs)
        case["shuffle20"] = xs
        case["choices"] = {"n": 7, "k": 12, "result": r.choices(range(7), k=12)}
        case["after"] = bits(r.random())
        out.append(case)
    return out


def build_task(train, validation, test, **config):
    import datasets
    from lm_eval.api.task import ConfigurableTask

    splits = {}
    for name, docs in [("train", train), ("validation", validation), ("test", test)]:
        if docs is not None:
            splits[name] = datasets.Dataset.from_list(docs)
    dd = datasets.DatasetDict(splits)
    cfg = {
        "task": "synthetic",
        "custom_dataset": lambda **kw: dd,
        "output_type": "multiple_choice",
        "doc_to_text": "{{q}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{label}}",
        "description": "Desc.\n\n",
    }
    for split in ["train", "validation", "test"]:
        cfg[f"{'training' if split == 'train' else split}_split"] = split if split in splits else None
    cfg.update(config)
    return ConfigurableTask(config=cfg)


def docs(keys):
    return [{"q": k, "choices": ["yes", "no", "maybe"], "label": sum(map(ord, k)) % 3} for k in keys]


def shots_of(task, n_eval):
    """The few-shot documents of each evaluated document, read from its context."""
    per_doc = {}
    for inst in task.instances:
        per_doc.setdefault(inst.doc_id, inst.arguments[0])
    out = []
    for i in range(n_eval):
        ctx = per_doc[i]
        assert ctx.startswith("Desc.\n\n")
        parts = ctx[len("Desc.\n\n"):].split("\n\n")
        out.append([p.rsplit(" ", 1)[0] for p in parts[:-1]])
    return out


def sampler_case(name, kind, num_fewshot, pool, evals, same_split, task):
    task.set_fewshot_seed(1234)
    task.build_all_requests(limit=None)
    return {
        "name": name,
        "kind": kind,
        "seed": 1234,
        "num_fewshot": num_fewshot,
        "same_split_as_eval": same_split,
        "pool": pool,
        "eval": evals,
        "shots": shots_of(task, len(evals)),
    }


def sampler_cases():
    cases = []
    train = [f"T{i}" for i in range(40)]
    val = [f"V{i}" for i in range(12)]
    # HellaSwag-like: shots from train, evaluation on validation, test_split and
    # fewshot_split both unset -> lm-eval treats them as the same split.
    t = build_task(docs(train), docs(val), None, num_fewshot=3)
    cases.append(sampler_case("unset_splits_equal", "random", 3, train, val, True, t))
    # Five shots (k = 6 -> pool algorithm for a pool of 80).
    train80 = [f"T{i}" for i in range(80)]
    t = build_task(docs(train80), docs(val), None, num_fewshot=5)
    cases.append(sampler_case("unset_splits_k6_pool", "random", 5, train80, val, True, t))
    # Small pool (20 <= 21): pool algorithm with k = 4.
    train20 = [f"T{i}" for i in range(20)]
    t = build_task(docs(train20), docs(val), None, num_fewshot=3)
    cases.append(sampler_case("small_pool", "random", 3, train20, val, True, t))
    # GSM8K-like: fewshot_split train, test_split test -> no eval doc, n draws.
    test = [f"E{i}" for i in range(12)]
    t = build_task(docs(train), None, docs(test), fewshot_split="train", num_fewshot=5)
    cases.append(sampler_case("other_split", "random", 5, train, test, False, t))
    # Shots from the evaluation split itself: the evaluated doc is removed.
    test30 = [f"E{i}" for i in range(30)]
    t = build_task(None, None, docs(test30), fewshot_split="test", num_fewshot=3)
    cases.append(sampler_case("same_split", "random", 3, test30, test30, True, t))
    # Duplicates of the evaluated doc in the pool: both copies can be drawn and
    # removed, and lm-eval resamples from the pool without any copy.
    dup = ["D"] * 4 + [f"E{i}" for i in range(4)]
    t = build_task(None, None, docs(dup), fewshot_split="test", num_fewshot=3)
    cases.append(sampler_case("duplicates", "random", 3, dup, dup, True, t))
    # first_n from the same split (eval doc removed) and from another split (MMLU).
    t = build_task(None, None, docs(test), fewshot_split="test", num_fewshot=3,
                   fewshot_config={"sampler": "first_n"})
    cases.append(sampler_case("first_n_same_split", "first_n", 3, test, test, True, t))
    dev = [f"M{i}" for i in range(5)]
    t = build_task(None, docs(dev), docs(test), fewshot_split="validation", num_fewshot=5,
                   fewshot_config={"sampler": "first_n"})
    cases.append(sampler_case("first_n_other_split", "first_n", 5, dev, test, False, t))
    return cases


def main():
    logging.disable(logging.WARNING)
    fixture = {"generators": generator_sequences(), "samplers": sampler_cases()}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    body = ",\n".join(f"{json.dumps(k)}:{json.dumps(v, separators=(',', ':'))}" for k, v in fixture.items())
    OUT.write_text("{\n" + body + "\n}\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
