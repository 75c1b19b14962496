"""Add-ons to the training loop (quality tracking, EMA of G, augmentation, ...).

A new concern is a module of its own that knows nothing of hooks (ema.py,
quality.py), plus a small `Hook` subclass here that calls it, switched on in
`make_hooks` (one line): the hooks depend on the concerns, never the reverse. The loop calls every hook at fixed points:

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
from .ema import EMA, NAME as EMA_NAME
from .quality import (BEST_NAME, QualityTracker, eval_interval, kid_scorer, kid_wanted,
                      score_of)
from .rank0 import on_main


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
        hooks.append(EMAHook(ctx))
    if ctx.cfg.eval_every != 0:  # -1 (auto) may still mean none for a short run
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


class EMAHook(Hook):
    """The loop's side of ema.py: the average starts from G's weights before the first
    step, is updated after every step, draws its own grids (samples/ema-<step>.png) and
    rides in every checkpoint."""

    name = EMA_NAME

    def __init__(self, ctx: HookContext):
        super().__init__(ctx)
        self.ema: EMA | None = None
        self._restored: dict[str, torch.Tensor] = {}

    def on_batch(self, state, x: torch.Tensor) -> torch.Tensor:
        if self.ema is None:
            self.ema = EMA(state.G, self.ctx.cfg.ema_decay)
            if self._restored:
                self.ema.load_state_tensors(self._restored)
        return x

    def after_step(self, state, out) -> None:
        assert self.ema is not None
        self.ema.update(state.G)
        cfg = self.ctx.cfg
        if state.step % cfg.sample_every == 0 or state.step == cfg.steps:
            self.ctx.run.write_samples(self.ema.model, state.fixed_z, state.step, name="ema")

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        return self._restored if self.ema is None else self.ema.state_tensors()

    def load_checkpoint(self, tensors: dict[str, torch.Tensor], meta) -> None:
        # A checkpoint written without an average ({}): it starts from G at the next step.
        self._restored = tensors


class QualityHook(Hook):
    """The loop's side of quality.py: the tracker in the training loop. At stats rows on the `eval_every` cadence: rank
    0 measures and every rank gets its numbers (so all ranks judge alike), the columns
    go into the row (`quality` is the signal the progress line shows), the best state
    is written to checkpoints/ckpt-best.safetensors, collapse is said once, and with
    --stop-on-collapse `stop_reason` asks the loop to end the run."""

    name = "quality"

    def __init__(self, ctx: HookContext):
        super().__init__(ctx)
        self.tracker: QualityTracker | None = None
        self.saved: dict[str, Any] | None = None  # restored before the tracker exists
        self.stop_reason: str | None = None

    def _tracker(self, state: Any) -> QualityTracker:
        """Built at the first evaluation: the reals go to the device only if tracking runs."""
        if self.tracker is None:
            ctx, dev = self.ctx, state.dev
            tr = QualityTracker(ctx.cfg, state.batches.images, dev)

            def make_kid() -> bool:  # rank 0 alone featurises; all ranks learn if it did
                tr.kid = kid_scorer(tr.reals, dev, ctx.log)
                return tr.kid is not None

            if kid_wanted(ctx.cfg, dev) and on_main(ctx.d, make_kid):
                tr.best_by = "kid"
            tr.restore(self.saved)
            self.tracker = tr
        return self.tracker

    def on_log(self, state: Any, row: dict[str, Any]) -> None:
        every = eval_interval(self.ctx.cfg)
        if not every or state.step % every:
            return
        tr = self._tracker(state)
        measured = on_main(self.ctx.d, lambda: tr.measure(state.G, state.D))
        verdict = tr.judge(state.step, measured)
        row.update(verdict.row)
        row["quality"] = round(score_of(verdict.row), 5)
        if verdict.message:
            self.ctx.log(verdict.message)
        if verdict.best:
            self.ctx.save_checkpoint(self.ctx.run.ckpt_dir / BEST_NAME)
        if verdict.collapsed and self.ctx.cfg.stop_on_collapse:  # a resumed run too
            best = tr.state.best_step
            self.stop_reason = ("collapse (--stop-on-collapse); " +
                                (f"best checkpoint: step {best} ({BEST_NAME})" if best is not
                                 None else "no best checkpoint was kept"))

    def checkpoint_meta(self) -> Any:
        if self.tracker is None:
            return self.saved
        return self.tracker.state.to_dict()

    def load_checkpoint(self, tensors: dict[str, torch.Tensor], meta: Any) -> None:
        self.saved = meta
        if self.tracker is not None:
            self.tracker.restore(meta)
