"""The model embedded in the package: present, verified, usable with no --model."""

import json

import numpy as np
from PIL import Image

from began.app import run
from began.bundle import load_bundle
from began.model import DEFAULT_MODEL


def test_embedded_bundle_verifies_and_has_a_card():
    b = load_bundle(DEFAULT_MODEL)  # every file against its sha256
    assert b.resolution == 32 and set(b.manifest["files"]) == {
        "generator.onnx", "encoder.onnx", "autoencoder.onnx", "decoder.onnx",
        "invert_grad.onnx"}
    card = (DEFAULT_MODEL / "MODEL_CARD.md").read_text()
    assert "Fashion-MNIST" in card and "MIT" in card and "ASSESSMENT" not in card
    with Image.open(DEFAULT_MODEL / "samples.png") as im:
        assert im.size == (8 * 34 + 2, 8 * 34 + 2)


def test_sample_uses_it_without_model(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("BEGAN_MODEL", raising=False)
    monkeypatch.chdir(tmp_path)
    assert run(["sample", "-n", "64", "--out", "grid.png", "--device", "cpu", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["seeds"] == list(range(64))
    with Image.open(tmp_path / "grid.png") as im:  # the README's quick start, exactly
        assert im.size == (8 * 34 + 2, 8 * 34 + 2)
    # The same seeds give the grid shipped beside the model. Pixels, not PNG bytes, and within
    # one 8-bit level: onnxruntime's float results differ by a rounding step between CPUs.
    ours, shipped = (np.asarray(Image.open(p).convert("RGB"), dtype=np.int16)
                     for p in (tmp_path / "grid.png", DEFAULT_MODEL / "samples.png"))
    assert ours.shape == shipped.shape
    assert np.abs(ours - shipped).max() <= 1
    assert np.mean(ours != shipped) < 1e-3  # a rounding step, not a different picture


def test_the_readme_states_the_shipped_models_figures():
    """The README's claims about the embedded model are the figures the build script wrote
    into its manifest (class coverage, KL, FID with its counts), so a new model cannot leave
    an old sentence behind."""
    from conftest import REPO

    m = load_bundle(DEFAULT_MODEL).manifest
    cov, ev = m["coverage"], m["eval"]
    readme = " ".join((REPO / "README.md").read_text().split())  # line breaks are layout
    card = " ".join((DEFAULT_MODEL / "MODEL_CARD.md").read_text().split())
    assert f"{cov['covered']} of 10 classes with at least 5% of {cov['n']:,} samples" in readme
    assert f"KL {cov['kl']:.3f} to uniform" in readme
    assert f"trained with `--no-flip`, draws {cov['facing_right']['share']:.1%}" in readme
    fid = (f"FID {ev['fid']:.0f} against the test set ({ev['samples']:,} samples vs "
           f"{ev['reference']['used']:,} test images)")
    assert fid in readme
    assert f"Classes with >= 5% of the samples: {cov['covered']} of 10" in card
    assert f"KL of the label histogram to uniform: {cov['kl']:.3f}" in card
    assert f"FID ({ev['samples']:,} samples vs {ev['reference']['used']:,} images of `test`): " \
           f"{ev['fid']:.1f}" in card
    import re

    minutes = re.search(r"Time: (\d+) minutes of training", card).group(1)
    assert re.search(rf"`--preset small32[^`]*`, {minutes} minutes on a CPU", readme)
    # the hand-written assessment
    assert f"(KL {cov['kl']:.3f}; the goal was 0.03)" in card
    assert f"FID {ev['fid']:.0f} at {ev['samples']:,} against {ev['reference']['used']:,}" in card


def test_the_cards_data_section_is_what_the_build_script_writes():
    """The card's description of the data comes from export/default_model.py for the shipped
    manifest (a grey model must not be described as trained on RGB images)."""
    from began.export.default_model import DATA, _colour

    m = load_bundle(DEFAULT_MODEL).manifest
    card = (DEFAULT_MODEL / "MODEL_CARD.md").read_text()
    about = DATA["fmnist"]["about"].format(res=m["model"]["resolution"], colour=_colour(m))
    assert about in card
    assert ("kept grey" in about) == bool(m["model"].get("grey"))


def test_the_cards_command_resolves_to_the_model_it_describes(tmp_path, capsys):
    """The card's `began train` command, run with --dry-run, gives the manifest's networks,
    length, batch, objective and seed: a stale or hand-edited command fails here."""
    import re
    import shlex

    card = (DEFAULT_MODEL / "MODEL_CARD.md").read_text()
    line = re.search(r"- Command: `began train (\S+) --out RUN (.*?)`", card)
    args = shlex.split(line.group(2))
    assert run(["train", str(tmp_path), "--out", str(tmp_path / "run"), *args, "--dry-run"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    m = json.loads((DEFAULT_MODEL / "manifest.json").read_text())
    assert cfg["model"] == m["model"]
    t = m["training"]
    assert cfg["steps"] == t["step"] == t["steps_planned"]
    for k in ("gamma", "lambda_k", "batch_size", "seed", "cs_alpha", "ema_decay"):
        assert cfg[k] == t[k], k
    # the lr the run ended at: the anneal's floor where one ends at the last step
    annealed = cfg["lr_anneal_steps"] and cfg["lr_anneal_start"] + cfg["lr_anneal_steps"] <= t["step"]
    assert abs(t["lr_g"] - (cfg["lr_floor"] if annealed else cfg["lr_g"])) < 1e-12
