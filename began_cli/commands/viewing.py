"""--scale and --resample: enlarge image outputs for viewing (sample, invert, interpolate)."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import UsageError
from ..images import RESAMPLE

ScaleOpt = Annotated[int, typer.Option(
    "--scale", min=1, max=64, metavar="N",
    help="Enlarge image outputs N times for viewing (npy outputs stay as the model made them).")]
ResampleOpt = Annotated[str, typer.Option(
    "--resample", metavar="nearest|lanczos",
    help="How --scale enlarges: nearest keeps the pixels as blocks, lanczos smooths them.")]


def check_resample(resample: str) -> str:
    if resample not in RESAMPLE:
        raise UsageError(f"unknown --resample {resample!r}", "use nearest or lanczos")
    return resample

