"""The hand-written gradient of the inversion loss, mean |clip(G(z), -1, 1) - target|,
equals torch.autograd's, in float64, on every architecture option."""

import pytest
import torch

from began.export.vjp import GeneratorL1Grad
from began.models import Generator, ModelConfig


def reference(G, z, target):
    """The loss the CLI means, differentiated by torch.autograd (clamp's own backward)."""
    z = z.detach().requires_grad_(True)
    loss = (G(z).clamp(-1, 1) - target).abs().flatten(1).mean(1)
    (grad,) = torch.autograd.grad(loss.sum(), z)
    return loss.detach(), grad


def spread_output(G, scale):
    """Widen G's output so that part of it lies past [-1, 1], where the clip has no gradient."""
    with torch.no_grad():
        G.out.weight.mul_(scale)
        G.out.bias.mul_(scale)


@pytest.mark.parametrize("res,skip,residual,carry,tanh", [
    (16, False, False, 0.0, False), (32, False, False, 0.0, False), (32, True, False, 0.0, False),
    (32, True, True, 0.3, False), (64, False, True, 1.0, False), (16, False, True, 0.0, False),
    (16, False, False, 0.0, True), (32, True, True, 0.3, True)])
def test_gradient_matches_autograd(res, skip, residual, carry, tanh):
    torch.manual_seed(res + skip + residual + 10 * tanh)
    cfg = ModelConfig(resolution=res, n=4, z_dim=6, h_dim=6, repeat=2, skip=skip,
                      vanishing_residual=residual, out_tanh=tanh)
    G = Generator(cfg).double()
    G.set_carry(carry)
    z = torch.rand(3, 6, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        spread = (4.0 if tanh else 1.0) / G(z).abs().quantile(0.6).item()  # 40% past +-1
    spread_output(G, spread)
    out = G(z).detach()
    if tanh:  # tanh never reaches +-1: the clip is a no-op, tanh' matters instead
        assert out.abs().max() < 1 and out.abs().max() > 0.9
    else:
        outside = (out.abs() > 1).double().mean().item()
        assert 0.2 < outside < 0.7, outside
    target = torch.rand(3, 3, res, res, dtype=torch.float64) * 2 - 1
    loss_ref, grad_ref = reference(G, z, target)
    loss, grad = GeneratorL1Grad(G)(z, target)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-9, atol=1e-12)
    assert grad.abs().max() > 0
    if not tanh:  # the unclipped loss's gradient is a different vector: the test can fail
        zz = z.clone().requires_grad_(True)
        unclipped = (G(zz) - target).abs().flatten(1).mean(1)
        (grad_unclipped,) = torch.autograd.grad(unclipped.sum(), zz)
        assert not torch.allclose(grad, grad_unclipped, rtol=1e-3, atol=1e-6)
    else:  # without the tanh' factor the gradient would differ
        G.cfg = ModelConfig(**{**cfg.to_dict(), "out_tanh": False})
        assert not torch.allclose(GeneratorL1Grad(G)(z, target)[1], grad_ref)


def test_clipped_pixels_give_no_gradient():
    """A target G already meets after clipping: loss 0 and gradient 0, though G overshoots."""
    torch.manual_seed(1)
    G = Generator(ModelConfig(resolution=16, n=4, z_dim=5, h_dim=5)).double()
    z = torch.rand(2, 5, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        G.out.bias.fill_(3.0)  # every pixel far above 1
        assert G(z).min() > 1
    loss, grad = GeneratorL1Grad(G)(z, torch.ones(2, 3, 16, 16, dtype=torch.float64))
    assert loss.abs().max() == 0 and grad.abs().max() == 0
    loss, grad = GeneratorL1Grad(G)(z, torch.zeros(2, 3, 16, 16, dtype=torch.float64))
    torch.testing.assert_close(loss, torch.ones(2, dtype=torch.float64))
    assert grad.abs().max() == 0  # wrong, but no pixel can move towards the target


def test_each_image_gets_its_own_gradient():
    torch.manual_seed(0)
    G = Generator(ModelConfig(resolution=16, n=4, z_dim=5, h_dim=5)).double()
    z = torch.rand(4, 5, dtype=torch.float64) * 2 - 1
    target = torch.rand(4, 3, 16, 16, dtype=torch.float64)
    loss, grad = GeneratorL1Grad(G)(z, target)
    loss1, grad1 = GeneratorL1Grad(G)(z[2:3], target[2:3])
    torch.testing.assert_close(loss[2:3], loss1)
    torch.testing.assert_close(grad[2:3], grad1)


def test_cli_fallback_for_unclipped_graphs_gives_the_clipped_gradient():
    """Bundles exported before the clip carry an invert_grad of |G(z) - x|: the CLI's
    latent.loss_and_grad turns two calls of it into the clipped loss's gradient."""
    import numpy as np

    from began.latent import loss_and_grad

    torch.manual_seed(2)
    G = Generator(ModelConfig(resolution=16, n=4, z_dim=6, h_dim=6)).double()
    z = torch.rand(4, 6, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        spread_output(G, 1.0 / G(z).abs().quantile(0.6).item())

    class OldBundle:  # what onnxruntime runs for such a bundle, in float64
        bundle = type("B", (), {"manifest": {}})()

        def run(self, graph, *inputs):
            zz, *rest = (torch.from_numpy(np.asarray(a, np.float64)) for a in inputs)
            if graph == "generator":
                with torch.no_grad():
                    return [G(zz).numpy()]
            zz.requires_grad_(True)
            loss = (G(zz) - rest[0]).abs().flatten(1).mean(1)
            (grad,) = torch.autograd.grad(loss.sum(), zz)
            return [loss.detach().numpy(), grad.numpy()]

    target = torch.rand(4, 3, 16, 16, dtype=torch.float64) * 2 - 1
    loss_ref, grad_ref = reference(G, z, target)
    loss, grad = loss_and_grad(OldBundle(), z.numpy(), target.numpy(), clips=False)
    np.testing.assert_allclose(loss, loss_ref.numpy(), rtol=1e-6)  # float32, as the CLI's
    np.testing.assert_allclose(grad, grad_ref.numpy(), rtol=1e-9, atol=1e-12)
    unclipped = OldBundle().run("invert_grad", z.numpy(), target.numpy())[1]
    assert not np.allclose(unclipped, grad_ref.numpy(), rtol=1e-3, atol=1e-6)
