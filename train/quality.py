"""Quality tracked while training: a collapse signal every `eval_every` steps.

Mode collapse is BEGAN's usual failure, and its losses do not show it (M_global
keeps falling while G draws one image). So every `eval_every` steps the tracker
looks at what G draws for a fixed batch of z and compares its spread with a
fixed batch of real images:

    div_pixel   mean pairwise L2 distance of G(z) (clipped to [-1, 1]) / the same for the reals
    div_latent  the same ratio on D's codes D.encode(.) of the two batches
    bins_covered  of the `bins` k-means bins of the real batch (train/coverage.py, fitted
                once), how many hold at least half their real share of G(z)
    ndb         the share of those bins whose share of G(z) differs significantly from the
                reals' (NDB / K, Richardson and Weiss 2018; about 0.05 for samples like the data)
    kid         KID x 1000 against the reals' Inception features (on CUDA by default; the
                features and KID of `began eval`, train/inception.py and train/metrics.py)

About 1 means the samples vary as much as the data; near 0 means one image for
every z. The signal (the `quality` column) is min(div_pixel, div_latent,
bins_covered / bins): collapse shows in both spaces, noise that is spread in pixels
but means nothing to D shows in the latent one, and a G that draws varied images of
only some kinds of the data (spread enough to pass the distances) leaves the other
kinds' bins empty. So the run counts as collapsed when its samples fill less than
`collapse_threshold` (a quarter) of the bins the reals fill, the reals filling all of
them by construction; one image for every z fills 1 of 16. A fresh G draws one flat
image for every z, so the signal is judged only once it has reached
`collapse_threshold` (the run took off) or from 25% of --steps on. Below the threshold after that, the log says "collapse at step
N" once, and with `stop_on_collapse` the run ends there (exit 0, a checkpoint
written); a resumed run with the flag stops again at its next collapsed evaluation.

Bins: K = `eval_bins` (16) but at most one per `REALS_PER_BIN` (10) real images, and
none under 2. With the default 256 images, 16 bins hold 16 reals each on average:
enough for the z-test to flag an emptied bin (16 against 0 is z = 4) and for a
covered bin to be told from an empty one by chance alone (fewer than 8 of an
expected 16 is rare), which 50 bins of 5 would not be. On Fashion-MNIST (256 vs 256,
K = 16, 3 k-means seeds): disjoint test images fill 15-16 bins with 0-2 different;
one class alone fills 3-6; six of the ten classes 8-9; the previous embedded model (3 classes)
4-5 with 15 different; one image 1.

"Best" (the checkpoint kept apart as checkpoints/ckpt-best.safetensors, never
pruned): with KID, the lowest KID; without it, the evaluation with the most bins
covered, and among evaluations tied on that, the newest whose score
min(div_pixel, div_latent, 1) is within `BEST_SLACK` of the highest seen at that
coverage. Capping at 1 stops noisier-than-data samples from winning, and the slack
prefers the more trained of two about-equally diverse checkpoints (later ones are
sharper) while never following the run down into a collapse. With the bins off
(eval_bins 0, or too few eval samples) the diversity rule alone decides.

The z-batch comes from its own generator, the reals and the k-means seeding from
their own numpy rngs: an evaluation draws nothing from the training streams, so runs
resume bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from began.models import sampling

from . import coverage
from .checkpoint import BEST_NAME
from .config import TrainConfig

# A fresh G draws near-constant images for its first ~1k steps (measured on Fashion-MNIST
# 32x32: 0.01-0.07 up to step 750-933, then 0.32 at step 1000 and 0.30-0.45 up to step 4500
# in a run that learned), which would read as collapse. So evaluations are judged only once the signal has
# first reached the threshold (the run took off), or from this fraction of --steps on
# (a run that never takes off has collapsed too).
WARMUP_FRACTION = 0.25
BEST_SLACK = 0.05
EVALS_PER_RUN = 20  # eval_every = -1: about this many evaluations over --steps
AUTO_MIN_STEPS = 1000  # ... and none in shorter runs (pipeline checks; G is still flat there)
BATCH = 128  # images per forward pass during an evaluation (bounds its memory)
KID_BATCH = 64  # images per Inception pass (299x299 inputs)
KID_SUBSETS = 10  # of all rows: they differ only when the real batch is the smaller one
REALS_PER_BIN = 10  # the tracker's k-means bins: at most one per this many real images
# G stuck on one flat image from the start (often the folder's background colour, which
# D reconstructs at no cost while k_t = 0): a k_0 > 0 has D push fakes off from step 0
# (32x32, n 32, N_z 64: flat black/white for 1,000-3,300 steps at k_0 = 0, shapes by
# step 500-1,000 at k_0 = 0.3; bench/quality/README.md).
NEVER_TOOK_OFF = ("; G never took off (it still draws about one image for every z): "
                  "--k-init 0.3 got such runs started")


def eval_interval(cfg: TrainConfig) -> int:
    """Steps between evaluations: cfg.eval_every, or when it is -1 (auto) about steps/20
    rounded up to a whole number of log rows (off under 1,000 steps); 0 is off."""
    if cfg.eval_every >= 0:
        return cfg.eval_every
    if cfg.steps < AUTO_MIN_STEPS:
        return 0
    rows = max(1, math.ceil(cfg.steps / EVALS_PER_RUN / cfg.log_every))
    return rows * cfg.log_every


def warmup_steps(cfg: TrainConfig) -> int:
    return int(cfg.steps * WARMUP_FRACTION)


def mean_pairwise_distance(v: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean distance over all pairs of rows (each row flattened), in float64."""
    v = v.flatten(1).double()
    if len(v) < 2:
        return torch.tensor(float("nan"), dtype=torch.float64, device=v.device)
    return torch.pdist(v).mean()


