"""The training configuration: one visible block of defaults, presets, and the
rule for what may change when a run is resumed.

Torch-free, so `began train --dry-run` and `--help` stay fast.
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass, field, fields
from collections.abc import Collection
from typing import Any

from began.models.config import JsonConfig, ModelConfig, opt

AUGMENTATIONS = ("color", "translation", "cutout")  # DiffAugment's; train/augment.py


@dataclass(frozen=True)
class TrainConfig(JsonConfig):
    # --- data -----------------------------------------------------------------
    data_dir: str = opt("", "folder of images, searched recursively")
    crop: str = opt("center", "center: square centre crop; pad: pad to square with --background")
    background: str = opt("white", "colour transparent pixels are composited onto (any PIL "
                                   "colour: white, black, #10a0ff)")
    resample: str = opt("lanczos", "resize filter: lanczos, bicubic, bilinear, box, nearest")
    flip: bool = opt(True, "random horizontal flips of training images")
    data_on_device: str = opt("auto", "keep the image cache on the GPU: auto (when it fits), "
                                      "always, never")
    # --- model ----------------------------------------------------------------
    model: ModelConfig = field(default_factory=ModelConfig)
    # --- BEGAN objective and controller ---------------------------------------
    gamma: float = opt(0.5, "diversity ratio E[L(G(z))] / E[L(x)] the controller aims for")
    lambda_k: float = opt(0.001, "proportional gain of the k_t controller")
    k_init: float = opt(0.0, "k_0")
    k_max: float = opt(1.0, "upper clip of k_t (the paper clips to [0, 1])")
    eta: int = opt(1, "L(v) = mean |v - D(v)|^eta; the paper uses 1")
    cs_alpha: float = opt(0.0, "BEGAN-CS latent constraint weight: D also minimises "
                               "alpha*||z - Enc(G(z))||, so its encoder inverts G (needs "
                               "h_dim == z_dim; 0 = the plain paper)")
    z_shared: bool = opt(False, "one z for D's fake term and G's loss (the paper draws z_D "
                                "and z_G apart)")
    # --- levers against mode collapse (issue #10; each off by default) ----------
    alternating: bool = opt(False, "D steps first, then G's loss is taken through the updated "
                                   "D (default: both gradients at the same weights)")
    augment: str = opt("", "DiffAugment policy for every image D sees, real and fake, D "
                           "reconstructing the augmented image: a comma list of "
                           "translation, cutout, color ('' = none)")
    instance_noise: float = opt(0.0, "std of Gaussian noise added to every image D sees, "
                                     "decaying linearly to 0 over --instance-noise-steps")
    instance_noise_steps: int = opt(50_000, "steps over which the instance noise decays to 0")
    pullaway: float = opt(0.0, "weight of EBGAN's pull-away term on D's codes of G's images, "
                               "added to G's loss (0 = off)")
    cs_g: float = opt(0.0, "weight of the latent constraint in G's loss: G also minimises "
                           "beta*||z - Enc(G(z))|| through D's encoder, so distinct z must "
                           "give distinguishable images (VEEGAN/InfoGAN-style; needs h_dim "
                           "== z_dim; 0 = off)")
    ema_decay: float = opt(0.0, "keep an exponential moving average of G's weights with this "
                                "decay (e.g. 0.999; 0 = off): grids samples/ema-*, export "
                                "--weights ema")
    # --- optimisation ----------------------------------------------------------
    batch_size: int = opt(16, "the paper's batch; larger batches are reported to collapse")
    lr_g: float = opt(1e-4, "Adam learning rate of G")
    lr_d: float = opt(1e-4, "Adam learning rate of D")
    beta1: float = opt(0.5, "Adam beta1 of both optimisers")
    beta2: float = opt(0.999, "Adam beta2 of both optimisers")
    lr_decay: float = opt(0.5, "factor applied to both lrs when M_global stalls")
    lr_floor: float = opt(2e-5, "the lrs never decay below this (runs collapse late when the "
                                "lr gets too small)")
    lr_anneal_start: int = opt(0, "from this step on, both lrs fall linearly to --lr-floor over "
                                  "--lr-anneal-steps steps (by step number, so resuming and "
                                  "extending a run stay exact)")
    lr_anneal_steps: int = opt(0, "length of that linear fall (0 = off)")
    lr_window: int = opt(1000, "steps averaged into one M_global value for the schedule")
    lr_patience: int = opt(5, "windows without improvement before the lr is decayed")
    lr_min_delta: float = opt(0.01, "relative improvement on the best window mean that counts "
                                    "as progress")
    residual_steps: int = opt(16000, "vanishing residuals: carry goes 1 -> 0 over this many "
                                     "steps")
    # --- run ------------------------------------------------------------------
    steps: int = opt(200_000, "total training steps (rerun with a larger value to extend a run)")
    seed: int = opt(0, "seeds the weights, the data order, z and the fixed sample z")
    log_every: int = opt(100, "steps per stats.jsonl row (and per console line)")
    sample_every: int = opt(2000, "steps per sample grid (from a fixed z); when not given, "
                                  "at most steps/10, so a short run shows its progress")
    ckpt_every: int = opt(5000, "steps per checkpoint; when not given, at most steps/4")
    keep: int = opt(3, "checkpoints kept (older ones are deleted after a good write)")
    n_samples: int = opt(64, "images in each sample grid")
    # --- quality tracking (train/quality.py) -------------------------------------
    eval_every: int = opt(-1, "steps between quality evaluations (spread of G(z) against real "
                              "images, in pixels and in D's latent space), a multiple of "
                              "log_every; -1: about 20 per run (none under 1,000 "
                              "steps); 0: off")
    eval_samples: int = opt(256, "generated and real images in each quality evaluation")
    eval_kid: str = opt("auto", "quality evaluations also compute KID (Inception features): "
                                "auto (on CUDA only: slow on a CPU), on, off")
    eval_bins: int = opt(16, "k-means bins of the real batch for the coverage part of each "
                             "quality evaluation (NDB, bins_covered; at most one bin per 10 "
                             "eval samples); 0: off")
    collapse_threshold: float = opt(0.25, "collapse when min(div_pixel, div_latent, "
                                         "bins_covered / bins) falls below this, once it "
                                         "has reached it or after 25% of --steps (1 = as "
                                         "varied as the data; fully collapsed runs read "
                                         "0.0-0.15)")
    stop_on_collapse: bool = opt(False, "end the run (exit 0, with a checkpoint; the best "
                                        "one is kept) when collapse is detected")
    workers: int = opt(0, "image decoding processes (0: min(cores, 8))")
    fast_step: str = opt("auto", "the fast training step (train/fast_step.py: one G and one D "
                                 "pass, fused Adam, bf16, CUDA graph; same update): auto (on "
                                 "for CUDA), on, off; options it lacks fall back to the "
                                 "reference step, with a message")

    def __post_init__(self) -> None:
        def check(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(msg)

        check(self.crop in ("center", "pad"), f"crop must be 'center' or 'pad', got {self.crop!r}")
        check(
            self.resample in ("lanczos", "bicubic", "bilinear", "box", "nearest"),
            f"unknown resample filter {self.resample!r}",
        )
        check(
            self.data_on_device in ("auto", "always", "never"),
            f"data_on_device must be auto, always or never, got {self.data_on_device!r}",
        )
        check(0.0 <= self.gamma <= 1.0, f"gamma must be in [0, 1], got {self.gamma}")
        check(self.lambda_k >= 0, f"lambda_k must be >= 0, got {self.lambda_k}")
        check(0.0 <= self.k_max <= 1.0, f"k_max must be in [0, 1], got {self.k_max}")
        check(0.0 <= self.k_init <= self.k_max, f"k_init must be in [0, k_max], got {self.k_init}")
        check(self.eta in (1, 2), f"eta must be 1 or 2, got {self.eta}")
        for name in ("cs_alpha", "cs_g"):  # both compare Enc(G(z)) with z
            w = getattr(self, name)
            check(w >= 0, f"{name} must be >= 0, got {w}")
            check(w == 0 or self.model.h_dim == self.model.z_dim,
                  f"{name} > 0 needs h_dim == z_dim (got {self.model.h_dim} and "
                  f"{self.model.z_dim})")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check(self.model.arch != "small" or self.batch_size >= 2,
              "the small networks' BatchNorm needs a batch of 2 or more images per step")
        check(self.lr_g > 0 and self.lr_d > 0, "learning rates must be > 0")
        check(0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0, "Adam betas must be in [0, 1)")
        check(0.0 < self.lr_decay <= 1.0, f"lr_decay must be in (0, 1], got {self.lr_decay}")
        check(self.lr_floor >= 0, f"lr_floor must be >= 0, got {self.lr_floor}")
        check(self.lr_anneal_start >= 0 and self.lr_anneal_steps >= 0,
              "lr_anneal_start and lr_anneal_steps must be >= 0")
        check(self.lr_min_delta >= 0, f"lr_min_delta must be >= 0, got {self.lr_min_delta}")
        for name in ("lr_window", "lr_patience", "residual_steps", "log_every", "sample_every",
                     "ckpt_every", "keep", "n_samples"):
            check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        check(self.steps >= 0, f"steps must be >= 0, got {self.steps}")
        unknown = [a for a in self.augment.split(",") if a.strip() not in ("", *AUGMENTATIONS)]
        check(not unknown, f"unknown augment {', '.join(unknown)} (a comma list of "
                           f"{', '.join(AUGMENTATIONS)})")
        check(self.instance_noise >= 0, f"instance_noise must be >= 0, got {self.instance_noise}")
        check(self.instance_noise_steps >= 1,
              f"instance_noise_steps must be >= 1, got {self.instance_noise_steps}")
        check(self.pullaway >= 0, f"pullaway must be >= 0, got {self.pullaway}")
        check(0.0 <= self.ema_decay < 1.0, f"ema_decay must be in [0, 1), got {self.ema_decay}")
        check(self.workers >= 0, f"workers must be >= 0, got {self.workers}")
        check(self.eval_every >= -1, f"eval_every must be >= -1, got {self.eval_every}")
        check(self.eval_every <= 0 or self.eval_every % self.log_every == 0,
              f"eval_every must be a multiple of log_every ({self.log_every}), got "
              f"{self.eval_every}: evaluations land on stats rows")
        check(self.eval_samples >= 2, f"eval_samples must be >= 2, got {self.eval_samples}")
        check(self.eval_bins >= 0, f"eval_bins must be >= 0, got {self.eval_bins}")
        check(self.eval_kid in ("auto", "on", "off"),
              f"eval_kid must be auto, on or off, got {self.eval_kid!r}")
        check(self.collapse_threshold >= 0,
              f"collapse_threshold must be >= 0, got {self.collapse_threshold}")
        check(self.fast_step in ("auto", "on", "off"),
              f"fast_step must be auto, on or off, got {self.fast_step!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = cls.known_keys(d, "training")
        if "model" in d and isinstance(d["model"], dict):
            d["model"] = ModelConfig.from_dict(d["model"])
        return cls(**d)

    def replace(self, **overrides: Any) -> "TrainConfig":
        """A copy with top-level or model fields replaced (model fields by name)."""
        model_names = {f.name for f in fields(ModelConfig)}
        top = {k: v for k, v in overrides.items() if k not in model_names}
        mod = {k: v for k, v in overrides.items() if k in model_names}
        unknown = set(top) - {f.name for f in fields(TrainConfig)}
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        model = dataclasses.replace(top.pop("model", self.model), **mod)
        return dataclasses.replace(self, model=model, **top)


# Presets: starting points; every field can still be overridden by a flag.
PRESETS: dict[str, dict[str, Any]] = {
    # A few seconds on a laptop CPU: checks the whole pipeline, learns nothing useful.
    "smoke": dict(resolution=16, n=16, z_dim=16, h_dim=16, batch_size=8, steps=200,
                  log_every=10, sample_every=100, ckpt_every=100, n_samples=16, lr_window=50,
                  lr_patience=3),
    # The small networks' recipe (issue #19; bench/quality/README.md, "The small networks"):
    # covered all ten Fashion-MNIST classes at 32x32 on one CPU core, in 3 of 3 seeds by
    # 10,000 steps (8,000 gave 1 of 3; 12,000: KL 0.013-0.026). [-1, 1] pixels double
    # the L1 losses of the [0, 1] original, so lambda_k is halved to keep k_t's steps equal.
    "small32": dict(arch="small", resolution=32, n=64, z_dim=62, h_dim=32, fc_dim=1024,
                    batch_size=64, gamma=1.0, lr_g=2e-4, lr_d=2e-4, beta1=0.5,
                    alternating=True, z_shared=True, lambda_k=5e-4, lr_decay=1.0, steps=12_000),
    # The paper's 64x64 setting (n = 64, N_z = N_h = 64, batch 16, Adam 1e-4).
    "paper64": dict(resolution=64, n=64, z_dim=64, h_dim=64, batch_size=16, steps=200_000),
    # The paper's best 128x128 model used n = 128.
    "paper128": dict(resolution=128, n=128, z_dim=64, h_dim=64, batch_size=16, steps=300_000),
}

# Fields that may differ when the same run folder is trained again: they change how
# long and how noisily the run goes, not what it computes.
RESUMABLE_CHANGES = frozenset(
    {"data_dir", "steps", "log_every", "sample_every", "ckpt_every", "keep", "n_samples",
     "workers", "data_on_device", "fast_step", "eval_every", "eval_samples", "eval_kid",
     "eval_bins", "collapse_threshold", "stop_on_collapse",
     # an anneal that starts after the resumed step changes only steps not yet taken;
     # TrainState.restore refuses one that would rewrite the past
     "lr_anneal_start", "lr_anneal_steps"}
)


# Fields a run's `began train` command leaves out: the data folder (its positional
# argument) and how the run is logged, checkpointed and fed, which never change what it
# learns. The length and the anneal may change on resume, but they are part of the recipe.
NOT_IN_COMMAND = (RESUMABLE_CHANGES | {"data_dir"}) - {"steps", "lr_anneal_start",
                                                        "lr_anneal_steps"}


def flag_name(field_name: str) -> str:
    """A config field's `began train` flag (bools also take `--no-` + the rest)."""
    return "--" + field_name.replace("_", "-")


