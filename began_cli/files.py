"""Every file began creates, in one place: atomic writes (a temp name in the target
folder, then a rename), appends, and lock files, none of them through a symlink.

A reader never sees a half-written file, and an interrupted write leaves the
previous file (or nothing) in place. Temp names carry the PID and a token
(stale.py) that proves this program made them; this process's temps still on
disk are known (`discard_temps`), so a SIGTERM can remove them on the way out.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import BeganError
from .stale import TOKEN, find_stale, token

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # a final symlink fails (ELOOP) instead of being followed
CLOEXEC = getattr(os, "O_CLOEXEC", 0)
NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO fails at once instead of waiting for a peer

_counter = itertools.count()
_live: set[Path] = set()  # temps of this process not yet renamed or removed
_live_lock = threading.Lock()


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{next(_counter)}.{token()}.tmp")


def temp_name_for(path: str | Path, pid: int, n: int = 0) -> Path:
    """The temp name process `pid` would use for `path` (tests make a dead run's temps)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{pid}-{n}.{token(pid)}.tmp")


# _temp_name's pattern (Linux pids have at most 7 digits).
TEMP_NAME = re.compile(
    rf"\.(?P<name>.+)\.(?P<pid>[0-9]{{1,7}})-[0-9]{{1,20}}\.(?P<token>{TOKEN})\.tmp")


def remove_stale_temps(folder: str | Path) -> int:
    """Remove the temp files that killed began processes left in `folder`: regular files
    named as _temp_name names them, whose token proves a began process of this user made
    them and whose process is gone. Nothing else is touched. Returns how many went."""
    removed = 0
    for path, _ in find_stale(Path(folder), TEMP_NAME):
        try:
            if stat.S_ISREG(os.lstat(path).st_mode):
                path.unlink()
                removed += 1
        except OSError:
            pass  # gone already, or not ours to remove
    return removed


def discard_temps() -> None:
    """Remove this process's temps still on disk (a SIGTERM or Ctrl-C cut a write short)."""
    with _live_lock:
        left = list(_live)
        _live.clear()
    for tmp in left:
        with contextlib.suppress(OSError):
            tmp.unlink()


def create_new(path: str | Path, mode: int = 0o666, flags: int = os.O_WRONLY) -> int:
    """fd of a new file at `path`: never an existing file, never through a symlink.
    Mode 0o666 so the umask applies, as for any plainly written file (mkstemp's 0600
    would be too private)."""
    return os.open(path, flags | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC, mode)


def _create_temp(path: Path) -> tuple[int, Path]:
    while True:
        tmp = _temp_name(path)
        try:
            fd = create_new(tmp)
        except FileExistsError:  # left by a killed process that had our pid
            continue
        with _live_lock:
            _live.add(tmp)
        return fd, tmp


def _done(tmp: Path) -> None:
    with _live_lock:
        _live.discard(tmp)


@contextlib.contextmanager
def atomic_file(path: str | Path, fsync: bool = True) -> Iterator[BinaryIO]:
    """Yield a binary file (a new temp beside `path`); on success it replaces `path`.
    The file object is the one created, so nothing can redirect the writes."""
    path = Path(path)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)  # replaces a symlink at `path`, never its target
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        _done(tmp)


@contextlib.contextmanager
def atomic_path(path: str | Path, fsync: bool = True) -> Iterator[Path]:
    """Yield a temp path beside `path`, for writers that only take a name (safetensors,
    which itself writes a file of its own and renames it over the temp); on success it
    replaces `path`, if the temp is still a regular file (never a link put there)."""
    path = Path(path)
    fd, tmp = _create_temp(path)
    try:
        os.close(fd)
        yield tmp
        if not stat.S_ISREG(os.lstat(tmp).st_mode):
            raise OSError(errno.EEXIST, "the temp file was replaced while it was written",
                          str(tmp))
        if fsync:
            fd = os.open(tmp, os.O_RDONLY | NOFOLLOW | CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        _done(tmp)


def write_bytes(path: str | Path, data: bytes, fsync: bool = True) -> None:
    """Atomically, with one open: the fast path for many small files."""
    with atomic_file(path, fsync) as f:
        f.write(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def append_text(path: str | Path, text: str) -> None:
    """Append to a regular file (created if missing), never through a symlink."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | NOFOLLOW | CLOEXEC
                     | NONBLOCK, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OSError(e.errno, "a symbolic link, which began never writes through",
                          str(path)) from None
        raise
    with os.fdopen(fd, "ab") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        f.write(text.encode("utf-8"))


def relation(path: str | Path, other: str | Path) -> str | None:
    """How `path` sits against `other`, both resolved (symlinks, ..): 'is', 'is inside',
    'contains', or None when neither holds the other."""
    a, b = Path(os.path.realpath(path)), Path(os.path.realpath(other))
    if a == b:
        return "is"
    if b in a.parents:
        return "is inside"
    if a in b.parents:
        return "contains"
    return None


# --------------------------------------------------------------------------- lock files


class LockRefused(BeganError):
    """A lock file that is not a regular file began made (a symlink, a FIFO, a hard link
    to another file, someone else's): refused, and left exactly as it is (exit 1)."""

    def __init__(self, path: Path, what: str):
        super().__init__(f"{path} is {what}, not a lock file that began made; it was left "
                         "untouched",
                         f"remove {path} yourself (a began lock holds only a process id), "
                         "then run the command again")


def _not_a_lock(st: os.stat_result) -> str | None:
    """Why a file is not a lock began made, or None."""
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if not stat.S_ISREG(mode):
        return "a FIFO, socket or device"
    if st.st_nlink != 1:
        return "a hard link to another file"
    if st.st_uid != os.geteuid():
        return "owned by another user"
    return None


def open_lock(path: str | Path, mode: int = 0o666) -> tuple[int, bool]:
    """(fd, created) of the lock file `path`, opened read-write: created if missing; an
    existing one must be a regular file of ours, checked before it is opened (a device
    is never opened) and again on the fd (against a swap). Raises LockRefused."""
    path = Path(path)
    with contextlib.suppress(FileNotFoundError):
        why = _not_a_lock(os.lstat(path))
        if why:
            raise LockRefused(path, why)
    try:
        return create_new(path, mode, os.O_RDWR), True
    except FileExistsError:
        pass
    try:
        fd = os.open(path, os.O_RDWR | NOFOLLOW | CLOEXEC | NONBLOCK)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise LockRefused(path, "a symbolic link") from None
        if e.errno in (errno.ENXIO, errno.EISDIR):
            raise LockRefused(path, "not a regular file") from None
        raise
    why = _not_a_lock(os.fstat(fd))
    if why:
        os.close(fd)
        raise LockRefused(path, why)
    return fd, False
