"""docs/spec.md documents every field: its reference section is exactly what the models generate."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from tests.cli_run import run_cli
from usagg.spec.models import Study
from usagg.spec.reference import END, START, _models, reference_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "spec.md"


def test_reference_section_is_current() -> None:
    text = DOC.read_text()
    section = text[text.index(START) : text.index(END) + len(END)] + "\n"
    assert section == reference_markdown(), "regenerate: usagg schema --markdown, and paste it into docs/spec.md"


def test_every_field_is_documented() -> None:
    text = DOC.read_text()
    models: list[type[BaseModel]] = _models(Study)
    assert len(models) >= 10
    for model in models:
        assert f"### {model.__name__}" in text
        for name, field in model.model_fields.items():
            assert f"| `{name}` |" in text, f"{model.__name__}.{name} missing from docs/spec.md"
            assert field.description, f"{model.__name__}.{name} has no description"


def test_minimal_example_in_docs_is_valid_and_has_the_data_it_names(tmp_path: Path) -> None:
    """The example's tasks are ones its synthetic data generates: an example of other ids was a valid spec that
    the first `usagg run` refused after generating the benchmark (tasks with no rows)."""
    from usagg.data.catalog import check_synthetic_tasks
    from usagg.spec.load import load_study

    text = DOC.read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "s.yaml").write_text(block)
    study = load_study(tmp_path / "s.yaml")
    assert [t.id for t in study.tasks] == yaml.safe_load(block)["tasks_from"]["include"]
    assert study.data.synthetic is not None
    check_synthetic_tasks(study.tasks, study.data.synthetic)


def test_tasks_the_synthetic_benchmark_does_not_draw_are_refused_before_anything_is_generated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: s\ndata: {synthetic: {seed: 0, image_size: 64}, cache_dir: cache}\n"
        "tasks:\n  - {id: lesion_seg, type: segmentation, num_classes: 2, group: Breast}\n"
        "  - {id: breast_lesion, type: classification, num_classes: 2, group: Breast}\n"
        "model: {backbone: dinov3_test, image_size: 64}\n"
    )
    monkeypatch.chdir(tmp_path)
    for command in (["validate", str(spec), "--no-data-check"], ["run", str(spec)]):
        code, out = run_cli(command, monkeypatch, capsys)
        said = " ".join(out.split())
        assert code == 2 and "Traceback" not in out, out
        assert (
            "the study's tasks are not the synthetic benchmark's: it does not generate lesion_seg (it generates" in said
        )
        assert "task breast_lesion: the study says classification with num_classes 2, the benchmark draws" in said
        assert "`tasks_from: {catalog: synthetic}`" in said
    assert not (tmp_path / "cache").exists() and not (tmp_path / "runs").exists()  # nothing generated or written


def test_every_shipped_study_validates_against_the_emitted_schema(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Audit docs 4: `usagg schema` gave `paradigms` items of type string only, so an editor marked the documented
    `{AG: {groups: 3}}` entry, and studies/known.yaml, as invalid. The schema takes what the loader takes."""
    import json

    import jsonschema  # the dev extra's: a skip here would hide the schema going wrong

    code, out = run_cli(["schema"], monkeypatch, capsys)
    assert code == 0, out
    validator = jsonschema.Draft202012Validator(json.loads(out))
    repo = Path(__file__).parent.parent
    paths = sorted((repo / "studies").glob("*.yaml")) + sorted((repo / "usagg" / "studies").glob("*.yaml"))
    assert len(paths) == 8 and any("{AG: {" in p.read_text() for p in paths)
    for path in paths:
        assert [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text()))] == [], path
    spec = {"name": "x", "data": {"root": "d"}, "paradigms": ["TS", {"AG": {"groups": 3}}, {"AG": None}]}
    assert not list(validator.iter_errors(spec))
    assert list(validator.iter_errors({**spec, "paradigms": [{"AG": {}, "CG": {}}]}))  # one key, as the loader says
