"""Training checkpoints: one safetensors file per step, verified on load.

A checkpoint `ckpt-00012000.safetensors` holds every tensor of the training
state (both nets, both Adam states, RNG states, the data order) and, in the
safetensors metadata, a JSON document with the rest (step, config, k_t's
controller, lr schedule, ...) and a sha256 over both. Nothing is pickled, so
loading a file never runs code.

Writes are atomic: a temp file in the same folder, fsync, rename, fsync the
folder. A file that fails to parse or whose checksum differs is never loaded:
the loader warns, moves it aside (`.corrupt`) and falls back to the previous one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from began.files import atomic_path, remove_stale_temps

FORMAT = "began-train-state"
VERSION = "1"
_NAME = re.compile(r"^ckpt-(\d{8,})\.safetensors$")
BEST_NAME = "ckpt-best.safetensors"  # quality tracking's best (quality.py); never pruned


class CheckpointError(Exception):
    """A checkpoint file that must not be used (unreadable, truncated, tampered)."""


def checkpoint_name(step: int) -> str:
    return f"ckpt-{step:08d}.safetensors"


def _digest(state_json: str, tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256(state_json.encode())
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"\0{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(ckpt_dir: Path, step: int, tensors: dict[str, torch.Tensor],
                    state: dict[str, Any], name: str | None = None) -> Path:
    """Write atomically (as `name`, default ckpt-<step>); returns the final path."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    state_json = json.dumps({**state, "step": step}, sort_keys=True)
    meta = {"format": FORMAT, "version": VERSION, "state": state_json,
            "sha256": _digest(state_json, tensors)}
    final = ckpt_dir / (name or checkpoint_name(step))
    with atomic_path(final) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=meta)
        except SafetensorError as e:  # its I/O errors (a full disk) are not OSErrors
            raise io_error(e) from None
    fsync_dir(ckpt_dir)
    return final


def io_error(e: Exception) -> OSError:
    """safetensors' "IoError(Os { code: 28, ..., message: \"No space left on device\" })"
    as the OSError it stands for, so callers handle one kind of write failure."""
    text = str(e)
    code = re.search(r"code: (\d+)", text)
    message = re.search(r'message: "([^"]*)"', text)
    return OSError(int(code.group(1)) if code else errno.EIO,
                   message.group(1) if message else text[:200])


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify one checkpoint; raises CheckpointError on any defect."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path.name}: unreadable ({e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path.name}: not a began training checkpoint")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path.name}: checkpoint format version {meta.get('version')!r}, "
                              f"this began reads {VERSION!r}")
    state_json = meta.get("state", "")
    if _digest(state_json, tensors) != meta.get("sha256"):
        raise CheckpointError(f"{path.name}: checksum mismatch (corrupt or modified)")
    return tensors, json.loads(state_json)


def read_config(path: Path) -> dict[str, Any] | None:
    """The training config recorded in a checkpoint's metadata, without reading or
    verifying its tensors (None when the file does not parse): cheap enough to check
    flags against before anything is written."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
        config = json.loads(meta.get("state", "")).get("config")
    except (SafetensorError, OSError, ValueError, RuntimeError, AttributeError):
        return None
    return config if isinstance(config, dict) and meta.get("format") == FORMAT else None


def list_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint-named file, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def load_latest(ckpt_dir: Path, warn: Callable[[str], None], step: int | None = None,
                ) -> tuple[Path, dict[str, torch.Tensor], dict[str, Any]] | None:
    """The newest checkpoint that verifies (or exactly `step`); None when there is none.

    A file that fails its checks is renamed to `<name>.corrupt` (kept for
    inspection, never loaded again) and the next older one is tried.
    """
    for s, path in reversed(list_checkpoints(ckpt_dir)):
        if step is not None and s != step:
            continue
        try:
            tensors, state = load_checkpoint(path)
        except CheckpointError as e:
            aside = path.with_name(path.name + ".corrupt")
            os.replace(path, aside)
            warn(f"skipping checkpoint {e}; moved to {aside.name}")
            continue
        return path, tensors, state
    return None


def prune(ckpt_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` checkpoints (and stray temp files)."""
    removed = []
    for _, path in list_checkpoints(ckpt_dir)[:-keep]:
        path.unlink(missing_ok=True)
        removed.append(path)
    remove_stale_temps(ckpt_dir)  # left by a process killed mid-write (and proven ours)
    return removed


# --- optimiser state <-> flat tensors + JSON -----------------------------------

def optimizer_to_flat(opt: torch.optim.Optimizer, prefix: str
                      ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for name, val in st.items():
            if isinstance(val, torch.Tensor):  # a copy: Adam updates its state in place
                tensors[f"{prefix}.{idx}.{name}"] = val.detach().clone()
            else:
                scalars[f"{idx}.{name}"] = val
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()}
              for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_flat(opt: torch.optim.Optimizer, prefix: str,
                        tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    head = prefix + "."
    for key, val in tensors.items():
        if key.startswith(head):
            idx, name = key[len(head):].split(".", 1)
            state.setdefault(int(idx), {})[name] = val
    for key, val in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = val
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()}
              for g in meta["param_groups"]]
    opt.load_state_dict({"state": state, "param_groups": groups})
