"""What `execution.executor: slurm` needs of the spec and of this host, checked without submitit.

`usagg validate` reports these (a contradiction in the spec is an error, a host that cannot submit a warning) and
`usagg run` refuses them before its data check, so a study that cannot reach Slurm is said to be so in a second,
not after minutes of checking images; usagg/execute/slurm.py refuses them again where it builds the executor.
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from usagg.spec.models import ExecutionSpec


def gpu_request_problem(execution: ExecutionSpec) -> str | None:
    """Why every job would fail on its node: `devices` asks for a GPU and the Slurm settings request none."""
    slurm = execution.slurm
    asks_gpu = execution.devices not in ("auto", "cpu")
    requested = slurm.gpus_per_node > 0 or any(k in slurm.additional for k in ("gres", "gpus", "gpus_per_task"))
    if not asks_gpu or requested:
        return None
    return (
        f"execution.devices is {execution.devices}, but execution.slurm.gpus_per_node is 0 and no gres, gpus or "
        "gpus_per_task is in execution.slurm.additional: Slurm would give the jobs no GPU and each would fail on "
        "its node. Ask for a GPU (gpus_per_node: 1), or set execution.devices to auto or cpu."
    )


def host_problem() -> str | None:
    """Why this host cannot submit the study's jobs to Slurm, or None: no `sbatch` on PATH (not a login node?), or
    `sbatch` without `srun`, which submitit's Slurm executor requires before it submits anything (its automatic
    choice took such a host for no cluster and ran the jobs here as local processes)."""
    to_run_here = "or set execution.executor: local (`--executor local`) to run here."
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        return (
            "execution.executor is slurm, but this host has no `sbatch` on PATH (not a Slurm login node?). "
            f"Run from a node that can submit Slurm jobs, {to_run_here}"
        )
    if shutil.which("srun") is None:
        return (
            f"execution.executor is slurm, and this host has `sbatch` on PATH ({sbatch}) but no `srun`: submitit, "
            "which submits and follows the jobs, requires it on the submitting host (it runs no job here). Put the "
            f"folder of Slurm's commands on PATH (the one holding sbatch normally holds srun), {to_run_here}"
        )
    return None
