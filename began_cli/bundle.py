"""A model bundle: the folder `began export` writes and the CLI reads.

    MODEL_DIR/
      manifest.json            what the model is, and a sha256 for every file below
      generator.onnx           z (B, N_z) -> image (B, 3, R, R)
      encoder.onnx             image -> z: inverts the generator
      autoencoder.onnx         image -> (D(image), h): L(x) and M_global for `score`
      decoder.onnx             h (B, N_h) -> image: D's decoder, for `--space d`
      invert_grad.onnx         (z, target) -> (per-image L1 loss, d loss / d z): refinement
      *.fp16.onnx              half-precision variants for the GPU (fp16 in and out)

Images are NCHW RGB floats in [-1, 1]; pixels = clip(round((x + 1) * 127.5), 0, 255).

Loading verifies every file against the manifest before onnxruntime sees it, so
a tampered or damaged bundle is refused with one clear error. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BeganError

FORMAT = "began-model"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
GRAPHS = ("generator", "encoder", "autoencoder", "decoder", "invert_grad")
REEXPORT = "re-export it with `began export RUN_DIR --out MODEL_DIR`"


class BundleError(BeganError):
    """A model folder that cannot be used."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def graph_file(graph: str, precision: str = "fp32") -> str:
    return f"{graph}.onnx" if precision == "fp32" else f"{graph}.{precision}.onnx"


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

    def has(self, graph: str, precision: str = "fp32") -> bool:
        return graph_file(graph, precision) in self.manifest["files"]

    def path(self, graph: str, precision: str = "fp32") -> Path:
        name = graph_file(graph, precision)
        if name not in self.manifest["files"]:
            raise BundleError(f"the model in {self.root} has no {name}", REEXPORT)
        return self.root / name


def _safe_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


def load_bundle(root: str | Path, verify: bool = True) -> Bundle:
    """Read MODEL_DIR/manifest.json and check every file it lists (sha256)."""
    root = Path(root)
    hint = "pass --model with a folder written by `began export`"
    if not root.exists():
        raise BundleError(f"model folder {root} does not exist", hint)
    if not root.is_dir():
        raise BundleError(f"{root} is a file, not a model folder", hint)
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{root} is not a began model (no {MANIFEST})", hint) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{root / MANIFEST} is unreadable ({e})", REEXPORT) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{root / MANIFEST} is not a began model manifest", hint)
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BundleError(f"{root} is a began model of format {version!r}; this began reads "
                          f"up to {FORMAT_VERSION}", "upgrade began (pip install -U began)")
    files = manifest.get("files")
    if not isinstance(files, dict) or "generator.onnx" not in files:
        raise BundleError(f"{root / MANIFEST} lists no generator.onnx", REEXPORT)
    for name, info in files.items():
        if not _safe_name(name):
            raise BundleError(f"{root / MANIFEST} names a file outside the folder: {name!r}",
                              REEXPORT)
        path = root / name
        if not path.is_file():
            raise BundleError(f"{name}, listed in {root / MANIFEST}, is missing", REEXPORT)
        if verify and sha256_file(path) != info.get("sha256"):
            raise BundleError(f"{path} does not match its manifest (sha256 differs): the model "
                              "was modified or damaged", REEXPORT)
    return Bundle(root=root, manifest=manifest)
