"""The tidy results table (results.csv): its columns are the contract between the store and the analysis."""

from __future__ import annotations

#: One row per (job, task, metric).
RESULT_COLUMNS: tuple[str, ...] = (
    "study",
    "job_id",
    "paradigm",
    "group",
    "seed",
    "fraction",
    "task",
    "type",
    "metric",
    "value",
    "higher_is_better",
    "n_train",
    "steps",
)

#: Columns a results table may lack (tables written before they existed): read as empty.
OPTIONAL_COLUMNS: tuple[str, ...] = ("steps",)
