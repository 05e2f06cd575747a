"""Decode cache: each image (and mask) is decoded and resized once per (file list, size, colour mode).

The result is a `.npy` file of uint8 [N, S, S] (grayscale, masks) or [N, 3, S, S]
(colour) opened memory-mapped, so every epoch, every job and every worker process
reads the same pages instead of decoding PNGs again. The key hashes the paths
of the source files and what identifies their content (`filehash.identity`: size,
mtime, ctime and inode, as the data check's cache keys them) plus the side S and
the colour mode, so editing or replacing a file invalidates its entry, even a
same-size file whose mtime was restored. Files are
written under a temporary name and renamed (a killed process never leaves a
half-written entry) inside a file lock (concurrent jobs decode once). A CRC-32 of
both arrays' bytes (`<key>.crc32`, beside them) is checked every time an entry is
opened: bytes flipped on disk would otherwise change the images every job trains
and tests on without a word, so a mismatch (or a missing checksum) is logged and
the entry decoded again.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from usagg.atomic import full_disk_named, reserve, write_text_atomic
from usagg.cachedir import entry_lock
from usagg.data.images import open_image
from usagg.data.masks import read_mask_grayscale
from usagg.errors import DataError
from usagg.filehash import identity

log = logging.getLogger(__name__)

#: Bump when the decoding changes, so old entries are not reused.
#: 2: masks read as OpenCV's IMREAD_GRAYSCALE (palette and colour masks as luminance); 3: 16-bit images by high byte;
#: 4: JPEG and PNG images and masks turned upright by their EXIF orientation (usagg/data/images.py `upright`).
CACHE_VERSION = 4

#: How images are decoded: `gray` (luminance, 1 channel), `rgb` (3 channels), `auto` (3 channels only when some
#: image of the list has colour, i.e. channels that differ; else exactly the `gray` decode).
COLOR_MODES = ("auto", "gray", "rgb")


@dataclass(frozen=True)
class Decoded:
    """A cache entry: S x S uint8 arrays (memory-mapped) and each source's original (H, W)."""

    arrays: np.ndarray  # [N, S, S] or [N, 3, S, S] uint8, read-only memmap
    orig_hw: np.ndarray  # [N, 2] int64
    path: Path


def read_mask(path: Path) -> np.ndarray:
    """A mask PNG as uint8 class indices, read as the challenge's evaluation reads it (usagg/data/masks.py)."""
    try:
        return read_mask_grayscale(path)
    except ValueError as err:
        raise DataError(f"{err}; expected a grayscale PNG of class indices 0..num_classes-1") from None


