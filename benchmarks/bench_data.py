"""Data loading cost per image: decoding every epoch versus the decode cache, cold and warm.

A cache-less loader pays PNG decode + resize for every image every epoch; with the
cache the first epoch pays it once (cold, including writing the memmap) and
every later epoch, job and worker reads uint8 pages (warm). `tensors()` is the
engine's fast path (whole task in memory, batches by indexing).

The leakage check of `usagg data check` (usagg/data/leakage.py) is timed against a
plain decode of the same files in the same run: fingerprinting reuses the check's one
decode per image, so its cost (hashing plus matching val against train) must stay
below decoding once. Matching is also timed at the FMC_UIA scale (40k train, 8k val).
The whole check is timed with its findings kept between checks (usagg/data/checkcache.py), on an
empty cache and again with nothing changed, against the check without it, in the same run.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

TASKS = ("fetal_head", "thyroid_malignancy")  # one segmentation (image + mask) and one classification task
IMAGE_SIZE = 256  # generated PNG side
INPUT_SIZE = 224  # model input side
N_TRAIN = 100
REPEATS = 3  # best of: the machine may be shared, the minimum is the least noisy estimate


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _best(fn: Callable[[], object]) -> float:
    return min(_timed(fn) for _ in range(REPEATS))


def _no_cache_epoch(samples: list, task_type: str) -> None:
    """What a loader without the cache does every epoch: decode, resize, normalise."""
    import torch

    from usagg.data.cache import decode_image, decode_mask
    from usagg.data.datasets import to_model_input

    for s in samples:
        arr, _ = decode_image(s.image_file, INPUT_SIZE)
        to_model_input(torch.from_numpy(arr.copy()))
        if task_type == "segmentation":
            decode_mask(s.label, INPUT_SIZE)


def _cached_epoch(samples: list, spec: object, cache_dir: Path) -> None:
    from usagg.data.datasets import TaskDataset

    ds = TaskDataset(samples, spec, INPUT_SIZE, cache_dir)  # type: ignore[arg-type]
    for i in range(len(ds)):
        ds[i]


def _tensors_epoch(samples: list, spec: object, cache_dir: Path) -> None:
    """The engine's fast path: the task in memory once, batches of 16 by indexing."""
    import torch

    from usagg.data.datasets import TaskDataset, to_model_input

    t = TaskDataset(samples, spec, INPUT_SIZE, cache_dir).tensors()  # type: ignore[arg-type]
    for idx in torch.arange(len(samples)).split(16):
        to_model_input(t["images"][idx])
        t["targets"][idx]


def _leakage(root: Path) -> dict:
    """Leakage cost (fingerprints of decoded images + matching) over a plain decode of the same files."""
    from PIL import Image

    from usagg.data.fmc_uia import read_split
    from usagg.data.leakage import Entry, find_leaks, fingerprint

    samples = [(split, s) for split in ("train", "val") for ss in read_split(root, split).values() for s in ss]

    def decode() -> list:
        out = []
        for _, s in samples:
            with Image.open(s.image_file) as im:
                im.load()
                out.append(im.copy())
        return out

    decode_s = _best(decode)
    images = decode()
    hash_s = _best(lambda: [fingerprint(im) for im in images])
    entries = [Entry(split, s, fingerprint(im)) for (split, s), im in zip(samples, images, strict=True)]
    match_s = _best(lambda: find_leaks(entries, root))
    return {
        "n_images": len(samples),
        "decode_ms": round(1000 * decode_s / len(samples), 3),
        "fingerprint_ms": round(1000 * hash_s / len(samples), 3),
        "match_ms": round(1000 * match_s / len(samples), 3),
        "leakage_over_decode": round((hash_s + match_s) / decode_s, 3),
    }


def _kept_check(root: Path, tmp: Path) -> dict:
    """`check_dataset` with its findings kept (usagg/data/checkcache.py) against the check without, in one run:
    cold (an empty cache: every file checked, then written) and warm (nothing changed: no file decoded)."""
    from usagg.data.check import check_dataset

    full = _best(lambda: check_dataset(root))
    cold = min(_timed(lambda r=r: check_dataset(root, cache=tmp / f"check-{r}")) for r in range(REPEATS))
    warm = _best(lambda: check_dataset(root, cache=tmp / "check-0"))
    return {
        "full_s": round(full, 3),
        "cold_s": round(cold, 3),
        "warm_s": round(warm, 3),
        "cold_over_full": round(cold / full, 3),
        "warm_over_full": round(warm / full, 3),
    }


def _match_at_scale(n_train: int = 40_000, n_val: int = 8_000) -> dict:
    """Matching alone at the FMC_UIA scale, on random hashes (no near duplicates, so every pair is compared; every
    bit varies, so every bit is content: the widest product, where a fan's frame leaves out a third to a half)."""
    import numpy as np

    from usagg.data.fmc_uia import Sample
    from usagg.data.leakage import HASH_WORDS, Entry, Fingerprint, find_leaks

    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, size=(2, n_train + n_val, HASH_WORDS), dtype=np.int64).view(np.uint64)
    entries = []
    for i in range(n_train + n_val):
        split = "train" if i < n_train else "val"
        s = Sample("t", "classification", 2, f"{i}.png", Path(f"/x/{split}/{i}.png"), 0, Path("/x/t.csv"), i + 1)
        entries.append(Entry(split, s, Fingerprint(i.to_bytes(8, "little"), hashes[0, i], hashes[1, i])))
    match_s = _timed(lambda: find_leaks(entries, Path("/x")))
    xor_s = _timed(lambda: _xor_popcount(hashes[0, n_train:], hashes[0, :n_train]))
    return {
        "n_train": n_train,
        "n_val": n_val,
        "match_s": round(match_s, 2),
        "xor_popcount_s": round(xor_s, 2),
        "match_over_xor_popcount": round(match_s / xor_s, 3),
    }


