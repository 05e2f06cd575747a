"""The tasks a dataset holds, read from its CSVs: `usagg data catalog` and the data check of `usagg validate`.

Only the index CSVs are read (usagg/data/fmc_uia.py `scan_split`), never an image, so
this is fast on the 40k-image FMC_UIA set. A task's type and num_classes are the
majority of its rows, as `usagg data check` takes them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from usagg.errors import DataError, SpecError, UsaggError
from usagg.names import is_plain_name, suggest
from usagg.safepath import printable
from usagg.wording import command, counted

if TYPE_CHECKING:
    from usagg.spec.models import SynthSpec


@dataclass(frozen=True)
class DataTask:
    """One task as the data has it: id, type and num_classes, and the splits it has rows in."""

    id: str
    type: str
    num_classes: int
    splits: tuple[str, ...]


def data_tasks(root: Path, splits: Sequence[str] = ("train", "val"), command: str | None = None) -> dict[str, DataTask]:
    """Task id -> DataTask over the splits that have CSVs (DataError when none has, naming the dataset root where
    `root` is a split of one: `command`, the one reading it, is shown with the root, as `check.refuse_a_split` says)."""
    from usagg.data.fmc_uia import csv_files, require_root, scan_split

    given, root = Path(root), Path(os.path.abspath(root))
    require_root(root)
    found: dict[str, DataTask] = {}
    present = []
    for split in splits:
        try:
            csv_files(root, split)
        except DataError:
            continue
        present.append(split)
        for task_id, samples in scan_split(root, split).samples.items():
            if not samples:
                continue
            s0 = samples[0]
            old = found.get(task_id)
            found[task_id] = DataTask(
                task_id,
                old.type if old else s0.task_type,
                old.num_classes if old else s0.num_classes,
                (*(old.splits if old else ()), split),
            )
    if not present:
        from usagg.data.check import refuse_a_split

        refuse_a_split(given, root, command)
        raise DataError(
            f"{root} has no index CSVs in {' or '.join(f'{s}/csv_files/' for s in splits)}: "
            "expected the FMC_UIA layout (check the path, or generate data with `usagg synth`)"
        )
    return dict(sorted(found.items()))


def spec_mismatches(tasks: Sequence, found: dict[str, DataTask], source: str = "the CSVs say") -> list[str]:
    """What the study's tasks (TaskSpecs) declare that the data contradicts, one sentence per task (`source`: who
    says what the data holds, as the sentence names it)."""
    out = []
    for t in tasks:
        d = found.get(t.id)
        if d is None:
            out.append(f"task {t.id}: not in the data (task ids there: {', '.join(found) or 'none'})")
        elif (d.type, d.num_classes) != (t.type, t.num_classes):
            out.append(
                f"task {t.id}: the study says {t.type} with num_classes {t.num_classes}, "
                f"{source} {d.type} with num_classes {d.num_classes}"
            )
    return out


def check_study_tasks(tasks: Sequence, root: Path, splits: Sequence[str]) -> None:
    """SpecError (exit 2) naming the study's tasks the CSVs at `root` lack or contradict, and the edit that fixes it:
    a partial copy of the data is the common case, answered by the `tasks_from.include` of the tasks it has."""
    found = data_tasks(root, splits)
    ids = [t.id for t in tasks]
    absent = [i for i in ids if i not in found]
    slips = _slips(tasks, found)
    problems = spec_mismatches([t for t in tasks if t.id in found], found)
    fixes = []
    if problems:
        fixes.append(
            "give the contradicted tasks the data's type and num_classes in the study's `tasks:` (an entry there "
            "overrides the catalog's task of the same id)"
        )
    if absent:
        problems.insert(0, _absent_text(absent, ids, found, slips))
        fixes.insert(0, _absent_fix(absent, ids, found, slips, root))
    if problems:
        raise SpecError(
            f"the study's tasks do not match the data at {root} ({'/'.join(splits)} CSVs): {'; '.join(problems)}. "
            f"To fix it, {'; and '.join(fixes)}."
        )


_NAMED = 8  # task ids named in a list before "and N more"


def _some(ids: list[str]) -> str:
    more = f" and {len(ids) - _NAMED} more" if len(ids) > _NAMED else ""
    return ", ".join(ids[:_NAMED]) + more


def _slips(tasks: Sequence, found: dict[str, DataTask]) -> dict[str, str]:
    """Study task id -> the data's id where that is the same task spelled otherwise: a data task no study task takes,
    of the same type, close to one absent id only (`suggest`), or equal to it but for case (`Fetal_Head` for
    `fetal_head`, though `fetal_heart` is close too). A data task the study uses is never a slip of another: FMC_UIA's
    IUGC and FUGC are two tasks."""
    ids = {t.id for t in tasks}
    out: dict[str, str] = {}
    for data_id, d in found.items():
        if data_id in ids:
            continue
        close = [t.id for t in tasks if t.id not in found and t.type == d.type and suggest(t.id, [data_id])]
        same = [i for i in close if i.casefold() == data_id.casefold()]
        if len(same or close) == 1:
            out[(same or close)[0]] = data_id
    return out


def _absent_text(absent: list[str], ids: list[str], found: dict[str, DataTask], slips: dict[str, str]) -> str:
    """'3 of the study's 27 tasks are not in the data (a, b (did you mean 'B'?), ...); the data has x, y': one
    sentence for all, where one per task repeated the data's whole id list each time."""
    first = [i for i in absent if i in slips] + [i for i in absent if i not in slips]  # a slip is never cut off
    named = _some([f"{i}{suggest(i, [slips[i]]) if i in slips else ''}" for i in first])
    what = "is" if len(absent) == 1 else "are"
    study = f"{len(absent)} of the study's {counted(len(ids), 'task')} {what} not in the data"
    return f"{study} ({named}); the data has {_some(list(found)) or 'no task'}"


