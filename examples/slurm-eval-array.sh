#!/usr/bin/env bash
# Evaluate every checkpoint under runs/ on the paper's pre-training suite with a Slurm
# job array: each array element scores its shard of the (checkpoint, task) units into
# its own store (ckpt.shard-I-of-N.sqlite beside --store), then one dependent job
# merges them. Every element computes the same partition; no coordinator is needed.
#
#   sbatch examples/slurm-eval-array.sh
#   # after a failed element: sbatch --array=<id> examples/slurm-eval-array.sh (it
#   # resumes from its own store), then rerun the merge job.
#
#SBATCH --job-name=ckpt-eval
#SBATCH --array=0-7
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
#SBATCH --output=logs/ckpt-eval-%A_%a.out
set -euo pipefail

STORE=${STORE:-results/ckpt.sqlite}
mkdir -p "$(dirname "$STORE")" logs

# SLURM_ARRAY_TASK_ID, _MIN and _COUNT give this element's shard.
ckpt eval runs/ --suite pt --data-dir data/eval \
    --store "$STORE" --shard auto --device cuda:auto --dtype bf16

# The last element to finish is not known in advance: merge in a dependent job, e.g.
#   sbatch --dependency=afterok:$SLURM_ARRAY_JOB_ID --wrap \
#     "ckpt store merge results/ --into $STORE && ckpt report $STORE"
