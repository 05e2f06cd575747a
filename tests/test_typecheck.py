"""The package's annotations hold (issue 27.7): it ships py.typed, so `mypy usagg` with the [tool.mypy] settings of
pyproject.toml (the pydantic plugin, unused ignores reported) is clean: `make lint` runs it and CI (.ci/run) runs
`make lint`, so the suite checks only that the wiring is there."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_mypy_reads_its_settings_from_pyproject_and_lint_runs_it() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    settings = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    mypy = settings["tool"]["mypy"]
    assert mypy["plugins"] == ["pydantic.mypy"] and mypy["python_version"] == "3.10"
    assert mypy["warn_unused_ignores"] is True
    assert any(dep.startswith("mypy") for dep in settings["project"]["optional-dependencies"]["dev"])
    lint = (REPO / "Makefile").read_text(encoding="utf-8").split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "$(VENV)/bin/mypy usagg" in lint
    assert "make lint" in (REPO / ".ci" / "run").read_text(encoding="utf-8")


def test_an_encoder_input_without_pixels_or_tokens_names_what_is_missing() -> None:
    """What the type narrowing of usagg/model/backbones.py turned from `None[0]` into a message."""
    from usagg.model.backbones import EncoderInput

    with pytest.raises(ValueError, match="without images or tokens"):
        _ = EncoderInput(2, (32, 32)).device
