"""Shared fixtures. Real images come from ../shared/data/noto-emoji when that folder
exists (the project's data notes), otherwise from images drawn here with pillow."""

import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    return Path(os.environ.get("BEGAN_SHARED_DIR", REPO.parent / "shared"))


def emoji_dir() -> Path | None:
    d = shared_dir() / "data" / "noto-emoji"
    return d if d.is_dir() else None


def pytest_configure(config):
    """Run as under a terminal even when started in the background (`cmd &` in a script,
    nohup), which starts us with SIGINT ignored: the Ctrl-C tests need it delivered, here
    and in the commands they spawn (an ignored signal survives exec; a handler does not)."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Keep the decoded-image cache out of the user's home during tests."""
    monkeypatch.setenv("BEGAN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


def draw_images(folder: Path, count: int, size: int = 40, seed: int = 0) -> None:
    """Coloured shapes on varied backgrounds: enough structure for a GAN to learn from."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        bg = tuple(int(v) for v in rng.integers(0, 256, 3))
        img = Image.new("RGB", (size, size), bg)
        d = ImageDraw.Draw(img)
        for _ in range(3):
            x0, y0 = (int(v) for v in rng.integers(0, size // 2, 2))
            w, h = (int(v) for v in rng.integers(6, size // 2, 2))
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
            (d.ellipse if rng.random() < 0.5 else d.rectangle)([x0, y0, x0 + w, y0 + h], fill=fill)
        img.save(folder / f"img{i:03d}.png")


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """48 real images: emoji when ../shared is present, drawn shapes otherwise."""
    folder = tmp_path_factory.mktemp("images")
    src = emoji_dir()
    if src is not None:
        for p in sorted(src.glob("*.png"))[:48]:
            shutil.copy(p, folder / p.name)
    else:
        draw_images(folder, 48)
    return folder


@pytest.fixture(scope="session")
def tiny_run(image_folder, tmp_path_factory) -> Path:
    """A 16x16 model trained for 20 steps on the CPU (checkpoints at 10 and 20)."""
    from began.app import run

    out = tmp_path_factory.mktemp("run")
    assert run(["train", str(image_folder), "--out", str(out), "--preset", "smoke", "--device",
                "cpu", "--steps", "20", "--ckpt-every", "10", "--log-every", "5", "--skip",
                "--no-progress"]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run, tmp_path_factory) -> Path:
    """`began export` of tiny_run, fp32 and fp16 graphs."""
    from began.app import run

    out = tmp_path_factory.mktemp("models") / "tiny"
    assert run(["export", str(tiny_run), "--out", str(out), "--fit-steps", "30",
                "--device", "cpu", "-q"]) == 0
    return out
