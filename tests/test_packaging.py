"""What `pip install` puts on disk, and what the CLI side may import."""

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    # Build from a copy so the checkout gets no build/ or egg-info folders.
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "began_cli", "models", "train", "export"):
        p = REPO / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif p.exists():
            shutil.copy(p, src / name)
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(dist), str(src)], check=True, capture_output=True)
    (whl,) = dist.glob("began-*.whl")
    return zipfile.ZipFile(whl)


def test_wheel_installs_one_namespace_only(wheel):
    tops = {name.split("/")[0] for name in wheel.namelist()}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert tops - dist_info == {"began"}, tops
    names = set(wheel.namelist())
    manifest = json.loads((REPO / "began_cli" / "default_model" / "manifest.json").read_text())
    for name in [*manifest["files"], "manifest.json", "MODEL_CARD.md", "samples.png"]:
        assert f"began/default_model/{name}" in names  # the embedded model ships whole
    for module in ("began/__init__.py", "began/app.py", "began/commands/train.py",
                   "began/models/began.py", "began/models/config.py", "began/train/loop.py",
                   "began/train/data.py", "began/export/__init__.py"):
        assert module in names


def test_wheel_metadata_keeps_torch_in_the_train_extra(wheel):
    (meta,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    requires = [line for line in wheel.read(meta).decode().splitlines()
                if line.startswith("Requires-Dist:")]
    torch_lines = [r for r in requires if r.split()[1].startswith("torch")]
    assert torch_lines and all('extra == "train"' in r for r in torch_lines)
    assert any(r.startswith("Requires-Dist: onnxruntime-gpu") for r in requires)
    (eps,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    assert "began = began.app:main" in wheel.read(eps).decode()


def test_cli_modules_do_not_import_torch():
    """Importing every module of the CLI package (began_cli/) loads no torch."""
    modules = sorted(
        "began" + "".join("." + part for part in p.relative_to(REPO / "began_cli")
                          .with_suffix("").parts if part != "__init__")
        for p in (REPO / "began_cli").rglob("*.py") if p.name != "__main__.py")
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx'))\n"
            "print(bad)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "began.commands.train" in modules and r.stdout.strip() == "[]"
