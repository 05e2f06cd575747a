"""What a run warns of, each in one paragraph, None where there is nothing to say: before its jobs (Slurm failures
collected, jobs run elsewhere, a plan that hides done jobs, checkpoints that cannot resume, done jobs of other code
or of unrecorded data, random weights, jobs under `selection: best` without a selection split), as a staged paradigm
is planned (an affinity at float resolution), and at its end (twins still waiting, tasks that got no optimiser step,
what the done jobs' model selection warned of). Pure reads of a `StudyRun` and its store: `drive` tells them to its
observer, and `usagg run --dry-run` prints those it can know without running."""

from __future__ import annotations

from typing import TYPE_CHECKING

from usagg.errors import UsaggError
from usagg.wording import counted, counted_named, listed

if TYPE_CHECKING:
    from usagg.run.studyrun import StudyRun
    from usagg.spec.models import Study
    from usagg.store import RunStore


def replaced_text(run: StudyRun) -> str | None:
    """The warning a plan that hides done jobs of the stored one gets (a one-off `--set` on a finished study),
    or None: nothing is deleted, but a user who only wanted to try one setting should know before the run."""
    if not run.replaced_done:
        return None
    n = len(run.replaced_done)
    return (
        f"this plan of study {run.study.name!r} replaces the one stored in {run.store.root}: "
        f"{counted(n, 'done job')} it no longer lists ({listed(run.replaced_done, 3)}) stay on disk but out of "
        "status, compare and results.csv until the spec runs as it was (nothing is deleted); to keep both "
        f"studies, give this variant its own name ({run.wording.rename})."
    )


def affinity_warning(run: StudyRun) -> str | None:
    """Once a staged paradigm (AG) was planned: a warning when the affinity it grouped by is at the losses' float
    resolution (`Affinity.at_resolution`: its groups are arbitrary ties), None otherwise."""
    try:
        aff = run.store.study_affinity()
    except UsaggError:
        return None  # a damaged affinity file: the planner has said so already
    if aff is None or not aff.at_resolution:
        return None
    return f"AG was planned from an affinity at the losses' float resolution: {aff.resolution_text()}."


def restart_text(run: StudyRun) -> str | None:
    """The warning for jobs to do whose last.pt an older usagg wrote in a layout this one cannot resume
    (`RunStore.unresumable_layout`), or that is damaged (`RunStore.damaged_checkpoint`), or None: they start
    over from epoch 1, which only their log said, after `usagg status` had said they would resume (an upgrade
    audit). A last.pt that reads but is not this model's (other frozen weights) is found by the job itself: its
    start says so (usagg/engine/checkpointing.py `Checkpointing.restart`)."""
    from usagg.store.checkpoints import CHECKPOINT_FORMAT, NOT_RESUMED

    layouts = {jid: layout for jid in run.todo if (layout := run.store.unresumable_layout(jid)) is not None}
    damaged = [jid for jid in run.todo if run.store.damaged_checkpoint(jid)]
    said = []
    if layouts:
        n = len(layouts)
        which = ", ".join(str(v) for v in sorted(set(layouts.values())))
        said.append(
            f"{counted_named(list(layouts), 'job')} {'starts' if n == 1 else 'start'} over from epoch 1: "
            f"{'its' if n == 1 else 'their'} last.pt was written by an older usagg (layout {which}; this usagg "
            f"resumes layout {CHECKPOINT_FORMAT}), so the epochs {'it holds' if n == 1 else 'they hold'} are "
            f"trained again. Each is kept as last.pt.{NOT_RESUMED} beside the new one (delete it to free the "
            "space)."
        )
    if damaged:
        n = len(damaged)
        said.append(
            f"{counted_named(damaged, 'job')} {'starts' if n == 1 else 'start'} over from epoch 1: "
            f"{'its' if n == 1 else 'their'} last.pt is damaged (not a checkpoint usagg can read, or cut short). "
            "Each is kept as last.pt.damaged (delete it to free the space)."
        )
    return " ".join(said) or None


