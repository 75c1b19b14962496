"""`began sample`: images for seeds, as one grid or one file per seed.

    began sample -n 64 --out grid.png
    began sample --seeds 0-7,42 --outdir samples/ --format webp --json
    began sample -n 100000 --outdir big/ --skip-existing      # rerun resumes

The image for a seed depends on the seed alone (not on the batch size, order or
device). With --outdir, generation overlaps with encoding and writing in a
thread pool, and memory stays flat in n.
"""

from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import typer

from ..errors import EXIT_PARTIAL, BeganError, UsageError
from ..images import make_grid, to_uint8
from ..output import (Out, encode, ensure_dir, output_format, plan_writes, refuse_existing,
                      write_bytes)
from ..seeds import parse_seeds, seed_range, z_for_seeds
from .common import (BatchOpt, DeviceOpt, JsonOpt, ModelOpt, OverwriteOpt, PrecisionOpt,
                     QuietOpt, SkipOpt, batch_size, open_model)

DEFAULT_OUT = Path("samples.png")


def seed_name(seed: int, fmt: str) -> str:
    return f"seed{seed:06d}.{fmt}"


def sample(
    n: int = typer.Option(64, "-n", "--num", min=1, metavar="N",
                          help="How many images: seeds S..S+N-1."),
    seed: int = typer.Option(0, "--seed", min=0, metavar="S", help="First seed."),
    seeds: Optional[str] = typer.Option(None, "--seeds", metavar="LIST", show_default=False,
                                        help="Explicit seeds, e.g. 0-7,42,100-199 (overrides "
                                             "-n/--seed)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", metavar="FILE", show_default=False,
                                       help="The grid's file ('-' for stdout) "
                                            "[default: samples.png]."),
    outdir: Optional[Path] = typer.Option(None, "--outdir", metavar="DIR", show_default=False,
                                          help="One file per seed instead of a grid: "
                                               "DIR/seed000042.png."),
    fmt: Optional[str] = typer.Option(None, "--format", metavar="png|jpg|webp|npy",
                                      show_default=False,
                                      help="File format [default: from --out, else png]; npy "
                                           "holds the float32 (3, H, W) output in [-1, 1]."),
    nrow: Optional[int] = typer.Option(None, "--nrow", min=1, metavar="K", show_default=False,
                                       help="Images per grid row [default: a square grid]."),
    truncation: float = typer.Option(1.0, "--truncation", min=0.0, max=1.0, metavar="PSI",
                                     help="Scale z by PSI: less variety, more typical images."),
    batch: BatchOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
    skip_existing: SkipOpt = False,
) -> None:
    """Generate images for seeds: a grid (--out) or one file per seed (--outdir)."""
    o = Out(as_json, quiet)
    if out is not None and outdir is not None:
        raise UsageError("--out and --outdir go separately", "a grid (--out) or files (--outdir)")
    seed_list = parse_seeds(seeds) if seeds is not None else seed_range(n, seed)
    target = out or DEFAULT_OUT
    # Usage errors before the model loads (and before anything is written).
    fmt = output_format(None if outdir is not None else target, fmt)
    if as_json and outdir is None and str(target) == "-":
        raise UsageError("--json and --out - would both write to stdout",
                         "write the grid to a file with --out FILE, or drop --json")
    m = open_model(model, device, precision, o)
    bs = batch_size(batch, m)
    if outdir is not None:
        code = _write_files(m, seed_list, outdir, fmt, truncation, bs,
                            overwrite, skip_existing, o)
        if code:
            raise typer.Exit(code)
        return
    if str(target) != "-" and not plan_writes([target], overwrite, skip_existing)[0]:
        o.say(f"kept existing {target}")
        return
    t = time.perf_counter()
    images = m.generate(z_for_seeds(seed_list, m.z_dim, truncation), batch_size=bs)
    ms = (time.perf_counter() - t) * 1000
    data = encode(images if fmt == "npy" else make_grid(to_uint8(images), nrow), fmt)
    write_bytes(target, data)
    if str(target) != "-":
        o.say(f"wrote {target} ({len(seed_list)} images, {m.resolution}x{m.resolution})")
    o.record({"path": str(target), "seeds": list(seed_list), "provider": m.provider.name,
              "ms": round(ms, 2)})


def _write_files(m, seed_list: Sequence[int], outdir: Path, fmt: str, truncation: float,
                 bs: int, overwrite: bool, skip_existing: bool, o: Out) -> int:
    """Stream seeds through generation and a writer pool; nothing here grows with n."""
    ensure_dir(outdir)

    def wanted(seeds: Sequence[int]) -> list[tuple[int, Path]]:
        pairs = [(s, outdir / seed_name(s, fmt)) for s in seeds]
        return pairs if overwrite else [(s, p) for s, p in pairs if not p.exists()]

    existing = 0 if overwrite else sum(
        len(seed_list[i:i + bs]) - len(wanted(seed_list[i:i + bs]))
        for i in range(0, len(seed_list), bs))
    if existing and not skip_existing:
        first = next(p for s in seed_list if (p := outdir / seed_name(s, fmt)).exists())
        refuse_existing(first, existing)
    if existing:
        o.say(f"keeping {existing} existing files in {outdir}")
    total = len(seed_list) - existing
    failed = 0
    workers = min(8, os.cpu_count() or 1)
    per_task = 16  # images per pool task: fewer futures, same overlap
    pending: deque = deque()  # (future, ms) in seed order
    max_pending = workers * 4  # bounds memory whatever n is

    def write_some(items: list) -> list:
        done = []
        for s, path, image in items:
            try:
                write_bytes(path, encode(image, fmt))
                done.append((s, path, None))
            except BeganError as e:
                done.append((s, path, e.message))
        return done

    def settle(advance) -> None:
        nonlocal failed
        fut, ms = pending.popleft()
        for s, path, error in fut.result():
            if error:
                failed += 1
                o.say(f"error: {error}")
                continue
            advance()
            o.record({"path": str(path), "seed": s, "provider": m.provider.name, "ms": ms})

    with o.progress(total, "sample") as advance, ThreadPoolExecutor(workers) as pool:
        for i in range(0, len(seed_list), bs):
            chunk = wanted(seed_list[i:i + bs])
            if not chunk:
                continue
            t = time.perf_counter()
            images = m.generate(z_for_seeds([s for s, _ in chunk], m.z_dim, truncation),
                                batch_size=bs)
            ms = round((time.perf_counter() - t) * 1000 / len(chunk), 3)
            pixels = images if fmt == "npy" else to_uint8(images)
            items = [(s, path, image) for (s, path), image in zip(chunk, pixels)]
            for j in range(0, len(items), per_task):
                pending.append((pool.submit(write_some, items[j:j + per_task]), ms))
                while len(pending) > max_pending:
                    settle(advance)
        while pending:
            settle(advance)
    written = total - failed
    o.say(f"wrote {written} files to {outdir}" + (f"; {failed} failed" if failed else ""))
    if failed:
        return EXIT_PARTIAL if written else 1
    return 0
