"""Temp files and folders left by a killed process (SIGKILL, power loss) carry
its PID in their name; a later run removes those whose process is gone."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path


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


def remove_stale(folder: Path, pattern: str) -> list[Path]:
    """Remove entries of `folder` whose name fully matches `pattern` (a regex with a
    group named pid) and whose process is dead; returns what was removed."""
    rx = re.compile(pattern)
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        m = rx.fullmatch(name)
        if not m or pid_alive(int(m.group("pid"))):
            continue
        path = folder / name
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError:
            pass  # not ours to fight over: leave it
    return removed
