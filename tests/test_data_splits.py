"""Splits: a shared test split, a seeded selection split, nested stratified training fractions."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from test_data_support import write_csv

from usagg.data.splits import make_splits, splits_record, stratified_order
from usagg.spec.models import DataSpec, TaskSpec

CLS = TaskSpec(id="cls", type="classification", num_classes=3)
SEG = TaskSpec(id="seg", type="segmentation", num_classes=2)
# imbalanced classes: 120 / 60 / 20 in train, 10 each in val
TRAIN_LABELS = [0] * 120 + [1] * 60 + [2] * 20


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CSV-only dataset: splitting reads CSVs and never opens an image."""
    root = tmp_path_factory.mktemp("splits")
    order = np.random.default_rng(1).permutation(len(TRAIN_LABELS))  # classes interleaved in the CSV
    for split, labels in (("train", [TRAIN_LABELS[i] for i in order]), ("val", [0, 1, 2] * 10)):
        cls_rows = [
            {"image_path": f"../cls/{split}_{i}.png", "task_id": "cls", "task_name": "classification",
             "num_classes": 3, "mask": c}
            for i, c in enumerate(labels)
        ]  # fmt: skip
        seg_rows = [
            {"image_path": f"../seg/{split}_{i}.png", "mask_path": f"../seg/m_{split}_{i}.png", "task_id": "seg",
             "task_name": "segmentation", "num_classes": 2}
            for i in range(50 if split == "train" else 8)
        ]  # fmt: skip
        csvs = root / split / "csv_files"
        write_csv(csvs / "cls.csv", ["image_path", "task_id", "task_name", "num_classes", "mask"], cls_rows)
        write_csv(csvs / "seg.csv", ["image_path", "mask_path", "task_id", "task_name", "num_classes"], seg_rows)
    return root


def _paths(samples: list) -> list[str]:
    return [s.image_path for s in samples]


def test_fractions_are_nested_deterministic_and_seeded(root: Path) -> None:
    data = DataSpec(root=root)
    for seed in (0, 1):
        runs = {f: make_splits(data, root, [CLS, SEG], f, seed) for f in (0.25, 0.5, 1.0)}
        for task in ("cls", "seg"):
            small, mid, full = (set(_paths(runs[f][task].train)) for f in (0.25, 0.5, 1.0))
            assert small < mid < full
            pool = runs[1.0][task].n_train_pool
            assert len(full) == pool
            assert len(small) == math.floor(0.25 * pool + 0.5) and len(mid) == math.floor(0.5 * pool + 0.5)  # half up
    assert make_splits(data, root, [CLS], 1.0, 0)["cls"].n_train_pool == 180  # 200 minus 10 % selection
    again = make_splits(data, root, [CLS, SEG], 0.25, 0)
    first = make_splits(data, root, [CLS, SEG], 0.25, 0)
    other = make_splits(data, root, [CLS, SEG], 0.25, 1)
    for task in ("cls", "seg"):
        assert _paths(again[task].train) == _paths(first[task].train)
        assert set(_paths(other[task].train)) != set(_paths(first[task].train))


def test_training_subsets_are_stratified(root: Path) -> None:
    data = DataSpec(root=root)
    pool = Counter(s.label for s in make_splits(data, root, [CLS], 1.0, 0)["cls"].train)
    assert sum(pool.values()) == 180
    for f in (0.1, 0.25, 0.5, 0.75):
        for seed in range(4):
            train = make_splits(data, root, [CLS], f, seed)["cls"].train
            got = Counter(s.label for s in train)
            for c in (0, 1, 2):
                assert abs(got[c] - len(train) * pool[c] / 180) <= 1, (f, seed, c, got)
    tiny = Counter(s.label for s in make_splits(data, root, [CLS], 0.01, 0)["cls"].train)
    assert tiny == {0: 2, 1: 2, 2: 2}  # at least two of each class present


def test_every_prefix_of_the_order_is_within_one_image() -> None:
    for trial in range(40):
        rng = np.random.default_rng(trial)
        labels = rng.choice(4, size=int(rng.integers(10, 150)), p=rng.dirichlet(np.ones(4))).tolist()
        order = stratified_order(labels, np.random.default_rng(trial))
        assert sorted(order) == list(range(len(labels)))
        share = {c: labels.count(c) / len(labels) for c in set(labels)}
        taken = Counter()
        for k, i in enumerate(order, start=1):
            taken[labels[i]] += 1
            assert all(abs(taken[c] - k * share[c]) < 1 for c in share)


def test_test_split_is_shared_across_fractions_and_seeds(root: Path) -> None:
    from_val = DataSpec(root=root, test_split="val")
    carved = DataSpec(root=root, test_split="train", test_fraction=0.2, split_seed=3)
    for data in (from_val, carved):
        ref = make_splits(data, root, [CLS, SEG], 1.0, 0)
        for f in (0.25, 0.5, 1.0):
            for seed in (0, 1, 2):
                got = make_splits(data, root, [CLS, SEG], f, seed)
                for task in ("cls", "seg"):
                    assert _paths(got[task].test) == _paths(ref[task].test)
                    assert _paths(got[task].select) == _paths(ref[task].select)
                    assert got[task].n_train_pool == ref[task].n_train_pool
                    held = set(_paths(got[task].test)) | set(_paths(got[task].select))
                    assert not held & set(_paths(got[task].train))
    assert _paths(make_splits(from_val, root, [CLS], 1.0, 0)["cls"].test) == sorted(
        f"../cls/val_{i}.png" for i in range(30)
    )
    cls = make_splits(carved, root, [CLS], 1.0, 0)["cls"]
    assert Counter(s.label for s in cls.test) == {0: 24, 1: 12, 2: 4}  # 20 % of 120/60/20, stratified
    assert len(cls.select) == 16 and cls.n_train_pool == 144
    other_seed = make_splits(DataSpec(root=root, test_split="train", split_seed=4), root, [CLS], 1.0, 0)["cls"]
    assert set(_paths(other_seed.test)) != set(_paths(cls.test))


def test_no_selection_split_and_record(root: Path) -> None:
    data = DataSpec(root=root, selection_fraction=0)
    splits = make_splits(data, root, [SEG], 0.5, 0)
    assert splits["seg"].select == [] and splits["seg"].n_train_pool == 50
    record = splits_record(splits)
    assert record["seg"]["n"] == {"train": 25, "select": 0, "test": 8, "train_pool": 50}
    assert record["seg"]["image_paths"]["train"] == _paths(splits["seg"].train)
    assert record["seg"]["image_paths"]["test"] == [f"../seg/val_{i}.png" for i in range(8)]


def test_splits_from_rows_read_once_are_the_splits_read_each_time(root: Path) -> None:
    """A job reads its tasks' rows once for its own fraction and the frozen trunk's 1.0 (`read_rows`), the run's
    check once for every fraction: the splits are those a fresh read gives, for either test split."""
    from usagg.data.splits import read_rows

    for data in (DataSpec(root=root), DataSpec(root=root, test_split="train")):
        rows = read_rows(data, root, [CLS, SEG])
        assert set(rows.train) == {"cls", "seg"} and bool(rows.val) == (data.test_split == "val")
        for fraction, seed in ((0.25, 0), (1.0, 0), (0.5, 3)):
            assert make_splits(data, root, [CLS, SEG], fraction, seed, rows) == make_splits(
                data, root, [CLS, SEG], fraction, seed
            )
