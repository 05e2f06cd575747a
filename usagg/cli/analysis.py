"""`usagg compare`, `plot`, `report`, `advise`: the analysis of a run store or an imported results table.

Only the light analysis modules are imported here; scipy and matplotlib load inside the
commands that need them, and torch never.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from usagg.errors import UsaggError

if TYPE_CHECKING:
    from usagg.analysis.advice import Advice, AdviceRow
    from usagg.analysis.inputs import AnalysisInput

_RUN_DIR = typer.Argument(
    None, metavar="RUN_DIR", help="Run store folder (runs/<study>); default: the latest under --root."
)
_RESULTS = typer.Option(None, "--results", help="Analyse this tidy results CSV instead of RUN_DIR's results.csv.")
_ROOT = typer.Option(Path("runs"), "--root", help="Output root searched for the latest study when RUN_DIR is omitted.")
_BASELINE = typer.Option(None, "--baseline", help="Paradigm Δ is measured against (default: analysis.baseline, TS).")

COMPARE_FORMATS = ("table", "csv", "json", "markdown", "latex")
ADVISE_FORMATS = ("table", "csv", "markdown", "json")
FIGURE_FORMATS = ("png", "pdf", "svg")


def _choice(value: str, allowed: tuple[str, ...], option: str) -> str:
    if value not in allowed:
        raise UsaggError(f"{option} {value!r} is not one of {', '.join(allowed)}")
    return value


def _refuse_an_input(out: Path, results: Path | None, run_dir: Path | None) -> None:
    """--out must not replace what was read: the --results table, or any file of the run store analysed."""
    target = out.resolve()
    if results is not None and target == Path(results).resolve():
        raise UsaggError(f"--out {out} is the --results table being analysed: give another file to write to")
    if run_dir is not None and Path(run_dir).resolve() in target.parents:
        raise UsaggError(
            f"--out {out} is inside the run store {run_dir}, which only usagg run writes: give a file outside it "
            f"(e.g. compare.md)"
        )


def _check_finished(run_dir: Path | None, results: Path | None, root: Path, reader: str) -> None:
    """A run store none of whose jobs finished is one paragraph naming `reader`, the command to run once one is done
    (`RunStore.check_finished`): report, plot and advise said "compare once a job is done", and a store whose every
    job failed read "the table has a header but no rows". A --results table, or a path that is no store, is
    `load_input`'s to read or refuse."""
    if results is not None:
        return
    from usagg.analysis.inputs import resolve_run_dir
    from usagg.store import RunStore

    store = RunStore(resolve_run_dir(run_dir, root))
    if store.exists():
        store.check_finished(reader)


@contextmanager
def _analysis_input(run_dir: Path | None, results: Path | None, root: Path, reader: str) -> Iterator[AnalysisInput]:
    """What every analysis command reads (`load_input`, after `_check_finished`: `reader` is the command, for the
    message of a store with no finished job), and, once the command's output is written, the warning each owes a
    store whose done jobs mix ones that recorded not which data they read with ones that did (`_warn_unrecorded`):
    once said by compare and report only, while plot and advise drew and advised from the same jobs silently. A
    command that refuses (an exception) ends without it."""
    from usagg.analysis.inputs import load_input

    _check_finished(run_dir, results, root, reader)
    inp = load_input(run_dir, results, root)
    yield inp
    _warn_unrecorded(inp, results)


