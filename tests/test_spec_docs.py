"""docs/spec.md documents every field: its reference section is exactly what the models generate."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel

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


def test_minimal_example_in_docs_is_valid(tmp_path: Path) -> None:
    from usagg.spec.load import load_study

    text = DOC.read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "s.yaml").write_text(block)
    study = load_study(tmp_path / "s.yaml")
    assert [t.id for t in study.tasks] == [t["id"] for t in yaml.safe_load(block)["tasks"]]
