#!/usr/bin/env python3
"""Writes a folder of JPEG photographs for the embedding benchmarks: random
crops (200-400 px a side, quality 90) of the two photographs scikit-learn
ships (`sklearn.datasets.load_sample_images`: a temple in China, a flower),
in two concept sub-folders (ImageFolder needs them; wfrun reads either).

    python scripts/make_photo_folder.py OUT_FOLDER [COUNT]"""
import os
import random
import sys

from PIL import Image
from sklearn.datasets import load_sample_images

out = sys.argv[1]
count = int(sys.argv[2]) if len(sys.argv) > 2 else 512
photos = load_sample_images().images
rng = random.Random(0)
for i in range(count):
    c = i % len(photos)
    img = Image.fromarray(photos[c])
    w = rng.randint(200, 400)
    h = rng.randint(200, 400)
    w, h = min(w, img.width), min(h, img.height)
    x, y = rng.randint(0, img.width - w), rng.randint(0, img.height - h)
    folder = os.path.join(out, f"photo{c}")
    os.makedirs(folder, exist_ok=True)
    img.crop((x, y, x + w, y + h)).save(os.path.join(folder, f"{i:05d}.jpg"), quality=90)
