"""The Python API: what the CLI does, for notebooks and scripts. Torch-free.

    import began
    m = began.load()                          # the embedded model; or began.load("models/mine")
    imgs = m.sample(range(16))                # (16, R, R, 3) uint8: seed 7 is the CLI's seed 7
    inv = m.invert(["a.png", "b.png"], refine=100)
    inv.z, inv.recon, inv.l1, inv.psnr, inv.outside
    frames = m.interpolate(["a.png", "b.png"], steps=8)     # or seeds: m.interpolate([3, 17])
    m.score("my-images/", n=1000)["m_global"]

Images go in as file paths, uint8 arrays (H, W, 3) or (N, H, W, 3) at the model's
resolution, or float32 arrays (N, 3, R, R) in [-1, 1]; they come out as uint8
(N, R, R, 3) unless `as_float=True` asks for the model's float32 NCHW output.
The CLI's commands call the functions below, so both give the same numbers.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from . import latent
from .errors import BeganError, UsageError
from .images import to_uint8
from .inputs import collect, preprocess_for, read, to_float
from .seeds import MAX_COUNT, MAX_SEED, parse_seeds, z_for_seeds

ImagesLike = Union[str, Path, np.ndarray, Sequence[Union[str, Path, np.ndarray]]]


# --------------------------------------------------------------------------- shared with the CLI


def inversion_figures(model, x: np.ndarray, recon: np.ndarray) -> dict[str, np.ndarray]:
    """Per image: L1 error and PSNR of clip(G(z)) against x, and that error over the model's
    figure on its own samples (`ratio`; `outside` when it is above latent.OUTSIDE_RATIO)."""
    l1 = latent.l1_error(recon, x)
    ratio = latent.outside_ratio(l1, latent.reference_for(model))
    return {"l1": l1, "psnr": latent.psnr(recon, x), "ratio": ratio,
            "outside": ratio > latent.OUTSIDE_RATIO}


def walk(model, steps: int, method: str = "slerp", space: str = "g",
         x: np.ndarray | None = None, z: np.ndarray | None = None, refine: int = 0,
         batch_size: int = 64) -> np.ndarray:
    """Frames (float NCHW) through the points: images `x` or latents `z`, `steps` per segment.
    Space g inverts images through the encoder (and `refine` Adam steps); space d walks
    D's auto-encoder latent h."""
    if method not in ("slerp", "lerp"):
        raise UsageError(f"unknown method {method!r}", "use slerp or lerp")
    if space not in ("g", "d"):
        raise UsageError(f"unknown space {space!r}", "use g (generator) or d (auto-encoder)")
    if space == "g":
        if z is None:
            z, _ = latent.invert(model, x, refine, batch_size=batch_size)
        return model.generate(np.clip(latent.path(z, steps, method), -1, 1),
                              batch_size=batch_size)
    if x is None:
        x = model.generate(z, batch_size=batch_size)
    _, h = model.autoencode(x, batch_size=batch_size)
    return model.decode(latent.path(h, steps, method), batch_size=batch_size)


def mean_pairwise_distance(v: np.ndarray, limit: int = 512) -> float:
    """Mean Euclidean distance over all pairs of the first `limit` rows (flattened)."""
    v = v[:limit].reshape(min(len(v), limit), -1).astype(np.float64)
    if len(v) < 2:
        return float("nan")
    gram = v @ v.T
    sq = np.diag(gram)
    d2 = sq[:, None] + sq[None, :] - 2 * gram
    # Rounding leaves ~1e-16 of the norms where rows are equal: that is a distance of 0.
    d2[d2 <= 1e-12 * (sq[:, None] + sq[None, :])] = 0.0
    iu = np.triu_indices(len(v), 1)
    return float(np.sqrt(d2[iu]).mean())


def recon_l1(x: np.ndarray, recon: np.ndarray) -> np.ndarray:
    return np.abs(recon - x).reshape(len(x), -1).mean(1)


