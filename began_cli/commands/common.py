"""Options every model command shares, declared once (with their env vars)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

ModelOpt = Annotated[Optional[Path], typer.Option(
    "--model", "-m", envvar="BEGAN_MODEL", metavar="DIR", show_default=False,
    help="Model bundle from `began export` \\[default: the embedded model].")]
DeviceOpt = Annotated[str, typer.Option(
    "--device", envvar="BEGAN_DEVICE", metavar="auto|cuda|cpu",
    help="onnxruntime provider; -v says on stderr which one runs.")]
PrecisionOpt = Annotated[str, typer.Option(
    "--precision", metavar="auto|fp32|fp16", help="auto: fp16 graphs on CUDA, fp32 on the CPU.")]
JsonOpt = Annotated[bool, typer.Option(
    "--json", help="One JSON object per output on stdout.")]
QuietOpt = Annotated[bool, typer.Option(
    "--quiet", "-q", help="Only errors on stderr (also before the verb).")]
# Replacing is the rule now; the flag stays (hidden) so that older scripts still run.
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", hidden=True,
                                            help="Replace existing files (the default).")]
NoClobberOpt = Annotated[bool, typer.Option(
    "--no-clobber", help="Refuse (exit 1) instead of replacing an existing output file.")]
SkipOpt = Annotated[bool, typer.Option(
    "--skip-existing", help="Keep existing files and write only the missing ones.")]
WeightsOpt = Annotated[str, typer.Option(
    "--weights", metavar="auto|ema|raw",
    help="Runs: G's weights: ema (their moving average, kept when trained with --ema-decay), "
         "raw, or auto (ema when kept); the output (manifest, --json) records which.")]
BatchOpt = Annotated[Optional[int], typer.Option(
    "--batch-size", min=1, max=1 << 16, metavar="N", show_default=False,
    help="Images per onnxruntime call \\[default: 1024 on CUDA, 64 on the CPU].")]


def open_model(model, device: str, precision: str, out, graphs: tuple[str, ...] | None = None):
    """Load and verify the bundle (only `graphs`, opened now, when named: see Model.open);
    with -v, say which provider runs (on stderr)."""
    from began import voice
    from began.model import Model

    m = Model.open(model, device=device, precision=precision, graphs=graphs)
    if voice.verbose():
        p = m.provider
        out.say(f"provider: {p.name}" + (f" ({p.reason})" if p.kind == "cpu" else ""))
    return m


# One onnxruntime call holds at most this many float32 pixel values per image tensor.
MAX_BATCH_VALUES = 1 << 28


def batch_size(value, model) -> int:
    """--batch-size, or the provider's default; never so large that one call's images
    (batch x 3 x R x R floats) pass 1 GiB."""
    bs = value or (1024 if model.provider.kind == "cuda" else 64)
    return max(1, min(bs, MAX_BATCH_VALUES // (3 * model.resolution ** 2)))
