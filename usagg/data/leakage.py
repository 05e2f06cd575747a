"""Leakage between splits: the same file, the same pixels, or nearly the same frame in train and test.

A test image that also trains the model inflates every metric of a study. `usagg data check`
(usagg/data/check.py) fingerprints each image from the decode it already does for the file
checks (`fingerprint`), so the leakage check costs hashing, not a second decode; `find_leaks`
then compares the test (val) split against train:

- `leak_same_file`: one resolved file listed in both splits (of one task or of two);
- `leak_exact_copy`: another file whose decoded grayscale pixels are identical;
- `leak_near_duplicate`: a difference hash (the signs of the 2 x 32 x 32 horizontal and vertical
  gradients of a 33x33 box downscale) that agrees with a training image's on at least
  `data.near_duplicate_threshold` of the bits that show the test image's content: robust to re-saving,
  resizing, noise and global intensity changes (not to crops).

Which bits show content: an ultrasound frame is mostly what every frame of its scanner shares, the
black surround, the edges of the fan, burnt-in overlay text. Over the whole hash two unrelated frames
of one scanner agreed on those bits and passed 0.9 (tests/test_data_leakage.py). A bit whose sign is
the same in at least 90 % of a task's images is the frame, not content (`_content_bits`; from the
dataset's images where a task has too few to tell), and a bit whose gradient is flatter than
`CLEAR_STEP` grey levels in the test image has a sign that noise, re-encoding or resizing decides (the
black surround is flat): both are left out of its comparison (`_near`). Unrelated frames then agree
on about half of the bits compared, copies on nearly all of them. A test image with fewer than
`MIN_COMPARED` content bits (a nearly blank frame) is compared by its exact pixels only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

    from usagg.data.fmc_uia import Problem, Sample, Where

HASH_SIDE = 32  # difference-hash grid, per direction (16 let unrelated synthetic frames reach 0.95)
HASH_BITS = 2 * HASH_SIDE * HASH_SIDE  # horizontal and vertical gradients: twice the content bits of one direction
HASH_WORDS = HASH_BITS // 64
#: Similarity from which a test image nearly duplicates a training image: re-saved, resized and brightened copies
#: of ultrasound-like fan frames 0.955 and above; the nearest of 150-200 training frames to an unrelated frame of
#: one scanner 0.74-0.91 (tests/test_data_leakage.py `fan_frame` and the audit's smoother 640x480 probes).
DEFAULT_NEAR_THRESHOLD = 0.9
#: Grey levels (of the 33x33 downscale) a gradient needs for its sign to be compared: a flatter one is noise.
CLEAR_STEP = 3
#: A bit whose sign is the same in all but this share of a task's images is the frame, not the image's content.
MINORITY = 0.1
#: Images of a task from which its frame is told from content; a smaller task takes the dataset's images.
MIN_POPULATION = 16
#: Content bits a test image needs for a near-duplicate verdict (fewer: compared by its exact pixels only).
MIN_COMPARED = 64


@dataclass(frozen=True)
class Fingerprint:
    """What leakage needs of one decoded image: an exact pixel digest and a perceptual hash."""

    exact: bytes  # blake2b of the grayscale pixels and their shape
    dhash: np.ndarray  # uint64 [HASH_WORDS]: 1 where the downscale brightens to the right (then downwards)
    clear: np.ndarray  # uint64 [HASH_WORDS]: 1 where that gradient is at least CLEAR_STEP grey levels


def fingerprint(im: Image.Image) -> Fingerprint:
    """Fingerprint an already decoded PIL image (no second decode)."""
    from PIL import Image as PILImage

    gray = im.convert("L")
    pixels = np.asarray(gray)
    exact = hashlib.blake2b(pixels.tobytes() + repr(pixels.shape).encode(), digest_size=16).digest()
    side = HASH_SIDE + 1
    small = np.asarray(gray.resize((side, side), PILImage.Resampling.BOX), dtype=np.int16)
    steps = np.concatenate(
        [(small[:-1, 1:] - small[:-1, :-1]).reshape(-1), (small[1:, :-1] - small[:-1, :-1]).reshape(-1)]
    )
    return Fingerprint(exact, _words(steps > 0), _words(np.abs(steps) >= CLEAR_STEP))


def _words(bits: np.ndarray) -> np.ndarray:
    return np.packbits(bits).view(np.uint64).copy()


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


def _bits(words: np.ndarray) -> np.ndarray:
    """[N, words] uint64 to [N, bits] uint8 0/1."""
    return np.unpackbits(np.ascontiguousarray(words).view(np.uint8), axis=1)


def _signs(hashes: np.ndarray) -> np.ndarray:
    """Hash bits as float32 +1/-1 ([N, words] uint64 to [N, bits]), so Hamming distances come from one product."""
    return _bits(hashes).astype(np.float32) * 2.0 - 1.0


def _content_bits(entries: Sequence[Entry]) -> dict[str, np.ndarray]:
    """Task id -> bool [HASH_BITS]: the bits whose sign differs between its images (at least MINORITY of them take
    the rarer sign), i.e. not the frame every image of the task shares. Told from the task's images of every split,
    or the dataset's where the task has fewer than MIN_POPULATION; from none, every bit counts."""
    by_task: dict[str, list[np.ndarray]] = {}
    for e in entries:
        if e.fp is not None:
            by_task.setdefault(e.sample.task_id, []).append(e.fp.dhash)

    def varying(hashes: list[np.ndarray]) -> np.ndarray:
        if len(hashes) < MIN_POPULATION:
            return np.ones(HASH_BITS, bool)
        share = _bits(np.stack(hashes)).mean(axis=0)
        return np.minimum(share, 1.0 - share) >= MINORITY

    out = {task: varying(hashes) for task, hashes in by_task.items() if len(hashes) >= MIN_POPULATION}
    small = [task for task in by_task if task not in out]
    if small:
        dataset = varying([h for hashes in by_task.values() for h in hashes])
        out.update(dict.fromkeys(small, dataset))
    return out


