"""`usagg run`'s display: whole plain lines in a log (per job event and per epoch), ETAs, quiet and verbose."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from usagg.cli.display import PlainDisplay, RichDisplay, duration_text, make_display
from usagg.cli.eta import Clock, Eta
from usagg.engine.progress import Progress

LONG_ID = "TS-a_task_id_that_is_much_longer_than_eighty_columns_of_a_ci_log_would_allow-f0.25-s17-0123abcd"
ERROR = "DataError: " + "the image at train/x.png could not be read because " * 6 + "it is empty"


def _log_console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=80, force_terminal=False), buf


def _feed(display: PlainDisplay | RichDisplay, epochs: int = 3, steps: int = 4) -> None:
    display.on_event(LONG_ID, "started", {})
    for epoch in range(epochs):
        for step in range(1, steps + 1):
            display.on_progress(Progress(LONG_ID, "train", epoch, epochs, step, steps, loss=0.5, images_per_s=10.0))
        display.on_progress(Progress(LONG_ID, "select", epoch, epochs, steps, steps, loss=0.5))
    display.on_event(LONG_ID, "finished", {"state": "done"})
    display.on_event("AU-all-f1-s0-1", "started", {})
    display.on_event("AU-all-f1-s0-1", "failed", {"state": "failed", "error": ERROR})


def test_off_a_terminal_each_event_and_epoch_is_one_whole_line() -> None:
    console, buf = _log_console()
    display = make_display(console, 2, verbose=False, quiet=False)
    assert isinstance(display, PlainDisplay)
    with display:
        _feed(display)
    lines = buf.getvalue().splitlines()
    assert [line.split("] ", 1)[1].split(":")[0] for line in lines if "job " in line.split("] ", 1)[1][:4]] == [
        "job 1/2",
        "job 1/2",
        "job 2/2",
        "job 2/2",
    ]
    epoch_lines = [line for line in lines if " epoch " in line]
    assert [line.split(" epoch ")[1].split(" ")[0] for line in epoch_lines] == ["1/3", "2/3", "3/3"]
    assert all(LONG_ID in line for line in epoch_lines)  # the id whole, on the line
    assert "job eta" in epoch_lines[0] and "loss 0.5000" in epoch_lines[0]
    failed = [line for line in lines if "failed" in line]
    assert len(failed) == 1 and failed[0].endswith(ERROR.strip()) and "study eta" not in failed[0]
    assert any("done in" in line and "study eta ~" in line for line in lines)


def test_verbose_prints_every_report_and_quiet_only_failures() -> None:
    console, buf = _log_console()
    with PlainDisplay(console, 2, verbose=True) as display:
        _feed(display)
    assert sum(" epoch " in line for line in buf.getvalue().splitlines()) == 3 * 5
    console, buf = _log_console()
    with make_display(console, 2, verbose=False, quiet=True) as display:
        _feed(display)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1 and "failed" in lines[0] and ERROR.strip() in lines[0]


def test_a_terminal_gets_rich_with_failures_printed_whole() -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=100, force_terminal=True, color_system=None)
    display = make_display(console, 2, verbose=False, quiet=False)
    assert isinstance(display, RichDisplay)
    with display:
        _feed(display)
    text = buf.getvalue().replace("\n", "")
    assert "AU-all-f1-s0-1 failed in " in text and f"s: {ERROR}" in text  # above the bars, whole


def test_etas_come_from_measured_epochs() -> None:
    """Details and the swing bounds: tests/test_progress_eta.py."""
    t = [0.0]
    clock = Clock(n_jobs=4, now=lambda: t[0])
    clock.started("a")
    for epoch in range(3):  # 10 s per epoch of 4 steps
        for step in range(1, 5):
            t[0] = 10.0 * epoch + 2.5 * step
            clock.progress(Progress("a", "train", epoch, 10, step, 4))
    assert clock.job_eta("a") == Eta(70.0, 70.0)  # 7 epochs left at the 10 s measured
    assert clock.study_eta() == Eta(70.0 + 3 * 100.0, 70.0 + 3 * 100.0)  # three more jobs of 100 s
    clock.finished("a")
    assert clock.durations == [30.0] and clock.study_eta() == Eta(90.0, 90.0)  # three jobs left at 30 s each
    assert duration_text(4.24) == "4.2s" and duration_text(185) == "3m05s" and duration_text(3720) == "1h02m"


def test_jobs_run_at_once_get_a_row_each_and_the_study_eta_divides_by_them() -> None:
    """A local pool runs jobs side by side (usagg/execute/pool.py): each has its own row while it runs, start lines
    count starts, and the study's ETA divides the work left by the jobs run at once."""
    buf = io.StringIO()
    console = Console(file=buf, width=160, force_terminal=True, color_system=None)
    display = RichDisplay(console, 4)
    with display:
        display.on_event("TS-a", "started", {})
        display.on_event("TS-b", "started", {})
        display.on_progress(Progress("TS-a", "train", 0, 2, 3, 4, loss=0.5, images_per_s=10.0))
        display.on_progress(Progress("TS-b", "train", 1, 2, 1, 4, loss=0.7, images_per_s=9.0))
        rows = {t.description: t for t in display.progress.tasks}
        assert set(display.rows) == {"TS-a", "TS-b"} and rows["TS-a"].completed == 3 and rows["TS-b"].completed == 5
        display.on_event("TS-a", "finished", {"state": "done"})
        assert set(display.rows) == {"TS-b"} and "TS-a" not in {t.description for t in display.progress.tasks}
        display.on_progress(Progress("TS-a", "test", 1, 2, 4, 4))  # a late report of an ended job: no row back
        assert set(display.rows) == {"TS-b"}
    clock = display.clock
    assert clock.parallel == 2 and len(clock.numbers) == 2 and clock.ended == 1
    clock.durations[-1] = 40.0
    clock.now = lambda: clock.running["TS-b"].started + 10.0  # TS-b has no ETA yet: a job of 40 s, 10 s in
    # 4 jobs, 1 ended, TS-b with 30 s left, two never started: (30 + 2 * 40) s of work, two at a time; `started`
    # is the monotonic clock, so (started + 10) - started is 10 only to the clock's rounding (a long uptime)
    eta = clock.study_eta()
    assert eta is not None and eta.low == pytest.approx(55.0) and eta.high == pytest.approx(55.0)

    console, buf = _log_console()
    with PlainDisplay(console, 3) as plain:
        for job in ("TS-a", "TS-b"):
            plain.on_event(job, "started", {})
        plain.on_event("TS-b", "finished", {"state": "done"})
        plain.on_event("TS-c", "started", {})
    heads = [line.split("] ", 1)[1].split(" in ")[0] for line in buf.getvalue().splitlines()]
    # a job keeps its number from start to end: TS-b ends first and is still job 2
    assert heads == ["job 1/3: TS-a started", "job 2/3: TS-b started", "job 2/3: TS-b done", "job 3/3: TS-c started"]


