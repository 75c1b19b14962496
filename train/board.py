"""TensorBoard event files for a run, when `tensorboard` is installed.

    tensorboard --logdir RUN_DIR

RunFolder writes every numeric stats.jsonl column as a scalar (`train/loss_real`,
`train/k`, `train/m_global`, the quality columns, ...) and every sample grid as an image,
into RUN_DIR/tensorboard/. Without tensorboard (torch.utils.tensorboard needs it)
nothing is written and nothing is said: stats.jsonl and `began plot` remain.
On resume the events after the checkpoint's step are purged, as stats.jsonl's rows are.

TensorBoard is a view, not the record: a tensorboard/ folder that cannot be written
(full or read-only disk, a file in its place) stops the events with one warning that
names it, and training goes on; stats.jsonl and the checkpoints say whether the disk
itself is full. The event writer's own thread fails silently (its exception is
re-raised, and caught, at the next write).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

SKIP = {"step", "epoch", "steps_averaged"}  # bookkeeping, not curves


def _warn(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _quiet_writer_threads() -> None:
    """tensorboard's writer thread re-raises what stopped it, which Python prints as a
    thread traceback; Board reports it as one warning instead."""
    previous = threading.excepthook
    if getattr(previous, "_began_board", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if type(args.thread).__name__ != "_AsyncWriterThread":
            previous(args)

    hook._began_board = True  # type: ignore[attr-defined]
    threading.excepthook = hook


class Board:
    def __init__(self, folder: Path, resume_step: int | None,
                 warn: Callable[[str], None] = _warn):
        """`resume_step`: events at this step and later are purged when the writer opens."""
        self.folder, self.resume_step, self.warn = folder, resume_step, warn
        self._writer: Any = None
        self._available: bool | None = None  # unknown until the first write

    def _open(self) -> Any:
        if self._available is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                self._available = False
                return None
            self._available = True
            _quiet_writer_threads()
            self._guard(lambda: setattr(self, "_writer", SummaryWriter(
                str(self.folder), purge_step=self.resume_step)))
        return self._writer

    def _guard(self, write: Callable[[], Any]) -> None:
        """Run one write; on any failure stop the events, say so once, go on."""
        try:
            write()
        except Exception as e:  # OSError, or what the writer thread died of
            reason = getattr(e, "strerror", None) or str(e)[:200] or type(e).__name__
            self.warn(f"warning: TensorBoard events stopped: cannot write {self.folder} "
                      f"({reason}); stats.jsonl and `began plot` still have every row")
            writer, self._writer, self._available = self._writer, None, False
            if writer is not None:
                try:
                    writer.close()
                except Exception:
                    pass

    def scalars(self, row: dict[str, Any]) -> None:
        writer = self._open()
        if writer is None:
            return

        def add() -> None:
            for key, value in row.items():
                if key not in SKIP and isinstance(value, (int, float)) \
                        and not isinstance(value, bool):
                    writer.add_scalar(f"train/{key}", value, row["step"])
            writer.flush()  # a failure shows now, at this row, not minutes later
        self._guard(add)

    def image(self, tag: str, grid: np.ndarray, step: int) -> None:
        """`grid`: HxWx3 uint8."""
        writer = self._open()
        if writer is not None:
            self._guard(lambda: writer.add_image(tag, grid, step, dataformats="HWC"))

    def close(self) -> None:
        if self._writer is not None:
            self._guard(self._writer.close)
            self._writer = None