def decode_image(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Grayscale, bilinear resize to size x size; returns the array and the original (H, W)."""
    with open_image(path) as im:  # 16-bit as 8-bit and upright, as OpenCV reads it (usagg/data/images.py)
        hw = (im.height, im.width)
        gray = im.convert("L").resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(gray, dtype=np.uint8), hw


def decode_color(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int], bool]:
    """RGB [3, S, S], bilinear, and whether the image has colour; a colourless image gives the `gray` decode.

    Colourless (a gray mode, or RGB channels equal everywhere) returns `decode_image`'s [S, S] array, so
    grayscale data keep exactly the numbers of the grayscale path.
    """
    with open_image(path) as im:
        hw = (im.height, im.width)
        if im.mode not in ("L", "LA", "I", "I;16", "F", "1"):
            rgb = im.convert("RGB")
            arr = np.asarray(rgb)
            if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
                resized = np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
                return np.ascontiguousarray(resized.transpose(2, 0, 1)), hw, True
    gray, hw = DECODERS["image"](path, size)  # the table's grayscale decoder, exactly its numbers
    return gray, hw, False


def decode_mask(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Class indices, nearest-neighbour resize (labels are never interpolated)."""
    arr = read_mask(path)
    resized = Image.fromarray(arr).resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(resized, dtype=np.uint8), (arr.shape[0], arr.shape[1])


#: kind -> grayscale decoder (colour images go through `decode_color`); tests swap entries with monkeypatch.setitem.
DECODERS: dict[str, Callable[[Path, int], tuple[np.ndarray, tuple[int, int]]]] = {
    "image": decode_image,
    "mask": decode_mask,
}


def cache_key(files: Sequence[Path], size: int, kind: str, color: str = "gray") -> str:
    """Hash of what the entry depends on: decoder version, kind, size, colour mode, each file's path and identity
    (`filehash.identity`: size, mtime, ctime, inode).

    Grayscale images and masks keep the key they had before colour modes existed (their decode is unchanged).
    """
    mode = "" if kind == "mask" or color == "gray" else f" color={color}"
    h = hashlib.sha256(f"usagg-decode v{CACHE_VERSION} {kind} {size}{mode}\n".encode())
    for f in files:
        try:
            st = os.stat(f)
        except OSError:
            raise DataError(f"{f} does not exist or cannot be read (needed for the decode cache)") from None
        h.update(f"{os.path.abspath(f)}\0{identity(st)}\n".encode())
    return h.hexdigest()[:32]


def _decode_one(decode: Callable, path: Path, size: int) -> tuple:
    try:
        return decode(path, size)
    except DataError:
        raise
    except Exception as err:  # PIL raises many types for bad files
        raise DataError(f"{path} cannot be decoded as an image ({type(err).__name__}: {err})") from None


def _threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def load(files: Sequence[Path], size: int, cache_dir: Path, kind: str = "image", color: str = "gray") -> Decoded:
    """The cache entry for these files at this size (and colour mode, for images), decoding them first on a miss."""
    if kind not in DECODERS:
        raise ValueError(f"kind must be one of {sorted(DECODERS)}, got {kind!r}")
    if color not in COLOR_MODES:
        raise ValueError(f"color must be one of {COLOR_MODES}, got {color!r}")
    folder = Path(cache_dir) / "decode"
    key = cache_key(files, size, kind, color)
    data_file, hw_file = folder / f"{key}.npy", folder / f"{key}.hw.npy"
    with entry_lock(Path(cache_dir), folder / f"{key}.lock"):  # also what `usagg cache prune` takes before deleting
        if data_file.exists():
            entry = _open(data_file, hw_file, len(files))
            why = "not a whole array" if entry is None else _checksum_mismatch(entry, hw_file)
            if entry is not None and why is None:
                with contextlib.suppress(OSError):
                    os.utime(data_file)  # last use, for `usagg cache prune`
                return entry
            log.warning(
                "decode cache entry %s is damaged (%s); decoding its %d files again", data_file, why, len(files)
            )
            for damaged in (data_file, hw_file, _sum_file(hw_file)):  # a cache entry is rebuilt, never trusted
                damaged.unlink(missing_ok=True)
        with full_disk_named(data_file, cache=True):  # numpy's header and np.save name no file of ours
            _build(files, size, kind, data_file, hw_file, "gray" if kind == "mask" else color)
        entry = _open(data_file, hw_file, len(files))
        if entry is None:
            raise DataError(f"the decode cache entry {data_file} was written but cannot be read back (disk full?)")
        return entry


def _sum_file(hw_file: Path) -> Path:
    """`<key>.crc32` beside `<key>.hw.npy` (the key prefix keeps it with its entry for `usagg cache prune`)."""
    return hw_file.with_name(hw_file.name.split(".", 1)[0] + ".crc32")


def _crc32(arrays: np.ndarray, hw: np.ndarray) -> str:
    """CRC-32 of both arrays' bytes (2.6 GB/s on one core: a fraction of reading the pages)."""
    return f"{zlib.crc32(np.ascontiguousarray(hw).data, zlib.crc32(np.ascontiguousarray(arrays).data)):08x}"


def _checksum_mismatch(entry: Decoded, hw_file: Path) -> str | None:
    """Why the entry's bytes are not the ones written (its checksum differs or is missing), None when they are."""
    try:
        stored = _sum_file(hw_file).read_text(encoding="ascii").strip()
    except (OSError, ValueError):
        return "no checksum beside it"
    if stored != _crc32(entry.arrays, entry.orig_hw):
        return "its bytes no longer match their checksum"
    return None


def _open(data_file: Path, hw_file: Path, n: int) -> Decoded | None:
    """A cache entry if it reads whole (header, size, one row per file), else None: truncated or damaged."""
    try:
        arrays = np.load(data_file, mmap_mode="r")
        hw = np.load(hw_file)
    except (OSError, ValueError, EOFError):
        return None
    if arrays.shape[0] != n or hw.shape != (n, 2):
        return None
    return Decoded(arrays, hw, data_file)


def _build(files: Sequence[Path], size: int, kind: str, data_file: Path, hw_file: Path, color: str) -> None:
    """Decode into a temporary .npy, then rename: the final name exists only when complete.

    Colour modes decode with `decode_color`; the array becomes [N, 3, S, S] at the first coloured image
    (`auto`) or from the start (`rgb`), colourless images broadcast to the three channels.
    """
    decode = DECODERS[kind] if color == "gray" else decode_color
    for stale in data_file.parent.glob(f"{data_file.stem}.*tmp.npy"):  # left by a killed process; we hold the lock
        stale.unlink(missing_ok=True)
    tmp = data_file.with_name(f"{data_file.stem}.{os.getpid()}.tmp.npy")
    tmp_hw = hw_file.with_name(f"{hw_file.stem}.{os.getpid()}.tmp.npy")
    try:
        shape = (len(files), 3, size, size) if color == "rgb" else (len(files), size, size)
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        reserve(tmp, data_file)
        hw = np.zeros((len(files), 2), dtype=np.int64)
        with ThreadPoolExecutor(_threads()) as pool:  # PIL releases the GIL while decoding
            for i, (arr, orig, *_) in enumerate(pool.map(lambda f: _decode_one(decode, Path(f), size), files)):
                if arr.ndim == 3 and out.ndim == 3:  # the first coloured image of an `auto` list
                    gray = np.array(out[:i])
                    del out
                    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(files), 3, size, size))
                    reserve(tmp, data_file)
                    out[:i] = gray[:, None]
                out[i] = arr if arr.ndim == out.ndim - 1 else arr[None]
                hw[i] = orig
        out.flush()
        crc = _crc32(out, hw)
        del out
        np.save(tmp_hw, hw)
        os.replace(tmp_hw, hw_file)  # written first: the data file's presence means all three are complete
        write_text_atomic(_sum_file(hw_file), crc + "\n")
        os.replace(tmp, data_file)
    finally:
        for t in (tmp, tmp_hw):
            t.unlink(missing_ok=True)
