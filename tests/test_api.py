"""The Python API (began.load / began.api.Model): the CLI's numbers, torch-free.

The embedded model and tiny_bundle are exports with the clipped inversion loss and the
inversion reference in their manifests; the run-time fallbacks for older bundles are
exercised on a copy without the reference and on a linear stand-in for an unclipped graph.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import began
from began import latent
from began.app import run
from began.errors import UsageError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("BEGAN_MODEL", raising=False)
    monkeypatch.delenv("BEGAN_DEVICE", raising=False)


@pytest.fixture(scope="module")
def embedded():
    return began.load(device="cpu")


@pytest.fixture(scope="module")
def tiny(tiny_bundle):
    return began.load(tiny_bundle, device="cpu")


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def cli(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def checkerboard(path: Path, size: int) -> Path:
    """Black and white squares: nothing a model of clothes (or of 20 training steps) draws."""
    img = Image.new("RGB", (size, size), (0, 0, 0))
    d = ImageDraw.Draw(img)
    q = size // 4
    for i in range(4):
        for j in range(i % 2, 4, 2):
            d.rectangle([i * q, j * q, i * q + q - 1, j * q + q - 1], fill=(255, 255, 255))
    img.save(path)
    return path


def test_import_began_stays_cheap():
    code = ("import sys, began\n"
            "assert callable(began.load)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('onnxruntime', 'torch',"
            " 'typer', 'PIL') or m in ('began.api', 'began.model'))\n"
            "assert not bad, bad\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


def test_sample_is_the_cli_image(embedded, capsys, tmp_path):
    code, _, err = cli(capsys, "sample", "--seed", 7, "-n", 1, "--out", tmp_path / "s7.png",
                       "--device", "cpu")
    assert code == 0, err
    one = embedded.sample(7)
    assert one.dtype == np.uint8 and one.shape == (1, 32, 32, 3)
    np.testing.assert_array_equal(one[0], pixels(tmp_path / "s7.png"))  # no grid border
    # Any batch, any spelling of the seeds: the same images.
    batch = embedded.sample("5-8")
    np.testing.assert_array_equal(batch[2], one[0])
    np.testing.assert_array_equal(embedded.sample([8, 7])[1], one[0])
    raw = embedded.sample(range(5, 9), as_float=True)
    assert raw.dtype == np.float32 and raw.shape == (4, 3, 32, 32)
    np.testing.assert_array_equal(latent.as_saved(raw[2:3]), latent.as_saved(
        embedded.generate(embedded.z(7), as_float=True)))
    from began.seeds import z_for_seed
    np.testing.assert_array_equal(embedded.z([7])[0], z_for_seed(7, embedded.z_dim))
    assert embedded.z(7, truncation=0.5)[0] == pytest.approx(z_for_seed(7, embedded.z_dim) * 0.5)
    for bad in (-1, 2**32, []):
        with pytest.raises(UsageError):
            embedded.sample(bad)


def test_invert_own_saved_sample_reaches_high_psnr(embedded, tmp_path):
    """A PNG of the model's own sample is a picture it can draw: found again, no warning."""
    for seed in (3, 11):
        Image.fromarray(embedded.sample(seed)[0]).save(tmp_path / f"s{seed}.png")
    paths = [tmp_path / "s3.png", tmp_path / "s11.png"]
    enc = embedded.invert(paths)
    ref = embedded.invert(paths, refine=40)
    assert ref.names == [str(p) for p in paths] and len(ref) == 2
    assert ref.z.shape == (2, embedded.z_dim)
    assert ref.recon.shape == ref.target.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(ref.target[0], pixels(paths[0]))
    # Measured on the embedded model (the small networks with --grey, whose G the fitted
    # encoder inverts poorly), seeds 0-31 saved as PNG: the encoder alone gives 9.8-25.7 dB
    # (seeds 3 and 11: 18.2, 23.1); 40 refinement steps 19.4-38.8 dB (31.2, 37.5), at least
    # 7.0 dB more for every seed, and l1 ratios of at most 0.32: found again, never flagged.
    assert np.all(enc.psnr > 15) and np.all(ref.psnr >= enc.psnr + 5), (enc.psnr, ref.psnr)
    assert np.all(ref.psnr > 25), ref.psnr
    assert not ref.outside.any() and np.all(ref.ratio < 1)
    # The reported figures are those of the saved reconstruction's float source.
    x = ref.target.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1
    recon = embedded.generate(ref.z, as_float=True)
    np.testing.assert_allclose(ref.l1, latent.l1_error(recon, x), rtol=1e-6)
    np.testing.assert_array_equal(ref.recon, embedded.generate(ref.z))


