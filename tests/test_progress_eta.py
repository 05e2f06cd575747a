"""Progress (issue 29.7): ETAs from measured epochs (a stated range first, never a swing past it), one job counter
that never goes backwards (across stages too), and `usagg status` showing a running job's epoch, elapsed and ETA."""

from __future__ import annotations

import io
import json
import os
import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cli_run import run_cli
from rich.console import Console

from usagg.atomic import write_json_atomic
from usagg.cli.display import PlainDisplay, eta_text
from usagg.cli.eta import Clock, Eta, JobKind, estimate
from usagg.cli.runs import ConsoleObserver
from usagg.engine.progress import Progress
from usagg.historycsv import write_history
from usagg.plan import Job, plan
from usagg.run.studyrun import StudyRun
from usagg.spec.models import DataSpec, ModelSpec, Study, SynthSpec, TaskSpec, TrainingSpec
from usagg.store import RunStore

EPOCHS, STEPS = 10, 40
STARTUP_S, STEP_S, FIRST_EPOCH_SLOWDOWN, SELECT_S, TEST_S = 60.0, 1.0, 1.5, 5.0, 10.0


def job_stream(job_id: str, t0: float) -> Iterator[tuple[float, Progress]]:
    """A job's reports as (time, report): a minute of start-up, a first epoch whose steps decode images (1.5x
    slower), a selection pass per epoch; the test pass after the last selection is not reported."""
    t = t0 + STARTUP_S
    for epoch in range(EPOCHS):
        for step in range(1, STEPS + 1):
            t += STEP_S * (FIRST_EPOCH_SLOWDOWN if epoch == 0 else 1.0)
            yield t, Progress(job_id, "train", epoch, EPOCHS, step, STEPS, loss=0.5)
        yield t, Progress(job_id, "select", epoch, EPOCHS, STEPS, STEPS, loss=0.5)
        t += SELECT_S


#: When the stream's last selection pass ends, then the job (its test pass), seconds after its start.
TRAINED_S = STARTUP_S + STEPS * STEP_S * FIRST_EPOCH_SLOWDOWN + (EPOCHS - 1) * STEPS * STEP_S + EPOCHS * SELECT_S
JOB_S = TRAINED_S + TEST_S


class FakeTime:
    """The clock a test sets (the displays read `Clock.now`)."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_jobs_eta_is_a_range_that_holds_the_truth_then_one_estimate_that_stays() -> None:
    now = FakeTime()
    clock = Clock(1, now=now)
    clock.started("TS-a")
    etas: list[tuple[float, Eta | None]] = []
    for t, p in job_stream("TS-a", 0.0):
        now.t = t
        clock.progress(p)
        etas.append((t, clock.job_eta("TS-a")))
    assert etas[0][1] is None  # one report: no pace yet, and never one from the start-up
    given = [(t, e) for t, e in etas if e is not None]
    ranges = [(t, e) for t, e in given if not e.exact]
    exact = [(t, e) for t, e in given if e.exact]
    assert ranges and exact and given == ranges + exact  # a range first, then one estimate for good
    for t, e in ranges:  # the stated range holds when training really ends
        assert t + e.low <= TRAINED_S <= t + e.high, (t, e)
        assert e.high <= 4 * e.low + 1e-9  # at most the stated span (0.5x-2x), never hours for minutes
    for t, e in exact:  # measured from the epochs done: it moves only as time passes
        assert abs(t + e.low - TRAINED_S) <= STEP_S, (t, e)
    assert all(t0 + e0.low <= t + e.low <= t0 + e0.high for t0, e0 in ranges for t, e in exact)  # within every range
    epochs_timed_at_first_exact = int((exact[0][0] - STARTUP_S) // (STEPS + SELECT_S))
    assert epochs_timed_at_first_exact <= 3  # two epochs after the first one's training


def test_the_range_is_stated_in_words_and_the_estimate_with_a_tilde() -> None:
    assert eta_text(Eta(180.0, 360.0)) == "3-6 min"
    assert eta_text(Eta(20.0, 40.0)) == "20-40 s"
    assert eta_text(Eta(3 * 3600.0, 6 * 3600.0)) == "3.0-6.0 h"
    assert eta_text(Eta(250.0, 250.0)) == "~4m10s"
    assert eta_text(Eta(0.0, 0.0)) == "finishing"


def test_the_study_eta_comes_from_measured_jobs_and_does_not_swing() -> None:
    """Three jobs one after another: no study ETA from a job's first seconds; once the first job is measured the
    study's end moves by a few percent at most (it was 5h -> 3h -> 1h25 -> 2h32 in 14 minutes)."""
    now = FakeTime()
    clock = Clock(3, now=now)
    seen: list[tuple[float, Eta | None]] = []
    start = 0.0
    for job in ("TS-a", "TS-b", "TS-c"):
        now.t = start
        clock.started(job)
        seen.append((now.t, clock.study_eta()))
        for t, p in job_stream(job, start):
            now.t = t
            clock.progress(p)
            seen.append((t, clock.study_eta()))
        now.t = start + JOB_S
        clock.finished(job)
        start = now.t
    truth = 3 * JOB_S
    assert seen[0][1] is None and seen[1][1] is None  # nothing measured yet: no number at all
    ranges = [(t, e) for t, e in seen if e is not None and not e.exact]
    exact = [(t, e) for t, e in seen if e is not None and e.exact and t < truth - JOB_S]  # while jobs are left
    assert ranges and exact
    for t, e in ranges:
        assert t + e.low <= truth <= t + e.high, (t, e)
    ends = [t + e.low for t, e in exact]
    assert max(ends) - min(ends) <= 0.03 * truth and abs(ends[-1] - truth) <= 0.03 * truth


