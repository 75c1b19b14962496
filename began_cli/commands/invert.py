"""`began invert`: images -> z through the encoder, optionally refined with Adam.

    began invert photo.png --outdir inv/                 # inv/photo.z.npy, inv/photo.recon.png
    began invert faces/ --outdir inv/ --refine 200 --json
    cat x.png | began invert - --outdir inv/             # inv/stdin.*

Per image: z (float32, N_z) and G(z), with the L1 error (mean |x - G(z)| on
the model's [-1, 1] scale) and PSNR against the input as the model saw it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import typer

from ..errors import EXIT_PARTIAL, BeganError, UsageError
from ..images import to_uint8
from ..inputs import collect, preprocess_for, read, to_float
from ..latent import psnr, refine
from ..output import Out, encode, ensure_dir, plan_writes, write_bytes
from .common import (BatchOpt, DeviceOpt, JsonOpt, ModelOpt, OverwriteOpt, PrecisionOpt,
                     QuietOpt, SkipOpt, batch_size, open_model)


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
    refine_steps: int = typer.Option(0, "--refine", min=0, metavar="N",
                                     help="Adam steps on |x - G(z)| after the encoder."),
    lr: float = typer.Option(0.05, "--lr", min=1e-6, metavar="LR",
                             help="Adam learning rate of the refinement."),
    batch: BatchOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
    skip_existing: SkipOpt = False,
) -> None:
    """Find z for images with the model's encoder (and optional refinement)."""
    o = Out(as_json, quiet)
    sources = collect(inputs)
    if sum(s.path is None for s in sources) > 1:
        raise UsageError("stdin (-) can be read once", "name - only once")
    # fp32 by default: the refinement's gradient graph is fp32, and PSNR is reported.
    m = open_model(model, device, "fp32" if precision == "auto" else precision, o)
    pre = preprocess_for(m.bundle)

    stems = unique_stems([s.name for s in sources])
    targets = [(outdir / f"{st}.z.npy", outdir / f"{st}.recon.png") for st in stems]
    flat = plan_writes([p for pair in targets for p in pair], overwrite, skip_existing)
    todo = [i for i in range(len(sources)) if flat[2 * i] or flat[2 * i + 1]]

    images, kept, failed, written = [], [], 0, 0
    for i in todo:
        try:
            images.append(read(sources[i], pre))
            kept.append(i)
        except ValueError as e:
            if len(todo) == 1:  # one input: its reason is the error
                raise BeganError(f"{sources[i].name}: {e}", "pass an image file the model can "
                                 "read (png, jpg, webp, bmp, gif, ...)") from None
            failed += 1
            o.say(f"error: {sources[i].name}: {e}")
    if images:
        ensure_dir(outdir)  # only once there is something to write
        x = to_float(np.stack(images))
        bs = batch_size(batch, m)
        t = time.perf_counter()
        z = m.encode(x, batch_size=bs)
        if refine_steps:
            z, _, _ = refine(m, x, z, refine_steps, lr=lr, batch_size=bs)
        recon = m.generate(z, batch_size=bs)
        ms = (time.perf_counter() - t) * 1000 / len(kept)
        l1 = np.abs(recon - x).reshape(len(x), -1).mean(1)
        db = psnr(recon, x)
        pixels = to_uint8(recon)
        for j, i in enumerate(kept):
            z_path, png_path = targets[i]
            try:
                write_bytes(z_path, encode(z[j], "npy"))
                write_bytes(png_path, encode(pixels[j], "png"))
            except BeganError as e:
                failed += 1
                o.say(f"error: {e.message}")
                continue
            written += 1
            o.say(f"{sources[i].name}: L1 {l1[j]:.4f}  PSNR {db[j]:.2f} dB -> {png_path}")
            o.record({"input": sources[i].name, "z": str(z_path), "recon": str(png_path),
                      "l1": round(float(l1[j]), 6), "psnr": round(float(db[j]), 3),
                      "refine": refine_steps, "provider": m.provider.name, "ms": round(ms, 2)})
    if len(todo) < len(sources):
        o.say(f"kept {len(sources) - len(todo)} existing results in {outdir}")
    if failed and not written:
        raise BeganError(f"none of the {len(todo)} images could be inverted",
                         "check the paths and that the files are images")
    if failed:
        raise typer.Exit(EXIT_PARTIAL)
