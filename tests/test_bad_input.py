"""Property-based tests (hypothesis): whatever a user passes, the CLI ends with a
documented exit code, errors are one `error:` line plus a `hint:` (no traceback),
and nothing half-written is left. Run with --hypothesis-show-statistics to see
how many cases were tried."""

import io
import json
import os
import shutil
import struct
import subprocess
import sys
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
        if p.suffix == ".png" and p.is_file():  # a test's own FIFO is not opened
            with Image.open(p) as im:
                im.load()


# --- arguments -------------------------------------------------------------------

VALUES = st.one_of(st.integers(-5, 40).map(str), st.sampled_from(
    ["", "-", "0-3", "3-0", "1,2,x", "abc", "1e3", "nan", "-1", "0.5", "2.5", "png", "tiff",
     "npy", "gif", "cuda", "cpu", "auto", "fp16", "fp64", "slerp", "d", "x" * 300,
     "sub/dir/grid.png", "/dev/null/x", "a\x00b"]))
SAMPLE_FLAGS = ["-n", "--seed", "--seeds", "--nrow", "--truncation", "--batch-size",
                "--format", "--device", "--precision", "--out", "--outdir"]
SWITCHES = ["--json", "-q", "-v", "--overwrite", "--no-clobber", "--skip-existing", "--bogus"]


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
    # A folder with no images is a problem of the files named, as a missing file is: exit 1
    # in every verb (the README's error model), not a usage error.
    assert_clean_failure(code, err, (1,))
    code, _, err = cli(capsys, ["interpolate", tmp_path / "empty_dir", tmp_path / "empty_dir",
                                "--model", tiny_bundle, "--out", tmp_path / "x.png"])
    assert_clean_failure(code, err, (1,))
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
    # A missing file or one of the wrong size breaks every command (checked on load). One
    # that fails its sha256 breaks `info` and every command but sample, which hashes only
    # the generator it runs (Model.open's graphs); a forged manifest is caught when the
    # graph it names is opened.
    if how in ("foreign_onnx", "swap_graphs"):
        commands = [uses[name]]
    elif how in ("flip", "extra_field"):
        commands = [["info"], *(a for n, a in uses.items()
                                if n == name or n != "generator.onnx")]
    else:
        commands = [*uses.values(), ["info"]]
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



# --- hostile bundles: fields, files, graphs ------------------------------------------

BAD_VALUES = [None, "x", "", -1, 0, 1.5, 2**40, 10**400 // 10**390, True, [], {}, [1, 2],
              {"a": 1}, "16", 1e308, -0.0]
FIELDS = [("model", "resolution"), ("model", "z_dim"), ("model", "h_dim"), ("model", "n"),
          ("model", "repeat"), ("model", "skip"), ("model",), ("format_version",),
          ("image", "channels"), ("image",), ("training", "gamma"), ("training", "k"),
          ("training", "step"), ("training", "data", "crop"), ("training", "data", "background"),
          ("training", "data", "resample"), ("training", "data"), ("training",),
          ("encoder", "kind"), ("encoder", "metrics", "z_l1"), ("encoder", "metrics"),
          ("files", "generator.onnx", "bytes"), ("files", "generator.onnx", "sha256"),
          ("files", "generator.onnx", "precision"), ("files", "generator.onnx"), ("files",),
          ("graphs", "generator", "inputs"), ("graphs", "generator"), ("graphs",),
          ("inversion_reference",), ("inversion_reference", "l1"),
          ("inversion_reference", "l1", "p99")]


def set_field(manifest: dict, path: tuple, value) -> None:
    d = manifest
    for key in path[:-1]:
        d = d[key]
    d[path[-1]] = value


@fuzz(80)
@given(field=st.sampled_from(FIELDS), value=st.sampled_from(BAD_VALUES),
       verb=st.sampled_from(["info", "sample", "invert", "score"]))
def test_manifest_fields_are_validated(tiny_bundle, tmp_path_factory, capsys, image_folder,
                                       field, value, verb):
    """Any value in any field the CLI reads: the command works (the value was valid) or
    fails with exit 1 and one error + hint, never an `unexpected` error or a traceback."""
    work = tmp_path_factory.mktemp("manifest")
    model = work / "m"
    shutil.copytree(tiny_bundle, model)
    manifest = json.loads((model / "manifest.json").read_text())
    set_field(manifest, field, value)
    (model / "manifest.json").write_text(json.dumps(manifest))
    args = {"info": ["info"], "sample": ["sample", "-n", 2, "--out", work / "g.png"],
            "invert": ["invert", sorted(image_folder.iterdir())[0], "--outdir", work / "o"],
            "score": ["score", "--data", image_folder, "-n", 4, "--max-images", 4]}[verb]
    code, out, err = cli(capsys, [*args, "--model", model, "-q"])
    if code != 0:
        assert_clean_failure(code, err, (1,))
        assert "manifest" in err or "does not match" in err or "declares" in err, err
        assert not (work / "g.png").exists() and not (work / "o").exists()


