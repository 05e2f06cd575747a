"""Paths and values from data (a spec, a results table, a run store, a cache manifest) never lead a write elsewhere.

The policies of usagg/safepath.py, and each place they guard: `output_root` and the Slurm batch script, the
analysis memo's manifest, the stored `data.cache_dir`, the report and plot output folders, a plan's job ids,
and HTML in task and group names.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.cli_run import run_cli
from usagg.analysis.inputs import load_input
from usagg.analysis.memo import FigureFile, Memo
from usagg.analysis.outputs import Memoised
from usagg.analysis.report import write_report
from usagg.analysis.results import read_results, write_results
from usagg.analysis.simulate import load_tasks, simulate_run_store
from usagg.analysis.summary import analyse
from usagg.cli.app import app
from usagg.errors import SpecError
from usagg.execute.slurm import SlurmExecutor
from usagg.safepath import UnsafePath, check_component, check_text, confined, inside, real_folder
from usagg.spec.load import load_study
from usagg.spec.models import SlurmSpec
from usagg.store import RunStore

TASKS = Path(__file__).parent / "data" / "fmc_uia_tasks.yaml"
REPO = Path(__file__).resolve().parent.parent
INJECTED = "touch INJECTED #"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "user-cache"
    monkeypatch.setenv("USAGG_CACHE", str(folder))
    return folder


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A simulated run store of six tasks, as received: runs/<study>/ under a working folder."""
    return simulate_run_store(tmp_path / "work" / "runs" / "recv", load_tasks(TASKS)[:6])


def _set_stored(store: Path, key: str, value: object) -> None:
    study = yaml.safe_load((store / "study.yaml").read_text())
    study.setdefault(key.split(".")[0], {})[key.split(".")[1]] = value
    (store / "study.yaml").write_text(yaml.safe_dump(study))


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")} if folder.exists() else set()


# --------------------------------------------------------------------------- the policies


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\x00b", "a\x1b[2Jb", "a\x7fb", "a\u2028b", "a\x85b"])
def test_value_policy_refuses_control_characters(value: str) -> None:
    with pytest.raises(UnsafePath, match=r"^results\.csv row 3: .* contains control characters"):
        check_text(value, "results.csv row 3")
    assert check_text("runs/my study-ü.1", "x") == "runs/my study-ü.1"


@pytest.mark.parametrize(
    ("value", "why"),
    [("../x", "separator"), ("a/b", "separator"), ("a\\b", "separator"), ("..", "names a folder"),
     (".", "names a folder"), ("", "empty"), ("x\ny", "control characters")],
)  # fmt: skip
def test_component_policy(value: str, why: str) -> None:
    with pytest.raises(UnsafePath, match=f"manifest.json, field 'file': .* is not a single file name .*{why}"):
        check_component(value, "manifest.json, field 'file'")
    assert check_component("fig3_delta.png", "x") == "fig3_delta.png"
    assert check_component("a..b", "x") == "a..b"


def test_path_policy_resolves_links_and_names_the_folder(tmp_path: Path) -> None:
    root = tmp_path / "store"
    (root / "jobs").mkdir(parents=True)
    (root / "jobs" / "out").symlink_to(tmp_path)
    assert confined("jobs/a/x.json", root, "plan.json") == root / "jobs" / "a" / "x.json"
    assert confined(root / "jobs" / "b", root, "plan.json") == root / "jobs" / "b"
    for value in ("../x", "jobs/../../x", "/etc/passwd", "jobs/out/x", "jobs/out"):
        with pytest.raises(UnsafePath, match=rf"^plan\.json: .* resolves to .*, outside {root}, the folder it must"):
            confined(value, root, "plan.json")
    assert inside(root, root) and not inside(tmp_path / "store-other", root)  # a prefix is not inside


def test_real_folder_refuses_a_link_below_its_base_only(tmp_path: Path) -> None:
    base, elsewhere = tmp_path / "reports", tmp_path / "elsewhere"
    (base / "s").mkdir(parents=True)
    elsewhere.mkdir()
    assert real_folder(base / "s" / "figures", base, "out") == base / "s" / "figures"  # not there yet: fine
    (base / "s" / "figures").symlink_to(elsewhere)
    with pytest.raises(UnsafePath, match=r"^out: .*/reports/s/figures is a symbolic link \(to .*elsewhere\)"):
        real_folder(base / "s" / "figures", base, "out")
    linked_base = tmp_path / "linked"
    linked_base.symlink_to(base)
    assert real_folder(linked_base / "s", linked_base, "out") == linked_base / "s"  # the user's own link
    with pytest.raises(UnsafePath, match="is not inside"):
        real_folder(tmp_path / "x", base, "out")


# --------------------------------------------------------------------------- output_root and the Slurm script


def test_output_root_with_a_newline_is_a_spec_error(tmp_path: Path) -> None:
    spec = yaml.safe_load((REPO / "studies" / "demo.yaml").read_text())
    spec["output_root"] = f"runs\n{INJECTED}"
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError, match=r"output_root: 'runs\\ntouch INJECTED #' contains control characters \(\\n\)"):
        load_study(path)


