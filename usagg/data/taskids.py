"""Task ids in the data that the study does not train, where that is likely a slip: named, never left out silently.

A row belongs to the task its `task_id` names. A typo there (`fetal_hed` in fetal_head.csv) made the row a task of
its own: no study trains it, so fetal_head trained and tested on one row fewer, and the only trace was a count
("7 of 8 tasks checked") or a `task_missing_in_split` that read as advice to add rows for a new task.
`stray_ids` finds such ids from the scanned rows (never an image); usagg/data/check.py reports them:

- a likely typo (`Stray.typo`): an id in no packaged catalog, close to the id of the task holding most of the other
  rows of its CSV (`names.suggest`), with fewer rows than that task: `unknown_task_id`, a problem of that task
  (`Problem.tasks`, so it blocks only a study that trains it), naming the rows and the id meant;
- given the study's task ids, any other id the study does not have that sits in a CSV whose other rows are a study
  task: an `unknown_task_id` warning with its rows and the closest study or catalog id.

An id in a CSV of its own is a task the study leaves out on purpose (a subset study, or a dataset's own tasks beyond
the catalogs): silent. Where all of a study task's rows carry another id, the study task is missing from the data,
which `validate` and `run` refuse with the id meant (usagg/data/catalog.py `_slips`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from usagg.data.fmc_uia import Problem, SplitScan
from usagg.names import suggest
from usagg.spec.load import packaged_task_ids
from usagg.wording import counted, row_ranges


@dataclass(frozen=True)
class Stray:
    """A data task id the study (or, without one, every catalog) lacks, where its rows are and who its CSVs' other
    rows belong to."""

    task_id: str
    rows: dict[tuple[str, str], frozenset[int]]  # (split, CSV as `rel` gives it) -> its rows there
    host: str | None  # the task of most of the other rows of its CSVs
    host_rows: int  # those rows
    catalogued: bool  # in a packaged catalog
    typo: bool  # likely the host's id mistyped

    @property
    def n_rows(self) -> int:
        return sum(len(r) for r in self.rows.values())

    @property
    def first(self) -> tuple[str, int]:
        """The CSV and row of its first row (train before val)."""
        split_csv = next(iter(self.rows))
        return split_csv[1], min(self.rows[split_csv])


def stray_ids(scans: dict[str, SplitScan], study: Collection[str] | None) -> list[Stray]:
    """The strays of the scanned splits (module doc): the likely typos and, with the study's task ids, the ids it
    lacks that share a CSV with a study task."""
    catalog = packaged_task_ids()
    where: dict[str, dict[tuple[str, str], frozenset[int]]] = {}
    for split, scan in scans.items():
        for task_id, declared in scan.declared.items():
            for csv, csv_rows in declared.rows.items():
                where.setdefault(task_id, {})[(split, csv)] = csv_rows
    out = []
    for task_id, rows in sorted(where.items()):
        if study is not None and task_id in study:
            continue
        others: Counter[str] = Counter()
        for other, other_rows in where.items():
            shared = sum(len(other_rows[k]) for k in rows if k in other_rows)
            if other != task_id and shared:
                others[other] = shared
        host, host_rows = others.most_common(1)[0] if others else (None, 0)
        catalogued = task_id in catalog
        n_rows = sum(len(r) for r in rows.values())
        typo = not catalogued and host is not None and host_rows > n_rows and bool(suggest(task_id, [host]))
        if typo or (study is not None and host in study):
            out.append(Stray(task_id, rows, host, host_rows, catalogued, typo))
    return out


def stray_problem(stray: Stray, study: Collection[str] | None) -> Problem:
    """The problem (a likely typo) or warning (any other stray) that names `stray`'s rows and the id meant."""
    csv_file, row = stray.first
    them = "them" if stray.n_rows > 1 else "it"
    where = f"{_counts(stray)} ({_places(stray)})"
    ours = "no task of this study and " if study is not None else ""
    if stray.typo:
        assert stray.host is not None
        csvs = "those CSVs" if len(stray.rows) > 1 else "that CSV"
        return Problem(
            "unknown_task_id",
            f"task_id {stray.task_id} in {where} is {ours}in no catalog usagg ships, and the other "
            f"{counted(stray.host_rows, 'row')} of {csvs} are task {stray.host}: did you mean {stray.host}? As "
            f"written, {'they are a task of their' if stray.n_rows > 1 else 'it is a task of its'} own, and "
            f"{stray.host} trains and tests without {them}. Correct the task_id (a task of its own, with "
            "rows in a CSV of their own, is not taken for a typo)",
            csv_file,
            row,
            tasks=(stray.host,),
        )
    # a catalog's id is a task of its own: only a study id can be the one meant; any other, a study or catalog id
    known = sorted({*(study or ()), *(() if stray.catalogued else packaged_task_ids())} - {stray.task_id})
    unknown = "" if stray.catalogued else " and no catalog usagg ships"
    csvs = "its CSVs" if len(stray.rows) > 1 else "its CSV"
    belong = "they belong" if stray.n_rows > 1 else "it belongs"
    return Problem(
        "unknown_task_id",
        f"task_id {stray.task_id} in {where} names a task this study does not have{unknown}"
        f"{suggest(stray.task_id, known)}; the other {counted(stray.host_rows, 'row')} of {csvs} are task "
        f"{stray.host}: this study trains and tests without {them}. Where {belong} to {stray.host}, correct the "
        "task_id",
        csv_file,
        row,
    )


def _counts(stray: Stray) -> str:
    """ "1 train row", "3 train rows and 1 val row"."""
    by_split: Counter[str] = Counter()
    for (split, _), rows in stray.rows.items():
        by_split[split] += len(rows)
    return " and ".join(counted(n, f"{split} row") for split, n in by_split.items())


def _places(stray: Stray) -> str:
    """ "train/csv_files/a.csv row 1; val/csv_files/a.csv rows 2-3"."""
    return "; ".join(
        f"{Path(csv).as_posix()} {'row' if len(rows) == 1 else 'rows'} {row_ranges(rows)}"
        for (_, csv), rows in stray.rows.items()
    )
