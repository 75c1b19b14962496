"""A faster BEGAN step that computes the same update as `step.began_step`.

The reference step is a few hundred small kernels: on a GPU it is bound by kernel
launches and memory traffic, not arithmetic. Each lever (train/levers.py: one G pass,
fewer D passes, fused Adam, bf16, TF32, channels_last, a CUDA graph, cuDNN benchmark,
compile) cuts one of those costs and can be switched off on its own.

Both gradients are still taken at the same weights (two `autograd.grad` calls over one
forward graph: G's through D's input gradients only, D's for L_D), then both Adam
steps run: the same simultaneous update as the reference. Nothing reads a value back
to the host: the StepOut tensors are the device's (in graph mode, static buffers that
the next step overwrites, so read or accumulate them before the next call).

Options the fast path does not implement fall back to the reference step; the rule is
an allow-list of config fields (`SUPPORTED_TRAIN`, `SUPPORTED_MODEL`), so a field added
later falls back until someone adds it here with a parity test.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import torch
from torch import nn

from .controller import m_global, update_k
from .levers import Levers, apply_levers, set_adam_flags
from .step import StepOut, began_step, latent_constraint

Reduce = Callable[[list[torch.Tensor]], list[torch.Tensor]]
StepFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], StepOut]

# Config fields the fast step honours (or that never reach the step: data, run length,
# logging, the host-side lr schedule). Any other field with a non-default value makes
# `make_step` fall back to the reference step.
SUPPORTED_TRAIN = frozenset({
    "data_dir", "crop", "background", "resample", "flip", "data_on_device", "model",
    "gamma", "lambda_k", "k_init", "k_max", "eta", "cs_alpha", "z_shared",
    "batch_size", "lr_g", "lr_d", "beta1", "beta2",
    "lr_decay", "lr_floor", "lr_anneal_start", "lr_anneal_steps", "lr_window", "lr_patience",
    "lr_min_delta", "residual_steps",
    "steps", "seed", "log_every", "sample_every", "ckpt_every", "keep", "n_samples",
    "workers", "fast_step",
    "ema_decay",  # a hook averages G after the step: the step is unchanged
    # quality tracking (quality.py) reads G and D at log rows, outside the step
    "eval_every", "eval_samples", "eval_kid", "collapse_threshold", "stop_on_collapse",
    "instance_noise_steps",  # inert unless instance_noise > 0, which falls back
})
# out_tanh lives inside G and D's decoder, which the fast step calls as modules.
SUPPORTED_MODEL = frozenset({"resolution", "n", "z_dim", "h_dim", "repeat", "skip",
                             "vanishing_residual", "out_tanh"})


def unsupported_options(cfg) -> list[str]:
    """Non-default config fields outside the allow-lists, as 'name=value' strings."""
    out = []
    default_train = type(cfg)()
    for f in dataclasses.fields(cfg):
        if f.name not in SUPPORTED_TRAIN and getattr(cfg, f.name) != getattr(default_train,
                                                                            f.name):
            out.append(f"{f.name}={getattr(cfg, f.name)!r}")
    model = cfg.model
    default_model = type(model)()
    for f in dataclasses.fields(model):
        if f.name not in SUPPORTED_MODEL and getattr(model, f.name) != getattr(default_model,
                                                                              f.name):
            out.append(f"model.{f.name}={getattr(model, f.name)!r}")
    return out


def _like(g: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """g laid out as p: fused and foreach Adam walk parameter, gradient and moments as flat
    memory, so their strides must agree (channels_last weights)."""
    return g.contiguous(memory_format=torch.channels_last
                        if p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last)
                        else torch.contiguous_format)


class FastStep:
    """Callable as step(x, z_d, z_g, k) -> StepOut, like `began_step` with its modules,
    optimisers and hyper-parameters bound."""

    def __init__(self, G: nn.Module, D: nn.Module, opt_g: torch.optim.Optimizer,
                 opt_d: torch.optim.Optimizer, *, gamma: float, lambda_k: float,
                 k_max: float = 1.0, eta: int = 1, z_shared: bool = False,
                 cs_alpha: float = 0.0, reduce: Reduce | None = None,
                 levers: Levers | None = None, log: Callable[[str], None] | None = None):
        self.G, self.D, self.opt_g, self.opt_d = G, D, opt_g, opt_d
        self.gamma, self.lambda_k, self.k_max, self.eta = gamma, lambda_k, k_max, eta
        self.z_shared, self.cs_alpha, self.reduce = z_shared, cs_alpha, reduce
        self.device = next(G.parameters()).device
        lv = (levers or Levers.for_device(self.device)).on(self.device)
        if lv.cuda_graph and reduce is not None:
            # The all-reduce is a host-driven collective: keep data-parallel runs eager.
            (log or (lambda m: None))("fast step: CUDA graph off under data parallelism")
            lv = dataclasses.replace(lv, cuda_graph=False)
        self.levers = lv
        self.g_params = list(G.parameters())
        self.d_params = list(D.parameters())
        self.k = torch.zeros((), dtype=torch.float32, device=self.device)
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static: tuple | None = None
        self._lr_tensors: dict[int, torch.Tensor] = {}
        self._prepared = False

    # --- one-time setup (lazy: after a resume has loaded the optimiser state) ----------
    def _prepare(self) -> None:
        apply_levers(self.levers, self.device, self.G, self.D, (self.opt_g, self.opt_d))
        self._prepared = True

    # --- the computation ---------------------------------------------------------------
    def _err(self, recon: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        err = (recon.float() - v.float()).abs()
        return err if self.eta == 1 else err * err

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.levers.bf16,
                              cache_enabled=False)  # a cast cache breaks graph replays

    def _d_layout(self) -> list[list[str]]:
        """Which images share a D pass: x, G(z_D) ("fd"), G(z_G) ("fg")."""
        if self.z_shared:  # one fake batch
            return [["x", "fg"]] if self.levers.d_passes == 1 else [["fg"], ["x"]]
        return {1: [["x", "fd", "fg"]], 2: [["x", "fd"], ["fg"]],
                3: [["fg"], ["fd"], ["x"]]}[self.levers.d_passes]

    def _forward(self, x: torch.Tensor, z_d: torch.Tensor, z_g: torch.Tensor):
        """(loss_real, loss_fake, loss_fake_d, h_fake_d) at the current weights."""
        lv, G, D, B = self.levers, self.G, self.D, x.shape[0]
        if lv.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            if self.z_shared:
                fake_g = fake_d = G(z_g)
            elif lv.one_g_pass:
                both = G(torch.cat([z_g, z_d]))
                fake_g, fake_d = both[:B], both[B:].detach()
            else:
                fake_g = G(z_g)
                with torch.no_grad():
                    fake_d = G(z_d)
            roles = {"x": x, "fd": fake_d, "fg": fake_g}
            losses, codes = {}, {}
            for group in self._d_layout():
                v = torch.cat([roles[r] for r in group]) if len(group) > 1 else roles[group[0]]
                h = D.encode(v)
                errs = self._err(D.decode(h), v).split(B)
                losses.update(zip(group, (e.mean() for e in errs)))
                codes.update(zip(group, h.split(B)))
            fd = "fg" if self.z_shared else "fd"
            loss_real, loss_fake = losses["x"], losses["fg"]
            loss_fake_d, h_fake_d = losses[fd], codes[fd]
        return loss_real, loss_fake, loss_fake_d, h_fake_d.float()

    def _step(self, x: torch.Tensor, z_d: torch.Tensor, z_g: torch.Tensor) -> StepOut:
        """Everything that runs on the device each step; reads and updates self.k."""
        k = self.k
        loss_real, loss_fake, loss_fake_d, h_fake_d = self._forward(x, z_d, z_g)
        loss_d = loss_real - k * loss_fake_d
        if self.cs_alpha > 0:
            loss_cs = latent_constraint(z_d, h_fake_d)
            loss_d = loss_d + self.cs_alpha * loss_cs
        else:
            loss_cs = torch.zeros((), device=x.device)
        # G's gradient reaches G through D's input gradients only; D's comes from L_D.
        g_grads = torch.autograd.grad(loss_fake, self.g_params, retain_graph=True)
        d_grads = torch.autograd.grad(loss_d, self.d_params)
        if self.reduce is not None:
            terms = torch.stack([loss_real.detach(), loss_fake.detach(), loss_d.detach(),
                                 loss_cs.detach()])
            out = self.reduce([*g_grads, *d_grads, terms])
            n = len(self.g_params)
            g_grads, d_grads = out[:n], out[n:-1]
            loss_real, loss_fake, loss_d, loss_cs = out[-1].unbind()
        for p, g in zip(self.g_params + self.d_params, [*g_grads, *d_grads]):
            p.grad = g if g.stride() == p.stride() else _like(g, p)
        self.opt_g.step()
        self.opt_d.step()
        loss_real, loss_fake = loss_real.detach(), loss_fake.detach()
        mg = m_global(loss_real, loss_fake, self.gamma)
        self.k.copy_(update_k(k, loss_real, loss_fake, self.gamma, self.lambda_k, self.k_max))
        return StepOut(loss_real=loss_real, loss_fake=loss_fake, loss_d=loss_d.detach(),
                       loss_cs=loss_cs.detach(), k=self.k, m_global=mg)

    # --- CUDA graph --------------------------------------------------------------------
    def _sync_lr(self) -> None:
        """Adam inside the graph reads each lr from a device tensor: refresh the tensor
        when the param group's (host) lr changed, e.g. after the schedule decayed it."""
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                lr = group["lr"]
                t = self._lr_tensors.get(id(group))
                if t is not None and getattr(t, "_began_lr", None) != lr:
                    t.fill_(float(lr))
                    t._began_lr = lr  # type: ignore[attr-defined]

    def _capture(self, x, z_d, z_g) -> None:
        """Warm up on a side stream (allocates Adam state, picks cuDNN kernels), put the
        training state back as it was, then capture one step."""
        params = self.g_params + self.d_params
        saved_p = [p.detach().clone() for p in params]
        saved_opt = [{id(p): {n: t.clone() for n, t in opt.state[p].items()}
                      for p in opt.state} for opt in (self.opt_g, self.opt_d)]
        saved_k = self.k.clone()
        groups = [g for opt in (self.opt_g, self.opt_d) for g in opt.param_groups]
        for group in groups:  # lr as a device tensor while capturing
            t = torch.tensor(float(group["lr"]), device=self.device)
            t._began_lr = group["lr"]  # type: ignore[attr-defined]
            self._lr_tensors[id(group)] = t
        host_lr = [g["lr"] for g in groups]
        for g in groups:
            g["lr"] = self._lr_tensors[id(g)]
        static = (x.clone(), z_d.clone(), z_g.clone())
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self._step(*static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self._step(*static)
        # Capturing ran nothing, but the warm-up steps did: undo them.
        with torch.no_grad():
            for p, s in zip(params, saved_p):
                p.copy_(s)
            for opt, saved in zip((self.opt_g, self.opt_d), saved_opt):
                for p, st in opt.state.items():
                    for n, t in st.items():
                        if isinstance(t, torch.Tensor):
                            t.copy_(saved[id(p)][n]) if id(p) in saved else t.zero_()
            self.k.copy_(saved_k)
        for g, lr in zip(groups, host_lr):  # the checkpoint's JSON keeps plain floats
            g["lr"] = lr
        self._graph, self._static, self._out = graph, static, out

    # --- the call ------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, z_d: torch.Tensor, z_g: torch.Tensor,
                 k: torch.Tensor) -> StepOut:
        if not self._prepared:
            self._prepare()
        if k is not self.k:  # the caller's k_t (first step, resume): one device copy
            self.k.copy_(k)
        if not self.levers.cuda_graph:
            return self._step(x, z_d, z_g)
        if self._graph is None:
            self._capture(x, z_d, z_g)
        sx, szd, szg = self._static  # type: ignore[misc]
        sx.copy_(x), szd.copy_(z_d), szg.copy_(z_g)
        self._sync_lr()
        self._graph.replay()
        return self._out


