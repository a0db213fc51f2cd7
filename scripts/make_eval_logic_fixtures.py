#!/usr/bin/env python3
"""Reference values for ckpt's pure evaluation logic (src/eval/{pystr,pyregex,filters,
metrics,drop,preprocess}.rs), computed by Python and lm-evaluation-harness 0.4.13's own
functions on synthetic inputs only (no benchmark items).

Writes tests/fixtures/eval/logic.json with sections:
* `pystr`: str.capitalize (every character whose title case differs from its upper
  case, and edge cases), str.strip / split, float(), repr(float), round(x, n);
* `regex`: re.findall / re.sub of lm-eval's task patterns and Python-specific syntax;
* `filters`: lm-eval's RegexFilter + TakeFirst pipelines (gsm8k, gsm8k-cot, bbh);
* `exact_match`: lm-eval's exact_match_hf_evaluate with the tasks' options;
* `multiple_choice`: ConfigurableTask.process_results (acc, acc_norm, acc_bytes,
  acc_mutual_info, exact_match), TruthfulQA mc2, AGIEval mcqa;
* `aggregation`: mean, stderr, bootstrap stderr, group pooling, perplexities;
* `drop`: get_answers, process_docs, get_metrics and process_results;
* `preprocess`: HellaSwag process_docs, WinoGrande's functions, and the requests
  lm-eval builds (2-shot) for synthetic HellaSwag and WinoGrande datasets.

Floats are stored as the decimal string of their IEEE-754 bits, so comparisons are
exact (NaN and infinities included).

Run (from the repository root, with lm-eval 0.4.13 in the venv):
    /work/pyref/bin/python scripts/make_eval_logic_fixtures.py
"""

import json
import logging
import os
import re
import struct
import sys
from pathlib import Path

os.environ["DISABLE_MULTIPROC"] = "1"
OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "eval" / "logic.json"


def b(x):
    """A float as the decimal string of its bits."""
    return str(struct.unpack("<Q", struct.pack("<d", float(x)))[0])


# ---------------------------------------------------------------- pystr
def pystr_section():
    title_special = [chr(i) for i in range(sys.maxunicode + 1) if chr(i).title() != chr(i).upper()]
    cap_inputs = [c + "ABC dEF" for c in title_special] + [
        "", "ǆ", "ß", "ﬁ", "ﬁnd", "1ABC", "123", "AΣ", "ΑΣ Β", "ΣΑΣ", "ΣΑΣ.", "aΣb",
        "İSTANBUL", "ǅX", " lead", "éCOLE", "აბგ", "ᾳX", "ıI", "then HE WENT", "ŉ",
        "ǰx", "ΐ", "\u0345x", "Ⓐⓑ", "\u00b5M", "ＡＢＣ", "Hello World", "x'S",
    ]
    strings = ["  a b  ", "\x1c\x1da\x1e\x1f", "\u3000x\u00a0y\u2028", "a\u200bb", "\x85a\x85",
               "\t\n\x0b\x0c\r z \r\n", "", "   ", "a  b\tc\n\nd"]
    floats = ["1", "1.0", "-2.5", "+3", "1_000", "1__0", "_1", "1_", "1e5", "1E-3", "1e",
              "e5", ".5", "5.", ".", "inf", "-Infinity", "nan", "NaN", "+nan", "infinit",
              "١٢٣", "１２", " 7 ", "\u30007\u3000", "7\x1c", "1,000", "0x10", "1 2", "12abc",
              "3.14159", "1e400", "-0", "0.1", "00012", "1_0.0_1", "1e1_0", "²", "½", "abc",
              "-", "+", "1.5e+300", "9007199254740993"]
    reprs = [0.0, -0.0, 1.0, 100.0, 0.1, 1e16, 1e15, 9999999999999998.0, 1e-4, 1e-5,
             1.5e-5, 123.456, 1.5e300, 5e-324, 1.7976931348623157e308, 2.0 / 3.0,
             1000.0, 12345678.9, float("inf"), float("-inf"), float("nan"), 0.3]
    rounds = [(0.125, 2), (0.375, 2), (2.675, 2), (0.5, 0), (1.5, 0), (2.5, 0),
              (2 / 3, 2), (0.83333, 2), (0.005, 2), (0.015, 2), (0.025, 2), (1.0, 2),
              (0.6666666666666666, 2), (0.445, 2), (123.4567, 3)]
    return {
        "capitalize": [[s, s.capitalize()] for s in cap_inputs],
        "strip": [[s, s.strip(), s.rstrip(), s.split()] for s in strings],
        "lower": [[s, s.lower()] for s in ["ABC", "İ", "ΑΣ", "ΑΣ Β", "ẞ", "Ǆ"]],
        "parse_float": [[s, b(float(s)) if _is_float(s) else None] for s in floats],
        "float_repr": [[b(x), repr(x)] for x in reprs],
        "round": [[b(x), n, b(round(x, n))] for x, n in rounds],
    }


