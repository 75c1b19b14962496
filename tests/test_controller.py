"""k_t, M_global and the lr schedule against hand computations on fixed numbers."""

import json

import pytest
import torch

from began.train.controller import LRSchedule, m_global, update_k


def t(v):
    return torch.tensor(v, dtype=torch.float64)


def test_k_update_matches_hand_computation():
    # 0.3 + 0.001 * (0.5 * 0.2 - 0.05) = 0.30005
    assert update_k(t(0.3), t(0.2), t(0.05), gamma=0.5, lambda_k=0.001).item() == \
        pytest.approx(0.30005, abs=1e-15)
    # G ahead of the target: k falls, 0.3 + 0.001 * (0.1 - 0.4) = 0.2997
    assert update_k(t(0.3), t(0.2), t(0.4), 0.5, 0.001).item() == pytest.approx(0.2997, abs=1e-15)


def test_k_update_clips_to_zero_and_k_max():
    assert update_k(t(0.0), t(0.1), t(0.5), 0.5, 0.001).item() == 0.0  # would be -0.00045
    assert update_k(t(0.9999), t(1.0), t(0.0), 0.5, 0.001).item() == 1.0  # would be 1.0004
    assert update_k(t(0.4999), t(1.0), t(0.0), 0.5, 0.001, k_max=0.5).item() == 0.5


def test_m_global_matches_hand_computation():
    assert m_global(t(0.2), t(0.05), 0.5).item() == pytest.approx(0.25, abs=1e-15)  # 0.2+|0.1-0.05|
    assert m_global(t(0.2), t(0.3), 0.5).item() == pytest.approx(0.4, abs=1e-15)  # 0.2+|0.1-0.3|
    assert m_global(t(0.2), t(0.1), 0.5).item() == pytest.approx(0.2, abs=1e-15)  # at equilibrium


def test_lr_halves_after_patience_windows_without_progress():
    s = LRSchedule(lr_g=1e-4, lr_d=2e-4, decay=0.5, floor=1e-6, patience=3, min_delta=0.01)
    # 1.0 best; 0.9 improves by > 1%; 0.895, 0.899, 0.9 are not 1% below 0.9.
    assert [s.observe(m) for m in (1.0, 0.9, 0.895, 0.899)] == [False] * 4
    assert (s.lr_g, s.lr_d, s.stalls) == (1e-4, 2e-4, 2)
    assert s.observe(0.9) is True
    assert (s.lr_g, s.lr_d, s.stalls, s.decays) == (5e-5, 1e-4, 0, [4])
    # A real improvement resets the count.
    assert [s.observe(m) for m in (0.8, 0.81, 0.79, 0.5)] == [False] * 4
    assert s.best == 0.5 and s.stalls == 0


def test_lr_respects_the_floor():
    s = LRSchedule(lr_g=3e-5, lr_d=3e-5, decay=0.5, floor=2e-5, patience=1, min_delta=0.0)
    s.observe(1.0)
    assert s.observe(1.0) is True and s.lr_g == 2e-5  # 1.5e-5 would be below the floor
    assert s.observe(1.0) is False and s.lr_g == 2e-5  # at the floor: no further change
    assert s.decays == [1]


def test_schedule_state_round_trips_through_json():
    s = LRSchedule(lr_g=1e-4, lr_d=1e-4, patience=2)
    for m in (1.0, 1.0, 1.0, 0.7):
        s.observe(m)
    r = LRSchedule(lr_g=9.0, lr_d=9.0)
    r.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert r == s
    assert [r.observe(0.7), s.observe(0.7)] == [False, False]
    assert r == s


def test_anneal_falls_linearly_to_the_floor_and_stays():
    from began.train.controller import annealed

    lrs = [annealed(2e-4, s, 10, 4, 2e-5) for s in (0, 10, 11, 12, 14, 100)]
    assert lrs == pytest.approx([2e-4, 2e-4, 1.55e-4, 1.1e-4, 2e-5, 2e-5])
    assert annealed(2e-4, 50, 10, 0, 2e-5) == 2e-4  # 0 steps: off
    assert annealed(1e-5, 50, 10, 4, 2e-5) == 1e-5  # already under the floor: left alone
