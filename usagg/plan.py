"""The plan: Study -> [Job], the paradigms' units (usagg/paradigms.py) crossed with data fractions and seeds.

A Job is plain data (written to plan.json and job.json, read back by the
engine, nnU-Net style: the file is the contract). Its id is a readable prefix
plus a hash of exactly the settings that change its result, so the same spec
gives the same ids on any machine and a change re-runs only the jobs it touches.

Planning comes in stages: a staged paradigm (AG, usagg/paradigms.py) names the units
it needs; `plan_stages` plans them with the rest and the staged paradigm's own jobs
once evidence of the needed jobs is there (`evidence_for`, given by the run service
from the run store), else lists it as `Waiting` for those jobs.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from usagg.affinity import LOOKAHEAD_STEP
from usagg.errors import SpecError, UsaggError, first_line
from usagg.filehash import file_sha256
from usagg.model.zoo import hashed_definition
from usagg.paradigms import BUILTIN_PARADIGMS, PARADIGMS, Evidence, ParadigmEntry, Unit
from usagg.registry import callable_name
from usagg.spec.jobhash import job_hash_rule
from usagg.spec.load import point_studies
from usagg.spec.models import AffinitySpec, DataSpec, ModelSpec, Study, TaskSpec, TrainingSpec
from usagg.sweep import Point, point_label

HASH_LEN = 8

log = logging.getLogger(__name__)
#: Planner warnings already given in this process: planning runs once per stage and per command's reading of it.
_warned: set[str] = set()


class Job(BaseModel):
    """One model to train and evaluate: everything the engine needs, nothing about paradigms."""

    model_config = ConfigDict(extra="forbid")

    id: str
    study: str
    paradigm: str
    name: str
    group: str | None
    tasks: list[TaskSpec]
    moe: bool
    fraction: float
    seed: int
    model: ModelSpec
    training: TrainingSpec
    data: DataSpec
    hash: str
    affinity: AffinitySpec | None = None  # set: the job measures inter-task affinity (affinity.json)
    # the sweep points (usagg/sweep.py) this job belongs to: several when a swept key does not enter its id (the
    # MoE size in a TS job); empty without a sweep. Outside the hash: the values are in the fields already.
    sweep: list[dict[str, Any]] = []

    @model_validator(mode="before")
    @classmethod
    def _stored_before_removals(cls, data: Any) -> Any:
        """Job records written before `data.num_workers` was removed (it was never read) still load."""
        if isinstance(data, dict) and isinstance(data.get("data"), dict) and "num_workers" in data["data"]:
            data = {**data, "data": {k: v for k, v in data["data"].items() if k != "num_workers"}}
        return data

    @property
    def task_ids(self) -> list[str]:
        return [t.id for t in self.tasks]


def _fmt_fraction(f: float) -> str:
    return f"f{f:g}"


def weights_key(weights: Path | None, cache_dir: Path | None = None) -> str | None:
    """What the job hash records of `model.weights`: None (random init), else `sha256:<content digest>`.

    The digest is cached by path and size, mtime, ctime, inode (usagg/filehash.py), so a 1 GB checkpoint is
    read once. A file not there yet counts by name (`missing:<name>`): `usagg plan` works before
    the download, and no job can run until it exists (`usagg run` checks the file first).
    """
    if weights is None:
        return None
    if not Path(weights).is_file():
        return f"missing:{Path(weights).name}"
    return f"sha256:{file_sha256(weights, cache_dir)}"


@dataclass(frozen=True)
class _HashContext:
    """What the conditional rules of usagg/spec/jobhash.py look at: the job's unit and its study."""

    unit: Unit
    study: Study

    def reads(self, setting: str) -> bool:
        """Whether a task type of this job reads `setting` (`TaskType.hash_settings`, rule `type_setting`)."""
        from usagg.tasktypes import get_task_type

        return any(setting in get_task_type(self.study.task(t).type).hash_settings for t in self.unit.tasks)

    def applies(self, rule: str) -> bool:
        """Whether a field under `rule` enters this job's hash at all."""
        several = len(self.unit.tasks) > 1
        return {
            "moe_jobs": self.unit.moe,
            "multi_task": several,
            "temperature": several and self.study.training.sampling == "temperature",
            "train_split": self.study.data.test_split == "train",
            "measuring": self.unit.affinity,
            "task_default": False,  # enters through its per_task field, filled in for the job's tasks
        }.get(rule, rule != "no")


