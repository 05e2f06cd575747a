"""Reading a mask PNG as the challenge's evaluation does (OpenCV's IMREAD_GRAYSCALE), without OpenCV.

One reader for training targets (usagg/data/cache.py), label checks and scoring
(usagg/tasktypes/segmentation.py), so a palette or colour mask means the same class
map everywhere: its luminance, as libpng computes it, never its palette indices.
The label check reads with `check_mask`, which also says when a mask's pixels cannot be
class indices as the challenge reads them (`MaskRead.refused`): a 16-bit PNG (read by its
high byte, so indices 0..255 become 0) or a colour one whose pixels are not grey (read
as luminance, so class colours such as (1, 0, 0) become 0). Either read silently as an
empty mask; a grey colour PNG (R = G = B) reads as its grey values, exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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
    return check_mask(path).gray


@dataclass(frozen=True)
class MaskRead:
    """A mask as the challenge reads it (`gray`), the PNG's pixel mode as PIL names it ("1", "L", "P", "RGB",
    "I;16", ...), and why its pixels cannot be class indices as stored (None when they can)."""

    gray: np.ndarray
    mode: str
    refused: str | None


def check_mask(path: Path) -> MaskRead:
    """`read_mask_grayscale` with the PNG's mode and, for a 16-bit or non-grey colour mask, why it is refused
    (`_not_indices`): one decode for the label check."""
    with open_known(path, MASK_FORMATS) as im:
        mode = im.mode
        gamma = im.info.get("gamma")
        fixed_gamma = round(gamma * 100000) if gamma else (_SRGB_GAMMA if "srgb" in im.info else None)
        indices = np.asarray(im)[..., 0] if mode == "PA" else np.asarray(im) if mode == "P" else None
        arr = np.asarray(im.convert("RGBA"))[..., :3] if indices is not None else np.asarray(im)  # palette -> RGB
        turn = orientation(im)
    gray = _gray(arr, mode, fixed_gamma, path)
    return MaskRead(upright_array(gray, turn), mode, _not_indices(arr, mode, gray, indices))


#: Values or colours a refusal lists before "and N more".
_SHOWN = 6


def _listed(items: list[str]) -> str:
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def _not_indices(arr: np.ndarray, mode: str, gray: np.ndarray, indices: np.ndarray | None) -> str | None:
    """Why a 16-bit or colour mask's stored pixels are not the class indices the challenge reads, or None.
    `indices`: a palette PNG's palette indices, which a user's tools may show as its classes."""
    if mode in WIDE_GRAY_MODES:
        held = [int(v) for v in np.unique(arr)]
        fix = (
            "save it as an 8-bit grayscale PNG of the same values, e.g. in Python "
            "`Image.fromarray(np.asarray(Image.open(f)).astype(np.uint8)).save(f)`"
            if held[-1] <= 255
            else "save it as an 8-bit grayscale PNG of class indices"
        )
        return (
            f"is a 16-bit PNG holding values {_values(arr)}, which the challenge's OpenCV reader reads by each value's "
            f"high byte as {_values(gray)}: masks are 8-bit; {fix}"
        )
    if mode not in ("RGB", "RGBA", "P", "PA"):
        return None
    rgb = arr[..., :3]
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return None  # grey: libpng keeps a grey pixel's value, so the map is its grey values exactly
    packed = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    colours, first = np.unique(packed.reshape(-1), return_index=True)
    flat = gray.reshape(-1)
    pairs = [f"({c >> 16}, {(c >> 8) & 255}, {c & 255}) as {int(flat[i])}" for c, i in zip(colours, first, strict=True)]
    if indices is not None:
        kind = "a palette PNG whose colours are not grey"
        hint = (
            f" (its palette indices are {_values(indices)}: if those are the classes, save them as grey values, e.g. "
            "in Python `Image.fromarray(np.asarray(Image.open(f))).save(f)`)"
        )
    else:
        kind = f"an {mode} PNG in colour"
        used = [k for k in range(3) if rgb[..., k].any()]
        band = "RGB"[used[0]]
        hint = (
            f" (its {_CHANNELS[used[0]]} channel alone is not 0, holding {_values(rgb[..., used[0]])}: if those are "
            f'the classes, save that channel, e.g. `Image.open(f).convert("RGB").getchannel("{band}").save(f)`)'
            if len(used) == 1
            else ""
        )
    return (
        f"is {kind} (its channels differ), which the challenge's OpenCV reader reads as luminance, not as class "
        f"indices: it reads {_listed(pairs)}. Save the mask as an 8-bit grayscale PNG of class indices{hint}"
    )


def _values(arr: np.ndarray) -> str:
    """The distinct values of `arr`, listed: "[0, 1]"."""
    return f"[{_listed([str(int(v)) for v in np.unique(arr)])}]"


_CHANNELS = ("red", "green", "blue")


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
