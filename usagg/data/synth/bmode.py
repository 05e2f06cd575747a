"""B-mode image formation: scatterers on the beam grid, a depth-dependent pulse, attenuation, log compression.

The physics is done on the probe's own (depth x scan line) grid, as a scanner
does: random complex scatterers weighted by the tissue's echogenicity, a
transmission term (attenuation and acoustic shadowing integrated along each
beam), convolution with a Gaussian pulse whose lateral width grows with depth,
envelope detection, time-gain compensation and log compression. Scan
conversion to the square image is one `map_coordinates` call; nothing loops
over pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.ndimage import gaussian_filter1d, map_coordinates

#: Returns (echogenicity, attenuation in nepers per image height) at points (x, y) in [0, 1] image units.
TissueFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Probe:
    """Field of view in image units (x right, y down, the image is [0, 1]^2).

    sector: beams fan out from a virtual apex at (0.5, apex_y) between radii
    r_min (the probe face) and r_max, over +-half_angle radians from vertical.
    linear: vertical beams between x0 and x1, from depth 0 to 1.
    """

    kind: Literal["sector", "linear"]
    apex_y: float = -0.15
    r_min: float = 0.16
    r_max: float = 1.12
    half_angle: float = 0.6
    x0: float = 0.0
    x1: float = 1.0

    def beam_points(self, n_depth: int, n_lines: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image coordinates (x, y) of every beam sample, shape (n_depth, n_lines), and the depth of each row."""
        t = np.linspace(0.0, 1.0, n_depth, dtype=np.float32)[:, None]
        s = np.linspace(0.0, 1.0, n_lines, dtype=np.float32)[None, :]
        if self.kind == "linear":
            x = np.broadcast_to(self.x0 + (self.x1 - self.x0) * s, (n_depth, n_lines))
            y = np.broadcast_to(t, (n_depth, n_lines))
            return x, y, t[:, 0]
        r = self.r_min + (self.r_max - self.r_min) * t
        th = -self.half_angle + 2 * self.half_angle * s
        return 0.5 + r * np.sin(th), self.apex_y + r * np.cos(th), t[:, 0] * (self.r_max - self.r_min)

    def beam_index(self, x: np.ndarray, y: np.ndarray, n_depth: int, n_lines: int) -> tuple[np.ndarray, np.ndarray]:
        """Fractional (row, line) on the beam grid of image points; outside the field of view falls off the grid."""
        if self.kind == "linear":
            return y * (n_depth - 1), (x - self.x0) / (self.x1 - self.x0) * (n_lines - 1)
        dx, dy = x - 0.5, y - self.apex_y
        r = np.hypot(dx, dy)
        th = np.arctan2(dx, dy)
        rows = (r - self.r_min) / (self.r_max - self.r_min) * (n_depth - 1)
        return rows, (th + self.half_angle) / (2 * self.half_angle) * (n_lines - 1)

    def in_view(self, x: np.ndarray, y: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """True where (x, y) is imaged (at least `margin` image units inside the field of view)."""
        inside = (x >= margin) & (x <= 1 - margin) & (y >= margin) & (y <= 1 - margin)
        if self.kind == "linear":
            return inside & (x >= self.x0 + margin) & (x <= self.x1 - margin)
        dx, dy = x - 0.5, y - self.apex_y
        r = np.hypot(dx, dy)
        th = np.abs(np.arctan2(dx, dy))
        lateral = (self.half_angle - th) * r
        return inside & (r >= self.r_min + margin) & (r <= self.r_max - margin) & (lateral >= margin)

    def pixel_in_view(self, size: int) -> np.ndarray:
        """Boolean (size, size) map of the pixels whose centres lie in the field of view."""
        c = (np.arange(size, dtype=np.float32) + 0.5) / size
        return self.in_view(c[None, :], c[:, None])

    def lateral_px(self, depth: np.ndarray, size: int, n_lines: int) -> np.ndarray:
        """Width of one beam-line step in output pixels at each depth (to express the pulse in grid units)."""
        if self.kind == "linear":
            return np.full_like(depth, (self.x1 - self.x0) / (n_lines - 1) * size)
        r = self.r_min + depth
        return r * 2 * self.half_angle / (n_lines - 1) * size


@dataclass(frozen=True)
class Imaging:
    """Scanner settings of one acquisition (drawn per image, so datasets vary like real ones)."""

    axial_px: float = 0.6  # pulse length (Gaussian sigma) in output pixels
    lateral_near_px: float = 0.7  # beam width at the probe face
    lateral_far_px: float = 2.2  # beam width at the deepest row
    attenuation: float = 1.0  # scales the tissue attenuation map
    tgc: float = 0.75  # share of the mean tissue attenuation the TGC gives back
    dynamic_range_db: float = 50.0
    gain_db: float = 0.0
    noise: float = 0.02  # electronic noise, relative to mean tissue echo
    oversample: float = 1.25  # beam-grid samples (depth and lines) per output pixel

    @staticmethod
    def random(rng: np.random.Generator, **fixed: float) -> Imaging:
        """Plausible settings with the spread one sees between machines and sonographers."""
        values = {
            "axial_px": rng.uniform(0.45, 0.75),
            "lateral_near_px": rng.uniform(0.6, 0.9),
            "lateral_far_px": rng.uniform(1.6, 2.8),
            "attenuation": rng.uniform(0.8, 1.25),
            "tgc": rng.uniform(0.6, 0.9),
            "dynamic_range_db": rng.uniform(42, 58),
            "gain_db": rng.uniform(-4, 3),
            "noise": rng.uniform(0.002, 0.006),
        }
        values.update(fixed)
        return Imaging(**values)


#: Mean attenuation of soft tissue in nepers (two-way, amplitude) per image height; TGC is tuned against it.
TISSUE_ATTENUATION = 2.5
#: Cap of the lateral pulse width in beam lines (keeps kernels short near a sector's apex).
MAX_LATERAL = 4.0
#: Display level of soft tissue of echogenicity 1 (0 black, 1 white) before depth and gain effects.
TISSUE_GREY = 0.62


def _noise_gain(sigma: float) -> float:
    """Amplitude gain of white noise through scipy's normalised Gaussian kernel (to keep speckle power fixed)."""
    radius = int(4 * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / max(sigma, 1e-3)) ** 2)
    return float(np.sqrt((k**2).sum()) / k.sum())


