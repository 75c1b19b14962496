"""Cold-start cost of the main job: `began sample -n 64 --out grid.png`.

    python bench/cli_sample.py [--model DIR] [--runs 5] [--json out.json]

Each run is a fresh process (the `began` console script), as a user or a shell
script would start it. Prints the median and spread of the wall time, the same
for `began --version`, and where the time goes inside one process (imports,
the manifest and file sizes, the generator hashed and its session made, generation,
PNG encoding).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def wall(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def breakdown(model: str | None, n: int) -> dict[str, float]:
    """Phases of one in-process run (after the interpreter started)."""
    code = f"""
import time, json, io
t0 = time.perf_counter()
from began.app import make_app
app = make_app(["sample"])  # what `began sample` builds: that verb only
t1 = time.perf_counter()
import numpy as np
from began.model import Model
from began.seeds import z_for_seeds
from began.images import make_grid, to_uint8
from began.output import encode
import onnxruntime
t2 = time.perf_counter()
from began.model import open_bundle
from began.runtime import resolve
b = open_bundle({model!r}, verify=False)  # manifest, sizes: what sample checks of every file
t3 = time.perf_counter()
m = Model(b, resolve("cpu"))
m._session("generator")  # the generator's bytes hashed as read, its session made
t4 = time.perf_counter()
x = m.generate(z_for_seeds(list(range({n})), m.z_dim))
t5 = time.perf_counter()
data = encode(make_grid(to_uint8(x)), "png")
t6 = time.perf_counter()
print(json.dumps({{"import_cli": t1 - t0, "import_runtime": t2 - t1, "open_bundle": t3 - t2,
                   "verify_and_session": t4 - t3, "generate": t5 - t4, "png": t6 - t5}}))
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="bundle folder [default: the embedded model]")
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    began = shutil.which("began") or sys.exit("the `began` command is not on PATH")
    env = dict(os.environ, BEGAN_DEVICE="auto")
    if args.model:
        env["BEGAN_MODEL"] = args.model
    with tempfile.TemporaryDirectory() as tmp:
        grid = str(Path(tmp) / "grid.png")
        sample = [began, "sample", "-n", str(args.n), "--out", grid, "--overwrite"]
        wall(sample, env)  # first run pays for .pyc compilation and the page cache
        runs = [wall(sample, env) for _ in range(args.runs)]
        version = [wall([began, "--version"], env) for _ in range(args.runs)]
    phases = breakdown(args.model, args.n)
    result = {"command": f"began sample -n {args.n} --out grid.png", "runs": runs,
              "median_s": statistics.median(runs), "min_s": min(runs), "max_s": max(runs),
              "version_median_s": statistics.median(version), "phases_s": phases,
              "cores": os.cpu_count(), "python": sys.version.split()[0]}
    print(f"{result['command']}: median {result['median_s']:.3f} s over {args.runs} cold runs "
          f"(min {result['min_s']:.3f}, max {result['max_s']:.3f})")
    print(f"began --version: median {result['version_median_s']:.3f} s")
    print("one run, in process: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in phases.items()))
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
