"""Experiment trackers: TensorBoard event files and MLflow runs, fed by each job as it trains.

The run store stays the record; a tracker is a window onto it. A job's tracker gets the
params once, each epoch's history entry (usagg/engine/trainer.py: loss, per-task losses,
selection metrics) and the final test metrics; a job that runs again (resumed, retried) keeps one curve, epochs 1..N
each once, its history's values: its MLflow run (id in jobs/<id>/mlflow.json) is reopened, loses the earlier attempts'
points after the checkpoint it resumed from (usagg/mlflowstore.py; a tracking server's run keeps them, tagged) and is
given the checkpoint's epochs it lacks, and its TensorBoard writer purges the earlier attempt's points from its first
epoch on.
TensorBoard writes event files with its own writer under <run store>/tensorboard/<job id>. MLflow gets one parent
run per study (its id kept in <run store>/mlflow.json, so re-runs and workers on other hosts reuse it) and one
nested run per job, through `MlflowClient` (no global active run, so pool workers are safe); with a local URI
(sqlite:, file:) each run's artifacts go into its own study's run store, an experiment shared or not.
The parent run is RUNNING while a `usagg run` runs jobs and ends with it (`start_study_run`,
`end_study_run`: FINISHED, FAILED when a job failed, KILLED when interrupted); `usagg report --mlflow`
reopens it to attach the report and closes it again. A done job's run gets its metrics.json and
predictions as artifacts (its best.pt too with `tracking.mlflow_checkpoints`); its TensorBoard
folder gets the job's settings and final primary metrics as hparams (`hparam_values`).
A job that reuses its twin's training gets its own run too, the twin's curves replayed (`track_reused`).
A tracker that fails (a server down, a full disk) warns once and is switched off; the job goes on.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from usagg.atomic import parse_json, read_regular, write_text_atomic
from usagg.engine.callbacks import Callback
from usagg.store import RunStore

if TYPE_CHECKING:
    from usagg.engine.trainer import Trainer
    from usagg.plan import Job
    from usagg.spec.models import MlflowSpec, TrackingSpec
    from usagg.store.layout import JobPaths

log = logging.getLogger(__name__)
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def epoch_scalars(entry: dict[str, Any]) -> dict[str, float]:
    """One history entry as flat scalar names: loss, task_loss/<task>, select/<task>/<metric>, ..."""
    out: dict[str, float] = {}

    def put(name: str, value: Any) -> None:
        v = _number(value)
        if v is not None:
            out[name] = v

    for key, value in entry.items():
        if key in ("epoch", "step"):
            continue
        if isinstance(value, dict):
            for sub, inner in value.items():
                if isinstance(inner, dict):
                    for name, v in inner.items():
                        put(f"{key}/{sub}/{name}", v)
                else:
                    put(f"{key}/{sub}", inner)
        else:
            put(key, value)
    return out


def final_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """A job's test metrics as test/<task>/<metric>."""
    out: dict[str, float] = {}
    for task, entry in (metrics.get("tasks") or {}).items():
        for name, value in (entry.get("metrics") or {}).items():
            v = _number(value)
            if v is not None:
                out[f"test/{task}/{name}"] = v
    return out


def job_params(job: Job) -> dict[str, str]:
    """What a tracker shows as a job's params: paradigm, tasks, seed, fraction and the spec sections, flattened."""
    params: dict[str, str] = {
        "job_id": job.id,
        "paradigm": job.paradigm,
        "tasks": ",".join(job.task_ids),
        "moe": str(job.moe),
        "fraction": f"{job.fraction:g}",
        "seed": str(job.seed),
    }
    for section in ("model", "training"):
        for key, value in _flat(getattr(job, section).model_dump(mode="json"), section):
            params[key] = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return params


