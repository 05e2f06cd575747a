"""The analysis memo: a hit equals a fresh computation, any input change misses, damage and no cache are harmless."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from usagg.analysis.figures import FigureOut, render_all
from usagg.analysis.inputs import load_input
from usagg.analysis.memo import FigureFile, Memo, code_sources, input_key, item_scores_digest, sources_digest
from usagg.analysis.outputs import Memoised
from usagg.analysis.report import write_report, writing
from usagg.analysis.results import read_results, write_results
from usagg.analysis.simulate import load_tasks, simulate_run_store
from usagg.analysis.summary import Analysis, analyse
from usagg.errors import UsaggError

pytestmark = pytest.mark.slow  # draws every figure several times, and a subprocess

TASKS = Path(__file__).parent / "data" / "fmc_uia_tasks.yaml"
MEMO_TASKS = {"FUGC", "IUGC", "breast_2cls", "breast_lesion", "thyroid_nodule_det", "thyroid_nodule"}
PACKAGE = Path(__file__).resolve().parent.parent / "usagg"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("USAGG_CACHE", str(folder))
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six of the 27 tasks (three groups of two, every type): what is memoised does not depend on size."""
    tasks = [t for t in load_tasks(TASKS) if t["id"] in MEMO_TASKS]
    return simulate_run_store(tmp_path_factory.mktemp("runs") / "fmc", tasks, seeds=(0, 1))


@pytest.fixture(scope="module")
def analysis(run_dir: Path) -> Analysis:
    """The run's analysis without any memo (pure, read only): drawing figures is what these tests pay for."""
    return analyse(load_input(run_dir, None))


@pytest.fixture(scope="module")
def fresh(analysis: Analysis, tmp_path_factory: pytest.TempPathFactory) -> list[FigureOut]:
    """Every figure drawn once without a memo, at 60 dpi: what a hit must equal byte for byte (read only)."""
    return render_all(analysis, tmp_path_factory.mktemp("fresh"), dpi=60)


def _refuse(*_args, **_kwargs):  # type: ignore[no-untyped-def]
    raise AssertionError("recomputed although the memo holds this result")


class CountingRender:
    """figures.render_all in the memo's record type, counting how often it really draws."""

    def __init__(self, a, fmt: str = "png", dpi: int = 60) -> None:  # type: ignore[no-untyped-def]
        self.a, self.fmt, self.dpi, self.calls = a, fmt, dpi, 0

    def __call__(self, folder: Path) -> list[FigureFile]:
        self.calls += 1
        return [FigureFile(f.name, f.path, f.caption) for f in render_all(self.a, folder, self.fmt, self.dpi)]


def _edited_results(run_dir: Path, folder: Path) -> Path:
    """results.csv with one CG value lowered by 0.05."""
    rows = read_results(run_dir / "results.csv").rows
    i = next(i for i, r in enumerate(rows) if r.paradigm == "CG")
    rows[i] = dataclasses.replace(rows[i], value=rows[i].value - 0.05)
    write_results(rows, folder / "edited.csv")
    return folder / "edited.csv"


def _bytes(figs) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    return {f.name: f.path.read_bytes() for f in figs}


def test_statistics_hit_equals_fresh_and_is_not_recomputed(run_dir: Path, cache: Path) -> None:
    inp = load_input(run_dir, None)
    fresh = analyse(inp)  # pure: no memo at all
    assert not (cache / "analysis").exists()
    memoised = Memoised.own()
    assert memoised.analyse(inp).stats == fresh.stats  # miss: computed and stored
    assert len(list((cache / "analysis" / "stats").glob("*.json"))) == 1
    again = load_input(run_dir, None)  # as the next command, in a new process, would read it
    hit = Memoised.own().analyse(again)
    assert hit.stats == fresh.stats and hit.comp == fresh.comp
    assert any(s.ci is not None for s in hit.stats) and all(isinstance(s.ci, tuple) for s in hit.stats if s.ci)
    assert memoised.memo.cached_statistics(input_key(inp, fresh.comp.baseline), _refuse) == fresh.stats