def diversity_ratio(samples: torch.Tensor, reals: torch.Tensor) -> float:
    """Spread of `samples` over the spread of `reals`: about 1 when both come from the same
    distribution, 0 when every sample is the same."""
    return float(mean_pairwise_distance(samples) / mean_pairwise_distance(reals))


def score_of(row: dict[str, Any]) -> float:
    """The collapse signal: min(div_pixel, div_latent, bins_covered / bins) (the last only
    when the row has bins)."""
    return min(diversity_of(row), coverage_of(row))


def diversity_of(row: dict[str, Any]) -> float:
    """The diversity score that breaks ties between equally covering evaluations."""
    return min(row["div_pixel"], row["div_latent"])


def coverage_of(row: dict[str, Any]) -> float:
    """The share of the real batch's bins that G(z) fills; inf when not measured."""
    return row["bins_covered"] / row["bins"] if "bins_covered" in row else math.inf


def tracker_bins(cfg: TrainConfig, n: int) -> int:
    """K for an evaluation of n images: eval_bins, at most n / REALS_PER_BIN; 0 (off)
    under 2."""
    k = min(cfg.eval_bins, n // REALS_PER_BIN)
    return k if k >= 2 else 0


def _batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return torch.cat([fn(x[i:i + BATCH]) for i in range(0, len(x), BATCH)])


@dataclass
class Verdict:
    """What one evaluation means for the run."""

    row: dict[str, Any]  # stats.jsonl columns: div_pixel, div_latent (bins..., kid)
    best: bool = False  # write this state as the best checkpoint
    collapsed: bool = False  # under the threshold, once judged (see WARMUP_FRACTION)
    first: bool = False  # ... for the first time in this run (said in the log)
    message: str | None = None  # say this in the log


@dataclass
class QualityState:
    """Kept in every checkpoint so a resumed run judges exactly as an unbroken one."""

    best_step: int | None = None
    best_value: float | None = None  # the highest diversity score seen (or lowest KID)
    best_by: str = "diversity"  # or "kid", or "bins" (most bins covered, then diversity)
    best_coverage: float | None = None  # by "bins": the highest coverage_of seen
    collapse_step: int | None = None
    live_step: int | None = None  # the first evaluation at or above the threshold

    def to_dict(self) -> dict[str, Any]:
        return {"best_step": self.best_step, "best_value": self.best_value,
                "best_by": self.best_by, "collapse_step": self.collapse_step,
                "live_step": self.live_step, "best_coverage": self.best_coverage}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "QualityState":
        d = d or {}
        return cls(best_step=d.get("best_step"), best_value=d.get("best_value"),
                   best_by=d.get("best_by", "diversity"), collapse_step=d.get("collapse_step"),
                   live_step=d.get("live_step"), best_coverage=d.get("best_coverage"))


class QualityTracker:
    """The evaluation's fixed inputs (z, reals) and its judgement over the run.

    `kid` is an optional callable (fake images in [-1, 1] on the device) -> KID, made by
    `kid_scorer` when KID is on; it owns the reals' cached Inception features."""

    def __init__(self, cfg: TrainConfig, images: np.ndarray, device: torch.device,
                 kid: Callable[[torch.Tensor], float] | None = None, by_kid: bool = False):
        self.cfg, self.device, self.kid = cfg, device, kid
        self.warmup = warmup_steps(cfg)
        self.threshold = cfg.collapse_threshold
        n = min(cfg.eval_samples, len(images))
        self.z = (torch.rand(n, cfg.model.z_dim, generator=torch.Generator().manual_seed(
            cfg.seed + 4)) * 2 - 1).to(device)
        # A seeded random choice (not the first files): classes mix in any folder layout.
        pick = np.sort(np.random.default_rng(cfg.seed + 5).choice(len(images), n, replace=False))
        u8 = torch.from_numpy(np.ascontiguousarray(images[pick]))
        self.reals = u8.permute(0, 3, 1, 2).float().div(127.5).sub(1.0).to(device)
        self.real_pixel = mean_pairwise_distance(self.reals)  # fixed: computed once
        k = tracker_bins(cfg, n)  # fitted once, from its own rng, on the same real batch
        self.bins = coverage.Bins.fit(images[pick], k, seed=cfg.seed + 6) if k else None
        # The same on every rank (only rank 0 holds the KID scorer and measures).
        self.best_by = ("kid" if (by_kid or kid is not None) else
                        "bins" if self.bins is not None else "diversity")
        self.state = QualityState(best_by=self.best_by)

    def restore(self, saved: dict[str, Any] | None) -> None:
        """The state a checkpoint held; a best measured another way starts over."""
        self.state = QualityState.from_dict(saved)
        if self.state.best_by != self.best_by:
            self.state = QualityState(collapse_step=self.state.collapse_step,
                                      live_step=self.state.live_step, best_by=self.best_by)

    @torch.no_grad()
    def measure(self, G: nn.Module, D: nn.Module) -> dict[str, float]:
        """The signal for the current weights (no RNG drawn, no gradient, no state changed)."""
        with sampling(G, D):  # BatchNorm: running statistics, and none updated here
            fake = _batched(G, self.z).float().clamp_(-1.0, 1.0)
            h_fake = _batched(D.encode, fake)
            h_real = _batched(D.encode, self.reals)
        row = {"div_pixel": float(mean_pairwise_distance(fake) / self.real_pixel),
               "div_latent": diversity_ratio(h_fake, h_real)}
        if self.bins is not None:
            row.update(self.coverage(fake))
        if self.kid is not None:
            row["kid"] = float(self.kid(fake))
        return {k: round(v, 5) for k, v in row.items()}

    def coverage(self, fake: torch.Tensor) -> dict[str, float]:
        """ndb, bins_covered and bins of images in [-1, 1] against the fitted real bins."""
        c = self.bins.compare(fake.permute(0, 2, 3, 1).cpu().numpy())
        return {"ndb": c["ndb_k"], "bins_covered": c["covered"], "bins": c["bins"]}

    def judge(self, step: int, row: dict[str, float]) -> Verdict:
        """Collapse and best from one evaluation; updates the tracker's state."""
        v = Verdict(row=row)
        st = self.state
        if not all(math.isfinite(x) for x in row.values()):
            return v
        signal = score_of(row)
        if st.live_step is None:
            if signal >= self.threshold:
                st.live_step = step
            elif step < self.warmup:  # not taken off yet: too early to call it
                return v
        v.collapsed = signal < self.threshold
        if v.collapsed and st.collapse_step is None:
            st.collapse_step = step
            v.first = True
            best = ("no best checkpoint yet" if st.best_step is None else
                    f"the best checkpoint is step {st.best_step}")
            bins = (f", and fill {row['bins_covered']} of the real images' {row['bins']} "
                    "k-means bins" if "bins_covered" in row else "")
            v.message = (f"collapse at step {step}: samples vary {row['div_pixel']:.2f}x as "
                         f"much as real images in pixels and {row['div_latent']:.2f}x in D's "
                         f"latent space{bins} (threshold {self.threshold:g}); {best}")
            if st.live_step is None and self.cfg.k_init == 0:
                v.message += NEVER_TOOK_OFF
        if v.collapsed:  # a collapsed state is never "best"
            return v
        if st.best_by == "kid" and "kid" in row:  # lower is better
            if st.best_value is None or row["kid"] <= st.best_value:
                st.best_value, st.best_step, v.best = row["kid"], step, True
            return v
        if st.best_by == "bins" and "bins_covered" in row:
            # a share, not a count, so a resume with another eval_bins still compares
            covered = coverage_of(row)
            if st.best_coverage is not None and covered < st.best_coverage:
                return v  # fewer kinds of image than the best: never better
            if st.best_coverage is None or covered > st.best_coverage:  # a new level
                st.best_coverage, st.best_value = covered, None
        v.best = self._best_by_diversity(step, diversity_of(row))
        return v

    def _best_by_diversity(self, step: int, diversity: float) -> bool:
        """The newest within BEST_SLACK of the highest capped diversity seen is best."""
        st, capped = self.state, min(diversity, 1.0)
        if st.best_value is not None and capped < st.best_value - BEST_SLACK:
            return False
        st.best_step = step
        st.best_value = capped if st.best_value is None else max(st.best_value, capped)
        return True

    def evaluate(self, step: int, G: nn.Module, D: nn.Module) -> Verdict:
        return self.judge(step, self.measure(G, D))


def kid_wanted(cfg: TrainConfig, device: torch.device) -> bool:
    """`eval_kid`: on, off, or auto (on CUDA only: Inception on the CPU costs 0.2-0.4 s
    an image on a 2-core machine, far more than the rest of an evaluation)."""
    return cfg.eval_kid == "on" or (cfg.eval_kid == "auto" and device.type == "cuda")


def kid_scorer(reals: torch.Tensor, device: torch.device, log: Callable[[str], None]
               ) -> Callable[[torch.Tensor], float] | None:
    """KID x 1000 of generated images (in [-1, 1], on the device) against `reals`, whose
    Inception features are computed once here; None when the network is not installed
    (then "best" falls back to diversity). Uses helper E's train/inception.py and
    train/metrics.py, the same features and KID as `began eval`."""
    try:
        from . import metrics
        from .inception import Inception, NetworkMissing
    except ImportError as e:
        log(f"warning: KID tracking is off ({e})")
        return None
    try:
        net = Inception(str(device))
    except NetworkMissing as e:
        log(f"warning: KID tracking is off ({e})")
        return None

    def features(x: torch.Tensor) -> np.ndarray:
        parts = [net.features_torch(x[i:i + KID_BATCH]) for i in range(0, len(x), KID_BATCH)]
        return torch.cat(parts).cpu().numpy()

    real_f = features(reals)

    def kid(fake: torch.Tensor) -> float:
        mean, _ = metrics.kid(real_f, features(fake), subsets=KID_SUBSETS,
                              subset_size=len(real_f), seed=0)
        return 1000.0 * mean

    return kid


__all__ = ["BEST_NAME", "QualityState", "QualityTracker", "Verdict",
           "coverage_of", "diversity_of", "diversity_ratio", "eval_interval", "kid_scorer",
           "mean_pairwise_distance", "score_of", "tracker_bins"]