def _flat(d: dict[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from _flat(v, f"{prefix}.{k}")
        else:
            yield f"{prefix}.{k}", v


def hparam_values(job: Job) -> dict[str, bool | int | float | str]:
    """A job's main settings as TensorBoard hparams (typed, so the HParams view filters numbers): paradigm, tasks,
    MoE, fraction, seed and the model and training sections, a list or missing value as text."""
    values: dict[str, bool | int | float | str] = {
        "paradigm": job.paradigm,
        "tasks": ",".join(job.task_ids),
        "moe": job.moe,
        "fraction": job.fraction,
        "seed": job.seed,
    }
    for section in ("model", "training"):
        for key, value in _flat(getattr(job, section).model_dump(mode="json"), section):
            values[key] = value if isinstance(value, bool | int | float | str) else json.dumps(value)
    return values


def primary_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """Each task's primary test metric as test/<task>/<metric> (the names `final_scalars` gives them)."""
    out: dict[str, float] = {}
    for task, entry in (metrics.get("tasks") or {}).items():
        name = entry.get("primary")
        v = _number((entry.get("metrics") or {}).get(name))
        if name and v is not None:
            out[f"test/{task}/{name}"] = v
    return out


def mlflow_status(state: str) -> str:
    """An MLflow run status for a job's or a study's end: done, interrupted, anything else failed."""
    return {"done": "FINISHED", "interrupted": "KILLED"}.get(state, "FAILED")


class _Guarded:
    """Base of the trackers: the first failure warns once and switches the tracker off."""

    name = "tracker"

    def __init__(self) -> None:
        self.alive = True

    def _call(self, what: str, fn: Any, *args: Any) -> None:
        if not self.alive:
            return
        try:
            with _http_defaults():
                fn(*args)
        except Exception as err:  # a tracker must never stop training
            self.alive = False
            log.warning(
                "%s: %s failed (%s: %s); tracking switched off for this job", self.name, what, type(err).__name__, err
            )

    def start(self, history: list[dict[str, Any]]) -> None:
        """The fit starts, after `history` (the epochs a resumed checkpoint holds; [] for a fresh start)."""
        self._call("starting", self._start, history)

    def epoch(self, entry: dict[str, Any]) -> None:
        self._call("logging an epoch", self._epoch, entry)

    def finish(self, metrics: dict[str, Any] | None, state: str) -> None:
        self._call("finishing", self._finish, metrics, state)

    def _start(self, history: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def _epoch(self, entry: dict[str, Any]) -> None:
        raise NotImplementedError

    def _finish(self, metrics: dict[str, Any] | None, state: str) -> None:
        raise NotImplementedError


class TensorBoardTracker(_Guarded):
    """TensorBoard event files of one job (tensorboard's own writer through torch.utils.tensorboard).

    The writer opens when the job's fit starts (`start`), or at the first epoch logged without one (a reused job's
    replay). An earlier attempt's event files stay: the new writer starts with a purge step, the first epoch it
    writes, so TensorBoard drops the earlier attempt's points from there on (epochs trained after the checkpoint this
    attempt resumed from) and shows each epoch once; the params text is written by the first attempt only. The purge
    step is a SessionLog START event, written twice: the Rust data server and `EventAccumulator` purge at the first,
    but the Python loader TensorBoard's own server runs on (`plugin_event_accumulator`: `--load_fast=false`, or no
    data server binary) takes the first START it reads for the run's start, not a restart, and a first attempt's
    writer wrote none (tests/test_tensorboard_readers.py reads all three)."""

    name = "tensorboard"

    def __init__(self, folder: Path, params: dict[str, str], hparams: dict[str, bool | int | float | str]) -> None:
        super().__init__()
        self.writer: Any = None
        self.folder = folder
        self.params = params
        self.hparams = hparams

    def _open(self, first_epoch: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        earlier = self.folder.is_dir() and any(self.folder.glob("events.out.tfevents.*"))
        self.writer = SummaryWriter(log_dir=str(self.folder), purge_step=first_epoch if earlier else None)
        if earlier:  # the writer's own START came first: this one purges for the Python loader too
            from tensorboard.compat.proto.event_pb2 import Event, SessionLog

            restart = Event(step=first_epoch, session_log=SessionLog(status=SessionLog.START))
            self.writer._get_file_writer().add_event(restart)
        else:
            self.writer.add_text("params", "\n".join(f"    {k}: {v}" for k, v in self.params.items()), 0)

    def _start(self, history: list[dict[str, Any]]) -> None:
        if self.writer is None:
            self._open(len(history) + 1)

    def _epoch(self, entry: dict[str, Any]) -> None:
        if self.writer is None:
            self._open(int(entry["epoch"]))
        for name, value in epoch_scalars(entry).items():
            self.writer.add_scalar(name, value, int(entry["epoch"]))
        self.writer.flush()

    def _finish(self, metrics: dict[str, Any] | None, state: str) -> None:
        if metrics is not None:
            epoch = int((metrics.get("training") or {}).get("epochs") or 0)
            if self.writer is None:
                self._open(epoch)
            for name, value in final_scalars(metrics).items():
                self.writer.add_scalar(name, value, epoch)
            self._hparams(primary_scalars(metrics))
        if self.writer is not None:  # an attempt that failed before its fit leaves the earlier files alone
            self.writer.close()

    def _hparams(self, primary: dict[str, float]) -> None:
        """The HParams view's row of this job, in its own folder (as Lightning writes it, not in the subfolder
        `SummaryWriter.add_hparams` makes): its settings, its primary metrics' tags (their values are the test
        scalars just written)."""
        from torch.utils.tensorboard.summary import hparams

        writer = self.writer._get_file_writer()
        for summary in hparams(self.hparams, primary):
            writer.add_summary(summary)


#: MLflow's HTTP retry defaults wait minutes on a server that is down; a tracker should give up in seconds.
MLFLOW_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


@contextlib.contextmanager
def _http_defaults() -> Iterator[None]:
    """`MLFLOW_HTTP_DEFAULTS` for usagg's own MLflow calls only: MLflow reads them from the environment at each
    request, and a notebook's own MLflow calls (and the processes it starts) must keep its settings, so each one
    the user has not set is set here and removed again on the way out."""
    added = [key for key in MLFLOW_HTTP_DEFAULTS if key not in os.environ]
    for key in added:
        os.environ[key] = MLFLOW_HTTP_DEFAULTS[key]
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def _http_bounded(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """`fn` with `_http_defaults` around it: the study-level MLflow calls (the jobs' go through `_Guarded._call`)."""

    @functools.wraps(fn)
    def bounded(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with _http_defaults():
            return fn(*args, **kwargs)

    return bounded


def _client(spec: MlflowSpec) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=spec.uri)


def _local(spec: MlflowSpec) -> bool:
    """A tracking store on this machine's disk (sqlite:, file:): its artifacts go into the run store."""
    return spec.uri.split(":", 1)[0] in ("sqlite", "file")


def _experiment_id(client: Any, name: str, spec: MlflowSpec, store_root: Path) -> str:
    """The experiment's id, created when new; a local store (sqlite:, file:) keeps artifacts in the run store,
    not in ./mlruns of whatever folder the command ran from (each run's own: `_own_artifacts`)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    where = RunStore(Path(store_root).resolve()).mlflow_artifacts.as_uri() if _local(spec) else None
    return client.create_experiment(name, artifact_location=where)


#: Experiments whose runs could not be given a location in their own run store (warned once each).
_shared_artifacts_warned: set[str] = set()


def _own_artifacts(client: Any, run: Any, spec: MlflowSpec, store_root: Path) -> None:
    """A local store's run keeps its artifacts in its own run store, <store>/mlflow-artifacts/<run id>/artifacts.

    MLflow derives a run's artifact location from its experiment's, set once when the experiment was made: the run
    store of the first study that used it. Another study sharing the experiment (`tracking.mlflow.experiment`, the
    same name from another output_root, or after that store was deleted) would write its files into that first
    store, and re-create it when gone. MLflow has no client call to give a run its own location, so for a local
    store (sqlite:, file:) the run's record is rewritten in MLflow's own tracking store; when that fails (another
    MLflow's internals) the run keeps the experiment's location, said once per experiment."""
    if not _local(spec):
        return
    where = (RunStore(Path(store_root).resolve()).mlflow_artifacts / run.info.run_id / "artifacts").as_uri()
    if run.info.artifact_uri == where:  # the experiment is this store's
        return
    try:
        from mlflow.store.tracking.file_store import FileStore
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        store = client._tracking_client.store
        if isinstance(store, SqlAlchemyStore):
            from mlflow.store.tracking.dbmodels.models import SqlRun

            with store.ManagedSessionMaker(read_only=False) as session:
                session.query(SqlRun).filter(SqlRun.run_uuid == run.info.run_id).update({SqlRun.artifact_uri: where})
        elif isinstance(store, FileStore):
            info = store._get_run_info(run.info.run_id)
            info._artifact_uri = where
            store._overwrite_run_info(info)
        else:
            raise TypeError(f"a tracking store of type {type(store).__name__}")
        if client.get_run(run.info.run_id).info.artifact_uri != where:
            raise RuntimeError("the run's artifact location did not change")
    except Exception as err:
        experiment = str(run.info.experiment_id)
        if experiment not in _shared_artifacts_warned:
            _shared_artifacts_warned.add(experiment)
            log.warning(
                "mlflow: the runs of experiment %s keep their artifacts in %s, not in %s (%s: %s)",
                experiment,
                run.info.artifact_uri.rsplit("/", 2)[0],
                store_root,
                type(err).__name__,
                err,
            )


def _known_run(record: Path) -> dict[str, Any]:
    """mlflow.json of the run store as written (`{"uri", "experiment_id", "run_id"}`), {} without one or when it is
    no JSON object (a received store's file is data: a link, FIFO or nesting too deep reads as none)."""
    try:
        known = parse_json(read_regular(record))
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


@_http_bounded
def study_parent_run(spec: MlflowSpec, study_name: str, store_root: Path) -> str | None:
    """The MLflow run that stands for the study (created once, its id kept in the run store); None when unreachable."""
    record = RunStore(store_root).mlflow_record
    try:
        known = _known_run(record)
        if known.get("uri") == spec.uri and known.get("run_id"):
            return str(known["run_id"])
        client = _client(spec)
        experiment = _experiment_id(client, spec.experiment or study_name, spec, store_root)
        run = client.create_run(experiment, run_name=study_name, tags={"usagg.store": str(Path(store_root).resolve())})
        _own_artifacts(client, run, spec, store_root)
        write_text_atomic(record, json.dumps({"uri": spec.uri, "experiment_id": experiment, "run_id": run.info.run_id}))
        return str(run.info.run_id)
    except Exception as err:  # the run store stays the record
        log.warning(
            "mlflow: could not reach %s (%s: %s); the study is not tracked there", spec.uri, type(err).__name__, err
        )
        return None


#: The tag of a job's MLflow run that kept an earlier attempt's points (its store cannot delete them): the epoch
#: after which the run may hold, beside each of the job's own values, one of an attempt that trained it before.
STALE_TAG = "usagg.stale_after_epoch"

#: Tracking URIs whose stores could not delete points, said once each (`_say_stale_once`).
_stale_warned: set[str] = set()


def _say_stale_once(uri: str, err: Exception) -> None:
    if uri in _stale_warned:
        return
    _stale_warned.add(uri)
    log.warning(
        "mlflow: a resumed job's run at %s keeps the points an earlier attempt logged for the epochs trained again "
        "(%s: %s); the run's tag %s names the epoch after which its curves may show two values at a step, and the "
        "job's history.csv is the record",
        uri,
        type(err).__name__,
        err,
        STALE_TAG,
    )


class MlflowTracker(_Guarded):
    """One MLflow run per job, nested under the study's run (tag mlflow.parentRunId).

    The run's id is kept in the job's folder (mlflow.json), and a later attempt of the job (resumed after an
    interruption, retried after a failure) reopens it instead of starting a second run, and ends with the job's
    history (history.csv) as its curve, one point per metric and epoch: when its fit starts, the earlier attempts'
    points after the checkpoint it resumed from are deleted (trained again, maybe to other values, or never: a
    shorter fit), then the checkpoint's epochs the run lacks are logged; a point the run holds already (the same
    metric, step and value) is not logged again, and one of another value at that step is deleted first. MLflow has
    no call that deletes a point: usagg/mlflowstore.py does it in a local store (sqlite:, file:); a tracking server's
    run keeps such points beside the job's, so the run gets the tag `STALE_TAG` (the epoch after which it may hold
    an earlier attempt's points), said once per URI. A recorded run the tracking store no longer has (deleted,
    another URI, another study run) gives a new one."""

    name = "mlflow"

    def __init__(
        self, spec: MlflowSpec, job: Job, store_root: Path, params: dict[str, str], *, checkpoints: bool = False
    ) -> None:
        super().__init__()
        self.client: Any = None
        self.run_id = ""
        self.logged: dict[tuple[str, int], list[float]] = {}  # (metric, step) -> the values the run holds there
        self.paths = RunStore(store_root).paths(job.id)
        self.checkpoints = checkpoints
        self.uri = spec.uri
        self.stale_after: int | None = None  # `STALE_TAG` as the run holds it
        self.deletes = True  # False once the store could not delete points: they are kept and tagged
        self._call("starting a run", self._open, spec, job, store_root, params)

    def _open(self, spec: MlflowSpec, job: Job, store_root: Path, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        parent = study_parent_run(spec, job.study, store_root)
        if parent is None:  # unreachable: study_parent_run has said so once
            self.alive = False
            return
        self.client = _client(spec)
        run = self._reopen(spec, parent)
        if run is None:
            experiment = self.client.get_run(parent).info.experiment_id
            tags = {"mlflow.parentRunId": parent, "usagg.job_id": job.id}
            if "reused_from" in params:
                tags["usagg.reused_from"] = params["reused_from"]
            run = self.client.create_run(experiment, run_name=job.id, tags=tags)
            write_text_atomic(self.paths.mlflow, json.dumps({"uri": spec.uri, "run_id": run.info.run_id}))
        _own_artifacts(self.client, run, spec, store_root)
        self.run_id = run.info.run_id
        items = [Param(k, v[:6000]) for k, v in params.items() if k not in run.data.params]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def _reopen(self, spec: MlflowSpec, parent: str) -> Any:
        """The job's run of an earlier attempt, RUNNING again, with the points it holds in `logged`; None when there
        is none to reopen (no mlflow.json, another URI, a run deleted or gone from the store, another study run)."""
        from mlflow.exceptions import MlflowException

        known = _known_run(self.paths.mlflow)
        if known.get("uri") != spec.uri or not known.get("run_id"):
            return None
        try:
            run = self.client.get_run(str(known["run_id"]))
        except MlflowException:  # not in this store (any more)
            return None
        if run.info.lifecycle_stage != "active" or run.data.tags.get("mlflow.parentRunId") != parent:
            return None
        if run.info.status != "RUNNING":
            self.client.update_run(run.info.run_id, status="RUNNING")
        for key in run.data.metrics:
            for point in self.client.get_metric_history(run.info.run_id, key):
                self.logged.setdefault((key, int(point.step)), []).append(point.value)
        with contextlib.suppress(ValueError):  # a tag set by hand: read as none
            self.stale_after = int(run.data.tags[STALE_TAG]) if STALE_TAG in run.data.tags else None
        return run

    def _log(self, scalars: dict[str, float], step: int) -> None:
        """Log the points the run does not hold yet (an earlier attempt's, of the same value, are kept as they are),
        after deleting the run's other values at their steps (an earlier attempt's, trained again)."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        named = {k.replace("/", "."): v for k, v in scalars.items()}
        self._drop([(k, step) for k, v in named.items() if self.logged.get((k, step), [v]) != [v]], step - 1)
        metrics = [Metric(k, v, now, step) for k, v in named.items() if v not in self.logged.get((k, step), [])]
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + 1000])
        for m in metrics:
            self.logged.setdefault((m.key, step), []).append(m.value)

    def _drop(self, points: list[tuple[str, int]], after: int) -> None:
        """Delete the run's points at these (metric, step)s, every value there (usagg/mlflowstore.py); where the
        store cannot, keep them and tag the run: it may hold an earlier attempt's points after epoch `after`."""
        from usagg.mlflowstore import delete_points

        if not points:
            return
        if self.deletes:
            steps: dict[str, set[int]] = {}
            for key, step in points:
                steps.setdefault(key, set()).add(step)
            try:
                delete_points(self.client, self.run_id, steps)
            except Exception as err:  # kept, and said: the job's curve is still logged
                self.deletes = False
                _say_stale_once(self.uri, err)
            else:
                for point in points:
                    self.logged.pop(point, None)
                return
        if self.stale_after is None or after < self.stale_after:
            self.client.set_tag(self.run_id, STALE_TAG, str(after))
            self.stale_after = after

    def _start(self, history: list[dict[str, Any]]) -> None:
        """The run's points after the checkpoint's epochs go (an earlier attempt's: this fit trains those epochs
        again, or fewer), then the checkpoint's epochs this run lacks (another attempt's) are logged."""
        self._drop(sorted(p for p in self.logged if p[1] > len(history)), len(history))
        for entry in history:
            self._epoch(entry)

    def _epoch(self, entry: dict[str, Any]) -> None:
        self._log(epoch_scalars(entry), int(entry["epoch"]))

    def _finish(self, metrics: dict[str, Any] | None, state: str) -> None:
        if metrics is not None:
            self._log(final_scalars(metrics), int((metrics.get("training") or {}).get("epochs") or 0))
        if state == "done":
            try:
                self._artifacts(self.paths)
            except Exception as err:  # the run still ends with the job's state
                log.warning("mlflow: could not log the job's files (%s: %s)", type(err).__name__, err)
        self.client.set_terminated(self.run_id, mlflow_status(state))

    def _artifacts(self, paths: JobPaths) -> None:
        """metrics.json and the predictions folder; the tested weights only when asked (a model's weights may be
        large): best.pt (the last epoch's under selection: last, usagg/engine/runner.py `_tested_weights`), or the
        last.pt of a job done before usagg wrote one there."""
        if paths.metrics.is_file():
            self.client.log_artifact(self.run_id, str(paths.metrics))
        if paths.predictions.is_dir():
            self.client.log_artifacts(self.run_id, str(paths.predictions), paths.predictions.name)
        tested = next((p for p in (paths.best_checkpoint, paths.last_checkpoint) if p.is_file()), None)
        if self.checkpoints and tested is not None:
            self.client.log_artifact(self.run_id, str(tested), paths.checkpoints.name)


class JobTrackers(Callback):
    """Every tracker the spec asks for, fed together; empty (and free) when none is asked for.

    A trainer callback (usagg/engine/callbacks.py): each epoch's history entry is logged at `on_epoch_end`. The
    trackers close at the job's end, not the fit's (`finish`, called by run_one in usagg/engine/runner.py): the test
    metrics, predictions and the job's state come after training."""

    def __init__(self, trackers: list[_Guarded]) -> None:
        self.trackers = trackers

    def on_fit_start(self, trainer: Trainer) -> None:
        """After `Trainer.resume`: the trackers start from the checkpoint's epochs (`_Guarded.start`)."""
        for t in self.trackers:
            t.start(list(trainer.state.history))

    def on_epoch_end(self, trainer: Trainer, entry: dict[str, Any]) -> None:
        self.epoch(entry)

    def epoch(self, entry: dict[str, Any]) -> None:
        for t in self.trackers:
            t.epoch(entry)

    def finish(self, metrics: dict[str, Any] | None, state: str) -> None:
        for t in self.trackers:
            t.finish(metrics, state)


def job_trackers(
    tracking: TrackingSpec | None, job: Job, store_root: Path, *, reused_from: str | None = None
) -> JobTrackers:
    """The trackers of one job, opened (a tracker that cannot open warns once and stays off); `reused_from` names
    the twin whose training a reused job took (a param, and an MLflow tag)."""
    if tracking is None or not (tracking.tensorboard or tracking.mlflow):
        return JobTrackers([])
    params = job_params(job) | ({"reused_from": reused_from} if reused_from else {})
    trackers: list[_Guarded] = []
    if tracking.tensorboard:
        trackers.append(TensorBoardTracker(RunStore(store_root).tensorboard_dir(job.id), params, hparam_values(job)))
    if tracking.mlflow is not None:
        trackers.append(
            MlflowTracker(tracking.mlflow, job, Path(store_root), params, checkpoints=tracking.mlflow_checkpoints)
        )
    return JobTrackers([t for t in trackers if t.alive])


def track_reused(tracking: TrackingSpec, job: Job, store_root: Path, metrics: dict[str, Any]) -> None:
    """A job filled from its twin (`RunStore.reuse`) gets a tracker run of its own, as a trained one
    does: its own params (its paradigm, not the twin's), the twin's curves epoch by epoch from the history its
    metrics.json keeps, its test metrics and files, and the twin it reuses named, so the MLflow and TensorBoard
    views list every job of the study."""
    trackers = job_trackers(tracking, job, store_root, reused_from=str(metrics.get("reused_from") or "") or None)
    for entry in metrics.get("history") or []:
        if isinstance(entry, dict) and isinstance(entry.get("epoch"), int):
            trackers.epoch(entry)
    trackers.finish(metrics, "done")


def _recorded_parent(spec: MlflowSpec, store_root: Path) -> str | None:
    """The study's run kept in the run store for this URI, None when there is none (nothing is created)."""
    record = RunStore(store_root).mlflow_record
    known = _known_run(record)
    return str(known["run_id"]) if known.get("uri") == spec.uri and known.get("run_id") else None


@_http_bounded
def start_study_run(spec: MlflowSpec, study_name: str, store_root: Path) -> str | None:
    """The study's run, RUNNING while jobs run (reopened when an earlier run ended it); None when unreachable."""
    parent = study_parent_run(spec, study_name, store_root)
    if parent is None:
        return None
    try:
        client = _client(spec)
        if client.get_run(parent).info.status != "RUNNING":
            client.update_run(parent, status="RUNNING")
    except Exception as err:  # the jobs' runs still nest under it
        log.warning("mlflow: could not reopen the study's run (%s: %s)", type(err).__name__, err)
    return parent


@_http_bounded
def end_study_run(spec: MlflowSpec, store_root: Path, state: str) -> bool:
    """End the study's run as the run driver ended (`mlflow_status` of done / failed / interrupted) when it is
    RUNNING; a store without one, or a run already ended (nothing ran), is left alone. True when it was ended."""
    parent = _recorded_parent(spec, store_root)
    if parent is None:
        return False
    try:
        client = _client(spec)
        if client.get_run(parent).info.status != "RUNNING":
            return False
        client.set_terminated(parent, mlflow_status(state))
        return True
    except Exception as err:
        log.warning("mlflow: could not end the study's run (%s: %s)", type(err).__name__, err)
        return False


@_http_bounded
def log_report(tracking: TrackingSpec | None, study_name: str, store_root: Path, folder: Path) -> bool:
    """Attach a written report folder to the study's MLflow run, reopened for it and closed again with its own end
    time: FINISHED, unless the study ended FAILED or KILLED; True when it was logged."""
    if tracking is None or tracking.mlflow is None:
        return False
    parent = study_parent_run(tracking.mlflow, study_name, store_root)
    if parent is None:
        return False
    try:
        client = _client(tracking.mlflow)
        before = client.get_run(parent).info
        client.update_run(parent, status="RUNNING")
        try:
            client.log_artifacts(parent, str(folder), "report")
        finally:  # the study's own end (time, and a failure) stays; a run never ended gets FINISHED now
            kept = before.status if before.status in ("FAILED", "KILLED") else "FINISHED"
            client.set_terminated(parent, kept, before.end_time)
        return True
    except Exception as err:
        log.warning("mlflow: could not log the report (%s: %s)", type(err).__name__, err)
        return False
