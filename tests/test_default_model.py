"""The model embedded in the package: present, verified, usable with no --model."""

import json

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
    # The same seeds give the grid shipped beside the model.
    assert (tmp_path / "grid.png").read_bytes() == (DEFAULT_MODEL / "samples.png").read_bytes()
