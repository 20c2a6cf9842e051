#!/usr/bin/env python3
"""The raw-pixel baseline for judging embeddings: each image of a folder of
concept sub-folders as its pixels (resized to SIZE x SIZE, RGB, scaled to
[0, 1], the vector compared by cosine), judged as wfrun's `steps::judge`
judges embeddings: precision@1, R-precision, MAP@R, recall@1/2/4/8 (each
image a query against the others; a concept's lone image left out), and NMI
and AMI of k-means (scikit-learn, k = the number of concepts) against the
concepts, each with a percentile bootstrap 95% interval (1,000 resamples of
the queries; for NMI and AMI, whose resamples with replacement are biased
upwards, ± 1.96 standard deviations of 200 half-samples drawn without
replacement, as wfrun's `steps::judge`). The retrieval figures
are checked here against pytorch-metric-learning's AccuracyCalculator.

    python scripts/judge_pixels.py FOLDER [--size 32] [--seed 0]
Prints one JSON line.
"""
import argparse
import json
import os

import numpy as np
from PIL import Image
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

p = argparse.ArgumentParser()
p.add_argument("folder")
p.add_argument("--size", type=int, default=32)
p.add_argument("--seed", type=int, default=0)
args = p.parse_args()

concepts = sorted(d for d in os.listdir(args.folder) if os.path.isdir(os.path.join(args.folder, d)))
X, y = [], []
for c, name in enumerate(concepts):
    folder = os.path.join(args.folder, name)
    for f in sorted(os.listdir(folder)):
        img = Image.open(os.path.join(folder, f)).convert("RGB").resize((args.size, args.size), Image.BILINEAR)
        X.append(np.asarray(img, dtype=np.float32).ravel() / 255.0)
        y.append(c)
X, y = np.stack(X), np.array(y)
U = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
counts = np.bincount(y)
n = len(y)

p1, rp, mapr, rec = [], [], [], {k: [] for k in (1, 2, 4, 8)}
for start in range(0, n, 512):
    sim = U[start:start + 512] @ U.T
    for r in range(sim.shape[0]):
        sim[r, start + r] = -np.inf
    order = np.argsort(-sim, axis=1, kind="stable")
    for r in range(sim.shape[0]):
        q = start + r
        R = counts[y[q]] - 1
        if R == 0:
            continue
        same = y[order[r]] == y[q]
        p1.append(float(same[0]))
        hits = np.cumsum(same[:R])
        rp.append(hits[-1] / R)
        mapr.append(float(np.sum(same[:R] * hits / np.arange(1, R + 1)) / R))
        for k in rec:
            rec[k].append(float(same[:k].any()))

try:  # the same definitions as pytorch-metric-learning's, where it is installed
    import torch
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    acc = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"), k="max_bin_count"
    ).get_accuracy(torch.from_numpy(U), torch.from_numpy(y))
    for ours, theirs in [(p1, "precision_at_1"), (rp, "r_precision"), (mapr, "mean_average_precision_at_r")]:
        assert abs(np.mean(ours) - acc[theirs]) < 1e-4, (theirs, np.mean(ours), acc[theirs])
except ImportError:
    pass

rng = np.random.default_rng(args.seed)


def interval(values, resamples=1000):
    v = np.asarray(values)
    means = [v[rng.integers(0, len(v), len(v))].mean() for _ in range(resamples)]
    return {"value": float(v.mean()), "low": float(np.percentile(means, 2.5)), "high": float(np.percentile(means, 97.5))}


clusters = KMeans(n_clusters=len(concepts), n_init=3, random_state=args.seed).fit_predict(U)
nmis, amis = [], []
for _ in range(200):
    i = rng.permutation(n)[: n // 2]
    nmis.append(normalized_mutual_info_score(y[i], clusters[i]))
    amis.append(adjusted_mutual_info_score(y[i], clusters[i]))


def cluster_interval(value, draws, low=0.0):
    half = 1.96 * float(np.std(draws, ddof=1))
    return {"value": float(value), "low": max(low, value - half), "high": min(1.0, value + half)}


print(json.dumps({
    "folder": args.folder,
    "size": args.size,
    "images": n,
    "concepts": len(concepts),
    "precision_at_1": interval(p1),
    "r_precision": interval(rp),
    "map_at_r": interval(mapr),
    "recall_at_k": {str(k): interval(v) for k, v in rec.items()},
    "nmi": cluster_interval(normalized_mutual_info_score(y, clusters), nmis),
    "ami": cluster_interval(adjusted_mutual_info_score(y, clusters), amis, low=-1.0),
}))
