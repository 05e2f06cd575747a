"""Each job records the code that ran it (metrics.json `training.versions` and `training.plugins`): job ids hash
settings, never code, so `usagg run` warns of done jobs another usagg minor version or another plug-in version made,
and a report's provenance names the code."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_run import run_cli
from tiny_study import write_tiny_study

from usagg import NUMERICS_VERSION, __version__, registry
from usagg.analysis.inputs import load_input
from usagg.analysis.provenance import Provenance, code_text, device_text, provenance
from usagg.atomic import read_json_checked, write_json_checked
from usagg.jobmetrics import code_changes, metrics_problem, running_code
from usagg.paradigms import PARADIGMS
from usagg.store import RunStore

#: A paradigm written outside the package, a lab's own: each task alone.
LAB_PARADIGM = """
from usagg.paradigms import Unit, register_paradigm


@register_paradigm("LAB", "each task alone, the lab's way")
def plan_lab(study):
    return [Unit(paradigm="LAB", name=t.id, tasks=(t.id,), moe=False) for t in study.tasks]
"""


def _distribution(folder: Path, name: str, version: str, *, top_level: str = "", entry_points: str = "") -> None:
    """An installed distribution's metadata in `folder` (on sys.path), as pip leaves it."""
    info = folder / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    if top_level:
        (info / "top_level.txt").write_text(f"{top_level}\n")
    if entry_points:
        (info / "entry_points.txt").write_text(entry_points)


@pytest.fixture
def fresh_plugins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """A process that has not loaded its plug-ins yet, `tmp_path/plugins` importable (here and in workers); what the
    test loads is forgotten after it."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.setattr(registry, "_loaded", {})
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", str(folder))
    monkeypatch.delenv(registry.PLUGINS_ENV, raising=False)
    yield folder
    PARADIGMS.unregister("LAB")
    for module in ("lab_paradigm", "lab_bare", "lab_versioned", "lab_ep"):
        sys.modules.pop(module, None)


def test_every_loaded_plugin_is_recorded_with_its_version(fresh_plugins: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry point by its distribution; a USAGG_PLUGINS module by its distribution's version, else its
    `__version__`, else null."""
    (fresh_plugins / "lab_paradigm.py").write_text(LAB_PARADIGM)
    _distribution(fresh_plugins, "lab-paradigm", "2.1", top_level="lab_paradigm")
    (fresh_plugins / "lab_versioned.py").write_text("__version__ = '0.3'\n")
    (fresh_plugins / "lab_bare.py").write_text("")
    (fresh_plugins / "lab_ep.py").write_text("")
    _distribution(fresh_plugins, "usagg-lab-ep", "0.7", entry_points="[usagg.paradigms]\nlab = lab_ep\n")
    monkeypatch.setenv(registry.PLUGINS_ENV, "lab_paradigm, lab_versioned,lab_bare")
    plugins = {"lab_bare": None, "lab_paradigm": "2.1", "lab_versioned": "0.3", "usagg-lab-ep": "0.7"}
    assert registry.loaded_plugins() == plugins
    code = running_code()
    assert code["plugins"] == plugins and code["versions"]["usagg"] == __version__
    assert code["versions"]["torch"] and code["versions"]["timm"]  # both installed here
    assert metrics_problem({"tasks": {}, "training": {"epochs": 1, **code}}) is None
    assert metrics_problem({"tasks": {}, "training": {"epochs": 1}}) is None  # written before it was recorded


def test_what_differs_is_said_with_both_versions() -> None:
    now = {
        "versions": {"usagg": "0.4.2", "numerics": "1", "torch": "2.5", "timm": "1.0"},
        "plugins": {"lab": "2.0", "new": None},
    }
    recorded = {"versions": {"usagg": "0.3.9", "torch": "2.1", "timm": "0.9"}, "plugins": {"lab": "1.0", "gone": "0.1"}}
    assert code_changes(recorded, now) == [
        "usagg 0.3.9 (this run: 0.4.2)",
        "plug-in gone 0.1 (not loaded by this run)",
        "plug-in lab 1.0 (this run: 2.0)",
        "no plug-in new (this run loads new (no version))",
    ]
    patch = {"versions": {"usagg": "0.4.0", "numerics": "1", "torch": "2.4", "timm": "1.0"}, "plugins": now["plugins"]}
    assert code_changes(patch, now) == []  # a patch release of usagg, another torch: not compared
    assert code_changes({"epochs": 1, "device": "cpu"}, now) == []  # only what is recorded is compared


