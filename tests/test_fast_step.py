"""The fast step computes the reference step's update (train/step.py).

CPU, fp32: weights, k_t, M_global and every loss after several steps agree with
`began_step` to 1e-5 relative, for each option the step has and each lever that runs
on the CPU. CUDA (skipped without a GPU): bf16 within a stated tolerance, and the
CUDA-graph replay equal to eager execution, including after an lr change.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import warnings

import pytest
import torch

from began.models import build
from began.models.config import ModelConfig
from began.train import fast_step as fs
from began.train.config import TrainConfig
from began.train.fast_step import FastStep, Levers, PlainStep, make_step, set_adam_flags
from began.train.step import began_step

HYPER = dict(gamma=0.5, lambda_k=0.05, k_max=1.0)  # a large lambda_k so k_t moves off 0
LR = 1e-3


def _setup(cfg: ModelConfig, device="cpu", carry=None):
    torch.manual_seed(0)
    G, D = build(cfg)
    G, D = G.to(device), D.to(device)
    if carry is not None:
        G.set_carry(carry), D.set_carry(carry)
    og = torch.optim.Adam(G.parameters(), LR, betas=(0.5, 0.999))
    od = torch.optim.Adam(D.parameters(), LR, betas=(0.5, 0.999))
    return G, D, og, od


def _batches(cfg: ModelConfig, steps: int, z_shared: bool, device="cpu", batch=4):
    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(steps):
        x = torch.rand(batch, 3, cfg.resolution, cfg.resolution, generator=gen) * 2 - 1
        z_g = torch.rand(batch, cfg.z_dim, generator=gen) * 2 - 1
        z_d = z_g if z_shared else torch.rand(batch, cfg.z_dim, generator=gen) * 2 - 1
        out.append((x.to(device), z_d.to(device), z_g.to(device)))
    return out


def _train(step_fn, k0, batches, on_step=None):
    """Run the steps; the stats of each step as rows of (L(x), L(G(z)), L_D, L_cs, k, M)."""
    k, rows = k0, []
    for i, (x, z_d, z_g) in enumerate(batches):
        if on_step:
            on_step(i)
        o = step_fn(x, z_d, z_g, k)
        k = o.k
        rows.append(torch.stack([o.loss_real, o.loss_fake, o.loss_d, o.loss_cs, o.k,
                                 o.m_global]).double().cpu())
    return torch.stack(rows)


def _weights(G, D):
    return torch.cat([p.detach().double().flatten().cpu()
                      for p in (*G.parameters(), *D.parameters())])


def _run(cfg: ModelConfig, *, fast: bool, levers: Levers | None = None, steps=5,
         z_shared=False, cs_alpha=0.0, eta=1, carry=None, device="cpu"):
    G, D, og, od = _setup(cfg, device, carry)
    w0 = _weights(G, D)
    hyper = dict(HYPER, eta=eta, z_shared=z_shared, cs_alpha=cs_alpha)
    if fast:
        fn = FastStep(G, D, og, od, levers=levers or Levers(), **hyper)
    else:
        def fn(x, z_d, z_g, k):
            return began_step(G, D, og, od, x, z_d, z_g, k, **hyper)
    k0 = torch.tensor(0.0, device=device)
    stats = _train(fn, k0, _batches(cfg, steps, z_shared, device))
    return _weights(G, D), stats, w0


def _assert_close(ref, got, rtol: float, what: str):
    scale = ref.abs().max().clamp_min(1e-12)
    err = (ref - got).abs().max() / scale
    assert err <= rtol, f"{what}: max relative difference {err:.3g} > {rtol}"


SMALL = ModelConfig(resolution=16, n=8, z_dim=8, h_dim=8)

OPTIONS = {
    "plain paper": (SMALL, {}),
    "z_shared": (SMALL, dict(z_shared=True)),
    "BEGAN-CS": (SMALL, dict(cs_alpha=0.1)),
    "BEGAN-CS z_shared": (SMALL, dict(cs_alpha=0.1, z_shared=True)),
    "eta 2": (SMALL, dict(eta=2)),
    "skip": (dataclasses.replace(SMALL, skip=True, resolution=32), {}),
    "vanishing residual": (dataclasses.replace(SMALL, vanishing_residual=True),
                           dict(carry=0.6)),
    "out_tanh": (dataclasses.replace(SMALL, out_tanh=True), {}),
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_fast_step_matches_reference_for_every_option(name):
    cfg, kw = OPTIONS[name]
    w_ref, s_ref, w0 = _run(cfg, fast=False, **kw)
    w_fast, s_fast, _ = _run(cfg, fast=True, **kw)
    # The test can fail: training moved the weights far more than the tolerance,
    # and the controller moved k_t off its start.
    assert (w_ref - w0).abs().max() > 1e-3 * w_ref.abs().max()
    assert s_ref[-1, 4] > 0
    if kw.get("cs_alpha"):
        assert (s_ref[:, 3] > 0).all()
    _assert_close(w_ref, w_fast, 1e-5, "weights")
    for col, what in enumerate(("L(x)", "L(G(z))", "L_D", "L_cs", "k_t", "M_global")):
        _assert_close(s_ref[:, col], s_fast[:, col], 1e-5, what)


@pytest.mark.parametrize("levers,z_shared", [
    (Levers(one_g_pass=False, d_passes=3, adam="plain"), False),
    (Levers(one_g_pass=True, d_passes=3), False),
    (Levers(one_g_pass=False, d_passes=1), False),
    (Levers(d_passes=2), False),
    (Levers(d_passes=2), True),
    (Levers(d_passes=3), True),
    (Levers(adam="fused"), False),
    (Levers(channels_last=True), False),
], ids=["all-off", "g-pass", "d-pass", "two-d-passes", "two-d-passes-z-shared",
        "three-d-passes-z-shared", "fused-adam", "channels-last"])
def test_each_cpu_lever_matches_reference(levers, z_shared):
    w_ref, s_ref, _ = _run(SMALL, fast=False, cs_alpha=0.1, z_shared=z_shared)
    w_fast, s_fast, _ = _run(SMALL, fast=True, levers=levers, cs_alpha=0.1, z_shared=z_shared)
    # channels_last runs other conv kernels, whose rounding differs by CPU (4.8e-5 on an AVX2
    # EPYC, under 1e-5 on an AVX-512 Xeon) and Adam's normalised steps carry it into the
    # weights; a wrong layout would differ by O(1)
    rtol = 2e-4 if levers.channels_last else 1e-5
    _assert_close(w_ref, w_fast, rtol, "weights")
    _assert_close(s_ref, s_fast, rtol, "stats")


def test_levers_are_checked():
    with pytest.raises(ValueError):
        Levers(d_passes=4)
    with pytest.raises(ValueError):
        Levers(adam="sgd")


def test_cuda_levers_are_off_on_the_cpu():
    G, D, og, od = _setup(SMALL)
    step = FastStep(G, D, og, od, levers=Levers.for_device("cuda"), **HYPER)
    assert not (step.levers.bf16 or step.levers.cuda_graph or step.levers.tf32
                or step.levers.cudnn_benchmark)


def _cfg(**kw) -> TrainConfig:
    return TrainConfig().replace(resolution=16, n=8, z_dim=8, h_dim=8, **kw)


@pytest.mark.parametrize("option", [dict(alternating=True), dict(augment="translation"),
                                    dict(instance_noise=0.1), dict(pullaway=0.1),
                                    dict(cs_g=0.1)],
                         ids=lambda o: next(iter(o)))
def test_options_the_fast_step_lacks_fall_back(option):
    G, D, og, od = _setup(SMALL)
    logs: list[str] = []
    step = make_step(_cfg(fast_step="on", **option), G, D, og, od, torch.device("cpu"),
                     log=logs.append)
    assert isinstance(step, PlainStep)
    assert len(logs) == 1 and next(iter(option)) in logs[0]


def test_make_step_modes_and_messages():
    G, D, og, od = _setup(SMALL)
    logs: list[str] = []
    dev = torch.device("cpu")
    assert isinstance(make_step(_cfg(), G, D, og, od, dev, log=logs.append), PlainStep)
    assert logs == []  # auto on the CPU: the reference, silently
    step = make_step(_cfg(fast_step="on"), G, D, og, od, dev, log=logs.append)
    assert isinstance(step, FastStep)
    assert len(logs) == 1 and "one_g_pass" in logs[0] and "foreach" in logs[0]
    with pytest.raises(ValueError):
        make_step(_cfg(fast_step="sometimes"), G, D, og, od, dev)


def test_unsupported_option_falls_back_and_says_so(monkeypatch):
    # Pretend the fast path knew nothing of BEGAN-CS: a non-default value must then
    # select the reference step, with one message naming the field.
    monkeypatch.setattr(fs, "SUPPORTED_TRAIN", fs.SUPPORTED_TRAIN - {"cs_alpha"})
    monkeypatch.setattr(fs, "SUPPORTED_MODEL", fs.SUPPORTED_MODEL - {"skip"})
    G, D, og, od = _setup(SMALL)
    logs: list[str] = []
    cfg = _cfg(fast_step="on", cs_alpha=0.1, skip=True)
    assert fs.unsupported_options(cfg) == ["cs_alpha=0.1", "model.skip=True"]
    step = make_step(cfg, G, D, og, od, torch.device("cpu"), log=logs.append)
    assert isinstance(step, PlainStep)
    assert len(logs) == 1 and "cs_alpha=0.1" in logs[0] and "reference" in logs[0]
    # Default values of unsupported fields do not matter.
    assert fs.unsupported_options(_cfg(fast_step="on")) == []


def test_every_config_field_is_judged():
    """A field that is on no allow-list is reported as soon as it leaves its default; and
    the lists name only fields that exist (a typo would silently allow nothing)."""
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    assert fs.SUPPORTED_TRAIN <= train_fields
    assert fs.SUPPORTED_MODEL <= model_fields


def test_plain_step_resets_flags_a_fast_checkpoint_carried():
    G, D, og, od = _setup(SMALL)
    set_adam_flags(og, foreach=True, fused=True, capturable=True)
    step = PlainStep(G, D, og, od, **HYPER)
    (x, z_d, z_g), = _batches(SMALL, 1, False)
    step(x, z_d, z_g, torch.tensor(0.0))
    g = og.param_groups[0]
    assert (g["foreach"], g["fused"], g["capturable"]) == (None, None, False)
    assert og.state[G.fc.weight]["step"].device.type == "cpu"


# --- CUDA ---------------------------------------------------------------------------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
PAPER64 = ModelConfig()  # 64x64, n = 64, N_z = N_h = 64


@pytest.fixture
def cuda_globals():
    """The fast step sets process-wide switches (TF32 matmuls, cuDNN benchmark); put
    them back so each test sees PyTorch's defaults."""
    saved = (torch.get_float32_matmul_precision(), torch.backends.cudnn.benchmark,
             torch.backends.cudnn.allow_tf32)
    yield
    torch.set_float32_matmul_precision(saved[0])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32 = saved[1:]


