#!/usr/bin/env python3
"""Helpers of scripts/bench_eval_whole.sh (whole-process `ckpt eval` vs `lm_eval --model hf`).

  model DIR SYNTH     random-weight Llama at SmolLM2-135M's shape (f32, tied, seed 0) with a
                      byte-level BPE trained on SYNTH/pretrain.jsonl, in HF format
  tasks OUT DATA T..  lm-eval task YAMLs `<task>_local` into OUT: each includes the task's own
                      YAML (prompts, process_docs, metrics unchanged) and reads DATA's jsonl files
  summary CKPT_JSON CKPT_OUT LM_OUT CKPT_S LM_S LIMIT TASKS
                      the JSON summary: wall seconds, requests, per-task acc of both tools,
                      per-request log-likelihood and per-doc acc comparison, and the work
                      (the tokenizer's size, request tokens, tree tokens)
"""
import json
import pathlib
import sys

# lm-eval task -> its built-in YAML (under lm_eval/tasks) and ckpt's data dir (DATA/<path>/<name>)
TASKS = {
    "arc_easy": ("arc/arc_easy.yaml", "allenai/ai2_arc/ARC-Easy"),
    "arc_challenge": ("arc/arc_challenge.yaml", "allenai/ai2_arc/ARC-Challenge"),
    "boolq": ("super_glue/boolq/default.yaml", "aps/super_glue/boolq"),
    "hellaswag": ("hellaswag/hellaswag.yaml", "Rowan/hellaswag"),
    "openbookqa": ("openbookqa/openbookqa.yaml", "allenai/openbookqa/main"),
    "piqa": ("piqa/piqa.yaml", "baber/piqa"),
    "winogrande": ("winogrande/default.yaml", "allenai/winogrande/winogrande_xl"),
}