def test_invert_flags_what_the_model_cannot_draw(embedded, tiny, tmp_path, capsys):
    path = checkerboard(tmp_path / "checks.png", 64)
    for m, model_args in ((embedded, []), (tiny, ["-m", tiny.runtime.bundle.root])):
        inv = m.invert(path, refine=5)
        assert inv.outside.tolist() == [True] and inv.ratio[0] > latent.OUTSIDE_RATIO
        # The CLI says the same, on stderr and in its JSON record; it does not fail.
        code, out, err = cli(capsys, "invert", path, "--outdir", tmp_path / f"o{m.resolution}",
                             "--refine", 5, "--json", "--device", "cpu", *model_args)
        assert code == 0, err
        (row,) = [json.loads(line) for line in out.splitlines()]
        assert row["outside"] is True
        assert row["l1"] == pytest.approx(float(inv.l1[0]), abs=1e-6)
        assert row["psnr"] == pytest.approx(float(inv.psnr[0]), abs=1e-3)
        assert row["l1_ratio"] == pytest.approx(float(inv.ratio[0]), abs=1e-3)
        warnings = [s for s in err.splitlines() if s.startswith("warning: ")]
        assert len(warnings) == 1 and "checks.png" in warnings[0], err
        assert "own samples" in warnings[0]


def test_inversion_reference_export_equals_run_time(tiny):
    """The manifest's figure (PyTorch, at export) is what onnxruntime measures now."""
    stored = tiny.manifest["inversion_reference"]
    assert stored["loss"] == latent.CLIPPED_LOSS and stored["seeds"] == latent.REFERENCE_SEEDS
    assert latent.graph_clips(tiny.runtime)
    now = latent.inversion_reference(tiny.runtime.generate, tiny.runtime.encode, tiny.z_dim)
    for q in ("p50", "p90", "p99", "max"):
        assert now["l1"][q] == pytest.approx(stored["l1"][q], abs=2e-4)
    assert 0 < stored["l1"]["p50"] <= stored["l1"]["p99"] <= stored["l1"]["max"]


def test_old_bundle_gets_its_reference_at_run_time(tmp_path):
    import shutil

    from began.model import DEFAULT_MODEL

    old = tmp_path / "old"
    shutil.copytree(DEFAULT_MODEL, old)
    manifest = json.loads((old / "manifest.json").read_text())
    stored = manifest.pop("inversion_reference")  # as bundles exported before it lacked it
    (old / "manifest.json").write_text(json.dumps(manifest))
    m = began.load(old, device="cpu")
    ref = latent.reference_for(m.runtime)
    assert ref is latent.reference_for(m.runtime)  # computed once per model
    # The encoder finds its samples closer than real test images get (mean L1 0.19 on the
    # model card, encoder only); this model's p50 0.119, p99 0.432
    assert 0 < ref["l1"]["p50"] < 0.2 and ref["l1"]["p99"] < 0.45
    for q in ("p50", "p90", "p99", "max"):  # the export's figure (PyTorch), up to the
        # 8-bit rounding of a few samples near each quantile (onnxruntime here)
        assert ref["l1"][q] == pytest.approx(stored["l1"][q], rel=0.03)


class LinearStandIn:
    """G(z) = 3 W z, with an unclipped invert_grad graph (older exports) or a clipped one."""

    def __init__(self, clipped: bool):
        self.w = np.random.default_rng(0).standard_normal((48, 5)).astype(np.float32)
        self.clipped = clipped

    def run(self, name, z, x=None):
        g = 3 * z @ self.w.T
        if name == "generator":
            return [g]
        inside = np.abs(g) < 1 if self.clipped else np.ones_like(g, bool)
        sign = np.sign((np.clip(g, -1, 1) if self.clipped else g) - x) * inside
        return [np.abs(g - x).mean(1), 3 * sign @ self.w / g.shape[1]]


def test_unclipped_graph_gives_the_clipped_gradient():
    rng = np.random.default_rng(1)
    z = rng.uniform(-1, 1, (6, 5)).astype(np.float32)
    x = rng.uniform(-1, 1, (6, 48)).astype(np.float32)
    assert (np.abs(3 * z @ LinearStandIn(False).w.T) > 1).mean() > 0.3  # many pixels past 1
    loss, grad = latent.loss_and_grad(LinearStandIn(False), z, x, clips=False)
    _, want = LinearStandIn(True).run("invert_grad", z, x)
    np.testing.assert_allclose(grad, want, atol=1e-6)
    g = 3 * z @ LinearStandIn(False).w.T
    np.testing.assert_allclose(loss, np.abs(np.clip(g, -1, 1) - x).mean(1), rtol=1e-6)
    _, plain = LinearStandIn(False).run("invert_grad", z, x)
    assert not np.allclose(plain, want, atol=1e-3)  # so the fallback did change something


