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

A bundle is untrusted input. Loading checks, before anything large is read:
every file is a regular file inside the folder (no FIFO, device, or symlink out),
of the size the manifest declares and under fixed bounds; every manifest field
the CLI uses has the right type and a sane range. Then every file's sha256 is
verified, and graphs are later handed to onnxruntime as the very bytes that
were verified (model.py also checks their declared shapes). Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BeganError

FORMAT = "began-model"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
GRAPHS = ("generator", "encoder", "autoencoder", "decoder", "invert_grad")
PRECISIONS = ("fp32", "fp16")
REEXPORT = "re-export it with `began export RUN_DIR --out MODEL_DIR`"

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


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def graph_file(graph: str, precision: str = "fp32") -> str:
    return f"{graph}.onnx" if precision == "fp32" else f"{graph}.{precision}.onnx"


def open_regular(root: Path, name: str, max_bytes: int) -> tuple[int, int]:
    """(fd, size) of root/name, opened for reading only if it is a regular file that
    stays inside `root` (symlinks resolved) and is at most `max_bytes` long. Never
    blocks (a FIFO is refused before and, against a swap, after opening) and never
    opens a device. Raises BundleError."""
    path = root / name
    try:
        real = path.resolve(strict=True)
        inside = real.is_relative_to(root.resolve(strict=True))
        st = os.stat(real)
    except FileNotFoundError:
        raise BundleError(f"{name}, needed in {root}, is missing", REEXPORT) from None
    except (OSError, RuntimeError) as e:  # a symlink loop, a permission
        raise BundleError(f"{path} cannot be opened ({getattr(e, 'strerror', None) or e})",
                          REEXPORT) from None
    if not inside:
        raise BundleError(f"{path} is a link to a file outside the model folder ({real})",
                          "a bundle's files must be inside it: copy the file in, or re-export")
    _check_regular(path, st, max_bytes)
    try:
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise BundleError(f"{path} cannot be opened ({e.strerror})", REEXPORT) from None
    try:
        st = os.fstat(fd)
        _check_regular(path, st, max_bytes)
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def _check_regular(path: Path, st: os.stat_result, max_bytes: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "not a regular file")
        raise BundleError(f"{path} is {kind}, not a file", REEXPORT)
    if st.st_size > max_bytes:
        raise BundleError(f"{path} is {st.st_size:,} bytes, more than a began model file may "
                          f"be ({max_bytes:,})", REEXPORT)


def read_bounded(fd: int, size: int) -> bytes:
    """Exactly the `size` bytes fstat reported (a file that grows is not read further)."""
    with os.fdopen(fd, "rb", closefd=True) as f:
        data = f.read(size + 1)
    if len(data) != size:
        raise ValueError("the file changed while it was read")
    return data


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
        except (OSError, ValueError) as e:
            raise BundleError(f"{self.root / name} cannot be read ({e})", REEXPORT) from None
        if hashlib.sha256(data).hexdigest() != info["sha256"]:
            raise _changed(self.root, name, "sha256 differs")
        return data


def _changed(root: Path, name: str, why: str) -> BundleError:
    return BundleError(f"{root / name} does not match its manifest ({why}): the model was "
                       "modified or damaged", REEXPORT)


def _safe_name(name: str) -> bool:
    return (bool(name) and len(name) <= 255 and "/" not in name and "\\" not in name
            and "\x00" not in name and name not in (".", ".."))


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
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
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


def _int_in(d: dict, key: str, lo: int, hi: int, where: str) -> str | None:
    v = d.get(key)
    if not _is_int(v) or not lo <= v <= hi:
        return f"{where}.{key} must be an integer in {lo}..{hi}, not {_show(v)}"
    return None


