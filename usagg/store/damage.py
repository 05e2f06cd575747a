"""Why a run store's file is not one usagg wrote (reads only; `RunStore.repair`, usagg/store/repair.py, sets it
aside and rebuilds it): metrics.json against its checksum and `JobMetrics` (`checked_metrics`), item_scores.json,
results.csv (`results_damage`), and every damaged file of a job folder (`job_problems`)."""

from __future__ import annotations

import csv
import errno
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from usagg.atomic import read_json_checked, read_regular
from usagg.historycsv import history_damage
from usagg.joblock import DAMAGED_HOLDER, read_holder
from usagg.jobmetrics import metrics_problem
from usagg.results_schema import OPTIONAL_COLUMNS, RESULT_COLUMNS

if TYPE_CHECKING:
    from usagg.store import RunStore


def checked_metrics(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(content, None) for an intact metrics.json that JobMetrics (usagg/jobmetrics.py) accepts, (None, why)
    for a damaged or malformed one, (None, None) for none."""
    try:
        data, why = read_json_checked(path)
    except FileNotFoundError:
        return None, None
    why = why if data is None else metrics_problem(data)
    return (data, None) if why is None else (None, why)


def item_scores_damage(path: Path) -> str | None:
    """Why item_scores.json is not the file a job writes (checksum, layout), None when it is or there is none."""
    from usagg.predictions import ITEM_SCORES_FORMAT  # lazy: numpy

    try:
        data, why = read_json_checked(path)
    except FileNotFoundError:
        return None
    if data is not None and (data.get("format") != ITEM_SCORES_FORMAT or not isinstance(data.get("tasks"), dict)):
        why = f"not item scores of format {ITEM_SCORES_FORMAT} (an object with `format` and `tasks`)"
    return why


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


def job_problems(store: RunStore, job_id: str) -> dict[Path, str]:
    """The damaged files of a job folder, each with why (reads only): the lock, job.json, metrics.json (missing too,
    for a done job), item_scores.json and history.csv."""
    paths = store.paths(job_id)
    found: dict[Path, str] = {}
    holder = read_holder(paths.lock)
    if holder and DAMAGED_HOLDER in holder:
        found[paths.lock] = str(holder[DAMAGED_HOLDER])
    record, why = store.read_record(job_id) if paths.record.is_file() else (None, None)
    if why:
        found[paths.record] = why
    metrics, why = checked_metrics(paths.metrics)
    if why:
        found[paths.metrics] = why
    elif metrics is None and record is not None and record["state"] == "done":
        found[paths.metrics] = "missing, although the job is done"
    if why := item_scores_damage(paths.item_scores):
        found[paths.item_scores] = why
    if why := history_damage(paths.history):
        found[paths.history] = why
    return found
