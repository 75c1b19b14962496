"""Fit a BEGAN to a folder of images. Reads top to bottom: setup, resume, loop.

    began train DATA_DIR --out runs/emoji64 --preset paper64 --device cuda
    began train DATA_DIR --out runs/smoke --preset smoke --device cpu
    torchrun --nproc-per-node 4 $(which began) train DATA_DIR --out runs/x --device cuda

Running the same command again resumes from the newest checkpoint that verifies.
Under torchrun, --batch-size is the global batch, split over the ranks, and rank
0 alone writes (see distributed.py). What a run folder holds: run_folder.py.

Where things live (this file only calls them):
    state.py       the training state (nets, optimisers, k_t, RNGs, data order, meters)
                   and its checkpoint form
    snapshots.py   resume from the newest good checkpoint; write checkpoints
    run_folder.py  config check, stats rows, sample grids, checkpoint files (rank 0)
    load.py        decoding the image folder
    hooks.py       add-ons (quality tracking, EMA, augmentation): `make_hooks` switches
                   them on, the loop calls them per batch, per step, per log row
    progress.py    the console: a bar on a terminal, plain lines elsewhere
    _choose_step   below: which step function trains (step.py's began_step by default)
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from began.errors import BeganError, UsageError, sigterm_unwinds
from began.models.device import resolve_device

from . import augment, distributed
from .config import TrainConfig
from .distributed import Dist
from .fast_step import fast_or_reference
from .hooks import HookContext, Hooks, make_hooks
from .interrupt import StopRequest
from .load import load_data
from .progress import Rate, Reporter
from .rank0 import on_main
from .run_folder import RunFolder, refuse_data_overlap
from .snapshots import Snapshots
from .state import STAT_KEYS, TrainState
from .step import StepOut, began_step
from .threads import apply as apply_threads


class Interrupted(Exception):
    """Training stopped by Ctrl-C or SIGTERM; `checkpoint` holds the state to resume from."""

    def __init__(self, step: int, checkpoint: Path | None, exit_code: int = 130):
        super().__init__(f"interrupted at step {step}")
        self.step, self.checkpoint, self.exit_code = step, checkpoint, exit_code


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    k: float
    m_global: float | None
    checkpoint: Path | None
    resumed_from: int | None
    weights_sha256: str = ""  # of G, D and k_t: equal on every rank of a DDP run


def train(cfg: TrainConfig, run_dir: str | Path, device: str = "auto",
          progress: bool | None = None, log: Callable[[str], None] | None = None,
          threads: int | None = None) -> TrainResult:
    """Train (or resume) the run in `run_dir` up to `cfg.steps` steps (under torchrun
    too: the process group comes from the environment). `threads`: CPU threads, see
    threads.py for the default."""
    refuse_data_overlap(cfg.data_dir, run_dir)  # before anything is written
    apply_threads(threads)
    d, device = distributed.from_env(device)
    run = RunFolder(cfg, Path(run_dir), d)
    finished = False
    try:
        # SIGTERM before the loop's own handler (decoding, building, resuming) unwinds
        # through the cleanup below and exits 143, instead of killing the process mid-setup.
        with sigterm_unwinds():
            result = _train(cfg, run, device, progress, log, d)
        finished = True
        return result
    except BaseException:
        run.discard_created()  # a failed start leaves no empty run folder behind
        raise
    finally:
        run.close()
        distributed.shutdown(d, together=finished)


def _train(cfg: TrainConfig, run: RunFolder, device: str, progress: bool | None,
           log: Callable[[str], None] | None, d: Dist) -> TrainResult:
    # --- setup --------------------------------------------------------------------
    if cfg.batch_size % d.world:
        raise UsageError(f"--batch-size {cfg.batch_size} does not split over {d.world} ranks",
                         f"use a multiple of {d.world}: it is the global batch")
    log = (log or (lambda msg: print(msg, file=sys.stderr))) if d.is_main else (lambda m: None)
    dev = resolve_device(device)
    existed = on_main(d, run.open)  # the lock, stale temp files, settings vs the run's
    data = load_data(cfg, run, progress, log, d)
    state = TrainState.build(cfg, data.images, dev, d)
    hooks = Hooks([])
    snaps = Snapshots(state, hooks, run, d, log)
    hooks.hooks += make_hooks(HookContext(cfg, run, d, log, save_checkpoint=snaps.save))
    step_fn = _choose_step(cfg, d, dev, log)

    # --- resume -----------------------------------------------------------------------
    resumed_from = snaps.resume_newest(existed)
    if resumed_from is None:
        run.write_reals(data.images)
    state.set_lr()

    # --- the loop -----------------------------------------------------------------------
    row: dict[str, Any] | None = None
    reporter = Reporter(total=cfg.steps, start=state.step, progress=progress, log=log,
                        enabled=d.is_main, batch_size=cfg.batch_size)
    rate = Rate(state.step, cfg.batch_size)
    stop = StopRequest()
    try:
        with stop, reporter:
            while state.step < cfg.steps:
                if cfg.lr_anneal_steps:  # host floats only; the fast step syncs on change
                    state.set_lr()
                _one_step(state, step_fn, hooks)
                reporter.advance(state.step)
                at_log = state.step % cfg.log_every == 0 or state.step == cfg.steps
                if at_log:
                    row = _stats_row(state, hooks, rate)
                    run.write_stats(row)
                    reporter.update(state.step, row)
                if state.step % cfg.lr_window == 0:
                    _observe_lr(state, log)
                if state.step % cfg.sample_every == 0 or state.step == cfg.steps:
                    run.write_samples(state.G, state.fixed_z, state.step)
                if state.step % cfg.ckpt_every == 0 or state.step == cfg.steps:
                    snaps.save()
                if hooks.stop_reason():  # a hook ends the run cleanly (--stop-on-collapse)
                    if snaps.saved_step != state.step:
                        snaps.save()
                    log(f"stopped at step {state.step}: {hooks.stop_reason()}")
                    break
                if _stop_requested(stop, at_log, d, dev):
                    if snaps.saved_step != state.step:
                        snaps.save()
                    raise Interrupted(state.step, snaps.last, stop.exit_code)
    except KeyboardInterrupt:  # a second Ctrl-C: mid-step, so no checkpoint of this state
        raise Interrupted(state.step, snaps.last, 130) from None
    finally:
        hooks.close(state)

    return TrainResult(run_dir=run.path, step=state.step, k=float(state.k),
                       m_global=None if row is None else row["m_global"],
                       checkpoint=snaps.last,
                       resumed_from=resumed_from, weights_sha256=state.digest())


StepFn = Callable[[TrainState, torch.Tensor, torch.Tensor, torch.Tensor], StepOut]


def _choose_step(cfg: TrainConfig, d: Dist, dev: torch.device, log: Callable[[str], None]
                 ) -> StepFn:
    """The step function is chosen here. Every choice takes (state, x, z_D, z_G), updates
    G, D and both optimisers in place and returns a StepOut (0-dim device tensors, no
    host sync). A faster step (or alternating updates) is a branch on a config field
    that returns another function of the same shape; step.py's began_step is the
    reference it must match."""
    reduce = d.mean if d.active else None
    kw = dict(gamma=cfg.gamma, lambda_k=cfg.lambda_k, k_max=cfg.k_max, eta=cfg.eta,
              z_shared=cfg.z_shared, cs_alpha=cfg.cs_alpha, reduce=reduce,
              alternating=cfg.alternating, pullaway=cfg.pullaway, cs_g=cfg.cs_g)

    def reference(s: TrainState, x: torch.Tensor, z_d: torch.Tensor, z_g: torch.Tensor
                  ) -> StepOut:
        # began_step is looked up at call time, so tests can wrap it.
        return began_step(s.G, s.D, s.opt_g, s.opt_d, x, z_d, z_g, s.k, **kw,
                          augment=augment.for_state(cfg, s))

    return fast_or_reference(cfg, dev, reduce, log, reference)  # fast_step.py decides


def _one_step(state: TrainState, step_fn: StepFn, hooks: Hooks) -> None:
    state.set_carry()
    x, z_d, z_g = state.draw()
    x = hooks.on_batch(state, x)
    out = step_fn(state, x, z_d, z_g)
    state.record(out)
    hooks.after_step(state, out)


def _stats_row(state: TrainState, hooks: Hooks, rate: Rate) -> dict[str, Any]:
    """The stats.jsonl row for the steps since the last one (one host sync)."""
    n_steps = state.log_meter.count
    means = dict(zip(STAT_KEYS, state.log_meter.take()))
    ips = rate.images_per_s(state.step)
    if not all(math.isfinite(v) for v in means.values()):
        raise BeganError(f"losses became NaN/Inf by step {state.step} ({means})",
                         "rerun the same command: it resumes from the last good checkpoint; "
                         "lower --lr-g/--lr-d if it happens again")
    lr_g, lr_d = state.lrs()
    row = {"step": state.step, **means, "k": float(state.k), "lr_g": lr_g,
           "lr_d": lr_d, "images_per_s": round(ips, 1),
           "epoch": state.batches.epoch, "steps_averaged": n_steps}
    hooks.on_log(state, row)
    return row


def _observe_lr(state: TrainState, log: Callable[[str], None]) -> None:
    """One M_global window for the lr schedule; decays both lrs when it stalls."""
    if state.schedule.observe(state.window_meter.take()[0]):
        state.set_lr()
        log(f"step {state.step}: M_global stalled for {state.cfg.lr_patience} windows; "
            f"lr now {state.schedule.lr_g:.2e} (G), {state.schedule.lr_d:.2e} (D)")


def _stop_requested(stop: StopRequest, at_log: bool, d: Dist, dev: torch.device) -> bool:
    """Between steps the state is consistent. Under DDP the ranks agree on when to stop
    at log rows only (one tiny all-reduce), not every step."""
    requested = stop.signum is not None
    if d.active:
        requested = at_log and d.any(requested, dev)
    return requested


__all__ = ["Interrupted", "TrainResult", "resolve_device", "train"]
