"""Checkpoints: exact round trip, atomic writes, and no corrupt file ever loaded."""

import json
import os

import pytest
import torch

from began.train.checkpoint import (CheckpointError, checkpoint_name, list_checkpoints,
                                    load_checkpoint, load_latest, optimizer_from_flat,
                                    optimizer_to_flat, prune, save_checkpoint)


def tensors(seed):
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(3, 4, generator=g), "k": torch.tensor(0.25),
            "bf": torch.randn(5, generator=g).bfloat16(), "rng": g.get_state()}


def test_round_trip_is_exact(tmp_path):
    t = tensors(0)
    path = save_checkpoint(tmp_path, 7, t, {"lr": 1e-4, "history": [0.5, 0.25]})
    assert path.name == checkpoint_name(7) == "ckpt-00000007.safetensors"
    back, state = load_checkpoint(path)
    assert state == {"lr": 1e-4, "history": [0.5, 0.25], "step": 7}
    assert set(back) == set(t)
    for key in t:
        assert back[key].dtype == t[key].dtype and torch.equal(back[key], t[key])
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left


@pytest.mark.parametrize("damage", ["flip_data_byte", "truncate", "empty", "garbage"])
def test_damaged_files_are_refused(tmp_path, damage):
    path = save_checkpoint(tmp_path, 1, tensors(0), {"a": 1})
    raw = bytearray(path.read_bytes())
    if damage == "flip_data_byte":
        raw[-3] ^= 0x01
    elif damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "empty":
        raw = bytearray()
    else:
        raw = bytearray(b"not a checkpoint at all" * 10)
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_tampered_state_json_is_refused(tmp_path):
    # Change the JSON inside the header without touching the tensors.
    path = save_checkpoint(tmp_path, 1, tensors(0), {"lr": 0.0001})
    raw = path.read_bytes()
    assert b'\\"lr\\": 0.0001' in raw
    path.write_bytes(raw.replace(b'\\"lr\\": 0.0001', b'\\"lr\\": 0.0009'))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(path)


def test_latest_falls_back_to_previous_good_one_with_a_warning(tmp_path):
    save_checkpoint(tmp_path, 10, tensors(1), {"n": 10})
    newest = save_checkpoint(tmp_path, 20, tensors(2), {"n": 20})
    newest.write_bytes(newest.read_bytes()[:-10])  # torn write
    # A temp file from a process killed mid-write is not a checkpoint.
    (tmp_path / ".ckpt-00000030.safetensors.abc.tmp").write_bytes(b"partial")
    warnings = []
    path, t, state = load_latest(tmp_path, warn=warnings.append)
    assert state["n"] == 10 and torch.equal(t["w"], tensors(1)["w"])
    assert len(warnings) == 1 and "ckpt-00000020" in warnings[0]
    assert (tmp_path / "ckpt-00000020.safetensors.corrupt").exists()  # kept aside, not deleted
    assert [s for s, _ in list_checkpoints(tmp_path)] == [10]


def test_latest_is_none_when_nothing_verifies(tmp_path):
    assert load_latest(tmp_path / "missing", warn=print) is None
    (tmp_path / "ckpt-00000005.safetensors").write_bytes(b"")
    assert load_latest(tmp_path, warn=lambda m: None) is None


def test_prune_keeps_the_newest(tmp_path):
    """Stray temps go too, but only those a dead began process provably made."""
    import subprocess
    import sys

    from began.files import temp_name_for

    for s in (1, 2, 3, 4, 5):
        save_checkpoint(tmp_path, s, tensors(s), {})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    torn = temp_name_for(tmp_path / "ckpt-00000006.safetensors", dead.pid)
    torn.write_bytes(b"partial")
    lookalikes = [tmp_path / ".ckpt-00000006.safetensors.x.tmp",
                  tmp_path / f".ckpt-00000006.safetensors.{dead.pid}-0.tmp"]
    for p in lookalikes:
        p.write_bytes(b"the user's")
    prune(tmp_path, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 5]
    assert not torn.exists() and [p.read_bytes() for p in lookalikes] == [b"the user's"] * 2


def test_a_failed_write_leaves_the_previous_file(tmp_path, monkeypatch):
    good = save_checkpoint(tmp_path, 1, tensors(0), {"v": 1})
    before = good.read_bytes()

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("began.train.checkpoint.save_file", boom)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, 1, tensors(9), {"v": 2})
    assert good.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == [good.name]


def test_optimizer_state_round_trip_exact():
    torch.manual_seed(0)
    m = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3, betas=(0.5, 0.999))
    for _ in range(3):
        m(torch.randn(4, 3)).pow(2).mean().backward()
        opt.step()
    t, meta = optimizer_to_flat(opt, "opt")
    meta = json.loads(json.dumps(meta))
    m2 = torch.nn.Linear(3, 2)
    m2.load_state_dict(m.state_dict())
    opt2 = torch.optim.Adam(m2.parameters(), lr=5.0)
    optimizer_from_flat(opt2, "opt", t, meta)
    assert opt2.param_groups[0]["lr"] == 1e-3 and opt2.param_groups[0]["betas"] == (0.5, 0.999)
    x = torch.randn(4, 3)
    for mm, oo in ((m, opt), (m2, opt2)):
        oo.zero_grad()
        mm(x).pow(2).mean().backward()
        oo.step()
    for a, b in zip(m.parameters(), m2.parameters()):
        assert torch.equal(a, b)