@cuda
def test_cuda_graph_matches_eager(cuda_globals):
    """Same levers (fp32, fused Adam), graph replay against eager execution: the same
    kernels on the same data; cuDNN's weight-gradient kernels may sum in another order
    between the two, so 1e-5 relative, as on the CPU."""
    eager = Levers(cuda_graph=False, tf32=False)
    graph = Levers(cuda_graph=True, tf32=False)
    lr_change = {}

    def run(lv):
        G, D, og, od = _setup(PAPER64, "cuda")
        step = FastStep(G, D, og, od, levers=lv, **HYPER)

        def decay(i):  # the schedule halves the lr mid-run: the graph must see it
            if i == 3:
                for opt in (og, od):
                    for group in opt.param_groups:
                        group["lr"] = LR / 2

        stats = _train(step, torch.tensor(0.0, device="cuda"),
                       _batches(PAPER64, 6, False, "cuda", 16), decay)
        lr_change[lv.cuda_graph] = og.param_groups[0]["lr"]
        return _weights(G, D), stats

    w_e, s_e = run(eager)
    w_g, s_g = run(graph)
    assert lr_change[True] == LR / 2  # param groups keep plain floats (checkpoint JSON)
    _assert_close(w_e, w_g, 1e-5, "weights")
    _assert_close(s_e, s_g, 1e-5, "stats")


