"""A RUN_DIR that is no run store is pointed to the one it means (usagg/cli/stores.py), and `usagg init` gives each
DIR a study name of its own: what a new user met from another folder than the one the study ran in."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.cli_run import error_paragraph, run_cli
from usagg.run.studyrun import StudyRun
from usagg.spec.load import load_study
from usagg.store import RunStore


@pytest.fixture
def ran_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Path:
    """`usagg init my_study` and its run store (made, not trained) in `nu work/`, a copy of the spec beside the
    folder as the user's t1.yaml; the current folder `other/` beside it. The folder's space makes every path a
    message suggests a quoted one."""
    work = tmp_path / "nu work"
    work.mkdir()
    monkeypatch.chdir(work)
    code, text = run_cli(["init", "my_study"], monkeypatch, capsys)
    assert code == 0, text
    spec = work / "my_study" / "demo.yaml"
    StudyRun.prepare(load_study(spec), spec_file=spec).init_store()  # runs/my_study, bound to my_study/demo.yaml
    shutil.copy(spec, work / "t1.yaml")
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "other")
    return work


def said(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    """The refusal of `usagg ARGS` as one line (exit 2, one paragraph, no traceback); it never suggests `usagg
    run`, which would train the study again into a new store here."""
    code, text = run_cli(args, monkeypatch, capsys)
    paragraph = error_paragraph(text)
    assert code == 2 and "usagg run" not in paragraph, text
    return paragraph


def test_a_study_folder_or_spec_names_the_store_it_ran_into_from_another_folder(
    ran_elsewhere: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """It said "whose run store is runs/my_study, not there yet: `usagg run ../nu_work/my_study/demo.yaml` makes it"
    (output_root read from the current folder) though ../nu_work/runs/my_study was there and done."""
    text = said(["compare", "../nu work/my_study", "--baseline", "TS"], monkeypatch, capsys)
    assert text == (
        "error: ../nu work/my_study is a study folder, not a run store: it holds the spec "
        "../nu work/my_study/demo.yaml, whose run store is ../nu work/runs/my_study: usagg compare "
        "'../nu work/runs/my_study'"
    )
    text = said(["status", "../nu work/my_study/demo.yaml"], monkeypatch, capsys)
    assert text == (
        "error: ../nu work/my_study/demo.yaml is a study spec, not a run store: its run store is "
        "../nu work/runs/my_study: usagg status '../nu work/runs/my_study'"
    )
    absolute = ran_elsewhere / "my_study"  # written as the user wrote theirs
    text = said(["status", str(absolute)], monkeypatch, capsys)
    assert (
        f"whose run store is {ran_elsewhere / 'runs' / 'my_study'}: usagg status '{ran_elsewhere}/runs/my_study'"
        in text
    )


def test_a_copy_of_the_spec_and_a_folder_of_specs_name_the_store_of_their_name(
    ran_elsewhere: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`usagg compare ../nu_work` said "t1.yaml (run store runs/my_study, not run yet)" for a store that was there."""
    text = said(["compare", "../nu work/t1.yaml"], monkeypatch, capsys)
    assert text == (
        "error: ../nu work/t1.yaml is a study spec, not a run store: its run store is ../nu work/runs/my_study (run "
        "from ../nu work/my_study/demo.yaml): usagg compare '../nu work/runs/my_study'"
    )
    shutil.copy(ran_elsewhere / "t1.yaml", ran_elsewhere / "t2.yaml")
    (ran_elsewhere / "t3.yaml").write_text((ran_elsewhere / "t1.yaml").read_text().replace("name: my_study", "name: x"))
    text = said(["compare", "../nu work"], monkeypatch, capsys)
    assert text == (
        "error: ../nu work is a study folder, not a run store: its specs name the run stores ../nu work/runs/my_study "
        "(t1.yaml, t2.yaml), runs/x (t3.yaml, not run yet); give a run store, e.g. usagg compare "
        "'../nu work/runs/my_study'"
    )


