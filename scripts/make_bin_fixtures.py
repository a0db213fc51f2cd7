#!/usr/bin/env python3
"""Generate the PyTorch ``.bin`` weight fixtures under ``tests/fixtures/bin``.

Older checkpoints (Pythia's intermediate revisions, anything saved before safetensors)
ship ``pytorch_model.bin``: a torch zip archive holding a pickled state dict. ckpt reads
them without running the pickle; these fixtures test that it reads them exactly as
torch does, and refuses broken ones with an error.

Everything comes from the tiny parity fixtures (``tests/fixtures/parity``): the same
tensors, written by ``torch.save`` instead of safetensors, so a ``.bin`` checkpoint must
score and fingerprint exactly as its safetensors original. Nothing is downloaded.

Usage::

    ~/.venvs/ckpt-ref/bin/python scripts/make_bin_fixtures.py [OUT_DIR]

OUT_DIR defaults to ``tests/fixtures/bin`` under the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import zipfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import safetensors  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PARITY = ROOT / "tests" / "fixtures" / "parity"
ARCH = ROOT / "tests" / "fixtures" / "arch"
SIDE_FILES = ["config.json", "tokenizer.json", "tokenizer_config.json"]
# Small enough that the 168 kB llama_gqa splits into several shards.
MAX_SHARD_BYTES = 64 * 1024


def fresh_dir(path: Path, source: str, side_files=SIDE_FILES) -> Path:
    """`path`, emptied, holding `source`'s config (and tokenizer) files."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    for name in side_files:
        shutil.copy(PARITY / source / name, path / name)
    return path


def parity_state(name: str) -> dict[str, torch.Tensor]:
    return load_file(PARITY / name / "model.safetensors")


