"""An encoder that inverts the generator: Enc(G(z)) ~ z.

D's encoder maps images into D's own latent space, which G does not share, so a
plain BEGAN cannot invert G with it. Two ways to get one:

- BEGAN-CS training (`began train --cs-alpha A`): D's encoder is trained to
  send G(z) back to z, and is used as is.
- A post-hoc fit, for any run: a copy of D's encoder (its FC re-initialised when
  N_h != N_z) trained with G frozen on
      |Enc(G(z)) - z|  +  w * |G(Enc(x)) - x|        (z ~ U[-1,1], x real)
  The first term is the inversion itself; the second keeps real images, which
  are not exactly in G's range, mapped to a z whose image is close.

`inversion_metrics` measures either one the same way: z-recovery error on
generated images, and PSNR of G(Enc(x)) on real images held out of the fit.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Callable

import numpy as np
import torch

from began.models import Discriminator, Encoder, Generator, ModelConfig, make_encoder


def held_out_split(n: int, seed: int = 0, fraction: float = 0.1, cap: int = 512
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(fit indices, held-out indices): a fixed, seeded split of n images."""
    perm = np.random.default_rng(seed).permutation(n)
    k = min(cap, max(1, int(n * fraction))) if n > 1 else 0
    return np.sort(perm[k:]), np.sort(perm[:k])


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [-1, 1]."""
    return images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for images in [-1, 1] (peak-to-peak 2, as on 0..255)."""
    mse = ((a.clamp(-1, 1) - b.clamp(-1, 1)) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-10))


@torch.no_grad()
def inversion_metrics(encode: Callable[[torch.Tensor], torch.Tensor], G: Generator,
                      real: torch.Tensor | None, n_fake: int = 1024, seed: int = 1,
                      batch: int = 256, fakes: dict | None = None) -> dict[str, float]:
    """z_l1: mean |clip(Enc(G(z))) - z| (guessing z = 0 scores 0.5);
    psnr_fake: G(Enc(G(z))) vs G(z); psnr_real: G(Enc(x)) vs x (held-out x).
    `fakes`: a dict shared between calls that measure several encoders on the same
    G, so that the (z, G(z)) batches are computed once."""
    dev = next(G.parameters()).device
    g = torch.Generator().manual_seed(seed)
    z_err, p_fake, p_real = [], [], []
    fakes = {} if fakes is None else fakes
    for i in range(0, n_fake, batch):
        z = (torch.rand(min(batch, n_fake - i), G.cfg.z_dim, generator=g) * 2 - 1).to(dev)
        key = (seed, i, len(z))
        if key not in fakes:
            fakes[key] = G(z)
        x = fakes[key]
        zh = encode(x).clamp(-1, 1)
        z_err.append((zh - z).abs().mean(1))
        p_fake.append(psnr(G(zh), x))
    out = {"z_l1": float(torch.cat(z_err).mean()), "psnr_fake": float(torch.cat(p_fake).mean())}
    if real is not None and len(real):
        for i in range(0, len(real), batch):
            x = real[i:i + batch].to(dev)
            p_real.append(psnr(G(encode(x).clamp(-1, 1)), x))
        out["psnr_real"] = float(torch.cat(p_real).mean())
        out["n_real"] = len(real)
    out["n_fake"] = n_fake
    return out


def init_from_d(cfg: ModelConfig, D: Discriminator) -> Encoder:
    """An encoder to z with D's encoder weights (all of them when N_h == N_z)."""
    enc = make_encoder(cfg, cfg.z_dim)
    state = {k: v for k, v in D.encoder.state_dict().items()
             if not (k.startswith("fc.") and cfg.h_dim != cfg.z_dim)}
    enc.load_state_dict(state, strict=False)
    enc.set_carry(float(D.encoder.carry))
    return enc


@torch.no_grad()
def linear_readout(enc: Encoder, G: Generator, n: int, seed: int, ridge: float = 1e-3) -> None:
    """Fold into enc.fc the least-squares linear map from its outputs to z, measured on n
    fresh G(z): D's latent is not G's, but much of z is linearly readable from it, and
    this closed form costs n forward passes where gradient steps cost many more."""
    dev = next(G.parameters()).device
    g = torch.Generator().manual_seed(seed)
    z = (torch.rand(n, G.cfg.z_dim, generator=g) * 2 - 1).to(dev)
    h = torch.cat([enc(G(z[i:i + 64])) for i in range(0, n, 64)]).double()
    x = torch.cat([h, torch.ones(n, 1, dtype=h.dtype, device=dev)], 1)
    gram = x.T @ x
    gram += ridge * gram.diagonal().mean() * torch.eye(len(gram), dtype=h.dtype, device=dev)
    w = torch.linalg.solve(gram, x.T @ z.double())  # (out + 1, z_dim)
    a, b = w[:-1].T, w[-1]
    fc = enc.fc
    fc.bias.copy_((a @ fc.bias.double() + b).to(fc.bias.dtype))
    fc.weight.copy_((a @ fc.weight.double()).to(fc.weight.dtype))