def _is_float(s):
    try:
        float(s)
        return True
    except ValueError:
        return False


# ---------------------------------------------------------------- regex
GSM_STRICT = r"#### (\-?[0-9\.\,]+)"
GSM_FLEX = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"
GSM_COT_STRICT = r"The answer is (\-?[0-9\.\,]+)."
BBH = r"(?<=the answer is )(.*)(?=.)"
TEXTS = [
    "", "#### 42", "so 3 + 4 = 7.\n#### 7\n", "#### -1,234.50 and #### 8",
    "The answer is 12. The answer is 13.", "The answer is $5", "costs $12.50 or 3 coins",
    "So the answer is (B).", "so the answer is valid.\nthe answer is x", "the answer is ",
    "the answer is A", "1.2.3,4", "a 7 and $1,000.", "x.\n", "12.", "Step 1.\n#### 1,000.\n",
    "the cat and an apple, a thé", "A man [title] cuts [header] wood", "xxx", "12a",
    "é\u0301x_1 ½ ٣", "tab\tand\x1cfs", "[]a]", "multi\nline\nend.",
]
PATTERNS = [
    GSM_STRICT, GSM_FLEX, GSM_COT_STRICT, BBH, ",", r"\$", "(?s).*#### ", r"\.$",
    r"\[.*?\]", r"\b(a|an|the)\b", r"\d*", "x*", r"\s+", r"\w+", r"\W", r"\bthe\b", r"\B",
    "a{", "x{,2}", "x{2}", "[]a]", "(a)|(b)", "(?:x)?", "^.", ".$", r"\Z", "(?m)^\\w+$",
    r"[\w.]+", r"[^\s]+", r"[\S]+", r"\S+", r"(\d)(\d)?", r"\ ", r"\,\-",
]


def regex_section():
    out = []
    for p in PATTERNS:
        rx = re.compile(p)
        cases = []
        for t in TEXTS:
            found = rx.findall(t)
            found = [list(f) if isinstance(f, tuple) else f for f in found]
            cases.append([t, found, rx.sub("<>", t)])
        out.append({"pattern": p, "cases": cases})
    return out


# ---------------------------------------------------------------- filters
def filters_section():
    from lm_eval.filters import build_filter_ensemble

    pipelines = {
        "gsm8k_strict": [{"function": "regex", "regex_pattern": GSM_STRICT}, {"function": "take_first"}],
        "gsm8k_flexible": [{"function": "regex", "group_select": -1, "regex_pattern": GSM_FLEX},
                           {"function": "take_first"}],
        "gsm8k_cot_strict": [{"function": "regex", "regex_pattern": GSM_COT_STRICT}, {"function": "take_first"}],
        "bbh_get_answer": [{"function": "regex", "regex_pattern": BBH}, {"function": "take_first"}],
        "lower_strip": [{"function": "lowercase"}, {"function": "remove_whitespace"}, {"function": "take_first"}],
        "fallback": [{"function": "regex", "regex_pattern": r"(x)|(y)?z", "fallback": "none"},
                     {"function": "take_first"}],
    }
    responses = [[t, "second"] for t in TEXTS] + [["  MiXed CASE \n"], ["z"], ["xz yz"]]
    out = []
    for name, steps in pipelines.items():
        comps = [[s["function"], {k: v for k, v in s.items() if k != "function"}] for s in steps]
        ens = build_filter_ensemble(name, comps)
        resps = [list(r) for r in responses]
        for f in ens.filters:
            resps = list(f().apply(resps, [{}] * len(resps)))
        out.append({"name": name, "steps": steps,
                    "cases": [[r, res] for r, res in zip(responses, resps)]})
    return out


