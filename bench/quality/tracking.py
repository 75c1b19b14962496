"""Quality tracking (train/quality.py): what one evaluation costs, and what the signal
reads over a run.

    python bench/quality/tracking.py cost [--samples 256] [--repeat 5]
    python bench/quality/tracking.py run RUN_DIR [--samples 256]

`cost` times one evaluation (G on the fixed z-batch, D.encode on it and on the real batch,
the pairwise distances) for the smoke preset and two 32x32 configs on random weights,
next to one training step (batch 16) of the same model in the same process, so the
ratio holds even on a loaded machine. `run` evaluates every checkpoint of a finished
(or running) run with the same fixed z and real batch the trainer uses, and prints
div_pixel, div_latent, the stats row's M_global and k_t, and what the tracker decides.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from began.models import build
from began.train.checkpoint import list_checkpoints
from began.train.config import preset
from began.train.quality import QualityTracker
from began.train.step import began_step

CONFIGS = {
    "smoke 16x16 n=16": dict(),
    "32x32 n=16 N_z=16": dict(resolution=32, n=16, z_dim=16, h_dim=16, batch_size=16),
    "32x32 n=32 N_z=64": dict(resolution=32, n=32, z_dim=64, h_dim=64, batch_size=16),
}


def _ms(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def cost(samples: int, repeat: int) -> None:
    dev = torch.device("cpu")
    print(f"torch threads {torch.get_num_threads()}, {samples} samples and {samples} reals, "
          f"median of {repeat}")
    for name, over in CONFIGS.items():
        cfg = preset("smoke").replace(eval_samples=samples, **over)
        r = cfg.model.resolution
        images = np.random.default_rng(0).integers(0, 256, (max(samples, 64), r, r, 3),
                                                   dtype=np.uint8)
        torch.manual_seed(0)
        G, D = build(cfg.model)
        tr = QualityTracker(cfg, images, dev)
        t_eval = _ms(lambda: tr.measure(G, D), repeat)
        opt_g, opt_d = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
        x = torch.rand(cfg.batch_size, 3, r, r) * 2 - 1
        z = torch.rand(cfg.batch_size, cfg.model.z_dim) * 2 - 1
        k = torch.zeros(())
        t_step = _ms(lambda: began_step(G, D, opt_g, opt_d, x, z, z.flip(0), k, gamma=0.5,
                                        lambda_k=1e-3), repeat)
        print(f"{name:<20} eval {t_eval:8.1f} ms   train step (batch {cfg.batch_size}) "
              f"{t_step:6.1f} ms   eval = {t_eval / t_step:.1f} steps")


def signal_over_run(run_dir: Path, samples: int) -> None:
    from began.train.runs import load_run
    from began.train.data import Preprocess, load_image_folder

    snap = load_run(run_dir)
    cfg = snap.cfg.replace(eval_samples=samples)
    pre = Preprocess(resolution=cfg.model.resolution, crop=cfg.crop, background=cfg.background,
                     resample=cfg.resample)
    data = load_image_folder(cfg.data_dir, pre, progress=False)
    tr = QualityTracker(cfg, data.images, torch.device("cpu"))
    rows = {}
    stats = run_dir / "stats.jsonl"
    if stats.exists():
        rows = {r["step"]: r for r in map(json.loads, stats.read_text().splitlines())}
    print(f"{run_dir}: gamma {cfg.gamma}, cs_alpha {cfg.cs_alpha}, {len(data.images)} images; "
          f"threshold {tr.threshold}, warm-up {tr.warmup} steps")
    print(f"{'step':>7} {'div_pixel':>10} {'div_latent':>10} {'M_global':>9} {'k_t':>7}  "
          "verdict")
    for step, _ in list_checkpoints(run_dir / "checkpoints"):
        snap = load_run(run_dir, step)
        row = tr.measure(snap.G, snap.D)
        v = tr.judge(step, row)
        s = rows.get(step, {})
        verdict = ("best " if v.best else "") + ("COLLAPSE" if v.collapsed else "")
        print(f"{step:>7} {row['div_pixel']:>10.3f} {row['div_latent']:>10.3f} "
              f"{s.get('m_global', float('nan')):>9.4f} {s.get('k', float('nan')):>7.4f}  "
              f"{verdict}", flush=True)
    print(f"best: step {tr.state.best_step}; collapse: step {tr.state.collapse_step}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cost")
    c.add_argument("--samples", type=int, default=256)
    c.add_argument("--repeat", type=int, default=5)
    r = sub.add_parser("run")
    r.add_argument("run_dir", type=Path)
    r.add_argument("--samples", type=int, default=256)
    a = ap.parse_args()
    if a.cmd == "cost":
        cost(a.samples, a.repeat)
    else:
        signal_over_run(a.run_dir, a.samples)


if __name__ == "__main__":
    main()