def fit_batch_size(cfg: ModelConfig) -> int:
    """64 for the small models the fit was tuned on (n = 16, 32x32); smaller as the
    cost of an image (~ n^2 R^2) grows, never under 16."""
    return int(max(16, min(64, 64 * (16 * 32) ** 2 // (cfg.n * cfg.resolution) ** 2)))


@torch.no_grad()
def _validation_loss(enc: Encoder, G: Generator, val_z: torch.Tensor, val_fake: torch.Tensor,
                     val_real: torch.Tensor | None, real_weight: float) -> float:
    loss = (enc(val_fake) - val_z).abs().mean()
    if val_real is not None and real_weight > 0:
        loss = loss + real_weight * (G(enc(val_real).clamp(-1, 1)) - val_real).abs().mean()
    return float(loss)


def fit_encoder(G: Generator, D: Discriminator, real: torch.Tensor | None, steps: int,
                batch_size: int | None = None, lr: float = 2e-4, real_weight: float = 1.0,
                seed: int = 0, log: Callable[[str], None] = print,
                eval_every: int = 25, patience: int = 4, min_delta: float = 0.005,
                min_steps: int = 200,
                max_seconds: float | None = None, n_val: int | None = None,
                advance: Callable[[int], None] = lambda k: None) -> tuple[Encoder, dict]:
    """Train an inversion encoder with G frozen; `real` is uint8 NHWC (any device).

    Early stopping: every `eval_every` steps the fit's own objective is measured on a
    fixed validation set (n_val generated images, and up to n_val real images kept out
    of the fit: never the export's held-out images, which judge the result); the fit
    stops after `patience` checks without a relative gain of `min_delta` (not before
    `min_steps`: the loss often sits on a plateau for the first ~100 steps), after
    `steps` steps, or once `max_seconds` have passed, and returns the best weights
    seen. Returns (encoder, a report for the manifest)."""
    dev = next(G.parameters()).device
    cfg = G.cfg
    batch_size = batch_size or fit_batch_size(cfg)
    n_val = n_val or (128 if cfg.resolution <= 32 else 32)
    start = time.monotonic()  # the budget covers the validation set's cost too
    torch.manual_seed(seed)
    enc = init_from_d(cfg, D).to(dev).train()
    for p in G.parameters():
        p.requires_grad_(False)
    g = torch.Generator(dev).manual_seed(seed)
    val_g = torch.Generator().manual_seed(seed + 1)
    val_z = (torch.rand(n_val, cfg.z_dim, generator=val_g) * 2 - 1).to(dev)
    with torch.no_grad():
        val_fake = torch.cat([G(val_z[i:i + 64]) for i in range(0, n_val, 64)])
    linear_readout(enc, G, n=max(2 * n_val, 4 * cfg.z_dim), seed=seed + 2)
    val_real = None
    if real is not None and real_weight > 0 and len(real) >= 20:
        keep = min(n_val, len(real) // 10)
        perm = torch.randperm(len(real), generator=val_g)
        val_real = to_float(real[perm[:keep].to(real.device)].to(dev))
        real = real[perm[keep:].sort().values.to(real.device)]
    opt = torch.optim.Adam(enc.parameters(), lr=lr, betas=(0.9, 0.999))
    best = _validation_loss(enc.eval(), G, val_z, val_fake, val_real, real_weight)
    enc.train()
    best_state, best_step, since, step, why = copy.deepcopy(enc.state_dict()), 0, 0, 0, "max steps"
    for step in range(1, steps + 1):
        z = torch.rand(batch_size, cfg.z_dim, generator=g, device=dev) * 2 - 1
        with torch.no_grad():
            fake = G(z)
        terms = {"|Enc(G(z)) - z|": (enc(fake) - z).abs().mean()}
        if real is not None and real_weight > 0:
            idx = torch.randint(len(real), (batch_size,), generator=g, device=dev)
            x = to_float(real[idx.to(real.device)].to(dev))
            terms["|G(Enc(x)) - x|"] = (G(enc(x).clamp(-1, 1)) - x).abs().mean()
        loss = sum(w * t for w, t in zip((1.0, real_weight), terms.values()))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        advance(1)
        out_of_time = max_seconds is not None and time.monotonic() - start >= max_seconds
        if step % eval_every and step != steps and not out_of_time:
            continue
        # the only host syncs of the fit
        values = {name: t.item() for name, t in terms.items()}
        if not all(math.isfinite(v) for v in values.values()):
            raise FloatingPointError(f"the encoder fit diverged at step {step}: {values}")
        val = _validation_loss(enc.eval(), G, val_z, val_fake, val_real, real_weight)
        enc.train()
        if val < best * (1 - min_delta):
            best, best_state, best_step, since = val, copy.deepcopy(enc.state_dict()), step, 0
        else:
            since += 1
        log(f"encoder fit {step}/{steps}: "
            + ", ".join(f"{name} {v:.4f}" for name, v in values.items())
            + f", validation {val:.4f} (best {best:.4f} at step {best_step})")
        if since >= patience and step >= min_steps:  # not on the plateau fits start with
            why = "converged"
            break
        if out_of_time:
            why = "time"
            break
    for p in G.parameters():
        p.requires_grad_(True)
    enc.load_state_dict(best_state)
    report = {"fit_steps": step, "best_step": best_step, "stopped": why,
              "batch_size": batch_size, "validation_loss": best,
              "seconds": round(time.monotonic() - start, 1)}
    return enc.eval(), report
