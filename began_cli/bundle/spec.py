"""The bundle contract's "what": graph names with their inputs and outputs, the manifest's
fields with their types and bounds, the format version. folder.py writes and reads
bundles by it; see __init__.py for the whole contract. Torch-free."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from began.errors import BeganError

FORMAT = "began-model"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CARD = "MODEL_CARD.md"
PRECISIONS = ("fp32", "fp16")
REEXPORT = "re-export it with `began export RUN_DIR --out MODEL_DIR`"


@dataclass(frozen=True)
class Graph:
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    fp16: bool  # a GPU export also writes <name>.fp16.onnx
    about: str


# Every graph a bundle may hold. Only the generator is required.
GRAPHS = {
    "generator": Graph(("z",), ("image",), True, "z (B, N_z) -> image (B, 3, R, R)"),
    "encoder": Graph(("image",), ("z",), True, "image -> z: inverts the generator"),
    "autoencoder": Graph(("image",), ("recon", "h"), True,
                         "image -> (D(image), h): L(x) and M_global for `score`"),
    "decoder": Graph(("h",), ("image",), True, "h (B, N_h) -> image: D's decoder, "
                                               "for `--space d`"),
    "invert_grad": Graph(("z", "target"), ("loss", "grad"), False,
                         "(z, target) -> (per-image L1 loss, d loss / d z): refinement"),
}


def tensor_shape(name: str, resolution: int, z_dim: int, h_dim: int) -> list[int]:
    """A graph tensor's shape after the batch axis, from the manifest's model fields."""
    image = [3, resolution, resolution]
    return {"z": [z_dim], "grad": [z_dim], "h": [h_dim], "loss": [], "image": image,
            "recon": image, "target": image}[name]


def graph_file(graph: str, precision: str = "fp32") -> str:
    return f"{graph}.onnx" if precision == "fp32" else f"{graph}.{precision}.onnx"


# What a bundle may declare. Far above any real BEGAN (paper128 graphs are tens of MB),
# far below what would exhaust a machine.
MAX_MANIFEST_BYTES = 1 << 20
MAX_FILE_BYTES = 1 << 30
MAX_TOTAL_BYTES = 4 << 30
MAX_FILES = 32
MAX_RESOLUTION = 1024
MAX_DIM = 4096  # N_z, N_h
MAX_FILTERS = 1024  # n
MAX_REPEAT = 8
_SHA256 = re.compile(r"[0-9a-f]{64}")


class BundleError(BeganError):
    """A model folder that cannot be used."""



def _safe_name(name: str) -> bool:
    return (bool(name) and len(name) <= 255 and "/" not in name and "\\" not in name
            and "\x00" not in name and name not in (".", ".."))


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v))


def _show(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _int_in(lo: int, hi: int | None = None) -> tuple[Any, str]:
    if hi is None:
        return (lambda v: _is_int(v) and v >= lo), "a whole number"
    return (lambda v: _is_int(v) and lo <= v <= hi), f"an integer in {lo}..{hi}"


def _num_in(lo: float, hi: float, why: str = "") -> tuple[Any, str]:
    return (lambda v: _is_num(v) and lo <= v <= hi), f"a number in [{lo:g}, {hi:g}]{why}"


_OBJECT = (lambda v: isinstance(v, dict)), "an object"
_NUMBER = _is_num, "a number"
_STRING = (lambda v: isinstance(v, str)), "a string"
_L1 = _num_in(0, 2, " (an L1 error on the [-1, 1] scale)")  # invert's warning divides by p99

# The manifest fields the CLI reads, in the order they are checked: (dotted path, when it
# is checked, (test, what it must be)). "required": always; "present": when the key is
# there; "set": when it is there and not null. A field not listed is free-form (newer
# exports add some). An absent object counts as empty.
FIELDS: list[tuple[str, str, tuple[Any, str]]] = [
    ("model", "required", _OBJECT),
    ("model.resolution", "required", ((lambda r: _is_int(r) and 16 <= r <= MAX_RESOLUTION
                                       and not r & (r - 1)),
                                      f"a power of two in 16..{MAX_RESOLUTION}")),
    ("model.z_dim", "required", _int_in(1, MAX_DIM)),
    ("model.h_dim", "required", _int_in(1, MAX_DIM)),
    ("model.n", "required", _int_in(1, MAX_FILTERS)),
    ("model.repeat", "present", _int_in(1, MAX_REPEAT)),
    ("model.skip", "present", ((lambda v: isinstance(v, bool)), "true or false")),
    ("model.grey", "present", ((lambda v: isinstance(v, bool)), "true or false")),
    ("image", "present", _OBJECT),
    ("image.channels", "present", ((lambda v: v == 3 and _is_int(v)), "3 (RGB)")),
    ("training", "present", _OBJECT),
    ("training.gamma", "present", _num_in(0, 1)),
    *((f"training.{k}", "set", _int_in(0)) for k in ("step", "steps_planned")),
    *((f"training.{k}", "set", _NUMBER)
      for k in ("k", "m_global", "lambda_k", "loss_real", "loss_fake")),
    ("training.data", "present", _OBJECT),
    *((f"training.data.{k}", "present", _STRING)
      for k in ("crop", "background", "resample", "folder")),
    ("encoder", "present", _OBJECT),
    ("encoder.kind", "present", _STRING),
    ("encoder.metrics", "present", _OBJECT),
    *((f"encoder.metrics.{k}", "set", _NUMBER) for k in ("z_l1", "psnr_real", "psnr_fake")),
    ("inversion_reference", "present", ((lambda v: isinstance(v, dict)
                                         and isinstance(v.get("l1"), dict)),
                                        "an object with an l1 object")),
    *((f"inversion_reference.l1.{k}", "set", _L1) for k in ("p50", "p90", "p99", "max")),
]


def _field(m: dict[str, Any], path: str) -> tuple[bool, Any]:
    """(present, value) of a dotted path; under a missing or non-object parent: absent."""
    *parents, key = path.split(".")
    for p in parents:
        m = m.get(p) if isinstance(m, dict) else None
    return (isinstance(m, dict) and key in m), (m.get(key) if isinstance(m, dict) else None)


def manifest_problem(m: dict[str, Any]) -> str | None:
    """The first thing wrong with a manifest's fields, or None (see FIELDS)."""
    for path, when, (test, must) in FIELDS:
        present, v = _field(m, path)
        checked = when == "required" or present and (when == "present" or v is not None)
        if checked and not test(v):
            if must == "an object":
                return f"{path} must be an object"
            return f"{path} must be {must}, not {_show(v)}"
    if (p := _preprocess_problem(m)):
        return p
    return _files_problem(m.get("files"), m.get("graphs"))


