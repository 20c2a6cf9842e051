#!/usr/bin/env bash
# Two builds of `bench_train` (or, with KIND=embed, of `bench_embed`) side by
# side: alternately before / after for every model, image size and thread
# count (MODELS to choose), ROUNDS rounds, then each side's median over rounds
# and the ratio.
# Build each binary in its own target folder, e.g.
#   git worktree add /tmp/before COMMIT
#   (cd /tmp/before && CARGO_TARGET_DIR=/tmp/tb cargo build --release --example bench_train)
#   BEFORE=/tmp/tb/release/examples/bench_train AFTER=target/release/examples/bench_train \
#     scripts/bench_ab.sh
set -euo pipefail
: "${BEFORE:?path of the bench_train built before}" "${AFTER:?path of the one after}"
ROUNDS=${ROUNDS:-3}
# Training steps a run times (five by default; this machine's speed drifts
# within a minute, and longer runs tell builds a few percent apart).
STEPS=${STEPS:-5}
KIND=${KIND:-train}
MODELS=${MODELS:-resnet101 resnext50 bninception}
out=$(mktemp)
for round in $(seq "$ROUNDS"); do
  for model in $MODELS; do
    for px in 32 64; do
      for t in 1 2; do
        for which in before after; do
          bin=$BEFORE; [ "$which" = after ] && bin=$AFTER
          sleep 1
          if [ "$KIND" = embed ]; then
            line=$("$bin" --model "$model" --image-size "$px" --batch 32 --iters 5 --warmup 2 --threads "$t" | tail -1)
          else
            line=$("$bin" --model "$model" --image-size "$px" --batch 8 --steps "$STEPS" --warmup 3 --threads "$t" | tail -1)
          fi
          echo "{\"which\":\"$which\",\"r\":$line}" >> "$out"
        done
      done
    done
  done
done
python3 - "$out" <<'PY'
import json, math, statistics as st, sys
from collections import defaultdict
d = defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line); x = r["r"]
    d[(x["model"], x["image_size"], x["threads"], r["which"])].append(x["median_ms"])
print("| model | px | threads | before ms | after ms | after ÷ before |")
print("|---|---|---|---|---|---|")
ratios = []
for k in sorted({k[:3] for k in d}):
    b, a = st.median(d[k + ("before",)]), st.median(d[k + ("after",)])
    ratios.append(a / b)
    print(f"| {k[0]} | {k[1]} | {k[2]} | {b:.1f} | {a:.1f} | {a / b:.3f} |")
print(f"\ngeometric mean {math.prod(ratios) ** (1 / len(ratios)):.3f}")
PY
