"""The bundle contract's "how": a manifest written (`manifest_head`, `file_entry`,
`write_manifest`) and a bundle read and checked (`load_bundle`, `peek_manifest`),
by the rules of spec.py. Torch-free."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from began.reading import Unreadable, open_bounded, read_bounded, read_capped, sha256_file

from .spec import (FORMAT, FORMAT_VERSION, GRAPHS, MANIFEST, MAX_FILE_BYTES, MAX_MANIFEST_BYTES,
                   REEXPORT, BundleError, _is_int, _no_constant, _show, graph_file,
                   manifest_problem)


# ---- writing ---------------------------------------------------------------------------

def manifest_head(model: dict[str, Any], began_version: str, opset: int) -> dict[str, Any]:
    """The fields every manifest starts with; export adds training, encoder, files."""
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "began_version": began_version,
        "created": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "model": model,
        "image": {"channels": 3, "layout": "NCHW", "color": "RGB", "value_range": [-1.0, 1.0],
                  "to_pixels": "uint8 = clip(round((x + 1) * 127.5), 0, 255)",
                  "from_pixels": "x = uint8 / 127.5 - 1"},
        "z": {"dim": model["z_dim"], "distribution": "uniform", "range": [-1.0, 1.0]},
        "opset": opset,
        "graphs": {g: {"inputs": list(s.inputs), "outputs": list(s.outputs)}
                   for g, s in GRAPHS.items()},
    }


def file_entry(path: Path, graph: str, precision: str, **extra: Any) -> dict[str, Any]:
    """The manifest's `files` entry of one graph file (extra: e.g. its parity figure)."""
    spec = GRAPHS[graph]
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size, "graph": graph,
            "precision": precision, "inputs": list(spec.inputs),
            "outputs": list(spec.outputs), **extra}


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Check, then atomically replace root/manifest.json (never through a link). A
    manifest that would not load again is a bug of the writer: ValueError. (The
    manifest holds no sha256 of itself, so rewriting it keeps the bundle loadable.)"""
    from began.files import write_text

    problem = manifest_problem(manifest)
    if problem:
        raise ValueError(f"refusing to write a manifest that would not load: {problem}")
    write_text(root / MANIFEST, json.dumps(manifest, indent=2) + "\n")


# ---- reading ---------------------------------------------------------------------------

def peek_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of what looks like a began bundle (a regular manifest.json, not a link,
    within the size bound, saying it is one), unchecked; None for anything else. For
    "may this folder be replaced / is this file a bundle's own", not for loading."""
    try:
        data = json.loads(read_capped(folder / MANIFEST, MAX_MANIFEST_BYTES, follow=False))
    except (Unreadable, OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


def open_regular(root: Path, name: str, max_bytes: int) -> tuple[int, int]:
    """(fd, size) of root/name, opened for reading only if it is a regular file that
    stays inside `root` (symlinks resolved) and is at most `max_bytes` long. Never
    blocks and never opens a device. Raises BundleError."""
    path = root / name
    try:
        real = path.resolve(strict=True)
        inside = real.is_relative_to(root.resolve(strict=True))
    except FileNotFoundError:
        raise BundleError(f"{name}, needed in {root}, is missing", REEXPORT) from None
    except (OSError, RuntimeError) as e:  # a symlink loop, a permission
        raise BundleError(f"{path} cannot be opened ({getattr(e, 'strerror', None) or e})",
                          REEXPORT) from None
    if not inside:
        raise BundleError(f"{path} is a link to a file outside the model folder ({real})",
                          "a bundle's files must be inside it: copy the file in, or re-export")
    try:
        return open_bounded(real, max_bytes, what="a began model file")
    except Unreadable as e:
        if str(e) == "is missing":
            raise BundleError(f"{name}, needed in {root}, is missing", REEXPORT) from None
        raise BundleError(f"{path} {e}", REEXPORT) from None


@dataclass(frozen=True)
class Bundle:
    root: Path
    manifest: dict[str, Any]

    @property
    def resolution(self) -> int:
        return int(self.manifest["model"]["resolution"])

    @property
    def z_dim(self) -> int:
        return int(self.manifest["model"]["z_dim"])

    @property
    def h_dim(self) -> int:
        return int(self.manifest["model"]["h_dim"])

    @property
    def gamma(self) -> float:
        g = self.manifest.get("training", {}).get("gamma")
        if g is None:
            raise BundleError(f"{self.root / MANIFEST} has no training.gamma", REEXPORT)
        return float(g)

    def has(self, graph: str, precision: str = "fp32") -> bool:
        return graph_file(graph, precision) in self.manifest["files"]

    def path(self, graph: str, precision: str = "fp32") -> Path:
        name = graph_file(graph, precision)
        if name not in self.manifest["files"]:
            raise BundleError(f"the model in {self.root} has no {name}", REEXPORT)
        return self.root / name

    def read_graph(self, graph: str, precision: str = "fp32") -> bytes:
        """The graph file's bytes, verified against the manifest again at this moment, so
        onnxruntime runs exactly what was checked (not a file swapped in since)."""
        name = self.path(graph, precision).name
        info = self.manifest["files"][name]
        fd, size = open_regular(self.root, name, MAX_FILE_BYTES)
        if size != info["bytes"]:
            os.close(fd)
            raise _changed(self.root, name, f"{size:,} bytes, the manifest says {info['bytes']:,}")
        try:
            data = read_bounded(fd, size)
        except (OSError, Unreadable) as e:
            raise BundleError(f"{self.root / name} cannot be read ({e})", REEXPORT) from None
        if hashlib.sha256(data).hexdigest() != info["sha256"]:
            raise _changed(self.root, name, "sha256 differs")
        return data


def _changed(root: Path, name: str, why: str) -> BundleError:
    return BundleError(f"{root / name} does not match its manifest ({why}): the model was "
                       "modified or damaged", REEXPORT)


def load_bundle(root: str | Path, verify: bool = True) -> Bundle:
    """Read MODEL_DIR/manifest.json, validate it, and check every file it lists."""
    root = Path(root)
    hint = "pass --model with a folder written by `began export`"
    try:
        st = os.stat(root)
    except FileNotFoundError:
        raise BundleError(f"model folder {root} does not exist", hint) from None
    except OSError as e:
        raise BundleError(f"model folder {root} cannot be opened ({e.strerror})", hint) from None
    if not stat.S_ISDIR(st.st_mode):
        raise BundleError(f"{root} is a file, not a model folder", hint)
    if not os.path.lexists(root / MANIFEST):
        raise BundleError(f"{root} is not a began model (no {MANIFEST})", hint)
    fd, size = open_regular(root, MANIFEST, MAX_MANIFEST_BYTES)
    try:
        manifest = json.loads(read_bounded(fd, size).decode("utf-8"),
                              parse_constant=_no_constant)
    except (OSError, Unreadable, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise BundleError(f"{root / MANIFEST} is unreadable ({str(e)[:200]})", REEXPORT) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{root / MANIFEST} is not a began model manifest", hint)
    version = manifest.get("format_version")
    if not _is_int(version) or version < 1:
        raise BundleError(f"{root / MANIFEST} has a bad format_version ({_show(version)})",
                          REEXPORT)
    if version > FORMAT_VERSION:
        raise BundleError(f"{root} is a began model of format {version}; this began reads "
                          f"up to {FORMAT_VERSION}", "upgrade began (pip install -U began)")
    problem = manifest_problem(manifest)
    if problem:
        raise BundleError(f"{root / MANIFEST}: {problem}", REEXPORT)
    bundle = Bundle(root=root, manifest=manifest)
    for name, info in manifest["files"].items():
        fd, size = open_regular(root, name, MAX_FILE_BYTES)
        try:
            if size != info["bytes"]:  # before hashing: a huge file is refused at once
                raise _changed(root, name, f"{size:,} bytes, the manifest says "
                                           f"{info['bytes']:,}")
            if verify:
                h = hashlib.sha256()
                with os.fdopen(fd, "rb", closefd=False) as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                if h.hexdigest() != info["sha256"]:
                    raise _changed(root, name, "sha256 differs")
        except OSError as e:
            raise BundleError(f"{root / name} cannot be read ({e.strerror})", REEXPORT) from None
        finally:
            os.close(fd)
    return bundle