NOTE = "execution.accel=graphs applies to CUDA devices only; this job runs eager on cpu"


def _start(job_id: str, device: str = "cpu (2 threads)", note: str | None = NOTE) -> Progress:
    """A job's first report (usagg/engine/job.py `run_job`): its device and accel fallback."""
    return Progress(job_id, "start", 0, 2, 0, 0, device=device, accel_note=note)


def _texts(buf: io.StringIO) -> list[str]:
    return [line.split("] ", 1)[1] for line in buf.getvalue().splitlines()]


def test_a_start_line_names_the_device_and_a_fallen_back_accel_mode_is_said_once_per_run() -> None:
    """In-process jobs (the executor cannot name the device) get their start line from the job's start report; a
    pool's event names the GPU or the CPU threads itself; the accel fallback is one line however many jobs share
    it, and one that never reports its start still gets its start line before its end."""
    console, buf = _log_console()
    with PlainDisplay(console, 5) as display:
        for job in ("TS-a", "TS-b"):
            display.on_event(job, "started", {"device": "in-process"})
            display.on_progress(_start(job))
            display.on_event(job, "finished", {"state": "done"})
        display.on_event("TS-c", "started", {"device": 1, "jobs_at_once": 2})
        display.on_event("TS-d", "started", {"device": "cpu", "jobs_at_once": 2, "threads": 2})
        display.on_progress(_start("TS-c", "cuda:0 (NVIDIA H100 80GB HBM3)", note=None))  # the worker's own view
        display.on_event("TS-e", "started", {"device": "in-process"})
        display.on_event("TS-e", "failed", {"state": "failed", "error": "DataError: x"})
    texts = _texts(buf)
    assert [t for t in texts if "started" in t] == [
        "job 1/5: TS-a started on cpu (2 threads)",
        "job 2/5: TS-b started on cpu (2 threads)",
        "job 3/5: TS-c started on cuda:1",
        "job 4/5: TS-d started on cpu (2 threads)",
        "job 5/5: TS-e started",
    ]
    assert texts[1] == f"warning: {NOTE}" and sum(NOTE in t for t in texts) == 1
    at = texts.index("job 5/5: TS-e started")
    assert texts[at + 1].startswith("job 5/5: TS-e failed in ") and texts[at + 1].endswith(": DataError: x")

    console, buf = _log_console()
    with PlainDisplay(console, 1, quiet=True) as display:  # quiet: failures and warnings only
        display.on_event("TS-a", "started", {"device": "in-process"})
        display.on_progress(_start("TS-a"))
        display.on_event("TS-a", "finished", {"state": "done"})
    assert _texts(buf) == [f"warning: {NOTE}"]


