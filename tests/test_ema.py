"""The EMA of G's weights: the closed form, and an exact round trip through a checkpoint."""

import math

import pytest
import torch

from began.models import Generator, ModelConfig
from began.train.checkpoint import load_checkpoint, save_checkpoint
from began.train.ema import EMA, ema_decay_at, ema_weights, has_ema

CFG = ModelConfig(resolution=16, n=4, z_dim=3, h_dim=3, vanishing_residual=True)


def test_decay_warms_up_then_holds():
    assert ema_decay_at(0.999, 1) == pytest.approx(2 / 11)
    assert ema_decay_at(0.999, 10) == pytest.approx(11 / 20)
    assert ema_decay_at(0.999, 10**6) == 0.999
    assert ema_decay_at(0.9, 80) == 0.9  # (81 / 90 = 0.9)


def test_average_equals_the_closed_form_after_a_few_steps():
    torch.manual_seed(0)
    G = Generator(CFG).double()
    init = [p.detach().clone() for p in G.parameters()]
    ema = EMA(G, decay=0.3)
    history = []
    for t in range(1, 6):
        with torch.no_grad():
            for p in G.parameters():
                p.add_(torch.randn_like(p))
        G.set_carry(1.0 - t / 10)
        history.append([p.detach().clone() for p in G.parameters()])
        ema.update(G)
    # ema_5 = prod_t d_t * theta_0 + sum_t (1 - d_t) prod_{s > t} d_s * theta_t
    d = [ema_decay_at(0.3, t) for t in range(1, 6)]
    assert d[-1] == 0.3 and d[0] < 0.3  # the warm-up was active, then the decay held
    for i, e in enumerate(ema.model.parameters()):
        expected = init[i] * math.prod(d)
        for t in range(5):
            expected = expected + (1 - d[t]) * math.prod(d[t + 1:]) * history[t][i]
        torch.testing.assert_close(e, expected, rtol=1e-12, atol=1e-12)
    assert ema.updates == 5
    assert ema.model.carry.item() == pytest.approx(0.5)  # buffers copied, not averaged
    assert all(not p.requires_grad for p in ema.model.parameters())


def test_round_trip_through_a_checkpoint_is_exact(tmp_path):
    torch.manual_seed(1)
    G = Generator(CFG)
    ema = EMA(G, decay=0.99)
    for _ in range(3):
        with torch.no_grad():
            for p in G.parameters():
                p.mul_(0.9).add_(0.01)
        ema.update(G)
    tensors = {**{f"G.{n}": t for n, t in G.state_dict().items()},
               **{f"ema.{n}": t for n, t in ema.state_tensors().items()}}
    path = save_checkpoint(tmp_path, 3, tensors, {"config": {}})
    loaded, _ = load_checkpoint(path)
    assert has_ema(loaded)
    again = EMA(Generator(CFG), decay=0.99)
    again.load_state_tensors({n[4:]: t for n, t in loaded.items() if n.startswith("ema.")})
    assert again.updates == 3
    for (n, a), b in zip(ema.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), n
    # Continuing from the restored average gives the same next average, bit for bit.
    with torch.no_grad():
        for p in G.parameters():
            p.add_(0.5)
    ema.update(G), again.update(G)
    for a, b in zip(ema.model.parameters(), again.model.parameters()):
        assert torch.equal(a, b)
    G2 = Generator(CFG)
    G2.load_state_dict(ema_weights(loaded))  # strict: the tensors form a whole G


def test_refuses_a_decay_outside_the_open_unit_interval():
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError):
            EMA(Generator(CFG), bad)


# --- in the training loop ------------------------------------------------------------------

BASE = ["--preset", "smoke", "--device", "cpu", "--no-progress", "--batch-size", "8",
        "--ckpt-every", "6", "--log-every", "3", "--sample-every", "6", "--keep", "10"]
LEVERS = [*BASE, "--ema-decay", "0.9", "--alternating", "--augment", "translation,cutout,color",
          "--instance-noise", "0.1", "--instance-noise-steps", "10", "--pullaway", "0.1",
          "--out-tanh"]


