"""The data check's kept findings (usagg/data/checkcache.py): an unchanged sample is not decoded again, and no change
to a row or a file (edited, replaced in place with its old time, deleted) is ever hidden by what was kept."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_data_check import PLANTED, corrupt
from typer.testing import CliRunner

from usagg import cachedir
from usagg.cli.app import app
from usagg.data import check as check_module
from usagg.data.check import CheckReport, check_dataset
from usagg.data.checkcache import root_file


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The images the file checks open, in call order (the real check runs)."""
    opened: list[Path] = []
    real = check_module._check_files

    def counting(s, root):  # type: ignore[no-untyped-def]
        opened.append(s.image_file)
        return real(s, root)

    monkeypatch.setattr(check_module, "_check_files", counting)
    return opened


def _findings(report: CheckReport) -> dict:
    """A report as JSON, less how many images it decoded and took from the cache (which differ by design)."""
    out = report.to_dict()
    out.pop("images")
    return out


def _report(root: Path, cache: Path | None) -> dict:
    return _findings(check_dataset(root, cache=cache))


def test_an_unchanged_dataset_is_not_decoded_again(data_copy: Path, tmp_path: Path, decodes: list[Path]) -> None:
    cache = tmp_path / "cache"
    told: list[tuple[str, int, int]] = []
    checked = check_dataset(data_copy, cache=cache, on_progress=lambda *at: told.append(at))
    assert (checked.decoded, checked.kept) == (108, 0)
    first = _findings(checked)
    assert [t for t in told if t[1] in (0, t[2])] == [
        ("train", 0, 72),
        ("train", 72, 72),
        ("val", 0, 36),
        ("val", 36, 36),
    ]
    assert [t[1] for t in told] == sorted(t[1] for t in told if t[0] == "train") + sorted(
        t[1] for t in told if t[0] == "val"
    )
    samples = len(decodes)
    assert samples == 9 * 12  # 9 tasks, 8 train + 4 val images each
    decodes.clear()
    again = check_dataset(data_copy, cache=cache)
    assert _findings(again) == first  # problems, sizes, label summaries, leakage: all as checked
    assert decodes == [] and (again.decoded, again.kept) == (0, 108)
    assert _report(data_copy, None) == first  # and what a check without the cache finds
    assert len(decodes) == samples


