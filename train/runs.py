"""A finished (or running) training run, read from its folder: the public interface
that export and eval use, so they never reach into the loop, data loading or quality
tracking. One verified checkpoint (a step, "best" or the newest), its config, the
networks rebuilt from it (raw or EMA weights), what the run logged up to that step,
how long it trained, and its training images.

Reading never changes the run: a checkpoint that fails its checks is an error here
(not moved aside, not skipped silently).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from began.decode import Preprocess
from began.errors import BeganError, UsageError
from began.models import Discriminator, Generator, build
from began.reading import Unreadable, read_text_capped

from .checkpoint import BEST_NAME, CheckpointError, list_checkpoints, load_checkpoint
from .config import TrainConfig
from .ema import ema_weights, has_ema


@dataclass
class RunSnapshot:
    run_dir: Path
    checkpoint: Path
    step: int
    cfg: TrainConfig
    G: Generator
    D: Discriminator
    k: float
    stats: dict[str, Any] | None  # the last stats.jsonl row at or before `step`
    data: dict[str, Any] | None  # data.json
    weights: str = "raw"  # which G: "raw" or "ema" (the moving average of its weights)


_RESTORE = ("restore it, or move it out of the run folder: the export then leaves "
            "what it records out of the manifest")


def _number(v: Any) -> float | int | None:
    """A finite number from a run's JSON file, else None (strict JSON has no NaN)."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return v if ok else None


def _read_text(path: Path) -> str | None:
    """A run file's text, None if absent; a damaged one is an error, not a guess."""
    if not os.path.lexists(path):
        return None
    try:
        return read_text_capped(path, 256 << 20, what="a run's log")
    except Unreadable as e:
        raise BeganError(f"cannot read {path} ({e})", _RESTORE) from None


def _last_stats(path: Path, step: int) -> dict[str, Any] | None:
    """The last stats.jsonl row at or before `step`, its figures finite numbers or None.
    A torn last line (a crash while appending) is skipped; other damage is an error."""
    text = _read_text(path)
    lines = [ln for ln in (text or "").splitlines() if ln.strip()]
    row = None
    for i, line in enumerate(lines, 1):
        try:
            r = json.loads(line)
        except ValueError:
            if i == len(lines):
                break
            raise BeganError(f"{path} line {i} is not JSON", _RESTORE) from None
        if not isinstance(r, dict) or _number(r.get("step")) is None:
            raise BeganError(f"{path} line {i} is not a stats row (no step number)",
                             _RESTORE)
        if r["step"] <= step:
            row = {k: _number(v) for k, v in r.items()}
    return row


def _data_summary(path: Path) -> dict[str, Any] | None:
    """data.json's counts (the manifest's data summary), checked."""
    text = _read_text(path)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise BeganError(f"{path} is not valid JSON ({e})", _RESTORE) from None
    if not isinstance(data, dict):
        raise BeganError(f"{path} is not a data summary (a JSON object)", _RESTORE)
    return {k: _number(data.get(k)) for k in ("count", "n_skipped")}


WEIGHTS = ("auto", "ema", "raw")


def _pick_weights(weights: str, ema_saved: bool, path: Path) -> str:
    """Which G to rebuild: "raw" (the trained weights), "ema" (their moving average, kept
    by `began train --ema-decay`, see train/ema.py) or "auto" (ema when the checkpoint
    holds it)."""
    if weights not in WEIGHTS:
        raise UsageError(f"unknown --weights {weights!r}", "use auto, ema or raw")
    if weights == "ema" and not ema_saved:
        raise UsageError(f"{path.name} holds no moving average of G's weights",
                         "train with --ema-decay (e.g. 0.999), or pass --weights raw")
    return "ema" if weights != "raw" and ema_saved else "raw"


def parse_step(text: str | None) -> int | str | None:
    """A --step value: a step number, "best" (the checkpoint kept by quality tracking,
    see train/quality.py) or None (the newest)."""
    if text is None or text == "best":
        return text
    try:
        step = int(text)
    except ValueError:
        raise UsageError(f"--step {text!r} is neither a step number nor 'best'",
                         "pass --step N (a saved step) or --step best") from None
    if step < 0:
        raise UsageError(f"--step must be >= 0, got {step}", "pass a saved step")
    return step


