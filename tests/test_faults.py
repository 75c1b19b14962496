"""Training survives crashes: kill -9 anywhere (mid-checkpoint-write included),
Ctrl-C, a full disk. Every interrupted run, rerun with the same command, ends
bit-identical to a run that was never interrupted."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from began.app import run
from began.train.checkpoint import list_checkpoints
from checks import assert_same_state, checkpoint_at

STEPS = 40
BASE = ["--preset", "smoke", "--device", "cpu", "--no-progress"]
ARGS = [*BASE, "--steps", str(STEPS), "--ckpt-every", "5", "--log-every", "1",
        "--sample-every", "20", "--keep", "3", "--lr-window", "4", "--lr-patience", "1",
        "--lr-min-delta", "0.5"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

# Run `began train` in a child; with BEGAN_TEST_TEAR_CKPT=N the child writes half of
# checkpoint N to its temp file and then SIGKILLs itself: a crash in mid-write.
CHILD = """
import os, signal, sys
tear = int(os.environ.get("BEGAN_TEST_TEAR_CKPT", "0"))
if tear:
    import began.train.checkpoint as ck
    real = ck.save_file
    def torn(tensors, path, metadata=None):
        real(tensors, path, metadata=metadata)
        if int(metadata and __import__("json").loads(metadata["state"])["step"]) == tear:
            size = os.path.getsize(path)
            with open(path, "r+b") as f:
                f.truncate(size // 2)
            os.kill(os.getpid(), signal.SIGKILL)
    ck.save_file = torn
from began.app import main
sys.exit(main(sys.argv[1:]))
"""


def child(folder, out, extra_env=None):
    return subprocess.Popen([sys.executable, "-c", CHILD, "train", str(folder), "--out",
                             str(out), *ARGS], env={**ENV, **(extra_env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def logged_step(out) -> int:
    try:
        lines = (out / "stats.jsonl").read_text().splitlines()
        return json.loads(lines[-1])["step"] if lines else 0
    except (OSError, ValueError, KeyError):
        return 0


def wait_for_step(proc, out, step, timeout=120) -> None:
    t = time.time()
    while logged_step(out) < step and proc.poll() is None:
        assert time.time() - t < timeout, "the run made no progress"
        time.sleep(0.02)


def final(out):
    return checkpoint_at(out, STEPS)


def test_kill_9_anywhere_then_rerun_finishes_bit_exact(image_folder, tmp_path):
    ref = tmp_path / "ref"  # in a child too: the thread count changes float sums
    proc = child(image_folder, ref)
    assert proc.wait(timeout=300) == 0

    out = tmp_path / "killed"
    rng = random.Random(1234)
    points = sorted(rng.sample(range(2, STEPS - 2), 5))  # kill once these steps are logged
    kills = []
    for target in points:
        proc = child(image_folder, out)
        wait_for_step(proc, out, target)
        proc.kill()  # SIGKILL: no handler, no cleanup
        proc.wait()
        kills.append((target, logged_step(out)))
    # A crash in the middle of writing checkpoint 35: a torn temp file is left behind.
    proc = child(image_folder, out, {"BEGAN_TEST_TEAR_CKPT": "35"})
    proc.wait(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert list((out / "checkpoints").glob(".ckpt-00000035*.tmp"))
    assert [s for s, _ in list_checkpoints(out / "checkpoints")][-1] == 30

    proc = child(image_folder, out)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "resumed from ckpt-00000030" in err
    assert not list((out / "checkpoints").glob("*.tmp"))  # the torn write was swept away
    assert_same_state(final(out), final(ref))
    rows = [json.loads(r)["step"] for r in (out / "stats.jsonl").read_text().splitlines()]
    assert rows == list(range(1, STEPS + 1))  # no duplicate or lost rows after resumes
    print(f"killed at logged steps {kills}, then mid-write of checkpoint 35")


def test_sigint_checkpoints_and_exits_130(image_folder, tmp_path):
    out = tmp_path / "int"
    proc = child(image_folder, out)
    wait_for_step(proc, out, 12)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    stopped = logged_step(out)
    assert f"error: interrupted at step {stopped}; resume point" in err
    assert (out / "checkpoints" / f"ckpt-{stopped:08d}.safetensors").exists()
    proc = child(image_folder, out)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and f"resumed from ckpt-{stopped:08d}" in err


@pytest.mark.parametrize("kind", ["OSError", "SafetensorError"])
def test_full_disk_is_a_clear_error_and_keeps_the_last_checkpoint(image_folder, tmp_path,
                                                                  monkeypatch, capsys, kind):
    """Exit 3 (partial: the run resumes from its last checkpoint), one error naming what
    could not be written, whichever way the disk's error arrives (safetensors reports
    its I/O errors as SafetensorError, not OSError)."""
    import began.train.checkpoint as ck
    from safetensors import SafetensorError

    out = tmp_path / "full"
    assert run(["train", str(image_folder), "--out", str(out), *BASE, "--steps", "5",
                "--ckpt-every", "5"]) == 0
    good = out / "checkpoints" / "ckpt-00000005.safetensors"
    before = good.read_bytes()

    def no_space(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"half a checkpoint")  # the temp file the failed write leaves
        if kind == "OSError":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: '
                              'StorageFull, message: "No space left on device" })')

    monkeypatch.setattr(ck, "save_file", no_space)
    capsys.readouterr()
    assert run(["train", str(image_folder), "--out", str(out), *BASE, "--steps", "10",
                "--ckpt-every", "5"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-2] == (f"error: cannot write checkpoint 10 in {out} (No space left on device)")
    assert err[-1].startswith("hint: free disk space") and "resumes from" in err[-1]
    assert good.read_bytes() == before
    assert [p.name for p in (out / "checkpoints").iterdir()] == [good.name]


def test_unwritable_tensorboard_folder_warns_once_and_training_goes_on(image_folder, tmp_path,
                                                                      capsys):
    """TensorBoard is a view: a file where tensorboard/ should be stops the events with
    one warning naming it (no thread traceback, not blamed on stats.jsonl); the run
    finishes with every stats row."""
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    out.mkdir()
    (out / "tensorboard").write_text("in the way")
    assert run(["train", str(image_folder), "--out", str(out), *BASE, "--steps", "6",
                "--log-every", "2"]) == 0
    err = capsys.readouterr().err
    warnings = [ln for ln in err.splitlines() if "TensorBoard" in ln]
    assert len(warnings) == 1 and warnings[0].startswith(
        f"warning: TensorBoard events stopped: cannot write {out / 'tensorboard'} ("), err
    assert "Traceback" not in err and "stats.jsonl" in warnings[0]
    assert [json.loads(ln)["step"] for ln in (out / "stats.jsonl").read_text().splitlines()] \
        == [2, 4, 6]


def test_unwritable_run_folder_is_a_clear_error(image_folder, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert run(["train", str(image_folder), "--out", str(blocker / "run"), "--preset",
                "smoke", "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"error: cannot write the run folder {blocker / 'run'}")
    assert err[1] == "hint: choose an --out you can write to"


# --- signals during the first decode of a training folder (parallel workers) ---

DECODE_CHILD = """
import sys
from began.app import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory):
    """400 noisy 192x192 PNGs: slow enough to decode that a signal lands mid-decode."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(0)
    for i in range(400):
        Image.fromarray(rng.integers(0, 256, (192, 192, 3), dtype=np.uint8)).save(
            folder / f"n{i:03d}.png", compress_level=0)
    return folder


def _session_pids(sid: int) -> list[int]:
    """Live processes of a session (the child and any worker it left behind)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields[3]: session id
            pids.append(int(entry))
    return pids