@cuda
def test_cuda_fp32_fast_matches_reference(cuda_globals):
    """fp32 throughout (cuDNN's default TF32 convolutions off): the fast step with
    channels_last and the graph against the reference. cuDNN picks other kernels for other
    batch sizes and layouts, so sums run in another order: 1e-4 relative."""
    torch.backends.cudnn.allow_tf32 = False
    ref = _run(PAPER64, fast=False, device="cuda", steps=3)
    got = _run(PAPER64, fast=True, device="cuda", steps=3,
               levers=Levers(tf32=False, channels_last=True, cuda_graph=True))
    _assert_close(ref[0], got[0], 1e-4, "weights")
    _assert_close(ref[1], got[1], 1e-4, "stats")


@cuda
def test_cuda_bf16_within_stated_tolerance(cuda_globals):
    """bf16 keeps 8 bits of mantissa (relative rounding 2^-9 ~ 2e-3 per operation); the
    errors and means are taken in fp32, so each loss, k_t and M_global of one step from
    the same weights should agree with fp32 to 2e-2 relative. The first Adam update is
    lr * sign(gradient) elementwise, so the update vectors must point the same way:
    cosine similarity >= 0.9 (a wrong loss or gradient gives ~0)."""
    ref = _run(PAPER64, fast=False, device="cuda", steps=1)
    got = _run(PAPER64, fast=True, device="cuda", steps=1, levers=Levers.for_device("cuda"))
    for col, what in ((0, "L(x)"), (1, "L(G(z))"), (5, "M_global")):
        _assert_close(ref[1][:, col], got[1][:, col], 2e-2, what)
    assert abs(float(ref[1][0, 4] - got[1][0, 4])) <= 2e-2 * HYPER["lambda_k"]  # k_t
    du_ref, du_got = ref[0] - ref[2], got[0] - got[2]
    cos = torch.nn.functional.cosine_similarity(du_ref, du_got, dim=0)
    assert cos >= 0.9, f"bf16 update direction cosine {cos:.3f}"