def test_a_pool_divides_the_work_left_by_the_jobs_run_at_once() -> None:
    now = FakeTime()
    clock = Clock(4, now=now)
    for job in ("TS-a", "TS-b"):
        clock.started(job)
    now.t = 100.0
    clock.finished("TS-a")  # 100 s a job; TS-b is 100 s in (no report yet: a job's time minus its elapsed)
    now.t = 120.0
    clock.started("TS-c")  # 0 s in
    # left: TS-b 0 s (past the mean), TS-c 100 s, one job never started 100 s; two at a time
    assert clock.study_eta() == Eta(100.0, 100.0)


def test_each_job_left_is_estimated_from_jobs_of_its_kind_not_the_longest() -> None:
    """Audit (hour): two AU jobs then two tiny TS jobs of a sweep, two at a time: the AU jobs' 120 s put on the TS
    jobs read "study eta ~2m00s" for a study 15 s from its end."""
    au1, au2, ts1, ts2 = (
        JobKind("AU", 9, "lr=1"),
        JobKind("AU", 9, "lr=5"),
        JobKind("TS", 1, "lr=1"),
        JobKind("TS", 1, "lr=5"),
    )
    now = FakeTime()
    clock = Clock(4, now=now, kinds={"AU-1": au1, "AU-2": au2, "TS-1": ts1, "TS-2": ts2})
    clock.started("AU-1")
    clock.started("AU-2")
    now.t = 120.0
    clock.finished("AU-1")  # 120 s; AU-2 at the same pace, ends at 125
    clock.started("TS-1")  # TS jobs take 10 s: TS-1 ends at 130, TS-2 (from 125) at 135
    # AU-2 at its kind's 120 s: 0 s left; each TS job from the AU's 120 s / 9 tasks, times 0.5 and 2
    eta = clock.study_eta()
    assert eta is not None and not eta.exact and (eta.low, eta.high) == pytest.approx((120 / 9 / 2, 120 / 9 * 2))
    assert eta.low <= 135 - 120 <= eta.high  # the old estimate: ~120 s, every TS job at the AU's mean
    now.t = 125.0
    clock.finished("AU-2")
    clock.started("TS-2")
    now.t = 130.0
    clock.finished("TS-1")  # 10 s: TS-2, of the other point, now at TS-1's time, 5 s in
    assert clock.study_eta() == Eta(5.0, 5.0)


def test_a_jobs_estimate_prefers_its_own_kind_then_its_paradigm_then_time_per_task() -> None:
    au, ts, ts_other, cg = JobKind("AU", 4, "a"), JobKind("TS", 1, "a"), JobKind("TS", 1, "b"), JobKind("CG", 2, "a")
    samples = [(au, 400.0, 400.0), (ts, 90.0, 110.0), (ts, 110.0, 130.0), (ts_other, 300.0, 300.0)]
    assert estimate(ts, samples) == (100.0, 120.0)  # its kind only: the other point's 300 s left out
    assert estimate(JobKind("TS", 1, "c"), samples[:1] + samples[3:]) == (300.0, 300.0)  # TS at another point
    # no CG measured: per task AU 100, TS 100..120, 100..120, 300 -> 150..160 a task, 2 tasks, 0.5x..2x
    assert estimate(cg, samples) == pytest.approx((150.0 * 2 * 0.5, 160.0 * 2 * 2))
    assert estimate(None, samples) == (225.0, 235.0)  # a job of no known kind: the mean of all, as before


