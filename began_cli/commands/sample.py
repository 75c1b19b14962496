"""`began sample`: images for seeds, as one grid or one file per seed.

    began sample -n 64 --out grid.png
    began sample --seed 42                                   # -> ./seed000042.png
    began sample --seeds 0-7,42 --outdir samples/ --format webp --json
    began sample -n 100000 --outdir big/ --skip-existing      # rerun resumes

The image for a seed depends on the seed alone (not on the batch size, order or
device). With --outdir, generation overlaps with encoding and writing in a
thread pool, and memory stays flat in n.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import typer

from ..errors import UsageError
from ..images import enlarge, tile, to_uint8
from ..output import (MAX_SIDE, Out, Tally, WriteError, encode, ensure_dir, output_format,
                      write_bytes)
from ..seeds import MAX_COUNT, parse_seeds, seed_range, z_for_seeds
from ..targets import Refused, Targets, refuse_existing
from .common import (BatchOpt, DeviceOpt, JsonOpt, ModelOpt, NoClobberOpt, OverwriteOpt,
                     PrecisionOpt, QuietOpt, SkipOpt, batch_size, open_model)
from .viewing import ResampleOpt, ScaleOpt, check_resample

DEFAULT_OUT = Path("samples.png")
DEFAULT_N = 64  # the grid of plain `began sample`
GRID_PAD = 2  # make_grid's default padding


# Bounds that keep one command within a machine's memory: --outdir streams, so only
# the seed list bounds it; a grid is held whole, so its pixels are bounded too.
MAX_IMAGES = MAX_COUNT
MAX_GRID = 65536
MAX_GRID_PIXELS = 1 << 25


def seed_name(seed: int, fmt: str) -> str:
    return f"seed{seed:06d}.{fmt}"


def check_grid(n: int, nrow: int | None, resolution: int, fmt: str) -> None:
    """A grid that would not fit in memory, or in its file format, is refused before
    anything is generated."""
    if n * resolution * resolution > MAX_GRID_PIXELS:
        raise UsageError(f"a grid of {n:,} images of {resolution}x{resolution} is too large "
                         f"(at most {MAX_GRID_PIXELS // (resolution * resolution):,} at this "
                         "resolution)", "write one file per seed with --outdir DIR")
    if fmt == "npy":
        return
    cols = max(1, min(nrow or math.ceil(math.sqrt(n)), n))
    side = max(cols, math.ceil(n / cols)) * (resolution + GRID_PAD) + GRID_PAD
    if side > MAX_SIDE[fmt]:
        raise UsageError(f"that grid would be {side:,} pixels long; {fmt} stores at most "
                         f"{MAX_SIDE[fmt]:,}", "write png (--format png, or a .png name), "
                         "use a squarer --nrow, or --outdir DIR")


def sample(
    n: Optional[int] = typer.Option(None, "-n", "--num", min=1, metavar="N",
                                    show_default=False,
                                    help="How many images: seeds S..S+N-1 \\[default: 64; "
                                         "1 with --seed]."),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, metavar="S", show_default=False,
                                       help="First seed \\[default: 0]. Without -n: that "
                                            "seed's image alone, named as --outdir names it "
                                            "(./seed000042.png for --seed 42)."),
    seeds: Optional[str] = typer.Option(None, "--seeds", metavar="LIST", show_default=False,
                                        help="Explicit seeds, e.g. 0-7,42,100-199 (overrides "
                                             "-n/--seed)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", metavar="FILE", show_default=False,
                                       help="The output file, '-' for stdout: a grid, or "
                                            "the image itself for one seed; an existing "
                                            "file is replaced \\[default: samples.png]."),
    outdir: Optional[Path] = typer.Option(None, "--outdir", metavar="DIR", show_default=False,
                                          help="One file per seed instead of a grid: "
                                               "DIR/seed000042.png."),
    fmt: Optional[str] = typer.Option(None, "--format", metavar="png|jpg|webp|npy",
                                      show_default=False,
                                      help="File format \\[default: from --out, else png]; npy "
                                           "holds the float32 (3, H, W) output in [-1, 1]."),
    nrow: Optional[int] = typer.Option(None, "--nrow", min=1, metavar="K", show_default=False,
                                       help="Images per grid row \\[default: a square grid]."),
    truncation: float = typer.Option(1.0, "--truncation", min=0.0, max=1.0, metavar="PSI",
                                     help="Scale z by PSI: less variety, more typical images."),
    scale: ScaleOpt = 1,
    resample: ResampleOpt = "nearest",
    batch: BatchOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
    no_clobber: NoClobberOpt = False,
    skip_existing: SkipOpt = False,
) -> None:
    """Generate images for seeds: a grid, one seed's image (--seed S), or files (--outdir)."""
    o = Out(as_json, quiet)
    check_resample(resample)
    targets = Targets(no_clobber, skip_existing, overwrite)
    if out is not None and outdir is not None:
        raise UsageError("--out and --outdir go separately", "a grid (--out) or files (--outdir)")
    if seeds is None and n is not None and n > MAX_IMAGES:
        raise UsageError(f"-n {n:,} is more images than one run makes (at most "
                         f"{MAX_IMAGES:,})", "split the job: --seed S -n N makes seeds "
                         "S..S+N-1, so consecutive runs can cover any range")
    seed_list = parse_seeds(seeds) if seeds is not None else seed_range(
        n or (1 if seed is not None else DEFAULT_N), seed or 0)
    # Usage errors before the model loads (and before anything is written).
    fmt = output_format(None if outdir is not None else out, fmt)
    target = out or default_target(seeds, n, seed, fmt)
    if outdir is None and len(seed_list) > MAX_GRID:
        raise UsageError(f"a grid of {len(seed_list):,} images is too large (at most "
                         f"{MAX_GRID:,})", "write one file per seed with --outdir DIR")
    if as_json and outdir is None and str(target) == "-":
        raise UsageError("--json and --out - would both write to stdout",
                         "write the grid to a file with --out FILE, or drop --json")
    if outdir is None and not targets.check(target):  # refused: before the model loads
        o.say(f"kept existing {target}")
        return
    m = open_model(model, device, precision, o, graphs=("generator",))
    bs = batch_size(batch, m)
    if outdir is not None:
        _write_files(m, seed_list, outdir, fmt, truncation, bs, targets, o, scale, resample)
        return
    check_grid(len(seed_list), nrow, m.resolution * scale, fmt)
    t = time.perf_counter()
    images = m.generate(z_for_seeds(seed_list, m.z_dim, truncation), batch_size=bs)
    ms = (time.perf_counter() - t) * 1000
    # One seed is the image itself (no grid border; npy (3, H, W), as --outdir writes it);
    # npy is the model's output, unscaled.
    data = encode((images[0] if len(images) == 1 else images) if fmt == "npy" else
                  tile(enlarge(to_uint8(images), scale, resample), nrow), fmt)
    write_bytes(target, data)
    if str(target) != "-":
        count = f"{len(seed_list)} images" if len(seed_list) > 1 else "1 image"
        o.say(f"wrote {target} ({count}, {m.resolution}x{m.resolution}"
              + (f", shown {scale}x larger" if scale > 1 and fmt != "npy" else "") + ")")
    o.record({"path": str(target), "seeds": list(seed_list), "provider": m.provider.name,
              "ms": round(ms, 2)})


