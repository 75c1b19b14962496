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


def reference_step(G, D, x, z_d, z_g, k, gamma, lambda_k, cs_alpha=0.0, cs_g=0.0):
    """The paper's losses, each network's gradient taken at the same weights."""
    G0 = copy.deepcopy(G)
    D0 = copy.deepcopy(D)  # frozen copy: G's loss must see D before its update
    for p in D0.parameters():
        p.requires_grad_(False)
    opt_g, opt_d = adam(G), adam(D)
    loss_g = (D0(G(z_g)) - G(z_g)).abs().mean()
    total_g = loss_g
    if cs_g:  # the latent constraint on G's side, through the frozen encoder
        total_g = loss_g + cs_g * torch.sqrt(((z_g - D0.encode(G(z_g))) ** 2).sum(1)).mean()
    total_g.backward()
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


# --- issue #10's options ------------------------------------------------------------------

from began.train.augment import d_inputs  # noqa: E402
from began.train.controller import m_global, update_k  # noqa: E402
from began.train.step import pullaway_term  # noqa: E402


def frozen_step(G, D, opt_g, opt_d, x, z_d, z_g, k, *, gamma, lambda_k, z_shared=False,
                cs_alpha=0.0):
    """began_step as it was before the options were added (commit 998ac1a), kept verbatim
    in substance: the defaults must still compute exactly this."""
    g_params, d_params = list(G.parameters()), list(D.parameters())
    fake_g = G(z_g)
    loss_fake, h_fake = recon_loss(D, fake_g)
    g_grads = torch.autograd.grad(loss_fake, g_params, retain_graph=z_shared)
    if z_shared:
        loss_fake_d, h_fake_d = loss_fake, h_fake
    else:
        with torch.no_grad():
            fake_d = G(z_d)
        loss_fake_d, h_fake_d = recon_loss(D, fake_d)
    loss_real, _ = recon_loss(D, x)
    loss_d = loss_real - k * loss_fake_d
    if cs_alpha > 0:
        loss_d = loss_d + cs_alpha * (z_d - h_fake_d).norm(dim=1).mean()
    d_grads = torch.autograd.grad(loss_d, d_params)
    for p, g in zip([*g_params, *d_params], [*g_grads, *d_grads]):
        p.grad = g
    opt_g.step(), opt_d.step()
    lr, lf = loss_real.detach(), loss_fake.detach()
    return update_k(k, lr, lf, gamma, lambda_k, 1.0), m_global(lr, lf, gamma)


@pytest.mark.parametrize("z_shared,cs_alpha", [(False, 0.0), (True, 0.0), (False, 0.1)])
def test_defaults_are_bit_identical_to_the_step_before_the_options(z_shared, cs_alpha):
    G, D, x, z_d, z_g = setup(5)
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    o = [adam(G), adam(D)]
    o2 = [adam(G2), adam(D2)]
    k = k2 = torch.tensor(0.3)
    for i in range(3):
        zd = z_g if z_shared else z_d + 0.01 * i
        out = began_step(G, D, *o, x, zd, z_g, k, gamma=0.5, lambda_k=0.01,
                         z_shared=z_shared, cs_alpha=cs_alpha)
        k2, m2 = frozen_step(G2, D2, *o2, x, zd, z_g, k2, gamma=0.5, lambda_k=0.01,
                             z_shared=z_shared, cs_alpha=cs_alpha)
        k = out.k
        assert torch.equal(out.k, k2) and torch.equal(out.m_global, m2)
        assert out.loss_pt is None
    for a, b in zip([*G.parameters(), *D.parameters()], [*G2.parameters(), *D2.parameters()]):
        assert torch.equal(a, b)


def sequential_reference(G, D, x, z_d, z_g, k, gamma, lambda_k, pullaway=0.0, cs_g=0.0):
    """Alternating updates with .backward(): D steps, then G's loss through the new D."""
    opt_g, opt_d = adam(G), adam(D)
    fake = G(z_d).detach()
    loss_real = (D(x) - x).abs().mean()
    loss_d = loss_real - k * (D(fake) - fake).abs().mean()
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    for p in D.parameters():
        p.requires_grad_(False)
    img = G(z_g)
    loss_g = (D(img) - img).abs().mean()
    total = loss_g
    if pullaway:
        h = D.encode(img)
        total = loss_g + pullaway * pullaway_by_hand(h)
    if cs_g:
        total = total + cs_g * (z_g - D.encode(img)).norm(dim=1).mean()
    opt_g.zero_grad()
    total.backward()
    opt_g.step()
    for p in D.parameters():
        p.requires_grad_(True)
    k_new = min(max(k + lambda_k * (gamma * loss_real.item() - loss_g.item()), 0.0), 1.0)
    return loss_real.item(), loss_g.item(), loss_d.item(), k_new


