"""The analysis memo: a hit equals a fresh computation, any input change misses, damage and no cache are harmless."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from usagg.analysis import figures as F
from usagg.analysis import memo as M
from usagg.analysis import summary
from usagg.analysis.inputs import load_input
from usagg.analysis.results import read_results, write_results
from usagg.analysis.simulate import load_tasks, simulate_run_store
from usagg.analysis.summary import analyse

TASKS = Path(__file__).parent / "data" / "fmc_uia_tasks.yaml"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("USAGG_CACHE", str(folder))
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return simulate_run_store(tmp_path_factory.mktemp("runs") / "fmc", load_tasks(TASKS), seeds=(0, 1))


def _refuse(*_args, **_kwargs):  # type: ignore[no-untyped-def]
    raise AssertionError("recomputed although the memo holds this result")


def _edited_results(run_dir: Path, folder: Path) -> Path:
    """results.csv with one CG value lowered by 0.05."""
    rows = read_results(run_dir / "results.csv").rows
    i = next(i for i, r in enumerate(rows) if r.paradigm == "CG")
    rows[i] = dataclasses.replace(rows[i], value=rows[i].value - 0.05)
    write_results(rows, folder / "edited.csv")
    return folder / "edited.csv"


def test_statistics_hit_equals_fresh_and_skips_scipy_work(run_dir: Path, cache: Path, monkeypatch) -> None:
    fresh = analyse(load_input(run_dir, None))
    assert len(list((cache / "analysis" / "stats").glob("*.json"))) == 1
    monkeypatch.setattr(summary, "statistics", _refuse)
    hit = analyse(load_input(run_dir, None))
    assert hit.stats == fresh.stats and hit.key == fresh.key
    assert any(s.ci is not None for s in hit.stats) and all(isinstance(s.ci, tuple) for s in hit.stats if s.ci)


def test_any_input_change_misses(run_dir: Path, cache: Path, tmp_path: Path, monkeypatch) -> None:
    base = analyse(load_input(run_dir, None))
    assert analyse(load_input(run_dir, None), "AU").key != base.key  # another baseline
    edited = analyse(load_input(None, _edited_results(run_dir, tmp_path)))
    assert edited.key != base.key
    assert [s.value for s in edited.stats if s.paradigm == "CG"] != [s.value for s in base.stats if s.paradigm == "CG"]
    # the same table under another path shares the entry: paths are not part of the key
    imported = analyse(load_input(None, run_dir / "results.csv"))
    (tmp_path / "copy.csv").write_bytes((run_dir / "results.csv").read_bytes())
    monkeypatch.setattr(summary, "statistics", _refuse)
    assert analyse(load_input(None, tmp_path / "copy.csv")).key == imported.key


def test_figures_are_copied_from_the_memo(run_dir: Path, cache: Path, tmp_path: Path, monkeypatch) -> None:
    a = analyse(load_input(run_dir, None))
    first = F.render_all(a, tmp_path / "one", dpi=60)
    monkeypatch.setattr(F, "_draw_all", _refuse)
    again = F.render_all(a, tmp_path / "two", dpi=60)
    assert [(f.name, f.caption, f.path.name) for f in again] == [(f.name, f.caption, f.path.name) for f in first]
    assert all(f.path.parent == tmp_path / "two" for f in again)
    assert [f.path.read_bytes() for f in again] == [f.path.read_bytes() for f in first]
    with pytest.raises(AssertionError, match="recomputed"):
        F.render_all(a, tmp_path / "three", dpi=72)  # another resolution is another entry


def test_changed_results_redraw_the_figures(run_dir: Path, cache: Path, tmp_path: Path) -> None:
    a = analyse(load_input(run_dir, None))
    b = analyse(load_input(None, _edited_results(run_dir, tmp_path)))
    fa = {f.name: f.path.read_bytes() for f in F.render_all(a, tmp_path / "a", dpi=60)}
    fb = {f.name: f.path.read_bytes() for f in F.render_all(b, tmp_path / "b", dpi=60)}
    assert fa["fig3_delta"] != fb["fig3_delta"]
    assert len(list((cache / "analysis" / "figures").iterdir())) == 2


def test_a_damaged_entry_is_redrawn_and_repaired(run_dir: Path, cache: Path, tmp_path: Path) -> None:
    a = analyse(load_input(run_dir, None))
    good = {f.name: f.path.read_bytes() for f in F.render_all(a, tmp_path / "one", dpi=60)}
    (entry,) = (cache / "analysis" / "figures").iterdir()
    (entry / "fig3_delta.png").unlink()
    redrawn = {f.name: f.path.read_bytes() for f in F.render_all(a, tmp_path / "two", dpi=60)}
    assert redrawn.keys() == good.keys()
    assert (entry / "fig3_delta.png").read_bytes() == redrawn["fig3_delta"]


def test_an_unusable_cache_changes_nothing_but_speed(run_dir: Path, tmp_path: Path, monkeypatch) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("USAGG_CACHE", str(blocker))
    a = analyse(load_input(run_dir, None))
    figs = F.render_all(a, tmp_path / "figs", dpi=60)
    assert a.stats and all(f.path.stat().st_size > 1000 for f in figs)
    assert blocker.read_text() == "x"


def test_oldest_entries_are_pruned(run_dir: Path, cache: Path, monkeypatch) -> None:
    monkeypatch.setattr(M, "KEEP", 2)
    memo, folder = M.Memo(cache), cache / "analysis" / "stats"
    a = analyse(load_input(run_dir, None))
    for p in folder.iterdir():
        os.utime(p, (1, 1))
    made = []
    for i in range(4):
        before = set(folder.iterdir())
        memo.statistics(f"key-{i}", lambda: a.stats)
        (new,) = set(folder.iterdir()) - before
        os.utime(new, (100 + i, 100 + i))  # distinct ages, oldest first
        made.append(new)
    assert set(folder.iterdir()) == set(made[2:])
    memo.statistics("key-2", _refuse)  # a hit refreshes its entry


def test_study_cache_dir_is_used(run_dir: Path, tmp_path: Path, cache: Path) -> None:
    own = tmp_path / "own-run"
    simulate_run_store(own, load_tasks(TASKS)[:6])
    study = yaml.safe_load((own / "study.yaml").read_text())
    study.setdefault("data", {})["cache_dir"] = str(tmp_path / "study-cache")
    (own / "study.yaml").write_text(yaml.safe_dump(study))
    analyse(load_input(own, None))
    assert list((tmp_path / "study-cache" / "analysis" / "stats").glob("*.json"))
    assert not (cache / "analysis").exists()


def test_report_after_plot_imports_neither_scipy_nor_matplotlib(run_dir: Path, cache: Path, tmp_path: Path) -> None:
    """The user's sequence, one process per command: report reuses plot's statistics and figures."""
    env = {**os.environ, "MPLBACKEND": "Agg"}
    code = (
        "import sys\nfrom usagg.cli.app import app\n"
        "try:\n    app(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print(sorted(m for m in ('matplotlib', 'scipy', 'torch') if m in sys.modules))"
    )

    def usagg(*args: str) -> str:
        res = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True, env=env)
        assert res.returncode == 0, res.stderr
        return res.stdout.strip().splitlines()[-1]

    assert usagg("plot", str(run_dir), "--out", "figs") == "['matplotlib', 'scipy']"
    assert usagg("report", str(run_dir), "--out", "rep") == "[]"
    for png in (tmp_path / "figs").glob("*.png"):
        assert (tmp_path / "rep" / "figures" / png.name).read_bytes() == png.read_bytes()
    assert "<img" in (tmp_path / "rep" / "report.html").read_text(encoding="utf-8")