def manifest_preprocess(m: dict[str, Any]) -> Any:
    """How the model's training decoded its images (decode.Preprocess), so that images
    the CLI reads are decoded the same way. Raises ValueError, as training's checks do."""
    from began.decode import Preprocess

    data = m.get("training", {}).get("data", {})
    return Preprocess(resolution=m["model"]["resolution"], crop=data.get("crop", "center"),
                      background=data.get("background", "white"),
                      resample=data.get("resample", "lanczos"),
                      grey=bool(m["model"].get("grey", False)))


def _preprocess_problem(m: dict[str, Any]) -> str | None:
    try:
        manifest_preprocess(m)
    except ValueError as e:
        return f"training.data: {str(e)[:200]}"
    return None


def _files_problem(files: Any, graphs: Any) -> str | None:
    if not isinstance(files, dict) or "generator.onnx" not in files:
        return "lists no generator.onnx"
    if len(files) > MAX_FILES:
        return f"lists {len(files)} files; a began model has at most {MAX_FILES}"
    if not isinstance(graphs, dict):
        return "graphs must be an object"
    total = 0
    for name, info in files.items():
        if not _safe_name(name):
            return f"names a file outside the folder: {_show(name)}"
        if not isinstance(info, dict):
            return f"files[{name!r}] must be an object"
        if not isinstance(info.get("sha256"), str) or not _SHA256.fullmatch(info["sha256"]):
            return f"files[{name!r}].sha256 must be 64 hex digits, not {_show(info.get('sha256'))}"
        if not (_is_int(info.get("bytes")) and 0 <= info["bytes"] <= MAX_FILE_BYTES):
            return (f"files[{name!r}].bytes must be an integer in 0..{MAX_FILE_BYTES}, not "
                    f"{_show(info.get('bytes'))}")
        total += info["bytes"]
        if info.get("precision", "fp32") not in PRECISIONS:
            return f"files[{name!r}].precision must be fp32 or fp16, not {_show(info['precision'])}"
        graph = name.split(".")[0]
        if graph in GRAPHS and name in (graph_file(graph, p) for p in PRECISIONS):
            io = graphs.get(graph)
            if not (isinstance(io, dict) and _names(io.get("inputs"))
                    and _names(io.get("outputs"))):
                return f"graphs.{graph} must list its inputs and outputs by name"
    if total > MAX_TOTAL_BYTES:
        return f"declares {total:,} bytes of files; a began model has at most {MAX_TOTAL_BYTES:,}"
    return None


def _names(v: Any) -> bool:
    return isinstance(v, list) and 0 < len(v) <= 8 and all(
        isinstance(s, str) and 0 < len(s) <= 100 for s in v)
