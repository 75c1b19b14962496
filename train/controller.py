"""BEGAN's equilibrium controller, convergence measure and learning-rate schedule.

The per-step parts (k_t, M_global) are plain tensor arithmetic so they stay on
the training device: reading them every step would be a host sync per step.
The schedule is host-side and runs once per window of steps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch


def update_k(k: torch.Tensor, loss_real: torch.Tensor, loss_fake: torch.Tensor,
             gamma: float, lambda_k: float, k_max: float = 1.0) -> torch.Tensor:
    """k_{t+1} = clip(k_t + lambda_k * (gamma * L(x) - L(G(z_G))), 0, k_max)."""
    return torch.clamp(k + lambda_k * (gamma * loss_real - loss_fake), 0.0, k_max)


def m_global(loss_real: torch.Tensor, loss_fake: torch.Tensor, gamma: float) -> torch.Tensor:
    """M_global = L(x) + |gamma * L(x) - L(G(z_G))|; lower is better."""
    return loss_real + torch.abs(gamma * loss_real - loss_fake)


def annealed(lr: float, step: int, start: int, steps: int, floor: float) -> float:
    """`lr` falling linearly to `floor` from `start` over `steps` steps, then held
    there (a function of the step alone, so resume is exact); `steps` 0: `lr`."""
    if steps <= 0 or step <= start:
        return lr
    target = min(lr, floor)  # never raises an lr the plateau schedule already took lower
    return lr + (target - lr) * min(1.0, (step - start) / steps)


def anneal_rewrites_past(start: int, steps: int, step: int) -> bool:
    """Whether an anneal (start, steps) would have set a different lr for a step
    before `step` than no anneal: a resumed run must not change one of those."""
    return steps > 0 and start < step


@dataclass
class LRSchedule:
    """Decay both learning rates by `decay` when the windowed mean of M_global
    has not improved on its best by a relative `min_delta` for `patience`
    windows in a row; never below `floor`.

    All state is plain numbers so it round-trips exactly through JSON.
    """

    lr_g: float
    lr_d: float
    decay: float = 0.5
    floor: float = 2e-5
    patience: int = 5
    min_delta: float = 0.01
    best: float | None = None  # best windowed mean of M_global so far
    stalls: int = 0  # windows in a row without improvement
    history: list[float] = field(default_factory=list)  # one mean per window
    decays: list[int] = field(default_factory=list)  # window indices at which the lr decayed

    def observe(self, window_mean: float) -> bool:
        """Feed one window's mean M_global; True when the learning rates were decayed."""
        self.history.append(float(window_mean))
        if self.best is None or window_mean < self.best * (1.0 - self.min_delta):
            self.best = float(window_mean)
            self.stalls = 0
            return False
        self.stalls += 1
        if self.stalls < self.patience:
            return False
        self.stalls = 0
        new_g = max(self.lr_g * self.decay, self.floor)
        new_d = max(self.lr_d * self.decay, self.floor)
        changed = (new_g, new_d) != (self.lr_g, self.lr_d)
        self.lr_g, self.lr_d = new_g, new_d
        if changed:
            self.decays.append(len(self.history) - 1)
        return changed

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, d: dict) -> None:
        for k, v in d.items():
            setattr(self, k, list(v) if isinstance(v, list) else v)