def _near(
    candidates: Sequence[Entry], train: Sequence[Entry], content: dict[str, np.ndarray]
) -> Iterator[tuple[Entry, Entry, int, int]]:
    """(test entry, its nearest train entry, the Hamming distance between them and the number of bits compared) for
    every candidate with at least MIN_COMPARED compared bits. A task's candidates are compared on its content bits
    alone (the product's width is theirs: the frame's bits cost nothing), each on those where its own gradient is
    clear (the others 0 in its query)."""
    train_bits = _bits(np.stack([e.fp.dhash for e in train if e.fp is not None]))
    by_task: dict[str, list[Entry]] = {}
    for e in candidates:
        by_task.setdefault(e.sample.task_id, []).append(e)
    chunk = max(1, 10_000_000 // len(train))  # bounds a block's products to ~40 MB
    for task, entries in by_task.items():
        columns = np.flatnonzero(content[task])
        train_signs = train_bits[:, columns].astype(np.float32) * 2.0 - 1.0
        for start in range(0, len(entries), chunk):
            block = entries[start : start + chunk]
            fps = [e.fp for e in block if e.fp is not None]
            signs = _signs(np.stack([fp.dhash for fp in fps]))[:, columns]
            queries = signs * _bits(np.stack([fp.clear for fp in fps]))[:, columns]
            best, dist = _nearest(queries, train_signs)
            for e, j, d, n in zip(block, best, dist, np.count_nonzero(queries, axis=1), strict=True):
                if n >= MIN_COMPARED:
                    yield e, train[int(j)], int(d), int(n)


def _nearest(query: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each query's nearest train hash (the first at the least distance) and that Hamming distance over the query's
    compared bits (its non-zero entries).

    For +1/-1 vectors on n compared bits, distance = (n - dot) / 2; the products are sums of at most 2048
    terms of +-1, exact in float32, so this is the bit count to the bit, as a BLAS product (5x faster
    than XOR and popcount over the uint64 words, benchmarks/bench_data.py).
    """
    dot = query @ train.T
    best = dot.argmax(axis=1)
    n = np.count_nonzero(query, axis=1)
    dist = (n - dot[np.arange(len(query)), best]) / 2
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
    near_candidates: list[Entry] = []
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
        near_candidates.append(e)
    if mode == "off" or not near_candidates:
        return result
    train_fp = [e for e in tr if e.fp is not None]
    if not train_fp:
        return result
    for e, hit, d, n in _near(near_candidates, train_fp, _content_bits(entries)):
        sim = 1.0 - d / n
        if sim < threshold - 1e-9:
            continue
        p = Problem(
            "leak_near_duplicate",
            f"{_where(e.sample, root)} nearly duplicates {_where(hit.sample, root)}: "
            f"{rel(e.sample.image_file, root)} vs {rel(hit.sample.image_file, root)}, similarity {sim:.3f} "
            f"over the {n} hash bits that show its content (threshold {threshold:g}, "
            "data.near_duplicate_threshold; data.leakage: warn|off to relax)",
            rel(e.sample.csv_file, root),
            e.sample.row,
            tasks=_tasks(e.sample, hit.sample),
        )
        (result.warnings if mode == "warn" else result.problems).append(p)
        result.counts["leak_near_duplicate"] += 1
    return result
