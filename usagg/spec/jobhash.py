"""How each spec field enters the job id: declared on the field, read by usagg/plan.py.

A job's id hashes exactly the settings that change its result. Every field of the spec
models carries one `JobHash` marker (`Annotated[type, IN_HASH]`), so a new field has to
say whether it changes results; tests/test_plan.py fails on a field without one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic.fields import FieldInfo

Rule = Literal[
    "yes",
    "no",
    "job",
    "moe_jobs",
    "multi_task",
    "temperature",
    "train_split",
    "content",
    "per_task",
    "task_default",
    "measuring",
    "type_setting",
]

#: What each rule means (docs and the test that every field has a rule read this).
RULES: dict[str, str] = {
    "yes": "in every job's hash (a section: by its own fields' rules)",
    "no": "never in the hash: it changes no result (paths, checks, speed, planning, analysis)",
    "job": "the job's own value: its seed, its fraction, its tasks, its paradigm's unit",
    "moe_jobs": "only in jobs with MoE on",
    "multi_task": "only in jobs with several tasks (mixing tasks does nothing to a one-task job)",
    "temperature": "only in multi-task jobs whose sampling is `temperature`",
    "train_split": "only when test images are carved from train (data.test_split: train)",
    "content": "by the file's content digest (sha256), not its path",
    "per_task": "the job's tasks only, each with its default filled in",
    "task_default": "through the per_task field whose default it is: in the job's tasks that field does not name "
    "(not hashed on its own, so ids made before stay)",
    "measuring": "only in jobs that measure inter-task affinity (they write affinity.json)",
    "type_setting": "only in jobs with a task whose type reads the setting (TaskType.hash_settings), and only when "
    "set to other than its default (the earlier behaviour, so the ids of specs without it stay)",
}

#: The rule in a few words, for the "job id" column of docs/spec.md (usagg/spec/reference.py).
LABELS: dict[str, str] = {
    "yes": "yes",
    "no": "no",
    "job": "the job's own",
    "moe_jobs": "MoE jobs",
    "multi_task": "multi-task jobs",
    "temperature": "with temperature sampling",
    "train_split": "with test_split train",
    "content": "by file content",
    "per_task": "the job's tasks",
    "task_default": "the job's tasks",
    "measuring": "affinity jobs",
    "type_setting": "jobs of the types that read it, when not the default",
}


@dataclass(frozen=True)
class JobHash:
    """A field's part in the job hash: `rule` (a key of RULES); `default` for per_task (a number, or the
    name of a sibling field holding it)."""

    rule: Rule
    default: float | str | None = None


IN_HASH = JobHash("yes")
NOT_IN_HASH = JobHash("no")
JOB_OWN = JobHash("job")
TYPE_SETTING = JobHash("type_setting")


def job_hash_rule(field: FieldInfo) -> JobHash | None:
    """The marker on a pydantic field, or None when the field was declared without one."""
    found = [m for m in field.metadata if isinstance(m, JobHash)]
    return found[-1] if found else None


__all__ = [
    "IN_HASH",
    "JOB_OWN",
    "LABELS",
    "NOT_IN_HASH",
    "RULES",
    "TYPE_SETTING",
    "JobHash",
    "job_hash_rule",
]
