"""Inverting 8-bit saves of a model's own samples: the refinement loss on G's raw
output (as invert_grad.onnx was before issue 13) against the loss on clip(G(z)),
the image a user saves, which the CLI uses now.

    python bench/invert_saved_samples.py [--model DIR] [--seeds 64] [--refine 0 50 200]
                                         [--overshoot S]

Targets are G(z) for seeds 0..n-1, clipped and rounded to uint8 as a PNG would
hold them. "raw" runs the same Adam on mean |G(z) - x| (the bundle's graph as it
is when it predates the clip; exported bundles now clip inside the graph);
"clipped" runs began.latent.refine as the CLI does. Prints PSNR of the saved
reconstruction against the saved target (median, 10th percentile) for each.

--overshoot S (needs torch) rebuilds G from generator.onnx with its output layer
scaled by S, a generator whose images run well past [-1, 1] (as a face model's
saturated highlights and backgrounds do), and runs both losses in PyTorch: the raw
one by autograd, the clipped one by the exported graph's own module
(began.export.vjp.GeneratorL1Grad). The encoder is the bundle's, unchanged.
"""

from __future__ import annotations

import argparse
from unittest import mock

import numpy as np

from began import latent
from began.model import Model
from began.seeds import z_for_seeds


def unclipped_loss_and_grad(model, z, x, clips):
    """The graph's mean |G(z) - x| as it is in bundles exported before the clip; for newer
    bundles the graph clips and this is the clipped loss again (the bench says so)."""
    return model.run("invert_grad", z, x)


class ScaledGenerator:
    """The bundle's G rebuilt in PyTorch with its output scaled, behind Model's calls."""

    def __init__(self, m: Model, scale: float, clipped: bool):
        import onnx
        import torch
        from onnx import numpy_helper

        from began.export.vjp import GeneratorL1Grad
        from began.models import Generator, ModelConfig

        self.torch, self.m = torch, m
        self.G = Generator(ModelConfig(**m.bundle.manifest["model"])).eval()
        weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in
                   onnx.load(m.bundle.path("generator")).graph.initializer}
        self.G.load_state_dict({k: weights[k] for k in self.G.state_dict()})
        z = z_for_seeds([0, 1], m.z_dim)
        with torch.no_grad():  # the rebuilt G is the bundle's G
            assert np.abs(self.G(torch.from_numpy(z)).numpy() - m.generate(z)).max() < 1e-4
            self.G.out.weight.mul_(scale)
            self.G.out.bias.mul_(scale)
        self.vjp = GeneratorL1Grad(self.G)
        self.clipped = clipped
        self.bundle = type("B", (), {"manifest": {"inversion_reference": {
            "loss": latent.CLIPPED_LOSS}}})()  # run() below is the loss to use
        self.z_dim = m.z_dim

    def generate(self, z, batch_size=64):
        with self.torch.no_grad():
            return self.G(self.torch.from_numpy(z)).numpy()

    def encode(self, x, batch_size=64):
        return self.m.encode(x)

    def run(self, graph, z, x):
        torch = self.torch
        z, x = torch.from_numpy(np.ascontiguousarray(z)), torch.from_numpy(x)
        if self.clipped:
            with torch.no_grad():
                return [t.numpy() for t in self.vjp(z, x)]
        z.requires_grad_(True)
        loss = (self.G(z) - x).abs().flatten(1).mean(1)
        (grad,) = torch.autograd.grad(loss.sum(), z)
        return [loss.detach().numpy(), grad.numpy()]


def overshoot(m: Model, args) -> None:
    models = {name: ScaledGenerator(m, args.overshoot, name == "clipped")
              for name in ("raw", "clipped")}
    raw = models["raw"].generate(z_for_seeds(list(range(args.seeds)), m.z_dim))
    x = latent.as_saved(raw)
    print(f"G's output scaled by {args.overshoot}: {args.seeds} saved samples, "
          f"{(np.abs(raw) > 1).mean():.1%} of its pixels outside [-1, 1]")
    z0 = m.encode(x)
    for steps in args.refine:
        row = []
        for name, g in models.items():
            z = latent.refine(g, x, z0, steps, lr=args.lr)[0] if steps else z0
            db = latent.psnr(latent.as_saved(g.generate(z)), x)
            row.append(f"{name}: median {np.median(db):6.2f} dB, p10 {np.percentile(db, 10):6.2f}")
        print(f"refine {steps:4d}   " + "   ".join(row))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="bundle folder [default: the embedded model]")
    ap.add_argument("--seeds", type=int, default=64)
    ap.add_argument("--refine", type=int, nargs="+", default=[0, 50, 200])
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--overshoot", type=float, help="scale G's output layer (needs torch)")
    args = ap.parse_args()
    m = Model.open(args.model, device="cpu", precision="fp32")
    if args.overshoot:
        return overshoot(m, args)
    if latent.graph_clips(m):
        print("note: this bundle's invert_grad already clips; 'raw' equals 'clipped' here")
    raw = m.generate(z_for_seeds(list(range(args.seeds)), m.z_dim))
    x = latent.as_saved(raw)
    print(f"model {m.bundle.root}: {args.seeds} saved samples, "
          f"{(np.abs(raw) > 1).mean():.1%} of G's output pixels outside [-1, 1]")
    z0 = m.encode(x)
    for steps in args.refine:
        row = []
        for name in ("raw", "clipped"):
            if name == "raw":
                with mock.patch.object(latent, "loss_and_grad", unclipped_loss_and_grad):
                    z = latent.refine(m, x, z0, steps, lr=args.lr)[0] if steps else z0
            else:
                z = latent.refine(m, x, z0, steps, lr=args.lr)[0] if steps else z0
            db = latent.psnr(latent.as_saved(m.generate(z)), x)
            row.append(f"{name}: median {np.median(db):6.2f} dB, p10 {np.percentile(db, 10):6.2f}")
        print(f"refine {steps:4d}   " + "   ".join(row))


if __name__ == "__main__":
    main()
