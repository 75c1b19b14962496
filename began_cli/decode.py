"""Decode one image file the way training does: any Pillow mode -> RGB with
transparency composited on a background colour, EXIF orientation applied, a
centre crop or pad to a square, and a resize to the model's resolution.

Shared by `began train` (through the folder cache) and the CLI (`invert`,
`interpolate`, `score`), so a user's image meets the model exactly as the
training images did. numpy + Pillow only.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageColor, ImageOps, UnidentifiedImageError

_CROPS = ("center", "pad")
_RESAMPLE = {
    "lanczos": Image.Resampling.LANCZOS,
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "box": Image.Resampling.BOX,
    "nearest": Image.Resampling.NEAREST,
}
# Modes whose pixels carry an alpha channel of their own.
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
# Grayscale modes wider than 8 bits, which Pillow's convert("L") would clip.
_WIDE_GRAY_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}

BOMB_REASON = "too large (decompression bomb)"


@dataclass(frozen=True)
class Preprocess:
    """How each image becomes an (R, R, 3) uint8 array."""

    resolution: int  # output side, e.g. 64
    crop: str = "center"  # "center": centred square crop; "pad": pad to square with background
    background: str = "white"  # any PIL colour; transparent pixels are composited onto it
    resample: str = "lanczos"  # "lanczos" | "bicubic" | "bilinear" | "box" | "nearest"
    grey: bool = False  # luma (ITU-R 601-2, Pillow's "L") in all three channels: grey models

    def __post_init__(self) -> None:
        r = self.resolution
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1:
            raise ValueError(f"resolution must be an integer >= 1, got {r!r}")
        object.__setattr__(self, "resolution", int(r))  # numpy ints would break the JSON key
        if self.crop not in _CROPS:
            raise ValueError(f"crop must be one of {', '.join(_CROPS)}; got {self.crop!r}")
        if self.resample not in _RESAMPLE:
            raise ValueError(
                f"resample must be one of {', '.join(_RESAMPLE)}; got {self.resample!r}")
        background_rgb(self.background)  # raises ValueError on a bad colour
        if not isinstance(self.grey, bool):
            raise ValueError(f"grey must be true or false; got {self.grey!r}")


def background_rgb(colour: str) -> tuple[int, int, int]:
    try:
        rgb = ImageColor.getrgb(colour)
    except (ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"background must be a colour Pillow understands "
                         f"(e.g. 'white', '#10a0ff', 'rgb(1,2,3)'); got {colour!r}") from e
    return (rgb[0], rgb[1], rgb[2])  # any alpha in the colour is ignored: the output is opaque


def decode_image(path: str | Path | BinaryIO, pre: Preprocess) -> np.ndarray:
    """Decode one file to an (R, R, 3) uint8 array. Raises on any failure.

    Decompression bombs raise (Pillow's warning is turned into an error here),
    truncated files raise from `load()`.
    """
    bg = background_rgb(pre.background)
    with warnings.catch_warnings():
        # Pillow's other warnings (odd EXIF, palette transparency, ...) are noise
        # over thousands of files; the bomb warning must become a failure.
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            img.load()  # first frame; truncated data fails here
            img = ImageOps.exif_transpose(img)  # keeps mode and info (transparency)
            rgb = _to_rgb(img, bg)
    square = _to_square(rgb, pre.crop, bg)
    out = square.resize((pre.resolution, pre.resolution), resample=_RESAMPLE[pre.resample])
    if pre.grey:  # grey already (R = G = B) stays exactly as it is
        out = out.convert("L").convert("RGB")
    return np.ascontiguousarray(np.asarray(out, dtype=np.uint8))


def _to_rgb(img: Image.Image, bg: tuple[int, int, int]) -> Image.Image:
    """Any Pillow mode -> RGB; transparency is composited onto `bg`."""
    if img.mode in _WIDE_GRAY_MODES:
        return _wide_gray_to_l(img).convert("RGB")
    if img.mode == "1":
        img = img.convert("L")
    # Palettes always go via RGBA so palette transparency (in info or in an
    # RGBA palette) is honoured; "L"/"RGB" may carry a tRNS colour key too.
    if img.mode in _ALPHA_MODES or img.mode == "P" or "transparency" in img.info:
        return _composite(img.convert("RGBA"), bg)
    return img if img.mode == "RGB" else img.convert("RGB")  # L, CMYK, YCbCr, ...


def _composite(rgba: Image.Image, bg: tuple[int, int, int]) -> Image.Image:
    """Straight-alpha RGBA over an opaque background: round((c*a + bg*(255-a)) / 255)."""
    canvas = Image.new("RGB", rgba.size, bg)
    canvas.paste(rgba, (0, 0), rgba)  # paste with its own alpha as the mask: exact rounding
    return canvas


def _wide_gray_to_l(img: Image.Image) -> Image.Image:
    """16/32-bit and float grayscale -> 8-bit "L", scaled rather than clipped."""
    arr = np.asarray(img)
    if img.mode.startswith("I;16"):
        # round(v / 257) in integers: 65535 -> 255, 32768 -> 128
        out = (arr.astype(np.uint32) + 128) // 257
    else:
        values = np.nan_to_num(arr.astype(np.float64))
        hi = float(values.max()) if values.size else 0.0
        if img.mode == "F" and hi <= 1.0:
            scale = 255.0  # float images are usually 0..1
        elif hi > 255:
            scale = 1 / 257  # assume a 16-bit range
        else:
            scale = 1.0  # already 0..255
        out = np.floor(values * scale + 0.5)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "L")


def _to_square(img: Image.Image, crop: str, bg: tuple[int, int, int]) -> Image.Image:
    w, h = img.size
    if w == h:
        return img
    if crop == "center":
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        return img.crop((left, top, left + side, top + side))
    side = max(w, h)
    canvas = Image.new("RGB", (side, side), bg)
    canvas.paste(img, ((side - w) // 2, (side - h) // 2))
    return canvas


def failure_reason(exc: BaseException, path: str | Path | None = None) -> str:
    """A short human reason for a file that did not decode."""
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return BOMB_REASON
    try:
        if path is not None and os.path.getsize(path) == 0:
            return "empty file"
    except OSError:
        pass
    if isinstance(exc, UnidentifiedImageError):
        return "not an image (cannot identify image file)"
    if isinstance(exc, MemoryError):
        return "too large (out of memory)"
    if isinstance(exc, PermissionError):
        return "unreadable (permission denied)"
    if isinstance(exc, FileNotFoundError):
        return "file disappeared while loading"
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if "truncat" in msg.lower():
        return "truncated image"
    detail = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    return f"cannot decode ({detail[:120]})"