def _stub_sbatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`sbatch` and `srun` on PATH: sbatch keeps the batch script it is given and refuses the submission."""
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    kept = tmp_path / "submitted.sh"
    (fakebin / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {kept}\necho "sbatch: error: stub" >&2\nexit 1\n')
    (fakebin / "srun").write_text("#!/bin/sh\nexit 1\n")
    for f in fakebin.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fakebin}{os.pathsep}{os.environ['PATH']}")
    return kept


def test_slurm_executor_refuses_a_folder_that_would_inject_a_script_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = _stub_sbatch(tmp_path, monkeypatch)
    root = tmp_path / f"runs\n{INJECTED}" / "demo"  # an output_root that got past the spec
    executor = SlurmExecutor(root, SlurmSpec(), cluster="slurm")
    with pytest.raises(UnsafePath, match=r"^Slurm executor, log folder \(#SBATCH --output/--error\): .*\\n"):
        executor.run(["TS-a-f1-s0"], print)
    assert not kept.exists()  # nothing reached sbatch
    assert not (tmp_path / "INJECTED").exists()
    with pytest.raises(UnsafePath, match=r"^Slurm executor, job name \(#SBATCH --job-name\): 'usagg-x\\ny'"):
        named = SlurmExecutor(tmp_path / "runs" / "x\ny", SlurmSpec(), cluster="slurm")
        named.folder = tmp_path / "slurm"  # a clean folder: the name is checked on its own
        named.make_submitit_executor()


def test_slurm_script_of_a_plain_store_has_one_line_per_parameter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _stub_sbatch(tmp_path, monkeypatch)
    ex = SlurmExecutor(tmp_path / "runs" / "demo", SlurmSpec(), cluster="slurm").make_submitit_executor()
    script = ex._executor._make_submission_file_text("CMD", "uid")  # type: ignore[attr-defined]
    header = script.split("# command")[0]
    assert all(line.startswith(("#", "")) for line in header.splitlines())
    assert [line for line in header.splitlines() if line and not line.startswith("#")] == []
    assert re.search(rf"#SBATCH --output={tmp_path}/runs/demo/slurm/\d{{8}}-\d{{6}}-[0-9a-f]{{8}}/%j_0_log.out", script)


def test_each_slurm_submission_gets_a_new_empty_folder_so_no_planted_result_is_unpickled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """submitit takes a `<job id>_<task>_0_result.pkl` in its folder as the finished job's result and unpickles it:
    a received store could carry such files for a window of job ids (code run on `usagg run`), and a store copied
    from another cluster could carry real ones for overlapping ids. Every submission writes into a folder of its own,
    made new and empty, so neither can ever be read."""
    _stub_sbatch(tmp_path, monkeypatch)
    slurm = tmp_path / "runs" / "demo" / "slurm"
    slurm.mkdir(parents=True)
    for job in range(4200, 4300):
        (slurm / f"{job}_0_result.pkl").write_bytes(b"planted")  # what a received store may hold
    executor = SlurmExecutor(tmp_path / "runs" / "demo", SlurmSpec(), cluster="slurm")
    first, second = executor.make_submitit_executor(), executor.make_submitit_executor()
    folders = {Path(first.folder), Path(second.folder)}
    assert len(folders) == 2 and all(f.parent == slurm and list(f.iterdir()) == [] for f in folders)


# --------------------------------------------------------------------------- the analysis memo and the stored cache


def _plant_entry(memo: Memo, key: str, folder: Path, file: str) -> Path:
    """Store a real entry for `key`, then make its manifest name `file`; returns the entry folder."""

    def render(out: Path) -> list[FigureFile]:
        out.mkdir(parents=True, exist_ok=True)
        (out / "fig.png").write_bytes(b"png")
        return [FigureFile("fig", out / "fig.png", "a figure")]

    memo.cached_figures(key, "png", 60, folder, render)
    (entry,) = (memo.root / "figures").iterdir()
    (entry / "manifest.json").write_text(json.dumps([{"name": "fig", "file": file, "caption": "c"}]))
    return entry


def test_a_manifest_entry_outside_its_entry_is_refused(tmp_path: Path) -> None:
    memo, out = Memo(tmp_path / "cache"), tmp_path / "work" / "figures"
    entry = _plant_entry(memo, "k", tmp_path / "first", "../x")
    (entry.parent / "x").write_text("not a figure")  # what `entry/../x` would copy from
    before = _files(tmp_path)

    def refuse(_out: Path) -> list[FigureFile]:
        raise AssertionError("drawn although the entry was refused")

    with pytest.raises(UnsafePath, match=r"manifest\.json, item 'fig', field 'file': '\.\./x' is not a single file"):
        memo.cached_figures("k", "png", 60, out, refuse)
    assert _files(tmp_path) == before  # nothing written, in the output folder or beside it
    assert not (out.parent / "x").exists()


def test_received_store_cannot_point_the_memo_at_its_own_cache(
    store: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The findings end to end: study.yaml names a cache inside the store, whose analysis/stats is a link to a
    folder of the user's and whose figure entry is forged for the key the results give. `usagg compare` and
    `plot` use neither: the memo lives in the user's own cache, nothing outside is pruned, nothing is written
    into the store, and the figures are drawn, not copied from the forged entry."""
    from usagg.analysis.figures import FIGURE_DPI
    from usagg.analysis.memo import KEEP, input_key

    work = store.parent.parent
    monkeypatch.chdir(work)
    _set_stored(store, "data.cache_dir", str(Path("runs", "recv", "c")))  # inside the store, as a shipped one is
    victim = tmp_path / "victim"
    victim.mkdir()
    for i in range(KEEP + 6):
        (victim / f"file{i}.txt").write_text("the user's")
        os.utime(victim / f"file{i}.txt", (1_600_000_000 + i, 1_600_000_000 + i))  # the oldest would be pruned
    (store / "c" / "analysis").mkdir(parents=True)
    (store / "c" / "analysis" / "stats").symlink_to(victim, target_is_directory=True)
    inp = load_input(store, None)
    key = input_key(inp, analyse(inp).comp.baseline)
    forged = store / "c" / "analysis" / "figures" / _entry_name(key, FIGURE_DPI)
    forged.mkdir(parents=True)
    (forged / "fig3_delta.png").write_bytes(b"forged")
    (forged / "manifest.json").write_text(json.dumps([{"name": "fig3", "file": "fig3_delta.png", "caption": "c"}]))
    in_store = _files(store)
    assert Memoised.own().memo.root == cache / "analysis"
    assert CliRunner().invoke(app, ["compare", "runs/recv"]).exit_code == 0
    res = CliRunner().invoke(app, ["plot", "runs/recv", "--out", str(tmp_path / "figs")])
    assert res.exit_code == 0, res.output
    assert len(list(victim.iterdir())) == KEEP + 6  # nothing pruned or written through the link
    assert _files(store) == in_store  # a read that writes nothing into the store it reads
    assert (tmp_path / "figs" / "fig3_delta.png").read_bytes()[:4] == b"\x89PNG"  # drawn, not the forged entry
    assert list((cache / "analysis" / "stats").glob("*.json"))