def _flat(cfg: TrainConfig) -> dict[str, Any]:
    """Model fields, then training fields, by name: the flags' one namespace."""
    d = cfg.to_dict()
    return {**d.pop("model"), **d}


def command_flags(cfg: TrainConfig) -> str:
    """The shortest `began train` flags that give `cfg` (the fields in NOT_IN_COMMAND left
    out): the preset it differs least from, then each field that differs. Derived from
    the fields, so a new option cannot be missing from a model card's command."""
    def flags(base: TrainConfig) -> list[str]:
        ref = _flat(base)
        out = []
        for k, v in _flat(cfg).items():
            if k in NOT_IN_COMMAND or v == ref[k]:
                continue
            flag = flag_name(k)
            if isinstance(v, bool):
                out.append(flag if v else "--no-" + flag[2:])
            else:
                out.append(f"{flag} {shlex.quote(str(v))}")
        return out

    name, rest = min(((p, flags(preset(p))) for p in PRESETS), key=lambda pf: len(pf[1]))
    return " ".join([f"--preset {name}", *rest])


# A short run still gets intermediate grids and checkpoints: intervals not given
# explicitly are capped at a fraction of --steps (rounded up).
SHORT_RUN_FRACTIONS = {"sample_every": 10, "ckpt_every": 4}


def fit_intervals(cfg: TrainConfig, given: Collection[str]) -> TrainConfig:
    """Cap the intervals the user did not give (`given`: field names) to the run length."""
    capped = {name: min(getattr(cfg, name), max(1, -(-cfg.steps // parts)))
              for name, parts in SHORT_RUN_FRACTIONS.items() if name not in given}
    return cfg.replace(**capped)


def preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
    return TrainConfig().replace(**PRESETS[name])


def incompatible_changes(saved: TrainConfig, new: TrainConfig) -> list[str]:
    """Fields whose change would make a resumed run compute something else."""
    a, b = saved.to_dict(), new.to_dict()
    out = [f"model.{k}: {a['model'][k]!r} -> {b['model'][k]!r}"
           for k in a["model"] if a["model"][k] != b["model"][k]]
    out += [f"{k}: {a[k]!r} -> {b[k]!r}" for k in a
            if k != "model" and k not in RESUMABLE_CHANGES and a[k] != b[k]]
    return out
