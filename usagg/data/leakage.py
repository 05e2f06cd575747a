"""Leakage between splits: the same file, the same pixels, or nearly the same frame in train and test.

A test image that also trains the model inflates every metric of a study. `usagg data check`
(usagg/data/check.py) fingerprints each image from the decode it already does for the file
checks (`fingerprint`), so the leakage check costs hashing, not a second decode; `find_leaks`
then compares the test (val) split against train:

- `leak_same_file`: one resolved file listed in both splits (of one task or of two);
- `leak_exact_copy`: another file whose decoded grayscale pixels are identical;
- `leak_near_duplicate`: a difference hash (32x32 gradient signs of a 33x32 downscale) whose
  similarity (1 - Hamming distance / 1024) reaches the spec's `data.near_duplicate_threshold`:
  robust to re-saving, resizing, noise and global intensity changes (not to crops).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

    from usagg.data.fmc_uia import Problem, Sample, Where

HASH_SIDE = 32  # difference-hash grid: 1024 bits (16 bits let unrelated synthetic frames reach 0.95)
DEFAULT_NEAR_THRESHOLD = (
    0.9  # similarity; unrelated synthetic frames reach 0.81, re-saved/resized/brightened copies 0.92+
)


@dataclass(frozen=True)
class Fingerprint:
    """What leakage needs of one decoded image: an exact pixel digest and a perceptual hash."""

    exact: bytes  # blake2b of the grayscale pixels and their shape
    dhash: np.ndarray  # uint64 [HASH_SIDE * HASH_SIDE / 64]


def fingerprint(im: Image.Image) -> Fingerprint:
    """Fingerprint an already decoded PIL image (no second decode)."""
    from PIL import Image as PILImage

    gray = im.convert("L")
    pixels = np.asarray(gray)
    exact = hashlib.blake2b(pixels.tobytes() + repr(pixels.shape).encode(), digest_size=16).digest()
    small = np.asarray(gray.resize((HASH_SIDE + 1, HASH_SIDE), PILImage.Resampling.BOX), dtype=np.int16)
    bits = (small[:, 1:] > small[:, :-1]).reshape(-1)
    return Fingerprint(exact, np.packbits(bits).view(np.uint64).copy())


@dataclass(frozen=True)
class Entry:
    """One checked sample with its split and fingerprint (None when the image could not be decoded)."""

    split: str
    sample: Sample
    fp: Fingerprint | None


@dataclass
class LeakResult:
    """Leakage found: errors, warnings (near duplicates under `leakage: warn`) and counts by kind."""

    problems: list[Problem]
    warnings: list[Problem]
    counts: dict[str, int]


def _tasks(test: Sample, train: Sample) -> tuple[str, ...]:
    """Both task ids when the leak crosses tasks (it then matters only to a job that trains both), else none."""
    return (test.task_id, train.task_id) if test.task_id != train.task_id else ()


def _where(s: Sample, root: Path) -> str:
    from usagg.data.fmc_uia import rel

    return f"{rel(s.csv_file, root)} row {s.row} ({s.image_path!r}, task {s.task_id})"


def _signs(hashes: np.ndarray) -> np.ndarray:
    """Hash bits as float32 +1/-1 ([N, words] uint64 to [N, bits]), so Hamming distances come from one product."""
    bits = np.unpackbits(np.ascontiguousarray(hashes).view(np.uint8), axis=1)
    return bits.astype(np.float32) * 2.0 - 1.0


def _nearest(query: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each query's nearest train hash (the first at the least distance) and that Hamming distance.

    For +1/-1 vectors of n bits, distance = (n - dot) / 2; the products are sums of at most n = 1024
    terms of +-1, exact in float32, so this is the bit count to the bit, as a BLAS product (5x faster
    than XOR and popcount over the uint64 words, benchmarks/bench_data.py).
    """
    dot = query @ train.T
    best = dot.argmax(axis=1)
    dist = (train.shape[1] - dot[np.arange(len(query)), best]) / 2
    return best, dist.astype(np.int64)


def find_leaks(
    entries: Sequence[Entry],
    root: Path,
    mode: str = "error",
    threshold: float = DEFAULT_NEAR_THRESHOLD,
    train: str = "train",
    test: str = "val",
) -> LeakResult:
    """Every test row that leaks from train, once, with the closest train row and the similarity."""
    from usagg.data.fmc_uia import Problem, rel

    result = LeakResult([], [], {"leak_same_file": 0, "leak_exact_copy": 0, "leak_near_duplicate": 0})
    tr = [e for e in entries if e.split == train]
    te = [e for e in entries if e.split == test]
    if not tr or not te:
        return result
    by_file: dict[Path, Entry] = {}
    by_exact: dict[bytes, Entry] = {}
    for e in tr:
        by_file.setdefault(e.sample.image_file, e)
        if e.fp is not None:
            by_exact.setdefault(e.fp.exact, e)
    near_candidates: list[tuple[Entry, Fingerprint]] = []
    for e in te:
        s = e.sample
        where: Where = {"csv_file": rel(s.csv_file, root), "row": s.row}
        hit = by_file.get(s.image_file)
        if hit is not None:
            result.problems.append(
                Problem(
                    "leak_same_file",
                    f"{_where(s, root)} uses the same file as {_where(hit.sample, root)}: "
                    f"{rel(s.image_file, root)} (similarity 1.0)",
                    **where,
                    tasks=_tasks(s, hit.sample),
                )
            )
            result.counts["leak_same_file"] += 1
            continue
        if e.fp is None:
            continue
        hit = by_exact.get(e.fp.exact)
        if hit is not None:
            result.problems.append(
                Problem(
                    "leak_exact_copy",
                    f"{_where(s, root)} has the same decoded pixels as "
                    f"{_where(hit.sample, root)}: {rel(s.image_file, root)} is a copy of "
                    f"{rel(hit.sample.image_file, root)} (similarity 1.0)",
                    **where,
                    tasks=_tasks(s, hit.sample),
                )
            )
            result.counts["leak_exact_copy"] += 1
            continue
        near_candidates.append((e, e.fp))
    if mode == "off" or not near_candidates:
        return result
    tr_fp = [(e, e.fp) for e in tr if e.fp is not None]
    if not tr_fp:
        return result
    train_signs = _signs(np.stack([fp.dhash for _, fp in tr_fp]))
    n_bits = HASH_SIDE * HASH_SIDE
    max_dist = int(np.floor((1.0 - threshold) * n_bits + 1e-9))
    chunk = max(1, 10_000_000 // len(tr_fp))  # bounds a block's products to ~40 MB
    for start in range(0, len(near_candidates), chunk):
        block = near_candidates[start : start + chunk]
        best, dist = _nearest(_signs(np.stack([fp.dhash for _, fp in block])), train_signs)
        for (e, _), j, d in zip(block, best, dist, strict=True):
            if d > max_dist:
                continue
            hit = tr_fp[int(j)][0]
            sim = 1.0 - float(d) / n_bits
            p = Problem(
                "leak_near_duplicate",
                f"{_where(e.sample, root)} nearly duplicates {_where(hit.sample, root)}: "
                f"{rel(e.sample.image_file, root)} vs {rel(hit.sample.image_file, root)}, similarity {sim:.3f} "
                f"(threshold {threshold:g}, data.near_duplicate_threshold; data.leakage: warn|off to relax)",
                rel(e.sample.csv_file, root),
                e.sample.row,
                tasks=_tasks(e.sample, hit.sample),
            )
            (result.warnings if mode == "warn" else result.problems).append(p)
            result.counts["leak_near_duplicate"] += 1
    return result
