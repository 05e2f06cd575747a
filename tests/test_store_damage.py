"""Issues 26.3, 26.9 and 27.1: every store file's damage is found by its owner and repaired or named, a full disk is
named and leaves nothing half-written, and reading the store never writes it (`RunStore.repair` does)."""

from __future__ import annotations

import ast
import errno
import hashlib
import json
import logging
import os
import pickle
import re
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_run import run_cli
from PIL import Image

from tests.store_reads import all_metrics
from tests.tiny_study import MALIGNANCY, write_tiny_study
from usagg.atomic import NoSpaceLeft, no_space_left, write_json_atomic, write_json_checked
from usagg.data import cache
from usagg.engine import checkpoint
from usagg.errors import UsaggError
from usagg.execute.base import record_failure
from usagg.plan import Job, plan
from usagg.spec.models import DataSpec, ModelSpec, Study, SynthSpec, TaskSpec, TrainingSpec
from usagg.store import RunStore
from usagg.store.checkpoints import checkpoint_layout

PACKAGE = Path(__file__).resolve().parents[1] / "usagg"


def make_store(tmp_path: Path) -> tuple[RunStore, list[Job]]:
    study = Study(
        name="toy",
        paradigms=["TS"],
        data=DataSpec(synthetic=SynthSpec()),
        model=ModelSpec(backbone="dinov3_test", image_size=64),
        training=TrainingSpec(epochs=1),
        tasks=[
            TaskSpec(id="heart_cls", type="classification", num_classes=3, group="cardiac"),
            TaskSpec(id="head_box", type="detection", num_classes=1, group="head"),
        ],
    )
    jobs = plan(study)
    store = RunStore(tmp_path / "runs" / "toy")
    store.init("name: toy\n", jobs)
    return store, jobs


def metrics_of(job: Job) -> dict:
    tasks = {
        t.id: {"type": t.type, "primary": t.metric, "metrics": {t.metric: 0.8125}, "n_train": 100, "n_test": 20}
        for t in job.tasks
    }
    history = [
        {"epoch": e, "step": 2 * e, "loss": 1.0 / e, "task_loss": {t: 0.5 / e for t in job.task_ids}} for e in (1, 2)
    ]
    return {"job_id": job.id, "tasks": tasks, "history": history}


def make_done(store: RunStore, job: Job) -> None:
    store.set_state(job.id, "running")
    store.write_metrics(job.id, metrics_of(job))
    store.set_state(job.id, "done")


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- issue 27.1: pure reads, one repairer


def test_reads_never_write_and_set_state_refuses_a_damaged_record(tmp_path: Path) -> None:
    """status-like reads of a damaged record and metrics change no byte; the state machine never writes the rebuilt
    record over the damaged one (the old code did, with the repair flag off)."""
    store, jobs = make_store(tmp_path)
    done, other = jobs
    make_done(store, done)
    store.paths(done.id).metrics.write_text("[]")
    store.paths(other.id).record.write_text('{"state": ')
    before = snapshot(store.root)
    assert store.job_state(other.id) == "pending" and store.metrics(done.id) is None
    assert store.job_record(other.id)["job"] == other.model_dump(mode="json")
    assert store.states() == {done.id: "done", other.id: "pending"} and all_metrics(store) == {}
    with pytest.raises(UsaggError, match=r"job\.json is damaged .*`usagg repair "):
        store.set_state(other.id, "running")
    assert snapshot(store.root) == before  # nothing written, nothing set aside
    assert len(store.repairs) == 2 and all("`usagg repair" in n for n in store.repairs)
    made = store.repair()
    assert len(made) == 2 and store.states() == {done.id: "pending", other.id: "pending"}
    assert (store.job_dir(done.id) / "metrics.json.damaged").read_text() == "[]"
    assert (store.job_dir(other.id) / "job.json.damaged").read_text() == '{"state": '
    assert store.repair() == []  # nothing left to repair


