"""The paradigm registry: a paradigm is a planner that says which tasks train together, and with MoE or not.

The only place that knows what TS, CG and AU mean. A planner takes the resolved
`Study` and returns `Unit`s; `usagg.plan` crosses them with fractions and seeds
into Jobs. A new paradigm is one decorated function (see docs/internals.md,
"How to add a paradigm"); the spec's `paradigms` and `analysis.baseline` are
checked against this registry. A paradigm may declare its two design factors, the
`scope` of a model (task, group or all tasks) and whether MoE is on: the analysis
splits a Δ into an aggregation part and a MoE part with the controls those factors
name (TSM: task scope with MoE; AUD: all tasks without it; CGD: clinical groups without it;
usagg/analysis/controls.py, factorial.py).

A paradigm may be staged: it declares the units whose results it `needs` (AG needs an
affinity-measuring all-task job, usagg/affinity.py) and its planner then gets an `Evidence`
of those jobs; `usagg.plan.plan_stages` plans the needed jobs first and the staged ones
once they are done (the run service runs the stages in order, on every executor). A
paradigm may also take `settings` (a pydantic model), given in the spec as
`paradigms: [TS, {AG: {groups: 3}}]`. Torch-free and spec-free at import (the spec
validates against it), so `Study` is only a type hint here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from usagg.names import unknown_name
from usagg.registry import Registry, callable_name, parameters, plugin_hint

if TYPE_CHECKING:
    from usagg.affinity import Affinity
    from usagg.spec.models import Study


class Unit(BaseModel):
    """What a paradigm planner decides: which tasks train together, and with MoE or not."""

    model_config = ConfigDict(frozen=True)

    paradigm: str
    name: str  # readable part of the job id: the task, the group, "all"
    tasks: tuple[str, ...]
    moe: bool
    group: str | None = None  # clinical group the unit stands for (CG), else the task's own when it has one task
    affinity: bool = False  # the job measures inter-task affinity (analysis.affinity) for a staged paradigm
    epochs: int | None = None  # training.epochs for this unit only (the affinity probe), None: the study's
    fractions: tuple[float, ...] | None = None  # the study's fractions this unit runs at, None: all


class Evidence(Protocol):
    """What a staged planner reads of the jobs it needs, once they are done (usagg/run/evidence.py gives it)."""

    def affinity(self) -> Affinity:
        """The mean affinity the needed jobs measured (usagg/affinity.py)."""
        ...


Planner = Callable[..., list[Unit]]  # (study) -> units, or (study, evidence) for a staged paradigm


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
    #: Units whose jobs must be done before this paradigm can plan (None: planned from the spec alone).
    needs: Callable[[Study], list[Unit]] | None = None
    #: The paradigm's own settings (`paradigms: [{NAME: {...}}]`), a pydantic model, or None.
    settings: type[BaseModel] | None = None
    #: Whether the analysis compares it (a helper such as the affinity probe is planned, never compared).
    compared: bool = True
    #: A spec check: what is missing for this paradigm to run, or None.
    check: Callable[[Study], str | None] | None = None
    #: A control (TSM, AUD): compared to split a Δ into its parts, never a paradigm to advise (`usagg advise`).
    control: bool = False

    @property
    def staged(self) -> bool:
        return self.needs is not None


#: name -> entry, in registration order; plug-ins through the `usagg.paradigms` entry points or USAGG_PLUGINS.
PARADIGMS: Registry[ParadigmEntry] = Registry(
    "paradigm",
    group="usagg.paradigms",
    hint=plugin_hint("How to add a paradigm"),
)


def register_paradigm(
    name: str,
    description: str,
    *,
    scope: str | None = None,
    moe: bool | None = None,
    needs: Callable[[Study], list[Unit]] | None = None,
    settings: type[BaseModel] | None = None,
    compared: bool = True,
    check: Callable[[Study], str | None] | None = None,
    control: bool = False,
) -> Callable[[Planner], Planner]:
    """Register a planner under a paradigm name (timm-style decorator); a name may be registered once.

    `scope` (one of SCOPES) and `moe` are optional: without them the paradigm is compared
    with the baseline as a whole, never split into aggregation and MoE parts. With `needs`
    the planner is called as `planner(study, evidence)` once the needed units' jobs are done.
    `check(study)` says what the spec lacks for this paradigm (or None); the spec calls it
    for every paradigm it runs, once the tasks are resolved.
    """
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"a paradigm name is letters, digits and _, such as 'AG', got {name!r}")
    if scope is not None and scope not in SCOPES:
        raise ValueError(f"scope of paradigm {name!r} is one of {', '.join(SCOPES)}, got {scope!r}")

    def deco(fn: Planner) -> Planner:
        _check_planner(name, fn, staged=needs is not None)
        entry = ParadigmEntry(name, fn, description, scope, moe, needs, settings, compared, check, control)
        PARADIGMS.register(name, entry, same=lambda old, new: old.planner is new.planner, origin=fn.__module__)
        return fn

    return deco


def _check_planner(name: str, fn: Planner, *, staged: bool) -> None:
    """ValueError unless `fn` can be called as planning calls it: (study), or (study, evidence) with `needs=`.

    Found at registration, a plug-in's wrong signature is one paragraph when plug-ins load
    (usagg/registry.py), not a TypeError traceback from inside `usagg plan`.
    """
    signature = parameters(fn)
    try:
        if signature is not None:
            signature.bind(*(("study", "evidence") if staged else ("study",)))
    except TypeError:
        expected = (
            "(study, evidence), as registered with needs=" if staged else "(study), or (study, evidence) with needs="
        )
        raise ValueError(
            f"paradigm {name!r}: its planner {callable_name(fn)}{signature} must take {expected}"
        ) from None


def paradigm_names() -> list[str]:
    """Compared paradigms in registration order (TS, CG, AU first): the order tables and figures use."""
    return [n for n in PARADIGMS.names() if PARADIGMS[n].compared]


def check_paradigm(name: str) -> str:
    """`name` if registered and compared, else ValueError with a did-you-mean and the registered names."""
    known = paradigm_names()  # plug-ins loaded first
    if name not in known:
        raise ValueError(unknown_name("paradigm", name, known) + PARADIGMS.hint)
    return name


def check_paradigms(study: Study) -> str | None:
    """What the spec lacks for the paradigms it runs, as 'paradigms: NAME: why', or None: each paradigm's `check`."""
    for name in study.paradigms:
        check = PARADIGMS[name].check
        why = check(study) if check is not None else None
        if why:
            return f"paradigms: {name}: {why}"
    return None