def test_a_huge_inversion_reference_cannot_silence_the_warning(tiny_bundle, tmp_path, capsys,
                                                                image_folder):
    """invert's out-of-domain warning divides by the manifest's l1.p99: 1e308 would turn it
    off for every image, so such a bundle is refused as damaged (issue 23)."""
    model = tmp_path / "m"
    shutil.copytree(tiny_bundle, model)
    write_manifest(model, lambda m: m["inversion_reference"]["l1"].__setitem__("p99", 1e308))
    code, out, err = cli(capsys, ["invert", sorted(image_folder.iterdir())[0], "--outdir",
                                  tmp_path / "o", "--model", model, "-q"])
    assert_clean_failure(code, err, (1,))
    assert "inversion_reference.l1.p99 must be a number in [0, 2]" in err
    assert not (tmp_path / "o").exists()


def write_manifest(model: Path, change) -> None:
    manifest = json.loads((model / "manifest.json").read_text())
    change(manifest)
    (model / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("key,value", [("z_dim", 17), ("h_dim", 8), ("resolution", 32)])
def test_manifest_that_disagrees_with_its_graphs(tiny_bundle, tmp_path, capsys, key, value):
    """The sha256s all match, but the manifest's shape is not the graphs': refused when a
    graph opens, with both shapes named, before anything is computed or written."""
    model = tmp_path / "m"
    shutil.copytree(tiny_bundle, model)
    write_manifest(model, lambda m: m["model"].__setitem__(key, value))
    args = (["interpolate", "--seeds", "1,2", "--space", "d", "--out", tmp_path / "g.png"]
            if key == "h_dim" else ["sample", "-n", 2, "--out", tmp_path / "g.png"])
    code, out, err = cli(capsys, [*args, "--model", model, "-q"])
    assert_clean_failure(code, err, (1,))
    assert "declares" in err and "manifest implies" in err, err
    assert not (tmp_path / "g.png").exists()


def began_graph(out_side: int, declared_side: int | None = None, z_dim: int = 16) -> bytes:
    """A 'generator' that makes out_side x out_side images from z (B, z_dim), with the
    began metadata and names, declaring declared_side (default: the true one)."""
    from onnx import TensorProto, helper

    declared = declared_side or out_side
    x = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", z_dim])
    y = helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                      ["batch", 3, declared, declared])
    reps = 3 * out_side * out_side // z_dim + 1
    nodes = [helper.make_node("Tile", ["z", "reps"], ["t"]),
             helper.make_node("Slice", ["t", "start", "end", "axis"], ["s"]),
             helper.make_node("Reshape", ["s", "shape"], ["image"])]
    inits = [helper.make_tensor("reps", TensorProto.INT64, [2], [1, reps]),
             helper.make_tensor("start", TensorProto.INT64, [1], [0]),
             helper.make_tensor("end", TensorProto.INT64, [1], [3 * out_side * out_side]),
             helper.make_tensor("axis", TensorProto.INT64, [1], [1]),
             helper.make_tensor("shape", TensorProto.INT64, [4], [-1, 3, out_side, out_side])]
    g = helper.make_graph(nodes, "g", [x], [y], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    helper.set_model_props(m, {"began.graph": "generator"})
    return m.SerializeToString()


@pytest.mark.parametrize("out_side,declared", [(64, None), (64, 16), (16, None)])
def test_generator_larger_than_its_manifest_is_refused(tiny_bundle, tmp_path, capsys,
                                                       out_side, declared):
    """A generator whose output is bigger than the manifest's 16x16 (declared so, or
    declared 16x16 and computing more) is refused; one that matches is used."""
    from began.bundle import sha256_file

    model = tmp_path / "m"
    shutil.copytree(tiny_bundle, model)
    (model / "generator.onnx").write_bytes(began_graph(out_side, declared))

    def forge(m):
        m["files"]["generator.onnx"].update(sha256=sha256_file(model / "generator.onnx"),
                                            bytes=(model / "generator.onnx").stat().st_size)
    write_manifest(model, forge)
    code, out, err = cli(capsys, ["sample", "-n", 3, "--outdir", tmp_path / "o", "--model",
                                  model, "-q", "--device", "cpu"])
    if out_side == 16:
        assert code == 0, err
        assert len(list((tmp_path / "o").iterdir())) == 3
        return
    assert_clean_failure(code, err, (1,))
    assert "generator" in err and ("declares" in err or "returned" in err), err
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def run_began(args, timeout=120, **kw) -> subprocess.CompletedProcess:
    """`python -m began ARGS` in a subprocess: a hang fails the test instead of the run."""
    return subprocess.run([sys.executable, "-m", "began", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, **kw)


def one_error(p: subprocess.CompletedProcess, code: int = 1) -> str:
    assert p.returncode == code, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr and "unexpected" not in p.stderr, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if not ln.startswith("provider: ")]
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith(
        "hint: "), p.stderr
    return lines[0]


@pytest.mark.parametrize("how", ["manifest_to_dev_zero", "graph_fifo", "graph_link_outside",
                                 "graph_sparse_10g", "manifest_fifo", "manifest_huge",
                                 "graph_is_folder", "manifest_link_loop"])
def test_bundle_files_must_be_regular_files_inside(tiny_bundle, tmp_path, how):
    """Symlinks out of the bundle, FIFOs, devices and huge files are refused at once: no
    hang (a subprocess with a timeout), no reading of gigabytes (the size is checked
    before hashing: the error names the size)."""
    model = tmp_path / "m"
    shutil.copytree(tiny_bundle, model)
    gen, man = model / "generator.onnx", model / "manifest.json"
    if how == "manifest_to_dev_zero":
        man.unlink()
        man.symlink_to("/dev/zero")
    elif how == "graph_fifo":
        gen.unlink()
        os.mkfifo(gen)
    elif how == "graph_link_outside":
        outside = tmp_path / "elsewhere.onnx"
        gen.rename(outside)
        gen.symlink_to(outside)
    elif how == "graph_sparse_10g":
        gen.unlink()
        with open(gen, "wb") as f:
            f.truncate(10 << 30)
    elif how == "manifest_fifo":
        man.unlink()
        os.mkfifo(man)
    elif how == "manifest_huge":
        with open(man, "ab") as f:
            f.write(b" " * (2 << 20))
    elif how == "graph_is_folder":
        gen.unlink()
        gen.mkdir()
    else:
        man.unlink()
        man.symlink_to(man)
    for args in (["info"], ["sample", "-n", 2, "--out", tmp_path / "g.png"]):
        p = run_began([*args, "--model", model, "-q"], timeout=60)
        msg = one_error(p)
        assert {"manifest_to_dev_zero": "outside the model folder", "graph_fifo": "FIFO",
                "graph_link_outside": "outside the model folder",
                "graph_sparse_10g": "10,737,418,240 bytes", "manifest_fifo": "FIFO",
                "manifest_huge": "bytes, more than", "graph_is_folder": "a folder",
                "manifest_link_loop": "cannot be opened"}[how] in msg, msg
    assert not (tmp_path / "g.png").exists()


def test_a_symlink_inside_the_bundle_is_fine(tiny_bundle, tmp_path, capsys):
    model = tmp_path / "m"
    shutil.copytree(tiny_bundle, model)
    (model / "generator.onnx").rename(model / "real-generator.onnx")
    (model / "generator.onnx").symlink_to("real-generator.onnx")
    code, _, err = cli(capsys, ["sample", "-n", 2, "--out", tmp_path / "g.png", "-m", model])
    assert code == 0, err


# --- hostile inputs: FIFOs, devices, endless stdin --------------------------------------

@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "link_to_dev_zero"])
@pytest.mark.parametrize("verb", ["invert", "interpolate"])
def test_fifo_and_device_inputs_are_refused_not_waited_on(tiny_bundle, tmp_path, kind, verb):
    special = tmp_path / "in.png"
    if kind == "fifo":
        os.mkfifo(special)
    elif kind == "dev_zero":
        special = Path("/dev/zero")
    else:
        special.symlink_to("/dev/zero")
    args = (["invert", special, "--outdir", tmp_path / "o"] if verb == "invert" else
            ["interpolate", special, special, "--out", tmp_path / "i.png"])
    p = run_began([*args, "--model", tiny_bundle, "-q"], timeout=60)
    msg = one_error(p)
    assert ("FIFO" if kind == "fifo" else "device") in msg, msg
    assert not (tmp_path / "o").exists() and not (tmp_path / "i.png").exists()


