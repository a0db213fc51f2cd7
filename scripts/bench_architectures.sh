#!/usr/bin/env bash
# Scoring speed per architecture, ckpt next to transformers on the same work: for each
# architecture, `cargo bench --bench score` builds the benchmark's ~22M-parameter shape
# in that architecture (CKPT_BENCH_ARCH) and times ckpt; then
# scripts/bench_score_transformers.py times transformers on the same checkpoint and
# windows. Prints the JSON lines of both.
#
# Usage: PYTHON=~/.venvs/ckpt-ref/bin/python scripts/bench_architectures.sh [ARCH...]
# Knobs as the score benchmark's: CKPT_BENCH_WINDOWS, CKPT_BENCH_LEN, CKPT_BENCH_DTYPE.
set -euo pipefail
PYTHON=${PYTHON:-python3}
read -r -a BENCH_PY_ARGS <<< "${BENCH_PY_ARGS:-}"
archs=("$@")
[ ${#archs[@]} -gt 0 ] || archs=(llama qwen3 smollm3 olmo2 olmo3 gpt_neox gemma2 gemma3)
for arch in "${archs[@]}"; do
    CKPT_BENCH_ARCH=$arch cargo bench --quiet --bench score 2>/dev/null | sed "s/^{/{\"arch\":\"$arch\",/"
    "$PYTHON" scripts/bench_score_transformers.py ${CKPT_BENCH_DTYPE:+--dtype $CKPT_BENCH_DTYPE} "${BENCH_PY_ARGS[@]}" \
        | sed "s/^{/{\"arch\":\"$arch\",/"
done
