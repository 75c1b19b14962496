"""`began export`: a training run -> a self-contained model bundle (the contract: began/bundle).

    began export runs/emoji64 --out models/emoji64            # newest checkpoint
    began export runs/emoji64 --step 50000 --out models/e50k

The bundle is built in a temp folder beside --out and renamed into place only
when every graph has passed onnx.checker and matched PyTorch on onnxruntime,
so a failed or interrupted export never leaves a half-written bundle; what may
be replaced, and the lock, are in destination.py.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from began import __version__
from began.bundle import GRAPHS, file_entry, graph_file, manifest_head, write_manifest
from began.errors import BeganError, UsageError, sigterm_unwinds
from began.latent import inversion_reference
from began.models.device import resolve_device
from began.progress import progress as progress_bar
from began.train.runs import RunSnapshot, load_run, run_images, training_seconds

from .destination import Destination
from .encoder_fit import fit_encoder, held_out_split, init_from_d, inversion_metrics, to_float
from .graphs import (FP32_TOLERANCE, OPSET, EncoderToZ, export_graph, graph_modules,
                     metadata_props, parity)

FIT_SECONDS = 40.0  # the encoder fit's longest default budget (early stopping often ends it)
FIT_MIN_SECONDS = 3.0
FIT_SHARE = 0.1  # by default the fit gets this share of the run's training time


def fit_budget(snap: RunSnapshot) -> float:
    """The fit's default time budget, sized to the model and data through what training
    them took: a tenth of it, between 3 and 40 s (a smoke run's fit no longer takes longer
    than its training; a long run's is capped)."""
    trained = training_seconds(snap.run_dir, snap.step)
    if trained is None:
        return FIT_SECONDS
    return round(min(FIT_SECONDS, max(FIT_MIN_SECONDS, FIT_SHARE * trained)), 1)


def _bundle_bytes(snap: RunSnapshot, fp16: bool) -> int:
    """About what the bundle will take on disk: G twice (generator, invert_grad), D
    (autoencoder, encoder, decoder ~ D once more), fp32, plus the fp16 copies."""
    n = sum(p.numel() for p in snap.G.parameters()) * 2 + \
        sum(p.numel() for p in snap.D.parameters()) * 2
    return int(n * 4 * (1.5 if fp16 else 1.0)) + (4 << 20)


def _real_images(snap: RunSnapshot, data_dir: str | None, log: Callable[[str], None],
                 progress: bool | None = None
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(uint8 images for the encoder fit, float held-out images), or Nones without data."""
    cfg = snap.cfg
    try:
        images = run_images(cfg, data_dir, progress=progress)
    except (OSError, ValueError) as e:
        log(f"warning: no training images for the encoder ({e}); fitting on generated "
            "images only and not measuring PSNR on real ones (pass --data DIR)")
        return None, None
    fit_idx, held_idx = held_out_split(len(images), seed=cfg.seed)
    fit = torch.from_numpy(np.array(images[fit_idx])) if len(fit_idx) else None
    held = to_float(torch.from_numpy(np.array(images[held_idx]))) if len(held_idx) else None
    return fit, held


def _manifest_core(snap: RunSnapshot, encoder_info: dict[str, Any]) -> dict[str, Any]:
    cfg, stats, data = snap.cfg, snap.stats or {}, snap.data or {}
    return {
        **manifest_head(cfg.model.to_dict(), __version__, OPSET),
        "training": {
            "run": snap.run_dir.name, "step": snap.step, "steps_planned": cfg.steps,
            "gamma": cfg.gamma, "lambda_k": cfg.lambda_k, "k": snap.k,
            "m_global": stats.get("m_global"), "loss_real": stats.get("loss_real"),
            "loss_fake": stats.get("loss_fake"), "stats_step": stats.get("step"),
            "lr_g": stats.get("lr_g"), "lr_d": stats.get("lr_d"), "cs_alpha": cfg.cs_alpha,
            "batch_size": cfg.batch_size, "seed": cfg.seed,
            "weights": snap.weights, "ema_decay": cfg.ema_decay,
            "data": {"folder": Path(cfg.data_dir).name, "images": data.get("count"),
                     "skipped": data.get("n_skipped"), "resolution": cfg.model.resolution,
                     "crop": cfg.crop, "background": cfg.background, "resample": cfg.resample},
        },
        "encoder": encoder_info,
    }


def export_run(run_dir: str | Path, out: str | Path, step: int | str | None = None,
               encoder: str = "fit", fit_steps: int = 2000, device: str = "auto",
               data_dir: str | None = None, fp16: bool | None = None, overwrite: bool = False,
               weights: str = "auto", fit_seconds: float | None = None,
               progress: bool | None = None,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write the bundle for `run_dir` at `out`; returns its manifest.

    fp16: None writes the half-precision graphs only when exporting on CUDA (the
    machine a GPU bundle is most likely for); True/False force it. fit_seconds: the
    fit's time budget (0: none, so only early stopping and fit_steps end it; None:
    `fit_budget`, a tenth of the run's training time between 3 and 40 s)."""
    if encoder not in ("fit", "d"):
        raise UsageError(f"unknown encoder {encoder!r}", "use fit or d")
    if encoder == "fit" and fit_steps < 1:
        raise UsageError("--fit-steps must be >= 1 for a fitted encoder")
    snap = load_run(run_dir, step, weights)
    cfg = snap.cfg
    kind = encoder
    if kind == "d" and cfg.model.h_dim != cfg.model.z_dim:
        raise UsageError(f"D's encoder gives N_h = {cfg.model.h_dim} values, G takes N_z = "
                         f"{cfg.model.z_dim}", "use --encoder fit")
    dev = resolve_device(device)
    if fp16 is None:
        fp16 = dev.type == "cuda"
    protected = {"run folder": snap.run_dir, "data folder": Path(cfg.data_dir)}
    if data_dir:
        protected["--data folder"] = Path(data_dir)
    # SIGTERM unwinds like Ctrl-C (exit 143): the temp folder and the lock go with it
    with sigterm_unwinds(), Destination(out, protected, overwrite,
                                         _bundle_bytes(snap, fp16)) as dest:
        return _export(snap, dest, kind, fit_steps, fit_seconds, dev, data_dir, fp16,
                       progress, log)


def _export(snap: RunSnapshot, dest: Destination, kind: str, fit_steps: int,
            fit_seconds: float | None, dev: torch.device, data_dir: str | None, fp16: bool,
            progress: bool | None, log: Callable[[str], None]) -> dict[str, Any]:
    cfg = snap.cfg
    G, D = snap.G.to(dev), snap.D.to(dev)
    log(f"exporting {snap.checkpoint} (step {snap.step}, {snap.weights} weights of G) on "
        f"{dev}")
    show = False if progress is False else None
    if fit_seconds is None:
        fit_seconds = fit_budget(snap)
    spent = Phases()

    real_fit, real_held = _real_images(snap, data_dir, log, progress=show)
    spent.done("data")
    if kind == "d":
        enc = init_from_d(cfg.model, D).to(dev).eval()
        info: dict[str, Any] = {"kind": "d", "about": "D's encoder, trained with the BEGAN-CS "
                                                      "latent constraint"}
    else:
        with progress_bar(fit_steps, "encoder fit", log=None, show=show) as advance:
            enc, fit = fit_encoder(G, D, None if real_fit is None else real_fit.to(dev),
                                   fit_steps, seed=cfg.seed, log=log,
                                   max_seconds=fit_seconds or None, advance=advance)
        info = {"kind": "fit", **fit, "budget_s": fit_seconds or None,
                "about": "a copy of D's encoder trained with G frozen on |Enc(G(z)) - z| + "
                         "|G(Enc(x)) - x|, stopped early on a validation set"}
    spent.done("encoder fit" if kind == "fit" else "encoder")
    # Sized to the model: 1,024 generated and up to 512 held-out images up to 32x32,
    # 128 and 128 from 64x64 up, where each G pass costs 4x or more (the standard
    # error of these means stays well below the differences they are used to judge).
    small = cfg.model.resolution <= 32
    n_fake, n_real = (1024, 512) if small else (128, 128)
    held = None if real_held is None else real_held[:n_real]
    fakes: dict = {}  # G(z) once for both encoders
    info["metrics"] = inversion_metrics(enc, G, held, n_fake=n_fake, fakes=fakes)
    if kind == "fit" and cfg.model.h_dim == cfg.model.z_dim:  # what D's own encoder would give
        info["d_encoder_baseline"] = inversion_metrics(D.encoder, G, held, n_fake=n_fake,
                                                       fakes=fakes)
    m = info["metrics"]
    log(f"encoder ({kind}): |Enc(G(z)) - z| {m['z_l1']:.4f}, PSNR G(Enc(G(z))) "
        f"{m['psnr_fake']:.2f} dB" + (f", PSNR G(Enc(x)) on {m['n_real']} held-out real images "
                                      f"{m['psnr_real']:.2f} dB" if "psnr_real" in m else ""))

    # The CLI warns when an image inverts much worse than the model's own samples do:
    # their error is measured here, with the CLI's own function and seeds.
    with torch.no_grad():
        def numpy_fn(module):
            return lambda a: torch.cat([module(torch.from_numpy(a[i:i + 64]).to(dev)).cpu()
                                        for i in range(0, len(a), 64)]).numpy()
        # EncoderToZ: the encoder graph's own clip to [-1, 1], so these are the CLI's figures
        reference = inversion_reference(numpy_fn(G), numpy_fn(EncoderToZ(enc)), cfg.model.z_dim)
    spent.done("inversion figures")
    G, D, enc = G.cpu(), D.cpu(), enc.cpu()
    core = _manifest_core(snap, info)
    core["inversion_reference"] = reference
    tmp = dest.tmp
    plan = [(graph, module, precision) for graph, module in graph_modules(G, D, enc).items()
            for precision in (("fp32", "fp16") if fp16 and GRAPHS[graph].fp16 else ("fp32",))]
    files: dict[str, Any] = {}
    try:
        with progress_bar(2 * len(plan), "graphs (export, parity)", log=log,
                          show=show, every_s=20.0) as advance:
            for graph, module, precision in plan:
                name = graph_file(graph, precision)
                path = tmp / name
                half = precision == "fp16"
                export_graph(module, graph, cfg.model, path,
                             metadata_props(core, graph, precision), half=half)
                advance()
                err = parity(module, graph, cfg.model, path, half=half)
                advance()
                if not half and not err <= FP32_TOLERANCE:
                    raise BeganError(f"{name} differs from PyTorch by {err:.2e} on "
                                     f"onnxruntime (limit {FP32_TOLERANCE:g})",
                                     "this is a bug in began export; please report it")
                files[name] = file_entry(path, graph, precision, max_abs_diff_vs_torch=err)
                log(f"  {name}: {path.stat().st_size / 1e6:.2f} MB, max |ort - torch| {err:.1e}")
        manifest = {**core, "files": files}
        write_manifest(tmp, manifest)
    except OSError as e:  # a disk that filled up or went read-only during the export
        raise BeganError(f"cannot write the bundle in {tmp.parent} ({e.strerror or e})",
                         "free some space, or choose a --out on another disk") from None
    dest.commit()
    spent.done("graphs (export, parity)")
    budget = f" (budget {fit_seconds:g} s)" if kind == "fit" and fit_seconds else ""
    log(f"time: {spent.line()}{budget}")
    return manifest


class Phases:
    """Wall seconds per phase of the export, for the closing `time:` line."""

    def __init__(self) -> None:
        self.t, self.parts = time.monotonic(), []

    def done(self, name: str) -> None:
        now = time.monotonic()
        self.parts.append((name, now - self.t))
        self.t = now

    def line(self) -> str:
        return ", ".join(f"{name} {s:.1f} s" for name, s in self.parts)