def test_any_input_change_misses(run_dir: Path, cache: Path, tmp_path: Path) -> None:
    inp = load_input(run_dir, None)
    base = input_key(inp, "TS")
    assert input_key(inp, "AU") != base  # another baseline
    settings = dataclasses.replace(inp.settings, bootstrap=inp.settings.bootstrap + 1)
    assert input_key(dataclasses.replace(inp, settings=settings), "TS") != base
    edited_inp = load_input(None, _edited_results(run_dir, tmp_path))
    assert input_key(edited_inp, "TS") != base
    memoised = Memoised(Memo(cache))
    before, after = memoised.analyse(inp), memoised.analyse(edited_inp)
    assert [s.value for s in after.stats if s.paradigm == "CG"] != [s.value for s in before.stats if s.paradigm == "CG"]
    assert len(list((cache / "analysis" / "stats").iterdir())) == 2
    # the same table under another path shares the entry: paths are not part of the key
    (tmp_path / "copy.csv").write_bytes((run_dir / "results.csv").read_bytes())
    assert input_key(load_input(None, tmp_path / "copy.csv"), "TS") == input_key(
        load_input(None, run_dir / "results.csv"), "TS"
    )


def test_the_code_key_covers_every_source_the_analysis_runs(tmp_path: Path) -> None:
    names = {p.relative_to(PACKAGE).as_posix() for p in code_sources()}
    assert {f"analysis/{p.name}" for p in (PACKAGE / "analysis").glob("*.py")} <= names
    assert {f"tasktypes/{p.name}" for p in (PACKAGE / "tasktypes").glob("*.py")} <= names
    assert {"paradigms.py", "results_schema.py", "analysis/figures.py", "analysis/memo.py"} <= names
    assert all(p.is_file() for p in code_sources())
    copies = []
    for p in code_sources()[:3]:
        (tmp_path / p.parent.name).mkdir(exist_ok=True)
        copies.append(tmp_path / p.parent.name / p.name)
        copies[-1].write_bytes(p.read_bytes())
    assert sources_digest(copies) == sources_digest(code_sources()[:3])  # where the checkout lives does not count
    copies[1].write_bytes(copies[1].read_bytes() + b"\n# edited\n")
    assert sources_digest(copies) != sources_digest(code_sources()[:3])  # a code change is another key


def test_figures_hit_equals_fresh_byte_for_byte(
    analysis: Analysis, fresh: list[FigureOut], cache: Path, tmp_path: Path
) -> None:
    a = analysis
    memoised = Memoised(Memo(cache))
    first = memoised.render_all(a, tmp_path / "one", dpi=60)
    again = memoised.render_all(a, tmp_path / "two", dpi=60)
    for figs in (first, again):
        assert [(f.name, f.caption, f.path.name) for f in figs] == [(f.name, f.caption, f.path.name) for f in fresh]
        assert _bytes(figs) == _bytes(fresh)
    assert all(f.path.parent == tmp_path / "two" for f in again)
    assert isinstance(again[0], FigureOut)


def test_figures_are_drawn_once_per_key_format_and_resolution(analysis: Analysis, cache: Path, tmp_path: Path) -> None:
    a = analysis
    memo, key = Memo(cache), input_key(a.inp, a.comp.baseline)
    render = CountingRender(a)
    first = memo.cached_figures(key, "png", 60, tmp_path / "one", render)
    again = memo.cached_figures(key, "png", 60, tmp_path / "two", _refuse)
    assert render.calls == 1 and _bytes(again) == _bytes(first)
    (entry,) = (cache / "analysis" / "figures").iterdir()
    assert sorted(p.name for p in entry.iterdir()) == sorted(["manifest.json", *(f.path.name for f in first)])
    memo.cached_figures(key, "png", 72, tmp_path / "three", CountingRender(a, dpi=72))  # another resolution
    memo.cached_figures(key, "svg", 60, tmp_path / "four", CountingRender(a, "svg"))  # another format
    assert len(list((cache / "analysis" / "figures").iterdir())) == 3


def test_a_full_memo_disk_draws_the_figures_in_place(analysis: Analysis, cache: Path, tmp_path: Path) -> None:
    """The ops audit: with USAGG_CACHE's disk full, `usagg report` and `plot` stopped (exit 2) drawing into the memo,
    a speed-up only, leaving an empty figures/ in --out. Now drawn in place and not kept; another error still
    stops them."""
    import errno

    memo, key = Memo(cache), input_key(analysis.inp, analysis.comp.baseline)
    render = CountingRender(analysis)

    def full_in_cache(where: Path) -> list[FigureFile]:
        if cache in where.parents:  # the memo's private draw folder is on the full disk
            raise OSError(errno.ENOSPC, "No space left on device", str(where / "fig3_delta.png"))
        return render(where)

    out = memo.cached_figures(key, "png", 60, tmp_path / "out", full_in_cache)
    assert render.calls == 1 and out and all(f.path.parent == tmp_path / "out" and f.path.is_file() for f in out)
    assert not list((cache / "analysis" / "figures").iterdir())  # nothing stored, no draw folder left

    def broken(where: Path) -> list[FigureFile]:
        raise OSError(errno.EACCES, "Permission denied", str(where))

    with pytest.raises(PermissionError):
        memo.cached_figures(key, "png", 60, tmp_path / "again", broken)


