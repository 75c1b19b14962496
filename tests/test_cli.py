"""The torch-free CLI (`began sample|interpolate|invert|score|info`) as a user and a shell
script meet it: exit codes, the files written (and nothing else), data on stdout, human text
on stderr, one `error:` + one `hint:` line for every error a user can cause.

Happy paths go through Typer's CliRunner (this Typer keeps stdout and stderr apart);
errors go through `began.app.run`, the entry point that maps exceptions to exit codes.
Every test uses the session's `tiny_bundle` (16x16, N_z 16) as the model.
"""

import errno
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageSequence
from typer.testing import CliRunner

from began.app import make_app, run
from began.errors import BeganError, UsageError

RES = 16  # tiny_bundle's resolution
PAD = 2  # make_grid's padding
Z_DIM = 16
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CPU = "CPUExecutionProvider"


# --------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """The user's own BEGAN_MODEL / BEGAN_DEVICE must not leak into these tests."""
    monkeypatch.delenv("BEGAN_MODEL", raising=False)
    monkeypatch.delenv("BEGAN_DEVICE", raising=False)


@pytest.fixture(scope="module")
def app():
    return make_app()


@pytest.fixture(scope="module")
def model(tiny_bundle):
    from began.model import Model

    return Model.open(tiny_bundle, device="cpu", precision="fp32")


@pytest.fixture
def images(image_folder, tmp_path) -> tuple[Path, Path, Path]:
    """Three real images copied to tmp_path/a.png, b.png, c.png."""
    src = sorted(image_folder.glob("*.png"))[:3]
    out = []
    for name, p in zip("abc", src):
        out.append(tmp_path / f"{name}.png")
        shutil.copy(p, out[-1])
    return tuple(out)


def invoke(app, *args, code: int = 0, input: bytes | None = None):
    """CliRunner, asserting the exit code (and no unexpected exception)."""
    r = CliRunner().invoke(app, [str(a) for a in args], input=input)
    assert r.exit_code == code, (r.exit_code, r.stderr, r.exception)
    if r.exception is not None:
        assert isinstance(r.exception, SystemExit), repr(r.exception)
    return r


def cli(capsys, *args) -> tuple[int, str, str]:
    """began.app.run with captured streams: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = run([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def assert_error(code: int, err: str, expected: int) -> tuple[str, str]:
    """Exactly one `error:` line directly followed by one `hint:` line, no traceback; the
    only other stderr line allowed is --device auto's `provider:` notice."""
    assert code == expected, err
    assert "Traceback" not in err and "unexpected" not in err, err
    lines = err.splitlines()
    errors = [i for i, s in enumerate(lines) if s.startswith("error: ")]
    hints = [i for i, s in enumerate(lines) if s.startswith("hint: ")]
    assert len(errors) == 1 and len(hints) == 1 and hints[0] == errors[0] + 1, err
    others = [s for i, s in enumerate(lines) if i not in (errors[0], hints[0])]
    assert all(s.startswith("provider: ") for s in others), err
    return lines[errors[0]][len("error: "):], lines[hints[0]][len("hint: "):]


def json_lines(stdout: str) -> list[dict]:
    assert stdout.endswith("\n"), stdout
    return [json.loads(line) for line in stdout.splitlines()]


def listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def seed_names(seeds, ext: str = "png") -> set[str]:
    return {f"seed{s:06d}.{ext}" for s in seeds}


def max_pixel_diff(a: Path, b: Path) -> int:
    return int(np.abs(pixels(a).astype(int) - pixels(b)).max())


def preprocessed(model, path: Path) -> np.ndarray:
    """The (1, 3, R, R) float input the CLI feeds the model for this file."""
    from began.inputs import Source, preprocess_for, read, to_float

    return to_float(read(Source(str(path), path), preprocess_for(model.bundle))[None])


def cuda_usable() -> bool:
    from began.runtime import cuda_status

    return cuda_status()[0]


def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, dst)
    return dst


# --------------------------------------------------------------------------- sample


def test_sample_grid_size_and_nothing_else_written(app, tiny_bundle, tmp_path):
    r = invoke(app, "sample", "-n", 4, "--out", tmp_path / "grid.png", "--model", tiny_bundle)
    assert r.stdout == ""  # no --json: no data on stdout
    assert "wrote" in r.stderr
    assert listing(tmp_path) == {"grid.png"}  # no temp file left beside it
    with Image.open(tmp_path / "grid.png") as im:
        assert im.format == "PNG" and im.mode == "RGB"
        side = 2 * (RES + PAD) + PAD
        assert im.size == (side, side) == (38, 38)


def test_grid_tiles_are_the_seed_images(app, tiny_bundle, tmp_path):
    invoke(app, "sample", "-n", 5, "--nrow", 3, "--out", tmp_path / "g.png", "-m", tiny_bundle)
    invoke(app, "sample", "--seeds", "0-4", "--outdir", tmp_path / "s", "-m", tiny_bundle)
    grid = pixels(tmp_path / "g.png")
    assert grid.shape == (2 * (RES + PAD) + PAD, 3 * (RES + PAD) + PAD, 3)
    for s in range(5):
        r, c = divmod(s, 3)
        y, x = PAD + r * (RES + PAD), PAD + c * (RES + PAD)
        np.testing.assert_array_equal(grid[y:y + RES, x:x + RES],
                                      pixels(tmp_path / "s" / f"seed{s:06d}.png"))
    assert (grid[:, :PAD] == 0).all() and (grid[-PAD:] == 0).all()  # padding, not images


def test_sample_per_seed_determinism(app, tiny_bundle, tmp_path):
    runs = {"bs1": ["--seeds", "0-5", "--batch-size", 1],
            "bs4": ["--seeds", "0-5", "--batch-size", 4],
            "reversed": ["--seeds", "5,4,3,2,1,0"],
            "n3": ["-n", 3, "--seed", 2]}
    for name, args in runs.items():
        invoke(app, "sample", *args, "--outdir", tmp_path / name, "--model", tiny_bundle)
    for name in ("bs1", "bs4", "reversed"):
        assert listing(tmp_path / name) == seed_names(range(6))
    assert listing(tmp_path / "n3") == seed_names([2, 3, 4])
    for name in ("bs4", "reversed", "n3"):
        for f in sorted(listing(tmp_path / name)):
            a, b = tmp_path / "bs1" / f, tmp_path / name / f
            assert a.read_bytes() == b.read_bytes(), (
                f"{name}/{f} differs from bs1/{f}: max pixel difference {max_pixel_diff(a, b)}")


def test_sample_json_lines(app, tiny_bundle, tmp_path):
    r = invoke(app, "sample", "--seeds", "7,3-4", "--outdir", tmp_path, "--json",
               "--model", tiny_bundle)
    rows = json_lines(r.stdout)  # every stdout line parses: nothing else is there
    assert [row["seed"] for row in rows] == [7, 3, 4]
    for row in rows:
        assert set(row) == {"path", "seed", "provider", "ms"}
        assert row["provider"] == CPU
        assert isinstance(row["ms"], (int, float)) and row["ms"] >= 0
        assert Path(row["path"]) == tmp_path / f"seed{row['seed']:06d}.png"
        assert Path(row["path"]).is_file()
    assert r.stderr == f"wrote 3 files to {tmp_path}\n"  # human text on stderr; no provider

    # The grid: one object; -q leaves stderr empty.
    r = invoke(app, "sample", "-n", 2, "--out", tmp_path / "g.png", "--json", "-q",
               "--model", tiny_bundle)
    assert r.stderr == ""
    (row,) = json_lines(r.stdout)
    assert set(row) == {"path", "seeds", "provider", "ms"}
    assert row["seeds"] == [0, 1] and row["provider"] == CPU
    assert Path(row["path"]).is_file()


