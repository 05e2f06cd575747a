"""Analytic shapes evaluated at arbitrary points, so the image and its labels come from one geometry.

A scene paints tissue on the beam grid and labels on the pixel grid by asking
the same `Blob` objects whether points are inside; masks, boxes and keypoints
therefore agree with the image exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Blob:
    """An ellipse (centre, semi-axes a along `angle`, b across) whose radius is modulated by harmonics.

    harmonics: rows of (k, amplitude, phase); radius(phi) = 1 + sum amplitude * cos(k * phi + phase).
    A smooth oval has none, an irregular or spiculated margin has several.
    """

    cx: float
    cy: float
    a: float
    b: float
    angle: float = 0.0
    harmonics: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))

    def local(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates along (u) and across (v) the major axis, in image units."""
        c, s = float(np.cos(self.angle)), float(np.sin(self.angle))  # Python floats keep float32 grids float32
        dx, dy = x - float(self.cx), y - float(self.cy)
        return dx * c + dy * s, -dx * s + dy * c

    def rho(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Normalised radius: < 1 inside, 1 on the margin, grows outwards (rings are bands of rho)."""
        u, v = self.local(x, y)
        p, q = u * (1 / float(self.a)), v * (1 / float(self.b))
        r = np.hypot(p, q)
        if len(self.harmonics):
            phi = np.arctan2(q, p)
            mod = np.ones_like(r)
            for k, amp, ph in self.harmonics.tolist():
                mod += amp * np.cos(k * phi + ph)
            r = r / np.maximum(mod, 0.2)
        return r

    def inside(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.rho(x, y) <= 1.0

    def boundary(self, n: int = 96, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Points on the margin (rho == scale), for field-of-view checks."""
        phi = np.linspace(0, 2 * np.pi, n, endpoint=False)
        mod = np.ones(n)
        for k, amp, ph in self.harmonics:
            mod += amp * np.cos(k * phi + ph)
        r = scale * np.maximum(mod, 0.2)
        p, q = r * np.cos(phi) * self.a, r * np.sin(phi) * self.b
        c, s = np.cos(self.angle), np.sin(self.angle)
        return self.cx + p * c - q * s, self.cy + p * s + q * c

    def point(self, u: float, v: float) -> tuple[float, float]:
        """Image coordinates of the local point (u, v)."""
        c, s = np.cos(self.angle), np.sin(self.angle)
        return float(self.cx + u * c - v * s), float(self.cy + u * s + v * c)


def harmonics(rng: np.random.Generator, irregular: float, ks: tuple[int, int] = (3, 10)) -> np.ndarray:
    """Random margin harmonics; `irregular` is the total amplitude (0 gives a clean oval)."""
    if irregular <= 0:
        return np.zeros((0, 3), np.float32)
    n = int(rng.integers(3, 6))
    k = rng.integers(ks[0], ks[1] + 1, size=n)
    amp = rng.dirichlet(np.ones(n)) * irregular
    return np.stack([k, amp, rng.uniform(0, 2 * np.pi, n)], axis=1).astype(np.float32)


_TABLE = 129  # resolution of the precomputed smooth textures


def smooth_field(rng: np.random.Generator, cells: int = 8, spread: float = 0.35) -> Callable[..., np.ndarray]:
    """A smooth random multiplicative texture (log-normal, mean ~1) defined on the whole image."""
    coarse = rng.normal(0, spread, size=(cells + 1, cells + 1))
    fine = np.linspace(0, cells, _TABLE)
    i0 = np.minimum(fine.astype(np.intp), cells - 1)
    w = (fine - i0)[:, None]
    rows = coarse[i0] * (1 - w) + coarse[i0 + 1] * w  # bilinear upsampling, rows then columns
    table = np.exp(rows[:, i0] * (1 - w.T) + rows[:, i0 + 1] * w.T).astype(np.float32)

    def at(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        ix = (np.clip(x, 0, 1) * (_TABLE - 1) + 0.5).astype(np.intp)  # one gather from a fine table
        iy = (np.clip(y, 0, 1) * (_TABLE - 1) + 0.5).astype(np.intp)
        return table[iy, ix]

    return at


def wavy(rng: np.random.Generator, level: float, amp: float) -> Callable[[np.ndarray], np.ndarray]:
    """A gently undulating horizontal boundary y(x) around `level`."""
    f = (2 * np.pi * rng.uniform(1.0, 3.0, 2)).tolist()
    ph = rng.uniform(0, 2 * np.pi, 2).tolist()
    a = (rng.uniform(0.3, 1.0, 2) * amp).tolist()
    level = float(level)

    def y_of(x: np.ndarray) -> np.ndarray:
        return level + a[0] * np.sin(f[0] * x + ph[0]) + a[1] * np.sin(f[1] * x + ph[1])

    return y_of
