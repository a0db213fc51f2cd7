#!/usr/bin/env bash
# The WSD direction against the decay length: in each finished `ckpt demo` folder given
# (`ckpt demo --seeds 3` writes OUT/seed-0 ...), WSO is trained again saving every 30
# steps, WSD alpha=0 is branched from it with decays of 10, 20 and 30% of the 300 steps,
# and the final checkpoints' sharpness is measured on both held-out sets with the demo's
# settings. Prints each decayed / WSO ratio per seed and set, then their mean and standard
# error over the folders.
#
#   scripts/decay_lengths.sh ckpt-demo/seed-0 ckpt-demo/seed-1 ckpt-demo/seed-2
#
# Needs a `small` demo (300 steps) and the ckpt binary (CKPT, default target/release/ckpt).
set -euo pipefail
ckpt="${CKPT:-$(cd "$(dirname "$0")/.." && pwd)/target/release/ckpt}"
steps=300
for dir in "$@"; do
  (
    cd "$dir"
    "$ckpt" train recipes/wso.toml -q --set job.name=wso-every30 --set training.checkpoint_every=30
    for decay in 30 60 90; do
      pct=$((100 * decay / steps))
      parent=$(printf 'runs/wso-every30/step-%07d' $((steps - decay)))
      "$ckpt" train recipes/wsd-a0.toml -q --set job.name="wsd-a0-d$pct" \
        --set schedule.decay_steps=$decay --set training.checkpoint_every=$decay \
        --set init.parent="$parent"
    done
    final=$(printf 'step-%07d' $steps)
    "$ckpt" sharpness "runs/wso-every30/$final" runs/wsd-a0-d10/$final runs/wsd-a0-d20/$final \
      runs/wsd-a0-d30/$final --data pt=data/validation.jsonl --data sft=data/sft_validation.jsonl \
      --seq-len 128 --samples 12 --max-batches 4 --out decay_lengths.jsonl -q --json \
      > decay_lengths.json
  )
done
python3 - "$@" <<'PY'
import json, math, pathlib, sys
rows = {}
for d in sys.argv[1:]:
    results = json.loads(pathlib.Path(d, "decay_lengths.json").read_text())
    for s in ("pt", "sft"):
        of_set = {pathlib.Path(r["checkpoint"]).parent.name: r for r in results if r["config"]["set"] == s}
        wso = of_set["wso-every30"]
        for run, r in sorted(of_set.items()):
            if run == "wso-every30":
                continue
            ratio = r["estimate"] / wso["estimate"]
            rows.setdefault((s, run), []).append(ratio)
            print(f"{d} {s} {run}: {r['estimate']:.1f} / {wso['estimate']:.1f} = {ratio:.3f}")
for (s, run), v in sorted(rows.items()):
    m = sum(v) / len(v)
    se = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1) / len(v)) if len(v) > 1 else float("nan")
    print(f"{s} {run}: decayed / WSO {m:.3f} +- {se:.3f} over {len(v)} ({', '.join(f'{x:.3f}' for x in v)})")
PY
