"""The tidy results table (results.csv): its columns are the contract between the store and the analysis."""

from __future__ import annotations

#: One row per (job, task, metric), and per sweep point of the job when the study sweeps (then one more column
#: per swept key, `is_sweep_column`).
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


def is_sweep_column(name: str) -> bool:
    """A swept spec key's column (`training.lr_encoder`, usagg/sweep.py): a dotted name beside the fixed columns,
    the key's value at the row's sweep point. The reader refuses such a name that is no key a study can sweep
    (usagg/analysis/results.py), rather than split the rows into points by it."""
    return name not in RESULT_COLUMNS and "." in name
