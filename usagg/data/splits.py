"""Test, selection and training splits of each task: deterministic, stratified, nested.

- test: the dataset's `val` split, or carved from `train` by `split_seed`
  (identical for every paradigm, fraction and job seed);
- select: `selection_fraction` of what remains, also by `split_seed`;
- train: a fraction of the rest (the pool), by the job seed, nested: the 25 %
  subset is inside the 50 % subset because both are prefixes of one ordering.

The ordering interleaves per-class seeded permutations so that every prefix
holds each class within one image of its share. (Largest-remainder allocation
per prefix is not house-monotone, the Alabama paradox, and would break nesting;
the sequential deficit rule used here is, by construction.)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from usagg.data.fmc_uia import Sample, read_split
from usagg.errors import DataError
from usagg.spec.models import DataSpec, TaskSpec
from usagg.tasktypes import get_task_type


@dataclass(frozen=True)
class TaskSplits:
    """One task's splits; `n_train_pool` is the training images at fraction 1.0."""

    train: list[Sample]
    select: list[Sample]
    test: list[Sample]
    n_train_pool: int


def _rng(seed: int, task_id: str, purpose: str) -> np.random.Generator:
    """A generator per (seed, task, purpose), stable across Python runs (no built-in hash)."""
    digest = hashlib.sha256(f"{task_id}\0{purpose}".encode()).digest()
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int.from_bytes(digest[:8], "little")])


def strata(samples: Sequence[Sample]) -> list[int]:
    """Stratification labels: the class where the task type is stratified, one stratum otherwise."""
    return [_stratum(s) for s in samples]


def _stratum(s: Sample) -> int:
    tt = get_task_type(s.task_type)
    return tt.stratum(s.label) if tt.stratified else 0


def stratified_order(labels: Sequence[int], rng: np.random.Generator, head_per_class: int = 0) -> list[int]:
    """An ordering of indices whose every prefix is stratified.

    Within a class, indices follow a seeded permutation; classes interleave by
    the largest deficit (k * share - taken, ties to the larger class, then the
    smaller label). The first `head_per_class` of each class come first, so
    small prefixes still see every class.
    """
    labels = list(labels)
    n = len(labels)
    classes = sorted(set(labels))
    queues = {c: [i for i in rng.permutation(n).tolist() if labels[i] == c] for c in classes}
    share = {c: len(queues[c]) / n for c in classes} if n else {}
    taken = dict.fromkeys(classes, 0)
    order: list[int] = []
    for k in range(1, n + 1):
        open_ = [c for c in classes if taken[c] < len(queues[c])]
        head = [c for c in open_ if taken[c] < min(head_per_class, len(queues[c]))]
        pool = head or open_
        c = max(pool, key=lambda c: (k * share[c] - taken[c], len(queues[c]), -c))
        order.append(queues[c][taken[c]])
        taken[c] += 1
    return order


def _count(fraction: float, n: int) -> int:
    return math.floor(fraction * n + 0.5)


def _canonical(samples: Sequence[Sample]) -> list[Sample]:
    """Sorted by image path so a split does not depend on CSV row order."""
    return sorted(samples, key=lambda s: (s.image_path, str(s.csv_file), s.row))


def _hold_out(samples: list[Sample], fraction: float, rng: np.random.Generator) -> tuple[list[Sample], list[Sample]]:
    """(held out, rest): a stratified `fraction` of samples, at least one image, never all of them."""
    if fraction <= 0 or len(samples) < 2:
        return [], samples
    n_out = min(max(1, _count(fraction, len(samples))), len(samples) - 1)
    order = stratified_order(strata(samples), rng)
    out = set(order[:n_out])
    return [samples[i] for i in sorted(out)], [s for i, s in enumerate(samples) if i not in out]


def carve_test(samples: Sequence[Sample], fraction: float, split_seed: int, task_id: str) -> tuple[list, list]:
    """(test, rest) of a task's train rows under data.test_split=train: the same carve for every job and check."""
    return _hold_out(_canonical(samples), fraction, _rng(split_seed, task_id, "test"))


def train_subset(pool: Sequence[Sample], fraction: float, seed: int, task_id: str) -> list[Sample]:
    """The nested training subset: a prefix of one seeded stratified ordering of the pool."""
    if not 0 < fraction <= 1:
        raise DataError(f"a data fraction must be in (0, 1], got {fraction}")
    pool = list(pool)
    if not pool:
        return []
    labels = strata(pool)
    stratified = get_task_type(pool[0].task_type).stratified
    n = max(1, _count(fraction, len(pool)))
    if stratified:
        n = max(n, sum(min(2, labels.count(c)) for c in set(labels)))
    n = min(n, len(pool))
    order = stratified_order(labels, _rng(seed, task_id, "train"), head_per_class=2 if stratified else 0)
    return [pool[i] for i in order[:n]]


@dataclass(frozen=True)
class TaskRows:
    """The rows of the tasks' CSVs that splits are made from: train's, and val's where data.test_split is val."""

    train: dict[str, list[Sample]]
    val: dict[str, list[Sample]]