# --- the training loop ----------------------------------------------------------------------
def _train_run(folder, out, **kw):
    from began.train.loop import train

    cfg = TrainConfig().replace(data_dir=str(folder), resolution=16, n=8, z_dim=8, h_dim=8,
                                batch_size=4, steps=12, log_every=4, sample_every=12,
                                ckpt_every=6, n_samples=4, lr_window=4, lr_patience=1, **kw)
    logs: list[str] = []
    result = train(cfg, out, device="cpu", progress=False, log=logs.append)
    rows = [json.loads(line) for line in (out / "stats.jsonl").open()]
    return result, rows, logs


def test_began_train_with_the_fast_step_matches_the_reference(image_folder, tmp_path,
                                                               monkeypatch):
    """A whole `began train` (12 steps, an lr decay, a checkpoint, a resume) with
    fast_step=on logs the same k_t, M_global and losses as the reference, and never reads
    a value back to the host inside a step (Tensor.item/tolist/__float__ are counted)."""
    ref, ref_rows, ref_logs = _train_run(image_folder, tmp_path / "ref", fast_step="off")
    assert not any("fast step" in m for m in ref_logs)

    reads = {"n": 0}
    from began.train import fast_step as module

    real_step = module.FastStep._step

    def counting_step(self, *a):
        before = reads["n"]
        out = real_step(self, *a)
        assert reads["n"] == before, "a host read inside the fast step"
        return out

    for name in ("item", "tolist", "__float__", "__bool__"):
        orig = getattr(torch.Tensor, name)

        def wrapped(self, *a, _orig=orig):
            # Adam's step counter lives on the host unless capturable (fused, graphs), so
            # its bias correction reads it without a device sync: not counted.
            if sys._getframe(1).f_code.co_name != "_get_value":
                reads["n"] += 1
            return _orig(self, *a)

        monkeypatch.setattr(torch.Tensor, name, wrapped)
    monkeypatch.setattr(module.FastStep, "_step", counting_step)
    fast, rows, logs = _train_run(image_folder, tmp_path / "fast", fast_step="on")
    monkeypatch.undo()
    assert sum("fast step:" in m for m in logs) == 1
    assert [r["step"] for r in rows] == [r["step"] for r in ref_rows] == [4, 8, 12]
    for a, b in zip(ref_rows, rows):
        for key in ("loss_real", "loss_fake", "loss_d", "m_global", "k"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), key
    assert fast.k == pytest.approx(ref.k, rel=1e-5, abs=1e-7)

    # Resume the fast run from its step-6 checkpoint with the reference step: it goes on
    # from the same state (the Adam flags the fast step set do not leak into it).
    for p in (tmp_path / "fast" / "checkpoints").glob("ckpt-*12*"):
        p.unlink()
    again, rows2, _ = _train_run(image_folder, tmp_path / "fast", fast_step="off")
    assert again.resumed_from == 6
    assert rows2[-1]["k"] == pytest.approx(ref_rows[-1]["k"], rel=1e-5, abs=1e-7)
    assert rows2[-1]["m_global"] == pytest.approx(ref_rows[-1]["m_global"], rel=1e-5)


