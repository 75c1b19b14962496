"""Generator throughput: onnxruntime (the CLI's path) against PyTorch eager, same weights,
same batch, in one run.

    python bench/generator_throughput.py RUN_DIR [--batch 1024] [--device cuda] [--json out.json]

Exports RUN_DIR's newest checkpoint to a temporary bundle (fp32 and fp16), then times
(warm-up, synchronise, median of --iters):
- PyTorch eager: fp16 on CUDA (fp32 on the CPU), output left on the device;
- onnxruntime through began.model.Model (fp16 + IO binding on CUDA), output copied to the
  host, as `began sample` needs it;
- onnxruntime with its output left on the device (IO binding, CUDA only).
Prints images/s and the ratio to PyTorch. Needs the `train` extra (torch).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def timed(fn, iters: int, sync) -> float:
    for _ in range(3):
        fn()
    sync()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from began.export.bundle import export_run
    from began.train.runs import load_run
    from began.model import Model
    from began.seeds import z_for_seeds

    cuda = args.device.startswith("cuda")
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    G = load_run(args.run).G.to(dev).eval()
    z_np = z_for_seeds(list(range(args.batch)), G.cfg.z_dim)
    rows = {}
    with torch.no_grad():
        Gt = G.half() if cuda else G
        z_t = torch.from_numpy(z_np).to(dev, torch.float16 if cuda else torch.float32)
        rows["pytorch eager " + ("fp16" if cuda else "fp32")] = timed(lambda: Gt(z_t),
                                                                      args.iters, sync)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "m"
        export_run(args.run, bundle, fit_steps=1, device="cpu", log=lambda m: None)
        precisions = ("fp16", "fp32") if cuda else ("fp32",)
        for p in precisions:
            m = Model.open(bundle, device="cuda" if cuda else "cpu", precision=p)
            rows[f"onnxruntime {p}" + (" + IO binding" if m.io_binding else "") +
                 ", to host"] = timed(lambda m=m: m.generate(z_np, batch_size=args.batch),
                                      args.iters, lambda: None)
        if cuda:  # output left on the GPU, as PyTorch's is
            import onnxruntime as ort

            m = Model.open(bundle, device="cuda", precision="fp16")
            s = m._session("generator")
            z16 = ort.OrtValue.ortvalue_from_numpy(z_np.astype(np.float16), "cuda", 0)
            binding = s.io_binding()
            binding.bind_ortvalue_input("z", z16)
            binding.bind_output("image", "cuda", 0)

            def on_device() -> None:
                s.run_with_iobinding(binding)
                binding.synchronize_outputs()

            rows["onnxruntime fp16 + IO binding, on device"] = timed(on_device, args.iters,
                                                                     lambda: None)
    base = next(iter(rows.values()))
    print(f"generator {G.cfg.resolution}x{G.cfg.resolution}, n {G.cfg.n}, batch {args.batch}, "
          f"{torch.cuda.get_device_name() if cuda else 'CPU'}")
    print(f"{'':<48}{'ms':>9}{'images/s':>11}{'vs PyTorch':>11}")
    for name, sec in rows.items():
        print(f"{name:<48}{sec * 1000:>9.2f}{args.batch / sec:>11.0f}{base / sec:>10.2f}x")
    result = {"batch": args.batch, "device": args.device,
              "rows": {k: {"ms": v * 1000, "images_per_s": args.batch / v, "vs_pytorch": base / v}
                       for k, v in rows.items()}}
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
