"""`began score --data DIR`: BEGAN's own convergence numbers for a model, on real images.

    L(x)       mean |x - D(x)| over real images          (D reconstructs real data)
    L(G(z))    mean |G(z) - D(G(z))| over N samples
    balance    gamma * L(x) - L(G(z))                    (0 at the equilibrium)
    M_global   L(x) + |balance|                          (lower is better)

and a diversity check: the mean pairwise distance between samples, next to the
same figure on real images, both in pixels and in D's latent space. A ratio
well under 1 means the samples are less varied than the data (mode collapse).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from ..api import score_figures, subset
from ..errors import BeganError
from ..inputs import collect, preprocess_for, read, to_float
from ..output import Out
from .common import BatchOpt, DeviceOpt, JsonOpt, ModelOpt, PrecisionOpt, QuietOpt, batch_size
from .common import open_model


def score(
    data: Path = typer.Option(..., "--data", metavar="DIR",
                              help="Real images (searched recursively)."),
    n: int = typer.Option(1000, "-n", "--num", min=2, max=50_000, metavar="N",
                          help="Generated samples (seeds 0..N-1)."),
    max_images: int = typer.Option(2000, "--max-images", min=2, max=50_000, metavar="M",
                                   help="Real images used at most (a fixed random subset)."),
    batch: BatchOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Score a model against real images: L(x), L(G(z)), M_global and sample diversity."""
    o = Out(as_json, quiet)
    if not data.is_dir():
        raise BeganError(f"--data {data} is not a folder", "point --data at a folder of images")
    m = open_model(model, device, precision, o)
    bs = batch_size(batch, m)
    try:
        sources = collect([str(data)])
    except BeganError:  # collect's own words are about arguments; here it is --data
        raise BeganError(f"no images in {data}", "point --data at a folder of images") from None
    sources = subset(sources, max_images)  # fixed, not the first folders in sorted order
    pre = preprocess_for(m.bundle)
    pixels, skipped = [], 0
    with o.progress(len(sources), "reading") as advance:
        for s in sources:
            try:
                pixels.append(read(s, pre))
            except ValueError:
                skipped += 1
            advance()
    if len(pixels) < 2:
        raise BeganError(f"fewer than two readable images in {data} ({skipped} unreadable)",
                         "point --data at a folder of images")
    if skipped:
        o.say(f"skipped {skipped} unreadable files in {data}")
    x = to_float(np.stack(pixels))
    figures = score_figures(m, x, n, bs)  # the Python API's score() computes the same
    gamma, loss_real, loss_fake, balance, div = (figures[k] for k in (
        "gamma", "loss_real", "loss_fake", "balance", "diversity"))
    result = {"model": str(m.bundle.root), "data": str(data), **figures,
              "provider": m.provider.name}
    o.record(result)  # --json: the figures are the data on stdout
    if as_json:
        return
    rows = [("L(x)  real reconstruction", loss_real), ("L(G(z))  sample reconstruction",
                                                       loss_fake),
            ("gamma", gamma), ("balance  gamma*L(x) - L(G(z))", balance),
            ("M_global", result["m_global"])]
    lines = [f"{name:<34}{value:>10.4f}" for name, value in rows]
    lines.append(f"{'diversity':<34}{'samples':>10}{'real':>10}{'ratio':>8}")
    for space, d in div.items():
        lines.append(f"  mean pairwise distance, {space:<9}{d['samples']:>10.3f}"
                     f"{d['real']:>10.3f}" + (f"{d['ratio']:>8.2f}" if d["ratio"] is not None
                                               else f"{'-':>8}"))
    lines.append(f"({len(x)} real images from {data}, {n} samples, {m.provider.name})")
    o.say("\n".join(lines))  # a human table: stderr, like every other human line
