"""Temp files and folders left by a killed process (SIGKILL, power loss).

Their names carry the PID and a token: an HMAC of that PID under a random key
kept in the user's cache folder (`temp-key`, mode 600), so a name a user or
another program made by hand never verifies. A later run removes only entries
whose token verifies, whose owner is this user and whose process is gone; an
entry that merely looks like a temp is left alone.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import hmac
import os
import re
import shutil
import stat
import threading
from pathlib import Path

TOKEN_HEX = 16  # 64 bits of the HMAC: no name made by hand verifies by chance
TOKEN = rf"[0-9a-f]{{{TOKEN_HEX}}}"
KEY_NAME = "temp-key"
KEY_BYTES = 32
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_key_lock = threading.Lock()  # writer threads ask at once: one key per process


def cache_dir() -> Path:
    """$BEGAN_CACHE_DIR, else $XDG_CACHE_HOME/began/data, else ~/.cache/began/data."""
    if os.environ.get("BEGAN_CACHE_DIR"):
        return Path(os.environ["BEGAN_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "began" / "data"
    return Path.home() / ".cache" / "began" / "data"


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


# --------------------------------------------------------------------------- the key


def _read_key(path: Path) -> bytes:
    """The key file's bytes: a regular file of ours, exactly KEY_BYTES long, read without
    following a link (OSError otherwise)."""
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC | getattr(os, "O_NONBLOCK", 0))
    try:
        st = os.fstat(fd)
        if (not stat.S_ISREG(st.st_mode) or st.st_size != KEY_BYTES
                or st.st_uid != os.geteuid()):
            raise OSError(errno.EINVAL, "not a began key file", str(path))
        key = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(key) != KEY_BYTES:
        raise OSError(errno.EINVAL, "not a began key file", str(path))
    return key


def _create_key(path: Path) -> None:
    """Write a new key whole under a private name, then link it into place: a racing
    process either wins (its key is read back) or reads ours, never half a key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{KEY_NAME}.{os.getpid()}.{os.urandom(8).hex()}.new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o600)
    try:
        os.write(fd, os.urandom(KEY_BYTES))
        os.fsync(fd)
        os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
    finally:
        tmp.unlink(missing_ok=True)


@functools.lru_cache(maxsize=8)
def _key_at(path: Path) -> bytes:
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    except OSError:  # damaged or not ours: proving nothing beats deleting wrongly
        return os.urandom(KEY_BYTES)
    try:
        _create_key(path)
        return _read_key(path)
    except OSError:  # no writable cache: this process's temps simply stay unproven
        return os.urandom(KEY_BYTES)


def token(pid: int | None = None) -> str:
    """The token temp names of process `pid` (default: this one) carry."""
    pid = os.getpid() if pid is None else pid
    with _key_lock:
        key = _key_at(cache_dir() / KEY_NAME)
    return hmac.new(key, str(pid).encode(), hashlib.sha256).hexdigest()[:TOKEN_HEX]


def left_by_dead(pid: int, tok: str) -> bool:
    """A name that a began process `pid` of this user made, now gone."""
    return hmac.compare_digest(token(pid), tok) and not pid_alive(pid)


# --------------------------------------------------------------------------- finding them


def find_stale(folder: Path, pattern: str | re.Pattern) -> list[tuple[Path, re.Match]]:
    """Entries of `folder` whose name fully matches `pattern` (groups `pid` and `token`),
    whose token verifies, whose owner is this user and whose process is gone."""
    rx = re.compile(pattern) if isinstance(pattern, str) else pattern
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    found = []
    for name in names:
        m = rx.fullmatch(name)
        if not m or not left_by_dead(int(m.group("pid")), m.group("token")):
            continue
        path = folder / name
        try:
            if os.lstat(path).st_uid == os.geteuid():
                found.append((path, m))
        except OSError:
            pass  # gone meanwhile
    return found


def remove_path(path: Path) -> bool:
    """Remove a file, or a folder with what is in it (a symlink itself, never its target)."""
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path)
        else:
            path.unlink()
        return True
    except OSError:
        return False  # not ours to fight over: leave it


def remove_stale(folder: Path, pattern: str) -> list[Path]:
    """Remove what find_stale finds; returns what was removed."""
    return [path for path, _ in find_stale(folder, pattern) if remove_path(path)]
