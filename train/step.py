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

Options against mode collapse (issue #10; each off by default, and off means the
update above, bit for bit):
- `alternating`: D steps first; then G's loss L(G(z_G)) is taken through the
  *updated* D and G steps. L(x) (hence gamma L(x)) is measured before D's
  update and L(G(z_G)) after it; k_t and M_global use these two values.
- `augment`: a transform T of every image D sees (real, and fake in both losses;
  see augment.py), D reconstructing T(v): L(v) = mean |T(v) - D(T(v))|.
- `pullaway` w: G minimises L(G(z_G)) + w * PT(Enc(G(z_G))), EBGAN's pull-away
  term on D's codes of its images (Zhao et al. 2017). Under data parallelism
  PT is taken over each rank's rows. The logged L(G(z_G)) leaves PT out.
- `cs_g` beta: G minimises L(G(z_G)) + beta * ||z_G - Enc(G(z_G))||_2 (the BEGAN-CS
  term, on G's side). BEGAN-CS puts it on D only, so a collapsed G pays nothing for
  it; here G must keep z recoverable from its images, as VEEGAN's reconstructor
  and InfoGAN's code term ask (Srivastava et al. 2017, Chen et al. 2016).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .controller import m_global, update_k


def recon_loss(D: nn.Module, v: torch.Tensor, eta: int = 1,
               augment: Callable[[torch.Tensor], torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """L(v), the auto-encoder's mean per-pixel error on a batch (0-dim), and D's latent h.
    With `augment`, D sees and reconstructs augment(v)."""
    if augment is not None:
        v = augment(v)
    h = D.encode(v)
    err = (D.decode(h) - v).abs()
    return (err if eta == 1 else err * err).mean(), h


def latent_constraint(z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """BEGAN-CS (Chang et al. 2018): mean over the batch of ||z - Enc(G(z))||_2."""
    return (z - h).norm(dim=1).mean()


def pullaway_term(h: torch.Tensor) -> torch.Tensor:
    """EBGAN's pull-away term: the mean squared cosine similarity over the batch's
    distinct pairs of codes, 1/(B(B-1)) sum_{i != j} cos(h_i, h_j)^2 (0 for B = 1)."""
    b = h.shape[0]
    if b < 2:
        return h.sum() * 0
    unit = h / h.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos2 = (unit @ unit.t()).pow(2)
    return (cos2.sum() - cos2.diagonal().sum()) / (b * (b - 1))


@dataclass
class StepOut:
    """All 0-dim tensors on the training device (no host sync taken)."""

    loss_real: torch.Tensor  # L(x)
    loss_fake: torch.Tensor  # L(G(z_G)), which is also L_G
    loss_d: torch.Tensor  # L_D = L(x) - k_t L(G(z_D)) [+ alpha * L_cs]
    loss_cs: torch.Tensor  # ||z_D - Enc(G(z_D))||_2, batch mean (computed only with cs_alpha > 0)
    k: torch.Tensor  # k_{t+1}
    m_global: torch.Tensor
    loss_pt: torch.Tensor | None = None  # the pull-away term (computed only with pullaway > 0)


def _set_grads(params: list[nn.Parameter], grads: tuple[torch.Tensor, ...]) -> None:
    for p, g in zip(params, grads):
        p.grad = g


def began_step(G: nn.Module, D: nn.Module, opt_g: torch.optim.Optimizer,
               opt_d: torch.optim.Optimizer, x: torch.Tensor, z_d: torch.Tensor,
               z_g: torch.Tensor, k: torch.Tensor, *, gamma: float, lambda_k: float,
               k_max: float = 1.0, eta: int = 1, z_shared: bool = False,
               cs_alpha: float = 0.0,
               reduce: Callable[[list[torch.Tensor]], list[torch.Tensor]] | None = None,
               alternating: bool = False,
               augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
               pullaway: float = 0.0, cs_g: float = 0.0) -> StepOut:
    """One simultaneous update of G and D (or D then G with `alternating`). `reduce`
    averages tensors over data-parallel ranks (gradients and the loss terms, so every
    rank's k_t update is the same)."""
    if alternating:
        return _alternating_step(G, D, opt_g, opt_d, x, z_d, z_g, k, gamma=gamma,
                                 lambda_k=lambda_k, k_max=k_max, eta=eta, cs_alpha=cs_alpha,
                                 reduce=reduce, augment=augment, pullaway=pullaway,
                                 cs_g=cs_g)
    g_params = [p for p in G.parameters()]
    d_params = [p for p in D.parameters()]

    # G's loss; its graph is kept when D reuses the same fakes (z_shared).
    fake_g = G(z_g)
    loss_fake, h_fake = recon_loss(D, fake_g, eta, augment)
    loss_g, loss_pt = _g_loss(loss_fake, h_fake, pullaway, z_g, cs_g)
    g_grads = torch.autograd.grad(loss_g, g_params, retain_graph=z_shared)

    if z_shared:
        # The grads below are taken w.r.t. D only, so G's output acts detached.
        loss_fake_d, h_fake_d = loss_fake, h_fake
    else:
        with torch.no_grad():
            fake_d = G(z_d)
        loss_fake_d, h_fake_d = recon_loss(D, fake_d, eta, augment)
    loss_real, _ = recon_loss(D, x, eta, augment)
    loss_d, loss_cs = _d_loss(loss_real, loss_fake_d, h_fake_d, z_d, k, cs_alpha)
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

    return _out(loss_real, loss_fake, loss_d, loss_cs, loss_pt, k, gamma, lambda_k, k_max)


def _d_loss(loss_real: torch.Tensor, loss_fake_d: torch.Tensor, h_fake_d: torch.Tensor,
            z_d: torch.Tensor, k: torch.Tensor, cs_alpha: float
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """L_D = L(x) - k_t L(G(z_D)) [+ alpha * L_cs], and L_cs (0 when off)."""
    loss_d = loss_real - k * loss_fake_d
    loss_cs = torch.zeros((), device=loss_real.device)
    if cs_alpha > 0:
        loss_cs = latent_constraint(z_d, h_fake_d)
        loss_d = loss_d + cs_alpha * loss_cs
    return loss_d, loss_cs


def _g_loss(loss_fake: torch.Tensor, h_fake: torch.Tensor, pullaway: float,
            z_g: torch.Tensor, cs_g: float = 0.0
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """L_G = L(G(z_G)) [+ w * PT(Enc(G(z_G)))] [+ beta * ||z_G - Enc(G(z_G))||], and PT
    (None when off)."""
    loss_g, loss_pt = loss_fake, None
    if pullaway > 0:
        loss_pt = pullaway_term(h_fake)
        loss_g = loss_g + pullaway * loss_pt
    if cs_g > 0:
        loss_g = loss_g + cs_g * latent_constraint(z_g, h_fake)
    return loss_g, loss_pt


def _out(loss_real: torch.Tensor, loss_fake: torch.Tensor, loss_d: torch.Tensor,
         loss_cs: torch.Tensor, loss_pt: torch.Tensor | None, k: torch.Tensor, gamma: float,
         lambda_k: float, k_max: float) -> StepOut:
    loss_real, loss_fake = loss_real.detach(), loss_fake.detach()
    return StepOut(
        loss_real=loss_real,
        loss_fake=loss_fake,
        loss_d=loss_d.detach(),
        loss_cs=loss_cs.detach(),
        k=update_k(k, loss_real, loss_fake, gamma, lambda_k, k_max),
        m_global=m_global(loss_real, loss_fake, gamma),
        loss_pt=None if loss_pt is None else loss_pt.detach(),
    )


def _alternating_step(G: nn.Module, D: nn.Module, opt_g: torch.optim.Optimizer,
                      opt_d: torch.optim.Optimizer, x: torch.Tensor, z_d: torch.Tensor,
                      z_g: torch.Tensor, k: torch.Tensor, *, gamma: float, lambda_k: float,
                      k_max: float, eta: int, cs_alpha: float,
                      reduce: Callable[[list[torch.Tensor]], list[torch.Tensor]] | None,
                      augment: Callable[[torch.Tensor], torch.Tensor] | None,
                      pullaway: float, cs_g: float = 0.0) -> StepOut:
    """D steps on L_D at the current G; then G steps on L_G through the updated D."""
    g_params = [p for p in G.parameters()]
    d_params = [p for p in D.parameters()]

    with torch.no_grad():
        fake_d = G(z_d)
    loss_fake_d, h_fake_d = recon_loss(D, fake_d, eta, augment)
    loss_real, _ = recon_loss(D, x, eta, augment)
    loss_d, loss_cs = _d_loss(loss_real, loss_fake_d, h_fake_d, z_d, k, cs_alpha)
    d_grads = torch.autograd.grad(loss_d, d_params)
    if reduce is not None:
        terms = torch.stack([loss_real.detach(), loss_d.detach(), loss_cs.detach()])
        out = reduce([*d_grads, terms])
        d_grads = out[:-1]
        loss_real, loss_d, loss_cs = out[-1].unbind()
    _set_grads(d_params, d_grads)
    opt_d.step()

    fake_g = G(z_g)
    loss_fake, h_fake = recon_loss(D, fake_g, eta, augment)
    loss_g, loss_pt = _g_loss(loss_fake, h_fake, pullaway, z_g, cs_g)
    g_grads = torch.autograd.grad(loss_g, g_params)
    if reduce is not None:
        out = reduce([*g_grads, loss_fake.detach()[None]])
        g_grads, loss_fake = out[:-1], out[-1][0]
    _set_grads(g_params, g_grads)
    opt_g.step()

    return _out(loss_real, loss_fake, loss_d, loss_cs, loss_pt, k, gamma, lambda_k, k_max)
