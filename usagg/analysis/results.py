"""Reading and validating the tidy results table (results.csv or an imported CSV).

Every problem names the file, the row, the column and what was expected, because an
imported table is often hand-made and the user must be able to fix it in one go.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from usagg.data.fmc_uia import foreign_separator
from usagg.errors import UsaggError
from usagg.names import is_plain_name
from usagg.paradigms import paradigm_names
from usagg.results_schema import OPTIONAL_COLUMNS, RESULT_COLUMNS, is_sweep_column
from usagg.safepath import control_characters
from usagg.tasktypes import metric_bounds, metric_direction, task_type_names

COLUMNS = RESULT_COLUMNS
#: What a spreadsheet reads as the start of a formula: a name may not begin with one (`_parse_row`), and a CSV
#: cell usagg writes that does is quoted (usagg/analysis/render.py `csv_cell`).
FORMULA_START = ("=", "+", "-", "@")
#: The columns holding names (a spec's `Name`, a paradigm, a job id), refused when they begin with FORMULA_START.
_NAME_COLUMNS = ("study", "job_id", "paradigm", "group", "task", "metric")
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


class UnknownTaskType(UsaggError):
    """A row's `type` is no registered task type: `inputs.load_input` adds the plug-ins the store's jobs recorded."""


@dataclass(frozen=True)
class Row:
    """One (job, task, metric) result; `row` is the 1-based data row in the file (header excluded).

    An empty `value` (a metric undefined for that job, as the store writes it: metrics.json null, see
    usagg/engine/evaluate.py) is NaN, and so is `nan`. It is no error, since the store's own table has them; the
    analysis leaves such a seed out of its cell and names its row (`Comparison.undefined`, the exclusion notes).
    """

    study: str
    job_id: str
    paradigm: str
    group: str
    seed: int
    fraction: float
    task: str
    type: str
    metric: str
    value: float
    higher_is_better: bool
    n_train: float  # NaN when the table does not say
    steps: float = math.nan  # optimiser steps of the task in the job; NaN when the table does not say
    sweep: tuple[tuple[str, str], ...] = ()  # (swept key, value) of the row's sweep point (usagg/sweep.py)
    row: int = 0


@dataclass
class ResultsTable:
    """The validated rows plus the orderings every table and figure shares."""

    rows: list[Row]
    path: Path | None = None

    @property
    def studies(self) -> list[str]:
        return _unique(r.study for r in self.rows if r.study)

    @property
    def tasks(self) -> list[str]:
        return _unique(r.task for r in self.rows)

    @property
    def paradigms(self) -> list[str]:
        """Registered paradigms in registry order (TS, CG, AU first), then any others alphabetically."""
        present = set(r.paradigm for r in self.rows)
        known = paradigm_names()
        return [p for p in known if p in present] + sorted(present - set(known))

    @property
    def fractions(self) -> list[float]:
        return sorted(set(r.fraction for r in self.rows))

    @property
    def seeds(self) -> list[int]:
        return sorted(set(r.seed for r in self.rows))

    @property
    def job_ids(self) -> list[str]:
        return _unique(r.job_id for r in self.rows if r.job_id)

    @property
    def sweep_keys(self) -> list[str]:
        """The swept spec keys (usagg/sweep.py), a column each; [] for a study without a sweep."""
        return _unique(k for r in self.rows for k, _ in r.sweep)

    @property
    def points(self) -> list[tuple[tuple[str, str], ...]]:
        """The sweep points in table order; [()] without a sweep. Paradigms are compared within a point."""
        return _unique(r.sweep for r in self.rows)

    def at(self, point: tuple[tuple[str, str], ...]) -> ResultsTable:
        """The rows of one sweep point: a study of its own to compare (the baseline of the same point)."""
        return ResultsTable([r for r in self.rows if r.sweep == point], self.path)


def _unique(items) -> list:
    return list(dict.fromkeys(items))


@dataclass(frozen=True)
class _Place:
    """Where a record is: the file, its data row (header excluded) and the line it ends on (blank lines and quoted
    line breaks counted, as the csv reader counts them)."""

    path: Path
    row: int
    line: int

    def cell(self, column: str) -> str:
        return f"{self.path}: row {self.row} (line {self.line}), column {column!r}"


def _float(at: _Place, column: str, text: str, *, allow_empty: bool = False) -> float:
    text = text.strip()
    if not text and allow_empty:
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise UsaggError(f"{at.cell(column)}: expected a number, got {text!r}") from None


def _count(at: _Place, column: str, text: str) -> float:
    """A count (n_train, steps): NaN for an empty cell (the table does not say), else finite and >= 0; an infinite
    or NaN count would reach the tables' integer columns."""
    count = _float(at, column, text, allow_empty=True)
    if text and not (math.isfinite(count) and count >= 0):
        raise UsaggError(
            f"{at.cell(column)}: expected a finite count >= 0, or an empty cell where the table does not say, "
            f"got {text!r}"
        )
    return count


