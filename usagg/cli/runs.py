"""`usagg run` and `usagg status`: train a study's jobs into its run store, and show where they stand.

torch, the engine and the data code are imported inside the commands only, so
`import usagg.cli.app` (and `usagg --help`) stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from usagg.errors import UsaggError

if TYPE_CHECKING:
    from rich.console import Console

    from usagg.plan import Job
    from usagg.spec.models import Study
    from usagg.store import RunStore

RUN_HELP = """Train and evaluate a study's jobs (TS / CG / AU) into its run store, resuming where it stopped.

Done jobs are skipped; failed ones only with --retry-failed; a job killed mid-way resumes from its last
epoch checkpoint. The dataset is checked first and training is refused when it has problems. Exits 1 when
a job failed.

Examples:

  usagg run studies/demo.yaml

  usagg run studies/demo.yaml --paradigm TS --devices cpu --set training.epochs=2

  usagg run studies/fmc_uia.yaml --executor slurm --set execution.slurm.partition=gpu

  usagg run studies/demo.yaml --only AU-all-f1-s0-1a2b3c4d --retry-failed

  usagg run studies/demo.yaml --dry-run
"""

STATUS_HELP = """Show each job of a run store: state, duration and primary metrics (the error for failed jobs).

Examples:

  usagg status                 (the most recently modified study under runs/)

  usagg status runs/demo
