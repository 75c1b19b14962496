"""--grey: grey data, one channel drawn by G and D's decoder, shown as RGB (R = G = B);
the data decoded to grey; the inversion gradient, export and the CLI alike."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from began.decode import Preprocess, decode_image
from began.models import ModelConfig, build

from test_vjp import reference

ARCHS = [dict(arch="paper", n=4), dict(arch="small", n=8, fc_dim=32)]


@pytest.mark.parametrize("kw", ARCHS, ids=["paper", "small"])
def test_grey_networks_draw_one_channel_as_rgb(kw):
    torch.manual_seed(0)
    grey = ModelConfig(resolution=16, z_dim=6, h_dim=5, grey=True, **kw)
    colour = ModelConfig(resolution=16, z_dim=6, h_dim=5, **kw)
    G, D = build(grey)
    G.eval(), D.eval()
    z = torch.rand(3, 6) * 2 - 1
    x = G(z)
    assert x.shape == (3, 3, 16, 16)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    r = D(torch.rand(3, 3, 16, 16) * 2 - 1)
    assert r.shape == (3, 3, 16, 16) and torch.equal(r[:, 0], r[:, 2])
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    G_rgb, D_rgb = build(colour)
    assert count(G_rgb) > count(G) and count(D_rgb) > count(D)  # two output channels fewer
    assert not torch.equal(G_rgb.eval()(z)[:, 0], G_rgb(z)[:, 1])


@pytest.mark.parametrize("tanh", [False, True])
def test_paper_inversion_gradient_matches_autograd(tanh):
    from began.export.vjp import GeneratorL1Grad

    torch.manual_seed(3)
    cfg = ModelConfig(resolution=32, n=4, z_dim=6, h_dim=6, skip=True, out_tanh=tanh,
                      grey=True)
    G = build(cfg)[0].double()
    with torch.no_grad():  # some pixels past [-1, 1], where the clip has no gradient
        G.out.weight.mul_(3.0)
    z = torch.rand(3, 6, dtype=torch.float64) * 2 - 1
    target = torch.rand(3, 3, 32, 32, dtype=torch.float64) * 2 - 1
    loss_ref, grad_ref = reference(G, z, target)
    loss, grad = GeneratorL1Grad(G)(z, target)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-9, atol=1e-12)
    assert grad.abs().max() > 0


def test_small_inversion_gradient_matches_autograd():
    from began.export.vjp import GeneratorL1Grad

    torch.manual_seed(4)
    cfg = ModelConfig(resolution=32, n=8, z_dim=6, h_dim=5, arch="small", fc_dim=32, grey=True)
    G = build(cfg)[0].train()
    G(torch.rand(64, 6) * 2 - 1)  # non-trivial running statistics
    G.eval()
    z = (torch.rand(4, 6) * 2 - 1).requires_grad_()
    target = torch.rand(4, 3, 32, 32) * 2 - 1
    loss = (G(z).clamp(-1, 1) - target).abs().flatten(1).mean(1)
    (want,) = torch.autograd.grad(loss.sum(), z)
    got_loss, got = GeneratorL1Grad(G)(z.detach(), target)
    assert torch.allclose(got_loss, loss, atol=1e-6)
    assert torch.allclose(got, want, atol=1e-6, rtol=1e-4) and want.abs().max() > 1e-4


def test_decoding_to_grey(tmp_path):
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    Image.fromarray(colour).save(tmp_path / "c.png")
    got = decode_image(tmp_path / "c.png", Preprocess(resolution=20, grey=True))
    want = np.asarray(Image.fromarray(colour).convert("L"))
    assert np.array_equal(got[..., 0], want) and np.array_equal(got[..., 2], want)
    # grey data (Fashion-MNIST as RGB) decodes to the very same pixels either way
    Image.fromarray(np.repeat(colour[..., :1], 3, axis=2)).save(tmp_path / "g.png")
    assert np.array_equal(decode_image(tmp_path / "g.png", Preprocess(resolution=16)),
                          decode_image(tmp_path / "g.png", Preprocess(resolution=16, grey=True)))
    with pytest.raises(ValueError, match="grey must be true or false"):
        Preprocess(resolution=16, grey="yes")


def test_cache_keys_of_colour_data_do_not_name_grey():
    from began.train.data import _key_fields

    assert "grey" not in _key_fields(Preprocess(resolution=16))
    assert _key_fields(Preprocess(resolution=16, grey=True))["grey"] is True


def test_a_grey_run_exports_and_the_cli_draws_and_reads_grey(image_folder, tmp_path, capsys):
    from began.app import run
    from began.bundle import load_bundle
    from began.inputs import preprocess_for

    out, model = tmp_path / "run", tmp_path / "model"
    assert run(["train", str(image_folder), "--out", str(out), "--preset", "smoke",
                "--device", "cpu", "--steps", "4", "--ckpt-every", "4", "--grey",
                "--no-progress"]) == 0
    reals = np.asarray(Image.open(out / "samples" / "reals.png").convert("RGB"))
    assert np.array_equal(reals[..., 0], reals[..., 1])  # the data was decoded grey
    assert run(["export", str(out), "--out", str(model), "--fit-steps", "5", "--device", "cpu",
                "-q"]) == 0  # every graph matched PyTorch on onnxruntime
    bundle = load_bundle(model)
    assert bundle.manifest["model"]["grey"] is True and preprocess_for(bundle).grey
    assert run(["sample", "-n", "4", "--out", str(tmp_path / "g.png"), "-m", str(model),
                "-q"]) == 0
    grid = np.asarray(Image.open(tmp_path / "g.png").convert("RGB"))
    assert np.array_equal(grid[..., 0], grid[..., 2]) and grid.std() > 0
    assert run(["info", "-m", str(model)]) == 0
    assert "16x16 grey (as RGB)" in capsys.readouterr().err
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["model"]["grey"] = "yes"
    (model / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(Exception, match="model.grey must be true or false"):
        load_bundle(model)
