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

import json
import sys
from pathlib import Path

import numpy as np
import typer

from ..errors import BeganError, UsageError
from ..inputs import collect, preprocess_for, read, to_float
from ..output import Out
from ..seeds import z_for_seeds
from .common import BatchOpt, DeviceOpt, JsonOpt, ModelOpt, PrecisionOpt, QuietOpt, batch_size
from .common import open_model


def mean_pairwise_distance(v: np.ndarray, limit: int = 512) -> float:
    """Mean Euclidean distance over all pairs of the first `limit` rows (flattened)."""
    v = v[:limit].reshape(min(len(v), limit), -1).astype(np.float64)
    if len(v) < 2:
        return float("nan")
    sq = (v * v).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * v @ v.T, 0.0)
    iu = np.triu_indices(len(v), 1)
    return float(np.sqrt(d2[iu]).mean())


def recon_l1(x: np.ndarray, recon: np.ndarray) -> np.ndarray:
    return np.abs(recon - x).reshape(len(x), -1).mean(1)


def score(
    data: Path = typer.Option(..., "--data", metavar="DIR",
                              help="Real images (searched recursively)."),
    n: int = typer.Option(1000, "-n", "--num", min=2, metavar="N",
                          help="Generated samples (seeds 0..N-1)."),
    max_images: int = typer.Option(2000, "--max-images", min=2, metavar="M",
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
    except UsageError:  # collect's "no input images" is about arguments; here it is the data
        raise BeganError(f"no images in {data}", "point --data at a folder of images") from None
    if len(sources) > max_images:  # a fixed subset, not the first folder in sorted order
        pick = np.sort(np.random.default_rng(0).choice(len(sources), max_images, replace=False))
        sources = [sources[i] for i in pick]
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
    recon_x, h_x = m.autoencode(x, batch_size=bs)
    fake = m.generate(z_for_seeds(list(range(n)), m.z_dim), batch_size=bs)
    recon_f, h_f = m.autoencode(fake, batch_size=bs)

    gamma = float(m.bundle.manifest["training"]["gamma"])
    loss_real = float(recon_l1(x, recon_x).mean())
    loss_fake = float(recon_l1(fake, recon_f).mean())
    balance = gamma * loss_real - loss_fake
    div = {space: {"samples": mean_pairwise_distance(a), "real": mean_pairwise_distance(b)}
           for space, a, b in (("pixels", fake, x), ("latent_h", h_f, h_x))}
    for d in div.values():
        d["ratio"] = d["samples"] / d["real"] if d["real"] > 0 else float("nan")
    result = {"model": str(m.bundle.root), "data": str(data), "real_images": len(x),
              "samples": n, "gamma": gamma, "loss_real": loss_real, "loss_fake": loss_fake,
              "balance": balance, "m_global": loss_real + abs(balance),
              "diversity": div, "provider": m.provider.name}
    if as_json:
        json.dump(result, sys.stdout)
        print()
        return
    rows = [("L(x)  real reconstruction", loss_real), ("L(G(z))  sample reconstruction",
                                                       loss_fake),
            ("gamma", gamma), ("balance  gamma*L(x) - L(G(z))", balance),
            ("M_global", result["m_global"])]
    lines = [f"{name:<34}{value:>10.4f}" for name, value in rows]
    lines.append(f"{'diversity':<34}{'samples':>10}{'real':>10}{'ratio':>8}")
    for space, d in div.items():
        lines.append(f"  mean pairwise distance, {space:<9}{d['samples']:>10.3f}"
                     f"{d['real']:>10.3f}{d['ratio']:>8.2f}")
    lines.append(f"({len(x)} real images from {data}, {n} samples, {m.provider.name})")
    print("\n".join(lines))
