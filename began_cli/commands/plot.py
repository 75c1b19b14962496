"""`began plot RUN_DIR [--out curves.png]`: a run's curves from its stats.jsonl, in one PNG.

Panels: L(x) and L(G(z)); k_t; M_global; the learning rates (log scale); and, when
the run tracked quality (train/quality.py), its columns (div_pixel, div_latent, KID).
Works while the run is training (it reads the rows written so far). Needs matplotlib,
which the `train` extra installs; torch is not needed.
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import BeganError, UsageError
from ..output import Out, write_bytes
from ..reading import Unreadable, open_bounded
from ..targets import Targets
from .common import NoClobberOpt, QuietOpt

# (title, [(column, label)], log scale)
PANELS: list[tuple[str, list[tuple[str, str]], bool]] = [
    ("losses", [("loss_real", "L(x)"), ("loss_fake", "L(G(z))")], False),
    ("k_t", [("k", "k_t")], False),
    ("M_global (convergence)", [("m_global", "M_global")], False),
    ("learning rate", [("lr_g", "G"), ("lr_d", "D")], True),
    ("quality: spread of G(z) / spread of the data (1 = as varied)",
     [("div_pixel", "pixels"), ("div_latent", "D's latent")], False),
    ("KID x 1000 (lower is better)", [("kid", "KID")], False),
]
PLOT_HINT = ("install the train extra, which brings matplotlib: pip install 'began[train]' "
             "('.[train]' from a checkout), or just pip install matplotlib")


MAX_POINTS = 20_000  # rows kept for the figure: more than a 1,100-pixel-wide panel shows
MAX_LINE = 1 << 16  # a stats row is a few hundred bytes; a longer line is not one
COLUMNS = {"step", *(k for _, cols, _ in PANELS for k, _ in cols)}


def read_rows(run: Path) -> list[dict[str, float]]:
    """The run's stats rows, streamed: any size of stats.jsonl in bounded memory (past
    MAX_POINTS rows every other row is dropped and the stride doubles, so the rows kept
    stay evenly spread), only the plotted columns, only finite numbers."""
    path = run / "stats.jsonl"
    hint = "pass a run folder made by began train (it writes stats.jsonl at its first log row)"
    if not run.is_dir():
        what = "does not exist" if not os.path.lexists(run) else "is not a folder"
        raise BeganError(f"{run} {what}", "pass a run folder made by began train")
    try:
        fd, _ = open_bounded(path, 1 << 62)  # any size: read line by line below
    except Unreadable as e:
        raise BeganError(f"{path} {'does not exist' if str(e) == 'is missing' else e}",
                         hint) from None
    rows: list[dict[str, float]] = []
    stride = seen = 0
    try:
        with os.fdopen(fd, "rb") as f:
            while line := f.readline(MAX_LINE):
                row = _row(line)
                if row is None:
                    continue  # a torn last line while training writes, or not a row
                if seen % (stride or 1) == 0:
                    rows.append(row)
                seen += 1
                if len(rows) > 2 * MAX_POINTS:
                    rows, stride = rows[::2], 2 * (stride or 1)
    except OSError as e:
        raise BeganError(f"cannot read {path} ({e.strerror or e})",
                         "check the file's permissions") from None
    if not any(len(row) > 1 for row in rows):
        raise BeganError(f"{path} holds no stats rows yet" if not rows else
                         f"{path} holds no figures to plot (its rows have no losses, k_t, "
                         "M_global, lr or quality columns)",
                         "wait for the run's first log row (--log-every steps)")
    return rows


def _row(line: bytes) -> dict[str, float] | None:
    """A stats row's plotted columns that are finite numbers, or None when it is not a
    row with a finite step."""
    try:
        raw = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(raw, dict):
        return None
    row = {k: float(v) for k, v in raw.items() if k in COLUMNS and _finite(v)}
    return row if "step" in row else None


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in rows:
        if key in r:
            xs.append(r["step"])
            ys.append(r[key])
    return xs, ys


def render(rows: list[dict[str, Any]], title: str) -> bytes:
    """The figure as PNG bytes."""
    try:
        import matplotlib
    except ImportError:
        raise BeganError("began plot needs matplotlib, which is not installed",
                         PLOT_HINT) from None
    matplotlib.use("Agg")  # no display needed
    from matplotlib.figure import Figure

    panels = [(t, [(k, lab, *_series(rows, k)) for k, lab in cols], log)
              for t, cols, log in PANELS]
    panels = [(t, [c for c in cols if c[2]], log) for t, cols, log in panels]
    panels = [p for p in panels if p[1]]
    ncols = 2
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(11, 3.2 * nrows), layout="constrained")
    fig.suptitle(title)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (name, cols, log) in zip(axes, panels):
        for _, label, xs, ys in cols:
            ax.plot(xs, ys, label=label, linewidth=1.2, marker="." if len(xs) < 30 else None)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if log:
            ax.set_yscale("log")
        if len(cols) > 1:
            ax.legend(fontsize=8)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def plot(
    run: Path = typer.Argument(..., metavar="RUN_DIR", help="A run folder (began train --out)."),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", metavar="FILE.png",
        help="Where to write the PNG; an existing file is replaced "
             "(default: RUN_DIR/curves.png)."),
    no_clobber: NoClobberOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Draw a run's training curves (losses, k_t, M_global, lr, quality) into one PNG."""
    o = Out(quiet=quiet)
    rows = read_rows(run)
    target = out or run / "curves.png"
    if target.suffix.lower() != ".png":
        raise UsageError(f"--out {target} is not a .png file", "name the output FILE.png")
    Targets(no_clobber).check(target)  # the output rule, before matplotlib draws
    png = render(rows, f"{run.resolve().name}: up to step {int(rows[-1]['step'])}")
    write_bytes(target, png)
    o.say(f"wrote {target}")
