"""Image arrays <-> files, torch-free (numpy + pillow).

Model outputs are float NCHW in about [-1, 1]; files are uint8 HWC.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .files import atomic_file


def to_uint8(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) floats in [-1, 1] -> (N, H, W, C) uint8 (rounded, clipped)."""
    x = np.asarray(x, dtype=np.float32)
    return np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def make_grid(images: np.ndarray, nrow: int | None = None, pad: int = 2,
              pad_value: int = 0) -> np.ndarray:
    """Tile (N, H, W, C) uint8 images into one (rows*(H+pad)+pad, ..., C) image.

    `nrow` is the number of images per row (default: a near-square grid).
    """
    n, h, w, c = images.shape
    nrow = max(1, min(nrow or math.ceil(math.sqrt(n)), n))
    rows = math.ceil(n / nrow)
    out = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), pad_value, np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        out[y:y + h, x:x + w] = images[i]
    return out


def tile(images: np.ndarray, nrow: int | None = None) -> np.ndarray:
    """What `--out FILE` holds: one image as itself, several as a grid."""
    return images[0] if len(images) == 1 else make_grid(images, nrow)


RESAMPLE = ("nearest", "lanczos")


def enlarge(images: np.ndarray, scale: int, resample: str = "nearest") -> np.ndarray:
    """(N, H, W, C) or (H, W, C) uint8 -> `scale` times larger, for viewing small models'
    images. nearest keeps the pixels as they are (blocks); lanczos smooths them."""
    if scale == 1:
        return images
    if resample == "nearest":  # exact, and numpy alone
        return images.repeat(scale, axis=-3).repeat(scale, axis=-2)
    from PIL import Image

    if images.ndim == 3:
        return enlarge(images[None], scale, resample)[0]
    h, w = images.shape[1:3]
    return np.stack([np.asarray(Image.fromarray(im).resize(
        (w * scale, h * scale), Image.Resampling.LANCZOS)) for im in images])


def save_image(path: str | Path, image: np.ndarray, fmt: str | None = None) -> None:
    """Write an (H, W, C) uint8 image atomically; format from `fmt` or the suffix."""
    from PIL import Image  # pillow's import is not free; only pay it when writing

    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".") or "png").upper()
    fmt = {"JPG": "JPEG"}.get(fmt, fmt)
    img = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    with atomic_file(path) as f:
        img.save(f, format=fmt)