def test_interpolate_seeds_and_images(embedded, tmp_path):
    frames = embedded.interpolate([3, 17], steps=5)
    assert frames.shape == (5, 32, 32, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames[[0, -1]], embedded.sample([3, 17]))
    lerp = embedded.interpolate([3, 17, 4], steps=3, method="lerp")
    assert len(lerp) == 5
    np.testing.assert_array_equal(lerp[[0, 2, 4]], embedded.sample([3, 17, 4]))
    a, b = (tmp_path / "a.png", tmp_path / "b.png")
    for p, s in ((a, 3), (b, 17)):
        Image.fromarray(embedded.sample(s)[0]).save(p)
    through = embedded.interpolate([a, b], steps=4, refine=10)
    inv = embedded.invert([a, b], refine=10)
    np.testing.assert_array_equal(through[[0, -1]], inv.recon)
    d = embedded.interpolate([a, b], steps=4, space="d", as_float=True)
    assert d.shape == (4, 3, 32, 32) and d.dtype == np.float32
    with pytest.raises(UsageError):
        embedded.interpolate([3], steps=4)
    with pytest.raises(UsageError):
        embedded.interpolate([3, 4], method="cubic")


def test_images_as_arrays_or_files(embedded, tmp_path):
    u8 = embedded.sample([1, 2])
    Image.fromarray(u8[0]).save(tmp_path / "one.png")
    names, x = embedded.load_images([u8[1], tmp_path / "one.png"])
    assert names == ["image0", str(tmp_path / "one.png")] and x.shape == (2, 3, 32, 32)
    np.testing.assert_array_equal(embedded.load_images(u8)[1][[1, 0]], x)
    np.testing.assert_array_equal(embedded.load_images(x)[1], x)  # float NCHW as it is
    with pytest.raises(UsageError, match="uint8 images must be"):
        embedded.load_images(np.zeros((5, 5, 3), np.uint8))
    with pytest.raises(UsageError, match="no such file"):
        embedded.load_images(tmp_path / "missing.png")


def test_score_is_the_cli_score(tiny, image_folder, capsys):
    got = tiny.score(image_folder, n=20, max_images=30)
    code, out, err = cli(capsys, "score", "--data", image_folder, "-n", 20, "--max-images", 30,
                         "--json", "-m", tiny.runtime.bundle.root, "--device", "cpu")
    assert code == 0, err
    cli_row = json.loads(out)
    for key in ("real_images", "samples", "gamma", "loss_real", "loss_fake", "m_global"):
        assert got[key] == pytest.approx(cli_row[key], rel=1e-6), key
    assert got["real_images"] == 30
    for space in ("pixels", "latent_h"):
        assert got["diversity"][space]["ratio"] == pytest.approx(
            cli_row["diversity"][space]["ratio"], rel=1e-6)


def test_score_pixel_diversity_uses_clipped_samples():
    from began.api import mean_pairwise_distance, score_figures

    class Fake:  # a generator whose output runs far past [-1, 1]
        z_dim = 2
        bundle = type("B", (), {"gamma": 0.5})()

        def generate(self, z, batch_size=64):
            return np.repeat(z[:, :1, None, None] * 50, 4, axis=2).repeat(4, 3).repeat(3, 1)

        def autoencode(self, x, batch_size=64):
            return x, x.reshape(len(x), -1)[:, :2]

    from began.seeds import z_for_seeds

    x = np.random.default_rng(0).uniform(-1, 1, (6, 3, 4, 4)).astype(np.float32)
    samples = score_figures(Fake(), x, 8)["diversity"]["pixels"]["samples"]
    raw = Fake().generate(z_for_seeds(list(range(8)), 2))
    assert samples == pytest.approx(mean_pairwise_distance(np.clip(raw, -1, 1)))
    assert samples < mean_pairwise_distance(raw) / 10