def score_figures(model, x: np.ndarray, n: int, batch_size: int = 64) -> dict[str, Any]:
    """BEGAN's numbers for real images x and samples for seeds 0..n-1. L(x) and L(G(z)) are
    the training losses (D sees G's raw output in training too); the pixel diversity is
    that of the images users see, so samples are clipped to [-1, 1] first."""
    recon_x, h_x = model.autoencode(x, batch_size=batch_size)
    fake = model.generate(z_for_seeds(list(range(n)), model.z_dim), batch_size=batch_size)
    recon_f, h_f = model.autoencode(fake, batch_size=batch_size)
    gamma = model.bundle.gamma
    loss_real = float(recon_l1(x, recon_x).mean())
    loss_fake = float(recon_l1(fake, recon_f).mean())
    balance = gamma * loss_real - loss_fake
    div = {space: {"samples": mean_pairwise_distance(a), "real": mean_pairwise_distance(b)}
           for space, a, b in (("pixels", np.clip(fake, -1, 1), x), ("latent_h", h_f, h_x))}
    for d in div.values():  # strict JSON: no NaN; a ratio that does not exist is null
        d["ratio"] = d["samples"] / d["real"] if d["real"] > 0 else None
        if d["ratio"] is None:
            d["note"] = "the real images are all identical: no ratio"
    return {"real_images": len(x), "samples": n, "gamma": gamma, "loss_real": loss_real,
            "loss_fake": loss_fake, "balance": balance, "m_global": loss_real + abs(balance),
            "diversity": div}


# --------------------------------------------------------------------------- the API's words

# Code shared with the CLI words its errors for the command line; through the API they
# name this API's parameters instead (`--device cpu` -> `device='cpu'`).
_MODEL_FLAG = re.compile(r"pass --model( DIR)?")
_VALUE_FLAG = re.compile(r"(?<![\w-])--(seeds|device|precision) ('[^']*'|\S*[^\s,;.)])")
_PLAIN_FLAG = re.compile(r"(?<![\w-])(--(steps|refine|method|space|truncation|max-images)|-n)"
                         r"(?![\w-])")


def _api_words(text: str | None) -> str | None:
    if not text:
        return text
    text = _MODEL_FLAG.sub("call began.load(path)", text)
    text = _VALUE_FLAG.sub(lambda m: f"{m[1]}="
                           + (m[2] if m[2].startswith("'") else repr(m[2])), text)
    return _PLAIN_FLAG.sub(lambda m: m[1].lstrip("-").replace("-", "_") + "=", text)


def _speaks_api(fn):
    """Errors raised inside `fn` name the API's parameters, not the CLI's flags."""
    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BeganError as e:
            e.message, e.hint = _api_words(e.message), _api_words(e.hint)
            e.args = (e.message,)
            raise
    return call


# --------------------------------------------------------------------------- the API


@dataclass(frozen=True)
class Inversion:
    """One row per image. `target` is the input as the model saw it (decoded, cropped and
    resized as in training); `recon` is G(z) as it would be saved."""
    names: list[str]
    z: np.ndarray  # (N, N_z) float32
    target: np.ndarray  # (N, R, R, 3) uint8
    recon: np.ndarray  # (N, R, R, 3) uint8
    l1: np.ndarray  # mean |clip(G(z), -1, 1) - x| on the [-1, 1] scale
    psnr: np.ndarray  # dB
    ratio: np.ndarray  # l1 over the model's 99th percentile on its own samples
    outside: np.ndarray  # bool: probably not an image the model can draw

    def __len__(self) -> int:
        return len(self.z)


# The CLI's bounds (its Typer options), checked before any work: a call that would
# never return or fill memory is a clear error instead.
MAX_FRAMES = 10_000  # interpolate's steps per segment
MAX_REFINE = 100_000  # Adam steps of invert / interpolate
MAX_SCORE = 50_000  # score's n and max_images


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _in_range(name: str, value: Any, low: int, high: int, example: int) -> None:
    if not _is_int(value) or not low <= value <= high:
        raise UsageError(f"{name}= must be a whole number in {low}..{high:,}, got {value!r}",
                         f"e.g. {name}={example}")