def manifest_problem(m: dict[str, Any]) -> str | None:
    """The first thing wrong with a manifest's fields, or None. Only what the CLI
    reads is checked; unknown extra fields are allowed (newer exports add some)."""
    model = m.get("model")
    if not isinstance(model, dict):
        return "model must be an object"
    r = model.get("resolution")
    if not _is_int(r) or not 16 <= r <= MAX_RESOLUTION or r & (r - 1):
        return (f"model.resolution must be a power of two in 16..{MAX_RESOLUTION}, "
                f"not {_show(r)}")
    for key, hi in (("z_dim", MAX_DIM), ("h_dim", MAX_DIM), ("n", MAX_FILTERS)):
        if (p := _int_in(model, key, 1, hi, "model")):
            return p
    if "repeat" in model and (p := _int_in(model, "repeat", 1, MAX_REPEAT, "model")):
        return p
    if "skip" in model and not isinstance(model["skip"], bool):
        return f"model.skip must be true or false, not {_show(model['skip'])}"
    image = m.get("image", {})
    if not isinstance(image, dict):
        return "image must be an object"
    if image.get("channels", 3) != 3 or isinstance(image.get("channels"), bool):
        return f"image.channels must be 3 (RGB), not {_show(image.get('channels'))}"
    if (p := _training_problem(m.get("training", {}), r)):
        return p
    if (p := _encoder_problem(m.get("encoder", {}))):
        return p
    if "inversion_reference" in m and (p := _reference_problem(m["inversion_reference"])):
        return p
    return _files_problem(m.get("files"), m.get("graphs"))


def _training_problem(t: Any, resolution: int) -> str | None:
    if not isinstance(t, dict):
        return "training must be an object"
    if "gamma" in t and not (_is_num(t["gamma"]) and 0 <= t["gamma"] <= 1):
        return f"training.gamma must be a number in [0, 1], not {_show(t['gamma'])}"
    for key in ("step", "steps_planned"):
        if t.get(key) is not None and not (_is_int(t[key]) and t[key] >= 0):
            return f"training.{key} must be a whole number, not {_show(t[key])}"
    for key in ("k", "m_global", "lambda_k", "loss_real", "loss_fake"):
        if t.get(key) is not None and not _is_num(t[key]):
            return f"training.{key} must be a number, not {_show(t[key])}"
    data = t.get("data", {})
    if not isinstance(data, dict):
        return "training.data must be an object"
    for key in ("crop", "background", "resample", "folder"):
        if key in data and not isinstance(data[key], str):
            return f"training.data.{key} must be a string, not {_show(data[key])}"
    from .decode import Preprocess  # the same checks training applies

    try:
        Preprocess(resolution=resolution, crop=data.get("crop", "center"),
                   background=data.get("background", "white"),
                   resample=data.get("resample", "lanczos"))
    except ValueError as e:
        return f"training.data: {str(e)[:200]}"
    return None


def _reference_problem(ref: Any) -> str | None:
    """invert's out-of-domain warning divides by l1.p99: a huge one would silence it."""
    l1 = ref.get("l1") if isinstance(ref, dict) else None
    if not isinstance(l1, dict):
        return "inversion_reference must be an object with an l1 object"
    for key in ("p50", "p90", "p99", "max"):
        v = l1.get(key)
        if v is not None and not (_is_num(v) and 0 <= v <= 2):
            return (f"inversion_reference.l1.{key} must be a number in [0, 2] (an L1 error on "
                    f"the [-1, 1] scale), not {_show(v)}")
    return None


def _encoder_problem(e: Any) -> str | None:
    if not isinstance(e, dict):
        return "encoder must be an object"
    if "kind" in e and not isinstance(e["kind"], str):
        return f"encoder.kind must be a string, not {_show(e['kind'])}"
    metrics = e.get("metrics", {})
    if not isinstance(metrics, dict):
        return "encoder.metrics must be an object"
    for key in ("z_l1", "psnr_real", "psnr_fake"):
        if metrics.get(key) is not None and not _is_num(metrics[key]):
            return f"encoder.metrics.{key} must be a number, not {_show(metrics[key])}"
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
        if (p := _int_in(info, "bytes", 0, MAX_FILE_BYTES, f"files[{name!r}]")):
            return p
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
