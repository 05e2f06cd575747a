"""Opening an image at its bit depth, as the challenge's evaluation (OpenCV ``imread``) reads it.

PIL opens a 16-bit grayscale PNG in mode ``I;16`` and its ``convert("L")`` clips every value
above 255 to white, so an ultrasound frame stored in 16 bits became two grey levels. OpenCV
reads such a file as 8 bits by keeping each value's high byte (libpng's ``png_set_strip_16``);
so do the decode cache (usagg/data/cache.py), `usagg data check` and the mask reader
(usagg/data/masks.py), through `high_byte` and `open_image` here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

#: The formats a dataset's images may be in: those of OpenCV's ``imread`` that ultrasound exports use, each decoded
#: by Pillow itself. Left to choose, Pillow picks a decoder by a file's first bytes whatever its name: a dataset's
#: "PNG" that was PostScript went to Ghostscript, and WebP, PSD or FLI to decoders no dataset needs.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")
#: A mask is a PNG (the challenge's format; usagg/data/masks.py reads it as libpng would).
MASK_FORMATS = ("PNG",)
#: PIL's modes of 16-bit grayscale files (``I`` is how older PIL versions open them).
WIDE_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def high_byte(arr: np.ndarray, mode: str, path: Path) -> np.ndarray:
    """16-bit grayscale pixels as uint8, their high byte (OpenCV's reading); ValueError past 16 bits."""
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 65535):
        raise ValueError(f"{path}: {mode} values outside 0..65535; expected an 8- or 16-bit grayscale PNG")
    return (arr.astype(np.uint32) >> 8).astype(np.uint8)


def to_8bit(im: Image.Image, path: Path) -> Image.Image:
    """`im` itself, or for 16-bit grayscale an ``L`` image of the high bytes (8-bit and colour files unchanged)."""
    if im.mode not in WIDE_GRAY_MODES:
        return im
    return Image.fromarray(high_byte(np.asarray(im), im.mode, path), "L")


def open_known(path: Path, formats: tuple[str, ...] = IMAGE_FORMATS) -> Image.Image:
    """``Image.open`` limited to `formats`; any other file is an ``UnidentifiedImageError`` (an OSError) naming
    what was expected."""
    try:
        return Image.open(path, formats=formats)
    except UnidentifiedImageError:
        names = ", ".join(formats[:-1]) + f" or {formats[-1]}" if len(formats) > 1 else formats[0]
        raise UnidentifiedImageError(f"{path} is not a {names} file (the formats usagg reads)") from None


@contextlib.contextmanager
def open_image(path: Path) -> Iterator[Image.Image]:
    """`open_known` that yields 16-bit grayscale already scaled to 8 bits (see `to_8bit`)."""
    with open_known(path) as im:
        yield to_8bit(im, path)
