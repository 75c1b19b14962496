"""How many CPU threads torch may use while training.

torch's default (one thread per core) collapses on a shared machine: measured on
a 2-core CPU under load from other jobs, the smoke preset trained at 26.8 images/s
with 1 thread and 0.9 with torch's default of 2 (bench/train_threads.py,
bench/README.md). So the default leaves half the cores to everything else:

    --threads N        if given (0: torch's own default, one per core)
    BEGAN_THREADS      else, if set
    OMP_NUM_THREADS    else, if set (the usual OpenMP convention)
    default            max(1, min(4, cores // 2)), cores divided among the local
                       torchrun ranks; small convolutions gain little past 4 threads
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from began.errors import UsageError

_MAX_DEFAULT = 4


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_threads(env: Mapping[str, str] = os.environ) -> int:
    ranks = max(1, _int(env.get("LOCAL_WORLD_SIZE"), "LOCAL_WORLD_SIZE") or 1)
    return max(1, min(_MAX_DEFAULT, usable_cores() // 2 // ranks))


def choose_threads(flag: int | None, env: Mapping[str, str] = os.environ) -> int | None:
    """The thread count to set, or None for torch's own default."""
    for value, source in ((flag, "--threads"), (env.get("BEGAN_THREADS"), "BEGAN_THREADS"),
                          (env.get("OMP_NUM_THREADS"), "OMP_NUM_THREADS")):
        try:
            n = _int(value, source)
        except UsageError:
            if source == "OMP_NUM_THREADS":  # e.g. "4,2" (nested): not ours to judge
                continue
            raise
        if n is not None:
            if n < 0:
                raise UsageError(f"{source} must be >= 0, got {n}",
                                 "give a thread count, or 0 for torch's default")
            return None if n == 0 else n
    return default_threads(env)


def _int(value: object, source: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UsageError(f"{source} must be a whole number, got {value!r}",
                         "give a thread count, or 0 for torch's default") from None


def apply(flag: int | None) -> int:
    """Set torch's intra-op threads by the rule above; returns the count in use."""
    import torch

    n = choose_threads(flag)
    if n is not None:
        torch.set_num_threads(n)
    return torch.get_num_threads()