# ---------------------------------------------------------------- exact match
def exact_match_section():
    from lm_eval.api.metrics import exact_match_hf_evaluate

    options = [
        {},
        {"ignore_case": True, "ignore_punctuation": False,
         "regexes_to_ignore": [",", "\\$", "(?s).*#### ", "\\.$"]},
        {"ignore_punctuation": True},
        {"ignore_numbers": True, "ignore_case": True},
        {"regexes_to_ignore": ["\\s+"]},
    ]
    pairs = [
        ["42", "Step.\n#### 42"], ["$1,234.", "So\n#### 1234"], ["1234.5", "#### 1234"],
        ["(A)", "(A)"], ["(a)", "(A)"], ["A!", "a"], ["x1y2", "XY"], ["a\x00", "a"],
        ["a.\n", "a"], ["İ", "i̇"], ["Hello, World", "hello world"], ["", ""], [" 7", "7"],
    ]
    out = []
    for opt in options:
        cases = []
        for pred, ref in pairs:
            score = exact_match_hf_evaluate(predictions=[pred], references=[ref], **opt)["exact_match"]
            cases.append([pred, ref, b(score)])
        out.append({"options": opt, "cases": cases})
    return out


# ---------------------------------------------------------------- multiple choice
def mc_task(metrics, target="{{label}}"):
    import datasets
    from lm_eval.api.task import ConfigurableTask

    dd = datasets.DatasetDict({"test": datasets.Dataset.from_list(
        [{"q": "q", "choices": ["a", "bb", "ccc"], "label": 0, "labels": [0, 2], "text_label": "bb"}])})
    cfg = {"task": "synthetic_mc", "custom_dataset": lambda **kw: dd, "test_split": "test",
           "output_type": "multiple_choice", "doc_to_text": "{{q}}", "doc_to_choice": "{{choices}}",
           "doc_to_target": target, "metric_list": [{"metric": m} for m in metrics]}
    return ConfigurableTask(config=cfg)


def multiple_choice_section():
    from lm_eval.tasks.agieval.utils import process_results_mcqa
    from lm_eval.tasks.truthfulqa.utils import process_results_mc2

    nan, inf = float("nan"), float("inf")
    cases = [
        # choices, lls, unconditional lls, greedy flags, gold (index, list or text)
        (["a", "bb", "ccc"], [-3.0, -4.0, -5.0], [-1.0, -3.0, -1.0], [True, False, False], 0),
        (["a", "bb", "ccc"], [-3.0, -4.0, -5.0], [-1.0, -3.0, -1.0], [False, True, False], 1),
        (["a", "bb", "ccc"], [-2.0, -2.0, -9.0], [-1.0, -1.0, -1.0], [False, False, False], 1),
        (["x", "é", "€"], [-3.0, -3.1, -3.2], [0.0, 0.0, 0.0], [False, False, True], 2),
        ([" a", "bb ", "c"], [-1.0, nan, -0.5], [-1.0, -1.0, -1.0], [True, True, True], 2),
        (["", "b"], [-1.0, -2.0], [-1.0, -2.0], [False, False], 1),
        (["a", "bb", "ccc"], [-3.0, -4.0, -5.0], [-1.0, -3.0, -1.0], [True, False, False], 7),
        (["a", "bb", "ccc"], [-3.0, -1.0, -5.0], [-1.0, -3.0, -1.0], [False, True, False], [0, 1]),
        (["a", "bb", "ccc"], [-3.0, -1.0, -5.0], [-1.0, -3.0, -1.0], [False, True, False], "bb"),
        (["a", "bb", "ccc"], [-3.0, -1.0, -5.0], [-1.0, -3.0, -1.0], [False, True, False], "zz"),
        (["a", "bb"], [-inf, -inf], [0.0, 0.0], [False, False], 1),
    ]
    out = []
    for choices, lls, unc, greedy, gold in cases:
        metrics = ["acc", "acc_norm", "acc_bytes", "acc_mutual_info", "exact_match"]
        if isinstance(gold, list):
            # lm-eval 0.4.13 crashes computing acc_mutual_info with several golds.
            metrics.remove("acc_mutual_info")
        target = "{{labels}}" if isinstance(gold, list) else "{{text_label}}" if isinstance(gold, str) else "{{label}}"
        task = mc_task(metrics, target)
        task.multiple_target = len(gold) if isinstance(gold, list) else 0
        doc = {"q": "q", "choices": choices, "label": gold if isinstance(gold, int) else 0,
               "labels": gold if isinstance(gold, list) else [0],
               "text_label": gold if isinstance(gold, str) else ""}
        results = [(ll, g) for ll, g in zip(lls, greedy)]
        if "acc_mutual_info" in metrics:
            results += [(u, False) for u in unc]
        res = task.process_results(doc, results)
        out.append({"choices": choices, "lls": [b(x) for x in lls], "unconditional": [b(x) for x in unc],
                    "greedy": greedy, "gold": gold, "scores": {k: b(v) for k, v in res.items()}})
    mc2 = []
    for lls, labels in [([-1.0, -2.0, -0.5, -3.0], [1, 1, 0, 0]),
                        ([-0.1, -5.0, -2.0], [0, 1, 1]),
                        ([-1000.0, -1001.0], [1, 0]),
                        ([-(i % 7) - 0.37 * i for i in range(23)], [1] * 9 + [0] * 14),
                        ([-2.5, -1.5, -0.5, -3.5, -4.5, -0.25, -7.0, -1.0, -2.0, -3.0, -9.0],
                         [1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0])]:
        doc = {"mc2_targets": {"labels": labels}}
        val = process_results_mc2(doc, [(ll, False) for ll in lls])["acc"]
        mc2.append({"lls": [b(x) for x in lls], "labels": labels, "mc2": b(val)})
    mcqa = []
    for lls, choices, gold in [([-3.0, -1.0, -5.0], ["(A)a", "(B)bbbbbb", "(C)c"], [1]),
                               ([-3.0, -6.0, -5.0], ["(A)aaaaaaaaa", "(B)b", "(C)c"], [0, 2]),
                               ([-3.0, -3.0], ["(A)x", "(B)x"], [1])]:
        res = process_results_mcqa({"gold": gold, "choices": choices}, [(ll, False) for ll in lls])
        mcqa.append({"lls": [b(x) for x in lls], "choices": choices, "gold": gold,
                     "acc": b(res["acc"]), "acc_norm": b(res["acc_norm"])})
    return {"cases": out, "mc2": mc2, "agieval_mcqa": mcqa}


