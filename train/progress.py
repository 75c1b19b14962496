"""Console reporting for training: on a terminal a rich bar that moves every step with
images/s, an ETA and the last logged k_t, M_global and quality signal; elsewhere (logs,
CI, pipes) one plain line per logged step, with an ETA."""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

from began.progress import _clock

LONG_RUN_S = 24 * 3600  # a planned run longer than this says so at its first log row


def stats_line(s: dict[str, Any], total: int) -> str:
    return (f"step {s['step']}/{total}  L(x) {s['loss_real']:.4f}  L(G(z)) {s['loss_fake']:.4f}  "
            f"k {s['k']:.4f}  M {s['m_global']:.4f}  lr {s['lr_g']:.1e}  "
            f"{s['images_per_s']:.0f} img/s")


class Rate:
    """Images per second between two calls (wall time on the host: no device sync)."""

    def __init__(self, step: int, batch_size: int):
        self.batch_size = batch_size
        self.t_last, self.step_last = time.perf_counter(), step

    def images_per_s(self, step: int) -> float:
        now = time.perf_counter()
        ips = (step - self.step_last) * self.batch_size / max(now - self.t_last, 1e-9)
        self.t_last, self.step_last = now, step
        return ips


class Reporter:
    """The training console. `advance(step)` after every step moves the bar (count,
    images/s and ETA come from the host clock: no device sync); `update(step, row)` at
    log rows sets the values shown beside it (k_t, M_global, the quality signal) or,
    off a terminal, prints one plain line with an ETA."""

    def __init__(self, total: int, start: int, progress: bool | None,
                 log: Callable[[str], None], enabled: bool = True, batch_size: int = 1):
        self.total, self.start, self.log, self.enabled = total, start, log, enabled
        self.batch_size = batch_size
        self.use_bar = enabled and (sys.stderr.isatty() if progress is None else progress)
        self._bar: Any = None
        self._t0 = time.monotonic()
        self._quality = ""  # shown until the next evaluation replaces it
        self._warned = False

    def __enter__(self) -> "Reporter":
        if self.enabled and self.start < self.total:
            self.log(f"plan: steps {self.start:,} to {self.total:,} at batch {self.batch_size} "
                     "(an ETA at the first log row)")
        if self.use_bar:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                                 _images_per_s_column(self.batch_size),
                                 TextColumn("{task.fields[live]}"), TimeElapsedColumn(),
                                 TextColumn("ETA"), TimeRemainingColumn(),
                                 console=Console(stderr=True))
            self._task = self._bar.add_task("train", total=self.total, completed=self.start,
                                            live="")
            self._bar.start()
        return self

    def advance(self, step: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=step)

    def update(self, step: int, stats: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._quality = quality_text(stats) or self._quality
        self._warn_if_long(step)
        if self._bar is None:
            line = stats_line(stats, self.total)
            if self._quality:
                line += f"  {self._quality}"
            done = step - self.start
            if 0 < done and step < self.total:
                eta = (time.monotonic() - self._t0) / done * (self.total - step)
                line += f"  ETA {_clock(eta)}"
            self.log(line)
            return
        live = f"k {stats['k']:.4f}  M {stats['m_global']:.4f}"
        if self._quality:
            live += f"  {self._quality}"
        self._bar.update(self._task, completed=step, live=live)

    def _warn_if_long(self, step: int) -> None:
        """Once, at the first row: a run that will outlast a day says so, and what fits."""
        done = step - self.start
        if self._warned or done <= 0 or step >= self.total:
            return
        self._warned = True
        eta = (time.monotonic() - self._t0) / done * (self.total - step)
        if eta > LONG_RUN_S:
            self.log(f"note: at this speed the run ends in {_clock(eta)}, more than a day; "
                     "on a CPU, --preset small32 (the small networks, 12,000 steps at 32x32) "
                     "ends in about an hour on one core")

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def quality_text(row: dict[str, Any]) -> str:
    """The quality signal of an evaluation row (train/quality.py), '' for other rows."""
    parts = []
    if "div_pixel" in row and "div_latent" in row:
        parts.append(f"div {min(row['div_pixel'], row['div_latent']):.2g}")  # 0.83, 0.0047
    if "bins_covered" in row and "bins" in row:
        parts.append(f"bins {row['bins_covered']}/{row['bins']}")
    if "kid" in row:
        parts.append(f"KID {row['kid']:.1f}")
    return "  ".join(parts)


def _images_per_s_column(batch_size: int) -> Any:
    from rich.progress import ProgressColumn
    from rich.text import Text

    class ImagesPerSecond(ProgressColumn):
        """rich's step rate (a moving window of recent steps) times the batch."""

        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text("-- img/s" if speed is None else f"{speed * batch_size:.0f} img/s")

    return ImagesPerSecond()
