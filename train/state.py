"""The training state: both nets, both optimisers, k_t, the random streams, the data
order, the lr schedule and the logged sums, with its checkpoint form.

`TrainState.build` makes a fresh one; `to_checkpoint` and `restore`
turn it into the tensors + JSON of a checkpoint and back (checkpoint.py writes
them). Modules with state of their own add it through hooks.py, not here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from began.errors import BeganError, UsageError
from began.models import build

from .batches import Batches
from .checkpoint import optimizer_from_flat, optimizer_to_flat
from .config import TrainConfig
from .controller import LRSchedule, anneal_rewrites_past, annealed
from .distributed import Dist

STAT_KEYS = ("loss_real", "loss_fake", "loss_d", "loss_cs", "m_global")


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


def uniform(n: int, dim: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, dim, generator=gen, device=device).mul_(2).sub_(1)


@dataclass
class TrainState:
    cfg: TrainConfig
    dev: torch.device
    G: torch.nn.Module
    D: torch.nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    gen: torch.Generator  # z and flips, on the device
    batches: Batches
    part: slice  # this rank's slice of the global batch
    fixed_z: torch.Tensor  # the z of every sample grid
    schedule: LRSchedule
    k: torch.Tensor
    log_meter: Meter
    window_meter: Meter
    step: int = 0

    @classmethod
    def build(cls, cfg: TrainConfig, images: np.ndarray, dev: torch.device, d: Dist
              ) -> "TrainState":
        torch.manual_seed(cfg.seed)  # weight init only; everything after has its own generator
        G, D = build(cfg.model)
        G, D = G.to(dev), D.to(dev)
        betas = (cfg.beta1, cfg.beta2)
        # Every rank draws the global batch's z, flips and data order from identically
        # seeded generators and keeps its slice: together they compute the single-process
        # update.
        return cls(
            cfg=cfg, dev=dev, G=G, D=D,
            opt_g=torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=betas),
            opt_d=torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=betas),
            gen=torch.Generator(dev).manual_seed(cfg.seed + 1),
            batches=Batches(images, cfg.batch_size, dev, seed=cfg.seed + 2, flip=cfg.flip,
                            on_device=cfg.data_on_device),
            part=d.local_slice(cfg.batch_size),
            fixed_z=uniform(cfg.n_samples, cfg.model.z_dim,
                            torch.Generator().manual_seed(cfg.seed + 3),
                            torch.device("cpu")).to(dev),
            schedule=LRSchedule(lr_g=cfg.lr_g, lr_d=cfg.lr_d, decay=cfg.lr_decay,
                                floor=cfg.lr_floor, patience=cfg.lr_patience,
                                min_delta=cfg.lr_min_delta),
            k=torch.tensor(cfg.k_init, dtype=torch.float32, device=dev),
            log_meter=Meter(len(STAT_KEYS), dev), window_meter=Meter(1, dev))

    # --- one step's inputs and outputs -----------------------------------------
    def set_carry(self) -> None:
        """Vanishing residuals: the skip path fades out over `residual_steps`."""
        if self.cfg.model.vanishing_residual:
            carry = max(0.0, 1.0 - self.step / self.cfg.residual_steps)
            self.G.set_carry(carry), self.D.set_carry(carry)

    def draw(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This rank's x, z_D and z_G for the next step (the order of draws is fixed:
        resumed runs depend on it)."""
        cfg = self.cfg
        x = self.batches.next(self.gen, self.part)
        z_g = uniform(cfg.batch_size, cfg.model.z_dim, self.gen, self.dev)[self.part]
        z_d = (z_g if cfg.z_shared else
               uniform(cfg.batch_size, cfg.model.z_dim, self.gen, self.dev)[self.part])
        return x, z_d, z_g

    def record(self, out: Any) -> None:
        """Take a step's StepOut: new k_t, the device-side sums, the step count."""
        self.k = out.k
        self.log_meter.add(out.loss_real, out.loss_fake, out.loss_d, out.loss_cs, out.m_global)
        self.window_meter.add(out.m_global)
        self.step += 1

    def lrs(self) -> tuple[float, float]:
        """The (G, D) learning rates of the next step: the plateau schedule's, annealed."""
        c = self.cfg
        return tuple(annealed(lr, self.step, c.lr_anneal_start, c.lr_anneal_steps, c.lr_floor)
                     for lr in (self.schedule.lr_g, self.schedule.lr_d))  # type: ignore[return-value]

    def set_lr(self) -> None:
        for opt, lr in zip((self.opt_g, self.opt_d), self.lrs()):
            for group in opt.param_groups:
                group["lr"] = lr

    def weights_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all())
                   for p in (*self.G.parameters(), *self.D.parameters()))

    # --- checkpoint form ---------------------------------------------------------
    def to_checkpoint(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The core state as (tensors, JSON-able meta) for checkpoint.save_checkpoint."""
        tg, mg = optimizer_to_flat(self.opt_g, "opt_g")
        td, md = optimizer_to_flat(self.opt_d, "opt_d")
        tb, mb = self.batches.state()
        tensors = {**{f"G.{n}": t for n, t in self.G.state_dict().items()},
                   **{f"D.{n}": t for n, t in self.D.state_dict().items()},
                   **tg, **td, **tb, "rng.device": self.gen.get_state(), "ctl.k": self.k,
                   "meter.log": self.log_meter.sum, "meter.window": self.window_meter.sum}
        meta = {"config": self.cfg.to_dict(), "opt_g": mg, "opt_d": md, "data": mb,
                "device_type": self.dev.type,
                "lr_schedule": self.schedule.state_dict(),
                "meter_keys": list(STAT_KEYS),
                "meter_counts": [self.log_meter.count, self.window_meter.count]}
        return tensors, meta

    def restore(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], where: str,
                warn: Callable[[str], None]) -> None:
        """Load a checkpoint's core state; BeganError when it does not fit this run."""
        try:
            self.G.load_state_dict({n[2:]: t for n, t in tensors.items() if n.startswith("G.")})
            self.D.load_state_dict({n[2:]: t for n, t in tensors.items() if n.startswith("D.")})
            optimizer_from_flat(self.opt_g, "opt_g", tensors, meta["opt_g"])
            optimizer_from_flat(self.opt_d, "opt_d", tensors, meta["opt_d"])
            self.batches.load_state(tensors, meta["data"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise BeganError(f"checkpoint {where} does not fit this run ({e})",
                             "pass a new --out for a new run") from None
        if meta.get("device_type") == self.dev.type:
            self.gen.set_state(tensors["rng.device"])
        else:  # CPU and CUDA generators differ: the z stream cannot carry over exactly
            self.gen.manual_seed(self.cfg.seed + 1 + meta["step"])
            warn(f"resuming a {meta.get('device_type')} run on {self.dev.type}: the noise "
                 "stream restarts, so this run will not match an uninterrupted one bit for bit")
        self.k = tensors["ctl.k"].to(self.dev)
        # Logged sums by name: a checkpoint from a version that logged other terms still
        # resumes (terms it lacks start from zero for the current row).
        saved_keys = meta.get("meter_keys", ["loss_real", "loss_fake", "loss_d", "m_global"])
        for name, value in zip(saved_keys, tensors["meter.log"]):
            if name in STAT_KEYS:
                self.log_meter.sum[STAT_KEYS.index(name)] = value
        self.window_meter.sum.copy_(tensors["meter.window"])
        self.log_meter.count, self.window_meter.count = meta["meter_counts"]
        self.schedule.load_state_dict(meta["lr_schedule"])
        self.step = meta["step"]
        self._check_anneal(meta["config"], where)

    def _check_anneal(self, saved: dict[str, Any], where: str) -> None:
        """--lr-anneal-* may change on resume only where it changes steps not yet taken."""
        old = (saved.get("lr_anneal_start", 0), saved.get("lr_anneal_steps", 0))
        new = (self.cfg.lr_anneal_start, self.cfg.lr_anneal_steps)
        if old != new and (anneal_rewrites_past(*old, self.step)
                           or anneal_rewrites_past(*new, self.step)):
            raise UsageError(
                f"checkpoint {where} is at step {self.step}: an lr anneal of (start, steps) "
                f"{old} cannot become {new} without changing steps already taken",
                f"keep --lr-anneal-start {old[0]} --lr-anneal-steps {old[1]}, or start the "
                f"new anneal at step {self.step} or later")

    def digest(self) -> str:
        """sha256 of G, D and k_t: equal on every rank of a DDP run."""
        h = hashlib.sha256()
        for name, t in [*self.G.state_dict().items(), *self.D.state_dict().items(),
                        ("k", self.k)]:
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
                     .tobytes())
        return h.hexdigest()
