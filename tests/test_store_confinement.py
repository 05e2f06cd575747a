"""A received run store is data: a job id or a planted link never leads a read or a write outside it (H15).

Issue 26 items 1-2 and 27's file-name rule: `RunStore.job_dir` refuses control characters and `jobs/<id>` links
that leave the store; the report's provenance reaches job files through the store, refuses a study.yaml link
that leaves it, and shows the weights digest the job's id was made with instead of hashing a path the store names.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from tests.cli_run import run_cli
from tests.store_reads import all_metrics
from usagg.analysis.inputs import load_input
from usagg.analysis.provenance import provenance
from usagg.plan import Job, plan
from usagg.safepath import UnsafePath
from usagg.spec.models import DataSpec, ModelSpec, Study, SynthSpec, TaskSpec, TrainingSpec
from usagg.store import RunStore
from usagg.store.records import WEIGHTS_KEY

WEIGHTS = b"the encoder weights the jobs ran with"


def _study(weights: Path | None, epochs: int = 1) -> Study:
    return Study(
        name="toy",
        seeds=[0],
        paradigms=["TS"],
        data=DataSpec(synthetic=SynthSpec()),
        model=ModelSpec(backbone="dinov3_test", image_size=64, weights=weights),
        training=TrainingSpec(epochs=epochs),
        tasks=[TaskSpec(id="heart_cls", type="classification", num_classes=3, group="cardiac")],
    )


def _store(tmp_path: Path, weights: Path | None = None, epochs: int = 1) -> tuple[RunStore, Job]:
    """A store with one done job of `epochs` whose metrics.json has a device, a result row, and (when given)
    weights."""
    jobs = plan(_study(weights, epochs))
    store = RunStore(tmp_path / "runs" / "toy")
    store.init("name: toy\n", jobs)
    job = jobs[0]
    store.write_metrics(
        job.id,
        {
            "job_id": job.id,
            "tasks": {
                "heart_cls": {"type": "classification", "primary": "AUC", "metrics": {"AUC": 0.8}, "n_train": 10}
            },
            "weights": {"weights": str(weights) if weights else None, "random_init": weights is None},
            "training": {"device": "cpu", "precision": "fp32", "epochs": epochs},
        },
    )
    store.set_state(job.id, "running")
    store.set_state(job.id, "done")
    store.rebuild_results()
    return store, job


def _outside(tmp_path: Path, name: str, content: str = "") -> Path:
    folder = tmp_path / "elsewhere"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(content)
    return folder / name


# --------------------------------------------------------------------------- 1. job ids and job folders


@pytest.mark.parametrize("job_id", ["a\nb", "TS_x\r", "esc\x1b[31m", "nul\x00", "line\u2028sep"])
def test_a_job_id_with_a_control_character_names_no_folder(tmp_path: Path, job_id: str) -> None:
    store = RunStore(tmp_path / "s")
    with pytest.raises(UnsafePath, match=r"jobs: job id: .* is not a single file name \(it contains control"):
        store.paths(job_id)
    with pytest.raises(UnsafePath, match=r"tensorboard: job id: .* control characters"):
        store.tensorboard_dir(job_id)


def test_separators_and_dots_are_still_refused(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "s")
    for job_id in ("../x", "a/b", "a\\b", "..", ".", ""):
        with pytest.raises(UnsafePath, match="is not a single file name"):
            store.job_dir(job_id)
    assert store.job_dir("TS_heart_cls_f1_s0_abcd1234") == tmp_path / "s" / "jobs" / "TS_heart_cls_f1_s0_abcd1234"


def _plant_job_link(store: RunStore, job: Job, tmp_path: Path) -> Path:
    """Replace the job's folder by a link to a copy of it outside the store; returns the outside folder."""
    outside = tmp_path / "elsewhere" / job.id
    outside.parent.mkdir(exist_ok=True)
    store.job_dir(job.id).rename(outside)
    (store.jobs_dir / job.id).symlink_to(outside, target_is_directory=True)
    return outside


