"""Data-parallel training on the CPU (gloo): two ranks stay identical and match one
process on the same global batch; checkpoints move between DDP and one process."""

import importlib.util
import multiprocessing as mp
import os
import shutil
import socket
import subprocess

import pytest
import torch

from began.train.checkpoint import load_checkpoint
from began.train.config import preset

# The stated tolerance: two half-batch means averaged in a different order than one
# full-batch mean, through 12 Adam steps, stays within float32 rounding noise.
WEIGHT_TOL = 1e-5


def config(folder, steps):
    return preset("smoke").replace(data_dir=str(folder), steps=steps, batch_size=8,
                                   log_every=3, ckpt_every=6, sample_every=6, keep=5,
                                   lr_window=4, lr_patience=1, lr_min_delta=0.5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank, world, port, cfg, out, queue):
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from began.train.loop import train

    try:
        r = train(cfg, out, device="cpu", progress=False, log=lambda m: None)
        queue.put((rank, r.weights_sha256, r.k, r.step, None))
    except BaseException as e:  # report, do not hang the test
        queue.put((rank, None, None, None, repr(e)))


def run_ddp(cfg, out, world=2):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_rank, args=(r, world, port, cfg, str(out), queue))
             for r in range(world)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=240) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert all(err is None for *_, err in results), results
    return results


def run_single(cfg, out):
    from began.train.loop import train

    return train(cfg, out, device="cpu", progress=False, log=lambda m: None)


@pytest.fixture(scope="module")
def ddp_run(image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    results = run_ddp(config(image_folder, 12), out)
    return out, results


def test_ranks_end_identical(ddp_run):
    _, results = ddp_run
    (r0, sha0, k0, step0, _), (r1, sha1, k1, step1, _) = results
    assert (r0, r1) == (0, 1) and step0 == step1 == 12
    assert sha0 == sha1 and k0 == k1 and k0 > 0


def test_only_rank_zero_writes(ddp_run):
    out, _ = ddp_run
    # The lock is rank 0's (one writer per folder); TensorBoard events when it is installed.
    board = ["tensorboard"] if importlib.util.find_spec("tensorboard") else []
    assert sorted(p.name for p in out.iterdir()) == [
        ".began-train.lock", "checkpoints", "config.json", "data.json", "samples",
        "stats.jsonl", *board]
    assert len(list((out / "tensorboard").iterdir()) if board else []) == len(board)
    assert [r.split('"step": ')[1].split(",")[0]
            for r in (out / "stats.jsonl").read_text().splitlines()] == ["3", "6", "9", "12"]


def test_matches_one_process_on_the_same_global_batch(ddp_run, image_folder, tmp_path):
    out, _ = ddp_run
    single = tmp_path / "single"
    run_single(config(image_folder, 12), single)
    (t_ddp, s_ddp) = load_checkpoint(out / "checkpoints" / "ckpt-00000012.safetensors")
    (t_one, s_one) = load_checkpoint(single / "checkpoints" / "ckpt-00000012.safetensors")
    assert s_ddp["lr_schedule"]["decays"] == s_one["lr_schedule"]["decays"]
    assert s_ddp["lr_schedule"]["decays"], "the lr schedule should act in this run"
    for key in t_one:
        if key.startswith(("G.", "D.", "ctl.")):
            diff = (t_ddp[key].double() - t_one[key].double()).abs().max().item()
            assert diff <= WEIGHT_TOL, (key, diff)
    assert torch.equal(t_ddp["data.perm"], t_one["data.perm"])  # same data order


def test_ddp_checkpoint_resumes_in_one_process_and_back(ddp_run, image_folder, tmp_path):
    out = tmp_path / "moved"
    shutil.copytree(ddp_run[0], out)
    r = run_single(config(image_folder, 15), out)
    assert r.resumed_from == 12 and r.step == 15
    results = run_ddp(config(image_folder, 18), out)
    assert [res[3] for res in results] == [18, 18] and results[0][1] == results[1][1]


def test_global_batch_must_split_over_ranks(image_folder, tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    cfg = config(image_folder, 3).replace(batch_size=7)
    procs = [ctx.Process(target=_rank, args=(r, 2, port, cfg, str(tmp_path / "x"), queue))
             for r in range(2)]
    for p in procs:
        p.start()
    errors = [queue.get(timeout=120)[4] for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert all("does not split over 2 ranks" in e for e in errors), errors


def test_torchrun_command(image_folder, tmp_path):
    torchrun = shutil.which("torchrun")
    assert torchrun, "torchrun comes with torch"
    began = shutil.which("began")
    out = tmp_path / "run"
    r = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", began, "train",
                        str(image_folder), "--out", str(out), "--preset", "smoke", "--device",
                        "cpu", "--steps", "4", "--log-every", "2", "--no-progress"],
                       capture_output=True, text=True, timeout=240,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("done: step 4") == 1  # rank 0 alone reports
    assert (out / "checkpoints" / "ckpt-00000004.safetensors").exists()
