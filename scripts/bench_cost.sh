#!/usr/bin/env bash
# The cost model's estimates beside measurements: for each model, image size,
# batch and thread count, `bench_train` and `bench_embed` report the measured
# median time and peak memory with the cost model's estimates (from this
# machine's `wfrun calibrate` figures, measured first for each thread count).
#
#   SIZES="32 64" BATCHES="8 32" THREADS="1 2" scripts/bench_cost.sh | tee cost.jsonl
#
# The summary at the end (on stderr) gives estimated ÷ measured per case and
# the largest deviations. Run on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${MODELS:-"resnet101 resnext50 bninception"}
SIZES=${SIZES:-"32 64"}
BATCHES=${BATCHES:-"8 32"}
THREADS=${THREADS:-"1 2"}
cargo build --release --quiet --bin wfrun --example bench_train --example bench_embed
out=$(mktemp)
for t in $THREADS; do
  RAYON_NUM_THREADS=$t target/release/wfrun calibrate >&2
  for m in $MODELS; do for s in $SIZES; do for b in $BATCHES; do
    sleep 1
    target/release/examples/bench_train --model "$m" --image-size "$s" --batch "$b" --steps 5 --warmup 2 --threads "$t" | tail -1 | tee -a "$out"
    target/release/examples/bench_embed --model "$m" --image-size "$s" --batch "$b" --steps 5 --warmup 1 --threads "$t" | tail -1 | tee -a "$out"
  done; done; done
done
python3 - "$out" >&2 <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print(f"{'bench':10} {'model':12} {'px':>4} {'batch':>5} {'thr':>3} {'ms':>8} {'est ms':>8} {'ratio':>6} {'MiB':>6} {'est MiB':>7} {'ratio':>6}")
worst = {}
for r in rows:
    tr = r["estimated_ms"] / r["median_ms"]
    mr = r["estimated_peak_mib"] / r["peak_rss_mib"]
    print(f"{r['bench']:10} {r['model']:12} {r['image_size']:>4} {r['batch']:>5} {r['threads']:>3} {r['median_ms']:>8.1f} {r['estimated_ms']:>8.1f} {tr:>6.2f} {r['peak_rss_mib']:>6.0f} {r['estimated_peak_mib']:>7.0f} {mr:>6.2f}")
    k = (r["bench"], r["threads"])
    w = worst.setdefault(k, [1, 1, 1, 1])
    w[0], w[1] = min(w[0], tr), max(w[1], tr)
    w[2], w[3] = min(w[2], mr), max(w[3], mr)
for (b, t), w in sorted(worst.items()):
    print(f"{b} on {t} thread(s): time estimate ÷ measured {w[0]:.2f}–{w[1]:.2f}, peak memory {w[2]:.2f}–{w[3]:.2f}")
PY
rm -f "$out"
