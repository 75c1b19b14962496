"""Read a training run folder for export: one verified checkpoint, its config,
the networks rebuilt from it, and what the run logged up to that step.

Export never changes the run: a checkpoint that fails its checks is an error
here (not moved aside, not skipped silently).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from began.errors import BeganError, UsageError
from began.models import Discriminator, Generator, build
from began.train.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
from began.train.config import TrainConfig
from began.train.ema import ema_weights, has_ema


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


def _last_stats(path: Path, step: int) -> dict[str, Any] | None:
    row = None
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if r.get("step", step + 1) <= step:
                row = r
    return row


WEIGHTS = ("auto", "ema", "raw")


def _pick_weights(weights: str, ema_saved: bool, path: Path) -> str:
    """Which G to rebuild: "raw" (the trained weights), "ema" (their moving average, kept
    by `began train --ema-decay`, see train/ema.py) or "auto" (ema when the checkpoint
    holds it)."""
    if weights not in WEIGHTS:
        raise UsageError(f"unknown --weights {weights!r}", "use auto, ema or raw")
    if weights == "ema" and not ema_saved:
        raise UsageError(f"{path.name} holds no moving average of G's weights",
                         "train with --ema-decay (e.g. 0.999), or export --weights raw")
    return "ema" if weights != "raw" and ema_saved else "raw"


def load_run(run_dir: str | Path, step: int | None = None,
             weights: str = "auto") -> RunSnapshot:
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise BeganError(f"{run_dir} is not a training run (no config.json)",
                         "pass the --out folder of a `began train` run")
    saved = list_checkpoints(run_dir / "checkpoints")
    if not saved:
        raise BeganError(f"{run_dir} has no checkpoint yet",
                         "train longer, or lower --ckpt-every")
    steps = [s for s, _ in saved]
    listed = ", ".join(map(str, steps[-10:]))
    if step is None:
        step, path = saved[-1]
    elif step in steps:
        path = dict(saved)[step]
    else:
        raise BeganError(f"step {step} was never saved in {run_dir}",
                         f"saved steps: {listed}")
    try:
        tensors, state = load_checkpoint(path)
    except CheckpointError as e:
        older = [s for s in steps if s < step]
        raise BeganError(f"checkpoint {path} fails its checks ({e})",
                         f"export an older one with --step {older[-1]}" if older else
                         "resume training to write a new one") from None
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
    data_json = run_dir / "data.json"
    data = json.loads(data_json.read_text()) if data_json.exists() else None
    return RunSnapshot(run_dir=run_dir, checkpoint=path, step=step, cfg=cfg, G=G.eval(),
                       D=D.eval(), k=float(tensors["ctl.k"]),
                       stats=_last_stats(run_dir / "stats.jsonl", step), data=data,
                       weights=used)
