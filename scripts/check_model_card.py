#!/usr/bin/env python3
"""Checks model cards written by `ckpt release` with huggingface_hub's own parsing.

For each card: `ModelCard.load` (front matter -> ModelCardData, which parses
`model-index` with `model_index_to_eval_results` and validates the eval results, raising
on a missing task type, dataset type/name, metric type/value), `metadata_load`, the keys
the Hub expects of a transformers text-generation model, and a round trip of the eval
results back to a `model-index` equal to the card's. Offline: nothing is sent to the Hub.

Run: /work/pyref/bin/python scripts/check_model_card.py [CARD.md ...]
(default: tests/fixtures/release/model_card.md; venv: pip install huggingface_hub)
"""
import argparse
import pathlib
import sys

import huggingface_hub
from huggingface_hub import ModelCard, metadata_load
from huggingface_hub.repocard_data import eval_results_to_model_index

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "tests" / "fixtures" / "release" / "model_card.md"


def check(path: pathlib.Path) -> list[str]:
    card = ModelCard.load(path)  # raises ValueError on an invalid model-index
    meta = metadata_load(path)
    problems = []
    for key, want in [("library_name", "transformers"), ("pipeline_tag", "text-generation")]:
        if meta.get(key) != want:
            problems.append(f"{key} is {meta.get(key)!r}, expected {want!r}")
    for key in ["license", "language", "tags"]:
        if not meta.get(key):
            problems.append(f"{key} is missing")
    data = card.data
    if "model-index" in meta:
        if not data.eval_results:
            problems.append("model-index present but no eval results parsed")
        else:
            back = eval_results_to_model_index(data.model_name, data.eval_results)
            if back != meta["model-index"]:
                problems.append(f"model-index does not round-trip:\n{back}\n!=\n{meta['model-index']}")
            for r in data.eval_results:
                print(f"  {r.task_type} | {r.dataset_type} ({r.dataset_name}, {r.dataset_config}, "
                      f"{r.dataset_split}) | {r.metric_type} = {r.metric_value}")
    if not card.text.strip():
        problems.append("empty card body")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cards", nargs="*", type=pathlib.Path, default=[DEFAULT])
    args = parser.parse_args()
    print(f"huggingface_hub {huggingface_hub.__version__}")
    failed = 0
    for path in args.cards:
        print(f"{path}:")
        try:
            problems = check(path)
        except Exception as e:  # the library's own parse errors
            problems = [f"{type(e).__name__}: {e}"]
        for p in problems:
            print(f"  FAIL {p}")
        failed += bool(problems)
        if not problems:
            print("  ok")
    print(f"{len(args.cards) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
