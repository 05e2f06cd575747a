"""The run store: one folder per study, the only state of a study.

Resuming, `usagg status` and the analysis all read it, so every file is
written atomically (temporary file in the same folder, fsync, rename) and a
crash never leaves a half-written file behind. It is safe on a shared file
system: two `usagg run` processes, on one host or on several, never run the
same job (see `RunStore.lock`).

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

Job states: pending -> running -> done | failed (a failed or interrupted job
goes back to running when run again). For display, `RunStore.display_state`
adds "interrupted": state running but the lock holder is dead or gone.

      .slurm-submit.lock     held by a `usagg run` while it decides what to submit to Slurm and submits it
      .plan.lock             held by a `usagg run` while it decides whether its plan may be written and writes it
      .runs/<token>.lock     one per live `usagg run` of the store (host, pid, spec file, plan size; `RunStore.run`)
      .results.lock          held while results.csv is read from the jobs and written (`rebuild_results`)
      slurm/                 submitit's folder of a Slurm run; mlflow.json, mlflow-artifacts/, tensorboard/<job_id>/
                             the trackers' records (usagg/tracking.py)

This module is the only code that spells these file names: the engine, the
executors, the trackers, the CLI and the analysis reach the files through `RunStore` and
`JobPaths` (one object knows the paths, as submitit's JobPaths does).

Reads are pure: `job_record`, `metrics`, `job_state`, ... never write; a damaged file
(unreadable, the wrong schema, a checksum that no longer matches) is noted in `repairs`
and read as the store would rebuild it. `RunStore.repair()` (`usagg repair`, and the
start of `usagg run`) is the one step that sets damaged files aside and rebuilds them;
besides it only `init` (new records) and `set_state` (the state machine) write job.json,
each under the job's lock, `set_state` as a compare-and-set. A job id ends with a hash of every
setting that changes its result, so changing the spec makes new job folders
and leaves old ones (and their results) untouched; `plan.json` and
`results.csv` describe the current plan only.

`results.csv` columns: usagg/results_schema.py `RESULT_COLUMNS` (study, job_id, paradigm, group, seed, ...,
n_train, steps), then one column per swept spec key (`is_sweep_column`: the key's value at the row's sweep point).
`group` is the task's clinical group, `higher_is_better` is `True` or `False`, an undefined value is empty.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import math
import os
import pickle
import re
import socket
import uuid
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from usagg.affinity import Affinity, check_source, mean_affinity, measuring_jobs, read_affinity
from usagg.atomic import (
    STORE_FILE_LIMIT,
    parse_json,
    read_json_checked,
    read_regular,
    set_aside,
    write_json_atomic,
    write_json_checked,
    write_text_atomic,
)
from usagg.errors import DataError, UsaggError
from usagg.historycsv import OLDER_LAYOUT, history_damage, write_history
from usagg.joblock import DAMAGED_HOLDER, JobLock, JobLocked, read_holder
from usagg.jobmetrics import JobMetrics, metrics_problem
from usagg.paradigms import paradigm_names
from usagg.plan import Job, weights_key
from usagg.results_schema import OPTIONAL_COLUMNS, RESULT_COLUMNS
from usagg.safepath import check_component, confined, no_links
from usagg.sweep import value_text
from usagg.tasktypes import metric_direction
from usagg.wording import command, counted

STATES: tuple[str, ...] = ("pending", "running", "done", "failed")


LOCK_NAME = ".lock"
#: Key of job.json holding what the job's id hashed of `model.weights` (usagg/plan.py `weights_key`): `sha256:<hex>`,
#: `missing:<name>` or null. A report shows this digest and never reads a weights path a received store names.
WEIGHTS_KEY = "weights_key"
#: What mends a damaged plan.json, as its errors say.
_PLAN_FIX = "a run of the study's spec (`usagg run SPEC`, or `usagg.api.run_study(SPEC)`) writes it anew"


def _plan_entry_problem(plan_json: Path, index: int, record: Any, err: ValidationError) -> str:
    """Why a plan.json entry is no Job this usagg reads, naming its first bad field and what was expected: the file
    may be damaged, or written by a usagg version with other job fields."""
    from usagg import __version__

    errors = err.errors()
    first = errors[0]
    field = ".".join(str(p) for p in first["loc"]) or "the entry itself"
    got = f", got {first['input']!r:.60}" if first["type"] != "missing" else ""
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    job_id = record.get("id") if isinstance(record, dict) else None
    which = f"job {index + 1} ({job_id!r})" if isinstance(job_id, str) else f"job {index + 1}"
    return (
        f"{plan_json} is damaged, or was written by another usagg version than this one ({__version__}): {which} "
        f"does not read as a job: {field}: {first['msg']}{got}{more}; {_PLAN_FIX}"
    )


#: submitit keeps each submission's script and links the temporary name it wrote it under to it, in the folder usagg
#: gives it: `<folder>/.submission_file_<uuid4 hex>.sh` -> `<folder>/<Slurm job id>_submission.sh`.
_SUBMITIT_LINK = re.compile(r"\.submission_file_[0-9a-f]{32}\.sh")
_SUBMITIT_TARGET = re.compile(r"\d+(_\d+)?_submission\.sh")
#: A Slurm job id as `slurm.json` records it: the array's id and the element's index.
_SLURM_JOB_ID = re.compile(r"\d{1,20}(_\d{1,9})?")


def submitit_link(link: Path) -> bool:
    """Whether `link` is submitit's own link to the script of a submission beside it (`_SUBMITIT_LINK`): the one
    link slurm/ holds that usagg did not plant through a received store; nothing is written through it."""
    target = Path(os.readlink(link))
    beside = os.path.dirname(os.path.abspath(link.parent / target)) == os.path.abspath(link.parent)
    return bool(_SUBMITIT_LINK.fullmatch(link.name) and _SUBMITIT_TARGET.fullmatch(target.name)) and beside


# --------------------------------------------------------------------------- atomic files


#: The most bytes of a job.json read: a record with its Job is a few kB (tens with many tasks); more was planted.
RECORD_LIMIT = 2**20
#: The most characters of an error job.json keeps (usagg/engine/runner.py, usagg/execute/base.py `summarize_error`
#: cut it there); `usagg status` shows no more of a record's error than that.
ERROR_CHARS = 300


def read_json(path: Path | str, limit: int = STORE_FILE_LIMIT) -> Any:
    """Read a JSON file of the store (a regular file of at most `limit` bytes: usagg/atomic.py `read_regular`);
    ValueError for what is no JSON, too deep a nesting included (`parse_json`)."""
    return parse_json(read_regular(path, limit))


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(t: datetime) -> str:
    return t.isoformat()


def _metric_entries(metrics: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], str, Any]]:
    """(task, its entry, metric name, value) for every metric of a job's metrics.json."""
    for task_id, entry in (metrics.get("tasks") or {}).items():
        for name, value in (entry.get("metrics") or {}).items():
            yield task_id, entry, name, value


def _timestamp(value: Any) -> bool:
    """Whether `value` is a time `_iso` writes: ISO text with a time zone (a duration is taken from it)."""
    try:
        return isinstance(value, str) and datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


