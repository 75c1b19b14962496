"""TensorBoard event files for a run, when `tensorboard` is installed.

    tensorboard --logdir RUN_DIR

RunFolder writes every numeric stats.jsonl column as a scalar (`train/loss_real`,
`train/k`, `train/m_global`, the quality columns, ...) and every sample grid as an image,
into RUN_DIR/tensorboard/. Without tensorboard (torch.utils.tensorboard needs it)
nothing is written and nothing is said: stats.jsonl and `began plot` remain.
On resume the events after the checkpoint's step are purged, as stats.jsonl's rows are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SKIP = {"step", "epoch", "steps_averaged"}  # bookkeeping, not curves


class Board:
    def __init__(self, folder: Path, resume_step: int | None):
        """`resume_step`: events at this step and later are purged when the writer opens."""
        self.folder, self.resume_step = folder, resume_step
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
            self._writer = SummaryWriter(str(self.folder), purge_step=self.resume_step)
        return self._writer

    def scalars(self, row: dict[str, Any]) -> None:
        writer = self._open()
        if writer is None:
            return
        for key, value in row.items():
            if key not in SKIP and isinstance(value, (int, float)) and not isinstance(value,
                                                                                       bool):
                writer.add_scalar(f"train/{key}", value, row["step"])

    def image(self, tag: str, grid: np.ndarray, step: int) -> None:
        """`grid`: HxWx3 uint8."""
        writer = self._open()
        if writer is not None:
            writer.add_image(tag, grid, step, dataformats="HWC")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
