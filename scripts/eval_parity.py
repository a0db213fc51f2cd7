#!/usr/bin/env python
"""Prompt parity between `ckpt tasks --show` and lm-evaluation-harness 0.4.13.

For each kind of task (plain multiple choice, HellaSwag's preprocessing, WinoGrande's
partial scoring, TruthfulQA mc1/mc2, MMLU 5-shot, GSM8K generation, GSM8K-CoT and BBH
with user exemplars, DROP, AGIEval), lm-eval builds its requests from its own task
config (the YAML of the installed lm_eval package) with the data pointed at synthetic
files made by `ckpt synth --eval-tasks`, and the script compares every request
(context, continuation, generation arguments) and gold answer with what
`ckpt tasks --show` prints for the same task, shots and docs, byte for byte.

Two runs:
- synthetic exemplars (committed): where lm-eval hard-codes exemplars (GSM8K-CoT and
  BBH `fewshot_config.samples` and description, TruthfulQA's preamble in doc_to_text),
  the config is given ckpt's synthetic exemplar file instead, in lm-eval's own form.
  lm-eval's requests are written to tests/fixtures/eval/parity_prompts.json, which
  tests/eval_tasks.rs compares with `ckpt tasks --show` without Python.
- lm-eval's exemplars (not committed, `--real-exemplars`): the configs are lm-eval's
  unchanged, and ckpt reads exemplar files extracted from them; only the verdict is
  printed.

Scores (`--scores`): lm-eval's HF backend (transformers, f32, CPU, batch size 1) and
`ckpt eval` score the same tiny checkpoints (tests/fixtures/trained/tiny-wso, and the
random tests/fixtures/parity/llama_gqa for generation; max length 2048 on both sides)
on the same synthetic docs for each kind of task; the script
compares every per-choice log-likelihood (within 1e-4), every generation (identical),
every per-doc metric and every aggregate (identical) and prints the speed of both.

Tokenizer kinds (`--tokenizer-kinds`, or `--checkpoints DIR...`): only the score
comparison, on the four tiny checkpoints of tests/fixtures/tokenizers (one per way a
tokenizer adds BOS/EOS), for ARC (0- and 5-shot), WinoGrande (0/5), GSM8K (0/1, with
`--max-gen-toks`, default 16) and lm-eval's wikitext (loglikelihood_rolling, on ckpt's
validation texts, against ckpt's validation_loss), both sides at `--max-length` (default
64, the fixtures' max_position_embeddings) and the same `--add-bos-token` /
`--prefix-token-id`; writes tests/fixtures/tokenizers/metrics_parity.txt.

Run: ~/.venvs/ckpt-ref/bin/python scripts/eval_parity.py [--ckpt target/debug/ckpt] [--scores]
     [--real-exemplars] [--all] (every built-in task; the fixture is then left alone)
     [--tokenizer-kinds [--add-bos-token auto true false] [--prefix-token-id ID]]
No network: HF_DATASETS_OFFLINE / HF_HUB_OFFLINE are set, data come from local JSONL.
"""

import argparse
import copy
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import functools  # noqa: E402

import tqdm  # noqa: E402

# lm-eval's progress bars would drown the report.
tqdm.tqdm.__init__ = functools.partialmethod(tqdm.tqdm.__init__, disable=True)

import datasets  # noqa: E402
import lm_eval  # noqa: E402
from lm_eval.api.task import ConfigurableTask  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402
from lm_eval.tasks._yaml_loader import load_yaml  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests/fixtures/eval/parity_prompts.json"

# The synthetic world and data the fixture is made from (the Rust test makes the same).
SYNTH = {"seed": 7, "entities": 40, "eval_docs": 8}
# Docs per case in the fixture (the script itself compares all of `--limit`).
FIXTURE_DOCS = 3

# (task, num_fewshot or None for the task's default): one or more per kind of task.
CASES = [
    ("arc_easy", 0),
    ("arc_challenge", 5),
    ("boolq", 0),
    ("hellaswag", 0),
    ("hellaswag", 5),
    ("openbookqa", 0),
    ("piqa", 0),
    ("winogrande", 0),
    ("winogrande", 5),
    ("mmlu_anatomy", 5),
    ("mmlu_high_school_us_history", 5),
    ("truthfulqa_mc1", None),
    ("truthfulqa_mc2", None),
    ("gsm8k", None),
    ("gsm8k", 1),
    ("gsm8k_cot", 8),
    ("drop", 0),
    ("drop", 5),
    ("bbh_cot_fewshot_boolean_expressions", 3),
    ("bbh_cot_fewshot_snarks", 3),
    ("agieval_lsat_ar", 0),
    ("agieval_sat_math", 3),
]

DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's HF backend when generation_kwargs has none


def run_ckpt(ckpt, args):
    out = subprocess.run([ckpt, *args], check=True, capture_output=True, text=True)
    return out.stdout


