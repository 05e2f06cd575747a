"""Deleting metric points from an MLflow run of a tracking store on this machine's disk: MLflow has no call for it.

MLflow keeps every point logged to a run (mlflow/mlflow issue 2973, open since 2020, asks for a delete_metric), so
a job's run that a later attempt reopens would keep the earlier attempt's points of the epochs it trains again
beside the new ones: two points at a step where training is not bit-reproducible, and orphaned ones past the end of
a shorter fit. In the two local stores, sqlite (`SqlAlchemyStore`) and file (`FileStore`, behind
MLFLOW_ALLOW_FILE_STORE since MLflow 3), `delete_points` deletes them through MLflow's own store classes and
models, then reads the run back to check; any other store (a tracking server) raises `CannotDelete`, and the
tracker keeps the points and says so (usagg/tracking.py `MlflowTracker`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from usagg.atomic import write_text_atomic

#: Steps per SQL statement: far below any database's limit on bound parameters.
_BATCH = 500


class CannotDelete(Exception):
    """The run's tracking store is not one whose points `delete_points` can delete."""


def delete_points(client: Any, run_id: str, points: dict[str, set[int]]) -> None:
    """Delete every point of the run's metric `key` at each step of `points[key]`, whatever its value, and leave as
    each metric's latest value (MLflow's run view) the latest point left, or no metric where none is left.

    `client`: an `MlflowClient`. CannotDelete for a store other than sqlite or file, before anything is changed;
    RuntimeError when MLflow still reads a deleted point back."""
    from mlflow.store.tracking.file_store import FileStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = client._tracking_client.store
    if isinstance(store, SqlAlchemyStore):
        _delete_rows(store, run_id, points)
    elif isinstance(store, FileStore):
        _delete_lines(store, run_id, points)
    else:
        kind = type(store).__name__
        raise CannotDelete(f"MLflow has no call that deletes a metric's points, and a {kind} is no local store")
    for key, steps in points.items():
        left = sorted({int(m.step) for m in client.get_metric_history(run_id, key)} & steps)
        if left:
            raise RuntimeError(f"metric {key} still has points at steps {left} after they were deleted")


def _batches(steps: Iterable[int]) -> Iterable[list[int]]:
    ordered = sorted(steps)
    for start in range(0, len(ordered), _BATCH):
        yield ordered[start : start + _BATCH]


def _delete_rows(store: Any, run_id: str, points: dict[str, set[int]]) -> None:
    """sqlite: the points' rows of the metrics table go, and each metric's row of latest_metrics (what the run
    view shows) becomes its latest row left, in one transaction (MLflow orders points by step, time, value)."""
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric

    with store.ManagedSessionMaker(read_only=False) as session:  # read-only is its default
        for key, steps in points.items():
            mine = (SqlMetric.run_uuid == run_id, SqlMetric.key == key)
            for batch in _batches(steps):
                session.query(SqlMetric).filter(*mine, SqlMetric.step.in_(batch)).delete(synchronize_session=False)
            latest = (
                session.query(SqlMetric)
                .filter(*mine)
                .order_by(SqlMetric.step.desc(), SqlMetric.timestamp.desc(), SqlMetric.value.desc())
                .first()
            )
            shown = (
                session.query(SqlLatestMetric)
                .filter(SqlLatestMetric.run_uuid == run_id, SqlLatestMetric.key == key)
                .one_or_none()
            )
            if latest is None:
                if shown is not None:
                    session.delete(shown)
                continue
            if shown is None:
                shown = SqlLatestMetric(run_uuid=run_id, key=key)
                session.add(shown)
            shown.value, shown.timestamp = latest.value, latest.timestamp
            shown.step, shown.is_nan = latest.step, latest.is_nan


def _delete_lines(store: Any, run_id: str, points: dict[str, set[int]]) -> None:
    """file: each metric's file (a line per point, read by MLflow's own parser) is rewritten without the points'
    lines, atomically, and removed when none is left (MLflow refuses an empty metric file); the latest value is
    computed from the file when read."""
    info = store._get_run_info(run_id)
    for key, steps in points.items():
        path = Path(store._get_metric_path(info.experiment_id, run_id, key))
        if not path.is_file():
            continue
        lines = [line for line in path.read_text().splitlines(keepends=True) if line.strip()]
        kept = [
            line
            for line in lines
            if store._get_metric_from_line(run_id, key, line, info.experiment_id).step not in steps
        ]
        if kept:
            write_text_atomic(path, "".join(kept))
        else:
            path.unlink()