def test_endless_stdin_is_refused_with_a_bound(tiny_bundle, tmp_path):
    """/dev/zero on stdin: refused after MAX_IMAGE_BYTES, not read until memory runs out."""
    from began.inputs import MAX_IMAGE_BYTES

    with open("/dev/zero", "rb") as zero:
        p = run_began(["invert", "-", "--outdir", tmp_path / "o", "--model", tiny_bundle, "-q"],
                      timeout=120, stdin=zero)
    msg = one_error(p)
    assert f"more than {MAX_IMAGE_BYTES >> 20} MB" in msg
    assert not (tmp_path / "o").exists()


def test_stdin_bound_and_empty_stdin(tiny_bundle, image_folder, tmp_path, monkeypatch, capsys):
    import began.inputs

    data = sorted(image_folder.iterdir())[0].read_bytes()
    monkeypatch.setattr(began.inputs, "MAX_IMAGE_BYTES", len(data) - 1)
    for payload, words in ((data, "too large"), (b"", "empty")):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(payload)))
        code, _, err = cli(capsys, ["invert", "-", "--outdir", tmp_path / "o", "-m",
                                    tiny_bundle, "-q"])
        assert_clean_failure(code, err, (1,))
        assert words in err
    monkeypatch.setattr(began.inputs, "MAX_IMAGE_BYTES", len(data))  # at the bound: read
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, _, err = cli(capsys, ["invert", "-", "--outdir", tmp_path / "o", "-m", tiny_bundle])
    assert code == 0, err
    assert (tmp_path / "o" / "stdin.z.npy").exists()


