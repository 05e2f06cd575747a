"""Opening an image at its bit depth and orientation, as the challenge's evaluation (OpenCV ``imread``) reads it.

PIL opens a 16-bit grayscale PNG in mode ``I;16`` and its ``convert("L")`` clips every value
above 255 to white, so an ultrasound frame stored in 16 bits became two grey levels. OpenCV
reads such a file as 8 bits by keeping each value's high byte (libpng's ``png_set_strip_16``);
so do the decode cache (usagg/data/cache.py), `usagg data check` and the mask reader
(usagg/data/masks.py), through `high_byte` and `open_image` here.

OpenCV's ``imread`` (IMREAD_COLOR and IMREAD_GRAYSCALE alike) also turns a JPEG or PNG upright by its
EXIF Orientation tag, as every image viewer shows it and so as labels are drawn; PIL does not. `upright`
does it here, so an image's pixels and its size (the frame its boxes, keypoints and mask are checked and
scored in) are those OpenCV reads. A TIFF with an orientation other than 1 is refused when opened
(`open_known`, `tiff_orientation`), before Pillow's ``load()`` could apply the tag and drop it:
TIFF readers disagree on it (OpenCV applies 2-4 and cannot read 5-8; Pillow's libtiff decoder turns a
compressed file while its own leaves an uncompressed one as stored, yet reports the turned size before
loading), so no reading of it is the challenge's. BMP has none.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

#: The formats a dataset's images may be in: those of OpenCV's ``imread`` that ultrasound exports use, each decoded
#: by Pillow itself. Left to choose, Pillow picks a decoder by a file's first bytes whatever its name: a dataset's
#: "PNG" that was PostScript went to Ghostscript, and WebP, PSD or FLI to decoders no dataset needs.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")
#: A mask is a PNG (the challenge's format; usagg/data/masks.py reads it as libpng would).
MASK_FORMATS = ("PNG",)
#: PIL's modes of 16-bit grayscale files (``I`` is how older PIL versions open them).
WIDE_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
#: The formats whose EXIF Orientation OpenCV's ``imread`` applies after decoding (checked against OpenCV 5.1 for
#: all eight orientations, IMREAD_COLOR and IMREAD_GRAYSCALE; only IMREAD_UNCHANGED ignores it).
ORIENTED_FORMATS = ("JPEG", "PNG")
#: EXIF Orientation -> the transpose that shows the stored pixels upright (as ``PIL.ImageOps.exif_transpose``).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


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


def orientation(im: Image.Image) -> int:
    """The EXIF Orientation (2..8) OpenCV's ``imread`` applies to this opened file; 1 (as stored) for none, a
    value outside 1..8, or a format OpenCV does not orient (`ORIENTED_FORMATS`)."""
    if im.format not in ORIENTED_FORMATS:
        return 1
    value = im.getexif().get(ExifTags.Base.Orientation, 1)
    return value if value in _UPRIGHT else 1


def upright(im: Image.Image, turn: int) -> Image.Image:
    """`im` turned by EXIF Orientation `turn` (from `orientation`), as displayed and as OpenCV reads it."""
    method = _UPRIGHT.get(turn)
    return im if method is None else im.transpose(method)


def upright_array(arr: np.ndarray, turn: int) -> np.ndarray:
    """A 2-D uint8 array (a mask read as OpenCV reads it) turned by EXIF Orientation `turn`."""
    return arr if turn not in _UPRIGHT else np.array(upright(Image.fromarray(arr), turn))


def open_known(path: Path, formats: tuple[str, ...] = IMAGE_FORMATS) -> Image.Image:
    """``Image.open`` limited to `formats`; any other file is an ``UnidentifiedImageError`` (an OSError) naming
    what was expected, and a TIFF not stored upright an OSError (`tiff_orientation`). The orientation is read
    here, at open: Pillow's ``load()`` of a TIFF applies its orientation and drops the tag, so a check that loaded
    the file first saw orientation 1 and the turned size, and passed a file every job then failed to read."""
    try:
        with warnings.catch_warnings():  # Pillow warns past MAX_IMAGE_PIXELS: a raw Python warning on stderr
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path, formats=formats)
    except UnidentifiedImageError:
        names = ", ".join(formats[:-1]) + f" or {formats[-1]}" if len(formats) > 1 else formats[0]
        raise UnidentifiedImageError(f"{path} is not a {names} file (the formats usagg reads)") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise OSError(
            f"{path} declares more than {Image.MAX_IMAGE_PIXELS:,} pixels ({err}); an ultrasound frame is a few "
            "hundred thousand: a damaged or hostile file, refused before decoding"
        ) from None
    try:
        tiff_orientation(im, path)
    except OSError:
        im.close()
        raise
    return im


def tiff_orientation(im: Image.Image, path: Path) -> None:
    """OSError (so `unreadable_image`, naming the file) for a TIFF stored other than upright: see the module doc."""
    if im.format != "TIFF":
        return
    value = im.getexif().get(ExifTags.Base.Orientation, 1)
    if value != 1:
        raise OSError(
            f"{path} is a TIFF whose EXIF orientation is {value}, not 1 (stored upright): TIFF readers turn such a "
            "file differently (OpenCV's reads 2-4 turned and cannot read 5-8), so usagg does not guess; save the "
            "image upright, or as PNG"
        )


def as_read(im: Image.Image, path: Path) -> Image.Image:
    """A file `open_known` opened, as OpenCV reads it: 16-bit grayscale scaled to 8 bits (`to_8bit`), turned upright
    by its EXIF orientation (`upright`); a TIFF not stored upright was refused at open."""
    return upright(to_8bit(im, path), orientation(im))


def wide_max(im: Image.Image) -> int | None:
    """The largest value of a 16-bit grayscale image (None for any other mode): at most 4095, its data has 12 bits
    or fewer and reads as 0..15 (`high_byte`), an almost black image."""
    if im.mode not in WIDE_GRAY_MODES:
        return None
    arr = np.asarray(im)
    return int(arr.max()) if arr.size else 0


@contextlib.contextmanager
def open_image(path: Path) -> Iterator[Image.Image]:
    """`open_known` that yields the image as OpenCV reads it (`as_read`)."""
    with open_known(path) as im:
        yield as_read(im, path)
