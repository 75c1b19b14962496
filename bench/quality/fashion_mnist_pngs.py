"""Write Debian's Fashion-MNIST (`apt install dataset-fashion-mnist`) as PNG folders.

    python bench/quality/fashion_mnist_pngs.py OUT_DIR [--split train|test|both] [--limit N]

`began train` reads image folders; this turns the IDX files into OUT_DIR/train/<label>/*.png
and OUT_DIR/test/<label>/*.png (28x28 grey; the trainer converts them to RGB).
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np
from PIL import Image

SRC = Path("/usr/share/datasets/fashion-mnist")
LABELS = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
          "boot"]


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def write_split(split: str, out: Path, limit: int | None) -> int:
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(SRC / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(SRC / f"{prefix}-labels-idx1-ubyte.gz")
    n = len(images) if limit is None else min(limit, len(images))
    for i in range(n):
        folder = out / split / LABELS[labels[i]]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(folder / f"{i:05d}.png")
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--split", choices=["train", "test", "both"], default="both")
    ap.add_argument("--limit", type=int)
    args = ap.parse_args()
    for split in (["train", "test"] if args.split == "both" else [args.split]):
        print(f"{split}: {write_split(split, args.out, args.limit)} images -> {args.out / split}")


if __name__ == "__main__":
    main()
