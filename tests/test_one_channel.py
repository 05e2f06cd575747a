"""One observer channel (issue 27 item 4): no process-wide progress listener is left; the run's progress sink is
passed down from the executor to the trainer, so a real study's jobs report their epochs in this process and from
pool workers alike, and the job's trackers are a trainer callback."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

import usagg
from tests.tiny_study import FETAL_HEAD, MALIGNANCY, write_tiny_study
from usagg.engine import progress
from usagg.engine.callbacks import Callback
from usagg.engine.progress import Progress
from usagg.tracking import JobTrackers, TensorBoardTracker

PACKAGE = Path(usagg.__file__).resolve().parent


def _globals(path: Path) -> set[str]:
    """Names a module rebinds with `global`: its module-level mutable state."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return {name for node in ast.walk(tree) if isinstance(node, ast.Global) for name in node.names}


def test_no_module_level_progress_listener_remains() -> None:
    rebound = {f"{p.relative_to(PACKAGE)}:{n}" for p in PACKAGE.rglob("*.py") for n in _globals(p)}
    assert not [g for g in rebound if any(w in g.lower() for w in ("listen", "progress", "sink", "observer"))]
    assert not {"_listener", "listening", "report"} & set(vars(progress))  # the old hook is gone, not renamed


def test_a_sink_is_bound_only_where_someone_listens_and_a_broken_one_is_ignored() -> None:
    def fn(store_root: str, job_id: str, **kwargs: object) -> str:
        return f"{job_id}:{sorted(kwargs)}"

    assert progress.with_progress(fn, None) is fn  # job functions without a sink parameter still run
    heard: list[Progress] = []
    assert progress.with_progress(fn, heard.append)("root", "j") == "j:['progress']"

    def broken(p: Progress) -> None:
        raise RuntimeError("display down")

    progress.send(broken, Progress("j", "train", 0, 1, 1, 1))  # no error: display problems are not training's
    progress.send(None, Progress("j", "train", 0, 1, 1, 1))


def test_job_trackers_are_a_trainer_callback_that_logs_each_epoch(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trackers = JobTrackers([TensorBoardTracker(tmp_path, {"job_id": "j"}, {"seed": 0})])
    assert isinstance(trackers, Callback)
    for epoch, loss in ((1, 0.5), (2, 0.25)):
        trackers.on_epoch_end(None, {"epoch": epoch, "loss": loss})  # type: ignore[arg-type]  # reads the entry only
    trackers.finish(None, "failed")
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(1, 0.5), (2, 0.25)]


def _run(tmp_path: Path, cpu_jobs: int) -> tuple[list[Progress], object]:
    from usagg.api import run_study

    root = tmp_path / f"jobs{cpu_jobs}"
    root.mkdir()
    spec = write_tiny_study(
        root / "study.yaml",
        f"channel{cpu_jobs}",
        root,
        output_root=root / "runs",
        tasks=(MALIGNANCY, FETAL_HEAD),
        epochs=2,
        steps=2,
        synthetic={"default_size": 12},
        model={"heads": {"hidden": 16, "decoder_channels": 8}},
        training={"batch_size": 4},
        execution={"devices": "cpu", "cpu_jobs": cpu_jobs, "threads": 1},
        extra={"tracking": {"tensorboard": True}},
    )
    heard: list[Progress] = []
    result = run_study(spec, on_progress=heard.append)
    return heard, result


@pytest.mark.slow
@pytest.mark.parametrize("cpu_jobs", [1, 2], ids=["in-process", "pool"])
def test_every_jobs_epochs_reach_on_progress_and_its_trackers(tmp_path: Path, cpu_jobs: int) -> None:
    """A real study through the API: each job's epoch ends and selections arrive at on_progress, whether the job ran
    in this process or in a pool worker (forwarded over its pipe), and its TensorBoard files hold each epoch."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    heard, result = _run(tmp_path, cpu_jobs)
    assert result.ok and len(result.states) == 2  # type: ignore[attr-defined]
    for job_id in result.states:  # type: ignore[attr-defined]
        mine = [(p.phase, p.epoch, p.step) for p in heard if p.job_id == job_id]
        assert [m for m in mine if m[0] == "select" or m[2] == 2] == [
            ("train", 0, 2), ("select", 0, 2), ("train", 1, 2), ("select", 1, 2)
        ]  # fmt: skip
        acc = EventAccumulator(str(result.store_root / "tensorboard" / job_id))  # type: ignore[attr-defined]
        acc.Reload()
        assert [e.step for e in acc.Scalars("loss")] == [1, 2]


@pytest.mark.slow
def test_a_gpu_pool_forwards_progress_only_when_listened_to(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU pool (pinned workers, run here without a GPU) forwards each job's reports to on_progress; without
    one, the job function is called without a sink (fake_run_one takes none) and every job still ends done."""
    from test_executors import fake_run_one, make_store, run_one_reporting_progress

    from usagg.execute import PoolExecutor

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    store, ids = make_store(tmp_path / "heard", ["ok", "ok"])
    heard: list[Progress] = []
    fn = functools.partial(run_one_reporting_progress, device="cuda")
    assert PoolExecutor(str(store.root), [0, 1]).run(ids, fn, None, heard.append) == dict.fromkeys(ids, "done")
    for job_id in ids:
        ends = [(p.phase, p.epoch) for p in heard if p.job_id == job_id and (p.phase != "train" or p.step == 25)]
        assert ends == [("train", 0), ("select", 0), ("train", 1), ("select", 1), ("test", 1)]
    store, ids = make_store(tmp_path / "unheard", ["ok", "ok"])
    fn = functools.partial(fake_run_one, device="cuda")
    assert PoolExecutor(str(store.root), [0, 1]).run(ids, fn) == dict.fromkeys(ids, "done")