def _seed_list(seeds: int | str | Iterable[int]) -> list[int]:
    if isinstance(seeds, str):
        return parse_seeds(seeds)
    if _is_int(seeds):
        out = [int(seeds)]
    elif not hasattr(seeds, "__iter__"):  # True, 3.7, None
        raise UsageError(f"bad seed {seeds!r}: seeds are whole numbers",
                         "e.g. 7, range(16) or '0-7,42'")
    else:
        if hasattr(seeds, "__len__") and len(seeds) > MAX_COUNT:  # type: ignore[arg-type]
            raise UsageError(f"{len(seeds):,} seeds is more than {MAX_COUNT:,}",  # type: ignore
                             "draw them in parts, e.g. range(0, 1_000_000)")
        out = []
        for s in seeds:
            if not _is_int(s):
                raise UsageError(f"bad seed {s!r}: seeds are whole numbers",
                                 "e.g. range(16) or '0-7,42'")
            out.append(int(s))
            if len(out) > MAX_COUNT:
                raise UsageError(f"more than {MAX_COUNT:,} seeds", "draw them in parts")
    bad = [s for s in out if not 0 <= s <= MAX_SEED]
    if bad or not out:
        raise UsageError(f"bad seed {bad[0]}" if bad else "no seeds",
                         f"seeds are 0..{MAX_SEED}, e.g. range(16) or '0-7,42'")
    return out


