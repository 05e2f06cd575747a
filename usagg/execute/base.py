"""The executor interface, in the spirit of submitit's Executor: schedule jobs, never run them.

An executor takes job ids and a function `fn(store_root, job_id) -> state`
(in production `functools.partial(usagg.engine.runner.run_one, device=...,
threads=...)`, which locks the job and records its own state, log and error;
the partial pickles, so it reaches pool workers and Slurm nodes with its
device and threads) and decides where each call runs. `on_progress`, when
given, hears the running jobs' epochs and steps: the executor hands a sink
to `fn` as `progress=` (`with_progress`, usagg/engine/progress.py), the
caller's own in this process, one that forwards over a pipe in a pool worker;
a Slurm job reports none. Whatever
happens to a call (an exception, a worker that dies, a Slurm job that is
killed) the executor records `failed` for that job and goes on with the rest.

Job events are reported through `on_event(job_id, event, info)`, events:

- `submitted`: queued on a cluster (info: `slurm_job_id`)
- `started`: the call took the job's lock, so the job runs here (info: `device` where known); never for a job
  that ends `locked`
- `finished`: fn returned a state other than failed (info: `state`); `elsewhere: True` for a job another process
  finished after this run decided to run it: fn is not called and no `started` comes before
- `failed`: fn returned `failed`, raised, or its worker died (info: `state`, `error` one-line summary)
- `locked`: another process is running the job; its state is left alone (info: `state`, `holder`)
- `note`: a line about what the executor waits for (info: `text`; a Slurm run's queue, a late result file)

Exactly one of `finished`, `failed`, `locked` ends every job.
"""

from __future__ import annotations

import abc
import contextlib
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from usagg.atomic import NoSpaceLeft
from usagg.engine.progress import ProgressFn
from usagg.errors import UsaggError, first_line
from usagg.execute.registry import get_executor_factory
from usagg.joblock import JobLocked, when_taken
from usagg.registry import callable_name, parameters
from usagg.store import RunStore
from usagg.store.records import ERROR_CHARS
from usagg.wording import counted

if TYPE_CHECKING:
    from usagg.spec.models import ExecutionSpec

JobFn = Callable[..., str]  # fn(store_root, job_id[, progress=sink]) -> state
EventFn = Callable[[str, str, dict[str, Any]], None]


def _when_job_taken(store_root: str, job_id: str, start: Callable[[], None]) -> contextlib.AbstractContextManager[None]:
    """`start` called when this thread takes the job's lock; nothing for an id the store cannot name (fn fails)."""
    try:
        path = RunStore(store_root).paths(job_id).lock
    except (UsaggError, OSError):
        return contextlib.nullcontext()
    return when_taken(path, start)


