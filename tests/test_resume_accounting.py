"""A job killed and resumed: its training seconds cover every attempt's epochs, as its affinity seconds do; the
console's img/s is training steps only (an affinity measurement is not a slow step); the console says it resumed."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_run import run_cli
from rich.console import Console
from test_engine_trainer import _trainer as engine_trainer

from tests.tiny_study import THYROID_PAIR, write_tiny_study
from usagg.cli.display import PlainDisplay, RichDisplay
from usagg.engine.affinity import LookaheadAffinity
from usagg.engine.callbacks import BatchEnd, Callback, ProgressReporter
from usagg.engine.checkpointing import Checkpointing
from usagg.engine.job import run_job
from usagg.engine.progress import Progress
from usagg.engine.trainer import Trainer, _trained
from usagg.plan import Job, plan
from usagg.spec.load import load_study
from usagg.store import RunStore

pytestmark = pytest.mark.slow  # trains real tiny jobs


@pytest.fixture(scope="module")
def au(tmp_path_factory: pytest.TempPathFactory) -> Job:
    """An AU job of 3 epochs of 2 steps measuring affinity every 2 steps: at each epoch's last step."""
    d = tmp_path_factory.mktemp("resume-accounting")
    spec = write_tiny_study(
        d / "study.yaml",
        "resume-accounting",
        d,
        paradigms=("AU", "AG"),
        tasks=THYROID_PAIR,
        epochs=3,
        steps=2,
        training={"batch_size": 6, "warmup_epochs": 0.5, "checkpoint_every": 1},
        extra={"analysis": {"affinity": {"every": 2, "probe_size": 3}}},
    )
    (job,) = [j for j in plan(load_study(spec)) if j.paradigm == "AU"]
    return job