def test_numerics_version_is_pinned() -> None:
    """Bump usagg.NUMERICS_VERSION, and this number with it, in a commit that changes the numbers a job of the same
    settings and data trains or evaluates to (engine, model, loss, augmentation, sampling, selection, a metric): done
    jobs of the old value are then named in `usagg run`'s changed-code warning. A refactor, a message or the analysis
    keeps it. A reviewer of a commit that changes a known-answer or a trained number checks that it changed this."""
    assert NUMERICS_VERSION == 1


def test_another_numerics_version_is_said_though_usaggs_version_is_the_same() -> None:
    """An upgrade audit: `__version__` was 0.1.0 for 700 commits, some of which changed what a job trains to, so the
    changed-code warning, which compared only usagg's minor version, never fired. The numerics version is compared."""
    versions = {"usagg": __version__, "numerics": str(NUMERICS_VERSION), "torch": "2.5", "timm": "1.0"}
    now = {"versions": versions, "plugins": {}}
    older = {"versions": {**versions, "numerics": "0"}, "plugins": {}}
    said = f"usagg numerics 0 (this run: {NUMERICS_VERSION}: what a job trains to changed)"
    assert code_changes(older, now) == [said]
    before = {"versions": {k: v for k, v in versions.items() if k != "numerics"}, "plugins": {}}
    assert code_changes(before, now) == []  # recorded before the numerics were: their first value, 1
    assert code_text(older) == "usagg 0.1.0 (numerics 0), torch 2.5, timm 1.0, no plug-in"