# ---------------------------------------------------------------- aggregation
def aggregation_section():
    import random as pyrandom
    from lm_eval.api import metrics as M
    from lm_eval.api.task import Task

    r = pyrandom.Random(5)
    lists = {
        "binary": [float(r.random() < 0.6) for _ in range(37)],
        "reals": [r.random() * 3 - 1 for _ in range(25)],
        "lls": [-r.random() * 10 for _ in range(19)],
        "with_nan": [1.0, float("nan"), 0.5, 0.25, float("nan"), 2.0],
        "two": [0.0, 1.0],
    }
    out = {}
    for name, xs in lists.items():
        entry = {"xs": [b(x) for x in xs], "mean": b(M.mean(xs)), "nanmean": b(M.nanmean(xs))}
        if "nan" not in name:  # sorted() and sums are meaningless with NaNs
            entry["median"] = b(M.median(xs))
            entry["sample_stddev"] = b(M.sample_stddev(xs))
            entry["mean_stderr"] = b(M.mean_stderr(xs))
            entry["perplexity"] = b(M.perplexity(xs))
        out[name] = entry
    boot = []
    for name, agg, iters in [("reals", M.median, 2000), ("lls", M.perplexity, 1500),
                             ("binary", M.median, 1000), ("with_nan", M.nanmean, 1000)]:
        boot.append({"list": name, "aggregation": agg.__name__, "iters": iters,
                     "stderr": b(M.bootstrap_stderr(agg, lists[name], iters))})
    pairs = [(-r.random() * 50, float(r.randint(1, 40))) for _ in range(9)]
    groups = {"metrics": [0.5, 0.25, 0.8125, 0.3], "sizes": [100, 37, 12, 250],
              "stderrs": [0.05, 0.07, 0.11, 0.029]}
    groups["weighted"] = b(M.aggregate_subtask_metrics(groups["metrics"], groups["sizes"], True))
    groups["unweighted"] = b(M.aggregate_subtask_metrics(groups["metrics"], groups["sizes"], False))
    groups["pooled_stderr"] = b(M.pooled_sample_stderr(groups["stderrs"], groups["sizes"]))
    groups["unweighted_stderr"] = b(M.unweighted_mean_stderr(groups["stderrs"]))
    words = ["a b", " a  b ", "", "one\ttwo\nthree", "x\x1cy", "\u3000lead"]
    return {
        "lists": out, "bootstrap": boot,
        "weighted": {"pairs": [[b(a), b(c)] for a, c in pairs],
                     "weighted_perplexity": b(M.weighted_perplexity(pairs)),
                     "bits_per_byte": b(M.bits_per_byte(pairs))},
        "groups": groups,
        "count_words": [[w, Task.count_words(w), Task.count_bytes(w)] for w in words],
    }


