"""DiffAugment and instance noise for D's inputs: the same draw for the same generator
state, the transforms they claim, gradients through them, and rows under DDP."""

import pytest
import torch

from began.train.augment import (AUGMENTATIONS, d_inputs, diff_augment, instance_noise,
                                 noise_std, parse_policy)


def images(b=6, res=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, res, res, generator=g) * 1.8 - 0.9  # no exact zeros


@pytest.mark.parametrize("policy", [("color",), ("translation",), ("cutout",), AUGMENTATIONS])
def test_same_generator_state_same_transform(policy):
    x = images()
    gen = torch.Generator().manual_seed(11)
    state = gen.get_state()
    a = diff_augment(x, policy, gen)
    b = diff_augment(x, policy, gen)  # the stream moved on: another draw
    gen.set_state(state)
    assert torch.equal(diff_augment(x, policy, gen), a)
    assert not torch.equal(a, b)
    assert a.shape == x.shape and a.dtype == x.dtype


def shifted(img, dy, dx):
    out = torch.zeros_like(img)
    H, W = img.shape[-2:]
    for i in range(H):
        for j in range(W):
            if 0 <= i - dy < H and 0 <= j - dx < W:
                out[:, i, j] = img[:, i - dy, j - dx]
    return out


def test_translation_is_a_zero_filled_shift_of_at_most_an_eighth():
    x = images(b=8, res=16)
    out = diff_augment(x, ("translation",), torch.Generator().manual_seed(1))
    s = 2  # 16 / 8
    seen = set()
    for img, o in zip(x, out):
        match = [(dy, dx) for dy in range(-s, s + 1) for dx in range(-s, s + 1)
                 if torch.equal(shifted(img, dy, dx), o)]
        assert len(match) == 1
        seen.add(match[0])
    assert len(seen) > 1  # per-image shifts
    assert out.min() >= min(x.min(), 0) and out.max() <= max(x.max(), 0)


def test_cutout_zeroes_one_square_of_half_the_side():
    x = images(b=16, res=16)
    out = diff_augment(x, ("cutout",), torch.Generator().manual_seed(2))
    zero = out == 0
    assert torch.equal(out[~zero], x[~zero])  # everything else is untouched
    for z in zero:
        assert torch.equal(z[0], z[1]) and torch.equal(z[0], z[2])  # all channels
        rows, cols = z[0].any(1).nonzero().flatten(), z[0].any(0).nonzero().flatten()
        assert 0 < len(rows) <= 8 and 0 < len(cols) <= 8
        assert z[0][rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # a rectangle
        assert z[0].sum() == len(rows) * len(cols)
    full = [bool(z[0].sum() == 64) for z in zero]
    assert any(full)  # squares inside the image are 8 x 8; at a border, clipped


def test_color_on_grey_images_is_a_brightness_shift_within_half():
    # Saturation and contrast leave a constant image alone; brightness shifts it.
    x = torch.full((32, 3, 8, 8), 0.25)
    out = diff_augment(x, ("color",), torch.Generator().manual_seed(3))
    shift = out - x
    per_image = shift.flatten(1)
    torch.testing.assert_close(per_image, per_image[:, :1].expand_as(per_image))
    assert per_image.abs().max() <= 0.5 and per_image[:, 0].std() > 0.1


def test_color_bounds_and_changes_contrast():
    x = images(b=32)
    out = diff_augment(x, ("color",), torch.Generator().manual_seed(4))
    # Brightness +-0.5, saturation x2 and contrast x1.5 at most: |out| stays below 6.
    assert out.abs().max() < 6
    ratio = out.flatten(1).std(1) / x.flatten(1).std(1)
    assert ratio.min() < 0.9 and ratio.max() > 1.1


@pytest.mark.parametrize("policy", [("color",), ("translation",), ("cutout",), AUGMENTATIONS])
def test_gradients_flow_through(policy):
    x = images().requires_grad_(True)
    out = diff_augment(x, policy, torch.Generator().manual_seed(5))
    w = torch.randn_like(out)
    (g,) = torch.autograd.grad((out * w).sum(), x)
    assert g.abs().sum() > 0
    if policy == ("cutout",):  # the gradient is the weight where kept, 0 where cut
        torch.testing.assert_close(g, w * (out != 0))


def test_rows_of_a_global_batch_are_the_single_process_rows():
    x = images(b=8)
    for policy in (AUGMENTATIONS,):
        full = diff_augment(x, policy, torch.Generator().manual_seed(6))
        for rows in (slice(0, 4), slice(4, 8)):
            part = diff_augment(x[rows], policy, torch.Generator().manual_seed(6), batch=8,
                                rows=rows)
            assert torch.equal(part, full[rows])
    noise = instance_noise(x, 0.1, torch.Generator().manual_seed(7))
    part = instance_noise(x[4:], 0.1, torch.Generator().manual_seed(7), batch=8,
                          rows=slice(4, 8))
    assert torch.equal(part, noise[4:])


def test_instance_noise_std_and_schedule():
    x = torch.zeros(64, 3, 16, 16)
    out = instance_noise(x, 0.2, torch.Generator().manual_seed(8))
    assert out.std().item() == pytest.approx(0.2, rel=0.03)
    assert noise_std(0, 0.2, 100) == 0.2
    assert noise_std(50, 0.2, 100) == pytest.approx(0.1)
    assert noise_std(100, 0.2, 100) == 0.0 and noise_std(500, 0.2, 100) == 0.0


def test_d_inputs_composes_and_off_is_none():
    assert d_inputs("", 0.0, torch.Generator()) is None
    x = images()
    gen = torch.Generator().manual_seed(9)
    state = gen.get_state()
    out = d_inputs("translation", 0.1, gen)(x)
    gen.set_state(state)
    expected = instance_noise(diff_augment(x, ("translation",), gen), 0.1, gen)
    assert torch.equal(out, expected)
    T = d_inputs("", 0.2, gen, noise_steps=100)
    T.at_step(75)
    assert T.std == pytest.approx(0.05)
    T.at_step(100)
    assert torch.equal(T(x), x)  # the noise has decayed away


def test_policy_parsing():
    assert parse_policy("translation, cutout,color") == ("translation", "cutout", "color")
    assert parse_policy("") == ()
    with pytest.raises(ValueError, match="flip"):
        parse_policy("translation,flip")
