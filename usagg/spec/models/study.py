"""`Study`, the root of a spec: its own fields and the checks across its parts (tasks, groups, paradigms)."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from usagg.names import suggest
from usagg.paradigms import check_paradigm, check_paradigms, paradigm_names
from usagg.spec.jobhash import IN_HASH, JOB_OWN, NOT_IN_HASH, JobHash
from usagg.spec.models.analysis import AnalysisSpec
from usagg.spec.models.base import MAX_SEED, Name, ParadigmName, Strict
from usagg.spec.models.data import DataSpec
from usagg.spec.models.execution import ExecutionSpec
from usagg.spec.models.expect import Expectation
from usagg.spec.models.model import ModelSpec
from usagg.spec.models.tasks import CatalogRef, TaskSpec
from usagg.spec.models.tracking import TrackingSpec
from usagg.spec.models.training import TrainingSpec
from usagg.sweep import check_block
from usagg.tasktypes import get_task_type, scale_problem
from usagg.tasktypes.base import GEOMETRIES


def _paradigm_entries_schema(schema: dict[str, Any]) -> None:
    """`paradigms` in the JSON Schema as a spec writes it, not as validated: an entry is a name or a one-key mapping
    of a name to its settings (or null), which `Study._paradigm_entries` unpacks; an editor then takes known.yaml."""
    name = schema["items"]
    settings = {"type": "object", "minProperties": 1, "maxProperties": 1, "propertyNames": name}
    schema["items"] = {"anyOf": [name, {**settings, "additionalProperties": {"type": ["object", "null"]}}]}
    schema["examples"] = [[*paradigm_names()], ["TS", "CG", "AU", {"AG": {"groups": 3}}]]


#: Smallest data fraction: the study's tasks have hundreds to thousands of images, so 1 % keeps a few to tens;
#: below it a fraction is a typo (1e-9) or leaves tasks one image, which no job can train and select on.
MIN_FRACTION = 0.01


def _sane_fraction(f: float) -> float:
    if f < MIN_FRACTION:
        raise ValueError(f"got {f:g}; a data fraction is from {MIN_FRACTION} to 1 (0.25 for a quarter)")
    return f


class Study(Strict):
    """A whole task-aggregation study."""

    name: Annotated[Name, NOT_IN_HASH] = Field(description="Study name; the run store is <output_root>/<name>.")
    output_root: Annotated[Path, NOT_IN_HASH] = Field(
        Path("runs"), description="Folder holding run stores (relative paths are from the current directory)."
    )
    seeds: Annotated[list[Annotated[int, Field(ge=0, le=MAX_SEED)]], JOB_OWN] = Field(
        [0], min_length=1, description="Training seeds; every job is repeated per seed."
    )
    fractions: Annotated[list[Annotated[float, Field(gt=0, le=1), AfterValidator(_sane_fraction)]], JOB_OWN] = Field(
        [1.0],
        min_length=1,
        description=f"Shares of each task's training set (nested, seeded subsets), from {MIN_FRACTION}: below "
        "that a fraction leaves most tasks a handful of images.",
    )
    paradigms: Annotated[list[ParadigmName], JOB_OWN] = Field(
        ["TS", "CG", "AU"],
        min_length=1,
        description=f"Paradigms to run, registered in usagg/paradigms.py (built in: {', '.join(paradigm_names())}); "
        "an entry may carry the paradigm's settings as a one-key mapping, such as `{AG: {groups: 3}}`.",
        json_schema_extra=_paradigm_entries_schema,
    )
    paradigm_settings: Annotated[dict[str, dict[str, Any]], NOT_IN_HASH] = Field(
        default_factory=dict,
        description="Settings of paradigms that take some (AG: groups, search, beam_width), by paradigm; "
        "`paradigms: [{AG: {groups: 3}}]` fills it.",
    )
    data: Annotated[DataSpec, IN_HASH] = Field(
        description="Dataset: an FMC_UIA folder (`root`) or the synthetic benchmark."
    )
    tasks_from: Annotated[CatalogRef | None, NOT_IN_HASH] = Field(None, description="Take tasks from a catalog file.")
    tasks: Annotated[list[TaskSpec], JOB_OWN] = Field(
        default_factory=list, description="Tasks (added to, and overriding by id, those of `tasks_from`)."
    )
    groups: Annotated[dict[Name, list[str]] | None, NOT_IN_HASH] = Field(
        None, description="Clinical groups for CG: group -> task ids; default: each task's `group`."
    )
    singleton_groups: Annotated[Literal["run", "skip"], NOT_IN_HASH] = Field(
        "run",
        description="A CG group with one task: run it (same data as TS but MoE on, so Δ isolates MoE) or skip it. "
        "Run or not, the analysis leaves it out of CG's aggregates and tests unless analysis.cg_singletons is "
        "`include`.",
    )
    model: Annotated[ModelSpec, IN_HASH] = Field(
        default_factory=ModelSpec, description="M2DINO settings, the same for every paradigm."
    )
    training: Annotated[TrainingSpec, IN_HASH] = Field(
        default_factory=TrainingSpec, description="Optimisation settings, the same for every paradigm."
    )
    execution: Annotated[ExecutionSpec, NOT_IN_HASH] = Field(
        default_factory=ExecutionSpec, description="Where jobs run; never changes a result or a job id."
    )
    tracking: Annotated[TrackingSpec, NOT_IN_HASH] = Field(
        default_factory=TrackingSpec, description="Experiment trackers fed while jobs run; never changes a job id."
    )
    analysis: Annotated[AnalysisSpec, JobHash("measuring")] = Field(
        default_factory=AnalysisSpec,
        description="What the analysis emphasises; changes no job id but, in a job measuring affinity, `affinity`'s.",
    )
    expect: Annotated[list[Expectation], NOT_IN_HASH] = Field(
        default_factory=list,
        description="Results the study is meant to show, each met, not met or not evaluated in `usagg compare` "
        "and the report, e.g. {name: classification learns, metric_of: TS, tasks: {type: classification}, "
        "above: 0.65}; a name it reads that the study lacks is an error.",
    )
    sweep: Annotated[dict[str, Annotated[list[Any], Field(min_length=1)]], NOT_IN_HASH] = Field(
        default_factory=dict,
        description="Spec fields to sweep, dotted key -> values, e.g. {training.lr_encoder: [1.0e-4, 5.0e-4], "
        "model.moe.experts: [4, 8]}: the study runs at every combination (crossed with paradigms, seeds and "
        "fractions), each point validated as if its values were written in the spec, its jobs the ids that spec "
        "has; only fields that enter a job id can be swept (`usagg run --sweep KEY=V1,V2` adds one). The analysis "
        "compares paradigms within each point (usagg/sweep.py).",
    )

    @model_validator(mode="before")
    @classmethod
    def _paradigm_entries(cls, data: Any) -> Any:
        """`paradigms: [TS, {AG: {groups: 3}}]`: the mapping's settings go to `paradigm_settings`."""
        if not isinstance(data, dict) or not isinstance(data.get("paradigms"), list):
            return data
        names, settings = [], dict(data.get("paradigm_settings") or {})
        for i, entry in enumerate(data["paradigms"]):
            if isinstance(entry, dict):
                if len(entry) != 1:
                    raise ValueError(
                        f"paradigms[{i}]: a paradigm with settings is a one-key mapping such as {{AG: {{groups: 3}}}}"
                    )
                ((name, opts),) = entry.items()
                settings[str(name)] = opts if opts is not None else {}
                names.append(name)
            else:
                names.append(entry)
        return {**data, "paradigms": names, "paradigm_settings": settings}

    @field_validator("paradigm_settings")
    @classmethod
    def _known_settings(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from usagg.paradigms import PARADIGMS

        out = {}
        for name, opts in v.items():
            check_paradigm(name)
            model = PARADIGMS[name].settings
            if model is None:
                raise ValueError(f"paradigm {name} takes no settings, got {opts!r}")
            if not isinstance(opts, dict):
                raise ValueError(f"settings of paradigm {name} are a mapping such as {{groups: 3}}, got {opts!r}")
            out[name] = model.model_validate(opts).model_dump(exclude_defaults=True)
        return out

    @field_validator("sweep")
    @classmethod
    def _sweepable(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        return check_block(v, cls)

    @field_validator("output_root")
    @classmethod
    def _printable_output_root(cls, v: Path) -> Path:
        """The run store's folder reaches file names and Slurm's batch script (#SBATCH --output): one printable line."""
        from usagg.safepath import control_characters

        bad = control_characters(str(v))
        if bad:
            raise ValueError(
                f"{str(v)[:80]!r} contains control characters ({', '.join(bad)}); the run store's folder becomes "
                "file names and lines of the Slurm batch script, so it must be printable text on one line"
            )
        return v

    @field_validator("output_root")
    @classmethod
    def _output_root_is_no_file(cls, v: Path) -> Path:
        """A file where the run stores' folder (or one of its parents) should be is refused now, not when the run
        first writes into it, after the data check."""
        import os
        import stat

        for path in (v, *v.parents):
            try:
                mode = os.stat(path).st_mode
            except OSError:  # not there yet (created by the run), or not readable: the run says
                continue
            if not stat.S_ISDIR(mode):
                what = "a file" if stat.S_ISREG(mode) else "not a folder"
                where = f"{path} is {what}" if path == v else f"{path}, a parent of {v}, is {what}"
                raise ValueError(
                    f"{where}; output_root is the folder holding the run stores (each <output_root>/<name>): give "
                    "a folder, or a path not there yet, which the run creates"
                )
            break
        return v

    @model_validator(mode="after")
    def _slurm_output_root(self) -> Study:
        """Under Slurm the run store's folder reaches `#SBATCH --output/--error`, where Slurm and submitit read `%`
        as a pattern (`%j` the job id, `%a` the array index, ...) and `\\` as turning patterns off: refused, since
        no escape is read the same way by both (submitit replaces `%j` in `%%j` too)."""
        found = [c for c in ("%", "\\") if c in str(self.output_root)]
        if self.execution.executor == "slurm" and found:
            raise ValueError(
                f"output_root {str(self.output_root)!r} contains {' and '.join(map(repr, found))}, which Slurm and "
                "submitit read in log paths as a pattern (%j the job id, %a the array index, ...; \\ turns them off): "
                "the logs would land in another folder and the run would fail after submitting. With executor: "
                "slurm, choose an output_root without them."
            )
        return self

    @field_validator("seeds", "fractions", "paradigms")
    @classmethod
    def _unique(cls, v: list) -> list:
        dup = sorted({x for x in v if v.count(x) > 1}, key=str)
        if dup:
            raise ValueError(f"duplicate entries {dup}")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> Study:
        ids = [t.id for t in self.tasks]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"tasks: duplicate task ids {dup}; each id may appear once")
        if self.tasks_from is not None:  # checked once, on the resolved tasks: never a half-checked Study
            raise ValueError(
                "tasks_from is resolved while loading: read the spec with usagg.spec.load.load_study (or "
                "study_from_mapping), which merges the catalog's tasks into `tasks` before validating"
            )
        if not self.tasks:
            raise ValueError("tasks is empty: the study has no tasks; give `tasks` or `tasks_from`")
        known = set(ids)
        keys: dict[str, str] = {}
        for task_id in ids:  # module names cannot hold dots: a model keys heads by id with "." as "__"
            other = keys.setdefault(task_id.replace(".", "__"), task_id)
            if other != task_id:
                raise ValueError(
                    f"tasks: ids {other!r} and {task_id!r} collide once '.' is written '__' (as model parameter "
                    "names must be); rename one"
                )
        if self.data.synthetic is not None:
            unknown_sizes = [t for t in self.data.synthetic.sizes if t not in known]
            if unknown_sizes:
                raise ValueError(
                    f"data.synthetic.sizes names tasks the study does not have {unknown_sizes}; tasks: {', '.join(ids)}"
                )
        for where, names in (
            ("training.loss_weights", list(self.training.loss_weights)),
            ("analysis.representative_tasks", self.analysis.representative_tasks),
        ):
            unknown = [n for n in names if n not in known]
            if unknown:
                raise ValueError(f"{where} names unknown tasks {unknown}; tasks: {', '.join(ids)}")
        if self.training.augmentation.geometric:  # else every job of such a task fails once it has started
            moveless = [t for t in self.tasks if get_task_type(t.type).target_geometry not in GEOMETRIES]
            if moveless:
                kinds = ", ".join(sorted({f"{t.type!r} (target_geometry {get_task_type(t.type).target_geometry!r})"
                                          for t in moveless}))  # fmt: skip
                raise ValueError(
                    f"training.augmentation: flip, scale and rotation have no target transform for task(s) "
                    f"{', '.join(t.id for t in moveless)} of type {kinds}; one of {', '.join(GEOMETRIES)} is needed: "
                    "set hflip_p, scale_p and rotate_p to 0 for a study with them, or give the type a "
                    "target_geometry"
                )
        unused = sorted(set(self.paradigm_settings) - set(self.paradigms))
        if unused:
            raise ValueError(f"paradigm_settings names {unused}, which `paradigms` does not run")
        if self.groups is not None:  # loading copies the mapping onto each task (load.py); checked, never rewritten
            for group, tids in self.group_members().items():  # raises on a bad grouping
                for tid in tids:
                    if self.task(tid).group != group:
                        raise ValueError(
                            f"task {tid!r} has group {self.task(tid).group!r} but groups.{group} lists it; "
                            "load the spec with usagg.spec.load.load_study, which takes each task's group from "
                            "`groups`, or make the two agree"
                        )
        why = self._settings_make_sense() or check_paradigms(self)  # each paradigm's own `check` (usagg/paradigms.py)
        names = [e.name for e in self.expect]
        why = why or next((p for e in self.expect if (p := e.problem(self.tasks))), None)
        if not why and len(set(names)) != len(names):
            why = f"expect: names must differ, {sorted({n for n in names if names.count(n) > 1})} repeat"
        if why:
            raise ValueError(why)
        return self

    def _settings_make_sense(self) -> str | None:
        """Settings each valid alone but meaningless together, as one message naming the fields and the fix."""
        training = self.training
        if training.warmup_epochs > training.epochs:
            return (
                f"training.warmup_epochs ({training.warmup_epochs:g}) exceeds training.epochs ({training.epochs}): "
                "the learning rate would never reach its set value; use a warm-up shorter than the run "
                "(e.g. 1, or 0 for none)"
            )
        if all(training.loss_weights.get(t.id, 1.0) == 0 for t in self.tasks):
            return (
                "training.loss_weights: every task's weight is 0, so no job would learn anything; give at least "
                "one task a positive weight (tasks not named weigh 1)"
            )
        for name, opts in self.paradigm_settings.items():
            groups = opts.get("groups")
            if isinstance(groups, int) and groups > len(self.tasks):
                return (
                    f"paradigms: {name}: groups {groups} exceeds the study's {len(self.tasks)} tasks (a group needs "
                    f"a task); use at most {len(self.tasks)}, or leave groups out for the number of clinical groups"
                )
        baseline = self.analysis.baseline  # TS, the default, may be absent: a study can run its other paradigms alone
        if baseline != AnalysisSpec.model_fields["baseline"].default and baseline not in self.paradigms:
            return (
                f"analysis.baseline {baseline!r} is not among the paradigms the study runs "
                f"({', '.join(self.paradigms)}): Δ is measured against the baseline's jobs; add {baseline} to "
                "`paradigms` or choose one of them"
            )
        for name in self.analysis.primary or ():
            if name == baseline:
                return (
                    f"analysis.primary names the baseline {name}: Δm is measured against it; name the paradigms "
                    f"compared with it ({', '.join(p for p in self.paradigms if p != baseline)})"
                )
            if name not in self.paradigms:
                return (
                    f"analysis.primary names {name!r}{suggest(name, self.paradigms)}, which the study does not run "
                    f"(paradigms: {', '.join(self.paradigms)}); a primary test is the Δm of a paradigm the study "
                    "compares with the baseline"
                )
        for i, t in enumerate(self.tasks):
            why = scale_problem(self.analysis.scale, t.metric or get_task_type(t.type).primary_metric)
            if why:
                return f"analysis.scale: {self.analysis.scale} does not fit tasks[{i}] ({t.id}): {why}"
        return None

    def task(self, task_id: str) -> TaskSpec:
        """The task with this id (KeyError naming the known ids otherwise)."""
        for t in self.tasks:
            if t.id == task_id:
                return t
        raise KeyError(f"no task {task_id!r}; tasks: {', '.join(t.id for t in self.tasks)}")

    def group_members(self) -> dict[str, list[str]]:
        """Clinical group -> task ids, every task in exactly one group (raises ValueError otherwise)."""
        ids = [t.id for t in self.tasks]
        if self.groups is None:
            missing = [f"tasks[{i}] ({t.id})" for i, t in enumerate(self.tasks) if not t.group]
            if missing:
                raise ValueError(
                    f"every task needs a clinical group (CG and CGD train one model per group; AG counts them "
                    f"unless `paradigm_settings: {{AG: {{groups: K}}}}` is set): set `group` on {', '.join(missing)}, "
                    "or give the study a `groups` mapping"
                )
            members: dict[str, list[str]] = {}
            for t in self.tasks:
                if t.group is not None:  # every task has one: `missing` is empty
                    members.setdefault(t.group, []).append(t.id)
            return members
        seen: dict[str, str] = {}
        for g, tids in self.groups.items():
            if not tids:
                raise ValueError(f"groups.{g} is empty; a group needs at least one task")
            for tid in tids:
                if tid not in ids:
                    close = difflib.get_close_matches(tid, ids, n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise ValueError(f"groups.{g} names unknown task {tid!r}{hint}; tasks: {', '.join(ids)}")
                if tid in seen:
                    raise ValueError(
                        f"task {tid!r} is in two groups, groups.{seen[tid]} and groups.{g}; "
                        "a task belongs to exactly one group"
                    )
                seen[tid] = g
        ungrouped = [i for i in ids if i not in seen]
        if ungrouped:
            raise ValueError(f"groups leaves tasks in no group: {ungrouped}; every task must be in exactly one")
        return {g: [i for i in ids if i in set(t)] for g, t in self.groups.items()}