def ckpt_show(ckpt, task, shots, limit, data_dir, fewshot_dir):
    args = ["tasks", "--show", task, "--limit", str(limit), "--data-dir", str(data_dir)]
    args += ["--fewshot-dir", str(fewshot_dir)]
    if shots is not None:
        args += ["--num-fewshot", str(shots)]
    return [json.loads(line) for line in run_ckpt(ckpt, args).splitlines()]


def ckpt_spec(ckpt, task):
    return json.loads(run_ckpt(ckpt, ["tasks", task, "--json"]))[0]


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def lm_eval_config(tm, task, spec, data_dir):
    """lm-eval's config of `task`, its data pointed at the synthetic files."""
    cfg = copy.deepcopy(load_yaml(tm.task_index[task].yaml_path, resolve_func=True))
    for key in ("tag", "group", "task_list"):
        cfg.pop(key, None)
    base = Path(data_dir) / spec["dataset"]
    if spec["config"]:
        base = base / spec["config"]
    splits = {
        cfg.get(k) for k in ("training_split", "validation_split", "test_split", "fewshot_split")
    } - {None}
    if task.startswith("agieval_"):
        # lm-eval 0.4.13 cannot build AGIEval's few-shot examples (a list target fails
        # `assert isinstance(answer_text, str)`); lm-eval up to 0.4.3's sampler wrote
        # `str(doc_to_target(doc)[0])`, the first gold index, which ckpt reproduces.
        cfg["fewshot_config"] = {"doc_to_target": lambda doc: str(doc["gold"][0])}
    cfg["dataset_path"] = "json"
    cfg["dataset_name"] = None
    cfg["dataset_kwargs"] = {"data_files": {s: str(base / f"{s}.jsonl") for s in splits}}
    return cfg


PROMPT_QA = re.compile(r"(\{% set prompt_qa = ')(.*?)('%\})", re.S)


def jinja_single_quoted(s):
    return s.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")


def use_synthetic_exemplars(cfg, rows):
    """Puts ckpt's exemplar rows where lm-eval's config hard-codes its exemplars."""
    if "samples" in (cfg.get("fewshot_config") or {}):
        cfg["fewshot_config"]["samples"] = [
            {k: v for k, v in r.items() if k != "description"} for r in rows
        ]
        if "description" in rows[0]:
            cfg["description"] = rows[0]["description"]
    elif isinstance(cfg.get("doc_to_text"), str) and PROMPT_QA.search(cfg["doc_to_text"]):
        preamble = "\n\n".join(f"Q: {r['question']}\nA: {r['answer']}" for r in rows)
        cfg["doc_to_text"] = PROMPT_QA.sub(
            lambda m: m.group(1) + jinja_single_quoted(preamble) + m.group(3), cfg["doc_to_text"]
        )
    else:
        raise SystemExit(f"{cfg['task']}: no hard-coded exemplars found to replace")


def real_exemplars(cfg):
    """lm-eval's hard-coded exemplars as a ckpt exemplar file (rows)."""
    samples = (cfg.get("fewshot_config") or {}).get("samples")
    if samples:
        rows = [dict(s) for s in samples]
        if cfg.get("description"):
            rows[0] = {"description": cfg["description"], **rows[0]}
        return rows
    m = PROMPT_QA.search(cfg["doc_to_text"])
    # The YAML's folded string gives the template text; its '\n' are Jinja escapes.
    preamble = m.group(2).replace("\\n", "\n")
    rows = []
    for pair in preamble.split("\n\n"):
        q, a = pair.split("\nA: ")
        rows.append({"question": q.removeprefix("Q: "), "answer": a})
    return rows


def request_json(inst):
    args = inst.arguments
    if inst.request_type == "loglikelihood":
        return {"type": "loglikelihood", "context": args[0], "continuation": args[1]}
    if inst.request_type == "generate_until":
        kwargs = args[1]
        return {
            "type": "generate",
            "context": args[0],
            "until": list(kwargs["until"]),
            "max_gen_toks": kwargs.get("max_gen_toks", DEFAULT_MAX_GEN_TOKS),
        }
    if inst.request_type == "loglikelihood_rolling":
        return {"type": "rolling", "text": args[0]}
    raise ValueError(inst.request_type)


def lm_eval_requests(cfg, shots, limit):
    """What lm-eval asks for each of the first `limit` docs, in ckpt's --show form."""
    task = ConfigurableTask(config=cfg)
    if shots is not None:
        task.set_config(key="num_fewshot", value=shots)
    elif task.get_config("num_fewshot") is None:
        task.set_config(key="num_fewshot", value=0)
    task.set_fewshot_seed(seed=1234)
    task.build_all_requests(limit=limit, rank=0, world_size=1)
    by_doc = {}
    for inst in task.instances:
        by_doc.setdefault(inst.doc_id, []).append(inst)
    lines = []
    for doc_id in sorted(by_doc):
        insts = sorted(by_doc[doc_id], key=lambda i: i.idx)
        doc = insts[0].doc
        requests = [request_json(i) for i in insts]
        if task.multiple_input:
            gold = task.doc_to_text(doc)
        else:
            gold = task.doc_to_target(doc)
            if task.OUTPUT_TYPE == "generate_until" and isinstance(gold, int):
                gold = str(gold)
        lines.append(
            {
                "task": cfg["task"],
                "doc_id": doc_id,
                "prompt": requests[0].get("context", requests[0].get("text")),
                "requests": requests,
                "gold": gold,
            }
        )
    return lines