def _direction(at: _Place, metric: str, cell: str) -> bool:
    """The row's higher_is_better: the cell, which must agree with a registered metric's direction (a consistently
    wrong column would flip the sign of every Δ and the advice); an empty cell takes the registered one."""
    known = metric_direction(metric)
    hib = cell.lower()
    if not hib and known is not None:
        return known  # the store leaves it empty only for unknown metrics
    if hib not in _TRUE | _FALSE:
        raise UsaggError(f"{at.cell('higher_is_better')}: expected true or false, got {hib!r}")
    if known is not None and (hib in _TRUE) != known:
        way = "higher" if known else "lower"
        raise UsaggError(
            f"{at.cell('higher_is_better')}: expected {str(known).lower()} ({metric} is {way}-is-better, as "
            f"registered in usagg/tasktypes), got {cell!r}; the column is trusted only for metrics the registry does "
            "not know, since a wrong direction would flip the sign of every Δ"
        )
    return hib in _TRUE


def _parse_row(at: _Place, rec: dict[str, str], swept: Sequence[str] = ()) -> Row:
    def text(col: str, *, required: bool = True) -> str:
        value = (rec.get(col) or "").strip()
        if required and not value:
            raise UsaggError(f"{at.cell(col)}: expected a value, the cell is empty")
        bad = control_characters(value)
        if bad:  # a received table is data: an escape sequence in a task name would reach the terminal
            raise UsaggError(
                f"{at.cell(col)}: expected printable text on one line, got {value[:80]!r} with control "
                f"characters ({', '.join(bad)})"
            )
        if col in _NAME_COLUMNS and value.startswith(FORMULA_START) and value != "-":  # "-": no group, as Row says
            raise UsaggError(
                f"{at.cell(col)}: expected a name starting with a letter or digit, got {value[:80]!r}; a name "
                f"beginning with {' '.join(FORMULA_START)} is no name a study gives, and a spreadsheet opening "
                "usagg's CSV tables would run it as a formula"
            )
        return value

    seed_f = _float(at, "seed", text("seed"))
    if not seed_f.is_integer():
        raise UsaggError(f"{at.cell('seed')}: expected an integer seed, got {text('seed')!r}")
    fraction = _float(at, "fraction", text("fraction"))
    if not 0 < fraction <= 1:
        raise UsaggError(f"{at.cell('fraction')}: expected a share in (0, 1], got {fraction}")
    ttype = text("type")
    if ttype not in task_type_names():
        raise UnknownTaskType(
            f"{at.cell('type')}: expected a registered task type ({', '.join(task_type_names())}), got {ttype!r}"
        )
    metric = text("metric")
    hib = _direction(at, metric, text("higher_is_better", required=False))
    n_train = _count(at, "n_train", text("n_train", required=False))
    study = text("study", required=False)
    if study and not is_plain_name(study):
        raise UsaggError(
            f"{at.cell('study')}: expected a plain study name (ASCII letters, digits, '_', '.', '-'), "
            f"got {study[:80]!r}; output folders are made from it, so it must not be a path"
        )
    value = _float(at, "value", text("value", required=False), allow_empty=True)
    if math.isinf(value):  # no metric of a task type is infinite; the store writes an undefined one empty
        raise UsaggError(
            f"{at.cell('value')}: expected a finite number, or an empty cell (or nan) for a missing "
            f"result, got {text('value')!r}"
        )
    low, high = metric_bounds(metric)
    if (low is not None and value < low) or (high is not None and value > high):  # nan compares False: kept
        span = (
            f"[{low:g}, {high:g}]"
            if low is not None and high is not None
            else f">= {low:g}"
            if low is not None
            else f"<= {high:g}"
        )
        raise UsaggError(f"{at.cell('value')}: expected {metric} {span} (what {metric} can be), got {value:g}")
    steps = _count(at, "steps", text("steps", required=False))
    return Row(
        study=study,
        job_id=text("job_id", required=False),
        paradigm=text("paradigm"),
        group=text("group", required=False) or "-",
        seed=int(seed_f),
        fraction=fraction,
        task=text("task"),
        type=ttype,
        metric=metric,
        value=value,
        higher_is_better=hib,
        n_train=n_train,
        steps=steps,
        sweep=tuple((k, text(k, required=False)) for k in swept),
        row=at.row,
    )