def test_changed_results_redraw_the_figures(run_dir: Path, cache: Path, tmp_path: Path) -> None:
    memoised = Memoised(Memo(cache))
    a = memoised.analyse(load_input(run_dir, None))
    b = memoised.analyse(load_input(None, _edited_results(run_dir, tmp_path)))
    fa = _bytes(memoised.render_all(a, tmp_path / "a", dpi=60))
    fb = _bytes(memoised.render_all(b, tmp_path / "b", dpi=60))
    assert fa["fig3_delta"] != fb["fig3_delta"]
    assert len(list((cache / "analysis" / "figures").iterdir())) == 2


def test_a_damaged_entry_is_redrawn_and_repaired(
    analysis: Analysis, fresh: list[FigureOut], cache: Path, tmp_path: Path
) -> None:
    a = analysis
    memo, key = Memo(cache), input_key(a.inp, a.comp.baseline)
    good = _bytes(memo.cached_figures(key, "png", 60, tmp_path / "one", CountingRender(a)))
    assert good == _bytes(fresh)
    (entry,) = (cache / "analysis" / "figures").iterdir()
    (entry / "fig3_delta.png").unlink()
    render = CountingRender(a)
    redrawn = _bytes(memo.cached_figures(key, "png", 60, tmp_path / "two", render))
    assert render.calls == 1 and redrawn == good
    assert (entry / "fig3_delta.png").read_bytes() == redrawn["fig3_delta"]
    (entry / "manifest.json").write_text("{not json")
    render = CountingRender(a)
    assert _bytes(memo.cached_figures(key, "png", 60, tmp_path / "three", render)) == good
    assert render.calls == 1


def test_a_damaged_statistics_entry_is_recomputed(run_dir: Path, cache: Path) -> None:
    inp = load_input(run_dir, None)
    fresh = Memoised(Memo(cache)).analyse(inp)
    (entry,) = (cache / "analysis" / "stats").iterdir()
    entry.write_text('[{"name": 1}]')
    assert Memoised(Memo(cache)).analyse(inp).stats == fresh.stats
    assert Memo(cache).cached_statistics(input_key(inp, "TS"), _refuse) == fresh.stats  # repaired


