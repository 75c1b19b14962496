"""Judge training settings by rates over seeds: train each (setting, seed), score its checkpoints
by coverage, append one JSON line per run. Resumable: rerun the same command and finished runs
are skipped, unfinished ones resume (began train resumes a run folder exactly).

    python bench/quality/search.py GRID.json --data fmnist/train --out runs/search [--jobs 2]
    python bench/quality/search.py GRID.json ... --summary      # rates per setting, no training

GRID.json: {"base": ["--preset", "small32", "--steps", "4000"], "seeds": [0, 1, 2],
            "settings": {"recipe": [], "gamma0.5": ["--gamma", "0.5"], "b16": ["--batch-size",
            "16"]}}
Each run trains with `--threads 1 --device cpu --ckpt-every E --keep 100` (E from --every) into
OUT/<setting>-s<seed>; then every checkpoint is scored: on Fashion-MNIST (--classes) by the
classifier of fmnist_coverage.py (classes with >= 5% of --n samples, KL to uniform, cFID), on any
folder by NDB (train/coverage.py: K = 50 k-means bins of --n real images, bins different and
filled). One line per run goes to OUT/results.jsonl with the flags, minutes and the scores at
every checkpoint; `--summary` prints, per setting, how many seeds reached full coverage and the
median KL / NDB at each step. With `--fid REF`, each run's last checkpoint is also scored by
Inception FID, KID and precision/recall against REF (`began eval`, --n samples against --n REF
images, whose features are cached): the final figure, where coverage is the cheap guide.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def train(name: str, flags: list[str], a) -> tuple[int, float]:
    """Train (or resume) one run; returns (exit code, minutes)."""
    cmd = [sys.executable, "-m", "began", "train", str(a.data), "--out", str(a.out / name),
           *flags, "--threads", "1", "--device", "cpu", "--ckpt-every", str(a.every),
           "--keep", "100", "--no-progress"]
    t = time.time()
    with open(a.out / f"{name}.log", "a") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=log,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    return rc, (time.time() - t) / 60


def checkpoint_steps(run: Path) -> list[int]:
    from began.train.checkpoint import list_checkpoints

    return [s for s, _ in list_checkpoints(run / "checkpoints")]


def score_run(run: Path, a) -> dict[str, dict]:
    """Coverage at every checkpoint of a run."""
    import fmnist_coverage as fc

    out = {}
    net = fc.load_classifier(a.classifier) if a.classes else None
    bins = None if a.classes else _bins(a, run)
    for step in checkpoint_steps(run):
        u8 = fc.run_samples(run, step, a.n, a.weights)
        if net is not None:
            grey = fc.grey_u8(u8)
            cov = fc.coverage(fc.predict(net, grey))
            out[str(step)] = {"covered": cov["covered"], "kl": round(cov["kl"], 4),
                              "cfid": round(fc.classifier_fid(net, grey), 3)}
        else:
            r = bins.compare(u8)
            out[str(step)] = {"ndb": r["different"], "bins": r["bins"], "filled": r["covered"],
                              "js": round(r["js"], 4)}
    return out


_BINS: dict = {}  # one k-means fit per preprocessing: runs of a search share their data


def _bins(a, run: Path):
    from began.train.coverage import Bins
    from began.train.data import Preprocess, load_image_folder

    cfg = json.loads((run / "config.json").read_text())
    key = (cfg["model"]["resolution"], cfg["crop"], cfg["background"], cfg["resample"])
    if key in _BINS:
        return _BINS[key]
    pre = Preprocess(resolution=cfg["model"]["resolution"], crop=cfg["crop"],
                     background=cfg["background"], resample=cfg["resample"])
    images = load_image_folder(str(a.data), pre, progress=False).images
    pick = np.random.default_rng(0).choice(len(images), min(a.n, len(images)), replace=False)
    _BINS[key] = Bins.fit(np.asarray(images[np.sort(pick)]), k=50, seed=0)
    return _BINS[key]


def inception(run: Path, step: int, a) -> dict:
    """`began eval` of one checkpoint against --fid's folder: FID, KID, precision, recall."""
    cmd = [sys.executable, "-m", "began", "eval", str(run), "--step", str(step), "--weights",
           a.weights, "--ref", str(a.fid), "-n", str(a.n), "--ref-n", str(a.n), "--device",
           "cpu", "--bins", "0", "--pairs", "10", "--json"]
    r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout)
    return {"step": step, "fid": round(r["fid"], 2), "kid": round(r["kid"]["mean"], 5),
            "precision": r["precision"], "recall": r["recall"]}


