"""Decode many image files, in worker processes when there are enough of them.

Why a module of its own: a process pool that is easy to start is hard to stop, and
every workaround below came from a hang or a traceback seen in `began train`:

- spawn, never fork: the parent may run threads (the progress bar, torch's pools).
- Workers ignore SIGINT: the terminal's Ctrl-C reaches the whole process group, and a
  worker interrupted while it holds the pool's queue lock deadlocks the pool (and
  prints its traceback on the user's terminal). The parent ignores SIGINT while it
  starts them (an ignored SIGINT survives exec) and holds SIGTERM back meanwhile, so
  no worker is started and left unrecorded.
- Leaving early (Ctrl-C, SIGTERM, an error) kills the workers instead of waiting for
  their queued work, with signals held off so a second Ctrl-C cannot cut that short.
- A worker killed in mid-write leaves the pool's manager thread waiting forever for the
  rest of the message, and Python's exit joins that thread (CPython 3.11): the pipe is
  closed under it so that it ends.
- Workers that cannot start (e.g. a __main__ read from stdin) or die: the rest is
  decoded in-process, with a warning; the results are the same, only slower.

`decode_files` is the one entry point: results come back in file order whatever the
number of workers, and a file that fails is reported as (None, reason) without
disturbing the others. Decoding itself is began/decode.py's; SIGTERM unwinding around
a whole load is the caller's (`began.errors.sigterm_unwinds`).
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import signal
import threading
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
from PIL import Image

from began.decode import Preprocess, decode_image, failure_reason

__all__ = ["decode_files", "default_workers"]

# Below this many files, worker start-up costs more than it saves.
_PARALLEL_MIN_FILES = 64
_MAX_DEFAULT_WORKERS = 8


def default_workers() -> int:
    """The workers when the caller names none: min(cpu count, 8), at least 1."""
    return max(1, min(os.cpu_count() or 1, _MAX_DEFAULT_WORKERS))


# ----------------------------------------------------------------------------
# In a worker
# ----------------------------------------------------------------------------


def _decode_job(path: str, pre: Preprocess) -> tuple[np.ndarray | None, str]:
    """Top-level (spawn-safe) worker: the image, or None and why not."""
    try:
        return decode_image(path, pre), ""
    except Exception as e:  # noqa: BLE001 - any failure (bomb warnings too) is a skip
        return None, failure_reason(e, path)


def _init_worker(max_image_pixels: int | None) -> None:
    # Workers must judge decompression bombs exactly as the parent does.
    Image.MAX_IMAGE_PIXELS = max_image_pixels
    # Ctrl-C reaches the whole process group: a worker interrupted while it holds
    # the pool's queue lock deadlocks the pool. Only the parent handles it, and
    # it terminates the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# ----------------------------------------------------------------------------
# In the parent
# ----------------------------------------------------------------------------


def decode_files(paths: Sequence[str], pre: Preprocess,
                 workers: int) -> Iterator[tuple[np.ndarray | None, str]]:
    """(image or None, reason) for each path, in path order; `workers` processes when
    there are more than a few dozen files. Close the iterator (contextlib.closing) to
    stop the workers when leaving early."""
    paths = list(paths)
    if workers <= 1 or len(paths) <= _PARALLEL_MIN_FILES:
        for p in paths:
            yield _decode_job(p, pre)
        return
    # spawn: never fork a parent that may run threads (the progress bar, torch's pools);
    # and exec'd workers inherit an ignored SIGINT (below), forkserver's would not.
    ctx = multiprocessing.get_context("spawn")
    chunk = max(1, min(32, len(paths) // (workers * 4)))
    with _spawning_workers():  # every worker starts in this block (one per early submit)
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                   initializer=_init_worker, initargs=(Image.MAX_IMAGE_PIXELS,))
        results = pool.map(functools.partial(_decode_job, pre=pre), paths, chunksize=chunk)
    done = 0
    finished = False
    try:
        for result in results:
            yield result
            done += 1
        finished = True
    except BrokenProcessPool as e:
        # Workers could not start (e.g. a __main__ read from stdin) or died: finish
        # in-process rather than fail; the results are the same, only slower.
        warnings.warn(f"image decoding workers failed ({e}); continuing in-process",
                      RuntimeWarning, stacklevel=4)  # point at the caller of load_image_folder
        for p in paths[done:]:
            yield _decode_job(p, pre)
    finally:
        _stop_pool(pool, finished)


@contextlib.contextmanager
def _spawning_workers():
    """Workers must never see the terminal's Ctrl-C (sent to the whole process group):
    one interrupted inside the pool's queue code deadlocks the pool, and its traceback
    lands on the user's terminal. An ignored SIGINT survives exec, so the parent
    ignores it while it starts them (a Ctrl-C in those few ms is lost), and holds
    SIGTERM back so that no worker is started and left unrecorded."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _stop_pool(pool: ProcessPoolExecutor, finished: bool) -> None:
    """Shut the pool down; when leaving early (Ctrl-C, SIGTERM, an error), kill the
    workers instead of waiting for their queued work, with signals held off so a
    second Ctrl-C cannot cut the cleanup short (it is delivered right after)."""
    if finished:
        pool.shutdown(wait=True)
        return
    main = threading.current_thread() is threading.main_thread()
    held = {signal.SIGINT, signal.SIGTERM}
    if main:
        signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        procs = list((getattr(pool, "_processes", None) or {}).values())
        # shutdown() forgets these two
        results = getattr(pool, "_result_queue", None)
        manager = getattr(pool, "_executor_manager_thread", None)
        # Shut down first: the manager thread then drops the futures a Ctrl-C cancelled
        # before it sees the workers die; the other way round, it marks them broken and
        # fails on the cancelled ones with a traceback (InvalidStateError, CPython 3.11).
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        if manager is not None and results is not None:
            _unblock_manager(manager, results, procs)
    finally:
        if main:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


def _unblock_manager(manager: threading.Thread, results, procs: list) -> None:
    """A worker killed while writing a result leaves half a message in the result pipe; the
    pool's manager thread then waits for the rest forever, and Python's exit joins that
    thread: the command hangs after its last line (CPython 3.11). With the workers dead,
    our copy of the pipe's write end is the last one: closing it turns that wait into EOF,
    which the thread handles as a broken pool, and it ends. That handling fails (and prints
    a traceback) on futures already cancelled, so those go first; the thread, blocked in
    its read, is not touching them."""
    manager.join(timeout=1.0)  # the usual case: it saw the shutdown and ended by itself
    if not manager.is_alive() or any(p.is_alive() for p in procs):
        return
    pending = getattr(manager, "pending_work_items", {})
    for key in [k for k, item in pending.items() if item.future.cancelled()]:
        del pending[key]
    results._writer.close()
    manager.join(timeout=5.0)
