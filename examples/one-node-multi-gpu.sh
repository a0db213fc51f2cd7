#!/usr/bin/env bash
# Evaluate on every GPU of one machine: one ckpt process per GPU, each with its own
# shard and store, as torchrun would number them (RANK, LOCAL_RANK, WORLD_SIZE), then
# merge. No torchrun needed: ckpt processes do not talk to each other.
#
#   GPUS=8 examples/one-node-multi-gpu.sh runs/
set -euo pipefail

GPUS=${GPUS:-$(nvidia-smi --list-gpus | wc -l)}
STORE=${STORE:-ckpt.sqlite}
pids=()
for ((rank = 0; rank < GPUS; rank++)); do
    RANK=$rank LOCAL_RANK=$rank WORLD_SIZE=$GPUS \
        ckpt eval "$@" --suite pt --store "$STORE" --shard auto --device cuda:auto \
        > "eval-rank-$rank.log" 2>&1 &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
    wait "$pid" || status=1
done
# Merge what finished; a failed rank reruns alone and resumes from its store.
ckpt store merge "${STORE%.sqlite}".shard-*-of-"$GPUS".sqlite --into "$STORE"
exit $status
