#!/usr/bin/env bash
# Train-step time and peak memory, wfrun beside the PyTorch peer, alternating
# in one run on one machine. Prints one JSON line per run and a summary table.
#
#   PY=$HOME/.peer-venv/bin/python scripts/bench_train_vs_peer.sh [OUT.jsonl]
#
# Keep the machine otherwise idle: two-thread PyTorch stalls under load.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${1:-bench-train.jsonl}
PEER=../shared/peer/train_step.py
cargo build --release --example bench_train >/dev/null 2>&1
: > "$OUT"
for model in resnet101 resnext50 bninception; do
    peer_model=$model
    [ "$model" = resnext50 ] && peer_model=resnext50_32x4d
    for size in 32 64; do
        for threads in 1 2; do
            ./target/release/examples/bench_train --model "$model" --image-size "$size" --batch 8 \
                --steps "${STEPS:-5}" --warmup 2 --threads "$threads" | tee -a "$OUT"
            rss=$( { /usr/bin/time -f "%M" "$PY" "$PEER" --model "$peer_model" --image-size "$size" --batch 8 \
                --steps "${STEPS:-5}" --warmup 2 --threads "$threads" > /tmp/peer.json; } 2>&1 | tail -1 )
            "$PY" -c "import json,sys; r=json.load(open('/tmp/peer.json')); r['framework']='pytorch'; r['model']='$model'; r['peak_rss_mib']=round(int('$rss')/1024); print(json.dumps(r))" | tee -a "$OUT"
        done
    done
done
"$PY" - "$OUT" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
key = lambda r: (r["model"], r["image_size"], r["threads"])
by = {}
for r in rows:
    by.setdefault(key(r), {})[r["framework"]] = r
print("| model | px | threads | wfrun ms | PyTorch ms | PyTorch speed / wfrun speed | wfrun MiB | PyTorch MiB |")
print("|---|---|---|---|---|---|---|---|")
for k, v in by.items():
    w, p = v.get("wfrun"), v.get("pytorch")
    if not (w and p):
        continue
    print(f"| {k[0]} | {k[1]} | {k[2]} | {w['median_ms']:.0f} | {p['median_ms']:.0f} | {w['median_ms'] / p['median_ms']:.2f}x | {w['peak_rss_mib']:.0f} | {p['peak_rss_mib']} |")
PYEOF
