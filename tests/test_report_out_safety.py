"""`usagg report --out` never deletes or overwrites what no report of usagg wrote (audit findings 4 and 6).

A report's manifest (.usagg-report.json) is data: a copied or planted one may list anything, so the stale-file
removal deletes only names a report writes, each a regular file inside the folder reached without a link. The run
store read is never the report folder, nor inside it or around it. A folder without usagg's manifest that already
holds a file the report would write is refused before anything is written; a folder with it is regenerated.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli_run import run_cli
from tests.test_injection_analysis import HEADER, _rows
from usagg.analysis.report import MANIFEST, _a_report_file
from usagg.analysis.simulate import load_tasks, simulate_run_store
from usagg.atomic import no_space_left

TASKS = Path(__file__).parent / "data" / "fmc_uia_tasks.yaml"
Usagg = Callable[..., tuple[int, str]]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four tasks in two groups, every figure drawn once (the memo serves the later reports)."""
    tasks = [t for t in load_tasks(TASKS) if t["id"] in {"FUGC", "IUGC", "breast_2cls", "breast_lesion"}]
    return simulate_run_store(tmp_path_factory.mktemp("runs") / "tiny", tasks)


@pytest.fixture
def usagg(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Usagg:
    """`usagg ARGS` through the real entry point in folder `cwd`: (exit code, stdout + stderr, one line)."""

    def call(*args: str, cwd: Path) -> tuple[int, str]:
        monkeypatch.chdir(cwd)
        code, out = run_cli(list(args), monkeypatch, capsys)
        return code, " ".join(out.split())

    return call


def _tree(folder: Path) -> dict[str, bytes | str]:
    """Every entry below `folder`: a file's bytes, a link's target; what a refused command leaves as it was."""
    out: dict[str, bytes | str] = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_symlink():
            out[rel] = f"-> {p.readlink()}"
        elif p.is_file():
            out[rel] = p.read_bytes()
    return out


def _manifest(folder: Path, files: list[str]) -> None:
    (folder / MANIFEST).write_text(json.dumps({"files": files}))


def test_a_planted_manifest_deletes_only_report_files(
    store: Path, tmp_path: Path, usagg: Usagg, caplog: pytest.LogCaptureFixture
) -> None:
    """The audit's repro (paper2/main.tex listed in a planted manifest was deleted), and the other ways a listed
    name could reach a user's file: outside the folder, a folder, a link at the file or on the way to it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "report.md").write_text("outside\n")
    (outside / "t.csv").write_text("outside table\n")
    paper = tmp_path / "paper2"
    (paper / "notes").mkdir(parents=True)
    (paper / "main.tex").write_text("thesis\n")
    (paper / "notes" / "x.txt").write_text("notes\n")
    (paper / "tables").mkdir()
    (paper / "tables" / "link.csv").symlink_to(outside / "t.csv")
    (paper / "point1_lr-0.1").symlink_to(outside)
    (paper / "tables" / "stale.csv").write_text("a table an earlier report wrote\n")
    listed = ["main.tex", "notes/x.txt", "notes", "../outside/t.csv", str(outside / "t.csv"), "tables/link.csv"]
    _manifest(paper, [*listed, "point1_lr-0.1/report.md", "tables/../main.tex", "tables/stale.csv"])
    code, out = usagg("report", str(store), "--out", str(paper), cwd=tmp_path)
    assert code == 0, out
    assert (paper / "main.tex").read_text() == "thesis\n" and (paper / "notes" / "x.txt").read_text() == "notes\n"
    assert (paper / "tables" / "link.csv").is_symlink() and (outside / "t.csv").read_text() == "outside table\n"
    assert (outside / "report.md").read_text() == "outside\n" and (paper / "point1_lr-0.1").is_symlink()
    assert not (paper / "tables" / "stale.csv").exists()  # a name a report writes, listed: an earlier report's
    assert "no usagg report writes" in caplog.text and (paper / "report.md").is_file()
    assert "main.tex" not in json.loads((paper / MANIFEST).read_text())["files"]


@pytest.mark.parametrize("where", ["store", "inside", "around"])
def test_report_refuses_the_run_store_as_its_folder(store: Path, tmp_path: Path, usagg: Usagg, where: str) -> None:
    """`report ev/tiny --out ev/tiny` with a planted manifest deleted the store's plan.json, study.yaml and a
    job's metrics.json; a folder inside the store, or one holding it, is refused the same way: nothing written."""
    import shutil

    copy = tmp_path / "ev" / "tiny"
    shutil.copytree(store, copy)
    job = next(p.relative_to(copy).as_posix() for p in copy.glob("jobs/*/metrics.json"))
    _manifest(copy, ["plan.json", "study.yaml", job])
    before = _tree(tmp_path / "ev")
    out_dir = {"store": copy, "inside": copy / "report", "around": tmp_path / "ev"}[where]
    code, out = usagg("report", str(copy), "--out", str(out_dir), cwd=tmp_path)
    assert code == 2 and "Traceback" not in out and "run store" in out and "--out" in out, out
    assert _tree(tmp_path / "ev") == before


def test_report_refuses_a_folder_with_the_users_tables_and_figures(store: Path, tmp_path: Path, usagg: Usagg) -> None:
    """A paper folder (no usagg manifest) with its own tables/summary.tex and figures/fig3_delta.png had both
    replaced: now exit 2 naming them, nothing written. A file of a name no report writes does not stop it."""
    paper = tmp_path / "paper"
    (paper / "tables").mkdir(parents=True)
    (paper / "figures").mkdir()
    (paper / "tables" / "summary.tex").write_text("my hand-tuned table\n")
    (paper / "figures" / "fig3_delta.png").write_text("MY FIGURE\n")
    before = _tree(paper)
    code, out = usagg("report", str(store), "--out", str(paper), cwd=tmp_path)
    assert code == 2 and "Traceback" not in out and "nothing was written" in out and "--out" in out, out
    assert "fig3_delta.png" in out and "tables/summary.tex" in out
    assert _tree(paper) == before
    mine = tmp_path / "mine"
    (mine / "tables").mkdir(parents=True)
    (mine / "tables" / "precious.csv").write_text("keep\n")
    assert usagg("report", str(store), "--out", str(mine), cwd=tmp_path)[0] == 0
    assert (mine / "tables" / "precious.csv").read_text() == "keep\n"


def test_a_folder_usagg_wrote_is_regenerated(store: Path, tmp_path: Path, usagg: Usagg) -> None:
    """What stays (`make demo`): a folder with usagg's manifest is its own, written again in place; a stale report
    file it listed goes, a file it never listed (the demo's figures/synth_preview.png) stays."""
    rep = tmp_path / "reports" / "demo"
    assert usagg("report", str(store), "--out", str(rep), cwd=tmp_path)[0] == 0
    files = json.loads((rep / MANIFEST).read_text())["files"]
    assert files and all(_a_report_file(f) for f in files)
    (rep / "tables" / "gone.csv").write_text("an older report's table\n")
    _manifest(rep, [*files, "tables/gone.csv"])
    (rep / "figures" / "synth_preview.png").write_bytes(b"preview")
    (rep / "report.md").write_text("edited\n")
    assert usagg("report", str(store), "--out", str(rep), cwd=tmp_path)[0] == 0
    assert not (rep / "tables" / "gone.csv").exists() and (rep / "figures" / "synth_preview.png").is_file()
    assert (rep / "report.md").read_text() != "edited\n"
    assert json.loads((rep / MANIFEST).read_text())["files"] == files


def test_a_swept_report_refuses_a_point_folder_of_someone_elses(tmp_path: Path, usagg: Usagg) -> None:
    """A swept study's point sub-folder holding a file but no manifest of its own is refused before any point is
    written, even inside a folder of usagg's; its own sub-folders are regenerated."""
    rows = [f"{r},{v}" for v in ("0.1", "0.01") for r in _rows()]
    results = tmp_path / "swept.csv"
    results.write_text("\n".join([HEADER + ",training.lr_encoder", *rows]) + "\n")
    ours = tmp_path / "ours"
    assert usagg("report", "--results", str(results), "--out", str(ours), cwd=tmp_path)[0] == 0
    point = next(p for p in ours.iterdir() if p.name.startswith("point1_"))
    assert usagg("report", "--results", str(results), "--out", str(ours), cwd=tmp_path)[0] == 0
    (point / MANIFEST).unlink()
    (point / "NOTES.txt").write_text("mine\n")
    before = _tree(ours)
    code, out = usagg("report", "--results", str(results), "--out", str(ours), cwd=tmp_path)
    assert code == 2 and "NOTES.txt" in out and "Traceback" not in out, out
    assert _tree(ours) == before


@pytest.mark.parametrize(
    "name",
    [
        "main.tex",
        "plan.json",
        "../x/report.md",
        "/etc/report.md",
        "tables",
        "tables/../main.tex",
        "tables/a/b.csv",
        "tables/x.txt",
        "figures/mine.png",
        "figures/fig3_delta.jpg",
        "point1_x/../../report.md",
        "sub/report.md",
        "report.md/",
    ],
)
def test_names_no_report_writes(name: str) -> None:
    assert not _a_report_file(name)


@pytest.mark.parametrize(
    "name", ["report.md", "report.html", "tables/delta.csv", "tables/summary.tex", "figures/fig3_delta.png"]
)
def test_names_a_report_writes(name: str) -> None:
    assert _a_report_file(name) and _a_report_file(f"point2_lr_encoder-0.1/{name}")


def test_report_after_plot_in_the_default_folders_takes_plots_figures(
    store: Path, tmp_path: Path, usagg: Usagg
) -> None:
    """A regression audit: `usagg plot` then `usagg report` (README's workflow, the default folders) was refused,
    plot's figures taken for a user's. Plot lists what it drew (PLOT_MANIFEST); a user's figure beside them is not
    listed and is still refused."""
    from usagg.analysis.report import PLOT_MANIFEST

    code, out = usagg("plot", str(store), cwd=tmp_path)
    figures = tmp_path / "reports" / "tiny" / "figures"
    listed = json.loads((figures / PLOT_MANIFEST).read_text())["files"]
    assert code == 0 and "fig3_delta.png" in listed and all((figures / n).is_file() for n in listed), out
    code, out = usagg("report", str(store), cwd=tmp_path)
    assert code == 0 and (tmp_path / "reports" / "tiny" / "report.md").is_file(), out

    other = tmp_path / "paper"
    (other / "figures").mkdir(parents=True)
    code, out = usagg("plot", str(store), "--out", str(other / "figures"), cwd=tmp_path)
    assert code == 0, out
    (other / "figures" / PLOT_MANIFEST).write_text(json.dumps({"files": [n for n in listed if n != "fig3_delta.png"]}))
    before = _tree(other)  # fig3_delta.png is now a figure plot did not list: the user's
    code, out = usagg("report", str(store), "--out", str(other), cwd=tmp_path)
    assert code == 2 and "figures/fig3_delta.png exists" in out and _tree(other) == before, out


@pytest.mark.parametrize("stop", ["full disk", "killed"])
def test_a_report_stopped_part_way_is_replaced_by_the_next(
    store: Path, tmp_path: Path, usagg: Usagg, monkeypatch: pytest.MonkeyPatch, stop: str
) -> None:
    """Audit fault 2: a report stopped after its first files (a full disk at report.html, a SIGTERM) left usagg's
    figures without a manifest, and the rerun refused them as someone else's; the manifest is now written first.
    The full disk's advice is the command's own (no `usagg run --retry-failed`)."""
    from usagg.analysis import report

    real = report.write_text_atomic

    def stopping(path: Path, text: str) -> Path:
        if stop == "killed" and path.suffix == ".csv":
            raise SystemExit(143)
        if stop == "full disk" and path.name == "report.html":
            raise no_space_left(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        return real(path, text)

    rep = tmp_path / "reports" / "tiny"
    monkeypatch.setattr(report, "write_text_atomic", stopping)
    code, out = usagg("report", str(store), cwd=tmp_path)
    assert code == (2 if stop == "full disk" else 143) and (rep / "figures" / "fig3_delta.png").is_file(), out
    if stop == "full disk":
        assert "no space left on device at reports/tiny/report.html" in out and "--retry-failed" not in out, out
    assert json.loads((rep / MANIFEST).read_text())["complete"] is False
    monkeypatch.setattr(report, "write_text_atomic", real)
    code, out = usagg("report", str(store), cwd=tmp_path)
    assert code == 0 and (rep / "report.html").is_file(), out
    assert "complete" not in json.loads((rep / MANIFEST).read_text())


def test_plot_refuses_a_users_figure_and_replaces_its_own(store: Path, tmp_path: Path, usagg: Usagg) -> None:
    """Audit docs 1: `usagg plot --out paper/figures` replaced a hand-made fig3_delta.pdf with a "wrote" line. Now
    it is refused as `usagg report` refuses it (exit 2, one paragraph naming it, nothing written); a second plot
    into its own earlier output, and a plot into a report's figures/, replace them and say so."""
    paper = tmp_path / "paper" / "figures"
    paper.mkdir(parents=True)
    (paper / "fig3_delta.pdf").write_text("my hand-edited figure\n")
    before = _tree(paper)
    code, out = usagg("plot", str(store), "--format", "pdf", "--out", str(paper), cwd=tmp_path)
    assert code == 2 and "Traceback" not in out and "fig3_delta.pdf exists" in out and "nothing was written" in out
    assert "`usagg plot` would overwrite it" in out and out.startswith("error:") and out.count("error:") == 1, out
    assert _tree(paper) == before

    mine = tmp_path / "mine"
    code, out = usagg("plot", str(store), "--out", str(mine), cwd=tmp_path)
    assert code == 0 and "wrote" in out and "replaced" not in out, out
    code, out = usagg("plot", str(store), "--out", str(mine), cwd=tmp_path)
    assert code == 0 and f"replaced {mine / 'fig3_delta.png'}" in out and "wrote" not in out, out

    rep = tmp_path / "rep"
    assert usagg("report", str(store), "--out", str(rep), cwd=tmp_path)[0] == 0
    code, out = usagg("plot", str(store), "--out", str(rep / "figures"), cwd=tmp_path)
    assert code == 0 and f"replaced {rep / 'figures' / 'fig3_delta.png'}" in out, out


@pytest.mark.parametrize("where", ["store", "inside"])
def test_plot_refuses_the_run_store(store: Path, tmp_path: Path, usagg: Usagg, where: str) -> None:
    """Audit docs 1: `usagg plot runs/x --out runs/x` drew six figures into the store, which only `usagg run`
    writes; refused now as `report --out` is, nothing written."""
    import shutil

    copy = tmp_path / "ev" / "tiny"
    shutil.copytree(store, copy)
    before = _tree(copy)
    out_dir = {"store": copy, "inside": copy / "figures"}[where]
    code, out = usagg("plot", str(copy), "--out", str(out_dir), cwd=tmp_path)
    assert code == 2 and "Traceback" not in out and "run store" in out and "usagg plot" in out, out
    assert _tree(copy) == before
