"""Progress for long jobs outside the training loop (data decoding, export phases).

The rule of the whole project: a rich bar with an ETA on a terminal (the bar
of output.Out.progress), and plain `label i/n, ETA m:ss` lines elsewhere (logs,
pipes, CI), at most one every `every_s` seconds so a log stays readable.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator

from .output import Out


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


@contextlib.contextmanager
def progress(total: int, label: str, log: Callable[[str], None] | None = None,
             show: bool | None = None, every_s: float = 10.0) -> Iterator[Callable[..., None]]:
    """Yields advance(k=1). `show`: None = a bar if stderr is a terminal, False = never.
    Without a bar, `log` (if given) gets a plain line with the ETA now and then."""
    if show is not False and sys.stderr.isatty():
        with Out().progress(total, label) as advance:
            yield advance
        return
    start = last = time.monotonic()
    done = [0]
    printed = [False]

    def advance(k: int = 1) -> None:
        nonlocal last
        done[0] += k
        now = time.monotonic()
        if log is None or now - last < every_s or done[0] >= total:
            return
        last = now
        eta = (now - start) / done[0] * (total - done[0])
        log(f"{label} {done[0]}/{total}, ETA {_clock(eta)}")
        printed[0] = True

    yield advance
    if log is not None and printed[0]:
        log(f"{label} {done[0]}/{total}, done in {_clock(time.monotonic() - start)}")
