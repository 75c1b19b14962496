"""BEGAN networks. `ModelConfig` is torch-free; the modules import torch on first use,
so `began train --help` and `--dry-run` work without it."""

from .config import CHANNELS, ModelConfig

_TORCH_NAMES = {"ConvStack", "Decoder", "Discriminator", "Encoder", "Generator", "build",
                "make_encoder", "make_generator", "sampling"}


def __getattr__(name: str):
    if name in _TORCH_NAMES:
        from . import began

        return getattr(began, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CHANNELS", "ModelConfig", *sorted(_TORCH_NAMES)]