def summarize_error(text: str, limit: int = ERROR_CHARS) -> str:
    """The last non-empty line of a traceback or log (the exception itself), shortened."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    line = lines[-1] if lines else "unknown error"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def record_failure(store_root: str | Path, job_id: str, error_text: str, summary: str | None = None) -> str:
    """Mark a job failed after fn could not: its error text (unless fn wrote one this attempt) and its state.

    Returns the one-line summary stored with the state. A job fn already
    recorded as failed keeps fn's own error text and summary. Written like every
    job.json write, under the job's lock and as a compare-and-set: a job that a live
    process runs again meanwhile (a requeue) or that is done is left as it is (no
    error.txt in a done job's folder), and a damaged record is left to `usagg repair`.
    """
    store = RunStore(store_root)
    summary = summary or summarize_error(error_text)
    try:
        with contextlib.nullcontext() if store.holds_lock(job_id) else store.lock(job_id):
            try:
                record = store.job_record(job_id)
            except UsaggError:
                record = None  # no record to change (a damaged one is noted in store.repairs)
            if record is not None and record.get("state") == "failed" and record.get("error"):
                return str(record["error"])
            if record is not None and record.get("state") == "done":
                return summary  # its result is in: an error.txt would contradict it
            with contextlib.suppress(NoSpaceLeft):  # a full disk: the state below still tries to say so
                store.write_error(job_id, error_text.rstrip() + "\n")
            if record is not None:
                with contextlib.suppress(UsaggError):  # done meanwhile (StateConflict) or a damaged record
                    store.set_state(job_id, "failed", expect=("pending", "running", "failed"), error=summary)
    except JobLocked:
        pass  # a live process runs the job again: its record is that process's to write
    return summary


def call_job(
    fn: JobFn, store_root: str, job_id: str, on_start: Callable[[], None] | None = None
) -> tuple[str, str, dict[str, Any]]:
    """Run fn for one job, turning any exception into a recorded failure.

    Returns (state, event, info) with event `finished`, `failed` or `locked`. `on_start()` runs once fn has taken
    the job's lock (`joblock.when_taken`), or before a `finished` or `failed` answer of an fn that took none, never
    for a job another process holds (`locked`): the executor's `started` event, so a user never reads that a job
    started here that another process runs. A job the store says is done already (another `usagg run` finished it
    after this one decided to run it) is `finished` with `elsewhere`, fn not called and `on_start` never run: the
    console said "started on cpu" then "done in 0.0s" for it. So is one finished between that check and fn's lock:
    the state is read again once the lock is taken, and fn, which finds it done under its lock, trains nothing.
    KeyboardInterrupt and SystemExit pass through (the user or the cluster stops us).
    """
    done_elsewhere = {"state": "done", "elsewhere": True}
    if _state_or_none(RunStore(store_root), job_id) == "done":  # done means done: its id hashes every setting
        return "done", "finished", done_elsewhere
    said, found_done = False, False

    def start() -> None:
        nonlocal said, found_done
        if not said and _state_or_none(RunStore(store_root), job_id) == "done":  # finished before fn's lock
            found_done = True
        elif not said and on_start is not None:
            on_start()
        said = True

    try:
        with _when_job_taken(store_root, job_id, start):
            state = fn(store_root, job_id)
    except JobLocked as e:
        state = RunStore(store_root).job_state(job_id)
        return state, "locked", {"state": state, "holder": e.holder}
    except Exception:
        start()
        summary = record_failure(store_root, job_id, traceback.format_exc())
        return "failed", "failed", {"state": "failed", "error": summary}
    start()
    state = str(state)
    if found_done and state == "done":  # fn took the lock of a job another process had just finished
        return "done", "finished", done_elsewhere
    if state == "failed":
        try:
            error = RunStore(store_root).job_record(job_id).get("error")
        except Exception:
            error = None
        return state, "failed", {"state": state, "error": error or "the job reported failure"}
    return state, "finished", {"state": state}


class Executor(abc.ABC):
    """Runs jobs of one run store somewhere; `run` blocks until every job has a final answer."""

    name: str = "executor"

    def __init__(self, store_root: str | Path) -> None:
        self.store_root = str(store_root)

    @abc.abstractmethod
    def run(
        self, job_ids: list[str], fn: JobFn, on_event: EventFn | None = None, on_progress: ProgressFn | None = None
    ) -> dict[str, str]:
        """Run `fn(store_root, job_id)` for every job; returns job id -> final state. `on_progress` hears the
        trainer's reports where the executor can carry them back (the module doc)."""

    def _emit(self, on_event: EventFn | None, job_id: str, event: str, info: dict[str, Any]) -> None:
        """Report a job event; a broken event callback must not stop the study."""
        if on_event is None:
            return
        try:
            on_event(job_id, event, info)
        except Exception:
            traceback.print_exc()


def make_executor(execution: ExecutionSpec, store_root: str | Path, **options: Any) -> Executor:
    """The executor the spec names, built by its registered factory (usagg/execute/registry.py) with `options`.

    A factory is often a plug-in's code: one that cannot take these arguments is a UsaggError naming it instead
    of a traceback, and so is one that returns something other than an `Executor`, which would otherwise fail
    only at its first `run`, after the run store is written (usagg/run/studyrun.py builds the executor before that).
    """
    factory = get_executor_factory(execution.executor)
    where = f"executor {execution.executor!r} (factory {callable_name(factory)})"
    signature = parameters(factory)
    try:
        if signature is not None:
            signature.bind(execution, store_root, **options)
    except TypeError as e:
        raise UsaggError(
            f"{where}: its signature {signature} cannot take this call ({e}); an executor factory is "
            "`factory(execution, store_root, **options)` (docs/internals.md, 'How to add an executor')"
        ) from None
    built = factory(execution, store_root, **options)
    if not isinstance(built, Executor):
        raise UsaggError(
            f"{where} returned a value of type {type(built).__name__}, not an Executor; a factory returns an "
            "instance of a subclass of usagg.execute.base.Executor (docs/internals.md, 'How to add an executor')"
        )
    return built


def run_checked(
    executor: Executor,
    name: str,
    job_ids: list[str],
    fn: JobFn,
    on_event: EventFn | None = None,
    on_progress: ProgressFn | None = None,
) -> dict[str, str]:
    """`executor.run(...)`, with what an executor (often a plug-in's code) gets wrong said in one paragraph naming it.

    An exception from a plug-in executor's `run` (a UsaggError passes as it is; a built-in's bug keeps its
    traceback) becomes a UsaggError with the error's first line and how many jobs ended; before, `usagg run` ended
    in a traceback. A job the executor neither returned a state for nor reported an event of, still pending, was
    never run: a UsaggError naming the executor, where the run used to end "not finished ... another process runs
    them", which running again repeated for ever.
    """
    factory = get_executor_factory(name)
    where = f"executor {name!r} (factory {callable_name(factory)})"
    heard: set[str] = set()

    def noting(job_id: str, event: str, info: dict[str, Any]) -> None:
        heard.add(job_id)
        if on_event is not None:
            on_event(job_id, event, info)

    try:
        states = executor.run(job_ids, fn, noting, on_progress)
    except UsaggError:
        raise
    except Exception as e:
        if getattr(factory, "__module__", "").startswith("usagg."):
            raise
        store = RunStore(executor.store_root)
        ended = sum(1 for j in job_ids if _state_or_none(store, j) in ("done", "failed"))
        raise UsaggError(
            f"{where} failed while running {counted(len(job_ids), 'job')}: {type(e).__name__}: {first_line(e)}; "
            f"{ended} of them ended done or failed, the others stay as they were for the next `usagg run`. A bug "
            "or a problem of the executor's own (docs/internals.md, 'How to add an executor')",
            exit_code=1,
        ) from e
    store = RunStore(executor.store_root)
    unrun = [j for j in job_ids if j not in states and j not in heard and _state_or_none(store, j) == "pending"]
    if unrun:
        listed = ", ".join(unrun[:4]) + (", ..." if len(unrun) > 4 else "")
        them, they = ("it", "it is") if len(unrun) == 1 else ("them", "they are")
        raise UsaggError(
            f"{where} returned without running {counted(len(unrun), 'job')} of the {len(job_ids)} it was given "
            f"({listed}): it neither reported {them} nor returned a state for {them}, and {they} still pending. A bug "
            "in the executor: its run() runs every job it is given and returns each one's final state "
            "(docs/internals.md, 'How to add an executor')",
            exit_code=1,
        )
    return states


def _state_or_none(store: RunStore, job_id: str) -> str | None:
    """The job's recorded state, None where its record cannot be read (damage is `usagg repair`'s to say)."""
    try:
        return store.job_state(job_id)
    except UsaggError:
        return None
