"""Decode cache: each image (and mask) is decoded and resized once per (file list, size).

The result is a `.npy` file of uint8 [N, S, S] opened memory-mapped, so every
epoch, every job and every worker process reads the same pages instead of
decoding PNGs again. The key hashes the paths, sizes and mtimes of the source
files plus the side S, so editing a file invalidates its entry. Files are
written under a temporary name and renamed (a killed process never leaves a
half-written entry) inside a file lock (concurrent jobs decode once).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock
from PIL import Image

from usagg.errors import DataError

#: Bump when the decoding changes, so old entries are not reused.
CACHE_VERSION = 1


@dataclass(frozen=True)
class Decoded:
    """A cache entry: S x S uint8 arrays (memory-mapped) and each source's original (H, W)."""

    arrays: np.ndarray  # [N, S, S] uint8, read-only memmap
    orig_hw: np.ndarray  # [N, 2] int64
    path: Path


def read_mask(path: Path) -> np.ndarray:
    """A mask PNG as uint8 class indices (palette indices, not colours; first channel of RGB)."""
    with Image.open(path) as im:
        arr = np.asarray(im)
    if arr.ndim == 3:
        arr = arr[..., 0]
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise DataError(f"mask {path} has values outside 0..255; expected class indices 0..num_classes-1")
        arr = arr.astype(np.uint8)
    return arr


def decode_image(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Grayscale, bilinear resize to size x size; returns the array and the original (H, W)."""
    with Image.open(path) as im:
        hw = (im.height, im.width)
        gray = im.convert("L").resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(gray, dtype=np.uint8), hw


def decode_mask(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Class indices, nearest-neighbour resize (labels are never interpolated)."""
    arr = read_mask(path)
    resized = Image.fromarray(arr).resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(resized, dtype=np.uint8), (arr.shape[0], arr.shape[1])


_DECODERS: dict[str, str] = {"image": "decode_image", "mask": "decode_mask"}


def cache_key(files: Sequence[Path], size: int, kind: str) -> str:
    """Hash of what the entry depends on: decoder version, kind, size, and each file's path, size, mtime."""
    h = hashlib.sha256(f"usagg-decode v{CACHE_VERSION} {kind} {size}\n".encode())
    for f in files:
        try:
            st = os.stat(f)
        except OSError:
            raise DataError(f"{f} does not exist or cannot be read (needed for the decode cache)") from None
        h.update(f"{os.path.abspath(f)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def _decoder(kind: str) -> Callable[[Path, int], tuple[np.ndarray, tuple[int, int]]]:
    # Looked up at call time so tests can monkeypatch decode_image / decode_mask.
    return globals()[_DECODERS[kind]]


def _decode_one(decode: Callable, path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    try:
        return decode(path, size)
    except DataError:
        raise
    except Exception as err:  # PIL raises many types for bad files
        raise DataError(f"{path} cannot be decoded as an image ({type(err).__name__}: {err})") from None


def _threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def load(files: Sequence[Path], size: int, cache_dir: Path, kind: str = "image") -> Decoded:
    """The cache entry for these files at this size, decoding them first on a miss."""
    if kind not in _DECODERS:
        raise ValueError(f"kind must be one of {sorted(_DECODERS)}, got {kind!r}")
    folder = Path(cache_dir) / "decode"
    folder.mkdir(parents=True, exist_ok=True)
    key = cache_key(files, size, kind)
    data_file, hw_file = folder / f"{key}.npy", folder / f"{key}.hw.npy"
    with FileLock(str(folder / f"{key}.lock")):  # also what `usagg cache prune` takes before deleting
        if not data_file.exists():
            _build(files, size, kind, data_file, hw_file)
        else:
            with contextlib.suppress(OSError):
                os.utime(data_file)  # last use, for `usagg cache prune`
        return Decoded(np.load(data_file, mmap_mode="r"), np.load(hw_file), data_file)


def _build(files: Sequence[Path], size: int, kind: str, data_file: Path, hw_file: Path) -> None:
    """Decode into a temporary .npy, then rename: the final name exists only when complete."""
    decode = _decoder(kind)
    for stale in data_file.parent.glob(f"{data_file.stem}.*tmp.npy"):  # left by a killed process; we hold the lock
        stale.unlink(missing_ok=True)
    tmp = data_file.with_name(f"{data_file.stem}.{os.getpid()}.tmp.npy")
    tmp_hw = hw_file.with_name(f"{hw_file.stem}.{os.getpid()}.tmp.npy")
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(files), size, size))
        hw = np.zeros((len(files), 2), dtype=np.int64)
        with ThreadPoolExecutor(_threads()) as pool:  # PIL releases the GIL while decoding
            for i, (arr, orig) in enumerate(pool.map(lambda f: _decode_one(decode, Path(f), size), files)):
                out[i] = arr
                hw[i] = orig
        out.flush()
        del out
        np.save(tmp_hw, hw)
        os.replace(tmp_hw, hw_file)  # written first: the data file's presence means both are complete
        os.replace(tmp, data_file)
    finally:
        for t in (tmp, tmp_hw):
            t.unlink(missing_ok=True)
