#!/usr/bin/env bash
# Training steps and embedding extraction, wfrun beside the PyTorch peer
# (../shared/peer), alternating case by case and round by round in one run on
# one machine. Prints one JSON line per run, then a table of medians and ratios.
#
#   PY=$HOME/.peer-venv/bin/python scripts/bench_vs_peer.sh [OUT.jsonl]
#
# ROUNDS (3), STEPS (5), WARMUP (3), ITERS (5, embedding batches) and
# MODELS / SIZES / THREADS (space-separated) narrow or widen the sweep.
# Keep the machine otherwise idle (two-thread PyTorch stalls under load), or
# set LOAD=1 to measure under load on purpose: a busy loop runs on one core
# throughout.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${1:-bench-vs-peer.jsonl}
ROUNDS=${ROUNDS:-3}
STEPS=${STEPS:-5}
WARMUP=${WARMUP:-3}
ITERS=${ITERS:-5}
MODELS=${MODELS:-resnet101 resnext50 bninception}
SIZES=${SIZES:-32 64}
THREADS=${THREADS:-1 2}
PEER=../shared/peer
cargo build --release --example bench_train --example bench_embed >/dev/null 2>&1
: > "$OUT"
if [ "${LOAD:-0}" = 1 ]; then
    sh -c 'while :; do :; done' &
    LOADER=$!
    trap 'kill $LOADER' EXIT
fi

# peer SCRIPT MODEL ARGS...: the peer's JSON line with its peak memory and our model name.
peer() {
    local script=$1 model=$2
    shift 2
    local peer_model=$model
    [ "$model" = resnext50 ] && peer_model=resnext50_32x4d
    local rss
    rss=$( { /usr/bin/time -f "%M" "$PY" "$PEER/$script" --model "$peer_model" "$@" > /tmp/peer.json; } 2>&1 | tail -1 )
    "$PY" -c "import json; r=json.load(open('/tmp/peer.json')); r['framework']='pytorch'; r['model']='$model'; r['peak_rss_mib']=round(int('$rss')/1024); print(json.dumps(r))"
}

# A pause before each run lets the previous process's exit settle, for both.
for round in $(seq "$ROUNDS"); do
    for model in $MODELS; do
        for size in $SIZES; do
            for threads in $THREADS; do
                sleep 2
                ./target/release/examples/bench_train --model "$model" --image-size "$size" --batch 8 \
                    --steps "$STEPS" --warmup "$WARMUP" --threads "$threads" | tee -a "$OUT"
                sleep 2
                peer train_step.py "$model" --image-size "$size" --batch 8 --steps "$STEPS" \
                    --warmup "$WARMUP" --threads "$threads" | tee -a "$OUT"
                sleep 2
                ./target/release/examples/bench_embed --model "$model" --image-size "$size" --batch 32 \
                    --iters "$ITERS" --warmup 2 --threads "$threads" | tee -a "$OUT"
                sleep 2
                peer embed.py "$model" --image-size "$size" --batch 32 --iters "$ITERS" \
                    --warmup 2 --threads "$threads" | tee -a "$OUT"
            done
        done
    done
done

"$PY" - "$OUT" <<'PYEOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    key = (r["bench"], r["model"], r["image_size"], r["threads"])
    by.setdefault(key, {}).setdefault(r["framework"], []).append(r)
print()
print("| bench | model | px | threads | wfrun ms | PyTorch ms | wfrun speed ÷ PyTorch | wfrun MiB | PyTorch MiB | rounds |")
print("|---|---|---|---|---|---|---|---|---|---|")
for (bench, model, px, threads), v in by.items():
    w, p = v.get("wfrun", []), v.get("pytorch", [])
    if not (w and p):
        continue
    wm = statistics.median(r["median_ms"] for r in w)
    pm = statistics.median(r["median_ms"] for r in p)
    wr = max(r["peak_rss_mib"] for r in w)
    pr = max(r["peak_rss_mib"] for r in p)
    name = "train step (batch 8)" if bench == "train_step" else "embed (batch 32)"
    print(f"| {name} | {model} | {px} | {threads} | {wm:.0f} | {pm:.0f} | {pm / wm:.2f}x | {wr:.0f} | {pr} | {len(w)} |")
PYEOF
