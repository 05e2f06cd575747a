"""Helpers for the data tests: a tiny hand-written FMC_UIA layout and small synthetic datasets.

Not a test module of its own (no tests); imported by tests/test_data_*.py.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

CLS_HEADER = ["image_path", "task_id", "task_name", "num_classes", "mask"]


def write_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)


def write_csv(path: Path, header: list[str], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=header)
        w.writeheader()
        for r in rows:
            w.writerow(r)


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def edit_csv(root: Path, csv_name: str, edit: Callable[[list[dict]], None], split: str = "train") -> None:
    """Rewrite the index CSV `csv_name` of `split` with its rows changed in place by `edit`."""
    path = root / split / "csv_files" / csv_name
    header, rows = read_csv(path)
    edit(rows)
    write_csv(path, header, rows)


def tiny_layout(root: Path, n: int = 6, hw: tuple[int, int] = (40, 56)) -> Path:
    """One task of each type per split; image i has a bright square, its label derived from i."""
    rng = np.random.default_rng(0)
    h, w = hw
    for split in ("train", "val"):
        base = root / split
        seg, cls, det, reg = [], [], [], []
        for i in range(n if split == "train" else 3):
            img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            name = f"{split}_{i}.png"
            write_png(base / "Segmentation/Three/seg_t/imgs" / name, img)
            mask = np.zeros((h, w), np.uint8)
            mask[5 : 5 + i + 3, 7 : 7 + 2 * i + 3] = 1 + i % 2
            write_png(base / "Segmentation/Three/seg_t/masks" / name, mask)
            seg.append(
                {
                    "image_path": f"../Segmentation/Three/seg_t/imgs/{name}",
                    "mask_path": f"../Segmentation/Three/seg_t/masks/{name}",
                    "task_id": "seg_t",
                    "task_name": "segmentation",
                    "num_classes": 3,
                }
            )
            write_png(base / "Classification/cls_t" / name, img[..., 0])
            cls.append(
                {
                    "image_path": f"../Classification/cls_t/{name}",
                    "task_id": "cls_t",
                    "task_name": "Classification",
                    "num_classes": 2,
                    "mask": i % 2,
                }
            )
            write_png(base / "Detection/det_t" / name, img)
            det.append(
                {
                    "image_path": f"../Detection/det_t/{name}",
                    "task_id": "det_t",
                    "task_name": "detection",
                    "num_classes": 1,
                    "x_min": 3.5 + i,
                    "y_min": 2.25,
                    "x_max": 30 + i,
                    "y_max": 37.75,
                }
            )
            write_png(base / "Regression/reg_t" / name, img)
            reg.append(
                {
                    "image_path": f"../Regression/reg_t/{name}",
                    "task_id": "reg_t",
                    "task_name": "Regression",
                    "num_classes": 2,
                    "point_1_xy": json.dumps([10.5 + i, 3.0]),
                    "point_2_xy": json.dumps([w - 0.5, h - 1.25]),
                }
            )
        csvs = base / "csv_files"
        write_csv(csvs / "seg.csv", ["image_path", "mask_path", "task_id", "task_name", "num_classes"], seg)
        write_csv(csvs / "cls.csv", CLS_HEADER, cls)
        write_csv(
            csvs / "det.csv",
            ["image_path", "task_id", "task_name", "num_classes", "x_min", "y_min", "x_max", "y_max"],
            det,
        )
        write_csv(
            csvs / "reg.csv", ["image_path", "task_id", "task_name", "num_classes", "point_1_xy", "point_2_xy"], reg
        )
    return root
