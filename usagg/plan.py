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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from usagg.affinity import LOOKAHEAD_STEP
from usagg.filehash import file_sha256
from usagg.paradigms import PARADIGMS, Evidence, Unit
from usagg.spec.models import AffinitySpec, DataSpec, ModelSpec, Study, TaskSpec, TrainingSpec

HASH_LEN = 8


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

    @property
    def task_ids(self) -> list[str]:
        return [t.id for t in self.tasks]


def _fmt_fraction(f: float) -> str:
    return f"f{f:g}"


def weights_key(weights: Path | None, cache_dir: Path | None = None) -> str | None:
    """What the job hash records of `model.weights`: None (random init), else `sha256:<content digest>`.

    The digest is cached by (path, size, mtime_ns) (usagg/filehash.py), so a 1 GB checkpoint is
    read once. A file not there yet counts by name (`missing:<name>`): `usagg plan` works before
    the download, and no job can run until it exists (`usagg run` checks the file first).
    """
    if weights is None:
        return None
    if not Path(weights).is_file():
        return f"missing:{Path(weights).name}"
    return f"sha256:{file_sha256(weights, cache_dir)}"


def hash_payload(unit: Unit, study: Study, fraction: float, seed: int) -> dict[str, Any]:
    """Every setting that changes this job's result, normalised so that equivalent specs agree.

    The weights file counts by content (`weights_key`), so a file replaced under the same
    name gives new ids. Left out on purpose: absolute paths (data.root, cache_dir,
    synthetic.out, the weights' path), worker counts, the data checks (leakage settings), eval
    batch size, how often checkpoints are written, execution, tracking and analysis settings,
    the clinical group label, and settings of other tasks or inactive options (MoE for TS; task
    sampling, selection scope and loss balance for one-task jobs).
    """
    tasks = [study.task(t).model_dump(mode="json", exclude={"group"}) for t in unit.tasks]
    model = study.model.model_dump(mode="json")
    model["weights"] = weights_key(study.model.weights, study.data.cache_dir)
    model.pop("trunk")  # the shared frozen trunk gives the same bits as recomputing (usagg/model/trunk.py)
    if not unit.moe:
        model.pop("moe")
    training = _training(unit, study).model_dump(mode="json", exclude={"eval_batch_size", "checkpoint_every"})
    training["loss_weights"] = {t: study.training.loss_weights.get(t, 1.0) for t in unit.tasks}
    if len(unit.tasks) == 1:  # what only mixes tasks has no effect on a one-task job
        for key in ("sampling", "selection_scope", "loss_balance"):
            training.pop(key)
    if training.get("sampling") != "temperature":
        training.pop("temperature")
    data = study.data.model_dump(
        mode="json", exclude={"root", "cache_dir", "num_workers", "leakage", "near_duplicate_threshold"}
    )
    if study.data.test_split != "train":
        data.pop("test_fraction")
    if study.data.synthetic is not None:
        syn = data["synthetic"]
        syn.pop("out")
        syn["sizes"] = {t: study.data.synthetic.sizes.get(t, study.data.synthetic.default_size) for t in unit.tasks}
        syn.pop("default_size")
    payload = {
        "tasks": tasks,
        "moe": unit.moe,
        "fraction": fraction,
        "seed": seed,
        "model": model,
        "training": training,
        "data": data,
    }
    if unit.affinity:  # what it writes besides results; never how it trains (usagg/engine/affinity.py)
        payload["affinity"] = {
            **study.analysis.affinity.model_dump(mode="json", exclude={"probe_epochs"}),
            "step": LOOKAHEAD_STEP,
        }
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
    """Every job the study can plan now: its paradigms' units (a unit a staged paradigm needs replaces its plain
    twin, so AU measures affinity in the same job) crossed with fractions and seeds, then each staged paradigm's
    jobs where `evidence_for` has the evidence of its needed jobs (at their largest fraction), else a `Waiting`."""
    if study.tasks_from is not None:
        raise ValueError("plan() needs a resolved study (tasks_from set): load it with usagg.spec.load.load_study")
    staged = [PARADIGMS[p] for p in study.paradigms if PARADIGMS[p].staged]
    units = [u for p in study.paradigms if not PARADIGMS[p].staged for u in PARADIGMS[p].planner(study)]
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
            result.jobs += [j for u in entry.planner(study, evidence) for j in unit_jobs(u, study)]
    return result


def plan(study: Study, evidence_for: EvidenceFor | None = None) -> list[Job]:
    """Expand a study into the jobs it can plan now (see `plan_stages`; without evidence, stage one only)."""
    return plan_stages(study, evidence_for).jobs
