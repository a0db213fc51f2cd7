#!/usr/bin/env bash
# Trains a tiny model of every architecture with `ckpt train` (20 steps on the
# synthetic world) and checks with transformers that it loads and computes the same
# loss: tests/fixtures/trained_arch/<arch>/ holds each checkpoint (no optimizer state)
# and reference.json what transformers computed (scripts/check_arch_checkpoint.py).
# tests/architectures.rs replays it without Python.
#
# Usage, from the repository root (reference venv as in scripts/requirements-reference.txt):
#   PYTHON=~/.venvs/ckpt-ref/bin/python scripts/make_trained_arch_fixtures.sh
set -euo pipefail
PYTHON=${PYTHON:-python3}
root=$(pwd)
out=$root/tests/fixtures/trained_arch
cargo build --quiet
ckpt=$root/target/debug/ckpt
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
"$ckpt" synth --out data/synth --entities 20 --pretrain-docs 400 --midtrain-docs 100 \
    --sft-chats 120 --validation-docs 10 -q
# Two rows of ids inside the 320-token vocabulary, the same for every architecture.
ids='{"token_ids": [[0, 12, 57, 101, 3, 250, 77, 19, 8, 140, 66, 301, 45, 2, 99, 180], [0, 33, 33, 210, 5, 71, 160, 9, 290, 14, 120, 64, 7, 88, 31, 200]]}'
rm -rf "$out" && mkdir -p "$out"
for arch in llama qwen3 smollm3 olmo2 olmo3 gpt_neox gemma2 gemma3; do
    sets=(--set job.name=$arch --set model.arch=$arch --set model.hidden_size=32
          --set model.intermediate_size=64 --set model.num_hidden_layers=2
          --set tokenizer.train_vocab_size=320 --set training.seq_len=32
          --set training.batch_tokens=512 --set schedule.warmup=4
          --set schedule.total_steps=20 --set training.checkpoint_every=20)
    case $arch in
        gpt_neox) sets+=(--set model.num_key_value_heads=4) ;;  # no GQA in GPT-NeoX
        smollm3) sets+=(--set model.num_hidden_layers=4) ;;     # layer 4 has no RoPE
    esac
    "$ckpt" train "$root/trainer/tiny-wso.toml" "${sets[@]}" -q
    mkdir -p "$out/$arch"
    for f in config.json model.safetensors tokenizer.json tokenizer_config.json ckpt.json; do
        cp "runs/$arch/step-0000020/$f" "$out/$arch/"
    done
    echo "$ids" > "$out/$arch/loss_check.json"
done
cd "$out"
"$PYTHON" "$root/scripts/check_arch_checkpoint.py" */ > "$work/checked.json"
"$PYTHON" - "$work/checked.json" <<'PY'
import json, sys, transformers, torch
checked = json.load(open(sys.argv[1]))
ref = {"transformers": transformers.__version__, "torch": torch.__version__, "models": {}}
for c in checked:
    assert not c["missing_keys"] and not c["unexpected_keys"], c
    ref["models"][c["dir"].strip("/")] = {k: c[k] for k in ("architecture", "model_type", "loss", "num_predicted")}
json.dump(ref, open("reference.json", "w"), indent=1)
print(json.dumps(ref, indent=1))
PY
