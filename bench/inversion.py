"""How well, and how fast, a bundle inverts its generator, as the CLI does it.

    python bench/inversion.py --model DIR --data DIR [--images 256] [--refine 0 50 200]
                              [--device cpu|cuda] [--json out.json]

- generated images: z-recovery error |Enc(G(z)) - z| (guessing z = 0 gives 0.5)
  and PSNR of G(Enc(G(z))) against G(z);
- real images from --data (use images the model was not trained on, e.g. a
  test split): PSNR of G(z) against the image for the encoder's z and after
  each number of Adam refinement steps (began.latent.refine on invert_grad.onnx);
- milliseconds per image for each, on the chosen onnxruntime provider.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from began.inputs import collect, preprocess_for, read, to_float
from began.latent import psnr, refine
from began.model import Model
from began.seeds import z_for_seeds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="bundle folder [default: the embedded model]")
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--refine", type=int, nargs="+", default=[0, 50, 200])
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    m = Model.open(args.model, device=args.device, precision="fp32")
    n = args.images

    z = z_for_seeds(list(range(10**6, 10**6 + n)), m.z_dim)  # seeds away from the samples'
    fake = m.generate(z)
    t = time.perf_counter()
    z_hat = m.encode(fake)
    enc_ms = (time.perf_counter() - t) * 1000 / n
    gen = {"z_l1": float(np.abs(z_hat - z).mean()),
           "psnr": float(psnr(m.generate(z_hat), fake).mean()), "encoder_ms_per_image": enc_ms}

    sources = collect([str(args.data)])
    pick = np.sort(np.random.default_rng(0).choice(len(sources), min(n, len(sources)),
                                                   replace=False))
    pre = preprocess_for(m.bundle)
    x = to_float(np.stack([read(sources[i], pre) for i in pick]))
    z0 = m.encode(x)
    real = []
    for steps in args.refine:
        t = time.perf_counter()
        zr = refine(m, x, z0, steps, lr=args.lr)[0] if steps else z0
        ms = (time.perf_counter() - t) * 1000 / len(x) + (0 if steps else enc_ms)
        rec = m.generate(zr)
        real.append({"refine_steps": steps, "psnr": float(psnr(rec, x).mean()),
                     "l1": float(np.abs(rec - x).mean()), "ms_per_image": ms})

    result = {"model": str(m.bundle.root), "provider": m.provider.name,
              "encoder": m.bundle.manifest["encoder"].get("kind"), "generated": gen,
              "real": real, "real_images": len(x), "data": str(args.data), "lr": args.lr}
    print(f"{m.bundle.root} on {m.provider.name}, encoder {result['encoder']}")
    print(f"generated ({n}): |Enc(G(z)) - z| {gen['z_l1']:.4f}, PSNR {gen['psnr']:.2f} dB, "
          f"encoder {enc_ms:.2f} ms/image")
    print(f"{'real images':<14}{'PSNR dB':>9}{'L1':>9}{'ms/image':>10}")
    for r in real:
        print(f"refine {r['refine_steps']:<7}{r['psnr']:>9.2f}{r['l1']:>9.4f}"
              f"{r['ms_per_image']:>10.2f}")
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
