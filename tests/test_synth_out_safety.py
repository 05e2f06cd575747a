"""`data.synthetic.out` and `usagg synth OUT` never delete what usagg did not write (audit finding 3).

`usagg run` generates the synthetic benchmark beside its folder and renames it into place, replacing the folder
whole: it does so only for a new or empty folder, or one holding nothing but a benchmark of usagg's (its marker or
a synth.json of usagg's format, and only the generator's files). `usagg synth` replaces OUT's train/ and val/ whole
and keeps anything beside them, so the same rule holds for those two folders.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_run import run_cli
from tests.tiny_study import write_tiny_study
from usagg.data import source
from usagg.data.synth.generate import generate_benchmark
from usagg.data.synth.manifest import MANIFEST
from usagg.errors import DataError
from usagg.spec.models import DataSpec, SynthSpec

SMALL = ["--task", "fetal_head", "--size", "fetal_head=4", "--val-size", "4"]


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` with its bytes: what a refused command must leave as it was."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _run(tmp_path: Path, out: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple:
    """`usagg run` of the tiny study with `--set data.synthetic.out=OUT` (relative, as the audit typed it)."""
    spec = write_tiny_study(tmp_path / "tiny.yaml", "tiny2", tmp_path, output_root=tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    return run_cli(["run", str(spec), "--set", f"data.synthetic.out={out.name}"], monkeypatch, capsys)


def test_run_refuses_a_synth_output_with_the_users_notes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The audit's repro: `usagg synth mysynth`, a NOTES.txt added, then a run of other settings naming the folder
    deleted it whole. Now exit 2, one paragraph naming the field, the folder and the note; nothing changed."""
    mysynth = tmp_path / "mysynth"
    monkeypatch.chdir(tmp_path)
    assert run_cli(["synth", str(mysynth), *SMALL], monkeypatch, capsys)[0] == 0
    (mysynth / "NOTES.txt").write_text("notes\n")
    before = _tree(mysynth)
    code, out = _run(tmp_path, mysynth, monkeypatch, capsys)
    assert code == 2 and "Traceback" not in out, out
    text = " ".join(out.split())
    assert "data.synthetic.out" in text and "mysynth" in text and "NOTES.txt" in text and "new or empty" in text
    assert _tree(mysynth) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".mysynth.") and "lock" not in p.name] == []


def test_run_refuses_a_folder_without_usaggs_mark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user's folder (their own FMC_UIA-shaped data, no marker) and one with a planted synth.json not of usagg's
    format are both refused: a run would have deleted the folder whole."""
    theirs = tmp_path / "theirs"
    (theirs / "train" / "csv_files").mkdir(parents=True)
    (theirs / "train" / "csv_files" / "fetal_head.csv").write_text("image_path\nmine.png\n")
    for planted in (None, {"complete": False}):
        if planted is not None:
            (theirs / MANIFEST).write_text(json.dumps(planted))
        before = _tree(theirs)
        code, out = _run(tmp_path, theirs, monkeypatch, capsys)
        assert code == 2 and "Traceback" not in out and "no synthetic benchmark of usagg" in " ".join(out.split())
        assert _tree(theirs) == before


def test_synth_refuses_to_replace_train_and_val_it_did_not_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`usagg synth OUT` replaces train/ and val/ whole: a planted unfinished synth.json beside the user's train/
    (or a file of theirs inside a benchmark's val/) is refused, with or without --force."""
    theirs = tmp_path / "theirs"
    (theirs / "train").mkdir(parents=True)
    (theirs / "train" / "scan.dcm").write_text("patient data\n")
    (theirs / MANIFEST).write_text(json.dumps({"complete": False}))
    ours = generate_benchmark(tmp_path / "ours", SynthSpec(default_size=4, val_size=2), ["fetal_head"])
    (ours / "val" / "mine.txt").write_text("mine\n")
    for folder in (theirs, ours):
        before = _tree(folder)
        for force in ([], ["--force"]):
            code, out = run_cli(["synth", str(folder), *SMALL, *force], monkeypatch, capsys)
            assert code == 2 and "Traceback" not in out and "nothing was changed" in " ".join(out.split()), out
            assert _tree(folder) == before


def test_synth_force_keeps_files_beside_the_benchmark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What `usagg synth --force` replaces is its own train/ and val/; a note beside them stays (as before)."""
    out = tmp_path / "mysynth"
    assert run_cli(["synth", str(out), *SMALL], monkeypatch, capsys)[0] == 0
    (out / "NOTES.txt").write_text("notes\n")
    args = ["synth", str(out), "--task", "fetal_head", "--size", "fetal_head=6", "--val-size", "4", "--force"]
    assert run_cli(args, monkeypatch, capsys)[0] == 0
    assert (out / "NOTES.txt").read_text() == "notes\n" and json.loads((out / MANIFEST).read_text())["complete"]


def test_a_benchmark_usagg_wrote_is_still_replaced(tmp_path: Path) -> None:
    """What stays: an empty folder is generated into, and one holding only a benchmark of usagg's (other settings,
    from `usagg synth` or an earlier run) is replaced as before."""
    empty = tmp_path / "empty"
    empty.mkdir()
    spec = SynthSpec(default_size=4, val_size=2, sizes={"fetal_head": 5})
    assert source.dataset_root(DataSpec(synthetic=spec.model_copy(update={"out": empty}))) == empty
    assert source.synth_complete(empty, source.synth_key(spec), spec)
    other = SynthSpec(default_size=4, val_size=2)
    assert source.foreign_entries(empty) == []
    assert source.dataset_root(DataSpec(synthetic=other.model_copy(update={"out": empty}))) == empty
    assert source.synth_complete(empty, source.synth_key(other), other)
    cli = generate_benchmark(tmp_path / "cli", spec, ["fetal_head"])
    assert source.dataset_root(DataSpec(synthetic=other.model_copy(update={"out": cli}))) == cli


def test_a_link_or_a_file_as_the_folder_is_refused(tmp_path: Path) -> None:
    """A link would be replaced by the renamed folder (its target left as it was, the link gone): refused, naming
    it; so is a file."""
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep.txt").write_text("keep\n")
    link = tmp_path / "link"
    link.symlink_to(target)
    plain = tmp_path / "plain.txt"
    plain.write_text("x\n")
    spec = SynthSpec(default_size=4, val_size=2)
    for out, needle in ((link, "symbolic link"), (plain, "not a folder")):
        with pytest.raises(DataError, match=needle) as err:
            source.dataset_root(DataSpec(synthetic=spec.model_copy(update={"out": out})))
        assert "data.synthetic.out" in str(err.value)
    assert link.is_symlink() and (target / "keep.txt").read_text() == "keep\n" and plain.read_text() == "x\n"


def test_run_names_the_field_when_the_synth_output_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file where data.synthetic.out's folder would go: one paragraph naming the field, the file in the way and
    both ways out (another folder, or the cache), exit 2, and no run store made. Before, the CLI's generic
    paragraph said only "could not use <file>: File exists"."""
    blocker = tmp_path / "afile"
    blocker.write_text("mine\n")
    spec = write_tiny_study(tmp_path / "tiny.yaml", "tiny2", tmp_path, output_root=tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    code, out = run_cli(["run", str(spec), "--set", "data.synthetic.out=afile/sub"], monkeypatch, capsys)
    text = " ".join(out.split())
    assert code == 2 and "Traceback" not in out, out
    assert "data.synthetic.out" in text and f"{blocker} is a file, not a folder" in text and "usagg's cache" in text
    assert blocker.read_text() == "mine\n" and not (tmp_path / "runs").exists()