def test_an_unusable_cache_changes_nothing_but_speed(
    run_dir: Path, analysis: Analysis, fresh: list[FigureOut], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("USAGG_CACHE", str(blocker))
    inp = load_input(run_dir, None)
    memoised = Memoised.own()
    a = memoised.analyse(inp)
    assert a.stats == analysis.stats
    figs = memoised.render_all(a, tmp_path / "figs", dpi=60)
    assert _bytes(figs) == _bytes(fresh)
    assert blocker.read_text() == "x"


def test_oldest_entries_are_pruned(analysis: Analysis, cache: Path) -> None:
    stats = analysis.stats
    memo, folder = Memo(cache, keep=2), cache / "analysis" / "stats"
    made = []
    for i in range(4):
        before = set(folder.iterdir()) if folder.exists() else set()
        memo.cached_statistics(f"key-{i}", lambda: stats)
        (new,) = set(folder.iterdir()) - before
        os.utime(new, (100 + i, 100 + i))  # distinct ages, oldest first
        made.append(new)
    assert set(folder.iterdir()) == set(made[2:])
    assert memo.cached_statistics("key-2", _refuse) == stats  # a hit refreshes its entry
    memo.cached_statistics("key-4", lambda: stats)
    assert made[2] in set(folder.iterdir()) and made[3] not in set(folder.iterdir())


def test_a_stored_cache_dir_is_never_the_memo(tmp_path: Path, cache: Path) -> None:
    """The stored spec's data.cache_dir, inside the store or not, is data: the memo stays in the user's cache."""
    own = tmp_path / "own-run"
    simulate_run_store(own, load_tasks(TASKS)[:6])
    study = yaml.safe_load((own / "study.yaml").read_text())
    for named in (own / "study-cache", tmp_path / "elsewhere"):
        study.setdefault("data", {})["cache_dir"] = str(named)
        (own / "study.yaml").write_text(yaml.safe_dump(study))
        inp = load_input(own, None)
        Memoised.own().analyse(inp)
        assert not named.exists()
    assert list((cache / "analysis" / "stats").glob("*.json"))


def test_report_takes_its_figures_from_the_renderer_it_is_given(run_dir: Path, cache: Path, tmp_path: Path) -> None:
    memoised = Memoised(Memo(cache))
    a = memoised.analyse(load_input(run_dir, None))
    plotted = _bytes(memoised.render_all(a, tmp_path / "figs", dpi=60))
    drawn: list[Path] = []

    def render(a, folder: Path, fmt: str, dpi: int) -> list[FigureOut]:  # type: ignore[no-untyped-def]
        drawn.append(folder)
        return memoised.render_all(a, folder, fmt, dpi)

    written = write_report(a, tmp_path / "rep", render=render, dpi=60)
    assert drawn == [tmp_path / "rep" / "figures"]
    assert {p.name: p.read_bytes() for p in written if p.parent.name == "figures"} == {
        f"{n}.png": b for n, b in plotted.items()
    }
    assert len(list((cache / "analysis" / "figures").iterdir())) == 1  # the report reused plot's entry


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


def test_a_synthetic_studys_designed_groups_import_no_scipy() -> None:
    """The demo's and the known-answer studies' report reads the synthetic benchmark's designed groups: the task
    registry alone, not the image generator (scipy.ndimage) behind the package's other names."""
    code = (
        "import sys\nfrom usagg.analysis.inputs import _designed_groups\n"
        "groups = _designed_groups({'data': {'synthetic': {'seed': 0}}}, ['fetal_head', 'breast_lesion'])\n"
        "print(groups, 'scipy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out.endswith(" False") and "'fetal_head':" in out, out


def test_a_cache_others_can_write_is_never_the_memo(
    run_dir: Path, cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An auditor's forged entry ('p = 1e-09; FORGED') in a cache folder others could write was handed out as
    computed statistics: the memo reads and writes nothing in a folder usagg/cachetrust.py cannot vouch for."""
    inp = load_input(run_dir, None)
    fresh = analyse(inp)
    Memoised.own().analyse(inp)  # stored, in the user's own 0700 folder
    (entry,) = (cache / "analysis" / "stats").glob("*.json")
    forged = json.loads(entry.read_text())
    forged[0]["note"] = "FORGED"
    entry.write_text(json.dumps(forged))
    assert any(s.note == "FORGED" for s in Memoised.own().analyse(inp).stats)  # the user's own folder: trusted
    cache.chmod(0o777)  # now anyone may plant entries
    try:
        with caplog.at_level("WARNING"):
            memoised = Memoised.own()
            stats = memoised.analyse(inp).stats
        assert memoised.memo.off and stats == fresh.stats and "analysis memo off" in caplog.text
    finally:
        cache.chmod(0o700)


def test_the_memo_key_reads_no_planted_item_scores(tmp_path: Path) -> None:
    """A received store's item_scores.json that is a link to a big file, or a FIFO, was read whole (or waited on)
    to make the memo's key, before the read that refuses it as damaged: it is left out of the key instead."""
    real = tmp_path / "real.json"
    real.write_text('{"t": []}')
    (tmp_path / "link.json").symlink_to(real)
    os.mkfifo(tmp_path / "fifo.json")
    files = {j: tmp_path / f"{j}.json" for j in ("real", "link", "fifo")}
    assert list(item_scores_digest(files)) == ["real"]


def test_two_draws_into_one_folder_at_once_each_cache_their_own_figure(cache: Path, tmp_path: Path) -> None:
    """Two commands drawing other baselines into one output folder at the same moment (two `usagg plot`): each memo
    entry holds its own drawing, never the bytes the other wrote into the shared folder meanwhile. The barrier
    makes both draw before either stores: the interleaving that poisoned the cache, every time."""
    memo, shared = Memo(cache), tmp_path / "shared"
    both_drawn = threading.Barrier(2, timeout=60)

    def render(baseline: str):  # type: ignore[no-untyped-def]
        def draw(folder: Path) -> list[FigureFile]:
            path = folder / "fig3_delta.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"delta versus {baseline}".encode())
            both_drawn.wait()
            return [FigureFile("fig3_delta", path, f"versus {baseline}")]

        return draw

    got: dict[str, bytes] = {}

    def plot(baseline: str) -> None:
        (fig,) = memo.cached_figures(f"key {baseline}", "png", 60, shared, render(baseline))
        got[baseline] = fig.path.read_bytes()

    threads = [threading.Thread(target=plot, args=(b,)) for b in ("TS", "CG")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(got) == {"TS", "CG"}
    for b in ("TS", "CG"):  # a later plot, served from the memo into a folder of its own
        (fig,) = memo.cached_figures(f"key {b}", "png", 60, tmp_path / b, _refuse)
        assert fig.path.read_bytes() == f"delta versus {b}".encode()
    assert not [p for p in (cache / "analysis" / "figures").iterdir() if p.name.startswith(".")]  # no drawing left


def test_an_entry_whose_figure_is_not_what_was_stored_is_drawn_again(cache: Path, tmp_path: Path) -> None:
    """A figure replaced inside an entry (bytes other than its manifest's sha256) is damage: drawn again."""
    memo = Memo(cache)

    def draw(text: str):  # type: ignore[no-untyped-def]
        def render(folder: Path) -> list[FigureFile]:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "fig.png").write_bytes(text.encode())
            return [FigureFile("fig", folder / "fig.png", "")]

        return render

    memo.cached_figures("k", "png", 60, tmp_path / "one", draw("right"))
    (entry,) = (cache / "analysis" / "figures").iterdir()
    (entry / "fig.png").write_bytes(b"planted")
    (fig,) = memo.cached_figures("k", "png", 60, tmp_path / "two", draw("right"))
    assert fig.path.read_bytes() == b"right" and (entry / "fig.png").read_bytes() == b"right"


def test_a_folder_another_command_writes_is_refused_and_left_alone(analysis: Analysis, tmp_path: Path) -> None:
    """While another `usagg plot` or `report` holds the folder (simulated: its lock held here), a report into it is
    refused naming the holder and writes nothing; once it is released the report is written."""
    out = tmp_path / "rep"
    for held in (out, out / "figures"):
        with writing(held), pytest.raises(UsaggError, match=r"another usagg plot or report is writing .* pid"):
            write_report(analysis, out, dpi=30)
        assert not list(out.rglob("*.*"))
    write_report(analysis, out, dpi=30)
    assert (out / "report.md").is_file() and not list(out.rglob(".usagg-writing.lock"))


KILLED_DRAW = """
import sys, time
from pathlib import Path
from usagg.analysis.memo import FigureFile, Memo

def render(folder: Path) -> list[FigureFile]:
    (folder / "fig.png").write_bytes(b"half")
    print("drawing", flush=True)
    time.sleep(120)  # killed here, mid-draw
    return []

Memo(Path(sys.argv[1])).cached_figures("k", "png", 60, Path(sys.argv[2]), render)
"""


def test_a_draw_folder_whose_writer_was_killed_goes_with_the_next_draw_never_a_live_one(
    cache: Path, tmp_path: Path
) -> None:
    """A `usagg plot` killed mid-draw left `.<key>.draw-*` until `usagg cache prune`, 30 days on. The next command
    asking for that entry removes it (its writer's pid no longer runs), and an older usagg's lock-less one unchanged
    for DRAW_STALE_S, but never the folder of a writer still drawing (another thread here, or a young folder)."""
    from usagg.analysis.memo import DRAW_LOCK, DRAW_STALE_S

    figures = cache / "analysis" / "figures"
    killed = subprocess.Popen(
        [sys.executable, "-c", KILLED_DRAW, str(cache), str(tmp_path / "killed")], stdout=subprocess.PIPE, text=True
    )
    assert killed.stdout is not None and killed.stdout.readline() == "drawing\n"
    killed.kill()
    killed.wait()
    (left,) = figures.glob(".*.draw-*")
    assert (left / DRAW_LOCK).is_file()  # the killed writer's record: host, pid
    entry = left.name.split(".")[1]
    old, young = figures / f".{entry}.draw-old", figures / f".{entry}.draw-young"  # no lock: an older usagg's
    for folder in (old, young):
        folder.mkdir()
    os.utime(old, (os.path.getmtime(old) - DRAW_STALE_S - 60,) * 2)

    memo, drawing, release = Memo(cache), threading.Event(), threading.Event()

    def slow(folder: Path) -> list[FigureFile]:
        (folder / "fig.png").write_bytes(b"slow")
        drawing.set()
        release.wait(60)
        return [FigureFile("fig", folder / "fig.png", "")]

    def quick(folder: Path) -> list[FigureFile]:
        (folder / "fig.png").write_bytes(b"quick")
        return [FigureFile("fig", folder / "fig.png", "")]

    live = threading.Thread(target=memo.cached_figures, args=("k", "png", 60, tmp_path / "live", slow))
    live.start()
    try:
        assert drawing.wait(60)
        (fig,) = memo.cached_figures("k", "png", 60, tmp_path / "next", quick)  # the next draw of that entry
        assert fig.path.read_bytes() == b"quick"
        remaining = set(figures.glob(".*.draw-*"))
        assert left not in remaining and old not in remaining and young in remaining
        assert len(remaining - {young}) == 1  # the live thread's, still drawing, kept
    finally:
        release.set()
        live.join(60)
    assert set(figures.glob(".*.draw-*")) == {young}
