#!/usr/bin/env bash
# wfrun's matrix products beside numpy's OpenBLAS and PyTorch on the same
# shapes (examples/bench_gemm.rs, scripts/bench_gemm.py): ROUNDS rounds, each
# running the three in turn on 1 and 2 threads; then each one's median
# GFLOP/s per shape and wfrun's as a fraction of the best tuned library's.
#   cargo build --release --example bench_gemm
#   PY=$HOME/.peer-venv/bin/python scripts/bench_gemm.sh
set -euo pipefail
PY=${PY:-python3}
ROUNDS=${ROUNDS:-3}
BIN=${BIN:-target/release/examples/bench_gemm}
out=$(mktemp)
for round in $(seq "$ROUNDS"); do
  for t in 1 2; do
    sleep 1; "$BIN" --threads "$t" >> "$out"
    sleep 1; OPENBLAS_NUM_THREADS=$t OMP_NUM_THREADS=$t "$PY" scripts/bench_gemm.py numpy "$t" >> "$out"
    sleep 1; OMP_NUM_THREADS=$t "$PY" scripts/bench_gemm.py torch "$t" >> "$out"
  done
done
python3 - "$out" <<'PY'
import json, statistics as st, sys
from collections import defaultdict
d = defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    d[(r["threads"], r["m"], r["n"], r["k"], r["framework"])].append(r["gflops"])
print("| threads | m × n × k | wfrun | numpy (OpenBLAS) | PyTorch | wfrun ÷ best of the two |")
print("|---|---|---|---|---|---|")
order = list(dict.fromkeys(k[:4] for k in d))  # shapes as the benchmark runs them
for key in sorted(order, key=lambda k: (k[0], order.index(k))):
    w, o, p = (st.median(d[key + (f,)]) for f in ("wfrun", "numpy", "torch"))
    t, m, n, k = key
    print(f"| {t} | {m} × {n} × {k} | {w:.1f} | {o:.1f} | {p:.1f} | {w / max(o, p):.2f} |")
PY
