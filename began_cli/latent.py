"""Latent-space arithmetic for the CLI: interpolation paths and the paper's
inversion refinement (Adam on z minimising |x - G(z)|), in numpy on top of the
bundle's `invert_grad` graph."""

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


def refine(model, target: np.ndarray, z0: np.ndarray, steps: int, lr: float = 0.05,
           batch_size: int = 64, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adam on z (kept in [-1, 1]) for `steps` steps per image.

    Returns (z, loss, start_loss): per image, the z with the lowest loss seen
    (so refinement never makes a result worse), that loss, and the loss of z0.
    Loss is mean |G(z) - x| per image, on the [-1, 1] scale.
    """
    z_out = z0.astype(np.float32).copy()
    best = np.empty(len(z0), np.float32)
    start = np.empty(len(z0), np.float32)
    for i in range(0, len(z0), batch_size):
        x = target[i:i + batch_size]
        z = z_out[i:i + batch_size].copy()
        m, v = np.zeros_like(z), np.zeros_like(z)
        loss, grad = model.run("invert_grad", z, x)
        start[i:i + len(z)] = loss
        best_loss, best_z = loss.copy(), z.copy()
        for t in range(1, steps + 1):
            m = beta1 * m + (1 - beta1) * grad
            v = beta2 * v + (1 - beta2) * grad * grad
            step = lr * (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + eps)
            z = np.clip(z - step, -1.0, 1.0).astype(np.float32)
            loss, grad = model.run("invert_grad", z, x)
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