def one(name: str, flags: list[str], a) -> dict | None:
    rc, minutes = train(name, flags, a)
    if rc != 0:
        print(f"{name}: began train exited {rc} (see {a.out / name}.log)", flush=True)
        return None
    row = {"run": name, "flags": flags, "minutes": round(minutes, 1),
           "scores": score_run(a.out / name, a)}
    if a.fid:
        row["inception"] = inception(a.out / name, checkpoint_steps(a.out / name)[-1], a)
    print(json.dumps(row), flush=True)
    return row


def rows(results: Path) -> list[dict]:
    return [json.loads(ln) for ln in results.read_text().splitlines() if ln.strip()]


def pending(grid: dict, results: Path) -> list[tuple[str, list[str]]]:
    """(run name, flags) of every (setting, seed) of the grid without a line in results."""
    done = {r["run"] for r in rows(results)} if results.exists() else set()
    return [(f"{name}-s{seed}", [*grid["base"], *extra, "--seed", str(seed)])
            for name, extra in grid["settings"].items() for seed in grid["seeds"]
            if f"{name}-s{seed}" not in done]


def summary(results: Path) -> None:
    if not results.is_file():
        sys.exit(f"no results yet: {results}")
    by_setting: dict[str, list[dict]] = {}
    for r in rows(results):
        by_setting.setdefault(r["run"].rsplit("-s", 1)[0], []).append(r)
    for setting, runs in sorted(by_setting.items()):
        # A rate needs every seed: steps only some runs have (an interrupted run's resume
        # point is a checkpoint too) are left out.
        steps = sorted(set.intersection(*({int(s) for s in r["scores"]} for r in runs)))
        flags = runs[0]["flags"][:-2]  # the last two are this run's --seed N
        print(f"{setting} ({len(runs)} seeds; flags {' '.join(flags)})")
        for step in steps:
            at = [r["scores"][str(step)] for r in runs]
            if "covered" in at[0]:
                full = sum(s["covered"] == 10 for s in at)
                print(f"  step {step:>6}: 10/10 classes in {full} of {len(at)}; classes "
                      f"{[s['covered'] for s in at]}; median KL "
                      f"{statistics.median(s['kl'] for s in at):.3f}"
                      + (f"; median cFID {statistics.median(s['cfid'] for s in at):.2f}"
                         if all("cfid" in s for s in at) else ""))
            else:
                print(f"  step {step:>6}: bins different {[s['ndb'] for s in at]} of "
                      f"{at[0]['bins']}; filled {[s['filled'] for s in at]}")
        inc = [r["inception"] for r in runs if "inception" in r]
        if inc:
            print(f"  Inception FID per seed {[i['fid'] for i in inc]} at steps "
                  f"{[i['step'] for i in inc]}; median "
                  f"{statistics.median(i['fid'] for i in inc):.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("grid", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (one thread each)")
    ap.add_argument("--every", type=int, default=1000, help="steps between scored checkpoints")
    ap.add_argument("-n", type=int, default=2000, help="samples scored per checkpoint")
    ap.add_argument("--classes", action="store_true",
                    help="Fashion-MNIST: score by the classifier, not by NDB")
    ap.add_argument("--classifier", type=Path, default=Path("runs/fmnist_classifier"))
    ap.add_argument("--weights", choices=["auto", "raw", "ema"], default="auto",
                    help="G to score: auto = the EMA of G where the run kept one")
    ap.add_argument("--fid", type=Path, metavar="REF",
                    help="also score each run's last checkpoint by Inception FID against REF")
    ap.add_argument("--summary", action="store_true")
    a = ap.parse_args()
    results = a.out / "results.jsonl"
    if a.summary:
        summary(results)
        return
    a.out.mkdir(parents=True, exist_ok=True)
    todo = pending(json.loads(a.grid.read_text()), results)
    with ThreadPoolExecutor(a.jobs) as pool:
        for row in pool.map(lambda t: one(*t, a), todo):
            if row is not None:
                with open(results, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