def test_record_failure_is_a_compare_and_set_under_the_lock(tmp_path: Path) -> None:
    """A late failure report never turns a done job back, and never writes a record a live process holds."""
    store, jobs = make_store(tmp_path)
    done, held = jobs
    make_done(store, done)
    record_failure(store.root, done.id, "Traceback\nRuntimeError: worker died\n")
    assert store.job_state(done.id) == "done"
    store.set_state(held.id, "running")
    lock = store.paths(held.id).lock
    lock.write_text(json.dumps({"host": "elsewhere.cluster", "pid": 1, "started": "now", "token": "t"}))
    record = store.paths(held.id).record.read_bytes()
    assert record_failure(store.root, held.id, "Traceback\nRuntimeError: node lost\n") == "RuntimeError: node lost"
    assert store.paths(held.id).record.read_bytes() == record and store.error_text(held.id) is None
    lock.unlink()
    record_failure(store.root, held.id, "Traceback\nRuntimeError: node lost\n")
    assert store.job_record(held.id)["state"] == "failed" and store.error_text(held.id)


def test_binary_garbage_in_a_lock_is_broken_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store, jobs = make_store(tmp_path)
    jid = jobs[0].id
    store.set_state(jid, "running")
    lock = store.paths(jid).lock
    lock.write_bytes(b"\xff\xfe\x00\x9c garbage \x80")
    assert not store.lock_alive(jid) and store.display_state(jid) == "interrupted"
    code, out = run_cli(["status", str(store.root)], monkeypatch, capsys)
    assert code == 0 and "Traceback" not in out and "interrupted" in out
    assert f"{lock} is damaged (not a lock record" in "".join(out.split("\n")) and lock.exists()  # named, not touched
    made = store.repair()
    assert len(made) == 1 and f"{lock} was damaged (not a lock record" in made[0] and not lock.exists()
    lock.write_bytes(b"\x00\x01\x02")
    with store.lock(jid) as holder:  # a runner breaks it too
        assert holder["pid"] == os.getpid()


def test_usagg_repair_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    store, jobs = make_store(tmp_path)
    make_done(store, jobs[0])
    code, out = run_cli(["repair", "--help"], monkeypatch, capsys)
    assert code == 0 and "usagg repair runs/demo" in out
    code, out = run_cli(["repair", str(store.root)], monkeypatch, capsys)
    assert code == 0 and "nothing damaged" in out
    text = store.paths(jobs[0].id).metrics.read_text()
    store.paths(jobs[0].id).metrics.write_text(text.replace("0.8125", "0.9125", 1))
    code, out = run_cli(["repair", str(store.root)], monkeypatch, capsys)
    flat = "".join(out.split())
    assert code == 0 and "1 repair" in out and "nolongermatchesitschecksum" in flat and "pendingagain" in flat
    assert store.job_state(jobs[0].id) == "pending"
    code, out = run_cli(["repair", str(tmp_path / "nowhere")], monkeypatch, capsys)
    assert code == 2 and "no run store at" in out and "Traceback" not in out


def test_a_damaged_results_table_is_named_by_compare_and_rebuilt_by_repair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """results.csv is derived from the jobs: compare names the damage and the command that mends it, repair sets it
    aside and rebuilds it, and a damaged plan.json (which only a run can write) makes repair exit 1."""
    store, jobs = make_store(tmp_path)
    make_done(store, jobs[0])
    good = store.rebuild_results().read_text()
    store.results_csv.write_text('study,job_id\n"x\n')
    code, out = run_cli(["compare", str(store.root)], monkeypatch, capsys)
    said = " ".join(out.split())
    assert code == 2 and "Traceback" not in out
    assert f"{store.results_csv} is damaged (its header lacks paradigm, group," in said
    assert f"`usagg repair {store.root}` sets it aside and rebuilds it" in said
    code, out = run_cli(["repair", str(store.root)], monkeypatch, capsys)
    assert code == 0 and "set aside as results.csv.damaged and rebuilt from the done jobs" in " ".join(out.split())
    assert store.results_csv.read_text() == good
    store.plan_json.write_text("{oops")
    code, out = run_cli(["repair", str(store.root)], monkeypatch, capsys)
    assert code == 1 and "plan.json is damaged" in out and "1 problem left" in " ".join(out.split()), out


