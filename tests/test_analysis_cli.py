"""usagg compare / plot / report end to end on a simulated 27-task study, and their user errors."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.cli_run import run_cli
from tests.tiny_study import small_study
from usagg.analysis.report import PLOT_MANIFEST
from usagg.analysis.simulate import load_tasks, simulate_run_store
from usagg.cli.app import app
from usagg.plan import plan
from usagg.store import RunStore

TASKS = Path(__file__).parent / "data" / "fmc_uia_tasks.yaml"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return simulate_run_store(tmp_path_factory.mktemp("runs") / "fmc", load_tasks(TASKS))


FIGURE_TASKS = {"FUGC", "IUGC", "breast_2cls", "breast_lesion", "thyroid_nodule_det", "thyroid_nodule"}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six of the 27 tasks (three groups of two, every type) for the tests that draw figures: every figure of
    the 27-task study is drawn for them too, at a fifth of the 27 tasks' cost."""
    tasks = [t for t in load_tasks(TASKS) if t["id"] in FIGURE_TASKS]
    return simulate_run_store(tmp_path_factory.mktemp("runs") / "small", tasks)


@dataclass(frozen=True)
class Result:
    returncode: int
    stderr: str


@pytest.fixture
def usagg(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """`usagg ARGS` through the real entry point (exit code, messages), in this process and in folder `cwd`."""

    def call(*args: str, cwd: Path) -> Result:
        monkeypatch.chdir(cwd)
        code, output = run_cli(list(args), monkeypatch, capsys)
        return Result(code, output)

    return call


def test_compare_table_lists_every_task_and_statistic(run_dir: Path) -> None:
    res = CliRunner().invoke(app, ["compare", str(run_dir)])
    assert res.exit_code == 0, res.output
    for task in (t["id"] for t in load_tasks(TASKS)):
        assert task in res.output
    for needle in ("ΔCG %", "ΔAU %", "all tasks (Δm)", "Spearman", "Wilcoxon", "bootstrap", "Δ < 0 versus TS: point"):
        assert needle in res.output


@pytest.mark.parametrize(("fmt", "needle"), [("markdown", "| Task |"), ("latex", "\\toprule"), ("csv", "delta_pct")])
def test_compare_formats_and_out_file(run_dir: Path, tmp_path: Path, fmt: str, needle: str) -> None:
    out = tmp_path / f"cmp.{fmt}"
    res = CliRunner().invoke(app, ["compare", str(run_dir), "--format", fmt, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert needle in " ".join(out.read_text(encoding="utf-8").split())  # Markdown cells padded to column width
    if fmt == "csv":
        assert len(out.read_text().splitlines()) == 1 + 27 * 3  # one row per task and paradigm
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_compare_with_imported_results_and_other_baseline(run_dir: Path) -> None:
    res = CliRunner().invoke(app, ["compare", "--results", str(run_dir / "results.csv"), "--baseline", "AU"])
    assert res.exit_code == 0, res.output
    assert "ΔTS %" in res.output and "versus AU" in res.output


def test_latest_study_under_root(run_dir: Path) -> None:
    res = CliRunner().invoke(app, ["compare", "--root", str(run_dir.parent), "--format", "csv"])
    assert res.exit_code == 0, res.output
    assert "fetal_head" in res.output


@pytest.mark.slow  # a simulated store, then compare, plot and report: about 3 s
def test_a_study_with_only_its_baseline_says_there_is_no_delta_and_draws_no_empty_figure(
    tmp_path: Path, usagg: Callable[..., Result]
) -> None:
    """A TS-only study (or one whose other paradigms have not run yet), the first thing a new user may analyse:
    no Δ figure drawn empty, no matplotlib warning, and every command says in one line why there is no Δ."""
    import warnings

    tasks = [t for t in load_tasks(TASKS) if t["id"] in FIGURE_TASKS]
    run = simulate_run_store(tmp_path / "runs" / "ts", tasks, paradigms=("TS",))
    said = "Only the baseline TS has results, so there is no Δ yet"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's empty-legend and singular-limit warnings included
        compared = usagg("compare", str(run), cwd=tmp_path)
        plotted = usagg("plot", str(run), "--out", str(tmp_path / "figs"), cwd=tmp_path)
        reported = usagg("report", str(run), "--out", str(tmp_path / "rep"), cwd=tmp_path)
    assert compared.returncode == plotted.returncode == reported.returncode == 0
    assert said in compared.stderr and said in plotted.stderr  # `stderr`: everything the command printed
    drawn = sorted(p.name for p in (tmp_path / "figs").iterdir())
    assert drawn == [PLOT_MANIFEST, "fig2_absolute.png", "fig_curves.png"]  # and the list of what plot drew
    md = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    summary = md.split("Contents:")[0]
    assert said in summary and "tests, slopes and splits" not in summary
    assert "- None: only the baseline TS has results" in md and "fig3_delta" not in md
    assert "IoU (1 task)," in md and "1 tasks" not in md  # the study summary counts in words (usagg/wording.py)


@pytest.mark.slow  # every figure of six tasks drawn, then the report: about 4 s
def test_plot_and_report_write_every_output(small_run: Path, tmp_path: Path) -> None:
    run_dir = small_run
    res = CliRunner().invoke(app, ["plot", str(run_dir), "--out", str(tmp_path / "figs"), "--format", "svg"])
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in (tmp_path / "figs").iterdir() if p.name != PLOT_MANIFEST)
    assert names == sorted(
        f"{n}.svg"
        for n in (
            "fig2_absolute",
            "fig3_delta",
            "fig_delta_vs_ntrain",
            "fig_task_type",
            "fig_expert_usage",
            "fig_curves",
        )
    )
    res = CliRunner().invoke(app, ["report", str(run_dir), "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    html = (tmp_path / "rep" / "report.html").read_text(encoding="utf-8")
    assert "figures/fig3_delta.png" in md and "breast_lesion" in md
    assert html.count("data:image/png;base64,") == 6  # self-contained
    for name in ("tasks", "groups", "aggregates", "statistics", "negative_transfer"):
        assert (tmp_path / "rep" / "tables" / f"{name}.tex").is_file()
        assert (tmp_path / "rep" / "tables" / f"{name}.csv").is_file()


@pytest.mark.slow  # over a second: out of `make test-fast`
def test_the_commands_share_one_memo(small_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """compare stores the statistics, plot the figures, report reuses both: the memo folder says so."""
    run_dir = small_run
    cache = tmp_path / "cache"
    monkeypatch.setenv("USAGG_CACHE", str(cache))
    plain = CliRunner().invoke(app, ["compare", str(run_dir)])
    assert plain.exit_code == 0, plain.output
    assert len(list((cache / "analysis" / "stats").iterdir())) == 1
    again = CliRunner().invoke(app, ["compare", str(run_dir)])
    assert again.output == plain.output
    assert CliRunner().invoke(app, ["plot", str(run_dir), "--out", str(tmp_path / "figs")]).exit_code == 0
    assert CliRunner().invoke(app, ["report", str(run_dir), "--out", str(tmp_path / "rep")]).exit_code == 0
    assert len(list((cache / "analysis" / "stats").iterdir())) == 1
    (entry,) = (cache / "analysis" / "figures").iterdir()
    for png in (tmp_path / "figs").glob("*.png"):
        assert (entry / png.name).read_bytes() == png.read_bytes()
        assert (tmp_path / "rep" / "figures" / png.name).read_bytes() == png.read_bytes()


def test_stale_or_missing_results_are_read_from_the_jobs_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """compare is a read: a results.csv that is missing (or older than a job's metrics.json) is rebuilt in memory
    from the done jobs, and the store, received from elsewhere or not, is left exactly as it was."""
    import os

    from tests.test_store_confinement import _store

    store, _ = _store(tmp_path)
    store.results_csv.unlink()
    before = {p.relative_to(store.root).as_posix(): p.stat().st_mtime_ns for p in store.root.rglob("*")}
    code, out = run_cli(["compare", str(store.root), "--format", "csv"], monkeypatch, capsys)
    assert code == 0 and "heart_cls,cardiac,classification,AUC,true,10,TS,0.8" in out, out
    assert {p.relative_to(store.root).as_posix(): p.stat().st_mtime_ns for p in store.root.rglob("*")} == before
    store.rebuild_results()
    old = store.results_csv.stat().st_mtime - 100
    os.utime(store.results_csv, (old, old))  # older than the job's metrics.json: stale
    written = store.results_csv.read_bytes()
    code, out = run_cli(["compare", str(store.root), "--format", "csv"], monkeypatch, capsys)
    assert code == 0 and store.results_csv.read_bytes() == written and store.results_csv.stat().st_mtime == old


def test_missing_run_dir_exits_2_without_traceback(tmp_path: Path, usagg: Callable[..., Result]) -> None:
    res = usagg("compare", str(tmp_path / "nope"), cwd=tmp_path)
    assert res.returncode == 2
    assert f"run folder {tmp_path / 'nope'} does not exist" in res.stderr
    assert "Traceback" not in res.stderr
    res = usagg("plot", cwd=tmp_path)  # no runs/ folder at all
    assert res.returncode == 2 and "no run store under runs/" in res.stderr


def test_malformed_csv_exits_2_naming_row_and_column(
    run_dir: Path, tmp_path: Path, usagg: Callable[..., Result]
) -> None:
    lines = (run_dir / "results.csv").read_text().splitlines()
    cells = lines[3].split(",")
    cells[9] = "oops"
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([lines[0], lines[1], lines[2], ",".join(cells)]) + "\n")
    res = usagg("compare", "--results", str(bad), cwd=tmp_path)
    assert res.returncode == 2
    assert f"{bad}: row 3 (line 4), column 'value': expected a number, got 'oops'" in res.stderr
    assert "Traceback" not in res.stderr
    bad.write_text(lines[0].replace(",type", "") + "\n")
    res = usagg("report", "--results", str(bad), cwd=tmp_path)
    assert res.returncode == 2 and "lacks column(s) type" in res.stderr


@pytest.mark.slow  # compare, plot and report in a fresh process (the only way to see what they import)
def test_commands_never_import_torch(small_run: Path, tmp_path: Path) -> None:
    """Run all three commands through the app in one process that refuses any torch import."""
    run_dir = small_run
    code = f"""
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("analysis imported torch")
sys.meta_path.insert(0, NoTorch())
from typer.testing import CliRunner
from usagg.cli.app import app
for args in (["compare"], ["plot", "--out", "figs"], ["report", "--out", "rep"]):
    res = CliRunner().invoke(app, [args[0], {str(run_dir)!r}, *args[1:]])
    assert res.exit_code == 0, (args, res.output, res.exception)
assert "torch" not in sys.modules
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("ok")


def test_app_import_stays_light() -> None:
    code = "import sys, usagg.cli.app; print(sorted(m for m in ('matplotlib', 'scipy', 'torch') if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert res.stdout.strip() == "[]", res.stderr


def test_compare_prints_the_interaction_slope_and_holm_and_the_csv_a_ci_per_delta(run_dir: Path) -> None:
    res = CliRunner().invoke(app, ["compare", str(run_dir)])
    assert res.exit_code == 0, res.output
    (line,) = [ln for ln in res.output.splitlines() if "mixed model: interaction, slope AU − slope CG" in ln]
    ends = r"[-+]\d+(\.\d+)?"  # 3 significant digits: +0.00412, -12.3, +176
    assert re.search(rf"95 % CI \[{ends}, {ends}\]; p = [\d.e-]+(; [^\n]*?)?\s+[\d.e-]+\s+exploratory", line)
    assert "p (Holm)" in res.output and "rank-biserial r" in res.output and "Hodges-Lehmann" in res.output
    assert "3 tasks alone in their clinical group left out of every CG aggregate" in res.output
    res = CliRunner().invoke(app, ["compare", str(run_dir), "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(res.output)))
    others = [r for r in rows if r["paradigm"] != "TS"]
    assert len(others) == 27 * 2
    assert all(float(r["ci_low"]) < float(r["delta_pct"]) < float(r["ci_high"]) for r in others)
    assert {r["ci_source"] for r in others} == {"seeds (n=3, t)"}
    assert {r["task"] for r in rows if r["in_aggregates"] == "false"} == {
        "liver_lesion_2cls", "organ_cls", "spinal_cord_injury_loc"
    }  # fmt: skip


@pytest.mark.slow  # over a second: out of `make test-fast`
def test_outputs_stay_in_their_folders_and_cleanup_never_deletes_user_files(
    small_run: Path, tmp_path: Path, usagg: Callable[..., Result]
) -> None:
    """Issue 16.1: a study name from data cannot pick the output folder; cleanup deletes only what it wrote."""
    import shutil

    run_dir = small_run

    victim = tmp_path / "victim"
    (victim / "tables").mkdir(parents=True)
    (victim / "tables" / "precious.csv").write_text("keep me\n")
    (victim / "tables" / "thesis.tex").write_text("keep me too\n")
    work = tmp_path / "work"
    work.mkdir()
    # route 1: the `study` column of a results CSV
    rows = (run_dir / "results.csv").read_text().splitlines()
    header = rows[0].split(",")
    col = header.index("study")
    for bad in (str(victim), "../victim"):
        tampered = work / "tampered.csv"
        tampered.write_text(
            "\n".join([rows[0], *(",".join([*r.split(",")[:col], bad, *r.split(",")[col + 1 :]]) for r in rows[1:])])
        )
        for command in ("report", "plot"):
            res = usagg(command, "--results", str(tampered), cwd=work)
            assert res.returncode == 2 and "plain study name" in res.stderr and "Traceback" not in res.stderr, (
                res.stderr
            )
    # route 2: `name` in a run store's study.yaml
    store = tmp_path / "store"
    shutil.copytree(run_dir, store)
    spec = store / "study.yaml"
    spec.write_text(re.sub(r"(?m)^name: .*$", f"name: {victim}", spec.read_text()))
    res = usagg("report", str(store), cwd=work)
    assert res.returncode == 2 and "study.yaml, key `name`" in res.stderr, res.stderr
    # route 3: a report written into a folder that holds the user's files, then a tampered manifest
    res = usagg("report", str(run_dir), "--out", str(victim), cwd=work)
    assert res.returncode == 0, res.stderr
    manifest = victim / ".usagg-report.json"
    tampered_list = manifest.read_text().replace('"files": [', '"files": ["../work/tampered.csv", ')
    manifest.write_text(tampered_list)
    res = usagg("report", str(run_dir), "--out", str(victim), cwd=work)
    assert res.returncode == 0, res.stderr
    assert (victim / "tables" / "thesis.tex").read_text() == "keep me too\n"
    assert (work / "tampered.csv").is_file()
    assert not (tmp_path / "reports").exists() and not list(work.glob("reports/*/../../*victim*"))
    assert (victim / "tables" / "precious.csv").read_text() == "keep me\n"


def test_compare_json_holds_every_table_as_records(run_dir: Path) -> None:
    import json

    res = CliRunner().invoke(app, ["compare", str(run_dir), "--format", "json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["baseline"] == "TS" and {"tasks", "statistics", "delta"} <= set(data["tables"])
    delta = data["tables"]["delta"]["rows"]
    assert len(delta) == 27 * 3 and {"task", "paradigm", "delta_pct", "ci_low", "ci_high"} <= set(delta[0])


def test_compare_out_never_replaces_what_it_read(run_dir: Path, tmp_path: Path, usagg: Callable[..., Result]) -> None:
    """--out naming the --results table or a file of the analysed store is refused before anything is written."""
    imported = tmp_path / "in.csv"
    imported.write_bytes((run_dir / "results.csv").read_bytes())
    res = usagg("compare", "--results", str(imported), "--format", "csv", "--out", str(imported), cwd=tmp_path)
    assert res.returncode == 2 and "--results table being analysed" in res.stderr
    assert imported.read_bytes() == (run_dir / "results.csv").read_bytes()
    study = (run_dir / "study.yaml").read_bytes()
    res = usagg("compare", str(run_dir), "--out", str(run_dir / "study.yaml"), cwd=tmp_path)
    assert res.returncode == 2 and "inside the run store" in res.stderr and "Traceback" not in res.stderr
    assert (run_dir / "study.yaml").read_bytes() == study


def test_report_refuses_to_overwrite_a_report_md_it_did_not_write(
    small_run: Path, tmp_path: Path, usagg: Callable[..., Result]
) -> None:
    """A user's own paper/report.md (no usagg manifest beside it) is never overwritten: exit 2, a paragraph naming
    the file and what to do, nothing written; a folder usagg's report wrote is regenerated as before."""
    paper = tmp_path / "paper"
    paper.mkdir()
    (paper / "report.md").write_text("my own draft\n")
    res = usagg("report", str(small_run), "--out", str(paper), cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"{paper / 'report.md'} exists" in res.stderr and "--out" in res.stderr, res.stderr
    assert (paper / "report.md").read_text() == "my own draft\n" and sorted(p.name for p in paper.iterdir()) == [
        "report.md"
    ]
    ours = tmp_path / "ours"
    assert usagg("report", str(small_run), "--out", str(ours), cwd=tmp_path).returncode == 0
    assert usagg("report", str(small_run), "--out", str(ours), cwd=tmp_path).returncode == 0  # its own: regenerated


def _done_store(root: Path) -> RunStore:
    """A real run store (plan.json of `usagg.plan`'s jobs, each job done with its metrics.json, no training) of TS
    and AU on four classification tasks in two clinical groups: enough for every analysis command, advise too."""
    tasks = tuple((t, "classification", 2, g) for t, g in zip("abcd", ("g1", "g1", "g2", "g2"), strict=True))
    jobs = plan(small_study("warn", tasks, paradigms=["TS", "AU"]))
    store = RunStore(root / "warn")
    store.init("name: warn\n", jobs)
    for job in jobs:
        au = 0.03 if job.paradigm == "AU" else 0.0
        scores = {
            t: {"type": "classification", "n_train": 40 + 10 * "abcd".index(t), "steps": 100,
                "metrics": {"AUC": 0.7 + 0.02 * "abcd".index(t) - au}}
            for t in job.task_ids
        }  # fmt: skip
        store.write_metrics(job.id, {"job_id": job.id, "tasks": scores})
        store.set_state(job.id, "done")
    return store


@pytest.mark.slow  # figures drawn: out of `make test-fast`
def test_every_analysis_command_warns_of_done_jobs_that_recorded_not_their_data(
    tmp_path: Path, usagg: Callable[..., Result]
) -> None:
    """compare and report said that some done jobs recorded not which data they read, while plot and advise,
    reading the same jobs, said nothing: all four say it once, on stderr, from one place (usagg/cli/analysis.py
    `_analysis_input`)."""
    store = _done_store(tmp_path)
    old, *recorded = store.job_ids()
    for jid in recorded:  # every job but `old` recorded its rows' fingerprint, as usagg/data/splits.py writes it
        store.paths(jid).splits.write_text(json.dumps({"a": {"rows": {"sha256": "ab" * 32, "rows": 10}}}))
    said = f"warning: 1 done job ({old}) of study 'warn' was trained by an older usagg"
    commands = [
        ["compare", str(store.root)],
        ["plot", str(store.root), "--out", str(tmp_path / "figs")],
        ["report", str(store.root), "--out", str(tmp_path / "rep")],
        ["advise", str(store.root)],
    ]
    for args in commands:
        result = usagg(*args, cwd=tmp_path)
        assert result.returncode == 0 and " ".join(result.stderr.split()).count(said) == 1, (args, result.stderr)