def _hashed(section: BaseModel, ctx: _HashContext) -> dict[str, Any]:
    """A spec section as its fields' JobHash markers say (usagg/spec/jobhash.py): sub-sections by their own."""
    out: dict[str, Any] = {}
    for name, info in type(section).model_fields.items():
        marker = job_hash_rule(info)
        if marker is None:
            raise TypeError(f"{type(section).__name__}.{name} has no JobHash marker (usagg/spec/jobhash.py)")
        if not ctx.applies(marker.rule):
            continue
        value = getattr(section, name)
        if marker.rule == "type_setting" and (value == info.default or not ctx.reads(name)):
            continue
        if marker.rule == "content":
            out[name] = weights_key(value, ctx.study.data.cache_dir)
        elif marker.rule == "per_task":
            default = getattr(section, marker.default) if isinstance(marker.default, str) else marker.default
            out[name] = {t: value.get(t, default) for t in ctx.unit.tasks}
        elif isinstance(value, BaseModel):
            out[name] = _hashed(value, ctx)
        else:
            out[name] = section.model_dump(mode="json", include={name})[name]
    return out


def hash_payload(unit: Unit, study: Study, fraction: float, seed: int) -> dict[str, Any]:
    """Every setting that changes this job's result, normalised so that equivalent specs agree.

    Which settings, and when, is declared on each spec field (`JobHash` markers, usagg/spec/jobhash.py):
    the study's sections (data, model, training) by their fields, the job's own seed, fraction, tasks and
    MoE switch, and the affinity settings for a job that measures affinity. The weights file counts by
    content (`weights_key`), so a file replaced under the same name gives new ids; a plug-in backbone by
    its registered definition (`hashed_definition`), so a changed entry re-runs its jobs.
    """
    ctx = _HashContext(unit, study)
    sections = {"data": study.data, "model": study.model, "training": _training(unit, study)}
    payload: dict[str, Any] = {
        "tasks": [_hashed(study.task(t), ctx) for t in unit.tasks],
        "moe": unit.moe,
        "fraction": fraction,
        "seed": seed,
    }
    for name, info in Study.model_fields.items():
        marker = job_hash_rule(info)
        rule = marker.rule if marker is not None else "unmarked"
        if rule == "yes":
            payload[name] = _hashed(sections[name], ctx)
        elif rule == "measuring" and ctx.applies(rule):  # what it writes besides results (usagg/engine/affinity.py)
            payload["affinity"] = {**_hashed(getattr(study, name), ctx)["affinity"], "step": LOOKAHEAD_STEP}
        elif rule not in ("no", "job", "measuring"):
            raise TypeError(f"Study.{name}: no JobHash rule for a top-level field: {rule}")
    definition = hashed_definition(study.model.backbone)
    if definition is not None:  # a built-in's ids hash its name alone, as stores made before this hold them
        payload["backbone_entry"] = definition
    return payload


def _training(unit: Unit, study: Study) -> TrainingSpec:
    return study.training if unit.epochs is None else study.training.model_copy(update={"epochs": unit.epochs})


def job_hash(unit: Unit, study: Study, fraction: float, seed: int) -> str:
    """First HASH_LEN hex digits of the sha256 of `hash_payload`: the same on every machine."""
    blob = json.dumps(hash_payload(unit, study, fraction, seed), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:HASH_LEN]


def unit_jobs(unit: Unit, study: Study) -> list[Job]:
    """A unit crossed with its data fractions and the study's seeds."""
    jobs = []
    for fraction in unit.fractions or study.fractions:
        for seed in study.seeds:
            h = job_hash(unit, study, fraction, seed)
            jobs.append(
                Job(
                    id=f"{unit.paradigm}-{unit.name}-{_fmt_fraction(fraction)}-s{seed}-{h}",
                    study=study.name,
                    paradigm=unit.paradigm,
                    name=unit.name,
                    group=unit.group,
                    tasks=[study.task(t) for t in unit.tasks],
                    moe=unit.moe,
                    fraction=fraction,
                    seed=seed,
                    model=study.model,
                    training=_training(unit, study),
                    data=study.data,
                    hash=h,
                    affinity=study.analysis.affinity if unit.affinity else None,
                )
            )
    return jobs


@dataclass(frozen=True)
class Waiting:
    """A staged paradigm not planned yet: it waits for `needs` (job ids) to be done."""

    paradigm: str
    needs: tuple[str, ...]


@dataclass
class Plan:
    """The jobs planned so far and the staged paradigms still waiting for theirs."""

    jobs: list[Job]
    waiting: list[Waiting] = field(default_factory=list)


#: Evidence of some jobs for a staged planner, or None while any of them is not done.
EvidenceFor = Callable[[list[Job]], Evidence | None]


def _key(u: Unit) -> tuple[str, str, tuple[str, ...], bool]:
    return u.paradigm, u.name, u.tasks, u.moe


