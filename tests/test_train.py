"""`began train` end to end on the CPU: it learns, resumes exactly, survives
interrupts and bad checkpoints, and reports bad data."""

import json
import os
import shutil
import shlex
import signal
import subprocess
import sys

import pytest
import torch

from began.app import run
from began.train.checkpoint import load_checkpoint
from checks import assert_same_state, checkpoint_at

# Small enough for CI, but crossing epochs (48 images / batch 8), lr decays
# (window 4, patience 1, a 50% bar to count as progress), log rows (every 3) and
# the vanishing-residual ramp (12 steps), so a resume has every kind of state to get right.
BUSY = ["--preset", "smoke", "--device", "cpu", "--no-progress", "--batch-size", "8",
        "--ckpt-every", "5", "--log-every", "3", "--lr-window", "4", "--lr-patience", "1",
        "--lr-min-delta", "0.5", "--vanishing-residual", "--residual-steps", "12",
        "--keep", "10", "--sample-every", "10"]


def train(folder, out, *extra):
    return run(["train", str(folder), "--out", str(out), *map(str, extra)])


def stats(out):
    return [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]


final_state = checkpoint_at


def test_short_run_learns(image_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(image_folder, out, "--preset", "smoke", "--device", "cpu", "--steps", 100,
                 "--log-every", 10, "--no-progress") == 0
    rows = stats(out)
    assert [r["step"] for r in rows] == list(range(10, 101, 10))
    first = (rows[0]["loss_real"] + rows[1]["loss_real"]) / 2
    last = (rows[-1]["loss_real"] + rows[-2]["loss_real"]) / 2
    assert last < 0.9 * first, (first, last)
    for r in rows:
        assert 0.0 <= r["k"] <= 1.0
        assert r["m_global"] == pytest.approx(
            r["loss_real"] + abs(0.5 * r["loss_real"] - r["loss_fake"]), abs=0.2)
        assert r["images_per_s"] > 0 and r["lr_g"] == 1e-4
    # Intervals not given are capped to the run: a grid every steps/10, a checkpoint every
    # steps/4 (the smoke preset's 100 and 100 would leave one of each).
    assert sorted(p.name for p in (out / "samples").iterdir()) == [
        "reals.png", *(f"samples-{s:08d}.png" for s in range(10, 101, 10))]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        f"ckpt-{s:08d}.safetensors" for s in (50, 75, 100)]  # --keep 3 of 25, 50, 75, 100
    saved = json.loads((out / "config.json").read_text())
    assert (saved["steps"], saved["sample_every"], saved["ckpt_every"]) == (100, 10, 25)
    err = capsys.readouterr().err
    assert "step 100/100" in err and "done: step 100" in err


@pytest.fixture(scope="module")
def straight_run(image_folder, tmp_path_factory):
    """20 steps in one go: the reference for every resume test."""
    out = tmp_path_factory.mktemp("straight")
    assert train(image_folder, out, *BUSY, "--steps", 20) == 0
    return out


def test_resume_is_exact(image_folder, straight_run, tmp_path):
    out = tmp_path / "halves"
    assert train(image_folder, out, *BUSY, "--steps", 10) == 0
    assert train(image_folder, out, *BUSY, "--steps", 20) == 0
    ref = final_state(straight_run, 20)
    assert ref[1]["lr_schedule"]["decays"], "the lr schedule should have acted in this run"
    assert_same_state(final_state(out, 20), ref)
    # The first call logs its last step (10); rows after the next full interval agree.
    rows, ref_rows = stats(out), {r["step"]: r for r in stats(straight_run)}
    assert [r["step"] for r in rows] == [3, 6, 9, 10, 12, 15, 18, 20]
    for r in rows[-3:]:
        assert {**r, "images_per_s": 0} == {**ref_rows[r["step"]], "images_per_s": 0}


