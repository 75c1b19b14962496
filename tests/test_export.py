"""`began export`: a tiny run trained on the CPU exports, validates, round-trips
through the manifest, matches PyTorch on onnxruntime, and tampering is refused."""

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from began.app import run
from began.bundle import BundleError, load_bundle, sha256_file
from began.errors import BeganError
from began.export.encoder_fit import fit_encoder, inversion_metrics
from began.export.runs import load_run
from began.models import ModelConfig, build

EXPECTED = {"manifest.json", "generator.onnx", "generator.fp16.onnx", "encoder.onnx",
            "encoder.fp16.onnx", "autoencoder.onnx", "autoencoder.fp16.onnx", "decoder.onnx",
            "decoder.fp16.onnx", "invert_grad.onnx"}


@pytest.fixture
def trained(tiny_run):
    return tiny_run


@pytest.fixture
def bundle_dir(tiny_bundle):
    return tiny_bundle


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_bundle_files_and_manifest(bundle_dir, trained):
    assert {p.name for p in bundle_dir.iterdir()} == EXPECTED
    b = load_bundle(bundle_dir)
    m = b.manifest
    assert (b.resolution, b.z_dim, b.h_dim) == (16, 16, 16)
    assert m["model"]["skip"] is True
    t = m["training"]
    last_row = json.loads((trained / "stats.jsonl").read_text().splitlines()[-1])
    assert t["step"] == 20 and t["stats_step"] == 20
    assert t["m_global"] == last_row["m_global"] and t["k"] == pytest.approx(last_row["k"])
    assert (t["gamma"], t["lambda_k"]) == (0.5, 0.001)
    assert t["data"]["images"] == 48 and t["data"]["resolution"] == 16
    assert m["opset"] == 18 and m["encoder"]["kind"] == "fit"
    for name, info in m["files"].items():
        assert sha256_file(bundle_dir / name) == info["sha256"]
        assert (bundle_dir / name).stat().st_size == info["bytes"]
        if info["precision"] == "fp32":
            assert info["max_abs_diff_vs_torch"] <= 1e-4
    assert not list(bundle_dir.parent.glob(".tiny.*"))  # no temp folder left


def test_graphs_pass_the_checker_and_describe_themselves(bundle_dir):
    core = {k: v for k, v in load_bundle(bundle_dir).manifest.items() if k != "files"}
    for name in EXPECTED - {"manifest.json"}:
        model = onnx.load(str(bundle_dir / name))
        onnx.checker.check_model(model, full_check=True)
        props = {p.key: p.value for p in model.metadata_props}
        assert json.loads(props["began.model"]) == core
        assert props["began.graph"] == name.split(".")[0]
        assert props["began.precision"] == ("fp16" if ".fp16." in name else "fp32")


@pytest.mark.parametrize("batch", [1, 7])
def test_fp32_graphs_match_pytorch(bundle_dir, trained, batch):
    snap = load_run(trained)
    G, D = snap.G, snap.D
    g = torch.Generator().manual_seed(batch)
    z = torch.rand(batch, 16, generator=g) * 2 - 1
    x = torch.rand(batch, 3, 16, 16, generator=g) * 2 - 1
    with torch.no_grad():
        ref_img, h = G(z), D.encode(x)
        ref_recon = D.decode(h)
    (img,) = session(bundle_dir / "generator.onnx").run(None, {"z": z.numpy()})
    recon, hh = session(bundle_dir / "autoencoder.onnx").run(None, {"image": x.numpy()})
    (dec,) = session(bundle_dir / "decoder.onnx").run(None, {"h": h.numpy()})
    assert np.abs(img - ref_img.numpy()).max() <= 1e-4
    assert np.abs(recon - ref_recon.numpy()).max() <= 1e-4
    assert np.abs(hh - h.numpy()).max() <= 1e-4
    assert np.abs(dec - ref_recon.numpy()).max() <= 1e-4
    (zz,) = session(bundle_dir / "encoder.onnx").run(None, {"image": x.numpy()})
    assert zz.shape == (batch, 16) and zz.min() >= -1 and zz.max() <= 1


def test_invert_grad_matches_torch_autograd(bundle_dir, trained):
    G = load_run(trained).G
    g = torch.Generator().manual_seed(3)
    z = (torch.rand(4, 16, generator=g) * 2 - 1).requires_grad_(True)
    target = torch.rand(4, 3, 16, 16, generator=g) * 2 - 1
    ref_loss = (G(z).clamp(-1, 1) - target).abs().flatten(1).mean(1)  # what users see
    (ref_grad,) = torch.autograd.grad(ref_loss.sum(), z)
    loss, grad = session(bundle_dir / "invert_grad.onnx").run(
        None, {"z": z.detach().numpy(), "target": target.numpy()})
    assert np.abs(loss - ref_loss.detach().numpy()).max() <= 1e-5
    assert np.abs(grad - ref_grad.numpy()).max() <= 1e-5 * max(1.0, np.abs(grad).max())


def test_fp16_graphs_run_and_stay_close(bundle_dir, trained):
    G = load_run(trained).G
    z = (torch.rand(6, 16, generator=torch.Generator().manual_seed(5)) * 2 - 1)
    s = session(bundle_dir / "generator.fp16.onnx")
    assert s.get_inputs()[0].type == "tensor(float16)"
    (img,) = s.run(None, {"z": z.numpy().astype(np.float16)})
    assert img.dtype == np.float16
    with torch.no_grad():
        ref = G(z).numpy()
    # fp16 keeps ~3 significant digits; on the GPU the bound is checked separately.
    assert np.abs(img.astype(np.float32) - ref).max() <= 2e-2