def read_results(path: Path) -> ResultsTable:
    """Load and validate a tidy results CSV; raise UsaggError naming file, row and column on any problem."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a CSV file" if path.is_dir() else "does not exist"
        raise UsaggError(f"results table {path} {what} (expected a CSV with columns {', '.join(COLUMNS)})")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:  # a binary file
        raise UsaggError(
            f"{path} is not a UTF-8 CSV text file ({type(err).__name__}: {str(err)[:120]}); expected a tidy results "
            f"table with columns {', '.join(COLUMNS)}"
        ) from None
    return parse_results(text, path)


def parse_results(text: str, path: Path) -> ResultsTable:
    """`read_results` of the CSV text `text` that `path` holds (or would hold: a run store's table rebuilt in memory
    from its jobs, `RunStore.current_results`); errors name `path`, its rows and columns."""
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = [h.strip() for h in reader.fieldnames or []]
        refusal = foreign_separator(str(path), header, COLUMNS)
        if refusal:  # a spreadsheet's save: its decimal commas would be misread, so refused (`foreign_separator`)
            raise UsaggError(f"{refusal}; expected a tidy results table with columns {', '.join(COLUMNS)}")
        missing = [c for c in COLUMNS if c not in header and c not in OPTIONAL_COLUMNS]
        if missing:
            raise UsaggError(
                f"{path}: the header lacks column(s) {', '.join(missing)}; "
                f"expected {', '.join(COLUMNS)}, found {', '.join(header) or 'no header'}"
            )
        twice = [h for h in dict.fromkeys(header) if header.count(h) > 1]
        if twice:  # csv.DictReader would keep the last cell of a repeated column, silently
            where = ", ".join(
                f"{h!r} (columns {' and '.join(str(i) for i, c in enumerate(header, start=1) if c == h)})"
                for h in twice
            )
            raise UsaggError(f"{path}: the header gives column(s) {where} more than once; expected each column once")
        reader.fieldnames = header
        swept = [h for h in header if is_sweep_column(h)]
        for name in swept:
            _check_sweep_column(path, name)
        rows = []
        for i, rec in enumerate(reader, start=1):
            at = _Place(path, i, reader.line_num)
            if None in rec:  # DictReader's restkey: the cells past the header's last column
                raise UsaggError(
                    f"{path}: row {i} (line {at.line}) has {len(header) + len(rec[None])} cells, expected at most "
                    f"{len(header)} (one per column of the header); a cell holding a comma must be quoted"
                )
            rows.append(_parse_row(at, rec, swept))
    except csv.Error as err:  # not CSV at all
        raise UsaggError(
            f"{path} is not a UTF-8 CSV text file ({type(err).__name__}: {str(err)[:120]}); expected a tidy results "
            f"table with columns {', '.join(COLUMNS)}"
        ) from None
    if not rows:
        raise UsaggError(f"{path}: the table has a header but no rows")
    _check_consistent(path, rows)
    return ResultsTable(rows=rows, path=path)


def _check_sweep_column(path: Path, name: str) -> None:
    """A dotted header name is read as a swept spec key (`is_sweep_column`), its cells the rows' sweep point, so it
    must be a key usagg's sweeps give (usagg/sweep.py `check_block`): a received table is data, and the name
    reaches terminals, reports and spreadsheets as a column heading."""
    bad = control_characters(name)
    if bad:
        why = f"it holds control characters ({', '.join(bad)})"
    elif name.startswith(FORMULA_START):
        why = f"it begins with {name[0]}, which a spreadsheet opening usagg's CSV tables would run as a formula"
    else:
        from usagg.spec.models import Study  # lazy: only a table with sweep columns needs the spec's models
        from usagg.sweep import check_block

        try:
            check_block({name: []}, Study)
            return
        except ValueError as err:
            why = f"it is no key a study can sweep ({err})"
    raise UsaggError(
        f"{path}: header column {name[:80]!r}: a column whose name has a dot is read as a swept spec key, but {why}; "
        "expected a key `sweep:` accepts, such as training.lr_encoder, or a name without a dot for a column usagg "
        "should leave alone"
    )


def _check_consistent(path: Path, rows: list[Row]) -> None:
    """Refuse duplicates and contradictions (a metric's direction, a task's type or clinical group, its n_train at one
    fraction) instead of averaging them or keeping the first row's silently: the group makes the clusters of every
    cluster test, n_train the regime, the mixed model and the advice."""
    seen: dict[tuple, int] = {}
    direction: dict[str, Row] = {}
    task_type: dict[str, Row] = {}
    group: dict[str, Row] = {}
    n_train: dict[tuple, Row] = {}
    for r in rows:
        key = (r.sweep, r.paradigm, r.fraction, r.seed, r.task, r.metric)
        if key in seen:
            point = "".join(f", {k} {v}" for k, v in r.sweep)
            first = rows[seen[key] - 1]
            jobs = (
                f" (jobs {first.job_id} and {r.job_id}: they differ in a setting that is not a sweep key, as when "
                "`usagg run --force` adds another spec file's plan of the same study name to its store; give that "
                "spec its own `name:`, or analyse one job's rows with --results)"
                if first.job_id and r.job_id and first.job_id != r.job_id
                else ""
            )
            raise UsaggError(
                f"{path}: rows {seen[key]} and {r.row} both give {r.metric} of task {r.task!r} for "
                f"paradigm {r.paradigm}, fraction {r.fraction:g}, seed {r.seed}{point}; expected one result each{jobs}"
            )
        seen[key] = r.row
        first = direction.setdefault(r.metric, r)
        if first.higher_is_better != r.higher_is_better:
            raise UsaggError(
                f"{path}: row {r.row}, column 'higher_is_better': metric {r.metric} is {r.higher_is_better} here "
                f"but {first.higher_is_better} at row {first.row}; expected one direction per metric"
            )
        first_t = task_type.setdefault(r.task, r)
        if first_t.type != r.type:
            raise UsaggError(
                f"{path}: row {r.row}, column 'type': task {r.task!r} is {r.type} here "
                f"but {first_t.type} at row {first_t.row}; expected one type per task"
            )
        first_g = group.setdefault(r.task, r)
        if first_g.group != r.group:
            raise UsaggError(
                f"{path}: row {r.row}, column 'group': task {r.task!r} is in group {r.group} here "
                f"but {first_g.group} at row {first_g.row}; expected one clinical group per task"
            )
        if not math.isnan(r.n_train):
            _check_n_train(path, n_train.setdefault((r.sweep, r.fraction, r.task), r), r)


def _check_n_train(path: Path, first: Row, r: Row) -> None:
    """One n_train per task at a fraction (of a sweep point): every paradigm and seed trains on the same subset."""
    if first.n_train != r.n_train:
        point = "".join(f", {k} {v}" for k, v in r.sweep)
        raise UsaggError(
            f"{path}: row {r.row}, column 'n_train': task {r.task!r} at fraction {r.fraction:g}{point} has "
            f"n_train {r.n_train:g} here but {first.n_train:g} at row {first.row}; expected one n_train per task and "
            "fraction (every paradigm and seed trains on the same subset)"
        )


def write_results(rows: list[Row], path: Path) -> None:
    """Write rows as a tidy CSV atomically (used by the simulator and tests)."""
    import io

    from usagg.atomic import write_text_atomic

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    swept = _unique(k for r in rows for k, _ in r.sweep)
    writer.writerow([*COLUMNS, *swept])
    for r in rows:
        n = "" if math.isnan(r.n_train) else f"{r.n_train:g}"
        writer.writerow(
            [
                r.study,
                r.job_id,
                r.paradigm,
                r.group,
                r.seed,
                f"{r.fraction:g}",
                r.task,
                r.type,
                r.metric,
                repr(r.value),
                str(r.higher_is_better).lower(),
                n,
                "" if math.isnan(r.steps) else f"{r.steps:g}",
                *(dict(r.sweep).get(k, "") for k in swept),
            ]
        )
    write_text_atomic(Path(path), buf.getvalue())