def _count_syncs(fn) -> list[str]:
    """Run fn with CUDA's sync debug mode on: the synchronizing calls it made."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return [str(w.message) for w in caught if "synchroniz" in str(w.message)]


@cuda
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "graph"])
def test_cuda_fast_step_never_syncs(graph, cuda_globals):
    """After its first call (graph capture, cuDNN tuning), a step is device work only."""
    G, D, og, od = _setup(PAPER64, "cuda")
    step = FastStep(G, D, og, od, levers=dataclasses.replace(Levers.for_device("cuda"),
                                                             cuda_graph=graph), **HYPER)
    batches = _batches(PAPER64, 6, False, "cuda", 16)
    k = torch.tensor(0.0, device="cuda")
    out = step(*batches[0], k)

    def rest():
        o = out
        for x, z_d, z_g in batches[1:]:
            o = step(x, z_d, z_g, o.k)

    assert _count_syncs(rest) == []


@cuda
def test_cuda_training_steps_do_not_sync(image_folder, tmp_path, monkeypatch, cuda_globals):
    """`began train` on CUDA: between log rows a step (the batch, z, the step, the logged
    sums, the hooks) never waits for the GPU, so k_t and M_global are logged without a
    host sync per step (issue #12)."""
    from began.train import loop

    real, syncs = loop._one_step, []

    def watched(state, step_fn, hooks):
        if state.step < 3:  # graph capture and cuDNN tuning happen here
            return real(state, step_fn, hooks)
        syncs.extend(_count_syncs(lambda: real(state, step_fn, hooks)))

    monkeypatch.setattr(loop, "_one_step", watched)
    cfg = TrainConfig().replace(data_dir=str(image_folder), resolution=16, n=8, z_dim=8,
                                h_dim=8, batch_size=4, steps=20, log_every=10, ckpt_every=20,
                                sample_every=20, n_samples=4)
    logs: list[str] = []
    loop.train(cfg, tmp_path / "run", device="cuda", progress=False, log=logs.append)
    assert any(m.startswith("fast step:") for m in logs)
    assert syncs == [], f"{len(syncs)} host syncs in 17 steps, e.g. {syncs[0]}"
