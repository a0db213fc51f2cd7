"""Writes the reference values of the ground-truth judge's answer score.

`ckpt serve --oracle` scores an answer against the truth with SQuAD's normalized
token F1 (src/eval/judge/oracle.rs). The reference here is the official SQuAD v1.1
evaluation code as lm-evaluation-harness ships it
(`lm_eval/tasks/qasper/metrics.py`: `normalize_answer`, `f1_abstractive`), run
unchanged on (prediction, truth) pairs: answers in the synthetic world's phrasing
(right, partly right, wrong, padded, truncated), and the normalization's edge cases
(case, ASCII punctuation, articles as whole words only, a word boundary at non-ASCII
punctuation, repeated tokens, empty answers, odd whitespace).

Run from the repository root with the reference venv
(scripts/requirements-reference.txt):

    python scripts/make_oracle_f1_fixture.py [--out tests/fixtures/judge/oracle_f1.json]

tests/judge_oracle.rs compares ckpt's normalization exactly and its F1 to 1e-12.
"""

import argparse
import json

from lm_eval.tasks.qasper.metrics import f1_abstractive, normalize_answer

TRUTHS = [
    "The Rilwing has six legs.",
    "Vofen is a person. Vofen is a painter. The favourite colour of Vofen is blue. "
    "Vofen is 56 years old. Vofen lives in Liford. Vofen keeps a Kasnout as a pet.",
    "Sabel has 9 + 5 = 14 beads now. The answer is 14.",
    "The people who live in Pelstead: Liwen, Koshi and Mijun.",
    "No. Koshi is a smith.",
    "- Koshi is a smith.\n- Koshi is 31 years old.\n- Koshi lives in Torwick.",
]

PAIRS = [
    # Right, in other words, partly right, wrong, padded, truncated.
    ("The Rilwing has six legs.", TRUTHS[0]),
    ("the rilwing has SIX legs", TRUTHS[0]),
    ("The Rilwing has four legs.", TRUTHS[0]),
    ("Six.", TRUTHS[0]),
    ("The Rilwing has six legs. The Rilwing has six legs.", TRUTHS[0]),
    ("Vofen is a person. Vofen is a painter.", TRUTHS[1]),
    ("Vofen is a person. Vofen is a baker. Vofen lives in Liford.", TRUTHS[1]),
    ("Sabel has 9 + 5 = 13 beads now. The answer is 13.", TRUTHS[2]),
    ("Sabel has 9+5=14 beads now. The answer is 14.", TRUTHS[2]),
    ("The answer is 14.", TRUTHS[2]),
    ("The people who live in Pelstead: Liwen and Koshi.", TRUTHS[3]),
    ("The people who live in Pelstead: Liwen, Koshi, Mijun and Sabel.", TRUTHS[3]),
    ("Yes. Koshi is a smith.", TRUTHS[4]),
    ("No. Koshi is a baker.", TRUTHS[4]),
    ("- Koshi is a smith.\n- Koshi lives in Torwick.", TRUTHS[5]),
    ("Koshi Koshi Koshi Koshi", TRUTHS[5]),
    ("lorem ipsum", TRUTHS[0]),
    # The normalization's edges.
    ("", TRUTHS[0]),
    ("   \n\t ", TRUTHS[0]),
    ("A an THE a.", "the"),
    ("an apple, the theatre and a cat", "An apple; theatre & cat!"),
    ("the’s and an’t", "’s ’t"),
    ("snake_case-word (x)", "snakecaseword x"),
    ("Café au lait, s'il vous plaît", "cafe au lait sil vous plait"),
    ("Über größe", "über GRÖSSE"),
    ("one\u00a0two\u2003three", "one two three"),
    ("x x x y", "x y y"),
    ("7 * 6 = 42", "7 6 42"),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/fixtures/judge/oracle_f1.json")
    args = ap.parse_args()
    cases = [
        {
            "prediction": p,
            "truth": t,
            "normalized_prediction": normalize_answer(p),
            "normalized_truth": normalize_answer(t),
            "f1": float(f1_abstractive([p], [t])),
        }
        for p, t in PAIRS
    ]
    doc = {
        "source": "lm_eval/tasks/qasper/metrics.py (SQuAD v1.1 normalize_answer, "
        "f1_abstractive), via scripts/make_oracle_f1_fixture.py",
        "cases": cases,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {args.out}")


if __name__ == "__main__":
    main()
