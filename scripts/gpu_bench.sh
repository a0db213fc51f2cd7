#!/usr/bin/env bash
# GPU checks and benchmarks of the CUDA bundle (scripts/build-cuda.sh), on the GPU machine.
#
#   scripts/gpu_bench.sh [STAGE...]     stages: env tiny parity sharpness pytorch 125m 1b
#                                       (default: env tiny parity sharpness pytorch 125m)
#
# Each stage fits in one 10-minute command; the stages share $WORK, so they can be run
# one command at a time on a machine that stays warm. Results (one JSON line per check
# or benchmark, plus logs) go to $OUT (default bench-out/gpu-results).
#   env        run.sh --check, nvidia-smi, torch's version and CUDA
#   tiny       ckpt synth; the tiny WSD recipe (0.86M params) on cuda in bf16 and f32
#   parity     ckpt score on the bf16 run's last checkpoint: cpu f32 vs cuda f32
#              (max |diff| per token <= 1e-4), vs cuda bf16 (reported; mean <= 2e-2)
#   sharpness  ckpt sharpness (fd, 10 samples, same seed) on cpu and cuda: |diff| <= stderr
#   pytorch    bench_{score_transformers,train_pytorch,hvp_pytorch}.py --device cuda on
#              the tiny checkpoint (the same work as ckpt's, side by side)
#   125m       a ~114M Llama (768 x 12 layers) at seq 2048 in bf16: ckpt's tokens/s and MFU,
#              then PyTorch's train step on the same checkpoint and shape
#   1b         a ~1B Llama (2048 x 16 layers) at seq 2048 in bf16, as 125m
# Environment: BUNDLE (dist/ckpt-cuda), WORK (bench-out/gpu-work), OUT, PYTHON (python3),
# PEAK_TFLOPS (dense bf16 peak for MFU; default from nvidia-smi's name: H100/H200 SXM 989),
# TINY_STEPS (300, the recipe's), TORCH_DEVICE (cuda; cpu with a stand-in BUNDLE whose
# run.sh maps cuda to cpu is how the harness itself was tried on a machine without a GPU).
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
BUNDLE="${BUNDLE:-dist/ckpt-cuda}"
WORK="${WORK:-bench-out/gpu-work}"
OUT="${OUT:-bench-out/gpu-results}"
PY="${PYTHON:-python3}"
TINY_STEPS="${TINY_STEPS:-300}"
TORCH_DEVICE="${TORCH_DEVICE:-cuda}"
CKPT="$BUNDLE/run.sh"
RESULTS="$OUT/results.jsonl"
mkdir -p "$WORK" "$OUT"
[[ -x "$CKPT" ]] || { echo "gpu_bench: no $CKPT: carry the bundle made by scripts/build-cuda.sh" >&2; exit 2; }
FAILED=0

log() { echo "gpu_bench: $*" >&2; }
# Runs a command: stdout to $OUT/NAME.out, stderr to $OUT/NAME.log; a failure is recorded
# and the later stages go on.
step() {
    local name="$1"; shift
    log "$name: $*"
    local started=$SECONDS
    if "$@" >"$OUT/$name.out" 2>"$OUT/$name.log"; then
        log "$name: ok in $((SECONDS - started)) s"
    else
        log "$name: FAILED (exit $?) in $((SECONDS - started)) s; see $OUT/$name.log:"
        tail -n 15 "$OUT/$name.out" "$OUT/$name.log" >&2
        echo "{\"check\": \"$name\", \"ok\": false}" >>"$RESULTS"
        FAILED=1
        return 1
    fi
}
# Appends a step's JSON lines (the helpers' and the PyTorch scripts' output) to the results.
record() { grep '^{' "$OUT/$1.out" | tee -a "$RESULTS"; }
last_ckpt() { ls -d "$1"/step-* 2>/dev/null | sort | tail -n 1; }

peak_tflops() {
    if [[ -n "${PEAK_TFLOPS:-}" ]]; then echo "$PEAK_TFLOPS"; return; fi
    local name
    name="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)"
    case "$name" in
        *H100*PCIe*) echo 756 ;;
        *H100*|*H200*) echo 989 ;;
        *A100*) echo 312 ;;
        *) echo 989 ;;
    esac
}

stage_env() {
    step env-check "$CKPT" --check
    nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
    step env-torch "$PY" -c 'import json, torch; print(json.dumps({"check": "env", "torch": torch.__version__, "cuda": torch.version.cuda, "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}))' && record env-torch
}

synth() {
    [[ -s "$WORK/synth/pretrain.jsonl" ]] || step synth "$CKPT" synth --out "$WORK/synth"
    [[ -s "$WORK/held.jsonl" ]] || head -n 64 "$WORK/synth/validation.jsonl" >"$WORK/held.jsonl"
}

# ckpt train on cuda: NAME RECIPE [--set ...]; a fresh run each time.
train() {
    local name="$1" recipe="$2"; shift 2
    rm -rf "$WORK/runs/$name"
    step "train-$name" "$CKPT" train "$recipe" --set job.device=cuda \
        --set "job.out=$WORK/runs/$name" --set "data.paths=[\"$WORK/synth/pretrain.jsonl\"]" "$@"
}

