"""Done jobs and the data they read: a study pointed at other rows is refused before anything is written.

A new user's pilot on a subset copy, then the study pointed at the full or corrected data, kept every result as done
and rewrote the store's provenance to name the new data (a real-data audit). Each job records the fingerprint of its
tasks' rows (splits.json, usagg/data/splits.py `rows_fingerprints`); `usagg run` compares it with the data.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_run import run_cli
from tiny_study import MALIGNANCY, write_tiny_study

from usagg import api
from usagg.data.synth.manifest import GENERATOR_VERSION
from usagg.store import RunStore

TRAIN_CSV = Path("train") / "csv_files" / "thyroid_malignancy.csv"


def _spec(tmp_path: Path, root: Path) -> Path:
    study = {
        "name": "pilot",
        "output_root": str(tmp_path / "runs"),
        "paradigms": ["TS"],
        "data": {"root": str(root), "cache_dir": str(tmp_path / "cache"), "selection_fraction": 0},
        "tasks": [{"id": "thyroid_malignancy", "type": "classification", "num_classes": 2, "group": "Thyroid"}],
        "model": {"backbone": "dinov3_test", "image_size": 32, "heads": {"hidden": 32}},
        "training": {"epochs": 1, "batch_size": 4},
    }
    path = tmp_path / "pilot.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def test_done_jobs_on_other_rows_refuse_the_run_and_a_moved_copy_does_not(
    data_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _spec(tmp_path, data_copy)
    result = api.run_study(spec, device="cpu")
    (job_id,) = result.states
    store = RunStore(result.store_root)
    recorded = json.loads(store.paths(job_id).splits.read_text())["thyroid_malignancy"]["rows"]
    assert recorded["rows"] == 12  # 8 training and 4 validation rows

    moved = Path(shutil.copytree(data_copy, tmp_path / "moved"))  # the same rows elsewhere: the same study
    code, out = run_cli(["run", str(_spec(tmp_path, moved))], monkeypatch, capsys)
    assert code == 0 and "0 to run" in " ".join(out.split()), out

    csv = moved / TRAIN_CSV
    rows = csv.read_text().splitlines()
    csv.write_text("\n".join(rows[:-1]) + "\n")  # a training row fewer
    before = store.job_record(job_id)
    spec_text = (store.root / "study.yaml").read_text()
    code, out = run_cli(["run", str(spec), "--set", f"data.root={moved}"], monkeypatch, capsys)
    flat = " ".join(out.split())
    assert code == 2 and "Traceback" not in out, out
    assert f"1 done job of study pilot read other data than {moved} holds now" in flat
    assert "thyroid_malignancy has 11 rows (12 when they ran)" in flat and job_id in flat
    assert "--set name=pilot-2" in flat and "Nothing was written." in flat
    assert store.job_record(job_id) == before and (store.root / "study.yaml").read_text() == spec_text

    label = rows[1].rsplit(",", 1)
    rows[1] = f"{label[0]},{1 - int(label[1])}"  # a label flipped: as many rows, other content
    csv.write_text("\n".join(rows) + "\n")
    code, out = run_cli(["run", str(spec), "--set", f"data.root={moved}", "--dry-run"], monkeypatch, capsys)
    flat = " ".join(out.split())
    assert code == 2 and "thyroid_malignancy has 12 rows, as then, with other images, labels or order" in flat, out

    code, out = run_cli(["validate", str(spec), "--set", f"data.root={moved}"], monkeypatch, capsys)
    flat = " ".join(out.split())
    assert code == 0 and "warning: `usagg run` would refuse this study now: 1 done job of study pilot" in flat, out

    code, out = run_cli(["run", str(spec), "--set", f"data.root={moved}", "--set", "name=pilot-2"], monkeypatch, capsys)
    assert code == 0, out  # its own study: trains on this data


@pytest.mark.parametrize("entry", [12, {"rows": 12}, {"sha256": "ab"}, "x"], ids=["int", "no-sha", "no-rows", "str"])
def test_a_damaged_fingerprint_is_no_fingerprint(
    data_copy: Path, tmp_path: Path, entry: object, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A regression audit: splits.json's "rows" as a plain number ended the run in an AttributeError; a received
    file is data, and an entry not of the form usagg writes is no fingerprint to compare."""
    spec = _spec(tmp_path, data_copy)
    result = api.run_study(spec, device="cpu")
    (job_id,) = result.states
    path = RunStore(result.store_root).paths(job_id).splits
    record = json.loads(path.read_text())
    record["thyroid_malignancy"]["rows"] = entry
    path.write_text(json.dumps(record))
    csv = data_copy / TRAIN_CSV
    csv.write_text("\n".join(csv.read_text().splitlines()[:-1]) + "\n")  # other rows now: unseen without a print
    code, out = run_cli(["run", str(spec)], monkeypatch, capsys)
    assert code == 0 and "Traceback" not in out and "0 to run" in " ".join(out.split()), out