class Model:
    """A model bundle on onnxruntime; see the module docstring."""

    def __init__(self, runtime):
        self.runtime = runtime  # began.model.Model: the bundle and its sessions
        self.batch_size = 1024 if runtime.provider.kind == "cuda" else 64

    @classmethod
    @_speaks_api
    def open(cls, path: str | Path | None = None, device: str = "auto",
             precision: str = "auto") -> "Model":
        """`path`: a folder from `began export`; None: $BEGAN_MODEL, else the embedded model."""
        from .model import Model as Runtime

        return cls(Runtime.open(path, device=device, precision=precision))

    def __repr__(self) -> str:
        return (f"began.api.Model({str(self.runtime.bundle.root)!r}, {self.resolution}x"
                f"{self.resolution}, z_dim={self.z_dim}, provider={self.provider!r})")

    @property
    def resolution(self) -> int:
        return self.runtime.resolution

    @property
    def z_dim(self) -> int:
        return self.runtime.z_dim

    @property
    def provider(self) -> str:
        return self.runtime.provider.name

    @property
    def manifest(self) -> dict[str, Any]:
        return self.runtime.bundle.manifest

    @_speaks_api
    def z(self, seeds: int | str | Iterable[int], truncation: float = 1.0) -> np.ndarray:
        """The CLI's z for each seed: (N, N_z) float32, uniform in [-1, 1] times truncation."""
        if not (isinstance(truncation, (int, float)) and 0.0 <= truncation <= 1.0):
            raise UsageError(f"truncation= must be in [0, 1], got {truncation}",
                             "e.g. truncation=0.7: less variety, more typical images")
        return z_for_seeds(_seed_list(seeds), self.z_dim, truncation)

    @_speaks_api
    def generate(self, z: np.ndarray, as_float: bool = False) -> np.ndarray:
        z = np.asarray(z, np.float32)
        if z.ndim not in (1, 2) or z.shape[-1] != self.z_dim or not z.size:
            raise UsageError(f"z must be (N, {self.z_dim}) or ({self.z_dim},), got {z.shape}",
                             "e.g. m.z(range(8)) makes a z for each seed")
        if not np.isfinite(z).all():
            raise UsageError("z holds NaN or infinite values", "z is uniform in [-1, 1]")
        out = self.runtime.generate(z.reshape(-1, self.z_dim), batch_size=self.batch_size)
        return out if as_float else to_uint8(out)

    @_speaks_api
    def sample(self, seeds: int | str | Iterable[int], truncation: float = 1.0,
               as_float: bool = False) -> np.ndarray:
        """Images for seeds (an int, '0-7,42', or any iterable of ints): (N, R, R, 3) uint8,
        or the float32 (N, 3, R, R) output with as_float=True."""
        return self.generate(self.z(seeds, truncation), as_float=as_float)

    @_speaks_api
    def load_images(self, images: ImagesLike) -> tuple[list[str], np.ndarray]:
        """(names, float32 (N, 3, R, R) in [-1, 1]) from paths, folders or arrays; files are
        decoded exactly as the training images were."""
        r = self.resolution
        if isinstance(images, np.ndarray) and images.dtype != np.uint8:
            x = np.asarray(images, np.float32)
            if x.ndim == 3:
                x = x[None]
            if x.shape[1:] != (3, r, r):
                raise UsageError(f"float images must be (N, 3, {r}, {r}), got {images.shape}",
                                 "or pass uint8 (N, H, W, 3) arrays or file paths")
            if not np.isfinite(x).all():
                raise UsageError("float images hold NaN or infinite values",
                                 "images are in [-1, 1]")
            return [f"image{i}" for i in range(len(x))], x
        if isinstance(images, (str, Path, np.ndarray)):
            images = [images]
        names, pixels, pre = [], [], preprocess_for(self.runtime.bundle)
        for item in images:
            if isinstance(item, np.ndarray):
                a = item[None] if item.ndim == 3 else item
                if a.dtype != np.uint8 or a.shape[1:] != (r, r, 3):
                    raise UsageError(f"uint8 images must be (H, W, 3) = ({r}, {r}, 3), got "
                                     f"{item.dtype} {item.shape}",
                                     "pass file paths to decode and resize them")
                names += [f"image{len(names) + i}" for i in range(len(a))]
                pixels += list(a)
                continue
            for source in collect([str(item)]):
                try:
                    pixels.append(read(source, pre))
                except ValueError as e:
                    raise UsageError(f"{source.name}: {e}", "pass image files") from None
                names.append(source.name)
        if not pixels:
            raise UsageError("no images", "pass image paths, folders or arrays")
        return names, to_float(np.stack(pixels))

    @_speaks_api
    def invert(self, images: ImagesLike, refine: int = 0, lr: float = 0.05) -> Inversion:
        """z for each image through the encoder, then `refine` Adam steps on
        mean |clip(G(z), -1, 1) - x| (the best z seen is kept)."""
        _in_range("refine", refine, 0, MAX_REFINE, 100)
        names, x = self.load_images(images)
        z, recon = latent.invert(self.runtime, x, refine, lr=lr, batch_size=self.batch_size)
        f = inversion_figures(self.runtime, x, recon)
        return Inversion(names, z, to_uint8(x), to_uint8(recon), f["l1"], f["psnr"],
                         f["ratio"], f["outside"])

    @_speaks_api
    def interpolate(self, points: Sequence[Any], steps: int = 8, method: str = "slerp",
                    space: str = "g", refine: int = 0, as_float: bool = False) -> np.ndarray:
        """Frames through two or more points, `steps` per segment (both ends included):
        seeds (ints) or images (paths or arrays, inverted through the encoder)."""
        if isinstance(points, (str, Path, np.ndarray)) or len(points) < 2:
            raise UsageError("interpolation needs at least two points", "e.g. [3, 17]")
        _in_range("steps", steps, 2, MAX_FRAMES, 8)
        _in_range("refine", refine, 0, MAX_REFINE, 100)
        if all(isinstance(p, (int, np.integer)) for p in points):
            x, z = None, self.z(points)
        else:
            x, z = self.load_images(list(points))[1], None
        frames = walk(self.runtime, steps, method, space, x=x, z=z, refine=refine,
                      batch_size=self.batch_size)
        return frames if as_float else to_uint8(frames)

    @_speaks_api
    def score(self, data: ImagesLike, n: int = 1000, max_images: int = 2000) -> dict[str, Any]:
        """`began score`'s figures for real images (a folder, paths or arrays) and n samples;
        from a folder, a fixed random subset of at most max_images is used, as in the CLI."""
        _in_range("n", n, 2, MAX_SCORE, 1000)
        _in_range("max_images", max_images, 2, MAX_SCORE, 2000)
        if isinstance(data, (str, Path)) and Path(data).is_dir():
            data = [s.path for s in subset(collect([str(data)]), max_images)]
        _, x = self.load_images(data)
        if len(x) < 2 or n < 2:
            raise UsageError("score needs at least two real images and n >= 2")
        return score_figures(self.runtime, x, n, self.batch_size)


def subset(sources: list, limit: int) -> list:
    """A fixed random subset of at most `limit` (the CLI's and the API's), in folder order."""
    if len(sources) <= limit:
        return sources
    pick = np.sort(np.random.default_rng(0).choice(len(sources), limit, replace=False))
    return [sources[i] for i in pick]


@_speaks_api
def load(path: str | Path | None = None, device: str = "auto", precision: str = "auto"
         ) -> Model:
    """Open a model bundle (default: $BEGAN_MODEL, else the embedded model)."""
    return Model.open(path, device=device, precision=precision)