def model(out, synth):
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM

    out = pathlib.Path(out)
    eot = "<|endoftext|>"  # id 0: BOS = EOS, as in SmolLM2 and ckpt's own BPE
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=8192, special_tokens=[eot],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    lines = pathlib.Path(synth, "pretrain.jsonl").read_text().splitlines()
    tok.train_from_iterator((json.loads(l)["text"] for l in lines), trainer)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                      num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                      max_position_embeddings=2048, rms_norm_eps=1e-5, rope_theta=100000.0,
                      tie_word_embeddings=True, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).to(torch.float32).save_pretrained(out, safe_serialization=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": eot, "eos_token": eot, "tokenizer_class": "PreTrainedTokenizerFast"}))


def tasks(out, data, names):
    import lm_eval

    root = pathlib.Path(lm_eval.__file__).parent / "tasks"
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        yaml, sub = TASKS[name]
        # Every split ckpt synth wrote (lm-eval may touch train/validation even at 0-shot).
        files = {p.stem: str(p) for p in sorted(pathlib.Path(data, sub).glob("*.jsonl"))}
        cfg = {"include": str(root / yaml), "task": f"{name}_local", "tag": [],
               "dataset_path": "json", "dataset_name": None,
               "dataset_kwargs": {"data_files": files}}
        (out / f"{name}_local.yaml").write_text(json.dumps(cfg, indent=1))  # JSON is YAML


def summary(ckpt_json, ckpt_out, lm_out, ckpt_times, lm_times, limit, names):
    ckpt = json.loads(pathlib.Path(ckpt_json).read_text())["checkpoints"][0]
    ours = {(m["task"], m["metric"]): m for m in ckpt["metrics"]}
    theirs = json.loads(next(pathlib.Path(lm_out).rglob("results_*.json")).read_text())
    rows, worst, worst_ll, doc_diffs, requests = {}, 0.0, 0.0, [], 0
    unique = set()  # ckpt computes a repeated (context, continuation) once
    for name in names:
        res = theirs["results"][f"{name}_local"]
        row = {"docs_ckpt": ours[(name, "acc")]["n"],
               "docs_lm_eval": theirs["n-samples"][f"{name}_local"]["effective"]}
        for metric in ("acc", "acc_norm"):  # acc_norm too where the task has it
            if f"{metric},none" in res:
                a, b = ours[(name, metric)]["value"], res[f"{metric},none"]
                row[f"ckpt_{metric}"], row[f"lm_eval_{metric}"] = a, b
                worst = max(worst, abs(a - b))
        rows[name] = row
        # Per doc: the same doc ids, log-likelihoods of every choice, and acc.
        mine = samples(pathlib.Path(ckpt_out).glob(f"samples_{name}__*.jsonl"))
        other = samples(pathlib.Path(lm_out).rglob(f"samples_{name}_local_*.jsonl"))
        if sorted(mine) != sorted(other):
            doc_diffs.append(f"{name}: doc ids differ")
        for d in set(mine) & set(other):
            lls = [float(r[0][0]) for r in other[d]["resps"]]
            unique.update((a["arg_0"], a["arg_1"]) for a in other[d]["arguments"].values())
            requests += len(lls)
            worst_ll = max([worst_ll] + [abs(x - y) for x, y in zip(mine[d]["responses"], lls)])
            if mine[d]["metrics"]["acc,none"] != other[d]["acc"]:
                doc_diffs.append(f"{name}/{d}")
    if len(unique) != ckpt["computed_requests"]:
        doc_diffs.append(f"distinct requests: lm-eval {len(unique)}, ckpt {ckpt['computed_requests']}")
    work = work_size(unique)
    ct = [float(t) for t in ckpt_times.split(",")]
    lt = [float(t) for t in lm_times.split(",")]
    out = {"limit": int(limit), "tasks": names, "requests": requests,
           "ckpt_wall_s": ct, "lm_eval_wall_s": lt, "speedup_best": min(lt) / min(ct),
           "max_abs_acc_diff": worst, "max_abs_loglik_diff": worst_ll,
           "mismatches": doc_diffs, "work": work, "per_task": rows}
    print(json.dumps(out, indent=1))
    print("\n| whole process | wall s (best) | requests/s |\n|---|---:|---:|")
    for tool, t in (("ckpt eval", ct), ("lm_eval --model hf, batch 16", lt)):
        print(f"| {tool} | {min(t):.1f} | {requests / min(t):.1f} |")
    print(f"\n{requests} requests, {limit} docs x {len(names)} tasks; speedup "
          f"{min(lt) / min(ct):.2f}x; max |acc diff| {worst:g}; "
          f"max |loglik diff| {worst_ll:.2g}; mismatched docs: {len(doc_diffs)}; "
          f"tokenizer of {work['vocab']} tokens: {work['request_tokens']} request tokens, "
          f"{work['tree_tokens']} tree tokens")
    return worst == 0.0 and not doc_diffs


def work_size(requests):
    """How much the two tools compute, so runs with different bench tokenizers compare:
    the tokenizer's vocabulary, the tokens of every (context, continuation) request as
    lm-eval feeds them (each context again for every choice), and the tokens of one tree
    per distinct context (the context once, then each continuation): what ckpt feeds.
    Counted with the checkpoint's tokenizer, without special tokens."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file("model/tokenizer.json")
    count = lambda text: len(tok.encode(text, add_special_tokens=False).ids)
    flat = sum(count(c + x) for c, x in requests)
    contexts = {c for c, _ in requests}
    tree = sum(map(count, contexts)) + sum(count(c + x) - count(c) for c, x in requests)
    return {"vocab": tok.get_vocab_size(), "request_tokens": flat, "tree_tokens": tree}


def samples(files):
    """Per-sample log lines by doc id (ckpt's --output or lm-eval's --log_samples)."""
    return {d["doc_id"]: d for f in files for d in map(json.loads, f.read_text().splitlines())}


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "model":
        model(*args)
    elif cmd == "tasks":
        tasks(args[0], args[1], args[2].split(","))
    elif cmd == "summary":
        sys.exit(0 if summary(*args[:6], args[6].split(",")) else 1)
