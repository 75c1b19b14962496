"""The model's shape, as a frozen dataclass saved with every checkpoint and bundle.

Everything needed to rebuild the modules lives here, so a checkpoint is weights
(safetensors) plus this JSON, never a pickled module.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any


def opt(default: Any, help: str) -> Any:
    """A dataclass field whose help text also feeds the CLI's `--help`."""
    return field(default=default, metadata={"help": help})


class JsonConfig:
    """to_dict / from_dict for the frozen config dataclasses; unknown keys are refused."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def known_keys(cls, d: dict[str, Any], what: str) -> dict[str, Any]:
        unknown = set(d) - {f.name for f in fields(cls)}  # type: ignore[arg-type]
        if unknown:
            raise ValueError(f"unknown {what} config keys: {sorted(unknown)}")
        return dict(d)


CHANNELS = 3  # images are RGB; grey or RGBA inputs are converted when decoded
ARCHS = ("paper", "small")


@dataclass(frozen=True)
class ModelConfig(JsonConfig):
    resolution: int = opt(64, "image side; any power of two >= 16 (every net ends at 8x8)")
    n: int = opt(64, "filters of the first scale; the encoder's grow linearly: n, 2n, 3n, ...")
    z_dim: int = opt(64, "N_z, the generator's input; z ~ U[-1, 1]^N_z")
    h_dim: int = opt(64, "N_h, the auto-encoder's bottleneck")
    repeat: int = opt(2, "3x3 convs per scale (the paper: 'typically 2')")
    skip: bool = opt(False, "skip connections (paper 3.5.1): upsampled h0 concatenated "
                            "after every upsampling")
    vanishing_residual: bool = opt(False, "vanishing residuals (paper 3.5.1): "
                                          "in' = carry*in + (1-carry)*conv(in), carry 1 -> 0")
    out_tanh: bool = opt(False, "tanh on the outputs of G and of D's decoder, so both stay in "
                                "(-1, 1) (off: linear outputs, as in the paper; small: always)")
    arch: str = opt("paper", "networks: paper (3x3 convs + ELU, models/began.py) or small "
                             "(BatchNorm G, tiny auto-encoder D with a linear code: the small-"
                             "compute BEGANs that cover all of Fashion-MNIST, models/small.py)")
    fc_dim: int = opt(1024, "small: width of G's first fully connected layer")
    g_batchnorm: bool = opt(True, "small: BatchNorm in G (--no-g-batchnorm: none, as in the "
                                  "paper's G; an ablation of what carries coverage)")
    d_down: int = opt(0, "small: stride-2 convs in D's encoder (0: down to 16x16, the small-"
                         "compute BEGANs; 2 at 32 px: down to 8x8 with n then 2n filters, "
                         "as the D of the study that reported BEGAN's Fashion-MNIST FID 22.9)")
    grey: bool = opt(False, "grey images (Fashion-MNIST, scans): the data is converted to grey "
                            "when decoded, and G and D's decoder draw one channel, shown as "
                            "RGB with R = G = B (no colour noise for D to chase or FID to see)")

    def __post_init__(self) -> None:
        r = self.resolution
        if not (isinstance(r, int) and r >= 16 and r & (r - 1) == 0):
            raise ValueError(f"resolution must be a power of two >= 16, got {r!r}")
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be {' or '.join(ARCHS)}, got {self.arch!r}")
        for name in ("n", "z_dim", "h_dim", "repeat", "fc_dim"):
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not (isinstance(self.d_down, int) and not isinstance(self.d_down, bool)
                and 0 <= self.d_down and r >> self.d_down >= 4):
            raise ValueError(f"d_down must be 0 (auto) or a number of stride-2 convs that "
                             f"leaves D's features at 4x4 or more, got {self.d_down!r}")
        if self.arch == "paper" and self.d_down:
            raise ValueError("d_down is a small-arch option (the paper's D has its own depth)")
        for name in ("skip", "vanishing_residual", "out_tanh", "grey", "g_batchnorm"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.arch == "small" and (self.skip or self.vanishing_residual):
            raise ValueError("skip connections and vanishing residuals are paper-arch options "
                             "(the small networks have neither)")
        if self.arch == "paper" and not self.g_batchnorm:
            raise ValueError("the paper's G has no BatchNorm to remove (--no-g-batchnorm is a "
                             "small-arch option)")

    @property
    def out_channels(self) -> int:
        """Channels the networks' last layers draw (grey: 1, repeated to RGB after them)."""
        return 1 if self.grey else CHANNELS

    @property
    def n_scales(self) -> int:
        """Resolutions visited: 8x8 plus one per factor of two above it (64 -> 4)."""
        return int(math.log2(self.resolution)) - 2

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        return cls(**cls.known_keys(d, "model"))
