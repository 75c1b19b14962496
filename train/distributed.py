"""Data-parallel training under torchrun, written so that N processes compute
exactly the single-process BEGAN update on the same global batch.

    torchrun --nproc-per-node 4 $(which began) train DATA --out RUN --device cuda
    torchrun --nproc-per-node 2 $(which began) train DATA --out RUN --device cpu   # gloo

- `--batch-size` is the GLOBAL batch; each of the N ranks takes its 1/N slice.
  Every rank draws the same global data order, z and flips from identically
  seeded generators and keeps its slice, so the ranks together see what one
  process would.
- Gradients are averaged over ranks (one flat all-reduce per network), and so
  are L(x), L(G(z)) and the BEGAN-CS term before the k_t update: every rank
  holds the same k_t, weights and optimiser state at every step.
- Rank 0 alone writes logs, samples and checkpoints. A checkpoint does not
  depend on the number of ranks, so a DDP run resumes in one process and back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from began.errors import BeganError, UsageError


@dataclass(frozen=True)
class Dist:
    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def mean(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Average tensors over ranks with one all-reduce; single process: unchanged."""
        if not self.active:
            return tensors
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        flat /= self.world
        out, i = [], 0
        for t in tensors:
            out.append(flat[i:i + t.numel()].view_as(t))
            i += t.numel()
        return out

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank if it is true on one (a stop request, say)."""
        if not self.active:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def broadcast(self, obj: object) -> object:
        """Rank 0's value of `obj` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def local_slice(self, batch: int) -> slice:
        n = batch // self.world
        return slice(self.rank * n, (self.rank + 1) * n)


def from_env(device: str) -> tuple[Dist, str]:
    """The process group torchrun describes in the environment, joined; and the device
    this rank trains on (cuda:LOCAL_RANK under CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if device not in ("auto", "cuda"):
            raise UsageError(f"--device {device} under torchrun",
                             "use --device cuda: each rank takes cuda:LOCAL_RANK")
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    else:
        device = "cpu"
    if not dist.is_initialized():
        try:
            dist.init_process_group("nccl" if use_cuda else "gloo")
        except (RuntimeError, ValueError) as e:
            raise BeganError(f"cannot join the torchrun process group ({e})",
                             "launch with torchrun --nproc-per-node N") from None
    return Dist(world, rank, local_rank), device


def shutdown(d: Dist, together: bool = False) -> None:
    """Leave the process group. together (a run that finished on every rank): meet at a
    barrier first, since a rank that tears gloo down while another is still in its last
    collective can abort that one at exit ("terminate called without an active
    exception": 2 of 9 two-rank torchrun tests before, 0 of 16 after). Never on an error
    path, where the other ranks may not come."""
    if d.active and dist.is_initialized():
        if together:
            try:
                dist.barrier()
            except RuntimeError:
                pass
        dist.destroy_process_group()