def train(folder, out, *extra):
    from began.app import run
    return run(["train", str(folder), "--out", str(out), *map(str, extra)])


def test_every_lever_on_resumes_bit_exactly(image_folder, tmp_path):
    from checks import assert_same_state, checkpoint_at

    straight, halves, plain = tmp_path / "straight", tmp_path / "halves", tmp_path / "plain"
    assert train(image_folder, straight, *LEVERS, "--steps", 12) == 0
    assert train(image_folder, halves, *LEVERS, "--steps", 6) == 0
    assert train(image_folder, halves, *LEVERS, "--steps", 12) == 0
    ref = checkpoint_at(straight, 12)
    assert_same_state(checkpoint_at(halves, 12), ref)
    tensors, state = ref
    assert int(tensors["ema.updates"]) == 12
    G = Generator(ModelConfig.from_dict(state["config"]["model"]))
    G.load_state_dict(ema_weights(tensors))  # a whole G
    assert any(not torch.equal(tensors[f"ema.G.{n}"], tensors[f"G.{n}"])
               for n in G.state_dict())
    assert {p.name for p in (straight / "samples").iterdir()} >= {
        "ema-00000006.png", "ema-00000012.png", "samples-00000012.png"}
    # The levers change what the run computes: the same seed without them ends elsewhere.
    assert train(image_folder, plain, *BASE, "--steps", 12) == 0
    other, _ = checkpoint_at(plain, 12)
    assert "ema.updates" not in other
    assert not torch.equal(other["G.out.weight"], tensors["G.out.weight"])


# --- in began export ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def ema_run(image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("ema_run")
    assert train(image_folder, out, *BASE, "--ema-decay", "0.5", "--steps", 6) == 0
    return out


def test_load_run_picks_the_average_or_the_raw_weights(ema_run, tiny_run):
    from began.errors import UsageError
    from began.train.runs import load_run

    from checks import checkpoint_at

    tensors, _ = checkpoint_at(ema_run, 6)
    auto, ema, raw = (load_run(ema_run, weights=w) for w in ("auto", "ema", "raw"))
    assert (auto.weights, ema.weights, raw.weights) == ("ema", "ema", "raw")
    for name, t in auto.G.state_dict().items():
        assert torch.equal(t, tensors[f"ema.G.{name}"])
        assert torch.equal(raw.G.state_dict()[name], tensors[f"G.{name}"])
    assert torch.equal(auto.D.encoder.fc.weight, raw.D.encoder.fc.weight)  # D is D
    assert load_run(tiny_run).weights == "raw"  # no average kept: auto is raw
    with pytest.raises(UsageError, match="no moving average"):
        load_run(tiny_run, weights="ema")
    with pytest.raises(UsageError, match="unknown --weights"):
        load_run(ema_run, weights="best")


def test_export_records_the_weights_and_ships_the_average(ema_run, tmp_path):
    import json

    import numpy as np
    import onnxruntime as ort

    from began.app import run
    from began.train.runs import load_run

    out = tmp_path / "bundle"
    assert run(["export", str(ema_run), "--out", str(out), "--encoder", "d", "--no-fp16",
                "-q"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["weights"] == "ema"
    assert manifest["training"]["ema_decay"] == 0.5
    z = np.random.default_rng(0).uniform(-1, 1, (4, 16)).astype(np.float32)
    sess = ort.InferenceSession(str(out / "generator.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: z})[0]
    with torch.no_grad():
        ema = load_run(ema_run, weights="ema").G(torch.from_numpy(z)).numpy()
        raw = load_run(ema_run, weights="raw").G(torch.from_numpy(z)).numpy()
    assert np.abs(got - ema).max() < 1e-4 < np.abs(got - raw).max()
    assert run(["export", str(ema_run), "--out", str(tmp_path / "b2"), "--weights", "lots",
                "--encoder", "d", "-q"]) == 2
