"""bench/quality/fmnist_coverage.py's "facing right": every Fashion-MNIST shoe faces left, so
the share of drawn shoes that face right shows what random flips in training did to a model."""

import importlib.util
import sys
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "quality" / "fmnist_coverage.py"


def _coverage():
    spec = importlib.util.spec_from_file_location("fmnist_coverage", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fmnist_coverage", mod)
    spec.loader.exec_module(mod)
    return mod


def _shoe(rng, toe_left=True):
    """A 32x32 wedge, tall at the heel and low at the toe, with a little noise."""
    img = np.zeros((32, 32), np.float32)
    for col in range(4, 28):
        h = 4 + (col - 4) // 2  # heel (tall) on the right: the toe faces left
        img[28 - h:28, col] = 200
    img += rng.normal(0, 10, img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    return img if toe_left else img[:, ::-1]


def test_counts_the_mirrored_shoes_of_the_oriented_classes_only():
    fm = _coverage()
    rng = np.random.default_rng(0)
    sneaker, shirt = fm.LABELS.index("sneaker"), fm.LABELS.index("shirt")
    means = {sneaker: np.mean([_shoe(rng) for _ in range(50)], 0)}
    left = [_shoe(rng) for _ in range(30)]
    right = [_shoe(rng, toe_left=False) for _ in range(10)]
    # shirts are not an oriented class: mirrored or not, they do not count
    shirts = [_shoe(rng, toe_left=False) for _ in range(25)]
    u8 = np.stack(left + right + shirts)
    labels = np.array([sneaker] * 40 + [shirt] * 25)
    assert fm.facing_right(u8, labels, means) == {"share": 0.25, "of": 40}
    assert fm.facing_right(u8[:30], labels[:30], means) == {"share": 0.0, "of": 30}
    assert fm.facing_right(u8[40:], labels[40:], means) == {"share": None, "of": 0}


def test_the_model_card_states_the_share_and_the_flag_that_was_used():
    import dataclasses

    from began.export.default_model import _flags, coverage_lines
    from began.train.config import TrainConfig

    cov = {"classifier_test_accuracy": 0.92, "n": 10_000, "covered": 10, "kl": 0.012,
           "hist": {"shirt": 0.13, "bag": 0.08}}
    assert "face right" not in coverage_lines(cov)  # a card written before the figure existed
    cov["facing_right"] = {"share": 0.4967, "of": 1959}
    assert "Of the 1,959 samples labelled sneaker or ankle boot, 49.7% face right" in \
        coverage_lines(cov)
    cfg = dataclasses.asdict(TrainConfig())
    assert "flip" not in _flags(cfg)
    assert "anneal" not in _flags(cfg)
    cfg["flip"] = False
    assert _flags(cfg).split()[-1] == "--no-flip"
    # a model trained without flips is not told to use the flag it used
    assert "train such data with `--no-flip`" in coverage_lines(cov)
    assert "trained with `--no-flip`" in coverage_lines(cov, flipped=False)
    assert "train such data" not in coverage_lines(cov, flipped=False)
    # the late anneal is part of the command that made the model
    cfg.update(lr_anneal_start=12_000, lr_anneal_steps=3_000)
    assert {"--lr-anneal-start 12000", "--lr-anneal-steps 3000", "--no-flip"} <= \
        set(_flags(cfg).replace(" --", "\n--").splitlines())
