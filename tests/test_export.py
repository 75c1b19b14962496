"""`began export`: a tiny run trained on the CPU exports, validates, round-trips
through the manifest, matches PyTorch on onnxruntime, and tampering is refused."""

import errno
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from began.app import run
from began.bundle import BundleError, load_bundle, sha256_file
from began.errors import BeganError
from began.export.encoder_fit import fit_encoder, inversion_metrics
from began.train.runs import load_run
from began.models import ModelConfig, build

# on the CPU (the fixture's --device cpu) fp16 graphs are written only when asked for
EXPECTED = {"manifest.json", "generator.onnx", "encoder.onnx", "autoencoder.onnx",
            "decoder.onnx", "invert_grad.onnx"}
FP16 = {"generator.fp16.onnx", "encoder.fp16.onnx", "autoencoder.fp16.onnx",
        "decoder.fp16.onnx"}


@pytest.fixture
def trained(tiny_run):
    return tiny_run


@pytest.fixture
def bundle_dir(tiny_bundle):
    return tiny_bundle


@pytest.fixture(scope="module")
def fp16_bundle(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp16") / "b"
    assert run(["export", str(tiny_run), "--out", str(out), "--fit-steps", "5", "--fp16",
                "--device", "cpu", "-q"]) == 0
    return out


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
    for name in {p.name for p in bundle_dir.glob("*.onnx")}:
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


def test_fp16_graphs_run_and_stay_close(fp16_bundle, trained):
    bundle_dir = fp16_bundle
    assert {p.name for p in bundle_dir.iterdir()} == EXPECTED | FP16
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
    with pytest.raises(BundleError, match="encoder.onnx, (listed|needed) in .* is missing"):
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
    assert run(["export", str(trained), "--step", "10", "--out", str(out), "-q"]) == 2
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
    enc, fit = fit_encoder(G, D, None, steps=300, batch_size=32, lr=1e-3, log=lambda m: None)
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


# --- export never deletes or overwrites what it did not create (issue #11) ---

def _tree(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*"))


def _copy_run(trained, tmp_path, name="run"):
    dst = tmp_path / name
    shutil.copytree(trained, dst)
    return dst


def _no_fit(monkeypatch):
    """Refusals must come before the long work: make the fit fail loudly if reached."""
    import began.export.bundle as exporter

    def boom(*a, **k):
        raise AssertionError("the encoder fit ran before the --out checks")

    monkeypatch.setattr(exporter, "fit_encoder", boom)


def test_out_is_never_the_run_or_data_folder_or_around_them(trained, image_folder, tmp_path,
                                                            capsys, monkeypatch):
    _no_fit(monkeypatch)
    runs = tmp_path / "runs"
    run_dir = _copy_run(trained, runs)
    before = _tree(runs)
    for out in (run_dir, runs, tmp_path, run_dir / "checkpoints", run_dir / "new",
                image_folder, image_folder / "x"):
        assert run(["export", str(run_dir), "--out", str(out), "--overwrite", "-q"]) == 2, out
        err = capsys.readouterr().err.splitlines()
        assert err[0].startswith("error: --out ") and err[1].startswith("hint: "), err
    assert _tree(runs) == before  # not one file touched


def test_overwrite_replaces_only_a_bundle(trained, tmp_path, capsys, monkeypatch):
    _no_fit(monkeypatch)
    folder = tmp_path / "precious"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "notes.txt").write_text("keep me")
    a_file = tmp_path / "file.onnx"
    a_file.write_bytes(b"not a bundle")
    fake = tmp_path / "fake"  # a manifest that does not say it is a began bundle
    fake.mkdir()
    (fake / "manifest.json").write_text('{"format": "something-else"}')
    for out in (folder, a_file, fake):
        before = _tree(tmp_path)
        assert run(["export", str(trained), "--out", str(out), "--overwrite", "-q"]) == 2
        assert "not a began bundle" in capsys.readouterr().err
        assert _tree(tmp_path) == before
    assert (folder / "sub" / "notes.txt").read_text() == "keep me"


def test_a_folder_created_at_out_during_the_export_is_kept(trained, tmp_path, capsys,
                                                          monkeypatch):
    import began.export.bundle as exporter

    out = tmp_path / "m"
    real = exporter.export_graph

    def someone_else_writes(*a, **k):
        out.mkdir(exist_ok=True)
        (out / "theirs.txt").write_text("not yours")
        return real(*a, **k)

    monkeypatch.setattr(exporter, "export_graph", someone_else_writes)
    assert run(["export", str(trained), "--out", str(out), "--fit-steps", "2", "-q"]) == 1
    assert "changed while the bundle was being built" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["theirs.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_an_old_bundle_swapped_for_something_else_is_not_replaced(trained, bundle_dir,
                                                                  tmp_path, capsys,
                                                                  monkeypatch):
    import began.export.bundle as exporter

    out = tmp_path / "m"
    shutil.copytree(bundle_dir, out)
    real = exporter.export_graph

    def swap_it(*a, **k):
        if out.exists() and (out / "manifest.json").exists():
            shutil.rmtree(out)
            out.mkdir()
            (out / "theirs.txt").write_text("not yours")
        return real(*a, **k)

    monkeypatch.setattr(exporter, "export_graph", swap_it)
    assert run(["export", str(trained), "--out", str(out), "--fit-steps", "2", "--overwrite",
                "-q"]) == 1
    assert "changed while" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["theirs.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_second_export_to_the_same_out_fails_while_the_first_runs(trained, tmp_path, capsys):
    from began.export.destination import Destination

    out = tmp_path / "m"
    with Destination(out, {}, overwrite=False):  # an export in progress holds the lock
        assert run(["export", str(trained), "--out", str(out), "--fit-steps", "2", "-q"]) == 1
        err = capsys.readouterr().err
        assert f"another began export is writing {out} (pid {os.getpid()})" in err
    assert run(["export", str(trained), "--out", str(out), "--fit-steps", "2", "-q"]) == 0
    assert load_bundle(out).manifest["training"]["step"] == 20
    assert not (tmp_path / ".m.lock").exists()


def test_two_concurrent_export_processes_one_wins(trained, tmp_path):
    out = tmp_path / "m"
    cmd = [sys.executable, "-m", "began", "export", str(trained), "--out", str(out),
           "--fit-steps", "3", "--device", "cpu", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    # the loser meets the lock (1), or, if it came late, the finished bundle (2)
    assert codes[0] == 0 and codes[1] in (1, 2), results
    loser = next(err for code, err in results if code != 0)
    assert "error: " in loser and "hint: " in loser and "Traceback" not in loser
    load_bundle(out)  # the winner's bundle is whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def aside(folder, kind, pid):
    """The temp folder name an export with this pid uses beside --out folder/m."""
    from began.stale import token

    return folder / f".m.{kind}-{pid}-{token(pid)}"


def test_stale_temp_folders_of_dead_exports_are_removed(trained, bundle_dir, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    shutil.copytree(bundle_dir, tmp_path / "m")  # a bundle at --out: the .old- is garbage
    stale = [aside(tmp_path, "partial", dead.pid), aside(tmp_path, "old", dead.pid)]
    alive = aside(tmp_path, "partial", os.getppid())  # a live process's: not ours to remove
    other = tmp_path / f".other.partial-{dead.pid}"  # another --out's: not this export's
    # Look-alikes of a dead pid that a user made (or an older began): no token that
    # verifies, so never deleted.
    lookalikes = [tmp_path / f".m.partial-{dead.pid}", tmp_path / f".m.old-{dead.pid}",
                  tmp_path / f".m.old-{dead.pid}-{'0' * 16}"]
    for d in (*stale, alive, other, *lookalikes):
        d.mkdir()
        (d / "generator.onnx").write_bytes(b"half")
    assert run(["export", str(trained), "--out", str(tmp_path / "m"), "--fit-steps", "2",
                "--overwrite", "-q"]) == 0
    assert not any(d.exists() for d in stale)
    assert alive.exists() and other.exists()
    assert [(d / "generator.onnx").read_bytes() for d in lookalikes] == [b"half"] * 3


def test_a_bundle_a_killed_export_moved_aside_is_put_back(trained, bundle_dir, tmp_path,
                                                          capsys):
    """Killed between moving the old bundle aside and renaming the new one in: --out is
    gone and the old bundle sits in .m.old-PID-TOKEN/. The next export puts it back (and,
    without --overwrite, refuses to replace it) instead of deleting the only copy."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    old = aside(tmp_path, "old", dead.pid)
    shutil.copytree(bundle_dir, old)
    aside(tmp_path, "partial", dead.pid).mkdir()
    capsys.readouterr()
    assert run(["export", str(trained), "--out", str(tmp_path / "m"), "--fit-steps", "2",
                "-q"]) == 2
    assert "already exists (a began bundle)" in capsys.readouterr().err
    load_bundle(tmp_path / "m")  # whole, and where it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_a_lock_that_is_not_a_file_of_ours_is_refused_and_left_untouched(trained, tmp_path,
                                                                         capsys):
    """A symlinked `.m.lock` was once truncated and overwritten with a pid (exit 0)."""
    secret = tmp_path / "notes.txt"
    secret.write_text("the user's own file")
    lock = tmp_path / ".m.lock"
    for make in (lambda: lock.symlink_to(secret), lambda: os.link(secret, lock),
                 lambda: os.mkfifo(lock)):
        make()
        capsys.readouterr()
        assert run(["export", str(trained), "--out", str(tmp_path / "m"), "--fit-steps", "2",
                    "-q"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err[0].startswith(f"error: {lock} is a ") and "left untouched" in err[0], err
        assert err[1].startswith(f"hint: remove {lock} yourself"), err
        assert secret.read_text() == "the user's own file"
        assert sorted(p.name for p in tmp_path.iterdir()) == [".m.lock", "notes.txt"]
        lock.unlink()


def test_unwritable_or_full_destination_is_found_before_the_fit(trained, tmp_path, capsys,
                                                               monkeypatch):
    _no_fit(monkeypatch)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert run(["export", str(trained), "--out", str(a_file / "m"), "-q"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"error: cannot write in {a_file}") and err[1].startswith("hint:")

    import began.export.destination as destination

    monkeypatch.setattr(destination.shutil, "disk_usage",
                        lambda p: shutil._ntuple_diskusage(10 << 30, 10 << 30, 1000))
    assert run(["export", str(trained), "--out", str(tmp_path / "m"), "-q"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"error: not enough space in {tmp_path}"), err
    assert err[1].startswith("hint: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_disk_that_fills_during_the_export_is_a_clear_error(trained, tmp_path, capsys,
                                                            monkeypatch):
    import began.export.bundle as exporter

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(exporter, "export_graph", full)
    assert run(["export", str(trained), "--out", str(tmp_path / "m"), "--fit-steps", "2",
                "-q"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"error: cannot write the bundle in {tmp_path} (No space left on device)"
    assert err[1].startswith("hint: ") and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name,content,expected", [
    ("data.json", "{broken", "data.json is not valid JSON"),
    ("data.json", "[1, 2]", "data.json is not a data summary"),
    ("stats.jsonl", '{"step": 5}\n{oops\n{"step": 10}\n', "stats.jsonl line 2 is not JSON"),
    ("stats.jsonl", '{"step": 5}\n[1]\n', "stats.jsonl line 2 is not a stats row"),
    ("stats.jsonl", b"\xff\xfe\x00", "cannot read"),
])
def test_damaged_run_files_are_their_own_error(trained, tmp_path, capsys, monkeypatch, name,
                                               content, expected):
    _no_fit(monkeypatch)
    run_dir = _copy_run(trained, tmp_path)
    target = run_dir / name
    (target.write_bytes if isinstance(content, bytes) else target.write_text)(content)
    assert run(["export", str(run_dir), "--out", str(tmp_path / "m"), "-q"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: ") and expected in err[0], err
    assert err[1].startswith("hint: ") and "unexpected" not in err[0]


def test_a_torn_last_stats_row_and_odd_values_are_tolerated(trained, tmp_path):
    run_dir = _copy_run(trained, tmp_path)
    rows = (run_dir / "stats.jsonl").read_text().splitlines()
    last = json.loads(rows[-1])
    odd = {**last, "m_global": "NaN", "lr_g": float("nan"), "k": True}
    text = "\n".join(rows[:-1] + [json.dumps(odd), rows[-1][:10]])  # a crash mid-append
    (run_dir / "stats.jsonl").write_text(text)
    stats = load_run(run_dir).stats
    assert stats["step"] == last["step"]
    assert stats["m_global"] is None and stats["lr_g"] is None and stats["k"] is None
    assert stats["loss_real"] == last["loss_real"]


def test_encoder_fit_stops_early_and_keeps_its_best_weights():
    torch.manual_seed(0)
    G, D = build(ModelConfig(resolution=16, n=8, z_dim=8, h_dim=8))
    G, D = G.eval(), D.eval()
    lines = []
    enc, fit = fit_encoder(G, D, None, steps=5000, batch_size=32, lr=1e-3, log=lines.append,
                           eval_every=20, patience=3, min_delta=0.02)
    assert fit["stopped"] == "converged" and fit["fit_steps"] < 5000, fit
    assert fit["best_step"] <= fit["fit_steps"] - 3 * 20  # patience checks after the best
    assert fit["batch_size"] == 32 and "validation" in lines[-1]
    # the returned weights are the best ones seen: their validation loss is the reported one
    from began.export.encoder_fit import _validation_loss
    g = torch.Generator().manual_seed(1)
    val_z = torch.rand(128, 8, generator=g) * 2 - 1
    assert _validation_loss(enc, G, val_z, G(val_z).detach(), None, 1.0) == pytest.approx(
        fit["validation_loss"], rel=1e-5)
    assert inversion_metrics(enc, G, None)["z_l1"] < 0.5 * inversion_metrics(D.encoder, G,
                                                                              None)["z_l1"]
    _, timed = fit_encoder(G, D, None, steps=5000, batch_size=8, log=lambda m: None,
                           max_seconds=0.0)
    assert timed["stopped"] == "time" and timed["fit_steps"] == 1


def test_fit_batch_is_sized_to_the_model():
    from began.export.encoder_fit import fit_batch_size

    assert fit_batch_size(ModelConfig(resolution=32, n=16, z_dim=16, h_dim=16)) == 64
    assert fit_batch_size(ModelConfig(resolution=64, n=64, z_dim=64, h_dim=64)) == 16
    assert fit_batch_size(ModelConfig(resolution=16, n=8, z_dim=8, h_dim=8)) == 64


def test_linear_readout_is_the_least_squares_map_folded_into_fc():
    from began.export.encoder_fit import init_from_d, linear_readout

    torch.manual_seed(3)
    G, D = build(ModelConfig(resolution=16, n=8, z_dim=8, h_dim=8))
    G, D = G.eval(), D.eval()
    enc = init_from_d(G.cfg, D).eval()
    g = torch.Generator().manual_seed(7)
    z = torch.rand(256, 8, generator=g) * 2 - 1
    with torch.no_grad():
        h = enc(G(z))
        linear_readout(enc, G, n=256, seed=7)  # the same z: same generator
        after = enc(G(z))
    # equal to the ridge solution computed here, on the same samples
    x = torch.cat([h.double(), torch.ones(256, 1, dtype=torch.float64)], 1)
    gram = x.T @ x
    gram += 1e-3 * gram.diagonal().mean() * torch.eye(9, dtype=torch.float64)
    w = torch.linalg.solve(gram, x.T @ z.double())
    assert torch.allclose(after.double(), x @ w, atol=1e-3)
    assert ((after - z) ** 2).mean() < ((h - z) ** 2).mean()


def test_the_fit_budget_follows_the_runs_training_time(trained, tmp_path, capsys):
    """A smoke run's export is not dominated by a fixed 40-second fit: by default the fit
    gets a tenth of what training took, between 3 and 40 s, and the export says where its
    time went."""
    from began.export.bundle import FIT_MIN_SECONDS, FIT_SECONDS
    from began.train.runs import training_seconds

    trained_s = training_seconds(trained, 20)
    assert trained_s is not None and trained_s > 0
    want = round(min(FIT_SECONDS, max(FIT_MIN_SECONDS, trained_s / 10)), 1)
    out = tmp_path / "b"
    assert run(["export", str(trained), "--out", str(out), "--device", "cpu"]) == 0
    enc = load_bundle(out).manifest["encoder"]
    assert enc["budget_s"] == want
    assert enc["seconds"] <= want + 5  # the budget ends the fit (its last check included)
    err = capsys.readouterr().err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("time: ")]
    for phase in ("data", "encoder fit", "inversion figures", "graphs (export, parity)"):
        assert f"{phase} " in line
    assert line.endswith(f"(budget {want:g} s)")
    # 0 still means no budget, as before
    assert run(["export", str(trained), "--out", str(tmp_path / "c"), "--device", "cpu",
                "--fit-time", "0", "--fit-steps", "5", "-q"]) == 0
    assert load_bundle(tmp_path / "c").manifest["encoder"]["budget_s"] is None