def test_interrupt_writes_a_checkpoint_and_resumes_exactly(image_folder, straight_run,
                                                           tmp_path, monkeypatch, capsys):
    import began.train.loop as loop

    real_step, calls = loop.began_step, {"n": 0}

    def step_with_ctrl_c(*a, **k):
        calls["n"] += 1
        if calls["n"] == 8:  # a real SIGINT in the middle of step 8
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(*a, **k)

    out = tmp_path / "interrupted"
    monkeypatch.setattr(loop, "began_step", step_with_ctrl_c)
    assert train(image_folder, out, *BUSY, "--steps", 20) == 130
    err = capsys.readouterr().err
    assert "error: interrupted at step 8; resume point" in err and "ckpt-00000008" in err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    monkeypatch.setattr(loop, "began_step", real_step)
    assert train(image_folder, out, *BUSY, "--steps", 20) == 0
    assert "resumed from ckpt-00000008" in capsys.readouterr().err
    assert_same_state(final_state(out, 20), final_state(straight_run, 20))
    assert [r["step"] for r in stats(out)] == [3, 6, 9, 12, 15, 18, 20]


def test_a_signal_inherited_as_ignored_stays_ignored():
    """`began train ... &` from a script starts with SIGINT ignored: a Ctrl-C meant for the
    foreground job must not stop it; SIGTERM still does, between steps."""
    from began.train.interrupt import StopRequest

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with StopRequest() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.signum is None
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.signum == signal.SIGTERM and stop.exit_code == 143
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGINT, before)


