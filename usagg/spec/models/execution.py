"""`execution:`: where jobs run (executor, devices, workers, Slurm); never part of a job id."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator

from usagg.execute.registry import EXECUTORS, executor_names
from usagg.names import unknown_name
from usagg.spec.jobhash import NOT_IN_HASH
from usagg.spec.models.base import Strict


def _check_executor(name: str) -> str:
    known = executor_names()  # plug-ins loaded first
    if name not in known:
        raise ValueError(unknown_name("executor", name, known) + EXECUTORS.hint)
    return name


ExecutorName = Annotated[str, AfterValidator(_check_executor)]


#: sbatch long options `execution.slurm.additional` may set (submitit writes `#SBATCH --key=value`, `_` as `-`);
#: the ones usagg sets itself (time, partition, array, output, ...) are fields of SlurmSpec instead.
SBATCH_EXTRA_KEYS = (
    "begin", "comment", "constraint", "cpus_per_gpu", "exclude", "exclusive", "gpu_bind", "gpus",
    "gpus_per_task", "gres", "hint", "licenses", "mail_type", "mail_user", "mem_per_cpu", "mem_per_gpu", "nice",
    "nodelist", "prefer", "requeue", "reservation", "switches", "time_min", "wckey",
)  # fmt: skip
#: sbatch options usagg refuses, and why: `--signal` replaced submitit's own (USR2 90 s before the time limit, which
#: checkpoints the job and requeues it; submitit handles no other signal), so a job reaching its limit was killed
#: with nothing saved; `--clusters` put the array where usagg's sacct and squeue calls do not look.
SBATCH_RESERVED = {
    "clusters": "multi-cluster submission is not supported: usagg follows the array with sacct, squeue and scancel "
    "on this cluster, which do not see a job sbatch -M put on another (it would wait for it forever, and submit it "
    "again); run usagg from a login node of that cluster instead",
    "signal": "submitit asks Slurm for USR2 90 s before the time limit and then checkpoints and requeues the job "
    "(it handles no other signal), so another --signal kills a job at its limit with nothing saved; raise "
    "execution.slurm.time_min or execution.slurm.max_requeue instead",
}
#: A Slurm name (partition, account, QOS; comma lists allowed): nothing a shell or sbatch would read as syntax.
SlurmName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.+@%:,-]+$", max_length=128)]
#: A value of an extra sbatch option: printable, one line, with Slurm's own syntax (a feature expression's `&`, `|`,
#: `[]`, `*`, `()`, `!`; a hostlist's `node[01-04]`), which submitit shell-quotes and sbatch's `#SBATCH` reader takes
#: quoted; no `#`, quote, `$`, backtick, `;` or control character.
SlurmValue = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.+@%:,=/ |&\[\]*!()-]*$", max_length=256)]
#: sbatch options written as a bare flag (`#SBATCH --requeue`) by `key: true`: `requeue` takes no value (a string
#: would be `--requeue=''`, which sbatch refuses), `exclusive` a value or none.
SBATCH_FLAGS = {"requeue": "flag", "exclusive": "flag or value"}


def _check_sbatch_keys(extra: dict[str, str | Literal[True]]) -> dict[str, str | Literal[True]]:
    for key, value in extra.items():
        if key in SBATCH_RESERVED:
            raise ValueError(f"{key!r} cannot be set here: {SBATCH_RESERVED[key]}")
        if key not in SBATCH_EXTRA_KEYS:
            raise ValueError(unknown_name("extra sbatch option", key, list(SBATCH_EXTRA_KEYS)))
        if value is False:  # a Literal[True] lets false through
            raise ValueError(f"{key!r}: false is no sbatch value; write true for the flag, or leave {key!r} out")
        if value is True and key not in SBATCH_FLAGS:
            raise ValueError(f"{key!r} takes a value (--{key.replace('_', '-')}=VALUE), not true")
        if value is not True and SBATCH_FLAGS.get(key) == "flag":
            raise ValueError(f"{key!r} is an sbatch flag without a value: write {key}: true")
    return extra


class SlurmSpec(Strict):
    """Slurm parameters passed to submitit (which writes the sbatch script; no value can become a script line)."""

    partition: Annotated[SlurmName | None, NOT_IN_HASH] = Field(None, description="Slurm partition.")
    account: Annotated[SlurmName | None, NOT_IN_HASH] = Field(None, description="Slurm account.")
    qos: Annotated[SlurmName | None, NOT_IN_HASH] = Field(None, description="Slurm QOS.")
    time_min: Annotated[int, NOT_IN_HASH] = Field(
        240, ge=1, le=525_600, description="Wall-time limit per job, minutes."
    )
    gpus_per_node: Annotated[int, NOT_IN_HASH] = Field(1, ge=0, le=64, description="GPUs per job.")
    cpus_per_task: Annotated[int, NOT_IN_HASH] = Field(8, ge=1, le=1024, description="CPU cores per job.")
    mem_gb: Annotated[int, NOT_IN_HASH] = Field(32, ge=1, le=65_536, description="Memory per job, GiB.")
    array_parallelism: Annotated[int, NOT_IN_HASH] = Field(
        16, ge=1, le=100_000, description="Jobs of the array running at once."
    )
    max_requeue: Annotated[int, NOT_IN_HASH] = Field(
        3, ge=0, le=100, description="Requeues after pre-emption or time-out."
    )
    additional: Annotated[Annotated[dict[str, SlurmValue | bool], AfterValidator(_check_sbatch_keys)], NOT_IN_HASH] = (
        Field(
            default_factory=dict,
            description="Extra sbatch options (key: value), from a known list: "
            + ", ".join(SBATCH_EXTRA_KEYS)
            + "; requeue: true and exclusive: true are written as bare flags.",
        )
    )


class ExecutionSpec(Strict):
    """Where jobs run."""

    executor: Annotated[ExecutorName, NOT_IN_HASH] = Field(
        "local",
        description="A registered executor (usagg/execute/registry.py): "
        + "; ".join(f"{e.name}: {e.description}" for e in EXECUTORS.values())
        + ".",
    )
    devices: Annotated[
        Literal["auto", "cpu", "cuda"] | Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)], NOT_IN_HASH
    ] = Field("auto", description="auto (every visible GPU, else CPU), cpu, cuda, or a list of GPU indices.")
    threads: Annotated[int | None, NOT_IN_HASH] = Field(
        None,
        ge=1,
        le=1024,
        description="CPU threads per job (default: the usable cores divided by the most workers cpu_jobs allows, "
        "whatever the number of jobs left, at most OMP_NUM_THREADS where set, for every CPU job of the local "
        "executor; torch's choice on a GPU and "
        "under Slurm). A CPU job's numbers depend on it (the order of its sums): pin it for the same numbers on "
        "machines with other core counts.",
    )
    accel: Annotated[Literal["eager", "compile", "graphs", "step-graphs", "compiled-step-graphs"], NOT_IN_HASH] = Field(
        "eager",
        description="Launch-overhead mode on CUDA (usagg/engine/accel.py): eager; compile (torch.compile of the "
        "encoder alone); graphs (CUDA graphs per batch shape, torch.compile mode reduce-overhead of the encoder); "
        "step-graphs (each task's whole training step, AdamW included, recorded as one CUDA graph, no compiler; "
        "usagg/engine/step.py); compiled-step-graphs (both: the encoder and heads compiled, the whole step recorded "
        "around their fused kernels; unmeasured on a GPU). Modes the device cannot run fall back with one line: "
        "compile and graphs to eager without Triton, compiled-step-graphs to step-graphs. The CPU always runs eager. "
        "In a steady "
        "loop graphs trained the AU model 3.6x faster than eager on an H200, step-graphs 2.26x on an H100 "
        "(docs/benchmarks.md); the default stays eager until a whole job has matched eager under one of them on a GPU.",
    )
    jobs_per_gpu: Annotated[Annotated[int, Field(ge=1, le=16)] | Literal["auto"], NOT_IN_HASH] = Field(
        "auto",
        description="Jobs run at once on each local GPU, each in its own worker process with its own lock and log "
        "(1..16); auto: one until the GPU's first job (the largest queued) reports its measured peak memory (once "
        "its training settles, else at its end), then as many as fit in the GPU's free memory "
        "(usagg/execute/pool.py), at most the count `make gpu-check` found fastest on this card under this torch "
        "and accel mode where it measured one (usagg/projection.py: <cache>/jobs_per_gpu/<device>.json for "
        "eager, <device>-<accel>.json for another mode, eager's where that mode has none; a damaged or foreign file "
        "is ignored with one warning). No effect on the CPU or under Slurm.",
    )
    cpu_jobs: Annotated[Annotated[int, Field(ge=1, le=64)] | Literal["auto"], NOT_IN_HASH] = Field(
        "auto",
        description="Jobs run at once on the CPU (devices: cpu, or auto without a GPU), each in its own worker "
        "process with its own lock and log (1..64; 1 runs them one after the other in this process). Each worker "
        "uses `threads` torch threads if given, else the usable cores divided by the workers: small models use "
        "intra-op threads poorly, so jobs side by side on one thread each finish sooner than one job on all cores. "
        "The largest jobs start first. auto: the usable cores divided by `threads` (one each without it; at most "
        "one worker per job), lowered when a measured peak resident memory says fewer fit in the available memory "
        "(usagg/execute/pool.py). No effect on GPUs or under Slurm.",
    )
    slurm: Annotated[SlurmSpec, NOT_IN_HASH] = Field(
        default_factory=SlurmSpec, description="Slurm settings (executor: slurm)."
    )

    @field_validator("jobs_per_gpu", "cpu_jobs", mode="before")
    @classmethod
    def _count_not_boolean(cls, v: Any) -> Any:
        """A count or auto: `true` is not 1 (Strict's check skips fields that also take a word)."""
        if isinstance(v, bool):
            raise ValueError(f"expected a number of jobs or 'auto', got {str(v).lower()} (a YAML boolean)")
        return v
