"""Tests for began.train.data: decoding, geometry, skipping, caching (workers: test_pool.py)."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from began.train import pool
from began.train.data import (
    ImageSet,
    NoImagesError,
    Preprocess,
    Skipped,
    decode_image,
    default_cache_dir,
    load_image_folder,
)
from PIL import Image, UnidentifiedImageError

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def px(arr: np.ndarray, y: int = 0, x: int = 0) -> tuple[int, ...]:
    return tuple(int(v) for v in arr[y, x])


def save(img: Image.Image, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def solid(path: Path, colour, size=(8, 8), mode="RGB") -> Path:
    return save(Image.new(mode, size, colour), path)


def load(root: Path, tmp_path: Path, pre: Preprocess | None = None, **kw) -> ImageSet:
    kw.setdefault("progress", False)
    return load_image_folder(root, pre or Preprocess(8), cache_dir=tmp_path / "cache", **kw)


def forbid_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a, **k):
        raise AssertionError("decode_image must not be called")

    monkeypatch.setattr(pool, "decode_image", boom)  # what every decode goes through


# ----------------------------------------------------------------------------
# Preprocess
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, word", [
    ({"resolution": 0}, "resolution"),
    ({"resolution": 8, "crop": "zoom"}, "crop"),
    ({"resolution": 8, "resample": "cubic"}, "resample"),
    ({"resolution": 8, "background": "not-a-colour"}, "background"),
])
def test_preprocess_rejects_bad_values(kwargs, word):
    with pytest.raises(ValueError, match=word):
        Preprocess(**kwargs)


def test_preprocess_numpy_resolution_is_plain_int():
    pre = Preprocess(np.int64(16))
    assert type(pre.resolution) is int and pre == Preprocess(16)


def test_preprocess_accepts_colour_forms():
    for colour in ("white", "#10a0ff", "rgb(1,2,3)"):
        assert Preprocess(8, background=colour).background == colour


# ----------------------------------------------------------------------------
# Modes -> RGB
# ----------------------------------------------------------------------------


def test_rgba_half_transparent_red_over_white(tmp_path):
    p = solid(tmp_path / "a.png", (255, 0, 0, 128), mode="RGBA")
    out = decode_image(p, Preprocess(4))
    # c*a/255 + bg*(255-a)/255: R = 255, G = B = 255*127/255 = 127
    assert np.all(out == np.array([255, 127, 127], np.uint8))


@pytest.mark.parametrize("colour, rgb", [("black", (0, 0, 0)), ("#10a0ff", (16, 160, 255))])
def test_fully_transparent_becomes_background(tmp_path, colour, rgb):
    p = solid(tmp_path / "a.png", (200, 10, 10, 0), mode="RGBA")
    out = decode_image(p, Preprocess(4, background=colour))
    assert np.all(out == np.array(rgb, np.uint8))


def test_alpha_composite_matches_hand_formula(tmp_path):
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)
    p = save(Image.fromarray(rgba, "RGBA"), tmp_path / "r.png")
    bg = np.array([16, 160, 255])
    c, a = rgba[..., :3].astype(np.int64), rgba[..., 3:].astype(np.int64)
    expected = (c * a + bg * (255 - a) + 127) // 255  # round((c*a + bg*(255-a)) / 255)
    out = decode_image(p, Preprocess(16, background="#10a0ff"))  # same size: no resampling
    assert np.array_equal(out, expected.astype(np.uint8))


@pytest.mark.parametrize("fmt", ["png", "gif"])
def test_palette_with_transparency(tmp_path, fmt):
    img = Image.new("P", (8, 8), 0)
    img.putpalette([9, 9, 9, 0, 200, 0] + [0] * 762)
    img.paste(1, (4, 0, 8, 8))  # right half: palette index 1, green
    p = save(img, tmp_path / f"p.{fmt}", transparency=0)
    assert Image.open(p).mode == "P"
    out = decode_image(p, Preprocess(8, background="#10a0ff", resample="nearest"))
    assert px(out, 3, 1) == (16, 160, 255)  # transparent index -> background
    assert px(out, 3, 6) == (0, 200, 0)


def test_palette_without_transparency(tmp_path):
    img = Image.new("P", (8, 8), 1)
    img.putpalette([0, 0, 0, 30, 60, 90] + [0] * 762)
    out = decode_image(save(img, tmp_path / "p.png"), Preprocess(4))
    assert np.all(out == np.array([30, 60, 90], np.uint8))


def test_l_la_and_1_modes(tmp_path):
    pre = Preprocess(4, background="#10a0ff")
    assert np.all(decode_image(solid(tmp_path / "l.png", 77, mode="L"), pre) == 77)
    assert np.all(decode_image(solid(tmp_path / "la.png", (200, 255), mode="LA"), pre) == 200)
    la_clear = decode_image(solid(tmp_path / "la0.png", (200, 0), mode="LA"), pre)
    assert px(la_clear) == (16, 160, 255)
    assert np.all(decode_image(solid(tmp_path / "one.png", 1, mode="1"), pre) == 255)
    assert np.all(decode_image(solid(tmp_path / "zero.png", 0, mode="1"), pre) == 0)


def test_cmyk(tmp_path):
    p = solid(tmp_path / "c.tif", (0, 255, 255, 0), mode="CMYK")
    assert Image.open(p).mode == "CMYK"
    assert np.all(decode_image(p, Preprocess(4)) == np.array(RED, np.uint8))


def test_16bit_gray_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 1000], [32768, 65535]], dtype=np.uint16)
    p = save(Image.fromarray(values), tmp_path / "g16.png")
    assert Image.open(p).mode.startswith("I;16")
    out = decode_image(p, Preprocess(2, resample="nearest"))
    gray = out[..., 0]
    assert np.all(out == gray[..., None])  # still gray
    assert gray.tolist() == [[0, 4], [128, 255]]  # v / 257, rounded


def test_32bit_int_and_float_gray(tmp_path):
    ints = np.array([[0, 65535]], dtype=np.int32).repeat(2, 0)
    p = save(Image.fromarray(ints, "I"), tmp_path / "i.tif")
    assert Image.open(p).mode == "I"
    assert decode_image(p, Preprocess(2, resample="nearest"))[0, :, 0].tolist() == [0, 255]
    small = np.array([[3, 200]], dtype=np.int32).repeat(2, 0)  # max <= 255: taken as 0..255
    p = save(Image.fromarray(small, "I"), tmp_path / "i8.tif")
    assert decode_image(p, Preprocess(2, resample="nearest"))[0, :, 0].tolist() == [3, 200]
    floats = np.array([[0.0, 0.5]], dtype=np.float32).repeat(2, 0)  # float in 0..1
    p = save(Image.fromarray(floats, "F"), tmp_path / "f.tif")
    assert Image.open(p).mode == "F"
    assert decode_image(p, Preprocess(2, resample="nearest"))[0, :, 0].tolist() == [0, 128]


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in (RED, BLUE, (0, 255, 0))]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=50)
    assert Image.open(p).n_frames == 3
    assert np.all(decode_image(p, Preprocess(4)) == np.array(RED, np.uint8))


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20], arr[:, 20:] = RED, BLUE  # wide: red left, blue right
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    p = save(img, tmp_path / "o.jpg", exif=exif.tobytes(), quality=100, subsampling=0)
    out = decode_image(p, Preprocess(40, crop="pad", resample="nearest"))
    # Displayed upright it is 20 wide x 40 tall, red on top: pad adds white left/right.
    assert px(out, 0, 5) == WHITE and px(out, 0, 34) == WHITE
    assert np.abs(np.array(px(out, 5, 20)) - RED).max() <= 3
    assert np.abs(np.array(px(out, 34, 20)) - BLUE).max() <= 3


# ----------------------------------------------------------------------------
# Geometry and output
# ----------------------------------------------------------------------------


def half_red_blue(path: Path) -> Path:
    arr = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 tall
    arr[:, :20], arr[:, 20:] = RED, BLUE
    return save(Image.fromarray(arr), path)


def test_center_crop_keeps_the_middle(tmp_path):
    p = half_red_blue(tmp_path / "h.png")
    out = decode_image(p, Preprocess(20, crop="center", resample="nearest"))
    # Columns 10..29 of the source: red on the left half, blue on the right, no padding.
    assert np.all(out[:, :10] == np.array(RED, np.uint8))
    assert np.all(out[:, 10:] == np.array(BLUE, np.uint8))


def test_pad_adds_background_bands_top_and_bottom(tmp_path):
    p = half_red_blue(tmp_path / "h.png")
    out = decode_image(p, Preprocess(40, crop="pad", background="black", resample="nearest"))
    assert np.all(out[:10] == 0) and np.all(out[30:] == 0)  # bands of (40-20)/2 rows
    assert np.all(out[10:30, :20] == np.array(RED, np.uint8))
    assert np.all(out[10:30, 20:] == np.array(BLUE, np.uint8))


@pytest.mark.parametrize("resample", ["lanczos", "bicubic", "bilinear", "box", "nearest"])
@pytest.mark.parametrize("size", [(7, 7), (50, 30)])
def test_output_and_constant_colour_is_exact(tmp_path, resample, size):
    p = solid(tmp_path / "c.png", (10, 160, 255), size=size)
    out = decode_image(p, Preprocess(16, resample=resample))
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert np.all(out == np.array([10, 160, 255], np.uint8))


def test_decode_image_raises_on_failure(tmp_path):
    p = tmp_path / "x.png"
    p.write_text("hello")
    with pytest.raises(UnidentifiedImageError):
        decode_image(p, Preprocess(8))


# ----------------------------------------------------------------------------
# Folders: candidates and skips
# ----------------------------------------------------------------------------


def make_messy_folder(root: Path) -> None:
    solid(root / "a.png", RED)
    solid(root / "b.jpg", BLUE)
    save(Image.new("RGB", (8, 8), (0, 255, 0)), root / "sub" / "deep" / "c.webp", lossless=True)
    (root / "empty.png").write_bytes(b"")
    (root / "fake.jpg").write_text("I am not a JPEG")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(
        buf, "PNG")
    (root / "trunc.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "notes.txt").write_text("some notes")
    solid(root / ".hidden.png", RED)
    solid(root / ".git" / "x.png", RED)  # hidden folder


def test_messy_folder_keeps_good_and_skips_bad(tmp_path):
    root = tmp_path / "imgs"
    make_messy_folder(root)
    s = load(root, tmp_path)
    assert s.files == ["a.png", "b.jpg", "sub/deep/c.webp"]
    assert s.images.shape == (3, 8, 8, 3)
    assert px(s.images[0]) == RED and px(s.images[2]) == (0, 255, 0)
    reasons = {k.path: k.reason for k in s.skipped}
    assert set(reasons) == {"empty.png", "fake.jpg", "trunc.png", "notes.txt"}
    assert all(isinstance(r, str) and r for r in reasons.values())
    assert reasons["empty.png"] == "empty file"
    assert reasons["fake.jpg"].startswith("not an image")
    assert reasons["trunc.png"] == "truncated image"
    assert all(isinstance(k, Skipped) for k in s.skipped)


@pytest.mark.parametrize("limit", [1000, 6000])  # error (> 2x limit) and warning paths
def test_decompression_bomb_is_skipped(tmp_path, monkeypatch, limit):
    root = tmp_path / "imgs"
    solid(root / "big.png", RED, size=(100, 100))
    solid(root / "small.png", BLUE, size=(10, 10))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    s = load(root, tmp_path, workers=1)
    assert s.files == ["small.png"]
    assert s.skipped == [Skipped("big.png", "too large (decompression bomb)")]


def test_empty_folder_raises(tmp_path):
    (tmp_path / "imgs").mkdir()
    solid(tmp_path / "imgs" / ".only-hidden.png", RED)
    with pytest.raises(NoImagesError, match="imgs"):
        load(tmp_path / "imgs", tmp_path)


def test_only_broken_files_raises_and_writes_no_cache(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    (root / "a.png").write_bytes(b"")
    (root / "b.png").write_bytes(b"")
    (root / "c.txt").write_text("x")
    with pytest.raises(NoImagesError) as exc:
        load(root, tmp_path)
    msg = str(exc.value)
    assert str(root) in msg and "3" in msg and "2x empty file" in msg
    assert isinstance(exc.value, ValueError)
    assert not list((tmp_path / "cache").glob("*"))  # neither data nor temp files


def test_missing_root_and_file_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        load(tmp_path / "nope", tmp_path)
    f = solid(tmp_path / "a.png", RED)
    with pytest.raises(NotADirectoryError):
        load(f, tmp_path)


def test_symlink_loop_does_not_hang(tmp_path):
    root = tmp_path / "imgs"
    solid(root / "sub" / "a.png", RED)
    try:
        os.symlink(root, root / "sub" / "loop", target_is_directory=True)
    except (OSError, NotImplementedError):
        pytest.skip("symlinks not available")
    s = load(root, tmp_path)
    assert s.files[0] == "sub/a.png" and len(s.files) <= 2  # at most once via the link


def test_cache_dir_inside_root_is_ignored(tmp_path):
    root = tmp_path / "imgs"
    solid(root / "a.png", RED)
    first = load_image_folder(root, Preprocess(8), cache_dir=root / "cache", progress=False)
    second = load_image_folder(root, Preprocess(8), cache_dir=root / "cache", progress=False)
    assert second.from_cache and first.key == second.key and second.files == ["a.png"]


# ----------------------------------------------------------------------------
# Cache
# ----------------------------------------------------------------------------


def small_folder(root: Path, n: int = 3) -> Path:
    for i in range(n):
        solid(root / f"{i:03d}.png", (i * 40 % 256, 100, 200 - i))
    return root


def test_second_load_comes_from_cache_without_decoding(tmp_path, monkeypatch):
    root = small_folder(tmp_path / "imgs")
    first = load(root, tmp_path)
    assert not first.from_cache
    assert first.cache_path == tmp_path / "cache" / f"{first.key}.u8"
    assert first.cache_path.stat().st_size == 3 * 8 * 8 * 3
    forbid_decoding(monkeypatch)
    second = load(root, tmp_path)
    assert second.from_cache and second.key == first.key
    assert second.files == first.files and second.skipped == first.skipped
    assert np.array_equal(np.asarray(second.images), np.asarray(first.images))
    assert second.images.dtype == np.uint8 and second.images.flags.c_contiguous
    assert not second.images.flags.writeable
    meta = json.loads(first.cache_path.with_suffix(".json").read_text())
    assert meta["shape"] == [3, 8, 8, 3] and meta["files"] == first.files


def test_cache_key_changes(tmp_path):
    root = small_folder(tmp_path / "imgs")
    key = load(root, tmp_path).key
    assert load(root, tmp_path).key == key
    # touching a file
    f = root / "001.png"
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    s = load(root, tmp_path)
    assert s.key != key and not s.from_cache
    key = s.key
    # adding a file
    solid(root / "new.png", RED)
    s = load(root, tmp_path)
    assert s.key != key and len(s.files) == 4
    # removing it again gives back the old key (and its cache)
    (root / "new.png").unlink()
    assert load(root, tmp_path).key == key and load(root, tmp_path).from_cache
    # any Preprocess field
    base = Preprocess(8)
    keys = {load(root, tmp_path, p).key for p in (
        base, Preprocess(9), Preprocess(8, crop="pad"), Preprocess(8, background="black"),
        Preprocess(8, resample="box"))}
    assert len(keys) == 5 and key in keys


@pytest.mark.parametrize("damage", ["truncate_u8", "garbage_json", "missing_u8", "bad_shape"])
def test_corrupted_cache_is_rebuilt(tmp_path, damage):
    root = small_folder(tmp_path / "imgs")
    first = load(root, tmp_path)
    expected = np.array(first.images)
    del first  # drop the memmap before damaging its file
    u8 = tmp_path / "cache" / f"{load(root, tmp_path).key}.u8"
    meta = u8.with_suffix(".json")
    if damage == "truncate_u8":
        u8.write_bytes(u8.read_bytes()[:100])
    elif damage == "garbage_json":
        meta.write_text("{not json")
    elif damage == "missing_u8":
        u8.unlink()
    else:
        m = json.loads(meta.read_text())
        m["shape"] = [3, 8, 8, 4]
        meta.write_text(json.dumps(m))
    again = load(root, tmp_path)
    assert not again.from_cache
    assert np.array_equal(np.asarray(again.images), expected)
    assert load(root, tmp_path).from_cache  # and the rebuilt cache is valid


def test_cache_holds_no_pickle(tmp_path):
    root = small_folder(tmp_path / "imgs")
    s = load(root, tmp_path)
    names = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert names == [f"{s.key}.json", f"{s.key}.u8"]  # no temp files left behind
    raw = np.fromfile(s.cache_path, dtype=np.uint8).reshape(s.images.shape)
    assert np.array_equal(raw, np.asarray(s.images))


def test_report_is_json_able(tmp_path):
    root = tmp_path / "imgs"
    make_messy_folder(root)
    rep = load(root, tmp_path, Preprocess(8, background="black")).report()
    rep = json.loads(json.dumps(rep))
    assert rep["count"] == 3 and rep["n_skipped"] == 4 and rep["resolution"] == 8
    assert rep["root"] == str(root.resolve())
    assert rep["preprocess"] == {"resolution": 8, "crop": "center", "background": "black",
                                 "resample": "lanczos", "grey": False}
    assert {"path": "notes.txt", "reason": "not an image (cannot identify image file)"} \
        in rep["skipped"]
    assert len(rep["key"]) == 64


def test_progress_never_prints_to_stdout(tmp_path, capsys):
    root = small_folder(tmp_path / "imgs")
    load(root, tmp_path, progress=True)
    out, _ = capsys.readouterr()
    assert out == ""


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("BEGAN_CACHE_DIR", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("BEGAN_CACHE_DIR")
    assert default_cache_dir() == tmp_path / "x" / "began" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "began" / "data"


# ----------------------------------------------------------------------------
# Real data: the Noto emoji folder shared beside the repo
# ----------------------------------------------------------------------------


def emoji_dir() -> Path:
    shared = os.environ.get("BEGAN_SHARED_DIR")
    base = Path(shared) if shared else Path(__file__).resolve().parents[2] / "shared"
    return base / "data" / "noto-emoji"


def test_real_emoji_folder(tmp_path):
    src = emoji_dir()
    if not src.is_dir():
        pytest.skip(f"emoji data not found at {src}")
    files = sorted(p for p in src.iterdir() if p.is_file() and not p.name.startswith("."))[:40]
    if len(files) < 40:
        pytest.skip(f"need 40 files in {src}, found {len(files)}")
    root = tmp_path / "emoji"
    root.mkdir()
    for f in files:
        shutil.copy2(f, root / f.name)
    s = load(root, tmp_path, Preprocess(32, background="#10a0ff"))
    assert len(s.files) == 40 and s.skipped == []
    assert s.images.shape == (40, 32, 32, 3)
    assert float(np.asarray(s.images).std()) > 20  # real pictures, not flat colour
    # Transparent corners became the background (lanczos may ring by a level or two
    # where a glyph comes near the edge).
    corners = np.asarray(s.images)[:, 0, 0].astype(int)
    assert np.abs(corners - [16, 160, 255]).max() <= 2
    assert (corners == [16, 160, 255]).all(axis=1).mean() > 0.8


# --- the cache folder, and progress off a terminal (issues #11, #13) ---

def test_unwritable_cache_folder_is_its_own_error(tmp_path):
    from began.errors import BeganError

    root = tmp_path / "imgs"
    root.mkdir()
    solid(root / "a.png", (255, 0, 0))
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a cache folder that cannot be created (a file is in the way)
    with pytest.raises(BeganError) as e:
        load_image_folder(root, Preprocess(8), cache_dir=blocker / "cache", progress=False)
    assert e.value.message.startswith(f"cannot write the image cache in {blocker / 'cache'}")
    assert "BEGAN_CACHE_DIR" in e.value.hint


def test_stale_cache_temp_files_of_dead_processes_are_removed(tmp_path):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    root = tmp_path / "imgs"
    root.mkdir()
    solid(root / "a.png", (255, 0, 0))
    cache = tmp_path / "cache"
    cache.mkdir()
    from began.files import temp_name_for

    key = "ab" * 32
    stale = temp_name_for(cache / f"{key}.u8", dead.pid)
    live = temp_name_for(cache / f"{key}.u8", os.getpid(), 7)  # a live writer's: left alone
    lookalike = cache / f".{key}.u8.{dead.pid}-0.tmp"  # no token: not provably ours
    for p in (stale, live, lookalike):
        p.write_bytes(b"half")
    load_image_folder(root, Preprocess(8), cache_dir=cache, progress=False)
    assert not stale.exists() and live.exists() and lookalike.read_bytes() == b"half"


def test_progress_off_a_terminal_is_plain_lines_with_an_eta(capsys):
    from began.progress import progress

    lines: list[str] = []
    with progress(4, "decoding x", log=lines.append, every_s=0.0) as advance:
        for _ in range(4):
            advance()
    assert lines[0] == "decoding x 1/4, ETA 0:00" and len(lines) == 4
    assert lines[-1].startswith("decoding x 4/4, done in ")
    with progress(4, "quiet", log=lines.append, show=False, every_s=3600) as advance:
        advance(4)
    assert len(lines) == 4  # nothing new within every_s, and no closing line then
    assert capsys.readouterr().err == ""  # no bar: stderr is not a terminal here
