"""`usagg run` and `usagg status` end to end on tiny synthetic studies: kill and resume, failures, checks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_run import run_cli

from tests.tiny_study import write_tiny_study
from usagg.cli.app import main
from usagg.plan import plan
from usagg.spec.load import load_study
from usagg.store import RunStore

pytestmark = pytest.mark.slow  # end-to-end `usagg run` subprocesses and training

REPO = Path(__file__).resolve().parents[1]


def write_study(folder: Path, data: Path, name: str = "tiny", epochs: int = 2, steps: int = 2) -> Path:
    return write_tiny_study(folder / "study.yaml", name, data, epochs=epochs, steps=steps, execution={"devices": "cpu"})


def every_json_parses(root: Path) -> int:
    files = list(root.rglob("*.json"))
    for f in files:
        json.loads(f.read_text())
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")], "temporary files left behind"
    return len(files)


def reproducible(path: Path) -> dict:
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in ("throughput", "checksum")}


def test_sigkill_mid_job_then_rerun_matches_an_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    # A job's last bits depend on its torch threads: the killed process gets this one's, so the resumed run
    # and the uninterrupted reference can run here, in-process (the kill is what needs a process of its own).
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "usagg", "run", "study.yaml", "--only"]
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    write_study(killed, data, epochs=6, steps=3)
    job = next(j for j in plan(load_study(killed / "study.yaml")) if j.task_ids == ["thyroid_malignancy"])
    job_id = job.id
    job_dir = killed / "runs" / "tiny" / "jobs" / job_id
    last = job_dir / "checkpoints" / "last.pt"

    proc = subprocess.Popen([*cmd, job_id], cwd=killed, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert last.exists(), proc.stderr.read().decode() if proc.stderr else ""
    epoch_at_kill = torch.load(last, weights_only=True)["epoch"]
    assert 1 <= epoch_at_kill < 6, "the job must be killed mid-way"
    assert not (job_dir / "metrics.json").exists()
    store = RunStore(killed / "runs" / "tiny")
    assert store.job_state(job_id) == "running"  # as the kill left it
    assert every_json_parses(store.root) >= 3
    code, out = run_cli(["status", str(store.root)], monkeypatch, capsys)
    assert code == 0 and "1 interrupted" in out and "1 running" not in out  # table and footer agree

    monkeypatch.chdir(killed)
    code, out = run_cli([*cmd[3:], job_id], monkeypatch, capsys)
    assert code == 0, out
    assert store.job_state(job_id) == "done"
    assert "resumed from" in (job_dir / "log.txt").read_text()
    # The reference is the same command, never interrupted, on as many threads
    write_study(straight, data, epochs=6, steps=3)
    monkeypatch.chdir(straight)
    code, out = run_cli([*cmd[3:], job_id], monkeypatch, capsys)
    assert code == 0, out
    ref_dir = straight / "runs" / "tiny" / "jobs" / job_id
    assert reproducible(job_dir / "metrics.json") == reproducible(ref_dir / "metrics.json")
    name = "predictions/classification_predictions.json"
    assert (job_dir / name).read_bytes() == (ref_dir / name).read_bytes()
    every_json_parses(store.root)


def test_a_failing_job_does_not_stop_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    study = write_study(tmp_path, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    # one job at a time in this process (the pool's own failure handling: tests/test_executors.py); a loss weight
    # of 1e39 overflows float32: the malignancy job's loss is inf at its first step
    nan_weight = ["--set", "training.loss_weights.thyroid_malignancy=1e39", "--set", "execution.cpu_jobs=1"]
    code, out = run_cli(["run", str(study), *nan_weight], monkeypatch, capsys)
    assert code == 1, out
    store = RunStore(tmp_path / "runs" / "tiny")
    states = {j.task_ids[0]: (j.id, store.job_state(j.id)) for j in store.jobs()}
    (bad, bad_state), (good, good_state) = states["thyroid_malignancy"], states["thyroid_nodule_det"]
    assert (bad_state, good_state) == ("failed", "done")
    error = (store.job_dir(bad) / "error.txt").read_text()
    assert error.startswith("Traceback") and "NonFiniteLoss: non-finite loss (inf)" in error
    assert "NonFiniteLoss" in store.job_record(bad)["error"]
    assert (store.job_dir(good) / "metrics.json").is_file() and not (store.job_dir(good) / "error.txt").exists()
    rows = store.results_csv.read_text().splitlines()
    assert len(rows) == 2 and ",thyroid_nodule_det,detection,IoU," in rows[1]
    assert "1 job failed" in out and "IoU" in out

    code, out = run_cli(["status", str(store.root)], monkeypatch, capsys)
    assert code == 0 and "1 done, 1 failed" in out and "NonFiniteLoss" in out and "IoU" in out

    # a re-run skips both (done is done; failed only with --retry-failed); retrying fails it again
    code, out = run_cli(["run", str(study), *nan_weight, "--dry-run"], monkeypatch, capsys)
    assert code == 0 and "skip (done)" in out and "skip (failed; --retry-failed)" in out
    code, out = run_cli(["run", str(study), *nan_weight, "--retry-failed"], monkeypatch, capsys)
    assert code == 1 and "1 job failed" in out
    assert store.job_record(bad)["attempts"] == 2 and store.job_record(good)["attempts"] == 1


def test_dry_run_writes_nothing_and_bad_selections_are_user_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    study = write_study(tmp_path, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    code, out = run_cli(["run", str(study), "--dry-run"], monkeypatch, capsys)
    assert code == 0 and "2 of 2 jobs would run" in out and "TS-thyroid_malignancy-f1-s0-" in out
    assert out.count(" pending ") == 2  # no folder yet: pending, as `usagg plan` says
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()
    code, out = run_cli(["run", str(study), "--paradigm", "AU"], monkeypatch, capsys)
    said = " ".join(out.split())
    assert code == 2 and "--paradigm AU (a registered paradigm this study does not plan): this study plans TS" in said
    assert "To run AU, add it to the spec's `paradigms:` (paradigms: [TS, AU])" in said, said
    code, out = run_cli(["run", str(study), "--only", "TS-nope"], monkeypatch, capsys)
    assert code == 2 and "--only TS-nope matches no job" in out and "tasks: " in out
    code, out = run_cli(["run", str(study), "--dry-run", "--only", "task:thyroid_*", "--json"], monkeypatch, capsys)
    rows, note = json.JSONDecoder().raw_decode(out)  # the JSON on stdout, then stderr: the data is not generated yet
    assert "data not checked: the synthetic benchmark" in out[note:]
    assert code == 0 and [r["action"] for r in rows] == ["run"] * len(rows) and len(rows) >= 1
    assert all(r["state"] == "pending" and r["job_id"].startswith("TS-thyroid_") for r in rows)
    code, out = run_cli(["run", str(study), "--devices", "gpu0"], monkeypatch, capsys)
    assert code == 2 and "--devices 'gpu0'" in out
    code, out = run_cli(["run", str(study), "--executor", "slrum"], monkeypatch, capsys)
    assert code == 2 and "--executor 'slrum': choose one of local, slurm" in out
    code, out = run_cli(["run", str(study), "--quiet", "--verbose"], monkeypatch, capsys)
    assert code == 2 and "--quiet and --verbose contradict each other" in out


def test_a_device_or_executor_this_host_lacks_is_refused_before_the_store_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--devices cuda` without a visible GPU, or `--executor slurm` without sbatch: exit 2 with the reason and no
    runs/<study> folder, which `compare` and `status` would otherwise take as the latest study."""
    import usagg.execute.local as local
    import usagg.execute.slurm as slurm

    monkeypatch.setattr(local, "cuda_device_count", lambda: 0)
    monkeypatch.setattr(slurm.shutil, "which", lambda _name: None)
    study = write_study(tmp_path, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    for flags, said in (
        (["--devices", "cuda"], "execution.devices is 'cuda' but no CUDA device is visible"),
        (["--devices", "0,1"], "not visible (0 CUDA devices seen)"),
        (["--executor", "slurm"], "this host has no `sbatch` on PATH"),
    ):
        for dry in ([], ["--dry-run"]):
            code, out = run_cli(["run", str(study), *flags, *dry], monkeypatch, capsys)
            assert code == 2 and said in " ".join(out.split()) and "Traceback" not in out, out
            assert not (tmp_path / "runs").exists()


def test_dry_run_plan_and_status_agree_on_an_interrupted_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from usagg.spec.load import dump_study

    study = write_study(tmp_path, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    loaded = load_study(study)
    jobs = plan(loaded)
    store = RunStore(tmp_path / "runs" / "tiny")
    store.init(dump_study(loaded), jobs[:1])
    store.set_state(jobs[0].id, "running")  # as a killed run leaves it: running, and nobody holds the lock
    code, out = run_cli(["plan", str(study), "--json"], monkeypatch, capsys)
    assert code == 0 and [j["state"] for j in json.loads(out)] == ["interrupted", "pending"]
    code, out = run_cli(["run", str(study), "--dry-run"], monkeypatch, capsys)
    assert code == 0 and " interrupted " in out and " pending " in out
    code, out = run_cli(["status", str(store.root)], monkeypatch, capsys)
    assert code == 0 and "1 interrupted (interrupted: their process is gone" in out and " running" not in out


def test_status_says_a_stopped_pending_job_resumes_from_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The ops audit: after SIGTERM (or Ctrl-C) the job is pending again with its last.pt and the next run resumes
    it, yet status said a bare "pending", where a killed job's "interrupted" says `usagg run` resumes it."""
    import torch

    from usagg.engine import checkpoint
    from usagg.spec.load import dump_study
    from usagg.store.checkpoints import CHECKPOINT_FORMAT

    study = write_study(tmp_path, tmp_path / "data")
    loaded = load_study(study)
    jobs = plan(loaded)
    store = RunStore(tmp_path / "runs" / "tiny")
    store.init(dump_study(loaded), jobs)
    code, out = run_cli(["status", str(store.root)], monkeypatch, capsys)
    assert code == 0 and "with a checkpoint" not in out  # no checkpoint: plain pending
    last = store.paths(jobs[0].id).last_checkpoint
    last.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.save_atomic({"format": CHECKPOINT_FORMAT, "epoch": 1, "model": {"w": torch.zeros(2)}}, last)
    code, out = run_cli(["status", str(store.root)], monkeypatch, capsys)
    said = " ".join(out.split())
    assert (
        code == 0 and f"{len(jobs)} pending (1 pending job stopped with a checkpoint: `usagg run` resumes them)" in said
    )
    damaged = store.paths(jobs[1].id).last_checkpoint
    damaged.parent.mkdir(parents=True, exist_ok=True)
    damaged.write_text("cut short")
    code, out = run_cli(["status", str(store.root)], monkeypatch, capsys)
    said = " ".join(out.split())
    assert (
        "(2 pending jobs stopped with a checkpoint: `usagg run` resumes 1 and starts 1 over from epoch 1: its "
        "last.pt is damaged)" in said
    ), said


def test_run_refuses_a_dataset_with_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from usagg.data.source import dataset_root
    from usagg.spec.load import load_study

    study = write_study(tmp_path, tmp_path / "data")
    root = dataset_root(load_study(study).data)
    victim = sorted((root / "train").rglob("thyroid_nodule_det*.png"))[0]
    victim.unlink()
    monkeypatch.chdir(tmp_path)
    code, out = run_cli(["run", str(study)], monkeypatch, capsys)
    assert code == 1 and "problem" in out and victim.name in out and "not training" in out
    assert not (tmp_path / "runs").exists()


def test_status_shows_a_long_error_whole_with_the_path_of_error_txt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from usagg.spec.load import dump_study

    study = load_study(write_study(tmp_path, tmp_path / "data"))
    jobs = plan(study)
    store = RunStore(tmp_path / "runs" / "tiny")
    store.init(dump_study(study), jobs)
    message = "DataError: " + " ".join(f"word{i}" for i in range(120)) + " THE-END"
    assert len(message) > 700
    store.write_error(
        jobs[0].id, f'Traceback (most recent call last):\n  File "x.py", line 1\nusagg.errors.{message}\nsecond line\n'
    )
    store.set_state(jobs[0].id, "failed", error=message[:300])  # the one-line summary the runner stores
    store.write_error(jobs[1].id, "Traceback ...\nValueError: " + "v" * 400 + "\n")
    store.set_state(jobs[1].id, "failed", error="ValueError: " + "v" * 285 + "...")  # summarize_error's cut

    monkeypatch.setattr(sys, "argv", ["usagg", "status", str(store.root)])
    for columns in ("2000", "100"):
        monkeypatch.setenv("COLUMNS", columns)
        with pytest.raises(SystemExit) as exc:
            main()
        out = capsys.readouterr().out
        assert not exc.value.code and "…" not in out
        assert "THE-END" in out and "second line" not in out
        flat = "".join(out.replace("│", "").split())
        assert "".join(message.split()) in flat and "ValueError:" + "v" * 400 in flat
        assert "".join(str(store.job_dir(jobs[0].id) / "error.txt").split()) in flat


def test_damaged_store_files_are_named_then_repaired_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 16.4: status names a damaged job.json and metrics.json; run sets them aside and redoes the work."""
    study = write_study(tmp_path, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    one_at_a_time = ["--set", "execution.cpu_jobs=1"]  # a job's last bits depend on its threads: the same both runs
    assert run_cli(["run", str(study), *one_at_a_time], monkeypatch, capsys)[0] == 0
    store = RunStore(tmp_path / "runs" / "tiny")
    first, second = store.job_ids()
    before = {jid: reproducible(store.paths(jid).metrics) for jid in (first, second)}
    store.paths(first).record.write_text('{"state": ')  # truncated
    store.paths(second).metrics.write_text("[]")  # wrong JSON type
    code, out = run_cli(["status", str(store.root)], monkeypatch, capsys)
    assert code == 0 and out.count("damaged:") == 2 and "Traceback" not in out
    assert f"{store.paths(first).record} is damaged" in out and "next `usagg run`" in out
    assert store.paths(first).record.read_text() == '{"state": '  # status writes nothing
    code, out = run_cli(["run", str(study), *one_at_a_time], monkeypatch, capsys)
    assert code == 0, out
    assert "set aside as job.json.damaged and rebuilt from the plan as done" in out
    assert "set aside as metrics.json.damaged; the job is pending again" in out
    assert "1 to run, 1 done" in out
    assert {jid: reproducible(store.paths(jid).metrics) for jid in (first, second)} == before
    assert RunStore(store.root).states() == {first: "done", second: "done"}


def test_sigterm_ends_a_run_like_ctrl_c(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """Issue 16.6: SIGTERM (Slurm, schedulers) puts the job back to pending with its lock released, exit 143."""
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "COLUMNS": "200"}  # as many as here
    # SIGTERM as soon as the first last.pt (epoch 1) is written: polled every 5 ms, five epochs ahead of the end
    write_study(tmp_path, tmp_path / "data", epochs=6, steps=3)
    job = next(j for j in plan(load_study(tmp_path / "study.yaml")) if j.task_ids == ["thyroid_malignancy"])
    store = RunStore(tmp_path / "runs" / "tiny")
    last = store.paths(job.id).last_checkpoint
    cmd = [sys.executable, "-m", "usagg", "run", "study.yaml", "--only", job.id]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGTERM)
    said, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err.decode()
    assert "Traceback" not in err.decode()
    assert "stopped (SIGTERM); the same `usagg run` command resumes" in " ".join(said.decode().split())
    record = store.job_record(job.id)
    assert record["state"] == "pending" and record["error"] == "interrupted"
    assert torch.load(last, weights_only=True)["epoch"] < 6, "the job must be stopped mid-way"
    assert not store.paths(job.id).lock.exists()
    assert not [p for p in store.root.rglob("*") if p.name.endswith(".tmp")]
    code, out = run_cli(["status", str(store.root)], monkeypatch, capsys)
    assert code == 0 and "running" not in out and "interrupted" not in out.split("\n")[-2]
    monkeypatch.chdir(tmp_path)  # the signal is what needed a process of its own; the resume runs in this one
    code, out = run_cli(cmd[3:], monkeypatch, capsys)
    assert code == 0 and store.job_state(job.id) == "done", out
    assert "resumed from" in store.paths(job.id).log.read_text()


def test_a_task_its_job_never_stepped_on_is_warned_of_and_left_out_of_compare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One step per epoch shared by AU's two tasks under uniform sampling: one task gets no optimiser step. The
    run says so, and compare gives its Δ as n/a with the reason instead of an untrained head's −x %."""
    study = write_study(tmp_path, tmp_path / "data", name="zero", epochs=1, steps=1)
    study.write_text(study.read_text().replace("paradigms: [TS]", "paradigms: [TS, AU]"))
    monkeypatch.chdir(tmp_path)
    code, out = run_cli(["run", str(study), "--set", "training.sampling=uniform"], monkeypatch, capsys)
    said = " ".join(out.split())
    assert code == 0 and "1 task got no optimiser step in a job (" in said, out
    task = said.split("1 task got no optimiser step in a job (")[1].split(" ")[0]
    code, out = run_cli(["compare", "runs/zero"], monkeypatch, capsys)
    assert code == 0 and f"{task} / AU: Δ n/a, AU trained {task} for 0 optimiser steps" in " ".join(out.split())


@pytest.mark.slow
def test_a_job_another_process_runs_leaves_the_run_not_finished_exit_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two `usagg run`s of one study split its jobs by their locks; the one that ends first exited 0 while the other
    still trained a job, so `usagg run && usagg report` reported a study with a job missing. It exits 3 now, naming
    the job, and 0 once the job is done."""
    from usagg.spec.load import dump_study

    study = write_study(tmp_path, tmp_path / "data", epochs=1, steps=1)
    monkeypatch.chdir(tmp_path)
    loaded = load_study(study)
    jobs = plan(loaded)
    store = RunStore(tmp_path / "runs" / "tiny")
    store.init(dump_study(loaded), jobs)
    held = jobs[0].id
    code = (
        "import sys, time\nfrom usagg.store import RunStore\n"
        f"lock = RunStore({str(store.root)!r}).lock({held!r})\nlock.__enter__()\n"
        "print('held', flush=True)\ntime.sleep(120)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        code_, out = run_cli(["run", str(study), "--set", "execution.cpu_jobs=1"], monkeypatch, capsys)
    finally:
        holder.kill()
        holder.wait()
    flat = " ".join(out.split())
    assert code_ == 3, out
    assert f"not finished: 1 job neither done nor failed as this run ends ({held} (" in flat, out
    assert store.job_state(jobs[1].id) == "done" and store.job_state(held) != "done"
    code_, out = run_cli(["run", str(study), "--set", "execution.cpu_jobs=1"], monkeypatch, capsys)
    assert code_ == 0 and store.job_state(held) == "done", out


def test_the_run_ends_counting_what_the_jobs_model_selection_warned_of(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An audit: a selection split of 12 images left a TS baseline at its epoch-1 all-foreground mask, and only each
    job's log.txt said why; compare and the report list it, the run's console said nothing. The tiny study's
    selection split has 4 images a task: the run ends, under --quiet too, with one block, a line per task and cause,
    counting the done jobs."""
    study = write_study(tmp_path, tmp_path / "data", name="select", epochs=1, steps=1)
    monkeypatch.chdir(tmp_path)
    code, out = run_cli(["run", str(study), "--quiet"], monkeypatch, capsys)
    assert code == 0, out
    head = "warning: the model selection of 2 done jobs warned, for 2 tasks (thyroid_malignancy, thyroid_nodule_det):"
    assert head in " ".join(out.split()), out
    lines = [" ".join(line.split()) for line in out.splitlines()]
    for task in ("thyroid_malignancy", "thyroid_nodule_det"):
        cause = f"{task}: 4 selection images (< 20) cannot rank epochs reliably; raise data.selection_fraction"
        assert f"{cause} (1 job: TS)" in lines, out
    assert out.count("warning: the model selection") == 1
    # a Mac copy's metadata file beside the index CSVs: the data check's note reaches the run console as the others
    csvs = tmp_path / "data" / "synth" / "train" / "csv_files"
    (csvs / "._thyroid_nodule.csv").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \x00\x02")
    code, out = run_cli(["run", str(study), "--quiet"], monkeypatch, capsys)
    said = " ".join(out.split())
    assert code == 0 and "warning: 1 data warning (not blocking): macos_metadata 1 macOS metadata file (._*)" in said
    assert head in said, out  # done in an earlier run: still this selection's, still said


def test_a_study_without_a_selection_split_says_so_once_and_warns_of_no_split_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """data.selection_fraction 0 turns selection off: under the default training.selection best every job warned
    "0 selection images ... raise data.selection_fraction", counted again at the run's end, to a user who had turned
    it off on purpose. Now one line before the jobs says each tests its last epoch; no job warns; and a done job an
    older usagg left with that warning (it ranked no epoch: mode last) is not counted at the end either."""
    study = write_study(tmp_path, tmp_path / "data", name="noselect", epochs=1, steps=1)
    monkeypatch.chdir(tmp_path)
    args = ["run", str(study), "--quiet", "--set", "data.selection_fraction=0"]
    code, out = run_cli([*args, "--dry-run"], monkeypatch, capsys)
    line = "data.selection_fraction is 0 for the 2 jobs to run: without a selection split, training.selection best"
    assert code == 0 and line in " ".join(out.split()), out
    code, out = run_cli(args, monkeypatch, capsys)
    flat = " ".join(out.split())
    assert code == 0 and flat.count(line) == 1, out
    assert "selection images" not in out and "model selection" not in out, out
    store = RunStore(tmp_path / "runs" / "noselect")
    for jid in store.job_ids():
        selection = (store.metrics(jid) or {})["selection"]
        assert selection["mode"] == "last" and selection["warnings"] == [], selection
        assert selection["epochs"] == {t: 1 for t in selection["epochs"]}
        log = store.paths(jid).log.read_text()
        assert "no selection split (data.selection_fraction 0): the last epoch is tested" in log
    old = store.job_ids()[0]  # what an older usagg recorded for the same job
    metrics = store.metrics(old) or {}
    task = next(iter(metrics["tasks"]))
    cause = f"task {task}: 0 selection images (< 20) cannot rank epochs reliably; raise data.selection_fraction"
    metrics["selection"]["warnings"] = [cause]
    store.write_metrics(old, metrics)
    code, out = run_cli(args, monkeypatch, capsys)
    assert code == 0 and "selection images" not in out and line not in " ".join(out.split()), out  # nothing to run