def test_a_terminal_row_names_its_device_and_the_fallback_is_one_line_above_the_bars() -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=160, force_terminal=True, color_system=None)
    with RichDisplay(console, 3) as display:
        display.on_event("TS-a", "started", {"device": "in-process"})
        assert display.progress.tasks[-1].description == "TS-a"
        display.on_progress(_start("TS-a"))
        display.on_event("TS-b", "started", {"device": 1})
        display.on_progress(_start("TS-b", "cuda:0 (NVIDIA H100 80GB HBM3)"))
        assert [t.description for t in display.progress.tasks[1:]] == ["TS-a on cpu (2 threads)", "TS-b on cuda:1"]
        display.on_event("TS-a", "finished", {"state": "done"})
        display.on_progress(_start("TS-a"))  # a late report of an ended job: no row back
        assert set(display.rows) == {"TS-b"}
    assert buf.getvalue().count(NOTE) == 1


@pytest.mark.parametrize(
    "infos",
    [
        [{"slurm_job_id": f"1001_{i}"} for i in range(3)],  # what usagg/execute/slurm.py sends today
        [{"slurm_job_id": f"1001_{i}", "slurm_id": f"1001_{i}", "array_id": "1001"} for i in range(3)],
        [{"slurm_id": f"1001_{i}", "array_id": 1001} for i in range(3)],
    ],
)
def test_a_slurm_submission_is_one_line_naming_its_array(infos: list[dict[str, object]]) -> None:
    console, buf = _log_console()
    with PlainDisplay(console, 3) as display:
        for job, info in zip(("TS-a", "TS-b", "TS-c"), infos, strict=True):
            display.on_event(job, "submitted", info)
        display.on_event("TS-b", "finished", {"state": "done", "slurm_job_id": "1001_1"})
    assert _texts(buf)[0] == "submitted 3 jobs to Slurm as array 1001"
    assert _texts(buf)[1:] == ["job 1/3: TS-b done (1/3 ended)"]

    buf = io.StringIO()
    terminal = Console(file=buf, width=160, force_terminal=True, color_system=None)
    with RichDisplay(terminal, 3) as rich:
        for job, info in zip(("TS-a", "TS-b", "TS-c"), infos, strict=True):
            rich.on_event(job, "submitted", info)
    assert buf.getvalue().count("submitted 3 jobs to Slurm as array 1001") == 1


def test_a_submission_outside_an_array_is_a_line_per_job_and_quiet_says_none() -> None:
    console, buf = _log_console()
    with PlainDisplay(console, 2) as display:
        display.on_event("TS-a", "submitted", {"slurm_job_id": "1001"})
        display.on_event("TS-b", "submitted", {})
    assert _texts(buf) == ["submitted TS-a to Slurm as job 1001", "TS-b submitted"]
    console, buf = _log_console()
    with PlainDisplay(console, 1, quiet=True) as display:
        display.on_event("TS-a", "submitted", {"slurm_job_id": "1001_0"})
    assert buf.getvalue() == ""


def test_at_80_columns_a_running_job_keeps_its_whole_id_and_both_etas() -> None:
    """A new user's 80-column terminal cut both the job id and the ETAs ('AU-all-f1-s0-a45d1d… job eta 16-6…'): a
    narrow terminal gets two lines a job, wrapped at spaces, nothing cut; a wide one keeps a line a job."""
    t = [0.0]
    for width, lines_a_job in ((80, 2), (200, 1)):
        buf = io.StringIO()
        console = Console(file=buf, width=width, force_terminal=False, color_system=None)
        clock = Clock(n_jobs=4, now=lambda: t[0])
        display = RichDisplay(console, clock)
        job = "AU-all-f1-s0-a45d1d7f"
        display.on_event(job, "started", {"device": "cpu (1 thread)"})
        for epoch in range(2):
            for step in range(1, 5):
                t[0] = 10.0 * epoch + 2.5 * step
                display.on_progress(Progress(job, "train", epoch, 7, step, 4, loss=0.4123, images_per_s=57.1))
        console.print(display.progress.get_renderable())
        rows = [line.rstrip() for line in buf.getvalue().splitlines()]
        text = " ".join(" ".join(rows).split())
        assert f"{job} on cpu (1 thread)" in text and "job eta 37-75 s" in text and "study eta " in text, text
        assert "…" not in text and max(len(r) for r in rows) <= width
        at = next(i for i, r in enumerate(rows) if job in r)
        assert ("epoch 2/7" in rows[at]) == (lines_a_job == 1)
