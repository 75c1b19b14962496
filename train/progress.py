"""Console reporting for training: a rich progress bar with live k_t and M_global
on a terminal, one plain line per logged step otherwise (logs, CI, pipes)."""

from __future__ import annotations

import sys
import time
from typing import Any, Callable


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
    def __init__(self, total: int, start: int, progress: bool | None,
                 log: Callable[[str], None], enabled: bool = True):
        self.total, self.start, self.log, self.enabled = total, start, log, enabled
        self.use_bar = enabled and (sys.stderr.isatty() if progress is None else progress)
        self._bar = None

    def __enter__(self) -> "Reporter":
        if self.use_bar:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[live]}"), TimeElapsedColumn(),
                                 TimeRemainingColumn(), console=Console(stderr=True))
            self._task = self._bar.add_task("train", total=self.total, completed=self.start,
                                            live="")
            self._bar.start()
        return self

    def update(self, step: int, stats: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            self.log(stats_line(stats, self.total))
            return
        live = (f"k {stats['k']:.4f}  M {stats['m_global']:.4f}  "
                f"{stats['images_per_s']:.0f} img/s")
        self._bar.update(self._task, completed=step, live=live)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
