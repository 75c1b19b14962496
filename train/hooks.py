"""Add-ons to the training loop (quality tracking, EMA of G, augmentation, ...).

A new concern is a `Hook` subclass in its own module, switched on in
`make_hooks` below (one line). The loop calls every hook at fixed points:

    on_batch(state, x) -> x      before each step: may transform this rank's batch
                                 (draw randomness from state.gen only: resume depends on it)
    after_step(state, out)       after each step (state.step already counts it); keep it
                                 free of host syncs (no .item(), no float(tensor)); do
                                 periodic work here, e.g. `if state.step % every == 0`
    on_log(state, row)           at each stats row, before it is written: add columns to
                                 `row` (a host sync is fine here); the bar and
                                 `began plot` show them
    after_checkpoint(state, path)  after a checkpoint was written (rank 0 only)
    close(state)                 once, when the loop ends (normally or not)

Checkpointed state: `checkpoint_tensors()` and `checkpoint_meta()` are stored
under the hook's `name` (tensors as "<name>.<key>", meta as state["hooks"][name]);
`load_checkpoint(tensors, meta)` gets them back with the prefix removed, or
({}, None) when resuming a checkpoint written without this hook.

Every rank runs the hooks (they see the same state); write files only through
`ctx.run` (a RunFolder, which writes on rank 0 only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from .config import TrainConfig
from .distributed import Dist


@dataclass
class HookContext:
    """What a hook may use besides the state passed to each call."""

    cfg: TrainConfig
    run: Any  # run_folder.RunFolder
    d: Dist
    log: Callable[[str], None]
    save_checkpoint: Callable[[Any], Any]  # to a path: writes the full state there (rank 0)


class Hook:
    name = "hook"  # prefix of this hook's tensors and key of its meta in checkpoints
    stop_reason: str | None = None  # set (the same on every rank) to end the run cleanly

    def __init__(self, ctx: HookContext):
        self.ctx = ctx

    def on_batch(self, state: Any, x: torch.Tensor) -> torch.Tensor:
        return x

    def after_step(self, state: Any, out: Any) -> None:
        pass

    def on_log(self, state: Any, row: dict[str, Any]) -> None:
        pass

    def after_checkpoint(self, state: Any, path: Any) -> None:
        pass

    def close(self, state: Any) -> None:
        pass

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def checkpoint_meta(self) -> Any:
        return None

    def load_checkpoint(self, tensors: dict[str, torch.Tensor], meta: Any) -> None:
        pass


def make_hooks(ctx: HookContext) -> list[Hook]:
    """The hooks this config asks for, in call order. New modules plug in here:
    `if ctx.cfg.<your_option>: hooks.append(YourHook(ctx))`."""
    hooks: list[Hook] = []
    if ctx.cfg.ema_decay > 0:
        from .ema import EMAHook  # (ema.py subclasses Hook: imported here, not at the top)
        hooks.append(EMAHook(ctx))
    if ctx.cfg.eval_every != 0:  # -1 (auto) may still mean none for a short run
        from .quality import QualityHook
        hooks.append(QualityHook(ctx))
    return hooks


class Hooks:
    """Calls every hook in order; the loop talks to this one object."""

    def __init__(self, hooks: list[Hook]):
        self.hooks = hooks

    def on_batch(self, state: Any, x: torch.Tensor) -> torch.Tensor:
        for h in self.hooks:
            x = h.on_batch(state, x)
        return x

    def after_step(self, state: Any, out: Any) -> None:
        for h in self.hooks:
            h.after_step(state, out)

    def on_log(self, state: Any, row: dict[str, Any]) -> None:
        for h in self.hooks:
            h.on_log(state, row)

    def after_checkpoint(self, state: Any, path: Any) -> None:
        for h in self.hooks:
            h.after_checkpoint(state, path)

    def close(self, state: Any) -> None:
        for h in self.hooks:
            h.close(state)

    def stop_reason(self) -> str | None:
        """Why a hook asks the run to end after this step (e.g. --stop-on-collapse)."""
        return next((h.stop_reason for h in self.hooks if h.stop_reason), None)

    def to_checkpoint(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors: dict[str, torch.Tensor] = {}
        meta: dict[str, Any] = {}
        for h in self.hooks:
            tensors.update({f"{h.name}.{k}": v for k, v in h.checkpoint_tensors().items()})
            m = h.checkpoint_meta()
            if m is not None:
                meta[h.name] = m
        return tensors, meta

    def restore(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        for h in self.hooks:
            head = h.name + "."
            mine = {k[len(head):]: v for k, v in tensors.items() if k.startswith(head)}
            h.load_checkpoint(mine, meta.get(h.name))
