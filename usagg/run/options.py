"""A run's options: as spec overrides (`run_overrides`: `--executor`, `--devices`, `--threads`, never a job id's
part), the study as its spec file holds them (`as_written`), and how messages name them (`Wording`: `usagg run`'s
flags, `usagg.api.run_study`'s arguments)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from usagg.errors import UsaggError

if TYPE_CHECKING:
    from usagg.spec.models import Study


@dataclass(frozen=True)
class Wording:
    """How a run's messages name what the caller gave: `usagg run`'s flags (`CLI_WORDING`), or `usagg.api.run_study`'s
    arguments (`API_WORDING`): a notebook's user never typed `--only`, so a message naming it would send them looking
    for a flag. Each option is the text before its value (`--only ` / `only=`); `quoted` values are Python literals
    (`only='TS-x'`), the others as typed (`--only TS-x`)."""

    paradigm: str = "--paradigm "
    only: str = "--only "
    devices: str = "--devices "
    devices_take: str = "cpu, auto, cuda or GPU indices such as 0 or 0,1"
    rename: str = "--set name=NEW"
    #: How the caller changed the spec file's settings for this run.
    sets: str = "--set or --sweep overrides"
    place: str = "--set output_root=/an/absolute/folder"
    force: str = "--force"
    plan: str = "`usagg plan SPEC`"
    quoted: bool = False

    def value(self, value: object) -> str:
        """A value as the caller gave it: `'TS'` in Python, `TS` on a command line."""
        return repr(value) if self.quoted else str(value)

    def one(self, option: str, value: object) -> str:
        """An option with one value: `--only TS-x`, `only='TS-x'`."""
        return f"{option}{self.value(value)}"

    def every(self, option: str, values: Sequence[str]) -> str:
        """An option with all its values: `--only a --only b` (a flag per value), `only=['a', 'b']` (one argument)."""
        if self.quoted:
            return f"{option}{list(values)!r}"
        return " ".join(f"{option}{v}" for v in values)


#: `usagg run`'s flags.
CLI_WORDING = Wording()
#: `usagg.api.run_study`'s arguments.
API_WORDING = Wording(
    paradigm="paradigms=",
    only="only=",
    devices="device=",
    devices_take="'cpu', 'auto', 'cuda', a GPU index such as 0 or a list of them such as [0, 1]",
    rename='overrides=["name=NEW"]',
    sets="overrides",
    place='overrides=["output_root=/an/absolute/folder"]',
    force="force=True",
    plan="`usagg.api.plan(spec)`",
    quoted=True,
)


def as_written(spec_file: Path | str, overrides: Sequence[str]) -> Study | None:
    """The study as its spec file holds it, for a run that changes it with `overrides` (`--set`, `--sweep`,
    `overrides=`): `StudyRun.prepare` refuses a plan whose overrides hide done jobs the file itself plans. None
    without overrides, or where the file alone does not load (an override that makes it valid hides nothing it ran)."""
    if not overrides:
        return None
    from usagg.spec.load import load_study

    try:
        return load_study(spec_file)
    except UsaggError:
        return None


def executor_override(name: str, what: str = "--executor") -> str:
    """A spec override choosing a registered executor (UsaggError naming `what` otherwise)."""
    from usagg.execute.registry import executor_names

    names = executor_names()
    if name not in names:
        raise UsaggError(f"{what} {name!r}: choose one of {', '.join(names)}")
    return f"execution.executor={name}"


def devices_override(devices: str | int | Sequence[int], wording: Wording = CLI_WORDING) -> str:
    """A spec override of execution.devices from cpu, auto, cuda, GPU indices (0,1) or a list of indices; a
    UsaggError naming the option as `wording` does otherwise."""
    if isinstance(devices, int):
        ids = [devices]
    elif isinstance(devices, str):
        d = devices.strip()
        if d in ("cpu", "auto", "cuda"):
            return f"execution.devices={d}"
        try:
            ids = [int(x) for x in d.split(",") if x.strip()]
        except ValueError:
            raise UsaggError(f"{wording.devices}{devices!r}: give {wording.devices_take}") from None
    else:
        ids = [int(x) for x in devices]
    return f"execution.devices=[{', '.join(map(str, ids))}]"


def run_overrides(
    sets: Sequence[str] = (),
    *,
    executor: str | None = None,
    devices: str | int | Sequence[int] | None = None,
    threads: int | None = None,
    wording: Wording = CLI_WORDING,
) -> list[str]:
    """`--set` overrides plus the executor, devices and threads as spec overrides (they never change a job id);
    errors name the options as `wording` does."""
    out = list(sets)
    if executor is not None:
        out.append(executor_override(executor))
    if devices is not None:
        out.append(devices_override(devices, wording))
    if threads is not None:
        out.append(f"execution.threads={threads}")
    return out
