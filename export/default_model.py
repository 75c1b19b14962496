"""Build the model embedded in the package (began_cli/default_model/) from a run.

    python -m began.export.default_model RUN_DIR --test-data DIR [--step N|best]
        [--weights auto|ema|raw] [--data fmnist|noto-emoji] [--eval-n 2000]

Exports the run (fp32 graphs only: the embedded model is small and must be
small to ship), writes a sample grid, scores it against held-out images and
measures inversion, then writes MODEL_CARD.md from those measurements and the
run's own logs. For Fashion-MNIST it also writes the class coverage of 10,000
samples (bench/quality/fmnist_coverage.py's classifier) into the card and the
manifest; with --eval-n N, `began eval --write-card` adds FID, NDB and the rest
at N samples against N test images. Edit the card's assessment by hand after
looking at the grid.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from began.train.runs import training_seconds
from began.bundle import load_bundle, write_manifest
from began.model import DEFAULT_MODEL

HERE = Path(__file__).resolve().parents[1]

# What the card says about each data set a default model has been trained on.
DATA = {
    "fmnist": dict(
        folder="fmnist/train", licence="Fashion-MNIST (MIT)",
        about="""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017; MIT licence), the 60,000 training
images from Debian's `dataset-fashion-mnist` package, written as PNGs by
`bench/quality/fashion_mnist_pngs.py`: 28x28 grey, {colour} and resized to
{res}x{res} with Lanczos. Scored against the 10,000 test images, which training never saw."""),
    "noto-emoji": dict(
        folder="noto-emoji", licence="Noto Emoji's images (Apache-2.0)",
        about="""Noto Color Emoji (Google; images under the Apache License 2.0, the font under
the SIL Open Font License 1.1): the 3,916 colour bitmaps of `NotoColorEmoji.ttf` as Debian's
`fonts-noto-color-emoji` 2.042 ships it, 136x128 RGBA, composited onto white, centre-cropped
and resized to {res}x{res} with Lanczos. The set is small and has no held-out split: the
scores below compare the model with the images it was trained on."""),
}


def began(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "began", *args], check=True, capture_output=True,
                       text=True)
    return r.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--test-data", type=Path, required=True)
    ap.add_argument("--step", help="N or best (default: the newest)")
    ap.add_argument("--out", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--encoder", default="fit")
    ap.add_argument("--weights", choices=("auto", "ema", "raw"), default="auto",
                    help="G's weights, as `began export --weights` takes them")
    ap.add_argument("--data", choices=sorted(DATA), default="fmnist",
                    help="what the card says the run was trained on")
    ap.add_argument("--classifier", type=Path, default=Path("runs/fmnist_classifier"),
                    help="fmnist: the folder `fmnist_coverage.py train` wrote")
    ap.add_argument("--eval-n", type=int, default=0,
                    help="began eval --write-card at N samples vs N test images (0: skip)")
    ap.add_argument("--stage", type=Path, default=Path("runs/default_model_build"),
                    help="built and measured here, then copied to --out (`began eval "
                         "--write-card` refuses to write into the installed package)")
    args = ap.parse_args()
    out = args.stage
    step = ["--step", str(args.step)] if args.step else []
    manifest = json.loads(began("export", str(args.run), "--out", str(out), "--no-fp16",
                                "--overwrite", "--device", "cpu", "--encoder", args.encoder,
                                "--weights", args.weights,
                                "--fit-time", "0",  # no time budget: the same fit anywhere
                                "--json", "-q", *step))
    model = ["--model", str(out), "--device", "cpu"]
    began("sample", "-n", "64", "--out", str(out / "samples.png"), "--overwrite", *model, "-q")
    score = json.loads(began("score", "--data", str(args.test_data), "-n", "1000", "--json",
                             *model, "-q"))
    inv_json = out.parent / "inversion.json"
    subprocess.run([sys.executable, str(HERE / "bench" / "inversion.py"), "--model", str(out),
                    "--data", str(args.test_data), "--images", "256", "--json", str(inv_json)],
                   check=True, capture_output=True)
    inversion = json.loads(inv_json.read_text())
    inv_json.unlink()
    seconds = training_seconds(args.run, manifest["training"]["step"]) or 0.0
    cfg = json.loads((args.run / "config.json").read_text())
    cov = class_coverage(out, args.classifier) if args.data == "fmnist" else None
    (out / "MODEL_CARD.md").write_text(card(manifest, score, inversion, cfg, seconds,
                                            DATA[args.data],
                                            f"{args.test_data.parent.name}/{args.test_data.name}",
                                            cov))
    if args.eval_n:
        began("eval", "--ref", str(args.test_data), "-n", str(args.eval_n), "--ref-n",
              str(args.eval_n), "--write-card", *model, "-q")
    install(out, args.out)
    print(f"wrote {args.out}")


def install(stage: Path, dest: Path) -> None:
    """Replace dest's files with the staged bundle's (a sibling copy renamed into place)."""
    new, old = dest.with_name(dest.name + ".new"), dest.with_name(dest.name + ".old")
    for p in (new, old):
        shutil.rmtree(p, ignore_errors=True)
    shutil.copytree(stage, new)
    if dest.exists():
        dest.rename(old)
    new.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def class_coverage(out: Path, classifier: Path) -> dict:
    """The classifier's label histogram of 10,000 samples, into the manifest too (so tests
    can hold the README's claims to it)."""
    r = subprocess.run([sys.executable, str(HERE / "bench" / "quality" / "fmnist_coverage.py"),
                        "score", str(out), "-n", "10000", "--classifier", str(classifier),
                        "--json"], check=True, capture_output=True, text=True)
    cov = json.loads(r.stdout.strip().splitlines()[-1])
    cov["classifier_test_accuracy"] = json.loads(
        (classifier / "classifier.json").read_text())["test_accuracy"]
    cov = {k: v for k, v in cov.items() if k not in ("source", "seconds")}
    manifest = load_bundle(out).manifest
    manifest["coverage"] = cov
    write_manifest(out, manifest)
    return cov


