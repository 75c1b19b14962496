"""Fit a BEGAN to a folder of images. Reads top to bottom: setup, resume, loop.

    began train DATA_DIR --out runs/emoji64 --preset paper64 --device cuda
    began train DATA_DIR --out runs/smoke --preset smoke --device cpu
    torchrun --nproc-per-node 4 $(which began) train DATA_DIR --out runs/x --device cuda

Running the same command again resumes from the newest checkpoint that verifies.
Under torchrun, --batch-size is the global batch, split over the ranks, and rank
0 alone writes (see distributed.py).

A run folder holds:
    config.json           the resolved TrainConfig
    data.json             what was loaded: image count, skipped files and why
    stats.jsonl           one JSON object per `log_every` steps
    samples/reals.png     training images as the model sees them
    samples/samples-<step>.png   G(z) for a fixed z
    checkpoints/ckpt-<step>.safetensors   full training state (see checkpoint.py)
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from began.errors import BeganError, UsageError
from began.files import write_text
from began.images import make_grid, save_image, to_uint8
from began.models import build

from .batches import Batches
from . import distributed
from .checkpoint import (load_checkpoint, load_latest, optimizer_from_flat, optimizer_to_flat,
                         prune, save_checkpoint)
from .config import TrainConfig, incompatible_changes
from .controller import LRSchedule
from .data import ImageSet, NoImagesError, Preprocess, load_image_folder
from .distributed import Dist
from .interrupt import StopRequest
from .progress import Reporter
from .step import began_step

STAT_KEYS = ("loss_real", "loss_fake", "loss_d", "loss_cs", "m_global")


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


class Meter:
    """Running sums kept on the device: adding is a kernel, not a host sync."""

    def __init__(self, size: int, device: torch.device):
        dtype = torch.float32 if device.type == "mps" else torch.float64
        self.sum = torch.zeros(size, dtype=dtype, device=device)
        self.count = 0

    def add(self, *values: torch.Tensor) -> None:
        self.sum += torch.stack(values).to(self.sum.dtype)
        self.count += 1

    def take(self) -> list[float]:
        """Means since the last take (one host sync), then reset."""
        means = (self.sum / max(self.count, 1)).tolist()
        self.sum.zero_()
        self.count = 0
        return means


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise BeganError(f"unknown device {spec!r}", "use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BeganError("--device cuda was asked for, but PyTorch sees no CUDA GPU",
                         "install a CUDA build of torch (https://pytorch.org) or use --device cpu")
    return dev


def _uniform(n: int, dim: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, dim, generator=gen, device=device).mul_(2).sub_(1)


def _prepare_run(cfg: TrainConfig, run_dir: Path) -> bool:
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


def _truncate_stats(path: Path, step: int) -> None:
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


def _on_main(d: Dist, fn: Callable[[], object]) -> object:
    """Run `fn` on rank 0 only; every rank gets its result, or raises its error."""
    result, error = None, None
    if d.is_main:
        try:
            result = fn()
        except BeganError as e:
            error = (e.message, e.hint, e.exit_code)
    result, error = d.broadcast((result, error))
    if error:
        raise BeganError(*error)
    return result


def _load_data(cfg: TrainConfig, run_dir: Path, progress: bool | None,
               log: Callable[[str], None], d: Dist) -> ImageSet:
    """Decode the folder into the cache (rank 0 first, the other ranks then read it)."""
    pre = Preprocess(resolution=cfg.model.resolution, crop=cfg.crop, background=cfg.background,
                     resample=cfg.resample)

    def load() -> ImageSet:
        try:
            return load_image_folder(cfg.data_dir, pre, workers=cfg.workers or None,
                                     progress=progress if d.is_main else False)
        except NoImagesError as e:
            raise BeganError(str(e), "point DATA_DIR at a folder with png, jpg, webp, bmp or "
                                     "gif images (searched recursively)") from None
        except (FileNotFoundError, NotADirectoryError) as e:
            raise BeganError(str(e), "DATA_DIR must be a folder of images") from None

    if d.active:  # rank 0 builds the cache; then every rank reads it
        def build_cache() -> None:
            load()

        _on_main(d, build_cache)
    data = load()
    if d.is_main:
        write_text(run_dir / "data.json", json.dumps(data.report(), indent=2) + "\n")
    log(f"data: {len(data.files)} images at {pre.resolution}x{pre.resolution} from "
        f"{cfg.data_dir}" + (" (cached)" if data.from_cache else ""))
    if data.skipped:
        shown = "; ".join(f"{s.path}: {s.reason}" for s in data.skipped[:5])
        more = f" and {len(data.skipped) - 5} more" if len(data.skipped) > 5 else ""
        log(f"skipped {len(data.skipped)} files ({shown}{more}); all listed in "
            f"{run_dir / 'data.json'}")
    return data


def train(cfg: TrainConfig, run_dir: str | Path, device: str = "auto",
          progress: bool | None = None, log: Callable[[str], None] | None = None
          ) -> TrainResult:
    """Train (or resume) the run in `run_dir` up to `cfg.steps` steps (under torchrun
    too: the process group comes from the environment)."""
    d, device = distributed.from_env(device)
    try:
        return _train(cfg, Path(run_dir), device, progress, log, d)
    finally:
        distributed.shutdown(d)


def _train(cfg: TrainConfig, run_dir: Path, device: str, progress: bool | None,
           log: Callable[[str], None] | None, d: Dist) -> TrainResult:
    if cfg.batch_size % d.world:
        raise UsageError(f"--batch-size {cfg.batch_size} does not split over {d.world} ranks",
                         f"use a multiple of {d.world}: it is the global batch")
    log = (log or (lambda msg: print(msg, file=sys.stderr))) if d.is_main else (lambda m: None)
    dev = resolve_device(device)
    existed = _on_main(d, lambda: _prepare_run(cfg, run_dir))
    ckpt_dir, samples_dir = run_dir / "checkpoints", run_dir / "samples"
    data = _load_data(cfg, run_dir, progress, log, d)

    # --- model, optimisers, random streams ------------------------------------
    torch.manual_seed(cfg.seed)  # weight init only; everything after has its own generator
    G, D = build(cfg.model)
    G, D = G.to(dev), D.to(dev)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    # Every rank draws the global batch's z, flips and data order from identically seeded
    # generators and keeps its slice: together they compute the single-process update.
    gen = torch.Generator(dev).manual_seed(cfg.seed + 1)  # z and flips, on the device
    part = d.local_slice(cfg.batch_size)
    batches = Batches(data.images, cfg.batch_size, dev, seed=cfg.seed + 2, flip=cfg.flip,
                      on_device=cfg.data_on_device)
    fixed_z = _uniform(cfg.n_samples, cfg.model.z_dim,
                       torch.Generator().manual_seed(cfg.seed + 3), torch.device("cpu")).to(dev)
    schedule = LRSchedule(lr_g=cfg.lr_g, lr_d=cfg.lr_d, decay=cfg.lr_decay, floor=cfg.lr_floor,
                          patience=cfg.lr_patience, min_delta=cfg.lr_min_delta)
    k = torch.tensor(cfg.k_init, dtype=torch.float32, device=dev)
    log_meter, window_meter = Meter(len(STAT_KEYS), dev), Meter(1, dev)
    step = 0

    # --- resume from the newest checkpoint that verifies -----------------------
    def newest_good() -> str | None:
        found = load_latest(ckpt_dir, warn=lambda m: log(f"warning: {m}"))
        if found is None and existed:  # stopped before its first checkpoint: start over
            _truncate_stats(run_dir / "stats.jsonl", 0)
        return None if found is None else str(found[0])

    resumed_from = None
    resume_path = _on_main(d, newest_good)
    if resume_path is not None:
        path = Path(resume_path)
        tensors, state = load_checkpoint(path)
        try:
            G.load_state_dict({n[2:]: t for n, t in tensors.items() if n.startswith("G.")})
            D.load_state_dict({n[2:]: t for n, t in tensors.items() if n.startswith("D.")})
            optimizer_from_flat(opt_g, "opt_g", tensors, state["opt_g"])
            optimizer_from_flat(opt_d, "opt_d", tensors, state["opt_d"])
            batches.load_state(tensors, state["data"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise BeganError(f"checkpoint {path} does not fit this run ({e})",
                             "pass a new --out for a new run") from None
        if state.get("device_type") == dev.type:
            gen.set_state(tensors["rng.device"])
        else:  # CPU and CUDA generators differ: the z stream cannot carry over exactly
            gen.manual_seed(cfg.seed + 1 + state["step"])
            log(f"warning: resuming a {state.get('device_type')} run on {dev.type}: the noise "
                "stream restarts, so this run will not match an uninterrupted one bit for bit")
        k = tensors["ctl.k"].to(dev)
        # Logged sums by name: a checkpoint from a version that logged other terms still
        # resumes (terms it lacks start from zero for the current row).
        saved_keys = state.get("meter_keys", ["loss_real", "loss_fake", "loss_d", "m_global"])
        for name, value in zip(saved_keys, tensors["meter.log"]):
            if name in STAT_KEYS:
                log_meter.sum[STAT_KEYS.index(name)] = value
        window_meter.sum.copy_(tensors["meter.window"])
        log_meter.count, window_meter.count = state["meter_counts"]
        schedule.load_state_dict(state["lr_schedule"])
        step = resumed_from = state["step"]
        if d.is_main:
            _truncate_stats(run_dir / "stats.jsonl", step)
        log(f"resumed from {path.name} (step {step}, k_t {k.item():.4f}, "
            f"lr {schedule.lr_g:.2e})")

    def set_lr() -> None:
        for opt, lr in ((opt_g, schedule.lr_g), (opt_d, schedule.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr

    def on_disk(what: str, write: Callable[[], object]) -> object:
        """Rank 0's writes; a full disk or a lost permission is one clear error."""
        if not d.is_main:
            return None
        try:
            return write()
        except OSError as e:
            resume = f"from {last_ckpt.name}" if last_ckpt else "from its last checkpoint"
            raise BeganError(f"cannot write {what} in {run_dir} ({e.strerror or e})",
                             f"free disk space or fix permissions, then rerun the same "
                             f"command: it resumes {resume}") from None

    def checkpoint() -> Path | None:
        if not all(bool(torch.isfinite(p).all()) for p in (*G.parameters(), *D.parameters())):
            raise BeganError(f"weights became NaN/Inf at step {step}; no checkpoint written over "
                             "the last good one", "resume (it restarts from the last good "
                             "checkpoint) with a lower --lr-g/--lr-d or --gamma")
        if not d.is_main:
            return None
        tg, mg = optimizer_to_flat(opt_g, "opt_g")
        td, md = optimizer_to_flat(opt_d, "opt_d")
        tb, mb = batches.state()
        tensors = {**{f"G.{n}": t for n, t in G.state_dict().items()},
                   **{f"D.{n}": t for n, t in D.state_dict().items()},
                   **tg, **td, **tb, "rng.device": gen.get_state(), "ctl.k": k,
                   "meter.log": log_meter.sum, "meter.window": window_meter.sum}
        state = {"config": cfg.to_dict(), "opt_g": mg, "opt_d": md, "data": mb,
                 "device_type": dev.type,
                 "lr_schedule": schedule.state_dict(),
                 "meter_keys": list(STAT_KEYS),
                 "meter_counts": [log_meter.count, window_meter.count]}

        def write() -> Path:
            path = save_checkpoint(ckpt_dir, step, tensors, state)
            prune(ckpt_dir, cfg.keep)
            return path

        return on_disk(f"checkpoint {step}", write)

    def write_samples() -> None:
        if not d.is_main:
            return
        with torch.no_grad():
            imgs = G(fixed_z).float().cpu().numpy()
        on_disk("a sample grid", lambda: save_image(
            samples_dir / f"samples-{step:08d}.png", make_grid(to_uint8(imgs))))

    def write_stats(row: dict) -> None:
        def append() -> None:
            with open(run_dir / "stats.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
        on_disk("stats.jsonl", append)

    last_ckpt: Path | None = None
    if resumed_from is None:
        # Evenly spaced through the (sorted) files: folders per class all show up.
        pick = np.linspace(0, len(data.images) - 1, min(cfg.n_samples, len(data.images)))
        on_disk("reals.png", lambda: save_image(
            samples_dir / "reals.png", make_grid(np.array(data.images[pick.astype(int)]))))

    # --- the loop ---------------------------------------------------------------
    set_lr()
    ckpt_step = resumed_from
    last_stats: dict | None = None
    reporter = Reporter(total=cfg.steps, start=step, progress=progress, log=log,
                        enabled=d.is_main)
    t_last, step_last = time.perf_counter(), step
    stop = StopRequest()
    try:
        with stop, reporter:
            while step < cfg.steps:
                if cfg.model.vanishing_residual:
                    carry = max(0.0, 1.0 - step / cfg.residual_steps)
                    G.set_carry(carry), D.set_carry(carry)
                x = batches.next(gen, part)
                z_g = _uniform(cfg.batch_size, cfg.model.z_dim, gen, dev)[part]
                z_d = (z_g if cfg.z_shared else
                       _uniform(cfg.batch_size, cfg.model.z_dim, gen, dev)[part])
                out = began_step(G, D, opt_g, opt_d, x, z_d, z_g, k, gamma=cfg.gamma,
                                 lambda_k=cfg.lambda_k, k_max=cfg.k_max, eta=cfg.eta,
                                 z_shared=cfg.z_shared, cs_alpha=cfg.cs_alpha,
                                 reduce=d.mean if d.active else None)
                k = out.k
                log_meter.add(out.loss_real, out.loss_fake, out.loss_d, out.loss_cs, out.m_global)
                window_meter.add(out.m_global)
                step += 1

                at_log = step % cfg.log_every == 0 or step == cfg.steps
                if at_log:
                    n_steps = log_meter.count
                    means = dict(zip(STAT_KEYS, log_meter.take()))  # the host sync
                    now = time.perf_counter()
                    ips = (step - step_last) * cfg.batch_size / max(now - t_last, 1e-9)
                    t_last, step_last = now, step
                    if not all(math.isfinite(v) for v in means.values()):
                        raise BeganError(
                            f"losses became NaN/Inf by step {step} ({means})",
                            "rerun the same command: it resumes from the last good "
                            "checkpoint; lower --lr-g/--lr-d if it happens again")
                    last_stats = {"step": step, **means, "k": float(k), "lr_g": schedule.lr_g,
                                  "lr_d": schedule.lr_d, "images_per_s": round(ips, 1),
                                  "epoch": batches.epoch, "steps_averaged": n_steps}
                    write_stats(last_stats)
                    reporter.update(step, last_stats)
                if step % cfg.lr_window == 0:
                    if schedule.observe(window_meter.take()[0]):
                        set_lr()
                        log(f"step {step}: M_global stalled for {cfg.lr_patience} windows; "
                            f"lr now {schedule.lr_g:.2e} (G), {schedule.lr_d:.2e} (D)")
                if step % cfg.sample_every == 0 or step == cfg.steps:
                    write_samples()
                if step % cfg.ckpt_every == 0 or step == cfg.steps:
                    last_ckpt, ckpt_step = checkpoint(), step
                # Between steps the state is consistent. Under DDP the ranks agree on when
                # to stop at log rows only (one tiny all-reduce), not every step.
                requested = stop.signum is not None
                if d.active:
                    requested = at_log and d.any(requested, dev)
                if requested:
                    if ckpt_step != step:
                        last_ckpt, ckpt_step = checkpoint(), step
                    raise Interrupted(step, last_ckpt, stop.exit_code)
    except KeyboardInterrupt:  # a second Ctrl-C: mid-step, so no checkpoint of this state
        raise Interrupted(step, last_ckpt, 130) from None

    return TrainResult(run_dir=run_dir, step=step, k=float(k),
                       m_global=None if last_stats is None else last_stats["m_global"],
                       checkpoint=last_ckpt, resumed_from=resumed_from,
                       weights_sha256=_digest(G, D, k))


def _digest(G: torch.nn.Module, D: torch.nn.Module, k: torch.Tensor) -> str:
    h = hashlib.sha256()
    for name, t in [*G.state_dict().items(), *D.state_dict().items(), ("k", k)]:
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


__all__ = ["Interrupted", "TrainResult", "resolve_device", "train"]
