"""One BEGAN step computes the paper's update, checked against a separate
implementation written with .backward() and explicit copies."""

import copy

import pytest
import torch

from began.models import ModelConfig, build
from began.train.step import began_step, recon_loss

CFG = ModelConfig(resolution=16, n=4, z_dim=3, h_dim=3)


def setup(seed=0):
    torch.manual_seed(seed)
    G, D = build(CFG)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    z_d, z_g = torch.rand(4, 3) * 2 - 1, torch.rand(4, 3) * 2 - 1
    return G, D, x, z_d, z_g


def adam(m):
    return torch.optim.Adam(m.parameters(), lr=1e-3, betas=(0.5, 0.999))


def reference_step(G, D, x, z_d, z_g, k, gamma, lambda_k, cs_alpha=0.0):
    """The paper's losses, each network's gradient taken at the same weights."""
    G0 = copy.deepcopy(G)
    D0 = copy.deepcopy(D)  # frozen copy: G's loss must see D before its update
    for p in D0.parameters():
        p.requires_grad_(False)
    opt_g, opt_d = adam(G), adam(D)
    loss_g = (D0(G(z_g)) - G(z_g)).abs().mean()
    loss_g.backward()
    fake = G0(z_d).detach()
    loss_real = (D(x) - x).abs().mean()
    loss_d = loss_real - k * (D(fake) - fake).abs().mean()
    if cs_alpha:  # BEGAN-CS: || z - Enc(G(z)) ||_2 per sample, batch mean
        loss_d = loss_d + cs_alpha * torch.sqrt(((z_d - D.encode(fake)) ** 2).sum(1)).mean()
    loss_d.backward()
    opt_g.step(), opt_d.step()
    k_new = min(max(k + lambda_k * (gamma * loss_real.item() - loss_g.item()), 0.0), 1.0)
    m = loss_real.item() + abs(gamma * loss_real.item() - loss_g.item())
    return loss_real.item(), loss_g.item(), loss_d.item(), k_new, m


@pytest.mark.parametrize("k,cs_alpha", [(0.0, 0.0), (0.37, 0.0), (0.37, 0.1)])
def test_step_matches_reference(k, cs_alpha):
    G, D, x, z_d, z_g = setup()
    Gr, Dr = copy.deepcopy(G), copy.deepcopy(D)
    out = began_step(G, D, adam(G), adam(D), x, z_d, z_g, torch.tensor(k), gamma=0.5,
                     lambda_k=0.01, cs_alpha=cs_alpha)
    ref = reference_step(Gr, Dr, x, z_d, z_g, k, gamma=0.5, lambda_k=0.01, cs_alpha=cs_alpha)
    assert (out.loss_cs.item() > 0) == (cs_alpha > 0)
    got = (out.loss_real.item(), out.loss_fake.item(), out.loss_d.item(), out.k.item(),
           out.m_global.item())
    assert got == pytest.approx(ref, rel=1e-6, abs=1e-7)
    for a, b in zip([*G.parameters(), *D.parameters()], [*Gr.parameters(), *Dr.parameters()]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_losses_are_taken_before_the_update():
    G, D, x, z_d, z_g = setup(1)
    before = recon_loss(D, x)[0].item()
    out = began_step(G, D, adam(G), adam(D), x, z_d, z_g, torch.tensor(0.0), gamma=0.5,
                     lambda_k=0.001)
    assert out.loss_real.item() == pytest.approx(before, rel=1e-6)
    assert recon_loss(D, x)[0].item() != pytest.approx(before, rel=1e-6)  # D did move


def test_with_k_zero_fakes_do_not_move_d():
    G, D, x, z_d, z_g = setup(2)
    D_only = copy.deepcopy(D)
    opt = adam(D_only)
    recon_loss(D_only, x)[0].backward()
    opt.step()
    began_step(G, D, adam(G), adam(D), x, z_d, z_g, torch.tensor(0.0), gamma=0.5,
               lambda_k=0.001)
    for a, b in zip(D.parameters(), D_only.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_shared_z_equals_separate_z_with_the_same_draw():
    G, D, x, _, z = setup(3)
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    a = began_step(G, D, adam(G), adam(D), x, z, z, torch.tensor(0.2), gamma=0.5,
                   lambda_k=0.001, z_shared=True)
    b = began_step(G2, D2, adam(G2), adam(D2), x, z.clone(), z, torch.tensor(0.2), gamma=0.5,
                   lambda_k=0.001, z_shared=False)
    assert a.loss_d.item() == pytest.approx(b.loss_d.item(), rel=1e-6)
    for p, q in zip([*G.parameters(), *D.parameters()], [*G2.parameters(), *D2.parameters()]):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)


def test_eta_two_squares_the_error():
    G, D, x, *_ = setup(4)
    e = (D(x) - x).abs()
    assert recon_loss(D, x, eta=2)[0].item() == pytest.approx((e * e).mean().item(), rel=1e-6)