def elsewhere_text(run: StudyRun) -> str | None:
    """The warning for the selected jobs another process runs (`StudyRun.elsewhere`), or None."""
    if not run.elsewhere:
        return None
    n, (first, holder) = len(run.elsewhere), next(iter(run.elsewhere.items()))
    more = f" and {counted(n - 1, 'other')}" if n > 1 else ""
    return (
        f"{first}{more} {'is' if n == 1 else 'are'} being run by another process ({holder}): left to it, not run "
        f"here; `usagg status` shows {'its' if n == 1 else 'their'} progress"
    )


def unfilled_text(run: StudyRun) -> str | None:
    """The warning for twins left to do at the end of a run: their source is not done, so the next run fills
    them from it, or trains them where it failed."""
    left = {jid: src for jid, src in run.twins.items() if run.store.job_state(jid) != "done"}
    if not left:
        return None
    waiting = "; ".join(f"{jid} (the training of {src}, {run.store.job_state(src)})" for jid, src in left.items())
    return (
        f"{counted(len(left), 'job')} of the same settings as another that is not done wait for it: {waiting}; "
        "the next `usagg run` fills them from it once it is done, or trains them where it failed"
    )


def collected_text(run: StudyRun) -> str | None:
    """The warning for the failures `StudyRun.collect_slurm_failures` recorded, or None."""
    if not run.collected:
        return None
    n = len(run.collected)
    failures = "; ".join(f"{jid}: {error}" for jid, error in run.collected.items())
    then = "run again now (--retry-failed)" if run.retry_failed else "not submitted again"  # the hint says how
    return f"{counted(n, 'job')} ended failed on Slurm since the last `usagg run`: {failures}. Recorded failed; {then}"


def unrecorded_data_text(run: StudyRun) -> str | None:
    """The warning for done jobs of this plan that recorded not which data they read (`StudyRun.unrecorded_data`,
    an older usagg's) where this run trains others beside them, or None: `StudyRun.check_done_data` cannot tell
    whether the new jobs read the same data, and an upgrade may have changed the synthetic benchmark."""
    from usagg.data.splits import synthetic_generator

    if not run.unrecorded_data or not run.todo:
        return None
    n = len(run.unrecorded_data)
    names = ", ".join(run.unrecorded_data[:3]) + (f" and {n - 3} more" if n > 3 else "")
    generator = synthetic_generator(run.study.data)
    now = "" if generator is None else f" (the synthetic benchmark is generator {generator} now)"
    return (
        f"{counted(n, 'done job')} of study {run.study.name!r} ({names}) {'was' if n == 1 else 'were'} written "
        f"by an older usagg that recorded not which data {'it' if n == 1 else 'they'} read: the "
        f"{counted(len(run.todo), 'job')} this run trains may read other data{now} and compare would mix "
        "their results unnoticed. To compare like with like, run the study under a new name "
        f"({run.wording.rename})."
    )


def changed_code_text(run: StudyRun) -> str | None:
    """The warning for done jobs of this plan that other code made than this run's (their metrics.json
    `training.versions` and `training.plugins`, usagg/jobmetrics.py `code_changes`), or None: job ids hash
    settings, never code, so after an upgrade of usagg or an edited plug-in they stay done, kept and compared with
    new results. Jobs that recorded none (written before usagg recorded it) are not compared. A pure read of the
    store."""
    from usagg.jobmetrics import code_changes, running_code

    now = running_code()
    changes: dict[str, list[str]] = {}  # what differs -> the done jobs it differs for
    for job in run.all_jobs:
        metrics = run.store.metrics(job.id) if run.store.job_state(job.id) == "done" else None
        for change in code_changes((metrics or {}).get("training") or {}, now):
            changes.setdefault(change, []).append(job.id)
    if not changes:
        return None
    n = len({jid for ids in changes.values() for jid in ids})
    differ = "; ".join(f"{change} for {counted(len(ids), 'job')}" for change, ids in changes.items())
    return (
        f"{counted(n, 'done job')} of study {run.study.name!r} {'was' if n == 1 else 'were'} made by other code "
        f"than this run's: {differ}. Job ids hash a job's settings, never its code, so their results are kept as "
        "they are and compared with the new ones; to train the study with this code, run it under a new name "
        f"({run.wording.rename})."
    )


def random_init_warning(study: Study) -> str:
    """Why results of a study without `model.weights` are low."""
    return (
        f"model.weights is empty: the {study.model.backbone} encoder is RANDOMLY initialised, so results are far "
        "below a pretrained DINOv3 (give a local official checkpoint)"
    )


