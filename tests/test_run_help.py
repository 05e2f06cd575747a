"""`usagg run --help` names every paradigm the registry plans (the audit found 'TS, CG, AU' of seven).

The help is static text: importing the registry at help time would add pydantic to every `usagg` start
(tests/test_cli_basics.py keeps it light), so a paradigm registered here must be named there too.
"""

from __future__ import annotations

import re

import pytest

from tests.cli_run import run_cli
from usagg.paradigms import paradigm_names


def test_the_paradigm_option_names_every_registered_paradigm(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_cli(["run", "--help"], monkeypatch, capsys, columns=200)
    flat = " ".join(out.replace("│", " ").split())
    start = flat.index("--paradigm TEXT")
    option = flat[start : flat.index("--only", start)]
    assert code == 0 and "usagg registry" in option, out
    assert [name for name in paradigm_names() if not re.search(rf"\b{name}\b", option)] == [], option


def test_the_help_names_every_exit_code_and_when_a_same_name_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Audit docs 8: the help said only "Exits 1 when a job failed" (README: 1 for data problems too, 3 for jobs left
    unfinished) and refused "another file of that name", though a copy planning the same jobs runs."""
    from usagg.cli.runs import UNFINISHED_EXIT

    code, out = run_cli(["run", "--help"], monkeypatch, capsys, columns=200)
    flat = " ".join(out.replace("│", " ").split())
    assert code == 0 and "Exits 1 when a job failed or the data has problems, 2 on a user error" in flat, flat
    assert f"{UNFINISHED_EXIT} when selected jobs were left neither done nor failed" in flat
    assert "another file of that name that plans other jobs is refused unless --force" in flat