def test_a_job_keeps_its_number_from_start_to_end_and_numbers_never_go_back() -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=80, force_terminal=False)
    with PlainDisplay(console, 3) as display:
        display.on_event("TS-a", "started", {})
        display.on_event("TS-b", "started", {})
        display.on_event("TS-b", "finished", {"state": "done"})
        display.on_event("TS-c", "started", {})
        display.on_event("TS-a", "failed", {"state": "failed", "error": "boom"})
        display.on_event("TS-c", "finished", {"state": "done"})
    lines = [line.split("] ", 1)[1] for line in buf.getvalue().splitlines()]
    numbers = [(line.split(": ", 1)[1].split(" ")[0], int(line.split("/")[0].removeprefix("job "))) for line in lines]
    assert numbers == [("TS-a", 1), ("TS-b", 2), ("TS-b", 2), ("TS-c", 3), ("TS-a", 1), ("TS-c", 3)]
    assert "(1/3 ended" in lines[2] and "(3/3 ended)" in lines[5] and lines[4].endswith(": boom")


def test_a_job_another_process_holds_is_said_to_run_elsewhere_and_never_timed() -> None:
    """A job whose lock another live process holds (the `locked` event, usagg/execute/base.py) was "running in
    0.0s (1/3 ended, study eta ~0.0s)": it never ran here, so it is said to run elsewhere, by whom, with no time,
    and the study's ETA comes from the jobs timed here only."""
    now = FakeTime()
    buf = io.StringIO()
    holder = {"host": "vm", "pid": 4242, "started": "2026-12-07T14:57:00+00:00"}
    with PlainDisplay(Console(file=buf, width=200, force_terminal=False), Clock(3, now=now)) as display:
        display.on_event("TS-a", "started", {"device": "cpu"})
        display.on_event("TS-a", "locked", {"state": "running", "holder": holder})
        display.on_event("TS-b", "started", {"device": "cpu"})
        now.t = 12.0
        display.on_event("TS-b", "finished", {"state": "done"})
    lines = [line.split("] ", 1)[1] for line in buf.getvalue().splitlines()]
    assert lines[1] == (
        "job 1/3: TS-a running elsewhere (held by vm pid 4242, since 2026-12-07T14:57:00+00:00): left to that "
        "process (1/3 ended)"
    )
    assert lines[3].endswith("done in 12.0s (2/3 ended, study eta ~12.0s)")  # one job left, at TS-b's 12 s


def test_a_job_another_process_finished_is_said_so_and_never_timed() -> None:
    """`finished` with `elsewhere` (usagg/execute/base.py `call_job`): not "done in 0.0s", and out of the ETA."""
    now = FakeTime()
    buf = io.StringIO()
    with PlainDisplay(Console(file=buf, width=200, force_terminal=False), Clock(2, now=now)) as display:
        display.on_event("TS-a", "finished", {"state": "done", "elsewhere": True})
        display.on_event("TS-b", "started", {"device": "cpu"})
        now.t = 8.0
        display.on_event("TS-b", "finished", {"state": "done"})
    lines = [line.split("] ", 1)[1] for line in buf.getvalue().splitlines()]
    assert lines[0] == "job 1/2: TS-a done by another process: nothing trained here (1/2 ended)", lines
    assert lines[2].endswith("TS-b done in 8.0s (2/2 ended)")


def _study(tmp_path: Path, epochs: int = EPOCHS) -> Study:
    return Study(
        name="eta",
        output_root=tmp_path / "runs",
        paradigms=["TS"],
        data=DataSpec(synthetic=SynthSpec()),
        model=ModelSpec(backbone="dinov3_test", image_size=64),
        training=TrainingSpec(epochs=epochs),
        tasks=[
            TaskSpec(id="heart_cls", type="classification", num_classes=3, group="cardiac"),
            TaskSpec(id="head_box", type="detection", num_classes=1, group="head"),
        ],
    )


