"""`run_one(store_root, job_id, *, device, threads)`: one job inside the run store, the function every executor calls.

It holds the job's lock (another live process running it means: leave it
alone), records the state transitions, logs to the job's log file, and turns
any failure into `failed` plus the full traceback as the job's error text, so
one bad job never stops a study. Running out of GPU memory is recorded as
`GpuOutOfMemory`, whose message names `execution.jobs_per_gpu` (jobs packed on
one GPU share its memory). A full disk fails the job with "no space left on device at
<path>" (usagg/atomic.py) and `usagg run --retry-failed` resumes it once there is room (`disk_full_error` says
so); a job.json that cannot take the final state leaves the job to the run's closing line
(usagg/run/result.py `RunResult.unrecorded`).
A best.pt that a fresh start would read (no last.pt beside it) is checked first and set
aside when damaged, so one bad file never fails every retry. Executors get it as
`functools.partial(run_one, device=..., threads=...)` (see usagg/run/jobfunction.py) and add its progress sink
where someone listens (`with_progress`, usagg/engine/progress.py).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from usagg.atomic import NoSpaceLeft, open_own_log, set_aside
from usagg.errors import UsaggError
from usagg.registry import import_code_plugins
from usagg.safepath import UnsafePath
from usagg.store import RunStore
from usagg.store.layout import JobPaths
from usagg.store.records import ERROR_CHARS

if TYPE_CHECKING:
    from usagg.engine.accel import AccelMode
    from usagg.engine.progress import Progress, ProgressFn
    from usagg.spec.models import TrackingSpec

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class GpuOutOfMemory(RuntimeError):
    """A job ran out of GPU memory; the message says what to lower, execution.jobs_per_gpu first."""


def gpu_memory_error(err: BaseException) -> GpuOutOfMemory | None:
    """For a GPU out of memory, the error to record instead (advice, then torch's first line); else None.

    Jobs packed on one GPU (usagg/execute/pool.py) share its memory, so the
    first thing to lower is how many run at once. torch is looked up, never
    imported: an error raised before the engine loaded it is no GPU error.
    Out of memory is torch.OutOfMemoryError (the caching allocator), or a
    torch.AcceleratorError saying "out of memory" (the CUDA runtime's own
    allocations: a context, a library's workspace, pinned host memory), `err`
    itself or what it wraps (the compiler re-raises what failed in it).
    """
    if "torch" not in sys.modules:
        return None
    from usagg.engine.device import is_out_of_memory  # torch is loaded: no import cost

    found = next((e for e in _chain(err) if is_out_of_memory(e)), None)
    if found is None:
        return None
    detail = (str(found).strip().splitlines() or ["no detail"])[0]
    return GpuOutOfMemory(
        "out of GPU memory: the jobs on one GPU share its memory; lower execution.jobs_per_gpu "
        f"(1: one job per GPU), then training.batch_size or model.image_size ({detail})"
    )


#: What a job failed on a full disk adds to its error: how it runs again (a plain `usagg run` skips failed jobs).
RETRY_FAILED = "`usagg run --retry-failed`, or `retry_failed=True` in `usagg.api.run_study`, runs this failed job again"


def disk_full_error(err: BaseException) -> NoSpaceLeft | None:
    """For a full disk (a NoSpaceLeft, or one that `err` wraps), the error to record: its message, whose "then run
    the command again" a failed job's would not obey (a plain `usagg run` skips it: the ops audit ran it again as
    told and nothing trained), ending instead in how the failed job runs again (`RETRY_FAILED`); else None."""
    found = next((e for e in _chain(err) if isinstance(e, NoSpaceLeft)), None)
    if found is None:
        return None
    return NoSpaceLeft(found.said, f"; then {RETRY_FAILED}")


def _chain(err: BaseException) -> list[BaseException]:
    """`err` and what it wraps (causes, then contexts), each once."""
    out: list[BaseException] = []
    at: BaseException | None = err
    while at is not None and at not in out:
        out.append(at)
        at = at.__cause__ or at.__context__
    return out


class _Forward(logging.Handler):
    """What propagation would do with a `usagg` record the logger's own level let through before the job: hand it
    to the ancestors' handlers (the notebook's, pytest's), from `level` up; nothing when they have none."""

    def __init__(self, logger: logging.Logger, level: int) -> None:
        super().__init__(level)
        self.logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        at = self.logger.parent
        while at is not None:
            for handler in at.handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)
            at = at.parent if at.propagate else None


