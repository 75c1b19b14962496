"""Torch modules -> ONNX graphs, each checked and compared with PyTorch.

Every graph has a dynamic batch dimension, carries the model's metadata in its
`metadata_props` (so a single file describes itself), passes `onnx.checker`,
and is run on onnxruntime's CPU provider against the PyTorch module it came
from before it is accepted.
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from began.bundle import GRAPHS, tensor_shape
from began.models import Discriminator, Encoder

from .vjp import GeneratorL1Grad

OPSET = 18
FP32_TOLERANCE = 1e-4  # max |onnxruntime - torch| accepted for fp32 graphs



class EncoderToZ(nn.Module):
    """The inversion encoder, its output clipped to z's support [-1, 1]."""

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.encoder(image), -1.0, 1.0)


class AutoEncoder(nn.Module):
    """D as the CLI needs it: the reconstruction and the latent h in one pass."""

    def __init__(self, D: Discriminator):
        super().__init__()
        self.D = D

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.D.encode(image)
        return self.D.decode(h), h


def graph_modules(G: nn.Module, D: Discriminator, encoder: Encoder) -> dict[str, nn.Module]:
    """The module behind each graph of the bundle contract (began/bundle: GRAPHS)."""
    return {"generator": G, "encoder": EncoderToZ(encoder), "autoencoder": AutoEncoder(D),
            "decoder": D.decoder, "invert_grad": GeneratorL1Grad(G)}


def example_inputs(graph: str, cfg: Any, batch: int = 2, seed: int = 0,
                   dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    """Uniform [-1, 1] inputs of the shapes the bundle contract gives the graph."""
    g = torch.Generator().manual_seed(seed)
    shapes = [tensor_shape(name, cfg.resolution, cfg.z_dim, cfg.h_dim)
              for name in GRAPHS[graph].inputs]
    return tuple((torch.rand(batch, *s, generator=g) * 2 - 1).to(dtype) for s in shapes)


def export_graph(module: nn.Module, graph: str, cfg: Any, path: Path, metadata: dict[str, str],
                 half: bool = False) -> None:
    """Export one graph (fp32, or fp16 in and out with `half`) and check it."""
    inputs, outputs = list(GRAPHS[graph].inputs), list(GRAPHS[graph].outputs)
    module = copy.deepcopy(module).eval()
    if half:
        module = module.half()
    args = example_inputs(graph, cfg, dtype=torch.float16 if half else torch.float32)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # e.g. "torchvision is not installed": not ours
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, str(path), dynamo=True, input_names=inputs,
                              output_names=outputs,
                              dynamic_shapes=tuple({0: batch} for _ in args),
                              opset_version=OPSET, verbose=False, external_data=False)
    finally:
        exporter_log.setLevel(level)
    model = onnx.load(str(path))
    del model.metadata_props[:]  # the exporter's own node bookkeeping is not for users
    for key, value in sorted(metadata.items()):
        model.metadata_props.add(key=key, value=value)
    model.doc_string = f"began {graph}" + (" (fp16)" if half else "")
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def ort_session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def parity(module: nn.Module, graph: str, cfg: Any, path: Path, half: bool = False,
           batch: int = 5) -> float:
    """Max |onnxruntime (CPU) - torch fp32| over every output, on a fresh batch."""
    args = example_inputs(graph, cfg, batch=batch, seed=1)
    with torch.no_grad():
        ref = module.eval()(*args)
    ref = ref if isinstance(ref, tuple) else (ref,)
    feed = {name: a.numpy().astype(np.float16 if half else np.float32)
            for name, a in zip(GRAPHS[graph].inputs, args)}
    got = ort_session(path).run(None, feed)
    return max(float(np.abs(g.astype(np.float64) - r.double().numpy()).max())
               for g, r in zip(got, ref))


def metadata_props(manifest_core: dict[str, Any], graph: str, precision: str) -> dict[str, str]:
    return {"began.format": manifest_core["format"],
            "began.format_version": str(manifest_core["format_version"]),
            "began.graph": graph, "began.precision": precision,
            "began.model": json.dumps(manifest_core, sort_keys=True)}
