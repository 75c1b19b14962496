"""The CLI's contract with shell scripts.

- Data on stdout: with --json, one strict JSON object per output, one per line
  (never NaN or Infinity: a number that is not finite is written as null).
- Everything human on stderr (tables, progress, warnings; the provider line
  only with -v); nothing but errors with -q; progress bars only when stderr is
  a terminal (rich honours NO_COLOR).
- One output rule (targets.py): an existing file an output is named after is
  replaced, atomically; --no-clobber refuses instead, --skip-existing keeps it.
  Never replaced: a folder, and a training run's or a model bundle's own files.
  Files are written to a temp name and renamed; temp files of killed runs are
  removed when a later run writes there.
- `--out -` writes one image to stdout, never to a terminal.
- stdout that is closed or full is one clear error (a reader that went away,
  `| head`, is a quiet exit); a write error that affects a whole folder (full
  disk, read-only) stops a many-file command at once with one error.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EXIT_FATAL, EXIT_PARTIAL, BeganError, StdoutError, UsageError
from . import files, voice
from .targets import refuse_managed_folder

IMAGE_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP", "gif": "GIF"}
FORMATS = ("png", "jpg", "webp", "npy")
# The largest side each format can store (Pillow's encoders refuse more).
MAX_SIDE = {"png": 1 << 31, "jpg": 65500, "webp": 16383, "gif": 65535}
MAX_SHOWN = 10  # per-item failure lines printed by a many-output command


def stdout_text(text: str, remedy: str = "") -> None:
    """The command's output on stdout, flushed; errors become StdoutError (BrokenPipeError,
    a reader that left, is let through for app.run to end quietly)."""
    stream = sys.stdout
    if stream is None:
        raise StdoutError("stdout is closed, and this command's output goes there",
                          "give the command a stdout (> out.txt)" + remedy)
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        raise
    except (OSError, ValueError) as e:  # ValueError: write to a closed file
        raise StdoutError(f"cannot write to stdout ({getattr(e, 'strerror', None) or e})",
                          "redirect stdout to a file on a disk with space" + remedy) from None


def stdout_bytes(data: bytes) -> None:
    stream = sys.stdout
    if stream is None:
        raise StdoutError("stdout is closed, and --out - writes the image there",
                          "redirect stdout (> grid.png) or pass --out FILE")
    try:
        stream.buffer.write(data)
        stream.flush()
    except BrokenPipeError:
        raise
    except (OSError, ValueError) as e:
        raise StdoutError(f"cannot write to stdout ({getattr(e, 'strerror', None) or e})",
                          "redirect stdout to a file on a disk with space, or pass --out FILE"
                          ) from None


def finite(obj: Any) -> Any:
    """obj with every float that is not finite replaced by None (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def json_text(obj: Any) -> str:
    return json.dumps(finite(obj), allow_nan=False)


class Out:
    def __init__(self, as_json: bool = False, quiet: bool = False):
        self.as_json, self.quiet = as_json, quiet or voice.quiet()
        if as_json and sys.stdout is None:  # refuse before any work, not after it
            raise StdoutError("stdout is closed, and --json writes there",
                              "give the command a stdout (> out.jsonl), or drop --json")

    def say(self, msg: str) -> None:
        if not self.quiet:
            print(msg, file=sys.stderr, flush=True)

    def problem(self, msg: str) -> None:
        """A per-item failure line; shown even with -q (it is an error)."""
        print(msg, file=sys.stderr, flush=True)

    def record(self, obj: dict[str, Any]) -> None:
        if self.as_json:
            stdout_text(json_text(obj) + "\n", ", or drop --json")

    @contextlib.contextmanager
    def progress(self, total: int, label: str) -> Iterator[Any]:
        """Yields advance(k); a rich bar only on a terminal and without -q."""
        if self.quiet or sys.stderr is None or not sys.stderr.isatty() or total < 2:
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


def ensure_dir(path: Path) -> None:
    """Create an output folder (and its parents), and remove the temp files that killed
    runs of began left in it."""
    refuse_managed_folder(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as e:
        raise WriteError(path, e, f"{path} exists and is not a folder") from None
    except OSError as e:
        raise WriteError(path, e, f"cannot create {path} ({_reason(e)})") from None
    files.remove_stale_temps(path)


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


# Errors that no other file in the same folder would escape: stop, do not try the rest.
FOLDER_WIDE = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
               errno.ENOENT, errno.EIO, getattr(errno, "EDQUOT", errno.ENOSPC)}
_HINTS = {
    errno.ENOSPC: "free some space or choose another folder; a rerun with --skip-existing "
                  "writes only what is missing",
    errno.EROFS: "that file system is read-only: choose a folder you can write to",
    errno.ENOTDIR: "part of that path is a file, not a folder: choose a folder you can "
                   "write to",
    errno.ENAMETOOLONG: "choose a shorter name",
    errno.EEXIST: "choose a folder name that is free, or an existing folder",
}
if hasattr(errno, "EDQUOT"):
    _HINTS[errno.EDQUOT] = _HINTS[errno.ENOSPC]


class WriteError(BeganError):
    """An output file (or folder) that could not be written."""

    def __init__(self, path: Path, e: OSError, message: str | None = None):
        self.path, self.errno = path, e.errno
        self.folder_wide = e.errno in FOLDER_WIDE
        hint = _HINTS.get(e.errno, "check that the folder exists and is writable")
        super().__init__(message or f"cannot write {path} ({_reason(e)})", hint)


def _reason(e: OSError) -> str:
    return e.strerror or str(e)


def write_bytes(path: Path, data: bytes) -> None:
    """Atomically, with errors a user can act on (WriteError, StdoutError)."""
    if str(path) == "-":
        if sys.stdout is not None and sys.stdout.isatty():
            raise UsageError("refusing to write a binary image to a terminal",
                             "redirect stdout (> grid.png) or pass --out FILE")
        stdout_bytes(data)
        return
    try:
        files.write_bytes(path, data, fsync=False)
    except OSError as e:
        raise WriteError(path, e) from None


class Tally:
    """Outcomes of a command that writes many outputs.

    A failed item is a `failed:` line (the first MAX_SHOWN of them); `finish()` ends
    with one error and one hint: exit 3 when some were written, 1 when none were. A
    write error that affects the whole folder (full disk, read-only) is `stop()`ped at
    once, as one error, instead of being repeated for every remaining item."""

    def __init__(self, out: Out, total: int, noun: str = "files"):
        self.out, self.total, self.noun = out, total, noun
        self.written = 0
        self.failed = 0

    def ok(self) -> None:
        self.written += 1

    def fail(self, what: str, reason: str) -> None:
        self.failed += 1
        if self.failed <= MAX_SHOWN:
            self.out.problem(f"failed: {what}: {reason}")
        elif self.failed == MAX_SHOWN + 1:
            self.out.problem("failed: (more failures are counted, not shown)")

    def stop(self, e: BeganError) -> None:
        raise BeganError(f"{e.message}; stopped after writing {self.written} of {self.total} "
                         f"{self.noun}", e.hint, EXIT_PARTIAL if self.written else EXIT_FATAL)

    def finish(self, verb: str = "written", hint: str | None = None) -> None:
        if not self.failed:
            return
        raise BeganError(f"{self.failed} of {self.total} {self.noun} could not be {verb}"
                         + (f" ({self.written} were)" if self.written else ""),
                         hint or "see the failed: lines above; a rerun with --skip-existing "
                                 "redoes only what is missing",
                         EXIT_PARTIAL if self.written else EXIT_FATAL)