stage_tiny() {
    synth || return
    train tiny-bf16 trainer/tiny-wsd.toml --set job.dtype=bf16 --set "training.steps=$TINY_STEPS"
    train tiny-f32 trainer/tiny-wsd.toml --set job.dtype=f32 --set "training.steps=$TINY_STEPS"
    for d in bf16 f32; do
        [[ -f "$WORK/runs/tiny-$d/metrics.jsonl" ]] || continue
        step "mfu-tiny-$d" "$PY" scripts/gpu_bench.py mfu "$WORK/runs/tiny-$d/metrics.jsonl" \
            "$(last_ckpt "$WORK/runs/tiny-$d")" --seq 128 --peak-tflops "$(peak_tflops)" \
            && record "mfu-tiny-$d"
    done
}

tiny_ckpt() {
    local ck
    ck="$(last_ckpt "$WORK/runs/tiny-bf16")"
    [[ -n "$ck" ]] || { log "no tiny checkpoint: run the tiny stage first"; return 1; }
    echo "$ck"
}

stage_parity() {
    local ck; ck="$(tiny_ckpt)" || { FAILED=1; return; }
    synth || return
    for run in cpu:f32 cuda:f32 cuda:bf16; do
        local dev="${run%%:*}" dt="${run##*:}"
        step "score-$dev-$dt" "$CKPT" score "$ck" --text "$WORK/held.jsonl" --json --per-token \
            --device "$dev" --dtype "$dt"
    done
    step parity-f32 "$PY" scripts/gpu_bench.py parity "$OUT/score-cpu-f32.out" \
        "$OUT/score-cuda-f32.out" --tol 1e-4 && record parity-f32
    step parity-bf16 "$PY" scripts/gpu_bench.py parity "$OUT/score-cpu-f32.out" \
        "$OUT/score-cuda-bf16.out" --tol 1.0 --mean-tol 2e-2 && record parity-bf16
}

stage_sharpness() {
    local ck; ck="$(tiny_ckpt)" || { FAILED=1; return; }
    synth || return
    for dev in cpu cuda; do
        rm -f "$WORK/sharpness-$dev.jsonl"
        step "sharpness-$dev" "$CKPT" sharpness "$ck" --data "$WORK/held.jsonl" --samples 10 \
            --max-batches 8 --device "$dev" --out "$WORK/sharpness-$dev.jsonl" --json
    done
    step sharpness-compare "$PY" scripts/gpu_bench.py sharpness "$OUT/sharpness-cpu.out" \
        "$OUT/sharpness-cuda.out" && record sharpness-compare
}

# PyTorch's three bench scripts on CKPT with inputs of ROWS x LEN; NAME tags the logs.
pytorch_on() {
    local name="$1" ck="$2" rows="$3" len="$4"; shift 4
    local dir="$WORK/pytorch-$name"
    step "inputs-$name" "$PY" scripts/gpu_bench.py inputs "$ck" "$dir" --rows "$rows" --len "$len" || return
    step "torch-train-$name" "$PY" scripts/bench_train_pytorch.py --dir "$dir" --device "$TORCH_DEVICE" \
        --dtype bf16 --attn sdpa eager "$@" && record "torch-train-$name"
}

stage_pytorch() {
    local ck; ck="$(tiny_ckpt)" || { FAILED=1; return; }
    pytorch_on tiny "$ck" 32 128 || return
    local dir="$WORK/pytorch-tiny"
    step torch-score-tiny "$PY" scripts/bench_score_transformers.py --dir "$dir" --device "$TORCH_DEVICE" \
        && record torch-score-tiny
    step torch-hvp-tiny "$PY" scripts/bench_hvp_pytorch.py --dir "$dir" --device "$TORCH_DEVICE" \
        && record torch-hvp-tiny
}

# A Llama of the given shape at seq 2048 in bf16 for STEPS steps of BATCH tokens in ACCUM
# micro-batches, then PyTorch's step on TORCH_ROWS rows of the same checkpoint.
stage_shape() {
    local name="$1" hidden="$2" inter="$3" layers="$4" heads="$5" kv="$6" batch="$7" accum="$8"
    local steps="$9" torch_rows="${10}"
    synth || return
    train "$name" trainer/tiny-wsd.toml --set job.dtype=bf16 \
        --set "model.hidden_size=$hidden" --set "model.intermediate_size=$inter" \
        --set "model.num_hidden_layers=$layers" --set "model.num_attention_heads=$heads" \
        --set "model.num_key_value_heads=$kv" --set training.seq_len=2048 \
        --set "training.batch_tokens=$batch" --set "training.grad_accum=$accum" \
        --set "training.steps=$steps" \
        --set "training.checkpoint_every=$steps" --set schedule.warmup=2 \
        --set "schedule.total_steps=$steps" || return
    local ck; ck="$(last_ckpt "$WORK/runs/$name")"
    step "mfu-$name" "$PY" scripts/gpu_bench.py mfu "$WORK/runs/$name/metrics.jsonl" "$ck" \
        --seq 2048 --peak-tflops "$(peak_tflops)" && record "mfu-$name"
    pytorch_on "$name" "$ck" "$torch_rows" 2048 --attn sdpa
}

stages=("$@")
[[ ${#stages[@]} -gt 0 ]] || stages=(env tiny parity sharpness pytorch 125m)
for s in "${stages[@]}"; do
    case "$s" in
        env) stage_env ;;
        tiny) stage_tiny ;;
        parity) stage_parity ;;
        sharpness) stage_sharpness ;;
        pytorch) stage_pytorch ;;
        125m) stage_shape 125m 768 3072 12 12 4 32768 2 30 8 ;;
        1b) stage_shape 1b 2048 8192 16 32 8 16384 8 12 2 ;;
        *) log "unknown stage $s"; exit 2 ;;
    esac
done
log "results: $RESULTS"
exit "$FAILED"
