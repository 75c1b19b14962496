"""Everything training writes into its run folder, in one place.

Rank 0 alone writes (the other ranks' calls return None). A failed write (full
disk, lost permission) becomes one BeganError that says how to resume.

`RunFolder.open` (rank 0) takes the folder's lock, `.began-train.lock`, with
flock: one writer per run folder, and a crash (even kill -9) releases it, since
the OS drops the lock with the process. A second `began train` on a folder in
use fails at once (exit 1) and writes nothing. Holding the lock, it removes temp
files that killed writers left, then checks the settings against config.json
and, when there is one, the newest checkpoint's own config (the truth when
config.json is gone). Until the first step is done it remembers what it
created, and until the run's first result (a stats row, a grid or a checkpoint)
is written, a failure (no images, a bad flag, Ctrl-C while decoding, out of
memory in the first step) removes exactly that: no empty run folder is left.

    config.json           the resolved TrainConfig
    data.json             what was loaded (written by load.py)
    stats.jsonl           one JSON object per `log_every` steps
    samples/reals.png     training images as the model sees them
    samples/samples-<step>.png   G(z) for a fixed z
    checkpoints/ckpt-<step>.safetensors   full training state (see checkpoint.py)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from began.errors import EXIT_FATAL, EXIT_PARTIAL, BeganError, UsageError
from began.files import (append_text, atomic_file, open_lock, relation, remove_stale_temps,
                         write_text)
from began.images import make_grid, save_image, to_uint8
from began.models import sampling
from began.reading import Unreadable, open_bounded, read_capped

from .board import Board
from .checkpoint import list_checkpoints, prune, read_config, save_checkpoint
from .config import TrainConfig, incompatible_changes
from .distributed import Dist


def _refuse_changes(saved: TrainConfig, new: TrainConfig, what: str) -> None:
    changed = incompatible_changes(saved, new)
    if changed:
        raise BeganError(f"{what} ({'; '.join(changed)})",
                         "rerun with the same flags to resume it, or pass a new --out for a "
                         "new run", exit_code=2)


def truncate_stats(path: Path, step: int) -> None:
    """Drop rows written after the checkpoint we resume from (and any torn last line)."""
    if not path.exists():
        return
    try:
        fd, _ = open_bounded(path, 1 << 62)  # a regular file (a link to /dev/zero is not)
    except Unreadable as e:
        raise BeganError(f"{path} {e}", "move it out of the run folder; the run's "
                         "checkpoints hold its state") from None
    with os.fdopen(fd, "rb") as src, atomic_file(path) as dst:  # streamed: any size
        while line := src.readline(1 << 20):
            try:
                if json.loads(line)["step"] <= step:
                    dst.write(line.rstrip(b"\n") + b"\n")
            except (ValueError, KeyError, TypeError, RecursionError):
                continue


LOCK_NAME = ".began-train.lock"


def refuse_data_overlap(data_dir: str | Path, run_dir: str | Path) -> None:
    """The run folder may not be, lie inside, or contain the data folder: the next scan
    would take the run's own PNGs for training images (and the data cache would churn)."""
    rel = relation(run_dir, data_dir) if str(data_dir) else None
    if rel:
        raise UsageError(f"--out {run_dir} {rel} the data folder {data_dir}",
                         "put the run folder outside the data folder, e.g. --out runs/NAME")


