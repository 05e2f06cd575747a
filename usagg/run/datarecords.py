"""Which data the done jobs read, as their splits.json recorded it (usagg/data/splits.py `rows_fingerprints`), and
the texts where it is not the data a run would read now: the refusals of a run whose done jobs read other rows or
another synthetic generator, and the warning of every analysis command (compare, plot, report, advise) for a store
that mixes jobs that recorded it with jobs that did not."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from usagg.errors import UsaggError
from usagg.run.options import CLI_WORDING, Wording
from usagg.wording import counted, counted_named

if TYPE_CHECKING:
    from usagg.store import RunStore


def _fingerprint(entry: object) -> bool:
    """Whether a task's entry of splits.json holds a fingerprint as `rows_fingerprints` writes it."""
    rows = entry.get("rows") if isinstance(entry, dict) else None
    return isinstance(rows, dict) and isinstance(rows.get("sha256"), str) and isinstance(rows.get("rows"), int)


def recorded_data(store: RunStore, job_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per done job of `job_ids`, the fingerprint of each task's rows its splits.json recorded (task -> `rows`, as
    usagg/data/splits.py `rows_fingerprints` writes it); {} for one that recorded none: an older usagg's, or a file
    missing or damaged. A pure read of the store."""
    from usagg.atomic import parse_json, read_regular

    recorded: dict[str, dict[str, Any]] = {}
    for jid in job_ids:
        if store.job_state(jid) != "done":
            continue
        try:
            record = parse_json(read_regular(store.paths(jid).splits))
        except (OSError, ValueError):
            record = None  # none, or damaged: nothing recorded to compare
        # a received file is data: an entry not of `rows_fingerprints`' form is none
        prints = {t: e["rows"] for t, e in record.items() if _fingerprint(e)} if isinstance(record, dict) else {}
        recorded[jid] = prints
    return recorded


def unrecorded_results_text(store: RunStore, study: str, wording: Wording = CLI_WORDING) -> str | None:
    """The warning of every analysis command (`usagg compare`, `plot`, `report`, `advise`: usagg/cli/analysis.py
    `_warn_unrecorded`) for a store whose done jobs mix ones that recorded not which data they read (an older
    usagg's) with ones that did, or None: the first may have read other data (another generator's synthetic
    benchmark, other rows) and their numbers are compared, drawn and advised from with the others' unnoticed, as
    usagg/run/notes.py `unrecorded_data_text` warns the run that trains the others. A store all of whose done jobs
    recorded none is one usagg's and says nothing here, as one whose plan or job records do not read (the analysis
    read its table; `usagg repair` names what is damaged)."""
    try:
        recorded = recorded_data(store, store.job_ids())
    except UsaggError:
        return None
    unrecorded = [jid for jid, prints in recorded.items() if not prints]
    if not unrecorded or len(unrecorded) == len(recorded):
        return None
    n, others = len(unrecorded), len(recorded) - len(unrecorded)
    return (
        f"{counted_named(unrecorded, 'done job')} of study {study!r} {'was' if n == 1 else 'were'} "
        f"trained by an older usagg that recorded not which data {'it' if n == 1 else 'they'} read, beside "
        f"{counted(others, 'job')} that did: {'its' if n == 1 else 'their'} numbers may come from other data and are "
        f"compared here with the others'. To compare like with like, run the study under a new name "
        f"({wording.rename}) and analyse that."
    )


#: The generator version of the synthetic benchmark when splits.json began to record fingerprints (8c4e9b5) and
#: until it recorded the generator beside them: a fingerprint without "generator" was made by this one.
FINGERPRINTED_GENERATOR = 3


def recorded_generator(entry: dict[str, Any]) -> int | None:
    """The synthetic generator version a task's fingerprint recorded (`FINGERPRINTED_GENERATOR` where it predates the
    record), None for data.root's rows (a fingerprint recorded with "generator": null) or a value not a number."""
    value = entry.get("generator", FINGERPRINTED_GENERATOR)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def changed_generator_text(study: str, jobs: dict[str, int], now: int, wording: Wording) -> str:
    """The refusal of a run whose done jobs read the synthetic benchmark of another generator version
    (`StudyRun.check_done_data`): which jobs, which version, and the way on."""
    names = ", ".join(list(jobs)[:4]) + (f" and {len(jobs) - 4} more" if len(jobs) > 4 else "")
    was = ", ".join(str(v) for v in sorted(set(jobs.values())))
    return (
        f"{counted(len(jobs), 'done job')} of study {study} read the synthetic benchmark of generator {was} "
        f"(jobs {names}); this usagg generates version {now}, other images under the same names. Their results "
        "and this run's would mix two benchmarks in one comparison. To train the study on this benchmark, give it a "
        f"study of its own ({wording.rename}, or a new `name:` in the spec); the done jobs' benchmark is made only "
        "by the usagg that made them. Nothing was written."
    )


def changed_data_text(
    study: str, root: Path, jobs: list[str], then: dict[str, Any], now: dict[str, dict[str, int | str | None]]
) -> str:
    """The refusal of a run whose done jobs read other data (`StudyRun.check_done_data`): which tasks' rows
    changed and how many, which jobs, and the two ways on."""

    def task_text(task: str) -> str:
        before, after = then[task].get("rows"), now[task]["rows"]
        if before == after:
            return f"{task} has {after} rows, as then, with other images, labels or order"
        return f"{task} has {after} rows ({before} when they ran)"

    names = ", ".join(jobs[:4]) + (f" and {len(jobs) - 4} more" if len(jobs) > 4 else "")
    tasks = sorted(then)
    return (
        f"{counted(len(jobs), 'done job')} of study {study} read other data than {root} holds now: "
        + "; ".join(task_text(t) for t in tasks[:6])
        + (f"; and {len(tasks) - 6} more tasks" if len(tasks) > 6 else "")
        + f" (jobs {names}). Their results and this run's would mix two datasets in one comparison. To study this "
        f"data, give it a study of its own (`--set name={study}-2`, or a new `name:` in the spec); to go on with "
        "the done jobs, point data.root at the data they read. Nothing was written."
    )
