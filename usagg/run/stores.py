"""Which run store a study runs into: <output_root>/<name> (`store_for`), and the store a spec file with a relative
output_root ran into from another folder (`store_ran_elsewhere`), which `usagg run` refuses to start anew beside."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from usagg.errors import UsaggError
from usagg.run.options import CLI_WORDING, Wording
from usagg.wording import counted

if TYPE_CHECKING:
    from usagg.spec.models import Study
    from usagg.store import RunStore


@dataclass(frozen=True)
class RanElsewhere:
    """Where a spec file with a relative output_root ran (`store_ran_elsewhere`): the folder it ran from, its store."""

    folder: Path
    store: RunStore

    def text(self, study: Study, spec_file: Path | str, wording: Wording = CLI_WORDING) -> str:
        """Where the spec ran and where a run from the current folder would go: the reason `usagg run` refuses, and
        the note `usagg plan` and `usagg validate` give from that folder."""
        states: list[str] = []
        with contextlib.suppress(UsaggError):  # a damaged plan: the store is still there to name
            states = [self.store.job_state(j.id) for j in self.store.jobs()]
        return (
            f"{Path(spec_file).resolve()} ran into the run store {self.store.root} ({counted(len(states), 'job')}, "
            f"{states.count('done')} done), but from {Path.cwd()} this run would start a new one at "
            f"{store_for(study).root.resolve()}: output_root {str(study.output_root)!r} is relative to the folder "
            f"usagg runs from. Run from {self.folder}, or choose the place with an absolute output_root "
            f"({wording.place})."
        )


def store_ran_elsewhere(study: Study, spec_file: Path | str) -> RanElsewhere | None:
    """The run store the spec file ran into where its relative output_root, read from the current folder, names
    a place that holds none (`usagg run` from another folder), else None. Looked for where the relative output_root
    puts it from the spec's folder or one of its three parents, and taken only where its specs.json binds this very
    file. An absolute output_root chooses the place and is never second-guessed."""
    from usagg.store import RunStore

    root, here = Path(study.output_root), store_for(study)
    spec = Path(spec_file).resolve()
    if root.is_absolute() or here.exists():
        return None
    for folder in [spec.parent, *spec.parent.parents][:4]:
        other = RunStore(folder / root / study.name)
        if other.root.resolve() != here.root.resolve() and other.exists() and str(spec) in other.spec_files():
            return RanElsewhere(folder, other)
    return None


def store_for(study: Study) -> RunStore:
    """The study's run store, <output_root>/<name>."""
    from usagg.store import RunStore

    return RunStore(Path(study.output_root) / study.name)