def compare_cmd(
    run_dir: Path | None = _RUN_DIR,
    baseline: str | None = _BASELINE,
    fmt: str = typer.Option(
        "table", "--format", help="table, csv (per-task Δ), json (every table as records), markdown or latex."
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Write to this file (atomically) instead of printing; never the --results table or a store file.",
    ),
    results: Path | None = _RESULTS,
    root: Path = _ROOT,
    table: str | None = typer.Option(
        None,
        "--table",
        help="With --format csv: the one table to print (default delta; factorial, scales, split, selection_gap, "
        "expectations, ...).",
    ),
) -> None:
    """Per-task metrics of every paradigm, Δ % versus the baseline with its interval, aggregates and statistics.

    Tests carry effect sizes and Holm-adjusted p; a mixed model gives each paradigm's slope of Δ per doubling of
    n_train.

    With the controls TSM and AUD, each Δ is split into an aggregation part and a MoE part; with TSM, AUD and
    CGD the 2x2 designs give both main effects and their interaction with intervals (--table factorial).

    The selection gap: Δm under model-scope selection, task-scope selection and the last epoch side by side, and
    the gap (task minus model) with its interval (--table selection_gap; JSON key "selection_gap").

    The spec's expectations (`expect:`) end the output: met, not met or not evaluated, with value and interval.

    The CSV: one row per task and paradigm, with the Δ interval (ci_low, ci_high, ci_source) and steps.

    Example: usagg compare runs/demo --format markdown --out compare.md
    """
    _choice(fmt, COMPARE_FORMATS, "--format")
    if out is not None and out.is_dir():
        raise UsaggError(f"--out {out} is a folder: give the file to write the comparison to (e.g. {out}/compare.txt)")
    if table is not None and fmt != "csv":
        raise UsaggError(
            f"--table {table} picks the one table --format csv prints; --format {fmt} prints every table: add "
            "--format csv, or leave --table out"
        )
    table = table or "delta"
    from usagg.analysis.expect import evaluate_study, expectations_table, with_expectations
    from usagg.analysis.outputs import Memoised
    from usagg.analysis.render import render
    from usagg.analysis.selection_gap import gap_tables, with_selection_gap
    from usagg.analysis.summary import check_table, compare_output

    with _analysis_input(run_dir, results, root, "usagg compare") as inp:
        check_table(inp, table, baseline)  # a name the study has no table of, refused before the slow statistics
        a = Memoised.own().analyse(inp, baseline)
        if out is not None:
            _refuse_an_input(out, results, a.inp.run_dir)
        if fmt == "csv" and table == "selection_gap":  # not one of summary's tables: read from the jobs' metrics.json
            text = "".join(render(t, "csv") for t in gap_tables(a))
        elif fmt == "csv" and table == "expectations":  # the spec's `expect:`, checked
            text = render(expectations_table(evaluate_study(a)), "csv")
        else:  # the selection gap (Δ under each selection rule), then the spec's `expect:`, checked
            text = with_expectations(with_selection_gap(compare_output(a, fmt, table), a, fmt), evaluate_study(a), fmt)
        if out is None:
            typer.echo(text, nl=False)
        else:
            from usagg.atomic import write_text_atomic

            existed = out.exists()
            write_text_atomic(out, text)
            typer.echo(f"{'replaced' if existed else 'wrote'} {out}")


def _warn_unrecorded(inp: AnalysisInput, results: Path | None) -> None:
    """One line on stderr (stdout may be a table a script reads) where the run store's done jobs mix ones that
    recorded not which data they read with ones that did (usagg/run/datarecords.py `unrecorded_results_text`); the exit
    code stays the command's. Nothing for a --results table: its rows are not the store's jobs."""
    if results is not None or inp.run_dir is None:
        return
    from usagg.run.datarecords import unrecorded_results_text
    from usagg.store import RunStore

    text = unrecorded_results_text(RunStore(inp.run_dir), inp.study)
    if text:
        typer.echo(f"warning: {text}", err=True)


def advise_cmd(
    run_dir: Path | None = _RUN_DIR,
    fmt: str = typer.Option(
        "table", "--format", help="table, csv (one row per task), markdown or json (advice, model and accuracy)."
    ),
    results: Path | None = _RESULTS,
    root: Path = _ROOT,
) -> None:
    """For every task, the paradigm to use (TS, CG, AU, AG): its own measurement's verdict where its intervals decide,
    else its expected Δ versus TS predicted from the other tasks, with its uncertainty.

    Measured first: a task's best measured paradigm is advised where its interval of Δ (seeds, plus the test set's
    bootstrap; Bonferroni over the paradigms) lies above 0; every interval below 0 advises TS; one seed (of TS or of
    the paradigms) never decides; a paradigm measured below 0 for a task is never advised for it.

    The prediction: a ridge regression per paradigm across tasks on log10 n_train, task type and affinity.

    Affinity: the measured affinity onto the task from its group under that paradigm, and from it to them.

    First, whether the model beats the trivial rules (always TS, CG, AU, AG; the majority; the highest mean Δ) held
    out by task and by clinical group; when it does not, the predicted advice is the best rule. Then the hit rates
    and the error of Δ.

    The largest fraction is used, seeds averaged; --format csv, markdown or json for files.

    Example: usagg advise runs/demo --format markdown > advice.md
    """
    _choice(fmt, ADVISE_FORMATS, "--format")
    from usagg.analysis.advice_formats import advice_json, advice_table
    from usagg.analysis.advise import advise_input

    with _analysis_input(run_dir, results, root, "usagg advise") as inp:
        adv = advise_input(inp)
        if fmt == "json":
            import json

            typer.echo(json.dumps(advice_json(adv), indent=1))
        elif fmt == "table":
            _print_advice(adv)
        else:
            from usagg.analysis.render import render

            typer.echo(render(advice_table(adv), fmt), nl=False)


