"""A received run store is data: hostile content in its files is named as damage, never a crash or a hang.

Deep JSON nesting (a RecursionError in the parser), job.json fields of the wrong type, oversized files, look-alike
job ids (format characters) and a plan that lists a job twice: each is named by file, `usagg repair` mends what
the store can rebuild, and `usagg status` (table and --json) keeps working.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cli_run import run_cli
from tests.test_store_confinement import _store as confined_store
from usagg.affinity import read_affinity
from usagg.atomic import read_json_checked, read_regular
from usagg.cli.display import duration_text
from usagg.errors import UsaggError
from usagg.joblock import DAMAGED_HOLDER, read_holder
from usagg.plan import Job
from usagg.safepath import UnsafePath, check_component, component_problem, printable
from usagg.store import RunStore
from usagg.store.records import ERROR_CHARS, RECORD_LIMIT

DEEP = 20_000  # far past Python's recursion limit, yet small enough for every file's size limit
DEEP_LIST = "[" * DEEP + "]" * DEEP
DEEP_OBJECT = '{"a":' * DEEP + "1" + "}" * DEEP


def _store(tmp_path: Path) -> tuple[RunStore, Job]:
    """A store with one done job of 3 epochs (tests/test_store_confinement.py's)."""
    return confined_store(tmp_path, epochs=3)


def _record(store: RunStore, job: Job) -> dict[str, Any]:
    return json.loads(store.paths(job.id).record.read_text())


def _write_record(store: RunStore, job: Job, /, **fields: Any) -> None:
    store.paths(job.id).record.write_text(json.dumps({**_record(store, job), **fields}))


def _running_elsewhere(store: RunStore, job: Job, /, **fields: Any) -> None:
    """The job running now on another host: a fresh foreign lock, so `status` computes its progress."""
    _write_record(store, job, state="running", finished=None, duration_s=None, **fields)
    holder = {"host": "elsewhere.cluster", "pid": 1, "started": "2026-01-01T00:00:00+00:00", "token": "t"}
    store.paths(job.id).lock.write_text(json.dumps(holder))


# --------------------------------------------------------------------------- 1: deep nesting


@pytest.mark.parametrize("content", [DEEP_LIST, DEEP_OBJECT], ids=["list", "object"])
def test_deep_json_reads_as_damage_in_every_store_reader(tmp_path: Path, content: str) -> None:
    store, job = _store(tmp_path)
    paths = store.paths(job.id)
    for path in (paths.metrics, paths.item_scores, paths.affinity, store.specs_json):
        path.write_text(content)
    paths.lock.write_text(DEEP_LIST)  # within a lock file's size limit
    data, why = read_json_checked(paths.metrics)
    assert data is None and "nested deeper than Python can parse" in str(why)
    assert store.metrics(job.id) is None and any(str(paths.metrics) in n for n in store.repairs)
    assert read_holder(paths.lock) == {DAMAGED_HOLDER: "not a lock record (ValueError)"}
    assert store.spec_files() == []
    with pytest.raises(UsaggError, match=r"affinity\.json is not an affinity file"):
        read_affinity(paths.affinity)


def test_deep_job_json_is_shown_as_damage_and_repaired(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store, job = _store(tmp_path)
    store.paths(job.id).record.write_text(DEEP_LIST)
    code, out = run_cli(["status", str(store.root)], monkeypatch, capsys)
    assert code == 0 and "job.json is damaged" in out and "nested deeper" in out and "1 done" in out
    code, out = run_cli(["status", str(store.root), "--json"], monkeypatch, capsys)
    assert code == 0 and json.loads(out)[0]["state"] == "done"
    code, out = run_cli(["repair", str(store.root)], monkeypatch, capsys)
    assert code == 0 and "set aside as job.json.damaged" in out
    assert _record(store, job)["state"] == "done"


def test_a_deep_plan_is_a_named_damaged_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store, _ = _store(tmp_path)
    store.plan_json.write_text(DEEP_LIST)
    with pytest.raises(UsaggError, match=r"plan\.json is damaged \(ValueError\)"):
        store.jobs()
    assert store.planned_count() is None and store.study_affinity() is None
    code, out = run_cli(["status", str(store.root)], monkeypatch, capsys)
    assert code != 0 and "plan.json is damaged" in out and "Traceback" not in out


# --------------------------------------------------------------------------- 2: job.json's fields


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("duration_s", "x"),
        ("duration_s", math.inf),
        ("duration_s", math.nan),
        ("attempts", "x"),
        ("attempts", -1),
        ("attempts", True),
        ("started", "garbage"),
        ("started", "2026-01-01T00:00:00"),  # no zone: `set_state` could not take a duration from it
        ("finished", 5),
        ("host", 5),
        ("pid", "x"),
        ("error", ["x"]),
        ("start_epoch", "x"),
        ("restarted", 5),
        ("weights_key", 1),
    ],
)
def test_a_record_field_of_the_wrong_type_is_damage_that_repair_mends(
    tmp_path: Path, field: str, value: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store, job = _store(tmp_path)
    _write_record(store, job, **{field: value})  # json.dumps writes Infinity and NaN as a received store may
    assert store.job_record(job.id)["attempts"] == 0  # read as repair rebuilds it
    assert any(f"its {field} is" in n for n in store.repairs)
    code, out = run_cli(["status", str(store.root), "--json"], monkeypatch, capsys)
    assert code == 0 and json.loads(out, parse_constant=pytest.fail)[0]["duration_s"] is None
    code, out = run_cli(["repair", str(store.root)], monkeypatch, capsys)
    assert code == 0 and "set aside as job.json.damaged" in out and "rebuilt from the plan as done" in out
    assert _record(store, job).get(field) == (0 if field == "attempts" else None)


@pytest.mark.parametrize(
    "fields",
    [{"started": "garbage"}, {"attempts": "x"}, {"start_epoch": "x"}, {"job_training_epochs": "x"}],
    ids=["started", "attempts", "start_epoch", "epochs"],
)
def test_status_of_a_running_job_with_a_bad_field_does_not_crash(
    tmp_path: Path, fields: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store, job = _store(tmp_path)
    if "job_training_epochs" in fields:  # the Job's own settings: not the record's, shown as unknown
        dump = _record(store, job)["job"]
        dump["training"]["epochs"] = fields.pop("job_training_epochs")
        fields["job"] = dump
    started = "2026-01-01T00:00:00+00:00"
    _running_elsewhere(store, job, **{"started": started, "attempts": 2, "start_epoch": 0, **fields})
    monkeypatch.setattr(RunStore, "epochs_done", lambda self, job_id: (2, time.time()))  # two epochs timed: an ETA
    for args in (["status", str(store.root)], ["status", str(store.root), "--json"]):
        code, out = run_cli(args, monkeypatch, capsys)
        assert code == 0 and "Traceback" not in out, out


def test_duration_text_and_status_json_take_only_finite_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert [duration_text(v) for v in ("x", math.inf, -math.inf, math.nan, True, None)] == [""] * 6
    assert duration_text(65.0) == "1m05s"
    store, job = _store(tmp_path)
    metrics = store.metrics(job.id)
    assert metrics is not None
    metrics["tasks"]["heart_cls"]["metrics"]["AUC"] = math.nan  # a metric may be undefined
    store.write_metrics(job.id, metrics)
    code, out = run_cli(["status", str(store.root), "--json"], monkeypatch, capsys)
    row = json.loads(out, parse_constant=pytest.fail)[0]  # standard JSON: no NaN or Infinity
    assert code == 0 and row["primary"] == {"heart_cls": {"metric": "AUC", "value": None}}


# --------------------------------------------------------------------------- 4: sizes


def test_read_regular_refuses_a_file_over_its_limit_naming_the_size(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_bytes(b"x" * 101)
    assert read_regular(path, 101) == b"x" * 101
    with pytest.raises(OSError, match=r"101 bytes, more than the 100 a store file may hold") as err:
        read_regular(path, 100)
    assert err.value.errno == errno.EINVAL and err.value.filename == str(path)


def test_an_oversized_job_json_is_damage_and_status_stays_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store, job = _store(tmp_path)
    _write_record(store, job, state="failed", error="E" * (RECORD_LIMIT + 1))
    code, out = run_cli(["status", str(store.root)], monkeypatch, capsys)
    size = os.path.getsize(store.paths(job.id).record)
    assert code == 0 and f"job.json is damaged ({size:,} bytes, more than the {RECORD_LIMIT:,}" in out
    assert "EEEE" not in out
    code, out = run_cli(["repair", str(store.root)], monkeypatch, capsys)
    assert code == 0 and "set aside as job.json.damaged" in out and _record(store, job)["state"] == "done"


def test_status_shows_no_more_of_a_recorded_error_than_the_store_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store, job = _store(tmp_path)
    _write_record(store, job, state="failed", error="E" * 5000)
    code, out = run_cli(["status", str(store.root), "--json"], monkeypatch, capsys)
    assert code == 0 and json.loads(out)[0]["error"] == "E" * ERROR_CHARS
    code, out = run_cli(["status", str(store.root)], monkeypatch, capsys, columns=10_000)
    assert code == 0 and "E" * ERROR_CHARS in out and "E" * (ERROR_CHARS + 1) not in out


# --------------------------------------------------------------------------- 9: look-alike and duplicate ids


@pytest.mark.parametrize("ch", ["\u200b", "\u200d", "\ufeff", "\u00ad", "\u202e", "\u2066"])
def test_format_characters_are_refused_in_a_job_id(tmp_path: Path, ch: str) -> None:
    with pytest.raises(UnsafePath, match="contains control characters"):
        check_component(f"TS-a{ch}", "plan.json, job id")
    assert printable(f"a{ch}b") == f"a{ascii(ch)[1:-1]}b"
    with pytest.raises(UnsafePath):
        RunStore(tmp_path).job_dir(f"TS-a{ch}")


def test_ordinary_non_ascii_text_still_passes() -> None:
    for text in ("Δ→ü", "TS-fötal_Δ→größe", "naïve café", "日本語"):
        assert component_problem(text) is None and check_component(text, "x") == text and printable(text) == text


def test_a_plan_listing_a_job_twice_is_named_as_damage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store, job = _store(tmp_path)
    records = json.loads(store.plan_json.read_text())
    store.plan_json.write_text(json.dumps(records * 2))
    with pytest.raises(UsaggError, match=rf"plan\.json is damaged \(it lists job ids more than once: {job.id}\)"):
        store.jobs()
    code, out = run_cli(["status", str(store.root)], monkeypatch, capsys)
    assert code != 0 and "more than once" in out and "2 done" not in out
    code, out = run_cli(["repair", str(store.root)], monkeypatch, capsys)
    assert code == 1 and "more than once" in out


def test_every_read_of_a_plan_listing_a_job_twice_reports_the_damage_status_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The analysis' count of planned jobs and its affinity read plan.json raw: a job listed twice would be counted
    (a measuring job averaged) twice, so both refuse it as `jobs` (status, repair) does, in the same words; compare
    says so even where results.csv is current and the jobs need not be read."""
    store, job = _store(tmp_path)
    records = json.loads(store.plan_json.read_text())
    store.plan_json.write_text(json.dumps(records * 2))
    with pytest.raises(UsaggError) as status:
        store.jobs()
    with pytest.raises(UsaggError) as count:
        store.planned_count()
    with pytest.raises(UsaggError) as affinity:
        store.study_affinity()
    expected = f"{store.plan_json} is damaged (it lists job ids more than once: {job.id}); a run of the study's "
    assert str(status.value).startswith(expected)
    assert str(count.value) == str(affinity.value) == str(status.value)
    code, out = run_cli(["compare", str(store.root)], monkeypatch, capsys)
    assert code == 2 and "more than once" in out and "planned" not in out and "Traceback" not in out
    store.plan_json.write_text(json.dumps([*records, {"simulated": True}, ["not", "a", "job"]]))
    assert store.planned_count() == len(records) + 2  # entries that are no job are no duplicate: counted, as before
    assert store.study_affinity() is None


def test_a_lock_record_over_its_limit_is_a_damaged_lock(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": 1, "pad": "x" * 100_000}))
    holder = read_holder(path)
    assert holder is not None and "more than the" in str(holder[DAMAGED_HOLDER])


@pytest.mark.parametrize("content", ["[" * 100_000 + "]" * 100_000, '["not", "an", "object"]', "{broken"])
def test_a_damaged_mlflow_record_reads_as_none(tmp_path: Path, content: str) -> None:
    """mlflow.json of a received store nested too deep, not an object or not JSON: no run is known, no traceback."""
    from usagg.spec.models import MlflowSpec
    from usagg.tracking import _recorded_parent

    store = RunStore(tmp_path / "runs" / "toy")
    store.mlflow_record.parent.mkdir(parents=True)
    store.mlflow_record.write_text(content)
    assert _recorded_parent(MlflowSpec(uri="sqlite:///x.db"), store.root) is None


@pytest.mark.parametrize("pid", [2**70, 0, -1, True, 2**22 + 1], ids=["huge", "zero", "minus-one", "true", "past-max"])
def test_a_lock_naming_no_process_is_not_a_live_holder(
    tmp_path: Path, pid: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An auditor's received lock: pid 2**70 crashed `usagg status` (OverflowError in os.kill), and 0, -1 or true
    probed a process group, every process or init and read as a live holder, so the job stayed locked."""
    from usagg.joblock import JobLock

    store, job = _store(tmp_path)
    lock = store.paths(job.id).lock
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": pid, "token": "t"}))
    holder = read_holder(lock)
    assert holder is not None and not JobLock(lock, job.id, 5.0, 60.0).holder_alive(holder)
    code, out = run_cli(["status", str(store.root)], monkeypatch, capsys)
    assert code == 0 and "Traceback" not in out and "OverflowError" not in out, out


def test_ragged_expert_usage_is_a_damaged_metrics_file_not_a_plot_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An auditor's received metrics.json: expert_usage rows of different lengths (with a valid checksum) ended
    `usagg plot` and `report` in numpy's 'inhomogeneous shape' traceback; it is a damaged file, named."""
    from usagg.jobmetrics import metrics_problem

    store, job = _store(tmp_path)
    metrics = json.loads(store.paths(job.id).metrics.read_text())
    metrics.pop("checksum", None)
    metrics["expert_usage"] = {"heart_cls": [[3, 1, 0, 0], [2, 2]]}
    assert "one count per expert" in str(metrics_problem(metrics))
    store.write_metrics(job.id, metrics)
    for args, expected in (
        (["plot", str(store.root), "--out", str(tmp_path / "figs")], 2),
        (["status", str(store.root)], 0),
    ):
        code, out = run_cli(args, monkeypatch, capsys)
        assert code == expected and "Traceback" not in out and "inhomogeneous" not in out, out
        assert "metrics.json" in out and "one count per expert" in out


def test_a_fix_command_quotes_the_store_path_for_the_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An auditor's store folder named `t$(touch PWNED)`: the suggested `usagg repair <store>` ran the payload when
    pasted; every suggested command quotes its paths (usagg/wording.py `command`)."""
    import shlex

    store, job = _store(tmp_path)
    named = store.root.with_name("t$(touch PWNED)")
    store.root.rename(named)
    store = RunStore(named)
    store.paths(job.id).metrics.write_text("{broken")
    code, out = run_cli(["status", str(named)], monkeypatch, capsys)
    flat = " ".join(out.split())
    assert code == 0 and f"`usagg repair {shlex.quote(str(named))}`" in flat, out
    assert shlex.split(f"usagg repair {shlex.quote(str(named))}")[-1] == str(named)


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_a_history_cell_that_is_no_finite_number_is_damage_repair_mends(
    tmp_path: Path, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An auditor's history.csv with epoch=inf: `epochs_done` raised OverflowError (every later attempt of the job
    failed) and `history_damage` took the file, so `repair` found nothing. usagg writes no such cell (`_cell`)."""
    from usagg.historycsv import history_damage, write_history

    store, job = _store(tmp_path)
    path = store.paths(job.id).history
    history = [{"epoch": e, "step": 4 * e, "loss": 1.0 / e, "task_loss": {"heart_cls": 1.0 / e}} for e in (1, 2, 3)]
    write_history(path, history, job.task_ids)
    rows = path.read_text().splitlines()
    path.write_text("\n".join([*rows[:-1], value + rows[-1][1:]]) + "\n")  # the last epoch's "3" becomes `value`
    assert f"{value!r} is not a finite number" in str(history_damage(path))
    assert store.epochs_done(job.id) == (0, None)  # unreadable as a count, never an OverflowError
    code, out = run_cli(["repair", str(store.root)], monkeypatch, capsys)
    assert code == 0 and "history.csv" in out, out
    assert history_damage(path) is None


def test_an_older_usaggs_history_csv_is_rewritten_and_said_so_not_called_damaged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An upgrade audit: usagg up to 476ee14 wrote select_loss as the task -> loss mapping's repr, and the first run
    after the upgrade called every job's history.csv damaged. It is the older layout, rewritten in place."""
    from usagg.historycsv import OLDER_LAYOUT, history_damage, write_history

    store, job = _store(tmp_path)
    path = store.paths(job.id).history
    history = [
        {
            "epoch": e,
            "step": 4 * e,
            "loss": 1.0 / e,
            "task_loss": {"heart_cls": 1.0 / e},
            "select_loss": {"heart_cls": 1.2},
        }
        for e in (1, 2, 3)
    ]
    store.write_metrics(job.id, {**(store.metrics(job.id) or {}), "history": history})
    write_history(path, history, job.task_ids)
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    for row in rows:
        row["select_loss"] = str({"heart_cls": 1.2, "other": 0.5})  # as the older writer left it
    out_csv = io.StringIO()
    writer = csv.DictWriter(out_csv, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(out_csv.getvalue())
    assert history_damage(path) == OLDER_LAYOUT
    code, out = run_cli(["repair", str(store.root)], monkeypatch, capsys)
    flat = " ".join(out.split())
    assert code == 0 and "damaged" not in flat, out
    assert "history.csv was written by an older usagg, select_loss as a dict; rewritten from metrics.json" in flat
    assert history_damage(path) is None and not list(path.parent.glob("history.csv.*"))


def test_status_says_a_done_jobs_duration_is_its_last_attempts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A new user read a resumed AU job's 15 s as its training time: duration_s is the last attempt's."""
    store, job = _store(tmp_path)
    _write_record(store, job, attempts=2, duration_s=15.0)
    code, out = run_cli(["status", str(store.root)], monkeypatch, capsys)
    assert code == 0 and "15.0s" in out and "last of 2 attempts" in out, out
