#!/usr/bin/env python3
"""The Hugging Face cache as huggingface_hub itself reads and writes it: the reference
for `ckpt`'s claim that the cache it writes is the cache huggingface_hub reads, and the
other way round (tests/hub_cache_parity.rs replays the output, without Python).

    check_hf_cache.py view CACHE_DIR
        Prints (JSON, sorted) what huggingface_hub sees in CACHE_DIR: the repositories
        `scan_cache_dir()` finds, with their revisions (commit, refs, files with their
        size and blob), its warnings (none in a healthy cache) and incomplete files,
        and for every ref and file of the revision it names what
        `try_to_load_from_cache()` returns. Paths are relative: blobs to the repository
        folder, everything else to CACHE_DIR.

    check_hf_cache.py download ENDPOINT CACHE_DIR REPO REVISION...
        Downloads config.json, tokenizer.json, tokenizer_config.json and
        model.safetensors of each REVISION of REPO from ENDPOINT (the loopback Hub
        stand-in of `cargo test --test hub_cache_parity serve_the_suite_for_scripts --
        --ignored`) into CACHE_DIR with `hf_hub_download`: the cache huggingface_hub
        writes. Prints what it downloaded.

Both print `huggingface_hub.__version__`. Run with the reference environment
(`~/.venvs/ckpt-ref/bin/python`, huggingface_hub 2.4.0); see
tests/fixtures/hub_cache/README.md for the commands that made the fixtures.
"""

import json
import os
import sys
import tempfile
from pathlib import Path

FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"]


def relative(path, base):
    return Path(os.path.relpath(path, base)).as_posix()


def view(cache_dir):
    import huggingface_hub
    from huggingface_hub import scan_cache_dir, try_to_load_from_cache

    root = Path(cache_dir).expanduser().resolve()
    info = scan_cache_dir(root)
    repos = []
    loads = []
    for repo in sorted(info.repos, key=lambda r: (r.repo_type, r.repo_id)):
        revisions = []
        for rev in sorted(repo.revisions, key=lambda r: r.commit_hash):
            files = sorted(
                (
                    {
                        "file_name": f.file_name,
                        "file_path": relative(f.file_path, rev.snapshot_path),
                        "size_on_disk": f.size_on_disk,
                        "blob_path": relative(f.blob_path, repo.repo_path),
                    }
                    for f in rev.files
                ),
                key=lambda f: f["file_path"],
            )
            refs = sorted(rev.refs)
            revisions.append({"commit_hash": rev.commit_hash, "refs": refs, "files": files})
            for ref in refs:
                for f in files:
                    found = try_to_load_from_cache(
                        repo.repo_id,
                        f["file_path"],
                        cache_dir=root,
                        revision=ref,
                        repo_type=repo.repo_type,
                    )
                    loads.append(
                        {
                            "repo_id": repo.repo_id,
                            "revision": ref,
                            "filename": f["file_path"],
                            "path": relative(found, root) if isinstance(found, str) else repr(found),
                        }
                    )
        repos.append(
            {
                "repo_id": repo.repo_id,
                "repo_type": repo.repo_type,
                "repo_path": relative(repo.repo_path, root),
                "revisions": revisions,
            }
        )
    loads.sort(key=lambda x: (x["repo_id"], x["revision"], x["filename"]))
    return {
        "huggingface_hub": huggingface_hub.__version__,
        "repos": repos,
        "try_to_load_from_cache": loads,
        "warnings": sorted(str(w).replace(str(root), "$CACHE") for w in info.warnings),
        "incomplete_files": sorted(relative(f.file_path, root) for f in info.incomplete_files),
    }


def download(endpoint, cache_dir, repo, revisions):
    # Read when huggingface_hub is imported: set before.
    os.environ["HF_ENDPOINT"] = endpoint.rstrip("/")
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ.pop("HF_HUB_OFFLINE", None)
    # No token file or cached settings of the user's: a home of its own.
    os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="check_hf_cache-home-")
    import huggingface_hub
    from huggingface_hub import constants, hf_hub_download

    assert constants.ENDPOINT == endpoint.rstrip("/"), constants.ENDPOINT
    root = Path(cache_dir).expanduser().resolve()
    got = []
    for revision in revisions:
        for name in FILES:
            path = hf_hub_download(repo, name, revision=revision, cache_dir=root, token=False)
            got.append({"revision": revision, "filename": name, "path": relative(path, root)})
    return {"huggingface_hub": huggingface_hub.__version__, "downloaded": got}


def main(argv):
    if len(argv) == 2 and argv[0] == "view":
        out = view(argv[1])
    elif len(argv) >= 5 and argv[0] == "download":
        out = download(argv[1], argv[2], argv[3], argv[4:])
    else:
        sys.exit(__doc__)
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1:])