def _print_advice(adv: Advice) -> None:
    """The advice as a rich table that fits a terminal (numbers never wrap), its accuracy right under it, then how
    it was made; csv and markdown carry every column of `advice_table`."""
    import math

    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table as RichTable

    from usagg.analysis.advice import MEASUREMENT
    from usagg.analysis.advice_text import accuracy_text, measured_text, verdict
    from usagg.cli.display import print_table

    others = adv.paradigms[1:]
    title = f"Advice per task (fraction {adv.fraction:g}, seeds averaged)"
    shown = RichTable(title=escape(title), box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    # the type is in csv and markdown: room for numbers; the id whole, numbers fold first
    shown.add_column("Task", overflow="fold", min_width=12, no_wrap=True)
    for col in ("n", "Advice", "Δ % ±", *(f"Δ{p} %" for p in others), "Best", "LOTO", "LOGO"):
        left = col in ("Advice", "Best", "LOTO", "LOGO")
        shown.add_column(escape(col), justify="left" if left else "right", no_wrap=True)
    for r in adv.rows:
        n = "—" if r.n_train is None or math.isnan(r.n_train) else f"{r.n_train:.0f}"
        measured = ["n/a" if r.measured[p] is None else f"{r.measured[p]:+.1f}" for p in others]
        loto = r.loto_advised + {True: " ✓", False: " ✗", None: ""}[r.loto_hit]
        logo = (r.logo_advised or "—") + {True: " ✓", False: " ✗", None: ""}[r.logo_hit]
        row = [
            r.task,
            n,
            r.advised + ("*" if r.decided_by == MEASUREMENT else ""),
            _expected(r),
            *measured,
            r.best_measured or "—",
            loto,
            logo,
        ]
        shown.add_row(*(escape(c) for c in row))
    console = Console()
    said = verdict(adv)  # whether the model beats the trivial rules comes first, then what the seeds decide
    own = measured_text(adv)
    given = "model" if adv.beats_trivial else "rule"
    console.print(f"[bold]{escape(said)}[/]", highlight=False, soft_wrap=True)
    console.print(escape(own), highlight=False, soft_wrap=True)
    print_table(console, shown)
    console.print(
        f"n: n_train; Advice: * where the task's own measurement decides it, else the {given}'s; Δ % ±: measured "
        f"± half its {100 * adv.level:.1f} % interval where *, else predicted ± the model's "
        "leave-one-task-out error; Δ<paradigm> %: measured; Best: the best measured; "
        "LOTO, LOGO: the model's advice with the task, its clinical group held out (✓ when it is the best measured).",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )
    accuracy = accuracy_text(adv)
    console.print(f"[bold]{escape(accuracy)}[/]", highlight=False, soft_wrap=True)
    for note in adv.notes:
        if note not in (accuracy, said, own):
            console.print(f"  {escape(note)}", highlight=False, soft_wrap=True)


def _expected(r: AdviceRow) -> str:
    """The advised paradigm's expected Δ: measured ± half its decision interval where the task's own measurement
    decided, else the prediction ± its model's leave-one-task-out error (TS: 0, nothing to add)."""
    from usagg.analysis.advice import MEASUREMENT

    ci = r.intervals.get(r.advised)
    m = r.measured.get(r.advised)
    if r.decided_by == MEASUREMENT and ci is not None and m is not None:
        return f"{m:+.1f}±{(ci[1] - ci[0]) / 2:.1f}"
    return f"{r.predicted:+.1f}" if r.sd is None else f"{r.predicted:+.1f}±{r.sd:.1f}"


def _default_folder(study: str, *parts: str) -> Path:
    """reports/<study>[/parts]: the study name comes from data, so no part of it below reports/ may be a planted
    symbolic link (usagg/safepath.py); reports/ itself may be a link the user made."""
    from usagg.safepath import real_folder

    return real_folder(Path("reports", study, *parts), Path("reports"), "default output folder")


def plot_cmd(
    run_dir: Path | None = _RUN_DIR,
    out: Path | None = typer.Option(None, "--out", help="Figure folder (default: reports/<study>/figures)."),
    fmt: str = typer.Option("png", "--format", help="png, pdf or svg."),
    baseline: str | None = _BASELINE,
    results: Path | None = _RESULTS,
    root: Path = _ROOT,
) -> None:
    """The study's figures: absolute performance, Δ per task, its MoE split, Δ vs n_train, by type, experts, fractions.

    Figures already drawn for the same results and settings are copied from the cache ($USAGG_CACHE).

    A figure's file already in the folder is replaced only when usagg plot or usagg report wrote it; any other file
    of a figure's name is refused (exit 2, nothing drawn), as is a folder in or around the run store.

    Example: usagg plot runs/demo --format pdf --out paper/figures
    """
    _choice(fmt, FIGURE_FORMATS, "--format")
    from usagg.analysis.outputs import Memoised
    from usagg.analysis.report import check_figure_folder, write_figures_manifest, writing

    with _analysis_input(run_dir, results, root, "usagg plot") as inp:
        memoised = Memoised.own()
        a = memoised.analyse(inp, baseline)
        folder = out or _default_folder(a.inp.study, "figures")
        ours = check_figure_folder(a, folder, fmt)  # the report's refusals: a store, a file neither wrote
        with writing(folder):  # another plot or report writing it now is refused, naming it
            figures = memoised.render_all(a, folder, fmt)
            write_figures_manifest([fig.path for fig in figures])  # a report into the folder above takes them
        for fig in figures:
            typer.echo(f"{'replaced' if fig.path in ours else 'wrote'} {fig.path}")
        if a.comp.no_delta:  # the Δ figures are left out
            typer.echo(a.comp.no_delta)


def report_cmd(
    run_dir: Path | None = _RUN_DIR,
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Report folder (default: reports/<study>/); regenerated; a folder holding files a report would write "
        "that neither usagg report nor usagg plot wrote is refused, as is one in or around the run store.",
    ),
    baseline: str | None = _BASELINE,
    results: Path | None = _RESULTS,
    root: Path = _ROOT,
    mlflow: bool = typer.Option(
        False,
        "--mlflow",
        help="Attach the report to the study's MLflow run, at the tracking URI the run store's study.yaml names "
        "(a run store is data: its URI is never written to without this flag). Only for a store you trust: a "
        "local tracking store (file:, sqlite:) decides itself where the artifacts are written.",
    ),
) -> None:
    """report.md and a self-contained report.html with every table, figure and statistic, plus tables/*.tex, *.csv.

    Reuses the statistics and figures an earlier compare or plot of the same results cached ($USAGG_CACHE).

    Example: usagg report runs/demo --out reports/demo
    """
    from usagg.analysis.outputs import Memoised
    from usagg.analysis.report import write_report

    with _analysis_input(run_dir, results, root, "usagg report") as inp:
        memoised = Memoised.own()
        a = memoised.analyse(inp, baseline)
        folder = out or _default_folder(a.inp.study)
        for path in write_report(a, folder, render=memoised.render_all):
            typer.echo(f"wrote {path}")
    if a.inp.run_dir is not None:
        _log_to_tracker(Path(a.inp.run_dir), a.inp.study, folder, mlflow)
    elif mlflow:  # asked for explicitly: never a silent no-op
        typer.echo("not logged to MLflow: --results is a table, not a run store, so no study's MLflow run is known")


