"""`began interpolate`: walk the latent space between images or seeds.

    began interpolate a.png b.png                       # -> ./interpolate-a-b.png
    began interpolate a.png b.png c.png --steps 12 --out walk.gif
    began interpolate --seeds 3,17 --method lerp --outdir frames/
    began interpolate a.png b.png --space d             # D's auto-encoder latent space

Images are inverted through the encoder (optionally refined); each segment has
--steps frames including both ends.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from ..errors import UsageError
from ..images import make_grid, to_uint8
from ..inputs import collect, preprocess_for, read, to_float
from ..latent import path as latent_path
from ..latent import refine
from ..output import Out, encode, ensure_dir, output_format, plan_writes, write_bytes
from ..seeds import parse_seeds, z_for_seeds
from .common import (DeviceOpt, JsonOpt, ModelOpt, OverwriteOpt, PrecisionOpt, QuietOpt,
                     SkipOpt, open_model)


def interpolate(
    images: Optional[list[str]] = typer.Argument(None, metavar="[IMAGES]...",
                                                 show_default=False,
                                                 help="Two or more images to pass through."),
    seeds: Optional[str] = typer.Option(None, "--seeds", metavar="LIST", show_default=False,
                                        help="Seeds to pass through instead, e.g. 3,17."),
    steps: int = typer.Option(8, "--steps", min=2, metavar="N",
                              help="Frames per segment, both ends included."),
    method: str = typer.Option("slerp", "--method", metavar="slerp|lerp"),
    space: str = typer.Option("g", "--space", metavar="g|d",
                              help="g: the generator's z; d: the auto-encoder's latent h."),
    refine_steps: int = typer.Option(0, "--refine", min=0, metavar="N",
                                     help="Adam steps refining each image's z (space g)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", metavar="FILE", show_default=False,
                                       help="A strip (png/jpg/webp) or an animated .gif "
                                            "[default: ./interpolate-<a>-<b>.png]."),
    outdir: Optional[Path] = typer.Option(None, "--outdir", metavar="DIR", show_default=False,
                                          help="One file per frame: DIR/frame0000.png."),
    nrow: Optional[int] = typer.Option(None, "--nrow", min=1, metavar="K", show_default=False,
                                       help="Frames per row of the strip [default: all]."),
    frame_ms: int = typer.Option(100, "--frame-ms", min=10, metavar="MS",
                                 help="GIF frame duration."),
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
    skip_existing: SkipOpt = False,
) -> None:
    """Interpolate between images (inverted through the encoder) or seeds."""
    o = Out(as_json, quiet)
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
    fmt = None
    if outdir is None:
        fmt = output_format(out, None, allowed=("png", "jpg", "webp", "gif"))
        if as_json and out is not None and str(out) == "-":
            raise UsageError("--json and --out - would both write to stdout",
                             "write the strip to a file with --out FILE, or drop --json")

    m = open_model(model, device, precision, o)
    t = time.perf_counter()
    if seeds:
        z = z_for_seeds(seed_list, m.z_dim)
        x = m.generate(z) if space == "d" else None
    else:
        pixels, pre = [], preprocess_for(m.bundle)
        for s in sources:
            try:
                pixels.append(read(s, pre))
            except ValueError as e:
                raise UsageError(f"{s.name}: {e}", "interpolate needs every image it names"
                                 ) from None
        x = to_float(np.stack(pixels))
        z = None
        if space == "g":
            z = m.encode(x)
            if refine_steps:
                z, _, _ = refine(m, x, z, refine_steps)

    if space == "g":
        frames = m.generate(np.clip(latent_path(z, steps, method), -1, 1))
    else:
        _, h = m.autoencode(x)
        frames = m.decode(latent_path(h, steps, method))
    ms = (time.perf_counter() - t) * 1000
    frames_u8 = to_uint8(frames)

    if outdir is not None:
        ensure_dir(outdir)
        paths = [outdir / f"frame{i:04d}.png" for i in range(len(frames_u8))]
        for p, w, img in zip(paths, plan_writes(paths, overwrite, skip_existing), frames_u8):
            if w:
                write_bytes(p, encode(img, "png"))
                o.record({"path": str(p), "provider": m.provider.name})
        o.say(f"wrote {len(paths)} frames to {outdir}")
        return
    target = out or Path(f"interpolate-{'-'.join(names[:2])}"
                         f"{'-etc' if len(names) > 2 else ''}.png")
    if str(target) != "-" and not plan_writes([target], overwrite, skip_existing)[0]:
        o.say(f"kept existing {target}")
        return
    write_bytes(target, _gif(frames_u8, frame_ms) if fmt == "gif" else
                encode(make_grid(frames_u8, nrow or len(frames_u8)), fmt))
    where = "" if out is not None else " (in the current folder)"
    o.say(f"wrote {target}{where}: {len(frames_u8)} frames through {', '.join(names)}")
    o.record({"path": str(target), "frames": len(frames_u8), "points": names, "space": space,
              "method": method, "provider": m.provider.name, "ms": round(ms, 2)})


def _gif(frames: np.ndarray, frame_ms: int) -> bytes:
    import io

    from PIL import Image

    pics = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    pics[0].save(buf, format="GIF", save_all=True, append_images=pics[1:], duration=frame_ms,
                 loop=0)
    return buf.getvalue()
