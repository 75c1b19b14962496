"""Reading files a user (or anyone) may have put there, bounded: regular files only,
size checked before a byte is read, never blocking on a FIFO, never opening a device.

files.py is the other half (every file began creates). A bundle's files, its
manifest and card, a run's config.json and stats.jsonl and cache entries are all
read through here, so a link to /dev/zero or a 6 GB file is refused in one line
instead of filling memory. Torch-free.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

CLOEXEC = getattr(os, "O_CLOEXEC", 0)
NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO fails at once instead of waiting for a peer
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
BINARY = getattr(os, "O_BINARY", 0)


class Unreadable(Exception):
    """`str(e)` completes "PATH ..." ("is a FIFO, not a file", "is missing", ...)."""


def kind_of(mode: int) -> str:
    return ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file")


def check_regular(st: os.stat_result, max_bytes: int, what: str = "such a file") -> None:
    if not stat.S_ISREG(st.st_mode):
        raise Unreadable(f"is {kind_of(st.st_mode)}, not a file")
    if st.st_size > max_bytes:
        raise Unreadable(f"is {st.st_size:,} bytes, more than {what} may be ({max_bytes:,})")


def open_bounded(path: str | Path, max_bytes: int, follow: bool = True,
                 what: str = "such a file") -> tuple[int, int]:
    """(fd, size) of `path` if it is a regular file of at most `max_bytes` (checked before
    opening and, against a swap, on the opened file). follow=False: a final symlink is
    refused. Raises Unreadable (FileNotFoundError's text: "is missing")."""
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except FileNotFoundError:
        raise Unreadable("is missing") from None
    except (OSError, RuntimeError) as e:
        raise Unreadable(f"cannot be opened ({getattr(e, 'strerror', None) or e})") from None
    check_regular(st, max_bytes, what)
    flags = os.O_RDONLY | NONBLOCK | CLOEXEC | BINARY | (0 if follow else NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise Unreadable("is missing") from None
    except OSError as e:
        raise Unreadable(f"cannot be opened ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        check_regular(st, max_bytes, what)
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def read_bounded(fd: int, size: int) -> bytes:
    """Exactly the `size` bytes fstat reported (a file that grows is not read further);
    closes fd."""
    with os.fdopen(fd, "rb", closefd=True) as f:
        data = f.read(size + 1)
    if len(data) != size:
        raise Unreadable("changed while it was read")
    return data


def read_capped(path: str | Path, max_bytes: int, follow: bool = True,
                what: str = "such a file") -> bytes:
    """The whole of a regular file of at most `max_bytes`. Raises Unreadable."""
    fd, size = open_bounded(path, max_bytes, follow, what)
    try:
        return read_bounded(fd, size)
    except OSError as e:
        raise Unreadable(f"cannot be read ({e.strerror or e})") from None


def read_text_capped(path: str | Path, max_bytes: int, follow: bool = True,
                     what: str = "such a file") -> str:
    try:
        return read_capped(path, max_bytes, follow, what).decode("utf-8")
    except UnicodeDecodeError:
        raise Unreadable("is not UTF-8 text") from None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
