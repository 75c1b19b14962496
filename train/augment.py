"""What D sees: differentiable augmentation (DiffAugment) and instance noise.

DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient
GAN Training") applies random transforms T to every image D sees, real and
fake alike, with ops that pass gradients through to G. BEGAN's D is an
auto-encoder, so here it reconstructs the augmented image:
L(v) = mean |T(v) - D(T(v))|. The transforms (images in [-1, 1]):

    color        brightness + U(-0.5, 0.5); saturation x U(0, 2); contrast x U(0.5, 1.5)
    translation  shift by up to 1/8 of the side in x and y, zeros (grey) shifted in
    cutout       a square of half the side, centred anywhere, set to zero (grey)

Colour, as in DiffAugment, is not clipped: values may leave [-1, 1].

Instance noise adds N(0, std^2) to every D input, with std decaying linearly to 0.

Every draw comes from the training generator passed in, so a resumed run draws
the same transforms. Under data parallelism each rank draws the whole global
batch's parameters (`batch`) and keeps its own rows, as it does for z.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .config import AUGMENTATIONS

TRANSLATION_RATIO = 1 / 8  # DiffAugment's defaults
CUTOUT_RATIO = 1 / 2

Transform = Callable[[torch.Tensor], torch.Tensor]


def parse_policy(policy: str) -> tuple[str, ...]:
    """'translation,cutout,color' -> ('translation', 'cutout', 'color'); '' -> ()."""
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"unknown augmentation {', '.join(unknown)} "
                         f"(choose from {', '.join(AUGMENTATIONS)})")
    return names


class _Draw:
    """Per-image random parameters for the global batch, this rank's rows kept."""

    def __init__(self, gen: torch.Generator, batch: int, rows: slice):
        self.gen, self.batch, self.rows = gen, batch, rows

    def uniform(self, x: torch.Tensor) -> torch.Tensor:
        u = torch.rand(self.batch, generator=self.gen, device=x.device)[self.rows]
        return u.to(x.dtype).view(-1, 1, 1, 1)

    def integers(self, low: int, high: int, device: torch.device) -> torch.Tensor:
        return torch.randint(low, high, (self.batch,), generator=self.gen, device=device)[self.rows]


def color(x: torch.Tensor, draw: _Draw) -> torch.Tensor:
    x = x + (draw.uniform(x) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (draw.uniform(x) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (draw.uniform(x) + 0.5) + mean


def translation(x: torch.Tensor, draw: _Draw) -> torch.Tensor:
    B, C, H, W = x.shape
    s = int(H * TRANSLATION_RATIO + 0.5)
    dy = draw.integers(-s, s + 1, x.device)
    dx = draw.integers(-s, s + 1, x.device)
    # out[i, j] = x[i - dy, j - dx], zero outside: two gathers from the zero-padded image.
    padded = F.pad(x, (s, s, s, s))
    rows = torch.arange(H, device=x.device) + s - dy[:, None]  # (B, H)
    cols = torch.arange(W, device=x.device) + s - dx[:, None]  # (B, W)
    out = padded.gather(2, rows[:, None, :, None].expand(B, C, H, W + 2 * s))
    return out.gather(3, cols[:, None, None, :].expand(B, C, H, W))


def cutout(x: torch.Tensor, draw: _Draw) -> torch.Tensor:
    B, C, H, W = x.shape
    size = int(H * CUTOUT_RATIO + 0.5)
    top = draw.integers(0, H, x.device) - size // 2  # the square's centre is anywhere
    left = draw.integers(0, W, x.device) - size // 2
    ys, xs = torch.arange(H, device=x.device), torch.arange(W, device=x.device)
    in_y = (ys >= top[:, None]) & (ys < top[:, None] + size)  # (B, H)
    in_x = (xs >= left[:, None]) & (xs < left[:, None] + size)  # (B, W)
    keep = ~(in_y[:, :, None] & in_x[:, None, :])
    return x * keep[:, None].to(x.dtype)


OPS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: torch.Tensor, policy: Sequence[str], gen: torch.Generator,
                 batch: int | None = None, rows: slice = slice(None)) -> torch.Tensor:
    """The policy's transforms in order, each with fresh per-image parameters."""
    draw = _Draw(gen, x.shape[0] if batch is None else batch, rows)
    for name in policy:
        x = OPS[name](x, draw)
    return x


def instance_noise(x: torch.Tensor, std: float, gen: torch.Generator,
                   batch: int | None = None, rows: slice = slice(None)) -> torch.Tensor:
    shape = (x.shape[0] if batch is None else batch, *x.shape[1:])
    noise = torch.randn(shape, generator=gen, device=x.device)[rows]
    return x + std * noise.to(x.dtype)


def noise_std(step: int, std0: float, steps: int) -> float:
    """Instance noise std at `step`: std0, falling linearly to 0 at `steps`."""
    return std0 * max(0.0, 1.0 - step / steps)


class DInputs:
    """The transform applied to every D input: the policy's transforms, then instance
    noise whose std follows the step (call `at_step` before each training step)."""

    def __init__(self, policy: str, noise: float, noise_steps: int, gen: torch.Generator,
                 batch: int | None = None, rows: slice = slice(None)):
        self.ops = parse_policy(policy)
        self.noise, self.noise_steps = noise, noise_steps
        self.gen, self.batch, self.rows = gen, batch, rows
        self.std = noise

    def at_step(self, step: int) -> None:
        if self.noise > 0:
            self.std = noise_std(step, self.noise, self.noise_steps)

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        if self.ops:
            v = diff_augment(v, self.ops, self.gen, self.batch, self.rows)
        if self.std > 0:
            v = instance_noise(v, self.std, self.gen, self.batch, self.rows)
        return v


def d_inputs(policy: str, noise: float, gen: torch.Generator, batch: int | None = None,
             rows: slice = slice(None), noise_steps: int = 1) -> DInputs | None:
    """The D-input transform, or None when D sees images as they are."""
    if not parse_policy(policy) and noise <= 0:
        return None
    return DInputs(policy, noise, noise_steps, gen, batch, rows)


def for_state(cfg, state) -> DInputs | None:
    """This step's D-input transform for a training state (train/state.py), or None:
    the config's policy and noise, drawing from the state's generator for its rows."""
    t = d_inputs(cfg.augment, cfg.instance_noise, state.gen, cfg.batch_size, state.part,
                 cfg.instance_noise_steps)
    if t is not None:
        t.at_step(state.step)
    return t
