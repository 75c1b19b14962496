"""How fast an image folder becomes the training cache, and how fast the cache reopens.

    python bench/data_decode.py [--data DIR] [--resolution 64] [--workers 1 2 8] [--json out.json]

For each worker count: a cold decode into an empty cache folder (median of --repeat runs),
then a warm open of the cache it wrote. Prints a table and the same numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from began.train.data import Preprocess, load_image_folder

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "noto-emoji"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    pre = Preprocess(resolution=args.resolution)

    rows = []
    for workers in args.workers:
        cold, warm, n = [], [], 0
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as cache:
                t = time.perf_counter()
                s = load_image_folder(args.data, pre, cache_dir=cache, workers=workers,
                                      progress=False)
                cold.append(time.perf_counter() - t)
                n = len(s.files)
                t = time.perf_counter()
                again = load_image_folder(args.data, pre, cache_dir=cache, progress=False)
                warm.append(time.perf_counter() - t)
                assert again.from_cache
        rows.append({"workers": workers, "images": n, "cold_s": statistics.median(cold),
                     "images_per_s": n / statistics.median(cold),
                     "cache_open_s": statistics.median(warm)})

    print(f"data: {args.data}  resolution {args.resolution}  cores {os.cpu_count()}")
    print(f"{'workers':>8} {'images':>7} {'cold s':>8} {'images/s':>9} {'cache open s':>13}")
    for r in rows:
        print(f"{r['workers']:>8} {r['images']:>7} {r['cold_s']:>8.2f} {r['images_per_s']:>9.0f} "
              f"{r['cache_open_s']:>13.3f}")
    result = {"data": str(args.data), "resolution": args.resolution, "cores": os.cpu_count(),
              "rows": rows}
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
