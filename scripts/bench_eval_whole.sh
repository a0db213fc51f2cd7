#!/usr/bin/env bash
# Whole-process evaluation time: `ckpt eval` vs lm-evaluation-harness 0.4.13's CLI.
#
# Measures the wall seconds of each WHOLE process (start-up, imports, model and data
# loading, tokenizing, scoring, writing results), on the same checkpoint, docs and tasks:
#   ckpt:    ckpt eval MODEL --tasks ... --data-dir DATA --limit N --store <fresh> --output ...
#   lm-eval: lm_eval --model hf --model_args pretrained=MODEL,dtype=float32 --device cpu
#            --batch_size 16 --tasks <task>_local ... --limit N --num_fewshot 0 --log_samples
# CPU, f32, 2 threads (RAYON_NUM_THREADS for ckpt; OMP/MKL_NUM_THREADS for torch), 0-shot,
# the multiple-choice tasks of the pt suite (validation_loss left out: lm-eval has none).
#
# The checkpoint is a random-weight Llama at SmolLM2-135M's shape (30 layers, hidden 576,
# GQA 9/3, vocab 49,152, tied; transformers init, seed 0) with a byte-level BPE trained on
# `ckpt synth`'s corpus; the docs are `ckpt synth --eval-tasks`'s, in the Hub schemas. The
# lm-eval tasks `<task>_local` include each task's own YAML (prompts, process_docs,
# metrics unchanged) and only point `dataset_path: json` at the same jsonl files.
# Both tools start cold: a fresh results store for ckpt (nothing cached), a fresh
# HF_DATASETS_CACHE for lm-eval (its json -> Arrow conversion is timed; no request cache).
#
# Also prints each run's peak resident memory (GNU time's %M) where /usr/bin/time exists.
# Prints a JSON summary (wall seconds of each run, requests, per-task acc/acc_norm of
# both, max |acc difference|, max |log-likelihood difference| over all requests, docs
# whose per-doc acc differs) and a markdown table. Exit status 1 if any acc differs.
#
# Run (offline):  scripts/bench_eval_whole.sh [LIMIT] [REPEATS]
#   LIMIT   docs per task (default 40: ckpt ~20-40 s on the project's 2-core machine)
#   REPEATS runs of each tool, alternating (default 1); the table shows the fastest
# Env: CKPT (binary; default target/release/ckpt), PYTHON, LM_EVAL (default: the
#   ~/.venvs/ckpt-ref venv: torch 2.15, transformers 5.24, lm-eval 0.4.13),
#   WORK (default /tmp/ckpt-bench-eval-whole; model and data are reused if present),
#   THREADS (default 2), TASKS (comma list; default the 7 pt multiple-choice tasks).
set -euo pipefail

LIMIT=${1:-40}
REPEATS=${2:-1}
HERE=$(cd "$(dirname "$0")" && pwd)
CKPT=${CKPT:-$HERE/../target/release/ckpt}
PYTHON=${PYTHON:-$HOME/.venvs/ckpt-ref/bin/python}
LM_EVAL=${LM_EVAL:-$(dirname "$PYTHON")/lm_eval}
WORK=${WORK:-/tmp/ckpt-bench-eval-whole}
THREADS=${THREADS:-2}
TASKS=${TASKS:-arc_easy,arc_challenge,boolq,hellaswag,openbookqa,piqa,winogrande}
HELPER="$HERE/bench_eval_whole.py"

# Offline, and both tools on the same number of threads.
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
export TOKENIZERS_PARALLELISM=false

mkdir -p "$WORK"
cd "$WORK"

# 1. Synthetic docs in the Hub schemas (enough for LIMIT), and the checkpoint (once).
if [ ! -f synth/eval/.docs ] || [ "$(cat synth/eval/.docs)" -lt "$LIMIT" ]; then
  rm -rf synth
  "$CKPT" -q synth --out synth --eval-tasks synth/eval --eval-docs "$LIMIT" >/dev/null
  echo "$LIMIT" > synth/eval/.docs
  rm -rf model
fi
[ -f model/model.safetensors ] || "$PYTHON" "$HELPER" model model synth
echo "checkpoint: $WORK/model ($(du -sh model | cut -f1)); docs: $WORK/synth/eval" >&2

# 2. lm-eval task YAMLs <task>_local reading the same files.
rm -rf lm_tasks
"$PYTHON" "$HELPER" tasks "$WORK/lm_tasks" "$WORK/synth/eval" "$TASKS"
LOCAL_TASKS=$(echo "$TASKS" | sed 's/\([^,]*\)/\1_local/g')

# Both read the 538 MB of weights from the page cache, not the disk.
cat model/model.safetensors > /dev/null
now() { date +%s.%N; }
# Peak resident memory of each process too, where GNU time is installed.
TIME_RSS=()
if [ -x /usr/bin/time ]; then TIME_RSS=(/usr/bin/time -f %M -o rss.kb); fi
rss() { if [ -f rss.kb ]; then echo ", peak RSS $(( $(tail -1 rss.kb) / 1024 )) MB"; rm -f rss.kb; fi; }
CKPT_TIMES=() LM_TIMES=()
for r in $(seq 1 "$REPEATS"); do
  # 3. ckpt, whole process, fresh store, per-sample output (as lm-eval's --log_samples).
  rm -rf ckpt_store.sqlite* ckpt_out
  t0=$(now)
  "${TIME_RSS[@]}" "$CKPT" -q eval model --tasks "$TASKS" --data-dir synth/eval --limit "$LIMIT" \
    --num-fewshot 0 --store ckpt_store.sqlite --output ckpt_out --json > ckpt.json
  t1=$(now)
  CKPT_TIMES+=("$(echo "$t1 - $t0" | bc)")
  echo "run $r: ckpt eval ${CKPT_TIMES[-1]} s$(rss)" >&2

  # 4. lm-eval CLI, whole process, fresh datasets cache.
  rm -rf lm_out hf_datasets_cache
  t0=$(now)
  HF_DATASETS_CACHE="$WORK/hf_datasets_cache" "${TIME_RSS[@]}" "$LM_EVAL" --model hf \
    --model_args "pretrained=$WORK/model,dtype=float32" --device cpu --batch_size 16 \
    --tasks "$LOCAL_TASKS" --include_path "$WORK/lm_tasks" --limit "$LIMIT" \
    --num_fewshot 0 --output_path lm_out --log_samples > lm_eval.log 2>&1 \
    || { tail -30 lm_eval.log >&2; exit 2; }
  t1=$(now)
  LM_TIMES+=("$(echo "$t1 - $t0" | bc)")
  echo "run $r: lm_eval ${LM_TIMES[-1]} s$(rss)" >&2
done

# 5. Summary (accuracies and log-likelihoods of the last run of each).
join() { local IFS=,; echo "$*"; }
"$PYTHON" "$HELPER" summary ckpt.json ckpt_out lm_out "$(join "${CKPT_TIMES[@]}")" \
  "$(join "${LM_TIMES[@]}")" "$LIMIT" "$TASKS"
