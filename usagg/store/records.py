"""job.json, one job's record: its fields and what each must hold, a new record, the record read back and checked
(`read_record_file`), and the state machine's field updates (`enter_state`) and writes (`write_state`, `note_running`);
`RunStore` takes the job's lock around every write."""

from __future__ import annotations

import errno
import math
import os
import socket
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from usagg.atomic import read_json, read_json_checked, write_json_atomic
from usagg.errors import UsaggError

if TYPE_CHECKING:
    from usagg.store import RunStore
    from usagg.store.layout import JobPaths


#: A job's states: pending -> running -> done | failed (a failed or interrupted job goes back to running).
STATES: tuple[str, ...] = ("pending", "running", "done", "failed")
#: Key of job.json holding what the job's id hashed of `model.weights` (usagg/plan.py `weights_key`): `sha256:<hex>`,
#: `missing:<name>` or null. A report shows this digest and never reads a weights path a received store names.
WEIGHTS_KEY = "weights_key"
#: The most bytes of a job.json read: a record with its Job is a few kB (tens with many tasks); more was planted.
RECORD_LIMIT = 2**20
#: The most characters of an error job.json keeps (usagg/engine/runner.py, usagg/execute/base.py `summarize_error`
#: cut it there); `usagg status` shows no more of a record's error than that.
ERROR_CHARS = 300


def now() -> datetime:
    """The time a record notes, in UTC."""
    return datetime.now(timezone.utc)


def iso(t: datetime) -> str:
    """A time as a record holds it: ISO text with its zone."""
    return t.isoformat()


def _timestamp(value: Any) -> bool:
    """Whether `value` is a time `iso` writes: ISO text with a time zone (a duration is taken from it)."""
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


def record_problem(record: Any) -> str | None:
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


class StateConflict(UsaggError):
    """A job's state is not the one a compare-and-set expected (`RunStore.set_state(expect=...)`)."""


def read_record_file(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(job.json, None) for an intact record, (None, why) for a damaged one; FileNotFoundError passes through."""
    try:
        record = read_json(path, RECORD_LIMIT)
    except FileNotFoundError:
        raise
    except OSError as err:
        if err.errno == errno.EINVAL and err.strerror:  # read_regular: a link, FIFO or oversized file
            return None, err.strerror
        return None, f"not readable ({type(err).__name__}: {str(err)[:120]})"
    except ValueError as err:
        return None, f"not readable JSON ({type(err).__name__}: {str(err)[:120]})"
    why = record_problem(record)
    return (None, why) if why else (record, None)


def rebuilt_state(paths: JobPaths) -> str:
    """The state a rebuilt job.json gets: done when metrics.json is intact, else pending (it resumes)."""
    try:
        return "done" if read_json_checked(paths.metrics)[0] is not None else "pending"
    except FileNotFoundError:
        return "pending"


def enter_state(record: dict[str, Any], state: str, start_epoch: Callable[[], int]) -> None:
    """Set `record`'s fields for entering `state` now: running starts an attempt (started now, attempts + 1, host
    and pid, `start_epoch()` the epochs history.csv holds, finish, error, device and restart cleared); done and
    failed finish it (finished now, the duration since started; done clears the error)."""
    t = now()
    if state == "running":
        record["attempts"] = int(record.get("attempts") or 0) + 1
        record["started"] = iso(t)
        record["finished"] = None
        record["duration_s"] = None
        record["host"] = socket.gethostname()
        record["pid"] = os.getpid()
        record["error"] = None
        record["start_epoch"] = start_epoch()  # this attempt's epochs are the ones after
        record["device"] = None  # this attempt's, once it is known (`RunStore.note_device`)
        record["restarted"] = None  # this attempt's, where its last.pt is not resumed (`RunStore.note_restart`)
    elif state in ("done", "failed"):
        record["finished"] = iso(t)
        started = record.get("started")
        record["duration_s"] = round((t - datetime.fromisoformat(started)).total_seconds(), 3) if started else None
        if state == "done":
            record["error"] = None
    record["state"] = state


def write_state(
    store: RunStore, job_id: str, state: str, expect: tuple[str, ...] | None, extra: dict[str, Any]
) -> dict[str, Any]:
    """`RunStore.set_state` under the job's lock: the record read, checked (damaged: UsaggError; not in `expect`:
    StateConflict, nothing written), moved to `state` with `extra` stored, and written back; returns it."""
    record, why = store.read_record(job_id)
    if record is None:
        raise UsaggError(
            f"{store.paths(job_id).record} is damaged ({why}), so job {job_id} is not set to {state}: "
            f"`{store.repair_command}` sets it aside and rebuilds it from the plan"
        )
    if expect is not None and record.get("state") not in expect:
        raise StateConflict(
            f"job {job_id} is {record.get('state')} in {store.paths(job_id).record}, not "
            f"{' or '.join(expect)}: another process changed it, so it is not set to {state}"
        )
    enter_state(record, state, lambda: store.epochs_done(job_id)[0])
    record.update(extra)
    write_json_atomic(store.paths(job_id).record, record)
    return record


def note_running(store: RunStore, job_id: str, key: str, value: str) -> None:
    """Set `key` of a running job's record (`RunStore.note_device`, `note_restart`); a record that is no longer
    running, or is damaged, is left as it is."""
    record, _ = store.read_record(job_id)
    if record is not None and record.get("state") == "running":
        record[key] = value
        write_json_atomic(store.paths(job_id).record, record)
