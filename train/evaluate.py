"""`began eval`: samples of a model, a run or a folder -> Inception figures against real images.

    source (bundle | run checkpoint | image folder) -> n samples, (n, R, R, 3) uint8
    reference folder -> decoded exactly as training decodes it (train/data.py, the
                        model's crop/background/resample/resolution), a fixed subset
    both -> pool3 features (reference ones cached) -> FID, KID, precision/recall
    both -> mean pairwise MS-SSIM (diversity)
    both -> NDB: k-means bins of the reference pixels, samples tested bin by bin
            (train/coverage.py; seconds, no network)

The figures, with the counts behind them, go into one JSON-able dict; `table`
renders it for people, began/card.py adds it to a bundle's manifest and card.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from began.decode import Preprocess
from began.errors import BeganError, UsageError
from began.train import coverage, metrics
from began.train.data import NoImagesError, default_cache_dir, load_image_folder
from began.train.inception import NETWORK_FILE, NETWORK_PACKAGE, PREPROCESS, Inception

# Inception features cost about 0.2 CPU-seconds per image (bench/quality/README.md): 2,000
# samples against 2,000 reference images is ~13 CPU-minutes the first time, half that once the
# reference features are cached. On CUDA the default is the usual 10,000.
DEFAULT_N = {"cpu": 2000, "cuda": 10000}
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
PR_K = 3
MSSSIM_PAIRS = 1000
REF_SUBSET_SEED = 0  # fixed, so reruns pick the same reference images and hit the cache
NDB_BINS = 50  # the paper's smallest K; 2,000 reals give 40 a bin
NDB_SEED = 0  # k-means++ seeding: fixed, so reruns bin the same way


@dataclass
class Source:
    kind: str  # "model" | "run" | "folder"
    path: Path | None  # None: the embedded model
    step: int | str | None = None  # runs only: a step, "best", or None (the newest)


@dataclass
class Samples:
    images: np.ndarray  # (N, R, R, 3) uint8
    pre: Preprocess  # how the reference must be decoded to meet them
    about: dict[str, Any]  # what was sampled, for the report


def torch_device(device: str) -> str:
    """--device for eval (cpu or CUDA: the features run on either), as models/device.py
    chooses it for train and export."""
    from began.models.device import resolve_device

    device = device.strip().lower()
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise UsageError(f"bad device {device!r}", "use auto, cpu, cuda or cuda:N")
    return str(resolve_device(device))


# ----------------------------------------------------------------------------
# Sources -> uint8 samples
# ----------------------------------------------------------------------------


def _seeds_z(n: int, seed: int, z_dim: int) -> np.ndarray:
    from began.seeds import seed_range, z_for_seeds

    return z_for_seeds(list(seed_range(n, seed)), z_dim)  # the z `began sample` draws


def samples_from_model(path: Path | None, n: int, seed: int, device: str,
                       batch_size: int) -> Samples:
    from began.images import to_uint8
    from began.inputs import preprocess_for
    from began.model import Model

    m = Model.open(path, device="cpu" if device == "cpu" else "auto")
    z = _seeds_z(n, seed, m.z_dim)
    images = np.concatenate([to_uint8(b[0]) for b in
                             m.batches("generator", z, batch_size=batch_size)])
    about = {"kind": "model", "path": str(m.bundle.root), "step":
             m.bundle.manifest.get("training", {}).get("step"), "provider": m.provider.name}
    return Samples(images, preprocess_for(m.bundle), about)


def samples_from_run(path: Path, step: int | str | None, n: int, seed: int, device: str,
                     batch_size: int, weights: str = "auto") -> Samples:
    import torch

    from began.train.runs import load_run, preprocess_of

    snap = load_run(path, step, weights)  # verified checkpoint -> G (auto: its EMA when kept)
    G = snap.G.to(device)
    z = torch.from_numpy(_seeds_z(n, seed, snap.cfg.model.z_dim))
    parts = []
    with torch.inference_mode():
        for i in range(0, n, batch_size):
            x = G(z[i:i + batch_size].to(device)).float()
            # exactly the bundle's to_pixels: clip(round((x + 1) * 127.5), 0, 255)
            u8 = torch.clamp(torch.round((x + 1.0) * 127.5), 0, 255).to(torch.uint8)
            parts.append(u8.permute(0, 2, 3, 1).cpu().numpy())
    pre = preprocess_of(snap.cfg)
    about = {"kind": "run", "path": str(path), "step": snap.step,
             "checkpoint": str(snap.checkpoint), "weights": snap.weights}
    return Samples(np.concatenate(parts), pre, about)


def samples_from_folder(path: Path, n: int, seed: int, pre: Preprocess,
                        progress: bool | None) -> Samples:
    images = _load_folder(path, pre, progress, "samples")
    idx = subset(len(images.images), n, seed)
    about = {"kind": "folder", "path": str(path), "images": len(images.images)}
    return Samples(np.asarray(images.images[idx]), pre, about)


def subset(total: int, n: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a fixed random subset of n of `total` (all when n >= total)."""
    if n is None or n >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, n, replace=False))


def _load_folder(path: Path, pre: Preprocess, progress: bool | None, what: str):
    try:
        return load_image_folder(path, pre, progress=progress)
    except (FileNotFoundError, NotADirectoryError, NoImagesError) as e:
        raise BeganError(f"{what}: {e}", "point it at a folder of images") from None


# ----------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------


