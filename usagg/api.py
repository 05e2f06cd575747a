"""The Python API of usagg: run a study and read its results from a notebook or a script.

    from usagg.api import run_study, load_results, load_history
    result = run_study("studies/demo.yaml", ["training.epochs=2"], device="cpu")
    results = load_results(result)                   # the tidy results.csv as a DataFrame (or give a store folder)
    history = load_history(result)                   # per job, epoch and task: loss and selection metrics
    result.errors                                    # failed job -> its error (each also logged as a warning)

The same service as `usagg run` (usagg/run/) and the same run store, so the
CLI and this module can take turns on one study. User errors are `UsaggError`
(a bad spec: `SpecError`; a dataset with problems: `DataError`, listing them), naming
this module's arguments (`paradigms=`, `device=`), never `usagg run`'s flags; all three import from here. The read
functions only read (a store's stale results.csv is rebuilt in memory, not written).
No torch is imported here; pandas only inside the functions that return a DataFrame.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from usagg.engine.progress import Progress  # what on_progress hears; torch-free (as usagg.engine is at import)
from usagg.errors import DataError, SpecError, UsaggError  # what the functions raise, for `except`
from usagg.run.observer import RunObserver
from usagg.run.result import RunResult
from usagg.wording import command
from usagg.workerstart import refuse_in_worker_bootstrap

if TYPE_CHECKING:
    import pandas as pd

    from usagg.execute.base import EventFn
    from usagg.plan import Job
    from usagg.spec.models import Study

__all__ = [
    "DataError",
    "Progress",
    "RunObserver",
    "RunResult",
    "SpecError",
    "UsaggError",
    "load_history",
    "load_results",
    "load_table",
    "plan",
    "run_study",
]

#: Columns of `load_history` before the per-metric selection columns (`select_<METRIC>`).
HISTORY_COLUMNS: tuple[str, ...] = (
    "job_id",
    "paradigm",
    "seed",
    "fraction",
    "epoch",
    "step",
    "task",
    "type",
    "loss",
    "aux_loss",
    "job_loss",
    "select_score",
    "primary",
    "select_primary",
    "selected",
)


# --------------------------------------------------------------------------- studies


def _load(spec_or_path: Any, overrides: Sequence[str]) -> Study:
    """A Study from a spec file, a loaded Study (overrides applied to a copy) or the YAML content as a mapping."""
    import yaml

    from usagg.spec.load import API_SET, dump_study, load_study, study_from_mapping
    from usagg.spec.models import Study

    mapping_file = Path.cwd() / "<study mapping>"  # relative paths of a mapping are from the current folder

    overrides = _overrides(overrides)
    if isinstance(spec_or_path, Study):
        if not overrides:
            return spec_or_path
        return study_from_mapping(yaml.safe_load(dump_study(spec_or_path)), mapping_file, overrides, API_SET)
    if isinstance(spec_or_path, Mapping):
        return study_from_mapping(dict(spec_or_path), mapping_file, overrides, API_SET)
    if isinstance(spec_or_path, (str, os.PathLike)):
        return load_study(Path(spec_or_path), list(overrides), API_SET)
    raise UsaggError(
        f"a study is a spec file path, a loaded Study or the YAML content as a dict, got {type(spec_or_path).__name__}"
    )


def _overrides(overrides: object) -> list[str]:
    """`overrides` as a list of strings; UsaggError naming the argument (or the item) and what is expected."""
    if isinstance(overrides, str):
        raise UsaggError(f"overrides must be a list of KEY=VALUE strings, got the single string {overrides!r}")
    if not isinstance(overrides, Sequence):
        raise UsaggError(
            f"overrides must be a list of KEY=VALUE strings such as ['training.epochs=2'], got "
            f"{type(overrides).__name__}"
        )
    for i, item in enumerate(overrides):
        if not isinstance(item, str):
            raise UsaggError(
                f"overrides[{i}] must be a KEY=VALUE string such as 'training.epochs=2', got "
                f"{type(item).__name__} {item!r}"
            )
    return list(overrides)


def _names(value: object, argument: str) -> tuple[str, ...]:
    """`paradigms` or `only` as a tuple of strings: a single string is one item ("TS" is the paradigm TS, never
    T and S); anything else but a list of strings is a UsaggError naming the argument."""
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise UsaggError(f"{argument} must be a string or a list of strings such as ['TS', 'AU'], got {value!r}")
    return tuple(value)


def _device(device: object) -> str | int | list[int] | None:
    """`device` when it is None, a string, a GPU index or a list of GPU indices; else UsaggError saying so."""
    if device is None or (isinstance(device, str) and device):
        return device
    if isinstance(device, int) and not isinstance(device, bool) and device >= 0:
        return device
    if (
        isinstance(device, Sequence)
        and device
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in device)
    ):
        return list(device)
    raise UsaggError(
        f"device must be 'cpu', 'cuda', 'auto', a GPU index such as 0 or a list of them such as [0, 1], got {device!r}"
    )


def _flag(value: object, argument: str) -> bool:
    """A True/False argument; anything else (force="no" read as true and passed the guard against another spec
    file's store) is a UsaggError naming it."""
    if not isinstance(value, bool):
        raise UsaggError(f"{argument} must be True or False, got {value!r}")
    return value


def _callable(value: object, argument: str, what: str) -> Any:
    """None or a callable; else a UsaggError naming the argument (a non-callable one printed a traceback per job
    event)."""
    if value is not None and not callable(value):
        raise UsaggError(f"{argument} must be {what} or None, got {value!r}")
    return value


def _observer(value: object) -> RunObserver | None:
    """None or a `RunObserver` (usagg/run/observer.py); another object failed deep inside the run."""
    if value is not None and not isinstance(value, RunObserver):
        raise UsaggError(
            f"observer must be a usagg.api.RunObserver (subclass it and override what you need) or None, got {value!r}"
        )
    return value


def _threads(threads: object) -> int | None:
    """`threads` when it is None or a positive whole number; else UsaggError saying so."""
    if threads is None or (isinstance(threads, int) and not isinstance(threads, bool) and threads > 0):
        return threads
    raise UsaggError(f"threads must be a positive whole number of CPU threads per job (or None), got {threads!r}")


def plan(spec_or_path: str | os.PathLike[str] | Study | Mapping[str, Any], overrides: Sequence[str] = ()) -> list[Job]:
    """The jobs a study expands into (its paradigms' units x fractions x seeds), in plan order, as `usagg plan`
    lists them: a staged paradigm (AG) is in it once the jobs it needs are done in the study's run store.

    `overrides` are `--set` expressions such as "training.epochs=2" or "seeds=[0,1]" (a list of strings; anything
    else is a UsaggError naming it).
    """
    from usagg.plan import plan as plan_jobs
    from usagg.run.evidence import store_evidence
    from usagg.run.stores import store_for

    study = _load(spec_or_path, overrides)
    return plan_jobs(study, store_evidence(store_for(study)))


def run_study(
    spec_or_path: str | os.PathLike[str] | Study | Mapping[str, Any],
    overrides: Sequence[str] = (),
    device: str | int | Sequence[int] | None = None,
    *,
    paradigms: Sequence[str] = (),
    only: Sequence[str] = (),
    retry_failed: bool = False,
    threads: int | None = None,
    force: bool = False,
    observer: RunObserver | None = None,
    on_event: EventFn | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> RunResult:
    """Check the data, then train and evaluate every job not yet done, as `usagg run` does; returns a RunResult.

    `device`: "cpu", "cuda", "auto", a GPU index or a list of them (default: the
    spec's `execution.devices`); `threads`: CPU threads per job (default: the
    spec's). `paradigms` and `only` narrow the jobs, each a list of names or
    selectors as `--paradigm` and `--only` take them, or a single string meaning
    one (`paradigms="TS"` is the paradigm TS); failed jobs run again only
    with `retry_failed`. An argument of the wrong type is a UsaggError naming it.
    `on_event(job_id, event, info)` hears each job start and end, `on_progress(Progress)`
    (`usagg.api.Progress`: job_id, phase, epoch, epochs, step, steps, loss, images_per_s, ...)
    the running jobs' epochs and steps (in-process and local pool jobs), or an `observer`
    (usagg/run/observer.py `RunObserver`) every step of the run, as `usagg run` shows them.
    A failed job does not raise: see `RunResult.failed` and `RunResult.errors` (job id ->
    its error, one line; the traceback is in the store's jobs/<id>/error.txt). Without an
    `observer`, each failed job (and each failed job skipped without `retry_failed`) is
    also a warning on the `usagg` logger, which Python prints on stderr (a notebook shows
    it under the cell) unless logging is set up otherwise.
    A dataset with problems raises DataError listing them. A spec file whose study
    name another spec file's store holds, with another plan, is refused unless
    `force=True`. Errors name these arguments (`paradigms=`, `only=`, `device=`), not
    `usagg run`'s flags. `RunResult.store_root` and `results_csv` are absolute paths.
    """
    refuse_in_worker_bootstrap()  # first: in a worker importing the caller's script, nothing else happens
    from usagg.run import driver
    from usagg.run.options import API_WORDING, as_written, run_overrides

    picked = _names(paradigms, "paradigms"), _names(only, "only")
    sets = run_overrides(_overrides(overrides), devices=_device(device), threads=_threads(threads), wording=API_WORDING)
    study = _load(spec_or_path, sets)
    spec_file = Path(spec_or_path) if isinstance(spec_or_path, (str, os.PathLike)) else None
    written = None if spec_file is None else as_written(spec_file, _overrides(overrides))
    return driver.run_study(
        study,
        paradigms=picked[0],
        only=picked[1],
        retry_failed=_flag(retry_failed, "retry_failed"),
        spec_file=spec_file,
        force=_flag(force, "force"),
        observer=_observer(observer),
        on_event=_callable(on_event, "on_event", "a function on_event(job_id, event, info)"),
        on_progress=_callable(on_progress, "on_progress", "a function on_progress(progress)"),
        wording=API_WORDING,
        as_written=written,
    )


# --------------------------------------------------------------------------- results


def _where(value: object, argument: str, takes: str) -> Path:
    """The path a read function was given: a str or os.PathLike, or a RunResult's store folder; else a UsaggError
    naming the argument and what it takes."""
    if isinstance(value, RunResult):
        return Path(value.store_root)
    if isinstance(value, (str, os.PathLike)):
        return Path(value)
    raise UsaggError(
        f"{argument} must be {takes} (a str or pathlib.Path), or the RunResult run_study returned, got "
        f"{type(value).__name__} {value!r:.80}"
    )


def _results_text(path: Path) -> tuple[str | None, Path]:
    """(the table's text rebuilt from the jobs, or None to read the file; the path errors name) of a results CSV or
    a run store folder. A store's results.csv is read as it is when current, else rebuilt in memory from its jobs
    (`RunStore.current_results`): nothing is written, so a read-only store, or one received from elsewhere, reads."""
    from usagg.store import RunStore
    from usagg.store.damage import results_damage

    if path.is_dir():
        store = RunStore(path)
        rebuilt = store.current_results("load_results")
        if rebuilt is None and (why := results_damage(store.results_csv)) is not None:
            raise UsaggError(  # as `usagg compare` says it (usagg/analysis/inputs.py)
                f"{store.results_csv} is damaged ({why}): `{command('usagg', 'repair', store.root)}` sets it aside "
                "and rebuilds it from the done jobs"
            )
        return rebuilt, store.results_csv
    if not path.is_file():
        raise UsaggError(f"{path} is neither a run store folder (runs/<study>) nor a results CSV file")
    return None, path


def _has_rows(text: str) -> bool:
    """Whether a CSV text has a row under its header (text that is no CSV counts: its parse names the problem)."""
    import csv
    import io

    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        next(reader, None)
        return next(reader, None) is not None
    except csv.Error:
        return True


def _text_dtype() -> Any:
    """The dtype pandas gives a column of text: `str` from pandas 3, object before (the docs' "str" either way)."""
    import pandas as pd

    return pd.Series(["text"]).dtype


def load_results(run_dir_or_csv: str | os.PathLike[str] | RunResult) -> pd.DataFrame:
    """The tidy results table, one row per (job, task, metric), with exactly the results.csv columns.

    Give a run store folder, the RunResult of `run_study`, or any results CSV. A store's
    results.csv is read when it is current; when it is missing or behind the jobs (a job
    done, its state changed or its folder deleted since it was written) the table is
    rebuilt from the jobs in memory: this read writes nothing, so a read-only store or
    one received from elsewhere reads as well (`usagg run` writes results.csv at its
    end). The table is validated as `usagg compare` validates it (UsaggError naming the
    row and column). dtypes: seed int64; fraction, value, n_train and steps float64 (NaN
    where the CSV cell is empty); higher_is_better bool; the rest str (pandas' text dtype:
    `str` from pandas 3, object before). An empty `group` reads as "-", as in the analysis.
    A swept study (usagg/sweep.py) adds its swept keys' columns after them, as results.csv
    has them: a row per (job, sweep point, task, metric), so a job two points share has its
    rows under each point's values; a swept column is int64 or float64 where every cell is
    a number, else str.
    """
    import pandas as pd

    from usagg.analysis.results import parse_results, read_results
    from usagg.results_schema import RESULT_COLUMNS

    text, path = _results_text(_where(run_dir_or_csv, "run_dir_or_csv", "a run store folder or a results CSV file"))
    if text is None:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:  # no text: read_results says so, naming the file
            read_results(path)
            raise
        except OSError as err:
            raise UsaggError(
                f"{path} cannot be read ({err.strerror or type(err).__name__}); run_dir_or_csv must be a run store "
                "folder or a results CSV file you can read"
            ) from None
    table = parse_results(text, path) if _has_rows(text) else None
    rows = table.rows if table is not None else []
    swept = table.sweep_keys if table is not None else []
    columns = [*RESULT_COLUMNS, *swept]
    frame = pd.DataFrame([{c: getattr(r, c) for c in RESULT_COLUMNS} | dict(r.sweep) for r in rows], columns=columns)
    dtypes = {
        "seed": "int64",
        "fraction": "float64",
        "value": "float64",
        "higher_is_better": "bool",
        "n_train": "float64",
        "steps": "float64",
    }
    text_dtype = _text_dtype()
    frame = frame.astype({c: dtypes.get(c, text_dtype) for c in RESULT_COLUMNS})
    for key in swept:  # the point's value as results.csv writes it: a number where it is one, for sorting and plots
        try:
            frame[key] = pd.to_numeric(frame[key])
        except (ValueError, TypeError):
            frame[key] = frame[key].astype(text_dtype)
    return frame


def _nan(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _running_history(path: Path, job: Job, metric_cols: dict[str, None]) -> list[dict[str, Any]]:
    """Rows of a job that has not finished, from its history.csv (usagg/historycsv.py); [] without one."""
    import csv
    import io

    from usagg.atomic import read_regular
    from usagg.historycsv import history_damage

    if not path.is_file():
        return []
    if (why := history_damage(path)) is not None:
        raise UsaggError(
            f"{path} is damaged ({why}): `{command('usagg', 'repair', path.parents[2])}` sets it aside "
            f"(job {job.id}'s next epoch writes it again)"
        )
    types = {t.id: (t.type, t.metric) for t in job.tasks}
    rows = []
    with io.StringIO(read_regular(path).decode("utf-8"), newline="") as fh:  # history_damage refused a link
        for rec in csv.DictReader(fh):
            task = rec.get("task", "")
            kind, primary = types.get(task, ("", ""))
            row: dict[str, Any] = {
                "job_id": job.id,
                "paradigm": job.paradigm,
                "seed": job.seed,
                "fraction": job.fraction,
                "epoch": int(rec["epoch"]),
                "step": int(rec["step"]) if rec.get("step") else None,  # <NA>, as a metrics.json without it
                "task": task,
                "type": kind,
                "loss": _nan(_float_or_none(rec.get("loss"))),
                "aux_loss": _nan(_float_or_none(rec.get("aux_loss"))),
                "job_loss": _nan(_float_or_none(rec.get("job_loss"))),
                "select_score": _nan(_float_or_none(rec.get("select_score"))),
                "primary": primary,
                "select_primary": _nan(_float_or_none(rec.get(f"select_{primary}"))),
                "selected": False,
            }
            for key, value in rec.items():
                if key.startswith("select_") and key not in ("select_score", "select_loss"):
                    metric_cols.setdefault(key)
                    row[key] = _nan(_float_or_none(value))
            rows.append(row)
    return rows


def _float_or_none(text: str | None) -> float | None:
    return float(text) if text not in (None, "") else None


def load_table(
    run_dir: str | os.PathLike[str] | RunResult, table: str = "delta", baseline: str | None = None
) -> pd.DataFrame:
    """One of the study's tables as `usagg compare RUN_DIR --format csv --table TABLE` prints it, as a DataFrame:
    "delta" (the default: Δ of every task and paradigm versus the baseline, with its interval and where the
    interval comes from), or any other table's name (statistics, factorial, split, uncertainty, ...; a name the
    study has none of is a UsaggError listing those it has). Δ is computed as the report computes it, the sign
    right for a lower-is-better metric (a Δ by hand from `load_results` is easy to get the wrong way round).
    `baseline`: the paradigm Δ is against (default: the study's analysis.baseline). A pure read, as
    `load_results` is; the figures are `usagg plot RUN_DIR --out FOLDER` (`!usagg plot ...` in a notebook)."""
    import io

    import pandas as pd

    from usagg.analysis.inputs import load_input
    from usagg.analysis.outputs import Memoised
    from usagg.analysis.summary import check_table, compare_output
    from usagg.store import RunStore

    store = RunStore(_where(run_dir, "run_dir", "a run store folder"))
    store.require()
    store.check_finished("load_table")
    inp = load_input(store.root, None)
    check_table(inp, table, baseline)  # a name the study has no table of, refused before the slow statistics
    text = compare_output(Memoised.own().analyse(inp, baseline), "csv", table)
    return pd.read_csv(io.StringIO(text), keep_default_na=False, na_values=[""])


def load_history(run_dir: str | os.PathLike[str] | RunResult) -> pd.DataFrame:
    """The training history of a run store's jobs, one row per (job, epoch, task): every epoch a job has trained,
    whether it is done, still running, interrupted or failed (a job without metrics.json is read from its
    history.csv, written after each epoch; a job that trained no epoch has no rows). Give the store's folder or
    the RunResult of `run_study`.

    Columns: job_id, paradigm, seed, fraction; epoch (1-based) and step
    (optimiser steps done at its end; a nullable Int64, <NA> where an older
    store did not record it); task and its type; loss (the mean of
    the task's own training loss over its batches that epoch: its head's loss,
    without loss weight or MoE auxiliary loss, so a task's TS and AU curves
    compare; NaN if the task got no batch, or for runs older than per-task
    losses); aux_loss (the mean MoE auxiliary loss of those batches, NaN
    without MoE); job_loss (the epoch's mean optimised loss over all batches
    of the job, weights and auxiliary loss included); select_score (the job's
    selection score that epoch, NaN without a selection split); primary (the
    task's primary metric) and select_primary (its value on the selection
    split); selected (the epoch whose weights were tested on this task); then
    select_<METRIC> for every selection metric seen (NaN where the task has no
    such metric). Jobs in plan order, then epochs, then the job's tasks in order.
    Text columns are str (pandas' text dtype, as in `load_results`). A damaged
    metrics.json, or one JobMetrics (usagg/jobmetrics.py) refuses, is a DataError
    naming the file and field.
    """
    import pandas as pd

    from usagg.store import RunStore

    store = RunStore(_where(run_dir, "run_dir", "a run store folder"))
    store.require()
    records: list[dict[str, Any]] = []
    metric_cols: dict[str, None] = {}
    for job in store.jobs():
        metrics = store.job_metrics(job.id)  # a damaged or malformed metrics.json: a DataError naming it
        if metrics is None:  # not finished: its history.csv, written after every epoch
            records += _running_history(store.paths(job.id).history, job, metric_cols)
            continue
        selection = metrics.selection
        per_task = (selection.epochs if selection else None) or {}  # selection_scope task: each its own epoch
        for entry in metrics.history or []:
            task_loss = entry.task_loss or {}
            task_aux = entry.task_aux_loss or {}
            select = entry.select or {}
            for t in job.tasks:
                done = metrics.tasks.get(t.id)
                primary = (done.primary if done else None) or t.metric
                values = select.get(t.id) or {}
                row = {
                    "job_id": job.id,
                    "paradigm": job.paradigm,
                    "seed": job.seed,
                    "fraction": job.fraction,
                    "epoch": entry.epoch,
                    "step": entry.step,
                    "task": t.id,
                    "type": t.type,
                    "loss": _nan(task_loss.get(t.id)),
                    "aux_loss": _nan(task_aux.get(t.id)),
                    "job_loss": _nan(entry.loss),
                    "select_score": _nan(entry.select_score),
                    "primary": primary,
                    "select_primary": _nan(values.get(primary) if primary is not None else None),
                    "selected": entry.epoch == per_task.get(t.id, selection.epoch if selection else None),
                }
                for name, value in values.items():
                    metric_cols.setdefault(f"select_{name}")
                    row[f"select_{name}"] = _nan(value)
                records.append(row)
    columns = [*HISTORY_COLUMNS, *metric_cols]
    frame = pd.DataFrame(records, columns=columns)
    exact = {"seed": "int64", "epoch": "int64", "step": "Int64", "selected": "bool"}  # step: <NA> where not recorded
    floats = ("fraction", "loss", "aux_loss", "job_loss", "select_score", "select_primary", *metric_cols)
    texts = ("job_id", "paradigm", "task", "type", "primary")
    return frame.astype({**exact, **dict.fromkeys(floats, "float64"), **dict.fromkeys(texts, _text_dtype())})
