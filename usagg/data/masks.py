"""Reading a mask PNG as the challenge's evaluation does (OpenCV's IMREAD_GRAYSCALE), without OpenCV.

One reader for training targets (usagg/data/cache.py), label checks and scoring
(usagg/tasktypes/segmentation.py), so a palette or colour mask means the same class
map everywhere: its luminance, as libpng computes it, never its palette indices.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from usagg.data.images import MASK_FORMATS, WIDE_GRAY_MODES, high_byte, open_known, orientation, upright_array

#: libpng's RGB-to-gray weights as OpenCV sets them (``png_set_rgb_to_gray(png, 1, 0.299, 0.587)``), in
#: 1/32768: red and green truncated from fixed point, blue the rest.
_LUMA = (9797, 19234, 32768 - 9797 - 19234)
#: File gamma libpng gives a PNG with an sRGB chunk (1/2.2 in 1/100000).
_SRGB_GAMMA = 45455


def read_mask_grayscale(path: Path) -> np.ndarray:
    """A mask as the challenge's evaluation reads it: OpenCV ``imread(path, IMREAD_GRAYSCALE)``, uint8 [H, W].

    A grayscale PNG reads as it is; a palette or colour PNG is converted to
    luminance the way OpenCV's libpng decoder does (palette expanded to RGB,
    alpha dropped, gray = (9797 R + 19234 G + 3737 B) >> 15 unless R = G = B;
    with a gAMA or sRGB chunk the weighting happens on linearised values), so
    palette indices are NOT class indices here; 16-bit gray keeps its high byte
    and 1-bit gray reads as 0/255. Then, as IMREAD_GRAYSCALE does, the map is
    turned upright by the PNG's EXIF orientation (an eXIf chunk, `orientation`), so
    it stays in its image's frame. Checked pixel for pixel against OpenCV 5.0 and
    5.1 (tests/test_metrics.py has the worked cases). Not reproduced: 16-bit colour
    PNGs (libpng weights the 16-bit values; here their high bytes, at most 1 apart).
    """
    with open_known(path, MASK_FORMATS) as im:
        mode = im.mode
        gamma = im.info.get("gamma")
        fixed_gamma = round(gamma * 100000) if gamma else (_SRGB_GAMMA if "srgb" in im.info else None)
        arr = np.asarray(im.convert("RGBA"))[..., :3] if mode in ("P", "PA") else np.asarray(im)  # palette -> RGB
        turn = orientation(im)
    return upright_array(_gray(arr, mode, fixed_gamma, path), turn)


def _gray(arr: np.ndarray, mode: str, fixed_gamma: int | None, path: Path) -> np.ndarray:
    """The decoded pixels of a PNG of `mode` as IMREAD_GRAYSCALE's uint8 map, before any EXIF orientation."""
    if mode == "1":
        return np.where(arr, 255, 0).astype(np.uint8)
    if mode == "L":
        return np.ascontiguousarray(arr, dtype=np.uint8)
    if mode == "LA":
        return np.ascontiguousarray(arr[..., 0], dtype=np.uint8)
    if mode in WIDE_GRAY_MODES:
        return high_byte(arr, mode, path)
    if mode in ("RGB", "RGBA", "P", "PA"):
        return _luminance(arr[..., :3], fixed_gamma)
    raise ValueError(f"mask {path}: image mode {mode} is not a grayscale, palette or colour PNG")


def mask_mode(path: Path) -> str:
    """The PNG's pixel mode as PIL names it ("1", "L", "P", "RGB", "I;16", ...), read from its header alone: what
    explains values a mask was not saved with (a 1-bit PNG reads as 0/255, a palette one as its luminance)."""
    with open_known(path, MASK_FORMATS) as im:
        return im.mode


def _luminance(rgb: np.ndarray, fixed_gamma: int | None) -> np.ndarray:
    """libpng's ``png_do_rgb_to_gray`` for 8-bit RGB, with its gamma tables when the file gamma matters."""
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    rc, gc, bc = _LUMA
    if fixed_gamma is None or not (_gamma_significant(fixed_gamma) or _gamma_significant(_reciprocal(fixed_gamma))):
        gray = (rc * r + gc * g + bc * b) >> 15  # libpng: "the historical approach which simply truncates"
    else:
        to_1 = _gamma_table(_reciprocal(fixed_gamma))
        from_1 = _gamma_table(_reciprocal(_reciprocal(fixed_gamma)))
        gray = from_1[(rc * to_1[r] + gc * to_1[g] + bc * to_1[b] + 16384) >> 15]
    return np.where((r == g) & (g == b), r, gray).astype(np.uint8)


def _reciprocal(fixed: int) -> int:
    """libpng's ``png_reciprocal`` in its 1/100000 fixed point."""
    return math.floor(1e10 / fixed + 0.5)


def _gamma_significant(fixed: int) -> bool:
    """libpng's ``png_gamma_significant``: more than 5% away from 1."""
    return not 95000 <= fixed <= 105000


def _gamma_table(fixed: int) -> np.ndarray:
    """libpng's ``png_build_8bit_table``: 255 (v / 255) ** gamma rounded, 0 and 255 kept; identity if near 1."""
    v = np.arange(256)
    if not _gamma_significant(fixed):
        return v
    out = np.floor(255 * np.power(v / 255.0, fixed * 0.00001) + 0.5).astype(np.int64)
    out[[0, 255]] = (0, 255)
    return out
