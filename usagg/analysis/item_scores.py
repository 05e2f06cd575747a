"""A job's item_scores.json read back: per task and test image, what recomputes the task's primary metric.

The test-set bootstrap (usagg/analysis/task_ci.py) resamples them; the comparison (usagg/analysis/delta.py) reads
them for why a metric is undefined (an AUC whose test split holds one class). Apart from both, so that delta.py
reads them without importing the bootstrap, which builds on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from usagg.atomic import read_json_checked
from usagg.errors import UsaggError
from usagg.predictions import ITEM_SCORES_FORMAT, item_kind_problem
from usagg.store.layout import JobPaths
from usagg.wording import command


@dataclass(frozen=True)
class ItemScores:
    """One task's per-image scores from one job: enough to recompute `metric` on any resample of `images`.

    `values` rows follow `images`; their meaning depends on `kind` (usagg/predictions.py `ITEM_KINDS`):
    "mean" float [N] or [N, C] (per class), "auc" [N, 1 + C] (true class, then class probabilities),
    "confusion" [N, 2] (true class, predicted class).
    """

    metric: str
    higher_is_better: bool
    kind: str
    images: tuple[str, ...]
    values: np.ndarray


def load_item_scores(job_dir: Path) -> dict[str, ItemScores]:
    """The item scores of a job folder by task id; {} when the job wrote none (older jobs, failed jobs)."""
    path = JobPaths(Path(job_dir)).item_scores
    if not path.exists():
        return {}
    try:
        data, why = read_json_checked(path)
        if data is None:
            raise ValueError(why)
        if data.get("format") != ITEM_SCORES_FORMAT:
            raise ValueError(f"expected an object with format {ITEM_SCORES_FORMAT}")
        return {str(task): _item_scores(task, rec) for task, rec in data["tasks"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        store = Path(job_dir).parent.parent
        raise UsaggError(
            f"{path} is damaged ({err}); expected the item scores a job writes after its test evaluation: "
            f"`{command('usagg', 'repair', Path(store))}` sets it aside and sends the job back to pending, then "
            "`usagg run` evaluates it again"
        ) from None


def _item_scores(task: str, rec: dict) -> ItemScores:
    kind = rec["kind"]
    if (why := item_kind_problem(str(task), str(rec["metric"]), kind)) is not None:
        raise ValueError(why if why.startswith("task ") else f"task {task}: {why}")
    images = tuple(rec["images"])
    if not all(isinstance(i, str) for i in images):
        raise ValueError(f"task {task}: images must be path strings")
    values = np.array(_floats(rec["values"]), dtype=np.float64)
    if values.ndim not in (1, 2) or values.shape[0] != len(images):
        raise ValueError(f"task {task}: {len(images)} images but values of shape {values.shape}")
    if kind != "mean" and (values.ndim != 2 or values.shape[1] < (3 if kind == "auc" else 2)):
        raise ValueError(f"task {task}: {kind} values need more columns, got shape {values.shape}")
    return ItemScores(str(rec["metric"]), bool(rec["higher_is_better"]), kind, images, values)


def _floats(raw: object) -> object:
    """JSON numbers (nested lists) as floats, null as nan; anything else is a ValueError."""
    if isinstance(raw, list):
        return [_floats(v) for v in raw]
    if raw is None:
        return math.nan
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ValueError(f"{raw!r} is not a number")
    return float(raw)
