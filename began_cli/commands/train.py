"""`began train DATA_DIR --out RUN_DIR`: fit a BEGAN (needs the `train` extra).

Every field of the training and model configs is a flag, generated from the
dataclasses so the help text lives in one place (their `opt(...)` fields).
A flag left out keeps the preset's value; `--dry-run` prints the result.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import BeganError, UsageError
from ..output import stdout_text

TORCH_HINT = ("install the train extra: pip install 'began[train]' ('.[train]' from a checkout); "
              "for a GPU, first a CUDA build of torch from https://pytorch.org")


def _config_fields() -> list[tuple[str, dataclasses.Field, str]]:
    from began.models.config import ModelConfig
    from began.train.config import TrainConfig

    out = [(f.name, f, "Model") for f in dataclasses.fields(ModelConfig)]
    out += [(f.name, f, "Training") for f in dataclasses.fields(TrainConfig)
            if f.name not in ("model", "data_dir")]
    return out


def auto_preset(device: str) -> str:
    """No --preset: the paper's 64x64 setting where a GPU trains, else the small networks'
    recipe (about an hour on one CPU core; paper64 would take weeks there)."""
    if device.startswith("cuda"):
        return "paper64"
    if device == "auto":
        try:
            import torch
        except ImportError:
            return "small32"
        return "paper64" if torch.cuda.is_available() else "small32"
    return "small32"


def _run(data_dir: Path, out: Path, preset: str, device: str, dry_run: bool,
         progress: Optional[bool], threads: Optional[int], overrides: dict[str, Any]) -> None:
    from began.train.config import fit_intervals, preset as load_preset

    chosen = auto_preset(device) if preset == "auto" else None
    preset = chosen or preset
    try:
        cfg = load_preset(preset).replace(data_dir=str(data_dir), **overrides)
        cfg = fit_intervals(cfg, given=overrides)
    except ValueError as e:
        raise UsageError(str(e), "see `began train --help` for each flag's range") from None
    if dry_run:
        stdout_text(json.dumps(cfg.to_dict(), indent=2) + "\n", "; or drop --dry-run")
        return
    try:
        import torch  # noqa: F401
    except ImportError:
        raise BeganError("training needs PyTorch, which is not installed", TORCH_HINT) from None
    from began.train.loop import Interrupted, train as fit
    if chosen:
        print(f"preset: {chosen} (none given)" + ("; --preset paper64 for the paper's 64x64 "
              "setting (weeks on a CPU)" if chosen == "small32" else ""), file=sys.stderr)

    try:
        result = fit(cfg, out, device=device, progress=progress, threads=threads)
    except Interrupted as e:
        where = f"; resume point {e.checkpoint}" if e.checkpoint else "; no checkpoint yet"
        raise BeganError(f"interrupted at step {e.step}{where}",
                         "rerun the same command to resume", e.exit_code) from None
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 speaks for the run
        return
    m = "" if result.m_global is None else f", M_global {result.m_global:.4f}"
    print(f"done: step {result.step}, k_t {result.k:.4f}{m}; run in {result.run_dir}",
          file=sys.stderr)


def train(**kwargs: Any) -> None:
    """Train a BEGAN on a folder of images; rerun the same command to resume."""
    base = {k: kwargs.pop(k) for k in ("data_dir", "out", "preset", "device", "dry_run",
                                         "progress", "threads")}
    overrides = {k: v for k, v in kwargs.items() if v is not None}
    _run(overrides=overrides, **base)


def _signature() -> inspect.Signature:
    from began.train.config import flag_name

    P = inspect.Parameter
    params = [
        P("data_dir", P.POSITIONAL_OR_KEYWORD, annotation=Path, default=typer.Argument(
            ..., metavar="DATA_DIR", help="Folder of images (searched recursively).")),
        P("out", P.KEYWORD_ONLY, annotation=Path, default=typer.Option(
            ..., "--out", "-o", metavar="RUN_DIR",
            help="Run folder: created, or resumed when it holds a run.")),
        P("preset", P.KEYWORD_ONLY, annotation=str, default=typer.Option(
            "auto", metavar="NAME",
            help="Starting point: smoke (CPU, seconds), small32 (the small networks at 32x32: "
                 "about an hour on one CPU core), paper64, paper128; auto: paper64 where "
                 "PyTorch sees a GPU, else small32.")),
        P("device", P.KEYWORD_ONLY, annotation=str, default=typer.Option(
            "auto", envvar="BEGAN_DEVICE", metavar="auto|cpu|cuda[:N]",
            help="Where to train; auto picks CUDA when PyTorch sees a GPU.")),
        P("dry_run", P.KEYWORD_ONLY, annotation=bool, default=typer.Option(
            False, "--dry-run", help="Print the resolved config as JSON and exit.")),
        P("progress", P.KEYWORD_ONLY, annotation=Optional[bool], default=typer.Option(
            None, "--progress/--no-progress", show_default=False,
            help="Progress bar (default: only on a terminal).")),
        P("threads", P.KEYWORD_ONLY, annotation=Optional[int], default=typer.Option(
            None, "--threads", metavar="N", min=0, show_default=False,
            help="CPU threads for torch; 0 = torch's default (one per core). Default: "
                 "$BEGAN_THREADS, else $OMP_NUM_THREADS, else half the cores, at most 4.")),
    ]
    for name, f, panel in _config_fields():
        flag = flag_name(name)
        typ = f.type if isinstance(f.type, type) else {"int": int, "float": float, "str": str,
                                                       "bool": bool}[f.type]
        decl = f"{flag}/--no-{flag[2:]}" if typ is bool else flag
        default = f.default
        help_ = f"{f.metadata.get('help', '')} (default: {default})"
        params.append(P(name, P.KEYWORD_ONLY, annotation=Optional[typ], default=typer.Option(
            None, decl, help=help_, show_default=False, rich_help_panel=panel)))
    return inspect.Signature(params)


train.__signature__ = _signature()