def _absent_fix(
    absent: list[str], ids: list[str], found: dict[str, DataTask], slips: dict[str, str], root: Path
) -> str:
    """The edit for absent tasks: an id that differs from the data's in case or spelling is corrected; the study
    keeps the tasks the data has (`tasks_from.include`, as a `--set`, keeps the catalog's groups)."""
    out = []
    if slips:
        pairs = ", ".join(f"study {i}, CSVs {d}" for i, d in slips.items())
        out.append(
            f"make the ids match the CSVs' task_id column exactly, case too ({pairs}): correct the CSV or the study"
        )
    case_only = [i for i, data_id in slips.items() if i.casefold() == data_id.casefold()]
    kept = [i for i in ids if i in found or i in case_only]  # a CSV corrected for case: the same task
    if kept and len(slips) < len(absent):  # some task is missing, not misspelt
        include = command("--set", f"tasks_from.include=[{','.join(kept)}]")
        out.append(
            f"keep only the {counted(len(kept), 'task')} the data has: {include} (or the same `include:` under "
            "`tasks_from:` in the study; a study without `tasks_from` removes the others from `tasks:`)"
        )
    elif not kept:
        catalog = command("usagg", "data", "catalog", root, "--out", Path("tasks.yaml"))
        out.append(
            f"check data.root, or take the tasks from the data: {catalog}, then `tasks_from: {{catalog: tasks.yaml}}`"
        )
    return "; and ".join(out)


def check_synthetic_tasks(tasks: Sequence, spec: SynthSpec) -> None:
    """SpecError (exit 2) naming every study task the synthetic benchmark of `spec` does not generate as declared.

    The generator draws a fixed set of tasks (usagg/data/synth/tasks.py; the known-answer ones where `sizes` names
    them): a task of another id, type or num_classes was found only after generating the whole benchmark, by the
    first `usagg run`, while `validate` called the study valid."""
    from usagg.data.synth.manifest import resolve_tasks
    from usagg.data.synth.tasks import ALL_TASKS

    made = {
        i: DataTask(i, ALL_TASKS[i].type, ALL_TASKS[i].num_classes, ("train", "val")) for i in resolve_tasks(spec, None)
    }
    missing = [t.id for t in tasks if t.id not in made]
    problems = spec_mismatches([t for t in tasks if t.id in made], made, "the benchmark draws")
    if missing:
        problems.insert(0, f"it does not generate {', '.join(missing)} (it generates {', '.join(made)})")
    if problems:
        raise SpecError(
            "the study's tasks are not the synthetic benchmark's: "
            + "; ".join(problems)
            + ". Take them from its catalog: `tasks_from: {catalog: synthetic}` (with include or exclude to choose)."
        )


def read_groups(path: Path, task_ids: Sequence[str]) -> dict[str, str]:
    """Task id -> group from a YAML mapping group -> [task ids]; UsaggError on unknown or twice-grouped tasks."""
    from usagg.spec.load import read_yaml

    raw = read_yaml(path, "groups file")
    if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
        raise UsaggError(f"{path}: expected a mapping group -> list of task ids, e.g. `OB: [fetal_head, FUGC]`")
    out: dict[str, str] = {}
    for group, ids in raw.items():
        if not is_plain_name(str(group)):
            raise UsaggError(
                f"{path}: group {str(group)!r} is not a name a study can give a group (ASCII letters, digits, "
                "'_', '.', '-', starting with a letter or digit, at most 80 characters): rename it"
            )
        for tid in ids:
            tid = str(tid)
            if tid not in task_ids:
                raise UsaggError(
                    f"{path}: group {group} names task {tid!r}, which the data does not have "
                    f"(tasks: {', '.join(task_ids)})"
                )
            if tid in out:
                raise UsaggError(f"{path}: task {tid!r} is in two groups, {out[tid]} and {group}; give it one")
            out[tid] = str(group)
    return out


def catalog_text(root: Path, found: dict[str, DataTask], groups: dict[str, str] | None) -> str:
    """A task catalog (`tasks:` block, one flow mapping per task), loadable as `tasks_from: {catalog: FILE}`.

    Every value is quoted where YAML would read it as more than itself (`_flow_scalar`), and the root in the
    comment is printable and on one line, so nothing from the data or the path becomes YAML.
    """
    shown_root = printable(str(root)).replace("\n", "\\n")
    lines = [
        f"# Task catalog written by `usagg data catalog` from the CSVs of {shown_root}.",
        "# id, type and num_classes are the data's; "
        + ("groups from the groups file." if groups else "add `group:` per task (or `groups:` in the study)."),
        "# Use it from a study:   tasks_from: {catalog: path/to/this.yaml}",
        "tasks:",
    ]
    ids = {t.id: _flow_scalar(t.id) for t in found.values()}
    width = max((len(i) for i in ids.values()), default=0)
    for t in found.values():
        group = f", group: {_flow_scalar(groups[t.id])}" if groups and t.id in groups else ""
        kind = _flow_scalar(t.type)
        lines.append(f"  - {{id: {ids[t.id] + ',':<{width + 1}} type: {kind}, num_classes: {t.num_classes}{group}}}")
    return "\n".join(lines) + "\n"


def _flow_scalar(value: str) -> str:
    """`value` as a YAML scalar inside a flow mapping: plain where that reads back as the same string, else quoted
    (a `,`, `}`, `#` or `: ` would otherwise end the value and start new keys). yaml.safe_dump decides, on a
    one-item flow list whose brackets are cut off."""
    return yaml.safe_dump([value], default_flow_style=True, width=math.inf).strip()[1:-1]