def _log_to_tracker(run_dir: Path, study: str, folder: Path, opted_in: bool) -> None:
    """Attach the report to the study's MLflow run (usagg/tracking.py) when the spec as run tracks there and the
    user asked with --mlflow: the URI comes from the run store, which may have been received from elsewhere, so
    without the flag it is only named (a server would receive the report, a sqlite path would be created)."""
    from pydantic import ValidationError

    from usagg.spec.models import TrackingSpec
    from usagg.store import RunStore
    from usagg.tracking import log_report

    section = RunStore(run_dir).stored_study().get("tracking")
    try:
        tracking = TrackingSpec.model_validate(section or {})
    except ValidationError as err:
        typer.echo(f"warning: tracking section of {RunStore(run_dir).study_yaml} not usable ({err.errors()[0]['msg']})")
        return
    if tracking.mlflow is None:
        if opted_in:  # asked for explicitly: never a silent no-op
            typer.echo(
                f"not logged to MLflow: {RunStore(run_dir).study_yaml} names no tracking.mlflow, so the study has no "
                "MLflow run to attach the report to"
            )
        return
    if not opted_in:
        typer.echo(
            f"not logged to MLflow: {RunStore(run_dir).study_yaml} names the tracking URI {tracking.mlflow.uri!r}; "
            "`usagg report --mlflow` attaches the report there"
        )
        return
    if log_report(tracking, study, run_dir, folder):
        typer.echo(f"logged {folder} to MLflow ({tracking.mlflow.uri!r})")


def register(app: typer.Typer) -> None:
    """Add compare, advise, plot and report to the app."""
    app.command("compare")(compare_cmd)
    app.command("advise")(advise_cmd)
    app.command("plot")(plot_cmd)
    app.command("report")(report_cmd)