def _synthetic_spec(tmp_path: Path, seeds: list[int]) -> Path:
    return write_tiny_study(
        tmp_path / "synth.yaml", "synth", tmp_path, tasks=[MALIGNANCY], output_root=tmp_path / "runs",
        extra={"seeds": seeds},
    )  # fmt: skip


def _edit_fingerprint(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    record = json.loads(path.read_text())
    edit(record["thyroid_malignancy"])
    path.write_text(json.dumps(record))


def test_done_jobs_of_another_synthetic_generator_refuse_and_unrecorded_ones_warn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An upgrade audit: a job an older usagg trained on generator 1's benchmark stayed done beside new jobs on
    generator 3's, under the same names and labels (its rows' fingerprint alike), and a seed added after the upgrade
    turned a Δ's sign. The generator is recorded and compared; a job that recorded nothing is named in a warning."""
    code, out = run_cli(["run", str(_synthetic_spec(tmp_path, [0]))], monkeypatch, capsys)
    assert code == 0, out
    store = RunStore(tmp_path / "runs" / "synth")
    (job_id,) = store.job_ids()
    splits = store.paths(job_id).splits
    assert json.loads(splits.read_text())["thyroid_malignancy"]["rows"]["generator"] == GENERATOR_VERSION

    _edit_fingerprint(splits, lambda entry: entry["rows"].update(generator=1))
    spec = _synthetic_spec(tmp_path, [0, 1])  # a seed added after the upgrade
    plan = (store.root / "plan.json").read_text()
    code, out = run_cli(["run", str(spec)], monkeypatch, capsys)
    flat = " ".join(out.split())
    assert code == 2 and "Traceback" not in out, out
    assert f"1 done job of study synth read the synthetic benchmark of generator 1 (jobs {job_id})" in flat
    assert f"this usagg generates version {GENERATOR_VERSION}" in flat and "--set name=NEW" in flat
    assert "Nothing was written." in flat and (store.root / "plan.json").read_text() == plan

    _edit_fingerprint(splits, lambda entry: entry["rows"].pop("generator"))  # recorded before the generator was
    code, out = run_cli(["run", str(spec), "--dry-run"], monkeypatch, capsys)
    assert code == 0 and "older usagg" not in out, out

    _edit_fingerprint(splits, lambda entry: entry.pop("rows"))  # an older usagg's: no fingerprint at all
    code, out = run_cli(["run", str(spec)], monkeypatch, capsys)
    flat = " ".join(out.split())
    assert code == 0, out
    assert f"1 done job of study 'synth' ({job_id}) was written by an older usagg that recorded not which data" in flat
    now = f"(the synthetic benchmark is generator {GENERATOR_VERSION} now)"
    assert f"the 1 job this run trains may read other data {now}" in flat


def test_compare_and_report_say_the_done_jobs_of_unrecorded_data_they_read_and_exit_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An upgrade audit: `usagg run` warned that done jobs an older usagg trained recorded not which data they read,
    but `usagg compare` and `usagg report`, which compare their numbers with the new jobs', said nothing. They say it
    in one line on stderr (a --format csv table stays data) where the store mixes both kinds; a store whose done jobs
    all recorded none (one usagg's) says nothing."""
    code, out = run_cli(["run", str(_synthetic_spec(tmp_path, [0]))], monkeypatch, capsys)
    assert code == 0, out
    store = RunStore(tmp_path / "runs" / "synth")
    (old,) = store.job_ids()
    _edit_fingerprint(store.paths(old).splits, lambda entry: entry.pop("rows"))  # an older usagg's: none recorded
    monkeypatch.chdir(tmp_path)
    code, out = run_cli(["compare", str(store.root)], monkeypatch, capsys)
    assert code == 0 and "older usagg" not in out, out

    code, out = run_cli(["run", str(_synthetic_spec(tmp_path, [0, 1]))], monkeypatch, capsys)
    assert code == 0, out
    (new,) = [jid for jid in store.job_ids() if jid != old]
    said = (
        f"warning: 1 done job ({old}) of study 'synth' was trained by an older usagg that recorded not which data it "
        "read, beside 1 job that did: its numbers may come from other data and are compared here with the others'. "
        "To compare like with like, run the study under a new name (--set name=NEW) and analyse that."
    )
    table = tmp_path / "delta.csv"
    for args in (["compare", str(store.root)], ["compare", str(store.root), "--format", "csv", "--out", str(table)]):
        code, out = run_cli(args, monkeypatch, capsys)
        assert code == 0 and " ".join(out.split()).count(said) == 1 and new not in said, out
    assert "older usagg" not in table.read_text()
    code, out = run_cli(["report", str(store.root), "--out", str(tmp_path / "report")], monkeypatch, capsys)
    assert code == 0 and " ".join(out.split()).count(said) == 1, out
    code, out = run_cli(["compare", "--results", str(store.results_csv)], monkeypatch, capsys)
    assert code == 0 and "older usagg" not in out, out  # a table, not the store's jobs
