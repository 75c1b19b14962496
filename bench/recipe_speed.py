"""CPU images/s of the small networks' training step (`--preset small32`), variant by variant.

    python bench/recipe_speed.py                         # every variant, 32x32, batch 64
    python bench/recipe_speed.py --variants base,bf16 --blocks 5 --steps 10

The step is the trainer's own (train/step.py's began_step with the preset's alternating,
shared-z update) on random batches. Variants: threads (1 or 2), bf16 autocast, channels_last,
torch.compile of G and D's halves, and the batch size. Blocks of --steps steps of each variant
are interleaved (base, v1, v2, ..., base, v1, ...) so that load from other processes hits all of
them alike; the median block gives images/s, and the ratio to `base` (1 thread, fp32,
batch 64) is the figure to trust on a shared machine. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time

import torch

from began.models import build
from began.train.config import preset
from began.train.step import began_step

VARIANTS = {  # name -> (threads, bf16, channels_last, compile, batch)
    "base": (1, False, False, False, 64),
    "threads2": (2, False, False, False, 64),
    "bf16": (1, True, False, False, 64),
    "channels_last": (1, False, True, False, 64),
    "compile": (1, False, False, True, 64),
    "batch32": (1, False, False, False, 32),
    "batch128": (1, False, False, False, 128),
}


class Variant:
    def __init__(self, name: str, res: int):
        self.name = name
        self.threads, self.bf16, self.cl, self.compiled, self.batch = VARIANTS[name]
        cfg = preset("small32").replace(resolution=res)
        self.hyper = dict(gamma=cfg.gamma, lambda_k=cfg.lambda_k, alternating=True,
                          z_shared=True)
        torch.manual_seed(0)
        self.G, self.D = build(cfg.model)
        fmt = torch.channels_last if self.cl else torch.contiguous_format
        self.G, self.D = self.G.to(memory_format=fmt), self.D.to(memory_format=fmt)
        self.og = torch.optim.Adam(self.G.parameters(), 2e-4, betas=(0.5, 0.999))
        self.od = torch.optim.Adam(self.D.parameters(), 2e-4, betas=(0.5, 0.999))
        if self.compiled:
            self.G.compile()
            self.D.encoder.compile()
            self.D.decoder.compile()
        gen = torch.Generator().manual_seed(1)
        self.x = (torch.rand(self.batch, 3, res, res, generator=gen) * 2 - 1).contiguous(
            memory_format=fmt)
        self.z = torch.rand(self.batch, cfg.model.z_dim, generator=gen) * 2 - 1
        self.k = torch.zeros(())

    def block(self, steps: int) -> float:
        """Seconds for `steps` steps."""
        torch.set_num_threads(self.threads)
        amp = (torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16
               else contextlib.nullcontext())
        t = time.perf_counter()
        with amp:
            for _ in range(steps):
                out = began_step(self.G, self.D, self.og, self.od, self.x, self.z, self.z,
                                 self.k, **self.hyper)
                self.k = out.k
        return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--res", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20, help="steps per block")
    ap.add_argument("--blocks", type=int, default=5, help="timed blocks per variant")
    a = ap.parse_args()
    names = a.variants.split(",")
    if "base" not in names:
        names.insert(0, "base")
    variants = [Variant(n, a.res) for n in names]
    for v in variants:  # warm-up: compilation, allocator, Adam state
        v.block(3)
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(a.blocks):
        for v in variants:
            times[v.name].append(v.block(a.steps) / a.steps)
    rows = []
    base = statistics.median(times["base"])
    for v in variants:
        s = statistics.median(times[v.name])
        rows.append(dict(variant=v.name, ms_per_step=round(s * 1e3, 1),
                         images_per_s=round(v.batch / s, 1),
                         vs_base=round((v.batch / s) / (64 / base), 2)))
    print(f"small32 step at {a.res}x{a.res}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {a.blocks} blocks of {a.steps} steps, median")
    print(f"{'variant':<14} {'ms/step':>8} {'images/s':>9} {'vs base':>8}")
    for r in rows:
        print(f"{r['variant']:<14} {r['ms_per_step']:>8} {r['images_per_s']:>9} "
              f"{r['vs_base']:>8}")
    print(json.dumps({"bench": "recipe_speed", "res": a.res, "rows": rows}))


if __name__ == "__main__":
    main()
