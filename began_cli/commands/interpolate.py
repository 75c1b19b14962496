"""`began interpolate`: walk the latent space between images or seeds.

    began interpolate a.png b.png                       # -> ./interpolate-a-b.png
    began interpolate a.png b.png c.png --steps 12 --out walk.gif
    began interpolate --seeds 3,17 --method lerp --outdir frames/
    began interpolate a.png b.png --space d             # D's auto-encoder latent space

Images are inverted through the encoder (optionally refined); each segment has
--steps frames including both ends. A strip or GIF of images starts and ends with
the inputs as the model sees them, to compare the walk's ends with.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from ..errors import BeganError, UsageError
from ..api import walk
from ..images import enlarge, make_grid, to_uint8
from ..inputs import collect, preprocess_for, read, to_float
from ..output import Out, Tally, WriteError, encode, ensure_dir, output_format, write_bytes
from ..seeds import parse_seeds, z_for_seeds
from ..targets import Refused, Targets
from .common import (DeviceOpt, JsonOpt, ModelOpt, NoClobberOpt, OverwriteOpt, PrecisionOpt,
                     QuietOpt, SkipOpt, open_model)
from .sample import check_grid
from .viewing import ResampleOpt, ScaleOpt, check_resample

MAX_FRAMES = 10_000  # frames of one walk: all of them are held in memory
MAX_FRAME_PIXELS = 1 << 28  # --outdir: all frames are held at once (768 MiB of RGB)


def interpolate(
    images: Optional[list[str]] = typer.Argument(None, metavar="IMAGES",
                                                 show_default=False,
                                                 help="Two or more images to pass through."),
    seeds: Optional[str] = typer.Option(None, "--seeds", metavar="LIST", show_default=False,
                                        help="Seeds to pass through instead, e.g. 3,17."),
    steps: int = typer.Option(8, "--steps", min=2, max=MAX_FRAMES, metavar="N",
                              help="Frames per segment, both ends included."),
    method: str = typer.Option("slerp", "--method", metavar="slerp|lerp",
                               help="Paths between points: spherical (slerp) or straight."),
    space: str = typer.Option("g", "--space", metavar="g|d",
                              help="g: the generator's z; d: the auto-encoder's latent h."),
    refine_steps: int = typer.Option(0, "--refine", min=0, max=100_000, metavar="N",
                                     help="Adam steps refining each image's z (space g)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", metavar="FILE", show_default=False,
                                       help="A strip (png/jpg/webp) or an animated .gif, "
                                            "with the input images at both ends "
                                            "\\[default: ./interpolate-<a>-<b>.png]."),
    outdir: Optional[Path] = typer.Option(None, "--outdir", metavar="DIR", show_default=False,
                                          help="One file per frame: DIR/frame0000.png."),
    nrow: Optional[int] = typer.Option(None, "--nrow", min=1, metavar="K", show_default=False,
                                       help="Frames per row of the strip \\[default: all]."),
    frame_ms: int = typer.Option(100, "--frame-ms", min=10, max=655350, metavar="MS",
                                 help="GIF frame duration (GIF stores at most 655350)."),
    scale: ScaleOpt = 1,
    resample: ResampleOpt = "nearest",
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
    no_clobber: NoClobberOpt = False,
    skip_existing: SkipOpt = False,
) -> None:
    """Interpolate between images (inverted through the encoder) or seeds."""
    o = Out(as_json, quiet)
    check_resample(resample)
    targets = Targets(no_clobber, skip_existing, overwrite)
    if method not in ("slerp", "lerp"):
        raise UsageError(f"unknown method {method!r}", "use slerp or lerp")
    if space not in ("g", "d"):
        raise UsageError(f"unknown space {space!r}", "use g (generator) or d (auto-encoder)")
    if bool(images) == bool(seeds):
        raise UsageError("give two or more images, or --seeds, not both",
                         "e.g. began interpolate a.png b.png, or --seeds 3,17")
    if out is not None and outdir is not None:
        raise UsageError("--out and --outdir go separately",
                         "a strip or GIF (--out) or one file per frame (--outdir)")
    # Usage errors before the model loads: the points, the output format, stdout.
    if seeds:
        seed_list = parse_seeds(seeds)
        names = [f"seed{s}" for s in seed_list]
    else:
        sources = collect(images)
        names = [Path(s.name).stem if s.path else "stdin" for s in sources]
    if len(names) < 2:
        raise UsageError("interpolation needs at least two points",
                         "give two or more images, or --seeds with two or more seeds")
    if (len(names) - 1) * (steps - 1) + 1 > MAX_FRAMES:  # all frames are held in memory
        raise UsageError(f"{len(names)} points with --steps {steps} make more than "
                         f"{MAX_FRAMES:,} frames", "use fewer points or fewer --steps")
    fmt = target = None
    if outdir is None:
        fmt = output_format(out, None, allowed=("png", "jpg", "webp", "gif"))
        if as_json and out is not None and str(out) == "-":
            raise UsageError("--json and --out - would both write to stdout",
                             "write the strip to a file with --out FILE, or drop --json")
        target = out or Path(f"interpolate-{'-'.join(names[:2])}"
                             f"{'-etc' if len(names) > 2 else ''}.png")
        if not targets.check(target):  # refused or kept: before any work
            o.say(f"kept existing {target}")
            return

    m = open_model(model, device, precision, o)
    n_frames = (len(names) - 1) * (steps - 1) + 1  # memory and the strip's format bound these
    side = m.resolution * scale
    if outdir is None:
        check_grid(n_frames, nrow or n_frames, side,
                   fmt if fmt in ("png", "jpg", "webp") else "npy")
    elif n_frames * side * side > MAX_FRAME_PIXELS:  # one file a frame: only memory bounds it
        raise UsageError(f"{n_frames:,} frames of {side}x{side} are too many pixels to hold "
                         f"at once (at most {MAX_FRAME_PIXELS:,})",
                         "lower --scale or --steps, or enlarge the frames afterwards")
    t = time.perf_counter()
    if seeds:
        z, x = z_for_seeds(seed_list, m.z_dim), None
    else:
        pixels, pre = [], preprocess_for(m.bundle)
        for s in sources:
            try:
                pixels.append(read(s, pre))
            except ValueError as e:  # as in invert and score: a file problem, exit 1
                raise BeganError(f"{s.name}: {e}", "interpolate needs every image it names "
                                 "(png, jpg, webp, bmp, gif, ...)") from None
        x, z = to_float(np.stack(pixels)), None
    frames = walk(m, steps, method, space, x=x, z=z, refine=refine_steps)
    ms = (time.perf_counter() - t) * 1000
    frames_u8 = enlarge(to_uint8(frames), scale, resample)
    # A strip or GIF starts and ends with the input images as the model sees them
    # (decoded, cropped, resized), so the walk's ends can be compared with them.
    shown = frames_u8 if x is None else np.concatenate(
        [enlarge(to_uint8(x[[0]]), scale, resample), frames_u8,
         enlarge(to_uint8(x[[-1]]), scale, resample)])

    if outdir is not None:
        ensure_dir(outdir)
        paths = [outdir / f"frame{i:04d}.png" for i in range(len(frames_u8))]
        plan = targets.plan(paths)
        tally = Tally(o, sum(w is not False for w in plan), "frames")
        for p, w, img in zip(paths, plan, frames_u8):
            if isinstance(w, Refused):  # e.g. a folder in its place: that frame fails
                tally.fail(str(p), w.message)
            elif w:
                try:
                    write_bytes(p, encode(img, "png"))
                except WriteError as e:
                    if e.folder_wide:
                        tally.stop(e)
                    tally.fail(str(p), e.message)
                    continue
                tally.ok()  # only frames really written are reported
                o.record({"path": str(p), "provider": m.provider.name})
        tally.finish()  # failures: one error that counts what was written
        o.say(f"wrote {tally.written} frames to {outdir}"
              + (f"; kept {len(paths) - tally.total} existing" if tally.total < len(paths)
                 else ""))
        return
    write_bytes(target, _gif(shown, frame_ms) if fmt == "gif" else
                encode(make_grid(shown, nrow or len(shown)), fmt))
    where = "" if out is not None else " (in the current folder)"
    ends = "" if x is None else " (the input images at both ends)"
    o.say(f"wrote {target}{where}: {len(frames_u8)} frames through {', '.join(names)}{ends}")
    o.record({"path": str(target), "frames": len(frames_u8), "inputs_shown": x is not None,
              "points": names, "space": space,
              "method": method, "provider": m.provider.name, "ms": round(ms, 2)})


def _gif(frames: np.ndarray, frame_ms: int) -> bytes:
    import io

    from PIL import Image

    pics = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    pics[0].save(buf, format="GIF", save_all=True, append_images=pics[1:], duration=frame_ms,
                 loop=0)
    return buf.getvalue()
