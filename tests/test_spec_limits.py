"""Spec limits and cross-checks (issues 26.4, 26.5, 27.6): hostile input refused fast, nonsense refused by name.

Every case runs the real `usagg validate` (exit 2, one paragraph, no traceback) or the real loader,
on the shipped demo study with one thing changed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from cli_run import run_cli

from usagg.errors import SpecError
from usagg.plan import Job, plan
from usagg.spec.load import MAX_YAML_BYTES, MAX_YAML_NODES, dump_study, load_study, parse_yaml_text, read_yaml
from usagg.spec.models import Study

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "studies" / "demo.yaml"
SMALL = """name: s
data: {synthetic: {seed: 0}}
model: {backbone: dinov3_test, image_size: 64}
tasks:
  - {id: a, type: classification, num_classes: 2, group: G}
  - {id: b, type: segmentation, num_classes: 2, group: G}
  - {id: c, type: regression, num_classes: 1, group: H}
"""


def refused(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    """The message of a `usagg validate` that must fail as a user error."""
    code, text = run_cli(["validate", *args], monkeypatch, capsys)
    assert code == 2, text
    assert text.startswith("error: ") and "Traceback" not in text, text
    return text


# --------------------------------------------------------------------------- 26.4: loading limits


def test_merge_keys_merge_as_yaml_has_them_and_own_keys_stay_unique(tmp_path: Path) -> None:
    """`<<: *defaults` is valid YAML that read as "YAML syntax error ... constructor for the tag merge"."""
    text = SMALL.replace(
        "  - {id: a, type: classification, num_classes: 2, group: G}",
        "  - &cls {id: a, type: classification, num_classes: 2, group: G}\n  - {<<: *cls, id: d, group: H}",
    )
    path = tmp_path / "merged.yaml"
    path.write_text(text + "training:\n  <<: {epochs: 1, batch_size: 4}\n  batch_size: 8\n")
    study = load_study(path)
    assert study.training.epochs == 1 and study.training.batch_size == 8  # the mapping's own key wins
    d = next(t for t in study.tasks if t.id == "d")
    assert (d.type, d.num_classes, d.group) == ("classification", 2, "H")
    with pytest.raises(Exception, match="duplicate key 'epochs'"):
        parse_yaml_text("t:\n  <<: {lr: 1}\n  epochs: 1\n  epochs: 2\n", "x")


def test_set_value_nested_3000_deep_is_refused_like_a_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    deep = "[" * 3000 + "]" * 3000
    text = refused([str(DEMO), "--set", f"training.loss_weights={deep}"], monkeypatch, capsys)
    assert "nested more than 64 levels deep" in text and "--set" in text


def test_set_value_larger_than_a_spec_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = refused([str(DEMO), "--set", "name=" + "x" * (MAX_YAML_BYTES + 1)], monkeypatch, capsys)
    assert f"over {MAX_YAML_BYTES:,}" in text


@pytest.mark.parametrize("where", ["file", "set"])
def test_a_5000_digit_integer_is_refused_before_int(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    digits = "9" * 5000
    if where == "file":
        spec = tmp_path / "s.yaml"
        spec.write_text(DEMO.read_text().replace("seeds: [0]", f"seeds: [{digits}]"))
        text = refused([str(spec)], monkeypatch, capsys)
        assert "seeds[0] (line" in text
    else:
        text = refused([str(DEMO), "--set", f"seeds=[{digits}]"], monkeypatch, capsys)
    assert "an integer of 5,000 characters" in text and "below 2**63" in text


def test_integers_beyond_2_63_are_refused_by_field(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = refused([str(DEMO), "--set", "analysis.regime_threshold=9223372036854775808"], monkeypatch, capsys)
    assert "analysis.regime_threshold: got 9223372036854775808; integers in a spec are below 2**63" in text


def test_yaml_12_floats_are_numbers_and_quoted_numbers_strings() -> None:
    assert parse_yaml_text("a: 1e-4\nb: '1e-4'\nc: -2E3\nd: 3\n", "x") == {"a": 1e-4, "b": "1e-4", "c": -2000.0, "d": 3}
    assert load_study(DEMO, ["training.lr_encoder=1e-4"]).training.lr_encoder == 1e-4


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_fifo_is_refused_at_once_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    start = time.monotonic()
    with pytest.raises(SpecError, match=r"is a named pipe \(FIFO\), not a regular file"):
        read_yaml(fifo)
    assert time.monotonic() - start < 1


def test_a_folder_is_not_a_spec(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="is a folder, not a regular file"):
        load_study(tmp_path)


def test_60000_keys_are_refused_by_size_and_16000_by_count(tmp_path: Path) -> None:
    """The 938 kB file of the finding (71 s before) and one just under the byte limit are refused while reading,
    before any validation (their time is measured by `python -m benchmarks guards`)."""
    head = "name: big\nseeds: [0]\ntraining:\n  loss_weights:\n"
    big = tmp_path / "big.yaml"
    big.write_text(head + "".join(f"    t{i:05d}: 1.0\n" for i in range(60_000)))
    assert big.stat().st_size > 900_000
    with pytest.raises(SpecError, match=f"larger than {MAX_YAML_BYTES:,}"):
        load_study(big)
    many = tmp_path / "many.yaml"
    many.write_text(head + "".join(f"    t{i:05d}: 1\n" for i in range(16_000)))
    assert many.stat().st_size < MAX_YAML_BYTES
    with pytest.raises(SpecError, match=f"more than {MAX_YAML_NODES:,} values"):
        load_study(many)


def test_the_packaged_specs_are_far_inside_the_limits() -> None:
    for path in [*sorted((REPO / "usagg" / "catalogs").glob("*.yaml")), *sorted((REPO / "studies").glob("*.yaml"))]:
        assert path.stat().st_size < MAX_YAML_BYTES // 20, path


# --------------------------------------------------------------------------- 26.5: ranges and cross-checks


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["seeds=[true]"], "seeds: item 0: expected a number, got true (a YAML boolean)"),
        (['training.epochs="3"'], "training.epochs: expected a number, got the string '3'; write it without quotes"),
        (['data.synthetic.sizes.fetal_head="9"'], "data.synthetic.sizes: 'fetal_head': expected a number"),
        (["fractions=[1e-9]"], "fractions[0]: got 1e-09; a data fraction is from 0.01 to 1"),
        (
            ["data.selection_fraction=0.99"],
            "data.selection_fraction: got 0.99; input should be less than or equal to 0.5",
        ),
        (["execution.threads=100000"], "execution.threads: got 100000; input should be less than or equal to 1024"),
        (
            ["training.warmup_epochs=500", "training.epochs=3"],
            "warmup_epochs (500) exceeds training.epochs (3)",
        ),
        (["paradigms=[TS,CG,AU,{AG: {groups: 50}}]"], "paradigms: AG: groups 50 exceeds the study's 9 tasks"),
        (["analysis.baseline=CG", "paradigms=[TS,AU]"], "analysis.baseline 'CG' is not among the paradigms"),
        (
            ["paradigms=[TS,CG,AU]", "analysis.primary=[AU,CGD]"],
            "analysis.primary names 'CGD' (did you mean 'CG'?), which the study does not run (paradigms: TS, CG, AU)",
        ),
        (["analysis.primary=[AU,TS]"], "analysis.primary names the baseline TS: Δm is measured against it"),
        (["analysis.primary=[CX]"], "analysis.primary[0]: unknown paradigm 'CX'; registered paradigms: TS, CG"),
        (["analysis.primary=[]"], "analysis.primary: List should have at least 1 item"),
        (["model.heads.feature_blocks=[1, 1]"], "got [1, 1]; block indices must be distinct and increasing"),
        (["model.moe.blocks=[3, 2]"], "got [3, 2]; block indices must be distinct and increasing"),
        (["data.num_workers=8"], "data has no setting 'num_workers'"),
    ],
)
def test_nonsense_is_refused_naming_the_field_and_the_fix(
    overrides: list[str], expected: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [str(DEMO)]
    for o in overrides:
        args += ["--set", o]
    assert expected in refused(args, monkeypatch, capsys)


def test_all_loss_weights_zero(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(SMALL + "training: {loss_weights: {a: 0, b: 0, c: 0}}\n")
    with pytest.raises(SpecError, match="every task's weight is 0, so no job would learn anything"):
        load_study(spec)
    assert load_study(spec, ["training.loss_weights.c=0.5"]).training.loss_weights["c"] == 0.5


def test_weights_must_be_a_file_not_a_folder(tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    spec = tmp_path / "s.yaml"
    spec.write_text(SMALL.replace("image_size: 64}", "image_size: 64, weights: ckpt}"))
    with pytest.raises(SpecError, match=r"model.weights = .*ckpt is a folder, not a checkpoint file"):
        load_study(spec)
    spec.write_text(SMALL.replace("image_size: 64}", "image_size: 64, weights: later.pth}"))
    assert load_study(spec).model.weights == tmp_path / "later.pth"  # not there yet: fine for planning


def test_limits_that_still_allow_the_edges(tmp_path: Path) -> None:
    study = load_study(
        DEMO,
        ["fractions=[0.01, 1.0]", "data.selection_fraction=0.5", "execution.threads=1024", "training.warmup_epochs=7"],
    )
    assert study.fractions == [0.01, 1.0] and study.execution.threads == 1024


def test_num_workers_in_a_spec_gets_a_clear_removal_note(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(SMALL.replace("data: {synthetic: {seed: 0}}", "data: {synthetic: {seed: 0}, num_workers: 8}"))
    with pytest.raises(SpecError, match="num_workers is no longer a setting: it was never read"):
        load_study(spec)


def test_a_stored_job_with_num_workers_still_loads(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(SMALL)
    job = plan(load_study(spec))[0]
    record = job.model_dump(mode="json")
    record["data"]["num_workers"] = 4  # as plan.json files written before the removal hold it
    assert Job.model_validate(record) == job


# --------------------------------------------------------------------------- 27.6: validation independent of order


def test_groups_mapping_gives_the_same_study_whatever_the_order(tmp_path: Path) -> None:
    """The mapping is applied before validation (load.py), never by rewriting tasks inside a validator."""
    spec = tmp_path / "s.yaml"
    spec.write_text(SMALL + "groups: {X: [a, c], Y: [b]}\n")
    study = load_study(spec)
    assert {t.id: t.group for t in study.tasks} == {"a": "X", "b": "Y", "c": "X"}
    again = load_study(spec, ["tasks[a].group=Z"])  # the mapping wins over a task's own group
    assert again == study
    data = study.model_dump(mode="json")
    assert Study.model_validate(data) == study  # a resolved study validates as it is
    data["tasks"][0]["group"] = "Y"
    with pytest.raises(ValueError, match=r"task 'a' has group 'Y' but groups\.X lists it"):
        Study.model_validate(data)


def test_an_unresolved_catalog_is_not_a_half_checked_study() -> None:
    raw = {"name": "s", "data": {"synthetic": {}}, "tasks_from": {"catalog": "synthetic"}}
    with pytest.raises(ValueError, match="tasks_from is resolved while loading"):
        Study.model_validate(raw)


def test_the_default_baseline_may_be_absent_and_a_dumped_study_reloads(tmp_path: Path) -> None:
    """TS (the default baseline) need not run; a dumped study (baseline written out) loads back equal."""
    study = load_study(DEMO, ["paradigms=[AU, CG]"])
    again = tmp_path / "study.yaml"
    again.write_text(dump_study(study))
    assert load_study(again) == study
    with pytest.raises(SpecError, match=r"analysis\.baseline 'AU' is not among the paradigms"):
        load_study(DEMO, ["paradigms=[TS, CG]", "analysis.baseline=AU"])


def test_a_declared_primary_family_reaches_the_analysis_settings(tmp_path: Path) -> None:
    """analysis.primary is the analysis's (usagg/analysis/families.py): it changes no job id."""
    from usagg.analysis.inputs import _settings
    from usagg.plan import plan

    study = load_study(DEMO, ["analysis.primary=[AU, AG]"])
    assert study.analysis.primary == ["AU", "AG"] and load_study(DEMO).analysis.primary is None
    assert [j.id for j in plan(study)] == [j.id for j in plan(load_study(DEMO))]
    assert _settings({"analysis": {"primary": ["AU"]}}, "s.yaml").primary == ["AU"]
    assert _settings({}, "s.yaml").primary is None
