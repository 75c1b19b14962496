"""Where the time of `began export` goes, and what the encoder it ships is worth.

    python bench/export_speed.py RUN_DIR [--out DIR] [-- extra export flags, e.g. --fit-steps 5]

Runs the export in this process with the given flags (default: none, i.e. the
defaults), times each phase by wrapping the exporter's own functions, and prints
the phases, the total, and the manifest's encoder figures (z recovery, PSNRs, how
many fit steps ran and why it stopped) as a table and as one JSON line.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import began.export.bundle as exporter
from began.app import run

PHASES = {  # exporter function -> phase name
    "load_run": "read run", "_real_images": "decode data", "fit_encoder": "encoder fit",
    "inversion_metrics": "encoder figures", "export_graph": "graph export",
    "parity": "parity checks", "inversion_reference": "inversion reference",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path, help="bundle folder [default: a temp folder]")
    ap.add_argument("export_args", nargs=argparse.REMAINDER,
                    help="flags passed to began export (after --)")
    a = ap.parse_args()
    extra = [x for x in a.export_args if x != "--"]
    spent: dict[str, float] = collections.defaultdict(float)
    for name, phase in PHASES.items():
        real = getattr(exporter, name, None)
        if real is None:
            continue

        def timed(*args, _real=real, _phase=phase, **kw):
            t = time.perf_counter()
            try:
                return _real(*args, **kw)
            finally:
                spent[_phase] += time.perf_counter() - t

        setattr(exporter, name, timed)
    with tempfile.TemporaryDirectory() as tmp:
        out = a.out or Path(tmp) / "bundle"
        t0 = time.perf_counter()
        code = run(["export", str(a.run_dir), "--out", str(out), "-q", *extra])
        total = time.perf_counter() - t0
        if code != 0:
            sys.exit(code)
        manifest = json.loads((out / "manifest.json").read_text())
    enc = manifest["encoder"]
    print(f"export of {a.run_dir} with {' '.join(extra) or 'default flags'} "
          f"({os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')})")
    for phase in PHASES.values():
        if phase in spent:
            print(f"  {phase:<16} {spent[phase]:8.1f} s")
    print(f"  {'total':<16} {total:8.1f} s")
    print(f"  graphs: {len(manifest['files'])}")
    fit = {k: v for k, v in enc.items() if k not in ("metrics", "d_encoder_baseline", "about")}
    print(f"  encoder: {fit}")
    for key in ("metrics", "d_encoder_baseline"):
        if key in enc:
            print(f"  {key}: " + ", ".join(f"{k} {v:.4g}" for k, v in enc[key].items()))
    print(json.dumps({"run": str(a.run_dir), "args": extra, "total_s": round(total, 2),
                      "phases_s": {k: round(v, 2) for k, v in spent.items()},
                      "files": len(manifest["files"]), "encoder": enc}))


if __name__ == "__main__":
    main()
