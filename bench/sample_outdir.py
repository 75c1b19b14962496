"""Bulk generation: `began sample -n N --outdir DIR` against the rate this machine
encodes PNGs at, and its peak memory as N grows.

    python bench/sample_outdir.py [--model DIR] [--sizes 2000 20000 100000] [--json out.json]

The CLI overlaps generation with encoding and writing in a thread pool, so its
images/s should approach the threaded PNG encoding rate, and its peak RSS
should not grow with N.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

RSS_OF_CHILD = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
                "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
                "print(time.perf_counter() - t, "
                "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def png_rates(model: str | None, count: int = 2048) -> dict[str, float]:
    """PNG encoding (in memory) of real model outputs: one thread, and all cores."""
    from began.images import to_uint8
    from began.model import Model
    from began.output import encode
    from began.seeds import z_for_seeds

    m = Model.open(model, device="cpu")
    images = to_uint8(m.generate(z_for_seeds(list(range(count)), m.z_dim)))
    t = time.perf_counter()
    for img in images:
        encode(img, "png")
    one = count / (time.perf_counter() - t)
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        t = time.perf_counter()
        list(pool.map(lambda img: encode(img, "png"), images))
        many = count / (time.perf_counter() - t)
    t = time.perf_counter()
    m.generate(z_for_seeds(list(range(count)), m.z_dim), batch_size=64)
    gen = count / (time.perf_counter() - t)
    return {"png_1_thread": one, f"png_{workers}_threads": many, "generate_only": gen,
            "resolution": m.resolution}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="bundle folder [default: the embedded model]")
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    began = shutil.which("began") or sys.exit("the `began` command is not on PATH")
    rates = png_rates(args.model)
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [began, "sample", "-n", str(n), "--outdir", tmp, "-q", "--device", "cpu"]
            if args.model:
                cmd += ["--model", args.model]
            out = subprocess.run([sys.executable, "-c", RSS_OF_CHILD, *cmd], check=True,
                                 capture_output=True, text=True).stdout.split()
            seconds, rss_kb = float(out[0]), int(out[1])
            assert len(os.listdir(tmp)) == n
        rows.append({"n": n, "seconds": seconds, "images_per_s": n / seconds,
                     "peak_rss_mb": rss_kb / 1024})
    print(f"cores {os.cpu_count()}, {rates['resolution']}x{rates['resolution']} images")
    print("in memory: " + ", ".join(f"{k} {v:.0f} images/s" for k, v in rates.items()
                                    if k != "resolution"))
    print(f"{'n':>8} {'seconds':>9} {'images/s':>9} {'peak RSS MB':>12}")
    for r in rows:
        print(f"{r['n']:>8} {r['seconds']:>9.2f} {r['images_per_s']:>9.0f} "
              f"{r['peak_rss_mb']:>12.0f}")
    result = {"rates": rates, "rows": rows, "cores": os.cpu_count()}
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