def test_a_path_inside_a_run_store_points_at_the_store(
    ran_elsewhere: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The store's study.yaml got "`usagg run .../study.yaml` makes it" (a whole study trained again into ./runs);
    its jobs/ folder "has no results.csv and no finished job"."""
    store = "../nu work/runs/my_study"
    text = said(["compare", f"{store}/study.yaml"], monkeypatch, capsys)
    assert text == (
        f"error: {store}/study.yaml is the spec kept in the run store {store}, not a run store itself: "
        f"usagg compare '{store}'"
    )
    job = RunStore(ran_elsewhere / "runs" / "my_study").job_ids()[0]
    for inside in ("jobs", f"jobs/{job}", f"jobs/{job}/job.json", "plan.json"):
        text = said(["status", f"{store}/{inside}"], monkeypatch, capsys)
        assert text == (
            f"error: {store}/{inside} is inside the run store {store}, not a run store itself: usagg status '{store}'"
        )
    code, text = run_cli(["status", store], monkeypatch, capsys)
    assert code == 0 and "pending" in text, text  # the store itself is read as before


def test_a_folder_of_run_stores_names_them(
    ran_elsewhere: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`usagg status runs`, the output_root rather than a store in it: its stores, the latest suggested."""
    spec = ran_elsewhere / "my_study" / "demo.yaml"
    monkeypatch.chdir(ran_elsewhere)
    StudyRun.prepare(load_study(spec).model_copy(update={"name": "seed8"}), spec_file=spec).init_store()
    os.utime(Path("runs") / "my_study" / "plan.json", (1, 1))  # seed8 the latest
    os.utime(Path("runs") / "my_study", (1, 1))
    text = said(["status", "runs"], monkeypatch, capsys)
    assert text == (
        "error: runs holds run stores, it is not one itself: my_study, seed8; give one, e.g. the latest: "
        "usagg status runs/seed8"
    )


def test_a_spec_not_run_anywhere_still_says_how_to_make_its_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_cli(["init", "a b"], monkeypatch, capsys)[0] == 0
    code, text = run_cli(["compare", "a b"], monkeypatch, capsys)
    assert code == 2 and error_paragraph(text) == (
        "error: a b is a study folder, not a run store: it holds the spec a b/demo.yaml, whose run store is "
        "runs/a_b, not there yet: `usagg run 'a b/demo.yaml'` makes it, then usagg compare runs/a_b"
    )


def test_init_names_the_study_of_a_folder_beside_another_of_that_name_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`usagg init "my study"` beside my_study/ wrote a second study 'my_study': one run store for two folders, the
    second `usagg run` refused. It gets my_study_2, said in one line."""
    monkeypatch.chdir(tmp_path)
    assert run_cli(["init", "my_study"], monkeypatch, capsys)[0] == 0
    Path("environment.yml").write_text("name: my_study_2\n")  # a name, no study: not counted
    code, text = run_cli(["init", "my study"], monkeypatch, capsys)
    assert code == 0 and "Traceback" not in text and "warning" not in text, text
    assert load_study(tmp_path / "my study" / "demo.yaml").name == "my_study_2"
    assert (
        "note: the folder's name 'my study' is no study name (ASCII letters, digits, '_', '.' and '-', starting with "
        "a letter or digit) and 'my_study' is taken (my_study/demo.yaml names a study so), so the study is named "
        "'my_study_2'; edit `name:` in 'my study/demo.yaml' to choose another\n"
    ) in text
    assert "  usagg run 'my study/demo.yaml'\n" in text and "  usagg status runs/my_study_2\n" in text
    code, text = run_cli(["init", "--force", "my_study"], monkeypatch, capsys)  # its own name is not taken by itself
    assert code == 0 and "note" not in text and load_study(tmp_path / "my_study" / "demo.yaml").name == "my_study"


def test_init_keeps_the_name_of_a_study_that_ran_into_its_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_cli(["init", "mine"], monkeypatch, capsys)[0] == 0
    spec = tmp_path / "mine" / "demo.yaml"
    StudyRun.prepare(load_study(spec), spec_file=spec).init_store()
    code, text = run_cli(["init", "--force", "mine"], monkeypatch, capsys)
    assert code == 0 and "note" not in text and "the study 'mine'" in text, text


def test_init_says_when_it_made_the_folders_name_a_study_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`usagg init étude_é` turned the name into etude_e without a word."""
    monkeypatch.chdir(tmp_path)
    code, text = run_cli(["init", "étude_é"], monkeypatch, capsys)
    assert code == 0 and load_study(tmp_path / "étude_é" / "demo.yaml").name == "etude_e"
    assert (
        "note: the folder's name 'étude_é' is no study name (ASCII letters, digits, '_', '.' and '-', starting with a "
        "letter or digit), so the study is named 'etude_e'; edit `name:` in 'étude_é/demo.yaml' to choose another\n"
    ) in text
    code, text = run_cli(["init", "plain"], monkeypatch, capsys)
    assert code == 0 and "note" not in text


@pytest.mark.parametrize(("kind", "meant"), [("paradigm", "paradigms"), ("Task-Types", "task-types")])
def test_a_registry_typo_gets_a_did_you_mean(
    kind: str, meant: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = run_cli(["registry", kind], monkeypatch, capsys)
    assert code == 2 and error_paragraph(text) == (
        f"error: usagg registry {kind!r} (did you mean {meant!r}?): choose one of task-types, paradigms, backbones, "
        "executors (or nothing for all of them)"
    )
    code, text = run_cli(["registry", "zzz"], monkeypatch, capsys)
    assert code == 2 and "did you mean" not in text
