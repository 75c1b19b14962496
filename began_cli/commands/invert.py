"""`began invert`: images -> z through the encoder, optionally refined with Adam.

    began invert photo.png --outdir inv/                 # inv/photo.z.npy, inv/photo.recon.png
    began invert faces/ --outdir inv/ --refine 200 --json
    cat x.png | began invert - --outdir inv/             # inv/stdin.*

Per image: z (float32, N_z) and G(z), with the L1 error (mean |x - clip(G(z))|
on the model's [-1, 1] scale: the image as saved) and PSNR against the input as
the model saw it. An error far above the model's own on its samples earns a
warning on stderr (and "outside": true in --json): the model cannot draw that
image, and its z is only the nearest guess.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import typer

from ..errors import BeganError, UsageError
from ..images import to_uint8
from ..inputs import collect, preprocess_for, read, to_float
from ..api import inversion_figures
from ..images import enlarge
from ..latent import OUTSIDE_RATIO, reference_for
from ..latent import invert as find_z
from ..output import Out, Tally, WriteError, encode, ensure_dir, write_bytes
from ..targets import Refused, Targets, refuse_managed_folder
from .common import (BatchOpt, DeviceOpt, JsonOpt, ModelOpt, NoClobberOpt, OverwriteOpt,
                     PrecisionOpt, QuietOpt, SkipOpt, batch_size, open_model)
from .viewing import ResampleOpt, ScaleOpt, check_resample

MAX_WARNINGS = 10  # images warned about one by one; more get one summary line


def outside_warning(name: str, l1: float, ratio: float, reference: dict) -> str:
    return (f"warning: {name}: L1 {l1:.4f} is {ratio:.1f}x the model's 99th percentile on its "
            f"own samples ({reference['l1']['p99']:.4f}): probably not an image it can draw")


def outside_summary(count: int, total: int, reference: dict) -> str:
    return (f"warning: {count} of {total} images have an L1 error over {OUTSIDE_RATIO:g}x the "
            f"model's 99th percentile on its own samples ({reference['l1']['p99']:.4f}): "
            "probably not images it can draw (\"outside\" in --json)")


def unique_stems(names: list[str]) -> list[str]:
    """Output stems from input names: the file stem, made unique with -2, -3, ...
    Only the final name part is used, so outputs stay inside --outdir."""
    taken: set[str] = set()
    out = []
    for name in names:
        stem = Path(name).stem.lstrip(".") or "image"
        unique, k = stem, 1
        while unique in taken:  # also past an input that is itself named x-2
            k += 1
            unique = f"{stem}-{k}"
        taken.add(unique)
        out.append(unique)
    return out


def invert(
    inputs: list[str] = typer.Argument(..., metavar="IMAGES|DIR|-",
                                       help="Image files, folders (searched recursively), or "
                                            "- for one image on stdin."),
    outdir: Path = typer.Option(..., "--outdir", metavar="DIR",
                                help="Where <stem>.z.npy and <stem>.recon.png go."),
    refine_steps: int = typer.Option(0, "--refine", min=0, max=100_000, metavar="N",
                                     help="Adam steps on |clip(G(z)) - x| after the encoder."),
    lr: float = typer.Option(0.05, "--lr", min=1e-6, metavar="LR",
                             help="Adam learning rate of the refinement."),
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
    """Find z for images (encoder, optional refinement); warn if the model cannot draw one."""
    o = Out(as_json, quiet)
    check_resample(resample)
    targets = Targets(no_clobber, skip_existing, overwrite)
    refuse_managed_folder(outdir)  # before any work, as ensure_dir would later
    sources = collect(inputs)
    if sum(s.path is None for s in sources) > 1:
        raise UsageError("stdin (-) can be read once", "name - only once")
    # fp32 by default: the refinement's gradient graph is fp32, and PSNR is reported.
    m = open_model(model, device, "fp32" if precision == "auto" else precision, o)
    pre = preprocess_for(m.bundle)

    stems = unique_stems([s.name for s in sources])
    paths = [(outdir / f"{st}.z.npy", outdir / f"{st}.recon.png") for st in stems]
    flat = targets.plan([p for pair in paths for p in pair])
    todo = [i for i in range(len(sources)) if flat[2 * i] or flat[2 * i + 1]]

    tally = Tally(o, len(todo), "images")
    images, kept = [], []
    for i in todo:
        refused = [w for w in flat[2 * i:2 * i + 2] if isinstance(w, Refused)]
        if refused:  # e.g. a folder named like its output: nothing of that image is written
            if len(todo) == 1:  # one input: its reason is the error
                raise refused[0]
            tally.fail(sources[i].name, refused[0].message)
            continue
        try:
            images.append(read(sources[i], pre))
            kept.append(i)
        except ValueError as e:
            if len(todo) == 1:  # one input: its reason is the error
                raise BeganError(f"{sources[i].name}: {e}", "pass an image file the model can "
                                 "read (png, jpg, webp, bmp, gif, ...)") from None
            tally.fail(sources[i].name, str(e))
    if images:
        ensure_dir(outdir)  # only once there is something to write
        x = to_float(np.stack(images))
        bs = batch_size(batch, m)
        t = time.perf_counter()
        z, recon = find_z(m, x, refine_steps, lr=lr, batch_size=bs)
        ms = (time.perf_counter() - t) * 1000 / len(kept)
        fig = inversion_figures(m, x, recon)  # errors of the image as saved (clipped)
        l1, db = fig["l1"], fig["psnr"]
        pixels = enlarge(to_uint8(recon), scale, resample)
        each = len(kept) <= MAX_WARNINGS  # else one summary line below
        for j, i in enumerate(kept):
            z_path, png_path = paths[i]
            # Only the outputs planned: --skip-existing never rewrites one that exists.
            try:
                if flat[2 * i]:
                    write_bytes(z_path, encode(z[j], "npy"))
                if flat[2 * i + 1]:
                    write_bytes(png_path, encode(pixels[j], "png"))
            except WriteError as e:
                if e.folder_wide:
                    tally.stop(e)
                tally.fail(sources[i].name, e.message)
                continue
            tally.ok()
            kept_one = "" if flat[2 * i] and flat[2 * i + 1] else " (kept the existing " + (
                z_path.name if not flat[2 * i] else png_path.name) + ")"
            o.say(f"{sources[i].name}: L1 {l1[j]:.4f}  PSNR {db[j]:.2f} dB -> {png_path}"
                  + kept_one)
            if each and fig["outside"][j]:
                o.say(outside_warning(sources[i].name, l1[j], fig["ratio"][j], reference_for(m)))
            o.record({"input": sources[i].name, "z": str(z_path), "recon": str(png_path),
                      "l1": round(float(l1[j]), 6), "psnr": round(float(db[j]), 3),
                      "l1_ratio": round(float(fig["ratio"][j]), 3),
                      "outside": bool(fig["outside"][j]), "refine": refine_steps,
                      "provider": m.provider.name, "ms": round(ms, 2)})
        if not each and fig["outside"].any():
            o.say(outside_summary(int(fig["outside"].sum()), len(kept), reference_for(m)))
    if len(todo) < len(sources):
        o.say(f"kept {len(sources) - len(todo)} existing results in {outdir}")
    tally.finish("inverted", "check the paths and that the files are images")