def test_tampered_or_missing_files_are_refused(bundle_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(bundle_dir, bad)
    raw = bytearray((bad / "generator.onnx").read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (bad / "generator.onnx").write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="sha256 differs"):
        load_bundle(bad)

    shutil.rmtree(bad)
    shutil.copytree(bundle_dir, bad)
    (bad / "encoder.onnx").unlink()
    with pytest.raises(BundleError, match="encoder.onnx, listed in .* is missing"):
        load_bundle(bad)

    (bad / "manifest.json").write_text("{ not json")
    with pytest.raises(BundleError, match="unreadable"):
        load_bundle(bad)
    (bad / "manifest.json").unlink()
    with pytest.raises(BundleError, match="not a began model"):
        load_bundle(bad)
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nowhere")


def test_manifest_cannot_point_outside_or_be_from_the_future(bundle_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(bundle_dir, bad)
    m = json.loads((bad / "manifest.json").read_text())
    m["files"]["../outside.onnx"] = {"sha256": "0" * 64}
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="outside the folder"):
        load_bundle(bad)
    del m["files"]["../outside.onnx"]
    m["format_version"] = 99
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="format 99"):
        load_bundle(bad)


def test_export_errors_are_clear_and_leave_nothing(trained, tmp_path, capsys, monkeypatch):
    out = tmp_path / "m"
    assert run(["export", str(tmp_path / "nope"), "--out", str(out)]) == 1
    assert run(["export", str(trained), "--step", "15", "--out", str(out)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: ") and "is not a training run" in err[0]
    assert err[2] == f"error: step 15 was never saved in {trained}"
    assert err[3] == "hint: saved steps: 10, 20"

    corrupt = tmp_path / "corrupt"
    shutil.copytree(trained, corrupt)
    newest = corrupt / "checkpoints" / "ckpt-00000020.safetensors"
    newest.write_bytes(newest.read_bytes()[:-100])
    assert run(["export", str(corrupt), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "fails its checks" in err and "--step 10" in err
    assert newest.exists()  # export never changes the run

    import began.export.bundle as exporter

    calls = {"n": 0}
    real = exporter.export_graph

    def failing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(exporter, "export_graph", failing)
    assert run(["export", str(trained), "--out", str(out), "--fit-steps", "5", "-q"]) == 130
    assert not out.exists() and list(tmp_path.glob(".m.*")) == []


def test_existing_output_needs_overwrite(trained, bundle_dir, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(bundle_dir, out)
    before = sha256_file(out / "generator.onnx")
    assert run(["export", str(trained), "--step", "10", "--out", str(out), "-q"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert run(["export", str(trained), "--step", "10", "--out", str(out), "--fit-steps", "5",
                "--overwrite", "-q", "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["training"]["step"] == 10 == load_bundle(out).manifest["training"]["step"]
    assert sha256_file(out / "generator.onnx") != before


def test_encoder_fit_learns_to_invert_the_generator():
    torch.manual_seed(0)
    G, D = build(ModelConfig(resolution=16, n=8, z_dim=8, h_dim=8))
    G, D = G.eval(), D.eval()
    before = inversion_metrics(D.encoder, G, None)
    enc = fit_encoder(G, D, None, steps=300, batch_size=32, lr=1e-3, log=lambda m: None)
    after = inversion_metrics(enc, G, None)
    assert before["z_l1"] > 0.4  # D's latent space is not G's
    assert after["z_l1"] < 0.5 * before["z_l1"], (before, after)
    assert after["psnr_fake"] > before["psnr_fake"]


def test_bad_step_and_encoder_values(trained, tmp_path):
    with pytest.raises(BeganError, match="step 999 was never saved"):
        load_run(trained, step=999)
    assert run(["export", str(trained), "--out", str(tmp_path / "x"), "--encoder", "e"]) == 2
    assert run(["export", str(trained), "--out", str(tmp_path / "x"), "--encoder", "d",
                "--no-fp16"]) == 0  # N_h == N_z: D's encoder is allowed, if not useful


def test_began_cs_run_exports_d_encoder(image_folder, tmp_path, capsys):
    out, model = tmp_path / "cs", tmp_path / "cs-model"
    assert run(["train", str(image_folder), "--out", str(out), "--preset", "smoke", "--device",
                "cpu", "--steps", "10", "--cs-alpha", "0.1", "--no-progress"]) == 0
    assert run(["export", str(out), "--out", str(model), "--no-fp16", "--encoder", "d",
                "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["encoder"]["kind"] == "d" and manifest["training"]["cs_alpha"] == 0.1
    assert set(manifest["files"]) == {"generator.onnx", "encoder.onnx", "autoencoder.onnx",
                                      "decoder.onnx", "invert_grad.onnx"}
    D = load_run(out).D
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    (z,) = session(model / "encoder.onnx").run(None, {"image": x.numpy()})
    with torch.no_grad():
        assert np.abs(z - D.encode(x).clamp(-1, 1).numpy()).max() <= 1e-4