def _entry_name(key: str, dpi: int) -> str:
    from usagg.analysis.memo import _version, digest

    return digest(key, "png", dpi, _version("matplotlib"))


# --------------------------------------------------------------------------- report and plot output folders


@pytest.mark.slow
def test_plot_refuses_a_planted_figures_link(store: Path, cache: Path, tmp_path: Path) -> None:
    """`usagg plot runs/<study>` with reports/<study>/figures a link elsewhere: exit 2, a named error, no write."""
    work = store.parent.parent
    victim = tmp_path / "victim"
    victim.mkdir()
    (work / "reports" / "recv").mkdir(parents=True)
    (work / "reports" / "recv" / "figures").symlink_to(victim)
    env = {**os.environ, "MPLBACKEND": "Agg", "USAGG_CACHE": str(cache)}
    res = subprocess.run(
        [sys.executable, "-m", "usagg", "plot", "runs/recv"], cwd=work, capture_output=True, text=True, env=env
    )
    assert res.returncode == 2, res.stderr
    assert "reports/recv/figures is a symbolic link" in res.stderr and "Traceback" not in res.stderr
    assert list(victim.iterdir()) == []


def test_report_refuses_planted_links_and_writes_nothing(store: Path, cache: Path, tmp_path: Path) -> None:
    a = analyse(load_input(store, None))
    victim = tmp_path / "victim"
    victim.mkdir()
    for sub in ("figures", "tables"):
        folder = tmp_path / f"rep-{sub}"
        folder.mkdir()
        (folder / sub).symlink_to(victim)
        with pytest.raises(UnsafePath, match=rf"usagg report: output folder: .*rep-{sub}/{sub} is a symbolic link"):
            write_report(a, folder, render=lambda *_: [])
        assert _files(folder) == {sub} and list(victim.iterdir()) == []


