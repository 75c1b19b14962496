"""BEGAN networks as in Berthelot et al. 2017, section 3.5 and figure 1.

- 3x3 convolutions, each followed by an ELU; no normalisation, no dropout.
- Encoder: conv C->n, then per scale `repeat` convs and a stride-2 3x3 conv that
  subsamples; filters grow linearly with each subsampling (n, 2n, 3n, ...). At
  8x8, `repeat` convs and a *linear* fully connected layer to h (N_h values).
- Decoder: a *linear* fully connected layer to 8x8xn, then per scale `repeat`
  convs and x2 nearest-neighbour upsampling, and a final 3x3 conv to C channels
  with no activation. The generator has the decoder's architecture, not its weights.
- Optional (3.5.1): skip connections (h0, the 8x8xn tensor, upsampled and
  concatenated after every upsampling) and vanishing residuals
  (in_{x+1} = carry * in_x + (1 - carry) * out_x for same-shaped layers, the
  trainer decays `carry` from 1 to 0).

Pixels live in [-1, 1] (centred on zero); outputs are linear, so they may overshoot,
unless `out_tanh` puts a tanh on the output of G and of D's decoder (no parameters).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .config import CHANNELS, ModelConfig


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


class ConvStack(nn.Module):
    """`repeat` conv3x3+ELU layers at one resolution."""

    def __init__(self, cin: int, cout: int, repeat: int, residual: bool):
        super().__init__()
        self.convs = nn.ModuleList(conv3x3(cin if i == 0 else cout, cout) for i in range(repeat))
        # Vanishing residuals only make sense where input and output shapes agree.
        self.mix = [residual and (cin if i == 0 else cout) == cout for i in range(repeat)]

    def forward(self, x: torch.Tensor, carry: torch.Tensor | None) -> torch.Tensor:
        for conv, mix in zip(self.convs, self.mix):
            y = F.elu(conv(x))
            x = carry * x + (1 - carry) * y if (mix and carry is not None) else y
        return x


class _CarryMixin(nn.Module):
    """Holds the vanishing-residual `carry` as a (non-persistent) buffer."""

    def _init_carry(self, cfg: ModelConfig) -> None:
        self.residual = cfg.vanishing_residual
        # A buffer, not a Python float, so it follows .to(device) and can be
        # updated in place (CUDA graphs see the new value).
        self.register_buffer("carry", torch.zeros(()), persistent=False)

    def set_carry(self, value: float) -> None:
        self.carry.fill_(float(value))

    def _carry(self) -> torch.Tensor | None:
        return self.carry if self.residual else None


class Encoder(_CarryMixin):
    """Image (B, C, R, R) -> h (B, N_h)."""

    def __init__(self, cfg: ModelConfig, out_dim: int | None = None):
        super().__init__()
        self.cfg = cfg
        self._init_carry(cfg)
        n, S = cfg.n, cfg.n_scales
        self.stem = conv3x3(CHANNELS, n)
        self.stacks = nn.ModuleList()
        self.downs = nn.ModuleList()
        for i in range(1, S + 1):
            self.stacks.append(ConvStack(i * n, i * n, cfg.repeat, cfg.vanishing_residual))
            if i < S:
                self.downs.append(conv3x3(i * n, (i + 1) * n, stride=2))
        self.fc = nn.Linear(8 * 8 * S * n, out_dim or cfg.h_dim)  # linear: no activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        carry = self._carry()
        x = F.elu(self.stem(x))
        for i, stack in enumerate(self.stacks):
            x = stack(x, carry)
            if i < len(self.downs):
                x = F.elu(self.downs[i](x))
        return self.fc(x.flatten(1))


class Decoder(_CarryMixin):
    """h or z (B, in_dim) -> image (B, C, R, R). Also the generator's architecture."""

    def __init__(self, cfg: ModelConfig, in_dim: int):
        super().__init__()
        self.cfg = cfg
        self._init_carry(cfg)
        n, S = cfg.n, cfg.n_scales
        self.fc = nn.Linear(in_dim, 8 * 8 * n)  # linear: no activation
        self.stacks = nn.ModuleList(
            # After an upsampling, skip connections double the input channels.
            ConvStack(2 * n if (cfg.skip and i > 0) else n, n, cfg.repeat, cfg.vanishing_residual)
            for i in range(S)
        )
        self.out = conv3x3(n, cfg.out_channels)  # linear output (tanh'd with cfg.out_tanh)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        carry = self._carry()
        n = self.cfg.n
        h0 = self.fc(h).view(-1, n, 8, 8)
        x = h0
        for i, stack in enumerate(self.stacks):
            if i > 0:
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
                if self.cfg.skip:
                    skip = F.interpolate(h0, scale_factor=float(2**i), mode="nearest")
                    x = torch.cat([x, skip], dim=1)
            x = stack(x, carry)
        out = self.out(x)
        return to_rgb(torch.tanh(out) if self.cfg.out_tanh else out, self.cfg)


def to_rgb(x: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """A grey model's one channel as RGB (R = G = B); RGB passes through."""
    return x.expand(-1, CHANNELS, -1, -1) if cfg.grey else x


class Generator(Decoder):
    """z (B, N_z) in [-1, 1] -> image (B, C, R, R) in about [-1, 1]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, cfg.z_dim)


class Discriminator(nn.Module):
    """The auto-encoder D: image -> reconstruction, through h (B, N_h)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = make_encoder(cfg)
        if cfg.arch == "small":
            from .small import SmallDecoder

            self.decoder: nn.Module = SmallDecoder(cfg, cfg.h_dim)
        else:
            self.decoder = Decoder(cfg, cfg.h_dim)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def set_carry(self, value: float) -> None:
        self.encoder.set_carry(value)
        self.decoder.set_carry(value)


def make_generator(cfg: ModelConfig) -> nn.Module:
    """G for the config's architecture (`arch`: paper here, small in small.py)."""
    if cfg.arch == "small":
        from .small import SmallGenerator

        return SmallGenerator(cfg)
    return Generator(cfg)


def make_encoder(cfg: ModelConfig, out_dim: int | None = None) -> nn.Module:
    """D's encoder architecture, to N_h values (or `out_dim`: the inversion encoder's N_z)."""
    if cfg.arch == "small":
        from .small import SmallEncoder

        return SmallEncoder(cfg, out_dim)
    return Encoder(cfg, out_dim)


@contextlib.contextmanager
def sampling(*modules: nn.Module) -> Iterator[None]:
    """Eval mode (BatchNorm's running statistics, as an exported model draws) for a block,
    then each module's own mode back: sample grids and quality checks mid-training."""
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


def build(cfg: ModelConfig) -> tuple[nn.Module, Discriminator]:
    """Fresh G and D for a config (PyTorch's default initialisation)."""
    return make_generator(cfg), Discriminator(cfg)
