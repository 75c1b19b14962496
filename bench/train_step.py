"""Training step: the reference step (train/step.py) against the fast one
(train/fast_step.py), same model, same batches, in one run.

    python bench/train_step.py                                   # 64x64, n=64, batch 16
    python bench/train_step.py --res 128 --n 128 --device cuda
    python bench/train_step.py --ablate --device cuda            # fast minus each lever
    python bench/train_step.py --res 16 --n 16 --batch 8 --steps 20 --device cpu
    python bench/train_step.py --arch small --batch 64 --alternating --z-shared  # issue 19's recipe

`--arch small` (models/small.py) and `--alternating` (D then G) time the reference step
only: the fast step does not implement them, and training falls back to the reference.

For each variant: fresh G and D from the same seed, a warm-up (graph capture, cuDNN
autotuning, Adam state), then --repeat blocks of --steps steps timed with CUDA events
(or the host clock on the CPU) with no host sync inside a block: the median block gives
ms/step, steps/s, images/s (real images through D per second: the batch size), the
speedup over the reference, TFLOP/s against the reference step's FLOP count (convolutions
and linear layers, forward and backward, counted once with torch.utils.flop_counter:
the work the update needs; a variant that computes more still gets the same count) and
the peak device memory (CUDA; on the CPU the process's peak RSS, which only grows).
Prints a table, then the same figures as one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import statistics
import sys
import time

import torch

from began.models import build
from began.models.config import ModelConfig
from began.train.fast_step import FastStep, Levers
from began.train.step import began_step

HYPER = dict(gamma=0.5, lambda_k=0.001, k_max=1.0, eta=1)


def make_batches(cfg: ModelConfig, batch: int, count: int, dev: torch.device):
    """A few fixed batches, rotated, so no step reads only what the last one left in cache."""
    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(count):
        x = torch.rand(batch, 3, cfg.resolution, cfg.resolution, generator=gen) * 2 - 1
        z_d = torch.rand(batch, cfg.z_dim, generator=gen) * 2 - 1
        z_g = torch.rand(batch, cfg.z_dim, generator=gen) * 2 - 1
        out.append(tuple(t.to(dev) for t in (x, z_d, z_g)))
    return out


def setup(cfg: ModelConfig, dev: torch.device, levers: Levers | None, args):
    torch.manual_seed(0)
    G, D = build(cfg)
    G, D = G.to(dev), D.to(dev)
    og = torch.optim.Adam(G.parameters(), 1e-4, betas=(0.5, 0.999))
    od = torch.optim.Adam(D.parameters(), 1e-4, betas=(0.5, 0.999))
    hyper = dict(HYPER, z_shared=args.z_shared, cs_alpha=args.cs_alpha)
    if levers is None:
        def step(x, z_d, z_g, k):
            return began_step(G, D, og, od, x, z_d, z_g, k, alternating=args.alternating,
                              **hyper)
    else:
        step = FastStep(G, D, og, od, levers=levers, **hyper)
    return step


def count_flops(cfg: ModelConfig, dev: torch.device, batch: int, args) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    step = setup(cfg, dev, None, args)
    x, z_d, z_g = make_batches(cfg, batch, 1, dev)[0]
    with FlopCounterMode(display=False) as counter:
        step(x, z_d, z_g, torch.zeros((), device=dev))
    return counter.get_total_flops()


def time_variant(name: str, levers: Levers | None, cfg, dev, args, batches) -> dict:
    cuda = dev.type == "cuda"
    # PyTorch's defaults for every variant: the fast step turns these process-wide
    # switches on when its levers say so, and they would leak into later variants.
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.benchmark = False
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    step = setup(cfg, dev, levers, args)
    k = torch.zeros((), device=dev)
    i = 0

    def run(n: int) -> None:
        nonlocal k, i
        for _ in range(n):
            x, z_d, z_g = batches[i % len(batches)]
            k = step(x, z_d, z_g, k).k
            i += 1

    run(args.warmup)
    blocks = []
    for _ in range(args.repeat):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            run(args.steps)
            end.record()
            end.synchronize()
            blocks.append(start.elapsed_time(end) / args.steps)
        else:
            t = time.perf_counter()
            run(args.steps)
            blocks.append((time.perf_counter() - t) * 1e3 / args.steps)
    if not torch.isfinite(k):
        raise SystemExit(f"{name}: k_t became {float(k)}")
    ms = statistics.median(blocks)
    peak = (torch.cuda.max_memory_allocated() if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"variant": name, "ms_per_step": ms, "ms_blocks": blocks,
            "steps_per_s": 1e3 / ms, "images_per_s": 1e3 / ms * args.batch,
            "peak_mem_mb": peak / 2**20,
            "levers": None if levers is None else dataclasses.asdict(levers)}


def variants(dev: torch.device, args) -> list[tuple[str, Levers | None]]:
    if args.arch != "paper" or args.alternating:  # training falls back to the reference too
        return [("reference", None)]
    fast = Levers.for_device(dev).on(dev)
    if args.compile:
        fast = dataclasses.replace(fast, compile=True)
    out: list[tuple[str, Levers | None]] = [("reference", None), ("fast", fast)]
    if args.ablate:
        for f in dataclasses.fields(Levers):
            v = getattr(fast, f.name)
            if f.name == "adam":
                out.append(("fast, adam plain", dataclasses.replace(fast, adam="plain")))
            elif f.name == "d_passes":
                out += [(f"fast, {n} D passes", dataclasses.replace(fast, d_passes=n))
                        for n in (1, 2, 3) if n != v]
            elif v is True:
                out.append((f"fast without {f.name}", dataclasses.replace(fast, **{f.name: False})))
        if dev.type == "cuda":  # the eager cost of each lever is hidden under the graph
            eager = dataclasses.replace(fast, cuda_graph=False)
            out.append(("fast eager, fp32", dataclasses.replace(eager, bf16=False)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--z", type=int, default=64, help="N_z = N_h")
    ap.add_argument("--arch", choices=("paper", "small"), default="paper",
                    help="networks (small: reference step only)")
    ap.add_argument("--fc-dim", type=int, default=1024, help="small: G's first fc width")
    ap.add_argument("--alternating", action="store_true",
                    help="D then G (the small recipe's update; reference step only)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=None, help="steps per timed block "
                    "(default 200 on CUDA, 5 on the CPU)")
    ap.add_argument("--repeat", type=int, default=5, help="timed blocks; the median counts")
    ap.add_argument("--warmup", type=int, default=None, help="default 20 on CUDA, 2 on CPU")
    ap.add_argument("--ablate", action="store_true", help="also time fast minus each lever")
    ap.add_argument("--compile", action="store_true", help="torch.compile in the fast step")
    ap.add_argument("--z-shared", action="store_true")
    ap.add_argument("--cs-alpha", type=float, default=0.0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    args.steps = args.steps or (200 if cuda else 5)
    args.warmup = args.warmup if args.warmup is not None else (20 if cuda else 2)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = ModelConfig(resolution=args.res, n=args.n, z_dim=args.z, h_dim=args.z,
                      arch=args.arch, fc_dim=args.fc_dim)
    flops = count_flops(cfg, dev, args.batch, args)
    batches = make_batches(cfg, args.batch, 8, dev)
    rows = []
    for name, lv in variants(dev, args):
        try:
            rows.append(time_variant(name, lv, cfg, dev, args, batches))
        except Exception as e:  # one lever failing (compile, say) must not hide the rest
            print(f"{name}: failed: {type(e).__name__}: {e}", file=sys.stderr)
            rows.append({"variant": name, "error": f"{type(e).__name__}: {e}"})
    base = next((r["ms_per_step"] for r in rows if r["variant"] == "reference"
                 and "ms_per_step" in r), None)
    for r in rows:
        if "ms_per_step" in r:
            r["speedup"] = base / r["ms_per_step"] if base else None
            r["tflops"] = flops / (r["ms_per_step"] * 1e-3) / 1e12

    env = {"device": torch.cuda.get_device_name(dev) if cuda else platform.processor() or
           platform.machine(), "torch": torch.__version__,
           "cuda": torch.version.cuda if cuda else None,
           "threads": torch.get_num_threads(), "python": platform.python_version()}
    arch = "" if args.arch == "paper" else f"arch {args.arch} (fc {args.fc_dim}), "
    arch += "alternating, " if args.alternating else ""
    print(f"\n{arch}{args.res}x{args.res}, n={args.n}, N_z=N_h={args.z}, batch {args.batch}, "
          f"{dev} ({env['device']}), torch {env['torch']}; step = {flops / 1e9:.1f} GFLOP "
          f"(reference, conv + linear, fwd + bwd); median of {args.repeat} blocks of "
          f"{args.steps} steps")
    head = f"{'variant':<28} {'ms/step':>9} {'steps/s':>9} {'images/s':>9} {'speedup':>8} " \
           f"{'TFLOP/s':>8} {'peak MB':>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        if "error" in r:
            print(f"{r['variant']:<28} failed: {r['error'][:60]}")
            continue
        sp = f"{r['speedup']:.2f}x" if r["speedup"] else "-"
        print(f"{r['variant']:<28} {r['ms_per_step']:>9.3f} {r['steps_per_s']:>9.1f} "
              f"{r['images_per_s']:>9.0f} {sp:>8} {r['tflops']:>8.3f} {r['peak_mem_mb']:>8.0f}")
    print(json.dumps({"bench": "train_step", "arch": args.arch, "fc_dim": args.fc_dim,
                      "alternating": args.alternating, "res": args.res, "n": args.n, "z": args.z,
                      "batch": args.batch, "device": str(dev), "env": env,
                      "gflop_per_step": flops / 1e9, "steps": args.steps,
                      "repeat": args.repeat, "rows": rows}))


if __name__ == "__main__":
    main()
