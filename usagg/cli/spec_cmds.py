"""`usagg validate`, `usagg plan` and `usagg schema`: the spec and planner, seen from the shell.

Heavy imports (pydantic models, the planner) happen inside the commands so
that `usagg --help` stays instant.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from usagg.cli.display import line_console, print_table
from usagg.errors import UsaggError
from usagg.safepath import printable
from usagg.wording import counted

if TYPE_CHECKING:
    from usagg.data.splits import TaskRows
    from usagg.plan import Job, Plan
    from usagg.spec.models import Study
    from usagg.store import RunStore

StudyArg = Annotated[
    Path, typer.Argument(metavar="STUDY.yaml", help="Study spec YAML, e.g. studies/fmc_uia.yaml.", show_default=False)
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override one setting, KEY.PATH=VALUE (VALUE is YAML); repeatable. "
        "List items by index or task id: tasks\\[2].type=... or tasks\\[fetal_head].group=OB. "
        "Relative paths are from the current folder.",
        show_default=False,
    ),
]


SweepOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--sweep",
        help="Sweep a setting, KEY=V1,V2 (values YAML, comma-separated): the study runs at each value, crossed "
        "with the other --sweep keys and the spec's `sweep:`; repeatable. E.g. --sweep training.lr_encoder=1e-4,5e-4.",
        show_default=False,
    ),
]


def _load(study: Path, overrides: list[str] | None, sweeps: list[str] | None = None) -> Study:
    from usagg.spec.load import load_study, sweep_override

    return load_study(study, [*(overrides or []), *(sweep_override(s) for s in sweeps or [])])


NoDataCheckOpt = Annotated[
    bool, typer.Option("--no-data-check", help="Skip the data check `usagg run` makes (validate says so).")
]


def validate(
    study: StudyArg, set_: SetOpt = None, no_data_check: NoDataCheckOpt = False, sweep: SweepOpt = None
) -> None:
    """Check a study spec and summarise it: tasks by type and group, jobs per paradigm (as `usagg plan` counts them:
    AG's groups planned from the run store's done AU job where there is one).

    Exits 2 with the file, field path and allowed values when the spec is invalid.
    No data needs to be on disk; when it is there (`data.root`, or the synthetic benchmark
    once generated), it gets the same checks as `usagg run` and the same exit code (1 for
    problems in the study's tasks, listed); a line says when the data was not checked.
    A warning (exit 0) says when `usagg run` would refuse the study's run store, as when it holds
    another study of the same name, run from another spec file, or done jobs the --set or --sweep would hide
    from the spec's own plan, or when the spec ran into a store that a
    relative output_root does not name from the current folder; and when this host cannot submit to Slurm
    (`executor: slurm` without sbatch and srun on PATH). Slurm settings that contradict `execution.devices`
    (cuda with no GPU requested) exit 2, before the data check.

    Example: usagg validate studies/fmc_uia.yaml --set training.epochs=5
    """
    from usagg.run.options import as_written
    from usagg.run.stores import store_for, store_ran_elsewhere
    from usagg.run.studyrun import StudyRun
    from usagg.spec.load import sweep_override

    s = _load(study, set_, sweep)
    ran = store_ran_elsewhere(s, study)  # a relative output_root read from another folder than the run's
    planned = _planned(s, store_for(s) if ran is None else ran.store)
    jobs = planned.jobs
    host = _check_executor(s, study)  # before the data check, as `usagg run` checks it
    _check_weights(s)
    checked_data = _check_data_tasks(s)
    out = line_console(highlight=False)
    data_line, checked = _run_data_check(s, out, skip=no_data_check)
    # paths the user gave, escaped: `runs[v2]` is no markup tag, `out[/]x` no markup error
    where = Path(s.output_root) / s.name if ran is None else ran.store.root
    spec, store = (escape(printable(str(p))) for p in (study, where))
    elsewhere = "" if ran is None else ", where it ran; from here output_root names another: see the warning below"
    out.print(f"[green]ok[/]: {spec} is a valid study [bold]{escape(s.name)}[/] (run store {store}{elsewhere})")
    types = Counter(t.type for t in s.tasks)
    out.print(f"tasks: {len(s.tasks)} ({', '.join(f'{n} {t}' for t, n in types.items())})")
    groups = Counter(t.group or "(none)" for t in s.tasks)
    out.print(f"groups: {', '.join(f'{g} {n}' for g, n in groups.items())}")
    per = Counter(j.paradigm for j in jobs)
    out.print(
        f"jobs: {len(jobs)} ({', '.join(f'{p} {per[p]}' for p in s.paradigms)}) "
        f"= units x {counted(len(s.fractions), 'fraction')} x {counted(len(s.seeds), 'seed')}"
    )
    if s.sweep:
        from usagg.sweep import points

        out.print(
            f"sweep: {len(points(s.sweep))} points over {escape(', '.join(s.sweep))} (a job two points share, "
            "where a key does not enter its id, is planned once)"
        )
    for w in planned.waiting:
        are = "is" if len(w.needs) == 1 else "are"
        their = "its" if len(w.needs) == 1 else "their"
        out.print(f"{w.paradigm}: planned once {', '.join(w.needs)} {are} done (its groups come from {their} results)")
    data = escape(printable(str(s.data.root))) if s.data.root is not None else "synthetic benchmark"
    out.print(f"data: {data}; model: {escape(s.model.backbone)} at {s.model.image_size} px")
    if checked_data:
        out.print(f"data: the study's {counted(len(s.tasks), 'task')} match the CSVs ({checked_data})")
    out.print(data_line)
    if s.analysis.baseline not in s.paradigms:
        out.print(f"[yellow]note[/]: analysis.baseline {s.analysis.baseline} is not in paradigms; Δ needs its results.")
    if s.model.weights is None:
        out.print("[yellow]note[/]: no model.weights: the encoder will be randomly initialised.")
    elif not s.model.weights.is_file():
        weights = escape(printable(str(s.model.weights)))
        out.print(f"[yellow]note[/]: model.weights {weights} does not exist yet (needed by `usagg run`).")
    else:
        out.print(f"weights: {escape(printable(str(s.model.weights)))} fits {escape(s.model.backbone)}")
    if host is not None:
        out.print(f"[yellow]warning[/]: `usagg run` would refuse this study on this host: {escape(printable(host))}")
    try:  # the run store as `usagg run` reads it first (prepare changes nothing): refused, a warning here
        overrides = [*(set_ or []), *(sweep_override(w) for w in sweep or [])]
        run = StudyRun.prepare(s, spec_file=study, as_written=as_written(study, overrides))
        if checked is not None:  # done jobs that read other rows than the data checked
            run.check_done_data(*checked)
    except UsaggError as err:
        out.print(f"[yellow]warning[/]: `usagg run` would refuse this study now: {escape(printable(str(err)))}")


def _planned(s: Study, store: RunStore) -> Plan:
    """The study's jobs as `usagg plan` lists them: a staged paradigm (AG) planned from the store's done jobs it
    needs; without them (or where the store refuses them, which the warning of `usagg run`'s refusal says) the
    spec's own plan, the staged paradigm waiting."""
    from usagg.plan import plan_stages
    from usagg.run.evidence import store_evidence

    try:
        return plan_stages(s, store_evidence(store))
    except UsaggError:
        return plan_stages(s)


def _check_executor(s: Study, study: Path) -> str | None:
    """What `usagg run` refuses of the executor's settings before its data check: a contradiction in the spec is an
    error here too (exit 2); why this host cannot submit (no sbatch or srun) is returned, for a warning: the spec
    may be meant for another host. Only `executor: slurm` is checked (a local run's GPUs are the run's host's)."""
    if s.execution.executor != "slurm":
        return None
    from usagg.execute.slurm_checks import gpu_request_problem, host_problem

    problem = gpu_request_problem(s.execution)
    if problem is not None:
        raise UsaggError(f"{study}: {problem}")
    return host_problem()


def _check_weights(s: Study) -> None:
    """A `model.weights` file that is there must load into `model.backbone`: UsaggError (exit 2) naming the misfits.

    The same check `usagg run` makes before any job (usagg/model/weights_check.py `check_weights`);
    a file not there yet is only a note of `validate`.
    """
    if s.model.weights is not None and s.model.weights.is_file():
        from usagg.model.weights_check import check_weights

        check_weights(s.model.weights, s.model.backbone)
    elif s.model.weights is None:  # a plug-in backbone is built once on the meta device, as `usagg run` does
        from usagg.run.checks import check_model_weights

        check_model_weights(s)


def _missing(folder: Path) -> str:
    """Why `folder` is no folder, in words: "does not exist yet", or what is there instead (a file, a pipe)."""
    import os

    from usagg.spec.load import _file_kind

    try:
        mode = os.stat(folder).st_mode
    except OSError:
        return "does not exist yet"
    return f"is {_file_kind(mode)}, not a folder"


def _run_data_check(s: Study, out: Console, *, skip: bool) -> tuple[str, tuple[Path, TaskRows] | None]:
    """The data check of `usagg run` (usagg/run/checks.py `check_study_data`), where the data is there: problems in the
    study's tasks are listed and exit 1, as `run` exits. Returns the line to print (the result, or why the data
    was not checked) and the dataset root checked with its rows (None when it was not)."""
    from usagg.run.checks import RELATIVE_ROOT, DataProblems, check_study_data, data_not_checkable

    if skip:
        return "[yellow]note[/]: data not checked (--no-data-check); `usagg run` checks it first.", None
    if s.data.root is not None and not s.data.root.is_dir():
        root = escape(printable(str(s.data.root)))
        missing = _missing(s.data.root)
        return (
            f"[yellow]note[/]: data.root {root} {missing} (needed by `usagg run`); data not checked. {RELATIVE_ROOT}",
            None,
        )
    reason = data_not_checkable(s)
    if reason is not None:
        return f"[yellow]note[/]: data not checked: {escape(printable(reason))}.", None
    from usagg.cli.display import data_check_spinner, unchanged_text
    from usagg.cli.runs import print_data_problems, print_data_warnings

    try:
        with data_check_spinner() as on_progress:
            report, warnings, rows = check_study_data(s, on_progress)
    except DataProblems as err:
        print_data_problems(out, err)
        raise typer.Exit(1) from None
    root = escape(printable(str(report.root)))
    print_data_warnings(out, warnings, report)
    line = (
        f"data: {root} has no problems in this study's tasks "
        f"({len(s.tasks)} of {counted(len(report.tasks), 'task')} checked as `usagg run` checks them)"
        + (f"; {unchanged_text(report)}" if report.kept else "")
    )
    return line, (report.root, rows)


def _check_data_tasks(s: Study) -> str:
    """With a reachable `data.root`, the study's task ids, types and num_classes must match its CSVs; with
    synthetic data, the tasks the generator draws (nothing generated for that).

    SpecError (exit 2) naming each mismatching task (usagg/data/catalog.py); reads the
    CSVs only, never an image. Returns the splits checked ('' when there is no data yet).
    """
    from usagg.data.catalog import check_study_tasks, check_synthetic_tasks

    if s.data.synthetic is not None:
        check_synthetic_tasks(s.tasks, s.data.synthetic)
    if s.data.root is None or not s.data.root.is_dir():
        return ""

    splits = ("train", "val") if s.data.test_split == "val" else ("train",)
    check_study_tasks(s.tasks, s.data.root, splits)
    return "/".join(splits)


def _states(store: RunStore, jobs: list[Job]) -> dict[str, str]:
    """Job id -> state shown by the run store (as `usagg status` shows it); pending where it holds no record."""
    return {j.id: store.display_state(j.id) for j in jobs}


def _plan_store(s: Study, study: Path) -> RunStore:
    """The run store `plan` reads: the study's, or where a relative output_root read from this folder names an
    empty place, the store the spec file ran into, said on stderr (`usagg run` from here refuses, naming both; every
    job read "pending" before, as if the study had never run)."""
    from usagg.run.stores import store_for, store_ran_elsewhere

    ran = store_ran_elsewhere(s, study)
    if ran is None:
        return store_for(s)
    text = f"{ran.text(s, study)} The states and seeds read here are that store's."
    Console(stderr=True).print(f"[yellow]note[/]: {escape(printable(text))}", soft_wrap=True, highlight=False)
    return ran.store


ParadigmOpt = Annotated[
    list[str] | None, typer.Option("--paradigm", help="Only these paradigms (repeatable), as `usagg run --paradigm`.")
]
OnlyOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--only",
        help="Only the jobs selectors pick, as `usagg run --only` would run them (repeatable; different keys AND, "
        "the same key OR): a job id or its beginning up to a '-', a task, group or paradigm, or KEY=PATTERN "
        "with KEY id|task|group|paradigm; globs work.",
        show_default=False,
    ),
]