def _xor_popcount(query: object, train: object) -> None:
    """The baseline: the nearest train hash by XOR and popcount over the uint64 words, in blocks of ~64 MB (how
    `find_leaks` searched before its float32 product)."""
    import numpy as np

    q, t = np.asarray(query), np.asarray(train)
    chunk = max(1, 500_000 // len(t))
    for start in range(0, len(q), chunk):
        np.bitwise_count(q[start : start + chunk, None, :] ^ t[None, :, :]).sum(axis=2).argmin(axis=1)


def main() -> dict:
    import torch

    from usagg.data.fmc_uia import read_split
    from usagg.data.synth import generate_benchmark
    from usagg.spec.models import SynthSpec, TaskSpec

    specs = {
        "fetal_head": TaskSpec(id="fetal_head", type="segmentation", num_classes=2),
        "thyroid_malignancy": TaskSpec(id="thyroid_malignancy", type="classification", num_classes=2),
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # data loading runs beside training; one thread is also the steadiest measure
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="usagg-bench-data-") as tmp:
        synth = SynthSpec(image_size=IMAGE_SIZE, default_size=N_TRAIN, val_size=N_TRAIN // 4)
        root = generate_benchmark(Path(tmp) / "data", synth, list(TASKS))
        data = read_split(root, "train")
        for task_id in TASKS:
            samples, spec = data[task_id], specs[task_id]
            n = len(samples)
            caches = [Path(tmp) / f"cache-{task_id}-{r}" for r in range(REPEATS)]
            no_cache = _best(lambda: _no_cache_epoch(samples, spec.type))  # noqa: B023 (called at once)
            cold = min(_timed(lambda d=d: _cached_epoch(samples, spec, d)) for d in caches)  # noqa: B023
            warm = _best(lambda: _cached_epoch(samples, spec, caches[0]))  # noqa: B023
            fast = _best(lambda: _tensors_epoch(samples, spec, caches[0]))  # noqa: B023
            rows[task_id] = {
                "type": spec.type,
                "n_images": n,
                "no_cache_ms": round(1000 * no_cache / n, 3),
                "cold_ms": round(1000 * cold / n, 3),
                "warm_ms": round(1000 * warm / n, 3),
                "tensors_ms": round(1000 * fast / n, 3),
                "cold_over_warm": round(cold / warm, 1),
                "no_cache_over_warm": round(no_cache / warm, 1),
            }
        leakage = _leakage(root)
        kept = _kept_check(root, Path(tmp))
    leakage["at_scale"] = _match_at_scale()

    torch.set_num_threads(threads)
    print(f"data loading, ms per image ({IMAGE_SIZE}px PNG -> {INPUT_SIZE}px input, best of {REPEATS}, 1 torch thread)")
    print(
        f"{'task':<20} {'type':<14} {'n':>4} {'no cache':>9} {'cold':>8} {'warm':>8} {'tensors':>8} {'cold/warm':>10}"
    )
    for task_id, r in rows.items():
        print(
            f"{task_id:<20} {r['type']:<14} {r['n_images']:>4} {r['no_cache_ms']:>9.2f} {r['cold_ms']:>8.2f} "
            f"{r['warm_ms']:>8.2f} {r['tensors_ms']:>8.3f} {r['cold_over_warm']:>9.1f}x"
        )
    lk = leakage
    print(
        f"leakage check, ms per image over {lk['n_images']} train+val images: decode {lk['decode_ms']:.2f}, "
        f"fingerprint {lk['fingerprint_ms']:.2f}, match {lk['match_ms']:.3f} -> {lk['leakage_over_decode']:.2f}x a "
        f"decode; matching {lk['at_scale']['n_val']} val against {lk['at_scale']['n_train']} train hashes: "
        f"{lk['at_scale']['match_s']:.1f} s ({lk['at_scale']['match_over_xor_popcount']:.2f}x XOR+popcount's "
        f"{lk['at_scale']['xor_popcount_s']:.1f} s)"
    )
    print(
        f"data check of the same {lk['n_images']} images: {kept['full_s']:.2f} s; findings kept: first "
        f"{kept['cold_s']:.2f} s ({kept['cold_over_full']:.2f}x), unchanged again {kept['warm_s']:.2f} s "
        f"({kept['warm_over_full']:.3f}x)"
    )
    return {
        "image_size": IMAGE_SIZE,
        "input_size": INPUT_SIZE,
        "repeats": REPEATS,
        "tasks": rows,
        "leakage": leakage,
        "kept_check": kept,
    }


if __name__ == "__main__":
    main()