def _start_decode(folder, tmp_path, name):
    cache = tmp_path / f"cache-{name}"
    proc = subprocess.Popen(
        [sys.executable, "-c", DECODE_CHILD, "train", str(folder), "--out",
         str(tmp_path / f"run-{name}"), *BASE, "--steps", "1", "--workers", "2"],
        env={**ENV, "BEGAN_CACHE_DIR": str(cache)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    t = time.time()
    while not list(cache.glob(".*.tmp")):  # the cache's temp file: decoding has begun
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t < 120, "decoding never started"
        time.sleep(0.01)
    return proc, cache


SLOW_EXIT_CHILD = """
import atexit, sys, time
import began.app
atexit.register(lambda: (print("exiting", flush=True), time.sleep(3)))  # a slow teardown
began.app.run = lambda argv: 130  # a command that a first Ctrl-C has stopped
sys.exit(began.app.main(["sample"]))
"""


def test_a_second_ctrl_c_while_the_interpreter_exits_prints_no_traceback():
    """What 'ctrl-c twice' below hits now and then on a loaded machine: the second Ctrl-C
    lands in atexit callbacks (torch's finalizers) after the command has stopped."""
    proc = subprocess.Popen([sys.executable, "-c", SLOW_EXIT_CHILD], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "exiting\n"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err == "", err


@pytest.mark.parametrize("how", ["ctrl-c", "ctrl-c", "ctrl-c", "ctrl-c", "ctrl-c twice",
                                 "sigterm", "sigterm"])
def test_signals_during_first_decode_never_hang_or_leave_anything(big_folder, tmp_path, how):
    proc, cache = _start_decode(big_folder, tmp_path, "x")
    time.sleep(random.uniform(0.05, 0.6))  # land somewhere inside the decode
    if how == "sigterm":
        proc.send_signal(signal.SIGTERM)  # the parent only, as a service manager does
    else:
        os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole group
        if how == "ctrl-c twice":
            time.sleep(0.05)
            os.killpg(proc.pid, signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"{how}: the decode hung")
    assert proc.returncode != 0, "the decode finished before the signal: make it slower"
    # -2: a second Ctrl-C after the first was handled ends Python by SIGINT, which a shell
    # reports as 130 too
    assert proc.returncode in ((143,) if how == "sigterm" else (130, -2)), err
    assert "Traceback" not in err, err
    t = time.time()
    while _session_pids(proc.pid) and time.time() - t < 10:
        time.sleep(0.1)
    assert _session_pids(proc.pid) == [], "worker processes outlived the command"
    assert [p.name for p in cache.iterdir() if p.name.startswith(".")] == []  # no temp file