def plan_cmd(
    study: StudyArg,
    set_: SetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the jobs as a JSON list (with state).")] = False,
    paradigm: ParadigmOpt = None,
    only: OnlyOpt = None,
    sweep: SweepOpt = None,
    power: Annotated[
        bool,
        typer.Option(
            "--power",
            help="Instead of the jobs: the smallest Δ each task and the study mean can detect at the planned seeds "
            "(α 0.05, power 0.8), from the seed spread in the run store or --seed-sd.",
        ),
    ] = False,
    seed_sd: Annotated[
        float | None,
        typer.Option("--seed-sd", help="With --power: the sd of one seed's Δ (units of analysis.scale), > 0."),
    ] = None,
) -> None:
    """List the jobs a study expands into: id, paradigm, tasks, fraction, seed and run-store state.

    State is what `usagg status` shows (interrupted: running, but its process is gone);
    pending for a job the run store does not hold yet. A staged paradigm (AG) is listed as
    waiting for the jobs it needs until they are done; then its jobs are listed too.
    `--paradigm` and `--only` show the selection `usagg run` would make with them. Run from another folder than
    the spec's run (a relative output_root names an empty place from here), the states and seeds are those of the
    store the spec ran into, and a note on stderr says so.

    `--power` prints instead how small a Δ the planned seeds can detect (usagg/analysis/power.py).

    Example: usagg plan studies/fmc_uia.yaml --only task=breast_lesion --only TS
    """
    from usagg.plan import plan_stages
    from usagg.run.evidence import store_evidence
    from usagg.run.selection import make_selection
    from usagg.sweep import points_cell

    if seed_sd is not None and not power:
        raise UsaggError("--seed-sd goes with --power (the seed spread the planned seeds' power is computed from)")
    if seed_sd is not None and not (math.isfinite(seed_sd) and seed_sd > 0):
        raise UsaggError(f"--seed-sd {seed_sd:g}: expected a finite sd > 0 (0 would claim any Δ is detectable)")
    s = _load(study, set_, sweep)
    store = _plan_store(s, study)
    if power:
        from usagg.analysis.power import planned_power
        from usagg.analysis.render import render

        power_table = planned_power(s, seed_sd, store.root)
        if as_json:  # the table as records, NaN as null (as compare --format json writes tables)
            cells = power_table.rows
            finite = [[None if isinstance(v, float) and not math.isfinite(v) else v for v in r] for r in cells]
            power_rows = [dict(zip(power_table.columns, r, strict=True)) for r in finite]
            out = {"title": power_table.title, "rows": power_rows, "notes": power_table.notes}
            typer.echo(json.dumps(out, indent=1))
            return
        typer.echo(render(power_table, "table"), nl=False)
        return
    planned = plan_stages(s, store_evidence(store))
    selection = make_selection(planned.jobs, paradigm or (), only or (), planned.waiting)
    jobs = selection.pick(planned.jobs, planned.waiting)
    waiting = [w for w in planned.waiting if selection.takes_waiting(w)]
    states = _states(store, jobs)
    if as_json:
        records = [{**j.model_dump(mode="json"), "state": states[j.id]} for j in jobs]
        records += [{"id": None, "paradigm": w.paradigm, "state": "waiting", "needs": list(w.needs)} for w in waiting]
        typer.echo(json.dumps(records, indent=1))
        return
    count = f"{len(jobs)} jobs" if selection.everything else f"{len(jobs)} of {len(planned.jobs)} jobs selected"
    title = f"{s.name}: {count}" + (f", {counted(len(waiting), 'paradigm')} waiting" if waiting else "")
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, collapse_padding=True)
    rows = [
        (
            j.id,
            j.paradigm,
            ", ".join(j.task_ids) if len(j.tasks) <= 4 else f"{len(j.tasks)} tasks",
            f"{j.fraction:g}",
            str(j.seed),
            *([escape(points_cell(j.sweep))] if s.sweep else []),
            states[j.id],
        )
        for j in jobs
    ]
    table.add_column("id", no_wrap=True, overflow="fold", ratio=3)  # an id folds only past the width, then tasks
    table.add_column("paradigm", no_wrap=True)
    table.add_column("tasks", overflow="fold", ratio=2)
    for col in ("fraction", "seed"):
        table.add_column(col, no_wrap=True)
    if s.sweep:
        table.add_column("sweep point", overflow="fold", ratio=2)
    table.add_column("state", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    for w in waiting:
        blank = ("", "", "") if s.sweep else ("", "")
        table.add_row(f"{w.paradigm}-*", w.paradigm, f"planned once {', '.join(w.needs)} is done", *blank, "waiting")
    print_table(Console(), table)


def schema(
    out: Annotated[Path | None, typer.Option("--out", help="Write to this file instead of stdout.")] = None,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print the field reference of docs/spec.md instead.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out file.")] = False,
) -> None:
    """Print the JSON Schema of a study spec (YAML language servers validate with it).

    Example: usagg schema --out study.schema.json
    """
    if out is not None:
        _check_out(out, force)
    if markdown:
        from usagg.spec.reference import reference_markdown

        text = reference_markdown()
    else:
        from usagg.spec.models import Study

        text = json.dumps(Study.model_json_schema(), indent=2) + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        from usagg.atomic import write_text_atomic

        write_text_atomic(out, text)
        Console(stderr=True).print(f"wrote {escape(printable(str(out)))}")


def _check_out(out: Path, force: bool) -> None:
    """UsaggError, before anything is written, for an --out that exists and is not a regular file (a link, a pipe,
    a folder: a write would go through it or block) or that exists without --force (its content would be lost)."""
    import os
    import stat

    from usagg.spec.load import _file_kind

    try:
        mode = os.lstat(out).st_mode
    except FileNotFoundError:
        return
    shown = printable(str(out))
    if not stat.S_ISREG(mode):
        raise UsaggError(
            f"--out {shown} is {_file_kind(mode)}, not a file; nothing was written. Give the path of a file to write."
        )
    if not force:
        raise UsaggError(
            f"--out {shown} already exists; nothing was written. Pass --force to replace it, or give another file."
        )


def register(app: typer.Typer) -> None:
    """Add validate, plan and schema to the app."""
    app.command("validate")(validate)
    app.command("plan")(plan_cmd)
    app.command("schema")(schema)
