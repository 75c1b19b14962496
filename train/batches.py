"""Training batches from the decoded uint8 image cache.

The cache goes to the GPU once when it fits, so a batch is an index and a cast
on the device, with no host work and no copy per step. Otherwise batches are
gathered on the host and copied asynchronously from pinned memory.

The data order is a fresh permutation per epoch from a CPU generator; that
generator's state, the current permutation and the position are part of the
checkpoint, so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def fits_on_device(nbytes: int, device: torch.device, fraction: float = 0.5) -> bool:
    """True when `nbytes` is under `fraction` of the device's free memory."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= fraction * free


class Batches:
    def __init__(self, images: np.ndarray, batch_size: int, device: torch.device,
                 seed: int, flip: bool = True, on_device: str = "auto"):
        self.n = len(images)
        self.batch_size = batch_size
        self.device = device
        self.flip = flip
        if device.type == "cuda" and (
            on_device == "always" or (on_device == "auto" and fits_on_device(images.nbytes, device))
        ):
            # np.array copies: the cache is a read-only memmap, which torch would warn about.
            self.data = torch.from_numpy(np.array(images)).to(device)
        else:
            self.data = None  # gather rows from the (possibly memory-mapped) array per batch
        self.images = images
        self.gen = torch.Generator().manual_seed(seed)
        self.perm = torch.empty(0, dtype=torch.int64)
        self.pos = 0
        self.epoch = 0

    @property
    def on_device(self) -> bool:
        return self.data is not None

    def _next_indices(self) -> torch.Tensor:
        if self.pos + self.batch_size > len(self.perm):
            # A new epoch; tiny folders (fewer images than a batch) repeat within one.
            reps = math.ceil(self.batch_size / self.n)
            self.perm = torch.cat([torch.randperm(self.n, generator=self.gen) for _ in range(reps)])
            self.pos = 0
            self.epoch += 1
        idx = self.perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def next(self, gen: torch.Generator, part: slice = slice(None)) -> torch.Tensor:
        """(B, 3, R, R) float32 in [-1, 1] on the device; flips drawn from `gen`.

        `part` keeps a slice of the batch (a rank's share under DDP): the order and
        the flips are drawn for the whole batch either way, so the streams agree."""
        idx = self._next_indices()[part]
        if self.data is not None:
            if self.device.type == "cuda":  # a plain H2D copy would sync the host every step
                idx = idx.pin_memory().to(self.device, non_blocking=True)
            u8 = self.data[idx.to(self.device)]
        else:
            rows = torch.from_numpy(np.take(self.images, idx.numpy(), axis=0))
            if self.device.type == "cuda":
                rows = rows.pin_memory()
            u8 = rows.to(self.device, non_blocking=True)
        x = u8.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0).contiguous()
        if self.flip:
            mask = (torch.rand(self.batch_size, generator=gen, device=gen.device) < 0.5)[part]
            x = torch.where(mask.to(x.device)[:, None, None, None], x.flip(3), x)
        return x

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
        return ({"data.perm": self.perm.clone(), "data.rng": self.gen.get_state()},
                {"pos": self.pos, "epoch": self.epoch, "n": self.n})

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, int]) -> None:
        if meta["n"] != self.n:
            raise ValueError(f"the data folder now has {self.n} usable images, the checkpoint "
                             f"was trained on {meta['n']}")
        self.perm = tensors["data.perm"].clone()
        self.gen.set_state(tensors["data.rng"])
        self.pos, self.epoch = meta["pos"], meta["epoch"]