class RunFolder:
    def __init__(self, cfg: TrainConfig, path: Path, d: Dist):
        self.cfg, self.path, self.d = cfg, path, d
        self.ckpt_dir = path / "checkpoints"
        self.samples_dir = path / "samples"
        self.stats_path = path / "stats.jsonl"
        self.last_checkpoint: Path | None = None  # named in the hint of a failed write
        self.board = Board(path / "tensorboard", resume_step=None)  # writes when installed
        self._lock_fd: int | None = None
        self._created: list[Path] | None = []  # None once a result is written

    # --- open, close, and undo a failed start (rank 0) -----------------------------
    def open(self) -> bool:
        """Lock, clean, check and (re)write config.json; True when it held this run."""
        try:
            self._make_dirs(self.path)
            self._lock()
            for folder in (self.path, self.samples_dir, self.ckpt_dir):
                remove_stale_temps(folder)
            existed = self._check_settings()
            self._make_dirs(self.samples_dir)
            # Rewritten on resume too: --steps and the intervals may have changed.
            self._write_new(self.path / "config.json",
                            json.dumps(self.cfg.to_dict(), indent=2) + "\n")
        except OSError as e:
            raise BeganError(f"cannot write the run folder {self.path} ({e.strerror or e})",
                             "choose an --out you can write to") from None
        return existed

    def _make_dirs(self, path: Path) -> None:
        if path.exists() and not path.is_dir():
            raise BeganError(f"--out {path} is a file", "pass a folder for the run")
        missing = [p for p in (path, *path.parents) if not p.exists()]
        for p in reversed(missing):
            try:
                p.mkdir()
                self._note_created(p)
            except FileExistsError:  # made by someone else meanwhile: not ours to remove
                pass

    def _lock(self) -> None:
        import fcntl

        path = self.path / LOCK_NAME
        fd, created = open_lock(path, 0o644)  # never through a link; only a file of ours
        if created:  # else kept from an earlier run (or held by a live one)
            self._note_created(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            self._created = []  # the other writer uses what is here: remove nothing
            raise BeganError(
                f"{self.path} is in use by another began train"
                + (f" (pid {holder})" if holder.isdigit() else ""),
                "wait for it to finish or stop it, or pass another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _check_settings(self) -> bool:
        """Refuse flags that would change what the run computes, against config.json and
        the newest checkpoint's config; True when the folder holds this run."""
        cfg_path = self.path / "config.json"
        existed = cfg_path.exists()
        if existed:
            try:
                saved = TrainConfig.from_dict(json.loads(read_capped(cfg_path, 1 << 20)))
            except (Unreadable, ValueError, TypeError, RecursionError) as e:
                raise BeganError(f"{cfg_path} is not a began run config ({e})",
                                 "point --out at a new folder") from None
            _refuse_changes(saved, self.cfg, f"{self.path} holds a run with other settings")
        for step, ckpt in reversed(list_checkpoints(self.ckpt_dir)):
            saved_dict = read_config(ckpt)
            if saved_dict is None:
                continue  # unreadable: the loader will move it aside and warn
            try:
                saved = TrainConfig.from_dict(saved_dict)
            except (ValueError, TypeError):
                continue
            _refuse_changes(saved, self.cfg,
                            f"checkpoint {ckpt.name} in {self.path} was trained with other "
                            "settings")
            break
        return existed

    def _write_new(self, path: Path, text: str) -> None:
        if not path.exists():
            self._note_created(path)
        write_text(path, text)

    def _note_created(self, path: Path) -> None:
        if self._created is not None:
            self._created.append(path)

    def write_data_report(self, report: dict[str, Any]) -> None:
        text = json.dumps(report, indent=2) + "\n"
        self.on_disk("data.json", lambda: self._write_new(self.path / "data.json", text))

    def discard_created(self) -> None:
        """Undo a start that failed: remove what this command created, newest first.
        Folders are only removed when empty (rmdir), so nothing else is ever lost."""
        for p in reversed(self._created or []):
            try:
                p.rmdir() if p.is_dir() and not p.is_symlink() else p.unlink()
            except OSError:
                pass  # not empty, or gone: leave it
        self._created = None

    def close(self) -> None:
        self.board.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def on_disk(self, what: str, write: Callable[[], Any], result: bool = False) -> Any:
        """Rank 0's writes; a full disk or a lost permission is one clear error.
        `result`: a stats row, grid or checkpoint, after which the folder is kept."""
        if not self.d.is_main:
            return None
        try:
            out = write()
            if result:
                self._created = None
            return out
        except OSError as e:
            last = self.last_checkpoint
            resume = f"from {last.name}" if last else "from its last checkpoint"
            # exit 3 once a checkpoint holds the work (partial: it resumes from there)
            raise BeganError(f"cannot write {what} in {self.path} ({e.strerror or e})",
                             f"free disk space or fix permissions, then rerun the same "
                             f"command: it resumes {resume}",
                             exit_code=EXIT_PARTIAL if last else EXIT_FATAL) from None

    def write_stats(self, row: dict[str, Any]) -> None:
        def append() -> None:
            append_text(self.stats_path, json.dumps(row) + "\n")
            self.board.scalars(row)
        self.on_disk("stats.jsonl", append, result=True)

    def truncate_stats(self, step: int) -> None:
        """Forget what was logged after `step` (resuming from there)."""
        self.board.resume_step = step + 1  # TensorBoard drops events from this step on
        if self.d.is_main:
            truncate_stats(self.stats_path, step)

    def write_reals(self, images: np.ndarray) -> None:
        # Evenly spaced through the (sorted) files: folders per class all show up.
        pick = np.linspace(0, len(images) - 1, min(self.cfg.n_samples, len(images)))
        path = self.samples_dir / "reals.png"
        if self.d.is_main and not path.exists():
            self._note_created(path)
        self.on_disk("reals.png", lambda: save_image(
            path, make_grid(np.array(images[pick.astype(int)]))))

    def write_samples(self, G: torch.nn.Module, z: torch.Tensor, step: int,
                      name: str = "samples") -> None:
        """A grid of G(z) as samples/<name>-<step>.png."""
        if not self.d.is_main:
            return
        with torch.no_grad(), sampling(G):  # BatchNorm: draw as the exported model will
            grid = make_grid(to_uint8(G(z).float().cpu().numpy()))

        def write() -> None:
            save_image(self.samples_dir / f"{name}-{step:08d}.png", grid)
            self.board.image(name, grid, step)

        self.on_disk("a sample grid", write, result=True)

    def write_checkpoint(self, step: int, tensors: dict[str, torch.Tensor],
                         meta: dict[str, Any], path: Path | None = None) -> Path | None:
        """checkpoints/ckpt-<step> (older ones pruned to `keep`), or exactly `path`."""
        def write() -> Path:
            if path is not None:
                return save_checkpoint(path.parent, step, tensors, meta, name=path.name)
            saved = save_checkpoint(self.ckpt_dir, step, tensors, meta)
            prune(self.ckpt_dir, self.cfg.keep)
            return saved

        return self.on_disk(f"checkpoint {step}", write, result=True)
