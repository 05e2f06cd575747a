"""metrics.json as a typed record: what the engine writes for a finished job and what every reader checks.

`usagg.engine.job.run_job` builds a `JobMetrics`; the run store (usagg/store/damage.py) validates every
metrics.json it reads through it, so a malformed file is named (file, field, what was expected)
instead of failing somewhere in the analysis. The JSON layout is the one written before this model
existed: the checksum key stays the store's (usagg/atomic.py), unknown extra keys are kept, and the
fields older files or simulated stores (usagg/analysis/simulate.py) lack are optional. The field
reference in docs/metrics.md is generated from these models (usagg/jobmetrics_doc.py). `running_code` is the code a
job of this process records in `training`, `code_changes` what differs from what a done job recorded. Torch-free.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from usagg import NUMERICS_VERSION, __version__
from usagg.errors import DataError
from usagg.registry import loaded_plugins

#: The selection rules every job with a selection split is tested under (`Selection.rules`): the job's best epoch on
#: the selection split (selection_scope model), each task's own best (scope task), the last epoch (selection last).
SELECTION_RULES = ("model", "task", "last")
#: `Selection.rules_note` of a job without a selection split.
NO_SELECTION_SPLIT = "not measured: no selection split (data.selection_fraction 0), so no epoch was ranked"


class _Record(BaseModel):
    """Strict JSON types (no "0.8" for a number, no true for a count); extra keys kept as they are."""

    model_config = ConfigDict(extra="allow", strict=True)

    def to_json(self) -> dict[str, Any]:
        """The JSON content: the keys that were set, in field order, extras kept (metrics.json's checksum is the
        store's to add)."""
        return self.model_dump(mode="json", exclude_unset=True)


class TaskMetrics(_Record):
    """One task's test results (metrics.json `tasks.<task_id>`)."""

    type: str = Field(description="the task's type, as registered in usagg/tasktypes (a plug-in's included)")
    primary: str | None = Field(None, description="the task's primary metric (the one Δ and selection use)")
    metrics: dict[str, float | None] = Field(
        description="metric name -> value on the test split at original resolution; null where undefined (nan, inf)"
    )
    n_train: int | None = Field(None, description="training images of the task in this job (after the fraction)")
    n_test: int | None = Field(None, description="test images scored")
    steps: int | float | None = Field(
        None, description="optimiser steps the task got in this job (all epochs); simulated stores write a float"
    )
    trivial: dict[str, float | None] | None = Field(
        None,
        description="the primary metric on the test split of each trivial predictor of the task's type "
        "(`TaskType.trivial_predictions`: one prediction for every image from the training targets at most, such "
        "as the empty and the all-foreground mask, the whole-image and the mean training box, the mean training "
        "keypoints, the training class frequencies), scored like the model's predictions (null: undefined): the "
        "level the analysis holds the baseline against (a baseline not above it is at chance); absent for a type "
        "that declares none and in files written before it was recorded",
    )


class HistoryEntry(_Record):
    """One epoch of training (metrics.json `history[]`; history.csv holds the same as a table)."""

    epoch: int = Field(ge=1, description="the epoch, from 1")
    step: int | None = Field(None, description="optimiser steps taken by the end of the epoch")
    loss: float | None = Field(
        None, description="mean optimised loss over all batches (loss weights and MoE auxiliary loss included)"
    )
    task_loss: dict[str, float] | None = Field(
        None,
        description="task -> mean of its own head's loss over its batches (unweighted, without auxiliary loss, so a "
        "task's TS and AU curves compare); a task without a batch that epoch has no entry",
    )
    task_aux_loss: dict[str, float] | None = Field(
        None, description="task -> mean MoE auxiliary loss of its batches (MoE jobs only)"
    )
    task_steps: dict[str, int] | None = Field(None, description="task -> optimiser steps it got this epoch")
    select_score: float | None = Field(
        None, description="the job's selection score this epoch (absent without a selection split)"
    )
    select_loss: dict[str, float | None] | None = Field(None, description="task -> loss on the selection split")
    select: dict[str, dict[str, float | None]] | None = Field(
        None, description="task -> primary metric -> value on the selection split"
    )


class RuleChoice(_Record):
    """One selection rule's choice for a task (metrics.json `selection.rules.<task>.<rule>`)."""

    epoch: int | None = Field(None, description="the epoch the rule picks for the task (null: no epoch was scored)")
    test: float | None = Field(
        None,
        description="the task's primary metric on the test split with that epoch's weights; null where undefined or "
        "not tested (a job resumed from a checkpoint older than the record)",
    )


class TaskRules(_Record):
    """A task's test metric under each selection rule (metrics.json `selection.rules.<task>`): the selection gap's
    input, recorded whichever rule the job used (usagg/engine/selecting.py `RuleTests`)."""

    metric: str | None = Field(None, description="the primary metric the values are of")
    model: RuleChoice | None = Field(
        None, description="selection_scope model: the job's best epoch on the selection split (one for all tasks)"
    )
    task: RuleChoice | None = Field(
        None,
        description="selection_scope task: the task's own best epoch (a one-task job: the same as model; a task "
        "without selection images: the last epoch)",
    )
    last: RuleChoice | None = Field(None, description="selection last: the last epoch")


class Selection(_Record):
    """Which epoch's weights were tested, and how they were chosen (metrics.json `selection`)."""

    mode: str = Field(description="`best` (the selected epoch) or `last` (the last epoch's weights)")
    scope: str | None = Field(None, description="`model` (one epoch for the job) or `task` (each task its own)")
    epoch: int | None = Field(None, description="the job's selected epoch; null for scope task")
    epochs: dict[str, int] | None = Field(None, description="task -> the epoch whose weights it was tested with")
    score: float | None = Field(None, description="the selected epoch's selection score (scope model, mode best)")
    rule: str | None = Field(None, description="how epochs are compared, in words")
    warnings: list[str] | None = Field(None, description="what to keep in mind reading the selection (small splits)")
    note: str | None = Field(None, description="present for scope task with mode best: why that is optimistic")
    rules: dict[str, TaskRules] | None = Field(
        None,
        description="task -> its test metric under every selection rule (model, task, last), for the selection gap; "
        "absent without a selection split and in files written before it was recorded",
    )
    rules_note: str | None = Field(None, description="why `rules` is absent (no selection split)")


class LossBalanceRecord(_Record):
    """The loss balance used (metrics.json `training.loss_balance`): its mode and what it learned or fixed."""

    mode: str = Field(description="`equal`, `initial`, `uncertainty` or a registered strategy")
    initial_loss: dict[str, float] | None = Field(None, description="`initial`: task -> its loss at its first batch")
    log_vars: dict[str, float] | None = Field(None, description="`uncertainty`: task -> learned log-variance")
    weights: dict[str, float] | None = Field(None, description="`uncertainty`: task -> exp(-log-variance)")


class TrainingRecord(_Record):
    """How the job trained, and with which code (metrics.json `training`)."""

    epochs: int | None = Field(None, description="epochs trained")
    steps: int | None = Field(None, description="optimiser steps in all")
    steps_per_epoch: int | None = Field(None, description="optimiser steps per epoch")
    sampling: str | None = Field(None, description="`training.sampling` as used")
    loss_balance: LossBalanceRecord | None = Field(None, description="the loss balance and what it learned")
    device: str | None = Field(None, description="the torch device it trained on")
    threads: int | None = Field(
        None,
        description="torch's CPU threads of a CPU job (its numbers depend on them: the order of its sums); null on a "
        "GPU; absent in files written before it was recorded",
    )
    threads_before: int | None = Field(
        None,
        description="the CPU threads its earlier epochs trained on, where a resume ran on another count (its numbers "
        "then differ from an uninterrupted run's); null otherwise",
    )
    precision: str | None = Field(None, description="the compute precision used (fp32, bf16, ...)")
    versions: dict[str, str | None] | None = Field(
        None,
        description="the code that trained it, as its id never says (ids hash settings): `usagg`, `torch`, `timm` -> "
        "its version (null: not found), and `numerics` -> usagg's NUMERICS_VERSION (bumped when what a job trains to "
        "changes; absent before it was recorded: 1); absent in files written before it was recorded",
    )
    plugins: dict[str, str | None] | None = Field(
        None,
        description="every plug-in loaded (usagg/registry.py `loaded_plugins`) -> its version (null: none found): an "
        "entry point's distribution by its name, a `USAGG_PLUGINS` module by its own; `{}` for none; absent in files "
        "written before it was recorded",
    )


class Throughput(_Record):
    """Speed of the job (metrics.json `throughput`): the one section that is not reproducible."""

    train_images_per_s: float | None = Field(
        None, description="training images per second, over every epoch of the job (a resumed one's attempts too)"
    )
    train_seconds: float | None = Field(
        None,
        description="seconds spent training, every epoch of the job across resumed attempts (each epoch counted "
        "once, from the attempt that finished it; affinity measurement included)",
    )
    later_images_per_s: float | None = Field(
        None,
        description="training images per second after this run's first epoch, which holds the warm-up (first "
        "kernels; under step-graphs the eager steps and the recordings): the rate a long job holds; null after one",
    )
    eval_images_per_s: float | None = Field(None, description="test images scored per second")
    wall_seconds: float | None = Field(None, description="seconds the whole job took")
    selection_seconds: float | None = Field(
        None,
        description="seconds scoring the selection split after the epochs, kept weights aside (this run of the job: "
        "since it resumed)",
    )
    keep_seconds: float | None = Field(
        None,
        description="seconds copying the selected epochs' trainable weights into host memory, at each improved epoch "
        "and once at the end when the last epoch is selected (a cost per copy, whatever the images; this run)",
    )
    rule_test_seconds: float | None = Field(
        None, description="seconds of the selection gap's test passes at the rules' epochs (`selection.rules`)"
    )
    checkpoint_seconds: float | None = Field(
        None,
        description="seconds the job waited for last.pt and best.pt, this run: the state gathered and copied to "
        "host memory (a last.pt before the last epoch is checksummed and written in the background while the "
        "next epoch trains, usagg/engine/checkpointing.py), any wait for such a write, the last epoch's files "
        "written in place",
    )
    checkpoint_saves: int | None = Field(
        None, description="checkpoint files written (each last.pt and best.pt), this run"
    )
    accel: str | None = Field(
        None,
        description="the `execution.accel` mode the job trained under, as it ran: the one asked for, or what it fell "
        "back to (eager on a CPU; without Triton, compile and graphs ran eager and compiled-step-graphs step-graphs)",
    )
    replayed_steps: int | None = Field(
        None,
        description="under step-graphs and compiled-step-graphs, the training steps run from a recorded CUDA graph "
        "(the rest ran eagerly: each task's first steps, a batch of another shape, a task whose step could not be "
        "recorded), this run",
    )
    unrecorded_tasks: list[str] | None = Field(
        None,
        description="under step-graphs and compiled-step-graphs, the tasks whose step could not be recorded as a CUDA "
        "graph and ran eagerly (the job's log says why), this run",
    )
    epoch_end_seconds: float | None = Field(
        None,
        description="seconds of the work between epochs, this run: selection, kept weights, rule tests, "
        "history.csv, trackers, checkpoints (training, this and the trunk aside, the rest of `wall_seconds` is per "
        "job: start-up, model build, test evaluation)",
    )


class WeightsInfo(_Record):
    """The encoder weights the job started from (metrics.json `weights`)."""

    weights: str | None = Field(None, description="the weights file loaded; null for a random initialisation")
    random_init: bool | None = Field(None, description="true when the encoder had no pretrained weights")


class JobMetrics(_Record):
    """metrics.json of one job: per task its test metrics, plus how it trained (all but `throughput` reproducible)."""

    job_id: str | None = Field(None, description="the job's id (usagg/plan.py); the folder names it where absent")
    tasks: dict[str, TaskMetrics] = Field(description="task id -> its test results")
    expert_usage: dict[str, list[list[int]]] | None = Field(
        None, description="MoE jobs: task -> per MoE block, tokens routed to each expert on the test split"
    )
    weights: WeightsInfo | None = Field(None, description="the encoder weights the job started from")
    params: dict[str, int] | None = Field(
        None, description="parameter counts: encoder_frozen, encoder_trainable, moe, heads"
    )
    selection: Selection | None = Field(None, description="which epochs were tested and why")
    history: list[HistoryEntry] | None = Field(None, description="one entry per epoch")
    training: TrainingRecord | None = Field(None, description="how the job trained")
    throughput: Throughput | None = Field(None, description="speed (not reproducible)")

    @field_validator("expert_usage")
    @classmethod
    def _usage_matrix(cls, v: dict[str, list[list[int]]] | None) -> dict[str, list[list[int]]] | None:
        """Each task's usage is a blocks x experts matrix of counts (the figure sums it over blocks): rows of one
        length, none negative; a received file's ragged rows would otherwise end `plot` in a traceback."""
        for task, blocks in (v or {}).items():
            if len({len(b) for b in blocks}) > 1:
                raise ValueError(f"{task}: every MoE block lists one count per expert; got rows of lengths "
                                 f"{sorted({len(b) for b in blocks})}")  # fmt: skip
            if any(x < 0 for b in blocks for x in b):
                raise ValueError(f"{task}: a token count below 0")
        return v

    @classmethod
    def parse(cls, data: Any, where: Path | str) -> JobMetrics:
        """Validate a metrics.json's content; DataError naming `where`, the field and what it expected."""
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise DataError(f"{where}: {_describe(err)}") from None


def running_code() -> dict[str, Any]:
    """metrics.json `training.versions` and `training.plugins` of a job run by this process: usagg's version and its
    `NUMERICS_VERSION`, torch's and timm's versions (read from the installed distributions, so nothing is imported)
    and the plug-ins loaded."""
    versions = {
        "usagg": __version__,
        "numerics": str(NUMERICS_VERSION),
        "torch": _installed("torch"),
        "timm": _installed("timm"),
    }
    return {"versions": versions, "plugins": loaded_plugins()}


#: The numerics of a job that recorded `versions` before they held "numerics" (9177720 on): `NUMERICS_VERSION`'s first
#: value, what every job trained to until it was bumped.
FIRST_NUMERICS = "1"


def _installed(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def code_changes(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between the code a done job recorded (its metrics.json `training`) and `now` (`running_code`),
    each in words naming both versions: another usagg numerics version (`NUMERICS_VERSION`: the numbers it trains
    to changed), another usagg minor version, a plug-in of another version, one no longer loaded or newly loaded.
    Only what `recorded` holds is compared; torch and timm are recorded for the report, not compared."""
    out = []
    versions = recorded.get("versions")
    if versions is not None:
        numerics = versions.get("numerics", FIRST_NUMERICS)
        if numerics != now["versions"]["numerics"]:
            out.append(
                f"usagg numerics {numerics} (this run: {now['versions']['numerics']}: what a job trains to changed)"
            )
    was, usagg = (versions or {}).get("usagg"), now["versions"]["usagg"]
    if was is not None and _minor(was) != _minor(usagg):
        out.append(f"usagg {was} (this run: {usagg})")
    plugins, current = recorded.get("plugins"), now["plugins"]
    if plugins is None:
        return out
    for name in sorted(plugins.keys() | current.keys()):
        if name not in current:
            out.append(f"plug-in {name} {plugins[name] or '(no version)'} (not loaded by this run)")
        elif name not in plugins:
            out.append(f"no plug-in {name} (this run loads {name} {current[name] or '(no version)'})")
        elif plugins[name] != current[name]:
            out.append(f"plug-in {name} {plugins[name] or '(no version)'} (this run: {current[name] or 'no version'})")
    return out


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def metrics_problem(data: Any) -> str | None:
    """None for content JobMetrics accepts, else one sentence naming the first bad field and what it expected."""
    try:
        JobMetrics.model_validate(data)
    except ValidationError as err:
        return _describe(err)
    return None


def _describe(err: ValidationError) -> str:
    errors = err.errors()
    first = errors[0]
    field = ".".join(str(p) for p in first["loc"]) or "the top level"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    got = f", got {first['input']!r:.60}" if first["type"] != "missing" else ""
    return f"not a metrics.json this usagg reads: {field}: {first['msg']}{got}{more} (schema: docs/metrics.md)"