# ---------------------------------------------------------------- drop
def drop_answer(number="", spans=(), day="", month="", year=""):
    return {"number": number, "date": {"day": day, "month": month, "year": year}, "spans": list(spans)}


def drop_section():
    import datasets
    from lm_eval.tasks.drop import utils as U

    pairs = [
        (["Eagles"], ["the Eagles"]), (["7"], ["7"]), (["7 yards"], ["7"]), (["seven"], ["7"]),
        (["12 yards"], ["13 yards"]), (["1,000 yards"], ["1000 yards"]), (["1_000"], ["1000"]),
        (["Bob", "Alice Smith"], ["Alice", "Bob"]), (["a"], ["an"]), ([""], [""]), ([""], ["x"]),
        (["forty-two"], ["forty two"]), (["The  end!"], ["end"]), (["3.50"], ["3.5"]),
        (["Jan 1 2000"], ["1 January 2000"]), (["x y z"], ["x", "y", "z"]),
        (["A", "B", "C"], ["c", "b"]), (["Ünïcode café"], ["ünïcode CAFÉ"]),
        (["1e3 points"], ["1000 points"]), (["-5"], ["- 5"]), (["inf"], ["infinity"]),
        (["nan"], ["nan"]), (["٣ goals"], ["3 goals"]), (["the a an"], [""]),
        (["yes", "yes"], ["yes"]), (["New York", "Boston", "LA"], ["Boston", "New York City"]),
        (["half"], ["½"]), (["x\ty"], ["x y"]),
    ]
    metrics = []
    for pred, gold in pairs:
        em, f1 = U.get_metrics(pred, gold)
        metrics.append({"pred": pred, "gold": gold, "em": b(em), "f1": b(f1),
                        "normalized": [U._normalize(s) for s in pred + gold]})
    docs = [
        {"query_id": "q1", "passage": "P.", "question": "Q?",
         "answer": drop_answer(spans=["the Eagles"]),
         "validated_answers": {"number": ["", "3"], "date": [drop_answer()["date"]] * 2,
                               "spans": [["Eagles"], []]}},
        {"query_id": "q2", "passage": "P.", "question": "Q?",
         "answer": drop_answer(day="1", month="May", year="2000"),
         "validated_answers": {"number": [""], "date": [{"day": "", "month": "May", "year": "2000"}],
                               "spans": [[]]}},
        {"query_id": "q3", "passage": "P.", "question": "Q?", "answer": drop_answer(number="12"),
         "validated_answers": {"number": ["12"], "date": [drop_answer()["date"]], "spans": [[]]}},
        {"query_id": "q4", "passage": "P.", "question": "Q?", "answer": drop_answer(),
         "validated_answers": {"number": ["4"], "date": [drop_answer()["date"]], "spans": [[]]}},
        {"query_id": "q5", "passage": "P.", "question": "Q?",
         "answer": drop_answer(spans=["Alice", "Bob"]),
         "validated_answers": {"number": [], "date": [], "spans": []}},
    ]
    predictions = ["Eagles", "3", "May 2000", "12", "twelve", "4", "", "Alice and Bob", "Bob"]
    out_docs = []
    for d in docs:
        answers = U.get_answers(d)
        results = {p: U.process_results({"answers": answers}, [p]) for p in predictions}
        out_docs.append({"doc": d, "answers": [list(a) for a in answers],
                         "results": {p: [b(r["em"]), b(r["f1"])] for p, r in results.items()}})
    mapped = U.process_docs(datasets.Dataset.from_list(docs))
    return {"metrics": metrics, "docs": out_docs, "process_docs": [dict(x) for x in mapped]}