class PlainStep:
    """The reference step with its arguments bound, as step(x, z_d, z_g, k) -> StepOut.
    On its first call it resets Adam to torch's default implementation flags, which a
    checkpoint written by the fast step (fused, capturable) would otherwise carry over."""

    def __init__(self, G, D, opt_g, opt_d, **hyper):
        self._step = functools.partial(began_step, G, D, opt_g, opt_d, **hyper)
        self._opts = (opt_g, opt_d)
        self._prepared = False

    def __call__(self, x, z_d, z_g, k) -> StepOut:
        if not self._prepared:
            for opt in self._opts:
                set_adam_flags(opt)
            self._prepared = True
        return self._step(x, z_d, z_g, k)


def resolve_mode(mode: str, device: torch.device) -> bool:
    """fast_step config: auto = on for CUDA, off on the CPU; on; off."""
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"fast_step must be auto, on or off, got {mode!r}")
    return mode == "on" or (mode == "auto" and device.type == "cuda")


def use_fast_step(cfg, device: torch.device, log: Callable[[str], None]) -> bool:
    """Whether the fast step runs for this config (field `fast_step`, default auto) on this
    device; an option it lacks means the reference runs, said once through `log`."""
    if not resolve_mode(getattr(cfg, "fast_step", "auto"), device):
        return False
    missing = unsupported_options(cfg)
    if missing:
        log(f"fast step: not supported with {', '.join(missing)}; using the reference step")
        return False
    return True