@pytest.mark.parametrize("k,pullaway", [(0.0, 0.0), (0.37, 0.0), (0.37, 0.5)])
def test_alternating_equals_a_sequential_implementation(k, pullaway):
    G, D, x, z_d, z_g = setup(6)
    Gr, Dr = copy.deepcopy(G), copy.deepcopy(D)
    out = began_step(G, D, adam(G), adam(D), x, z_d, z_g, torch.tensor(k), gamma=0.5,
                     lambda_k=0.01, alternating=True, pullaway=pullaway)
    ref = sequential_reference(Gr, Dr, x, z_d, z_g, k, 0.5, 0.01, pullaway)
    got = (out.loss_real.item(), out.loss_fake.item(), out.loss_d.item(), out.k.item())
    assert got == pytest.approx(ref, rel=1e-6, abs=1e-7)
    for a, b in zip([*G.parameters(), *D.parameters()], [*Gr.parameters(), *Dr.parameters()]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cs_alpha", [0.0, 0.1])
def test_cs_g_adds_the_latent_constraint_to_g_only(cs_alpha):
    G, D, x, z_d, z_g = setup(11)
    Gr, Dr = copy.deepcopy(G), copy.deepcopy(D)
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    out = began_step(G, D, adam(G), adam(D), x, z_d, z_g, torch.tensor(0.37), gamma=0.5,
                     lambda_k=0.01, cs_alpha=cs_alpha, cs_g=0.7)
    ref = reference_step(Gr, Dr, x, z_d, z_g, 0.37, 0.5, 0.01, cs_alpha=cs_alpha, cs_g=0.7)
    got = (out.loss_real.item(), out.loss_fake.item(), out.loss_d.item(), out.k.item(),
           out.m_global.item())
    assert got == pytest.approx(ref, rel=1e-6, abs=1e-7)  # logged L(G(z)) leaves it out
    for a, b in zip([*G.parameters(), *D.parameters()], [*Gr.parameters(), *Dr.parameters()]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    plain = began_step(G2, D2, adam(G2), adam(D2), x, z_d, z_g, torch.tensor(0.37),
                       gamma=0.5, lambda_k=0.01, cs_alpha=cs_alpha)
    for p, q in zip(D.parameters(), D2.parameters()):
        assert torch.equal(p, q)  # D's update does not see G's term
    assert any(not torch.equal(p, q) for p, q in zip(G.parameters(), G2.parameters()))
    assert plain.loss_fake.item() == out.loss_fake.item()


def test_cs_g_with_alternating_updates_equals_a_sequential_implementation():
    G, D, x, z_d, z_g = setup(12)
    Gr, Dr = copy.deepcopy(G), copy.deepcopy(D)
    out = began_step(G, D, adam(G), adam(D), x, z_d, z_g, torch.tensor(0.37), gamma=0.5,
                     lambda_k=0.01, alternating=True, cs_g=0.7)
    ref = sequential_reference(Gr, Dr, x, z_d, z_g, 0.37, 0.5, 0.01, cs_g=0.7)
    got = (out.loss_real.item(), out.loss_fake.item(), out.loss_d.item(), out.k.item())
    assert got == pytest.approx(ref, rel=1e-6, abs=1e-7)
    for a, b in zip([*G.parameters(), *D.parameters()], [*Gr.parameters(), *Dr.parameters()]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_alternating_differs_from_simultaneous_after_one_step():
    G, D, x, z_d, z_g = setup(7)
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    a = began_step(G, D, adam(G), adam(D), x, z_d, z_g, torch.tensor(0.2), gamma=0.5,
                   lambda_k=0.01, alternating=True)
    b = began_step(G2, D2, adam(G2), adam(D2), x, z_d, z_g, torch.tensor(0.2), gamma=0.5,
                   lambda_k=0.01)
    # D's update is the same (it steps first, at the same G); G's is not.
    for p, q in zip(D.parameters(), D2.parameters()):
        assert torch.equal(p, q)
    assert a.loss_real.item() == b.loss_real.item()
    assert a.loss_fake.item() != b.loss_fake.item()  # measured through the updated D
    assert any(not torch.equal(p, q) for p, q in zip(G.parameters(), G2.parameters()))


def pullaway_by_hand(h):
    b = h.shape[0]
    total = 0.0
    for i in range(b):
        for j in range(b):
            if i != j:
                total = total + (h[i] @ h[j] / (h[i].norm() * h[j].norm())) ** 2
    return total / (b * (b - 1))


def test_pullaway_equals_a_hand_computation():
    torch.manual_seed(8)
    h = torch.randn(5, 4, dtype=torch.float64)
    assert pullaway_term(h).item() == pytest.approx(pullaway_by_hand(h).item(), rel=1e-12)
    same = torch.ones(3, 4, dtype=torch.float64) * torch.tensor([[1.0], [2.0], [0.5]],
                                                                 dtype=torch.float64)
    assert pullaway_term(same).item() == pytest.approx(1.0)  # all parallel: cos^2 = 1
    eye = torch.eye(4, dtype=torch.float64)
    assert pullaway_term(eye).item() == 0.0  # orthogonal codes
    assert pullaway_term(h[:1]).item() == 0.0


def test_pullaway_moves_only_g_and_is_reported():
    G, D, x, z_d, z_g = setup(9)
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    a = began_step(G, D, adam(G), adam(D), x, z_d, z_g, torch.tensor(0.2), gamma=0.5,
                   lambda_k=0.01, pullaway=1.0)
    b = began_step(G2, D2, adam(G2), adam(D2), x, z_d, z_g, torch.tensor(0.2), gamma=0.5,
                   lambda_k=0.01)
    assert a.loss_pt is not None and a.loss_pt.item() > 0
    assert a.loss_fake.item() == b.loss_fake.item()  # L(G(z)) is logged without PT
    for p, q in zip(D.parameters(), D2.parameters()):
        assert torch.equal(p, q)
    assert any(not torch.equal(p, q) for p, q in zip(G.parameters(), G2.parameters()))


def test_augment_is_what_d_sees_and_reconstructs():
    G, D, x, z_d, z_g = setup(10)
    gen = torch.Generator().manual_seed(3)
    T = d_inputs("translation,cutout,color", 0.0, gen)
    state = gen.get_state()
    out = began_step(G, D, adam(G), adam(D), x, z_d, z_g, torch.tensor(0.0), gamma=0.5,
                     lambda_k=0.01, augment=T, z_shared=False)
    # Replay the draws: G's fakes first, then D's fakes, then the reals.
    G0, D0, *_ = setup(10)
    gen.set_state(state)
    with torch.no_grad():
        tf = T(G0(z_g))
        loss_fake = (D0(tf) - tf).abs().mean()
        T(G0(z_d))
        tx = T(x)
        loss_real = (D0(tx) - tx).abs().mean()
    assert out.loss_real.item() == pytest.approx(loss_real.item(), rel=1e-6)
    assert out.loss_fake.item() == pytest.approx(loss_fake.item(), rel=1e-6)
    assert not torch.allclose(tx, x)


def test_alternating_with_augment_over_two_ranks_equals_one_process():
    """Two data-parallel ranks (threads here, with an averaging `reduce`, as
    distributed.Dist.mean does) compute the one-process update on the global batch."""
    import threading

    G, D, x, z_d, z_g = setup(11)
    world, box, barrier = 2, [None, None], threading.Barrier(2)

    def reduce_for(rank):
        def reduce(tensors):
            box[rank] = torch.cat([t.reshape(-1) for t in tensors])
            barrier.wait()
            mean = (box[0] + box[1]) / world
            barrier.wait()
            out, i = [], 0
            for t in tensors:
                out.append(mean[i:i + t.numel()].view_as(t))
                i += t.numel()
            return out
        return reduce

    def run(rank, results):
        Gr, Dr = copy.deepcopy(G), copy.deepcopy(D)
        rows = slice(2 * rank, 2 * rank + 2)
        T = d_inputs("translation,cutout,color", 0.05, torch.Generator().manual_seed(4),
                     batch=4, rows=rows)
        out = began_step(Gr, Dr, adam(Gr), adam(Dr), x[rows], z_d[rows], z_g[rows],
                         torch.tensor(0.3), gamma=0.5, lambda_k=0.01, cs_alpha=0.1,
                         alternating=True, augment=T, reduce=reduce_for(rank))
        results[rank] = (Gr, Dr, out)

    results = [None, None]
    threads = [threading.Thread(target=run, args=(r, results)) for r in range(world)]
    [t.start() for t in threads], [t.join() for t in threads]
    T = d_inputs("translation,cutout,color", 0.05, torch.Generator().manual_seed(4))
    one = began_step(G, D, adam(G), adam(D), x, z_d, z_g, torch.tensor(0.3), gamma=0.5,
                     lambda_k=0.01, cs_alpha=0.1, alternating=True, augment=T)
    (G0, D0, a), (G1, D1, b) = results
    assert torch.equal(a.k, b.k)  # every rank holds the same k_t and weights
    for p, q in zip([*G0.parameters(), *D0.parameters()], [*G1.parameters(), *D1.parameters()]):
        assert torch.equal(p, q)
    for name in ("loss_real", "loss_fake", "loss_d", "loss_cs", "k"):
        torch.testing.assert_close(getattr(a, name), getattr(one, name), rtol=1e-5, atol=1e-6)
    for p, q in zip([*G0.parameters(), *D0.parameters()], [*G.parameters(), *D.parameters()]):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
