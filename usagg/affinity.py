"""Inter-task affinity as measured in a job: the record in `affinity.json`, read back and averaged.

The engine (usagg/engine/affinity.py) measures the lookahead affinity of Fifty et al.
(2021), Z[i->j] = 1 - L_j(theta after one step on task i) / L_j(theta), on fixed probe
batches every `every` steps, and writes one `Affinity` per job. Rows are the task
stepped on (source i), columns the task whose loss is read (target j); the diagonal is a
task's affinity onto itself. The AG planner (usagg/paradigms.py), `usagg advise` and the
report read it from here (a study's, through the run store: `RunStore.study_affinity`, as history.csv's format is
usagg/historycsv.py and its files the store's). Torch-free.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from usagg.atomic import parse_json, read_regular, write_text_atomic
from usagg.errors import UsaggError

#: Version of the affinity.json layout.
AFFINITY_FORMAT = 1
#: Version of the lookahead step's code (usagg/engine/affinity.py; which step: `analysis.affinity.lookahead`). It is
#: part of a measuring job's id, so a job that measured with an earlier step is never reused: before 2026-11-28 the
#: whole preconditioned gradient, until 2026-12-05 "adamw-one-step" (g's one-step share of the first moment over
#: v_hat: neither SGD's step nor AdamW's).
LOOKAHEAD_STEP = "sgd-or-true-adamw"


#: A lookahead loss change within this many float32 steps (`np.spacing`) of the loss is rounding, not the step's
#: effect: a step too small to move the loss reads as 0, or as 1 to 4 float32 steps, whatever the tasks.
RESOLUTION_STEPS = 4
#: Share of such changes from which the whole affinity is rounding (and AG's groups chosen from it arbitrary): a
#: new user's 2-epoch pilot at the real study's learning rate had 50-70 % of its entries exactly 0.
AT_RESOLUTION_SHARE = 0.5


@dataclass(frozen=True)
class Affinity:
    """A job's mean lookahead affinity: `matrix[i][j]` is Z[tasks[i] -> tasks[j]], averaged over `steps`."""

    tasks: list[str]
    matrix: list[list[float]]
    job_id: str = ""
    job_hash: str = ""
    every: int = 0
    steps: list[int] = field(default_factory=list)
    probe_size: dict[str, int] = field(default_factory=dict)
    lookahead: str = ""  # analysis.affinity.lookahead (sgd | adamw); "" in a file from before it was recorded
    lookahead_lr: float | None = None  # None: the encoder's learning rate at each measured step
    seconds: float = 0.0  # spent measuring
    train_seconds: float = 0.0  # the job's training time, measurement included
    format: int = AFFINITY_FORMAT
    # Each measurement's losses, per measuring job (one job in a job's file; a job each in a seed mean), so the
    # matrix's measurement noise can be resampled (usagg/grouping.py `grouping_stability`); empty in a file from
    # before they were kept, or from a job resumed from a checkpoint that had none.
    base_losses: list[list[list[float]]] = field(default_factory=list)  # [job][measurement][j]: L_j(theta)
    after_losses: list[list[list[list[float]]]] = field(default_factory=list)  # [job][measurement][i][j]: L_j(theta_i)

    @property
    def share(self) -> float:
        """Share of the training time that went into measuring affinity."""
        return self.seconds / self.train_seconds if self.train_seconds > 0 else 0.0

    @property
    def overshot(self) -> list[str]:
        """Tasks whose own lookahead step raised their own loss (negative self-affinity): the step is too large to
        measure which tasks help each other (a lower `analysis.affinity.lookahead_lr` measures in the linear regime)."""
        return [t for i, t in enumerate(self.tasks) if self.matrix[i][i] < 0]

    @property
    def unresolved(self) -> float | None:
        """Share of the kept lookahead loss changes, |L_j(theta_i) - L_j(theta)| over every measurement, i and j,
        within `RESOLUTION_STEPS` float32 steps of L_j(theta) (rounding, not an effect of the step); None without
        kept losses. The losses are float32 (or coarser under bf16), so a step that moves no loss by more than that
        measures nothing, and the block bootstrap of `grouping_stability` cannot see it: its ties repeat in every
        resample."""
        import numpy as np

        if not self.base_losses:
            return None
        within = []
        for base, after in zip(self.base_losses, self.after_losses, strict=True):
            b = np.asarray(base, dtype=np.float64)[:, None, :]  # [measurement, 1, target]
            a = np.asarray(after, dtype=np.float64)  # [measurement, source, target]
            step = np.spacing(np.abs(b).astype(np.float32)).astype(np.float64)
            within.append((np.abs(a - b) <= RESOLUTION_STEPS * step).ravel())
        return float(np.concatenate(within).mean()) if within else None

    @property
    def at_resolution(self) -> bool:
        """Whether the affinity as a whole is rounding (`unresolved` at least `AT_RESOLUTION_SHARE`)."""
        share = self.unresolved
        return share is not None and share >= AT_RESOLUTION_SHARE

    def resolution_text(self) -> str:
        """What an affinity at the losses' float resolution means, for a warning or a report note."""
        share = self.unresolved or 0.0
        return (
            f"{100 * share:.0f} % of the affinity's lookahead loss changes are within {RESOLUTION_STEPS} float32 steps "
            "of none: the lookahead step is too small to move the losses, so the matrix is rounding and AG's groups "
            "chosen from it are arbitrary ties; raise analysis.affinity.lookahead_lr (or measure later in training, "
            "with more epochs), then run the study again under a new name"
        )

    def onto(self, target: str, sources: list[str]) -> float:
        """Mean affinity onto `target` from `sources` (itself left out); 0.0 when there is no other source."""
        return self._mean([(s, target) for s in sources if s != target])

    def out_of(self, source: str, targets: list[str]) -> float:
        """Mean affinity from `source` onto `targets` (itself left out); 0.0 when there is no other target."""
        return self._mean([(source, t) for t in targets if t != source])

    def _mean(self, pairs: list[tuple[str, str]]) -> float:
        vals = [self.matrix[self.tasks.index(i)][self.tasks.index(j)] for i, j in pairs]
        return sum(vals) / len(vals) if vals else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "share": self.share}


