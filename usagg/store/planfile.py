"""plan.json, the store's current plan (a list of Job dumps): read as Jobs (`read_plan`) or as raw entries
(`raw_plan`: the analysis and the affinity only count or pick them), a job id listed twice refused
(`check_job_ids`), and each damage named with what mends it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from usagg.atomic import read_json
from usagg.errors import UsaggError
from usagg.plan import Job

#: What mends a damaged plan.json, as its errors say.
PLAN_FIX = "a run of the study's spec (`usagg run SPEC`, or `usagg.api.run_study(SPEC)`) writes it anew"


def plan_entry_problem(plan_json: Path, index: int, record: Any, err: ValidationError) -> str:
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
        f"does not read as a job: {field}: {first['msg']}{got}{more}; {PLAN_FIX}"
    )


def read_plan(plan_json: Path) -> list[Job]:
    """The jobs of plan.json, in plan order; UsaggError naming the damage (not JSON, not a list, an entry that is
    no Job, an id listed twice) and what mends it."""
    try:
        records = read_json(plan_json)
    except (OSError, ValueError, TypeError) as err:
        raise UsaggError(f"{plan_json} is damaged ({type(err).__name__}); {PLAN_FIX}") from None
    if not isinstance(records, list):
        raise UsaggError(
            f"{plan_json} is damaged (it holds a JSON {type(records).__name__}, not a list of jobs); {PLAN_FIX}"
        )
    jobs = []
    for i, record in enumerate(records):
        try:
            jobs.append(Job.model_validate(record))
        except ValidationError as err:
            raise UsaggError(plan_entry_problem(plan_json, i, record, err)) from None
    check_job_ids(plan_json, (j.id for j in jobs))
    return jobs


def raw_plan(plan_json: Path) -> list[Any] | None:
    """plan.json's entries as read, unchecked; None when it is missing, unreadable (a FIFO, a link, too large or too
    deep) or not a list."""
    try:
        records = read_json(plan_json)
    except (OSError, ValueError, TypeError):
        return None
    return records if isinstance(records, list) else None


def check_job_ids(plan_json: Path, ids: Iterable[object]) -> None:
    """Refuse plan.json when it lists a job id more than once: `RunStore.init` never writes one, and each job would
    be counted, run and compared (its affinity averaged) twice. The one check of the plan's ids, for `read_plan`
    (status, repair, results) and the raw reads (`RunStore.planned_count`, `RunStore.study_affinity`); a raw entry
    without a string id is left to those reads."""
    dup = sorted(i for i, n in Counter(i for i in ids if isinstance(i, str)).items() if n > 1)
    if dup:
        raise UsaggError(f"{plan_json} is damaged (it lists job ids more than once: {', '.join(dup)}); {PLAN_FIX}")