def test_a_job_folder_linked_outside_the_store_is_neither_read_nor_written(tmp_path: Path) -> None:
    store, job = _store(tmp_path)
    outside = _plant_job_link(store, job, tmp_path)
    record = (outside / "job.json").read_text()
    for read in (store.metrics, store.job_record, store.job_state, store.job_lock, store.error_text):
        with pytest.raises(UnsafePath, match=rf"{job.id}' resolves to {outside}, outside {store.root}"):
            read(job.id)
    with pytest.raises(UnsafePath):
        all_metrics(store)
    with pytest.raises(UnsafePath):
        store.set_state(job.id, "pending", expect=("done",))
    with pytest.raises(UnsafePath):
        store.write_error(job.id, "traceback\n")
    with pytest.raises(UnsafePath):
        store.repair()
    assert (outside / "job.json").read_text() == record  # nothing written through the link
    assert sorted(p.name for p in outside.iterdir()) == ["job.json", "metrics.json"]


def test_a_link_to_another_job_folder_inside_the_store_is_followed(tmp_path: Path) -> None:
    store, job = _store(tmp_path)
    store.job_dir(job.id).rename(store.jobs_dir / "moved")
    (store.jobs_dir / job.id).symlink_to(store.jobs_dir / "moved", target_is_directory=True)
    assert store.job_state(job.id) == "done"
    assert store.metrics(job.id)["tasks"]["heart_cls"]["metrics"] == {"AUC": 0.8}


def test_usagg_repair_refuses_a_planted_job_link_with_a_named_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store, job = _store(tmp_path)
    outside = _plant_job_link(store, job, tmp_path)
    (outside / "metrics.json").write_text("{not json")  # what repair would set aside, through the link
    code, out = run_cli(["repair", str(store.root)], monkeypatch, capsys)
    assert code == 2, out
    said = " ".join(out.split())
    assert "Traceback" not in out and f"{store.jobs_dir / job.id} is a symbolic link (to {outside})" in said
    assert sorted(p.name for p in outside.iterdir()) == ["job.json", "metrics.json"]
    assert (outside / "metrics.json").read_text() == "{not json"


# --------------------------------------------------------------------------- 2. the report's provenance


def test_provenance_reads_job_files_through_the_store(tmp_path: Path) -> None:
    store, job = _store(tmp_path)
    inp = load_input(store.root, None)
    assert provenance(inp).jobs == [(job.id, "cpu", "fp32")]
    outside = _plant_job_link(store, job, tmp_path)
    with pytest.raises(UnsafePath, match=f"resolves to {outside}"):
        provenance(inp)


def _link_study_yaml(store: RunStore, tmp_path: Path) -> Path:
    secret = _outside(tmp_path, "secret.yaml", "name: toy\npassword: hunter2\n")
    store.study_yaml.unlink()
    store.study_yaml.symlink_to(secret)
    return secret


def test_a_study_yaml_linked_outside_the_store_is_not_copied_into_the_provenance(tmp_path: Path) -> None:
    store, _ = _store(tmp_path)
    inp = load_input(store.root, None)
    assert provenance(inp).spec_text == "name: toy\n"
    secret = _link_study_yaml(store, tmp_path)
    with pytest.raises(
        UnsafePath, match=rf"study\.yaml \(the spec a report shows\): 'study\.yaml' resolves to {secret}"
    ):
        provenance(inp)


