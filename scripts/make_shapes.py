#!/usr/bin/env python3
"""Writes the small shapes image set the shipped workflows train on.

    python3 scripts/make_shapes.py [OUT]   # default: workflows/data/shapes

One sub-folder per concept (circle, square, triangle, cross), 150 PNG images
each, 48x48 RGB: a shape of the concept's hue (jittered), random size and
position, on a random dark smooth background. Deterministic (fixed seed),
standard library only.
"""
import random
import struct
import sys
import zlib
from pathlib import Path

SIZE = 48
PER_CONCEPT = 150
CONCEPTS = ["circle", "square", "triangle", "cross"]


def png(pixels, w, h):
    raw = b"".join(b"\x00" + bytes(pixels[y * w * 3:(y + 1) * w * 3]) for y in range(h))

    def chunk(tag, data):
        c = struct.pack(">I", len(data)) + tag + data
        return c + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def inside(concept, x, y, cx, cy, r):
    dx, dy = x - cx, y - cy
    if concept == "circle":
        return dx * dx + dy * dy <= r * r
    if concept == "square":
        return abs(dx) <= r * 0.85 and abs(dy) <= r * 0.85
    if concept == "triangle":
        return -r <= dy <= r * 0.8 and abs(dx) <= (dy + r) * 0.6
    if concept == "cross":
        return (abs(dx) <= r * 0.3 and abs(dy) <= r) or (abs(dy) <= r * 0.3 and abs(dx) <= r)
    raise ValueError(concept)


# Each concept's shapes lean to one hue, so the concepts separate clearly
# (by shape and by colour) and a network trained from scratch learns them
# within a quickstart's few minutes.
HUES = {"circle": (230, 60, 50), "square": (50, 200, 70), "triangle": (60, 90, 230), "cross": (230, 210, 40)}


def image(rng, concept):
    bg0 = [rng.randint(0, 110) for _ in range(3)]
    bg1 = [rng.randint(0, 110) for _ in range(3)]
    fg = [max(0, min(255, h + rng.randint(-40, 40))) for h in HUES[concept]]
    r = rng.uniform(9, 17)
    cx = rng.uniform(r + 2, SIZE - r - 2)
    cy = rng.uniform(r + 2, SIZE - r - 2)
    px = []
    for y in range(SIZE):
        t = y / (SIZE - 1)
        row_bg = [int(a + (b - a) * t) for a, b in zip(bg0, bg1)]
        for x in range(SIZE):
            px.extend(fg if inside(concept, x + 0.5, y + 0.5, cx, cy, r) else row_bg)
    return png(px, SIZE, SIZE)


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "workflows/data/shapes")
    rng = random.Random(20261126)
    for concept in CONCEPTS:
        folder = out / concept
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(PER_CONCEPT):
            (folder / f"{concept}_{i:03}.png").write_bytes(image(rng, concept))
    print(f"wrote {len(CONCEPTS) * PER_CONCEPT} images to {out}")


if __name__ == "__main__":
    main()
