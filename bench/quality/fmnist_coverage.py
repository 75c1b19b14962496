"""Class coverage of a Fashion-MNIST generator, in seconds: a small classifier's label histogram.

    python bench/quality/fmnist_coverage.py train [--out DIR] [--epochs 6]
    python bench/quality/fmnist_coverage.py score SOURCE [SOURCE ...] [-n 10000] [--json]

`train` fits a small CNN on Debian's Fashion-MNIST (`apt install dataset-fashion-mnist`) as the
trainer sees it (28x28 grey -> 32x32 Lanczos, the trainer's default resize) and prints its test
accuracy; weights go to DIR/classifier.safetensors with DIR/classifier.json (default
runs/fmnist_classifier, ignored by git).

`score` labels N samples of each SOURCE and prints the label histogram, the classes with >= 5%
of the samples and the KL of the histogram to the test set's (which is uniform), and a
classifier FID ("cFID"): the Frechet distance between the classifier's 2,048 penultimate
features of the samples and of the 10,000 test images. It costs seconds where Inception FID
costs an hour on this CPU, so it ranks settings by sharpness and variety; it is not comparable
with published (Inception) FIDs, which stay the final figures.

It also prints "facing right": of the samples labelled sneaker or ankle boot, the share nearer
the mirror image of their class's mean test image than to the mean itself. Every shoe in
Fashion-MNIST faces left, so the test images score 0.0% (of 2,014) and a model trained with
random flips (`--flip`, the trainer's default) about half; Inception FID
hardly sees it (a random half of real images mirrored moves FID by a fraction of a point).

A SOURCE is a run folder (its latest checkpoint; `RUN@STEP` for another, `--weights
ema|raw`), a model bundle, `default` for the embedded model, `test` or `train` for the real
images themselves, or a `.npy` of uint8 images (N x 32 x 32 grey or N x 32 x 32 x 3).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fashion_mnist_pngs import LABELS, SRC, read_idx  # noqa: E402

DEFAULT_DIR = Path("runs/fmnist_classifier")
COVERED = 0.05  # a class is covered when it has at least this share of the samples


def load_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 32, 32) images resized as the trainer resizes them, and their labels."""
    from PIL import Image

    prefix = "train" if split == "train" else "t10k"
    grey = read_idx(SRC / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(SRC / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    x32 = np.stack([np.asarray(Image.fromarray(g).resize((32, 32), Image.LANCZOS)) for g in grey])
    return x32, labels


def classifier() -> nn.Module:
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.MaxPool2d(2)]

    return nn.Sequential(*block(1, 32), *block(32, 64), *block(64, 128), nn.Flatten(),
                         nn.Dropout(0.3), nn.Linear(128 * 4 * 4, 10))


def _tensor(u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(u8).float().div_(127.5).sub_(1)[:, None]


def predict(net: nn.Module, u8: np.ndarray, batch: int = 1000) -> np.ndarray:
    net.eval()
    with torch.no_grad():
        return np.concatenate([net(_tensor(u8[i:i + batch])).argmax(1).numpy()
                               for i in range(0, len(u8), batch)])


def features(net: nn.Module, u8: np.ndarray, batch: int = 1000) -> np.ndarray:
    """The classifier's penultimate features (the flattened 128 x 4 x 4 maps), float64."""
    body = net[:-2].eval()  # without Dropout and the last Linear
    with torch.no_grad():
        return np.concatenate([body(_tensor(u8[i:i + batch])).double().numpy()
                               for i in range(0, len(u8), batch)])


@functools.cache
def test_split() -> tuple[np.ndarray, np.ndarray]:
    return load_split("test")


# Classes whose every test image has one orientation (the toe to the left).
ORIENTED = (LABELS.index("sneaker"), LABELS.index("boot"))


def facing_right(u8: np.ndarray, labels: np.ndarray, means: dict[int, np.ndarray]) -> dict:
    """Of the images labelled one of `means`' classes, how many are nearer (L2) the mirror
    image of their class mean than to the mean: the shoes drawn facing the wrong way."""
    x = u8.astype(np.float32)
    wrong = n = 0
    for c, m in means.items():
        xc = x[labels == c]
        d = ((xc - m) ** 2).sum((1, 2))
        dm = ((xc - m[:, ::-1]) ** 2).sum((1, 2))
        wrong, n = wrong + int((dm < d).sum()), n + len(xc)
    return {"share": wrong / n if n else None, "of": n}


def oriented_means() -> dict[int, np.ndarray]:
    x, y = test_split()
    return {c: x[y == c].astype(np.float32).mean(0) for c in ORIENTED}


_TEST_STATS: dict[int, object] = {}  # id(net) -> the test images' feature statistics


def classifier_fid(net: nn.Module, u8: np.ndarray) -> float:
    """cFID of the samples against the 10,000 test images (their features computed once)."""
    from began.train.metrics import feature_stats, frechet_distance

    if id(net) not in _TEST_STATS:
        _TEST_STATS[id(net)] = feature_stats(features(net, test_split()[0]))
    return frechet_distance(_TEST_STATS[id(net)], feature_stats(features(net, u8)))


def train(out: Path, epochs: int, seed: int) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    t0 = time.time()
    x, y = load_split("train")
    xt, yt = load_split("test")
    net = classifier()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=epochs * (len(x) // 128))
    for epoch in range(epochs):
        net.train()
        order = rng.permutation(len(x))
        for i in range(0, len(x) - 127, 128):
            idx = order[i:i + 128]
            xb = _tensor(x[idx])
            xb = torch.where(torch.rand(len(idx), 1, 1, 1) < 0.5, xb.flip(3), xb)  # as training
            loss = nn.functional.cross_entropy(net(xb), torch.from_numpy(y[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        acc = float((predict(net, xt) == yt).mean())
        print(f"epoch {epoch + 1}/{epochs}  test accuracy {acc:.4f}  {time.time() - t0:.0f} s",
              flush=True)
    out.mkdir(parents=True, exist_ok=True)
    save_file(net.state_dict(), str(out / "classifier.safetensors"))
    (out / "classifier.json").write_text(json.dumps(
        {"test_accuracy": acc, "epochs": epochs, "seed": seed, "input": "32x32 grey uint8, "
         "Lanczos from 28x28, (x / 127.5 - 1)", "labels": LABELS}, indent=1) + "\n")
    print(f"test accuracy {acc:.4f} on the 10,000 test images -> {out}")


def load_classifier(folder: Path) -> nn.Module:
    from safetensors.torch import load_file

    path = folder / "classifier.safetensors"
    if not path.is_file():
        sys.exit(f"error: no classifier at {path}\n  hint: python {sys.argv[0]} train")
    net = classifier()
    net.load_state_dict(load_file(str(path)))
    return net.eval()


def coverage(labels: np.ndarray, ref: np.ndarray | None = None) -> dict:
    """Histogram of `labels` (10 classes), the covered classes and KL(hist || ref) (ref:
    uniform)."""
    hist = np.bincount(labels, minlength=10) / max(len(labels), 1)
    ref = np.full(10, 0.1) if ref is None else ref
    nz = hist > 0
    kl = float((hist[nz] * np.log(hist[nz] / ref[nz])).sum())
    covered = [LABELS[i] for i in range(10) if hist[i] >= COVERED]
    return {"n": int(len(labels)), "covered": len(covered), "covered_classes": covered,
            "kl": kl, "hist": {LABELS[i]: round(float(hist[i]), 4) for i in range(10)}}


def grey_u8(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32[, 3]) uint8 -> (N, 32, 32) grey uint8 (the trainer's Fashion-MNIST is grey
    written to all three channels, so the mean loses nothing)."""
    if images.ndim == 4:
        images = np.rint(images.astype(np.float32).mean(-1)).astype(np.uint8)
    return images


def samples_of(source: str, n: int, weights: str) -> np.ndarray:
    """n uint8 images of a SOURCE (see the module docstring), seeds 0..n-1 for models."""
    if source in ("test", "train"):
        return load_split(source)[0][:n]
    if source.endswith(".npy"):
        return grey_u8(np.load(source))[:n]
    path, _, step = source.partition("@")
    p = Path(path)
    if source == "default" or (p / "manifest.json").is_file():
        from began.api import Model

        return grey_u8(Model.open(None if source == "default" else p).sample(range(n)))
    return grey_u8(run_samples(p, int(step) if step else None, n, weights))


def run_samples(run: Path, step: int | None, n: int, weights: str) -> np.ndarray:
    """G of a training run on z from seeds 0..n-1 (the CLI's z for those seeds), as uint8."""
    from began.train.runs import load_run

    snap = load_run(run, step=step, weights=weights)
    return draw(snap.G, snap.cfg.model.z_dim, n)


def draw(G: nn.Module, z_dim: int, n: int) -> np.ndarray:
    """G (in eval mode) on z from seeds 0..n-1, the CLI's z for those seeds, as uint8."""
    from began.seeds import z_for_seeds

    z = torch.from_numpy(z_for_seeds(list(range(n)), z_dim))
    with torch.no_grad():
        x = torch.cat([G.eval()(z[i:i + 500]) for i in range(0, n, 500)])
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def score(sources: list[str], n: int, folder: Path, weights: str, as_json: bool) -> None:
    net = load_classifier(folder)
    for source in sources:
        t = time.time()
        u8 = samples_of(source, n, weights)
        if u8.shape[1:] != (32, 32):
            sys.exit(f"error: {source}: images are {u8.shape[1:]}, the classifier takes 32x32")
        labels = predict(net, u8)
        cov = coverage(labels)
        cov["facing_right"] = facing_right(u8, labels, oriented_means())
        cov["cfid"] = round(classifier_fid(net, u8), 3)
        cov["source"], cov["seconds"] = source, round(time.time() - t, 1)
        if as_json:
            print(json.dumps(cov), flush=True)
            continue
        top = ", ".join(f"{k} {v:.1%}" for k, v in sorted(cov["hist"].items(),
                                                           key=lambda kv: -kv[1]))
        right = cov["facing_right"]
        shoes = (f"{right['share']:.1%} of {right['of']} sneakers and boots face right"
                 if right["of"] else "no sneakers or boots")
        print(f"{source}: {cov['covered']}/10 classes >= 5%, KL to uniform {cov['kl']:.4f}, "
              f"cFID {cov['cfid']:.2f} ({cov['n']} samples, {cov['seconds']} s)\n  {top}\n"
              f"  {shoes}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--out", type=Path, default=DEFAULT_DIR)
    t.add_argument("--epochs", type=int, default=6)
    t.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("score")
    s.add_argument("sources", nargs="+")
    s.add_argument("-n", type=int, default=10_000)
    s.add_argument("--classifier", type=Path, default=DEFAULT_DIR)
    s.add_argument("--weights", default="auto", choices=["auto", "ema", "raw"])
    s.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.cmd == "train":
        train(a.out, a.epochs, a.seed)
    else:
        score(a.sources, a.n, a.classifier, a.weights, a.json)


if __name__ == "__main__":
    main()