def read_rows(data: DataSpec, root: Path, tasks: Sequence[TaskSpec]) -> TaskRows:
    """The tasks' rows of the dataset at `root` (a scan of each split's CSVs: 0.8 s per 50,000 rows), read once to
    make the splits of several fractions (`make_splits(..., rows=)`)."""
    ids = {t.id for t in tasks}
    return TaskRows(read_split(root, "train", ids), read_split(root, "val", ids) if data.test_split == "val" else {})


def rows_fingerprints(
    rows: TaskRows, root: Path, tasks: Sequence[TaskSpec], generator: int | None = None
) -> dict[str, dict[str, int | str | None]]:
    """task id -> {"rows": how many, "sha256": digest of its rows in CSV order}: each row's split, image path and
    label fields as the CSV gives them, a path relative to `root`, so a dataset copied or moved keeps its digest and
    any added, removed, reordered or relabelled row changes it. A job records it (splits.json) and a later
    `usagg run` compares it with the data then under data.root (usagg/run/studyrun.py `StudyRun.check_done_data`):
    results of two datasets never meet in one comparison unnoticed. A file's bytes changed under the same name are
    not seen, so the synthetic benchmark's `generator` version (`synthetic_generator`), which changes its images
    under the same names and labels, is recorded beside them ("generator", null for data.root)."""
    out: dict[str, dict[str, int | str | None]] = {}
    for task in tasks:
        kind = get_task_type(task.type)
        h = hashlib.sha256()
        n = 0
        for split, by_task in (("train", rows.train), ("val", rows.val)):
            for sample in by_task.get(task.id, []):
                fields = [_portable(v, root) for v in kind.csv_fields(sample.label, task.num_classes)]
                h.update("\t".join([split, sample.image_path, *fields]).encode() + b"\n")
                n += 1
        out[task.id] = {"rows": n, "sha256": h.hexdigest(), "generator": generator}
    return out


def synthetic_generator(data: DataSpec) -> int | None:
    """The version of the generator that makes the data a study reads (usagg/data/synth/manifest.py
    `GENERATOR_VERSION`) where it is the synthetic benchmark, else None (data.root: its rows say what it is)."""
    from usagg.data.synth.manifest import GENERATOR_VERSION

    return GENERATOR_VERSION if data.synthetic is not None else None


def _portable(value: object, root: Path) -> str:
    """A label field as text, a path under `root` relative to it (a moved dataset reads the same)."""
    text = str(value)
    if isinstance(value, Path) or Path(text).is_absolute():
        try:
            return Path(text).relative_to(root).as_posix()
        except ValueError:
            return text
    return text


def make_splits(
    data: DataSpec, root: Path, tasks: Sequence[TaskSpec], fraction: float, seed: int, rows: TaskRows | None = None
) -> dict[str, TaskSplits]:
    """task_id -> TaskSplits for the study's tasks, from `rows` (`read_rows`) or reading the dataset at `root`."""
    rows = rows if rows is not None else read_rows(data, root, tasks)
    train_all, val_all = rows.train, rows.val
    out: dict[str, TaskSplits] = {}
    for task in tasks:
        samples = train_all.get(task.id)
        if not samples:
            raise DataError(
                f"task {task.id} has no rows in {Path(root) / 'train' / 'csv_files'}; the study expects it "
                f"(tasks found: {', '.join(sorted(train_all)) or 'none'})"
            )
        _check_matches(task, samples[0])
        pool = _canonical(samples)
        if data.test_split == "val":
            test = _canonical(val_all.get(task.id, []))
            if not test:
                raise DataError(
                    f"task {task.id} has no rows in {Path(root) / 'val' / 'csv_files'}; with data.test_split=val "
                    "every task needs val images (or set data.test_split: train to carve a test set from train)"
                )
            _check_matches(task, test[0])
        else:
            test, pool = carve_test(samples, data.test_fraction, data.split_seed, task.id)
        select, pool = _hold_out(pool, data.selection_fraction, _rng(data.split_seed, task.id, "select"))
        train = train_subset(pool, fraction, seed, task.id)
        out[task.id] = TaskSplits(train=train, select=select, test=test, n_train_pool=len(pool))
    return out


def _check_matches(task: TaskSpec, sample: Sample) -> None:
    if sample.task_type != task.type or sample.num_classes != task.num_classes:
        raise DataError(
            f"task {task.id} is a {task.type} task with num_classes {task.num_classes} in the study, but "
            f"{sample.csv_file} row {sample.row} says {sample.task_type} with num_classes {sample.num_classes}"
        )


def splits_record(
    splits: dict[str, TaskSplits], fingerprints: dict[str, dict[str, int | str | None]] | None = None
) -> dict:
    """The splits as plain data for the run store's splits.json: image paths and counts per task, and the rows the
    task's splits were made from (`rows_fingerprints`, under "rows") where given."""
    return {
        task_id: {
            "n": {"train": len(s.train), "select": len(s.select), "test": len(s.test), "train_pool": s.n_train_pool},
            "image_paths": {
                "train": [x.image_path for x in s.train],
                "select": [x.image_path for x in s.select],
                "test": [x.image_path for x in s.test],
            },
            **({"rows": fingerprints[task_id]} if fingerprints and task_id in fingerprints else {}),
        }
        for task_id, s in splits.items()
    }
