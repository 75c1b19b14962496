"""The hand-written gradient of the L1 inversion loss equals torch.autograd's."""

import pytest
import torch

from began.export.vjp import GeneratorL1Grad
from began.models import Generator, ModelConfig


@pytest.mark.parametrize("res,skip,residual,carry", [
    (16, False, False, 0.0), (32, False, False, 0.0), (32, True, False, 0.0),
    (32, True, True, 0.3), (64, False, True, 1.0), (16, False, True, 0.0)])
def test_gradient_matches_autograd(res, skip, residual, carry):
    torch.manual_seed(res + skip + residual)
    cfg = ModelConfig(resolution=res, n=4, z_dim=6, h_dim=6, repeat=2, skip=skip,
                      vanishing_residual=residual)
    G = Generator(cfg).double()
    G.set_carry(carry)
    z = (torch.rand(3, 6, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    target = torch.rand(3, 3, res, res, dtype=torch.float64) * 2 - 1
    loss_ref = (G(z) - target).abs().flatten(1).mean(1)
    (grad_ref,) = torch.autograd.grad(loss_ref.sum(), z)
    loss, grad = GeneratorL1Grad(G)(z.detach(), target)
    torch.testing.assert_close(loss, loss_ref.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-9, atol=1e-12)
    assert grad.abs().max() > 0


def test_each_image_gets_its_own_gradient():
    torch.manual_seed(0)
    G = Generator(ModelConfig(resolution=16, n=4, z_dim=5, h_dim=5)).double()
    z = torch.rand(4, 5, dtype=torch.float64) * 2 - 1
    target = torch.rand(4, 3, 16, 16, dtype=torch.float64)
    loss, grad = GeneratorL1Grad(G)(z, target)
    loss1, grad1 = GeneratorL1Grad(G)(z[2:3], target[2:3])
    torch.testing.assert_close(loss[2:3], loss1)
    torch.testing.assert_close(grad[2:3], grad1)


@pytest.mark.parametrize("res,skip", [(16, False), (32, True)])
def test_gradient_matches_autograd_with_out_tanh(res, skip):
    torch.manual_seed(7 + res)
    cfg = ModelConfig(resolution=res, n=4, z_dim=6, h_dim=6, skip=skip, out_tanh=True)
    G = Generator(cfg).double()
    with torch.no_grad():  # saturate part of the output, where tanh' is far from 1
        G.out.bias.fill_(1.5)
    z = (torch.rand(3, 6, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    target = torch.rand(3, 3, res, res, dtype=torch.float64) * 2 - 1
    out = G(z)
    assert out.abs().max() < 1 and out.max() > 0.9
    loss_ref = (out - target).abs().flatten(1).mean(1)
    (grad_ref,) = torch.autograd.grad(loss_ref.sum(), z)
    loss, grad = GeneratorL1Grad(G)(z.detach(), target)
    torch.testing.assert_close(loss, loss_ref.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-9, atol=1e-12)
    # Without the tanh' factor the gradient would differ: the test can fail.
    G.cfg = ModelConfig(**{**cfg.to_dict(), "out_tanh": False})
    assert not torch.allclose(GeneratorL1Grad(G)(z.detach(), target)[1], grad_ref)