def test_report_default_folder_refuses_a_planted_study_link(
    store: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = store.parent.parent
    monkeypatch.chdir(work)
    victim = tmp_path / "victim"
    victim.mkdir()
    (work / "reports").mkdir()
    (work / "reports" / "recv").symlink_to(victim)
    res = CliRunner().invoke(app, ["report", "runs/recv"])
    assert isinstance(res.exception, UnsafePath) and "reports/recv is a symbolic link" in str(res.exception)
    assert list(victim.iterdir()) == []


# --------------------------------------------------------------------------- HTML in names, job ids in a plan


def test_html_in_task_and_group_names_is_escaped_in_the_report(store: Path, cache: Path, tmp_path: Path) -> None:
    table = read_results(store / "results.csv")
    task, group = table.rows[0].task, table.rows[0].group
    evil_task, evil_group = "<img src=x onerror=alert(1)>", "<script>alert(2)</script>"
    rows = [
        dataclasses.replace(r, task=evil_task if r.task == task else r.task, group=evil_group if r.group == group
                            else r.group)
        for r in table.rows
    ]  # fmt: skip
    csv = tmp_path / "imported.csv"
    write_results(rows, csv)
    a = analyse(load_input(None, csv))
    folder = tmp_path / "rep"
    write_report(a, folder, render=lambda *_: [])
    md, page = (folder / "report.md").read_text(), (folder / "report.html").read_text()
    for text in (md, page):
        assert "<img" not in text and "<script" not in text
    assert "&lt;img src=x onerror=alert(1)>" in md and "&lt;script>alert(2)&lt;/script>" in md
    assert "Δ<0" in md  # text that opens no tag reads as before


@pytest.mark.parametrize("column", ["task", "group", "paradigm"])
def test_a_terminal_escape_in_a_results_cell_is_refused_by_row_and_column(
    store: Path, tmp_path: Path, column: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An OSC sequence in a received results.csv never reaches the terminal: the cell is named, not printed raw."""
    rows = read_results(store / "results.csv").rows
    rows[1] = dataclasses.replace(rows[1], **{column: "breast\x1b]0;PWNED\x07cls"})
    csv = tmp_path / "escaped.csv"
    write_results(rows, csv)
    code, out = run_cli(["compare", "--results", str(csv)], monkeypatch, capsys)
    assert code == 2 and "\x1b" not in out and "Traceback" not in out, out
    said = " ".join(out.split())
    assert f"row 2 (line 3), column '{column}': expected printable text on one line" in said
    assert r"control characters (\x1b, \x07)" in said


@pytest.mark.parametrize(
    ("tasks", "said"),
    [
        (5, "key `tasks`: expected a list of tasks, got int 5"),
        ([{"id": [1]}], "tasks[0].id: expected text, got list [1]"),
        ([{"id": "FUGC", "metric": [1]}], "tasks[0].metric: expected text, got list [1]"),
    ],
)
def test_a_malformed_tasks_block_in_a_received_study_is_a_named_error(
    store: Path,
    cache: Path,
    tasks: object,
    said: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    study = yaml.safe_load((store / "study.yaml").read_text())
    study["tasks"] = tasks
    (store / "study.yaml").write_text(yaml.safe_dump(study))
    code, out = run_cli(["compare", str(store)], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in out, out
    assert f"{store / 'study.yaml'}, {said}" in " ".join(out.split())


def test_escape_sequences_from_a_received_study_never_reach_the_terminal(
    store: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An expectation's name (compare, report) and a name in an error message are refused or shown with their
    control characters as escapes, never written raw (a job's recorded error: tests/test_store_confinement.py)."""
    study = yaml.safe_load((store / "study.yaml").read_text())
    study["expect"] = [{"name": "clear\x1b[2J", "metric_of": "TS", "tasks": {"type": "segmentation"}, "above": 0.1}]
    (store / "study.yaml").write_text(yaml.safe_dump(study))
    code, out = run_cli(["compare", str(store)], monkeypatch, capsys)
    assert code == 2 and "\x1b" not in out and "Traceback" not in out, out
    assert "expect.0.name" in out and r"contains control characters (\x1b)" in out
    code, out = run_cli(["compare", str(store / "jobs" / "nope\x1b[2J")], monkeypatch, capsys)
    assert code == 2 and "\x1b" not in out and r"nope\x1b[2J does not exist" in out


def test_a_bidirectional_control_in_a_name_is_a_control_character() -> None:
    """U+202E shows `thyroid_\u202eengineb` as another name ("Trojan Source"): refused where names are checked."""
    with pytest.raises(UnsafePath, match=r"contains control characters \(\\u202e\)"):
        check_text("thyroid_\u202eengineb", "results.csv row 2")


def test_md_text() -> None:
    from usagg.analysis.report import md_text

    assert md_text("a <b>x</b> & &amp; &#60; n < 4, Δ<0") == "a &lt;b>x&lt;/b> & &amp;amp; &amp;#60; n < 4, Δ<0"
    assert md_text("<!-- c -->\n# heading") == "&lt;!-- c --> # heading"


def test_a_job_id_in_the_plan_cannot_read_outside_the_store(tmp_path: Path) -> None:
    from usagg.store import RunStore

    store = tmp_path / "runs" / "s"
    store.mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "affinity.json").write_text("{}")
    record = {"id": "../../outside", "hash": "0", "fraction": 1.0, "affinity": {"every": 5}, "tasks": [{"id": "a"}]}
    (store / "plan.json").write_text(json.dumps([record]))
    with pytest.raises(UnsafePath, match=r"plan\.json, job id: '\.\./\.\./outside' is not a single file name"):
        RunStore(store).study_affinity()


@pytest.mark.slow
def test_report_sends_nothing_to_the_mlflow_uri_a_store_names_unless_asked(
    store: Path, cache: Path, tmp_path: Path, mlflow_template: Path
) -> None:
    """The stored study's tracking URI decides where the report goes: a received store is data, so `usagg report`
    only names it; `--mlflow` is the user's instruction to write there."""
    from mlflow.tracking import MlflowClient

    db = tmp_path / "elsewhere" / "mlflow.db"
    db.parent.mkdir()
    shutil.copyfile(mlflow_template, db)  # an empty store, migrated once per worker (tests/conftest.py)
    _set_stored(store, "tracking.mlflow", {"uri": f"sqlite:///{db}"})
    res = CliRunner().invoke(app, ["report", str(store), "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    assert f"not logged to MLflow: {store / 'study.yaml'} names the tracking URI 'sqlite:///{db}'" in res.output
    assert db.read_bytes() == mlflow_template.read_bytes() and not (store / "mlflow.json").exists()  # untouched
    res = CliRunner().invoke(app, ["report", str(store), "--out", str(tmp_path / "rep"), "--mlflow"])
    assert res.exit_code == 0, res.output
    assert f"logged {tmp_path / 'rep'} to MLflow ('sqlite:///{db}')" in res.output
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    assert client.search_runs([e.experiment_id for e in client.search_experiments()])  # the report's run is there


def test_a_prediction_file_outside_the_job_folder_is_refused(tmp_path: Path) -> None:
    """Prediction file names come from the dataset's CSV (mask paths): the one writer keeps them in its folder."""
    from usagg.predictions import PredictionWriter
    from usagg.tasktypes import get_task_type

    writer = PredictionWriter(tmp_path / "job" / "predictions")
    seg = get_task_type("segmentation")
    with pytest.raises(UnsafePath, match=r"^prediction file of task 't', image 'a\.png': '\.\./\.\./x\.png' resolves"):
        writer.add(seg, "t", "a.png", {"mask_path": "../../x.png"}, files={"../../x.png": b"png"})
    assert _files(tmp_path) == set()
    writer.add(seg, "t", "b.png", {"mask_path": "t/b.png"}, files={"t/b.png": b"png"})
    assert (tmp_path / "job" / "predictions" / "t" / "b.png").read_bytes() == b"png"


def test_submitits_own_link_to_its_script_is_no_planted_link(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """submitit links the temporary name of each submission's script to the script it keeps, in the folder usagg
    gives it: every job checks the store for planted links before it starts, and took that one for a planted link,
    so no Slurm job could ever run. Its own link passes; one of its name pointing out of the folder does not."""
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    (fakebin / "sbatch").write_text("#!/bin/sh\necho 'Submitted batch job 1001'\n")
    (fakebin / "srun").write_text("#!/bin/sh\nexit 1\n")
    for f in fakebin.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fakebin}{os.pathsep}{os.environ['PATH']}")
    root = tmp_path / "runs" / "demo"
    ex = SlurmExecutor(root, SlurmSpec(), cluster="slurm").make_submitit_executor()
    job = ex.submit(print, "hello")  # submitit's own submission: sbatch, then the link
    folder = Path(ex.folder)
    (link,) = [p for p in folder.iterdir() if p.is_symlink()]
    assert job.job_id == "1001" and link.name.startswith(".submission_file_") and link.resolve().parent == folder
    store = RunStore(root)
    store.check_no_links()  # no UnsafePath
    SlurmExecutor(root, SlurmSpec(), cluster="slurm")  # its folder check passes too
    planted = folder / f".submission_file_{'0' * 32}.sh"
    planted.symlink_to(tmp_path / "elsewhere" / "1002_submission.sh")
    with pytest.raises(UnsafePath, match="is a symbolic link"):
        store.check_no_links()
    planted.unlink()
    (folder / "notes.txt").symlink_to(link.resolve())
    with pytest.raises(UnsafePath, match=r"notes\.txt is a symbolic link"):
        store.check_no_links()
