"""Latent-space arithmetic for the CLI and the Python API: interpolation paths,
inversion (the encoder, then the paper's Adam refinement of z on the bundle's
`invert_grad` graph), and the figures that say whether an image is one the
model can draw. All comparisons are in the space users see: G's output
clipped to [-1, 1], as every saved image is."""

from __future__ import annotations

import numpy as np


def lerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    return (1 - t) * a + t * b


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation of the vectors (norms interpolated linearly);
    falls back to lerp when they are (anti)parallel or one is zero."""
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na < 1e-8 or nb < 1e-8:
        return lerp(a, b, t)
    cos = float(np.clip(np.dot(a / na, b / nb), -1.0, 1.0))
    omega = np.arccos(cos)
    if np.sin(omega) < 1e-6:
        return lerp(a, b, t)
    direction = (np.sin((1 - t) * omega) * a / na + np.sin(t * omega) * b / nb) / np.sin(omega)
    return direction * ((1 - t) * na + t * nb)


def path(points: np.ndarray, steps: int, method: str = "slerp") -> np.ndarray:
    """`steps` frames per segment through every point, shared ends counted once:
    (len(points) - 1) * (steps - 1) + 1 vectors."""
    f = slerp if method == "slerp" else lerp
    out = [points[0]]
    for a, b in zip(points[:-1], points[1:]):
        out += [f(a, b, i / (steps - 1)) for i in range(1, steps)]
    return np.stack(out).astype(np.float32)


# manifest["inversion_reference"]["loss"] of bundles whose invert_grad.onnx clips G(z).
CLIPPED_LOSS = "mean |clip(G(z), -1, 1) - target|"


def graph_clips(model) -> bool:
    """Does this bundle's invert_grad graph compare clip(G(z), -1, 1)? (Older exports: no.)"""
    ref = model.bundle.manifest.get("inversion_reference")
    return isinstance(ref, dict) and ref.get("loss") == CLIPPED_LOSS