def test_corrupt_checkpoint_is_never_loaded(image_folder, straight_run, tmp_path, capsys):
    out = tmp_path / "corrupt"
    shutil.copytree(straight_run, out)
    newest = out / "checkpoints" / "ckpt-00000020.safetensors"
    raw = bytearray(newest.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped bit pattern in the tensor data
    newest.write_bytes(bytes(raw))
    assert train(image_folder, out, *BUSY, "--steps", 20) == 0
    err = capsys.readouterr().err
    assert "warning: skipping checkpoint ckpt-00000020" in err and "checksum" in err
    assert "resumed from ckpt-00000015" in err
    assert (out / "checkpoints" / "ckpt-00000020.safetensors.corrupt").exists()
    assert_same_state(final_state(out, 20), final_state(straight_run, 20))


def test_changed_settings_are_refused_on_resume(image_folder, straight_run, tmp_path, capsys):
    out = tmp_path / "changed"
    shutil.copytree(straight_run, out)
    assert train(image_folder, out, *BUSY, "--steps", 20, "--gamma", 0.7) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: ") and "gamma: 0.5 -> 0.7" in err[0]
    assert err[1].startswith("hint: ") and len(err) == 2


def test_nan_stops_training_and_keeps_the_good_checkpoint(image_folder, tmp_path,
                                                          monkeypatch, capsys):
    import began.train.loop as loop

    real_step, calls = loop.began_step, {"n": 0}

    def poisoned(*a, **k):
        out = real_step(*a, **k)
        calls["n"] += 1
        if calls["n"] >= 7:
            out.loss_real = out.loss_real * float("nan")
        return out

    out = tmp_path / "nan"
    monkeypatch.setattr(loop, "began_step", poisoned)
    assert train(image_folder, out, *BUSY, "--steps", 20) == 1
    err = capsys.readouterr().err
    assert "error: losses became NaN/Inf by step 9" in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["ckpt-00000005.safetensors"]


def test_messy_folder_trains_on_the_good_images(image_folder, tmp_path, capsys):
    data = tmp_path / "messy"
    data.mkdir()
    good = sorted(image_folder.iterdir())[:12]
    for p in good:
        shutil.copy(p, data / p.name)
    (data / "empty.png").write_bytes(b"")
    (data / "letter.jpg").write_text("this is not a jpeg")
    (data / "notes.txt").write_text("hello")
    raw = good[0].read_bytes()
    (data / "torn.png").write_bytes(raw[: len(raw) // 2])
    out = tmp_path / "run"
    assert train(data, out, "--preset", "smoke", "--device", "cpu", "--steps", 3,
                 "--no-progress") == 0
    report = json.loads((out / "data.json").read_text())
    assert report["count"] == 12
    assert sorted(s["path"] for s in report["skipped"]) == [
        "empty.png", "letter.jpg", "notes.txt", "torn.png"]
    assert all(s["reason"] for s in report["skipped"])
    err = capsys.readouterr().err
    assert "data: 12 images" in err and "skipped 4 files" in err


def test_folder_without_images_is_one_clear_error(tmp_path, capsys):
    data = tmp_path / "nothing"
    data.mkdir()
    (data / "notes.txt").write_text("hello")
    assert train(data, tmp_path / "run", "--preset", "smoke", "--device", "cpu") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("error: ") and err[1].startswith("hint: ")
    assert train(tmp_path / "missing", tmp_path / "run2", "--preset", "smoke") == 1


def test_dry_run_prints_the_resolved_config(tmp_path, capsys):
    assert train(tmp_path, tmp_path / "run", "--preset", "paper128", "--gamma", "0.3",
                 "--skip", "--dry-run") == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["gamma"] == 0.3 and cfg["model"]["skip"] is True
    assert cfg["model"]["resolution"] == 128 and cfg["model"]["n"] == 128
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("change", [
    dict(),  # the plain defaults: paper64, nothing else
    dict(arch="small", resolution=32, n=16, z_dim=62, h_dim=32, fc_dim=1024, grey=True,
         batch_size=64, gamma=1.0, lr_g=2e-4, lr_d=2e-4, alternating=True, z_shared=True,
         lambda_k=5e-4, lr_decay=1.0, flip=False, steps=24_000, lr_anneal_start=21_000,
         lr_anneal_steps=3_000),  # the embedded model's run
    dict(resolution=128, n=128, skip=True, augment="translation,cutout", seed=3, k_max=0.9,
         ema_decay=0.999, beta2=0.99, keep=7, ckpt_every=10),
])
def test_command_flags_give_back_the_config_they_were_made_from(tmp_path, capsys, change):
    """A model card's command is derived from the config: fed back to `began train`, it
    resolves to the same config, run-management fields (keep, ckpt_every, ...) apart."""
    from began.train.config import NOT_IN_COMMAND, TrainConfig, command_flags

    cfg = TrainConfig().replace(**change)
    flags = command_flags(cfg)
    assert flags.startswith("--preset ") and "--keep" not in flags and "--ckpt-every" not in flags
    assert train(tmp_path, tmp_path / "run", *shlex.split(flags), "--dry-run") == 0
    got = json.loads(capsys.readouterr().out)
    want = cfg.to_dict()
    for k in NOT_IN_COMMAND:
        got.pop(k), want.pop(k)
    assert got == want
    if change.get("flip") is False:
        assert flags.startswith("--preset small32 ") and "--no-flip" in flags.split()
        assert "--lr-anneal-start 21000 --lr-anneal-steps 3000" in flags


def test_no_preset_is_the_small_recipe_on_the_cpu_and_paper64_on_cuda(tmp_path, capsys):
    assert train(tmp_path, tmp_path / "run", "--device", "cpu", "--dry-run") == 0
    cpu = json.loads(capsys.readouterr().out)
    assert cpu["model"]["arch"] == "small" and cpu["steps"] == 12_000
    assert cpu["model"]["resolution"] == 32 and cpu["batch_size"] == 64
    assert train(tmp_path, tmp_path / "run", "--device", "cuda", "--dry-run") == 0
    gpu = json.loads(capsys.readouterr().out)
    assert gpu["model"]["arch"] == "paper" and gpu["model"]["resolution"] == 64
    assert train(tmp_path, tmp_path / "run", "--device", "cpu", "--preset", "paper64",
                 "--dry-run") == 0
    assert json.loads(capsys.readouterr().out)["model"]["arch"] == "paper"


def test_bad_flag_values_are_usage_errors(tmp_path, capsys):
    assert train(tmp_path, tmp_path / "run", "--resolution", "48", "--dry-run") == 2
    assert train(tmp_path, tmp_path / "run", "--preset", "huge", "--dry-run") == 2
    assert train(tmp_path, tmp_path / "run", "--preset", "paper64", "--cs-alpha", "0.1",
                 "--z-dim", "16", "--dry-run") == 2
    err = capsys.readouterr().err
    assert "resolution must be a power of two" in err and "unknown preset 'huge'" in err
    assert "cs_alpha > 0 needs h_dim == z_dim (got 64 and 16)" in err


def python_without_torch(code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter where `import torch` fails."""
    prelude = "import sys; sys.modules['torch'] = None\n"
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True,
                          text=True, timeout=60)


def test_train_without_torch_names_the_extra(tmp_path):
    r = python_without_torch(
        f"from began.app import main; sys.exit(main(['train', {str(tmp_path)!r}, "
        f"'--out', {str(tmp_path / 'run')!r}]))")
    assert r.returncode == 1, r.stderr
    assert r.stderr.splitlines() == [
        "error: training needs PyTorch, which is not installed",
        "hint: install the train extra: pip install 'began[train]' ('.[train]' from a "
        "checkout); for a GPU, first a CUDA build of torch from https://pytorch.org"]


def test_help_and_dry_run_work_without_torch(tmp_path):
    r = python_without_torch(
        "from began.app import main\n"
        f"assert main(['train', {str(tmp_path)!r}, '--out', 'x', '--dry-run']) == 0\n"
        "assert main(['train', '--help']) == 0\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('onnxruntime', 'onnx')]\n"
        "assert not heavy, heavy\n")
    assert r.returncode == 0, r.stderr
    # no torch, so no GPU to train on: the CPU's default, the small networks
    assert '"resolution": 32' in r.stdout and '"arch": "small"' in r.stdout
    assert "--gamma" in r.stdout


def test_version_is_instant():
    r = subprocess.run([sys.executable, "-c",
                        "import sys; from began.app import main; main(['--version']); "
                        "print(sorted({m.split('.')[0] for m in sys.modules} & "
                        "{'torch', 'onnxruntime', 'typer', 'numpy', 'PIL', 'rich'}))"],
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.splitlines()[0].startswith("began ")
    assert r.stdout.splitlines()[1] == "[]"


def test_resumes_a_checkpoint_that_logged_fewer_terms(image_folder, straight_run, tmp_path):
    """A checkpoint from before loss_cs was logged (4 logged sums, no meter_keys) resumes,
    and the run still ends bit-exact: the logged sums do not feed training."""
    from began.train.checkpoint import save_checkpoint

    out = tmp_path / "old"
    shutil.copytree(straight_run, out)
    ckpts = out / "checkpoints"
    tensors, state = load_checkpoint(ckpts / "ckpt-00000015.safetensors")
    keys = state.pop("meter_keys")
    old = [i for i, k in enumerate(keys) if k != "loss_cs"]
    tensors["meter.log"] = tensors["meter.log"][old]
    for p in ckpts.iterdir():
        p.unlink()
    save_checkpoint(ckpts, 15, tensors, {k: v for k, v in state.items() if k != "step"})
    assert train(image_folder, out, *BUSY, "--steps", 20) == 0
    (t_new, s_new), (t_ref, _) = final_state(out, 20), final_state(straight_run, 20)
    for key in t_ref:
        assert torch.equal(t_new[key], t_ref[key]), key
    assert s_new["meter_keys"] == keys


def test_lr_anneal_is_logged_and_may_be_added_only_ahead_of_the_checkpoint(
        image_folder, straight_run, tmp_path, capsys):
    anneal = ["--lr-anneal-start", 12, "--lr-anneal-steps", 4]  # to the floor, 2e-5
    # The lr falls linearly from 12 to 16 and is held at the floor after.
    out = tmp_path / "annealed"
    assert train(image_folder, out, *BUSY, "--lr-decay", 1.0, "--steps", 20, *anneal) == 0
    lr = {r["step"]: r["lr_g"] for r in stats(out)}  # the lr of the step after each row
    assert lr[12] == pytest.approx(1e-4) and lr[18] == pytest.approx(2e-5)
    assert lr[15] == pytest.approx(1e-4 - 0.75 * 8e-5)
    # Added on resume at the checkpoint's step or later, it is the same run as one
    # annealed from the start; anywhere earlier it would rewrite steps already taken.
    late = tmp_path / "late"
    assert train(image_folder, late, *BUSY, "--lr-decay", 1.0, "--steps", 10) == 0
    shutil.copytree(late, tmp_path / "early")
    assert train(image_folder, late, *BUSY, "--lr-decay", 1.0, "--steps", 20, *anneal) == 0
    assert_same_state(final_state(late, 20), final_state(out, 20))
    capsys.readouterr()
    early = ["--lr-anneal-start", 5, "--lr-anneal-steps", 4]
    assert train(image_folder, tmp_path / "early", *BUSY, "--lr-decay", 1.0, "--steps", 20,
                 *early) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-2].startswith("error: ") and "(0, 0) cannot become (5, 4)" in err[-2]
    assert err[-1].startswith("hint: ") and "step 10 or later" in err[-1]
    assert max(p.name for p in (tmp_path / "early" / "checkpoints").iterdir()
               if p.name != "ckpt-best.safetensors") == "ckpt-00000010.safetensors"
