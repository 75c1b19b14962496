"""Any folder of images -> one cached uint8 array of training images.

Pipeline, run once per (folder contents, preprocessing):

1. List candidates: every non-hidden regular file under the folder, recursively,
   in sorted order. Nothing is filtered by extension: Pillow decides what is an
   image, and every file it rejects is reported in `ImageSet.skipped` with a
   short reason instead of crashing the load.
2. Key: sha256 over a canonical JSON of the pipeline version, the `Preprocess`
   fields and every candidate's (relative path, size, mtime_ns). Touching,
   adding or removing a file, or changing any preprocessing option, gives a new
   key; nothing is ever hashed by content, so keying a big folder is cheap.
3. Cache hit (`<key>.json` valid and `<key>.u8` the right size): memory-map the
   array read-only; no image is decoded.
4. Miss: decode each file (first frame, EXIF orientation, any mode -> RGB with
   transparency composited onto the background colour, centre crop or pad to a
   square, resize), in worker processes when there are many (train/pool.py),
   streaming each result straight into a temp `.u8` file in file order so memory
   stays flat.
   The `.u8` is then renamed into place and the `.json`, written last, marks
   the cache valid.

The cache is raw bytes plus plain JSON: no pickle anywhere. This module needs
numpy and Pillow only (rich for the progress bar), never torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from began.decode import Preprocess, decode_image
from began.errors import BeganError, sigterm_unwinds
from began.files import atomic_file, remove_stale_temps, write_text
from began.progress import progress as progress_bar
from began.reading import Unreadable, read_capped
from began.stale import cache_dir as _cache_dir

from .pool import decode_files, default_workers

__all__ = [
    "ImageSet",
    "NoImagesError",
    "Preprocess",
    "Skipped",
    "decode_image",
    "default_cache_dir",
    "load_image_folder",
]

# Bump whenever decoding (began/decode.py) or the cache layout changes: old caches then miss.
PIPELINE_VERSION = 1
MAX_META_BYTES = 1 << 28  # a cache entry's file list: ~100 bytes a file, 2.5M files


# ----------------------------------------------------------------------------
# Public types
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Skipped:
    """A file that was looked at and not used."""

    path: str  # relative to the data folder, POSIX separators
    reason: str  # short and human, e.g. "empty file"


@dataclass
class ImageSet:
    """The decoded images of one folder, plus what was skipped and where the cache is."""

    images: np.ndarray  # (N, R, R, 3) uint8, C-contiguous; usually a read-only memmap
    files: list[str]  # relative POSIX paths, same order as `images`
    skipped: list[Skipped]
    key: str  # hex sha256 cache key
    cache_path: Path  # the `<key>.u8` data file
    from_cache: bool  # True when this call decoded nothing
    # Context for report(); private so the public constructor stays as specified.
    _root: str = field(default="", repr=False, compare=False)
    _pre: Preprocess | None = field(default=None, repr=False, compare=False)

    def report(self) -> dict:
        """A JSON-able summary of the set (for logs and run folders)."""
        return {
            "root": self._root,
            "count": int(self.images.shape[0]),
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "n_skipped": len(self.skipped),
            "key": self.key,
            "preprocess": dataclasses.asdict(self._pre) if self._pre else None,
            "resolution": int(self.images.shape[1]),
        }


class NoImagesError(ValueError):
    """The folder has no file that decodes as an image."""


# ----------------------------------------------------------------------------
# Files and cache key
# ----------------------------------------------------------------------------


class _Candidate(NamedTuple):
    rel: str  # relative POSIX path
    path: str  # absolute path to open
    size: int
    mtime_ns: int


def _check_root(root: str | Path) -> Path:
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"image folder not found: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder of images (it is a file): {root}")
    return root.resolve()


def _list_candidates(root: Path, skip_dir: Path | None = None) -> list[_Candidate]:
    """Non-hidden regular files under root, sorted by relative path.

    Symlinked folders are followed, but each real folder is visited once, so a
    link back up the tree cannot loop. `skip_dir` (the cache folder, if it sits
    inside root) is left out, or writing the cache would change the key.
    """
    seen: set[tuple[int, int]] = set()
    skip = os.path.realpath(skip_dir) if skip_dir is not None else None
    out: list[_Candidate] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        is_cache = dirpath != str(root) and os.path.realpath(dirpath) == skip
        if (st.st_dev, st.st_ino) in seen or is_cache:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            try:
                fst = os.stat(path)  # follows file symlinks; broken links drop out
            except OSError:
                continue
            if not os.path.isfile(path):
                continue  # fifos, sockets, devices
            rel = Path(os.path.relpath(path, root)).as_posix()
            out.append(_Candidate(rel, path, fst.st_size, fst.st_mtime_ns))
    out.sort(key=lambda c: c.rel)
    return out


def _cache_key(pre: Preprocess, candidates: Iterable[_Candidate]) -> str:
    payload = {
        "version": PIPELINE_VERSION,
        "preprocess": _key_fields(pre),
        "files": sorted([c.rel, c.size, c.mtime_ns] for c in candidates),
    }
    canon = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canon.encode("ascii")).hexdigest()


def _key_fields(pre: Preprocess) -> dict[str, Any]:
    """The preprocessing in a cache key; `grey` only when on, so colour caches keep the
    keys they had before the option existed (and the feature caches keyed on them)."""
    fields = dataclasses.asdict(pre)
    if not pre.grey:
        del fields["grey"]
    return fields


def default_cache_dir() -> Path:
    """$BEGAN_CACHE_DIR, else $XDG_CACHE_HOME/began/data, else ~/.cache/began/data."""
    return _cache_dir()


# ----------------------------------------------------------------------------
# Cache files
# ----------------------------------------------------------------------------


def _cache_paths(cache_dir: Path, key: str) -> tuple[Path, Path]:
    return cache_dir / f"{key}.u8", cache_dir / f"{key}.json"


def _load_cache(cache_dir: Path, key: str, pre: Preprocess, root: Path) -> ImageSet | None:
    """The cached set for `key`, or None if absent or in any way invalid."""
    data_path, meta_path = _cache_paths(cache_dir, key)
    try:
        meta = json.loads(read_capped(meta_path, MAX_META_BYTES))  # never a /dev/zero link
        r = pre.resolution
        n = int(meta["shape"][0])
        ok = (meta.get("version") == PIPELINE_VERSION and meta.get("key") == key
              and meta.get("dtype") == "uint8"
              and [int(s) for s in meta["shape"]] == [n, r, r, 3] and n >= 1
              and len(meta["files"]) == n
              and data_path.stat().st_size == n * r * r * 3)
        if not ok:
            return None
        files = [str(f) for f in meta["files"]]
        skipped = [Skipped(str(s["path"]), str(s["reason"])) for s in meta["skipped"]]
        images = np.memmap(data_path, dtype=np.uint8, mode="r", shape=(n, r, r, 3))
    except (Unreadable, OSError, ValueError, KeyError, TypeError, IndexError, RecursionError):
        return None  # a bad cache is just a miss; it gets rebuilt
    return ImageSet(images, files, skipped, key, data_path, True, str(root), pre)


def _write_meta(meta_path: Path, meta: dict[str, Any]) -> None:
    write_text(meta_path, json.dumps(meta, indent=1))  # fsync + rename; written last = valid


# ----------------------------------------------------------------------------
# Decoding a folder
# ----------------------------------------------------------------------------


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _no_images_message(root: Path, skipped: list[Skipped]) -> str:
    if not skipped:
        return (f"no images in {root}: the folder has no files "
                f"(hidden files and folders, names starting with '.', are ignored)")
    top = Counter(s.reason for s in skipped).most_common(3)
    why = "; ".join(f"{n}x {reason}" for reason, n in top)
    return (f"no usable images in {root}: all {len(skipped)} file(s) were skipped "
            f"(top reasons: {why}; e.g. {skipped[0].path!r})")


def _build(root: Path, candidates: list[_Candidate], pre: Preprocess, cache_dir: Path,
           key: str, workers: int, progress: bool | None) -> ImageSet:
    """Decode every candidate, streaming into the cache files; return the mapped set."""
    data_path, meta_path = _cache_paths(cache_dir, key)
    r = pre.resolution
    files: list[str] = []
    skipped: list[Skipped] = []
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(cache_dir)
        # closing() shuts the worker pool down even when we leave early
        with (
            sigterm_unwinds(),
            atomic_file(data_path) as out,
            progress_bar(len(candidates), f"decoding {root.name or root}",
                         log=None if progress is False else _say, show=progress) as advance,
            contextlib.closing(decode_files([c.path for c in candidates], pre,
                                            workers)) as results,
        ):
            for cand, (img, reason) in zip(candidates, results):
                if img is None:
                    skipped.append(Skipped(cand.rel, reason))
                else:
                    if img.shape != (r, r, 3) or img.dtype != np.uint8:
                        raise RuntimeError(f"decoder returned {img.shape} {img.dtype} "
                                           f"for {cand.rel}")
                    out.write(np.ascontiguousarray(img).data)  # stream: nothing piles up
                    files.append(cand.rel)
                advance()
            if not files:  # leaving by exception discards the temp file: no cache
                raise NoImagesError(_no_images_message(root, skipped))
        _write_meta(meta_path, {
            "version": PIPELINE_VERSION,
            "key": key,
            "shape": [len(files), r, r, 3],
            "dtype": "uint8",
            "files": files,
            "skipped": [dataclasses.asdict(s) for s in skipped],
            "preprocess": dataclasses.asdict(pre),
            "root": str(root),
        })
    except OSError as e:  # the cache folder, not an image (those are skips)
        raise BeganError(f"cannot write the image cache in {cache_dir} "
                         f"({e.strerror or e})",
                         "free some space there, or set BEGAN_CACHE_DIR to a writable folder "
                         "with room for the decoded images") from None
    images = np.memmap(data_path, dtype=np.uint8, mode="r", shape=(len(files), r, r, 3))
    return ImageSet(images, files, skipped, key, data_path, False, str(root), pre)


def load_image_folder(root: str | Path, pre: Preprocess, cache_dir: str | Path | None = None,
                      workers: int | None = None, progress: bool | None = None) -> ImageSet:
    """All usable images under `root`, preprocessed, from the cache when possible.

    `workers` defaults to min(cpu count, 8); results are identical for any value.
    `progress`: None shows a bar on stderr if it is a terminal, plain lines with an ETA
    otherwise; False shows nothing.
    Raises FileNotFoundError / NotADirectoryError for a bad `root`, and
    NoImagesError when no file decodes.
    """
    root = _check_root(root)
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    candidates = _list_candidates(root, skip_dir=cache)
    key = _cache_key(pre, candidates)
    cached = _load_cache(cache, key, pre, root)
    if cached is not None:
        return cached
    if not candidates:
        raise NoImagesError(_no_images_message(root, []))
    return _build(root, candidates, pre, cache, key, workers or default_workers(), progress)