class _JobLog:
    """The job's log file on the `usagg` logger for the duration of a job (the engine, model, data and trackers all
    log under it), from INFO up. Only that logger changes: its level goes down to INFO and it stops propagating, a
    `_Forward` handing its ancestors' handlers what they got before (WARNING up, under the default levels), so a
    notebook's `logging.basicConfig()` shows no engine INFO lines and other code's records stay out of log.txt."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stream, self.aside = open_own_log(path)  # never through a link (usagg/atomic.py)
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(logging.Formatter(LOG_FORMAT))
        self.handler.setLevel(logging.INFO)
        self.logger = logging.getLogger("usagg")
        self.old = (self.logger.level, self.logger.propagate)
        self.forward = _Forward(self.logger, self.logger.getEffectiveLevel())

    def __enter__(self) -> logging.Logger:
        self.logger.addHandler(self.handler)
        if self.logger.propagate:
            self.logger.addHandler(self.forward)
            self.logger.propagate = False
        if self.logger.getEffectiveLevel() > logging.INFO:
            self.logger.setLevel(logging.INFO)
        log = logging.getLogger("usagg.engine.runner")
        if self.aside is not None:
            log.warning(
                "%s had other names (a hard link, perhaps to a file outside the run store): set aside untouched as "
                "%s, and this log starts anew",
                self.path,
                self.aside.name,
            )
        return log

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.removeHandler(self.forward)
        self.logger.setLevel(self.old[0])
        self.logger.propagate = self.old[1]
        self.handler.close()
        self.stream.close()


def run_one(
    store_root: str,
    job_id: str,
    *,
    device: str | None = None,
    threads: int | None = None,
    accel: AccelMode = "eager",
    tracking: TrackingSpec | None = None,
    progress: ProgressFn | None = None,
    plugins: tuple[str, ...] = (),
) -> str:
    """Run one job of the store to `done` or `failed` and return that state.

    `device` (cpu | cuda | cuda:N; None: a visible GPU, else the CPU) and
    `threads` (CPU threads; None: torch's choice) go to the engine as given, with
    `accel` (usagg/engine/accel.py); `tracking` feeds the job's trackers
    (usagg/tracking.py, a trainer callback) after every epoch and at its end; `progress` hears the
    epoch and step (usagg/engine/progress.py: the executor passes its sink, unbound here so the
    partial still pickles); `plugins`, modules imported before the job is read (`registry.code_plugins` of the
    process that made the job function: a worker knows no plug-in registered there in code). A
    done job is returned as is (its id carries the hash of every setting, so
    done means done). A job whose lock another live process holds raises
    `JobLocked` untouched (the executors report it as `locked`); every other
    problem is recorded and returned as `failed`, never raised.
    """
    store = RunStore(store_root)
    if store.job_state(job_id) == "done":
        return "done"
    with store.lock(job_id):  # raises JobLocked when a live process holds it
        if store.job_state(job_id) == "done":  # finished by another process between our check and the lock
            return "done"
        return _run_locked(store, job_id, device, threads, accel, tracking, progress, plugins)


def _run_locked(
    store: RunStore,
    job_id: str,
    device: str | None,
    threads: int | None,
    accel: AccelMode,
    tracking: TrackingSpec | None,
    progress: ProgressFn | None,
    plugins: tuple[str, ...],
) -> str:
    from usagg.tracking import JobTrackers, job_trackers

    paths = store.paths(job_id)
    try:
        store.check_no_links([job_id])  # a planted log.txt or checkpoints/ link would be written through
        paths.folder.mkdir(parents=True, exist_ok=True)
        job_log = _JobLog(paths.log)
    except (UnsafePath, OSError) as err:
        why = err if isinstance(err, UnsafePath) else f"{err.filename}: {err.strerror}; the job's log cannot be kept"
        with contextlib.suppress(UsaggError, NoSpaceLeft):  # job.json itself may be the planted link's target
            store.write_error(job_id, f"{why}\n")
            store.set_state(job_id, "failed", error=str(why)[:ERROR_CHARS])
        return "failed"
    store.clear_error(job_id)
    store.set_state(job_id, "running", expect=("pending", "failed", "running"))  # never a done job
    with job_log as log:
        trackers = JobTrackers([])
        try:
            from usagg.engine.job import run_job  # torch is imported here, not when the store is read

            import_code_plugins(plugins)  # before the job is read: its types and backbone may be theirs
            job = store.job(job_id)
            _set_aside_damaged_best(paths, log)
            trackers = job_trackers(tracking, job, store.root)
            heard = _noting_record(store, job_id, progress)
            metrics = run_job(job, paths.folder, device, threads, callbacks=[trackers], accel=accel, progress=heard)
            store.write_metrics(job_id, metrics)
            if not paths.best_checkpoint.is_file() and paths.last_checkpoint.is_file():
                _tested_weights(paths)  # selection: last: the tested weights as best.pt, last.pt goes once done
        except Exception as err:
            trackers.finish(None, "failed")
            text = traceback.format_exc()
            oom = gpu_memory_error(err)
            if oom is not None:
                text, err = f"{text}\n{oom}\n", oom
            full = disk_full_error(err)
            if full is not None:
                text, err = f"{text}\n{full}\n", full
            with contextlib.suppress(NoSpaceLeft):  # a full disk: the summary in job.json still says so
                store.write_error(job_id, text)
            summary = (f"{type(err).__name__}: {err}".strip().splitlines() or ["error"])[0][:ERROR_CHARS]
            log.error("job failed: %s", summary)
            store.set_state(job_id, "failed", expect=("running",), error=summary)
            return "failed"
        except BaseException:
            trackers.finish(None, "interrupted")
            # Ctrl-C or a cluster's SystemExit: not the job's fault. Back to pending (the next run
            # resumes from the last checkpoint), then let the interruption go on.
            log.warning("job interrupted; it resumes from its last checkpoint when run again")
            store.set_state(job_id, "pending", expect=("running",), error="interrupted")
            raise
        trackers.finish(metrics, "done")
        log.info("job done: %s", job_id)
    store.set_state(job_id, "done", expect=("running",))
    _drop_resume_state(store, job_id)
    return "done"


def _noting_record(store: RunStore, job_id: str, progress: ProgressFn | None) -> ProgressFn:
    """`progress`, after the job's start report has written its device into job.json (`RunStore.note_device`) and
    a restart report why its last.pt was not resumed (`RunStore.note_restart`): `usagg status` shows both, on Slurm
    too, where nobody hears the reports."""

    def heard(p: Progress) -> None:
        with contextlib.suppress(UsaggError, OSError):  # the record is the job's own; status is not training
            if p.phase == "start" and p.device:
                store.note_device(job_id, p.device)
            elif p.phase == "restart" and p.restart:
                store.note_restart(job_id, p.restart)
        if progress is not None:
            progress(p)

    return heard


def _drop_resume_state(store: RunStore, job_id: str) -> None:
    """A done job never resumes: its last.pt (optimiser and sampler state) goes once best.pt keeps the
    selected weights, so a study keeps one set of weights per job instead of two (issue 10's checkpoint bytes).
    Under `training.selection: last` the fit writes no best.pt: the last epoch's weights became it when the metrics
    were written (`_tested_weights`), a third of last.pt (the demo's store: 1.2 GB of last.pt files before, two
    thirds of them AdamW's moments)."""
    paths = store.paths(job_id)
    if paths.best_checkpoint.is_file():
        paths.last_checkpoint.unlink(missing_ok=True)


def _tested_weights(paths: JobPaths) -> None:
    """best.pt from a finished job's last.pt when the fit wrote none (`training.selection: last`): its epoch's
    trainable weights as the one selected epoch, in best.pt's layout (`Checkpointing._write_best`), before the
    trackers take the tested weights. A last.pt that does not load is left as it is (the job's record)."""
    from usagg.engine import checkpoint

    try:
        last = checkpoint.load(paths.last_checkpoint, mmap=True)
        best = {"format": last["format"], "fingerprint": last["fingerprint"], "weights": {last["epoch"]: last["model"]}}
        checkpoint.save_atomic(best, paths.best_checkpoint)
    except (checkpoint.DamagedCheckpoint, KeyError, OSError) as err:
        logging.getLogger(__name__).warning(
            "kept %s: its weights could not be written as best.pt (%s)", paths.last_checkpoint, err
        )


def _set_aside_damaged_best(paths: JobPaths, log: logging.Logger) -> None:
    """A best.pt without a last.pt is read by the fresh start's first save: one that is damaged (truncated, another
    pickle, no or a wrong checksum) is set aside first, so it cannot fail the job on every retry (the trainer
    checks a best.pt beside a last.pt itself, when it resumes)."""
    best = paths.best_checkpoint
    if not best.is_file() or paths.last_checkpoint.is_file():
        return
    from usagg.engine import checkpoint

    try:
        checkpoint.load(best, mmap=True)
    except checkpoint.DamagedCheckpoint as err:
        aside = set_aside(best)
        log.warning("%s; moved to %s, training starts over from epoch 1 and writes it anew", err, aside.name)