def _hyper(cfg, reduce: Reduce | None) -> dict:
    return dict(gamma=cfg.gamma, lambda_k=cfg.lambda_k, k_max=cfg.k_max, eta=cfg.eta,
                z_shared=cfg.z_shared, cs_alpha=cfg.cs_alpha, reduce=reduce)


def _say_levers(step: FastStep, log: Callable[[str], None]) -> None:
    on = [f.name for f in dataclasses.fields(step.levers) if getattr(step.levers, f.name) is True]
    log(f"fast step: {', '.join(on)}; D passes {step.levers.d_passes}; "
        f"adam {step.levers.adam_kind(step.device)}")


def make_step(cfg, G: nn.Module, D: nn.Module, opt_g: torch.optim.Optimizer,
              opt_d: torch.optim.Optimizer, device: torch.device, *,
              reduce: Reduce | None = None, levers: Levers | None = None,
              log: Callable[[str], None] = lambda m: None) -> StepFn:
    """step(x, z_d, z_g, k) -> StepOut for these modules: FastStep or PlainStep."""
    if not use_fast_step(cfg, device, log):
        return PlainStep(G, D, opt_g, opt_d, **_hyper(cfg, reduce))
    step = FastStep(G, D, opt_g, opt_d, levers=levers, log=log, **_hyper(cfg, reduce))
    _say_levers(step, log)
    return step


def fast_or_reference(cfg, device: torch.device, reduce: Reduce | None, log: Callable[[str], None],
             reference: Callable) -> Callable:
    """The training loop's step, fn(state, x, z_d, z_g) -> StepOut: the fast step when
    `use_fast_step`, else `reference`. Both are set up on their first call, that is after
    a resume has loaded the optimisers: the fast step then sets its Adam flags, and the
    reference resets the ones a fast run's checkpoint carried (fused, capturable)."""
    if not use_fast_step(cfg, device, log):
        ready: list[bool] = []

        def plain(s, x, z_d, z_g):
            if not ready:
                set_adam_flags(s.opt_g), set_adam_flags(s.opt_d)
                ready.append(True)
            return reference(s, x, z_d, z_g)

        return plain
    built: list[FastStep] = []

    def fast(s, x, z_d, z_g):
        if not built:
            built.append(FastStep(s.G, s.D, s.opt_g, s.opt_d, log=log, **_hyper(cfg, reduce)))
            _say_levers(built[0], log)
        return built[0](x, z_d, z_g, s.k)

    return fast
