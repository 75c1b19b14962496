"""Training speed against torch's CPU thread count, as a user runs it.

    python bench/train_threads.py                      # smoke preset, 60 steps, 3 rounds
    python bench/train_threads.py --steps 100 --rounds 5 --threads 1 2 4 0

Each round runs `began train DATA --preset smoke --device cpu --steps N --threads T`
once per thread count (0: torch's default, one per core), in turn, so a load that
changes over time hits every count alike: on a shared machine compare the ratios,
not the absolute figures. Each run is a fresh run folder (the decoded-image cache is
warmed first). Reports the median over rounds of the training images/s (from
stats.jsonl, without the first row, which holds start-up) and of the command's wall time,
and the ratio of each to the 1-thread figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

SHARED = Path(os.environ.get("BEGAN_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))


def image_folder(root: Path, count: int = 64) -> Path:
    """Emoji from ../shared when present, else coloured noise blocks."""
    folder = root / "images"
    folder.mkdir()
    emoji = sorted((SHARED / "data" / "noto-emoji").glob("*.png"))[:count]
    if emoji:
        for p in emoji:
            (folder / p.name).write_bytes(p.read_bytes())
        return folder
    rng = np.random.default_rng(0)
    for i in range(count):
        block = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(block).resize((32, 32), Image.NEAREST).save(folder / f"{i:03d}.png")
    return folder


def one_run(data: Path, out: Path, steps: int, threads: int) -> tuple[float, float]:
    env = {**os.environ, "BEGAN_CACHE_DIR": str(out.parent / "cache")}
    for var in ("OMP_NUM_THREADS", "BEGAN_THREADS", "MKL_NUM_THREADS"):
        env.pop(var, None)  # the flag alone decides
    cmd = [sys.executable, "-m", "began.app", "train", str(data), "--out", str(out),
           "--preset", "smoke", "--device", "cpu", "--steps", str(steps), "--log-every",
           str(max(1, steps // 6)), "--no-progress", "--threads", str(threads)]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    ips = statistics.mean(r["images_per_s"] for r in rows[1:]) if len(rows) > 1 else 0.0
    return ips, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2, 0])
    args = ap.parse_args()
    results: dict[int, list[tuple[float, float]]] = {t: [] for t in args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = image_folder(root)
        one_run(data, root / "warm", 2, 1)  # fills the decoded-image cache
        for r in range(args.rounds):
            for t in args.threads:
                results[t].append(one_run(data, root / f"run-{r}-{t}", args.steps, t))
    import torch

    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}, torch "
          f"{torch.__version__}, default threads {torch.get_num_threads()}, smoke preset, "
          f"{args.steps} steps, {args.rounds} rounds")
    base_ips = statistics.median(i for i, _ in results[args.threads[0]])
    base_wall = statistics.median(w for _, w in results[args.threads[0]])
    print(f"{'threads':>8} {'img/s':>8} {'ratio':>6} {'wall s':>7} {'ratio':>6}")
    for t, runs in results.items():
        ips = statistics.median(i for i, _ in runs)
        wall = statistics.median(w for _, w in runs)
        name = "default" if t == 0 else str(t)
        print(f"{name:>8} {ips:8.1f} {ips / base_ips:6.2f} {wall:7.1f} {wall / base_wall:6.2f}")
    print(json.dumps({"steps": args.steps, "rounds": args.rounds, "runs": {
        str(t): [{"images_per_s": i, "wall_s": round(w, 2)} for i, w in runs]
        for t, runs in results.items()}}))


if __name__ == "__main__":
    main()
