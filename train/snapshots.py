"""Checkpoints of a training run: resume from the newest one that verifies, write
new ones (the core state of state.py plus every hook's own state, see hooks.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from began.errors import BeganError

from .checkpoint import load_checkpoint, load_latest
from .distributed import Dist
from .hooks import Hooks
from .rank0 import on_main
from .run_folder import RunFolder
from .state import TrainState


class Snapshots:
    def __init__(self, state: TrainState, hooks: Hooks, run: RunFolder, d: Dist,
                 log: Callable[[str], None]):
        self.state, self.hooks, self.run, self.d, self.log = state, hooks, run, d, log
        self.last: Path | None = None  # the newest checkpoint written or resumed from
        self.saved_step: int | None = None  # the step it holds

    def resume_newest(self, existed: bool) -> int | None:
        """Load the newest checkpoint that verifies into the state and the hooks; the
        step resumed from, or None for a fresh start."""
        def newest_good() -> str | None:
            found = load_latest(self.run.ckpt_dir, warn=lambda m: self.log(f"warning: {m}"))
            if found is None and existed:  # stopped before its first checkpoint: start over
                self.run.truncate_stats(0)
            return None if found is None else str(found[0])

        resume_path = on_main(self.d, newest_good)
        if resume_path is None:
            return None
        path = Path(resume_path)
        tensors, meta = load_checkpoint(path)
        state = self.state
        state.restore(tensors, meta, str(path), warn=lambda m: self.log(f"warning: {m}"))
        self.hooks.restore(tensors, meta.get("hooks", {}))
        self.run.truncate_stats(state.step)
        self.last = self.run.last_checkpoint = path
        self.saved_step = state.step
        self.log(f"resumed from {path.name} (step {state.step}, k_t {state.k.item():.4f}, "
                 f"lr {state.lrs()[0]:.2e})")
        return state.step

    def save(self, path: Path | None = None) -> Path | None:
        """Write the full state (to checkpoints/ckpt-<step>, or to `path`); refuses
        non-finite weights so a NaN never replaces the last good checkpoint."""
        state = self.state
        if not state.weights_finite():
            raise BeganError(f"weights became NaN/Inf at step {state.step}; no checkpoint "
                             "written over the last good one", "resume (it restarts from the "
                             "last good checkpoint) with a lower --lr-g/--lr-d or --gamma")
        if path is None:
            self.saved_step = state.step  # on every rank: they agree on what is saved
        if not self.d.is_main:
            return None
        tensors, meta = state.to_checkpoint()
        extra_tensors, extra_meta = self.hooks.to_checkpoint()
        tensors.update(extra_tensors)
        if extra_meta:
            meta["hooks"] = extra_meta
        written = self.run.write_checkpoint(state.step, tensors, meta, path)
        if path is None:
            self.last = self.run.last_checkpoint = written
        self.hooks.after_checkpoint(state, written)
        return written