def first_difference(a, b, path="$"):
    if type(a) is not type(b):
        return f"{path}: {a!r} vs {b!r}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}.{k}: only in {'ckpt' if k in a else 'lm-eval'}"
            d = first_difference(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} vs {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_difference(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    if a != b:
        if isinstance(a, str):
            i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            return f"{path}: differ at char {i}: ckpt {a[i:i + 60]!r} vs lm-eval {b[i:i + 60]!r}"
        return f"{path}: {a!r} vs {b!r}"
    return None


def compare(ckpt, tm, data_dir, fewshot_dir, limit, real):
    results = []
    for task, shots in CASES:
        spec = ckpt_spec(ckpt, task)
        cfg = lm_eval_config(tm, task, spec, data_dir)
        if spec["fewshot_split"] == "file":
            name = Path(fewshot_dir) / f"{exemplar_stem(task)}.jsonl"
            if real:
                write_jsonl(name, real_exemplars(cfg))
            else:
                use_synthetic_exemplars(cfg, read_jsonl(name))
        theirs = lm_eval_requests(cfg, shots, limit)
        ours = ckpt_show(ckpt, task, shots, limit, data_dir, fewshot_dir)
        diff = first_difference(ours, theirs)
        n_req = sum(len(line["requests"]) for line in theirs)
        label = f"{task} ({'default' if shots is None else shots}-shot)"
        print(f"{'identical' if diff is None else 'DIFFERENT':9}  {label:58} {len(theirs)} docs, {n_req} requests")
        if diff:
            print(f"           {diff}")
        results.append((task, shots, theirs, diff))
    return results


# The checkpoints scored: a tiny model trained on the synthetic world (its greedy
# generations are blank, so generation is also checked on a randomly initialised
# model, whose 256-token generations are varied).
TRAINED = ROOT / "tests/fixtures/trained/tiny-wso"
RANDOM = ROOT / "tests/fixtures/parity/llama_gqa"
# (task, num_fewshot, checkpoint): each kind of task, scored by both harnesses.
SCORE_CASES = [
    ("arc_easy", 0, TRAINED),
    ("boolq", 0, TRAINED),
    ("hellaswag", 0, TRAINED),
    ("piqa", 0, TRAINED),
    ("winogrande", 0, TRAINED),
    ("winogrande", 5, TRAINED),
    ("truthfulqa_mc1", None, TRAINED),
    ("truthfulqa_mc2", None, TRAINED),
    ("mmlu_anatomy", 5, TRAINED),
    ("agieval_lsat_ar", 0, TRAINED),
    ("gsm8k", 1, TRAINED),
    ("gsm8k", 1, RANDOM),
    ("gsm8k_cot", 8, RANDOM),
    ("drop", 3, RANDOM),
    # BBH generates up to 1024 tokens: on the random model, greedy decoding drifts into
    # near-ties after several hundred tokens, where f32 rounding decides (two
    # transformers setups, lm-eval's generate and a plain generate call, already part
    # after ~500 characters there), so it is checked on the trained model.
    ("bbh_cot_fewshot_boolean_expressions", 3, TRAINED),
]
MAX_LENGTH = 2048
LL_TOLERANCE = 1e-4


# Tokenizer kinds (`--tokenizer-kinds`, or any `--checkpoints`): the tiny random Llamas
# of tests/fixtures/tokenizers, one per way a tokenizer adds (or not) BOS/EOS, scored on
# one case per kind of task at their own context length (64), so contexts are also
# truncated on the left. `wikitext` is lm-eval's wikitext task (its YAML, detokenizer
# and process_results) on ckpt's validation texts, against ckpt's `validation_loss`.
TOKENIZER_KINDS = ["llama3_bytelevel_bos", "llama2_metaspace_bos", "gpt2_no_bos", "bos_eos_both"]
# (task, num_fewshot, data): data "short" is the synthetic data with each GSM8K question
# cut to its last sentence, so that generation contexts fit in max_length - max_gen_toks
# (the whole questions do not with these tokenizers, and left truncation drops the BOS).
KIND_CASES = [
    ("arc_easy", 0, None),  # plain multiple choice
    ("arc_challenge", 5, None),  # multiple choice, contexts longer than max_length
    ("winogrande", 0, None),  # partial scoring: one context per option, a shared continuation
    ("winogrande", 5, None),
    ("gsm8k", 0, "short"),  # generate_until, whole contexts (BOS and all)
    ("gsm8k", 1, None),  # generate_until, contexts truncated to max_length - max_gen_toks
    ("wikitext", None, None),  # loglikelihood_rolling (ckpt: validation_loss)
]
KIND_MAX_LENGTH = 64
KIND_MAX_GEN_TOKS = 16
# lm-eval task -> ckpt task where the names differ.
CKPT_TASK = {"wikitext": "validation_loss"}


def short_gsm8k_data(data_dir, short_dir):
    """A data directory whose GSM8K questions are cut to their last sentence."""
    for split in ("train", "test"):
        rows = read_jsonl(Path(data_dir) / f"openai/gsm8k/main/{split}.jsonl")
        for r in rows:
            r["question"] = re.split(r"(?<=[.!?]) ", r["question"])[-1]
        write_jsonl(Path(short_dir) / f"openai/gsm8k/main/{split}.jsonl", rows)
    return Path(short_dir)


def wikitext_config(tm, data_dir, tmp):
    """lm-eval's wikitext config on ckpt's validation texts (its `page` column); the
    detokenizer must leave them unchanged, or the two sides would score other texts."""
    cfg = copy.deepcopy(load_yaml(tm.task_index["wikitext"].yaml_path, resolve_func=True))
    rows = [{"page": r["text"]} for r in read_jsonl(Path(data_dir) / "local/validation.jsonl")]
    for r in rows:
        if cfg["doc_to_target"](r) != r["page"]:
            raise SystemExit(f"wikitext's detokenizer changes {r['page'][:60]!r}")
    path = Path(tmp) / "wikitext/pages.jsonl"
    write_jsonl(path, rows)
    splits = [cfg[k] for k in ("training_split", "validation_split", "test_split") if cfg.get(k)]
    cfg.update(dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": {s: str(path) for s in splits}})
    return cfg


def lm_eval_scores(lm, cfg, shots, limit):
    """lm-eval's per-doc responses and metrics, and its aggregates, for one task."""
    from lm_eval.evaluator import evaluate

    task = ConfigurableTask(config=cfg)
    task.set_config(key="num_fewshot", value=shots if shots is not None else task.get_config("num_fewshot") or 0)
    task.set_fewshot_seed(seed=1234)
    out = evaluate(lm=lm, task_dict={"tasks": {cfg["task"]: task}, "groups": {}, "group_map": {}},
                   limit=limit, log_samples=True, bootstrap_iters=100000)
    docs = {}
    for sample in out["samples"][cfg["task"]]:
        d = docs.setdefault(sample["doc_id"], {"metrics": {}})
        if task.OUTPUT_TYPE == "multiple_choice":
            d["lls"] = [r[0][0] for r in sample["resps"]]
        elif task.OUTPUT_TYPE == "loglikelihood_rolling":
            # Per doc lm-eval keeps (loglikelihood, words) and (loglikelihood, bytes);
            # ckpt keeps loglikelihood, tokens, words, bytes (its aggregates' inputs).
            d["lls"] = [r[0] for r in sample["resps"]]
            d["metrics"]["loglikelihood,none"] = sample["word_perplexity"][0]
            d["metrics"]["words,none"] = float(sample["word_perplexity"][1])
            d["metrics"]["bytes,none"] = float(sample["byte_perplexity"][1])
            continue
        else:
            d["generations"] = [r[0] for r in sample["resps"]]
        for m in sample["metrics"]:
            d["metrics"][f"{m},{sample['filter']}"] = float(sample[m])
    results = {k: v for k, v in out["results"][cfg["task"]].items() if "," in k and k != "alias"}
    return docs, results


def ckpt_scores(ckpt, model, task, shots, limit, data_dir, fewshot_dir, store, max_length=None, extra=()):
    """`ckpt eval`'s per-doc scores (from its store) and aggregates for one task."""
    import sqlite3

    args = ["eval", str(model), "--tasks", task, "--limit", str(limit), "--data-dir", str(data_dir),
            "--fewshot-dir", str(fewshot_dir), "--store", str(store), "--max-length", str(max_length or MAX_LENGTH),
            "--dtype", "f32", "--json", "-q", *extra]
    if shots is not None:
        args += ["--num-fewshot", str(shots)]
    report = json.loads(run_ckpt(ckpt, args))
    (checkpoint,) = report["checkpoints"]
    if checkpoint.get("error"):
        raise SystemExit(f"ckpt eval {model} {task}: {checkpoint['error']}")
    results = {}
    for m in checkpoint["metrics"]:
        if m["task"] == task:
            results[f"{m['metric']},{m['filter']}"] = m["value"]
            results[f"{m['metric']}_stderr,{m['filter']}"] = m["stderr"] if m["stderr"] is not None else "N/A"
    con = sqlite3.connect(store)
    rows = con.execute(
        "SELECT doc_id, score FROM samples WHERE fingerprint = ? AND task = ?",
        (checkpoint["fingerprint"], task),
    ).fetchall()
    con.close()
    docs = {}
    for doc_id, score in rows:
        score = json.loads(score)
        d = {"metrics": score["metrics"]}
        if score["detail"] is None:  # rolling: the log-likelihood is a metric
            d["lls"] = [score["metrics"]["loglikelihood,none"]]
            d["metrics"] = {k: v for k, v in score["metrics"].items() if k != "tokens,none"}
        else:
            d["lls" if isinstance((score["detail"] or [None])[0], float) else "generations"] = score["detail"]
        docs[doc_id] = d
    return docs, results


def score_case(ckpt, tm, lm, model, task, shots, limit, data_dir, fewshot_dir, tmp, max_length=None,
               max_gen_toks=None, extra=()):
    """Scores one case with both harnesses and compares; returns what the summary needs."""
    import time

    ckpt_task = CKPT_TASK.get(task, task)
    if task == "wikitext":
        cfg = wikitext_config(tm, data_dir, tmp)
    else:
        spec = ckpt_spec(ckpt, task)
        cfg = lm_eval_config(tm, task, spec, data_dir)
        if spec["fewshot_split"] == "file":
            use_synthetic_exemplars(cfg, read_jsonl(Path(fewshot_dir) / f"{exemplar_stem(task)}.jsonl"))
    if max_gen_toks is not None and cfg.get("output_type") == "generate_until":
        # lm-eval's `--gen_kwargs max_gen_toks=N`; ckpt's `--max-gen-toks N`.
        cfg["generation_kwargs"] = {**(cfg.get("generation_kwargs") or {}), "max_gen_toks": max_gen_toks}
        extra = [*extra, "--max-gen-toks", str(max_gen_toks)]
    t0 = time.perf_counter()
    theirs, their_results = lm_eval_scores(lm, cfg, shots, limit)
    t1 = time.perf_counter()
    store = Path(tmp) / f"{task}-{shots}-{model.name}-{len(extra)}-{'-'.join(extra)}-{Path(data_dir).name}.sqlite"
    ours, our_results = ckpt_scores(ckpt, model, ckpt_task, shots, limit, data_dir, fewshot_dir, store,
                                    max_length, extra)
    t2 = time.perf_counter()
    rolling = cfg.get("output_type") == "loglikelihood_rolling"
    # TruthfulQA mc2's score is a probability mass, a smooth function of the
    # log-likelihoods: it agrees as closely as they do, not bit for bit; so do a rolling
    # task's log-likelihood per doc and its perplexities (relative, they are exp(...)).
    continuous = "relative" if rolling else task == "truthfulqa_mc2"
    problems, task_worst, n_requests, bit_identical = [], 0.0, 0, True
    if sorted(ours) != sorted(theirs):
        problems.append(f"docs {sorted(ours)} vs {sorted(theirs)}")
    for doc_id in sorted(set(ours) & set(theirs)):
        a, b = ours[doc_id], theirs[doc_id]
        if "lls" in b:
            n_requests += len(b["lls"])
            diffs = [abs(x - y) for x, y in zip(a.get("lls", []), b["lls"])]
            if len(a.get("lls", [])) != len(b["lls"]) or max(diffs) > LL_TOLERANCE:
                problems.append(f"doc {doc_id}: log-likelihoods {a.get('lls')} vs {b['lls']}")
            task_worst = max([task_worst, *diffs])
        else:
            n_requests += len(b["generations"])
            if a.get("generations") != b["generations"]:
                problems.append(f"doc {doc_id}: generation {a.get('generations')!r} vs {b['generations']!r}")
        if not same_metrics(a["metrics"], b["metrics"], continuous):
            problems.append(f"doc {doc_id}: metrics {a['metrics']} vs {b['metrics']}")
        bit_identical &= a["metrics"] == b["metrics"]
    agg_rel = 0.0
    for key, value in their_results.items():
        mine = our_results.get(key)
        if not same_metrics({key: mine}, {key: value}, continuous, aggregate=True):
            problems.append(f"{key}: ckpt {mine!r} vs lm-eval {value!r}")
        bit_identical &= mine == value
        if isinstance(mine, float) and isinstance(value, float):
            agg_rel = max(agg_rel, abs(mine - value) / max(abs(value), 1e-300))
    return {"agg_rel": agg_rel, "task": task, "shots": shots, "problems": problems, "worst": task_worst, "requests": n_requests,
            "lm-eval": t1 - t0, "ckpt": t2 - t1, "theirs": theirs, "results": their_results,
            "bit_identical": bit_identical, "rolling": rolling}


def print_case(r, name):
    label = f"{r['task']} ({'default' if r['shots'] is None else r['shots']}-shot, {name})"
    label = label if len(label) <= 58 else label[:57] + "…"
    main = {k: v for k, v in r["results"].items() if "_stderr" not in k}
    shown = ", ".join(f"{k}={v:.4f}" for k, v in main.items())
    first = r["theirs"].get(0, {})
    agreement = "generations equal" if "generations" in first else f"max |dll| {r['worst']:.1e}"
    print(f"{'identical' if not r['problems'] else 'DIFFERENT':9}  {label:58} {agreement:18} {shown}"[:200])
    if "generations" in first:
        print(f"           doc 0 generates {first['generations'][0][:60]!r}")
    for p in r["problems"][:5]:
        print(f"           {p}")


def compare_scores(ckpt, tm, data_dir, fewshot_dir, limit, tmp):
    from lm_eval.models.huggingface import HFLM

    models = {}
    failures, worst, timing = 0, 0.0, {"lm-eval": 0.0, "ckpt": 0.0}
    for task, shots, model in SCORE_CASES:
        if model not in models:
            models[model] = HFLM(pretrained=str(model), backend="causal", device="cpu", dtype="float32",
                                 batch_size=1, max_length=MAX_LENGTH)
        r = score_case(ckpt, tm, models[model], model, task, shots, limit, data_dir, fewshot_dir, tmp)
        timing["lm-eval"] += r["lm-eval"]
        timing["ckpt"] += r["ckpt"]
        worst = max(worst, r["worst"])
        print_case(r, model.name)
        failures += bool(r["problems"])
    print(f"max |log-likelihood difference| {worst:.2e}; wall time: lm-eval {timing['lm-eval']:.0f} s, "
          f"ckpt eval {timing['ckpt']:.0f} s (whatever build --ckpt names; not a benchmark)")
    return failures


def compare_checkpoints(ckpt, tm, data_dir, fewshot_dir, limit, tmp, checkpoints, max_length, max_gen_toks,
                        add_bos_tokens, prefix_token_id):
    """KIND_CASES on each checkpoint at each add_bos_token setting, both sides at the same
    max_length / max_gen_toks / add_bos_token / prefix_token_id; returns (failures,
    summaries, one per checkpoint and setting)."""
    from lm_eval.models.huggingface import HFLM

    data = {None: Path(data_dir), "short": short_gsm8k_data(data_dir, Path(tmp) / "short")}
    failures, summaries = 0, []
    for model in checkpoints:
        model = Path(model).resolve()
        for add_bos_token in add_bos_tokens:
            bos = {"auto": None, "true": True, "false": False}[add_bos_token]
            extra = ["--add-bos-token", add_bos_token]
            if prefix_token_id is not None:
                extra += ["--prefix-token-id", str(prefix_token_id)]
            lm = HFLM(pretrained=str(model), backend="causal", device="cpu", dtype="float32", batch_size=1,
                      max_length=max_length, add_bos_token=bos, prefix_token_id=prefix_token_id)
            rows = []
            for task, shots, variant in KIND_CASES:
                r = score_case(ckpt, tm, lm, model, task, shots, limit, data[variant], fewshot_dir, tmp,
                               max_length, max_gen_toks, extra)
                r["variant"] = variant
                print_case(r, f"{model.name}, add_bos_token {add_bos_token}" + (f", {variant}" if variant else ""))
                failures += bool(r["problems"])
                rows.append(r)
            summaries.append({"checkpoint": model, "add_bos_token": add_bos_token, "cases": rows})
            del lm
    return failures, summaries


def kinds_summary(summaries, args, path):
    """A short text summary of a --checkpoints run (tests/fixtures/tokenizers/metrics_parity.txt)."""
    import platform

    import tokenizers
    import torch
    import transformers

    def short(p):
        p = Path(p)
        return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)

    lines = [
        "# ckpt eval vs lm-eval's HF backend, per tokenizer kind (scripts/eval_parity.py --tokenizer-kinds)",
        f"# lm_eval {lm_eval.__version__}, transformers {transformers.__version__}, tokenizers "
        f"{tokenizers.__version__}, torch {torch.__version__}, datasets {datasets.__version__}, "
        f"python {platform.python_version()}; ckpt {short(args.ckpt)}",
        f"# f32, CPU, batch size 1, max_length {args.max_length}, max_gen_toks {args.max_gen_toks}, "
        f"prefix_token_id {args.prefix_token_id}, {args.limit} docs per case, "
        f"synthetic data (ckpt synth --eval-tasks, seed {SYNTH['seed']}, entities {SYNTH['entities']})",
        f"# compared: every per-request log-likelihood (|d| <= {LL_TOLERANCE:g}), every generation (identical),",
        "# every per-doc metric and aggregate (identical; rolling: loglikelihood within the tolerance, words and",
        f"# bytes identical, perplexities / bits_per_byte within {LL_TOLERANCE:g} relative). wikitext = lm-eval's",
        "# wikitext task on ckpt's validation texts vs ckpt's validation_loss. gsm8k/0 on questions cut to their",
        "# last sentence (contexts fit, BOS kept); gsm8k/1 and arc_challenge/5 contexts are truncated on the left.",
        "# Times: wall seconds of each side, summed over the cases, not a benchmark.",
        "",
    ]
    tasks = ", ".join(f"{t}" + ("" if s is None else f"/{s}") + (f" ({v} questions)" if v else "")
                      for t, s, v in KIND_CASES)
    lines.append(f"tasks (task/shots): {tasks}")
    lines.append("")
    lines.append("requests: lm-eval's Instances (choices, options, generations, rolling docs); max|dll|: choices /")
    lines.append("rolling docs (a rolling doc's log-likelihood sums 94-196 tokens in 2-4 windows); metrics equal: per-doc")
    lines.append("metrics and aggregates of the choice and generation tasks bit for bit; wikitext rel: largest relative")
    lines.append("difference of its aggregates (word/byte perplexity, bits_per_byte).")
    lines.append("")
    lines.append(f"{'kind':21} {'add_bos':7} {'requests':>8} {'max|dll|':>17} {'metrics equal':13} {'wikitext rel':>12} "
                 f"{'lm-eval s':>9} {'ckpt s':>6}")
    for s in summaries:
        rows = s["cases"]
        worst = max([0.0] + [r["worst"] for r in rows if not r["rolling"]])
        worst_rolling = max([0.0] + [r["worst"] for r in rows if r["rolling"]])
        rel = max([0.0] + [r["agg_rel"] for r in rows if r["rolling"]])
        n = sum(r["requests"] for r in rows)
        ok = not any(r["problems"] for r in rows)
        exact = all(r["bit_identical"] for r in rows if not r["rolling"])
        equal = "NO" if not ok else "yes" if exact else "within tol"
        t_lm = sum(r["lm-eval"] for r in rows)
        t_ck = sum(r["ckpt"] for r in rows)
        lls = f"{worst:.1e} / {worst_rolling:.1e}"
        lines.append(f"{s['checkpoint'].name:21} {s['add_bos_token']:7} {n:8d} {lls:>17} {equal:13} {rel:12.1e} "
                     f"{t_lm:9.1f} {t_ck:6.1f}")
        for r in rows:
            if r["problems"]:
                lines.append(f"  DIFFERENT {r['task']}/{r['shots']}: {r['problems'][0][:300]}")
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {short(path)} ({path.stat().st_size} bytes)")


def same_metrics(ours, theirs, continuous, aggregate=False):
    """Identical values; for a continuous score, within the log-likelihood tolerance
    (an aggregate's mean and stderr too; "relative": relative to the value). Means of
    identical 0/1 items agree to the last bit but for summation order, hence 1e-12 for
    aggregates."""
    if set(ours) != set(theirs):
        return False
    for k, b in theirs.items():
        a = ours[k]
        if a == b:
            continue
        if not (isinstance(a, float) and isinstance(b, float)):
            return False
        tolerance = LL_TOLERANCE if continuous else (1e-12 if aggregate else 0.0)
        if continuous == "relative":
            tolerance *= max(1.0, abs(b))
        if abs(a - b) > tolerance:
            return False
    return True


def all_cases(ckpt):
    """Every built-in task with an lm-eval counterpart, at its own shot count and at
    each count a suite gives it."""
    cases, default = [], {}
    for row in json.loads(run_ckpt(ckpt, ["tasks", "--json"])):
        if row["dataset"] != "local":  # validation_loss: lm-eval has no such task
            cases.append((row["task"], None))
            default[row["task"]] = row["num_fewshot"]
    for suite in ("pt", "mt", "sft"):
        for row in json.loads(run_ckpt(ckpt, ["tasks", "--suite", suite, "--json"])):
            case = (row["task"], row["num_fewshot"])
            # A suite count equal to the default (TruthfulQA's preamble) is the default case.
            if row["task"] in default and row["num_fewshot"] != default[row["task"]] and case not in cases:
                cases.append(case)
    return cases


def exemplar_stem(task):
    return "truthfulqa" if task.startswith("truthfulqa") else task


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default=str(ROOT / "target/debug/ckpt"))
    ap.add_argument("--limit", type=int, default=SYNTH["eval_docs"], help="docs compared per case")
    ap.add_argument("--real-exemplars", action="store_true", help="also check with lm-eval's own exemplars")
    ap.add_argument("--no-fixture", action="store_true", help="do not rewrite the fixture")
    ap.add_argument("--scores", action="store_true", help="also compare log-likelihoods and metrics")
    ap.add_argument("--all", action="store_true",
                    help="compare the prompts of every built-in task (at its default and its suites' shot counts)")
    ap.add_argument("--checkpoints", nargs="+", metavar="DIR",
                    help="only compare scores, on these checkpoints, for one case per kind of task "
                         "(multiple choice, WinoGrande, generate_until, rolling) at --max-length")
    ap.add_argument("--tokenizer-kinds", action="store_true",
                    help="--checkpoints on the four tokenizer-kind fixtures (tests/fixtures/tokenizers); "
                         "writes tests/fixtures/tokenizers/metrics_parity.txt unless --no-fixture")
    ap.add_argument("--max-length", type=int, default=KIND_MAX_LENGTH, help="with --checkpoints (both sides)")
    ap.add_argument("--max-gen-toks", type=int, default=KIND_MAX_GEN_TOKS, help="with --checkpoints (both sides)")
    ap.add_argument("--add-bos-token", choices=["auto", "true", "false"], nargs="+",
                    help="with --checkpoints: lm-eval's add_bos_token (auto: unset) and ckpt's flag, each "
                         "setting in turn (default: auto; with --tokenizer-kinds: auto true false)")
    ap.add_argument("--prefix-token-id", type=int, help="with --checkpoints (both sides)")
    ap.add_argument("--summary", type=Path, help="with --checkpoints: write the summary here")
    args = ap.parse_args()
    datasets.disable_progress_bars()
    print(f"lm_eval {lm_eval.__version__}, datasets {datasets.__version__}")
    tm = TaskManager()
    if args.tokenizer_kinds:
        args.checkpoints = [str(ROOT / "tests/fixtures/tokenizers" / k) for k in TOKENIZER_KINDS]
        if args.summary is None and not args.no_fixture:
            args.summary = ROOT / "tests/fixtures/tokenizers/metrics_parity.txt"
    if args.add_bos_token is None:
        args.add_bos_token = ["auto", "true", "false"] if args.tokenizer_kinds else ["auto"]
    if args.checkpoints:
        with tempfile.TemporaryDirectory() as tmp:
            data_dir = Path(tmp) / "data"
            run_ckpt(args.ckpt, [
                "synth", "--eval-tasks", str(data_dir), "--seed", str(SYNTH["seed"]),
                "--entities", str(SYNTH["entities"]), "--eval-docs", str(SYNTH["eval_docs"]), "-q",
            ])
            print(f"scores (f32, CPU, max length {args.max_length}, max_gen_toks {args.max_gen_toks}, "
                  f"add_bos_token {' / '.join(args.add_bos_token)}), lm-eval's HF backend vs ckpt eval:")
            failures, summaries = compare_checkpoints(
                args.ckpt, tm, data_dir, data_dir / "fewshot", args.limit, tmp, args.checkpoints,
                args.max_length, args.max_gen_toks, args.add_bos_token, args.prefix_token_id)
        if args.summary:
            kinds_summary(summaries, args, args.summary)
        if failures:
            sys.exit(f"{failures} case(s) differ")
        return
    if args.all:
        CASES[:] = all_cases(args.ckpt)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        run_ckpt(args.ckpt, [
            "synth", "--eval-tasks", str(data_dir), "--seed", str(SYNTH["seed"]),
            "--entities", str(SYNTH["entities"]), "--eval-docs", str(SYNTH["eval_docs"]), "-q",
        ])
        print("synthetic exemplars:")
        results = compare(args.ckpt, tm, data_dir, data_dir / "fewshot", args.limit, real=False)
        failed = [r for r in results if r[3]]
        if args.real_exemplars:
            print("lm-eval's own exemplars (GSM8K-CoT, BBH, TruthfulQA's preamble):")
            real_dir = Path(tmp) / "real-fewshot"
            real = [c for c in CASES if ckpt_spec(args.ckpt, c[0])["fewshot_split"] == "file"]
            saved = CASES[:]
            CASES[:] = real
            failed += [r for r in compare(args.ckpt, tm, data_dir, real_dir, args.limit, real=True) if r[3]]
            CASES[:] = saved
        if args.scores:
            print(f"scores (f32, CPU, max length {MAX_LENGTH}), lm-eval's HF backend vs ckpt eval:")
            if compare_scores(args.ckpt, tm, data_dir, data_dir / "fewshot", args.limit, tmp):
                failed.append("scores")
    if failed:
        sys.exit(f"{len(failed)} case(s) differ")
    if not args.no_fixture and not args.all:
        fixture = {
            "about": "lm-evaluation-harness 0.4.13's requests on ckpt's synthetic data "
            "(scripts/eval_parity.py); tests/eval_tasks.rs checks `ckpt tasks --show` against them",
            "lm_eval": lm_eval.__version__,
            "synth": SYNTH,
            "cases": [
                {"task": t, "num_fewshot": s, "limit": FIXTURE_DOCS, "lines": lines[:FIXTURE_DOCS]}
                for t, s, lines, _ in results
            ],
        }
        # One case per line: small, and a diff shows which case changed.
        cases = ",\n".join(json.dumps(c, ensure_ascii=False) for c in fixture.pop("cases"))
        head = json.dumps(fixture, ensure_ascii=False)[:-1]
        FIXTURE.write_text(f'{head}, "cases": [\n{cases}\n]}}\n')
        print(f"wrote {FIXTURE.relative_to(ROOT)} ({FIXTURE.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
