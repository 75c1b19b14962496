"""User images for invert, interpolate and score: files, folders or stdin,
decoded exactly as the model's training images were (crop, background, filter
and size come from the bundle's manifest)."""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bundle import Bundle
from .decode import Preprocess, decode_image, failure_reason
from .errors import UsageError


@dataclass(frozen=True)
class Source:
    name: str  # a display name, and the stem outputs are named after
    path: Path | None  # None for stdin


def preprocess_for(bundle: Bundle) -> Preprocess:
    data = bundle.manifest.get("training", {}).get("data", {})
    return Preprocess(resolution=bundle.resolution, crop=data.get("crop", "center"),
                      background=data.get("background", "white"),
                      resample=data.get("resample", "lanczos"))


def collect(args: list[str]) -> list[Source]:
    """Files as given, folders searched recursively (hidden entries skipped), '-' for stdin."""
    out: list[Source] = []
    for arg in args:
        if arg == "-":
            out.append(Source("stdin", None))
            continue
        p = Path(arg)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and not any(
                part.startswith(".") for part in f.relative_to(p).parts))
            out.extend(Source(str(f), f) for f in files)
        else:
            out.append(Source(arg, p))  # a missing file is reported when it is read
    if not out:
        raise UsageError("no input images", "name image files, folders, or - for stdin")
    return out


def read(source: Source, pre: Preprocess) -> np.ndarray:
    """(R, R, 3) uint8; raises ValueError with a short reason on any failure."""
    try:
        if source.path is None:
            return decode_image(io.BytesIO(sys.stdin.buffer.read()), pre)
        if source.path.is_dir():
            raise IsADirectoryError(21, "is a folder")
        if not source.path.exists():
            raise FileNotFoundError(2, "no such file")
        return decode_image(source.path, pre)
    except Exception as e:  # noqa: BLE001 - every failure becomes one line for the user
        reason = ("no such file" if isinstance(e, FileNotFoundError)
                  else "a folder, not an image" if isinstance(e, IsADirectoryError)
                  else failure_reason(e, source.path))
        raise ValueError(reason) from None


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [-1, 1], as in training."""
    return (images.astype(np.float32) / np.float32(127.5) - 1.0).transpose(0, 3, 1, 2).copy()