def test_the_counter_goes_on_across_the_stages_of_a_run(tmp_path: Path) -> None:
    """`usagg run`'s observer keeps one clock: the jobs a staged paradigm adds are numbered after the first stage's."""
    run = StudyRun.prepare(_study(tmp_path))
    ids = [j.id for j in run.jobs]
    buf = io.StringIO()
    observer = ConsoleObserver(Console(file=buf, width=200, force_terminal=False))
    run.todo = ids[:1]
    with observer.running(run.todo):
        observer.job_event(ids[0], "started", {})
        observer.job_event(ids[0], "finished", {"state": "done"})
    run.todo = ids[1:]
    observer.stage_started(run, run.jobs[1:])
    with observer.running(run.todo):
        observer.job_event(ids[1], "started", {})
    heads = [line.split("] ", 1)[1].split(":")[0] for line in buf.getvalue().splitlines() if "] job " in line]
    assert heads == ["job 1/1", "job 1/1", "job 2/2"]


def _running_store(tmp_path: Path, done_before: int) -> tuple[RunStore, Job]:
    """A store of the study whose first job has `done_before` epochs in history.csv (an earlier attempt's)."""
    jobs = plan(_study(tmp_path))
    store = RunStore(tmp_path / "runs" / "eta")
    store.init("name: eta\n", jobs)
    if done_before:
        history = [{"epoch": e, "step": 4 * e, "loss": 1.0 / e} for e in range(1, done_before + 1)]
        write_history(store.paths(jobs[0].id).history, history, jobs[0].task_ids)
    return store, jobs[0]


def _start_attempt(store: RunStore, job: Job, done_now: int) -> None:
    """The job runs (the caller holds its lock): this attempt began 100 s ago, history.csv holds `done_now` epochs,
    the last written 10 s ago."""
    store.set_state(job.id, "running", expect=("pending",))
    record = json.loads(store.paths(job.id).record.read_text())
    record["started"] = (datetime.now(timezone.utc) - timedelta(seconds=100)).isoformat()
    write_json_atomic(store.paths(job.id).record, record)
    history = [{"epoch": e, "step": 4 * e, "loss": 1.0 / e} for e in range(1, done_now + 1)]
    write_history(store.paths(job.id).history, history, job.task_ids)
    written = time.time() - 10
    os.utime(store.paths(job.id).history, (written, written))


@pytest.mark.parametrize(("before", "now"), [(0, 3), (5, 6)])
def test_status_shows_a_running_jobs_epoch_elapsed_and_eta(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], before: int, now: int
) -> None:
    """A first attempt with 3 epochs in 90 s: 30 s each, 7 left, the last ended 10 s ago, so 200 s. Only this
    attempt's epochs are timed: one that resumed at 5 and did 1 in 90 s gives a range (one epoch timed)."""
    store, job = _running_store(tmp_path, before)
    with store.lock(job.id):
        _start_attempt(store, job, now)
        assert store.job_record(job.id)["start_epoch"] == before  # what history.csv held when the attempt started
        store.note_device(job.id, "cuda:1 (NVIDIA H100 80GB HBM3)")  # the runner's, once the job chose its card
        code, out = run_cli(["status", str(store.root), "--json"], monkeypatch, capsys)
        assert code == 0
        row = next(r for r in json.loads(out) if r["job_id"] == job.id)
        left = 90.0 / (now - before) * (EPOCHS - now)
        span = (1.0, 1.0) if now - before >= 2 else (0.75, 1.5)
        assert row["state"] == "running" and row["epoch"] == now + 1 and row["epochs"] == EPOCHS
        assert abs(row["elapsed_s"] - 100.0) < 5 and row["device"] == "cuda:1 (NVIDIA H100 80GB HBM3)"
        assert row["eta_s"] == pytest.approx([left * span[0] - 10, left * span[1] - 10], abs=5)
        code, out = run_cli(["status", str(store.root)], monkeypatch, capsys)
    assert code == 0 and f"epoch {now + 1}/{EPOCHS}, ETA " in out and re.search(r"running │ 1m[45]\ds", out)
    assert re.search(r"│ cuda:1 +│", out)  # the device under the state
    # 200 s less the seconds the CLI took: one number once two epochs are timed, else a range
    assert re.search(r"ETA ~3m[0-2]\ds" if before == 0 else r"ETA [34]-9 min", out)
    rows = json.loads(run_cli(["status", str(store.root), "--json"], monkeypatch, capsys)[1])
    assert all("eta_s" not in r for r in rows if r["state"] != "running")  # its lock let go: interrupted, no ETA
    store.set_state(job.id, "running")  # a new attempt has not chosen its device yet
    assert store.job_record(job.id)["device"] is None
    store.set_state(job.id, "failed", error="boom")
    store.note_device(job.id, "cpu (2 threads)")  # too late: a record no longer running is left alone
    assert store.job_record(job.id)["device"] is None
