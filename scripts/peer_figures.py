#!/usr/bin/env python3
"""The figures `../shared/peer/train_recipe.py` prints, computed on a wfrun run.

    peer_figures.py RUN [RUN...]
    peer_figures.py --pixels DATA [--size N]

The second form computes the same three figures on raw pixels instead of embeddings: each
image of DATA/train and DATA/eval (the folders train_recipe.py reads) resized to N x N
(default 32), RGB, scaled to [0, 1] -- the baseline an embedding must beat.

For each run folder: logistic regression fit on the training images' embeddings and scored
on the held-out ones (`lr_acc`), k-means NMI on the held-out embeddings (`nmi`, k = the
concepts, n_init 10, random_state 0), cosine 1-NN recall@1 of each held-out image among the
training images (`recall1`), all on L2-normalised embeddings exactly as the peer computes
them; with the per-epoch training loss and held-out accuracy from `metrics.jsonl` and the
last epoch's held-out / unseen MAP@R. One JSON line per run, so wfrun and PyTorch trained on
the same `train/` + `eval/` folders compare figure for figure.

Needs numpy, scikit-learn and safetensors (the peer's venv has them).
"""

import csv
import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import normalized_mutual_info_score


def unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def three(train, ytr, evaluated, yev, k) -> dict:
    """Logistic regression, k-means NMI and cosine recall@1, as the peer computes them."""
    etr, eev = unit(train), unit(evaluated)
    out = {}
    out["lr_acc"] = float(LogisticRegression(max_iter=2000).fit(etr, ytr).score(eev, yev))
    km = KMeans(k, n_init=10, random_state=0).fit(eev)
    out["nmi"] = float(normalized_mutual_info_score(yev, km.labels_))
    out["recall1"] = float(np.mean(ytr[np.argmax(eev @ etr.T, axis=1)] == yev))
    return out


def pixels(data: Path, size: int) -> dict:
    from PIL import Image

    names = sorted(d.name for d in (data / "train").iterdir() if d.is_dir())
    sets = {}
    for split in ("train", "eval"):
        X, y = [], []
        for c, name in enumerate(names):
            for f in sorted((data / split / name).iterdir()):
                img = Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR)
                X.append(np.asarray(img, dtype=np.float32).ravel() / 255.0)
                y.append(c)
        sets[split] = (np.stack(X), np.array(y))
    out = {"pixels": str(data), "size": size}
    out.update(three(*sets["train"], *sets["eval"], len(names)))
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def figures(run: Path) -> dict:
    vectors = load_file(str(run / "embeddings.safetensors"))
    labels = {"train": [], "eval": []}
    with open(run / "embeddings.csv", newline="") as f:
        for row in csv.DictReader(f):
            labels[row["split"]].append(row["concepts"].split(";")[0])
    names = sorted(set(labels["train"]))
    index = {n: i for i, n in enumerate(names)}
    ytr = np.array([index[c] for c in labels["train"]])
    yev = np.array([index.get(c, -1) for c in labels["eval"]])

    out = {"run": str(run)}
    out.update(three(vectors["train"], ytr, vectors["eval"], yev, len(names)))
    epochs = [json.loads(l) for l in open(run / "metrics.jsonl") if l.strip()]
    epochs = [e for e in epochs if "epoch" in e]
    out["epoch_loss"] = [round(e["train_loss"], 4) for e in epochs]
    out["epoch_acc"] = [round(e["eval"].get("accuracy") or 0.0, 4) for e in epochs]
    last = epochs[-1]["eval"] if epochs else {}
    for key, name in (("embeddings", "map_at_r"), ("unseen", "unseen_map_at_r")):
        judged = last.get(key)
        if judged:
            out[name] = round(judged["map_at_r"]["value"], 4)
            out[name.replace("map_at_r", "nmi_judged")] = round(judged["nmi"]["value"], 4)
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    if sys.argv[1] == "--pixels":
        size = int(sys.argv[sys.argv.index("--size") + 1]) if "--size" in sys.argv else 32
        print(json.dumps(pixels(Path(sys.argv[2]), size)), flush=True)
        sys.exit(0)
    for arg in sys.argv[1:]:
        print(json.dumps(figures(Path(arg))), flush=True)
