"""The study spec as pydantic models: every setting a study YAML may hold.

Field descriptions are the documentation (`usagg schema` exports them as JSON
Schema, docs/spec.md lists them). Unknown keys are errors everywhere.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from usagg.execute.registry import EXECUTORS
from usagg.model.zoo import BACKBONES
from usagg.names import unknown_name
from usagg.paradigms import check_paradigm, paradigm_names
from usagg.tasktypes import builtin_task_types, get_task_type

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=80)]
ParadigmName = Annotated[str, AfterValidator(check_paradigm)]


def _check_executor(name: str) -> str:
    if name not in EXECUTORS:
        raise ValueError(unknown_name("executor", name, list(EXECUTORS)))
    return name


ExecutorName = Annotated[str, AfterValidator(_check_executor)]


class Strict(BaseModel):
    """Base: unknown keys are errors, values are checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TaskSpec(Strict):
    """One task: what it predicts and how it is scored."""

    id: Name = Field(description="Task id, as in the dataset CSVs' `task_id` column.")
    type: str = Field(
        description="Task type, one registered in usagg/tasktypes/ or by a plug-in (built in: "
        + ", ".join(t.name for t in builtin_task_types())
        + ").",
        json_schema_extra={"examples": [t.name for t in builtin_task_types()]},
    )
    num_classes: int = Field(
        ge=1,
        description="What it counts depends on the type: "
        + "; ".join(f"{t.name}: {t.num_classes_meaning}" for t in builtin_task_types())
        + ".",
    )
    group: Name | None = Field(
        None,
        description="Clinical group (CG trains one model per group). When the study gives `groups`, "
        "loading sets this from that mapping, so after loading it is always the task's clinical group.",
    )
    metric: str | None = Field(
        None,
        description="Primary metric for Δ versus TS; default: the type's first metric ("
        + ", ".join(f"{t.name}: {t.primary_metric}" for t in builtin_task_types())
        + ").",
    )

    @field_validator("type")
    @classmethod
    def _registered_type(cls, v: str) -> str:
        get_task_type(v)  # ValueError naming the registered types
        return v

    @model_validator(mode="after")
    def _default_metric(self) -> TaskSpec:
        if self.metric is None:
            self.metric = get_task_type(self.type).primary_metric
        return self

    @field_validator("num_classes")
    @classmethod
    def _classes_fit_type(cls, v: int, info: ValidationInfo) -> int:
        kind = info.data.get("type")
        problem = None if kind is None else get_task_type(kind).check_num_classes(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("metric")
    @classmethod
    def _metric_fits_type(cls, v: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("type")
        allowed = get_task_type(kind).metric_names if kind is not None else ()
        if v is not None and allowed and v not in allowed:
            close = difflib.get_close_matches(v, list(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"metric {v!r} is not a {kind} metric{hint}; allowed: {', '.join(allowed)}")
        return v


class CatalogRef(Strict):
    """Take tasks from a catalog: one shipped with usagg by name (`fmc_uia`, `synthetic`) or a YAML file."""

    catalog: Path = Field(
        description="A packaged catalog's name (usagg/catalogs/: fmc_uia, synthetic), or a catalog YAML with a "
        "`tasks:` list, relative to the study file."
    )
    include: list[str] | None = Field(
        None, description="Keep only these catalog task ids, in catalog order (default: all); unknown ids are errors."
    )
    exclude: list[str] = Field(default_factory=list, description="Drop these catalog task ids; unknown ids are errors.")


class SynthSpec(Strict):
    """Settings of the built-in synthetic ultrasound benchmark (`usagg synth`)."""

    seed: int = Field(0, description="Generator seed: the same seed gives the same images.")
    image_size: int = Field(128, ge=32, le=1024, description="Side of the generated square images, px.")
    sizes: dict[str, Annotated[int, Field(ge=4)]] = Field(
        default_factory=dict,
        description="Training images per synthetic task id (tasks not named get `default_size`).",
    )
    default_size: int = Field(120, ge=4, description="Training images of a task not named in `sizes`.")
    val_size: int = Field(40, ge=2, description="Images per task in the generated `val` split.")
    out: Path | None = Field(
        None, description="Where to write the data (default: a folder in the cache keyed by these settings)."
    )


class DataSpec(Strict):
    """Where the images come from and how they are split."""

    root: Path | None = Field(None, description="Dataset root in the FMC_UIA layout (train/, val/).")
    synthetic: SynthSpec | None = Field(None, description="Generate the synthetic benchmark instead of `root`.")
    test_split: Literal["val", "train"] = Field(
        "val",
        description="Where test images come from: the dataset's `val` folder, or carved from `train` "
        "(deterministic, seeded by `split_seed`, stratified by class where the type has classes, "
        "same for every paradigm).",
    )
    test_fraction: float = Field(0.2, gt=0, lt=1, description="Share of train held out as test when test_split=train.")
    selection_fraction: float = Field(
        0.1, ge=0, lt=1, description="Share of the training pool held out for model selection (0: none)."
    )
    split_seed: int = Field(0, description="Seed of the test and selection splits (not of the job).")
    cache_dir: Path | None = Field(
        None, description="Decode cache and synthetic data (default: $USAGG_CACHE or ~/.cache/usagg)."
    )
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes.")
    leakage: Literal["error", "warn", "off"] = Field(
        "error",
        description="Near duplicates between train and test (val) images: a problem that blocks the run (error), "
        "a warning (warn), or not searched (off). The same file or the same decoded pixels in both splits is "
        "always an error.",
    )
    near_duplicate_threshold: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Similarity (1 - Hamming distance / 1024 of a 32x32 difference hash of the grayscale image) "
        "from which a test image and a training image count as near duplicates; re-saved, resized or "
        "brightened copies score above 0.92, unrelated frames rarely above 0.85.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        if (self.root is None) == (self.synthetic is None):
            raise ValueError("give exactly one of `root` (an FMC_UIA folder) or `synthetic` (generator settings)")
        return self


class MoESpec(Strict):
    """Task-conditioned Mixture-of-Experts in the later encoder blocks (CG and AU only)."""

    blocks: list[Annotated[int, Field(ge=0)]] | None = Field(
        None, description="Block indices (0-based) whose MLP becomes MoE; default the later half."
    )
    experts: int = Field(8, ge=1, le=64, description="Experts per MoE block.")
    top_k: int = Field(2, ge=1, description="Experts chosen per token.")
    router_input: Literal["token_task", "task"] = Field(
        "token_task", description="Router sees the token plus a learned task embedding, or the task embedding alone."
    )
    aux_loss_weight: float = Field(0.01, ge=0, description="Weight of the load-balancing loss.")
    init_noise: float = Field(0.01, ge=0, description="Relative noise added to experts copied from the dense MLP.")

    @field_validator("top_k")
    @classmethod
    def _k_le_e(cls, v: int, info: ValidationInfo) -> int:
        experts = info.data.get("experts")
        if experts is not None and v > experts:
            raise ValueError(f"top_k ({v}) cannot exceed experts ({experts})")
        return v


class HeadSpec(Strict):
    """The task heads on the encoder's spatial feature maps."""

    feature_blocks: list[Annotated[int, Field(ge=0)]] | None = Field(
        None, description="Encoder blocks whose outputs feed the heads; default 4 evenly spaced, the last included."
    )
    decoder_channels: int = Field(64, ge=8, description="Width of the DPT-style mask decoder.")
    hidden: int = Field(256, ge=8, description="Hidden width of the MLP heads (class, box and keypoint heads).")
    keypoints: Literal["heatmap", "direct"] = Field(
        "heatmap", description="Keypoint head: heatmaps with soft-argmax, or coordinates predicted directly."
    )


class ModelSpec(Strict):
    """M2DINO: one architecture for every paradigm."""

    backbone: str = Field("dinov3_small", description=f"One of: {', '.join(BACKBONES)}.")
    weights: Path | None = Field(
        None, description="Local official DINOv3 checkpoint; none means random initialisation (logged loudly)."
    )
    image_size: int = Field(224, ge=32, le=2048, description="Input side in px, a multiple of 16.")
    frozen_blocks: int | None = Field(
        None, ge=0, description="Encoder blocks frozen from the start (with the patch embedding); default half."
    )
    moe: MoESpec = Field(default_factory=MoESpec, description="Mixture-of-Experts blocks (used by CG and AU only).")
    heads: HeadSpec = Field(default_factory=HeadSpec, description="Task heads.")

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, v: str) -> str:
        if v not in BACKBONES:
            raise ValueError(unknown_name("backbone", v, list(BACKBONES)))
        return v

    @field_validator("image_size")
    @classmethod
    def _multiple_of_16(cls, v: int) -> int:
        if v % 16:
            raise ValueError(f"image_size must be a multiple of 16 (the patch size), got {v}")
        return v

    @field_validator("frozen_blocks")
    @classmethod
    def _frozen_in_range(cls, v: int | None, info: ValidationInfo) -> int | None:
        backbone = info.data.get("backbone")
        if v is not None and backbone in BACKBONES and v > BACKBONES[backbone].depth:
            raise ValueError(f"frozen_blocks {v} exceeds the {BACKBONES[backbone].depth} blocks of {backbone}")
        return v

    @field_validator("moe", "heads")
    @classmethod
    def _blocks_in_range(cls, v: MoESpec | HeadSpec, info: ValidationInfo) -> MoESpec | HeadSpec:
        backbone = info.data.get("backbone")
        if backbone not in BACKBONES:
            return v
        depth = BACKBONES[backbone].depth
        name = "blocks" if isinstance(v, MoESpec) else "feature_blocks"
        bad = [b for b in getattr(v, name) or [] if b >= depth]
        if bad:
            raise ValueError(f"{name} {bad} out of range: {backbone} has blocks 0..{depth - 1}")
        return v

    @property
    def depth(self) -> int:
        return BACKBONES[self.backbone].depth

    def resolved_frozen_blocks(self) -> int:
        return self.depth // 2 if self.frozen_blocks is None else self.frozen_blocks

    def resolved_moe_blocks(self) -> list[int]:
        return list(range(self.depth // 2, self.depth)) if self.moe.blocks is None else sorted(set(self.moe.blocks))

    def resolved_feature_blocks(self) -> list[int]:
        if self.heads.feature_blocks is not None:
            return sorted(set(self.heads.feature_blocks))
        d = self.depth
        return sorted({max(0, round(d * (i + 1) / 4) - 1) for i in range(4)})


class TrainingSpec(Strict):
    """Optimisation, identical across TS, CG and AU."""

    epochs: int = Field(20, ge=1, description="Training epochs.")
    steps_per_epoch: int | None = Field(
        None, ge=1, description="Batches per epoch; default: the job's training images / batch_size."
    )
    batch_size: int = Field(16, ge=1, description="Images per batch; every batch holds one task.")
    eval_batch_size: int = Field(32, ge=1, description="Images per batch at evaluation.")
    optimizer: Literal["adamw"] = Field("adamw", description="Optimiser.")
    lr_encoder: float = Field(1e-4, gt=0, description="Learning rate of the trainable encoder blocks and MoE.")
    lr_heads: float = Field(1e-3, gt=0, description="Learning rate of the heads and task embeddings.")
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay.")
    schedule: Literal["cosine", "constant"] = Field("cosine", description="Learning-rate schedule after warm-up.")
    warmup_epochs: float = Field(1.0, ge=0, description="Linear warm-up length in epochs.")
    sampling: Literal["uniform", "proportional", "temperature"] = Field(
        "uniform", description="Which task each batch comes from: uniform, proportional to size, or size^(1/T)."
    )
    temperature: float = Field(2.0, gt=0, description="T of temperature sampling.")
    loss_weights: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict, description="Per-task loss weight (task id -> weight; default 1)."
    )
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="auto: bf16 autocast on CUDA, fp32 on CPU.")
    grad_clip: float | None = Field(1.0, gt=0, description="Gradient norm clip; null for none.")
    selection: Literal["best", "last"] = Field(
        "best", description="Keep the epoch with the best mean primary metric on the selection split, or the last."
    )


class SlurmSpec(Strict):
    """Slurm parameters passed to submitit."""

    partition: str | None = Field(None, description="Slurm partition.")
    account: str | None = Field(None, description="Slurm account.")
    qos: str | None = Field(None, description="Slurm QOS.")
    time_min: int = Field(240, ge=1, description="Wall-time limit per job, minutes.")
    gpus_per_node: int = Field(1, ge=0, description="GPUs per job.")
    cpus_per_task: int = Field(8, ge=1, description="CPU cores per job.")
    mem_gb: int = Field(32, ge=1, description="Memory per job, GiB.")
    array_parallelism: int = Field(16, ge=1, description="Jobs of the array running at once.")
    max_requeue: int = Field(3, ge=0, description="Requeues after pre-emption or time-out.")
    additional: dict[str, str] = Field(default_factory=dict, description="Extra sbatch parameters.")


class ExecutionSpec(Strict):
    """Where jobs run."""

    executor: ExecutorName = Field(
        "local",
        description="A registered executor (usagg/execute/registry.py): "
        + "; ".join(f"{e.name}: {e.description}" for e in EXECUTORS.values())
        + ".",
    )
    devices: Literal["auto", "cpu", "cuda"] | list[Annotated[int, Field(ge=0)]] = Field(
        "auto", description="auto (every visible GPU, else CPU), cpu, cuda, or a list of GPU indices."
    )
    threads: int | None = Field(None, ge=1, description="CPU threads per job (default: torch's choice).")
    slurm: SlurmSpec = Field(default_factory=SlurmSpec, description="Slurm settings (executor: slurm).")


class AnalysisSpec(Strict):
    """What `compare`, `plot` and `report` emphasise."""

    baseline: str = Field("TS", description="Paradigm Δ is measured against (a registered paradigm).")
    representative_tasks: list[str] = Field(
        default_factory=list, description="Tasks of the absolute-performance figure (default: one per type)."
    )
    regime_threshold: int = Field(
        1000, ge=1, description="n_train below this is the low-data regime, at or above it data-rich."
    )
    bootstrap: int = Field(10000, ge=100, description="Bootstrap resamples for confidence intervals.")
    bootstrap_seed: int = Field(0, description="Seed of the bootstrap, so intervals are reproducible.")

    @field_validator("baseline")
    @classmethod
    def _registered_baseline(cls, v: str) -> str:
        return check_paradigm(v)


class Study(Strict):
    """A whole task-aggregation study."""

    name: Name = Field(description="Study name; the run store is <output_root>/<name>.")
    output_root: Path = Field(
        Path("runs"), description="Folder holding run stores (relative paths are from the current directory)."
    )
    seeds: list[int] = Field([0], min_length=1, description="Training seeds; every job is repeated per seed.")
    fractions: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        [1.0], min_length=1, description="Shares of each task's training set (nested, seeded subsets)."
    )
    paradigms: list[ParadigmName] = Field(
        ["TS", "CG", "AU"],
        min_length=1,
        description=f"Paradigms to run, registered in usagg/paradigms.py (built in: {', '.join(paradigm_names())}).",
        json_schema_extra={"examples": [paradigm_names()]},
    )
    data: DataSpec = Field(description="Dataset: an FMC_UIA folder (`root`) or the synthetic benchmark.")
    tasks_from: CatalogRef | None = Field(None, description="Take tasks from a catalog file.")
    tasks: list[TaskSpec] = Field(
        default_factory=list, description="Tasks (added to, and overriding by id, those of `tasks_from`)."
    )
    groups: dict[Name, list[str]] | None = Field(
        None, description="Clinical groups for CG: group -> task ids; default: each task's `group`."
    )
    singleton_groups: Literal["run", "skip"] = Field(
        "run",
        description="A CG group with one task: run it (same data as TS but MoE on, so Δ isolates MoE) or skip it.",
    )
    model: ModelSpec = Field(default_factory=ModelSpec, description="M2DINO settings, the same for every paradigm.")
    training: TrainingSpec = Field(
        default_factory=TrainingSpec, description="Optimisation settings, the same for every paradigm."
    )
    execution: ExecutionSpec = Field(
        default_factory=ExecutionSpec, description="Where jobs run; never changes a result or a job id."
    )
    analysis: AnalysisSpec = Field(
        default_factory=AnalysisSpec, description="What the analysis emphasises; never changes a job id."
    )

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
        if self.tasks_from is None and not self.tasks:
            raise ValueError("tasks is empty: the study has no tasks; give `tasks` or `tasks_from`")
        if self.tasks_from is not None:
            return self  # cross-checks run again once the catalog is resolved
        known = set(ids)
        for where, names in (
            ("training.loss_weights", list(self.training.loss_weights)),
            ("analysis.representative_tasks", self.analysis.representative_tasks),
        ):
            unknown = [n for n in names if n not in known]
            if unknown:
                raise ValueError(f"{where} names unknown tasks {unknown}; tasks: {', '.join(ids)}")
        if "CG" in self.paradigms or self.groups is not None:
            members = self.group_members()  # raises on a bad grouping
            if self.groups is not None:  # the mapping wins: task.group is always the clinical group
                for group, tids in members.items():
                    for tid in tids:
                        task = self.task(tid)
                        if task.group != group:
                            task.group = group
        return self

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
                    f"CG needs a clinical group for every task: set `group` on {', '.join(missing)}, "
                    "or give a `groups` mapping"
                )
            members: dict[str, list[str]] = {}
            for t in self.tasks:
                members.setdefault(t.group, []).append(t.id)  # type: ignore[arg-type]
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
