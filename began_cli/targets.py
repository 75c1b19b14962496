"""The output rule: which existing paths an output may replace.

An existing file an output is named after is replaced, atomically; --no-clobber
refuses instead, --skip-existing keeps it. Never replaced, whatever the flags: a
folder, and a training run's or a model bundle's own files (its manifest, the
files the manifest lists, its card). output.py writes what this allows.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from . import files
from .errors import BeganError, UsageError

# What training writes into a run folder, and the run folder's own subfolders:
# began never writes over these, whatever the flags (train/run_folder.py's layout).
RUN_FILES = ("config.json", "data.json", "stats.jsonl", ".began-train.lock")
RUN_FOLDERS = ("samples", "checkpoints", "tensorboard")
OWNED_HINT = "write the output outside the run and model folders, e.g. into a new folder"


class Refused(BeganError):
    """An output that may not be written under that name whatever the flags (exit 1)."""


def run_traces(folder: Path) -> list[str]:
    """What training added to `folder` (stats.jsonl, checkpoints, its lock), if anything."""
    return [name for name in ("stats.jsonl", "checkpoints", ".began-train.lock")
            if os.path.lexists(folder / name)]


def _is_run(folder: Path) -> bool:
    """A `began train` run folder: its config.json beside the things training adds."""
    return (folder / "config.json").is_file() and bool(run_traces(folder))


def _bundle_files(folder: Path) -> set[str]:
    """The names a model bundle in `folder` owns (its manifest, the files it lists, its
    card); empty when `folder` is not a bundle. Read with the bundle's own size bound."""
    from .bundle import CARD, MANIFEST, peek_manifest

    data = peek_manifest(folder)
    if data is None:
        return set()
    listed = data.get("files") if isinstance(data.get("files"), dict) else {}
    return {MANIFEST, CARD, *(n for n in listed if isinstance(n, str))}


def _managed_folder(folder: Path) -> Path | None:
    """The run subfolder (samples/, checkpoints/, ...) that `folder` is or lies in."""
    for f in (folder, *folder.parents):
        if f.name in RUN_FOLDERS and _is_run(f.parent):
            return f
    return None


def refuse_managed_folder(folder: Path) -> None:
    """Outputs never go into a run's samples/, checkpoints/ or tensorboard/ folder."""
    managed = _managed_folder(Path(os.path.realpath(folder)))
    if managed is not None:
        raise Refused(f"{folder} is inside the training run {managed.parent} "
                      f"({managed.name}/): began never replaces a run's own files",
                      OWNED_HINT)


def _folder_owner(folder: Path) -> tuple[str | None, set[str], set[str]]:
    """For a resolved folder: why every file in it is a run's (or None), and the names
    in it that a run or a bundle owns (run files; bundle files, with .onnx for any)."""
    managed = _managed_folder(folder)
    if managed is not None:
        return f"inside the training run {managed.parent} ({managed.name}/)", set(), set()
    run = set(RUN_FILES) if _is_run(folder) else set()
    return None, run, _bundle_files(folder)


def _why_owned(path: Path, facts: tuple[str | None, set[str], set[str]]) -> str | None:
    everything, run, bundle = facts
    if everything is not None:
        return everything
    if path.name in run:
        return f"the training run {os.path.realpath(path.parent)}'s {path.name}"
    if path.name in bundle or (bundle and path.suffix == ".onnx"):
        return f"a file of the model bundle {os.path.realpath(path.parent)}"
    return None


def _kind(path: Path) -> str:
    """'new', 'file' (a regular file or a symlink: replaceable), or 'folder'/'other'."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:  # missing, or a path under a file: the write itself says what is wrong
        return "new"
    if stat.S_ISDIR(mode):
        return "folder"
    return "file" if stat.S_ISREG(mode) or stat.S_ISLNK(mode) else "other"


class Targets:
    """The output rule, for every file a command writes under a name (README, "Output
    files"): a new name is written; an existing regular file (or a symlink: the link is
    replaced, its target left alone) is replaced atomically, unless --no-clobber refuses
    (exit 1) or --skip-existing keeps it. A folder, a FIFO or device, and the files of a
    training run or a model bundle are never replaced (Refused, exit 1)."""

    def __init__(self, no_clobber: bool = False, skip_existing: bool = False,
                 overwrite: bool = False):
        if no_clobber and (overwrite or skip_existing):
            other = "--overwrite" if overwrite else "--skip-existing"
            raise UsageError(f"--no-clobber and {other} exclude each other",
                             "--no-clobber refuses existing outputs; drop one of the two")
        self.no_clobber, self.skip_existing = no_clobber, skip_existing
        self._folders: dict[Path, tuple] = {}  # facts per output folder, found once

    def _facts(self, folder: Path) -> tuple:
        """What owns files in `folder` (resolved, so a symlink or .. cannot hide a run);
        the first look also removes killed runs' temp files there."""
        if folder not in self._folders:
            self._folders[folder] = _folder_owner(Path(os.path.realpath(folder)))
            files.remove_stale_temps(folder)
        return self._folders[folder]

    def exists(self, path: Path) -> bool:
        """Whether `path` is taken; raises Refused if it may never be written. The name
        itself is not resolved: a symlink there is replaced, never its target."""
        why = _why_owned(path, self._facts(path.parent))
        if why is not None:
            raise Refused(f"{path} is {why}: began never replaces a run's or a model's "
                          "own files", OWNED_HINT)
        kind = _kind(path)
        if kind == "folder":
            raise Refused(f"{path} is a folder, and an output never replaces one",
                          f"name a file, e.g. {path / 'out.png'}, or move the folder away")
        if kind == "other":
            raise Refused(f"{path} is not a regular file (a FIFO, socket or device)",
                          "name a regular file as the output")
        return kind == "file"

    def taken(self, path: Path) -> bool:
        """An existing file or symlink at `path`: what --skip-existing keeps and
        --no-clobber refuses (a folder there is refused by exists(), not counted)."""
        return _kind(path) == "file"

    def check(self, path: Path) -> bool:
        """One named output: True to write it, False to keep it (--skip-existing)."""
        if str(path) == "-":
            return True
        if not self.exists(path):
            return True
        if self.no_clobber:
            refuse_existing(path, 1)
        return not self.skip_existing

    def plan(self, paths: Sequence[Path]) -> list[bool | Refused]:
        """Many outputs: per path True (write), False (keep) or the Refused error, for the
        caller to count as that item's failure. --no-clobber refuses the whole command,
        before anything is written, when any of them exists."""
        plan: list[bool | Refused] = []
        for p in paths:
            try:
                plan.append(not (self.exists(p) and (self.skip_existing or self.no_clobber)))
            except Refused as e:
                plan.append(e)
        if self.no_clobber and False in plan:
            first = next(p for p, w in zip(paths, plan) if w is False)
            refuse_existing(first, plan.count(False))
        return plan


def refuse_existing(first: Path, count: int) -> None:
    raise BeganError(f"{first} already exists" + (f" (and {count - 1} more of the outputs)"
                                                   if count > 1 else ""),
                     "drop --no-clobber to replace it, or choose another name"
                     + ("; --skip-existing writes only the missing outputs" if count > 1
                        else ""))
