"""`began export RUN_DIR --out MODEL_DIR`: a training run -> an ONNX model bundle."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import BeganError, StdoutError
from ..output import json_text, stdout_text
from .common import WeightsOpt
from .train import TORCH_HINT


def export(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="A `began train` run folder."),
    out: Path = typer.Option(..., "--out", "-o", metavar="MODEL_DIR",
                             help="Bundle folder to write (written whole, or not at all)."),
    step: Optional[str] = typer.Option(None, metavar="N|best",
                                       help="Checkpoint step to export, or best (the one "
                                            "quality tracking kept) \\[default: the newest]."),
    encoder: str = typer.Option("fit", metavar="fit|d",
                                help="Inversion encoder: fit a copy of D's encoder with G frozen "
                                     "(best measured, BEGAN-CS runs included), or D's own (only "
                                     "meaningful for runs trained with --cs-alpha)."),
    fit_steps: int = typer.Option(2000, min=1, metavar="N",
                                  help="Most steps of the encoder fit; it stops earlier when "
                                       "its validation loss stops improving."),
    fit_time: Optional[float] = typer.Option(
        None, min=0, metavar="SECONDS", show_default=False,
        help="Time budget of the encoder fit \\[default: a tenth of the run's training time, "
             "3-40 s] (0: none; the fit then ends only by early stopping or --fit-steps)."),
    data: Optional[Path] = typer.Option(None, metavar="DIR",
                                        help="Training images for the encoder fit and its "
                                             "held-out PSNR \\[default: the run's data folder]."),
    device: str = typer.Option("auto", envvar="BEGAN_DEVICE", metavar="auto|cpu|cuda[:N]",
                               help="Where to fit the encoder."),
    fp16: Optional[bool] = typer.Option(None, "--fp16/--no-fp16", show_default=False,
                                        help="Also write half-precision graphs for the GPU "
                                             "\\[default: only when exporting on CUDA]."),
    weights: WeightsOpt = "auto",
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing MODEL_DIR."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors on stderr."),
) -> None:
    """Export a training run to a bundle of ONNX graphs the torch-free CLI can use."""
    try:
        import onnx  # noqa: F401
        import torch  # noqa: F401
    except ImportError as e:
        raise BeganError(f"export needs PyTorch and onnx ({e.name} is not installed)",
                         TORCH_HINT) from None
    if as_json and sys.stdout is None:  # refuse before minutes of work, not after them
        raise StdoutError("stdout is closed, and --json writes the manifest there",
                          "give the command a stdout (> manifest.json), or drop --json")
    from began.export.bundle import export_run
    from began.train.runs import parse_step

    def log(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr)

    manifest = export_run(run_dir, out, step=parse_step(step), encoder=encoder,
                          fit_steps=fit_steps,
                          device=device, data_dir=None if data is None else str(data),
                          fp16=fp16, overwrite=overwrite, weights=weights,
                          fit_seconds=fit_time, progress=False if quiet else None, log=log)
    size = sum(f["bytes"] for f in manifest["files"].values())
    log(f"wrote {out}: {len(manifest['files'])} graphs, {size / 1e6:.1f} MB, "
        f"step {manifest['training']['step']}")
    if as_json:
        stdout_text(json_text(manifest) + "\n")
