"""What a training run shows: TensorBoard events (when installed), `began plot`, and the
console reporter (a bar that moves every step, plain lines with an ETA elsewhere)."""

import io
import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

from began.app import run
from began.train.progress import Reporter, quality_text

BASE = ["--preset", "smoke", "--device", "cpu", "--no-progress", "--batch-size", "8",
        "--log-every", "3", "--sample-every", "4", "--ckpt-every", "6"]


def train(folder, out, *extra):
    return run(["train", str(folder), "--out", str(out), *map(str, extra)])


@pytest.fixture(scope="module")
def run_dir(image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "run"
    assert train(image_folder, out, *BASE, "--steps", 12) == 0
    return out


def stats(out):
    return [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]


def test_tensorboard_events_hold_the_scalars_and_grids(run_dir):
    ea_mod = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    ea = ea_mod.EventAccumulator(str(run_dir / "tensorboard"),
                                 size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    rows = stats(run_dir)
    for key in ("loss_real", "loss_fake", "k", "m_global", "lr_g"):
        events = ea.Scalars(f"train/{key}")
        assert [e.step for e in events] == [r["step"] for r in rows] == [3, 6, 9, 12]
        assert [e.value for e in events] == pytest.approx([r[key] for r in rows], rel=1e-6)
    grids = ea.Images("samples")
    assert [g.step for g in grids] == [4, 8, 12]
    png = np.array(Image.open(run_dir / "samples" / "samples-00000012.png"))
    event_png = np.array(Image.open(io.BytesIO(grids[-1].encoded_image_string)))
    assert np.array_equal(event_png, png)  # the same grid, written in one process


def test_tensorboard_is_skipped_silently_when_missing(image_folder, tmp_path, monkeypatch,
                                                      capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    out = tmp_path / "run"
    assert train(image_folder, out, *BASE, "--steps", 3) == 0
    assert not (out / "tensorboard").exists()
    lines = capsys.readouterr().err.splitlines()
    assert all(line.startswith(("data: ", "plan: ", "step ", "done: ")) for line in lines), lines


def test_resume_purges_tensorboard_events_after_the_checkpoint(image_folder, tmp_path):
    ea_mod = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    out = tmp_path / "run"
    assert train(image_folder, out, *BASE, "--steps", 9, "--ckpt-every", 6) == 0
    # Rerun from the step-6 checkpoint (the step-9 one is gone): rows 9 come again.
    (out / "checkpoints" / "ckpt-00000009.safetensors").unlink()
    assert train(image_folder, out, *BASE, "--steps", 12, "--ckpt-every", 6) == 0
    ea = ea_mod.EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0})
    ea.Reload()
    assert [e.step for e in ea.Scalars("train/k")] == [3, 6, 9, 12]
    assert [e.value for e in ea.Scalars("train/k")] == pytest.approx(
        [r["k"] for r in stats(out)], rel=1e-6)


def test_plot_draws_the_curves(run_dir, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    target = tmp_path / "curves.png"
    assert run(["plot", str(run_dir), "--out", str(target)]) == 0
    assert capsys.readouterr().err.strip() == f"wrote {target}"
    img = np.array(Image.open(target).convert("RGB"))
    assert img.shape[1] == 1100 and img.shape[0] > 500  # 2 columns x 2 rows of panels
    assert (img < 128).any() and (img > 200).mean() > 0.5  # drawn lines on a light page
    assert run(["plot", str(run_dir)]) == 0  # default: RUN_DIR/curves.png
    assert (run_dir / "curves.png").exists()


def test_plot_adds_quality_panels_when_the_run_has_them(run_dir, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    out.mkdir()
    rows = stats(run_dir)
    rows[1].update(div_pixel=0.9, div_latent=0.7)
    rows[3].update(div_pixel=0.5, div_latent=0.4, kid=12.0)
    (out / "stats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"torn')
    assert run(["plot", str(out), "--out", str(tmp_path / "a.png")]) == 0
    plain = Image.open(tmp_path / "a.png").size
    assert run(["plot", str(run_dir), "--out", str(tmp_path / "b.png")]) == 0
    assert plain[1] > Image.open(tmp_path / "b.png").size[1]  # a third row of panels


def test_plot_errors(tmp_path, monkeypatch, capsys):
    assert run(["plot", str(tmp_path)]) == 1  # no stats.jsonl: a file named cannot be used
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: ") and "stats.jsonl" in err[0] and err[1].startswith("hint:")
    (tmp_path / "stats.jsonl").write_text('{"step": 3, "k": 0.1}\n')
    assert run(["plot", str(tmp_path), "--out", str(tmp_path / "c.jpg")]) == 2
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    capsys.readouterr()
    assert run(["plot", str(tmp_path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "error: began plot needs matplotlib, which is not installed"
    assert err[1].startswith("hint: install the train extra") and len(err) == 2


def test_plot_refuses_what_is_not_a_stats_file_in_one_line(tmp_path, capsys):
    """Exit 1 and the right words for a missing run, a FIFO or a folder in stats.jsonl's
    place, a NaN step, and rows with nothing to draw; never 'unexpected'."""
    def err_of(*args) -> str:
        capsys.readouterr()
        assert run(["plot", *map(str, args)]) == 1
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 2 and lines[1].startswith("hint: "), lines
        return lines[0]

    assert err_of(tmp_path / "gone").endswith("gone does not exist")
    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / "stats.jsonl")
    assert err_of(fifo).endswith("stats.jsonl is a FIFO, not a file")  # never waits on it
    folder = tmp_path / "folder"
    (folder / "stats.jsonl").mkdir(parents=True)
    assert err_of(folder).endswith("stats.jsonl is a folder, not a file")
    nan = tmp_path / "nan"
    nan.mkdir()
    (nan / "stats.jsonl").write_text('{"step": NaN, "k": 0.1}\n')
    assert "holds no stats rows yet" in err_of(nan)
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "stats.jsonl").write_text('{"step": 1, "images_per_s": 3}\n{"step": 2}\n')
    assert "holds no figures to plot" in err_of(bare)


def test_plot_streams_a_long_stats_file_evenly(tmp_path):
    """Any length in bounded memory: past MAX_POINTS rows the kept rows thin out evenly
    (first row kept, steps evenly spaced), and the last rows are not lost."""
    from began.commands import plot as plot_cmd

    n = 5 * plot_cmd.MAX_POINTS + 7
    with open(tmp_path / "stats.jsonl", "w") as f:
        for step in range(n):
            f.write(json.dumps({"step": step, "k": step / n, "loss_real": 0.5,
                                "note": "x" * 50}) + "\n")
        f.write('{"step": 1e999, "k": 0.1}\n{"step": 3, "k": 0.2')  # inf step, torn line
    rows = plot_cmd.read_rows(tmp_path)
    steps = [r["step"] for r in rows]
    assert plot_cmd.MAX_POINTS <= len(rows) <= 2 * plot_cmd.MAX_POINTS
    gaps = {b - a for a, b in zip(steps, steps[1:])}
    assert steps[0] == 0 and len(gaps) == 1 and steps[-1] > n - 1 - gaps.pop()
    assert set(rows[0]) == {"step", "k", "loss_real"}  # only the plotted columns


ROW = {"step": 10, "loss_real": 0.5, "loss_fake": 0.25, "k": 0.01, "m_global": 0.52,
       "lr_g": 1e-4, "images_per_s": 100.0}


def test_bar_advances_every_step_and_shows_the_last_row():
    rep = Reporter(total=50, start=0, progress=True, log=print, batch_size=8)
    with rep:
        for step in range(1, 8):
            rep.advance(step)
            assert rep._bar.tasks[0].completed == step  # the count moves with every step
        assert rep._bar.tasks[0].fields["live"] == ""  # no values before a log row
        rep.update(10, {**ROW, "div_pixel": 0.8, "div_latent": 0.6})
        assert rep._bar.tasks[0].fields["live"] == "k 0.0100  M 0.5200  div 0.6"
        rep.update(20, {**ROW, "step": 20, "k": 0.02})  # no evaluation: the last one stays
        assert rep._bar.tasks[0].fields["live"] == "k 0.0200  M 0.5200  div 0.6"


def test_plain_lines_carry_an_eta():
    lines = []
    rep = Reporter(total=40, start=20, progress=False, log=lines.append)
    with rep:
        rep.advance(21)  # nothing printed between rows
        assert lines == ["plan: steps 20 to 40 at batch 1 (an ETA at the first log row)"]
        rep.update(30, {**ROW, "step": 30})
        rep.update(40, {**ROW, "step": 40})
    assert lines[1].startswith("step 30/40  L(x) 0.5000") and "  ETA 0:" in lines[1]
    assert lines[2].startswith("step 40/40") and "ETA" not in lines[2]
    assert not any("more than a day" in ln for ln in lines)


def test_a_run_longer_than_a_day_says_so_once_and_names_the_small_preset(monkeypatch):
    clock = iter([0.0] + [10.0 * i for i in range(1, 9)])  # 10 s a step of 100,000: ~11.6 days
    monkeypatch.setattr("began.train.progress.time.monotonic", lambda: next(clock))
    lines = []
    with Reporter(total=100_000, start=0, progress=False, log=lines.append) as rep:
        rep.update(1, {**ROW, "step": 1})
        rep.update(2, {**ROW, "step": 2})
    notes = [ln for ln in lines if ln.startswith("note:")]
    assert len(notes) == 1 and "more than a day" in notes[0] and "--preset small32" in notes[0]


def test_quality_text():
    assert quality_text(ROW) == ""
    assert quality_text({"div_pixel": 0.91, "div_latent": 0.42, "kid": 3.14}) == \
        "div 0.42  KID 3.1"
    assert quality_text({"div_pixel": 0.02, "div_latent": 0.00472}) == "div 0.0047"
    assert quality_text({"div_pixel": 0.9, "div_latent": 0.8, "ndb": 0.125, "bins_covered": 15,
                         "bins": 16}) == "div 0.8  bins 15/16"
