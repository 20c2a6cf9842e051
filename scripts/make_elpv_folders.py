#!/usr/bin/env python3
"""Writes real camera images of solar cells as image folders for judging
embeddings beside raw pixels and PyTorch: the 2,624 electroluminescence
images (300 x 300 grey) of mono- and polycrystalline cells that the PyPI
package elpv-dataset ships (`elpv_dataset.load_dataset`, Deitsch et al.,
"Automatic classification of defective photovoltaic module cells in
electroluminescence images", 2019; CC BY-NC-SA 4.0), one concept per cell
type and expert-given defect probability (0, 1/3, 2/3, 1): eight concepts,
50 to 920 images each. Every fifth image of each concept, in the package's
order, is held out:

    OUT/train/<type>_<defect %>/cellNNNN.png   2,102 images
    OUT/eval/<type>_<defect %>/cellNNNN.png      522 images

The same folders serve wfrun (`data { train = "OUT/train"  eval = "OUT/eval" }`)
and `../shared/peer/train_recipe.py --data OUT`. The package has no
concepts to hold out of training, so these folders judge seen concepts
only.

    python scripts/make_elpv_folders.py OUT
"""
import argparse
import os
import shutil

import elpv_dataset

p = argparse.ArgumentParser()
p.add_argument("out")
args = p.parse_args()
root = os.path.join(os.path.dirname(elpv_dataset.__file__), "data")
seen = {}
with open(os.path.join(root, "labels.csv")) as f:
    for line in f:
        path, probability, kind = line.split()
        concept = f"{kind}_{round(float(probability) * 100):03d}"
        n = seen.get(concept, 0)
        seen[concept] = n + 1
        split = "eval" if n % 5 == 4 else "train"
        folder = os.path.join(args.out, split, concept)
        os.makedirs(folder, exist_ok=True)
        shutil.copyfile(os.path.join(root, path), os.path.join(folder, os.path.basename(path)))
for concept in sorted(seen):
    n = seen[concept]
    print(f"{concept}: {n - n // 5} train, {n // 5} eval")