def write_affinity(path: Path, aff: Affinity) -> None:
    write_text_atomic(path, json.dumps(aff.to_json(), indent=1) + "\n")


def read_affinity(path: Path) -> Affinity:
    """An affinity.json back; UsaggError naming the file when it is not one this usagg writes."""
    try:
        raw = parse_json(read_regular(path))  # a planted link, FIFO, oversized or too deep a file is not read
        raw.pop("share", None)
        aff = Affinity(**raw)
        n = len(aff.tasks)
        if aff.format != AFFINITY_FORMAT or len(aff.matrix) != n or any(len(r) != n for r in aff.matrix):
            raise ValueError(f"format {aff.format}, {n} tasks, matrix rows {[len(r) for r in aff.matrix]}")
        _check_losses(aff)
    except (OSError, ValueError, TypeError, AttributeError) as e:  # AttributeError: a JSON value, not an object
        raise UsaggError(
            f"{path} is not an affinity file this usagg can read ({type(e).__name__}: {str(e)[:200]}); "
            "delete it and run the job that measures affinity again"
        ) from None
    return aff


def _check_losses(aff: Affinity) -> None:
    """ValueError unless the kept losses are, per job, as many base rows of n as after matrices of n x n."""
    n = len(aff.tasks)
    if len(aff.base_losses) != len(aff.after_losses):
        raise ValueError(f"losses of {len(aff.base_losses)} jobs before the step, {len(aff.after_losses)} after")
    for base, after in zip(aff.base_losses, aff.after_losses, strict=True):
        if (
            len(base) != len(after)
            or any(len(b) != n for b in base)
            or any(len(a) != n or any(len(r) != n for r in a) for a in after)
        ):
            raise ValueError(f"kept losses are not {len(base)} measurements of {n} tasks")


def check_source(aff: Affinity, path: Path, job_id: str, job_hash: str, tasks: list[str]) -> None:
    """Refuse an affinity file measured by another job, spec or task set: it is never reused."""
    if aff.job_hash != job_hash or aff.job_id != job_id or aff.tasks != tasks:
        raise UsaggError(
            f"{path} was measured by job {aff.job_id or '?'} (hash {aff.job_hash or '?'}) on tasks "
            f"{', '.join(aff.tasks)}, not by job {job_id} (hash {job_hash}) on {', '.join(tasks)}: an affinity "
            "from another spec or task set is not reused. Delete the file and run that job again."
        )


def mean_affinity(records: list[Affinity]) -> Affinity:
    """The element-wise mean of several jobs' affinities over the same tasks (seeds of one measurement), with each
    job's kept losses (none when a job kept none: a resample over some seeds is not the mean's noise)."""
    if not records:
        raise ValueError("no affinity records to average")
    tasks = records[0].tasks
    if any(r.tasks != tasks for r in records):
        raise ValueError("affinity records over different task lists cannot be averaged")
    n = len(tasks)
    matrix = [[sum(r.matrix[i][j] for r in records) / len(records) for j in range(n)] for i in range(n)]
    kept = all(r.base_losses for r in records)
    return Affinity(
        tasks=list(tasks),
        matrix=matrix,
        job_id=",".join(r.job_id for r in records),
        job_hash=",".join(r.job_hash for r in records),
        every=records[0].every,
        steps=records[0].steps,
        probe_size=records[0].probe_size,
        lookahead=records[0].lookahead,
        lookahead_lr=records[0].lookahead_lr,
        seconds=sum(r.seconds for r in records),
        train_seconds=sum(r.train_seconds for r in records),
        base_losses=[job for r in records for job in r.base_losses] if kept else [],
        after_losses=[job for r in records for job in r.after_losses] if kept else [],
    )


def measuring_jobs(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Job dumps (plan.json entries) that measure affinity at the largest fraction they were planned at:
    the affinity AG groups by (their seeds averaged)."""
    measuring = [r for r in records if r.get("affinity")]
    if not measuring:
        return []
    top = max(float(r["fraction"]) for r in measuring)
    return [r for r in measuring if float(r["fraction"]) == top]
