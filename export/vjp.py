"""The generator's L1 inversion loss and its gradient w.r.t. z, as plain ops.

The paper inverts an image by running Adam on z to minimise |x - G(z)|. The
torch-free CLI runs on onnxruntime, which has no autograd, so this module
writes the backward pass of G by hand (linear, 3x3 convs, ELU, nearest
upsampling, skip concatenations, vanishing-residual mixing; for the small G, BatchNorm
in eval mode, ReLU and transposed convs) with ops ONNX has:
conv -> conv_transpose, ELU' = where(a > 0, 1, exp(a)), tanh' = 1 - tanh^2 (out_tanh),
nearest x2 upsampling -> 2x2 sum pooling, a grey model's channel repeated to RGB -> the sum
of the three channels' gradients. Tests hold it to torch.autograd on every architecture option.

    loss[b] = mean_{c,y,x} |clip(G(z)[b], -1, 1) - target[b]|   (one value per image)
    grad[b] = d loss[b] / d z[b]

The loss compares what the user sees (saved images are clipped to [-1, 1]):
a pixel G draws past the range cannot get closer to its target, so it gives
no gradient, as torch.clamp's backward does (the bounds count as inside).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from began.models import Generator, ModelConfig
from began.models.began import to_rgb


def _sum_pool(g: torch.Tensor, k: int) -> torch.Tensor:
    """Adjoint of nearest-neighbour upsampling by k: sum each k x k block."""
    return F.avg_pool2d(g, k) * float(k * k) if k > 1 else g


def _conv_input_grad(g: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """Adjoint of a stride-1, padding-1 3x3 convolution w.r.t. its input."""
    return F.conv_transpose2d(g, conv.weight, stride=1, padding=1)


def _l1_start(out: torch.Tensor, target: torch.Tensor, cfg: ModelConfig
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """loss[b] = mean |clip(out[b], -1, 1) - target[b]| and d loss / d out, where `out` is
    the last layer's output (a grey model's one channel is shown as RGB: its gradient is
    the sum of the three channels')."""
    rgb = to_rgb(out, cfg)
    diff = rgb.clamp(-1.0, 1.0) - target
    loss = diff.abs().flatten(1).mean(1)
    inside = (rgb >= -1.0) & (rgb <= 1.0)
    g = torch.where(inside, torch.sign(diff), torch.zeros_like(diff)) / diff[0].numel()
    return loss, (g.sum(1, keepdim=True) if cfg.grey else g)


def _small_backward(layer: nn.Module, x: torch.Tensor, y: torch.Tensor, g: torch.Tensor
                    ) -> torch.Tensor:
    """Adjoint of one of the small G's layers (eval mode) at input x, output y."""
    if isinstance(layer, nn.Linear):
        return g @ layer.weight
    if isinstance(layer, nn.ConvTranspose2d):  # its adjoint is the strided conv
        return F.conv2d(g, layer.weight, stride=layer.stride, padding=layer.padding)
    if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):  # eval mode: per-channel scale
        scale = layer.weight / torch.sqrt(layer.running_var + layer.eps)
        return g * (scale if g.dim() == 2 else scale[:, None, None])
    if isinstance(layer, nn.ReLU):
        return torch.where(x > 0, g, torch.zeros_like(g))
    if isinstance(layer, nn.Tanh):
        return g * (1 - y * y)
    raise TypeError(f"no adjoint for {type(layer).__name__}")


def _small_l1_grad(G: nn.Module, z: torch.Tensor, target: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The small G (models/small.py) is a chain: record each layer's input and output,
    then walk it back."""
    tape = []
    x = z
    for layer in [*G.fc, None, *G.up]:  # None: the reshape to (C0, 8, 8)
        y = x.view(-1, G.c0, 8, 8) if layer is None else layer(x)
        tape.append((layer, x, y))
        x = y
    loss, g = _l1_start(x, target, G.cfg)
    for layer, x_in, y in reversed(tape):
        g = g.flatten(1) if layer is None else _small_backward(layer, x_in, y, g)
    return loss, g


class GeneratorL1Grad(nn.Module):
    def __init__(self, G: Generator):
        super().__init__()
        self.G = G

    def forward(self, z: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        G, cfg = self.G, self.G.cfg
        if cfg.arch == "small":
            return _small_l1_grad(G, z, target)
        n = cfg.n
        carry = G.carry if cfg.vanishing_residual else None

        # Forward, keeping each conv's pre-activation and each stack's input.
        h0 = G.fc(z).view(-1, n, 8, 8)
        x = h0
        tape = []  # per stack: list of (conv, pre-activation, mixed?)
        for i, stack in enumerate(G.stacks):
            if i > 0:
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
                if cfg.skip:
                    x = torch.cat([x, F.interpolate(h0, scale_factor=float(2**i),
                                                    mode="nearest")], dim=1)
            layers = []
            for conv, mix in zip(stack.convs, stack.mix):
                a = conv(x)
                y = F.elu(a)
                mixed = mix and carry is not None
                x = carry * x + (1 - carry) * y if mixed else y
                layers.append((conv, a, mixed))
            tape.append(layers)
        out = G.out(x)
        if cfg.out_tanh:
            out = torch.tanh(out)

        # Backward.
        loss, g = _l1_start(out, target, cfg)
        if cfg.out_tanh:  # tanh' = 1 - tanh^2
            g = g * (1 - out * out)
        g = _conv_input_grad(g, G.out)
        g_h0 = torch.zeros_like(h0)
        for i in reversed(range(len(tape))):
            for conv, a, mixed in reversed(tape[i]):
                g_a = g * torch.where(a > 0, torch.ones_like(a), torch.exp(a))
                g_in = _conv_input_grad(g_a, conv)
                g = carry * g + (1 - carry) * g_in if mixed else g_in
            if i > 0:
                if cfg.skip:
                    g, g_skip = g[:, :n], g[:, n:]
                    g_h0 = g_h0 + _sum_pool(g_skip, 2**i)
                g = _sum_pool(g, 2)
        g_h0 = g_h0 + g
        grad = g_h0.flatten(1) @ G.fc.weight  # adjoint of the linear layer
        return loss, grad