def plan_stages(study: Study, evidence_for: EvidenceFor | None = None) -> Plan:
    """Every job the study can plan now, at every point of its sweep (usagg/sweep.py; a study without one is its
    only point): `_plan_point` of each point's Study, a job two points share listed once with both points.

    Two points with the same jobs are a SpecError: the keys they differ in enter none of this study's job ids.
    """
    merged = Plan([])
    by_id: dict[str, Job] = {}
    first_with: dict[tuple[str, ...], Point] = {}
    for point, variant in point_studies(study):
        part = _plan_point(variant, evidence_for)
        ids = tuple(sorted([j.id for j in part.jobs] + [n for w in part.waiting for n in w.needs]))
        if ids in first_with:
            other = first_with[ids]
            keys = [k for k in point if point[k] != other[k]]
            raise SpecError(
                f"sweep: the points {point_label(other)} and {point_label(point)} give the same jobs: "
                f"{', '.join(keys)} enter(s) the id of none of this study's jobs (docs/spec.md, column `job id`, "
                "says when a field counts, e.g. model.moe only in MoE jobs); sweep a key that changes them"
            )
        first_with[ids] = point
        for job in part.jobs:
            if job.id in by_id:
                by_id[job.id].sweep.append(point)
                continue
            job.sweep = [point] if point else []
            by_id[job.id] = job
            merged.jobs.append(job)
        merged.waiting += [w for w in part.waiting if w not in merged.waiting]
    return merged


def _plan_point(study: Study, evidence_for: EvidenceFor | None) -> Plan:
    """Every job one study (one sweep point) can plan now: its paradigms' units (a unit a staged paradigm needs
    replaces its plain twin, so AU measures affinity in the same job) crossed with fractions and seeds, then each
    staged paradigm's jobs where `evidence_for` has the evidence of its needed jobs (at their largest fraction),
    else a `Waiting`."""
    staged = [PARADIGMS[p] for p in study.paradigms if PARADIGMS[p].staged]
    units = [u for p in study.paradigms if not PARADIGMS[p].staged for u in _planned(PARADIGMS[p], study)]
    needed: dict[str, list[Unit]] = {}
    for entry in staged:
        assert entry.needs is not None
        needed[entry.name] = entry.needs(study)
        for n in needed[entry.name]:
            twins = [i for i, u in enumerate(units) if _key(u) == _key(n)]
            if twins:
                units[twins[0]] = n
            elif n not in units:
                units.append(n)
    by_unit = {u: unit_jobs(u, study) for u in units}
    result = Plan([j for u in units for j in by_unit[u]])
    for entry in staged:
        sources = []
        for n in needed[entry.name]:
            own = by_unit[n]
            top = max(j.fraction for j in own)
            sources += [j for j in own if j.fraction == top]
        evidence = evidence_for(sources) if evidence_for is not None else None
        if evidence is None:
            result.waiting.append(Waiting(entry.name, tuple(j.id for j in sources)))
        else:
            result.jobs += [j for u in _planned(entry, study, evidence) for j in unit_jobs(u, study)]
    return result


def _planned(entry: ParadigmEntry, study: Study, *evidence: Evidence) -> list[Unit]:
    """The units `entry`'s planner returns, each of this paradigm and of the study's tasks, else a UsaggError.

    A planner is often a plug-in's code: what it gets wrong is said in one paragraph naming the paradigm and its
    planner, instead of a traceback (a task not in the study, an error raised in a plug-in's planner) or jobs
    merged silently into another paradigm's (a unit naming another). A study task it plans nothing for is a
    warning only, and only for a plug-in's paradigm: CG and CGD leave single-task groups out under
    `singleton_groups: skip`, as the spec asks.
    """
    where = f"paradigm {entry.name} (planner {callable_name(entry.planner)})"
    plugin = entry.name not in BUILTIN_PARADIGMS
    try:
        units = list(entry.planner(study, *evidence))
    except Exception as e:
        if isinstance(e, UsaggError) or not plugin:  # a built-in's own error is usagg's bug: its traceback stands
            raise
        raise UsaggError(f"{where} failed while planning ({type(e).__name__}: {first_line(e)}); fix the planner") from e
    strays = [u for u in units if not isinstance(u, Unit)]
    if strays:
        raise UsaggError(
            f"{where} returned a value of type {type(strays[0]).__name__} among its units; a planner returns Units"
        )
    ids = [t.id for t in study.tasks]
    for u in units:
        if u.paradigm != entry.name:
            raise UsaggError(
                f"{where} planned unit {u.name!r} with paradigm={u.paradigm!r}; a planner's units name their own "
                f"paradigm ({entry.name!r}), else their jobs count as that paradigm's"
            )
        unknown = [t for t in u.tasks if t not in ids]
        if unknown:
            raise UsaggError(
                f"{where} planned unit {u.name!r} with task(s) {', '.join(map(repr, unknown))}, not in the study "
                f"{study.name!r} (its tasks: {', '.join(ids)}); a unit's tasks are ids from `study.tasks`"
            )
    left = [t for t in ids if not any(t in u.tasks for u in units)]
    message = f"{where} plans no unit for task(s) {', '.join(left)}: {entry.name} has no result for them"
    if left and plugin and message not in _warned:
        _warned.add(message)
        log.warning("%s", message)
    return units


def plan(study: Study, evidence_for: EvidenceFor | None = None) -> list[Job]:
    """Expand a study into the jobs it can plan now (see `plan_stages`; without evidence, stage one only)."""
    return plan_stages(study, evidence_for).jobs
