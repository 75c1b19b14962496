"""`--device` for every torch command (train, export, eval): here, below train/ and
export/, so both may use it."""

from __future__ import annotations

import torch

from began.errors import BeganError, UsageError


def resolve_device(spec: str) -> torch.device:
    """auto (CUDA when PyTorch sees a GPU, else the CPU), cpu, cuda or cuda:N."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise UsageError(f"unknown device {spec!r}", "use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BeganError("--device cuda was asked for, but PyTorch sees no CUDA GPU",
                         "install a CUDA build of torch (https://pytorch.org) or use --device cpu")
    return dev
