"""An exponential moving average (EMA) of G's weights.

After the t-th update (t = 1, 2, ...), for every parameter:

    ema_t = d_t * ema_{t-1} + (1 - d_t) * theta_t,   d_t = min(decay, (1 + t) / (10 + t))

with ema_0 = G's initial weights. The warm-up (d_1 = 2/11, d_10 = 0.55, ...) keeps
the average from holding on to the random initialisation for ~1/(1 - decay) steps.
BatchNorm's running statistics (the small G) are averaged the same way, so the
average draws with statistics of weights like its own; other buffers (the
vanishing-residual carry, BatchNorm's step count) are copied.

The average lives in a copy of G on G's device, so samples and export can use it
as they use G. In a checkpoint it is the tensors `ema.G.<name>` plus
`ema.updates`; restoring them makes a resumed run bit-identical.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

NAME = "ema"  # checkpoint tensors: "ema.G.<name of G's tensor>" and "ema.updates"


def ema_decay_at(decay: float, t: int) -> float:
    """d_t of the t-th update (1-based)."""
    return min(decay, (1.0 + t) / (10.0 + t))


class EMA:
    def __init__(self, G: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(G).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, G: nn.Module) -> None:
        """Fold G's current weights into the average (call after each optimiser step)."""
        self.updates += 1
        d = ema_decay_at(self.decay, self.updates)
        ema = list(self.model.parameters())
        torch._foreach_mul_(ema, d)  # one fused kernel per op on a GPU, not one per tensor
        torch._foreach_add_(ema, [p.detach() for p in G.parameters()], alpha=1.0 - d)
        for (name, e), b in zip(self.model.named_buffers(), G.buffers()):
            if name.endswith(("running_mean", "running_var")):  # BatchNorm: averaged too
                e.mul_(d).add_(b, alpha=1.0 - d)
            else:
                e.copy_(b)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The average's checkpoint tensors, named without the leading "ema."."""
        out = {"G." + n: t for n, t in self.model.state_dict().items()}
        out["updates"] = torch.tensor(self.updates, dtype=torch.int64)
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore from `state_tensors()`'s form (KeyError when it holds no average)."""
        self.model.load_state_dict({n[2:]: t for n, t in tensors.items() if n.startswith("G.")})
        self.updates = int(tensors["updates"])


def has_ema(checkpoint_tensors: dict[str, torch.Tensor]) -> bool:
    return f"{NAME}.updates" in checkpoint_tensors


def ema_weights(checkpoint_tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """G's state dict made of a checkpoint's EMA tensors."""
    head = f"{NAME}.G."
    return {n[len(head):]: t for n, t in checkpoint_tensors.items() if n.startswith(head)}
