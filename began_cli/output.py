"""The CLI's contract with shell scripts.

- Data on stdout: with --json, one JSON object per output, one per line.
- Everything human on stderr; nothing but errors with -q; progress bars only
  when stderr is a terminal (rich honours NO_COLOR).
- Existing files are kept unless --overwrite; --skip-existing makes a rerun
  write only what is missing. Files are written to a temp name and renamed.
- `--out -` writes one image to stdout, never to a terminal.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BeganError, UsageError
from . import files

IMAGE_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP", "gif": "GIF"}
FORMATS = ("png", "jpg", "webp", "npy")


class Out:
    def __init__(self, as_json: bool = False, quiet: bool = False):
        self.as_json, self.quiet = as_json, quiet

    def say(self, msg: str) -> None:
        if not self.quiet:
            print(msg, file=sys.stderr, flush=True)

    def record(self, obj: dict[str, Any]) -> None:
        if self.as_json:
            sys.stdout.write(json.dumps(obj) + "\n")
            sys.stdout.flush()

    @contextlib.contextmanager
    def progress(self, total: int, label: str) -> Iterator[Any]:
        """Yields advance(k); a rich bar only on a terminal and without -q."""
        if self.quiet or not sys.stderr.isatty() or total < 2:
            yield lambda k=1: None
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        bar = Progress(label, BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                       console=Console(stderr=True), transient=True)
        task = bar.add_task(label, total=total)
        with bar:
            yield lambda k=1: bar.advance(task, k)


def output_format(path: Path | None, fmt: str | None, default: str = "png",
                  allowed: Sequence[str] = FORMATS) -> str:
    """--format wins; else the suffix of --out; else `default`."""
    if fmt:
        fmt = fmt.lower()
    elif path is not None and str(path) != "-" and path.suffix:
        fmt = path.suffix.lower().lstrip(".")
    else:
        fmt = default
    fmt = "jpg" if fmt == "jpeg" else fmt
    if fmt not in allowed:
        raise UsageError(f"unknown output format {fmt!r}", f"use one of: {', '.join(allowed)}")
    return fmt


def plan_writes(paths: Sequence[Path], overwrite: bool, skip_existing: bool) -> list[bool]:
    """Which of `paths` to write. Existing files are an error unless a flag says otherwise."""
    exists = [p.exists() for p in paths]
    if overwrite or not any(exists):
        return [True] * len(paths)
    if skip_existing:
        return [not e for e in exists]
    refuse_existing(next(p for p, e in zip(paths, exists) if e), sum(exists))


def refuse_existing(first: Path, count: int) -> None:
    raise BeganError(f"{first} already exists" + (f" (and {count - 1} more of the outputs)"
                                                   if count > 1 else ""),
                     "pass --overwrite to replace, or --skip-existing to keep existing files")


def ensure_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BeganError(f"cannot create {path} ({e.strerror})",
                         "choose a folder you can write to") from None


def encode(image: np.ndarray, fmt: str) -> bytes:
    """An (H, W, 3) uint8 image as file bytes; for npy, any array."""
    buf = io.BytesIO()
    if fmt == "npy":
        np.save(buf, image, allow_pickle=False)
    else:
        from PIL import Image

        kwargs = {"quality": 95} if fmt in ("jpg", "webp") else {}
        Image.fromarray(image).save(buf, format=IMAGE_FORMATS[fmt], **kwargs)
    return buf.getvalue()


def write_bytes(path: Path, data: bytes) -> None:
    """Atomically, with errors a user can act on."""
    if str(path) == "-":
        if sys.stdout.isatty():
            raise UsageError("refusing to write a binary image to a terminal",
                             "redirect stdout (> grid.png) or pass --out FILE")
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    try:
        files.write_bytes(path, data, fsync=False)
    except OSError as e:
        raise BeganError(f"cannot write {path} ({e.strerror or e})",
                         "check that the folder exists and is writable") from None
