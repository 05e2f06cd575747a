"""The run store's layout: every file and folder name of a study's store, and where each lives (`StoreLayout` for
the store's own files, `JobPaths` for one job's). The only module that spells these names: the engine, the
executors, the trackers, the CLI and the analysis reach the files through `RunStore` (a `StoreLayout`) and
`JobPaths` (one object knows the paths, as submitit's JobPaths does).

Layout::

    <output_root>/<study>/
      study.yaml             the resolved spec as run
      plan.json              the current plan: a list of Job dumps
      specs.json             the spec files run into this store (`spec_files`, `add_spec_file`)
      results.csv            tidy table, one row per (job, task, metric), rebuilt from metrics.json
      jobs/<job_id>/
        job.json             {"job": Job, "state", "attempts", "started", "finished",
                              "duration_s", "host", "pid", "error", "weights_key", "start_epoch",
                              "device" (where the attempt computes, once it has chosen)}
        .lock                present while a process runs the job: host, pid, start time (its Slurm job there)
        log.txt              the job's own log
        metrics.json         a JobMetrics (usagg/jobmetrics.py, docs/metrics.md), with a checksum of its content
        history.csv          per epoch and task: losses, steps, selection metrics (usagg/historycsv.py)
        item_scores.json     per test image: the test-set bootstrap's input (with a checksum of its content)
        splits.json          per task the train, select and test images and the rows' fingerprint (usagg/engine/job.py)
        affinity.json        the inter-task affinity a measuring job saw (AG's evidence, usagg/affinity.py)
        predictions/         challenge submission format
        checkpoints/         last and best, for resuming
        error.txt            traceback when it failed
        slurm.json           the Slurm job (array id _ index) it waits in, from submission until its outcome is
                             collected (usagg/execute/slurm.py)

      .slurm-submit.lock     held by a `usagg run` while it decides what to submit to Slurm and submits it
      .plan.lock             held by a `usagg run` while it decides whether its plan may be written and writes it
      .runs/<token>.lock     one per live `usagg run` of the store (host, pid, spec file, plan size; `RunStore.run`;
                             <token>: 32 hex digits, the only names read there, usagg/store/links.py)
      .results.lock          held while results.csv is read from the jobs and written (`rebuild_results`)
      slurm/                 submitit's folder of a Slurm run; mlflow.json, mlflow-artifacts/, tensorboard/<job_id>/
                             the trackers' records (usagg/tracking.py)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from usagg.safepath import check_component, confined

#: A job's lock file (usagg/joblock.py's protocol).
LOCK_NAME = ".lock"
#: File names of the trainer's checkpoints inside `JobPaths.checkpoints` (the engine writes them).
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"


@dataclass(frozen=True)
class JobPaths:
    """Where one job's files live; the engine writes into a bare folder through it too (tests, `run_job`)."""

    folder: Path

    @property
    def record(self) -> Path:
        """job.json: the Job, its state, attempts, timings, host, pid, error."""
        return self.folder / "job.json"

    @property
    def lock(self) -> Path:
        return self.folder / LOCK_NAME

    @property
    def log(self) -> Path:
        return self.folder / "log.txt"

    @property
    def metrics(self) -> Path:
        return self.folder / "metrics.json"

    @property
    def error(self) -> Path:
        """The traceback of the last failed attempt."""
        return self.folder / "error.txt"

    @property
    def splits(self) -> Path:
        """The image paths of train / selection / test per task."""
        return self.folder / "splits.json"

    @property
    def predictions(self) -> Path:
        """The test predictions in the challenge's submission format (a folder)."""
        return self.folder / "predictions"

    @property
    def affinity(self) -> Path:
        """affinity.json: the inter-task affinity the job measured (usagg/affinity.py), when it measures it."""
        return self.folder / "affinity.json"

    @property
    def history(self) -> Path:
        """history.csv: per epoch and task, the training loss, steps and selection metrics, rewritten each epoch."""
        return self.folder / "history.csv"

    @property
    def item_scores(self) -> Path:
        """Per test image values of each task's primary metric (item_scores.json): the test-set bootstrap's input."""
        return self.folder / "item_scores.json"

    @property
    def checkpoints(self) -> Path:
        """last.pt and best.pt of the trainer (a folder)."""
        return self.folder / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        """Present when a killed attempt can resume."""
        return self.checkpoints / LAST_CHECKPOINT

    @property
    def best_checkpoint(self) -> Path:
        """The selected epochs' trainable weights."""
        return self.checkpoints / BEST_CHECKPOINT

    @property
    def mlflow(self) -> Path:
        """mlflow.json: the job's MLflow run (`{"uri", "run_id"}`), reopened by a later attempt (usagg/tracking.py)."""
        return self.folder / "mlflow.json"

    @property
    def slurm(self) -> Path:
        """slurm.json: the Slurm job the job was submitted as, while no `usagg run` has collected its outcome."""
        return self.folder / "slurm.json"