def test_repair_rebuilds_a_results_table_that_no_longer_says_what_the_jobs_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A cut row, a job's rows missing, or rows of a job that repair just sent back to pending: results.csv is
    derived from the done jobs, so repair rebuilds it (the old one beside it) and compare reads what status says."""
    store, jobs = make_store(tmp_path)
    for job in jobs[:2]:
        make_done(store, job)
    good = store.rebuild_results().read_text()
    for broken in (good[: len(good) // 2] + '"cut', good.splitlines(keepends=True)[0] + good.splitlines()[1] + "\n"):
        store.results_csv.write_text(broken)
        code, out = run_cli(["repair", str(store.root)], monkeypatch, capsys)
        assert code == 0 and "no longer says what the done jobs' metrics.json do" in " ".join(out.split()), out
        assert store.results_csv.read_text() == good
    text = store.paths(jobs[0].id).metrics.read_text()
    store.paths(jobs[0].id).metrics.write_text(text.replace("0.8125", "0.9125", 1))  # damaged: pending again
    code, out = run_cli(["repair", str(store.root)], monkeypatch, capsys)
    assert code == 0 and store.job_state(jobs[0].id) == "pending"
    assert jobs[0].id not in store.results_csv.read_text() and jobs[1].id in store.results_csv.read_text()
    code, out = run_cli(["repair", str(store.root)], monkeypatch, capsys)
    assert code == 0 and "nothing damaged" in out  # a table that matches is left as it is


def test_a_results_table_only_behind_the_jobs_is_rebuilt_without_calling_it_damaged(tmp_path: Path) -> None:
    """Every run leaves results.csv behind its jobs until its end (and AG's stage repairs before that): a job done
    since the table was written is no damage. Nothing is set aside, no repair is reported, the table is current."""
    store, jobs = make_store(tmp_path)
    make_done(store, jobs[0])
    store.rebuild_results()
    make_done(store, jobs[1])  # its metrics.json and job.json newer than the table
    assert store.repair() == [] and store.repairs == []
    assert store.results_csv.read_text() == store.results_text() and jobs[1].id in store.results_csv.read_text()
    assert not list(store.root.glob("results.csv.damaged*"))


def test_store_file_names_are_spelled_only_in_the_store_layout() -> None:
    """job.json, metrics.json, ... as string literals, and `/ "slurm"` or `/ "tensorboard"` path joins, nowhere but in
    usagg/store/layout.py."""
    names = {"job.json", "metrics.json", "history.csv", "item_scores.json", "mlflow.json", "mlflow-artifacts"}
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "store" / "layout.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.name}:{node.lineno} {node.value}")
            right = node.right if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) else None
            if isinstance(right, ast.Constant) and right.value in ("slurm", "tensorboard"):
                found.append(f"{path.name}:{node.lineno} / {right.value!r}")
    assert found == []


# --------------------------------------------------------------------------- issue 26.3: each file's owner


def test_an_edited_metrics_value_is_named_then_repaired(tmp_path: Path) -> None:
    store, jobs = make_store(tmp_path)
    job = jobs[0]
    make_done(store, job)
    path = store.paths(job.id).metrics
    assert store.metrics(job.id) == json.loads(json.dumps(metrics_of(job)))  # the checksum is not part of it
    assert "checksum" in json.loads(path.read_text())
    path.write_text(path.read_text().replace("0.8125", "0.9125", 1))  # one digit changed by hand
    assert store.metrics(job.id) is None
    assert f"{path} is damaged (it no longer matches its checksum" in store.repairs[-1]
    with pytest.raises(UsaggError, match=r"metrics\.json is damaged \(it no longer matches.*`usagg repair "):
        store.rebuild_results()
    store.repair()
    assert store.job_state(job.id) == "pending" and (path.parent / "metrics.json.damaged").is_file()
    write_json_atomic(path, metrics_of(job))  # written before checksums existed: read as it is
    assert store.metrics(job.id) == json.loads(json.dumps(metrics_of(job)))


def test_a_damaged_item_scores_file_is_set_aside_and_its_job_evaluated_again(tmp_path: Path) -> None:
    from usagg.analysis.task_ci import load_item_scores
    from usagg.predictions import ITEM_SCORES_FORMAT

    store, jobs = make_store(tmp_path)
    job = jobs[0]
    make_done(store, job)
    path = store.paths(job.id).item_scores
    scores = {"format": ITEM_SCORES_FORMAT, "tasks": {}}
    write_json_checked(path, scores)
    assert load_item_scores(path.parent) == {} and store.repair() == []
    path.write_text(path.read_text().replace('"tasks"', '"tusks"'))
    with pytest.raises(UsaggError, match=rf"item_scores\.json is damaged .*`usagg repair {store.root}`"):
        load_item_scores(path.parent)
    made = store.repair()
    assert len(made) == 1 and "set aside as item_scores.json.damaged; the job is pending again" in made[0]
    assert not path.exists() and store.job_state(job.id) == "pending"


def test_a_damaged_history_is_written_again_from_metrics(tmp_path: Path) -> None:
    from usagg.historycsv import write_history

    store, jobs = make_store(tmp_path)
    job = jobs[0]
    make_done(store, job)
    path = store.paths(job.id).history
    write_history(path, metrics_of(job)["history"], job.task_ids)
    good = path.read_text()
    assert store.repair() == []
    path.write_bytes(good.encode()[: len(good) // 2] + b"\x00\xff")
    made = store.repair()
    assert len(made) == 1 and "history.csv was damaged" in made[0] and "written again from metrics.json" in made[0]
    assert path.read_text() == good and store.job_state(job.id) == "done"


def test_load_history_names_a_damaged_history_of_an_unfinished_job(tmp_path: Path) -> None:
    from usagg.api import load_history
    from usagg.historycsv import write_history

    store, jobs = make_store(tmp_path)
    job = jobs[0]
    store.set_state(job.id, "running")
    store.set_state(job.id, "failed", error="RuntimeError: boom")
    path = store.paths(job.id).history
    write_history(path, metrics_of(job)["history"], job.task_ids)
    assert list(load_history(store.root)["epoch"]) == [1, 2]
    path.write_text(path.read_text().replace("\n2,", "\ntwo,"))
    with pytest.raises(
        UsaggError, match=rf"history\.csv is damaged \(line 3, column epoch: 'two'.*`usagg repair {store.root}`"
    ):
        load_history(store.root)
    made = store.repair()
    assert len(made) == 1 and made[0].endswith("the job's next epoch writes it again") and not path.exists()
    assert load_history(store.root).empty


def _flip_tensor_byte(path: Path) -> None:
    """Flip one byte inside the largest tensor's data: the zip stays readable and torch loads it without a word."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    blob = bytearray(path.read_bytes())
    header = 30 + int.from_bytes(blob[info.header_offset + 26 : info.header_offset + 28], "little")
    header += int.from_bytes(blob[info.header_offset + 28 : info.header_offset + 30], "little")
    blob[info.header_offset + header + info.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(blob))


def test_the_checkpoint_checksum_is_required(tmp_path: Path) -> None:
    """A tampered tensor no longer loads once its checksum key is removed; unreadable files are DamagedCheckpoint."""
    path = tmp_path / "best.pt"
    checkpoint.save_atomic({"format": 3, "weights": {1: {"w": torch.arange(4096.0)}}}, path)
    assert checkpoint.load(path)["weights"][1]["w"][7] == 7
    ck = torch.load(path, weights_only=True)
    del ck[checkpoint.CHECKSUM_KEY]
    torch.save(ck, path)
    _flip_tensor_byte(path)
    with pytest.raises(checkpoint.DamagedCheckpoint, match="has no checksum"):
        checkpoint.load(path)
    path.write_bytes(pickle.dumps({"weights": {1: Path("x")}}, protocol=2))  # a pickle torch's weights_only refuses
    with pytest.raises(checkpoint.DamagedCheckpoint, match="cannot be read as a checkpoint"):
        checkpoint.load(path)


def _sha256_digest_before(obj: object) -> str:
    """The checkpoint checksum as the code before issue 24.4 computed it (sha256 over copied tensor bytes)."""
    h = hashlib.sha256()

    def feed(o: object, p: str) -> None:
        h.update(p.encode())
        if isinstance(o, torch.Tensor):
            t = o.detach().to("cpu").contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(o, dict):
            for k in sorted(o, key=repr):
                feed(o[k], f"{p}/{k!r}")
        elif isinstance(o, (list, tuple)):
            h.update(f"{type(o).__name__}{len(o)}".encode())
            for i, v in enumerate(o):
                feed(v, f"{p}/{i}")
        else:
            h.update(repr(o).encode())

    feed(obj, "")
    return h.hexdigest()


def test_sha256_checkpoints_still_verify_and_a_flipped_byte_is_caught(tmp_path: Path) -> None:
    payload = {"format": 3, "model": {f"w{i}": torch.randn(1_000_000) for i in range(12)}, "epoch": 4}
    path = tmp_path / "last.pt"
    torch.save({**payload, checkpoint.CHECKSUM_KEY: _sha256_digest_before(payload)}, path)
    assert checkpoint.load(path)["epoch"] == 4  # written before: still verifies
    _flip_tensor_byte(path)
    with pytest.raises(checkpoint.DamagedCheckpoint, match="does not match its checksum"):
        checkpoint.load(path)

    # What the new checksum costs against this sha256 is measured by `python -m benchmarks guards`.


def _recompressed(path: Path, out: Path) -> Path:
    """The zip at `path` written again with every entry deflated, as torch.save never writes one."""
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for entry in source.infolist():
            target.writestr(entry.filename, source.read(entry.filename))
    return out


def test_a_zip_bomb_last_pt_is_refused_before_anything_in_it_is_unpacked(tmp_path: Path) -> None:
    """Finding F1 of the security audit: a received last.pt whose data.pkl is deflated (64 KB that unpack to 64 MiB
    here, 1 MB to 1 GiB in the audit) was unpacked whole by the layout probe of `usagg status` and `usagg run`, and
    its layout read. Now it is unreadable there, read without unpacking, and the engine's load refuses it, naming the
    file, before torch unpacks an entry."""
    checkpoint.save_atomic({"format": 4, "pad": b"\0" * 64 * 2**20}, tmp_path / "plain.pt")
    bomb = _recompressed(tmp_path / "plain.pt", tmp_path / "last.pt")
    assert bomb.stat().st_size < 2**20
    tracemalloc.start()
    try:
        assert checkpoint_layout(bomb) is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, f"the layout probe took {peak:,} bytes"
    with pytest.raises(checkpoint.DamagedCheckpoint, match=rf"{bomb} holds a compressed entry \(.*data.pkl\)"):
        checkpoint.load(bomb)


def test_a_checkpoint_with_a_compressed_tensor_or_too_large_a_pickle_is_not_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The full load of a resumed last.pt and of best.pt: torch unpacks a deflated tensor entry to its full size, so
    only torch's own stored entries are loaded; a data.pkl over the stated cap is refused by both readers."""
    checkpoint.save_atomic({"format": 4, "model": {"w": torch.zeros(2**20)}}, tmp_path / "plain.pt")
    assert checkpoint.load(tmp_path / "plain.pt")["model"]["w"].shape == (2**20,)
    assert checkpoint_layout(tmp_path / "plain.pt") == 4
    squeezed = _recompressed(tmp_path / "plain.pt", tmp_path / "best.pt")
    for mmap in (False, True):
        with pytest.raises(checkpoint.DamagedCheckpoint, match=r"compressed entry .*not a checkpoint usagg wrote"):
            checkpoint.load(squeezed, mmap=mmap)
    monkeypatch.setattr("usagg.torchzip.PICKLE_LIMIT", 100)
    with pytest.raises(checkpoint.DamagedCheckpoint, match=r"has a data.pkl of [\d,]+ bytes, more than the 100"):
        checkpoint.load(tmp_path / "plain.pt")
    assert checkpoint_layout(tmp_path / "plain.pt") is None


def test_flipped_bytes_in_a_decode_cache_entry_are_logged_and_decoded_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = []
    for i in range(3):
        files.append(tmp_path / f"img{i}.png")
        Image.fromarray((np.arange(64 * 64).reshape(64, 64) * (i + 1) % 251).astype(np.uint8)).save(files[-1])
    first = cache.load(files, 32, tmp_path / "cache")
    expected = np.array(first.arrays)
    del first
    blob = bytearray(cache.load(files, 32, tmp_path / "cache").path.read_bytes())
    data_file = next((tmp_path / "cache" / "decode").glob("*[0-9a-f].npy"))
    blob[-100] ^= 0xFF  # a pixel of the last image
    data_file.write_bytes(bytes(blob))
    with caplog.at_level(logging.WARNING, logger="usagg.data.cache"):
        again = cache.load(files, 32, tmp_path / "cache")
    assert np.array_equal(np.asarray(again.arrays), expected)
    assert "no longer match their checksum" in caplog.text and "decoding its 3 files again" in caplog.text


# --------------------------------------------------------------------------- issue 26.9: a full disk


def test_a_full_disk_is_named_and_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "job" / "metrics.json"
    write_json_atomic(path, {"kept": True})

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(NoSpaceLeft, match=rf"no space left on device at {path}"):
        write_json_atomic(path, {"kept": False})
    assert json.loads(path.read_text()) == {"kept": True} and sorted(p.name for p in path.parent.iterdir()) == [
        "metrics.json"
    ]


def test_a_full_disk_while_decoding_is_named_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The decode cache writes through a memory map, where a full disk is a SIGBUS: its blocks are allocated first."""
    files = [tmp_path / "img.png"]
    Image.fromarray(np.zeros((40, 40), dtype=np.uint8)).save(files[0])

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(NoSpaceLeft, match=r"no space left on device at .*decode/[0-9a-f]+\.npy"):
        cache.load(files, 32, tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache" / "decode").iterdir() if not p.name.endswith(".lock")] == []
    monkeypatch.undo()
    assert cache.load(files, 32, tmp_path / "cache").arrays.shape == (1, 32, 32)


def test_a_full_disk_s_advice_fits_every_command_and_a_cache_names_its_folder(tmp_path: Path) -> None:
    """Audit fault 2 and 3: `--retry-failed` was advised after `usagg report` too; the advice is now the command's
    own, a failed job's error adds its way on, and a cache's full disk says it is the cache folder's."""
    from usagg.engine.runner import disk_full_error

    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    plain = str(no_space_left(tmp_path / "report.html", full))
    assert plain.startswith(f"no space left on device at {tmp_path / 'report.html'} (No space left on device); ")
    assert plain.endswith("then run the command again") and "--retry-failed" not in plain
    in_cache = str(no_space_left(tmp_path / "decode" / "k.npy", full, cache=True))
    assert "the cache folder's disk is full (USAGG_CACHE, or the study's data.cache_dir" in in_cache
    assert "`usagg cache prune`" in in_cache and "--retry-failed" not in in_cache
    assert disk_full_error(RuntimeError("wrapped")) is None and disk_full_error(UsaggError("no")) is None
    try:
        raise RuntimeError("a library wrapped it") from no_space_left(tmp_path / "last.pt", full)
    except RuntimeError as err:
        job = disk_full_error(err)
    assert job is not None and str(job).startswith(f"no space left on device at {tmp_path / 'last.pt'}")
    assert str(job).endswith(
        "old cache entries); then `usagg run --retry-failed`, or `retry_failed=True` in `usagg.api.run_study`, runs "
        "this failed job again"
    )
    assert "run the command again" not in str(job)  # a plain run skips a failed job (ops audit II)


@pytest.mark.parametrize("where", ["header", "orig_hw"])
def test_a_full_disk_at_a_decode_header_names_the_entry_and_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Audit fault 3: with a few KB free, numpy's .npy header (or the np.save of the sizes) failed the job with a
    bare "OSError: [Errno 28]", no file, nothing saying it is the cache; now NoSpaceLeft names the entry."""
    files = [tmp_path / "img.png"]
    Image.fromarray(np.zeros((40, 40), dtype=np.uint8)).save(files[0])

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as numpy raises it: no file named

    if where == "header":
        monkeypatch.setattr(np.lib.format, "open_memmap", full)
    else:
        monkeypatch.setattr(np, "save", full)
    with pytest.raises(NoSpaceLeft) as err:
        cache.load(files, 32, tmp_path / "cache")
    text = str(err.value)
    assert re.match(rf"no space left on device at {tmp_path}/cache/decode/[0-9a-f]+\.npy \(No space left", text)
    assert "the cache folder's disk is full" in text and "`usagg cache prune`" in text
    assert [p.name for p in (tmp_path / "cache" / "decode").iterdir() if not p.name.endswith(".lock")] == []


def _tiny(root: Path) -> Path:
    """One two-epoch TS job, run in this process (its runs under ROOT/runs)."""
    return write_tiny_study(
        root / "study.yaml",
        "tiny",
        root,
        output_root=root / "runs",
        tasks=(MALIGNANCY,),
        epochs=2,
        steps=2,
        execution={"cpu_jobs": 1},
    )


@pytest.mark.slow
def test_out_of_disk_fails_the_job_by_name_and_retry_failed_finishes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.save hitting ENOSPC (as the OS reports it): the job fails with "no space left on device at <path>",
    no temporary file is left, and `--retry-failed` finishes it once there is room."""
    from usagg.api import run_study

    study = _tiny(tmp_path)
    real_save = torch.save

    def disk_full(obj, f, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_full)
    result = run_study(study, device="cpu", threads=1)
    store = RunStore(result.store_root)
    (job_id,) = result.failed
    error = store.job_record(job_id)["error"]
    assert error.startswith("NoSpaceLeft: no space left on device at ") and "checkpoints" in error
    assert not [p for p in store.root.rglob("*") if p.name.endswith(".tmp")]
    monkeypatch.setattr(torch, "save", real_save)
    assert run_study(study, device="cpu", threads=1).failed == [job_id]  # failed jobs wait for --retry-failed
    again = run_study(study, device="cpu", threads=1, retry_failed=True)
    assert again.ok and store.job_state(job_id) == "done"


@pytest.mark.slow
def test_a_full_disk_at_the_final_state_is_said_not_blamed_on_another_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Audit fault 6: job.json could not take `done` (nor `failed`): the run ended "not finished ... another process
    runs them" (exit 3). Now it says the store could not record the failure, with the disk's error (exit 1), and
    the next run resumes the job."""
    real = RunStore.set_state

    def full_at_the_end(self: RunStore, job_id: str, state: str, **kwargs: object) -> dict:
        if state in ("done", "failed"):
            raise no_space_left(self.paths(job_id).record, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        return real(self, job_id, state, **kwargs)  # type: ignore[arg-type]

    study = _tiny(tmp_path)
    monkeypatch.setattr(RunStore, "set_state", full_at_the_end)
    code, out = run_cli(["run", str(study)], monkeypatch, capsys)
    text = " ".join(out.split())
    assert code == 1 and "another process" not in text, text
    assert "1 job failed and the store could not record it" in text and "job.json (No space left on device)" in text
    assert "once that is fixed the same `usagg run` resumes it from the last checkpoint" in text
    monkeypatch.setattr(RunStore, "set_state", real)
    code, out = run_cli(["run", str(study)], monkeypatch, capsys)
    assert code == 0, out


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "pickle"])
def test_a_damaged_best_checkpoint_of_an_unfinished_job_is_set_aside(tmp_path: Path, damage: str) -> None:
    """A best.pt without last.pt (a first attempt killed before its first last.pt) used to fail the job with a raw
    torch error on every retry; now it is set aside and the job finishes."""
    from usagg.api import plan as plan_jobs
    from usagg.api import run_study

    study = _tiny(tmp_path)
    (job,) = plan_jobs(study)
    best = tmp_path / "runs" / "tiny" / "jobs" / job.id / "checkpoints" / "best.pt"
    best.parent.mkdir(parents=True)
    if damage == "truncated":
        checkpoint.save_atomic({"format": 3, "weights": {1: {"w": torch.zeros(5000)}}}, best)
        best.write_bytes(best.read_bytes()[:3000])
    else:
        best.write_bytes(pickle.dumps({"format": 3, "weights": {1: Path("w")}}, protocol=2))
    result = run_study(study, device="cpu", threads=1)
    assert result.ok, RunStore(result.store_root).job_record(job.id)["error"]
    assert (best.parent / "best.pt.damaged").is_file() and checkpoint.load(best)["weights"]
    assert "training starts over from epoch 1 and writes it anew" in (best.parent.parent / "log.txt").read_text()


def test_repair_removes_the_temporary_files_a_killed_writer_left_in_the_store_folder(tmp_path: Path) -> None:
    """The ops audit II: .results.csv.*.tmp and .study.yaml.*.tmp of a process killed mid-write stayed in the
    store's folder through later runs and a `usagg repair` that said nothing was damaged. Removed once stale; a
    fresh one (a writer at work) stays."""
    store, _ = make_store(tmp_path)
    stale, fresh = store.root / ".results.csv.k1ll3d.tmp", store.root / ".plan.json.wr1t1ng.tmp"
    for path in (stale, fresh):
        path.write_text("half")
    os.utime(stale, (0, 0))
    made = store.repair()
    assert made == [f"removed 1 temporary file(s) a killed writer left in {store.root}: {stale.name}"]
    assert not stale.exists() and fresh.exists()
    assert store.repair() == []