def save_sharded(state: dict[str, torch.Tensor], out: Path) -> None:
    """Shards named and indexed as transformers 4.x's save_pretrained names them."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name in sorted(state):
        nbytes = state[name].numel() * state[name].element_size()
        if shards[-1] and size + nbytes > MAX_SHARD_BYTES:
            shards.append({})
            size = 0
        shards[-1][name] = state[name]
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        file = f"pytorch_model-{i:05d}-of-{len(shards):05d}.bin"
        torch.save(shard, out / file)
        weight_map.update({name: file for name in shard})
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2) + "\n")


def check_loads_like(bin_dir: Path, original: str, source: Path = PARITY) -> None:
    """transformers loads `bin_dir` and computes what it computes from `original`."""
    ids = torch.tensor([[0, 5, 17, 42, 99, 7]])
    logits = []
    for path in (bin_dir, source / original):
        model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        with torch.no_grad():
            logits.append(model(ids).logits)
    exact = torch.equal(logits[0], logits[1])
    print(f"  {bin_dir.name}: transformers loads it; logits equal {original}'s: {exact}")
    # bf16 weights round; everything else must be bit-identical.
    if "bf16" not in bin_dir.name and not exact:
        sys.exit(f"{bin_dir}: logits differ from {original}")


def make_models(out: Path) -> None:
    state = parity_state("llama_gqa")
    d = fresh_dir(out / "llama_gqa_bin", "llama_gqa")
    torch.save(state, d / "pytorch_model.bin")
    check_loads_like(d, "llama_gqa")

    d = fresh_dir(out / "llama_gqa_bin_sharded", "llama_gqa")
    save_sharded(state, d)
    check_loads_like(d, "llama_gqa")

    d = fresh_dir(out / "llama_gqa_bin_bf16", "llama_gqa")
    torch.save({k: v.to(torch.bfloat16) for k, v in state.items()}, d / "pytorch_model.bin")
    check_loads_like(d, "llama_gqa")

    # What `torch.save(model.state_dict())` writes for a tied model: lm_head.weight is
    # the embedding's storage again, and the OrderedDict carries `_metadata`.
    d = fresh_dir(out / "llama_tied_bin", "llama_tied")
    model = transformers.AutoModelForCausalLM.from_pretrained(PARITY / "llama_tied")
    state_dict = model.state_dict()
    assert state_dict["lm_head.weight"].data_ptr() == state_dict["model.embed_tokens.weight"].data_ptr()
    assert hasattr(state_dict, "_metadata")
    torch.save(state_dict, d / "pytorch_model.bin")
    check_loads_like(d, "llama_tied")


def layout_tensors() -> dict[str, torch.Tensor]:
    """Views torch pickles as (storage, offset, shape, strides), and every dtype."""
    base = torch.arange(48, dtype=torch.float32).reshape(6, 8)
    cube = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    return {
        "tied.first": base,
        "tied.second": base,  # the same tensor: one storage, two names
        "view.rows": base[2:4],  # a storage offset
        "view.transposed": base.t(),  # column-major
        "view.strided": base[:, ::2],  # every other column
        "view.permuted": cube.permute(2, 0, 1),
        "view.broadcast": torch.arange(3, dtype=torch.float32).expand(4, 3),  # stride 0
        "view.scalar": torch.tensor(2.5),
        "view.empty": torch.zeros(0, 4),
        # An nn.Parameter pickles through torch._utils._rebuild_parameter.
        "param": torch.nn.Parameter(torch.arange(4, dtype=torch.float32).reshape(2, 2)),
        "dtype.f64": torch.linspace(-1, 1, 5, dtype=torch.float64),
        "dtype.f16": torch.linspace(-1, 1, 5, dtype=torch.float16),
        "dtype.bf16": torch.linspace(-1, 1, 5, dtype=torch.bfloat16),
        "dtype.bf16_transposed": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3).t(),
        "dtype.i64": torch.tensor([-3, 0, 2**40], dtype=torch.int64),
        "dtype.i32": torch.tensor([-3, 0, 7], dtype=torch.int32),
        "dtype.i16": torch.tensor([-3, 0, 7], dtype=torch.int16),
        "dtype.i8": torch.tensor([-3, 0, 7], dtype=torch.int8),
        "dtype.u8": torch.tensor([0, 1, 255], dtype=torch.uint8),
        "dtype.bool": torch.tensor([[True, False], [False, True]]),
    }


def make_layouts(out: Path) -> None:
    """`tensors/bin/pytorch_model.bin` and the same tensors, contiguous, in
    `tensors/safetensors/model.safetensors`."""
    tensors = layout_tensors()
    shutil.rmtree(out / "tensors", ignore_errors=True)
    (out / "tensors" / "bin").mkdir(parents=True)
    (out / "tensors" / "safetensors").mkdir(parents=True)
    torch.save(tensors, out / "tensors" / "bin" / "pytorch_model.bin")
    contiguous = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    save_file(contiguous, out / "tensors" / "safetensors" / "model.safetensors")
    back = torch.load(out / "tensors" / "bin" / "pytorch_model.bin", weights_only=True)
    assert all(torch.equal(back[k], v) for k, v in tensors.items())
    assert not back["view.strided"].is_contiguous()


class RunsCode:
    """Unpickling this would call print(): a stand-in for arbitrary code."""

    def __reduce__(self):
        return (print, ("this pickle ran code",))


def make_bad(out: Path) -> None:
    bad = out / "bad"
    shutil.rmtree(bad, ignore_errors=True)
    state = parity_state("llama_gqa")

    def bad_dir(name: str) -> Path:
        return fresh_dir(bad / name, "llama_gqa", ["config.json"])

    (bad_dir("not_a_pickle") / "pytorch_model.bin").write_bytes(
        bytes((i * 7919 + 13) % 251 for i in range(4096)))

    torch.save({**state, "note": "hello", "step": 7}, bad_dir("non_tensor") / "pytorch_model.bin")
    torch.save({**state, "hook": RunsCode()}, bad_dir("runs_code") / "pytorch_model.bin")

    good = bytes((out / "llama_gqa_bin" / "pytorch_model.bin").read_bytes())
    (bad_dir("truncated") / "pytorch_model.bin").write_bytes(good[: len(good) // 2])

    # torch < 1.6's format: pickles one after another, no zip.
    torch.save(state, bad_dir("legacy") / "pytorch_model.bin", _use_new_zipfile_serialization=False)

    # A zip whose storages are deflated (torch writes them stored, to map them).
    with zipfile.ZipFile(out / "llama_gqa_bin" / "pytorch_model.bin") as src, zipfile.ZipFile(
        bad_dir("compressed") / "pytorch_model.bin", "w", zipfile.ZIP_DEFLATED
    ) as dst:
        for item in src.infolist():
            # A fixed timestamp keeps the fixture identical from run to run.
            info = zipfile.ZipInfo(item.filename, date_time=(1980, 1, 1, 0, 0, 0))
            dst.writestr(info, src.read(item.filename), zipfile.ZIP_DEFLATED)

    d = bad_dir("missing_shard")
    shutil.copy(out / "llama_gqa_bin_sharded" / "pytorch_model.bin.index.json", d)
    for shard in sorted((out / "llama_gqa_bin_sharded").glob("pytorch_model-*.bin"))[:-1]:
        shutil.copy(shard, d)

    wrong = dict(state)
    name = "model.layers.0.self_attn.k_proj.weight"  # [16, 32]: not square
    wrong[name] = wrong[name].t().contiguous()
    torch.save(wrong, bad_dir("wrong_shape") / "pytorch_model.bin")


def make_arch_models(out: Path) -> None:
    """Pythia's intermediate revisions ship `pytorch_model.bin`: the GPT-NeoX fixture
    (and Gemma 2's, tied) as one, from tests/fixtures/arch."""
    for name in ["gpt_neox_parallel", "gemma2"]:
        d = out / f"{name}_bin"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        for side in SIDE_FILES:
            shutil.copy(ARCH / name / side, d / side)
        torch.save(load_file(ARCH / name / "model.safetensors"), d / "pytorch_model.bin")
        check_loads_like(d, name, ARCH)


def write_readme(out: Path) -> None:
    (out / "README.md").write_text(f"""\
# PyTorch `.bin` weight fixtures (generated — do not edit by hand)

Produced by `~/.venvs/ckpt-ref/bin/python scripts/make_bin_fixtures.py` from the parity
fixtures (`tests/fixtures/parity`), with python {sys.version.split()[0]}, torch {torch.__version__},
transformers {transformers.__version__}, safetensors {safetensors.__version__}. Nothing is downloaded.

- `llama_gqa_bin/`: `parity/llama_gqa`'s tensors written by `torch.save` as one
  `pytorch_model.bin` (checked to load in transformers with identical logits).
- `llama_gqa_bin_sharded/`: the same, split into {MAX_SHARD_BYTES // 1024} kB shards
  `pytorch_model-0000N-of-0000M.bin` with `pytorch_model.bin.index.json`, as transformers 4.x names them.
- `llama_gqa_bin_bf16/`: the same tensors in bfloat16.
- `gpt_neox_parallel_bin/`, `gemma2_bin/`: `arch/gpt_neox_parallel` (Pythia's layout)
  and `arch/gemma2`'s tensors written by `torch.save` as one `pytorch_model.bin`.
- `llama_tied_bin/`: `torch.save(model.state_dict())` of `parity/llama_tied`: `lm_head.weight`
  shares the embedding's storage and the state dict carries `_metadata`.
- `tensors/bin/pytorch_model.bin`: views (storage offset, transposed, strided, permuted,
  broadcast, scalar, empty, two names on one storage), an `nn.Parameter`, and every dtype torch pickles
  (f64, f16, bf16, i64, i32, i16, i8, u8, bool); `tensors/safetensors/model.safetensors`
  holds the same tensors made contiguous.
- `bad/*/`: `llama_gqa`'s config.json with broken weights: `not_a_pickle` (arbitrary bytes),
  `non_tensor` (a string and an int beside the tensors), `runs_code` (an object whose
  unpickling would call `print`), `truncated` (the first half of a good file), `legacy`
  (torch < 1.6's non-zip format), `compressed` (deflated zip entries), `missing_shard`
  (the index names a shard that is not there), `wrong_shape` (one tensor transposed).

Re-running the script rewrites every file identically but `bad/legacy` (torch's legacy
format pickles object ids).
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=ROOT / "tests" / "fixtures" / "bin")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    make_models(out)
    make_arch_models(out)
    make_layouts(out)
    make_bad(out)
    write_readme(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
