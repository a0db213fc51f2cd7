"""Checks ckpt's AlpacaEval metrics against the alpaca_eval package's own functions.

`metrics/winrate.py:get_winrate` (win rate, standard error, wins / losses / draws,
discrete win rate) and `metrics/glm_winrate.py:get_length_controlled_winrate` (the
length-controlled win rate: `length_controlled_minimal`, or `length_controlled_noreg`
with instruction difficulties) are run, unchanged, on annotations in AlpacaEval's
format. alpaca_eval downloads `df_gamed.csv` from the Hub only to read instruction
difficulties by annotation index; here that download is replaced by a local file
holding the difficulties given (zeros for the minimal GLM, which does not use them),
so nothing touches the network.

Two modes, run from the repository root with the reference venv
(scripts/requirements-reference.txt):

    python scripts/check_alpaca_metrics.py fixture [--out tests/fixtures/judge/alpaca_metrics.json]
        Writes synthetic annotations (seeded; continuous preferences correlated with
        length, parsed 1/2 answers, exact draws, missing verdicts, a model judged
        against itself, instruction difficulties) and alpaca_eval's metrics of each
        case. tests/judge.rs recomputes them with ckpt and compares: 1e-6 on win rate
        and standard error, 1e-3 on the LC win rate (liblinear stops at tolerance
        1e-4; ckpt solves the GLM exactly), and 1e-6 on `lc_converged`, the LC win
        rate refit by liblinear to 1e-12 at the penalty alpaca_eval's CV picked.

    python scripts/check_alpaca_metrics.py check DIR... [--difficulty CSV]
        For each export directory of `ckpt eval --tasks alpaca_eval` (annotations.json
        + metrics.json), recomputes the metrics with alpaca_eval and compares them
        with ckpt's metrics.json at the same tolerances; exits 1 on a mismatch.
"""

import argparse
import json
import math
import os
import sys
import tempfile
import warnings

import numpy as np
import pandas as pd

warnings.filterwarnings("ignore")

import alpaca_eval.metrics.glm_winrate as glm  # noqa: E402
from alpaca_eval.metrics import get_length_controlled_winrate, get_winrate  # noqa: E402

TOLERANCE = {"win_rate": 1e-6, "standard_error": 1e-6, "discrete_win_rate": 1e-6,
             "length_controlled_winrate": 1e-3, "lc_standard_error": 1e-3}
COUNTS = ["n_wins", "n_wins_base", "n_draws", "n_total"]


def plain(x):
    """JSON-able: numpy scalars to Python, NaN to None."""
    if x is None:
        return None
    x = x.item() if hasattr(x, "item") else x
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


def alpaca_metrics(annotations, difficulty=None):
    """alpaca_eval's metrics of `annotations` (list of dicts)."""
    n = len(annotations)
    values = difficulty if difficulty is not None else [0.0] * n
    with tempfile.TemporaryDirectory() as tmp:
        gamed = os.path.join(tmp, "df_gamed.csv")
        pd.DataFrame({"model": "x", "index": range(n), "instruction_difficulty": values}).to_csv(gamed, index=False)
        glm.hf_hub_download = lambda *a, **k: gamed
        out = dict(get_winrate(annotations))
        name = "length_controlled_noreg" if difficulty is not None else "length_controlled_minimal"
        lc = get_length_controlled_winrate(
            annotations, glm_name=name, save_weights_dir=None, is_warn_extreme_changes=False
        )
        out["length_controlled_winrate"] = lc["length_controlled_winrate"]
        out["lc_standard_error"] = lc["lc_standard_error"]
        out["lc_converged"] = converged_lc(annotations, name)
    return {k: plain(v) for k, v in out.items()}, name


def converged_lc(annotations, name):
    """The LC win rate with the GLM refit to tolerance 1e-12 at the penalty alpaca_eval's
    cross-validation picked (liblinear stops at 1e-4, about 1e-3 points away): what
    ckpt's exact solver should match closely."""
    from sklearn.linear_model import LogisticRegression

    df = pd.DataFrame(annotations)
    if df["generator_1"].iloc[0] == df["generator_2"].iloc[0]:
        return 50.0
    info = glm.GLM_INFO[name]
    train, test, _ = glm._get_featurized_data(df, formula=info["formula"], regularize_to_baseline_lambda=None)
    train = train[train["preference"].notna()]
    c = glm.fit_LogisticRegressionCV(train, "preference", is_ytrue_proba=True, **info["kwargs"]).C_[0]
    p = train["preference"].values
    x = train.drop(columns=["preference"]).values
    model = LogisticRegression(C=c, penalty="l1", solver="liblinear", fit_intercept=False, tol=1e-12, max_iter=100000)
    model.fit(np.vstack([x, x]), np.r_[np.ones(len(x)), np.zeros(len(x))], sample_weight=np.r_[p, 1 - p])
    return model.predict_proba(test.values)[:, 1].mean() * 100


