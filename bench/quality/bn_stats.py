"""Does G's BatchNorm need its statistics recomputed for the weights it draws with?

    python bench/quality/bn_stats.py RUN@STEP [RUN@STEP ...] [-n 5000] [--batches 200]
        [--classifier runs/fmnist_classifier] [--inception N --ref fmnist/test]

The small G normalises with running statistics in eval mode. Those are an average over
training steps of batch statistics of *earlier* weights (for the EMA copy, an average of
averages), so they need not match the weights being drawn with. "Standing statistics"
(BigGAN) run the final weights in train mode on fresh z and average the batch statistics
exactly. For each run and weight set (raw; EMA when kept) this prints, on N samples of the
CLI's seeds 0..N-1, with the stored statistics and with standing ones side by side: class
coverage, KL and cFID (fmnist_coverage.py's classifier: seconds), and with --inception M,
Inception FID / KID / precision / recall of the first M samples against M reference images
(about 0.6 CPU-s an image on the AVX2 development CPU: keep M small).

Measured (bench/quality/README.md, "Grey seeds 0 and 2 again, EMA of G, standing BatchNorm
statistics"): no gain on the grey small32 runs,
so export and eval keep the stored statistics.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))


@torch.no_grad()
def standing_stats(G: nn.Module, z_dim: int, batches: int, batch_size: int,
                   seed: int = 0) -> nn.Module:
    """Replace G's BatchNorm running statistics by the exact mean over `batches` train-mode
    batches of `batch_size` z (the training batch: batch statistics depend on it), drawn
    from their own generator, so no other random stream moves. Returns G in eval mode;
    G without BatchNorm is returned unchanged."""
    bns = [m for m in G.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return G.eval()
    if batches < 1 or batch_size < 2:
        raise ValueError(f"standing statistics need batches >= 1 and batch_size >= 2, "
                         f"got {batches} and {batch_size}")
    device = next(G.parameters()).device
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: every batch weighs the same
    gen = torch.Generator(device="cpu").manual_seed(seed)
    G.train()
    try:
        for _ in range(batches):
            # z ~ U[-1, 1], as training and the CLI draw it
            G(torch.rand(batch_size, z_dim, generator=gen).mul_(2).sub_(1).to(device))
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        G.eval()
    return G


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("-n", type=int, default=5000)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--classifier", type=Path, default=Path("runs/fmnist_classifier"))
    ap.add_argument("--inception", type=int, default=0)
    ap.add_argument("--ref", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(1)

    from began.errors import BeganError
    from began.train.evaluate import Samples, evaluate
    from began.train.runs import load_run, preprocess_of

    from fmnist_coverage import classifier_fid, coverage, draw, grey_u8, load_classifier, predict

    net = load_classifier(a.classifier)
    for source in a.runs:
        path, _, step = source.partition("@")
        for weights in ("raw", "ema"):
            try:
                snap = load_run(path, int(step) if step else None, weights)
            except BeganError as e:  # no EMA kept
                print(f"{source} {weights}: {e}", flush=True)
                continue
            for standing in (False, True):
                G = snap.G
                t = time.time()
                if standing:
                    standing_stats(G, snap.cfg.model.z_dim, a.batches, snap.cfg.batch_size)
                u8 = draw(G, snap.cfg.model.z_dim, a.n)
                row = {"source": source, "weights": weights, "standing": standing,
                       "bn_seconds": round(time.time() - t, 1)}
                grey = grey_u8(u8)
                cov = coverage(predict(net, grey))
                row.update(covered=cov["covered"], kl=round(cov["kl"], 4),
                           cfid=round(classifier_fid(net, grey), 3))
                if a.inception:
                    m = a.inception
                    r = evaluate(Samples(u8[:m], preprocess_of(snap.cfg), {}), a.ref, m,
                                 "cpu", 32, bins=0)
                    row.update(n_inception=m, fid=round(r["fid"], 2),
                               kid1000=round(1000 * r["kid"]["mean"], 1),
                               precision=round(r["precision"], 3), recall=round(r["recall"], 3))
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
