"""What `began eval` costs: Inception features (images/s), and the figures computed from them.

    python bench/quality/eval_speed.py [--n 64] [--batch-size 32] [--threads 1] [--device cpu]
                                       [--figures 2000] [--pairs 200]

Prints wall-clock images/s and CPU seconds per image (on a shared CPU the second is the
steadier figure), the load average before and after, then the time of FID, KID (100 subsets
of 1000), precision/recall (k = 3) on `--figures` random 2048-d features per side, and of
mean pairwise MS-SSIM over `--pairs` pairs of 32x32 images (upscaled to 176 px).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=64,
                    help="images to featurise (after a warm-up); 0: only the figures")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--resolution", type=int, default=32, help="side of the input images")
    ap.add_argument("--figures", type=int, default=2000, help="features per side; 0 to skip")
    ap.add_argument("--pairs", type=int, default=200, help="MS-SSIM pairs; 0 to skip")
    args = ap.parse_args()

    import torch

    from began.train import metrics
    from began.train.inception import Inception

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), device {args.device}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    rng = np.random.default_rng(0)
    r = args.resolution
    images = rng.integers(0, 256, (max(args.n, 2), r, r, 3), dtype=np.uint8)
    if args.n:
        features_speed(Inception, args, rng, images)
    figures_speed(metrics, args, rng, images)


def features_speed(Inception, args, rng, images) -> None:
    import torch

    t = time.perf_counter()
    net = Inception(args.device)
    print(f"network load: {time.perf_counter() - t:.2f} s")
    r = args.resolution
    warm = rng.integers(0, 256, (args.batch_size, r, r, 3), dtype=np.uint8)
    t = time.perf_counter()
    net.features(warm, batch_size=args.batch_size)  # TorchScript profiles its first calls
    net.features(warm, batch_size=args.batch_size)
    print(f"warm-up, 2 batches of {args.batch_size}: {time.perf_counter() - t:.1f} s")
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    w, c = time.perf_counter(), time.process_time()
    net.features(images, batch_size=args.batch_size)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - w, time.process_time() - c
    print(f"features: {args.n} images of {r}x{r} in {wall:.1f} s wall = {args.n / wall:.2f} "
          f"images/s ({wall / args.n:.3f} s/image); {cpu / args.n:.3f} CPU s/image; "
          f"load average {os.getloadavg()[0]:.1f} at end")


def figures_speed(metrics, args, rng, images) -> None:
    if args.figures:
        a = np.abs(rng.normal(size=(args.figures, 2048))).astype(np.float32)
        b = np.abs(rng.normal(size=(args.figures, 2048))).astype(np.float32) * 1.1
        for name, fn in (("FID", lambda: metrics.fid(a, b)),
                         ("KID 100 subsets", lambda: metrics.kid(a, b)),
                         ("precision/recall k=3", lambda: metrics.precision_recall(a, b))):
            t = time.perf_counter()
            fn()
            print(f"{name} on {args.figures} vs {args.figures}: {time.perf_counter() - t:.1f} s "
                  f"(load average {os.getloadavg()[0]:.1f})")
    if args.pairs:
        t = time.perf_counter()
        metrics.mean_pairwise_msssim(images, args.pairs)
        side = images.shape[1]
        print(f"MS-SSIM, {args.pairs} pairs of {side}x{side}: {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