@pytest.mark.slow
def test_usagg_report_refuses_a_study_yaml_linked_outside_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store, _ = _store(tmp_path)
    _link_study_yaml(store, tmp_path)
    code, out = run_cli(["report", str(store.root), "--out", str(tmp_path / "report")], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in out and "hunter2" not in out
    written = [p.read_text(errors="replace") for p in (tmp_path / "report").rglob("*") if p.is_file()]
    assert not any("hunter2" in text for text in written)


def test_init_records_the_weights_digest_the_job_id_was_made_with(tmp_path: Path) -> None:
    weights = tmp_path / "encoder.pth"
    weights.write_bytes(WEIGHTS)
    store, job = _store(tmp_path, weights)
    assert store.job_record(job.id)[WEIGHTS_KEY] == "sha256:" + hashlib.sha256(WEIGHTS).hexdigest()
    random_init, _ = _store(tmp_path / "random")
    assert random_init.job_record(random_init.job_ids()[0])[WEIGHTS_KEY] is None


def test_an_older_record_gets_its_weights_digest_at_the_next_init(tmp_path: Path) -> None:
    weights = tmp_path / "encoder.pth"
    weights.write_bytes(WEIGHTS)
    store, job = _store(tmp_path, weights)
    path = store.paths(job.id).record
    record = json.loads(path.read_text())
    del record[WEIGHTS_KEY]
    path.write_text(json.dumps(record))
    store.init("name: toy\n", [job])
    again = store.job_record(job.id)
    assert again["state"] == "done" and again[WEIGHTS_KEY] == "sha256:" + hashlib.sha256(WEIGHTS).hexdigest()


def test_provenance_shows_the_recorded_digest_and_never_hashes_a_path_the_store_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = tmp_path / "encoder.pth"
    weights.write_bytes(WEIGHTS)
    store, job = _store(tmp_path, weights)
    decoy = _outside(tmp_path, "decoy.pth", "some other file the received store points at")
    metrics = store.metrics(job.id)
    metrics["weights"]["weights"] = str(decoy)
    store.write_metrics(job.id, metrics)
    cache = tmp_path / "cache"
    monkeypatch.setenv("USAGG_CACHE", str(cache))
    inp = load_input(store.root, None)
    os.utime(decoy, ns=(1, 1))  # a (path, size, mtime) no process has hashed before
    prov = provenance(inp)
    assert prov.weights == str(decoy)
    assert prov.weights_sha256 == hashlib.sha256(WEIGHTS).hexdigest()
    assert f"weights: {decoy} (sha256 {hashlib.sha256(WEIGHTS).hexdigest()[:16]})" in prov.lines()
    assert not (cache / "filehash").exists()  # no cache entry written for the decoy


def test_a_record_without_a_digest_says_so(tmp_path: Path) -> None:
    weights = tmp_path / "encoder.pth"
    weights.write_bytes(WEIGHTS)
    store, job = _store(tmp_path, weights)
    path = store.paths(job.id).record
    for value in ("sha256:not-hex", "missing:encoder.pth"):
        record = json.loads(path.read_text())
        record[WEIGHTS_KEY] = value
        path.write_text(json.dumps(record))
        prov = provenance(load_input(store.root, None))
        assert prov.weights_sha256 is None
        assert f"weights: {weights} (no digest in the run store)" in prov.lines()


# --------------------------------------------------------------------------- 3. links inside a job folder


def _plant_inner_links(store: RunStore, job: Job, tmp_path: Path) -> Path:
    """The received store of finding F2: a pending job whose log.txt and checkpoints/ are links to files of the
    user's (a shell profile, another project's checkpoints); returns the folder they lead to."""
    victim = tmp_path / "victim"
    (victim / "ckpt").mkdir(parents=True)
    (victim / "bashrc").write_text("export PATH=/usr/bin\n")
    (victim / "ckpt" / "last.pt").write_text("MINE")
    (victim / "ckpt" / "best.pt").write_text("MINE")
    store.set_state(job.id, "pending", expect=("done",))
    (store.job_dir(job.id) / "log.txt").symlink_to(victim / "bashrc")
    (store.job_dir(job.id) / "checkpoints").symlink_to(victim / "ckpt", target_is_directory=True)
    return victim


def _victim_files(victim: Path) -> dict[str, str]:
    return {p.relative_to(victim).as_posix(): p.read_text() for p in sorted(victim.rglob("*")) if p.is_file()}


def test_a_link_planted_inside_a_job_folder_stops_repair_and_the_run_before_any_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`usagg repair` (and `usagg run`, whose first write is that repair) refuses the store in one paragraph,
    naming the link; a job started anyway (a Slurm worker, `run_one`) fails with that message and writes nothing
    through the links: no log line appended to the user's file, no checkpoint written, no last.pt removed."""
    from usagg.engine.runner import run_one

    store, job = _store(tmp_path)
    victim = _plant_inner_links(store, job, tmp_path)
    before = _victim_files(victim)
    code, out = run_cli(["repair", str(store.root)], monkeypatch, capsys)
    said = " ".join(out.split())
    assert code == 2 and "Traceback" not in out, out
    assert f"{store.job_dir(job.id) / 'checkpoints'} is a symbolic link (to {victim / 'ckpt'})" in said
    assert "remove the link" in said
    assert run_one(str(store.root), job.id, device="cpu") == "failed"
    assert store.job_state(job.id) == "failed"
    assert "checkpoints is a symbolic link" in store.error_text(job.id)
    assert _victim_files(victim) == before


def test_a_link_to_another_job_folder_is_refused_before_a_run_writes(tmp_path: Path) -> None:
    """Reads follow a `jobs/<id>` link that stays in the store, but no writer does: the job's checkpoints and
    metrics would land in the other job's folder."""
    store, job = _store(tmp_path)
    store.job_dir(job.id).rename(store.jobs_dir / "moved")
    (store.jobs_dir / job.id).symlink_to(store.jobs_dir / "moved", target_is_directory=True)
    with pytest.raises(UnsafePath, match=rf"run store {store.root}: {store.jobs_dir / job.id} is a symbolic link"):
        store.repair()


def test_a_planted_slurm_folder_link_is_refused(tmp_path: Path) -> None:
    from usagg.execute.slurm import SlurmExecutor
    from usagg.spec.models import SlurmSpec

    store, _ = _store(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    store.slurm_dir.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(UnsafePath, match=r"slurm is a symbolic link \(to .*elsewhere\)"):
        SlurmExecutor(store.root, SlurmSpec(), cluster="local")
    with pytest.raises(UnsafePath, match=r"slurm is a symbolic link"):
        store.repair()
    assert list((tmp_path / "elsewhere").iterdir()) == []


def _lock_files(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.iterdir())}


def test_a_planted_runs_link_deletes_no_lock_file_of_the_folder_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Finding F3 of the security audit: a received store's `.runs` linked to a project folder made `usagg run` take
    every `*.lock` there for a dead run's record and delete it (uv.lock, Cargo.lock), and write its own record there.
    Now the link is refused in one paragraph, by `usagg repair` and by the run's record itself, and nothing there
    is read, deleted or added."""
    store, _ = _store(tmp_path)
    project = tmp_path / "project"
    project.mkdir()
    (project / "uv.lock").write_text("version = 1\n")
    (project / "Cargo.lock").write_text("# This file is automatically @generated by Cargo.\n")
    (project / f"{'a' * 32}.lock").write_text("{}")  # even a name of usagg's own form
    before = _lock_files(project)
    store.runs_dir.symlink_to(project, target_is_directory=True)
    with pytest.raises(UnsafePath, match=rf"{store.runs_dir} is a symbolic link \(to {project}\)"), store.run({}):
        pass
    with pytest.raises(UnsafePath, match=r"\.runs is a symbolic link"):
        store.live_runs()
    code, out = run_cli(["repair", str(store.root)], monkeypatch, capsys)
    said = " ".join(out.split())
    assert code == 2 and "Traceback" not in out, out
    assert f"{store.runs_dir} is a symbolic link (to {project})" in said and "remove the link" in said
    assert _lock_files(project) == before


def test_a_run_removes_only_dead_records_of_its_own_making_from_runs(tmp_path: Path) -> None:
    """In a real .runs/ a run removes the record of a run that died, also one that reads as no record (garbage, cut
    short by a crash, empty) once silent past stale_after_s, and leaves a file of another name (what is not usagg's
    is not usagg's to delete)."""
    store, _ = _store(tmp_path)
    store.runs_dir.mkdir()
    foreign, garbage, dead = "poetry.lock", f"{'b' * 32}.lock", f"{'c' * 32}.lock"
    cut, empty = f"{'d' * 32}.lock", f"{'e' * 32}.lock"
    (store.runs_dir / foreign).write_text("[[package]]\n")
    (store.runs_dir / garbage).write_text("not a lock record")
    record = {"host": "elsewhere", "pid": 7, "started": "2026-12-01T00:00:00+00:00", "token": "t"}
    (store.runs_dir / dead).write_text(json.dumps(record))
    (store.runs_dir / cut).write_text(json.dumps(record)[:20])
    (store.runs_dir / empty).write_text("")
    for name in (foreign, garbage, dead, cut, empty):
        os.utime(store.runs_dir / name, (0, 0))  # silent for decades: no live holder
    with store.run({"spec": None}):
        (mine,) = set(os.listdir(store.runs_dir)) - {foreign, garbage, dead, cut, empty}
        assert len(mine) == len(dead) and mine.endswith(".lock")
    assert os.listdir(store.runs_dir) == [foreign]


def test_a_run_keeps_a_record_that_reads_as_none_while_its_heartbeat_is_fresh(tmp_path: Path) -> None:
    """A run's record is empty between its creation and its write, and a read can fail for a moment (EIO on NFS):
    while its mtime is within stale_after_s (a live run touches it every heartbeat) it is kept, whatever it holds;
    a readable record of a dead run beside it is removed."""
    store, _ = _store(tmp_path)
    store.runs_dir.mkdir()
    writing, cut, dead = f"{'a' * 32}.lock", f"{'d' * 32}.lock", f"{'c' * 32}.lock"
    record = {"host": "elsewhere", "pid": 7, "started": "2026-12-01T00:00:00+00:00", "token": "t"}
    (store.runs_dir / writing).write_text("")
    (store.runs_dir / cut).write_text(json.dumps(record)[:20])
    (store.runs_dir / dead).write_text(json.dumps(record))
    os.utime(store.runs_dir / dead, (0, 0))
    silent = store.stale_after_s - 5  # heartbeat not yet past the liveness limit
    os.utime(store.runs_dir / cut, (time.time() - silent, time.time() - silent))
    with store.run({"spec": None}):
        assert {writing, cut} < set(os.listdir(store.runs_dir)) and dead not in os.listdir(store.runs_dir)
    assert sorted(os.listdir(store.runs_dir)) == sorted([writing, cut])


def test_a_hard_link_planted_as_a_job_log_gets_no_line_of_the_job(tmp_path: Path) -> None:
    """Finding F2 of the security audit: a received store's log.txt hard-linked to a file of the user's (no symbolic
    link, so no refusal) had the job's log appended to that file. Now the linked name is set aside untouched, the
    job logs into a new log.txt of its own, and says so there. (The job fails at once here: a plug-in it names is
    missing, a failure it logs.)"""
    from usagg.engine.runner import run_one

    store, job = _store(tmp_path)
    store.set_state(job.id, "pending", expect=("done",))
    victim = _outside(tmp_path, "notes.txt", "the user's own notes\n")
    log = store.paths(job.id).log
    os.link(victim, log)
    assert run_one(str(store.root), job.id, device="cpu", plugins=("usagg_no_such_plugin",)) == "failed"
    assert victim.read_text() == "the user's own notes\n"
    aside = log.with_name("log.txt.linked")
    assert os.path.samefile(aside, victim) and os.stat(log).st_nlink == 1
    said = log.read_text()
    assert f"{log} had other names (a hard link" in said and "set aside untouched as log.txt.linked" in said
    assert "job failed" in said and "usagg_no_such_plugin" in said


def test_a_job_log_is_opened_through_no_link_and_no_fifo(tmp_path: Path) -> None:
    """What stands at a log's name is written through, so a symbolic link (planted after the store's link check) or
    a FIFO there is an error naming the file, never followed nor waited on; a plain file is appended to."""
    from usagg.atomic import open_own_log

    victim = _outside(tmp_path, "bashrc", "export PATH=/usr/bin\n")
    (tmp_path / "link.txt").symlink_to(victim)
    os.mkfifo(tmp_path / "fifo.txt")
    for name, why in (("link.txt", "a symbolic link stands at its name"), ("fifo.txt", "a FIFO")):
        with pytest.raises(OSError, match=why) as err:
            open_own_log(tmp_path / name)
        assert err.value.filename == str(tmp_path / name)
    assert victim.read_text() == "export PATH=/usr/bin\n"
    (tmp_path / "log.txt").write_text("first attempt\n")
    stream, aside = open_own_log(tmp_path / "log.txt")
    with stream:
        stream.write("second attempt\n")
    assert aside is None and (tmp_path / "log.txt").read_text() == "first attempt\nsecond attempt\n"


def test_a_reused_job_writes_no_file_through_a_hard_link_planted_in_its_folder(tmp_path: Path) -> None:
    """A job filled from its done twin (`RunStore.reuse`) copied the twin's history.csv (and item scores, splits)
    into the file at its own name: a hard link planted there had the user's file overwritten. Now the name is
    replaced by a new file."""
    study = _study(None).model_copy(update={"seeds": [0, 1]})
    done, twin = plan(study)
    store = RunStore(tmp_path / "runs" / "toy")
    store.init("name: toy\n", [done, twin])
    store.write_metrics(done.id, {"job_id": done.id, "tasks": {}})
    store.paths(done.id).history.write_text("epoch,task,loss\n1,heart_cls,0.5\n")
    store.set_state(done.id, "running")
    store.set_state(done.id, "done")
    victim = _outside(tmp_path, "results.csv", "the user's results\n")
    os.link(victim, store.paths(twin.id).history)
    assert store.reuse(twin.id, done.id)
    assert victim.read_text() == "the user's results\n"
    assert store.paths(twin.id).history.read_text() == "epoch,task,loss\n1,heart_cls,0.5\n"


def test_a_recorded_error_with_escape_sequences_is_shown_as_text_by_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """job.json's error is data a received store decides: `usagg status` shows its escapes as text, so it cannot set
    the window title or clear the screen."""
    store, job = _store(tmp_path)
    store.set_state(job.id, "failed", error="boom\x1b]0;PWNED\x07\x1b[2J")
    code, out = run_cli(["status", str(store.root)], monkeypatch, capsys)
    assert code == 0 and "\x1b" not in out and "\x07" not in out, out
    assert "boom\\x1b]0;PWNED\\x07\\x1b[2J" in "".join(out.split())


@pytest.mark.slow  # `usagg status` in a subprocess, so a hang fails the test instead of the suite
@pytest.mark.parametrize("planted", ["fifo", "dev-zero"])
def test_a_fifo_or_device_at_a_store_file_is_damage_not_a_hang(tmp_path: Path, planted: str) -> None:
    """A FIFO at metrics.json would block every read until a writer came; /dev/zero behind it would fill memory.
    Both read as damage, named, and status ends."""
    import subprocess
    import sys

    store, job = _store(tmp_path)
    metrics = store.paths(job.id).metrics
    metrics.unlink()
    if planted == "fifo":
        os.mkfifo(metrics)
    else:
        metrics.symlink_to("/dev/zero")
    done = subprocess.run(
        [sys.executable, "-m", "usagg", "status", str(store.root)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    why = "not a regular file (a FIFO, device or folder stands at its name)" if planted == "fifo" else "symbolic link"
    assert why in " ".join(done.stdout.split())


def test_a_link_planted_at_a_job_file_is_damage_never_read_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """metrics.json, error.txt, history.csv or results.csv made a link to another file: no read quotes its
    content (status and compare would print it); each reads as a damaged file that names the link."""
    store, job = _store(tmp_path)
    secret = tmp_path / "secret.json"
    secret.write_text('{"token": "SECRET123", "tasks": "SECRET456"}')
    paths = store.paths(job.id)
    for planted in (paths.metrics, paths.error, paths.history):
        planted.unlink(missing_ok=True)
        planted.symlink_to(secret)
    assert store.metrics(job.id) is None
    assert "SECRET" not in (store.error_text(job.id) or "") and "not a file usagg wrote" in store.error_text(job.id)
    assert store.epochs_done(job.id) == (0, None)
    notes = " ".join(store.repairs)
    assert "symbolic link" in notes and "SECRET" not in notes
    _, status = run_cli(["status", str(store.root)], monkeypatch, capsys)
    assert "SECRET" not in status and "symbolic link" in status
    store.results_csv.unlink()
    store.results_csv.symlink_to(secret)
    code, compare = run_cli(["compare", str(store.root)], monkeypatch, capsys)
    assert "SECRET" not in compare and code != 0 and "symbolic link" in compare
    assert secret.read_text().startswith('{"token"')  # the target is untouched
