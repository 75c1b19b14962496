"""The small-compute BEGAN networks (`--arch small`).

The BEGANs that draw every Fashion-MNIST class on little compute share these
networks, not the paper's (InfoGAN's G, a tiny auto-encoder D; see
../shared/docs/began-notes.md and bench/quality/README.md, "The small networks"):

- G: fc N_z -> fc_dim, fc -> 2n x 8 x 8 (each BatchNorm + ReLU), then per x2 upsampling a
  4x4 stride-2 transposed conv halving the channels (BatchNorm + ReLU), the last one to
  C channels, then tanh. `--no-g-batchnorm` drops G's BatchNorm (an ablation toward
  the paper's G, which has none).
- D's encoder: 4x4 stride-2 convs + ReLU (n, 2n, ... channels) down to 16x16 (8x8 at 16 px;
  `--d-down` sets how many), then a *linear* layer to the code h (N_h values).
- D's decoder: fc h -> (channels) x 16 x 16 (BatchNorm + ReLU), then 4x4 stride-2
  transposed convs back up (BatchNorm + ReLU between), the last to C channels, then tanh.

BatchNorm means mode matters: training steps run in train mode (batch statistics), and
everything that draws or exports runs in eval mode (running statistics), as a user's
exported model will. `models.sampling(G)` switches for the length of a block.
"""

from __future__ import annotations

import torch
from torch import nn

from .began import _CarryMixin, to_rgb
from .config import CHANNELS, ModelConfig


def down_steps(cfg: ModelConfig) -> int:
    """D's stride-2 convs: `d_down`, or by default down to 16x16 (one at 16 px)."""
    return cfg.d_down or max(1, cfg.n_scales - 2)


def _up(cin: int, cout: int, last: bool, bn: bool = True) -> list[nn.Module]:
    conv = nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)
    if last:
        return [conv, nn.Tanh()]
    return [conv, nn.BatchNorm2d(cout), nn.ReLU()] if bn else [conv, nn.ReLU()]


def _fc(cin: int, cout: int, bn: bool) -> list[nn.Module]:
    return [nn.Linear(cin, cout), *([nn.BatchNorm1d(cout)] if bn else []), nn.ReLU()]


class SmallGenerator(_CarryMixin):
    """z (B, N_z) -> image (B, C, R, R) in (-1, 1)."""

    def __init__(self, cfg: ModelConfig, in_dim: int | None = None):
        super().__init__()
        self.cfg = cfg
        self._init_carry(cfg)  # no residuals here: the buffer keeps the shared interface
        self.c0 = 2 * cfg.n
        bn = cfg.g_batchnorm
        self.fc = nn.Sequential(*_fc(in_dim or cfg.z_dim, cfg.fc_dim, bn),
                                *_fc(cfg.fc_dim, self.c0 * 64, bn))
        layers: list[nn.Module] = []
        c, ups = self.c0, cfg.n_scales - 1
        for i in range(ups):
            last = i == ups - 1
            cout = cfg.out_channels if last else max(c // 2, 8)
            layers += _up(c, cout, last, bn)
            c = cout
        self.up = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return to_rgb(self.up(self.fc(z).view(-1, self.c0, 8, 8)), self.cfg)


class SmallEncoder(_CarryMixin):
    """Image (B, C, R, R) -> h (B, out_dim); `fc` is the linear code layer."""

    def __init__(self, cfg: ModelConfig, out_dim: int | None = None):
        super().__init__()
        self.cfg = cfg
        self._init_carry(cfg)
        layers: list[nn.Module] = []
        c = CHANNELS
        for i in range(down_steps(cfg)):
            layers += [nn.Conv2d(c, cfg.n << i, 4, stride=2, padding=1), nn.ReLU()]
            c = cfg.n << i
        self.convs = nn.Sequential(*layers)
        side = cfg.resolution >> down_steps(cfg)
        self.fc = nn.Linear(c * side * side, out_dim or cfg.h_dim)  # linear: no activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(x).flatten(1))


class SmallDecoder(_CarryMixin):
    """h (B, N_h) -> image (B, C, R, R) in (-1, 1)."""

    def __init__(self, cfg: ModelConfig, in_dim: int):
        super().__init__()
        self.cfg = cfg
        self._init_carry(cfg)
        steps = down_steps(cfg)
        self.c, self.side = cfg.n << (steps - 1), cfg.resolution >> steps
        width = self.c * self.side * self.side
        self.fc = nn.Sequential(*_fc(in_dim, width, bn=True))
        layers: list[nn.Module] = []
        c = self.c
        for i in range(steps):
            last = i == steps - 1
            cout = cfg.out_channels if last else c // 2
            layers += _up(c, cout, last)
            c = cout
        self.up = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return to_rgb(self.up(self.fc(h).view(-1, self.c, self.side, self.side)), self.cfg)