def test_every_planted_problem_is_found_after_a_clean_check_was_kept(data_copy: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert check_dataset(data_copy, cache=cache).ok
    corrupt(data_copy)  # rows edited, files replaced, missing, outside the root, a duplicate row
    kept = _report(data_copy, cache)
    assert kept == _report(data_copy, None)
    assert sorted(p["kind"] for p in kept["problems"]) == sorted(PLANTED)


def test_a_file_rewritten_in_place_with_its_old_times_is_checked_again(
    data_copy: Path, tmp_path: Path, decodes: list[Path]
) -> None:
    cache = tmp_path / "cache"
    assert check_dataset(data_copy, cache=cache).ok
    mask = next((data_copy / "train/Segmentation/Two/fetal_head/masks").glob("*.png"))
    before = mask.stat()
    Image.fromarray(np.full((64, 64), 7, np.uint8)).save(mask)  # class 7 of a 2-class task, same name and size
    os.utime(mask, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime as it was: the change time still moves
    decodes.clear()
    report = check_dataset(data_copy, cache=cache)
    assert [p.kind for p in report.problems] == ["mask_values"] and "values [7]" in report.problems[0].message
    assert len(decodes) == 1  # that sample only


def test_a_deleted_image_and_an_edited_label_are_not_taken_from_the_cache(data_copy: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = check_dataset(data_copy, cache=cache)
    image = next((data_copy / "train/Classification").rglob("*.png"))
    image.unlink()
    csv = data_copy / "train/csv_files/fetal_head_position.csv"
    lines = csv.read_text().splitlines()
    cells = lines[2].split(",")
    cells[-1] = str((int(cells[-1]) + 1) % 4)  # the second row's class, another one
    lines[2] = ",".join(cells)
    csv.write_text("\n".join(lines) + "\n")
    again = check_dataset(data_copy, cache=cache)
    assert _findings(again) == _findings(check_dataset(data_copy))
    assert "missing_image" in {p.kind for p in again.problems}
    assert again.tasks["fetal_head_position"].labels != first.tasks["fetal_head_position"].labels


def test_the_leakage_search_is_kept_and_a_new_leak_is_found(
    data_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    searches: list[str] = []
    real = check_module.find_leaks

    def counting(entries, root, mode="error", threshold=0.9, **kw):  # type: ignore[no-untyped-def]
        searches.append(mode)
        return real(entries, root, mode, threshold, **kw)

    monkeypatch.setattr(check_module, "find_leaks", counting)
    first = _report(data_copy, cache)
    assert _report(data_copy, cache) == first and searches == ["error"]
    warn = check_dataset(data_copy, leakage="warn", cache=cache)  # other settings: searched, not taken
    assert searches == ["error", "warn"] and warn.ok
    train = sorted((data_copy / "train/Classification").rglob("*.png"))[0]
    val = sorted((data_copy / "val/Classification").rglob("*.png"))[0]
    shutil.copyfile(train, val)  # a val image that is a training image's copy
    report = check_dataset(data_copy, cache=cache)
    assert [p.kind for p in report.problems] == ["leak_exact_copy"] and report.leakage["leak_exact_copy"] == 1
    assert _findings(report) == _findings(check_dataset(data_copy))


def test_a_cache_of_another_layout_is_emptied_not_misread(data_copy: Path, tmp_path: Path, decodes: list[Path]) -> None:
    cache = tmp_path / "cache"
    db = root_file(cache, data_copy)
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as old:
        old.execute("CREATE TABLE found (key TEXT PRIMARY KEY, record TEXT NOT NULL)")
        old.execute("INSERT INTO found VALUES ('k', '{}')")
    first = _report(data_copy, cache)
    assert first == _report(data_copy, None) and len(decodes) == 2 * 9 * 12
    decodes.clear()
    assert _report(data_copy, cache) == first and decodes == []


def test_records_unread_for_a_month_are_forgotten(data_copy: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    check_dataset(data_copy, cache=cache)
    db = root_file(cache, data_copy)
    with sqlite3.connect(db) as con:
        today = con.execute("SELECT MAX(seen) FROM found").fetchone()[0]
        con.execute("INSERT INTO found VALUES ('gone', '{}', ?), ('kept', '{}', ?)", [today - 31, today - 29])
        con.execute("UPDATE found SET seen = ? WHERE key NOT IN ('gone', 'kept')", [today - 40])  # read again below
    check_dataset(data_copy, cache=cache)
    with sqlite3.connect(db) as con:
        keys = {k for (k,) in con.execute("SELECT key FROM found")}
        stale = con.execute("SELECT COUNT(*) FROM found WHERE seen < ?", [today]).fetchone()[0]
    assert "gone" not in keys and "kept" in keys and len(keys) == 9 * 12 + 1 and stale == 1


def test_a_record_that_does_not_read_as_findings_is_checked_again(
    data_copy: Path, tmp_path: Path, decodes: list[Path]
) -> None:
    cache = tmp_path / "cache"
    first = _report(data_copy, cache)
    short_hash = '{"problems": [], "hw": [64, 64], "label_keys": [], "fp": ["00", "0011"]}'
    with sqlite3.connect(root_file(cache, data_copy)) as con:
        (a,), (b,), (c,) = con.execute("SELECT key FROM found LIMIT 3").fetchall()
        con.executemany("UPDATE found SET record = ? WHERE key = ?", [("{}", a), ("[1, 2]", b), (short_hash, c)])
    decodes.clear()
    assert _report(data_copy, cache) == first and len(decodes) == 3
    decodes.clear()
    assert _report(data_copy, cache) == first and decodes == []  # and rewritten


def test_a_damaged_cache_is_rebuilt_and_an_unwritable_one_only_costs_time(
    data_copy: Path, tmp_path: Path, decodes: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    first = _report(data_copy, cache)
    db = root_file(cache, data_copy)
    db.write_bytes(b"not a database" * 100)
    decodes.clear()
    with caplog.at_level(logging.WARNING):
        assert _report(data_copy, cache) == first
    assert "is damaged" in caplog.text and str(db) in caplog.text
    assert len(decodes) == 9 * 12
    rows = sqlite3.connect(db).execute("SELECT COUNT(*) FROM found").fetchone()[0]
    assert rows == 9 * 12  # rebuilt by that check
    decodes.clear()
    assert _report(data_copy, cache) == first and decodes == []

    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would be")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert _report(data_copy, blocked) == first
    assert "cannot be made" in caplog.text


def test_a_cache_another_process_keeps_locked_is_still_read(
    data_copy: Path,
    tmp_path: Path,
    decodes: list[Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from usagg.data import checkcache

    cache = tmp_path / "cache"
    first = _report(data_copy, cache)
    monkeypatch.setattr(checkcache, "LOCK_WAIT_S", 0.05)
    other = sqlite3.connect(root_file(cache, data_copy), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # a writer holds the file: reading goes on, writing waits and gives up
    try:
        decodes.clear()
        with caplog.at_level(logging.WARNING):
            assert _report(data_copy, cache) == first
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert decodes == [] and "cannot be written" in caplog.text


def test_the_cache_is_listed_and_pruned_with_the_others(data_copy: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    check_dataset(data_copy, cache=cache)
    (entry,) = cachedir.entries(cache, ("datacheck",))
    assert entry.paths == (root_file(cache, data_copy),) and entry.size > 9 * 12 * 100
    old = entry.last_used - 40 * 86400
    os.utime(entry.paths[0], (old, old))
    aged = cachedir.entries(cache, ("datacheck",))
    assert cachedir.prune(cache, 30 * 86400, ("datacheck",))[0] == aged
    assert not root_file(cache, data_copy).exists()
    check_dataset(data_copy, cache=cache)  # used again: its time is now
    assert cachedir.prune(cache, 30 * 86400, ("datacheck",))[0] == []


def test_cli_keeps_findings_and_rechecks_on_request(
    data_copy: Path, tmp_path: Path, decodes: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USAGG_CACHE", str(tmp_path / "cache"))
    runner = CliRunner()
    res = runner.invoke(app, ["data", "check", str(data_copy)])
    assert res.exit_code == 0, res.output
    decodes.clear()
    res = runner.invoke(app, ["data", "check", str(data_copy)])
    assert res.exit_code == 0 and decodes == [], res.output
    assert "108 of 108 images unchanged since an earlier check, not decoded again" in " ".join(res.output.split())
    res = runner.invoke(app, ["data", "check", str(data_copy), "--recheck"])
    assert res.exit_code == 0 and len(decodes) == 9 * 12


def test_a_missing_files_case_twin_renamed_since_is_seen_at_the_next_check(data: Path, tmp_path: Path) -> None:
    """A missing file's note names the file spelt otherwise that is there; the findings kept were keyed by the row
    and the files' identities only, so after the user renamed that twin the kept note still named the old name
    until the row changed or --recheck. The key now holds the twins the note names."""
    from test_data_support import edit_csv

    cache = tmp_path / "cache"
    edit_csv(data, "cls.csv", lambda rows: rows[0].update(image_path=rows[0]["image_path"].replace("cls_t", "Cls_T")))
    folder = data / "train" / "Classification" / "cls_t"

    def note(report: CheckReport) -> str:
        (problem,) = report.problems
        assert problem.kind == "missing_image" and problem.row == 1
        return problem.message.partition("; ")[2]

    first = check_dataset(data, cache=cache)
    assert note(first).startswith(
        "a file differing only in letter case is there: train/Classification/cls_t/train_0.png;"
    )
    (folder / "train_0.png").rename(folder / "train_0.PNG")  # still not the CSV's spelling: another twin
    renamed = check_dataset(data, cache=cache)
    assert note(renamed).startswith(
        "a file differing only in letter case is there: train/Classification/cls_t/train_0.PNG;"
    )
    assert _findings(renamed) == _report(data, None)
    (folder / "train_0.PNG").rename(tmp_path / "train_0.png")  # moved out of the dataset: no twin at all
    gone = check_dataset(data, cache=cache)
    assert note(gone) == "" and _findings(gone) == _report(data, None)
    assert (gone.decoded, gone.kept) == (1, first.decoded - 1)  # the other samples still kept
