"""One BEGAN training step, written plainly (the reference the fast path must match).

    L(v)  = mean |v - D(v)|^eta                 (eta = 1 in the paper)
    L_D   = L(x) - k_t * L(G(z_D))              -> theta_D
    L_G   = L(G(z_G))                           -> theta_G
    k_t+1 = clip(k_t + lambda_k (gamma L(x) - L(G(z_G))), 0, k_max)
    M     = L(x) + |gamma L(x) - L(G(z_G))|

With `cs_alpha > 0` (BEGAN-CS), D's loss also gets alpha * ||z_D - Enc(G(z_D))||_2,
which makes D's encoder map generated images back to their z (N_h must equal N_z).

Both gradients are taken at the same (theta_G, theta_D) and then both Adam
optimisers step: the updates are simultaneous, each network following only its
own loss. D's fake term sees G's output detached.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .controller import m_global, update_k


def recon_loss(D: nn.Module, v: torch.Tensor, eta: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """L(v), the auto-encoder's mean per-pixel error on a batch (0-dim), and D's latent h."""
    h = D.encode(v)
    err = (D.decode(h) - v).abs()
    return (err if eta == 1 else err * err).mean(), h


def latent_constraint(z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """BEGAN-CS (Chang et al. 2018): mean over the batch of ||z - Enc(G(z))||_2."""
    return (z - h).norm(dim=1).mean()


@dataclass
class StepOut:
    """All 0-dim tensors on the training device (no host sync taken)."""

    loss_real: torch.Tensor  # L(x)
    loss_fake: torch.Tensor  # L(G(z_G)), which is also L_G
    loss_d: torch.Tensor  # L_D = L(x) - k_t L(G(z_D)) [+ alpha * L_cs]
    loss_cs: torch.Tensor  # ||z_D - Enc(G(z_D))||_2, batch mean (computed only with cs_alpha > 0)
    k: torch.Tensor  # k_{t+1}
    m_global: torch.Tensor


def _set_grads(params: list[nn.Parameter], grads: tuple[torch.Tensor, ...]) -> None:
    for p, g in zip(params, grads):
        p.grad = g


def began_step(G: nn.Module, D: nn.Module, opt_g: torch.optim.Optimizer,
               opt_d: torch.optim.Optimizer, x: torch.Tensor, z_d: torch.Tensor,
               z_g: torch.Tensor, k: torch.Tensor, *, gamma: float, lambda_k: float,
               k_max: float = 1.0, eta: int = 1, z_shared: bool = False,
               cs_alpha: float = 0.0,
               reduce: Callable[[list[torch.Tensor]], list[torch.Tensor]] | None = None
               ) -> StepOut:
    """One simultaneous update of G and D. `reduce` averages tensors over data-parallel
    ranks (gradients and the loss terms, so every rank's k_t update is the same)."""
    g_params = [p for p in G.parameters()]
    d_params = [p for p in D.parameters()]

    # G's loss; its graph is kept when D reuses the same fakes (z_shared).
    fake_g = G(z_g)
    loss_fake, h_fake = recon_loss(D, fake_g, eta)
    g_grads = torch.autograd.grad(loss_fake, g_params, retain_graph=z_shared)

    if z_shared:
        # The grads below are taken w.r.t. D only, so G's output acts detached.
        loss_fake_d, h_fake_d = loss_fake, h_fake
    else:
        with torch.no_grad():
            fake_d = G(z_d)
        loss_fake_d, h_fake_d = recon_loss(D, fake_d, eta)
    loss_real, _ = recon_loss(D, x, eta)
    loss_d = loss_real - k * loss_fake_d
    loss_cs = torch.zeros((), device=x.device)
    if cs_alpha > 0:
        loss_cs = latent_constraint(z_d, h_fake_d)
        loss_d = loss_d + cs_alpha * loss_cs
    d_grads = torch.autograd.grad(loss_d, d_params)
    if reduce is not None:  # one flat all-reduce: G's grads, D's grads, the loss terms
        terms = torch.stack([loss_real.detach(), loss_fake.detach(), loss_d.detach(),
                             loss_cs.detach()])
        out = reduce([*g_grads, *d_grads, terms])
        g_grads, d_grads = out[:len(g_params)], out[len(g_params):-1]
        loss_real, loss_fake, loss_d, loss_cs = out[-1].unbind()

    _set_grads(g_params, g_grads)
    _set_grads(d_params, d_grads)
    opt_g.step()
    opt_d.step()

    loss_real, loss_fake = loss_real.detach(), loss_fake.detach()
    return StepOut(
        loss_real=loss_real,
        loss_fake=loss_fake,
        loss_d=loss_d.detach(),
        loss_cs=loss_cs.detach(),
        k=update_k(k, loss_real, loss_fake, gamma, lambda_k, k_max),
        m_global=m_global(loss_real, loss_fake, gamma),
    )