class StoreLayout:
    """Where a study's store keeps its files, from its root (nothing is created); `RunStore` is one."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def study_yaml(self) -> Path:
        return self.root / "study.yaml"

    @property
    def plan_json(self) -> Path:
        return self.root / "plan.json"

    @property
    def results_csv(self) -> Path:
        return self.root / "results.csv"

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    @property
    def slurm_submit_lock(self) -> Path:
        """.slurm-submit.lock: held by a `usagg run` while it decides what to submit to Slurm and submits it."""
        return self.root / ".slurm-submit.lock"

    @property
    def plan_lock_file(self) -> Path:
        """.plan.lock: held by a `usagg run` while it decides whether its plan may be written and writes it."""
        return self.root / ".plan.lock"

    @property
    def results_lock_file(self) -> Path:
        """.results.lock: held while results.csv is read from the jobs and written (`rebuild_results`)."""
        return self.root / ".results.lock"

    @property
    def runs_dir(self) -> Path:
        """.runs/: one lock per `usagg run` of this store, held from its plan's writing to its end (`run`)."""
        return self.root / ".runs"

    @property
    def slurm_dir(self) -> Path:
        """submitit's folder of a Slurm run (scripts, logs, pickled calls)."""
        return self.root / "slurm"

    @property
    def mlflow_record(self) -> Path:
        """mlflow.json: the MLflow parent run that stands for the study (usagg/tracking.py)."""
        return self.root / "mlflow.json"

    @property
    def mlflow_artifacts(self) -> Path:
        """Where a local MLflow store keeps artifacts."""
        return self.root / "mlflow-artifacts"

    @property
    def tensorboard_root(self) -> Path:
        """tensorboard/: a folder of TensorBoard event files per job (`tensorboard_dir`)."""
        return self.root / "tensorboard"

    def tensorboard_dir(self, job_id: str) -> Path:
        """A job's TensorBoard event files (the job id checked as `job_dir` checks it)."""
        return self._confined(self.tensorboard_root, job_id)

    def job_dir(self, job_id: str) -> Path:
        """The job's folder (not created); UnsafePath for an id that is not one plain file name, or a folder
        (a `jobs/<id>` link) that leads outside the store.

        A job id comes from plan.json, a results table, a folder listing or the command line, so a received
        store decides it: a link planted there would send reads into a report, and `usagg run` or `repair`
        writes, to another folder (usagg/safepath.py).
        """
        return self._confined(self.jobs_dir, job_id)

    def _confined(self, folder: Path, job_id: str) -> Path:
        """`folder / job_id` when the id is one plain file name and, links followed, the path stays in the store."""
        where = f"{folder}: job id"
        return confined(folder.relative_to(self.root) / check_component(job_id, where), self.root, where)

    def paths(self, job_id: str) -> JobPaths:
        """Every file of one job (nothing is created)."""
        return JobPaths(self.job_dir(job_id))

    @property
    def specs_json(self) -> Path:
        return self.root / "specs.json"

    def check_no_links(self, job_ids: Iterable[str] | None = None) -> None:
        """UnsafePath for a symbolic link where the store's writers write (usagg/store/links.py `check_no_links`)."""
        from usagg.store.links import check_no_links

        check_no_links(self, job_ids)