# ---------------------------------------------------------------- preprocess
def hellaswag_docs():
    rows = [
        ("Cooking", "A man stirs a pot.", "then he ADDS salt.", ["adds salt [title] Done", " stirs  again ", "[step] eats", "walks away."]),
        ("Personal Care and Style", "  [header] How to braid hair ", "ǆOES it.", ["ß first", "ﬁne [substeps]  x", "a   b", "c"]),
        ("Sports", "Players run.", "1st they", ["run [title] fast", "stop", "x [y] z [w]", "ok"]),
        ("Music", "She plays the ÉPINETTE.", "éCOLE chords", ["AΣ", "plays on", "stops", "[x]"]),
        ("Home", "A dog   barks.", "", ["a", "b", "c", "d"]),
        ("Ünïcode", "Ctx with [title] title.", "ΣΑΣ then", ["e1", "e2", "e3", "e4"]),
        ("Games", "Kids play.", "they  [title] run", ["one", "two", "three", "four"]),
    ]
    return [{"ind": i, "activity_label": a, "ctx_a": ca, "ctx_b": cb, "ctx": ca + " " + cb,
             "endings": e, "source_id": f"s{i}", "split": "val", "split_type": "indomain",
             "label": str(i % 4)} for i, (a, ca, cb, e) in enumerate(rows)]


def winogrande_docs(prefix, n):
    out = []
    for i in range(n):
        out.append({"sentence": f"{prefix}{i}: Sam gave Kim the book because _ was  kind{i}. ok_",
                    "option1": f"Sam{i}", "option2": f"Kim{i}", "answer": "1" if i % 3 else "2"})
    return out


def build(cfg, splits):
    import datasets
    from lm_eval.api.task import ConfigurableTask

    dd = datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()})
    cfg = {**cfg, "custom_dataset": lambda **kw: dd}
    task = ConfigurableTask(config=cfg)
    task.set_fewshot_seed(1234)
    task.build_all_requests(limit=None)
    per_doc = {}
    for inst in task.instances:
        per_doc.setdefault(inst.doc_id, []).append(list(inst.arguments))
    return [per_doc[i] for i in sorted(per_doc)]


def preprocess_section():
    import datasets
    from lm_eval.tasks.hellaswag import utils as H
    from lm_eval.tasks.winogrande import preprocess_winogrande as W

    hs = hellaswag_docs()
    hs_processed = [dict(x) for x in H.process_docs(datasets.Dataset.from_list(hs))]
    hs_clean = [[t, H.preprocess(t)] for t in ["  a [title] b [x] c  d ", "x   y", "[a]b[c]", "a\n[b\n]c", " ]x[ "]]
    wg = winogrande_docs("W", 4) + [{"sentence": "_ starts it.", "option1": "A", "option2": "B", "answer": "2"},
                                    {"sentence": "Ends with _", "option1": "A", "option2": "B", "answer": "1"}]
    wg_parts = [{"doc": d, "contexts": W.doc_to_choice(d), "continuation": W.doc_to_target(d),
                 "gold": W.doc_to_text(d)} for d in wg]
    hs_requests = build({"task": "hs", "output_type": "multiple_choice", "training_split": "train",
                         "validation_split": "validation", "test_split": None,
                         "process_docs": H.process_docs, "doc_to_text": "{{query}}",
                         "doc_to_target": "{{label}}", "doc_to_choice": "choices", "num_fewshot": 2},
                        {"train": hs, "validation": hs[:4]})
    wg_train, wg_val = winogrande_docs("T", 9), winogrande_docs("V", 4)
    wg_requests = build({"task": "wg", "output_type": "multiple_choice", "training_split": "train",
                         "validation_split": "validation", "doc_to_text": W.doc_to_text,
                         "doc_to_target": W.doc_to_target, "doc_to_choice": W.doc_to_choice,
                         "num_fewshot": 2},
                        {"train": wg_train, "validation": wg_val})
    return {
        "hellaswag": {"docs": hs, "processed": hs_processed, "clean": hs_clean,
                      "requests": {"train": hs, "validation": hs[:4], "num_fewshot": 2,
                                   "per_doc": hs_requests}},
        "winogrande": {"parts": wg_parts,
                       "requests": {"train": wg_train, "validation": wg_val, "num_fewshot": 2,
                                    "per_doc": wg_requests}},
    }


def main():
    logging.disable(logging.WARNING)
    fixture = {
        "pystr": pystr_section(),
        "regex": regex_section(),
        "filters": filters_section(),
        "exact_match": exact_match_section(),
        "multiple_choice": multiple_choice_section(),
        "aggregation": aggregation_section(),
        "drop": drop_section(),
        "preprocess": preprocess_section(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    # One section per line: small, and diffs still say which section changed.
    body = ",\n".join(f"{json.dumps(k)}:{json.dumps(v, ensure_ascii=False, separators=(',', ':'))}"
                      for k, v in fixture.items())
    OUT.write_text("{\n" + body + "\n}\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
