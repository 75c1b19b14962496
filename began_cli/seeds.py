"""Seeds and latent vectors. The z for a seed comes from its own generator, so
the image for seed 42 is the same in any batch, order or run, on any device."""

from __future__ import annotations

import numpy as np

from .errors import UsageError

MAX_SEED = 2**32 - 1
MAX_COUNT = 10_000_000  # seeds one command takes: a list of them must fit in memory


def parse_seeds(spec: str) -> list[int]:
    """'0-7,42,100-199' -> [0, 1, ..., 7, 42, 100, ..., 199] (ranges inclusive, order kept)."""
    seeds: list[int] = []
    for part in spec.replace(" ", "").split(","):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise UsageError(f"bad seed {part!r} in --seeds {spec!r}",
                             "use numbers and inclusive ranges, e.g. --seeds 0-7,42,100-199"
                             ) from None
        if not (0 <= a <= MAX_SEED and 0 <= b <= MAX_SEED) or b < a:
            raise UsageError(f"bad seed range {part!r} in --seeds {spec!r}",
                             f"seeds are 0..{MAX_SEED} and ranges go low-high")
        if len(seeds) + (b - a + 1) > MAX_COUNT:
            raise UsageError(f"--seeds {spec[:40]!r} names more than {MAX_COUNT:,} seeds",
                             "split the list over several runs")
        seeds.extend(range(a, b + 1))
    if not seeds:
        raise UsageError(f"--seeds {spec!r} names no seed", "e.g. --seeds 0-7,42")
    return seeds


def seed_range(n: int, start: int) -> range:
    if n < 1:
        raise UsageError(f"-n must be at least 1, got {n}", "e.g. -n 64")
    if not 0 <= start <= MAX_SEED - (n - 1):
        raise UsageError(f"--seed {start} with -n {n} runs past {MAX_SEED}",
                         f"seeds are 0..{MAX_SEED}: lower --seed or -n")
    return range(start, start + n)  # lazy: -n 10000000 costs no memory


def z_for_seed(seed: int, z_dim: int, truncation: float = 1.0) -> np.ndarray:
    """z ~ U[-1, 1]^z_dim from this seed alone, scaled by the truncation psi."""
    z = np.random.default_rng(seed).uniform(-1.0, 1.0, z_dim).astype(np.float32)
    return z * np.float32(truncation)


def z_for_seeds(seeds: list[int], z_dim: int, truncation: float = 1.0) -> np.ndarray:
    out = np.empty((len(seeds), z_dim), np.float32)
    for i, s in enumerate(seeds):
        out[i] = z_for_seed(s, z_dim, truncation)
    return out
