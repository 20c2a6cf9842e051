#!/usr/bin/env python3
"""Writes the data of ../shared/peer/kmeans.py and knn.py (the same generator,
seed and draws) as raw little-endian float32 files for wfrun's bench_steps,
and runs scikit-learn's LogisticRegression on generated separable data,
writing that data too.

usage: bench_steps_data.py OUT_DIR [--n 100000] [--dim 128] [--queries 1000] [--seed 0]
Prints one JSON line for the logistic regression peer.
"""
import argparse
import json
import os
import time

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--n", type=int, default=100000)
p.add_argument("--dim", type=int, default=128)
p.add_argument("--queries", type=int, default=1000)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--threads", type=int, default=os.cpu_count())
args = p.parse_args()
for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[v] = str(args.threads)
import numpy as np  # noqa: E402

os.makedirs(args.out, exist_ok=True)
rng = np.random.default_rng(args.seed)
X = rng.standard_normal((args.n, args.dim), dtype=np.float32)
Q = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
X.astype("<f4").tofile(os.path.join(args.out, "x.f32"))
Q.astype("<f4").tofile(os.path.join(args.out, "q.f32"))

# Logistic regression on embeddings: 10 Gaussian classes in 128-d, 20,000
# rows (16,000 to train), overlapping enough that accuracy is not trivially 1.
r = np.random.default_rng(args.seed + 1)
classes, n = 10, 20000
centres = r.standard_normal((classes, args.dim)).astype(np.float32) * 0.35
y = r.integers(0, classes, n)
E = (centres[y] + r.standard_normal((n, args.dim)).astype(np.float32)).astype(np.float32)
E.astype("<f4").tofile(os.path.join(args.out, "emb.f32"))
y.astype("<u4").tofile(os.path.join(args.out, "labels.u32"))
train = n * 4 // 5

from sklearn.linear_model import LogisticRegression  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402
import sklearn  # noqa: E402

with threadpool_limits(limits=args.threads):
    t = time.perf_counter()
    clf = LogisticRegression(max_iter=100, C=1.0).fit(E[:train], y[:train])
    dt = time.perf_counter() - t
acc = float((clf.predict(E[train:]) == y[train:]).mean())
print(json.dumps({"bench": "logreg", "peer": "sklearn_lbfgs", "version": sklearn.__version__,
                  "n": train, "dim": args.dim, "classes": classes, "threads": args.threads,
                  "seconds": round(dt, 4), "n_iter": int(clf.n_iter_.max()),
                  "held_out_accuracy": acc}))