def default_target(seeds: str | None, n: int | None, seed: int | None, fmt: str) -> Path:
    """--seed S alone names its one image as --outdir would; anything else is a grid."""
    if seeds is None and n is None and seed is not None:
        return Path(seed_name(seed, fmt))
    return DEFAULT_OUT


def _write_files(m, seed_list: Sequence[int], outdir: Path, fmt: str, truncation: float,
                 bs: int, targets: Targets, o: Out, scale: int = 1,
                 resample: str = "nearest") -> None:
    """Stream seeds through generation and a writer pool; nothing here grows with n.
    A file that fails (or that the output rule refuses, such as a folder in its place)
    is a `failed:` line (exit 3 at the end); a failure that every other file would
    share (full disk, read-only folder) stops the run at once."""
    ensure_dir(outdir)
    refused: list[tuple[int, Refused]] = []  # reported as failures when their turn comes

    def wanted(seeds: Sequence[int]) -> list[tuple[int, Path]]:
        pairs = [(s, outdir / seed_name(s, fmt)) for s in seeds]
        keep = []
        for (s, p), w in zip(pairs, targets.plan([p for _, p in pairs])):
            if isinstance(w, Refused):
                refused.append((s, w))
            elif w:
                keep.append((s, p))
        return keep

    existing, first = 0, None
    if targets.skip_existing or targets.no_clobber:  # count them first: refuse or report
        for s in seed_list:
            if targets.taken(p := outdir / seed_name(s, fmt)):
                existing, first = existing + 1, first or p
    if existing and targets.no_clobber:
        refuse_existing(first, existing)
    if existing:
        o.say(f"keeping {existing} existing files in {outdir}")
    tally = Tally(o, len(seed_list) - existing)
    workers = min(8, os.cpu_count() or 1)
    per_task = 16  # images per pool task: fewer futures, same overlap
    pending: deque = deque()  # (future, ms) in seed order
    max_pending = workers * 4  # bounds memory whatever n is
    halt = threading.Event()  # set on a stop or an exception: workers write no more
    stopped: list[WriteError] = []

    def write_some(items: list) -> list:
        done = []
        for s, path, image in items:
            if halt.is_set():
                break
            try:
                write_bytes(path, encode(image, fmt))
                done.append((s, path, None))
            except WriteError as e:
                done.append((s, path, e))
                if e.folder_wide:
                    halt.set()
        return done

    def report_refused() -> None:
        while refused:
            s, e = refused.pop(0)
            tally.fail(f"seed {s}", e.message)

    def settle(advance) -> None:
        report_refused()
        fut, ms = pending.popleft()
        for s, path, error in fut.result():
            if error is None:
                tally.ok()
                advance()
                o.record({"path": str(path), "seed": s, "provider": m.provider.name, "ms": ms})
            elif error.folder_wide:
                stopped.append(error)
            else:
                tally.fail(f"seed {s}", error.message)

    with o.progress(tally.total, "sample") as advance, ThreadPoolExecutor(workers) as pool:
        try:
            for i in range(0, len(seed_list), bs):
                chunk = wanted(seed_list[i:i + bs])
                if not chunk:
                    continue
                t = time.perf_counter()
                images = m.generate(z_for_seeds([s for s, _ in chunk], m.z_dim, truncation),
                                    batch_size=bs)
                ms = round((time.perf_counter() - t) * 1000 / len(chunk), 3)
                pixels = images if fmt == "npy" else enlarge(to_uint8(images), scale, resample)
                items = [(s, path, image) for (s, path), image in zip(chunk, pixels)]
                for j in range(0, len(items), per_task):
                    pending.append((pool.submit(write_some, items[j:j + per_task]), ms))
                    while len(pending) > max_pending:
                        settle(advance)
                if halt.is_set():
                    break
            while pending:  # what was written before a stop is still reported
                settle(advance)
            report_refused()
        finally:
            halt.set()  # Ctrl-C, a closed stdout: queued writes are dropped, not done
    if stopped:
        tally.stop(stopped[0])
    tally.finish()  # failures: one error that counts what was written
    o.say(f"wrote {tally.written} files to {outdir}")