def _flags(cfg: dict) -> str:
    """The run's `began train` flags (a preset, then what differs from it)."""
    from began.train.config import TrainConfig, command_flags

    return command_flags(TrainConfig.from_dict(cfg))


def coverage_lines(cov: dict | None, flipped: bool = True) -> str:
    if cov is None:
        return ""
    hist = ", ".join(f"{k} {v:.1%}" for k, v in sorted(cov["hist"].items(), key=lambda kv: -kv[1]))
    return f"""
## Class coverage (`bench/quality/fmnist_coverage.py score`)
A small CNN trained on the Fashion-MNIST training images as the trainer sees them (test
accuracy {cov['classifier_test_accuracy']:.3f}) labels {cov['n']:,} samples (seeds 0-{cov['n'] - 1}):

Classes with >= 5% of the samples: {cov['covered']} of 10; KL of the label histogram to uniform: {cov['kl']:.3f}
(the 10,000 test images: 0.002).

{hist}.
{facing_line(cov.get("facing_right"), flipped)}"""


def facing_line(right: dict | None, flipped: bool = True) -> str:
    """Every Fashion-MNIST sneaker and ankle boot faces left; random flips in training make
    a model draw some facing right."""
    if not right or not right["of"]:
        return ""
    why = ("random flips in training, `--flip`, the default, mirror about half: train such "
           "data with `--no-flip`" if flipped else
           "trained with `--no-flip`; random flips, the default, mirror about half")
    return (f"\nOf the {right['of']:,} samples labelled sneaker or ankle boot, {right['share']:.1%} "
            f"face right, which no Fashion-MNIST shoe does (the test images: 0.0%; {why}).\n")


