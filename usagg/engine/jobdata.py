"""The data of one job: its splits (seeded, nested fractions) and a dataset per task and split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from usagg.cachedir import cache_root
from usagg.data.datasets import TaskDataset
from usagg.data.source import dataset_root
from usagg.data.splits import (
    TaskRows,
    TaskSplits,
    make_splits,
    read_rows,
    rows_fingerprints,
    splits_record,
    synthetic_generator,
)
from usagg.plan import Job
from usagg.spec.models import TaskSpec


@dataclass
class JobData:
    """Splits and datasets of a job's tasks; `select` and `test` omit tasks whose split is empty."""

    root: Path
    splits: dict[str, TaskSplits]
    train: dict[str, TaskDataset]
    select: dict[str, TaskDataset]
    test: dict[str, TaskDataset]
    rows: TaskRows | None = None  # the CSV rows the splits came from (the frozen trunk splits them at fraction 1)
    generator: int | None = None  # the synthetic benchmark's generator version, None for data.root

    def record(self, tasks: list[TaskSpec]) -> dict:
        """splits.json content: per task the counts and image paths of train, select and test, and the fingerprint
        of the rows they came from and the synthetic generator that made them (a later run compares it with the data
        then: `rows_fingerprints`)."""
        prints = rows_fingerprints(self.rows, self.root, tasks, self.generator) if self.rows is not None else None
        return splits_record(self.splits, prints)


def load_job_data(job: Job) -> JobData:
    """Resolve the dataset (generating synthetic data on first use), split it, and build the datasets."""
    root = dataset_root(job.data)
    rows = read_rows(job.data, root, job.tasks)
    splits = make_splits(job.data, root, job.tasks, job.fraction, job.seed, rows)
    cache = cache_root(job.data.cache_dir)
    size = job.model.image_size

    def build(which: str) -> dict[str, TaskDataset]:
        out = {}
        for t in job.tasks:
            samples = getattr(splits[t.id], which)
            if samples:
                out[t.id] = TaskDataset(samples, t, size, cache, job.data.color)
        return out

    generator = synthetic_generator(job.data)
    return JobData(root, splits, build("train"), build("select"), build("test"), rows, generator)