def _run(spec: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    code, out = run_cli(["run", str(spec)], monkeypatch, capsys)
    assert code == 0, out
    return " ".join(out.split())


def _rewrite_code(store: RunStore, job_id: str, **code: Any) -> None:
    """metrics.json of a done job with other `training.versions` / `training.plugins` (None: not recorded, as before
    usagg recorded them), checksummed as a writer leaves it."""
    path = store.paths(job_id).metrics
    data, why = read_json_checked(path)
    assert data is not None, why
    training = {k: v for k, v in {**data["training"], **code}.items() if v is not None}
    write_json_checked(path, {**data, "training": training})


@pytest.mark.slow  # three runs of a tiny study
def test_a_run_records_the_code_and_warns_of_done_jobs_other_code_made(
    fresh_plugins: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (fresh_plugins / "lab_paradigm.py").write_text(LAB_PARADIGM)
    _distribution(fresh_plugins, "lab-paradigm", "1.0", top_level="lab_paradigm")
    monkeypatch.setenv(registry.PLUGINS_ENV, "lab_paradigm")
    spec = write_tiny_study(tmp_path / "code.yaml", "code", tmp_path / "data", paradigms=["LAB"])
    monkeypatch.chdir(tmp_path)
    _run(spec, monkeypatch, capsys)
    store = RunStore(tmp_path / "runs" / "code")
    jobs = store.job_ids()
    assert len(jobs) == 2 and all(store.job_state(j) == "done" for j in jobs)
    training = store.metrics(jobs[0])["training"]
    versions = training["versions"]
    assert versions == running_code()["versions"] and versions["usagg"] == __version__
    assert training["plugins"] == {"lab_paradigm": "1.0"}  # the version of the distribution that installed it
    assert all(store.metrics(j)["training"]["plugins"] == {"lab_paradigm": "1.0"} for j in jobs)
    assert "other code" not in _run(spec, monkeypatch, capsys)  # the same code: nothing to say

    # as a later plug-in version and a later usagg would have written them
    _rewrite_code(store, jobs[0], plugins={"lab_paradigm": "0.9"})
    _rewrite_code(store, jobs[1], versions={**versions, "usagg": "0.0.1"})
    out = _run(spec, monkeypatch, capsys)
    assert (
        "2 done jobs of study 'code' were made by other code than this run's: plug-in lab_paradigm 0.9 (this run: "
        f"1.0) for 1 job; usagg 0.0.1 (this run: {__version__}) for 1 job. Job ids hash a job's settings, never its "
        "code, so their results are kept as they are and compared with the new ones; to train the study with this "
        "code, run it under a new name (--set name=NEW)."
    ) in out
    assert all(store.job_state(j) == "done" for j in jobs)
    assert store.metrics(jobs[1])["training"]["versions"]["usagg"] == "0.0.1"  # a pure read: nothing rewritten

    lines = provenance(load_input(store.root, None)).lines()
    torch_timm = f"torch {versions['torch']}, timm {versions['timm']}"
    assert lines[-1] == (
        f"code, differing between jobs: usagg {__version__} (numerics 1), {torch_timm}, plug-ins lab_paradigm 0.9 (1 "
        f"job); usagg 0.0.1 (numerics 1), {torch_timm}, plug-ins lab_paradigm 1.0 (1 job)"
    )

    for j in jobs:  # a store from before usagg recorded the code
        _rewrite_code(store, j, versions=None, plugins=None)
    assert "other code" not in _run(spec, monkeypatch, capsys)
    assert provenance(load_input(store.root, None)).lines()[-1] == "code: not recorded (no job metrics with it)"


def test_the_report_says_the_code_once_when_every_job_agrees() -> None:
    prov = Provenance("0.1.0", "today", "host", "results.csv", "")
    prov.code = ["usagg 0.1.0, torch 2.5, timm 1.0, no plug-in"] * 3
    assert prov.lines()[-1] == "code: usagg 0.1.0, torch 2.5, timm 1.0, no plug-in (every job)"
    prov.code.append(None)
    assert prov.lines()[-1] == (
        "code, differing between jobs: usagg 0.1.0, torch 2.5, timm 1.0, no plug-in (3 jobs); not recorded (1 job)"
    )


def test_the_report_says_each_cpu_jobs_threads_and_a_resume_on_another_count() -> None:
    """A CPU job's numbers depend on its threads: a report mixing counts shows them apart."""
    assert device_text({"device": "cuda:0", "threads": None}) == "cuda:0"
    assert device_text({"device": "cpu"}) == "cpu"  # written before usagg recorded it
    assert device_text({"device": "cpu", "threads": 1}) == "cpu, 1 thread"
    assert device_text({"device": "cpu", "threads": 2, "threads_before": 1}) == "cpu, 2 threads after 1"
    prov = Provenance("0.1.0", "today", "host", "results.csv", "")
    prov.jobs = [("a", "cpu, 1 thread", "fp32"), ("b", "cpu, 2 threads after 1", "fp32")]
    assert "jobs: 2 ran on cpu, 1 thread / fp32; cpu, 2 threads after 1 / fp32 (device / precision; per job below)" in (
        prov.lines()
    )


@pytest.mark.parametrize("state", ["behind its jobs", "missing"])
def test_provenance_hashes_the_table_the_analysis_read(tmp_path: Path, state: str) -> None:
    """Audit docs 3: with results.csv behind its jobs (a row short, older than them) or gone, the analysis reads the
    table rebuilt from the jobs, but the provenance gave the sha256 of the stale file, or an empty one. It now hashes
    the rebuilt table and says so; a current results.csv keeps its own file's hash."""
    import hashlib
    import os

    from test_store_confinement import _store

    from usagg.filehash import sha256_of

    store, _ = _store(tmp_path)
    fresh = provenance(load_input(store.root, None))
    assert fresh.source_sha256 == sha256_of(store.results_csv) and fresh.source == str(store.results_csv)
    rebuilt = store.results_text()
    if state == "missing":
        store.results_csv.unlink()
    else:
        lines = store.results_csv.read_text().splitlines(keepends=True)
        store.results_csv.write_text("".join(lines[:-1]))  # a row short
        os.utime(store.results_csv, (0, 0))  # older than the jobs' metrics.json
    inp = load_input(store.root, None)
    prov = provenance(inp)
    assert prov.source_sha256 == hashlib.sha256(rebuilt.encode()).hexdigest()
    assert state == "missing" or sha256_of(store.results_csv) != prov.source_sha256  # not the stale file's
    said = f"the table rebuilt from the job folders ({store.results_csv} is {state})"
    assert inp.source_text == said and f"results: {said} (sha256 {prov.source_sha256[:16]})" in prov.lines()
