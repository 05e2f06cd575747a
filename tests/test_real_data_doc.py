"""docs/real-data.md gives commands that exist: every option is in its command's help, every run selects jobs.

The page is read by someone with a GPU and a licence, far from this repository's tests: a renamed
option or spec field would leave them with a command that fails. Each `usagg ...` line of its bash
blocks is checked here; the `usagg run` lines are planned (`usagg plan` with the same --set and
--only on studies/fmc_uia.yaml), so their settings and selections are real too.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
from pathlib import Path

import pytest

from tests.cli_run import run_cli

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "real-data.md"
SUBCOMMANDS = ("data", "weights", "cache")  # command groups: the command is their first two words


def _without_redirections(words: list[str]) -> list[str]:
    """`> run.log 2>&1` is the shell's, not the command's."""
    kept: list[str] = []
    target = False
    for word in words:
        if target or re.match(r"\d?>", word):
            target = word in (">", ">>", "2>")  # the next word is the file
            continue
        kept.append(word)
    return kept


def doc_commands() -> list[list[str]]:
    """The `usagg` commands of the page's bash blocks as argument lists (comments, redirections, `&&` split off)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", DOC.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = " ".join(shlex.split(line, comments=True))
            for part in words.split(" && "):
                segment = _without_redirections(part.split())
                if segment and segment[0] == "usagg":
                    commands.append(segment[1:])
    return commands


COMMANDS = doc_commands()


def _name(command: list[str]) -> list[str]:
    return command[:2] if command[0] in SUBCOMMANDS else command[:1]


def test_the_page_has_the_steps() -> None:
    names = [" ".join(_name(c)) for c in COMMANDS]
    for step in ("data check", "init", "validate", "plan", "weights check", "run", "status", "compare", "report"):
        assert step in names, step
    assert any("--executor" in c for c in COMMANDS) and any("--devices" in c for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c)[:60] for c in COMMANDS])
def test_every_option_is_in_the_commands_help(
    command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = run_cli([*_name(command), "--help"], monkeypatch, capsys)
    assert code == 0, text
    for option in (w.split("=")[0] for w in command if w.startswith("--")):
        assert f"{option} " in text or f"{option}\n" in text, (command, option)


RUNS = [c for c in COMMANDS if c[0] == "run"]


@pytest.mark.parametrize("command", RUNS, ids=[" ".join(c)[:60] for c in RUNS])
def test_every_run_line_plans_jobs(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its --set values load into the study and its --only selects: one job for a first run, all 111 otherwise."""
    kept = []
    for option, value in itertools.pairwise(command):
        if option in ("--set", "--only"):
            kept += [option, value]
    monkeypatch.chdir(tmp_path)  # no run store here: every job pending
    code, out = run_cli(["plan", str(REPO / "studies" / "fmc_uia.yaml"), *kept, "--json"], monkeypatch, capsys)
    assert code == 0, out
    jobs = [row for row in json.loads(out) if row["id"] is not None]
    assert len(jobs) == (1 if "--only" in command else 111), command


def test_the_slurm_log_names_are_those_submitit_writes_for_one_job_and_for_an_array() -> None:
    """The page's first Slurm command submits one job, which is no array: its log is `<job id>_0_log.out`, not the
    `<array id>_<index>_0_log.out` of a submission of several jobs. Both, as the sbatch script names them."""
    slurm = pytest.importorskip("submitit.slurm.slurm")
    text = DOC.read_text()
    for map_count, ids in ((None, {"%j": "1007"}), (8, {"%A": "1007", "%a": "0"})):
        script = slurm._make_sbatch_string("CMD", "/F", map_count=map_count)
        pattern = re.search(r"#SBATCH --output=/F/(\S+)", script)
        assert pattern is not None
        name = pattern.group(1)
        for key, value in ids.items():
            name = name.replace(key, value)
        assert f"`{name}`" in text, name
    assert re.search(r"single job.*`1007_0_log\.out`", text, re.S)