"""

#: Tasks shown per job in the summary's metrics column before eliding the rest.
MAX_TASKS_SHOWN = 4


# --------------------------------------------------------------------------- helpers (no torch)


def _overrides(sets: list[str], executor: str | None, devices: str | None) -> list[str]:
    """--executor and --devices as spec overrides (they never change a job id)."""
    out = list(sets)
    if executor is not None:
        if executor not in ("local", "slurm"):
            raise UsaggError(f"--executor {executor!r}: choose local or slurm")
        out.append(f"execution.executor={executor}")
    if devices is not None:
        d = devices.strip()
        if d in ("cpu", "auto", "cuda"):
            out.append(f"execution.devices={d}")
        else:
            try:
                ids = [int(x) for x in d.split(",") if x.strip()]
            except ValueError:
                raise UsaggError(
                    f"--devices {devices!r}: give cpu, auto, cuda or GPU indices such as 0 or 0,1"
                ) from None
            out.append(f"execution.devices=[{', '.join(map(str, ids))}]")
    return out


def _select_jobs(jobs: list[Job], paradigms: list[str], only: list[str]) -> list[Job]:
    """The planned jobs narrowed by --paradigm and --only (unknown names are errors)."""
    if paradigms:
        known = sorted({j.paradigm for j in jobs})
        bad = [p for p in paradigms if p not in known]
        if bad:
            raise UsaggError(f"--paradigm {', '.join(bad)}: this study plans {', '.join(known)}")
        jobs = [j for j in jobs if j.paradigm in paradigms]
    if only:
        ids = {j.id for j in jobs}
        bad = [i for i in only if i not in ids]
        if bad:
            raise UsaggError(
                f"--only {', '.join(bad)}: no such job in this selection; planned jobs: "
                f"{', '.join(j.id for j in jobs) or 'none'} (see `usagg run STUDY --dry-run`)"
            )
        jobs = [j for j in jobs if j.id in only]
    return jobs


def _primary_text(store: RunStore, job_id: str) -> str:
    """'task: METRIC value' per task from metrics.json ('' when there is none)."""
    from usagg.store import read_json

    path = store.job_dir(job_id) / "metrics.json"
    if not path.is_file():
        return ""
    try:
        tasks = read_json(path).get("tasks") or {}
    except ValueError:
        return "(unreadable metrics.json)"
    parts = []
    for task_id, entry in tasks.items():
        name = entry.get("primary")
        value = (entry.get("metrics") or {}).get(name)
        parts.append(f"{task_id}: {name} {'n/a' if value is None else f'{value:.4g}'}")
    if len(parts) > MAX_TASKS_SHOWN:
        parts = [*parts[:MAX_TASKS_SHOWN], f"... (+{len(parts) - MAX_TASKS_SHOWN} tasks)"]
    return "\n".join(parts)


def _alive(holder: dict[str, Any] | None) -> bool:
    """Whether a lock holder looks alive: another host is trusted; on this host its pid must exist."""
    import socket

    if not holder:
        return False
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return True
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{seconds:.1f}s"


def _summary_table(store: RunStore, job_ids: list[str], title: str) -> Any:
    from rich.markup import escape
    from rich.table import Table

    colour = {"done": "green", "failed": "red", "running": "yellow", "pending": "dim", "interrupted": "magenta"}
    table = Table(title=escape(title), show_lines=False)
    table.add_column("job", overflow="fold")
    for col in ("state", "duration", "primary metrics"):
        table.add_column(col)
    for jid in job_ids:
        record = store.job_record(jid) if (store.job_dir(jid) / "job.json").is_file() else {}
        state = record.get("state", "pending")
        if state == "running" and not _alive(store.lock_holder(jid)):
            state = "interrupted"
        detail = _primary_text(store, jid) if state == "done" else ""
        if state == "failed" and record.get("error"):
            detail = f"[red]{escape(str(record['error']))}[/]"
        else:
            detail = escape(detail)
        table.add_row(
            escape(jid), f"[{colour.get(state, 'white')}]{state}[/]", _duration(record.get("duration_s")), detail
        )
    return table


def _check_data(study: Study, console: Console) -> None:
    """Refuse to train on a dataset with problems: list them and exit 1."""
    from rich.markup import escape

    from usagg.data.check import check_dataset
    from usagg.data.source import dataset_root

    with console.status("preparing and checking the dataset ..."):
        root = dataset_root(study.data)
        splits = ("train", "val") if study.data.test_split == "val" else ("train",)
        report = check_dataset(root, study.tasks, splits=splits)
    if report.ok:
        console.print(f"dataset {escape(str(root))}: [green]no problems[/] ({len(report.tasks)} task(s))")
        return
    console.print(f"[bold red]the dataset at {escape(str(root))} has {len(report.problems)} problem(s):[/]")
    for p in report.problems[:50]:
        where = f"[cyan]{escape(p.where())}[/]: " if p.row else ""
        console.print(f"  [yellow]{p.kind}[/] {where}{escape(p.message)}", highlight=False, soft_wrap=True)
    if len(report.problems) > 50:
        console.print(f"  ... and {len(report.problems) - 50} more (usagg data check {escape(str(root))})")
    console.print("not training: fix the data (or the study's tasks) first")
    raise typer.Exit(1)


def _device_env(study: Study) -> None:
    """Tell the engine its device and threads (the in-process executor and spawned workers read these)."""
    from usagg.engine.device import DEVICE_ENV, THREADS_ENV

    devices = study.execution.devices
    if study.execution.executor == "local":
        if devices == "cpu":
            os.environ[DEVICE_ENV] = "cpu"
        elif devices == "cuda" or isinstance(devices, list):
            os.environ[DEVICE_ENV] = "cuda"  # pool workers see their one GPU as cuda:0
    if study.execution.threads:
        os.environ[THREADS_ENV] = str(study.execution.threads)


class _Display:
    """Rich progress: jobs overall, and the running job's epoch, step, loss and images/s (in-process only)."""

    def __init__(self, console: Console, n_jobs: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.jobs = self.progress.add_task("jobs", total=n_jobs, info="")
        self.current = self.progress.add_task("", total=1, info="", visible=False)
        self.failed = 0

    def on_event(self, job_id: str, event: str, info: dict[str, Any]) -> None:
        if event == "started":
            self.progress.update(self.current, description=job_id, completed=0, total=1, info="starting", visible=True)
        elif event in ("finished", "failed", "locked"):
            self.failed += event == "failed"
            self.progress.advance(self.jobs)
            text = f"last: {job_id} {info.get('state', event)}"
            if event == "failed":
                text += f" ({str(info.get('error', ''))[:60]})"
            self.progress.update(self.jobs, info=text)
            self.progress.update(self.current, visible=False)

    def on_progress(self, p: Any) -> None:
        total = max(1, p.epochs * p.steps)
        info = f"epoch {p.epoch + 1}/{p.epochs} step {p.step}/{p.steps}"
        if p.phase != "train":
            info += f" [{p.phase}]"
        if p.loss is not None:
            info += f" loss {p.loss:.4f}"
        if p.images_per_s:
            info += f" {p.images_per_s:.1f} img/s"
        self.progress.update(
            self.current,
            description=p.job_id,
            total=total,
            completed=p.epoch * p.steps + p.step,
            info=info,
            visible=True,
        )


# --------------------------------------------------------------------------- commands


def run(
    study_file: Path = typer.Argument(..., metavar="STUDY.yaml", help="The study spec."),
    paradigm: list[str] = typer.Option([], "--paradigm", help="Run only these paradigms (repeatable): TS, CG, AU."),
    only: list[str] = typer.Option([], "--only", help="Run only these job ids (repeatable)."),
    executor: str | None = typer.Option(None, "--executor", help="local or slurm (default: the spec's)."),
    devices: str | None = typer.Option(None, "--devices", help="cpu, auto, cuda, or GPU indices like 0,1."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Run failed jobs again."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would run; change nothing."),
    sets: list[str] = typer.Option([], "--set", help="Override a spec value, e.g. --set training.epochs=5."),
) -> None:
    from rich.console import Console

    from usagg.plan import plan
    from usagg.spec.load import dump_study, load_study
    from usagg.store import RunStore

    console = Console()
    study = load_study(study_file, _overrides(sets, executor, devices))
    all_jobs = plan(study)
    jobs = _select_jobs(all_jobs, paradigm, only)
    store = RunStore(Path(study.output_root) / study.name)
    states = {j.id: store.job_state(j.id) for j in jobs}
    todo = [j.id for j in jobs if states[j.id] != "done" and (states[j.id] != "failed" or retry_failed)]

    if dry_run:
        _print_dry_run(console, store, jobs, states, set(todo))
        return
    _check_data(study, console)
    store.init(dump_study(study), all_jobs)
    skipped_failed = [j for j in jobs if states[j.id] == "failed" and not retry_failed]
    console.print(
        f"study [bold]{study.name}[/]: {len(jobs)} job(s) selected, {len(todo)} to run, "
        f"{sum(s == 'done' for s in states.values())} done"
        + (f", {len(skipped_failed)} failed skipped (use --retry-failed)" if skipped_failed else "")
        + f"; store {store.root}"
    )
    if todo and study.model.weights is None:
        console.print(
            f"[bold yellow]warning:[/] model.weights is empty: the {study.model.backbone} encoder is RANDOMLY "
            "initialised, so results are far below a pretrained DINOv3 (give a local official checkpoint)"
        )
    if todo:
        _execute(study, store, todo, console)
    store.rebuild_results()
    console.print(_summary_table(store, [j.id for j in jobs], f"{study.name}: {store.root}"))
    console.print(f"results: {store.results_csv}")
    final = {j.id: store.job_state(j.id) for j in jobs}
    failed = [jid for jid, s in final.items() if s == "failed"]
    if failed:
        console.print(f"[bold red]{len(failed)} job(s) failed[/]; see jobs/<id>/error.txt under {store.root}")
        raise typer.Exit(1)


def _execute(study: Study, store: RunStore, todo: list[str], console: Console) -> None:
    from usagg.engine import progress
    from usagg.engine.runner import run_one
    from usagg.execute import make_executor

    _device_env(study)
    executor = make_executor(study.execution, store.root)
    display = _Display(console, len(todo))
    with display.progress, progress.listening(display.on_progress):
        executor.run(todo, run_one, display.on_event)


def _print_dry_run(console: Console, store: RunStore, jobs: list[Job], states: dict[str, str], todo: set[str]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"dry run: {len(todo)} of {len(jobs)} job(s) would run (store {escape(str(store.root))})")
    for col in ("job", "paradigm", "tasks", "moe", "state", "action"):
        table.add_column(col)
    for j in jobs:
        st = states[j.id]
        action = "run" if j.id in todo else ("skip (failed; --retry-failed)" if st == "failed" else "skip (done)")
        if j.id in todo and (store.job_dir(j.id) / "checkpoints" / "last.pt").is_file():
            action = "resume"
        tasks = ", ".join(j.task_ids)
        table.add_row(
            escape(j.id),
            j.paradigm,
            escape(tasks if len(tasks) < 60 else tasks[:57] + "..."),
            "yes" if j.moe else "no",
            st,
            action,
        )
    console.print(table)


def status(
    run_dir: Path | None = typer.Argument(None, help="A run store (runs/<study>); default: the latest under runs/."),
) -> None:
    from rich.console import Console

    from usagg.store import RunStore

    store = RunStore.latest("runs") if run_dir is None else RunStore(run_dir)
    if not store.exists():
        raise UsaggError(f"no run store at {store.root} (no plan.json): run `usagg run STUDY` first")
    ids = store.job_ids()
    console = Console()
    console.print(_summary_table(store, ids, f"{store.root}"))
    counts: dict[str, int] = {}
    for jid in ids:
        s = store.job_state(jid)
        counts[s] = counts.get(s, 0) + 1
    console.print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))


def register(app: typer.Typer) -> None:
    """Add `run` and `status`."""
    app.command("run", help=RUN_HELP, no_args_is_help=True)(run)
    app.command("status", help=STATUS_HELP)(status)
