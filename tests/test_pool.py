"""Tests for began.train.pool: decoding in worker processes gives what decoding in-process
gives, in file order, a bad file fails alone, and the pool stops cleanly when left early."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
from began.decode import Preprocess
from began.train import pool
from began.train.data import ImageSet, Skipped, load_image_folder
from PIL import Image

PRE = Preprocess(8)


def save(img: Image.Image, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def small_folder(root: Path, n: int = 3) -> Path:
    for i in range(n):
        save(Image.new("RGB", (8, 8), (i * 40 % 256, 100, 200 - i)), root / f"{i:03d}.png")
    return root


def load(root: Path, tmp_path: Path, **kw) -> ImageSet:
    return load_image_folder(root, PRE, cache_dir=tmp_path / "cache", progress=False, **kw)


def noise_files(root: Path, n: int) -> list[str]:
    rng = np.random.default_rng(3)
    return [str(save(Image.fromarray(rng.integers(0, 256, (8, 8, 3), np.uint8)),
                     root / f"{i:03d}.png")) for i in range(n)]


class SpyPool(pool.ProcessPoolExecutor):
    """The real pool, remembered, so a test can tell that workers did run."""

    made: list[SpyPool] = []

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        SpyPool.made.append(self)


@pytest.fixture
def spy(monkeypatch):
    SpyPool.made = []
    monkeypatch.setattr(pool, "ProcessPoolExecutor", SpyPool)
    return SpyPool.made


# ----------------------------------------------------------------------------
# decode_files
# ----------------------------------------------------------------------------


def test_parallel_gives_the_serial_results_in_order_and_fails_files_alone(
        tmp_path, monkeypatch, spy):
    paths = noise_files(tmp_path / "imgs", 70)
    Path(paths[0]).write_bytes(b"")  # first, middle and last fail; nothing else may
    Path(paths[33]).write_text("not a picture")
    save(Image.new("RGB", (16, 16), (1, 2, 3)), Path(paths[69]))  # over the bomb limit
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # workers must judge it the same
    serial = list(pool.decode_files(paths, PRE, workers=1))
    assert spy == []
    parallel = list(pool.decode_files(paths, PRE, workers=2))
    assert len(spy) == 1  # 70 files > 64: worker processes did the decoding
    assert len(parallel) == len(serial) == 70
    bad = {0: "empty file", 69: "too large (decompression bomb)"}
    for i, ((img, why), (ref, ref_why)) in enumerate(zip(parallel, serial)):
        assert why == ref_why, i
        if i in bad:
            assert img is None and why == bad[i]
        elif i == 33:
            assert img is None and why.startswith("not an image")
        else:
            assert why == "" and img.dtype == np.uint8 and np.array_equal(img, ref), i
            assert np.array_equal(img, np.asarray(Image.open(paths[i]))), i  # file order


def test_few_files_or_one_worker_start_no_pool(tmp_path, spy):
    paths = noise_files(tmp_path / "imgs", 65)
    assert len(list(pool.decode_files(paths[:64], PRE, workers=8))) == 64
    assert len(list(pool.decode_files(paths, PRE, workers=1))) == 65
    assert spy == []


def test_leaving_early_stops_the_workers_and_restores_signals(tmp_path, spy):
    paths = noise_files(tmp_path / "imgs", 100)
    sigint = signal.getsignal(signal.SIGINT)
    results = pool.decode_files(paths, PRE, workers=2)
    img, why = next(results)
    assert why == "" and img.shape == (8, 8, 3)
    procs = list(spy[0]._processes.values())
    assert procs and all(p.is_alive() for p in procs)
    results.close()  # as load_image_folder does on Ctrl-C, SIGTERM or an error
    assert not any(p.is_alive() for p in procs)
    assert signal.getsignal(signal.SIGINT) is sigint
    held = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert signal.SIGINT not in held and signal.SIGTERM not in held


def test_default_workers(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert pool.default_workers() == 1
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert pool.default_workers() == 3
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert pool.default_workers() == 8


# ----------------------------------------------------------------------------
# Through load_image_folder, and the pool's own failure modes
# ----------------------------------------------------------------------------


def test_workers_give_identical_results(tmp_path, spy):
    root = tmp_path / "imgs"
    rng = np.random.default_rng(1)
    for i in range(80):
        save(Image.fromarray(rng.integers(0, 256, (8, 8, 3), np.uint8)), root / f"{i:02d}.png")
    (root / "50_bad.png").write_bytes(b"")
    one = load(root, tmp_path / "c1", workers=1)
    two = load(root, tmp_path / "c2", workers=2)
    assert [p._max_workers for p in spy] == [2]  # 81 files > 64: real worker processes
    assert not two.from_cache
    assert one.files == two.files and len(one.files) == 80
    assert one.skipped == two.skipped == [Skipped("50_bad.png", "empty file")]
    assert np.asarray(one.images).tobytes() == np.asarray(two.images).tobytes()
    assert np.array_equal(one.images[17], np.asarray(Image.open(root / "17.png")))


def test_broken_worker_pool_falls_back_in_process(tmp_path, monkeypatch):
    class DyingPool:  # stands in for a pool whose workers die after 10 results
        def __init__(self, *a, **k):
            pass

        def map(self, fn, items, chunksize=1):
            for i, item in enumerate(items):
                if i == 10:
                    raise pool.BrokenProcessPool("worker died")
                yield fn(item)

        def shutdown(self, *a, **k):
            pass

    root = small_folder(tmp_path / "imgs", n=70)
    expected = np.array(load(root, tmp_path / "c1", workers=1).images)
    monkeypatch.setattr(pool, "ProcessPoolExecutor", DyingPool)
    with pytest.warns(RuntimeWarning, match="in-process"):
        s = load(root, tmp_path / "c2", workers=2)
    assert len(s.files) == 70 and np.array_equal(np.asarray(s.images), expected)


def _half_a_result_then_wait(marker: str) -> None:
    """Worker job: start a 1 MB result message, write 10 bytes of it, and stall, as a
    worker does when a Ctrl-C kills it in mid-write."""
    import struct
    import sys
    import time

    f = sys._getframe()
    while f.f_code.co_name != "_process_worker":  # the pool's worker loop holds the queue
        f = f.f_back
    os.write(f.f_locals["result_queue"]._writer.fileno(), struct.pack("!i", 1 << 20) + b"x" * 10)
    Path(marker).touch()
    time.sleep(600)


def test_stopping_the_pool_mid_result_does_not_hang_the_exit(tmp_path, monkeypatch):
    """The pool's manager thread, left reading half a message, is joined when Python
    exits: `began train` hung after 'interrupted' about once in ten Ctrl-Cs. Ending it must
    not print a traceback either (the futures a Ctrl-C cancelled are still queued)."""
    import multiprocessing
    import threading
    import time

    errors = []
    monkeypatch.setattr(threading, "excepthook", errors.append)
    executor = pool.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    marker = tmp_path / "written"
    executor.submit(_half_a_result_then_wait, str(marker))
    queued = [executor.submit(abs, -i) for i in range(4)]  # behind the stalled job
    manager, results = executor._executor_manager_thread, executor._result_queue
    t = time.time()
    while not marker.exists():
        assert time.time() - t < 60, "the worker never wrote"
        time.sleep(0.01)
    time.sleep(0.2)  # the manager thread is now waiting for the rest of the message
    assert sum(f.cancel() for f in queued) >= 2  # as map() does when Ctrl-C reaches it
    try:
        pool._stop_pool(executor, finished=False)
        manager.join(timeout=20)
        assert not manager.is_alive(), "the pool's manager thread would block Python's exit"
        assert [e.exc_type.__name__ for e in errors] == []
    finally:
        if manager.is_alive():  # release it, or the failed test hangs the whole session
            results._writer.close()
            manager.join(timeout=20)
