"""Atomic file writes: a temp name in the target folder, then a rename.

A reader never sees a half-written file, and an interrupted write leaves the
previous file (or nothing) in place.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from .stale import pid_alive


_counter = itertools.count()


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{next(_counter)}.tmp")


# _temp_name's pattern (Linux pids have at most 7 digits): only such names are removed.
TEMP_NAME = re.compile(r"\.(?P<name>.+)\.(?P<pid>[0-9]{1,7})-[0-9]{1,20}\.tmp")


def remove_stale_temps(folder: str | Path) -> int:
    """Remove the temp files that killed began processes left in `folder`: regular files
    named as _temp_name names them whose process is gone. Nothing else is touched (a
    live writer's temp file is kept). Returns how many were removed."""
    folder = Path(folder)
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    removed = 0
    for name in names:
        m = TEMP_NAME.fullmatch(name)
        if not m or pid_alive(int(m.group("pid"))):
            continue
        path = folder / name
        try:
            if stat.S_ISREG(os.lstat(path).st_mode):
                path.unlink()
                removed += 1
        except OSError:
            pass  # gone already, or not ours to remove
    return removed


def _create_temp(path: Path) -> Path:
    """An empty, new file beside `path`. Created with mode 0o666 so the umask applies,
    as for any plainly written file (mkstemp's 0600 would be too private)."""
    while True:
        tmp = _temp_name(path)
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:  # left by a killed process that had our pid
            continue


@contextlib.contextmanager
def atomic_path(path: str | Path, fsync: bool = True) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path`."""
    tmp = _create_temp(Path(path))
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes, fsync: bool = True) -> None:
    """Atomically, with one open: the fast path for many small files."""
    path = Path(path)
    while True:
        tmp = _temp_name(path)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))