def _clinical_groups(study: Study) -> str | None:
    """Paradigms that plan from the clinical groups need every task in exactly one."""
    try:
        study.group_members()
    except ValueError as e:
        return str(e)
    return None


def paradigm_settings(study: Study, name: str) -> Any:
    """The paradigm's settings for this study (its model's defaults where the spec gives none)."""
    model = PARADIGMS[name].settings
    if model is None:
        return None
    return model.model_validate(study.paradigm_settings.get(name, {}))


@register_paradigm("TS", "task-specific: one model per task, MoE off", scope="task", moe=False)
def plan_ts(study: Study) -> list[Unit]:
    """Task-specific: one model per task, MoE off (the dense blocks)."""
    return [Unit(paradigm="TS", name=t.id, tasks=(t.id,), moe=False, group=t.group) for t in study.tasks]


@register_paradigm(
    "CG", "clinically grouped: one model per clinical group, MoE on", scope="group", moe=True, check=_clinical_groups
)
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


# --------------------------------------------------------------------------- affinity groups (staged)


class AGSettings(BaseModel):
    """Settings of AG (`paradigms: [..., {AG: {groups: 3}}]`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    groups: int | None = Field(
        None, ge=1, le=1000, description="How many groups AG forms; default: the number of clinical groups."
    )
    search: Literal["auto", "exhaustive", "beam"] = Field(
        "auto",
        description="auto: every partition when there are at most 100,000 of them, else a beam search then a "
        "local search that moves one task or swaps two while the total affinity rises (usagg/grouping.py).",
    )
    beam_width: int = Field(256, ge=1, le=100_000, description="Partial groupings the beam search keeps per task.")


def affinity_source(study: Study) -> list[Unit]:
    """The jobs AG's affinity comes from: the AU job itself, or a short probe run (analysis.affinity.probe_epochs).

    Only the largest fraction is used (its seeds averaged); AU measures at every fraction it runs,
    so affinity against data scale is there too.
    """
    probe = study.analysis.affinity.probe_epochs
    if probe is None:
        return [_all_tasks(study, "AU", moe=True).model_copy(update={"affinity": True})]
    top = (max(study.fractions),)
    unit = _all_tasks(study, "probe", moe=True)
    return [unit.model_copy(update={"affinity": True, "epochs": probe, "fractions": top})]


def _ag_check(study: Study) -> str | None:
    if study.analysis.affinity.probe_epochs is None and "AU" not in study.paradigms:
        return (
            "AG groups tasks by the affinity measured while training all tasks together: add AU to `paradigms`, "
            "or set analysis.affinity.probe_epochs (for example 3) to measure it in a short probe run"
        )
    if len(study.tasks) < 2:
        return "AG needs at least two tasks to group"
    if not study.paradigm_settings.get("AG", {}).get("groups"):  # the default budget is the clinical groups' count
        return _clinical_groups(study)
    return None


@register_paradigm(
    "AG",
    "affinity groups: tasks grouped by the inter-task affinity measured in AU (or a probe), MoE on",
    scope="group",
    moe=True,
    needs=affinity_source,
    settings=AGSettings,
    check=_ag_check,
)
def plan_ag(study: Study, evidence: Evidence) -> list[Unit]:
    """Groups maximising the total affinity onto each task (usagg/grouping.py), trained like CG (MoE on).

    The budget is `groups` (default: the number of clinical groups). Job names are g1, g2, ... in
    task order; the job hash holds the task set, so the same measured groups reuse the same jobs.
    """
    from usagg.grouping import BEAM_WIDTH, SEARCH_LIMITS, choose_groups

    opts: AGSettings = paradigm_settings(study, "AG")
    aff = evidence.affinity()
    k = opts.groups or len(study.group_members())
    limit = SEARCH_LIMITS[opts.search]
    grouping = choose_groups(aff, k, exhaustive_limit=limit, beam_width=opts.beam_width or BEAM_WIDTH)
    return [
        Unit(
            paradigm="AG",
            name=f"g{i + 1}",
            tasks=tasks,
            moe=True,
            group=study.task(tasks[0]).group if len(tasks) == 1 else None,
        )
        for i, tasks in enumerate(grouping.groups)
    ]


@register_paradigm("TSM", "control: one model per task, MoE on (TS plus MoE)", scope="task", moe=True, control=True)
def plan_tsm(study: Study) -> list[Unit]:
    """Control for MoE: TS's units with MoE on, so Δ_TSM is the MoE part of a Δ with no aggregation at all."""
    return [Unit(paradigm="TSM", name=t.id, tasks=(t.id,), moe=True, group=t.group) for t in study.tasks]


