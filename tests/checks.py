"""Assertions shared by the training tests."""

import torch

from began.train.checkpoint import load_checkpoint


def checkpoint_at(run_dir, step):
    return load_checkpoint(run_dir / "checkpoints" / f"ckpt-{step:08d}.safetensors")


def assert_same_state(a, b):
    """Two (tensors, state) checkpoints hold the same training state, bit for bit."""
    (ta, sa), (tb, sb) = a, b
    assert set(ta) == set(tb)
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key
    assert sa == sb
