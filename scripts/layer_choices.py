#!/usr/bin/env python3
"""Which layer of a trained BN-Inception (or ResNet) gives the best embedding of unseen concepts.

    layer_choices.py MODEL.onnx FOLDER [--train FOLDER]

MODEL.onnx is a run's network as `wfrun export RUN` writes it. Every concatenation (an
inception module's output) and residual addition of the graph becomes an extra output; its
feature map is average-pooled over space, L2-normalised, and judged on the images of FOLDER
(one sub-folder per concept) as wfrun judges embeddings: MAP@R and precision@1 (pytorch-
metric-learning's AccuracyCalculator) and NMI of k-means with one cluster per concept. The
images are preprocessed as the model's metadata says (shorter side to the image size,
bilinear, centre crop, ImageNet mean and std): wfrun's own preprocessing, within a pixel
level. One JSON line per layer, the network's own embedding (`embeddings`) first.
"""

import argparse
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import torch
from PIL import Image
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score


def images(folder):
    paths, labels = [], []
    for i, concept in enumerate(sorted(os.listdir(folder))):
        for f in sorted(os.listdir(os.path.join(folder, concept))):
            paths.append(os.path.join(folder, concept, f))
            labels.append(i)
    return paths, np.array(labels)


def preprocess(path, size, mean, std):
    img = Image.open(path).convert("RGB")
    w, h = img.size
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    img = img.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    img = img.crop((left, top, left + size, top + size))
    x = np.asarray(img, dtype=np.float32) / 255.0
    return ((x - mean) / std).transpose(2, 0, 1)


def grid_pool(o, g):
    """Average over each of g x g cells of the map (cells as adaptive pooling cuts them)."""
    n, c, h, w = o.shape
    if g == 1 or h < g or w < g:
        return o.mean(axis=(2, 3))
    cells = []
    for i in range(g):
        for j in range(g):
            r0, r1 = i * h // g, max((i + 1) * h // g, i * h // g + 1)
            c0, c1 = j * w // g, max((j + 1) * w // g, j * w // g + 1)
            cells.append(o[:, :, r0:r1, c0:c1].mean(axis=(2, 3)))
    return np.concatenate(cells, axis=1)


def judge(x, labels):
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    r = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r"),
                           k="max_bin_count").get_accuracy(torch.from_numpy(x.astype(np.float32)),
                                                           torch.from_numpy(labels))
    k = len(set(labels.tolist()))
    nmi = normalized_mutual_info_score(labels, KMeans(k, n_init=10, random_state=0).fit(x).labels_)
    return {"map_at_r": round(float(r["mean_average_precision_at_r"]), 4),
            "precision_at_1": round(float(r["precision_at_1"]), 4), "nmi": round(float(nmi), 4)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("folder")
    p.add_argument("--grid", type=int, default=1,
                   help="average-pool each map to GRID x GRID cells and concatenate them (1: global)")
    a = p.parse_args()
    m = onnx.load(a.model)
    meta = {q.key: q.value for q in m.metadata_props}
    size = int(meta["image_size"])
    mean = np.array(json.loads(meta["mean"]), dtype=np.float32)
    std = np.array(json.loads(meta["std"]), dtype=np.float32)
    layers = [n.output[0] for n in m.graph.node if n.op_type in ("Concat", "Add")]
    existing = {o.name for o in m.graph.output}
    for name in layers:
        if name not in existing:
            m.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    paths, labels = images(a.folder)
    names = ["embeddings"] + layers
    pooled = {n: [] for n in names}
    for start in range(0, len(paths), 64):
        batch = np.stack([preprocess(q, size, mean, std) for q in paths[start:start + 64]])
        outs = session.run(names, {"images": batch})
        for n, o in zip(names, outs):
            pooled[n].append(o if o.ndim == 2 else grid_pool(o, a.grid))
    for n in names:
        x = np.concatenate(pooled[n]).astype(np.float64)
        print(json.dumps({"layer": n, "grid": a.grid, "dim": x.shape[1], **judge(x, labels)}),
              flush=True)


if __name__ == "__main__":
    main()
