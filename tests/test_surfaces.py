"""The newer surfaces held to the old rules (issue #23): closed streams, bounded reads of
files a user can put anywhere (a link to /dev/zero, a FIFO), caches trusted only as far
as they check out, full disks that are one clear line, and eval and interpolate
refusing only what they must."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from began.app import run

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
BEGAN = [sys.executable, "-m", "began"]
SMOKE = ["--preset", "smoke", "--device", "cpu", "--no-progress"]


def shell(cmd: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """`cmd` through sh, so that `2>&-` and `>&-` really close the stream."""
    return subprocess.run(["sh", "-c", cmd], cwd=tmp_path, env=ENV, capture_output=True,
                          text=True, timeout=300)


def began(*args) -> str:
    return " ".join([*map(str, BEGAN), *map(str, args)])


# --------------------------------------------------------------------------- closed streams

def test_closed_stderr_does_not_stop_training_or_export(image_folder, tmp_path):
    run_dir = tmp_path / "run"
    r = shell(began("train", image_folder, "--out", run_dir, *SMOKE, "--steps", 4,
                    "--ckpt-every", 4) + " 2>&-", tmp_path)
    assert r.returncode == 0, r.stdout
    assert (run_dir / "checkpoints" / "ckpt-00000004.safetensors").is_file()
    r = shell(began("export", run_dir, "--out", tmp_path / "m", "--fit-steps", 5,
                    "--device", "cpu") + " 2>&-", tmp_path)
    assert r.returncode == 0 and (tmp_path / "m" / "manifest.json").is_file(), r.stdout


def test_closed_stdout_refuses_json_before_any_work(tiny_run, tmp_path):
    r = shell(began("export", tiny_run, "--out", tmp_path / "m", "--json") + " >&-", tmp_path)
    assert r.returncode == 1
    assert r.stderr.splitlines()[0] == ("error: stdout is closed, and --json writes the "
                                        "manifest there"), r.stderr
    assert not (tmp_path / "m").exists()  # refused before the export, not after it


def test_full_stdout_is_one_error_for_dry_run_and_export_json(image_folder, tiny_run,
                                                             tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    r = shell(began("train", image_folder, "--out", tmp_path / "r", "--dry-run")
              + " > /dev/full", tmp_path)
    assert r.returncode == 1 and r.stderr.startswith("error: cannot write to stdout"), r.stderr
    assert "unexpected" not in r.stderr and not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- bounded reads

def test_reading_refuses_links_to_devices_fifos_and_large_files(tmp_path):
    from began.reading import Unreadable, read_capped

    (tmp_path / "zero").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "big").write_bytes(b"x" * 101)
    (tmp_path / "ok").write_bytes(b"x" * 100)
    for name, why in (("zero", "is a device, not a file"), ("fifo", "is a FIFO, not a file"),
                      ("big", "is 101 bytes, more than such a file may be (100)"),
                      ("gone", "is missing")):
        with pytest.raises(Unreadable) as e:
            read_capped(tmp_path / name, 100)
        assert str(e.value) == why
    assert read_capped(tmp_path / "ok", 100) == b"x" * 100
    (tmp_path / "link").symlink_to(tmp_path / "ok")
    with pytest.raises(Unreadable):
        read_capped(tmp_path / "link", 100, follow=False)


def test_run_files_that_are_devices_are_errors_not_reads(tiny_run, tmp_path):
    """A run whose stats.jsonl is a link to /dev/zero: export's reader and training's
    resume refuse it in one line instead of reading forever."""
    import shutil

    from began.errors import BeganError
    from began.train.run_folder import truncate_stats
    from began.train.runs import training_seconds

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    (run_dir / "stats.jsonl").unlink()
    (run_dir / "stats.jsonl").symlink_to("/dev/zero")
    with pytest.raises(BeganError, match="is a device, not a file"):
        training_seconds(run_dir, 20)
    with pytest.raises(BeganError, match="is a device, not a file"):
        truncate_stats(run_dir / "stats.jsonl", 10)


def test_truncate_stats_streams_and_keeps_rows_up_to_the_step(tmp_path):
    from began.train.run_folder import truncate_stats

    path = tmp_path / "stats.jsonl"
    rows = [json.dumps({"step": s, "k": 0.1}) for s in range(0, 50, 5)]
    path.write_text("\n".join(rows) + '\n{"step": 7, "k"')  # a torn last line
    truncate_stats(path, 20)
    assert [json.loads(ln)["step"] for ln in path.read_text().splitlines()] == [0, 5, 10, 15, 20]


# --------------------------------------------------------------------------- caches

def _entry(tmp_path):
    from began.train import inception as inc

    feats = np.random.default_rng(0).standard_normal((3, inc.FEATURE_DIM)).astype(np.float32)
    inc.save_cached(tmp_path, "k", feats, {})
    data, meta = inc._paths(tmp_path, "k")
    return inc, feats, data, meta


def test_feature_cache_entries_are_checked_when_read(tmp_path):
    inc, feats, data, meta = _entry(tmp_path)
    assert np.array_equal(inc.load_cached(tmp_path, "k", 3), feats)
    # a zero-filled array with the right header: the checksum tells
    np.save(data, np.zeros_like(feats), allow_pickle=False)
    assert inc.load_cached(tmp_path, "k", 3) is None
    # a NaN entry whose checksum matches (written so): refused too
    bad = feats.copy()
    bad[1, 7] = np.nan
    inc.save_cached(tmp_path, "k", bad, {})
    assert inc.load_cached(tmp_path, "k", 3) is None
    # links to /dev/zero, for the array or its description: a miss, never a read
    inc.save_cached(tmp_path, "k", feats, {})
    for path in (data, meta):
        keep = path.read_bytes()
        path.unlink()
        path.symlink_to("/dev/zero")
        assert inc.load_cached(tmp_path, "k", 3) is None
        path.unlink()
        path.write_bytes(keep)
    assert np.array_equal(inc.load_cached(tmp_path, "k", 3), feats)
    # an entry written before checksums were: a miss, rewritten by the next eval
    info = json.loads(meta.read_text())
    del info["sha256"]
    meta.write_text(json.dumps(info))
    assert inc.load_cached(tmp_path, "k", 3) is None


def test_an_unwritable_feature_cache_is_a_warning_not_a_failure(tmp_path):
    from began.train import inception as inc

    class Net:  # Inception's interface, without the network
        sha256 = "n" * 64

        def features(self, images, batch_size=32, advance=None):
            return np.ones((len(images), inc.FEATURE_DIM), np.float32)

    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    said = []
    feats, cached = inc.reference_features(Net(), np.zeros((4, 8, 8, 3), np.uint8), "k" * 64,
                                           np.arange(4), blocker / "cache", warn=said.append)
    assert feats.shape == (4, inc.FEATURE_DIM) and not cached
    assert len(said) == 1 and said[0].startswith(
        f"warning: cannot cache the reference features in {blocker / 'cache'} (")


def test_data_cache_description_that_is_a_device_is_a_miss(image_folder, tmp_path):
    from began.decode import Preprocess
    from began.train.data import load_image_folder

    pre = Preprocess(resolution=16)
    first = load_image_folder(image_folder, pre, cache_dir=tmp_path, progress=False)
    meta = next(tmp_path.glob("*.json"))
    meta.unlink()
    meta.symlink_to("/dev/zero")
    again = load_image_folder(image_folder, pre, cache_dir=tmp_path, progress=False)
    assert not again.from_cache and np.array_equal(np.asarray(first.images),
                                                   np.asarray(again.images))


# --------------------------------------------------------------------------- eval, interpolate

def test_eval_refuses_a_run_whose_config_is_gone(tiny_run, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    (run_dir / "config.json").unlink()
    assert run(["eval", str(run_dir), "--ref", str(tmp_path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"error: {run_dir} is a training run (") and \
        err[0].endswith("whose config.json is missing"), err
    assert err[1].startswith("hint: restore config.json")


def test_interpolate_outdir_is_not_held_to_the_grid_bound(tiny_bundle, tmp_path):
    """A strip of 40 frames at 16 x 64 = 1024 px would be 42M pixels in one image, over
    the grid bound; one file a frame is not held to it."""
    out = tmp_path / "frames"
    assert run(["interpolate", "--seeds", "1,2", "--steps", "40", "--scale", "64",
                "--outdir", str(out), "-m", str(tiny_bundle), "-q"]) == 0
    assert len(list(out.glob("*.png"))) == 40
    assert run(["interpolate", "--seeds", "1,2", "--steps", "40", "--scale", "64",
                "--out", str(tmp_path / "strip.png"), "-m", str(tiny_bundle), "-q"]) == 2
