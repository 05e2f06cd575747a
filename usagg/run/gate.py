"""Whether a run's plan may be written into its study's run store, and how its spec file is bound there: the
gate `StudyRun.prepare` passes, and `StudyRun.init_store` again under the store's plan lock. A study name is bound
to the spec files run into it (`RunStore.spec_files`); another file whose plan would hide jobs of the stored
one, a one-off override that would hide done jobs, a plan that would drop or replace jobs another live process
runs, and a spec file that already ran into a store from another folder are refused here, each in one paragraph
that says how to go on. Pure reads of the store: the run writes what the gate allows."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from usagg.errors import UsaggError
from usagg.run.options import Wording
from usagg.run.stores import store_ran_elsewhere
from usagg.wording import counted, listed

if TYPE_CHECKING:
    from usagg.plan import Job
    from usagg.spec.models import Study
    from usagg.store import RunStore


#: A result cell of results.csv (usagg/analysis/results.py `_check_consistent`): paradigm, fraction, seed, task and
#: sweep point (JSON); one result each.
Cell = tuple[str, float, int, str, str]


def _cells(job: Job) -> set[Cell]:
    """The result cells a job fills: one per task and sweep point it belongs to."""
    points = [json.dumps(p, sort_keys=True, default=str) for p in job.sweep] or ["{}"]
    return {(job.paradigm, job.fraction, job.seed, task, point) for task in job.task_ids for point in points}


def _replaced(stored: list[Job], added: list[Job]) -> dict[str, str]:
    """Stored job id -> the added job that fills one of its result cells under another id (its settings changed)."""
    owner = {cell: job.id for job in stored for cell in _cells(job)}
    out: dict[str, str] = {}
    for job in added:
        for cell in sorted(_cells(job)):
            if cell in owner:
                out.setdefault(owner[cell], job.id)
    return out


def _live_run_text(holder: dict[str, Any]) -> str:
    """Another live `usagg run` in words (`RunStore.live_runs`): host, pid, since, its spec file and plan size."""
    from usagg.joblock import describe_holder

    spec = f", spec {holder['spec']}" if holder.get("spec") else ""
    jobs = f", plan of {counted(holder['jobs'], 'job')}" if isinstance(holder.get("jobs"), int) else ""
    return f"another usagg run ({describe_holder(holder)}{spec}{jobs})"


@dataclass(frozen=True)
class Binding:
    """What `PlanGate.bind` decided: how `StudyRun.init_store` records the spec file (`how`: "add" it to the files
    bound to the store, "replace" them, or "none" for a file of the same plan as the bound one), the stored jobs of
    other spec files the plan keeps (`kept`), and the done jobs of the stored plan this one no longer lists
    (`replaced_done`)."""

    how: Literal["add", "replace", "none"] = "add"
    kept: list[Job] = field(default_factory=list)
    replaced_done: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PlanGate:
    """The gate between one run of `study` from `spec_file` (None for a study given as an object) and its store;
    refusals name the options as `wording` does."""

    study: Study
    store: RunStore
    spec_file: Path | None
    wording: Wording

    def check_no_store_elsewhere(self) -> None:
        """UsaggError where this run would start a new store although the spec file already ran into one
        (`store_ran_elsewhere`): a run started from another folder (a Slurm script, a tmux pane in $HOME) would train
        the whole study again into an empty store (a real-data audit)."""
        if self.spec_file is None:
            return
        ran = store_ran_elsewhere(self.study, self.spec_file)
        if ran is not None:
            raise UsaggError(f"{ran.text(self.study, self.spec_file, self.wording)} Nothing was written.")

    def bind(self, jobs: list[Job], written_ids: frozenset[str] | None, force: bool) -> Binding:
        """How this run's plan (`jobs`) binds its spec file to the store, with the stored plan's jobs that other spec
        files of this study name planned: kept in plan.json (never hidden) once the store is bound to several spec
        files.

        A study name is bound to the spec file that first ran it (`RunStore.spec_files`): another
        file whose plan lacks some of its jobs would replace that study's plan and hide them, so it is a
        UsaggError unless `force`, which binds it too; one whose plan holds every stored job and more (added
        seeds, paradigms) hides none and is bound without `force`. The same file edited replaces its own plan as before.
        Another file of the very same plan (a copy) runs without being bound: bound, its unchanged plan would be
        kept beside the first file's edited one, two results per task for compare. A file run where every bound
        file is gone (moved, renamed) takes the study over, and one run into a store from before specs.json binds it;
        both name the done jobs their plan hides (`replaced_done`), and so does a plan whose overrides hide done jobs
        of `written_ids`, the plan of the spec file as it is written, which is refused unless `force`.
        """
        if self.spec_file is None or not self.store.exists():
            return Binding()
        files = self.store.spec_files()
        ours = {j.id for j in jobs}
        if not files or (str(self.spec_file) not in files and not any(Path(f).is_file() for f in files)):
            # a store from before specs were recorded, whose spec may be this one edited, or one every bound file of
            # which is gone: this run binds it, and what it no longer plans is hidden as an edit's is (`replaced_done`)
            replaced: list[str] = []
            with contextlib.suppress(UsaggError):  # a damaged plan.json: `init_store` repairs it, nothing to count
                stored_ids = [j.id for j in self.store.jobs() if j.id not in ours]
                replaced = [jid for jid in stored_ids if self.store.job_state(jid) == "done"]
            return Binding("replace" if files else "add", replaced_done=replaced)
        try:
            stored = self.store.jobs()
        except UsaggError as err:  # plan.json damaged: the spec it is bound to (or --force) writes it anew
            if str(self.spec_file) in files or force:
                return Binding()
            raise UsaggError(
                f"{err}: the spec file this store was run from, {', '.join(files)}, or this one with "
                f"{self.wording.force} (its plan then replaces the damaged one)"
            ) from None
        others = [j for j in stored if j.id not in ours]
        if str(self.spec_file) not in files and not others and not force:
            # a copy of the same plan runs unbound; one that only adds jobs (seeds, paradigms) hides none: bound
            return Binding("none" if {j.id for j in stored} == ours else "add")
        if str(self.spec_file) not in files and not force:
            done = sum(self.store.job_state(j.id) == "done" for j in others)
            raise UsaggError(
                f"the run store {self.store.root} holds study {self.study.name!r} run from {files[0]}, and "
                f"{self.spec_file} plans other jobs under the same name: running it would hide "
                f"{counted(len(others), 'job')} of that study's plan ({done} done). Give this study its own "
                f"`name:` (or {self.wording.rename}), or run with {self.wording.force} to add its jobs to the same "
                "store (nothing is deleted, status lists the jobs of both; compare needs one result per task, "
                "paradigm, fraction and seed, so add seeds or paradigms "
                "this way, not a changed setting)."
            )
        if len(set(files) | {str(self.spec_file)}) > 1:
            return Binding(kept=others)
        replaced = [j.id for j in others if self.store.job_state(j.id) == "done"]
        hidden = [jid for jid in replaced if jid in (written_ids or ())]
        if hidden and not force:
            raise UsaggError(self._overrides_hide_text(hidden, files[0]))
        return Binding(replaced_done=replaced)

    def _overrides_hide_text(self, hidden: list[str], bound: str) -> str:
        """The refusal of a one-off override (`usagg run SPEC --set training.epochs=2` after the study ran) whose plan
        would hide done jobs the spec file itself plans: a copy of the spec with the same change is refused
        (`bind`), and the same change on the command line replaced the plan with one warning."""
        return (
            f"the run store {self.store.root} holds study {self.study.name!r} run from {bound}, and this run's "
            f"{self.wording.sets} plan other jobs under the same name: running it would hide "
            f"{counted(len(hidden), 'done job')} of that study's plan ({listed(hidden, 3)}) from status, compare "
            "and results.csv. "
            f"Give this variant its own name ({self.wording.rename}), or run with {self.wording.force} to replace the "
            "stored plan with this one (nothing is deleted: the hidden jobs come back when the spec runs as it is "
            "written). Nothing was written."
        )

    def view(self) -> tuple[object, ...]:
        """What `bind` reads of the store: the bound spec files and plan.json's version."""
        try:
            plan = self.store.plan_json.stat().st_mtime_ns
        except OSError:
            plan = None
        return (tuple(self.store.spec_files()), plan)

    def check_live_plan_kept(self, ours: list[Job]) -> str | None:
        """UsaggError, nothing written, where this plan would drop jobs of the stored plan, or replace them (a job of
        its own for the same result cell, `_cells`, under another id: a `--force` of a spec file that changed a
        setting), while another process runs the store (a live `usagg run`, `RunStore.live_runs`, or a live lock of
        such a job, a Slurm element's): that run would close by pointing at a results.csv that no longer holds what it
        trained, or that holds two results for a cell, which compare refuses. A plan that keeps every stored job and
        replaces none (the same spec, a later stage, a `--force` adding seeds or paradigms) runs beside it, the job
        locks keeping the two apart; one that adds jobs beside another spec file's live run says so: the warning
        returned (`StudyRun.beside`), else None. `ours`: the plan to write, other spec files' kept jobs included."""
        if not self.store.exists():
            return None
        try:
            stored = self.store.jobs()
        except UsaggError:  # a damaged plan.json: nothing to drop that can be read
            return None
        our_ids, stored_ids = {j.id for j in ours}, {j.id for j in stored}
        dropped = [j.id for j in stored if j.id not in our_ids]
        added = [j for j in ours if j.id not in stored_ids]
        replaced = _replaced(stored, added)
        live = self.store.live_runs() if dropped or added else []
        held = [jid for jid in [*dropped, *replaced] if self.store.lock_alive(jid)]
        if dropped and (live or held):
            raise UsaggError(self._live_plan_text(dropped, live, held))
        if replaced and (live or held):
            raise UsaggError(self._live_replaced_text(replaced, live, held))
        beside = [h for h in live if h.get("spec") != (None if self.spec_file is None else str(self.spec_file))]
        if not (added and beside):
            return None
        return (
            f"{self.store.root} is being run by {_live_run_text(beside[0])}: this run adds "
            f"{counted(len(added), 'job')} to the plan of study {self.study.name!r} "
            f"({listed([j.id for j in added])}) and replaces or drops none of that run's jobs, so both go on, the "
            "job locks keeping them apart."
        )

    def _holder_text(self, live: list[dict[str, Any]], held: list[str]) -> str:
        """Who runs the store: the first live `usagg run` (host, pid, since, spec, plan size), else the process that
        holds the first of `held`'s locks."""
        from usagg.joblock import describe_holder

        if live:
            return _live_run_text(live[0])
        return f"another process ({describe_holder(self.store.job_lock(held[0]).holder() or {})})"

    def _live_plan_text(self, dropped: list[str], live: list[dict[str, Any]], held: list[str]) -> str:
        return (
            f"{self.store.root} is being run by {self._holder_text(live, held)} with another plan of study "
            f"{self.study.name!r}: this run would replace it, dropping {counted(len(dropped), 'job')} that run trains "
            f"or counts ({listed(dropped, 3)}), so its results.csv would no longer hold what it trained. Nothing "
            "was written. "
            f"{self._wait_text()}"
        )

    def _live_replaced_text(self, replaced: dict[str, str], live: list[dict[str, Any]], held: list[str]) -> str:
        pairs = [f"{old} by {new}" for old, new in replaced.items()]
        return (
            f"{self.store.root} is being run by {self._holder_text(live, held)}: this run's plan of study "
            f"{self.study.name!r} would replace {counted(len(replaced), 'job')} of the plan it trains with jobs of "
            f"other settings for the same task, paradigm, fraction and seed ({listed(pairs, 2)}), so the results.csv "
            f"that run closes with would hold two results for each and compare would refuse it. Nothing was written. "
            f"{self._wait_text()}"
        )

    def _wait_text(self) -> str:
        return (
            "Wait for it to finish (or stop it) and run again, or give this variant its own name "
            f"({self.wording.rename}) or output_root ({self.wording.place})."
        )

    def added_elsewhere(self, ours: list[Job]) -> list[Job]:
        """Jobs of the stored plan that `ours` (this run's plan and its kept jobs) lacks: another run added them since
        this one wrote the plan (a `--force` beside it, `check_live_plan_kept`). Before, the stage that followed
        wrote the plan without them, and they vanished from status and compare while that run trained them."""
        known = {j.id for j in ours}
        with contextlib.suppress(UsaggError):  # a damaged plan.json: `init_store`'s repair says so, nothing to keep
            return [j for j in self.store.jobs() if j.id not in known]
        return []
