"""Training augmentation on the device, drawn from (job seed, global step): a resumed job draws the same.

The default is the challenge baseline's photometric set (albumentations 2.0.8 defaults in its train.py):
brightness/contrast with p=0.2 (alpha = 1 + U(-0.2, 0.2), beta = U(-0.2, 0.2) x 255, then clipped) and
Gaussian noise with p=0.1 (std U(0.2, 0.44) x 255, per channel on colour images, one plane on every channel of a
grey one so grey stays grey, then clipped). Pixels stay float after augmentation (not re-quantised to 8 bits).
Geometric transforms (horizontal flip, scale, rotation about the centre) are optional; masks follow with
nearest-neighbour sampling, boxes become the box around their moved corners and keypoints move with the image,
all clipped to the image ([0, 1]).

Randomness is counter-based: the per-sample decisions and parameters come from a CPU generator seeded from
(seed, step), the noise from a generator on the device seeded the same way, so nothing is checkpointed and the
host knows which samples were touched without asking the device (an untouched sample can be served from the
frozen trunk, usagg/model/trunk.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from usagg.spec.models import AugmentationSpec

_MASK64 = (1 << 64) - 1


def _mix(*values: int) -> int:
    """splitmix64 of a tuple of integers: well-spread 63-bit generator seeds from (seed, step, stream)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (v & _MASK64)) * 0xBF58476D1CE4E5B9 & _MASK64
        h = (h ^ (h >> 27)) * 0x94D049BB133111EB & _MASK64
        h ^= h >> 31
    return h >> 1


@dataclass(frozen=True)
class Draw:
    """One batch's augmentation, decided on the host: per sample flags and parameters (CPU tensors, [B])."""

    step: int
    bc: torch.Tensor  # bool: brightness/contrast applied
    alpha: torch.Tensor
    beta: torch.Tensor  # in pixel units (0..255 scale)
    noise: torch.Tensor  # bool
    noise_std: torch.Tensor  # in pixel units
    flip: torch.Tensor  # bool
    geo: torch.Tensor  # bool: scale or rotation applied
    scale: torch.Tensor
    angle: torch.Tensor  # radians

    @property
    def touched(self) -> torch.Tensor:
        """bool [B]: samples whose input differs from the stored image (they cannot be read from the trunk)."""
        return self.bc | self.noise | self.flip | self.geo

    def subset(self, pos: torch.Tensor) -> Draw:
        """The draw of the samples at `pos` (CPU int64), in that order."""
        fields = {k: getattr(self, k)[pos] for k in ("bc", "alpha", "beta", "noise", "noise_std", "flip", "geo")}
        return Draw(self.step, scale=self.scale[pos], angle=self.angle[pos], **fields)