def resolve_checkpoint(run_dir: Path, step: int | str | None) -> Path:
    """The checkpoint file that --step names in a run folder: the newest for None,
    checkpoints/ckpt-best.safetensors for "best", else exactly that step's."""
    if step == "best":
        path = run_dir / "checkpoints" / BEST_NAME
        if not path.is_file():
            raise BeganError(f"{run_dir} has no best checkpoint",
                             "quality tracking keeps one after its warm-up (train with "
                             "--eval-every N, on by default), or pass --step N")
        return path
    saved = list_checkpoints(run_dir / "checkpoints")
    if not saved:
        raise BeganError(f"{run_dir} has no checkpoint yet",
                         "train longer, or lower --ckpt-every")
    steps = [s for s, _ in saved]
    listed = ", ".join(map(str, steps[-10:]))
    if step is None:
        return saved[-1][1]
    if step in steps:
        return dict(saved)[step]
    raise BeganError(f"step {step} was never saved in {run_dir}",
                     f"saved steps: {listed}" + (", best" if (run_dir / "checkpoints" /
                                                              BEST_NAME).is_file() else ""))


def training_seconds(run_dir: Path, until: int) -> float | None:
    """Seconds the run trained up to step `until`, from stats.jsonl (steps x batch / the
    row's images per second); None when the run logged none."""
    text = _read_text(run_dir / "stats.jsonl")
    try:
        batch = json.loads(_read_text(run_dir / "config.json") or "{}")["batch_size"]
    except (ValueError, KeyError, TypeError):
        return None
    seconds = 0.0
    for line in (text or "").splitlines():
        try:
            row = json.loads(line)
            if row["step"] <= until:
                seconds += row["steps_averaged"] * batch / max(row["images_per_s"], 1e-9)
        except (ValueError, KeyError, TypeError):  # a torn or older row
            continue
    return seconds or None


def load_run(run_dir: str | Path, step: int | str | None = None,
             weights: str = "auto") -> RunSnapshot:
    """The run's checkpoint at `step` (a number, "best" or None for the newest)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise BeganError(f"{run_dir} is not a training run (no config.json)",
                         "pass the --out folder of a `began train` run")
    # config.json only marks the folder as a run: the config used is the checkpoint's own
    # (covered by its sha256), so a damaged config.json does not change the bundle.
    path = resolve_checkpoint(run_dir, step)
    try:
        tensors, state = load_checkpoint(path)
    except CheckpointError as e:
        steps = [s for s, _ in list_checkpoints(run_dir / "checkpoints")]
        older = steps if step == "best" else [s for s in steps if s < (step or steps[-1])]
        raise BeganError(f"checkpoint {path} fails its checks ({e})",
                         f"export an older one with --step {older[-1]}" if older else
                         "resume training to write a new one") from None
    step = state["step"]
    cfg = TrainConfig.from_dict(state["config"])
    G, D = build(cfg.model)
    G.load_state_dict({n[2:]: t for n, t in tensors.items() if n.startswith("G.")})
    D.load_state_dict({n[2:]: t for n, t in tensors.items() if n.startswith("D.")})
    used = _pick_weights(weights, has_ema(tensors), path)
    if used == "ema":
        G.load_state_dict(ema_weights(tensors))
    if cfg.model.vanishing_residual:  # the carry the weights were trained with at this step
        carry = max(0.0, 1.0 - step / cfg.residual_steps)
        G.set_carry(carry)
        D.set_carry(carry)
    data = _data_summary(run_dir / "data.json")
    return RunSnapshot(run_dir=run_dir, checkpoint=path, step=step, cfg=cfg, G=G.eval(),
                       D=D.eval(), k=float(tensors["ctl.k"]),
                       stats=_last_stats(run_dir / "stats.jsonl", step), data=data,
                       weights=used)


def preprocess_of(cfg: TrainConfig) -> Preprocess:
    """How the run decoded its images (eval and export decode theirs the same way)."""
    return Preprocess(resolution=cfg.model.resolution, crop=cfg.crop, background=cfg.background,
                      resample=cfg.resample, grey=cfg.model.grey)


def run_images(cfg: TrainConfig, folder: str | None = None,
               progress: bool | None = None) -> np.ndarray:
    """The run's training images (or `folder`'s, decoded as the run decoded its own),
    uint8 (N, R, R, 3), from the shared decode cache. Raises OSError or ValueError
    when there are none."""
    from .data import load_image_folder

    return load_image_folder(folder or cfg.data_dir, preprocess_of(cfg),
                             progress=progress).images