@register_paradigm(
    "AUD", "control: one model for every task, MoE off (AU without MoE)", scope="all", moe=False, control=True
)
def plan_aud(study: Study) -> list[Unit]:
    """Control for aggregation: AU's unit with the dense blocks, so Δ_AUD is aggregation without MoE."""
    return [_all_tasks(study, "AUD", moe=False)]


@register_paradigm(
    "CGD",
    "control: one model per clinical group, MoE off (CG without MoE)",
    scope="group",
    moe=False,
    check=_clinical_groups,
    control=True,
)
def plan_cgd(study: Study) -> list[Unit]:
    """Control for CG: CG's units with the dense blocks, so TS, TSM, CGD and CG form a 2x2 of scope and MoE
    (usagg/analysis/factorial.py); one-task groups follow `singleton_groups` as in CG."""
    return [u.model_copy(update={"paradigm": "CGD", "moe": False}) for u in plan_cg(study)]


def _all_tasks(study: Study, paradigm: str, *, moe: bool) -> Unit:
    tasks = tuple(t.id for t in study.tasks)
    group = study.task(tasks[0]).group if len(tasks) == 1 else None
    return Unit(paradigm=paradigm, name="all", tasks=tasks, moe=moe, group=group)


@register_paradigm(
    "probe",
    "helper of AG: a short all-task run with MoE that measures affinity (analysis.affinity.probe_epochs)",
    scope="all",
    moe=True,
    compared=False,
)
def plan_probe(study: Study) -> list[Unit]:
    """Never listed in `paradigms`: AG plans its probe through `affinity_source`."""
    return []


#: The paradigms usagg ships, registered above: their coverage of the tasks is held by tests/test_registries.py.
BUILTIN_PARADIGMS = frozenset(PARADIGMS)
