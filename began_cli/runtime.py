"""onnxruntime sessions with an explicit provider policy.

onnxruntime silently builds a CPU session when the CUDA provider cannot load
(no driver, missing CUDA or cuDNN libraries), after printing a wall of errors.
Here the decision is made first and said plainly:

- `cpu`: the CPU provider.
- `cuda[:N]`: the CUDA provider, or exit 1 naming what is missing.
- `auto`: CUDA when it really works, else the CPU, with the reason on stderr.

A session is checked after creation (`get_providers()`), never assumed.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .errors import BeganError, UsageError

CUDA_HINT = ("install the cuda extra (the CUDA and cuDNN libraries onnxruntime-gpu needs): "
             "pip install 'began[cuda]' ('.[cuda]' from a checkout), or use --device cpu")


@dataclass(frozen=True)
class Provider:
    kind: str  # "cuda" or "cpu"
    device_id: int = 0
    reason: str = ""  # why this provider (shown by `info` and on stderr with --device auto)
    missing: tuple[str, ...] = field(default=())  # CUDA libraries that did not load
    auto: bool = False  # chosen by --device auto: may fall back to the CPU

    @property
    def name(self) -> str:
        return "CUDAExecutionProvider" if self.kind == "cuda" else "CPUExecutionProvider"

    def options(self) -> list:
        if self.kind == "cuda":
            return [("CUDAExecutionProvider", {"device_id": self.device_id}),
                    "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]


def _ort():
    import onnxruntime as ort

    ort.set_default_logger_severity(4)  # we report provider problems ourselves, once
    return ort


def _loads(name: str) -> bool:
    try:
        ctypes.CDLL(name)
        return True
    except OSError:
        return False


def _cuda_libraries(cuda_major: int) -> list[str]:
    if sys.platform == "win32":
        return [f"cudart64_{cuda_major}.dll", f"cublasLt64_{cuda_major}.dll",
                f"cublas64_{cuda_major}.dll", "cudnn64_9.dll"]
    return [f"libcudart.so.{cuda_major}", f"libcublasLt.so.{cuda_major}",
            f"libcublas.so.{cuda_major}", f"libcufft.so.{cuda_major - 1}", "libcurand.so.10",
            "libcudnn.so.9"]


@lru_cache(maxsize=1)
def cuda_status() -> tuple[bool, str, tuple[str, ...]]:
    """(usable, reason, missing libraries) for onnxruntime's CUDA provider."""
    ort = _ort()
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False, f"this onnxruntime ({ort.__version__}) has no CUDA provider", ()
    if not _loads("nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"):
        return False, "no NVIDIA driver (libcuda) on this machine", ()
    try:
        from onnxruntime.capi.build_and_package_info import cuda_version
        major = int(str(cuda_version).split(".")[0])
    except (ImportError, ValueError):
        major = 12
    if hasattr(ort, "preload_dlls"):  # CUDA/cuDNN from pip's nvidia-* packages, if present
        with contextlib.redirect_stdout(io.StringIO()):  # it prints its warnings
            try:
                ort.preload_dlls()
            except Exception:  # noqa: BLE001 - a failed preload shows up as missing libraries
                pass
    missing = tuple(lib for lib in _cuda_libraries(major) if not _loads(lib))
    if missing:
        return False, f"CUDA {major} libraries missing: {', '.join(missing)}", missing
    return True, "CUDA provider available", ()


def resolve(device: str) -> Provider:
    """Pick the provider for --device auto|cpu|cuda[:N]."""
    device = device.strip().lower()
    if device == "cpu":
        return Provider("cpu", reason="--device cpu")
    if device == "auto" or device == "cuda" or device.startswith("cuda:"):
        device_id = 0
        if device.startswith("cuda:"):
            try:
                device_id = int(device[5:])
            except ValueError:
                raise UsageError(f"bad device {device!r}",
                                 "use auto, cpu, cuda or cuda:N") from None
        ok, reason, missing = cuda_status()
        if ok:
            return Provider("cuda", device_id, reason, auto=device == "auto")
        if device == "auto":
            return Provider("cpu", reason=f"CUDA not used: {reason}", missing=missing, auto=True)
        raise BeganError(f"--device {device}, but onnxruntime cannot use CUDA here: {reason}",
                         CUDA_HINT)
    raise UsageError(f"bad device {device!r}", "use auto, cpu, cuda or cuda:N")


def session(path: Path, provider: Provider, data: bytes | None = None):
    """An InferenceSession on `provider`, verified to really run there. With `data`,
    the graph comes from those bytes (already verified) and `path` only names it."""
    ort = _ort()
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    # Idle onnxruntime threads must not spin: `sample --outdir` encodes and writes in
    # other threads while the next batch runs, and spinning would starve them.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        s = ort.InferenceSession(str(path) if data is None else data, opts,
                                 providers=provider.options())
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise BeganError(f"onnxruntime cannot load {path.name}: {str(e).splitlines()[0][:200]}",
                         "the file passed its checksum, so this onnxruntime may be too old "
                         "for it: pip install -U onnxruntime-gpu") from None
    if s.get_providers()[0] != provider.name:
        raise BeganError(f"onnxruntime put {path.name} on {s.get_providers()[0]}, not "
                         f"{provider.name}", CUDA_HINT)
    return s
