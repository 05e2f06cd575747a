"""The paradigm registry: a paradigm is a planner that says which tasks train together, and with MoE or not.

The only place that knows what TS, CG and AU mean. A planner takes the resolved
`Study` and returns `Unit`s; `usagg.plan` crosses them with fractions and seeds
into Jobs. A new paradigm is one decorated function (see docs/internals.md,
"How to add a paradigm"); the spec's `paradigms` and `analysis.baseline` are
checked against this registry. A paradigm may declare its two design factors, the
`scope` of a model (task, group or all tasks) and whether MoE is on: the analysis
splits a Δ into an aggregation part and a MoE part with the controls those factors
name (TSM: task scope with MoE; AUD: all tasks without it; usagg/analysis/controls.py).
Torch-free and spec-free at import (the spec validates against it), so `Study` is only
a type hint here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from usagg.names import unknown_name

if TYPE_CHECKING:
    from usagg.spec.models import Study


class Unit(BaseModel):
    """What a paradigm planner decides: which tasks train together, and with MoE or not."""

    model_config = ConfigDict(frozen=True)

    paradigm: str
    name: str  # readable part of the job id: the task, the group, "all"
    tasks: tuple[str, ...]
    moe: bool
    group: str | None = None  # clinical group the unit stands for (CG), else the task's own when it has one task


Planner = Callable[["Study"], list[Unit]]


#: What one model of a paradigm covers: one task, one clinical group, or every task.
SCOPES = ("task", "group", "all")


@dataclass(frozen=True)
class ParadigmEntry:
    """A registered paradigm: its planner, a one-line description (`usagg validate`, docs) and, when declared,
    its design factors (`scope`, `moe`), which the analysis uses to pair a paradigm with its controls."""

    name: str
    planner: Planner
    description: str
    scope: str | None = None
    moe: bool | None = None


PARADIGMS: dict[str, ParadigmEntry] = {}


def register_paradigm(
    name: str, description: str, *, scope: str | None = None, moe: bool | None = None
) -> Callable[[Planner], Planner]:
    """Register a planner under a paradigm name (timm-style decorator); a name may be registered once.

    `scope` (one of SCOPES) and `moe` are optional: without them the paradigm is compared
    with the baseline as a whole, never split into aggregation and MoE parts.
    """
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"a paradigm name is letters, digits and _, such as 'AG', got {name!r}")
    if scope is not None and scope not in SCOPES:
        raise ValueError(f"scope of paradigm {name!r} is one of {', '.join(SCOPES)}, got {scope!r}")

    def deco(fn: Planner) -> Planner:
        if name in PARADIGMS and PARADIGMS[name].planner is not fn:
            raise ValueError(f"paradigm {name!r} is already registered")
        PARADIGMS[name] = ParadigmEntry(name, fn, description, scope, moe)
        return fn

    return deco


def paradigm_names() -> list[str]:
    """Registered paradigms in registration order (TS, CG, AU first): the order tables and figures use."""
    return list(PARADIGMS)


def check_paradigm(name: str) -> str:
    """`name` if registered, else ValueError with a did-you-mean and the registered names."""
    if name not in PARADIGMS:
        raise ValueError(unknown_name("paradigm", name, list(PARADIGMS)))
    return name


def get_planner(name: str) -> Planner:
    return PARADIGMS[check_paradigm(name)].planner


@register_paradigm("TS", "task-specific: one model per task, MoE off", scope="task", moe=False)
def plan_ts(study: Study) -> list[Unit]:
    """Task-specific: one model per task, MoE off (the dense blocks)."""
    return [Unit(paradigm="TS", name=t.id, tasks=(t.id,), moe=False, group=t.group) for t in study.tasks]


@register_paradigm("CG", "clinically grouped: one model per clinical group, MoE on", scope="group", moe=True)
def plan_cg(study: Study) -> list[Unit]:
    """Clinically grouped: one model per clinical group, MoE on.

    Single-task groups follow `singleton_groups`: "run" trains them like any
    group (TS data, MoE on, so their Δ isolates the MoE), "skip" plans nothing.
    """
    units = []
    for group, tids in study.group_members().items():
        if len(tids) == 1 and study.singleton_groups == "skip":
            continue
        units.append(Unit(paradigm="CG", name=group, tasks=tuple(tids), moe=True, group=group))
    return units


@register_paradigm("AU", "all-task unified: one model for every task, MoE on", scope="all", moe=True)
def plan_au(study: Study) -> list[Unit]:
    """All-task unified: one model for every task, MoE on."""
    return [_all_tasks(study, "AU", moe=True)]


@register_paradigm("TSM", "control: one model per task, MoE on (TS plus MoE)", scope="task", moe=True)
def plan_tsm(study: Study) -> list[Unit]:
    """Control for MoE: TS's units with MoE on, so Δ_TSM is the MoE part of a Δ with no aggregation at all."""
    return [Unit(paradigm="TSM", name=t.id, tasks=(t.id,), moe=True, group=t.group) for t in study.tasks]


@register_paradigm("AUD", "control: one model for every task, MoE off (AU without MoE)", scope="all", moe=False)
def plan_aud(study: Study) -> list[Unit]:
    """Control for aggregation: AU's unit with the dense blocks, so Δ_AUD is aggregation without MoE."""
    return [_all_tasks(study, "AUD", moe=False)]


def _all_tasks(study: Study, paradigm: str, *, moe: bool) -> Unit:
    tasks = tuple(t.id for t in study.tasks)
    group = study.task(tasks[0]).group if len(tasks) == 1 else None
    return Unit(paradigm=paradigm, name="all", tasks=tasks, moe=moe, group=group)