def no_selection_text(run: StudyRun) -> str | None:
    """The one line for the jobs to do under `training.selection: best` without a selection split
    (`data.selection_fraction` 0, which turns selection off; a sweep may vary either), or None: each tests its
    last epoch, as under `selection: last`, which its metrics.json `selection.mode` records. Said once here, never
    per job, and no split-size warning: there is no split to be too small."""
    todo = set(run.todo)
    off = [j.id for j in run.jobs if j.id in todo and j.training.selection == "best" and j.data.selection_fraction == 0]
    if not off:
        return None
    which = f"the {counted(len(off), 'job')}" if len(off) == len(todo) else f"{len(off)} of the {len(todo)} jobs"
    return (
        f"data.selection_fraction is 0 for {which} to run: without a selection split, training.selection best "
        "ranks no epoch and each tests its last one (a selection_fraction above 0 ranks them)."
    )


def untrained_tasks(store: RunStore, states: dict[str, str]) -> list[str]:
    """'task (job)' for every task a done job trained for 0 optimiser steps (its metrics.json `steps`)."""
    out = []
    for jid, state in states.items():
        if state != "done":
            continue
        metrics = store.metrics(jid) or {}
        for task, entry in (metrics.get("tasks") or {}).items():
            if isinstance(entry, dict) and entry.get("steps") == 0:
                out.append(f"{task} ({jid})")
    return out


def selection_warnings(store: RunStore, states: dict[str, str]) -> dict[tuple[str, str], list[str]]:
    """(task, cause) -> the done jobs of `states` whose model selection warned of it (metrics.json
    `selection.warnings`, "task ID: cause" as usagg/engine/selection.py `split_warnings` words it; one naming no
    task under task '-'), grouped as compare and the report group them (usagg/analysis/selection_warnings.py)."""
    found: dict[tuple[str, str], list[str]] = {}
    for jid, state in states.items():
        if state != "done":
            continue
        selection = (store.metrics(jid) or {}).get("selection") or {}
        if selection.get("mode") == "last":  # it ranked no epoch: what an older usagg warned of its 0 images
            continue
        for warning in selection.get("warnings") or []:
            head, sep, cause = str(warning).partition(": ")
            task = head.removeprefix("task ")
            key = (task, cause) if sep and task != head and " " not in task else ("-", str(warning))
            found.setdefault(key, []).append(jid)
    return found


def selection_text(run: StudyRun, states: dict[str, str]) -> str | None:
    """The warning block, at the end of a run, for the done jobs of `states` whose model selection warned (a
    selection split too small to rank epochs, a class missing from it), a line per task and cause, or None: the
    tested epoch may then be an early, degenerate one (a baseline kept at an all-foreground mask), which only each
    job's log.txt said while compare and the report list it."""
    found = selection_warnings(run.store, states)
    if not found:
        return None
    paradigm = {j.id: j.paradigm for j in run.jobs}
    lines = [
        f"{task}: {cause} ({counted(len(jobs), 'job')}: {', '.join(dict.fromkeys(paradigm[j] for j in jobs))})"
        for (task, cause), jobs in found.items()
    ]
    n = len({jid for jobs in found.values() for jid in jobs})
    tasks = list(dict.fromkeys(task for task, _ in found))
    return (
        f"the model selection of {counted(n, 'done job')} warned, for {counted(len(tasks), 'task')} "
        f"({listed(tasks)}): the epoch each tested may be an early, degenerate one (compare and the report list "
        "them under the warnings of the jobs' model selection; each job's history.csv shows its selection metric "
        "per epoch):\n  " + listed(lines, sep="\n  ")
    )


def untrained_text(store: RunStore, states: dict[str, str]) -> str | None:
    """The warning for tasks a done job of `states` trained for no optimiser step (`untrained_tasks`), or None."""
    untrained = untrained_tasks(store, states)
    if not untrained:
        return None
    return (
        f"{counted(len(untrained), 'task')} got no optimiser step in a job ({'; '.join(untrained[:6])}"
        f"{'; ...' if len(untrained) > 6 else ''}): their metrics are untrained heads', and compare leaves "
        "them out of the task's Δ. Raise training.steps_per_epoch, or use training.sampling: matched."
    )