class Augmenter:
    """Draws and applies one job's training augmentation; `active` is False when nothing can happen."""

    def __init__(self, spec: AugmentationSpec, seed: int) -> None:
        self.spec = spec
        self.seed = seed
        s = spec
        self.active = s.preset != "none" and any(
            p > 0 for p in (s.brightness_contrast_p, s.noise_p, s.hflip_p, s.scale_p, s.rotate_p)
        )
        self.geometric = s.geometric

    def draw(self, step: int, n: int) -> Draw:
        """Decisions for a batch of `n` samples at global step `step`: always 11 uniforms per sample."""
        s = self.spec
        g = torch.Generator().manual_seed(_mix(self.seed, step, 0))
        u = torch.rand((n, 11), generator=g, dtype=torch.float64)
        on = self.active

        def between(col: int, lo: float, hi: float) -> torch.Tensor:
            return (lo + (hi - lo) * u[:, col]).to(torch.float32)

        return Draw(
            step=step,
            bc=(u[:, 0] < s.brightness_contrast_p) & on,
            alpha=1.0 + between(1, -s.contrast_limit, s.contrast_limit),
            beta=255.0 * between(2, -s.brightness_limit, s.brightness_limit),
            noise=(u[:, 3] < s.noise_p) & on,
            noise_std=255.0 * between(4, *s.noise_std),
            flip=(u[:, 5] < s.hflip_p) & on,
            geo=((u[:, 6] < s.scale_p) | (u[:, 8] < s.rotate_p)) & on,
            scale=torch.where(u[:, 6] < s.scale_p, between(7, *s.scale_range), 1.0),
            angle=torch.where(u[:, 8] < s.rotate_p, between(9, -s.rotate_deg, s.rotate_deg) * (math.pi / 180), 0.0),
        )

    def apply(
        self, images: torch.Tensor, targets: torch.Tensor, geometry: str | None, draw: Draw
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment touched samples: uint8 images [k, S, S] or [k, 3, S, S] and stored targets, both on the device.

        `geometry` is the task type's `target_geometry` (how its targets move with the image).

        Returns float32 pixels (0..255) and targets in the stored layout; `draw` is the draw of these k samples.
        """
        dev = images.device
        x = images.to(torch.float32)
        if self.geometric:  # TensorSplit.from_dataset refuses a type without a known geometry up front
            x, targets = geometric(x, targets, str(geometry), draw)
        if bool(draw.bc.any()):
            shape = (-1,) + (1,) * (x.ndim - 1)
            alpha = _to(torch.where(draw.bc, draw.alpha, 1.0), dev).view(shape)
            beta = _to(torch.where(draw.bc, draw.beta, 0.0), dev).view(shape)
            x = torch.where(_to(draw.bc, dev).view(shape), (x * alpha + beta).clamp_(0, 255), x)
        rows = torch.nonzero(draw.noise).flatten()  # host side: the draw lives on the CPU
        if len(rows):
            g = torch.Generator(device=dev).manual_seed(_mix(self.seed, draw.step, 1))
            plane = x.shape[-2:]
            noise = torch.randn((len(rows), 1, *plane), generator=g, device=dev)
            std = _to(draw.noise_std[rows], dev).view(-1, 1, 1, 1)
            pos = _to(rows, dev)
            sub = x.index_select(0, pos)
            if x.ndim == 4 and x.shape[1] > 1:
                noise = _per_channel(sub, noise, _mix(self.seed, draw.step, 2))
            noisy = (sub + (std * noise if x.ndim == 4 else (std * noise)[:, 0])).clamp_(0, 255)
            x = x.index_copy(0, pos, noisy)
        return x, targets


def _per_channel(sub: torch.Tensor, shared: torch.Tensor, seed: int) -> torch.Tensor:
    """Noise [k, C, S, S]: the shared plane on channel 0 and planes of their own on the others for colour samples
    (the baseline's GaussNoise is per channel on RGB), the shared plane on every channel for grey ones (equal
    channels, as grey images broadcast to three are), so grey stays grey. Decided on the device, no host sync."""
    g = torch.Generator(device=sub.device).manual_seed(seed)
    own = torch.randn((sub.shape[0], sub.shape[1] - 1, *sub.shape[-2:]), generator=g, device=sub.device)
    grey = (sub[:, 1:] == sub[:, :1]).flatten(1).all(1).view(-1, 1, 1, 1)
    return torch.cat([shared, torch.where(grey, shared, own)], 1)


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host tensor on the device without a blocking copy (pinned first on CUDA)."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def forward_matrix(draw: Draw, flip: bool = True) -> torch.Tensor:
    """[B, 2, 2] maps centred input coordinates (2x - 1, x in [0, 1]) to output ones: scale * R(angle) * flip."""
    c, s = torch.cos(draw.angle), torch.sin(draw.angle)
    f = torch.where(draw.flip, -1.0, 1.0) if flip else torch.ones_like(c)
    m = torch.stack([torch.stack([c * f, -s], -1), torch.stack([s * f, c], -1)], -2)
    return draw.scale.view(-1, 1, 1) * m


def map_points(points: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Points [B, K, 2] (x, y in [0, 1]) through [B, 2, 2] forward matrices about the image centre (unclipped)."""
    centred = points * 2 - 1
    return (centred @ matrix.transpose(1, 2) + 1) / 2


def map_boxes(boxes: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Boxes [B, 4] xyxy in [0, 1]: the axis-aligned box around the four moved corners (unclipped)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    corners = torch.stack([torch.stack(p, -1) for p in ((x1, y1), (x2, y1), (x1, y2), (x2, y2))], 1)
    moved = map_points(corners, matrix)
    return torch.cat([moved.amin(1), moved.amax(1)], -1)


def geometric(x: torch.Tensor, targets: torch.Tensor, geometry: str, draw: Draw) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip (exact, by reversing columns), then scale/rotation (bilinear for pixels, nearest for masks).

    Only the rows the draw moves change; boxes and keypoints of moved rows are clipped to the image.
    """
    dev = x.device
    if bool(draw.flip.any()):
        flip = _to(draw.flip, dev)
        x = torch.where(flip.view((-1,) + (1,) * (x.ndim - 1)), x.flip(-1), x)
        if geometry == "mask":
            targets = torch.where(flip.view(-1, 1, 1), targets.flip(-1), targets)
    rows = torch.nonzero(draw.geo).flatten()
    if len(rows):
        pos = _to(rows, dev)
        inv = torch.linalg.inv(forward_matrix(draw.subset(rows), flip=False))  # output -> input, as grids sample
        theta = _to(torch.cat([inv, torch.zeros(len(rows), 2, 1)], -1), dev)
        sub = x.index_select(0, pos)
        plane = sub if sub.ndim == 4 else sub.unsqueeze(1)
        grid = F.affine_grid(theta, list(plane.shape), align_corners=False)
        warped = F.grid_sample(plane, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        x = x.index_copy(0, pos, warped if sub.ndim == 4 else warped[:, 0])
        if geometry == "mask":
            masks = targets.index_select(0, pos).unsqueeze(1).to(torch.float32)
            moved = F.grid_sample(masks, grid, mode="nearest", padding_mode="zeros", align_corners=False)
            targets = targets.index_copy(0, pos, moved[:, 0].round().to(targets.dtype))
    rows = torch.nonzero(draw.flip | draw.geo).flatten()
    if geometry in ("boxes", "points") and len(rows):
        pos = _to(rows, dev)
        m = _to(forward_matrix(draw.subset(rows)), dev)
        sub = targets.index_select(0, pos)
        moved = map_boxes(sub, m) if geometry == "boxes" else map_points(sub, m)
        targets = targets.index_copy(0, pos, moved.clamp(0, 1).to(targets.dtype))
    return x, targets


__all__ = ["Augmenter", "Draw", "forward_matrix", "geometric", "map_boxes", "map_points"]
