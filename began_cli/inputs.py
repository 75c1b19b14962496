"""User images for invert, interpolate and score: files, folders or stdin,
decoded exactly as the model's training images were (crop, background, filter
and size come from the bundle's manifest)."""

from __future__ import annotations

import io
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bundle import Bundle
from .bundle.spec import manifest_preprocess
from .decode import Preprocess, decode_image, failure_reason
from .errors import BeganError

# The most bytes one input image may have: far above any photo, far below what would
# exhaust a machine (stdin is read into memory, a file is opened only below this).
MAX_IMAGE_BYTES = 256 << 20


@dataclass(frozen=True)
class Source:
    name: str  # a display name, and the stem outputs are named after
    path: Path | None  # None for stdin


def preprocess_for(bundle: Bundle) -> Preprocess:
    return manifest_preprocess(bundle.manifest)  # checked when the bundle was loaded


def collect(args: list[str]) -> list[Source]:
    """Files as given, folders searched recursively (hidden entries skipped), '-' for stdin.
    Inputs that name nothing usable are an error of the files, not of the usage: exit 1."""
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
        raise BeganError("no input images" + (f" in {', '.join(args)}" if args else ""),
                         "name image files, folders that hold images, or - for stdin")
    return out


def read(source: Source, pre: Preprocess) -> np.ndarray:
    """(R, R, 3) uint8; raises ValueError with a short reason on any failure."""
    try:
        if source.path is None:
            return decode_image(io.BytesIO(read_stdin()), pre)
        with open_image_file(source.path) as f:
            return decode_image(f, pre)
    except _Refused as e:
        raise ValueError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - every failure becomes one line for the user
        reason = ("no such file" if isinstance(e, FileNotFoundError)
                  else failure_reason(e, source.path))
        raise ValueError(reason) from None


class _Refused(Exception):
    """An input refused before decoding; its text is the reason."""


def read_stdin(limit: int | None = None) -> bytes:
    """All of stdin, but never more than `limit` (MAX_IMAGE_BYTES) bytes in memory."""
    limit = MAX_IMAGE_BYTES if limit is None else limit
    stream = sys.stdin
    if stream is None:
        raise _Refused("closed (nothing to read)")
    if stream.isatty():
        raise _Refused("a terminal, not an image (pipe one in: < x.png)")
    data = stream.buffer.read(limit + 1)
    if len(data) > limit:
        raise _Refused(f"more than {limit >> 20} MB: too large for an image")
    if not data:
        raise _Refused("empty file")
    return data


def open_image_file(path: Path, limit: int | None = None):
    """The file opened for reading if it is a regular file of at most `limit`
    (MAX_IMAGE_BYTES) bytes. A FIFO or a device is refused, never opened or waited on."""
    limit = MAX_IMAGE_BYTES if limit is None else limit
    st = os.stat(path)  # FileNotFoundError -> "no such file"
    _check_image_stat(st, limit)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        _check_image_stat(os.fstat(fd), limit)  # the same file as checked, not a swap
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _check_image_stat(st: os.stat_result, limit: int) -> None:
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        raise _Refused("a folder, not an image")
    if not stat.S_ISREG(mode):
        raise _Refused("a FIFO, not an image file" if stat.S_ISFIFO(mode)
                       else "a device, not an image file" if stat.S_ISCHR(mode)
                       or stat.S_ISBLK(mode) else "not a regular file")
    if st.st_size > limit:
        raise _Refused(f"too large ({st.st_size / (1 << 20):,.0f} MB; images up to "
                       f"{limit >> 20} MB are read)")


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [-1, 1], as in training."""
    return (images.astype(np.float32) / np.float32(127.5) - 1.0).transpose(0, 3, 1, 2).copy()