def _depth_varying_blur(field: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """Blur each row along axis -1 with its own sigma, power-preserving, by blending three fixed blurs."""
    levels = np.linspace(float(sigmas.min()), float(sigmas.max()), 3)
    if levels[-1] - levels[0] < 1e-3:
        return gaussian_filter1d(field, float(levels[0]), axis=-1, mode="nearest") / _noise_gain(float(levels[0]))
    blurred = np.stack(
        [gaussian_filter1d(field, float(s), axis=-1, mode="nearest") / _noise_gain(float(s)) for s in levels]
    )
    pos = np.clip((sigmas - levels[0]) / (levels[1] - levels[0]), 0, 1.999)
    lo = pos.astype(np.int64)
    w = (pos - lo).astype(np.float32)[:, None]
    rows = np.arange(field.shape[-2])
    return blurred[lo, ..., rows, :].transpose(1, 0, 2) * (1 - w) + blurred[lo + 1, ..., rows, :].transpose(1, 0, 2) * w


def simulate(probe: Probe, tissue: TissueFn, size: int, rng: np.random.Generator, imaging: Imaging) -> np.ndarray:
    """One B-mode frame: uint8 (size, size), black outside the field of view."""
    n_depth = max(16, round(size * imaging.oversample))
    n_lines = max(16, round(size * imaging.oversample))
    x, y, depth = probe.beam_points(n_depth, n_lines)
    echo, att = tissue(x, y)
    # Two-way transmission to each sample: what lies above it along the beam (shadows, enhancement).
    step = float(depth[1] - depth[0])
    loss = np.cumsum(att, axis=0, dtype=np.float32) * step * imaging.attenuation
    loss -= att * (0.5 * step * imaging.attenuation)
    tgc = np.exp(imaging.tgc * TISSUE_ATTENUATION * depth).astype(np.float32)[:, None]
    amplitude = np.sqrt(np.maximum(echo, 0)).astype(np.float32) * np.exp(-loss) * tgc
    scat = rng.standard_normal((2, n_depth, n_lines), dtype=np.float32) * amplitude
    # The pulse: axial Gaussian, lateral Gaussian widening with depth (in output pixels, converted to lines).
    depth_px = (probe.r_max - probe.r_min if probe.kind == "sector" else 1.0) * size / (n_depth - 1)
    axial = imaging.axial_px / depth_px
    frac = depth / depth[-1]
    beam_px = imaging.lateral_near_px + (imaging.lateral_far_px - imaging.lateral_near_px) * frac
    # Near a sector's apex lines are far closer than a pixel; beyond MAX_LATERAL lines the blur is invisible.
    lateral = np.minimum(beam_px / probe.lateral_px(depth, size, n_lines), MAX_LATERAL)
    scat = gaussian_filter1d(scat, axial, axis=1, mode="nearest") / _noise_gain(axial)
    rf = _depth_varying_blur(scat, lateral)
    rf += rng.standard_normal(rf.shape, dtype=np.float32) * (imaging.noise * tgc)
    envelope = np.hypot(rf[0], rf[1])
    # Log compression: soft tissue (echo 1, rms envelope sqrt 2) lands at TISSUE_GREY of the dynamic range,
    # so anechoic fluid is near black and specular walls saturate.
    db = 20 * np.log10(envelope / np.sqrt(2) + 1e-6) + imaging.gain_db
    display = np.clip(TISSUE_GREY + db / imaging.dynamic_range_db, 0, 1)
    # Scan conversion: sample the beam grid at every output pixel centre.
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    rows, lines = probe.beam_index(c[None, :], c[:, None], n_depth, n_lines)
    rows, lines = np.broadcast_arrays(rows, lines)
    img = map_coordinates(display, [rows, lines], order=1, mode="constant", cval=0.0)
    img[~probe.pixel_in_view(size)] = 0
    return (img * 255 + 0.5).astype(np.uint8)
