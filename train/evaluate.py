"""`began eval`: samples of a model, a run or a folder -> Inception figures against real images.

    source (bundle | run checkpoint | image folder) -> n samples, (n, R, R, 3) uint8
    reference folder -> decoded exactly as training decodes it (train/data.py, the
                        model's crop/background/resample/resolution), a fixed subset
    both -> pool3 features (reference ones cached) -> FID, KID, precision/recall
    both -> mean pairwise MS-SSIM (diversity)
    both -> NDB: k-means bins of the reference pixels, samples tested bin by bin
            (train/coverage.py; seconds, no network)

The figures, with the counts behind them, go into one JSON-able dict; `table`
renders it for people, `write_card` adds it to a bundle's manifest and card.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from began.decode import Preprocess
from began.errors import BeganError, UsageError
from began.files import write_text
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
    import torch

    device = device.strip().lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BeganError(f"--device {device}, but PyTorch sees no CUDA GPU",
                         "use --device cpu (or auto), or install a CUDA build of torch")
    if device != "cpu" and not device.startswith("cuda"):
        raise UsageError(f"bad device {device!r}", "use auto, cpu, cuda or cuda:N")
    return device


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

    from began.export.runs import load_run

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
    cfg = snap.cfg
    pre = Preprocess(resolution=cfg.model.resolution, crop=cfg.crop, background=cfg.background,
                     resample=cfg.resample)
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
            batch_size=batch_size, advance=advance, about={"root": str(ref_dir)})
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


CARD = "MODEL_CARD.md"
CARD_BEGIN = "<!-- began eval: begin -->"
CARD_END = "<!-- began eval: end -->"


def fid_line(r: dict[str, Any]) -> str:
    """The headline, with both counts in it: FID falls as they grow."""
    ref = r["reference"]
    return (f"FID ({r['samples']:,} samples vs {ref['used']:,} images of "
            f"`{Path(ref['path']).name}`): {r['fid']:.1f}")


def card_section(r: dict[str, Any]) -> str:
    kid, ms = r["kid"], r["msssim"]
    ref = r["reference"]
    rows = [
        ("FID", f"{r['fid']:.2f}"),
        ("KID x 1000 (mean +- std)", f"{kid['mean'] * 1e3:.3f} +- {kid['std'] * 1e3:.3f}"),
        (f"precision (k = {r['k']})", f"{r['precision']:.3f}"),
        (f"recall (k = {r['k']})", f"{r['recall']:.3f}"),
        ("MS-SSIM among samples / among real images", f"{ms['samples']:.3f} / {ms['real']:.3f}"),
    ]
    if "ndb" in r:
        b = r["ndb"]
        rows += [(f"NDB / K (K = {b['bins']} k-means bins of the reference pixels)",
                  f"{b['ndb_k']:.3f} ({b['different']} bins differ)"),
                 ("JS divergence of the bin histograms (bits)", f"{b['js']:.4f}"),
                 ("bins the samples fill", f"{b['covered']} of {b['bins']}")]
    body = "\n".join(f"| {a} | {b} |" for a, b in rows)
    return (f"{CARD_BEGIN}\n## Evaluation (`began eval`)\n\n"
            f"{r['samples']} samples (seeds from {r.get('seed', 0)}) against {ref['used']} of the "
            f"{ref['images']} images in `{Path(ref['path']).name}`, decoded as in training; "
            f"TF-Inception pool3 features; KID over {kid['subsets']} subsets of "
            f"{kid['subset_size']}; MS-SSIM over {ms['pairs']} random pairs.\n\n"
            f"{fid_line(r)}\n\n"
            f"| figure | value |\n|---|---|\n{body}\n{CARD_END}\n")


MAX_CARD_BYTES = 4 << 20  # a model card is a page of text
COPY_HINT = ("copy the bundle to a folder of your own first (cp -r {src} my-model) and pass "
             "--model my-model --write-card")


def _package_dir() -> Path:
    import began

    return Path(began.__file__).resolve().parent


def check_card_target(root: Path | None) -> Path:
    """The bundle --write-card may write into, checked before any work: one the user
    named, not inside the installed package (the embedded model included), whose
    manifest.json and MODEL_CARD.md are not links (a link's target, maybe a private
    file outside the bundle, would be copied into a new card)."""
    from began.bundle import MANIFEST
    from began.files import relation
    from began.model import DEFAULT_MODEL

    if root is None:
        raise UsageError("--write-card needs a model folder you name: without --model it "
                         "would write into the embedded model of the installed package",
                         COPY_HINT.format(src=DEFAULT_MODEL))
    for inside in (DEFAULT_MODEL, _package_dir()):
        if relation(root, inside) in ("is", "is inside"):
            raise UsageError(f"--write-card will not write into {root}: it is inside the "
                             f"installed began package ({os.path.realpath(root)})",
                             COPY_HINT.format(src=root))
    for name in (MANIFEST, CARD):
        path = root / name
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue  # a missing card is fine; a missing manifest is the loader's error
        except OSError as e:
            raise BeganError(f"cannot read {path} ({e.strerror})",
                             "check the model folder's permissions") from None
        if stat.S_ISLNK(mode):
            raise BeganError(f"{path} is a symbolic link, and --write-card never writes "
                             "through one", f"replace it with a copy of the file itself (cp "
                             f"--remove-destination {os.path.realpath(path)} {path}), or drop "
                             "--write-card")
        if not stat.S_ISREG(mode):
            raise BeganError(f"{path} is not a regular file, and --write-card only replaces "
                             "regular files", "move it out of the bundle, or drop --write-card")
    return root


def _read_card(card: Path) -> str | None:
    """The card's text, read without following a link, bounded; None when there is none."""
    from began.files import CLOEXEC, NOFOLLOW, NONBLOCK

    try:
        fd = os.open(card, os.O_RDONLY | NOFOLLOW | NONBLOCK | CLOEXEC)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_CARD_BYTES:
            raise BeganError(f"{card} is not a model card (a regular file of at most "
                             f"{MAX_CARD_BYTES >> 20} MiB)",
                             "move it out of the bundle, or drop --write-card")
        data = f.read(MAX_CARD_BYTES + 1)
    try:
        return data[:MAX_CARD_BYTES].decode("utf-8")
    except UnicodeDecodeError:
        raise BeganError(f"{card} is not UTF-8 text", "fix or remove the card, or drop "
                         "--write-card") from None


