"""`expect:`: the results a study is meant to show, as bounds its results are checked against."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from usagg.names import suggest
from usagg.spec.jobhash import NOT_IN_HASH
from usagg.spec.models.base import ParadigmName, Strict
from usagg.spec.models.tasks import TaskSpec
from usagg.tasktypes import get_task_type, task_type_names


class TaskSelection(Strict):
    """Tasks chosen by what they are rather than by id; every key given must hold."""

    type: Annotated[str | None, NOT_IN_HASH] = Field(None, description="Tasks of this type (e.g. classification).")
    group: Annotated[str | None, NOT_IN_HASH] = Field(None, description="Tasks of this clinical group.")


class DeltaRef(Strict):
    """Which Δ % versus the baseline an expectation bounds."""

    paradigm: Annotated[ParadigmName, NOT_IN_HASH] = Field(description="The paradigm whose Δ is meant.")
    task: Annotated[str | None, NOT_IN_HASH] = Field(
        None, description="One task's Δ (default: every task `tasks` selects)."
    )
    versus: Annotated[ParadigmName | None, NOT_IN_HASH] = Field(
        None,
        description="Bound Δ of `paradigm` minus Δ of this paradigm (percentage points), e.g. AU versus CG; its "
        "interval pairs the seed differences over the seeds both ran and adds a test-set bootstrap over each "
        "paradigm's own seeds (one shared seed: that bootstrap alone).",
    )


class Expectation(Strict):
    """A result the study is meant to show, checked by `usagg compare` and the report (usagg/analysis/expect.py).

    Exactly one of `metric_of` (the absolute metric of a paradigm), `delta` (Δ % versus the baseline) or
    `ag_groups` (the grouping AG chose). Over several tasks it is met when every task meets it; a task without a
    result (its job did not run) makes it "not evaluated", never met. Values are at the largest fraction, seeds
    averaged.
    """

    name: Annotated[str, NOT_IN_HASH] = Field(
        min_length=1, max_length=120, description="What the expectation says, as the tables print it."
    )
    metric_of: Annotated[ParadigmName | None, NOT_IN_HASH] = Field(
        None, description="Bound this paradigm's metric (e.g. TS) on each task `tasks` selects."
    )
    delta: Annotated[DeltaRef | None, NOT_IN_HASH] = Field(
        None, description="Bound Δ % of a paradigm versus the baseline, e.g. {paradigm: CG, task: breast_lesion}."
    )
    ag_groups: Annotated[list[list[str]] | None, NOT_IN_HASH] = Field(
        None, description="The grouping AG should find, as lists of task ids, e.g. [[a, b], [c, d]]."
    )
    tasks: Annotated[list[str] | TaskSelection | None, NOT_IN_HASH] = Field(
        None,
        description="The tasks of metric_of or delta: a list of ids, or {type: ...} and/or {group: ...} "
        "(default: every task).",
    )
    metric: Annotated[str | None, NOT_IN_HASH] = Field(
        None, description="With metric_of: which metric (default: each task's primary metric)."
    )
    above: Annotated[float | None, NOT_IN_HASH] = Field(None, description="Met when the value is above this.")
    below: Annotated[float | None, NOT_IN_HASH] = Field(None, description="Met when the value is below this.")
    min_adjusted_rand: Annotated[float | None, NOT_IN_HASH] = Field(
        None,
        ge=-1,
        le=1,
        description="With ag_groups: met when the adjusted Rand index of AG's grouping against it, averaged over "
        "the seeds AG ran, is at least this.",
    )
    require: Annotated[Literal["value", "interval"], NOT_IN_HASH] = Field(
        "value",
        description="value: met when the seed mean clears the bounds; interval: only when its whole 95 % interval "
        "does (a sign that survives the seeds), not evaluated where there is no interval.",
    )

    @field_validator("name")
    @classmethod
    def _printable_name(cls, v: str) -> str:
        """Tables, the terminal and report.md print the name: an escape sequence there would act on the terminal, and
        a formula in a CSV table on a spreadsheet."""
        from usagg.safepath import control_characters

        bad = control_characters(v)
        if bad:
            raise ValueError(f"{v[:80]!r} contains control characters ({', '.join(bad)}); a name is printable text")
        if v.startswith(("=", "+", "-", "@")):  # as usagg/analysis/results.py FORMULA_START (the spec is below it)
            raise ValueError(
                f"{v[:80]!r} begins with {v[0]!r}; start the name with a letter or digit: the CSV tables print it, "
                "and a spreadsheet reads a cell beginning with = + - or @ as a formula"
            )
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> Expectation:
        kinds = [k for k in ("metric_of", "delta", "ag_groups") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                f"expectation {self.name!r}: give exactly one of metric_of, delta or ag_groups, got "
                f"{', '.join(kinds) or 'none'}"
            )
        bounds = self.above is not None or self.below is not None
        if self.ag_groups is not None:
            extra = bounds or self.tasks is not None or self.metric is not None or self.require != "value"
            if self.min_adjusted_rand is None or extra:
                raise ValueError(
                    f"expectation {self.name!r}: ag_groups takes min_adjusted_rand and nothing else "
                    "(no above, below, tasks, metric or require)"
                )
            return self
        if not bounds or self.min_adjusted_rand is not None:
            raise ValueError(f"expectation {self.name!r}: {kinds[0]} needs `above` and/or `below` (a number)")
        if self.above is not None and self.below is not None and self.above >= self.below:
            raise ValueError(f"expectation {self.name!r}: above ({self.above:g}) must be less than below")
        if self.metric is not None and self.metric_of is None:
            raise ValueError(f"expectation {self.name!r}: `metric` goes with metric_of (Δ is of the primary metric)")
        if self.delta is not None and self.delta.task is not None and self.tasks is not None:
            raise ValueError(f"expectation {self.name!r}: give delta.task or tasks, not both")
        return self

    def paradigm(self) -> str:
        """The paradigm whose results it reads (with delta.versus, also that one's)."""
        return self.metric_of or (self.delta.paradigm if self.delta is not None else "AG")

    def task_ids(self, tasks: list[TaskSpec]) -> list[str]:
        """The study's tasks it covers, in study order."""
        if self.ag_groups is not None:
            return [t for g in self.ag_groups for t in g]
        if self.delta is not None and self.delta.task is not None:
            return [self.delta.task]
        if isinstance(self.tasks, list):
            return list(self.tasks)
        sel = self.tasks or TaskSelection()
        return [t.id for t in tasks if sel.type in (None, t.type) and sel.group in (None, t.group)]

    def problem(self, tasks: list[TaskSpec]) -> str | None:
        """Why it names a task, type, group or metric the study does not have, or None. A registered paradigm the
        study does not run is no error (a `--set paradigms=...` run may leave it out): it is not evaluated."""
        where = f"expect: {self.name!r}"
        by_id = {t.id: t for t in tasks}
        sel = self.tasks if isinstance(self.tasks, TaskSelection) else None
        if sel is not None and sel.type is not None and sel.type not in task_type_names():
            known = task_type_names()
            return (
                f"{where} selects tasks of type {sel.type!r}{suggest(sel.type, known)}; task types: {', '.join(known)}"
            )
        # A type or group the study has no task of (a narrowed copy of a spec) selects nothing: not evaluated.
        ids = self.task_ids(tasks)
        unknown = [t for t in ids if t not in by_id]
        if unknown:
            hint = suggest(unknown[0], list(by_id))
            return f"{where} names unknown task {unknown[0]!r}{hint}; tasks: {', '.join(by_id)}"
        if len(set(ids)) != len(ids):
            return f"{where} names a task twice: {sorted({t for t in ids if ids.count(t) > 1})}"
        for tid in ids if self.metric is not None else ():
            allowed = get_task_type(by_id[tid].type).metric_names
            if self.metric not in allowed:
                return (
                    f"{where} names metric {self.metric!r}{suggest(str(self.metric), list(allowed))}, which task "
                    f"{tid} ({by_id[tid].type}) does not report; its metrics: {', '.join(allowed)}"
                )
        return None
