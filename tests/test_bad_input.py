"""Property-based tests (hypothesis): whatever a user passes, the CLI ends with a
documented exit code, errors are one `error:` line plus a `hint:` (no traceback),
and nothing half-written is left. Run with --hypothesis-show-statistics to see
how many cases were tried."""

import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from began.app import run

def fuzz(examples: int):
    """Reproducible runs of `examples` cases (derandomized, so CI sees the same ones)."""
    return settings(max_examples=examples, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


FUZZ = fuzz(150)


def cli(capsys, args):
    capsys.readouterr()
    code = run([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_clean_failure(code, err, allowed=(1, 2, 3)):
    assert code in allowed, (code, err)
    assert "Traceback" not in err and "unexpected" not in err, err
    lines = [ln for ln in err.splitlines() if not ln.startswith("provider: ")]
    assert lines and lines[-2].startswith("error: ") and lines[-1].startswith("hint: "), err


def no_partial_files(folder: Path) -> None:
    for p in folder.rglob("*"):
        assert not p.name.endswith(".tmp"), p  # an interrupted write would leave these
        if p.suffix == ".png":
            with Image.open(p) as im:
                im.load()


# --- arguments -------------------------------------------------------------------

VALUES = st.one_of(st.integers(-5, 40).map(str), st.sampled_from(
    ["", "-", "0-3", "3-0", "1,2,x", "abc", "1e3", "nan", "-1", "0.5", "2.5", "png", "tiff",
     "npy", "gif", "cuda", "cpu", "auto", "fp16", "fp64", "slerp", "d", "x" * 300,
     "sub/dir/grid.png", "/dev/null/x", "a\x00b"]))
SAMPLE_FLAGS = ["-n", "--seed", "--seeds", "--nrow", "--truncation", "--batch-size",
                "--format", "--device", "--precision", "--out", "--outdir"]
SWITCHES = ["--json", "-q", "--overwrite", "--skip-existing", "--bogus"]


@st.composite
def sample_args(draw):
    args = []
    for _ in range(draw(st.integers(0, 4))):
        flag = draw(st.sampled_from(SAMPLE_FLAGS + SWITCHES))
        args.append(flag)
        if flag in SAMPLE_FLAGS:
            args.append(draw(VALUES))
    return args


@FUZZ
@given(args=sample_args())
def test_sample_arguments(tiny_bundle, tmp_path_factory, capsys, monkeypatch, args):
    work = tmp_path_factory.mktemp("args")
    monkeypatch.chdir(work)
    if "--out" in args and args[args.index("--out") + 1:][:1] == ["-"]:
        args.append("--json")  # never binary onto the test's stdout: must be refused
    code, out, err = cli(capsys, ["sample", "--model", tiny_bundle, *args])
    if code == 0:
        assert "error:" not in err
    else:
        assert_clean_failure(code, err)
    no_partial_files(work)


# --- image files -------------------------------------------------------------------

def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(side: int = 60000) -> bytes:
    """A tiny PNG whose header declares side x side pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def good_rgb(seed: int, size=(20, 14)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8))


def gif_bytes() -> bytes:
    frames = [good_rgb(i).convert("P") for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


def as_bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


VALID = {  # odd but real images: they must invert (exit 0)
    "cmyk.jpg": lambda: as_bytes(good_rgb(1).convert("CMYK"), "JPEG"),
    "gray16.png": lambda: png_bytes(Image.fromarray(
        (np.arange(200, dtype=np.uint16).reshape(10, 20) * 300))),
    "one.png": lambda: png_bytes(Image.new("RGB", (1, 1), (200, 10, 10))),
    "anim.gif": gif_bytes,
    "rgba.png": lambda: png_bytes(good_rgb(2).convert("RGBA")),
    "palette.png": lambda: png_bytes(good_rgb(3).convert("P")),
}


@st.composite
def broken_file(draw):
    kind = draw(st.sampled_from(["random", "truncated_png", "truncated_jpeg", "empty", "bomb",
                                 "text"]))
    if kind == "random":
        return kind, draw(st.binary(min_size=1, max_size=2000))
    if kind == "truncated_png":
        data = png_bytes(good_rgb(draw(st.integers(0, 9))))
        return kind, data[:draw(st.integers(1, len(data) - 13))]  # at least IEND is gone
    if kind == "truncated_jpeg":
        data = as_bytes(good_rgb(draw(st.integers(0, 9)), (64, 64)), "JPEG")
        return kind, data[:draw(st.integers(1, len(data) // 2))]
    if kind == "bomb":
        return kind, bomb_png()
    if kind == "text":
        return kind, draw(st.text(min_size=1, max_size=200)).encode()
    return kind, b""


@FUZZ
@given(case=broken_file(), suffix=st.sampled_from([".png", ".jpg", ".gif", ".webp", ""]))
def test_invert_broken_files(tiny_bundle, tmp_path_factory, capsys, case, suffix):
    kind, data = case
    work = tmp_path_factory.mktemp("broken")
    path = work / f"input{suffix}"
    path.write_bytes(data)
    code, out, err = cli(capsys, ["invert", path, "--outdir", work / "out", "--model",
                                  tiny_bundle, "-q"])
    if code == 0:  # random bytes can, rarely, be a real image; then it must have worked
        assert (work / "out" / "input.recon.png").exists(), kind
    else:
        assert code == 1, (kind, err)
        assert err.splitlines()[0].startswith(f"error: {path}: "), err
        assert len(err.splitlines()) == 2 and "Traceback" not in err
        assert not (work / "out").exists()
    no_partial_files(work / "out")


@pytest.mark.parametrize("name", sorted(VALID))
def test_invert_odd_but_valid_images(tiny_bundle, tmp_path, capsys, name):
    path = tmp_path / name
    path.write_bytes(VALID[name]())
    code, out, err = cli(capsys, ["invert", path, "--outdir", tmp_path / "out", "--model",
                                  tiny_bundle, "--json"])
    assert code == 0, err
    rec = json.loads(out)
    assert Path(rec["recon"]).exists() and np.load(rec["z"]).shape == (16,)


def test_a_folder_where_a_file_is_expected(tiny_bundle, tmp_path, capsys):
    (tmp_path / "empty_dir").mkdir()
    code, _, err = cli(capsys, ["invert", tmp_path / "empty_dir", "--outdir", tmp_path / "o",
                                "--model", tiny_bundle])
    assert_clean_failure(code, err, (2,))  # a folder with no images: nothing to invert
    code, _, err = cli(capsys, ["interpolate", tmp_path / "empty_dir", tmp_path / "empty_dir",
                                "--model", tiny_bundle, "--out", tmp_path / "x.png"])
    assert_clean_failure(code, err, (2,))
    assert not (tmp_path / "x.png").exists()


# --- model folders -------------------------------------------------------------------

@st.composite
def damaged_bundle(draw):
    return (draw(st.sampled_from(["flip", "truncate", "delete", "garbage_manifest",
                                  "foreign_onnx", "swap_graphs", "extra_field"])),
            draw(st.sampled_from(["generator.onnx", "encoder.onnx", "invert_grad.onnx",
                                  "autoencoder.onnx"])),
            draw(st.integers(0, 10**6)))


def foreign_onnx() -> bytes:
    """A valid ONNX model that is not a began graph (an Identity on 'x')."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["b", 16])
    y = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["b", 16])
    g = helper.make_graph([helper.make_node("Identity", ["z"], ["image"])], "foreign", [x], [y])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


@fuzz(60)
@given(case=damaged_bundle())
def test_damaged_model_folders(tiny_bundle, tmp_path_factory, capsys, image_folder, case):
    from began.bundle import sha256_file

    how, name, where = case
    work = tmp_path_factory.mktemp("model")
    model = work / "m"
    shutil.copytree(tiny_bundle, model)
    target = model / name
    manifest = json.loads((model / "manifest.json").read_text())
    if how == "flip":
        raw = bytearray(target.read_bytes())
        raw[where % len(raw)] ^= 0xFF
        target.write_bytes(bytes(raw))
    elif how == "truncate":
        target.write_bytes(target.read_bytes()[:where % target.stat().st_size])
    elif how == "delete":
        target.unlink()
    elif how == "garbage_manifest":
        (model / "manifest.json").write_bytes(bytes(where % 251 for _ in range(50)))
    elif how in ("foreign_onnx", "swap_graphs"):  # a forged manifest with matching sha256
        if how == "foreign_onnx":
            target.write_bytes(foreign_onnx())
        else:
            other = "decoder.onnx" if name != "decoder.onnx" else "generator.onnx"
            target.write_bytes((model / other).read_bytes())
        manifest["files"][name]["sha256"] = sha256_file(target)
        (model / "manifest.json").write_text(json.dumps(manifest))
    else:
        manifest["files"][name]["sha256"] = "0" * 64
        (model / "manifest.json").write_text(json.dumps(manifest))
    image = sorted(image_folder.iterdir())[0]
    out = work / "out"
    uses = {"generator.onnx": ["sample", "-n", 2, "--out", work / "g.png"],
            "encoder.onnx": ["invert", image, "--outdir", out],
            "invert_grad.onnx": ["invert", image, "--outdir", out, "--refine", 2],
            "autoencoder.onnx": ["interpolate", "--seeds", "1,2", "--space", "d", "--out",
                                 work / "i.png"]}
    # A file that fails its sha256 breaks every command (the whole bundle is checked on
    # load); a forged manifest is caught when the graph it names is opened.
    commands = [uses[name]] if how in ("foreign_onnx", "swap_graphs") else uses.values()
    for args in commands:
        code, _, err = cli(capsys, [*args, "--model", model, "-q"])
        assert_clean_failure(code, err, (1,))
    assert not (work / "g.png").exists() and not (work / "i.png").exists()
    assert not out.exists() or not list(out.iterdir())


# --- training data folders ----------------------------------------------------------

@fuzz(20)
@given(broken=st.lists(broken_file(), min_size=0, max_size=4), good=st.integers(0, 3))
def test_training_data_folders(image_folder, tmp_path_factory, capsys, broken, good):
    work = tmp_path_factory.mktemp("data")
    data = work / "data"
    data.mkdir()
    for i, (_, raw) in enumerate(broken):
        (data / f"bad{i}.png").write_bytes(raw)
    for p in sorted(image_folder.iterdir())[:good]:
        shutil.copy(p, data / p.name)
    code, _, err = cli(capsys, ["train", data, "--out", work / "run", "--preset", "smoke",
                                "--device", "cpu", "--steps", 1, "--no-progress"])
    report = work / "run" / "data.json"
    if good:
        assert code == 0, err
        r = json.loads(report.read_text())
        # A random byte string can, rarely, be a real image: count what was kept.
        assert r["count"] >= good and r["count"] + r["n_skipped"] == good + len(broken)
    else:
        ok_by_chance = code == 0 and json.loads(report.read_text())["count"] > 0
        if not ok_by_chance:
            assert_clean_failure(code, err, (1,))
            assert not (work / "run" / "checkpoints").exists()


# --- began export ---------------------------------------------------------------------

@st.composite
def damaged_run(draw):
    return (draw(st.sampled_from(["no_config", "flip_ckpt", "truncate_ckpt", "no_ckpts",
                                  "bad_step", "file_not_run"])),
            draw(st.integers(-3, 10**6)))


@fuzz(30)
@given(case=damaged_run())
def test_export_of_damaged_runs(tiny_run, tmp_path_factory, capsys, case):
    how, n = case
    work = tmp_path_factory.mktemp("export")
    run_dir = work / "run"
    shutil.copytree(tiny_run, run_dir)
    ckpt = run_dir / "checkpoints" / "ckpt-00000020.safetensors"
    step = []
    if how == "no_config":
        (run_dir / "config.json").unlink()
    elif how == "flip_ckpt":
        raw = bytearray(ckpt.read_bytes())
        raw[n % len(raw)] ^= 0x5A
        ckpt.write_bytes(bytes(raw))
    elif how == "truncate_ckpt":
        ckpt.write_bytes(ckpt.read_bytes()[:n % ckpt.stat().st_size])
    elif how == "no_ckpts":
        shutil.rmtree(run_dir / "checkpoints")
    elif how == "bad_step":
        step = ["--step", n if n not in (10, 20) else n + 1]
    else:
        run_dir = work / "afile"
        run_dir.write_text("not a run")
    out = work / "model"
    code, _, err = cli(capsys, ["export", run_dir, "--out", out, "--fit-steps", 1, "-q",
                                *step])
    if how == "flip_ckpt" and code == 0:
        raise AssertionError("a flipped byte must fail the checksum")
    assert_clean_failure(code, err, (1, 2))
    assert not out.exists() and not list(work.glob(".model.*"))


def test_export_trusts_the_checkpoint_not_config_json(tiny_run, tmp_path, capsys):
    """config.json only marks a run folder; the exported config is the checkpoint's own,
    which its sha256 covers, so garbage in config.json does not change the bundle."""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    (run_dir / "config.json").write_bytes(b"\x00garbage{")
    code, out, err = cli(capsys, ["export", run_dir, "--out", tmp_path / "m", "--fit-steps", 1,
                                  "--no-fp16", "--json", "-q"])
    assert code == 0, err
    assert json.loads(out)["model"]["resolution"] == 16
