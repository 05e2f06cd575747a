"""`--only` and `--paradigm` selecting nothing: the closest name of the selector's key (of any key for a bare one),
and lists cut short with where to see them all (usagg/run/selection.py `make_selection`), on the demo study's plan."""

from __future__ import annotations

import re
from pathlib import Path

import cli_run
import pytest

from usagg.errors import UsaggError
from usagg.plan import Job, plan
from usagg.run.selection import make_selection
from usagg.spec.load import load_study
from usagg.wording import LISTED, listed

DEMO = Path(__file__).resolve().parents[1] / "studies" / "demo.yaml"


@pytest.fixture(scope="module")
def jobs() -> list[Job]:
    return plan(load_study(DEMO))


def _error(jobs: list[Job], *only: str, paradigms: tuple[str, ...] = ()) -> str:
    with pytest.raises(UsaggError) as err:
        make_selection(jobs, paradigms=paradigms, only=only)
    return str(err.value)


@pytest.mark.parametrize(
    ("selector", "meant"),
    [
        ("task=fetal_haed", "fetal_head"),  # a key=value selector: that key's values
        ("task:thyroid_nodle", "thyroid_nodule"),
        ("group=Fetl", "Fetal"),
        ("paradigm=TSS", "TS"),
        ("id=AU-al", "AU-all"),  # an id's beginning up to a '-'
        ("fetal_haed", "fetal_head"),  # a bare selector: ids, tasks, groups and paradigms
        ("Thyriod", "Thyroid"),
        ("TS-fetal_haed", "TS-fetal_head"),
        ("TS-breast", "TS-breast_lesion"),  # no id begins so up to a '-': the beginning it was short of
    ],
)
def test_a_selector_matching_nothing_says_the_closest_name(jobs: list[Job], selector: str, meant: str) -> None:
    message = _error(jobs, selector)
    assert message.startswith(f"--only {selector} matches no job of this selection (did you mean {meant!r}?). ")


def test_a_value_of_another_key_is_not_offered(jobs: list[Job]) -> None:
    """`group=fetal_head` names a task, not a group: the group list follows, but no task is offered as a group."""
    message = _error(jobs, "group=fetal_head")
    assert "did you mean" not in message and "groups: Breast, Cardiac, Fetal, Thyroid" in message


def test_each_selector_matching_nothing_gets_its_own_clause(jobs: list[Job]) -> None:
    message = _error(jobs, "task=fetal_haed", "TS", "Fetl")
    assert message.startswith(
        "--only task=fetal_haed matches no job of this selection (did you mean 'fetal_head'?); "
        "--only Fetl matches no job of this selection (did you mean 'Fetal'?). "
    )


def test_the_job_list_is_cut_and_says_where_to_see_it(jobs: list[Job]) -> None:
    message = _error(jobs, "task=fetal_haed")
    assert len(jobs) > LISTED + 1
    shown = [j.id for j in jobs if j.id in message]
    assert shown == [j.id for j in jobs][:LISTED]
    assert f"... and {len(jobs) - LISTED} more (`usagg plan SPEC` lists every job)" in message
    paradigms = ", ".join(sorted({j.paradigm for j in jobs}))
    assert "tasks: breast_lesion, " in message and f"paradigms: {paradigms}; jobs: " in message


def test_listed_never_leaves_out_just_one() -> None:
    names = [f"n{i}" for i in range(LISTED + 3)]
    assert listed(names[: LISTED + 1]) == ", ".join(names[: LISTED + 1])
    assert listed(names) == f"{', '.join(names[:LISTED])}, ... and 3 more"
    assert listed([]) == "none"
    assert listed(names, 2, sep="\n  ") == f"{names[0]}\n  {names[1]}\n  ... and {len(names) - 2} more"


def test_an_unplanned_paradigm_says_the_closest(jobs: list[Job]) -> None:
    assert _error(jobs, paradigms=("TSS",)) == "--paradigm TSS (did you mean 'TS'?): this study plans " + ", ".join(
        sorted({j.paradigm for j in jobs})
    )


def test_a_registered_paradigm_the_study_does_not_plan_says_to_add_it_and_an_unknown_one_lists_them() -> None:
    """A new user's audit: `--paradigm XX`, `cg` or `AG` on a TS + AU study all read "this study plans AU, TS", with
    no did-you-mean and no word that a registered paradigm is first added to `paradigms:`."""
    from usagg.paradigms import paradigm_names

    ts_au = [j for j in plan(load_study(DEMO)) if j.paradigm in ("TS", "AU")]
    assert _error(ts_au, paradigms=("AG",)) == (
        "--paradigm AG (a registered paradigm this study does not plan): this study plans AU, TS. To run AG, add it to "
        "the spec's `paradigms:` (paradigms: [AU, TS, AG])."
    )
    assert _error(ts_au, paradigms=("cg",)).startswith("--paradigm cg (did you mean 'CG'? a registered paradigm this")
    assert _error(ts_au, paradigms=("XX",)) == (
        f"--paradigm XX: this study plans AU, TS; the registered paradigms are {', '.join(paradigm_names())} "
        "(`usagg registry`)"
    )
    assert _error(ts_au, paradigms=("ts",)) == "--paradigm ts (did you mean 'TS'?): this study plans AU, TS"


@pytest.mark.parametrize("command", ["plan", "run"])
def test_the_cli_says_it_in_one_short_paragraph(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`usagg plan|run studies/demo.yaml --only task=fetal_haed`: exit 2, the suggestion, 8 of the 32 job ids, no
    traceback; `run` refuses before it generates data or writes a run store."""
    monkeypatch.chdir(tmp_path)
    code, out = cli_run.run_cli([command, str(DEMO), "--only", "task=fetal_haed"], monkeypatch, capsys, columns=None)
    assert code == 2, out
    assert "did you mean 'fetal_head'?" in out and "Traceback" not in out
    assert len(re.findall(r"\b[A-Z]+-[\w-]+-f1-s0-[0-9a-f]{8}\b", out)) == LISTED
    assert "`usagg plan SPEC` lists every job" in out
    assert list(tmp_path.iterdir()) == []