def evaluate(samples: Samples, ref_dir: Path, ref_n: int | None, device: str,
             batch_size: int, progress_factory: Callable | None = None,
             say: Callable[[str], None] = lambda s: None,
             cache_dir: Path | None = None, msssim_pairs: int = MSSSIM_PAIRS,
             bins: int = NDB_BINS) -> dict[str, Any]:
    """All figures for `samples` against the reference folder, as one JSON-able dict;
    NDB over `bins` k-means bins (at most one per reference image; 0: none)."""
    from began.train.inception import reference_features

    progress = progress_factory or (lambda total, label: _no_progress())
    t0 = time.perf_counter()
    ref = _load_folder(ref_dir, samples.pre, None if progress_factory else False, "--ref")
    idx = subset(len(ref.images), ref_n, REF_SUBSET_SEED)
    real_u8 = np.asarray(ref.images[idx])
    net = Inception(device)
    t1 = time.perf_counter()
    with progress(len(idx), "reference features") as advance:
        real, cached = reference_features(
            net, ref.images, ref.key, idx, Path(cache_dir or default_cache_dir()),
            batch_size=batch_size, advance=advance, about={"root": str(ref_dir)}, warn=say)
    if cached:
        say(f"reference features of {len(idx)} images from the cache")
    t2 = time.perf_counter()
    with progress(len(samples.images), "sample features") as advance:
        fake = net.features(samples.images, batch_size=batch_size, advance=advance)
    t3 = time.perf_counter()
    if len(fake) < 2 or len(real) < 2:
        raise BeganError(f"need at least 2 samples and 2 reference images, got {len(fake)} "
                         f"and {len(real)}", "raise -n, or use a larger --ref folder")
    k = min(PR_K, len(real) - 1, len(fake) - 1)
    kid_mean, kid_std = metrics.kid(real, fake, KID_SUBSETS, KID_SUBSET_SIZE)
    precision, recall = metrics.precision_recall(real, fake, k=k)
    result = {
        "source": samples.about,
        "reference": {"path": str(ref_dir), "images": int(len(ref.images)),
                      "used": int(len(idx)), "skipped": len(ref.skipped), "key": ref.key,
                      "preprocess": {"resolution": samples.pre.resolution,
                                     "crop": samples.pre.crop,
                                     "background": samples.pre.background,
                                     "resample": samples.pre.resample}},
        "samples": int(len(fake)),
        "fid": metrics.fid(real, fake),
        "kid": {"mean": kid_mean, "std": kid_std, "subsets": KID_SUBSETS,
                "subset_size": min(KID_SUBSET_SIZE, len(real), len(fake))},
        "precision": precision,
        "recall": recall,
        "k": k,
    }
    t4 = time.perf_counter()
    result["msssim"] = {
        "samples": metrics.mean_pairwise_msssim(samples.images, msssim_pairs, seed=1),
        "real": metrics.mean_pairwise_msssim(real_u8, msssim_pairs, seed=1),
        "pairs": msssim_pairs,
    }
    t5 = time.perf_counter()
    if bins:
        result["ndb"] = coverage.ndb(real_u8, samples.images, bins, seed=NDB_SEED)
    t6 = time.perf_counter()
    result["features"] = {"network": f"TF-Inception pool3, {NETWORK_FILE} from {NETWORK_PACKAGE}",
                          "sha256": net.sha256, "preprocess": PREPROCESS,
                          "device": str(net.device), "reference_cached": cached}
    result["seconds"] = {"setup": t1 - t0, "reference_features": t2 - t1,
                         "sample_features": t3 - t2, "fid_kid_pr": t4 - t3,
                         "msssim": t5 - t4, "ndb": t6 - t5}
    return result


class _no_progress:
    def __enter__(self):
        return lambda k=1: None

    def __exit__(self, *exc):
        return False


# ----------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------


def table(r: dict[str, Any]) -> str:
    src = r["source"]
    what = {"model": "model", "run": "run", "folder": "folder"}[src["kind"]]
    step = f" (step {src['step']})" if src.get("step") is not None else ""
    counts = f"{r['samples']} samples vs {r['reference']['used']} reference images"
    kid, ms = r["kid"], r["msssim"]
    lines = [
        f"{what} {src['path']}{step} against {r['reference']['path']}",
        f"  FID              {r['fid']:10.2f}   ({counts})",
        f"  KID x 1000       {kid['mean'] * 1e3:10.3f}   +- {kid['std'] * 1e3:.3f} "
        f"({kid['subsets']} subsets of {kid['subset_size']})",
        f"  precision        {r['precision']:10.3f}   (k = {r['k']}; samples that look real)",
        f"  recall           {r['recall']:10.3f}   (real images the samples cover; "
        "low = mode collapse)",
        f"  MS-SSIM samples  {ms['samples']:10.3f}   real images {ms['real']:.3f} "
        f"({ms['pairs']} random pairs each; higher than real = less varied)",
    ]
    if "ndb" in r:
        b = r["ndb"]
        lines += [
            f"  NDB / K          {b['ndb_k']:10.3f}   ({b['different']} of {b['bins']} k-means "
            f"bins differ, p < {b['alpha']:g}; {b['samples']} samples vs {b['reals']} "
            "reference images)",
            f"  JS (bins)        {b['js']:10.4f}   (samples fill {b['covered']} of the "
            f"{b['bins']} bins; few = mode collapse)",
        ]
    return "\n".join(lines)