class _KillAt(Callback):
    """Ctrl-C after optimiser step `step` (its affinity measurement taken, its epoch not ended)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: Trainer, batch: BatchEnd) -> None:
        if trainer.state.step == self.step:
            raise KeyboardInterrupt


def _killed_at(job: Job, ckpt: Path, step: int) -> Trainer:
    first = engine_trainer(job, ckpt)
    first.callbacks.insert(-1, _KillAt(step))  # before the checkpoint, as a watcher goes
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    return first


def test_a_resumed_jobs_training_seconds_cover_every_attempts_epochs(au: Job, tmp_path: Path) -> None:
    """Killed in epoch 2 after its measurement: last.pt holds epoch 1 (its training time and step 2's measurement);
    the resumed fit measures steps 4 and 6 again and trains epochs 2-3, so both spans are epochs 1-3."""
    first = _killed_at(au, tmp_path, 4)
    second = engine_trainer(au, tmp_path)
    fit = second.fit()
    assert second.resumed_from == 1 and second.affinity is not None
    trained = [first.epoch_speed[0], *second.epoch_speed]
    assert fit.train_images == sum(n for n, _ in trained)
    assert fit.train_seconds == pytest.approx(sum(s for _, s in trained), abs=1e-9)
    aff = second.affinity.record(fit.train_seconds)
    assert aff.steps == [2, 4, 6] and 0 < aff.seconds <= aff.train_seconds and 0 < aff.share < 1


def test_the_resumed_job_files_agree(au: Job, tmp_path: Path) -> None:
    """run_job across a Ctrl-C: affinity.json's train_seconds is metrics.json's, over the whole job's epochs; the
    resumed attempt's progress says where it went on."""
    with pytest.raises(KeyboardInterrupt):
        run_job(au, tmp_path, "cpu", callbacks=[_KillAt(4)])
    heard: list[Progress] = []
    metrics = run_job(au, tmp_path, "cpu", progress=heard.append)
    aff = json.loads((tmp_path / "affinity.json").read_text())
    throughput = metrics["throughput"]
    assert aff["train_seconds"] == pytest.approx(throughput["train_seconds"], abs=1e-3)
    assert aff["seconds"] <= aff["train_seconds"] and aff["steps"] == [2, 4, 6]
    assert throughput["train_images_per_s"] * throughput["train_seconds"] == pytest.approx(3 * 2 * 6, rel=1e-2)
    assert [(p.phase, p.epoch) for p in heard[:3]] == [("start", 0), ("resume", 1), ("train", 1)]


def test_a_job_resumed_on_another_thread_count_says_so_and_records_both(
    au: Job, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A CPU job's numbers depend on its threads: one resumed on another count (another machine, a changed
    execution.threads) cannot match an uninterrupted run, which the log and metrics.json now say."""
    import torch

    before = torch.get_num_threads()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_job(au, tmp_path, "cpu", threads=1, callbacks=[_KillAt(4)])
        with caplog.at_level("WARNING"):
            metrics = run_job(au, tmp_path, "cpu", threads=2)
    finally:
        torch.set_num_threads(before)
    assert metrics["training"]["threads"] == 2 and metrics["training"]["threads_before"] == 1
    assert "resumed on 2 CPU threads where its first 1 epoch trained on 1:" in caplog.text
    fresh = run_job(au, tmp_path / "fresh", "cpu", threads=1)
    assert fresh["training"]["threads"] == 1 and fresh["training"]["threads_before"] is None


def test_a_second_resume_keeps_the_count_the_first_epochs_trained_on(
    au: Job, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Epoch 1 on 1 thread, epoch 2 on 2, epoch 3 on 2: the last resume compared 2 with 2 and the job's metrics
    said it trained on one count."""
    import torch

    before = torch.get_num_threads()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_job(au, tmp_path, "cpu", threads=1, callbacks=[_KillAt(4)])
        with pytest.raises(KeyboardInterrupt):
            run_job(au, tmp_path, "cpu", threads=2, callbacks=[_KillAt(6)])
        metrics = run_job(au, tmp_path, "cpu", threads=2)
        assert (metrics["training"]["threads"], metrics["training"]["threads_before"]) == (2, 1)
        with pytest.raises(KeyboardInterrupt):
            run_job(au, tmp_path / "back", "cpu", threads=1, callbacks=[_KillAt(4)])
        with pytest.raises(KeyboardInterrupt):
            run_job(au, tmp_path / "back", "cpu", threads=2, callbacks=[_KillAt(6)])
        with caplog.at_level("WARNING"):
            back = run_job(au, tmp_path / "back", "cpu", threads=1)  # 1, 2, then 1 again
    finally:
        torch.set_num_threads(before)
    assert (back["training"]["threads"], back["training"]["threads_before"]) == (1, 2)
    assert "resumed on 1 CPU thread where its first 2 epochs trained on 1 and 2:" in caplog.text


def test_a_fresh_fit_says_no_resume(au: Job, tmp_path: Path) -> None:
    heard: list[Progress] = []
    trainer = engine_trainer(au.model_copy(update={"affinity": None}), tmp_path)
    trainer.callbacks.insert(0, ProgressReporter("mine", heard.append))
    trainer.fit(stop_after_epoch=1)
    assert trainer.resumed_from is None and {p.phase for p in heard} <= {"train", "select"}


def test_a_checkpoint_without_training_time_counts_this_runs(caplog: pytest.LogCaptureFixture) -> None:
    assert _trained({"trained": {"images": 12, "seconds": 1.5}}) == (12, 1.5)
    assert _trained({}) == (0, 0.0) and "keeps no training time" in caplog.text


def test_the_images_per_s_leave_the_affinity_measurement_out(
    au: Job, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A measurement at each epoch's last step that takes 0.4 s: the epoch's report is still its steps' speed (it
    read 6 images / 0.4 s before), the epoch's images over its seconds less the measurement's."""
    measure = LookaheadAffinity.measure

    def slow(self: LookaheadAffinity, *args: Any, **kwargs: Any) -> Any:
        out = measure(self, *args, **kwargs)
        t0 = time.perf_counter()
        time.sleep(0.4)
        self.seconds += time.perf_counter() - t0  # the sleep counted as measuring, as measure counts its own time
        return out

    monkeypatch.setattr(LookaheadAffinity, "measure", slow)
    heard: list[Progress] = []
    trainer = engine_trainer(au, tmp_path)
    trainer.callbacks.insert(0, ProgressReporter("mine", heard.append))
    measured: list[float] = []
    seen = {"at": 0.0}

    class _Measured(Callback):
        def on_train_epoch_end(self, trainer: Trainer, entry: dict[str, Any]) -> None:
            measured.append(trainer.measuring_seconds() - seen["at"])
            seen["at"] = trainer.measuring_seconds()

    trainer.callbacks.insert(0, _Measured())
    trainer.fit()
    ends = [p for p in heard if p.phase == "train" and p.step == p.steps]
    assert len(ends) == len(trainer.epoch_speed) == len(measured) == 3
    for p, (n, secs), aside in zip(ends, trainer.epoch_speed, measured, strict=True):
        assert aside >= 0.4 and p.images_per_s is not None
        assert p.images_per_s == pytest.approx(n / (secs - aside), rel=0.3)
        assert p.images_per_s > 2 * n / secs  # the old rate, the measurement counted, is far below


def _resume_report() -> Progress:
    return Progress("AU-all", "resume", 1, 2, 0, 55)


def test_the_plain_log_says_a_job_resumed() -> None:
    buf = io.StringIO()
    with PlainDisplay(Console(file=buf, width=80, force_terminal=False), 1) as display:
        display.on_event("AU-all", "started", {"device": "in-process"})
        display.on_progress(Progress("AU-all", "start", 0, 2, 0, 0, device="cpu (2 threads)"))
        display.on_progress(_resume_report())
    lines = [line.split("] ", 1)[1] for line in buf.getvalue().splitlines()]
    assert lines == ["job 1/1: AU-all started on cpu (2 threads)", "AU-all resumed from epoch 1/2"]
    buf = io.StringIO()
    with PlainDisplay(Console(file=buf, width=80, force_terminal=False), 1, quiet=True) as display:
        display.on_event("AU-all", "started", {})
        display.on_progress(_resume_report())
    assert buf.getvalue() == ""


def test_a_terminal_says_a_job_resumed_above_the_bars_and_in_its_row() -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=160, force_terminal=True, color_system=None)
    with RichDisplay(console, 1) as display:
        display.on_event("AU-all", "started", {"device": "cpu"})
        display.on_progress(_resume_report())
        (row,) = [t for t in display.progress.tasks if t.description.startswith("AU-all")]
        assert row.completed == 55 and row.total == 110 and row.fields["info"] == "resumed from epoch 1/2"
    assert "AU-all resumed from epoch 1/2" in buf.getvalue()


def _ctrl_c_after_epoch_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[Path, Job]:
    """`usagg run --only` of a tiny study's one job, Ctrl-C once epoch 1's last.pt is written (exit 130), run from
    tmp_path: (the spec, the job)."""
    study = write_tiny_study(
        tmp_path / "study.yaml", "tiny", tmp_path / "data", epochs=2, steps=2, execution={"devices": "cpu"}
    )
    (job,) = [j for j in plan(load_study(study)) if j.task_ids == ["thyroid_malignancy"]]
    save_last = Checkpointing.save_last

    def then_ctrl_c(self: Checkpointing, trainer: Trainer) -> None:
        save_last(self, trainer)
        self.wait()
        raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    with monkeypatch.context() as patched:
        patched.setattr(Checkpointing, "save_last", then_ctrl_c)
        code, _ = run_cli(["run", str(study), "--only", job.id], monkeypatch, capsys)
    assert code == 130
    return study, job


def test_usagg_run_says_a_job_resumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C once epoch 1's last.pt is written, then the same `usagg run` (off a terminal: the plain lines)."""
    study, job = _ctrl_c_after_epoch_1(tmp_path, monkeypatch, capsys)
    code, out = run_cli(["run", str(study), "--only", job.id], monkeypatch, capsys)
    assert code == 0 and RunStore(tmp_path / "runs" / "tiny").job_state(job.id) == "done", out
    lines = out.splitlines()
    started = next(i for i, line in enumerate(lines) if f"{job.id} started" in line)
    assert lines[started + 1].endswith(f"{job.id} resumed from epoch 1/2")


def test_a_last_checkpoint_of_an_older_layout_is_said_to_start_over_and_kept_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An upgrade audit: a job an older usagg left half-trained (last.pt of layout 3) restarted from epoch 1 with only
    its log.txt saying so, after `usagg status` had said `usagg run` resumes it, and its last.pt was overwritten.
    Status, the dry run and the run now say it starts over, and the old last.pt is kept aside."""
    from usagg.engine import checkpoint
    from usagg.store.checkpoints import CHECKPOINT_FORMAT

    spec = write_tiny_study(
        tmp_path / "old.yaml", "old", tmp_path, tasks=THYROID_PAIR[:1], epochs=2, output_root=tmp_path / "runs"
    )
    code, out = run_cli(["run", str(spec)], monkeypatch, capsys)
    assert code == 0, out
    store = RunStore(tmp_path / "runs" / "old")
    (jid,) = store.job_ids()
    store.set_state(jid, "running")  # killed mid-way: its process is gone
    last = store.paths(jid).last_checkpoint
    last.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.save_atomic({"format": 3, "epoch": 1, "model": {"w": torch.zeros(2)}}, last)
    old = last.read_bytes()
    assert store.unresumable_layout(jid) == 3 and CHECKPOINT_FORMAT != 3

    code, out = run_cli(["status", str(store.root)], monkeypatch, capsys)
    said = " ".join(out.split())
    assert code == 0 and "resumes them" not in said, out
    assert "`usagg run` starts 1 over from epoch 1: its last.pt was written by an older usagg (layout 3)" in said

    code, out = run_cli(["run", str(spec), "--dry-run", "--json"], monkeypatch, capsys)
    assert (
        code == 0
        and json.JSONDecoder().raw_decode(out[out.index("[") :])[0][0]["action"] == "restart (last.pt of layout 3)"
    ), out

    code, out = run_cli(["run", str(spec)], monkeypatch, capsys)
    said = " ".join(out.split())
    assert code == 0 and store.job_state(jid) == "done", out
    assert f"1 job ({jid}) starts over from epoch 1: its last.pt was written by an older usagg (layout 3;" in said
    assert "kept as last.pt.not-resumed" in said
    assert (last.parent / "last.pt.not-resumed").read_bytes() == old


@pytest.mark.parametrize("cause", ["damaged", "other frozen weights"])
def test_a_last_checkpoint_not_resumed_is_said_at_the_jobs_start_and_by_status(
    cause: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An upgrade audit: a job whose last.pt was damaged, or made for other frozen weights (model.weights or the
    seeded initialisation changed), started over from epoch 1 with only its log.txt saying so, the file kept aside.
    The run's line under the job's start line says it, and `usagg status` after; a damaged one, which the store reads
    as such without torch, `usagg status` and the dry run say beforehand too, as they do an older layout's."""
    from usagg.engine import checkpoint

    study, job = _ctrl_c_after_epoch_1(tmp_path, monkeypatch, capsys)
    store = RunStore(tmp_path / "runs" / "tiny")
    store.set_state(job.id, "running")  # killed, not stopped: its process is gone (status: interrupted)
    last = store.paths(job.id).last_checkpoint
    if cause == "damaged":
        last.write_bytes(b"not a checkpoint")
        kept, why = "last.pt.damaged", "last.pt is damaged (cannot be read as a checkpoint (UnpicklingError: "
        code, out = run_cli(["status", str(store.root)], monkeypatch, capsys)
        said = " ".join(out.split())
        assert code == 0 and "`usagg run` starts 1 over from epoch 1: its last.pt is damaged" in said, out
        code, out = run_cli(["run", str(study), "--only", job.id, "--dry-run", "--json"], monkeypatch, capsys)
        assert code == 0 and "1 job (" in out and "starts over from epoch 1: its last.pt is damaged" in out, out
        assert json.JSONDecoder().raw_decode(out[out.index("[") :])[0][0]["action"] == "restart (last.pt damaged)"
    else:
        ck = checkpoint.load(last)
        checkpoint.save_atomic({**ck, "fingerprint": "0" * 64}, last)
        kept, why = "last.pt.not-resumed", "last.pt cannot be resumed: its frozen weights differ from this model's"
    code, out = run_cli(["run", str(study), "--only", job.id], monkeypatch, capsys)
    assert code == 0 and store.job_state(job.id) == "done", out
    lines = out.splitlines()
    started = next(i for i, line in enumerate(lines) if f"{job.id} started" in line)
    assert f"] warning: {job.id} starts over from epoch 1: {why}" in lines[started + 1], lines[started : started + 2]
    assert lines[started + 1].endswith(f"kept as {kept}") and (last.parent / kept).is_file()
    assert not [line for line in lines if "resumed from epoch" in line]

    rows = json.loads(run_cli(["status", str(store.root), "--json"], monkeypatch, capsys)[1])
    row = next(r for r in rows if r["job_id"] == job.id)
    assert [r["restarted"] for r in rows if r is not row] == [None] * (len(rows) - 1)
    assert row["restarted"].startswith(why) and row["restarted"].endswith(f"kept as {kept}"), row
    code, out = run_cli(["status", str(store.root)], monkeypatch, capsys)
    assert code == 0 and f"started over from epoch 1: {why}" in out, out
    store.set_state(job.id, "running")  # a next attempt: its own restart, if any, is noted anew
    assert store.job_record(job.id)["restarted"] is None