def compare(ours, theirs, where):
    bad = []
    for key, tol in TOLERANCE.items():
        a, b = ours.get(key), theirs.get(key)
        if (a is None) != (b is None) or (a is not None and abs(a - b) > tol):
            bad.append(f"{where}: {key} ckpt {a} vs alpaca_eval {b} (tolerance {tol})")
    for key in COUNTS:
        if ours.get(key) != theirs.get(key):
            bad.append(f"{where}: {key} ckpt {ours.get(key)} vs alpaca_eval {theirs.get(key)}")
    return bad


def text(rng, n):
    words = ["river", "stone", "lamp", "cloud", "seven", "bird", "glass", "tree", "salt", "moon"]
    out = ""
    while len(out) < n:
        out += rng.choice(words) + " "
    return out[:n]


def case(rng, name, n, kind, difficulty=False):
    anns = []
    ref_len = rng.integers(3, 90, size=n)
    mod_len = rng.integers(3, 90, size=n)
    diff = rng.normal(0, 1, size=n)
    for i in range(n):
        # The judge leans to the longer answer and to easy instructions, with noise.
        z = 0.03 * (mod_len[i] - ref_len[i]) - 0.8 * diff[i] + rng.normal(0, 1) + 0.3
        p = 1 / (1 + math.exp(-z))
        if kind == "parsed":
            pref = 2.0 if p > 0.5 else 1.0
            if i % 9 == 0:
                pref = 1.5
            if i % 11 == 0:
                pref = None
        elif kind == "noise":
            pref = 1 + float(np.clip(0.5 + rng.normal(0, 0.05), 0, 1))
        else:
            pref = 1 + p
        anns.append({
            "instruction": f"Synthetic instruction {name} {i}",
            "output_1": text(rng, int(ref_len[i])),
            "generator_1": "reference",
            "output_2": text(rng, int(mod_len[i])),
            "generator_2": "reference" if kind == "self" else "model",
            "annotator": "synthetic_judge",
            "preference": pref,
        })
    d = [round(float(x), 6) for x in diff] if difficulty else None
    expected, glm_name = alpaca_metrics(anns, d)
    return {"name": name, "glm": glm_name, "difficulty": d, "annotations": anns, "expected": expected}


def make_fixture(out):
    rng = np.random.default_rng(20240611)
    cases = [
        case(rng, "continuous", 45, "continuous"),
        case(rng, "continuous_with_difficulty", 40, "continuous", difficulty=True),
        case(rng, "parsed_draws_missing", 36, "parsed"),
        case(rng, "near_coin_flips", 30, "noise"),
        case(rng, "judged_against_itself", 12, "self"),
    ]
    os.makedirs(os.path.dirname(out), exist_ok=True)
    # One annotation per line: small, and diffs stay readable.
    with open(out, "w") as f:
        f.write('{"alpaca_eval_version": %s, "cases": [\n' % json.dumps(__import__("alpaca_eval").__version__))
        for k, c in enumerate(cases):
            head = {key: c[key] for key in ["name", "glm", "expected", "difficulty"]}
            f.write(json.dumps(head)[:-1] + ', "annotations": [\n')
            f.write(",\n".join(json.dumps(a) for a in c["annotations"]))
            f.write("]}" + (",\n" if k + 1 < len(cases) else "\n"))
        f.write("]}\n")
    for c in cases:
        print(c["name"], {k: c["expected"][k] for k in ["win_rate", "length_controlled_winrate"]})


def check(dirs, difficulty_csv):
    difficulty = None
    if difficulty_csv:
        difficulty = pd.read_csv(difficulty_csv).iloc[:, -1].astype(float).tolist()
    failures = []
    for d in dirs:
        with open(os.path.join(d, "annotations.json")) as f:
            anns = json.load(f)
        with open(os.path.join(d, "metrics.json")) as f:
            ours = json.load(f)
        theirs, glm_name = alpaca_metrics(anns, difficulty)
        bad = compare(ours, theirs, d)
        failures += bad
        status = "ok" if not bad else "MISMATCH"
        print(f"{d}: {status} ({glm_name}) win rate {ours.get('win_rate')} vs {theirs.get('win_rate')}, "
              f"LC {ours.get('length_controlled_winrate')} vs {theirs.get('length_controlled_winrate')}")
    for b in failures:
        print(b, file=sys.stderr)
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    f = sub.add_parser("fixture")
    f.add_argument("--out", default="tests/fixtures/judge/alpaca_metrics.json")
    c = sub.add_parser("check")
    c.add_argument("dirs", nargs="+")
    c.add_argument("--difficulty")
    args = ap.parse_args()
    if args.mode == "fixture":
        make_fixture(args.out)
        return 0
    return check(args.dirs, args.difficulty)


if __name__ == "__main__":
    sys.exit(main())