def loss_and_grad(model, z: np.ndarray, x: np.ndarray, clips: bool
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per image, mean |clip(G(z), -1, 1) - x| and its gradient w.r.t. z.

    An older invert_grad graph differentiates |G(z) - x|. There, the pixels G draws
    past [-1, 1] are aimed once far above and once far below them, in one batch of
    two copies: their signs cancel in the mean of the two gradients, which leaves
    exactly the clipped loss's gradient (at one generator call more per step)."""
    if clips:
        return model.run("invert_grad", z, x)
    g = model.run("generator", z)[0]
    past = (g < -1) | (g > 1)
    far = np.float32(np.abs(g).max() + 2)  # beyond every pixel, so each sign is certain
    both = np.concatenate([np.where(past, far, x), np.where(past, -far, x)])
    _, grad = model.run("invert_grad", np.concatenate([z, z]), both)
    loss = l1_error(g, x)
    return loss, (grad[:len(z)] + grad[len(z):]) / 2


def l1_error(recon: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Per-image mean |clip(recon, -1, 1) - x|: the error of the image a user would save."""
    diff = np.clip(recon, -1, 1) - x
    return np.abs(diff).reshape(len(x), -1).mean(1).astype(np.float32)


def refine(model, target: np.ndarray, z0: np.ndarray, steps: int, lr: float = 0.05,
           batch_size: int = 64, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adam on z (kept in [-1, 1]) for `steps` steps per image.

    Returns (z, loss, start_loss): per image, the z with the lowest loss seen
    (so refinement never makes a result worse), that loss, and the loss of z0.
    Loss is mean |clip(G(z), -1, 1) - x| per image, on the [-1, 1] scale.
    """
    clips = graph_clips(model)
    z_out = z0.astype(np.float32).copy()
    best = np.empty(len(z0), np.float32)
    start = np.empty(len(z0), np.float32)
    for i in range(0, len(z0), batch_size):
        x = target[i:i + batch_size]
        z = z_out[i:i + batch_size].copy()
        m, v = np.zeros_like(z), np.zeros_like(z)
        loss, grad = loss_and_grad(model, z, x, clips)
        start[i:i + len(z)] = loss
        best_loss, best_z = loss.copy(), z.copy()
        for t in range(1, steps + 1):
            m = beta1 * m + (1 - beta1) * grad
            v = beta2 * v + (1 - beta2) * grad * grad
            step = lr * (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + eps)
            z = np.clip(z - step, -1.0, 1.0).astype(np.float32)
            loss, grad = loss_and_grad(model, z, x, clips)
            better = loss < best_loss
            best_loss[better], best_z[better] = loss[better], z[better]
        z_out[i:i + len(z)], best[i:i + len(z)] = best_z, best_loss
    return z_out, best, start


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image PSNR (dB) of images in [-1, 1] (peak-to-peak 2, as 0..255 would be)."""
    a = np.clip(a, -1, 1).reshape(len(a), -1).astype(np.float64)
    b = np.clip(b, -1, 1).reshape(len(b), -1).astype(np.float64)
    mse = np.maximum(((a - b) ** 2).mean(1), 1e-10)
    return 10 * np.log10(4.0 / mse)


def invert(model, x: np.ndarray, steps: int = 0, lr: float = 0.05, batch_size: int = 64
           ) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, R, R) in [-1, 1] -> (z, G(z)): the encoder, then `steps` Adam steps."""
    z = model.encode(x, batch_size=batch_size)
    if steps:
        z, _, _ = refine(model, x, z, steps, lr=lr, batch_size=batch_size)
    return z, model.generate(z, batch_size=batch_size)


def as_saved(images: np.ndarray) -> np.ndarray:
    """Float images as they come back from an 8-bit file: clipped and rounded to 1/127.5."""
    return (np.clip(np.rint((images + 1.0) * 127.5), 0, 255) / 127.5 - 1.0).astype(np.float32)


REFERENCE_SEEDS = 256
OUTSIDE_RATIO = 2.0  # an error above twice the model's 99th percentile on its own samples


def inversion_reference(generate, encode, z_dim: int, n: int = REFERENCE_SEEDS) -> dict:
    """How well the encoder inverts the model's own samples, saved as 8-bit images.

    `generate` and `encode` map float32 arrays to arrays (onnxruntime at run time,
    PyTorch at export time: the same figures). The L1 error of G(Enc(x)) for
    x = G(z), seeds 0..n-1, is what an image the model can draw looks like."""
    from .seeds import z_for_seeds

    x = as_saved(generate(z_for_seeds(list(range(n)), z_dim)))
    l1 = l1_error(generate(encode(x)), x).astype(np.float64)
    return {"loss": CLIPPED_LOSS, "seeds": n, "refine": 0,
            "about": "L1 error mean |clip(G(Enc(x)), -1, 1) - x| of the model's own samples "
                     "x = G(z) (seeds 0..n-1) saved as 8-bit images, encoder only",
            "l1": {f"p{q}": float(np.percentile(l1, q)) for q in (50, 90, 99)}
            | {"max": float(l1.max())}}


def reference_for(model) -> dict:
    """The bundle's figure, or the same figure computed now for bundles exported before it
    (a few hundred samples: well under a second for small models)."""
    ref = model.bundle.manifest.get("inversion_reference")
    if isinstance(ref, dict) and isinstance(ref.get("l1"), dict) and "p99" in ref["l1"]:
        return ref
    if not hasattr(model, "_inversion_reference"):
        model._inversion_reference = inversion_reference(model.generate, model.encode,
                                                         model.z_dim)
    return model._inversion_reference


def outside_ratio(l1: np.ndarray, reference: dict) -> np.ndarray:
    """Each image's L1 error over the model's 99th percentile on its own samples;
    above OUTSIDE_RATIO the image is probably not one the model can draw."""
    return np.asarray(l1, np.float64) / max(reference["l1"]["p99"], 1e-6)
