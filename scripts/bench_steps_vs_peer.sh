#!/bin/sh
# The downstream steps beside scikit-learn / faiss / numpy, on the same data,
# alternating wfrun and the peers ROUNDS times; one JSON line per run into
# $OUT/results.jsonl, then the medians.
#   PY=$HOME/.peer-venv/bin/python THREADS=2 ROUNDS=3 scripts/bench_steps_vs_peer.sh
set -eu
PY=${PY:-$HOME/.peer-venv/bin/python}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-/tmp/wfrun-bench-steps}
PEER=${PEER:-../shared/peer}
mkdir -p "$OUT"
cargo build --release -q --example bench_steps
BIN=target/release/examples/bench_steps
: > "$OUT/results.jsonl"
export RAYON_NUM_THREADS=$THREADS
for round in $(seq "$ROUNDS"); do
    $PY scripts/bench_steps_data.py "$OUT" --threads "$THREADS" >> "$OUT/results.jsonl"
    $BIN logreg --x "$OUT/emb.f32" --y "$OUT/labels.u32" --dim 128 --classes 10 --train 16000 >> "$OUT/results.jsonl"
    $PY "$PEER/kmeans.py" --threads "$THREADS" >> "$OUT/results.jsonl"
    $BIN kmeans --x "$OUT/x.f32" --dim 128 --k 64 --iters 20 >> "$OUT/results.jsonl"
    $PY "$PEER/knn.py" --threads "$THREADS" --methods numpy,faiss,sklearn >> "$OUT/results.jsonl"
    $BIN knn --x "$OUT/x.f32" --q "$OUT/q.f32" --dim 128 --k 10 >> "$OUT/results.jsonl"
done
$PY - "$OUT/results.jsonl" <<'PYEOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(xs):
    return statistics.median(xs) if xs else float("nan")
km_peer = [r for r in rows if r["bench"] == "kmeans" and "sklearn" in r]
km_ours = [r for r in rows if r["bench"] == "kmeans" and "sklearn" not in r]
print("kmeans 100000x128 k=64 20 iterations (s):")
print("  wfrun   %.3f  inertia %.6g" % (med([r["seconds"] for r in km_ours]), med([r["inertia"] for r in km_ours])))
for name in ("sklearn", "faiss", "numpy_lloyd"):
    xs = [r[name]["seconds"] for r in km_peer if "seconds" in r.get(name, {})]
    if xs:
        print("  %-7s %.3f  inertia %.6g  (wfrun speed: %.2fx)" % (name, med(xs), med([r[name]["inertia"] for r in km_peer]), med(xs) / med([r["seconds"] for r in km_ours])))
kn_peer = [r for r in rows if r["bench"] == "knn_cosine" and "numpy" in r]
kn_ours = [r for r in rows if r["bench"] == "knn_cosine" and "numpy" not in r]
print("exact top-10 cosine, 1000 queries over 100000x128 (s):")
print("  wfrun   %.3f  recall %.3f" % (med([r["search_s"] for r in kn_ours]), med([r["recall_vs_exact_f64"] for r in kn_ours])))
for name in ("numpy", "faiss_flatip", "sklearn_brute_cosine"):
    xs = [r[name]["search_s"] for r in kn_peer if "search_s" in r.get(name, {})]
    if xs:
        print("  %-20s %.3f  (wfrun speed: %.2fx)" % (name, med(xs), med(xs) / med([r["search_s"] for r in kn_ours])))
lr_peer = [r for r in rows if r["bench"] == "logreg" and "peer" in r]
lr_ours = [r for r in rows if r["bench"] == "logreg" and "peer" not in r]
print("logistic regression, 16000x128, 10 classes (s, held-out accuracy):")
print("  wfrun   %.3f  %.4f" % (med([r["seconds"] for r in lr_ours]), med([r["held_out_accuracy"] for r in lr_ours])))
print("  sklearn %.3f  %.4f  (wfrun speed: %.2fx)" % (med([r["seconds"] for r in lr_peer]), med([r["held_out_accuracy"] for r in lr_peer]), med([r["seconds"] for r in lr_peer]) / med([r["seconds"] for r in lr_ours])))
PYEOF
