#!/usr/bin/env python3
"""Writes tests/data/judge.json: fixed embeddings, concepts and clusterings
with the figures the metric-learning field's own code gives for them, for
tests/judge.rs to check wfrun's `steps::judge` against (not against itself).

- precision@1, R-precision and MAP@R: pytorch-metric-learning's
  AccuracyCalculator (every image a query against the others; unit-length
  embeddings, so its L2 neighbours are the cosine ones);
- recall@k: by its definition, with numpy (pytorch-metric-learning has none);
- NMI and AMI: scikit-learn (arithmetic-mean normalisation, its default).

    python scripts/make_judge_fixtures.py [OUT]   (needs torch, numpy,
    scikit-learn, faiss-cpu and pytorch-metric-learning: the peer's venv)
"""
import json
import sys

import numpy as np
import torch
from pytorch_metric_learning import __version__ as pml_version
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from sklearn import __version__ as sklearn_version
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

out = sys.argv[1] if len(sys.argv) > 1 else "tests/data/judge.json"
rng = np.random.default_rng(20261130)
cases = []
# Concept sizes (one concept of a single image: a "lone" query, left out),
# dimension, and how far apart the concepts' centres are.
for sizes, dim, spread in [([40, 30, 25, 24, 1], 16, 0.45), ([12, 9, 7, 3, 2], 8, 0.5), ([60, 60], 4, 0.3)]:
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(sizes)])
    rng.shuffle(labels)
    centres = rng.standard_normal((len(sizes), dim)) * spread
    x = centres[labels] + rng.standard_normal((len(labels), dim)) * 0.6
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x = x.astype(np.float32)
    # A clustering to compare with: the concepts, a third of them redrawn,
    # into one cluster more than there are concepts.
    clusters = labels.copy()
    redraw = rng.random(len(labels)) < 0.33
    clusters[redraw] = rng.integers(0, len(sizes) + 1, redraw.sum())

    calc = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
        k="max_bin_count",
    )
    acc = calc.get_accuracy(torch.from_numpy(x), torch.from_numpy(labels))

    sim = x.astype(np.float64) @ x.astype(np.float64).T
    np.fill_diagonal(sim, -np.inf)
    order = np.argsort(-sim, axis=1, kind="stable")
    counts = np.bincount(labels)
    recall = {}
    for k in (1, 2, 4, 8):
        hits = [
            float((labels[order[q, :k]] == labels[q]).any())
            for q in range(len(labels))
            if counts[labels[q]] > 1
        ]
        recall[str(k)] = float(np.mean(hits))

    cases.append(
        {
            "embeddings": x.tolist(),
            "labels": labels.tolist(),
            "clusters": clusters.tolist(),
            "precision_at_1": float(acc["precision_at_1"]),
            "r_precision": float(acc["r_precision"]),
            "map_at_r": float(acc["mean_average_precision_at_r"]),
            "recall_at_k": recall,
            "nmi": float(normalized_mutual_info_score(labels, clusters)),
            "ami": float(adjusted_mutual_info_score(labels, clusters)),
        }
    )

with open(out, "w") as f:
    json.dump(
        {
            "made_by": "scripts/make_judge_fixtures.py",
            "pytorch_metric_learning": pml_version,
            "scikit_learn": sklearn_version,
            "cases": cases,
        },
        f,
    )
    f.write("\n")
print(json.dumps([{k: v for k, v in c.items() if k not in ("embeddings", "labels", "clusters")} for c in cases], indent=1))
