#!/usr/bin/env python3
"""The peer of `cargo bench --bench hub`: huggingface_hub fetching the files a
checkpoint needs (config, weights, tokenizer) of every revision of a repository, as a
loop of `lm_eval --model hf --model_args pretrained=REPO,revision=REV` fetches them
(transformers' from_pretrained -> hf_hub_download).

Run by the benchmark, which starts the Hub stand-in and times this process:
    python scripts/bench_hub_download.py ENDPOINT CACHE_DIR REPO REV [REV ...]
(venv: pip install -r scripts/requirements-reference.txt)
"""
import os
import sys


def main():
    endpoint, cache, repo, *revisions = sys.argv[1:]
    # huggingface_hub reads the endpoint when it is imported.
    os.environ["HF_ENDPOINT"] = endpoint
    os.environ.pop("HF_HUB_OFFLINE", None)
    from huggingface_hub import snapshot_download

    for rev in revisions:
        snapshot_download(
            repo,
            revision=rev,
            cache_dir=cache,
            allow_patterns=["config.json", "*.safetensors", "tokenizer*"],
        )


if __name__ == "__main__":
    main()