def _count(value: Any) -> bool:
    """Whether `value` is a whole number >= 0 (JSON true is no count)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


#: job.json's fields besides `job` and `state` (those `new_record` and `set_state` write), each with what it must
#: hold when present: `usagg status`, the ETA and the next attempt compute with them.
_RECORD_FIELDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "attempts": ("a whole number >= 0", _count),
    "started": ("an ISO time with its zone, or null", lambda v: v is None or _timestamp(v)),
    "finished": ("an ISO time with its zone, or null", lambda v: v is None or _timestamp(v)),
    "duration_s": (
        "a finite number of seconds, or null",
        lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)),
    ),
    "host": ("text, or null", lambda v: v is None or isinstance(v, str)),
    "pid": ("a whole number >= 0, or null", lambda v: v is None or _count(v)),
    "error": ("text, or null", lambda v: v is None or isinstance(v, str)),
    "start_epoch": ("a whole number >= 0, or null", lambda v: v is None or _count(v)),
    "device": ("text, or null", lambda v: v is None or isinstance(v, str)),
    "restarted": ("text, or null", lambda v: v is None or isinstance(v, str)),
    WEIGHTS_KEY: ("text, or null", lambda v: v is None or isinstance(v, str)),
}


def _record_problem(record: Any) -> str | None:
    """Why a parsed job.json is not a record the store writes, None when it is one."""
    if not isinstance(record, dict) or record.get("state") not in STATES or not isinstance(record.get("job"), dict):
        return "not a job record (no job or no valid state)"
    for key, (expected, ok) in _RECORD_FIELDS.items():
        if key in record and not ok(record[key]):
            shown = repr(record[key])
            return f"its {key} is {shown if len(shown) <= 60 else shown[:56] + '...'}, not {expected}"
    return None


def new_record(job_dump: dict[str, Any], state: str) -> dict[str, Any]:
    """A job.json for a job that has not run yet in this store (a new job, or one rebuilt from the plan)."""
    return {
        "job": job_dump,
        "state": state,
        "attempts": 0,
        "started": None,
        "finished": None,
        "duration_s": None,
        "host": None,
        "pid": None,
        "error": None,
    }


# --------------------------------------------------------------------------- locks


class StateConflict(UsaggError):
    """A job's state is not the one a compare-and-set expected (`RunStore.set_state(expect=...)`)."""


def _item_scores_damage(path: Path) -> str | None:
    """Why item_scores.json is not the file a job writes (checksum, layout), None when it is or there is none."""
    from usagg.predictions import ITEM_SCORES_FORMAT  # lazy: numpy

    try:
        data, why = read_json_checked(path)
    except FileNotFoundError:
        return None
    if data is not None and (data.get("format") != ITEM_SCORES_FORMAT or not isinstance(data.get("tasks"), dict)):
        why = f"not item scores of format {ITEM_SCORES_FORMAT} (an object with `format` and `tasks`)"
    return why


# --------------------------------------------------------------------------- one job's files


#: File names of the trainer's checkpoints inside `JobPaths.checkpoints` (the engine writes them).
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
#: Version of the checkpoint layout (2: lean, with the frozen weights' fingerprint; 3: with a content checksum;
#: 4: MoE experts stacked per projection, last.pt carrying the kept best epochs). A last.pt of another layout is
#: not resumed: the job starts over (usagg/engine/checkpointing.py), as `usagg status` and `usagg run` say
#: beforehand (`checkpoint_layout`).
CHECKPOINT_FORMAT = 4
#: The suffix a last.pt the engine cannot resume is kept under (last.pt.not-resumed), never overwritten.
NOT_RESUMED = "not-resumed"


class _Opaque:
    """Whatever a checkpoint's pickle builds beyond plain data (tensors, dtypes, ordered dicts, arrays): accepted and
    dropped, so `checkpoint_layout` reads the layout without torch and without reading a tensor."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        pass

    def __setitem__(self, key: object, value: object) -> None:
        pass

    def append(self, value: object) -> None:
        pass

    def extend(self, values: object) -> None:
        pass


class _LayoutUnpickler(pickle.Unpickler):
    """Unpickles a torch checkpoint's data.pkl with every class and every tensor storage an `_Opaque`: nothing is
    imported or run from the file."""

    def find_class(self, module: str, name: str) -> Any:
        return _Opaque

    def persistent_load(self, pid: Any) -> Any:
        return None


def checkpoint_layout(path: Path) -> int | None:
    """The layout of the checkpoint at `path` (its "format"; 1 for the first, which had none), read from the pickle
    inside torch's zip file (milliseconds, no torch: `usagg status` stays light); None where it cannot be read (the
    run then finds it damaged and starts over, saying so in the job's log)."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.rsplit("/", 1)[-1] == "data.pkl")
            with archive.open(name) as f:
                ck = _LayoutUnpickler(f).load()
    except Exception:  # not a zip, no data.pkl, a pickle cut short: unreadable here, the engine's to judge
        return None
    if not isinstance(ck, dict):
        return None
    layout = ck.get("format", 1)
    return layout if isinstance(layout, int) and not isinstance(layout, bool) else None


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


# --------------------------------------------------------------------------- the store


