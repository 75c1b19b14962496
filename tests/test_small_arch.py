"""`--arch small` (models/small.py): its layers, BatchNorm's modes, and the whole pipeline
downstream of it: training with resume, EMA of its statistics, export parity, the
hand-written inversion gradient, sampling and inversion from the bundle."""

import dataclasses

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from began.export.vjp import GeneratorL1Grad
from began.models import Discriminator, ModelConfig, build, sampling
from began.models.small import SmallEncoder, SmallGenerator
from began.train.ema import EMA

from checks import assert_same_state, checkpoint_at

CFG = ModelConfig(resolution=32, n=8, z_dim=6, h_dim=5, arch="small", fc_dim=32)


def _kinds(module: nn.Module) -> list[str]:
    return [type(m).__name__ for m in module.modules() if not list(m.children())]


@pytest.mark.parametrize("res,downs,d_down", [(16, 1, 0), (32, 1, 0), (64, 2, 0), (128, 3, 0),
                                             (32, 2, 2), (16, 2, 2), (64, 1, 1)])
def test_shapes_and_d_reaches_16x16_or_d_down(res, downs, d_down):
    cfg = ModelConfig(resolution=res, n=8, z_dim=6, h_dim=5, arch="small", fc_dim=32,
                      d_down=d_down)
    G, D = build(cfg)
    assert isinstance(G, SmallGenerator) and isinstance(D.encoder, SmallEncoder)
    x = G(torch.rand(3, 6) * 2 - 1)
    assert x.shape == (3, 3, res, res)
    assert D(x).shape == x.shape and D.encode(x).shape == (3, 5)
    convs = [m for m in D.encoder.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == downs and all(c.stride == (2, 2) for c in convs)
    assert [c.out_channels for c in convs] == [8 << i for i in range(downs)]  # n, 2n, ...
    deconvs = [m for m in D.decoder.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(deconvs) == downs  # the decoder climbs back from the same side


def test_the_layers_of_the_recipe():
    G, D = build(CFG)
    assert _kinds(G) == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU",
                         "ConvTranspose2d", "BatchNorm2d", "ReLU", "ConvTranspose2d", "Tanh"]
    assert G.fc[0].out_features == 32 and G.fc[3].out_features == 16 * 8 * 8  # 2n x 8 x 8
    # D's code is linear and its encoder has no normalisation; its decoder has BatchNorm.
    assert _kinds(D.encoder) == ["Conv2d", "ReLU", "Linear"]
    assert _kinds(D.decoder) == ["Linear", "BatchNorm1d", "ReLU", "ConvTranspose2d", "Tanh"]
    h = D.encode(torch.rand(16, 3, 32, 32) * 2 - 1)
    assert (h < 0).any() and (h > 0).any()
    out = G(torch.rand(16, 6) * 2 - 1)
    assert out.abs().max() < 1


def test_g_without_batchnorm_keeps_d_and_the_rest():
    """--no-g-batchnorm (an ablation toward the paper's G) drops every BatchNorm of G and
    only G's: same widths, D untouched, and an image does not depend on its batch even in
    train mode (nothing mixes the batch)."""
    G, D = build(dataclasses.replace(CFG, g_batchnorm=False))
    assert _kinds(G) == ["Linear", "ReLU", "Linear", "ReLU", "ConvTranspose2d", "ReLU",
                         "ConvTranspose2d", "Tanh"]
    assert _kinds(D) == _kinds(build(CFG)[1])
    G.train()
    z = torch.rand(8, 6) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(G(z)[:2], G(z[:2]), atol=1e-6)


@pytest.mark.parametrize("bad", [dict(arch="dcgan"), dict(arch="small", skip=True),
                                 dict(arch="small", vanishing_residual=True), dict(fc_dim=0),
                                 dict(g_batchnorm=False), dict(arch="small", g_batchnorm=0),
                                 dict(arch="small", d_down=4), dict(arch="small", d_down=-1),
                                 dict(d_down=2)])
def test_config_refuses_what_the_small_networks_lack(bad):
    with pytest.raises(ValueError):
        ModelConfig(**{"resolution": 32, **bad})


def test_batchnorm_needs_two_images_a_batch():
    from began.train.config import TrainConfig

    with pytest.raises(ValueError, match="batch"):
        TrainConfig().replace(arch="small", batch_size=1)


def test_old_configs_without_the_new_fields_are_the_paper_networks():
    cfg = ModelConfig.from_dict({"resolution": 32, "n": 8, "z_dim": 4, "h_dim": 4})
    assert cfg.arch == "paper"
    assert type(build(cfg)[0]).__name__ == "Generator"


def test_sampling_uses_running_statistics_and_restores_the_mode():
    G, D = build(CFG)
    G.train(), D.train()
    z = torch.rand(8, 6) * 2 - 1
    for _ in range(3):
        G(torch.rand(64, 6) * 2 - 1)  # move the running statistics off their start
    stats = {n: b.clone() for n, b in G.named_buffers()}
    with torch.no_grad(), sampling(G, D):
        assert not G.training and not D.training
        a = G(z)
        b = G(z[:1])  # eval mode: an image does not depend on its batch
    assert torch.allclose(a[:1], b, atol=1e-6)
    assert G.training and D.training
    assert all(torch.equal(stats[n], b) for n, b in G.named_buffers())
    with torch.no_grad():
        assert not torch.allclose(G(z)[:2], G(z[:2]), atol=1e-3)  # train mode: batch stats


def test_ema_averages_batchnorm_statistics():
    G = build(CFG)[0]
    ema = EMA(G, 0.5)
    start = ema.model.fc[1].running_mean.clone()
    G.train()
    G(torch.rand(64, 6) * 2 - 1)
    ema.update(G)  # d_1 = 2/11
    d = 2 / 11
    want = d * start + (1 - d) * G.fc[1].running_mean
    assert torch.allclose(ema.model.fc[1].running_mean, want)
    assert int(ema.model.fc[1].num_batches_tracked) == int(G.fc[1].num_batches_tracked)


@pytest.mark.parametrize("res,bn", [(16, True), (32, True), (64, True), (32, False)])
def test_inversion_gradient_matches_autograd(res, bn):
    cfg = ModelConfig(resolution=res, n=8, z_dim=6, h_dim=5, arch="small", fc_dim=32,
                      g_batchnorm=bn)
    torch.manual_seed(res)
    G = build(cfg)[0].train()
    for _ in range(3):
        G(torch.rand(64, 6) * 2 - 1)  # non-trivial running statistics
    G.eval()
    with torch.no_grad():  # a larger last layer, so that some pixels leave [-1, 1] and clip
        G.up[-2].weight.mul_(4)
    z = (torch.rand(4, 6) * 2 - 1).requires_grad_()
    target = torch.rand(4, 3, res, res) * 2 - 1
    loss = (G(z).clamp(-1, 1) - target).abs().flatten(1).mean(1)
    (want,) = torch.autograd.grad(loss.sum(), z)
    got_loss, got = GeneratorL1Grad(G)(z.detach(), target)
    assert torch.allclose(got_loss, loss, atol=1e-6)
    assert torch.allclose(got, want, atol=1e-6, rtol=1e-4)
    assert want.abs().max() > 1e-4  # a real gradient, not zeros on both sides


# --- the pipeline ---------------------------------------------------------------------------

FLAGS = ["--preset", "smoke", "--arch", "small", "--n", "8", "--fc-dim", "32", "--device",
         "cpu", "--no-progress", "--batch-size", "8", "--ckpt-every", "6", "--log-every", "3",
         "--sample-every", "6", "--keep", "10", "--ema-decay", "0.9", "--alternating",
         "--z-shared"]


def train(folder, out, *extra):
    from began.app import run
    return run(["train", str(folder), "--out", str(out), *FLAGS, *map(str, extra)])


@pytest.fixture(scope="module")
def small_run(image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("small") / "run"
    assert train(image_folder, out, "--steps", 12) == 0
    return out


def test_resume_is_bit_exact(small_run, image_folder, tmp_path):
    halves = tmp_path / "halves"
    assert train(image_folder, halves, "--steps", 6) == 0
    assert train(image_folder, halves, "--steps", 12) == 0
    ref = checkpoint_at(small_run, 12)
    assert_same_state(checkpoint_at(halves, 12), ref)
    tensors, _ = ref
    assert "ema.G.fc.1.running_mean" in tensors and "D.decoder.fc.1.running_var" in tensors


def test_training_updates_running_statistics_but_grids_do_not(small_run):
    from began.train.checkpoint import load_checkpoint

    a, _ = load_checkpoint(small_run / "checkpoints" / "ckpt-00000006.safetensors")
    b, _ = load_checkpoint(small_run / "checkpoints" / "ckpt-00000012.safetensors")
    # 6 steps with alternating updates: G runs twice a step in train mode, grids none.
    assert int(b["G.fc.1.num_batches_tracked"]) - int(a["G.fc.1.num_batches_tracked"]) == 12
    assert not torch.equal(a["G.fc.1.running_mean"], b["G.fc.1.running_mean"])


def test_export_sample_and_invert(small_run, tmp_path):
    from began.api import Model
    from began.app import run
    from began.train.runs import load_run

    out = tmp_path / "bundle"
    assert run(["export", str(small_run), "--out", str(out), "--fit-steps", "10",
                "--device", "cpu", "-q"]) == 0
    snap = load_run(small_run)  # the EMA weights, as exported
    zd = snap.cfg.model.z_dim
    z = (np.random.default_rng(0).uniform(-1, 1, (5, zd))).astype(np.float32)
    sess = ort.InferenceSession(str(out / "generator.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"z": z})[0]
    with torch.no_grad():
        want = snap.G(torch.from_numpy(z)).numpy()
    assert np.abs(got - want).max() < 1e-4
    m = Model.open(out, device="cpu")
    images = m.sample(range(4))
    assert images.shape == (4, 16, 16, 3) and images.std() > 0
    inv = m.invert(images, refine=5)
    assert inv.z.shape == (4, zd) and np.isfinite(inv.l1).all()
    assert run(["sample", "--model", str(out), "-n", "4", "--out", str(tmp_path / "g.png")]) == 0


def test_a_g_without_batchnorm_trains_exports_and_matches(image_folder, tmp_path):
    from began.app import run
    from began.train.runs import load_run

    out = tmp_path / "nobn"
    assert train(image_folder, out, "--steps", 6, "--no-g-batchnorm") == 0
    snap = load_run(out)
    assert not snap.cfg.model.g_batchnorm
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in snap.G.modules())
    bundle = tmp_path / "bundle"
    assert run(["export", str(out), "--out", str(bundle), "--fit-steps", "5", "--device",
                "cpu", "-q"]) == 0
    z = np.random.default_rng(1).uniform(-1, 1, (5, snap.cfg.model.z_dim)).astype(np.float32)
    sess = ort.InferenceSession(str(bundle / "generator.onnx"),
                                providers=["CPUExecutionProvider"])
    with torch.no_grad():
        want = snap.G(torch.from_numpy(z)).numpy()
    assert np.abs(sess.run(None, {"z": z})[0] - want).max() < 1e-4


def test_the_fast_step_falls_back_for_the_small_networks():
    from began.train.config import TrainConfig
    from began.train.fast_step import use_fast_step

    said = []
    cfg = TrainConfig().replace(fast_step="on", resolution=32)
    assert use_fast_step(cfg, torch.device("cpu"), said.append)
    # BatchNorm in D: the fast step's one D pass over [real, fake] would mix their statistics
    assert not use_fast_step(cfg.replace(arch="small"), torch.device("cpu"), said.append)
    assert "model.arch='small'" in said[-1]


def test_a_deeper_d_trains_exports_and_its_autoencoder_matches(image_folder, tmp_path):
    """--d-down 2: two stride-2 convs in D (down to 4x4 at 16 px); export checks every
    graph against torch, and the auto-encoder graph reproduces D here too."""
    from began.app import run
    from began.train.runs import load_run

    out = tmp_path / "deep"
    assert train(image_folder, out, "--steps", 6, "--d-down", 2) == 0
    snap = load_run(out)
    assert snap.cfg.model.d_down == 2
    bundle = tmp_path / "bundle"
    assert run(["export", str(out), "--out", str(bundle), "--fit-steps", "5", "--device",
                "cpu", "-q"]) == 0
    sess = ort.InferenceSession(str(bundle / "autoencoder.onnx"),
                                providers=["CPUExecutionProvider"])
    x = np.random.default_rng(2).uniform(-1, 1, (3, 3, 16, 16)).astype(np.float32)
    with torch.no_grad(), sampling(snap.D):
        want = snap.D(torch.from_numpy(x)).numpy()
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert np.abs(got - want).max() < 1e-4
