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