def write_card(bundle_root: Path, r: dict[str, Any]) -> list[Path]:
    """Put the figures into manifest.json (an "eval" key) and MODEL_CARD.md, if present.

    The manifest lists a sha256 for every other file but none for itself, so
    rewriting it keeps the bundle loadable; the graphs are not touched. Both are
    replaced atomically and never through a link (check_card_target, again here).
    """
    from began.bundle import MANIFEST, load_bundle

    check_card_target(bundle_root)
    b = load_bundle(bundle_root)  # refuse to annotate a damaged bundle
    manifest = dict(b.manifest)
    manifest["eval"] = {k: v for k, v in r.items() if k != "seconds"}
    card = bundle_root / CARD
    written = [bundle_root / MANIFEST]
    try:
        text = _read_card(card)
        write_text(written[0], json.dumps(manifest, indent=2) + "\n")
        if text is not None:
            section = card_section(r)
            pattern = re.compile(re.escape(CARD_BEGIN) + r".*?" + re.escape(CARD_END)
                                 + r"\n?", re.S)
            if pattern.search(text):
                text = pattern.sub(lambda _: section, text)
            else:
                text = text.rstrip("\n") + "\n\n" + section
            write_text(card, text)
            written.append(card)
    except OSError as e:
        raise BeganError(f"cannot write the figures into {bundle_root} ({e.strerror or e})",
                         "make the model folder writable (or copy it somewhere writable), "
                         "or drop --write-card") from None
    load_bundle(bundle_root)  # and prove it still loads
    return written
