"""Time-series helpers for control signals (T, C): easing, holds, eased transitions, Gaussian smoothing,
resampling, slowly varying noise."""

from __future__ import annotations

import numpy as np


def smoothstep(t: np.ndarray) -> np.ndarray:
    return t * t * (3 - 2 * t)


def hold(row: np.ndarray, n: int) -> np.ndarray:
    return np.repeat(row[None], n, 0)


def transition(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """n frames strictly between control rows a and b, eased."""
    t = smoothstep(np.arange(1, n + 1) / (n + 1))[:, None]
    return a + t * (b - a)


def smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along time (axis 0), edges padded by repetition. x: (T, C)."""
    if sigma <= 0:
        return x
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    xp = np.concatenate([hold(x[0], r), x, hold(x[-1], r)])
    return sum(k[i] * xp[i: i + len(x)] for i in range(2 * r + 1))


def resample(x: np.ndarray, n: int) -> np.ndarray:
    """(T, C) -> (n, C) by linear interpolation in time (plays a too long video faster)."""
    src = np.linspace(0, len(x) - 1, n)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, len(x) - 1)
    w = (src - i0)[:, None]
    return x[i0] * (1 - w) + x[i1] * w


def smooth_noise(rng: np.random.Generator, n: int, dims: int, scale: float, corr: float = 8.0) -> np.ndarray:
    """Slowly varying noise (n, dims) with std ~scale: sway, drift."""
    x = smooth(rng.normal(0, 1, (n + 1, dims)), corr)[:n]
    return x * scale / max(float(x.std()), 1e-6)
