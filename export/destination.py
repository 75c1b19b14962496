"""Where `began export` writes: checked before the long work, locked while it runs,
swapped in at the end only over what was checked.

- `--out` may not be, lie inside, or contain the run folder or the data folder.
- An existing `--out` is replaced only with `overwrite` and only if it is a began
  bundle (its manifest says so); an empty folder counts as nothing. Anything else
  is refused (exit 2): the command never deletes what it did not create.
- One export per `--out` at a time: an OS lock (flock) on `.NAME.lock` beside it,
  released by the kernel if the process dies; a second export fails at once. A
  lock that is a symlink or not a regular file of ours is refused, never opened
  through (files.open_lock).
- The bundle is built in `.NAME.partial-PID-TOKEN/` beside `--out` (made at the start, so
  an unwritable or full disk is found before the encoder fit); the final renames
  refuse to replace anything (RENAME_NOREPLACE) and the old bundle is moved aside
  only if it is still the folder that was checked.
- Temp folders of killed exports (`.NAME.partial-PID-TOKEN/`, `.NAME.old-PID-TOKEN/`)
  whose process is gone are removed, only when their token proves that began made
  them (stale.py); an old bundle a kill left aside goes back to `--out` when nothing
  took its place. Look-alikes are left alone.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import re
import shutil
from pathlib import Path

from began.bundle import peek_manifest
from began.errors import BeganError, UsageError
from began.files import open_lock, relation, write_bytes
from began.stale import TOKEN, find_stale, remove_path, token


def _noreplace_rename(src: Path, dst: Path) -> None:
    """rename(2) that fails with FileExistsError if dst exists (Linux renameat2)."""
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is not None:
        at_fdcwd, rename_noreplace = -100, 1
        if fn(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), rename_noreplace) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL):  # else: no kernel/fs support, below
            raise OSError(err, os.strerror(err), str(dst))
    if os.path.lexists(dst):  # fallback: only an empty folder created since could be lost
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


def is_bundle(path: Path) -> bool:
    """A folder whose manifest.json (a regular file, of sane size) says it is a began bundle."""
    try:
        return not path.is_symlink() and path.is_dir() and peek_manifest(path) is not None
    except OSError:
        return False


def _identity(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


class Destination:
    """Context manager: checks, locks, and owns the temp folder; `commit()` swaps it in."""

    def __init__(self, out: str | Path, protected: dict[str, Path], overwrite: bool,
                 need_bytes: int = 0):
        self.out = Path(os.path.abspath(out))
        self.protected, self.overwrite, self.need_bytes = protected, overwrite, need_bytes
        self.parent, self.name = self.out.parent, self.out.name
        self.tmp = self._aside("partial")
        self._lock_fd: int | None = None
        self._checked: tuple[int, int] | None = None  # identity of what may be replaced
        self._was_empty = False

    def _aside(self, kind: str) -> Path:
        """This process's temp folder name beside --out: the token proves it is ours."""
        return self.parent / f".{self.name}.{kind}-{os.getpid()}-{token()}"

    # -- checks -------------------------------------------------------------
    def _check_place(self) -> None:
        for what, folder in self.protected.items():
            rel = relation(self.out, folder)
            if rel:
                raise UsageError(f"--out {self.out} {rel} the {what} {folder}",
                                 "write the bundle outside the run and data folders, "
                                 "e.g. --out models/NAME")
        if self.out.is_symlink():
            raise UsageError(f"--out {self.out} is a symbolic link",
                             "name the folder itself, or another --out")

    def _check_existing(self) -> None:
        out = self.out
        if not os.path.lexists(out):
            return
        if out.is_dir() and not any(out.iterdir()):
            self._was_empty = True
            self._checked = _identity(out)
            return
        if not is_bundle(out):
            if self.overwrite:
                raise UsageError(f"{out} is not a began bundle, so --overwrite will not "
                                 "replace it", "choose another --out (or remove it yourself "
                                 "if it really is disposable)")
            raise UsageError(f"{out} already exists", "choose another --out")
        if not self.overwrite:
            raise UsageError(f"{out} already exists (a began bundle)",
                             "pass --overwrite to replace it, or choose another --out")
        self._checked = _identity(out)

    def _lock(self) -> None:
        path = self.parent / f".{self.name}.lock"
        while True:
            fd, _ = open_lock(path)  # never through a link; only a file of ours
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
                os.close(fd)
                raise BeganError(f"another began export is writing {self.out} (pid {holder})",
                                 "wait for it to finish, or choose another --out") from None
            try:  # the holder before us may have unlinked the file: lock the live one
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd, self._lock_path = fd, path

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            Path(self._lock_path).unlink(missing_ok=True)  # while still held: see _lock
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "Destination":
        self._check_place()
        try:
            self.parent.mkdir(parents=True, exist_ok=True)
            self._lock()
        except OSError as e:
            raise BeganError(f"cannot write in {self.parent} ({e.strerror or e})",
                             "choose a --out on a disk you can write to") from None
        try:
            self._sweep_stale()  # first: an old bundle put back is then checked as --out
            self._check_existing()
            if os.path.lexists(self.tmp):  # left by an earlier process that had our pid
                remove_path(self.tmp)
            try:
                self.tmp.mkdir()
                write_bytes(self.tmp / ".probe", b"0" * 4096, fsync=False)
                (self.tmp / ".probe").unlink()
            except OSError as e:
                raise BeganError(f"cannot write in {self.parent} ({e.strerror or e})",
                                 "choose a --out on a disk you can write to, with room "
                                 "for the bundle") from None
            free = shutil.disk_usage(self.parent).free
            if free < self.need_bytes:
                raise BeganError(f"not enough space in {self.parent}: the bundle needs about "
                                 f"{self.need_bytes / 1e6:.0f} MB, {free / 1e6:.0f} MB are free",
                                 "free some space, or choose a --out on another disk")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _sweep_stale(self) -> None:
        """Temp folders that killed exports to this --out left, proven ours (stale.py).
        A bundle moved aside (`.old-`) by an export killed before the new one took its
        place goes back to --out; the rest are removed."""
        pattern = (rf"\.{re.escape(self.name)}\.(?P<kind>partial|old)-(?P<pid>\d+)"
                   rf"-(?P<token>{TOKEN})")
        for path, m in find_stale(self.parent, pattern):
            if m.group("kind") == "old" and not os.path.lexists(self.out):
                try:
                    _noreplace_rename(path, self.out)
                    continue
                except OSError:
                    pass
            remove_path(path)

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._unlock()

    # -- the swap -----------------------------------------------------------
    def commit(self) -> None:
        out = self.out
        try:
            if self._checked is None or self._was_empty:
                if self._was_empty:  # the empty folder we saw: rmdir refuses if it filled up
                    if not out.is_dir() or _identity(out) != self._checked:
                        raise FileExistsError
                    out.rmdir()
                _noreplace_rename(self.tmp, out)
                return
            old = self._aside("old")
            _noreplace_rename(out, old)
            if _identity(old) != self._checked or not is_bundle(old):
                _noreplace_rename(old, out)  # not what we checked: put it back untouched
                raise FileExistsError
            try:
                _noreplace_rename(self.tmp, out)
            except BaseException:
                _noreplace_rename(old, out)
                raise
            shutil.rmtree(old, ignore_errors=True)
        except (FileExistsError, FileNotFoundError, OSError) as e:
            if isinstance(e, (FileExistsError, FileNotFoundError)) or e.errno in (
                    errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                raise BeganError(f"{out} changed while the bundle was being built; it was "
                                 "left as it is and the new bundle discarded",
                                 "export again to another --out") from None
            raise BeganError(f"cannot write the bundle at {out} ({e.strerror or e})",
                             "choose a --out on a disk you can write to") from None