def test_sample_npy_matches_png(app, tiny_bundle, tmp_path):
    invoke(app, "sample", "--seeds", "0-2", "--outdir", tmp_path / "npy", "--format", "npy",
           "-m", tiny_bundle)
    invoke(app, "sample", "--seeds", "0-2", "--outdir", tmp_path / "png", "-m", tiny_bundle)
    assert listing(tmp_path / "npy") == seed_names(range(3), "npy")
    for s in range(3):
        x = np.load(tmp_path / "npy" / f"seed{s:06d}.npy", allow_pickle=False)
        assert x.dtype == np.float32 and x.shape == (3, RES, RES)
        # The documented mapping, in float64: uint8 = clip(round((x + 1) * 127.5), 0, 255).
        u8 = np.clip(np.rint((x.astype(np.float64) + 1) * 127.5), 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(u8.transpose(1, 2, 0),
                                      pixels(tmp_path / "png" / f"seed{s:06d}.png"))


@pytest.mark.parametrize("fmt,pil", [("jpg", "JPEG"), ("webp", "WEBP")])
def test_sample_lossy_formats_decode(app, tiny_bundle, tmp_path, fmt, pil):
    invoke(app, "sample", "--seeds", "0,1", "--outdir", tmp_path / "d", "--format", fmt,
           "-m", tiny_bundle)
    assert listing(tmp_path / "d") == seed_names([0, 1], fmt)
    for f in listing(tmp_path / "d"):
        with Image.open(tmp_path / "d" / f) as im:
            im.load()
            assert im.format == pil and im.size == (RES, RES)
    # The format also follows --out's suffix.
    invoke(app, "sample", "-n", 2, "--out", tmp_path / f"g.{fmt}", "-m", tiny_bundle)
    with Image.open(tmp_path / f"g.{fmt}") as im:
        im.load()
        assert im.format == pil and im.size == (2 * (RES + PAD) + PAD, RES + 2 * PAD)


def test_existing_files_replaced_refused_or_skipped(app, capsys, tiny_bundle, tmp_path):
    """The output rule on --outdir: a rerun replaces (a damaged file comes back, every
    mtime moves); --no-clobber refuses and changes nothing; --skip-existing writes only
    what is missing; --overwrite, now the default, is still accepted."""
    d = tmp_path / "out"
    args = ["sample", "--seeds", "0-2", "--outdir", d, "--model", tiny_bundle]
    assert cli(capsys, *args)[0] == 0
    good = (d / "seed000001.png").read_bytes()
    (d / "seed000001.png").write_bytes(b"junk")
    for f in listing(d):
        os.utime(d / f, ns=(10**18, 10**18))
    code, out, err = cli(capsys, *args)  # the same command again: replaced
    assert code == 0, err
    assert (d / "seed000001.png").read_bytes() == good
    assert all((d / f).stat().st_mtime_ns != 10**18 for f in listing(d))
    assert listing(d) == seed_names(range(3))  # no temp file left
    before = {f: ((d / f).read_bytes(), (d / f).stat().st_mtime_ns) for f in listing(d)}

    code, out, err = cli(capsys, *args, "--no-clobber")
    msg, hint = assert_error(code, err, 1)
    assert msg == f"{d / 'seed000000.png'} already exists (and 2 more of the outputs)"
    assert "--no-clobber" in hint and "--skip-existing" in hint
    assert out == ""
    code, out, err = cli(capsys, *args, "--no-clobber", "-q")
    assert code == 1 and len(err.splitlines()) == 2  # -q: the error and its hint only
    after = {f: ((d / f).read_bytes(), (d / f).stat().st_mtime_ns) for f in listing(d)}
    assert after == before

    # --skip-existing writes only the new seed.
    code, out, err = cli(capsys, "sample", "--seeds", "0-3", "--outdir", d, "--skip-existing",
                         "--json", "--model", tiny_bundle)
    assert code == 0, err
    assert [row["seed"] for row in json_lines(out)] == [3]
    assert listing(d) == seed_names(range(4))
    for f, (data, mtime) in before.items():
        assert (d / f).read_bytes() == data and (d / f).stat().st_mtime_ns == mtime

    # --overwrite (the default's old name) rewrites every file too.
    (d / "seed000001.png").write_bytes(b"junk")
    for f in listing(d):
        os.utime(d / f, ns=(10**18, 10**18))
    code, out, err = cli(capsys, "sample", "--seeds", "0-3", "--outdir", d, "--overwrite",
                         "--model", tiny_bundle)
    assert code == 0, err
    assert (d / "seed000001.png").read_bytes() == good
    assert listing(d) == seed_names(range(4))
    assert all((d / f).stat().st_mtime_ns != 10**18 for f in listing(d))


def test_existing_grid_replaced_refused_or_kept(app, capsys, tiny_bundle, tmp_path):
    g = tmp_path / "grid.png"
    g.write_bytes(b"an older grid")
    args = ["sample", "-n", 2, "--out", g, "-m", tiny_bundle]
    code, _, err = cli(capsys, *args, "--no-clobber")
    msg, hint = assert_error(code, err, 1)
    assert msg == f"{g} already exists" and "drop --no-clobber" in hint
    code, _, err = cli(capsys, *args, "--skip-existing")
    assert code == 0 and "kept existing" in err
    assert g.read_bytes() == b"an older grid"
    code, _, err = cli(capsys, *args)  # the README's first command, rerun: replaced
    assert code == 0, err
    assert pixels(g).shape == (RES + 2 * PAD, 2 * (RES + PAD) + PAD, 3)
    assert listing(tmp_path) == {"grid.png"}


def test_sample_outdir_partial_failure_exits_3(capsys, tiny_bundle, tmp_path):
    # seed000001.png is a folder: that one write fails, the others land.
    (tmp_path / "seed000001.png").mkdir()
    code, out, err = cli(capsys, "sample", "-n", 3, "--outdir", tmp_path,
                         "--json", "-m", tiny_bundle)
    assert code == 3, err
    assert [r["seed"] for r in json_lines(out)] == [0, 2]
    # One failed: line for the seed (the output rule never replaces a folder), then one
    # error and one hint: the partial failure.
    failed = [ln for ln in err.splitlines() if ln.startswith("failed: ")]
    assert failed == [f"failed: seed 1: {tmp_path / 'seed000001.png'} is a folder, and an "
                      "output never replaces one"]
    msg, hint = assert_error(code, err.replace(failed[0] + "\n", ""), 3)
    assert msg == "1 of 3 files could not be written (2 were)" and "--skip-existing" in hint
    assert listing(tmp_path) == {"seed000000.png", "seed000001.png", "seed000002.png"}
    assert (tmp_path / "seed000001.png").is_dir()


def test_invert_all_inputs_failing_is_one_fatal_error(capsys, tiny_bundle, tmp_path):
    missing = tmp_path / "missing.png"
    code, _, err = cli(capsys, "invert", missing, "--outdir", tmp_path / "o", "-m",
                       tiny_bundle, "-q")
    assert code == 1
    assert err.splitlines() == [
        f"error: {missing}: no such file",
        "hint: pass an image file the model can read (png, jpg, webp, bmp, gif, ...)"]
    (tmp_path / "junk.png").write_bytes(b"junk")
    code, _, err = cli(capsys, "invert", missing, tmp_path / "junk.png", "--outdir",
                       tmp_path / "o", "-m", tiny_bundle, "-q")
    assert code == 1
    assert err.splitlines() == [
        f"failed: {missing}: no such file",
        f"failed: {tmp_path / 'junk.png'}: not an image (cannot identify image file)",
        "error: 2 of 2 images could not be inverted",
        "hint: check the paths and that the files are images"]
    assert not (tmp_path / "o").exists()


def test_out_dash_writes_png_to_stdout(app, capsysbinary, tiny_bundle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = invoke(app, "sample", "-n", 2, "--out", "-", "--model", tiny_bundle)
    data = r.stdout_bytes
    assert data.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        assert im.size == (2 * (RES + PAD) + PAD, RES + 2 * PAD)
    assert b"provider" not in data and "provider" not in r.stderr  # that line needs -v
    assert listing(tmp_path) == set()  # stdout only, no samples.png
    # --json would mix text into the image bytes: refused before anything is written.
    capsysbinary.readouterr()
    code = run(["sample", "-n", "2", "--out", "-", "--json", "-m", str(tiny_bundle)])
    out, err = capsysbinary.readouterr()
    assert out == b""
    assert_error(code, err.decode(), 2)


# --------------------------------------------------------------------------- errors


USAGE_ERRORS = {
    "n0": ["sample", "-n", "0"],
    "range-backwards": ["sample", "--seeds", "5-2"],
    "seeds-not-numbers": ["sample", "--seeds", "abc"],
    "out-and-outdir": ["sample", "--out", "a.png", "--outdir", "d"],
    "format-tiff": ["sample", "--format", "tiff"],
    "device-gpu": ["sample", "--device", "gpu"],
    "precision-fp64": ["sample", "-n", "1", "--precision", "fp64"],
    "seed-past-max": ["sample", "--seed", "4294967295", "-n", "2"],
    "unknown-flag": ["sample", "--bogus"],
    "interpolate-one-image": ["interpolate", "{a}"],
    "interpolate-one-seed": ["interpolate", "--seeds", "3"],
    "interpolate-cubic": ["interpolate", "--method", "cubic", "{a}", "{b}"],
    "interpolate-space": ["interpolate", "--space", "x", "{a}", "{b}"],
    "interpolate-tiff": ["interpolate", "{a}", "{b}", "--out", "walk.tiff"],
    "interpolate-out-and-outdir": ["interpolate", "--seeds", "1,2", "--out", "a.png",
                                   "--outdir", "d"],
    "interpolate-images-and-seeds": ["interpolate", "{a}", "{b}", "--seeds", "1,2"],
}


@pytest.mark.parametrize("args", USAGE_ERRORS.values(), ids=USAGE_ERRORS.keys())
def test_usage_errors_exit_2(capsys, tiny_bundle, images, tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    names = {"a": images[0].name, "b": images[1].name}
    before = listing(tmp_path)
    code, out, err = cli(capsys, *[a.format(**names) for a in args], "--model", tiny_bundle)
    assert_error(code, err, 2)
    assert out == ""
    assert listing(tmp_path) == before  # nothing written


def test_fatal_model_missing_or_not_a_model(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("x")
    for model, words in ((tmp_path / "nope", "does not exist"),
                         (tmp_path / "empty", "no manifest.json"),
                         (tmp_path / "afile", "is a file")):
        code, out, err = cli(capsys, "sample", "-n", 2, "--out", tmp_path / "g.png",
                             "--model", model)
        msg, hint = assert_error(code, err, 1)
        assert words in msg and "--model" in hint
        assert out == "" and not (tmp_path / "g.png").exists()


def test_fatal_tampered_bundle(capsys, tiny_bundle, tmp_path):
    b = bundle_copy(tiny_bundle, tmp_path)
    data = bytearray((b / "generator.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01  # one byte
    (b / "generator.onnx").write_bytes(bytes(data))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for args in (["sample", "-n", 2, "--out", out_dir / "g.png"], ["info"]):
        code, out, err = cli(capsys, *args, "--model", b)
        msg, hint = assert_error(code, err, 1)
        assert "generator.onnx" in msg and "sha256" in msg and "re-export" in hint
        assert out == ""
    assert listing(out_dir) == set()


def test_sample_hashes_the_generator_only_and_info_every_file(capsys, tiny_bundle, images,
                                                            tmp_path):
    """`began sample` runs the generator alone, so a damaged graph it never opens does not
    stop it (hashing all of the embedded model would cost each start ~50 ms); `info`, the
    command that inspects a model, and a verb that runs that graph still refuse it."""
    b = bundle_copy(tiny_bundle, tmp_path)
    data = bytearray((b / "encoder.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (b / "encoder.onnx").write_bytes(bytes(data))
    code, out, err = cli(capsys, "sample", "-n", 2, "--out", tmp_path / "g.png", "-m", b)
    assert code == 0, err
    assert (tmp_path / "g.png").read_bytes().startswith(PNG_SIGNATURE)
    for args in (["info"], ["invert", images[0], "--outdir", tmp_path / "inv"]):
        code, out, err = cli(capsys, *args, "--model", b)
        msg, hint = assert_error(code, err, 1)
        assert "encoder.onnx" in msg and "sha256" in msg and "re-export" in hint
    assert not (tmp_path / "inv").exists()


def test_fatal_bundle_without_encoder(capsys, tiny_bundle, images, tmp_path):
    b = bundle_copy(tiny_bundle, tmp_path)
    (b / "encoder.onnx").unlink()
    code, out, err = cli(capsys, "invert", images[0], "--outdir", tmp_path / "inv",
                         "--model", b)
    msg, _ = assert_error(code, err, 1)
    assert "encoder.onnx" in msg and "missing" in msg
    assert out == "" and not (tmp_path / "inv").exists()


def test_fatal_device_cuda_on_cpu_only_machine(capsys, tiny_bundle, tmp_path):
    if cuda_usable():
        pytest.skip("onnxruntime can use CUDA here")
    code, out, err = cli(capsys, "sample", "-n", 2, "--out", tmp_path / "g.png",
                         "--device", "cuda", "--model", tiny_bundle)
    msg, hint = assert_error(code, err, 1)
    assert "cannot use CUDA" in msg and "began[cuda]" in hint
    assert out == "" and listing(tmp_path) == set()


def test_fatal_output_under_a_file(capsys, tiny_bundle, tmp_path):
    (tmp_path / "somefile.txt").write_text("x")
    for args in (["--out", tmp_path / "somefile.txt" / "grid.png"],
                 ["--outdir", tmp_path / "somefile.txt" / "d"]):
        code, out, err = cli(capsys, "sample", "-n", 2, *args, "--model", tiny_bundle)
        msg, hint = assert_error(code, err, 1)
        assert "somefile.txt" in msg and "Not a directory" in msg
        assert "writ" in hint
        assert out == ""
    assert listing(tmp_path) == {"somefile.txt"}
    assert (tmp_path / "somefile.txt").read_text() == "x"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root can write to a 0o500 folder")
def test_fatal_unwritable_folder(capsys, tiny_bundle, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        code, out, err = cli(capsys, "sample", "-n", 2, "--out", ro / "grid.png",
                             "--model", tiny_bundle)
        msg, _ = assert_error(code, err, 1)
        assert "grid.png" in msg and out == ""
        assert listing(ro) == set()
    finally:
        ro.chmod(0o700)


# --------------------------------------------------------------------------- invert


def test_invert_partial_failure(capsys, model, tiny_bundle, images, tmp_path):
    from began.images import to_uint8
    from began.latent import psnr

    a, b, _ = images
    (tmp_path / "notes.png").write_text("not an image")
    inv = tmp_path / "inv"
    code, out, err = cli(capsys, "invert", a, tmp_path / "missing.png", b,
                         tmp_path / "notes.png", "--outdir", inv, "--json",
                         "--model", tiny_bundle)
    assert code == 3, err
    assert "Traceback" not in err
    assert "missing.png: no such file" in err and "notes.png: not an image" in err
    assert listing(inv) == {"a.z.npy", "a.recon.png", "b.z.npy", "b.recon.png"}
    rows = json_lines(out)
    assert [Path(r["input"]).name for r in rows] == ["a.png", "b.png"]
    for row, src in zip(rows, (a, b)):
        assert row["provider"] == CPU and row["refine"] == 0
        assert Path(row["z"]) == inv / f"{src.stem}.z.npy"
        assert Path(row["recon"]) == inv / f"{src.stem}.recon.png"
        z = np.load(row["z"], allow_pickle=False)
        assert z.dtype == np.float32 and z.shape == (Z_DIM,)
        assert np.all(np.abs(z) <= 1)
        assert row["l1"] > 0 and row["psnr"] > 0
        # The numbers and the recon belong to this z and this input.
        x = preprocessed(model, src)
        g = model.generate(z[None])
        assert row["l1"] == pytest.approx(float(np.abs(g - x).mean()), abs=2e-6)
        assert row["psnr"] == pytest.approx(float(psnr(g, x)[0]), abs=2e-3)
        np.testing.assert_array_equal(pixels(Path(row["recon"])), to_uint8(g)[0])


def test_invert_refine_never_worse(app, tiny_bundle, images, tmp_path):
    l1 = {}
    for steps in (0, 20):
        r = invoke(app, "invert", *images[:2], "--outdir", tmp_path / f"r{steps}",
                   "--refine", steps, "--json", "--model", tiny_bundle)
        l1[steps] = [row["l1"] for row in json_lines(r.stdout)]
        assert all(row["refine"] == steps for row in json_lines(r.stdout))
    assert len(l1[0]) == len(l1[20]) == 2
    assert all(after <= before for before, after in zip(l1[0], l1[20])), l1


def test_invert_stdin(app, tiny_bundle, images, tmp_path):
    a = images[0]
    invoke(app, "invert", "-", "--outdir", tmp_path / "s", "--model", tiny_bundle,
           input=a.read_bytes())
    assert listing(tmp_path / "s") == {"stdin.z.npy", "stdin.recon.png"}
    invoke(app, "invert", a, "--outdir", tmp_path / "f", "--model", tiny_bundle)
    # The same image read from stdin or from its file gives the same z and recon.
    assert ((tmp_path / "s" / "stdin.z.npy").read_bytes()
            == (tmp_path / "f" / "a.z.npy").read_bytes())
    assert ((tmp_path / "s" / "stdin.recon.png").read_bytes()
            == (tmp_path / "f" / "a.recon.png").read_bytes())


def test_invert_stdin_only_once(capsys, tiny_bundle, tmp_path):
    code, out, err = cli(capsys, "invert", "-", "-", "--outdir", tmp_path / "t",
                         "--model", tiny_bundle)
    assert_error(code, err, 2)
    assert out == "" and listing(tmp_path) == set()


def test_invert_same_stems_get_distinct_outputs(app, tiny_bundle, images, tmp_path):
    a, b, c = images
    for d in ("d1", "d2", "d3"):
        (tmp_path / d).mkdir()
    shutil.copy(a, tmp_path / "d1" / "x.png")
    shutil.copy(b, tmp_path / "d2" / "x.png")
    shutil.copy(c, tmp_path / "d3" / "x-2.png")  # a name the renaming would also pick
    inv = tmp_path / "inv"
    r = invoke(app, "invert", tmp_path / "d1" / "x.png", tmp_path / "d2" / "x.png",
               tmp_path / "d3" / "x-2.png", "--outdir", inv, "--json", "--model", tiny_bundle)
    rows = json_lines(r.stdout)
    assert len(rows) == 3
    assert len({row["z"] for row in rows}) == 3 and len({row["recon"] for row in rows}) == 3
    assert [Path(row["z"]).name for row in rows[:2]] == ["x.z.npy", "x-2.z.npy"]
    assert len(listing(inv)) == 6
    # Each output belongs to its own input (a, b, c differ).
    zs = [np.load(row["z"]) for row in rows]
    for i, src in enumerate((a, b, c)):
        invoke(app, "invert", src, "--outdir", tmp_path / f"one{i}", "-m", tiny_bundle)
        np.testing.assert_array_equal(zs[i], np.load(tmp_path / f"one{i}" / f"{src.stem}.z.npy"))


def test_invert_folder_argument(app, tiny_bundle, images, tmp_path):
    d = tmp_path / "folder"
    (d / "sub").mkdir(parents=True)
    shutil.copy(images[0], d / "one.png")
    shutil.copy(images[1], d / "sub" / "two.png")
    shutil.copy(images[2], d / ".hidden.png")  # hidden: skipped
    r = invoke(app, "invert", d, "--outdir", tmp_path / "inv", "--json", "--model", tiny_bundle)
    assert {Path(row["input"]).name for row in json_lines(r.stdout)} == {"one.png", "two.png"}
    assert listing(tmp_path / "inv") == {"one.z.npy", "one.recon.png",
                                         "two.z.npy", "two.recon.png"}


# --------------------------------------------------------------------------- interpolate


def test_interpolate_strip(app, tiny_bundle, images, tmp_path):
    a, b, _ = images
    r = invoke(app, "interpolate", a, b, "--steps", 5, "--out", tmp_path / "strip.png",
               "--json", "--model", tiny_bundle)
    with Image.open(tmp_path / "strip.png") as im:  # the two inputs, then 5 frames between
        assert im.size == (7 * (RES + PAD) + PAD, RES + 2 * PAD) == (128, 20)
    (row,) = json_lines(r.stdout)
    assert row["frames"] == 5 and row["points"] == ["a", "b"] and row["provider"] == CPU
    assert row["inputs_shown"] is True
    assert row["space"] == "g" and row["method"] == "slerp"


def test_interpolate_default_name_in_current_folder(app, tiny_bundle, images, tmp_path,
                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BEGAN_MODEL", str(tiny_bundle))
    r = invoke(app, "interpolate", "a.png", "b.png", "--steps", 3)
    assert listing(tmp_path) == {"a.png", "b.png", "c.png", "interpolate-a-b.png"}
    assert "interpolate-a-b.png" in r.stderr and "current folder" in r.stderr
    assert r.stdout == ""
    with Image.open(tmp_path / "interpolate-a-b.png") as im:
        assert im.size == ((3 + 2) * (RES + PAD) + PAD, RES + 2 * PAD)


def gif_frames(path: Path) -> tuple[int, list[int], tuple[int, int]]:
    with Image.open(path) as im:
        assert im.format == "GIF"
        return im.n_frames, [f.info["duration"] for f in ImageSequence.Iterator(im)], im.size


def test_interpolate_gif(app, tiny_bundle, images, tmp_path):
    # Seeds 3 and 17 differ, so every frame does and Pillow keeps them all.
    invoke(app, "interpolate", "--seeds", "3,17", "--steps", 6, "--out", tmp_path / "s.gif",
           "--frame-ms", 40, "--model", tiny_bundle)
    n, durations, size = gif_frames(tmp_path / "s.gif")
    assert n == 6 and durations == [40] * 6 and size == (RES, RES)
    # From images the tiny model's frames may coincide, and Pillow merges identical
    # consecutive frames (adding their durations): the animation's length still holds.
    a, b, _ = images
    invoke(app, "interpolate", a, b, "--steps", 5, "--out", tmp_path / "i.gif",
           "--model", tiny_bundle)
    n, durations, _ = gif_frames(tmp_path / "i.gif")  # the inputs are its first and last
    assert 3 <= n <= 7 and sum(durations) == 7 * 100


def test_interpolate_three_images_outdir(app, tiny_bundle, images, tmp_path):
    r = invoke(app, "interpolate", *images, "--steps", 4, "--outdir", tmp_path / "F", "--json",
               "--model", tiny_bundle)
    assert listing(tmp_path / "F") == {f"frame{i:04d}.png" for i in range(7)}
    assert [Path(row["path"]).name for row in json_lines(r.stdout)] == [
        f"frame{i:04d}.png" for i in range(7)]


@pytest.mark.parametrize("args", [["--seeds", "3,17"], ["--seeds", "3,17", "--space", "d"],
                                  ["{a}", "{b}", "--space", "d"]],
                         ids=["seeds", "seeds-space-d", "images-space-d"])
def test_interpolate_seeds_and_space_d(app, tiny_bundle, images, tmp_path, args):
    names = {"a": images[0], "b": images[1]}
    r = invoke(app, "interpolate", *[str(a).format(**names) for a in args], "--steps", 4,
               "--out", tmp_path / "w.png", "--json", "--model", tiny_bundle)
    (row,) = json_lines(r.stdout)
    assert row["frames"] == 4 and row["space"] == ("d" if "d" in args else "g")
    tiles = 4 if "--seeds" in args else 4 + 2  # images: the inputs at both ends
    with Image.open(tmp_path / "w.png") as im:
        assert im.size == (tiles * (RES + PAD) + PAD, RES + 2 * PAD)


@pytest.mark.parametrize("method", ["lerp", "slerp"])
def test_interpolate_seed_endpoints_equal_samples(app, tiny_bundle, tmp_path, method):
    invoke(app, "interpolate", "--seeds", "3,17", "--method", method, "--outdir",
           tmp_path / "F", "--model", tiny_bundle)
    invoke(app, "sample", "--seeds", "3,17", "--outdir", tmp_path / "S", "--model", tiny_bundle)
    frames = sorted(listing(tmp_path / "F"))
    assert frames == [f"frame{i:04d}.png" for i in range(8)]  # default --steps 8
    for frame, seed in ((frames[0], 3), (frames[-1], 17)):
        f, s = tmp_path / "F" / frame, tmp_path / "S" / f"seed{seed:06d}.png"
        assert f.read_bytes() == s.read_bytes(), (
            f"{frame} != seed {seed}: max pixel difference {max_pixel_diff(f, s)}")


# --------------------------------------------------------------------------- score, info


def test_score_json_and_table(app, tiny_bundle, image_folder):
    r = invoke(app, "score", "--data", image_folder, "-n", 50, "--json", "-m", tiny_bundle)
    (s,) = json_lines(r.stdout)
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    assert s["gamma"] == manifest["training"]["gamma"]
    assert s["real_images"] == 48 and s["samples"] == 50 and s["provider"] == CPU
    assert s["balance"] == pytest.approx(s["gamma"] * s["loss_real"] - s["loss_fake"],
                                         abs=1e-12)
    assert abs(s["m_global"] - (s["loss_real"] + abs(s["gamma"] * s["loss_real"]
                                                     - s["loss_fake"]))) < 1e-9
    assert s["loss_real"] > 0 and s["loss_fake"] > 0
    assert set(s["diversity"]) == {"pixels", "latent_h"}
    for d in s["diversity"].values():
        assert set(d) == {"samples", "real", "ratio"}
        assert d["samples"] >= 0 and d["real"] > 0
        assert d["ratio"] == pytest.approx(d["samples"] / d["real"])

    # The human table goes to stderr (stdout is for data asked for: --json).
    t = invoke(app, "score", "--data", image_folder, "-n", 50, "-m", tiny_bundle)
    assert t.stdout == "" and "provider: " not in t.stderr
    (line,) = [x for x in t.stderr.splitlines() if x.startswith("M_global")]
    assert line.split()[-1] == f"{s['m_global']:.4f}"  # the same numbers, deterministic
    t = invoke(app, "score", "--data", image_folder, "-n", 50, "-m", tiny_bundle, "-v")
    assert t.stdout == "" and t.stderr.startswith("provider: CPUExecutionProvider")
    assert invoke(app, "score", "--data", image_folder, "-n", 50, "-m", tiny_bundle,
                  "-q").stderr == ""


def test_score_without_images_is_fatal(capsys, tiny_bundle, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.png").write_text("no")
    (tmp_path / "junk" / "b.txt").write_text("no")
    for folder in ("empty", "junk"):
        code, out, err = cli(capsys, "score", "--data", tmp_path / folder, "-n", 4,
                             "--model", tiny_bundle)
        _, hint = assert_error(code, err, 1)
        assert "--data" in hint and out == ""


def test_info(app, tiny_bundle, monkeypatch):
    monkeypatch.setenv("BEGAN_MODEL", str(tiny_bundle))
    r = invoke(app, "info")  # a human report: stderr; stdout only with --json
    assert "sha256 verified" in r.stderr
    assert any(line.startswith("provider   CPUExecutionProvider")
               for line in r.stderr.splitlines())
    assert "generator.onnx" in r.stderr and "16x16" in r.stderr
    assert r.stdout == ""

    j = json.loads(invoke(app, "info", "--json").stdout)
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    assert j["files_verified"] is True and j["provider"] == CPU
    assert set(j["files"]) == set(manifest["files"])
    assert (j["resolution"], j["z_dim"]) == (RES, Z_DIM)
    assert Path(j["model"]) == tiny_bundle
    if not cuda_usable():
        assert j["cuda"]["usable"] is False
        assert isinstance(j["cuda"]["reason"], str) and j["cuda"]["reason"]
        assert j["cuda"]["reason"] in j["provider_reason"]


# --------------------------------------------------------------------------- units


def test_parse_seeds():
    from began.seeds import parse_seeds

    assert parse_seeds("0-7,42,100-199") == [*range(8), 42, *range(100, 200)]
    assert parse_seeds(" 3 - 5 , 1 ") == [3, 4, 5, 1]
    assert parse_seeds("9,2,2") == [9, 2, 2]  # order kept
    assert parse_seeds("1,,2,") == [1, 2]
    assert parse_seeds("4294967295") == [4294967295]
    for bad in ("", ",", "abc", "5-2", "-1", "1-2-3", "1.5", "4294967296", "0-x"):
        with pytest.raises(UsageError) as e:
            parse_seeds(bad)
        assert e.value.exit_code == 2 and e.value.hint, bad


def test_slerp_lerp_path():
    from began.latent import lerp, path, slerp

    rng = np.random.default_rng(0)
    a, b, c, d = rng.uniform(-1, 1, (4, Z_DIM)).astype(np.float32)
    for f in (lerp, slerp):
        np.testing.assert_allclose(f(a, b, 0.0), a, rtol=0, atol=1e-6)
        np.testing.assert_allclose(f(a, b, 1.0), b, rtol=0, atol=1e-6)
    e1, e2 = np.eye(2)
    mid = slerp(e1, e2, 0.5)
    assert np.linalg.norm(mid) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(mid, [math.sqrt(0.5)] * 2, atol=1e-12)
    np.testing.assert_allclose(lerp(e1, e2, 0.5), [0.5, 0.5])
    np.testing.assert_allclose(slerp(a, 2 * a, 0.5), 1.5 * a, atol=1e-6)  # parallel: lerp
    np.testing.assert_allclose(slerp(0 * a, b, 0.25), 0.25 * b, atol=1e-7)  # zero: lerp
    for method in ("slerp", "lerp"):
        for points in ([a, b], [a, b, c], [a, b, c, d]):
            k = len(points)
            for steps in (2, 5):
                p = path(np.stack(points), steps, method)
                assert p.dtype == np.float32 and p.shape == ((k - 1) * (steps - 1) + 1, Z_DIM)
                for i, q in enumerate(points):  # every point is hit exactly
                    np.testing.assert_array_equal(p[i * (steps - 1)], q)


def test_refine_never_worse(model, images):
    from began.latent import refine

    x = np.concatenate([preprocessed(model, p) for p in images])
    z0 = model.encode(x)
    z, loss, start = refine(model, x, z0, 10)
    assert z.shape == z0.shape and z.dtype == np.float32
    assert np.all(loss <= start)
    assert np.all(np.abs(z) <= 1)
    np.testing.assert_allclose(start, model.run("invert_grad", z0, x)[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(loss, model.run("invert_grad", z, x)[0], rtol=0, atol=1e-6)
    z_same, loss0, start0 = refine(model, x, z0, 0)
    np.testing.assert_array_equal(z_same, z0)
    np.testing.assert_array_equal(loss0, start0)


def test_output_rule_plan_and_check(tmp_path):
    """Targets, the one output rule: replace by default, keep with --skip-existing, refuse
    with --no-clobber; a folder (or a FIFO) in an output's place is refused whatever the
    flags, per item in a plan and as the error for one output."""
    from began.targets import Refused, Targets

    a, b, c, f, fifo = (tmp_path / n for n in ("a", "b", "c", "f", "fifo"))
    assert Targets().plan([a, b]) == [True, True]
    b.write_text("x")
    c.symlink_to(b)  # a symlink counts as an existing file (the link is what is replaced)
    f.mkdir()
    os.mkfifo(fifo)
    assert Targets().plan([a, b, c]) == [True, True, True]
    assert Targets(overwrite=True).plan([a, b, c]) == [True, True, True]
    assert Targets(skip_existing=True).plan([a, b, c]) == [True, False, False]
    with pytest.raises(BeganError) as e:
        Targets(no_clobber=True).plan([a, b, c])
    assert e.value.exit_code == 1 and not isinstance(e.value, UsageError)
    assert e.value.message == f"{b} already exists (and 1 more of the outputs)"
    assert "--no-clobber" in e.value.hint and "--skip-existing" in e.value.hint
    for t in (Targets(), Targets(overwrite=True), Targets(skip_existing=True)):
        plan = t.plan([a, f, fifo])
        assert plan[0] is True and all(isinstance(w, Refused) for w in plan[1:])
        assert "is a folder" in plan[1].message and "not a regular file" in plan[2].message
        for p in (f, fifo):
            with pytest.raises(Refused) as e:
                t.check(p)
            assert e.value.exit_code == 1 and e.value.hint
    assert Targets().check(b) is True and Targets(skip_existing=True).check(b) is False
    with pytest.raises(BeganError, match=r"b already exists$"):
        Targets(no_clobber=True).check(b)
    assert Targets(no_clobber=True).check(a) is True and Targets().check(Path("-")) is True
    for flags in ({"overwrite": True}, {"skip_existing": True}):
        with pytest.raises(UsageError, match="exclude each other"):
            Targets(no_clobber=True, **flags)
    assert Targets().plan([]) == []
    assert f.is_dir() and b.read_text() == "x" and c.is_symlink()  # checks change nothing


def test_output_rule_never_touches_a_run_or_a_bundle(tmp_path):
    """A run's files and subfolders and a bundle's manifest and listed files are refused
    whatever the flags, also through a symlinked folder or `..`; other names in those
    folders (curves.png beside a run's config) are ordinary outputs."""
    from began.output import ensure_dir
    from began.targets import Refused, Targets, refuse_managed_folder

    run = fake_run(tmp_path / "run")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text('{"format": "began-model", '
                                          '"files": {"generator.onnx": {}}}')
    (tmp_path / "alias").symlink_to(run)
    owned = [run / "config.json", run / "stats.jsonl", run / "data.json",
             run / "samples" / "samples-00000001.png", run / "samples" / "new.png",
             run / "checkpoints" / "x.png", tmp_path / "alias" / "config.json",
             run / "samples" / ".." / "config.json", bundle / "manifest.json",
             bundle / "generator.onnx", bundle / "other.onnx", bundle / "MODEL_CARD.md"]
    for flags in ({}, {"overwrite": True}, {"skip_existing": True}):
        for p in owned:
            with pytest.raises(Refused) as e:
                Targets(**flags).check(p)
            assert e.value.exit_code == 1 and "never replaces" in e.value.message, p
            assert "outside the run and model folders" in e.value.hint
    for folder in (run / "samples", run / "checkpoints" / "sub", tmp_path / "alias" / "samples"):
        with pytest.raises(Refused):
            ensure_dir(folder)
    assert not (run / "checkpoints" / "sub").exists()
    refuse_managed_folder(run)  # the run folder itself: other names there are fine
    for p in (run / "curves.png", bundle / "preview.png", tmp_path / "config.json"):
        assert Targets().check(p) is True
    # A folder that only has a config.json is not a run; a manifest of another format is
    # not a bundle.
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.json").write_text("{}")
    (tmp_path / "plain" / "manifest.json").write_text('{"format": "other"}')
    assert Targets().check(tmp_path / "plain" / "config.json") is True
    assert Targets().check(tmp_path / "plain" / "manifest.json") is True


def test_unique_stems():
    from began.commands.invert import unique_stems

    assert unique_stems(["a/x.png", "b/x.jpg", "c/x-2.png", "y.png", "stdin", "d/stdin.png",
                         "e/.png"]) == ["x", "x-2", "x-2-2", "y", "stdin", "stdin-2", "png"]


# --------------------------------------------------------------------------- torch-free


def modules_after_sample(tiny_bundle, out: Path, before: str = "") -> set[str]:
    """Every module loaded by `began sample -n 2 --out OUT` in a fresh interpreter, after
    running the code `before`."""
    code = (
        "import json, sys\n"
        "import began.app\n"
        f"{before}\n"
        f"rc = began.app.run(['sample', '-n', '2', '--out', {str(out)!r},\n"
        f"                    '--model', {str(tiny_bundle)!r}, '-q'])\n"
        "assert rc == 0, rc\n"
        "print(json.dumps(sorted(sys.modules)))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert out.read_bytes().startswith(PNG_SIGNATURE)
    return set(json.loads(p.stdout))


def test_cli_never_imports_torch(tiny_bundle, tmp_path):
    """Not even with every verb's module imported (as the root's --help does)."""
    loaded = modules_after_sample(tiny_bundle, tmp_path / "g.png", "began.app.make_app()")
    bad = sorted(m for m in loaded if m.split(".")[0] in ("torch", "onnx")
                 or m.startswith("began.export"))
    assert not bad, bad
    assert "began.commands.export" in loaded  # make_app() built every verb
    assert listing(tmp_path) == {"g.png"}


def test_began_sample_loads_only_its_own_verb_and_no_pydantic(tiny_bundle, tmp_path):
    """The job that must start fast imports its own command module and none of the other
    verbs' (nor pydantic, which typer 0.29 would pull into every start: pyproject.toml)."""
    from began.app import VERBS

    loaded = modules_after_sample(tiny_bundle, tmp_path / "g.png")
    assert "began.commands.sample" in loaded
    assert not loaded & {f"began.commands.{v}" for v in VERBS if v != "sample"}
    assert not any(m.split(".")[0] == "pydantic" for m in loaded)


def test_the_roots_help_lists_every_verb_and_a_misspelt_verb_is_a_usage_error(capsys):
    from began.app import VERBS

    code, out, err = cli(capsys, "--help")
    assert code == 0, err
    listed = {line.split()[1] for line in out.splitlines() if line.startswith("│ ")}
    assert set(VERBS) <= listed, out
    code, out, err = cli(capsys, "-q", "smaple", "-n", 2)
    msg, hint = assert_error(code, err, 2)
    assert "smaple" in msg and hint == "see 'began --help'"
    assert out == ""


def test_io_binding_path_gives_the_same_outputs(tiny_bundle):
    """The CUDA path binds inputs and outputs; on the CPU provider it must agree exactly."""
    from began.bundle import load_bundle
    from began.model import Model
    from began.runtime import resolve
    from began.seeds import z_for_seeds

    z = z_for_seeds(list(range(5)), 16)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 3, 16, 16)).astype(np.float32)
    plain = Model(load_bundle(tiny_bundle), resolve("cpu"), io_binding=False)
    bound = Model(load_bundle(tiny_bundle), resolve("cpu"), io_binding=True)
    assert np.array_equal(plain.generate(z), bound.generate(z))
    for a, b in zip(plain.autoencode(x), bound.autoencode(x)):
        assert np.array_equal(a, b)
    for a, b in zip(plain.run("invert_grad", z[:3], x), bound.run("invert_grad", z[:3], x)):
        assert np.array_equal(a, b)


def test_ctrl_c_exits_130_and_leaves_only_whole_files(tiny_bundle, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "big"
    p = subprocess.Popen([sys.executable, "-m", "began", "sample", "-n", "100000", "--outdir",
                          str(out), "-m", str(tiny_bundle), "-q"], stderr=subprocess.PIPE,
                         text=True)
    while not (out.exists() and len(list(out.iterdir())) > 50):
        assert p.poll() is None, p.stderr.read()
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and err.strip() == "interrupted"
    files = list(out.iterdir())
    assert 50 < len(files) < 100000
    assert not [f for f in files if not f.name.startswith("seed")]  # no temp files
    for f in files:
        with Image.open(f) as im:
            im.load()


# --------------------------------------------------------------------------- issue 11: lose nothing


def test_invert_skip_existing_never_rewrites_an_output(app, capsys, tiny_bundle, images,
                                                       tmp_path):
    """An image is skipped only when all its outputs exist; of a half-done image only the
    missing output is written, and the existing one keeps its bytes and mtime."""
    a, b, c = images
    inv = tmp_path / "inv"
    invoke(app, "invert", a, b, c, "--outdir", inv, "-m", tiny_bundle)
    (inv / "a.recon.png").unlink()  # a: z kept, recon missing
    (inv / "b.z.npy").unlink()  # b: recon kept, z missing
    (inv / "a.z.npy").write_bytes(b"the user's own z")
    (inv / "b.recon.png").write_bytes(b"the user's own recon")
    for f in listing(inv):
        os.utime(inv / f, ns=(10**18, 10**18))
    code, out, err = cli(capsys, "invert", a, b, c, "--outdir", inv, "--skip-existing",
                         "--json", "-m", tiny_bundle)
    assert code == 0, err
    assert [Path(r["input"]).name for r in json_lines(out)] == ["a.png", "b.png"]  # c: skipped
    assert (inv / "a.z.npy").read_bytes() == b"the user's own z"
    assert (inv / "b.recon.png").read_bytes() == b"the user's own recon"
    for f in ("a.z.npy", "b.recon.png", "c.z.npy", "c.recon.png"):
        assert (inv / f).stat().st_mtime_ns == 10**18, f
    assert (inv / "a.recon.png").stat().st_mtime_ns != 10**18
    assert np.load(inv / "b.z.npy").shape == (Z_DIM,)
    assert listing(inv) == {f"{s}.{k}" for s in "abc" for k in ("z.npy", "recon.png")}
    # --no-clobber refuses any existing output and nothing changes; without it, replaced.
    code, _, err = cli(capsys, "invert", a, "--outdir", inv, "--no-clobber", "-m", tiny_bundle)
    assert_error(code, err, 1)
    assert (inv / "a.z.npy").read_bytes() == b"the user's own z"
    code, _, err = cli(capsys, "invert", a, "--outdir", inv, "-m", tiny_bundle)
    assert code == 0, err
    assert np.load(inv / "a.z.npy").shape == (Z_DIM,)


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temp_files_of_killed_runs_are_removed(capsys, tiny_bundle, tmp_path):
    """Only temp files a began process provably made (the token in their name verifies)
    whose process is gone; never a look-alike, whatever its pid."""
    from began.files import temp_name_for

    d = tmp_path / "out"
    d.mkdir()
    dead, alive = dead_pid(), os.getpid()
    stale = [temp_name_for(d / "seed000001.png", dead).name,
             temp_name_for(d / "notes.txt", dead, 12).name]
    ours = temp_name_for(d / "x.png", dead).name
    forged = ours.replace(ours.split(".")[-2], "0123456789abcdef")  # the token does not verify
    kept = [temp_name_for(d / "seed000002.png", alive).name,  # a live writer's
            f".seed000001.png.{dead}-0.tmp",  # looks like a temp of a dead pid: the user's
            f".notes.txt.{dead}-12.tmp", forged,
            ".seed000003.png.tmp", f"seed.{dead}-1.tmp", f".x.{dead}-1.tmp.bak",
            f".y.{dead}-a.tmp", ".z.999999999999-1.tmp", "notes.txt"]
    for name in stale + kept:
        (d / name).write_text("x")
    adir, link = temp_name_for(d / "adir", dead).name, temp_name_for(d / "link", dead).name
    (d / adir).mkdir()  # a folder is never removed as a temp file
    (d / link).symlink_to(d / "notes.txt")
    code, _, err = cli(capsys, "sample", "--seeds", "1", "--outdir", d, "-m", tiny_bundle)
    assert code == 0, err
    assert listing(d) == {*kept, "seed000001.png", adir, link}
    assert all((d / name).read_text() == "x" for name in kept)
    # Beside a single --out file, too.
    beside = [temp_name_for(tmp_path / "g.png", dead, 3), tmp_path / f".g.png.{dead}-3.tmp"]
    for p in beside:
        p.write_text("x")
    code, _, err = cli(capsys, "sample", "-n", 2, "--out", tmp_path / "g.png", "-m", tiny_bundle)
    assert code == 0, err
    assert [p.exists() for p in beside] == [False, True]


def test_sigterm_to_sample_outdir_leaves_whole_files_only(tiny_bundle, tmp_path):
    """SIGTERM while the writer threads are busy: exit 143, every file whole, no temp."""
    import signal
    import time

    d = tmp_path / "big"
    proc = subprocess.Popen([sys.executable, "-m", "began", "sample", "-n", "100000",
                             "--outdir", str(d), "-m", str(tiny_bundle), "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    t = time.time()
    while not (d.is_dir() and len(os.listdir(d)) > 200):
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t < 120, "no files were written"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "terminated"
    names = sorted(os.listdir(d))
    assert names and not [n for n in names if not re.fullmatch(r"seed\d{6}\.png", n)], names
    for n in names[-20:]:  # the last ones written: whole PNGs
        assert pixels(d / n).shape == (RES, RES, 3)


def run_began(args, timeout=120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "began", *map(str, args)],
                          capture_output=kw.pop("capture", True), text=True, timeout=timeout,
                          **kw)


def only_error(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if not ln.startswith("provider: ")]
    assert "Traceback" not in stderr and "unexpected" not in stderr, stderr
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith(
        "hint: "), stderr
    return lines[0]


@pytest.mark.parametrize("args", [["sample", "-n", 2, "--outdir", "{d}", "--json"],
                                  ["sample", "-n", 2, "--out", "-"],
                                  ["score", "--data", "{images}", "-n", 4, "--json"],
                                  ["info", "--json"]],
                         ids=["sample-json", "sample-out-dash", "score-json", "info-json"])
@pytest.mark.parametrize("stdout", ["closed", "full"])
def test_closed_or_full_stdout_is_one_error(tiny_bundle, image_folder, tmp_path, args, stdout):
    args = [str(a).format(d=tmp_path / "d", images=image_folder) for a in args]
    if stdout == "closed":
        p = subprocess.run(["bash", "-c", 'exec "$@" >&-', "began", sys.executable, "-m",
                            "began", *args, "-m", str(tiny_bundle)],
                           stderr=subprocess.PIPE, text=True, timeout=120)
    else:
        with open("/dev/full", "w") as full:
            p = subprocess.run([sys.executable, "-m", "began", *args, "-m", str(tiny_bundle)],
                               stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert p.returncode == 1, p.stderr
    msg = only_error(p.stderr)
    assert ("stdout is closed" if stdout == "closed" else "No space left") in msg, msg
    if stdout == "closed" and "sample" in args:  # refused before any work
        assert not (tmp_path / "d").exists()


def test_reader_that_leaves_is_a_quiet_exit(tiny_bundle, tmp_path):
    """`began sample ... --json | head -1`: no traceback, no error line, and it stops."""
    p = subprocess.Popen([sys.executable, "-m", "began", "sample", "-n", "20000", "--outdir",
                          str(tmp_path / "d"), "--json", "-q", "-m", str(tiny_bundle)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = p.stdout.readline()
    p.stdout.close()
    err = p.stderr.read()
    p.wait(timeout=120)
    assert json.loads(first)["seed"] == 0
    assert p.returncode == 1 and err == "", err
    assert len(list((tmp_path / "d").iterdir())) < 20000


def test_no_arguments_prints_help_without_an_error_line():
    for args in ([], ["interpolate"], ["invert"], ["score"], ["plot"], ["export"], ["eval"],
                 ["train"]):
        p = run_began(args, timeout=60)
        assert p.returncode == 2, (args, p.stderr)
        assert f"Usage: began {' '.join(args)}".strip() in p.stdout + p.stderr, args
        assert "error:" not in p.stdout + p.stderr and "Traceback" not in p.stderr, args


class FailingWrites:
    """files.write_bytes that succeeds `ok` times, then raises OSError(errno) (thread-safe)."""

    def __init__(self, ok: int, code: int):
        import threading

        from began import files

        self.ok, self.code, self.calls = ok, code, 0
        self.real, self.lock = files.write_bytes, threading.Lock()

    def __call__(self, path, data, fsync=True):
        with self.lock:
            self.calls += 1
            fail = self.calls > self.ok
        if fail:
            raise OSError(self.code, os.strerror(self.code), str(path))
        self.real(path, data, fsync)


@pytest.mark.parametrize("ok", [0, 5])
@pytest.mark.parametrize("code_", [errno.ENOSPC, errno.EROFS], ids=["ENOSPC", "EROFS"])
def test_full_disk_during_sample_outdir_is_one_error(capsys, tiny_bundle, tmp_path,
                                                     monkeypatch, ok, code_):
    from began import files

    fake = FailingWrites(ok, code_)
    monkeypatch.setattr(files, "write_bytes", fake)
    d = tmp_path / "d"
    code, out, err = cli(capsys, "sample", "-n", 300, "--outdir", d, "--json",
                         "--batch-size", 16, "-m", tiny_bundle)
    msg, hint = assert_error(code, err, 3 if ok else 1)  # one error, not one per file
    assert os.strerror(code_) in msg and f"stopped after writing {ok} of 300" in msg
    # Writer threads take chunks in parallel, so the `ok` files written need not be the first
    # seeds (seed 16 was seen before seed 2 under load): they must be exactly those reported.
    written = sorted(listing(d))
    reported = [r["seed"] for r in json_lines(out)] if ok else []
    assert ok or out == ""
    assert len(written) == len(reported) == ok
    assert written == sorted(seed_names(reported))  # only what was written, all of it
    assert fake.calls < 300  # it stopped instead of trying every file


def test_interpolate_outdir_with_one_unwritable_frame_exits_3(capsys, tiny_bundle, tmp_path):
    d = tmp_path / "F"
    d.mkdir()
    (d / "frame0002.png").mkdir()  # that one frame cannot be written
    code, out, err = cli(capsys, "interpolate", "--seeds", "3,17", "--steps", 5, "--outdir", d,
                         "--overwrite", "--json", "-m", tiny_bundle)
    failed = [ln for ln in err.splitlines() if ln.startswith("failed: ")]
    assert len(failed) == 1 and "frame0002.png" in failed[0]
    msg, _ = assert_error(code, err.replace(failed[0] + "\n", ""), 3)
    assert msg == "1 of 5 frames could not be written (4 were)"
    assert [Path(r["path"]).name for r in json_lines(out)] == [
        f"frame{i:04d}.png" for i in (0, 1, 3, 4)]  # only frames really written
    assert "wrote" not in err


def test_score_json_is_strict_when_a_figure_is_not_finite(capsys, tiny_bundle, image_folder,
                                                         monkeypatch):
    """A model whose D returns NaN: --json still parses as strict JSON (null, not NaN)."""
    from began.model import Model

    real = Model.autoencode

    def nan_recon(self, images, batch_size=256):
        recon, h = real(self, images, batch_size)
        return recon * np.float32("nan"), h
    monkeypatch.setattr(Model, "autoencode", nan_recon)
    code, out, err = cli(capsys, "score", "--data", image_folder, "-n", 4, "--max-images", 4,
                         "--json", "-m", tiny_bundle)
    assert code == 0, err

    def no_constants(name):
        raise AssertionError(f"{name} in --json output")
    s = json.loads(out, parse_constant=no_constants)
    assert s["loss_real"] is None and s["m_global"] is None and s["gamma"] > 0


def test_output_finite_json():
    from began.output import json_text

    text = json_text({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": -float("inf")},
                      "e": 2.5})
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": {"d": None}, "e": 2.5}


# --------------------------------------------------------------------------- the error model


def fake_run(run: Path) -> Path:
    """What `began train` leaves in a run folder, as far as the output rule looks."""
    for sub in ("samples", "checkpoints"):
        (run / sub).mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "stats.jsonl").write_text('{"step": 1, "k": 0.0, "loss_real": 0.5}\n')
    (run / "samples" / "samples-00000001.png").write_bytes(b"a grid")
    return run


def error_cases(tmp_path: Path, images) -> dict[str, tuple[list, int]]:
    """Typical user mistakes per verb, and the exit code the README's table gives them."""
    a, b, _ = images
    missing, empty, afile = tmp_path / "missing.png", tmp_path / "empty", tmp_path / "afile"
    empty.mkdir()
    afile.write_text("x")
    existing = tmp_path / "exists.png"
    existing.write_bytes(a.read_bytes())
    inv = tmp_path / "inv"
    inv.mkdir()
    (inv / "a.z.npy").write_bytes(b"mine")
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "frame0000.png").write_bytes(b"mine")
    (tmp_path / "inv-folder" / "a.recon.png").mkdir(parents=True)  # a folder where it goes
    run = fake_run(tmp_path / "run")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text('{"format": "began-model", '
                                          '"files": {"grid.png": {}}}')  # a file it lists
    no_model = ["--model", tmp_path / "no-model"]
    return {
        # 2: the command line itself is wrong
        "sample-unknown-flag": (["sample", "--bogus"], 2),
        "sample-n-too-big": (["sample", "-n", "4294967296"], 2),
        "sample-grid-too-big": (["sample", "-n", "100000", "--out", "g.png"], 2),
        "sample-seeds-too-many": (["sample", "--seeds", "0-4294967295", "--outdir", "d"], 2),
        "sample-batch-too-big": (["sample", "--batch-size", "10000000"], 2),
        "interpolate-frame-ms": (["interpolate", "--seeds", "1,2", "--frame-ms", "700000",
                                  "--out", "w.gif"], 2),
        "interpolate-one-point": (["interpolate", a], 2),
        "invert-no-outdir": (["invert", a], 2),
        "invert-stdin-twice": (["invert", "-", "-", "--outdir", "o"], 2),
        "score-no-data": (["score", "-n", "5"], 2),
        "score-n-1": (["score", "--data", empty, "-n", "1"], 2),
        "info-unknown-flag": (["info", "--bogus"], 2),
        # 1: the files named cannot be used, or outputs cannot be written
        "sample-no-model": (["sample", "-n", "2", "--out", "g.png", *no_model], 1),
        "sample-out-exists": (["sample", "-n", "2", "--out", existing, "--no-clobber"], 1),
        "sample-out-is-a-folder": (["sample", "-n", "2", "--out", empty], 1),
        "sample-out-is-a-run-file": (["sample", "-n", "2", "--out", run / "config.json",
                                      "--format", "png"], 1),
        "sample-outdir-in-a-run": (["sample", "-n", "2", "--outdir", run / "samples"], 1),
        "sample-no-clobber-and-overwrite": (["sample", "--no-clobber", "--overwrite"], 2),
        "sample-no-clobber-and-skip": (["sample", "--no-clobber", "--skip-existing"], 2),
        "sample-out-under-a-file": (["sample", "-n", "2", "--out", afile / "g.png"], 1),
        "interpolate-missing-input": (["interpolate", a, missing, "--out", "w.png"], 1),
        "interpolate-no-inputs": (["interpolate", empty, empty, "--out", "w.png"], 1),
        "interpolate-not-an-image": (["interpolate", a, afile, "--out", "w.png"], 1),
        "interpolate-frames-exist": (["interpolate", "--seeds", "1,2", "--outdir", frames,
                                      "--no-clobber"], 1),
        "interpolate-out-is-a-folder": (["interpolate", "--seeds", "1,2", "--out", empty], 1),
        "interpolate-out-in-a-bundle": (["interpolate", "--seeds", "1,2", "--out",
                                         bundle / "grid.png"], 1),
        "interpolate-no-model": (["interpolate", "--seeds", "1,2", *no_model], 1),
        "invert-missing-input": (["invert", missing, "--outdir", "o"], 1),
        "invert-no-inputs": (["invert", empty, "--outdir", "o"], 1),
        "invert-not-an-image": (["invert", afile, "--outdir", "o"], 1),
        "invert-output-exists": (["invert", a, "--outdir", inv, "--no-clobber"], 1),
        "invert-output-is-a-folder": (["invert", a, "--outdir", tmp_path / "inv-folder"], 1),
        "invert-outdir-in-a-run": (["invert", a, "--outdir", run / "checkpoints"], 1),
        "invert-outdir-under-a-file": (["invert", a, "--outdir", afile / "o"], 1),
        "invert-no-model": (["invert", a, "--outdir", "o", *no_model], 1),
        "score-missing-data": (["score", "--data", missing], 1),
        "score-no-inputs": (["score", "--data", empty], 1),
        "score-data-is-a-file": (["score", "--data", afile], 1),
        "score-no-model": (["score", "--data", empty, *no_model], 1),
        "info-no-model": (["info", *no_model], 1),
        "info-model-is-a-file": (["info", "--model", afile], 1),
    }


def _case_ids() -> list[str]:
    import inspect
    import re

    return re.findall(r'^\s+"([a-z0-9-]+)": \(\[', inspect.getsource(error_cases), re.M)


@pytest.mark.parametrize("case", _case_ids())
def test_error_model_per_verb(capsys, tiny_bundle, images, tmp_path, monkeypatch, case):
    """Each verb on its typical mistakes: the documented exit code, exactly one error: line
    and one hint: line, no traceback, nothing on stdout, nothing written."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("BEGAN_MODEL", str(tiny_bundle))
    args, expected = error_cases(tmp_path, images)[case]
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    code, out, err = cli(capsys, *args)
    assert_error(code, err, expected)
    assert out == ""
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before  # nothing written


# --------------------------------------------------------------------------- issue 13: one
# image as itself, --scale, the inputs at the ends of a walk, the outside warning, help texts
# (helper A2's block)


def checks_png(path: Path, size: int = 64) -> Path:
    """Black and white squares: far from anything the tiny model draws."""
    from PIL import ImageDraw

    img = Image.new("RGB", (size, size), (0, 0, 0))
    q = size // 4
    for i in range(4):
        for j in range(i % 2, 4, 2):
            ImageDraw.Draw(img).rectangle([i * q, j * q, i * q + q - 1, j * q + q - 1],
                                          fill=(255, 255, 255))
    img.save(path)
    return path


def test_one_image_is_the_image_itself(app, tiny_bundle, tmp_path):
    invoke(app, "sample", "--seeds", "7", "--outdir", tmp_path / "s", "-m", tiny_bundle)
    seed7 = pixels(tmp_path / "s" / "seed000007.png")
    r = invoke(app, "sample", "--seed", 7, "-n", 1, "--out", "-", "-m", tiny_bundle)
    with Image.open(io.BytesIO(r.stdout_bytes)) as im:
        assert im.size == (RES, RES)  # no grid border
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), seed7)
    r = invoke(app, "sample", "--seed", 7, "-n", 1, "--out", tmp_path / "one.png",
               "-m", tiny_bundle)
    np.testing.assert_array_equal(pixels(tmp_path / "one.png"), seed7)
    assert "(1 image, 16x16)" in r.stderr


def test_scale_enlarges_images_not_npy(app, capsys, tiny_bundle, tmp_path):
    invoke(app, "sample", "--seeds", "0,1", "--outdir", tmp_path / "s", "-m", tiny_bundle)
    seeds = [pixels(tmp_path / "s" / f"seed{s:06d}.png") for s in (0, 1)]
    big = [im.repeat(3, 0).repeat(3, 1) for im in seeds]
    invoke(app, "sample", "-n", 2, "--scale", 3, "--out", tmp_path / "g.png", "-m", tiny_bundle)
    grid = pixels(tmp_path / "g.png")  # images enlarged, the 2-pixel border kept
    assert grid.shape == (3 * RES + 2 * PAD, 2 * (3 * RES + PAD) + PAD, 3)
    for k in range(2):
        x = PAD + k * (3 * RES + PAD)
        np.testing.assert_array_equal(grid[PAD:PAD + 3 * RES, x:x + 3 * RES], big[k])
    invoke(app, "sample", "--seeds", "0,1", "--scale", 3, "--outdir", tmp_path / "b",
           "-m", tiny_bundle)
    np.testing.assert_array_equal(pixels(tmp_path / "b" / "seed000001.png"), big[1])
    invoke(app, "sample", "--seeds", "1", "--scale", 3, "--resample", "lanczos", "--out",
           tmp_path / "l.png", "-m", tiny_bundle)
    smooth = pixels(tmp_path / "l.png")
    assert smooth.shape == big[1].shape and not np.array_equal(smooth, big[1])
    # Lanczos of an image stays near its nearest-neighbour enlargement on average.
    assert np.abs(smooth.astype(int) - big[1]).mean() < 20
    invoke(app, "sample", "--seeds", "1", "--scale", 3, "--format", "npy", "--outdir",
           tmp_path / "n", "-m", tiny_bundle)
    assert np.load(tmp_path / "n" / "seed000001.npy").shape == (3, RES, RES)
    code, _, err = cli(capsys, "sample", "-n", 1, "--scale", 2, "--resample", "cubic",
                       "--out", tmp_path / "x.png", "-m", tiny_bundle)
    msg, hint = assert_error(code, err, 2)
    assert "cubic" in msg and "nearest or lanczos" in hint
    code, _, err = cli(capsys, "sample", "-n", 1, "--scale", 0, "-m", tiny_bundle)
    assert_error(code, err, 2)


def test_invert_scale_and_plain_recon_agree(app, tiny_bundle, images, tmp_path):
    a = images[0]
    invoke(app, "invert", a, "--outdir", tmp_path / "p", "-m", tiny_bundle)
    invoke(app, "invert", a, "--outdir", tmp_path / "x4", "--scale", 4, "-m", tiny_bundle)
    plain, big = pixels(tmp_path / "p" / "a.recon.png"), pixels(tmp_path / "x4" / "a.recon.png")
    assert big.shape == (4 * RES, 4 * RES, 3)
    np.testing.assert_array_equal(big[::4, ::4], plain)
    np.testing.assert_array_equal(np.load(tmp_path / "x4" / "a.z.npy"),
                                  np.load(tmp_path / "p" / "a.z.npy"))


def test_walk_shows_the_inputs_at_both_ends(app, model, tiny_bundle, images, tmp_path):
    from began.images import to_uint8

    a, b, _ = images
    seen = [to_uint8(preprocessed(model, p))[0] for p in (a, b)]  # as the model sees them
    invoke(app, "interpolate", a, b, "--steps", 3, "--out", tmp_path / "w.png",
           "--outdir" if False else "--nrow", 5, "-m", tiny_bundle)
    strip = pixels(tmp_path / "w.png")
    tiles = [strip[PAD:PAD + RES, PAD + k * (RES + PAD):PAD + k * (RES + PAD) + RES]
             for k in range(5)]
    np.testing.assert_array_equal(tiles[0], seen[0])
    np.testing.assert_array_equal(tiles[-1], seen[1])
    invoke(app, "interpolate", a, b, "--steps", 3, "--outdir", tmp_path / "F", "-m",
           tiny_bundle)  # frames alone: the walk, G(z_a) first
    np.testing.assert_array_equal(pixels(tmp_path / "F" / "frame0000.png"), tiles[1])
    invoke(app, "interpolate", a, b, "--steps", 3, "--scale", 2, "--out", tmp_path / "w.gif",
           "-m", tiny_bundle)
    with Image.open(tmp_path / "w.gif") as im:
        assert im.size == (2 * RES, 2 * RES)
        frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)]
    # GIF stores a palette per frame: within one 8-bit level of a few colours' rounding.
    for got, want in ((frames[0], seen[0]), (frames[-1], seen[1])):
        assert np.abs(got[::2, ::2].astype(int) - want).max() <= 8


def test_invert_warns_about_images_the_model_cannot_draw(capsys, tiny_bundle, tmp_path):
    checks = checks_png(tmp_path / "checks.png")
    code, out, err = cli(capsys, "invert", checks, "--outdir", tmp_path / "o", "--json",
                         "-m", tiny_bundle, "--device", "cpu")
    assert code == 0, err  # a warning, not a failure
    (row,) = json_lines(out)
    assert row["outside"] is True and row["l1_ratio"] > 2
    (warning,) = [s for s in err.splitlines() if s.startswith("warning: ")]
    assert warning.startswith(f"warning: {checks}: L1 ") and "own samples" in warning
    # Many images: one summary line instead of one per image.
    d = tmp_path / "many"
    d.mkdir()
    for k in range(12):
        shutil.copy(checks, d / f"c{k:02d}.png")
    code, out, err = cli(capsys, "invert", d, "--outdir", tmp_path / "m", "--json",
                         "-m", tiny_bundle, "--device", "cpu")
    assert code == 0, err
    assert [r["outside"] for r in json_lines(out)] == [True] * 12
    (warning,) = [s for s in err.splitlines() if s.startswith("warning: ")]
    assert warning.startswith("warning: 12 of 12 images have an L1 error over 2x")


def test_help_texts_are_clean(app):
    """No `<bool>` after flags, no `[default: ...]` eaten by rich markup (leaving ' .')."""
    for verb in ("", "sample", "interpolate", "invert", "score", "info", "export", "train"):
        r = CliRunner().invoke(app, [verb, "--help"] if verb else ["--help"],
                               env={"COLUMNS": "200"})
        assert r.exit_code == 0, r.output
        text = r.output
        assert "<bool>" not in text, verb
        assert not re.search(r" [.;](\s|$)", text), (verb, text)
        assert "[[" not in text, verb
    r = CliRunner().invoke(app, ["sample", "--help"], env={"COLUMNS": "200"})
    assert "[default: samples.png]" in r.output
    assert "File format [default: from --out, else png]; npy" in r.output


# --------------------------------------------------------------------------- issue 22: one
# output rule, one seed one image, help for bare verbs, one voice on stdout and stderr


def test_replacing_is_atomic_and_a_symlink_is_replaced_not_its_target(capsys, tiny_bundle,
                                                                     tmp_path):
    """The old file is renamed over, never written into: a hard link to it keeps the old
    bytes (a reader sees the old file or the new one); a symlink at the name becomes the
    new file and its target stays as it was."""
    g = tmp_path / "grid.png"
    g.write_bytes(b"old grid")
    os.link(g, tmp_path / "reader.png")  # what a reader holding the old file sees
    code, _, err = cli(capsys, "sample", "-n", 2, "--out", g, "-m", tiny_bundle)
    assert code == 0, err
    assert (tmp_path / "reader.png").read_bytes() == b"old grid"
    assert g.read_bytes().startswith(PNG_SIGNATURE)
    target = tmp_path / "elsewhere.txt"
    target.write_text("the link's target")
    (tmp_path / "link.png").symlink_to(target)
    code, _, err = cli(capsys, "sample", "--seed", 3, "--out", tmp_path / "link.png",
                       "-m", tiny_bundle)
    assert code == 0, err
    assert not (tmp_path / "link.png").is_symlink()
    assert pixels(tmp_path / "link.png").shape == (RES, RES, 3)
    assert target.read_text() == "the link's target"
    assert listing(tmp_path) == {"grid.png", "reader.png", "elsewhere.txt", "link.png"}


def test_one_seed_is_one_image_named_as_outdir_names_it(capsys, tiny_bundle, tmp_path,
                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    invoke_args = ["-m", tiny_bundle, "-q"]
    assert cli(capsys, "sample", "--seeds", "5", "--outdir", "d", *invoke_args)[0] == 0
    assert cli(capsys, "sample", "--seed", 5, *invoke_args)[0] == 0
    assert listing(tmp_path) == {"d", "seed000005.png"}  # the image of seed 5, by its name
    assert (tmp_path / "seed000005.png").read_bytes() == (tmp_path / "d" /
                                                         "seed000005.png").read_bytes()
    assert cli(capsys, "sample", "--seed", 5, "--format", "npy", *invoke_args)[0] == 0
    assert np.load(tmp_path / "seed000005.npy").shape == (3, RES, RES)
    assert cli(capsys, "sample", "--seed", 5, "--out", "x.png", *invoke_args)[0] == 0
    assert pixels(tmp_path / "x.png").shape == (RES, RES, 3)  # the image, not a grid
    # -n N makes a grid as before, from seed S; no flags at all: the 64-image grid.
    assert cli(capsys, "sample", "--seed", 5, "-n", 4, *invoke_args)[0] == 0
    assert pixels(tmp_path / "samples.png").shape == (2 * (RES + PAD) + PAD,) * 2 + (3,)
    (tmp_path / "samples.png").unlink()
    code, out, _ = cli(capsys, "sample", "--json", *invoke_args)
    assert code == 0 and json_lines(out)[0]["seeds"] == list(range(64))
    assert pixels(tmp_path / "samples.png").shape == (8 * (RES + PAD) + PAD,) * 2 + (3,)


def test_a_shell_loop_over_seeds_runs_and_reruns(tiny_bundle, tmp_path):
    """The model card's batch generation, through the installed `began` command: every
    call exits 0, one file per seed, and a second pass replaces them."""
    began = shutil.which("began", path=os.path.dirname(sys.executable))
    assert began, "the began command is not installed beside this Python"
    loop = 'for s in 1 2 3; do "$BEGAN" sample --seed $s -m "$MODEL" -q; echo "rc=$?"; done'
    env = {**os.environ, "BEGAN": began, "MODEL": str(tiny_bundle)}
    seen = []
    for rerun in (False, True):
        if rerun:
            for f in listing(tmp_path):
                os.utime(tmp_path / f, ns=(10**18, 10**18))
            (tmp_path / "seed000002.png").write_bytes(b"damaged")
        p = subprocess.run(["bash", "-c", loop], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=300)
        assert p.returncode == 0 and p.stdout.split() == ["rc=0"] * 3, p.stdout + p.stderr
        assert p.stderr == ""
        assert listing(tmp_path) == seed_names([1, 2, 3])
        seen.append({f: pixels(tmp_path / f) for f in listing(tmp_path)})
        if rerun:  # replaced: new mtimes, the damaged one restored
            assert all((tmp_path / f).stat().st_mtime_ns != 10**18 for f in listing(tmp_path))
    for f in seen[0]:
        np.testing.assert_array_equal(seen[0][f], seen[1][f])
    assert not np.array_equal(seen[0]["seed000001.png"], seen[0]["seed000002.png"])


def test_plot_follows_the_output_rule(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    run_dir = fake_run(tmp_path / "run")
    curves = run_dir / "curves.png"
    for _ in range(2):  # the default output inside the run folder, rerun: replaced
        code, out, err = cli(capsys, "plot", run_dir)
        assert code == 0 and out == "" and err == f"wrote {curves}\n", err
    assert cli(capsys, "plot", run_dir, "-q")[2] == ""
    before = curves.read_bytes()
    code, _, err = cli(capsys, "plot", run_dir, "--no-clobber")
    msg, _ = assert_error(code, err, 1)
    assert msg == f"{curves} already exists" and curves.read_bytes() == before
    (tmp_path / "folder.png").mkdir()
    (run_dir / "samples" / "reals.png").write_bytes(b"the run's reals")
    (tmp_path / "alias").symlink_to(run_dir)
    for out_path in (run_dir / "samples" / "x.png", run_dir / "samples" / "reals.png",
                     run_dir / "samples" / "samples-00000001.png",
                     tmp_path / "alias" / "samples" / "reals.png",
                     run_dir / "checkpoints" / "c.png", tmp_path / "folder.png"):
        for flags in ([], ["--no-clobber"]):
            code, _, err = cli(capsys, "plot", run_dir, "--out", out_path, *flags)
            assert "never replace" in assert_error(code, err, 1)[0], (out_path, flags)
    assert listing(run_dir / "samples") == {"samples-00000001.png", "reals.png"}
    assert (run_dir / "samples" / "reals.png").read_bytes() == b"the run's reals"
    assert listing(run_dir / "checkpoints") == set()


def test_provider_line_only_with_v_before_or_after_the_verb(capsys, tiny_bundle, tmp_path):
    g = ["--out", tmp_path / "g.png", "-m", tiny_bundle, "--device", "cpu"]
    for args in (["sample", "-n", 2, *g], ["sample", "-n", 2, *g, "-q"],
                 ["-q", "sample", "-n", 2, *g], ["-v", "-q", "sample", "-n", 2, *g],
                 ["sample", "-n", 2, *g, "-q", "-v"]):
        code, out, err = cli(capsys, *args)
        assert code == 0 and out == "", err
        assert "provider: " not in err and (err == "") == ("-q" in args), (args, err)
    for args in (["-v", "sample", "-n", 2, *g], ["sample", "-v", "-n", 2, *g],
                 ["sample", "-n", 2, *g, "--verbose"]):
        code, out, err = cli(capsys, *args)
        assert code == 0 and out == "", err
        assert err.splitlines()[0].startswith("provider: CPUExecutionProvider"), (args, err)
    # Verbs without a model take -v after their name too, and -q before it.
    assert cli(capsys, "plot", "-v", tmp_path)[0] == 1  # (no stats.jsonl: a file named is missing)
    code, out, err = cli(capsys, "-q", "info", "-m", tiny_bundle)
    assert (code, out, err) == (0, "", "")


def test_vv_counts_before_and_after_the_verb(capsys, tiny_bundle, tmp_path, monkeypatch):
    """-vv shows a bug's traceback; `began -v sample -v` is -vv."""
    from began.model import Model

    def broken(self, z, batch_size=64):
        raise RuntimeError("a bug")
    monkeypatch.setattr(Model, "generate", broken)
    g = ["sample", "-n", 2, "--out", tmp_path / "g.png", "-m", tiny_bundle]
    code, _, err = cli(capsys, *g, "-v")
    assert code == 1 and "unexpected RuntimeError: a bug" in err
    for args in (["-vv", *g], [*g, "-vv"], ["-v", *g, "-v"]):
        with pytest.raises(RuntimeError, match="a bug"):
            run([str(a) for a in args])
    assert listing(tmp_path) == set()


def test_stdout_holds_only_the_data_asked_for(tiny_bundle, image_folder, tmp_path):
    """Human reports (score's table, info's report) are on stderr: with stdout closed they
    still work; with --json stdout is exactly the data."""
    for args in (["score", "--data", image_folder, "-n", 4], ["info"]):
        p = subprocess.run(["bash", "-c", 'exec "$@" >&-', "began", sys.executable, "-m",
                            "began", *map(str, args), "-m", str(tiny_bundle)],
                           stderr=subprocess.PIPE, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        assert ("M_global" if args[0] == "score" else "sha256 verified") in p.stderr
        assert "provider: " not in p.stderr
        p = run_began([*args, "--json", "-m", tiny_bundle])
        assert p.returncode == 0 and p.stderr == "", p.stderr
        assert isinstance(json.loads(p.stdout), dict)
