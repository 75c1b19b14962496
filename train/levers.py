"""The fast step's levers: what each one switches, and switching on those that act
outside the step itself.

The fast step (train/fast_step.py) is bound by kernel launches and memory traffic, not
arithmetic. Each lever cuts one of those costs and can be switched off on its own, so
bench/train_step.py can weigh it:

- one_g_pass:    G runs once over cat([z_G, z_D]) instead of twice (with z_shared there
                 is only one z, so one forward anyway). The z_D half is detached: D's
                 fake term sees G's output as a constant, as in the reference.
- d_passes:      1: D runs once over cat([x, G(z_D), G(z_G)]) (or [x, G(z)] with
                 z_shared) and each loss is the mean over its slice of the batch: the
                 fewest kernels, but both backward passes then run over all rows, about
                 50% more arithmetic in D (625 against 417 GFLOP a step at 64x64, n = 64,
                 batch 16). 2: cat([x, G(z_D)]) and G(z_G) apart: the reference's
                 arithmetic in two passes. 3: three passes, as the reference.
- adam:          "foreach" or "fused" Adam (one kernel per group of tensors, not per
                 tensor); "plain" keeps torch's per-tensor loop.
- bf16:          autocast to bfloat16 on CUDA; the L1 errors and the losses stay fp32.
- tf32:          TF32 matmuls (cuDNN convolutions already default to TF32 in PyTorch).
- channels_last: NHWC weights and activations (what cuDNN's fast conv kernels want).
- cuda_graph:    the whole step (forwards, both backwards, both Adam steps, the k_t
                 update) captured once and replayed: one launch per step. k_t lives in
                 a device buffer updated in place; each lr lives in a device tensor that
                 Adam reads, refreshed when the optimiser's param group changes.
- cudnn_benchmark: let cuDNN time its convolution algorithms once per shape (the
                 shapes never change during a run).
- compile:       torch.compile on G, D's encoder and D's decoder (in place, so the
                 state_dict keys do not change).

one_g_pass, d_passes, bf16 and cuda_graph shape the step itself (FastStep); the others
act on the modules, the optimisers or the whole process, and `apply_levers` switches
them on once (making Adam capturable too when the step runs as a CUDA graph).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Levers", "apply_levers", "set_adam_flags"]


@dataclass(frozen=True)
class Levers:
    one_g_pass: bool = True
    d_passes: int = 1  # 1, 2 or 3 (see the module's docstring)
    adam: str = "auto"  # auto (fused on CUDA, foreach on CPU), fused, foreach, plain
    bf16: bool = False
    tf32: bool = False
    channels_last: bool = False
    cuda_graph: bool = False
    cudnn_benchmark: bool = False
    compile: bool = False

    @classmethod
    def for_device(cls, device: torch.device | str) -> "Levers":
        """What pays on each device: on CUDA every lever but compile; on the CPU the
        kernel-count levers only (bf16 and graphs are CUDA features here)."""
        if torch.device(device).type == "cuda":
            return cls(bf16=True, tf32=True, channels_last=True, cuda_graph=True,
                       cudnn_benchmark=True)
        return cls()

    def __post_init__(self) -> None:
        if self.d_passes not in (1, 2, 3):
            raise ValueError(f"d_passes must be 1, 2 or 3, got {self.d_passes}")
        if self.adam not in ("auto", "fused", "foreach", "plain"):
            raise ValueError(f"adam must be auto, fused, foreach or plain, got {self.adam!r}")

    def on(self, device: torch.device) -> "Levers":
        """These levers with the CUDA-only ones switched off elsewhere."""
        if device.type == "cuda":
            return self
        return dataclasses.replace(self, bf16=False, tf32=False, cuda_graph=False,
                                   cudnn_benchmark=False)

    def adam_kind(self, device: torch.device) -> str:
        if self.adam != "auto":
            return self.adam
        return "fused" if device.type == "cuda" else "foreach"


def set_adam_flags(opt: torch.optim.Optimizer, *, foreach: bool | None = None,
                   fused: bool | None = None, capturable: bool = False) -> None:
    """Set Adam's implementation flags in every group, and put its `step` counters where
    that implementation wants them (on the device when capturable or fused, else on
    the CPU). Also needed after `load_state_dict`, which copies the flags of whichever
    optimiser saved the checkpoint."""
    for group in opt.param_groups:
        group["foreach"], group["fused"], group["capturable"] = foreach, fused, capturable
        for p in group["params"]:
            st = opt.state.get(p)
            if st and isinstance(st.get("step"), torch.Tensor):
                dev = p.device if (capturable or fused) else torch.device("cpu")
                st["step"] = st["step"].to(device=dev, dtype=torch.float32)


def apply_levers(lv: Levers, device: torch.device, G: nn.Module, D: nn.Module,
                 opts: tuple[torch.optim.Optimizer, ...]) -> None:
    """Switch on tf32, cudnn_benchmark, channels_last, the Adam kind and compile for these
    modules and optimisers. Once, and after a resume has loaded the optimiser state."""
    # Process-wide switches (PyTorch has no per-module ones): they stay on after.
    if lv.tf32:
        torch.set_float32_matmul_precision("high")
    if lv.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    if lv.channels_last:
        G.to(memory_format=torch.channels_last)
        D.to(memory_format=torch.channels_last)
    kind = lv.adam_kind(device)
    for opt in opts:
        set_adam_flags(opt, foreach=True if kind == "foreach" else (False if kind == "plain"
                                                                     else None),
                       fused=True if kind == "fused" else None,
                       capturable=lv.cuda_graph)
        if lv.channels_last:  # Adam's moments must share their parameter's layout
            for st in opt.state.values():
                for name in ("exp_avg", "exp_avg_sq"):
                    if name in st:
                        st[name] = st[name].contiguous(memory_format=torch.channels_last) \
                            if st[name].dim() == 4 else st[name]
    if lv.compile:
        G.compile()
        D.encoder.compile()
        D.decoder.compile()
