"""Everything training writes into its run folder, in one place.

Rank 0 alone writes (the other ranks' calls return None). A failed write (full
disk, lost permission) becomes one BeganError that says how to resume.

    config.json           the resolved TrainConfig
    data.json             what was loaded (written by load.py)
    stats.jsonl           one JSON object per `log_every` steps
    samples/reals.png     training images as the model sees them
    samples/samples-<step>.png   G(z) for a fixed z
    checkpoints/ckpt-<step>.safetensors   full training state (see checkpoint.py)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from began.errors import BeganError
from began.files import write_text
from began.images import make_grid, save_image, to_uint8

from .checkpoint import prune, save_checkpoint
from .config import TrainConfig, incompatible_changes
from .distributed import Dist


def prepare(cfg: TrainConfig, run_dir: Path) -> bool:
    """Create or reopen the run folder; True when it already held this run."""
    cfg_path = run_dir / "config.json"
    existed = cfg_path.exists()
    if existed:
        try:
            saved = TrainConfig.from_dict(json.loads(cfg_path.read_text()))
        except (ValueError, TypeError) as e:
            raise BeganError(f"{cfg_path} is not a began run config ({e})",
                             "point --out at a new folder") from None
        changed = incompatible_changes(saved, cfg)
        if changed:
            raise BeganError(
                f"{run_dir} holds a run with other settings ({'; '.join(changed)})",
                "rerun with the same flags to resume it, or pass a new --out for a new run",
                exit_code=2)
    elif run_dir.exists() and not run_dir.is_dir():
        raise BeganError(f"--out {run_dir} is a file", "pass a folder for the run")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "samples").mkdir(exist_ok=True)
        # Rewritten on resume too: --steps and the intervals may have changed.
        write_text(cfg_path, json.dumps(cfg.to_dict(), indent=2) + "\n")
    except OSError as e:
        raise BeganError(f"cannot write the run folder {run_dir} ({e.strerror or e})",
                         "choose an --out you can write to") from None
    return existed


def truncate_stats(path: Path, step: int) -> None:
    """Drop rows written after the checkpoint we resume from (and any torn last line)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    write_text(path, "".join(row + "\n" for row in keep))


class RunFolder:
    def __init__(self, cfg: TrainConfig, path: Path, d: Dist):
        self.cfg, self.path, self.d = cfg, path, d
        self.ckpt_dir = path / "checkpoints"
        self.samples_dir = path / "samples"
        self.stats_path = path / "stats.jsonl"
        self.last_checkpoint: Path | None = None  # named in the hint of a failed write

    def on_disk(self, what: str, write: Callable[[], Any]) -> Any:
        """Rank 0's writes; a full disk or a lost permission is one clear error."""
        if not self.d.is_main:
            return None
        try:
            return write()
        except OSError as e:
            last = self.last_checkpoint
            resume = f"from {last.name}" if last else "from its last checkpoint"
            raise BeganError(f"cannot write {what} in {self.path} ({e.strerror or e})",
                             f"free disk space or fix permissions, then rerun the same "
                             f"command: it resumes {resume}") from None

    def write_stats(self, row: dict[str, Any]) -> None:
        def append() -> None:
            with open(self.stats_path, "a") as f:
                f.write(json.dumps(row) + "\n")
        self.on_disk("stats.jsonl", append)

    def truncate_stats(self, step: int) -> None:
        if self.d.is_main:
            truncate_stats(self.stats_path, step)

    def write_reals(self, images: np.ndarray) -> None:
        # Evenly spaced through the (sorted) files: folders per class all show up.
        pick = np.linspace(0, len(images) - 1, min(self.cfg.n_samples, len(images)))
        self.on_disk("reals.png", lambda: save_image(
            self.samples_dir / "reals.png", make_grid(np.array(images[pick.astype(int)]))))

    def write_samples(self, G: torch.nn.Module, z: torch.Tensor, step: int,
                      name: str = "samples") -> None:
        """A grid of G(z) as samples/<name>-<step>.png."""
        if not self.d.is_main:
            return
        with torch.no_grad():
            imgs = G(z).float().cpu().numpy()
        self.on_disk("a sample grid", lambda: save_image(
            self.samples_dir / f"{name}-{step:08d}.png", make_grid(to_uint8(imgs))))

    def write_checkpoint(self, step: int, tensors: dict[str, torch.Tensor],
                         meta: dict[str, Any], path: Path | None = None) -> Path | None:
        """checkpoints/ckpt-<step> (older ones pruned to `keep`), or exactly `path`."""
        def write() -> Path:
            if path is not None:
                return save_checkpoint(path.parent, step, tensors, meta, name=path.name)
            saved = save_checkpoint(self.ckpt_dir, step, tensors, meta)
            prune(self.ckpt_dir, self.cfg.keep)
            return saved

        return self.on_disk(f"checkpoint {step}", write)