class RunStore:
    """One study's folder: plan, job states, locks, job files and the results table."""

    def __init__(
        self, root: str | os.PathLike[str], *, heartbeat_s: float = 30.0, stale_after_s: float = 600.0
    ) -> None:
        self.root = Path(root)
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        #: Damaged files found by reads and the repairs `repair` made, one sentence each: the CLI prints them.
        self.repairs: list[str] = []
        #: Those of `repairs` that `repair` could not mend (a damaged plan.json, a record with no plan to rebuild it).
        self.unrepaired: list[str] = []

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    # ----- paths

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

    def tensorboard_dir(self, job_id: str) -> Path:
        """A job's TensorBoard event files (the job id checked as `job_dir` checks it)."""
        return self._confined(self.root / "tensorboard", job_id)

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

    @property
    def repair_command(self) -> str:
        """`usagg repair` of this store as a user pastes it (shell-quoted: a store folder's name is data)."""
        return command("usagg", "repair", self.root)

    def paths(self, job_id: str) -> JobPaths:
        """Every file of one job (nothing is created)."""
        return JobPaths(self.job_dir(job_id))

    def check_no_links(self, job_ids: Iterable[str] | None = None) -> None:
        """UnsafePath for a symbolic link in a folder the store's writers own: the job folders (`job_ids`', else
        every one, the jobs/ folder itself included), slurm/ and mlflow-artifacts/ (usagg/safepath.py `no_links`).

        usagg makes no links there; a received store could plant one, and a resumed job would append its log to,
        write its checkpoints into and delete its last.pt from the link's target. `usagg run` and `usagg repair`
        check the whole store before their first write, and every job checks its own folder before it starts.
        """
        if job_ids is None:
            no_links(self.jobs_dir, f"run store {self.root}")
        else:
            for job_id in job_ids:
                no_links(self.job_dir(job_id), f"run store {self.root}, job {job_id}")
        no_links(self.slurm_dir, f"run store {self.root}", submitit_link)
        no_links(self.mlflow_artifacts, f"run store {self.root}")

    # ----- study

    def exists(self) -> bool:
        """Whether the store was initialised (it has a plan)."""
        return self.plan_json.is_file()

    def init(self, study_yaml: str, jobs: list[Job]) -> None:
        """Write the spec, the plan and a job.json per job, keeping the state of jobs already there.

        A job already in the store keeps its state, timings and results (its Job
        settings are refreshed: only settings outside the hash can differ); a
        new id gets a new pending folder; folders of jobs no longer planned stay.
        Every job.json write happens under that job's lock, so a runner that holds
        it is the record's only writer: a job whose live runner holds the lock is
        left alone (its settings are refreshed by a later `init`), and a done job
        can never be written back to an older state by a slow concurrent `init`.
        """
        ids = [j.id for j in jobs]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise UsaggError(f"the plan has duplicate job ids {dup}")
        self.write_study(study_yaml)
        for job in jobs:
            path = self.paths(job.id).record
            dump = job.model_dump(mode="json")
            weights = weights_key(job.model.weights, job.data.cache_dir)  # as hashed into the id: cached, not re-read
            if path.is_file():
                record, why = self._load_record(job.id)
                if record is None:
                    self._damaged(path, str(why))  # `repair` sets it aside and rebuilds it; never overwritten here
                    continue
                if record.get("job") == dump and record.get(WEIGHTS_KEY) == weights:
                    continue  # nothing to refresh: no write, no lock
            try:
                with self.lock(job.id):
                    if path.is_file():
                        record, why = self._load_record(job.id)
                        if record is None:
                            continue  # damaged meanwhile: left to `repair`
                        record["job"] = dump
                    else:
                        record = new_record(dump, "pending")
                    record[WEIGHTS_KEY] = weights
                    write_json_atomic(path, record)
            except JobLocked:
                continue  # a live runner owns this job's record
        self.write_plan([j.model_dump(mode="json") for j in jobs])

    def _load_record(self, job_id: str) -> tuple[dict[str, Any] | None, str | None]:
        """(job.json, None) for an intact record, (None, why) for a damaged one; UsaggError when there is none."""
        path = self.paths(job_id).record
        try:
            record = read_json(path, RECORD_LIMIT)
        except FileNotFoundError:
            raise UsaggError(f"job {job_id} is not in the run store {self.root}") from None
        except OSError as err:
            if err.errno == errno.EINVAL and err.strerror:  # read_regular: a link, FIFO or oversized file
                return None, err.strerror
            return None, f"not readable ({type(err).__name__}: {str(err)[:120]})"
        except ValueError as err:
            return None, f"not readable JSON ({type(err).__name__}: {str(err)[:120]})"
        why = _record_problem(record)
        return (None, why) if why else (record, None)

    def write_study(self, study_yaml: str) -> None:
        """Write study.yaml (the resolved spec as run)."""
        self.root.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.study_yaml, study_yaml)

    def write_plan(self, records: list[dict[str, Any]]) -> None:
        """Write plan.json from Job dumps (`init` does this; the analysis simulator writes its own records)."""
        write_json_atomic(self.plan_json, records)

    def stored_study(self) -> dict[str, Any]:
        """study.yaml as a mapping ({} when there is none), read by the spec's YAML reader and its errors.

        A received store is data: a study.yaml that is a link leading outside the store is an UnsafePath
        (usagg/safepath.py), never read, since its settings (tracking URI, cache_dir, analysis) steer what follows.
        """
        path = confined(self.study_yaml.name, self.root, f"{self.study_yaml} (the study a run store holds)")
        if not path.is_file():
            return {}
        from usagg.spec.load import read_yaml  # lazy: reading a store needs no spec models

        return read_yaml(path, what="stored study")

    def planned_count(self) -> int | None:
        """How many jobs plan.json lists, None when it is missing or unreadable (the analysis only counts them).

        A plan listing a job id twice is the damage `jobs` reports (`check_job_ids`): it would be counted twice."""
        try:
            plan = read_json(self.plan_json)
        except (OSError, ValueError, TypeError):
            return None
        if not isinstance(plan, list):  # a plan is a list of jobs; anything else is damage
            return None
        self.check_job_ids(r.get("id") for r in plan if isinstance(r, dict))
        return len(plan)

    def study_affinity(self) -> Affinity | None:
        """The study's affinity as AG used it: the mean over the measuring jobs of plan.json that wrote their
        affinity.json (checked against the job: another spec's file is refused); None when none did. The file's
        format and the averaging are usagg/affinity.py's; which jobs, and where their files are, the store's.
        A plan listing a job id twice is refused (`check_job_ids`): a measuring job would be averaged in twice."""
        try:
            records = parse_json(read_regular(self.plan_json))  # a FIFO, a link, too large or too deep: no affinity
        except (OSError, ValueError):
            return None
        if not isinstance(records, list):
            return None
        entries = [r for r in records if isinstance(r, dict)]  # an entry that is no mapping is no measuring job
        self.check_job_ids(r.get("id") for r in entries)
        found = []
        for r in measuring_jobs(entries):
            path = self.paths(check_component(r["id"], f"{self.plan_json}, job id")).affinity
            if path.is_file():
                aff = read_affinity(path)
                check_source(aff, path, r["id"], r["hash"], [t["id"] for t in r["tasks"]])
                found.append(aff)
        return mean_affinity(found) if found else None

    def jobs(self) -> list[Job]:
        """The jobs of the current plan, in plan order."""
        if not self.exists():
            raise UsaggError(f"no run store at {self.root} (no plan.json): run `usagg run` first")
        try:
            records = read_json(self.plan_json)
        except (OSError, ValueError, TypeError) as err:
            raise UsaggError(f"{self.plan_json} is damaged ({type(err).__name__}); {_PLAN_FIX}") from None
        if not isinstance(records, list):
            raise UsaggError(
                f"{self.plan_json} is damaged (it holds a JSON {type(records).__name__}, not a list of jobs); "
                f"{_PLAN_FIX}"
            )
        jobs = []
        for i, record in enumerate(records):
            try:
                jobs.append(Job.model_validate(record))
            except ValidationError as err:
                raise UsaggError(_plan_entry_problem(self.plan_json, i, record, err)) from None
        self.check_job_ids(j.id for j in jobs)
        return jobs

    def check_job_ids(self, ids: Iterable[object]) -> None:
        """Refuse plan.json when it lists a job id more than once: `init` never writes one, and each job would be
        counted, run and compared (its affinity averaged) twice. The one check of the plan's ids, for `jobs` (status,
        repair, results) and the raw reads (`planned_count`, `study_affinity`); a raw entry without a string id
        is left to those reads."""
        dup = sorted(i for i, n in Counter(i for i in ids if isinstance(i, str)).items() if n > 1)
        if dup:
            raise UsaggError(
                f"{self.plan_json} is damaged (it lists job ids more than once: {', '.join(dup)}); {_PLAN_FIX}"
            )

    def job_ids(self) -> list[str]:
        """Ids of the current plan, in plan order."""
        return [j.id for j in self.jobs()]

    def job_folders(self) -> list[str]:
        """Ids of every job folder, planned or not, sorted (old hashes keep their folders)."""
        if not self.jobs_dir.is_dir():
            return []
        return sorted(d.name for d in self.jobs_dir.iterdir() if d.is_dir())

    def job(self, job_id: str) -> Job:
        """The Job of a job folder (also for folders no longer in the plan)."""
        return Job.model_validate(self.job_record(job_id)["job"])

    def has_job(self, job_id: str) -> bool:
        """Whether the store holds a record (job.json) for this id."""
        return self.paths(job_id).record.is_file()

    def job_record(self, job_id: str) -> dict[str, Any]:
        """job.json as a dict: job, state, attempts, started, finished, duration_s, host, pid, error.

        A pure read. A damaged job.json (not JSON, not an object, no valid state, a field of the wrong type) is noted in
        `repairs` and read as `repair` will rebuild it from the plan: done when the job's
        metrics.json is intact, else pending.
        """
        record, why = self._load_record(job_id)
        if record is not None:
            return record
        path = self.paths(job_id).record
        job = self._planned(job_id)
        if job is None:
            raise UsaggError(f"{path} is damaged ({why}) and job {job_id} is not in {self.plan_json} to rebuild it")
        self._damaged(path, str(why))
        return new_record(job.model_dump(mode="json"), self._rebuilt_state(job_id))

    def _planned(self, job_id: str) -> Job | None:
        """The Job of the current plan with this id, None when the plan lacks it or is unreadable."""
        try:
            return next((j for j in self.jobs() if j.id == job_id), None)
        except UsaggError:
            return None

    def _rebuilt_state(self, job_id: str) -> str:
        """The state a rebuilt job.json gets: done when metrics.json is intact, else pending (it resumes)."""
        try:
            return "done" if read_json_checked(self.paths(job_id).metrics)[0] is not None else "pending"
        except FileNotFoundError:
            return "pending"

    def _damaged(self, path: Path, why: str, fix: str = "sets it aside and rebuilds it") -> None:
        """Note a damaged file found by a read (left in place: `repair` is the writer)."""
        note = f"{path} is damaged ({why}); `{self.repair_command}` (or the next `usagg run`) {fix}"
        if note not in self.repairs:
            self.repairs.append(note)

    def set_aside(self, path: Path, why: str) -> Path:
        """Move a damaged file to <name>.damaged (numbered when taken) and note the repair; returns the new path."""
        aside = set_aside(path)
        self.repairs.append(f"{path} was damaged ({why}); set aside as {aside.name}")
        return aside

    # ----- repair

    def repair(self, jobs: Sequence[Job] | None = None) -> list[str]:
        """Set aside every damaged file of every job folder and rebuild what it held; returns the repairs made.

        The store's one repairing writer (`usagg repair`, and the start of `usagg run`), per job
        under its lock (a job a live process runs is left to that process): a lock file that
        is not a lock record is broken; a damaged job.json is set aside and rebuilt from the
        plan (done when metrics.json is intact, else pending); a damaged metrics.json or
        item_scores.json is set aside and its done job goes back to pending (the next run
        evaluates it anew); a damaged history.csv is set aside and written again from the
        history metrics.json keeps; a results.csv that is no results table is set aside and rebuilt from the done
        jobs. `jobs`: the plan to rebuild records from (default: plan.json). The repairs are also added to
        `repairs`, and what could not be mended to `unrepaired` too.
        """
        self.check_no_links()  # before the first write: no planted link is written, appended or pruned through
        if jobs is None:
            try:
                jobs = self.jobs() if self.exists() else []
            except UsaggError as err:  # a damaged plan.json: records cannot be rebuilt, the rest can
                self.repairs.append(str(err))
                self.unrepaired.append(str(err))
                jobs = []
        plans = {j.id: j for j in jobs}
        made: list[str] = []
        for job_id in self.job_folders():
            problems = self._problems(job_id)
            if not problems:
                continue
            before = len(self.repairs)
            try:
                with self.lock(job_id):  # taking it breaks a damaged lock file
                    lock = self.paths(job_id).lock
                    if lock in problems:
                        self.repairs.append(f"{lock} was damaged ({problems[lock]}); broken")
                    self._repair_job(job_id, plans.get(job_id))
            except JobLocked:
                continue  # its live runner is the job's writer; a later repair looks again
            made += [note for note in self.repairs[before:] if note not in self.unrepaired]
        return made + self._repair_results()

    def _repair_results(self) -> list[str]:
        """results.csv set aside and rebuilt from the done jobs when it is not a results table at all (no CSV text,
        or a header without the columns, usagg/results_schema.py) or says other than they do (a cut row, a job
        missing, rows of a job that is no longer done): it is derived from the jobs, so nothing is lost, and the old
        one stays beside it (`*.damaged`). A table that is only behind (a job done, a record or the plan written
        since it was, as every run leaves it until its end, and a stage of AG starts before that) is no damage: it
        is rebuilt without a word. Nothing is written while a damaged plan.json names no jobs."""
        why = results_damage(self.results_csv)
        if why is None and self.results_csv.is_file():
            try:
                fresh = self.results_text()
            except UsaggError:  # a damaged plan.json: `repair` has said so; the next `usagg run` rebuilds both
                return []
            if fresh == read_regular(self.results_csv).decode("utf-8", errors="replace"):
                return []
            if self._results_behind():
                self.rebuild_results()  # under its lock, dated by what it read
                return []
            why = "it no longer says what the done jobs' metrics.json do"
        if why is None:
            return []
        self.set_aside(self.results_csv, why)
        note = self.repairs[-1]
        try:
            self.rebuild_results()
        except UsaggError:  # a damaged plan.json: the next `usagg run` writes the plan and the table
            self.repairs[-1] = note + "; `usagg run` writes it again"
        else:
            self.repairs[-1] = note + " and rebuilt from the done jobs"
        return [self.repairs[-1]]

    def _results_behind(self) -> bool:
        """Whether results.csv predates what it is derived from (`_newest_source_ns`): stale, where a table newer
        than all of it that says otherwise was changed by other hands. The one freshness rule of the table: `repair`
        rewrites a table only behind, and `current_results` (the analysis, `usagg.api.load_results`) reads the
        jobs instead."""
        newest = self._newest_source_ns()
        return newest is not None and newest > self.results_csv.stat().st_mtime_ns

    def _newest_source_ns(self) -> int | None:
        """The newest modification time (ns) of what results.csv is derived from: plan.json, the jobs folder (a job
        folder made or deleted), each job folder (a file in it made or deleted: a metrics.json removed), its
        job.json (the state) and its metrics.json; None when there is none of them."""
        sources = [self.plan_json, self.jobs_dir]
        for job_id in self.job_folders():
            paths = self.paths(job_id)
            sources += [paths.folder, paths.record, paths.metrics]
        times = []
        for path in sources:
            try:
                times.append(path.stat().st_mtime_ns)
            except OSError:  # not there (a job not finished), or gone since it was listed
                continue
        return max(times, default=None)

    def _problems(self, job_id: str) -> dict[Path, str]:
        """The damaged files of a job folder, each with why (reads only)."""
        paths = self.paths(job_id)
        found: dict[Path, str] = {}
        holder = read_holder(paths.lock)
        if holder and DAMAGED_HOLDER in holder:
            found[paths.lock] = str(holder[DAMAGED_HOLDER])
        record, why = self._load_record(job_id) if paths.record.is_file() else (None, None)
        if why:
            found[paths.record] = why
        metrics, why = self._checked_metrics(job_id)
        if why:
            found[paths.metrics] = why
        elif metrics is None and record is not None and record["state"] == "done":
            found[paths.metrics] = "missing, although the job is done"
        if why := _item_scores_damage(paths.item_scores):
            found[paths.item_scores] = why
        if why := history_damage(paths.history):
            found[paths.history] = why
        return found

    def _repair_job(self, job_id: str, job: Job | None) -> None:
        """Repair one job folder; the caller holds its lock."""
        paths = self.paths(job_id)
        problems = self._problems(job_id)  # again, under the lock
        for path in (paths.metrics, paths.item_scores):
            if path in problems and path.is_file():
                self.set_aside(path, problems[path])
            elif path in problems:  # nothing to set aside (a done job's metrics.json missing): said, then mended
                self.repairs.append(f"{path} is {problems[path]}")
        rerun = paths.metrics in problems or paths.item_scores in problems
        if paths.record in problems:
            if job is None:
                left = (
                    f"{paths.record} is damaged ({problems[paths.record]}) and job {job_id} is not in the plan to "
                    "rebuild it: left as it is (`usagg run` with the study that planned it rebuilds it)"
                )
                self.repairs.append(left)
                self.unrepaired.append(left)
                return
            self.set_aside(paths.record, problems[paths.record])
            state = "pending" if rerun else self._rebuilt_state(job_id)
            write_json_atomic(paths.record, new_record(job.model_dump(mode="json"), state))
            self.repairs[-1] += f" and rebuilt from the plan as {state}"
        elif rerun and self.job_state(job_id) == "done":
            self.set_state(job_id, "pending", expect=("done",), error=None)
            self.repairs[-1] += "; the job is pending again (the next `usagg run` evaluates it anew)"
        if paths.history in problems:
            metrics, _ = self._checked_metrics(job_id)
            history = metrics.get("history") if metrics is not None else None
            if problems[paths.history] == OLDER_LAYOUT and isinstance(history, list):  # not damage: said as it is
                write_history(paths.history, history, self.job(job_id).task_ids)
                self.repairs.append(f"{paths.history} was {OLDER_LAYOUT}; rewritten from metrics.json")
                return
            self.set_aside(paths.history, problems[paths.history])
            if isinstance(history, list):
                write_history(paths.history, history, self.job(job_id).task_ids)
                self.repairs[-1] += " and written again from metrics.json"
            else:
                self.repairs[-1] += "; the job's next epoch writes it again"

    def job_state(self, job_id: str) -> str:
        """pending | running | done | failed, as job.json says; pending for a job without a folder."""
        path = self.paths(job_id).record
        if not path.is_file():
            return "pending"
        return str(self.job_record(job_id)["state"])

    def display_state(self, job_id: str) -> str:
        """The state to show: `job_state`, but "interrupted" for a running job whose lock holder is not alive."""
        state = self.job_state(job_id)
        if state == "running" and not self.lock_alive(job_id):
            return "interrupted"
        return state

    def states(self) -> dict[str, str]:
        """State of every job of the current plan."""
        return {jid: self.job_state(jid) for jid in self.job_ids()}

    def set_state(
        self, job_id: str, state: str, *, expect: tuple[str, ...] | None = None, **extra: Any
    ) -> dict[str, Any]:
        """Rewrite job.json with a new state, keeping the timings consistent; returns the record.

        running: started now, attempts + 1, host and pid recorded, the epochs history.csv
        holds kept as start_epoch (`usagg status` times this attempt's), finish and
        error cleared; done / failed: finished now and duration since started.
        `expect`: compare-and-set, the record is rewritten only from one of these states
        (StateConflict otherwise, nothing written), so a writer that lost a race never
        turns a done job back. `extra` keys (error, message, ...) are stored as given.
        The write happens under the job's lock: the caller's (a runner) or one taken for it
        (JobLocked when a live process holds it). A damaged record is never written over:
        UsaggError naming it and `usagg repair`.
        """
        if state not in STATES:
            raise ValueError(f"unknown job state {state!r}; one of {', '.join(STATES)}")
        if self.holds_lock(job_id):
            return self._set_state_locked(job_id, state, expect, extra)
        with self.lock(job_id):
            return self._set_state_locked(job_id, state, expect, extra)

    def _set_state_locked(
        self, job_id: str, state: str, expect: tuple[str, ...] | None, extra: dict[str, Any]
    ) -> dict[str, Any]:
        record, why = self._load_record(job_id)
        if record is None:
            raise UsaggError(
                f"{self.paths(job_id).record} is damaged ({why}), so job {job_id} is not set to {state}: "
                f"`{self.repair_command}` sets it aside and rebuilds it from the plan"
            )
        if expect is not None and record.get("state") not in expect:
            raise StateConflict(
                f"job {job_id} is {record.get('state')} in {self.paths(job_id).record}, not "
                f"{' or '.join(expect)}: another process changed it, so it is not set to {state}"
            )
        now = _now()
        if state == "running":
            record["attempts"] = int(record.get("attempts") or 0) + 1
            record["started"] = _iso(now)
            record["finished"] = None
            record["duration_s"] = None
            record["host"] = socket.gethostname()
            record["pid"] = os.getpid()
            record["error"] = None
            record["start_epoch"] = self.epochs_done(job_id)[0]  # this attempt's epochs are the ones after
            record["device"] = None  # this attempt's, once it is known (`note_device`)
            record["restarted"] = None  # this attempt's, where its last.pt is not resumed (`note_restart`)
        elif state in ("done", "failed"):
            record["finished"] = _iso(now)
            started = record.get("started")
            record["duration_s"] = (
                round((now - datetime.fromisoformat(started)).total_seconds(), 3) if started else None
            )
            if state == "done":
                record["error"] = None
        record["state"] = state
        record.update(extra)
        write_json_atomic(self.paths(job_id).record, record)
        return record

    def note_device(self, job_id: str, device: str) -> None:
        """Record where a running job computes ('cuda:1 (NVIDIA H100 80GB HBM3)'), so `usagg status` can say which
        card each job is on; the job's runner calls it under the job's lock once the job has chosen its device.
        A record that is no longer running (or is damaged) is left as it is."""
        self._note(job_id, "device", device)

    def note_restart(self, job_id: str, why: str) -> None:
        """Record why a running job's last.pt was not resumed and where it is kept (usagg/engine/checkpointing.py:
        damaged, another layout, other frozen weights), so `usagg status` says the job started over from epoch 1,
        which its log alone said; as `note_device`, by the job's runner."""
        self._note(job_id, "restarted", why)

    def _note(self, job_id: str, key: str, value: str) -> None:
        record, _ = self._load_record(job_id)
        if record is not None and record.get("state") == "running":
            record[key] = value
            write_json_atomic(self.paths(job_id).record, record)

    # ----- job files

    def metrics(self, job_id: str) -> dict[str, Any] | None:
        """metrics.json of a job (without its checksum), None when it has none.

        A pure read. A damaged one (not JSON, not an object, a value changed after it was
        written, so that it no longer matches its checksum, or content JobMetrics refuses) is
        noted in `repairs` and read as None; `repair` sets it aside and sends a done job back to pending.
        """
        data, why = self._checked_metrics(job_id)
        if why is not None:
            self._damaged(self.paths(job_id).metrics, why)
        return data

    def _checked_metrics(self, job_id: str) -> tuple[dict[str, Any] | None, str | None]:
        """(content, None) for an intact metrics.json that JobMetrics (usagg/jobmetrics.py) accepts, (None, why)
        for a damaged or malformed one, (None, None) for none."""
        try:
            data, why = read_json_checked(self.paths(job_id).metrics)
        except FileNotFoundError:
            return None, None
        why = why if data is None else metrics_problem(data)
        return (data, None) if why is None else (None, why)

    def job_metrics(self, job_id: str) -> JobMetrics | None:
        """metrics.json of a job as a typed JobMetrics, None when it has none; DataError naming the file and what
        is wrong with it when it is damaged or malformed (the analysis reads results, so it must not skip one)."""
        data, why = self._checked_metrics(job_id)
        if why is not None:
            path = self.paths(job_id).metrics
            raise DataError(
                f"{path} is damaged ({why}); `{self.repair_command}` sets it aside and sends the job back to "
                "pending, then `usagg run` evaluates it again"
            )
        return None if data is None else JobMetrics.model_validate(data)

    def write_metrics(self, job_id: str, metrics: dict[str, Any]) -> Path:
        """Write metrics.json (the engine's result for the job) with the checksum `metrics` verifies."""
        return write_json_checked(self.paths(job_id).metrics, metrics)

    def reuse(self, job_id: str, source_id: str) -> bool:
        """Fill a job from a done job of the same hash instead of training it again: the hash holds exactly the
        settings that change a result (usagg/spec/jobhash.py), so a CG job of a one-task group and TSM on that
        task, or CGD's and TS's, are one training. Under the job's lock (JobLocked while a live process holds it):
        its own files of an earlier attempt set aside (checkpoints, predictions, error.txt), the source's copied
        (checkpoints and predictions hard-linked where the filesystem allows: they are never rewritten in place),
        its metrics.json naming this job and `reused_from`, and the job done with `reused_from` in job.json.
        False when the job is done already (another run filled it)."""
        import shutil

        metrics = self.metrics(source_id)
        if metrics is None or self.job_state(source_id) != "done":
            raise UsaggError(f"job {source_id} is not done with its metrics, so {job_id} cannot reuse its result")
        src, dst = self.paths(source_id), self.paths(job_id)
        with self.lock(job_id):
            if self.job_state(job_id) == "done":
                return False
            for folder in (dst.predictions, dst.checkpoints):
                if folder.is_symlink():  # a planted link: removed, never written through
                    folder.unlink()
                elif folder.is_dir():
                    shutil.rmtree(folder)
            dst.error.unlink(missing_ok=True)
            for name in ("history.csv", "item_scores.json", "splits.json", "affinity.json"):
                if (src.folder / name).is_file():
                    shutil.copyfile(src.folder / name, dst.folder / name)
            for folder in (src.predictions, src.checkpoints):
                if folder.is_dir():
                    shutil.copytree(folder, dst.folder / folder.name, copy_function=_link_or_copy, dirs_exist_ok=True)
            self.write_metrics(job_id, {**metrics, "job_id": job_id, "reused_from": source_id})
            self.set_state(job_id, "done", expect=("pending", "failed", "running"), reused_from=source_id)
        return True

    def error_text(self, job_id: str) -> str | None:
        """error.txt (the traceback of the last failed attempt), None when there is none."""
        path = self.paths(job_id).error
        try:
            return read_regular(path).decode("utf-8", errors="replace")
        except FileNotFoundError:
            return None
        except OSError as err:  # a link or a FIFO planted at its name: never read through (usagg/atomic.py)
            return f"{path} is not a file usagg wrote ({err.strerror})"

    def write_error(self, job_id: str, text: str) -> Path:
        """Write error.txt for a failed attempt (the job folder is created if needed)."""
        return write_text_atomic(self.paths(job_id).error, text)

    def clear_error(self, job_id: str) -> None:
        """Remove the previous attempt's error.txt (a new attempt starts)."""
        self.paths(job_id).error.unlink(missing_ok=True)

    def has_checkpoint(self, job_id: str) -> bool:
        """Whether a killed attempt left a checkpoint to resume from."""
        return self.paths(job_id).last_checkpoint.is_file()

    def unresumable_layout(self, job_id: str) -> int | None:
        """The layout of the job's last.pt where this usagg cannot resume it (an older usagg's, `CHECKPOINT_FORMAT`),
        else None (none there, this layout, or unreadable here). A pure read: the job's run sets it aside."""
        path = self.paths(job_id).last_checkpoint
        layout = checkpoint_layout(path) if path.is_file() else None
        return layout if layout is not None and layout != CHECKPOINT_FORMAT else None

    def damaged_checkpoint(self, job_id: str) -> bool:
        """Whether the job's last.pt is there but its layout cannot be read (not a checkpoint, cut short): the job's
        run sets it aside as last.pt.damaged and starts over from epoch 1. A pure read, torch-free."""
        path = self.paths(job_id).last_checkpoint
        return path.is_file() and checkpoint_layout(path) is None

    def epochs_done(self, job_id: str) -> tuple[int, float | None]:
        """(the epochs history.csv holds, when it was written: the end of the last, in seconds since the epoch);
        (0, None) without a readable one. A pure read for `usagg status` (a damaged file is `repair`'s to name)."""
        path = self.paths(job_id).history
        try:
            written = path.stat().st_mtime
            rows = csv.DictReader(io.StringIO(read_regular(path).decode("utf-8")))
            return max((int(float(r["epoch"])) for r in rows), default=0), written
        except (OSError, ValueError, KeyError, TypeError, OverflowError, csv.Error):  # int(inf): OverflowError
            return 0, None

    # ----- locks

    def job_lock(self, job_id: str) -> JobLock:
        """The job's lock (usagg/joblock.py), with this store's heartbeat and staleness."""
        return JobLock(self.paths(job_id).lock, job_id, self.heartbeat_s, self.stale_after_s)

    def lock_alive(self, job_id: str) -> bool:
        """Whether a live process holds the job's lock (the answer `status`, `plan` and lock breaking share)."""
        lock = self.job_lock(job_id)
        holder = lock.holder()
        if holder and DAMAGED_HOLDER in holder:
            self._damaged(lock.path, str(holder[DAMAGED_HOLDER]), "breaks it (no process holds it)")
        return holder is not None and lock.holder_alive(holder)

    @contextlib.contextmanager
    def lock(self, job_id: str) -> Iterator[dict[str, Any]]:
        """Hold the job's lock for the `with` block; raise JobLocked if a live process holds it (usagg/joblock.py).

        Taking it removes the half-written temporaries of dead writers in the job's folder. Yields the holder
        info written into the lock.
        """
        with self.job_lock(job_id).held() as holder:
            self._remove_temporaries(job_id)
            yield holder

    def holds_lock(self, job_id: str) -> bool:
        """Whether this thread holds the job's lock right now (taken by `lock` and not broken since)."""
        return self.job_lock(job_id).held_here()

    def _remove_temporaries(self, job_id: str) -> None:
        """Delete half-written temporary files (usagg/atomic.py names them .<name>.*.tmp) of dead writers.

        Called with the job's lock just taken: only the lock holder writes in a job folder, so
        any temporary file there belongs to a writer that was killed.
        """
        for tmp in self.job_dir(job_id).rglob(".*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()

    def break_slurm_lock(self, job_id: str, slurm_job: str) -> dict[str, Any] | None:
        """Break the job's lock if Slurm job `slurm_job`, which sacct says has ended, holds it (`JobLock.break_slurm`);
        the holder broken, or None."""
        return self.job_lock(job_id).break_slurm(slurm_job)

    def release_own_lock(self, job_id: str) -> bool:
        """Drop the job's lock if this process holds it (before a Slurm requeue: the new run may be elsewhere)."""
        return self.job_lock(job_id).release_own()

    @contextlib.contextmanager
    def plan_lock(self) -> Iterator[None]:
        """Hold the store's plan lock for the block (`plan_lock_file`, a file lock: a second taker waits).

        `usagg run` decides whether its plan may be written (another spec file bound, another run live: usagg/
        run/studyrun.py `StudyRun.init_store`) and writes it under it, so two runs starting together cannot both pass
        that check before either has written.
        """
        from filelock import FileLock

        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.plan_lock_file)):
            yield

    @contextlib.contextmanager
    def run(self, about: dict[str, Any]) -> Iterator[None]:
        """Record, for the block, that this process runs the store: a lock of its own under `runs_dir` (usagg/
        joblock.py's protocol: heartbeat, dead once its process is), its holder info carrying `about` (spec file,
        plan size). Taken under `plan_lock`; the records of runs that died are removed first."""
        for holder, lock in self._run_locks():
            if holder is not None and not lock.holder_alive(holder):
                with contextlib.suppress(OSError):
                    lock.path.unlink()
        lock = JobLock(
            self.runs_dir / f"{uuid.uuid4().hex}.lock", "usagg run", self.heartbeat_s, self.stale_after_s, about
        )
        with lock.held():
            yield

    def live_runs(self) -> list[dict[str, Any]]:
        """The holder info of every other process's `usagg run` of this store that is alive (`run`); a pure read."""
        me = (socket.gethostname(), os.getpid())
        return [
            holder
            for holder, lock in self._run_locks()
            if holder and (holder.get("host"), holder.get("pid")) != me and lock.holder_alive(holder)
        ]

    def _run_locks(self) -> list[tuple[dict[str, Any] | None, JobLock]]:
        try:
            paths = sorted(p for p in self.runs_dir.iterdir() if p.suffix == ".lock")
        except OSError:  # none yet
            return []
        locks = [JobLock(p, "usagg run", self.heartbeat_s, self.stale_after_s) for p in paths]
        return [(lock.holder(), lock) for lock in locks]

    # ----- results

    def rebuild_results(self) -> Path:
        """Write results.csv from the metrics.json of every done job of the current plan (jobs of a paradigm that
        is not compared, such as AG's affinity probe, are left out).

        Reading the jobs and writing the table happen under `results_lock_file` (a file lock: a second writer
        waits), so the last writer read after the one before it wrote: two runs finishing together can no longer
        leave the table of the one that read first, dated after the job it lacks. A job that finishes while the
        table is read (its files newer than the newest read, `_newest_source_ns`) leaves the table dated before it,
        so it reads as behind (`_results_behind`) and the analysis rebuilds from the jobs until that job's run
        writes the table again.
        """
        from filelock import FileLock

        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.results_lock_file)):
            read_from = self._newest_source_ns()
            path = write_text_atomic(self.results_csv, self.results_text())
            newest = self._newest_source_ns()
            if read_from is not None and newest is not None and newest > read_from:
                os.utime(path, ns=(read_from - 1, read_from - 1))  # older than what changed while it was read
        return path

    def results_text(self) -> str:
        """What results.csv holds when it is rebuilt from the done jobs (`rebuild_results`; `repair` compares)."""
        order = {p: i for i, p in enumerate(paradigm_names())}
        rows: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        swept: dict[str, None] = {}  # the swept keys (usagg/sweep.py), one column each, in the sweep's order
        rank: dict[str, int] = {}  # sweep point -> its place in the plan (planned point by point): rows in that order
        for job in self.jobs():
            if self.job_state(job.id) != "done" or job.paradigm not in order:
                continue
            metrics, why = self._checked_metrics(job.id)
            if metrics is None:
                path = self.paths(job.id).metrics
                raise UsaggError(
                    f"job {job.id} is done but {path} is damaged ({why}): `{self.repair_command}` sets it "
                    "aside and sends the job back to pending, then `usagg run` evaluates it again"
                    if why
                    else f"job {job.id} is done but has no {path}: `{self.repair_command}` sends it back to pending"
                )
            groups = {t.id: t.group for t in job.tasks}
            for point in job.sweep or [{}]:  # a job two sweep points share: its rows in both
                swept.update(dict.fromkeys(point))
                p = rank.setdefault(json.dumps(point, sort_keys=True), len(rank))
                for task_id, entry, name, value in _metric_entries(metrics):
                    hib = metric_direction(name)
                    row = {
                        "study": job.study,
                        "job_id": job.id,
                        "paradigm": job.paradigm,
                        "group": groups.get(task_id) or "",
                        "seed": job.seed,
                        "fraction": job.fraction,
                        "task": task_id,
                        "type": entry.get("type", ""),
                        "metric": name,
                        "value": "" if value is None else value,
                        "higher_is_better": "" if hib is None else str(hib),
                        "n_train": entry.get("n_train", ""),
                        "steps": entry.get("steps", ""),
                        **{k: value_text(v) for k, v in point.items()},
                    }
                    key = (p, order.get(job.paradigm, len(order)), job.paradigm, job.id, task_id, name)
                    rows.append((key, row))
        rows.sort(key=lambda kr: kr[0])
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=[*RESULT_COLUMNS, *swept], lineterminator="\n")
        writer.writeheader()
        writer.writerows(r for _, r in rows)
        return buf.getvalue()

    def current_results(self, reader: str = "usagg compare") -> str | None:
        """None when results.csv is current; else the text it would hold rebuilt from the jobs (it is missing, or
        behind them: older than plan.json, a job.json or metrics.json, or a job folder made or deleted since,
        `_results_behind`). A pure read: `compare` or `load_results` on a store received from elsewhere (read-only,
        perhaps) writes nothing into it. UsaggError when there is neither a results.csv nor a finished job to build
        one from (`check_finished`; `reader` is the command the message sends the user back to). A header-only table
        (every job failed) reads as the empty table: `load_results` returns it with `RunResult.failed` beside it; the
        analysis commands refuse it by asking `check_finished` first."""
        if not self.results_csv.is_file():
            self.check_finished(reader)
            return self.results_text()
        return self.results_text() if self._results_behind() else None

    def check_finished(self, reader: str = "usagg compare") -> None:
        """UsaggError where no job has finished (no jobs/*/metrics.json) and results.csv is missing or holds a header
        alone (a run whose every job failed writes that): what the planned jobs are doing and what to run instead
        (`usagg status`, `--retry-failed`), then `reader` once a job is done. The analysis commands ask before reading;
        "the table has a header but no rows" said none of it."""
        if any(self.paths(jid).metrics.is_file() for jid in self.job_folders()) or self._table_has_rows():
            return
        what = (
            "no finished job (jobs/*/metrics.json), and its results.csv holds a header but no rows"
            if self.results_csv.is_file()
            else "no results.csv and no finished job (jobs/*/metrics.json) to build it from"
        )
        raise UsaggError(f"{self.root} has {what}{self._none_finished_text(reader)}")

    def _table_has_rows(self) -> bool:
        """Whether results.csv has a line under its header (a received table without its jobs still reads)."""
        try:
            with self.results_csv.open(encoding="utf-8", errors="replace") as f:
                f.readline()
                return bool(f.readline().strip())
        except OSError:
            return False

    def _none_finished_text(self, reader: str) -> str:
        """What the planned jobs are doing when none has finished (a run's first job still training, `compare`
        right after `usagg run`, a run whose every job failed): their states counted, where to follow them, how to
        run the failed ones again; "" without a readable plan."""
        try:
            states = Counter(self.display_state(jid) for jid in self.job_ids())
        except UsaggError:  # a damaged plan.json or record: the error as it was
            return ""
        if not states:
            return ""
        order = ("running", "interrupted", "pending", "failed")
        counts = ", ".join(f"{n} {state}" for state in order if (n := states.get(state)))
        status = command("usagg", "status", self.root)
        if not states.get("failed"):
            follow = f"`{status}` shows their progress"
        else:
            specs = self.spec_files()
            spec: str | Path = Path(specs[0]) if specs else "STUDY.yaml"
            retry = command("usagg", "run", spec, "--retry-failed")
            follow = (
                f"`{status}` shows each failed job's error, and `{retry}` (`run_study(..., retry_failed=True)`) runs "
                f"{'it' if states['failed'] == 1 else 'them'} again"
            )
        return (
            f": of its {counted(sum(states.values()), 'planned job')} {counts}, none finished yet. {follow}; "
            f"`{reader}` once a job is done"
        )

    def mark_results_fresh(self) -> None:
        """Date results.csv after everything it is derived from (`_newest_source_ns`), so `current_results` keeps
        it (a table written by other means)."""
        newest = self._newest_source_ns()
        if newest is not None:
            later = newest + 1_000_000_000
            os.utime(self.results_csv, ns=(later, later))

    # ----- finding stores

    @classmethod
    def latest(cls, output_root: Path | str) -> RunStore:
        """The most recently modified study under `output_root` (a folder with plan.json)."""
        output_root = Path(output_root)
        candidates = []
        if output_root.is_dir():
            for d in output_root.iterdir():
                store = cls(d)
                if d.is_dir() and store.exists():
                    candidates.append((max(d.stat().st_mtime, store.plan_json.stat().st_mtime), d.name, d))
        if not candidates:
            raise UsaggError(f"no run store under {output_root}/ (no <study>/plan.json): run `usagg run STUDY` first")
        return cls(max(candidates)[2])

    # ----- the spec files a study name is bound to (usagg/run/studyrun.py `StudyRun`)

    @property
    def specs_json(self) -> Path:
        return self.root / "specs.json"

    def spec_files(self) -> list[str]:
        """The spec files run into this store (absolute paths, the first first); [] when none was recorded."""
        try:
            data = read_json(self.specs_json)
        except (OSError, ValueError):
            return []
        return [str(p) for p in data] if isinstance(data, list) else []

    def add_spec_file(self, path: Path | str, replace: bool = False) -> None:
        """Record a spec file run into this store (once), so another file of the same study name is noticed;
        `replace`: in place of those recorded (all gone: this file took the study over)."""
        files = [] if replace else self.spec_files()
        if str(path) not in files:
            write_json_atomic(self.specs_json, [*files, str(path)])

    # ----- a job queued on Slurm (usagg/execute/slurm.py; `usagg run` decides from it, usagg/run/studyrun.py)

    def mark_queued_on_slurm(self, job_id: str, slurm_job_id: str) -> None:
        """Record that the job was submitted as Slurm job `slurm_job_id` (`<array id>_<index>`), so a later `usagg
        run` does not submit it again while Slurm still lists it, and `usagg status` can say where it waits."""
        write_json_atomic(self.paths(job_id).slurm, {"slurm_job_id": slurm_job_id, "submitted": _iso(_now())})

    def queued_on_slurm(self, job_id: str) -> str | None:
        """The Slurm job (`1001_2`) the job was submitted as and whose outcome no run has collected yet, else None.
        A pure read; whether Slurm still lists it is sacct's to say (usagg/execute/slurm.py `still_queued`). A record
        that is no such id (damaged, or planted by a received store) reads as none."""
        try:
            data = read_json(self.paths(job_id).slurm, limit=4096)
        except (OSError, ValueError):
            return None
        found = data.get("slurm_job_id") if isinstance(data, dict) else None
        return found if isinstance(found, str) and _SLURM_JOB_ID.fullmatch(found) else None

    def slurm_submitted(self, job_id: str) -> datetime | None:
        """When the job's recorded Slurm element was submitted (`slurm.json` `submitted`), else None: a fresh array
        neither sacct nor squeue lists yet is still Slurm's (usagg/execute/slurm.py `SUBMIT_GRACE_S`)."""
        try:
            data = read_json(self.paths(job_id).slurm, limit=4096)
            when = datetime.fromisoformat(data["submitted"])
        except (OSError, ValueError, TypeError, KeyError):
            return None
        return when if when.tzinfo is not None else None

    def forget_slurm_job(self, job_id: str) -> None:
        """Drop the job's Slurm record once its outcome is collected."""
        self.paths(job_id).slurm.unlink(missing_ok=True)


def results_damage(path: Path) -> str | None:
    """Why results.csv is no results table (not UTF-8 CSV text, or a header lacking a required column); None when
    it reads as one, or there is none."""
    required = [c for c in RESULT_COLUMNS if c not in OPTIONAL_COLUMNS]
    try:
        text = read_regular(path).decode("utf-8-sig")  # a link planted at its name is damage, not followed
        header = [h.strip() for h in next(csv.reader(io.StringIO(text, newline="")), [])]
    except FileNotFoundError:
        return None
    except OSError as err:  # EINVAL: a link, FIFO or folder at its name (usagg/atomic.py `read_regular`)
        return str(err.strerror) if err.errno == errno.EINVAL else f"not a CSV text file ({type(err).__name__})"
    except (UnicodeDecodeError, csv.Error) as err:
        return f"not a CSV text file ({type(err).__name__})"
    missing = [c for c in required if c not in header]
    return f"its header lacks {', '.join(missing)}" if missing else None


def _link_or_copy(src: str, dst: str) -> None:
    """A hard link of a file no writer rewrites in place (atomic writers replace it), else a copy."""
    import shutil

    with contextlib.suppress(FileNotFoundError):
        os.unlink(dst)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