# --- arguments of the other verbs --------------------------------------------------------

VERB_FLAGS = {
    "interpolate": ["--seeds", "--steps", "--method", "--space", "--refine", "--out", "--outdir",
                    "--nrow", "--frame-ms", "--device", "--precision", "--scale", "--resample"],
    "invert": ["--outdir", "--refine", "--lr", "--batch-size", "--device", "--precision",
               "--scale"],
    "score": ["--data", "-n", "--max-images", "--batch-size", "--device", "--precision"],
    "info": ["--device"],
}
MORE_VALUES = st.one_of(VALUES, st.sampled_from(
    ["{img}", "{img2}", "{dir}", "{fifo}", "/dev/zero", "700000", "4294967296", "1e30", "x.gif",
     "x.webp", "lerp", "g", "65536", "0-20000"]))


@st.composite
def verb_args(draw):
    verb = draw(st.sampled_from(sorted(VERB_FLAGS)))
    args = [verb] + draw(st.lists(st.sampled_from(["{img}", "{img2}", "{dir}", "{fifo}", "-"]),
                                  max_size=3 if verb in ("invert", "interpolate") else 0))
    for _ in range(draw(st.integers(0, 4))):
        flag = draw(st.sampled_from(VERB_FLAGS[verb] + SWITCHES))
        args.append(flag)
        if flag not in SWITCHES:
            args.append(draw(MORE_VALUES))
    return args


@fuzz(60)
@given(args=verb_args())
def test_other_verbs_arguments(tiny_bundle, image_folder, tmp_path_factory, capsys,
                               monkeypatch, args):
    """Random command lines for interpolate, invert, score and info (images, folders, a FIFO,
    stdin, out-of-range numbers): a documented exit code, a clean error, no half-written file,
    and never a wait on a FIFO (it is refused before it is opened)."""
    work = tmp_path_factory.mktemp("verbs")
    monkeypatch.chdir(work)
    images = sorted(image_folder.iterdir())
    fifo = work / "pipe.png"
    os.mkfifo(fifo)
    names = {"img": images[0], "img2": images[1], "dir": image_folder, "fifo": fifo}
    args = [a.format(**names) for a in args]
    if "-" in args[1:] or "--out" in args and args[args.index("--out") + 1:][:1] == ["-"]:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(images[2].read_bytes())))
        args.append("--json")  # never binary onto the test's stdout: must be refused
    code, out, err = cli(capsys, [*args, "--model", tiny_bundle])
    if code == 0:
        assert "error:" not in err
    else:
        assert code in (1, 2, 3), (code, err)
        assert "Traceback" not in err and "unexpected" not in err, err
        lines = [ln for ln in err.splitlines() if not ln.startswith(("provider: ", "failed: ",
                                                                      "warning: "))]
        assert lines[-2].startswith("error: ") and lines[-1].startswith("hint: "), err
    no_partial_files(work)