def test_errors_name_the_api_parameters_not_cli_flags(tiny, tmp_path, capsys):
    """Code shared with the CLI words its errors for the command line; through the API
    they name began.load's and the methods' parameters (issue 22)."""
    from began.errors import BeganError
    from began.runtime import cuda_status

    flag = re.compile(r"(?<![\w-])(--(?!no-fp16)[a-z][a-z-]*|-n)(?![\w-])")  # export's flag ok
    cases = {  # the call -> words its error must use
        "sample-range": (lambda: tiny.sample("5-2"), "seeds='5-2'"),
        "sample-words": (lambda: tiny.sample("abc"), "seeds='abc'"),
        "z-empty": (lambda: tiny.z(""), "seeds=''"),
        "truncation": (lambda: tiny.sample(1, truncation=2.0), "truncation="),
        "steps": (lambda: tiny.interpolate([1, 2], steps=1), "steps="),
        "refine": (lambda: tiny.interpolate([1, 2], refine=-1), "refine="),
        "invert-refine": (lambda: tiny.invert(np.zeros((16, 16, 3), np.uint8), refine=-5),
                          "refine="),
        "missing-model": (lambda: began.load(tmp_path / "nope", device="cpu"),
                          "began.load(path)"),
        "fp16": (lambda: began.load(tiny.runtime.bundle.root, device="cpu",
                                    precision="fp16").sample(1), "precision='fp32'"),
    }
    if not cuda_status()[0]:
        cases["cuda"] = (lambda: began.load(device="cuda"), "device='cpu'")
    for name, (call, words) in cases.items():
        with pytest.raises(BeganError) as e:
            call()
        text = f"{e.value.message} | {e.value.hint}"
        assert words in text, (name, text)
        assert not flag.search(text), (name, text)
        assert str(e.value) == e.value.message  # the exception reads as its message
    # The CLI keeps its own words for the same mistake.
    code, _, err = cli(capsys, "sample", "--seeds", "5-2", "-m", tiny.runtime.bundle.root)
    assert code == 2 and "in --seeds '5-2'" in err


@pytest.mark.parametrize("call,needle", [
    (lambda m: m.sample(range(10**8)), "100,000,000 seeds is more than 10,000,000"),
    (lambda m: m.sample([1, 3.7]), "bad seed 3.7"),
    (lambda m: m.sample([None]), "bad seed None"),
    (lambda m: m.sample(True), "bad seed True"),
    (lambda m: m.z(3, truncation=float("nan")), "truncation= must be in [0, 1]"),
    (lambda m: m.z(3, truncation=1e30), "truncation= must be in [0, 1]"),
    (lambda m: m.generate(np.zeros((2, m.z_dim + 1))), "z must be (N, 16) or (16,)"),
    (lambda m: m.generate(np.full((2, m.z_dim), np.nan)), "z holds NaN"),
    (lambda m: m.interpolate([1, 2], steps=10**7), "steps= must be a whole number in 2..10,000"),
    (lambda m: m.interpolate([1, 2], steps=4.5), "steps= must be a whole number"),
    (lambda m: m.invert(np.zeros((1, 3, 16, 16), np.float32), refine=10**12),
     "refine= must be a whole number in 0..100,000"),
    (lambda m: m.invert(np.full((1, 3, 16, 16), np.nan, np.float32)), "NaN or infinite"),
    (lambda m: m.score(np.zeros((4, 16, 16, 3), np.uint8), n=10**9),
     "n= must be a whole number in 2..50,000"),
])
def test_the_api_has_the_clis_bounds_checked_before_work(tiny, call, needle, monkeypatch):
    """Issue 23: the API's calls that would never return, fill memory or compute with
    garbage are refused at once with the CLI's limits, in the API's own words."""
    from began.errors import UsageError

    ran = []
    monkeypatch.setattr("began.model.Model.run", lambda self, graph, *a: ran.append(graph))
    with pytest.raises(UsageError) as e:
        call(tiny)
    assert needle in e.value.message
    assert ran == []  # refused before the work, not after it


def test_an_endless_seed_iterator_is_read_one_past_the_limit(tiny, monkeypatch):
    """An iterator of seeds has no len(): the API stops reading it one past the limit (a
    small limit here, the same code as the CLI's 10,000,000) and draws nothing."""
    from began.errors import UsageError

    monkeypatch.setattr("began.api.MAX_COUNT", 1000)
    ran, read = [], []
    monkeypatch.setattr("began.model.Model.run", lambda self, graph, *a: ran.append(graph))

    def seeds():
        for s in range(10**9):
            read.append(s)
            yield s

    with pytest.raises(UsageError) as e:
        tiny.sample(seeds())
    assert "more than 1,000 seeds" in e.value.message
    assert len(read) == 1001 and ran == []
