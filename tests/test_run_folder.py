"""The run folder: one writer (a lock a crash releases), the checkpoint's config as the
truth when config.json is gone, stale temp files removed, no empty folder after a
failed start, intervals that fit a short run, CPU threads."""

import fcntl
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from began.app import run
from began.errors import UsageError
from began.files import temp_name_for
from began.train.config import fit_intervals, preset
from began.train.run_folder import LOCK_NAME
from began.train.threads import choose_threads, default_threads
from checks import checkpoint_at

BASE = ["--preset", "smoke", "--device", "cpu", "--no-progress", "--batch-size", "8",
        "--log-every", "2", "--ckpt-every", "4", "--sample-every", "4"]


def train(folder, out, *extra):
    return run(["train", str(folder), "--out", str(out), *map(str, extra)])


def listing(folder):
    """Every path under `folder` with its size and mtime: what a second writer must not touch."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def short_run(image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("short") / "run"
    assert train(image_folder, out, *BASE, "--steps", 8) == 0
    return out


def test_a_second_writer_fails_at_once_and_writes_nothing(image_folder, short_run, tmp_path,
                                                          capsys):
    out = tmp_path / "run"
    shutil.copytree(short_run, out)
    # Another process's lock: flock conflicts between two open file descriptions, so
    # this process holding it through its own descriptor is what a second trainer meets.
    fd = os.open(out / LOCK_NAME, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.write(fd, b"4242\n")
        before = listing(out)
        capsys.readouterr()
        assert train(image_folder, out, *BASE, "--steps", 12) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"error: {out} is in use by another began train (pid 4242)",
                       "hint: wait for it to finish or stop it, or pass another --out"]
        assert listing(out) == before
    finally:
        os.close(fd)  # what a crash does too: the OS drops the lock with the descriptor
    assert train(image_folder, out, *BASE, "--steps", 12) == 0
    assert "resumed from ckpt-00000008" in capsys.readouterr().err


def test_a_killed_trainer_leaves_the_lock_free(image_folder, tmp_path, capsys):
    out = tmp_path / "run"
    code = ("import os, signal, sys\n"
            "import began.train.run_folder as rf\n"
            "real = rf.RunFolder.write_stats\n"
            "def die(self, row):\n"
            "    real(self, row)\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n"
            "rf.RunFolder.write_stats = die\n"
            "from began.app import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code, "train", str(image_folder), "--out",
                           str(out), *BASE, "--steps", "8"], env=env, capture_output=True)
    assert proc.returncode == -9 and (out / "stats.jsonl").exists()
    assert train(image_folder, out, *BASE, "--steps", 8) == 0


def test_a_lock_that_is_not_a_file_of_ours_is_refused_and_left_untouched(
        image_folder, short_run, tmp_path, capsys):
    """A symlinked lock (or a hard link to a user's file, or a FIFO) was once truncated and
    overwritten with a pid; now it is refused before anything is written (exit 1)."""
    secret = tmp_path / "secret.txt"
    secret.write_text("the user's own file")
    os.chmod(secret, 0o600)
    out = tmp_path / "run"
    for i, make in enumerate((lambda p: p.symlink_to(secret), lambda p: os.link(secret, p),
                              lambda p: os.mkfifo(p))):
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(short_run, out)
        (out / LOCK_NAME).unlink()
        make(out / LOCK_NAME)
        before = listing(out)
        capsys.readouterr()
        assert train(image_folder, out, *BASE, "--steps", 12) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-2].startswith(f"error: {out / LOCK_NAME} is a "), err
        assert "not a lock file that began made; it was left untouched" in err[-2]
        assert err[-1].startswith(f"hint: remove {out / LOCK_NAME} yourself"), err
        assert listing(out) == before, i
        assert secret.read_text() == "the user's own file"
        assert secret.stat().st_mode & 0o777 == 0o600
    # A fresh run folder with a symlinked lock planted in it: nothing is created either.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / LOCK_NAME).symlink_to(secret)
    assert train(image_folder, fresh, *BASE, "--steps", 2) == 1
    assert sorted(p.name for p in fresh.iterdir()) == [LOCK_NAME]
    assert secret.read_text() == "the user's own file"


def test_files_are_never_written_through_a_final_symlink(tmp_path):
    """The helpers every write goes through: appends and locks refuse a link; atomic
    writes replace the link itself; nothing reaches the link's target."""
    from began import files

    target = tmp_path / "target"
    target.write_text("mine")
    link = tmp_path / "stats.jsonl"
    link.symlink_to(target)
    with pytest.raises(OSError, match="symbolic link"):
        files.append_text(link, "a row\n")
    with pytest.raises(files.LockRefused):
        files.open_lock(link)
    files.write_text(link, "new")  # the output rule: the link is replaced, not followed
    assert not link.is_symlink() and link.read_text() == "new"
    assert target.read_text() == "mine"
    other = tmp_path / "other.txt"
    other.write_text("theirs")
    os.link(other, tmp_path / "hard.lock")
    with pytest.raises(files.LockRefused, match="hard link"):
        files.open_lock(tmp_path / "hard.lock")
    fd, created = files.open_lock(tmp_path / "ok.lock")
    os.close(fd)
    assert created and files.open_lock(tmp_path / "ok.lock")[1] is False
    assert other.read_text() == "theirs"


@pytest.mark.parametrize("where", ["inside", "same", "around"])
def test_a_run_folder_at_inside_or_around_the_data_folder_is_refused(image_folder, tmp_path,
                                                                     capsys, where):
    """`began train data --out data/run` would train on its own PNGs the second time (and
    rewrite the data cache): refused, exit 2, before anything is written."""
    data = tmp_path / "data"
    shutil.copytree(image_folder, data)
    cache = sorted(os.listdir(os.environ["BEGAN_CACHE_DIR"])) if os.path.isdir(
        os.environ["BEGAN_CACHE_DIR"]) else []
    if where == "around":  # the data folder inside the run folder
        run_dir, data_dir = tmp_path, data
    else:
        run_dir, data_dir = (data / "run" if where == "inside" else data), data
    alias = tmp_path / "alias"  # through a symlink or .. too
    alias.symlink_to(data)
    before = listing(tmp_path)
    for out in (run_dir, alias / "run" if where == "inside" else run_dir):
        capsys.readouterr()
        assert train(data_dir, out, *BASE, "--steps", 2) == 2
        err = capsys.readouterr().err.strip().splitlines()
        rel = {"inside": "is inside", "same": "is", "around": "contains"}[where]
        assert err[0] == f"error: --out {out} {rel} the data folder {data_dir}", err
        assert err[1] == "hint: put the run folder outside the data folder, e.g. --out runs/NAME"
        assert listing(tmp_path) == before
    after = sorted(os.listdir(os.environ["BEGAN_CACHE_DIR"])) if os.path.isdir(
        os.environ["BEGAN_CACHE_DIR"]) else []
    assert after == cache  # the data was not even scanned


def test_without_config_json_the_checkpoint_config_decides(image_folder, short_run, tmp_path,
                                                           capsys):
    out = tmp_path / "copied"
    (out / "checkpoints").mkdir(parents=True)
    for p in (short_run / "checkpoints").iterdir():
        shutil.copy(p, out / "checkpoints" / p.name)
    before = listing(out)
    capsys.readouterr()
    for flag, change in (("--gamma", "gamma: 0.5 -> 0.7"), ("--lr-g", "lr_g: 0.0001 -> 0.0005")):
        value = "0.7" if flag == "--gamma" else "5e-4"
        assert train(image_folder, out, *BASE, "--steps", 12, flag, value) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[0].startswith("error: checkpoint ckpt-00000008.safetensors in ")
        assert change in err[0] and err[1].startswith("hint: rerun with the same flags")
        assert listing(out) == before  # refused before anything was written
    assert train(image_folder, out, *BASE, "--steps", 12) == 0
    assert "resumed from ckpt-00000008" in capsys.readouterr().err
    tensors, state = checkpoint_at(out, 12)
    assert state["config"]["lr_g"] == 1e-4 and state["config"]["gamma"] == 0.5
    # The lr recorded is the one the optimiser used.
    assert state["opt_g"]["param_groups"][0]["lr"] == state["lr_schedule"]["lr_g"] == 1e-4


def test_config_json_and_checkpoint_are_both_checked(image_folder, short_run, tmp_path, capsys):
    out = tmp_path / "edited"
    shutil.copytree(short_run, out)
    cfg = json.loads((out / "config.json").read_text())
    cfg["gamma"] = 0.7  # config.json edited by hand to agree with the new flag
    (out / "config.json").write_text(json.dumps(cfg))
    capsys.readouterr()
    assert train(image_folder, out, *BASE, "--steps", 12, "--gamma", 0.7) == 2
    err = capsys.readouterr().err
    assert "checkpoint ckpt-00000008.safetensors" in err and "gamma: 0.5 -> 0.7" in err


def test_stale_temp_files_of_dead_writers_are_removed(image_folder, short_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(short_run, out)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = [temp_name_for(out / "stats.jsonl", dead.pid),
             temp_name_for(out / "samples" / "samples-00000010.png", dead.pid, 3),
             temp_name_for(out / "checkpoints" / "ckpt-00000010.safetensors", dead.pid, 1)]
    kept = [temp_name_for(out / "config.json", os.getpid(), 999),  # a live process's
            out / "notes.tmp", out / "samples" / ".mine.tmp",  # not our temp-name pattern
            # look-alikes a user made, of a dead pid: no token that verifies, so kept
            out / f".stats.jsonl.{dead.pid}-0.tmp",
            out / "samples" / f".samples-00000010.png.{dead.pid}-3.tmp",
            out / "checkpoints" / f".ckpt-00000010.safetensors.{dead.pid}-1.tmp",
            out / "checkpoints" / f".ckpt-00000012.safetensors.{dead.pid}-1.{'f' * 16}.tmp"]
    for p in stale + kept:
        p.write_bytes(b"half")
    assert train(image_folder, out, *BASE, "--steps", 12) == 0  # and a checkpoint pruned
    assert [p.exists() for p in stale] == [False] * 3
    assert [p.read_bytes() for p in kept] == [b"half"] * len(kept)


def test_a_failed_start_leaves_no_empty_run_folder(tmp_path, capsys):
    empty = tmp_path / "no-images"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    new = tmp_path / "a" / "b" / "run"
    assert train(empty, new, *BASE) == 1
    assert not (tmp_path / "a").exists()  # all three folders were this command's
    existing = tmp_path / "mine"
    existing.mkdir()
    (existing / "keep.txt").write_text("user file")
    assert train(empty, existing, *BASE) == 1
    assert sorted(p.name for p in existing.iterdir()) == ["keep.txt"]
    assert train(tmp_path / "missing", tmp_path / "run2", *BASE) == 1
    assert not (tmp_path / "run2").exists()


def test_interrupt_while_decoding_removes_the_new_folder(image_folder, tmp_path, monkeypatch):
    import began.train.load as load

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(load, "load_image_folder", ctrl_c)
    out = tmp_path / "run"
    assert train(image_folder, out, *BASE) == 130
    assert not out.exists()


def test_short_runs_get_intermediate_grids_and_checkpoints():
    cfg = preset("paper64").replace(steps=1500)
    fitted = fit_intervals(cfg, given=set())
    assert (fitted.sample_every, fitted.ckpt_every) == (150, 375)
    assert fit_intervals(cfg, given={"sample_every"}).sample_every == 2000
    long = fit_intervals(preset("paper64"), given=set())  # 200k steps: the defaults stand
    assert (long.sample_every, long.ckpt_every) == (2000, 5000)
    tiny = fit_intervals(cfg.replace(steps=3), given=set())
    assert (tiny.sample_every, tiny.ckpt_every) == (1, 1)


def test_dry_run_shows_the_fitted_intervals(tmp_path, capsys):
    assert train(tmp_path, tmp_path / "run", "--steps", 1500, "--ckpt-every", 1000,
                 "--dry-run") == 0
    cfg = json.loads(capsys.readouterr().out)
    assert (cfg["sample_every"], cfg["ckpt_every"]) == (150, 1000)


def test_thread_count_rule(monkeypatch):
    monkeypatch.setattr("began.train.threads.usable_cores", lambda: 16)
    assert choose_threads(None, {}) == 4 == default_threads({})
    assert choose_threads(None, {"LOCAL_WORLD_SIZE": "4"}) == 2
    monkeypatch.setattr("began.train.threads.usable_cores", lambda: 2)
    assert choose_threads(None, {}) == 1
    env = {"OMP_NUM_THREADS": "3"}
    assert choose_threads(None, env) == 3
    assert choose_threads(None, {**env, "BEGAN_THREADS": "2"}) == 2
    assert choose_threads(5, {**env, "BEGAN_THREADS": "2"}) == 5
    assert choose_threads(0, env) is None  # torch's own default
    assert choose_threads(None, {"OMP_NUM_THREADS": "4,2"}) == 1  # nested syntax: not ours
    with pytest.raises(UsageError):
        choose_threads(None, {"BEGAN_THREADS": "many"})


def test_threads_flag_sets_torch_threads(image_folder, tmp_path, monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("BEGAN_THREADS", "3")
    try:
        assert train(image_folder, tmp_path / "a", *BASE, "--steps", 1) == 0
        assert torch.get_num_threads() == 3
        assert train(image_folder, tmp_path / "b", *BASE, "--steps", 1, "--threads", 2) == 0
        assert torch.get_num_threads() == 2
        assert train(image_folder, tmp_path / "c", *BASE, "--steps", 1, "--threads", -1) == 2
    finally:
        torch.set_num_threads(before)