def _arch(m: dict) -> str:
    if m["model"].get("arch") == "small":
        return (f"the small networks (`--arch small`, models/small.py): G fc {m['model']['fc_dim']}"
                f" -> fc {2 * m['model']['n']}x8x8 -> transposed convs, BatchNorm + ReLU; D a "
                f"stride-2 conv of {m['model']['n']} -> linear code of N_h = "
                f"{m['model']['h_dim']} -> fc -> transposed conv; N_z = {m['model']['z_dim']}.")
    return (f"n = {m['model']['n']}, N_z = N_h = {m['model']['z_dim']}, {m['model']['repeat']} "
            "convs per scale, no skip connections.")


def card(m: dict, score: dict, inv: dict, cfg: dict, seconds: float, data: dict,
         test_name: str, cov: dict | None = None) -> str:
    t, e = m["training"], m["encoder"]
    div = score["diversity"]
    size = sum(f["bytes"] for f in m["files"].values()) / 1e6
    real = "\n".join(f"| {r['refine_steps']} | {r['psnr']:.2f} | {r['l1']:.4f} | "
                     f"{r['ms_per_image']:.2f} |" for r in inv["real"])
    return f"""# Model card: the embedded default model

**What it is for.** Trying the `began` command line on a fresh install, and its tests of the
real thing: it is a real BEGAN trained by this project's own `began train` and exported by
`began export`: the best that a CPU run of the project's recipe has given so far, small and
blurry at 32x32 (see the assessment below). Use `--model DIR` for your own.

![64 samples, seeds 0-63](samples.png)

## Data
{data['about'].format(res=m['model']['resolution'], colour=_colour(m))}

## Training
- Command: `began train {data['folder']} --out RUN {_flags(cfg)} --device cpu`, exported at
  step {t['step']} with the {t.get('weights', 'raw')} weights of G
  (γ = {cfg['gamma']}, λ_k = {cfg['lambda_k']}, Adam {cfg['lr_g']:g},
  β = ({cfg['beta1']}, {cfg['beta2']}); BEGAN-CS α = {cfg['cs_alpha']})
- Architecture: {_arch(m)}
- Steps: {t['step']} (batch {t['batch_size']}); final k_t {t['k']:.4f}, M_global
  {t['m_global']:.4f} (training log), learning rate {t['lr_g']:g} at the end.
- Time: {seconds / 60:.0f} minutes of training on a 2-core x86-64 CPU ({platform.python_version()},
  one torch thread, sharing the machine with other work). No GPU.
- Bundle: {len(m['files'])} fp32 ONNX graphs, {size:.1f} MB (no fp16 variants).

## Measurements (`began score`, `bench/inversion.py`, onnxruntime CPU)
| `began score --data {test_name} -n 1000` | value |
|---|---|
| L(x), the reference images | {score['loss_real']:.4f} |
| L(G(z)), 1000 samples | {score['loss_fake']:.4f} |
| balance γL(x) − L(G(z)) | {score['balance']:.4f} |
| M_global | {score['m_global']:.4f} |
| diversity, pixels: samples / real / ratio | {_div(div['pixels'])} |
| diversity, D latent: samples / real / ratio | {_div(div['latent_h'])} |

Inversion ({e['kind']} encoder): on 256 generated images |Enc(G(z)) − z| =
{inv['generated']['z_l1']:.4f} (0.5 for guessing z = 0), PSNR of G(Enc(G(z))) =
{inv['generated']['psnr']:.2f} dB. On 256 images of `{test_name}`:

| refine steps | PSNR of G(z) vs image (dB) | L1 | ms per image (CPU) |
|---:|---:|---:|---:|
{real}
{coverage_lines(cov, cfg.get("flip", True))}
## Assessment
ASSESSMENT

## Licence
The weights are derived from {data['licence']}; they are distributed under this project's
licence (Apache-2.0).
"""


def _colour(m: dict) -> str:
    return ("kept grey (`--grey`: one channel)" if m["model"].get("grey")
            else "converted to RGB")


def _div(d: dict) -> str:
    return f"{d['samples']:.3f} / {d['real']:.3f} / {d['ratio']:.2f}"


if __name__ == "__main__":
    main()
