"""Slurm through submitit: one job array per `usagg run`, requeued on pre-emption or time-out.

Each array element calls `SlurmJobCall(fn)(store_root, job_id)` on a node.
The call is `submitit.helpers.Checkpointable`: when Slurm pre-empts the job or
its time runs out, submitit calls `checkpoint`, which releases the job's lock
(the requeued run may land on another host) and resubmits the very same call;
the engine resumes from its own `checkpoints/last.pt`, so nothing else needs
saving. Requeues after time-outs are capped by `SlurmSpec.max_requeue`.
submitit's files (sbatch script, pickles, stdout/stderr) go to a folder of their own per submission,
`<store>/slurm/<date-time>-<random>/` (`<slurm job id>_<task>_log.out` / `.err`), made empty for it: submitit
reads a `<job id>_..._result.pkl` it finds there as the job's result, by unpickling it, so a store received from
elsewhere (or copied from a cluster whose job ids overlap) must never give it one. Tests pass `cluster="local"` to
run the same path as local subprocesses.

What a cluster user meets is a user error or a recorded failure, never a traceback of submitit's: without submitit
installed, importing this module is a UsaggError with the install hint (the registry imports it for a Slurm run
only); sbatch refusing the array (a wrong partition, account or QOS) is a UsaggError quoting sbatch, and the
submission's folder goes, since nothing was queued; a `%` or `\\` in the log folder (Slurm and submitit expand
`%j`, `%a`, ... in it) is refused before anything is written. `execution.devices` reaches the node: `cpu` asks Slurm
for no GPU (unless `gpus_per_node` is set), `cuda` or a GPU list fails the job on a node without a visible GPU,
naming the node, and `auto` takes a GPU where there is one. A node that imports other usagg code than the run
that submitted the job (a checkout changed while the array waited) fails it naming both (`node_code_problem`).

Each element submitted is recorded in its job folder (`RunStore.mark_queued_on_slurm`) until its outcome is
collected: a `usagg run` stopped while the array waits leaves the records, and the next one does not submit a job
whose element sacct or squeue still lists as pending or running, or that was submitted under `SUBMIT_GRACE_S` ago
(sacct, asking slurmdbd, can lag behind slurmctld) (`still_queued`; usagg/run/studyrun.py `StudyRun._decide`).
Outcomes are collected without submitit's wait for a result file where sacct says the element failed (only a job
that completed gets the grace a slow shared file system needs), and an element left PREEMPTED (a cluster whose
PreemptMode cancels) is recorded as failed after `PREEMPTED_GRACE_S` instead of being waited for forever.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock

from usagg.engine.progress import ProgressFn
from usagg.errors import UsaggError
from usagg.execute.base import EventFn, Executor, JobFn, call_job, record_failure
from usagg.execute.pool import job_sizes, largest_first
from usagg.execute.slurm_checks import gpu_request_problem, host_problem
from usagg.joblock import JobLock, holder_slurm_job, slurm_element, slurm_run
from usagg.origin import CodeOrigin, code_origin
from usagg.safepath import check_component, check_text, no_links, printable
from usagg.spec.models import ExecutionSpec, SlurmSpec
from usagg.store import RunStore
from usagg.store.links import submitit_link
from usagg.store.records import ERROR_CHARS
from usagg.wording import counted

try:
    import submitit
    from submitit.core.utils import FailedJobError, FailedSubmissionError
    from submitit.helpers import Checkpointable, DelayedSubmission
    from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob
except ModuleNotFoundError as err:  # the `slurm` extra is not installed: a user error, not a traceback
    if (err.name or "").partition(".")[0] != "submitit":
        raise
    raise UsaggError(
        "execution.executor is slurm, but submitit, which submits and watches the Slurm jobs, is not installed "
        "in this Python environment: install the slurm extra (`pip install -e '.[slurm]'` in the usagg checkout, "
        "or `pip install submitit`), or set execution.executor: local (`--executor local`) to run here."
    ) from None

#: One element of the submitted array, as submitit follows it.
Element = submitit.Job[Any]
#: What a job's run came to: (state, event, info), as `usagg.execute.base.call_job` answers.
Outcome = tuple[str, str, dict[str, Any]]
#: `execution.devices`, as ExecutionSpec types it.
Devices = Literal["auto", "cpu", "cuda"] | list[int]
#: Seconds an element may stay PREEMPTED (not requeued: no new state) before it counts as failed. A cluster that
#: requeues pre-empted jobs shows PENDING again within seconds; one whose PreemptMode cancels leaves PREEMPTED for
#: good, which submitit counts as unfinished (it would be waited for forever).
PREEMPTED_GRACE_S = 300.0
#: Seconds after submission (`slurm.json` `submitted`) an element neither sacct nor squeue lists still counts as
#: queued: sbatch has answered, so Slurm has it, and a second array would allocate every job twice.
SUBMIT_GRACE_S = 300.0
#: The longest wait between two sacct calls of a run's watcher (submitit's own for Slurm): every 2, 4, 8, ... s
#: after submission, then at most this often, so a long queue does not load slurmdbd.
SACCT_DELAY_S = 600
#: The least seconds between two lines of a waiting run saying how many of its elements are pending and running
#: (a line only when that changes): hours in a busy queue pass with a few lines, not in silence.
QUEUE_NOTE_S = 60.0
#: sacct states of an element still in Slurm's queue: its job is not submitted again (`still_queued`).
QUEUED_STATES = frozenset(
    {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING", "RESIZING",
     "SUSPENDED", "STAGE_OUT", "SIGNALING"}
)  # fmt: skip
#: How a failed job is run again, from the command line or the API.
RETRY = "`usagg run --retry-failed` (`run_study(..., retry_failed=True)`)"
#: What a final sacct state without a result says, with the setting to change where one helps ({} from SlurmSpec).
STATE_HINTS = {
    "OUT_OF_MEMORY": f"ran out of memory: raise execution.slurm.mem_gb (now {{mem_gb}}), then {RETRY}",
    "TIMEOUT": "ran out of time: raise execution.slurm.time_min (now {time_min}) or max_requeue (now {max_requeue}), "
    f"then {RETRY} resumes it from its last checkpoint",
    "PREEMPTED": "was pre-empted and not requeued (the cluster cancels pre-empted jobs); "
    f"{RETRY} resumes it from its last checkpoint",
    "CANCELLED": f"was cancelled (scancel, or the cluster); {RETRY} runs it again",
    "NODE_FAIL": f"lost its node (NODE_FAIL); {RETRY} resumes it from its last checkpoint",
}
#: submitit's words for an element that timed out once more than `max_num_timeout` (our max_requeue) allows: it
#: returns an error and exits, so sacct says COMPLETED and no state hint applies.
TIMED_OUT_TOO_OFTEN = "timed-out too many times"
#: Characters that are Slurm filename patterns (`%j`, `%a`, ...; `\\` turns them off) and submitit's (`%j`, `%t`,
#: `%a`, `%A`): in the log folder they would send logs elsewhere, or fail after submission.
PATTERN_CHARS = ("%", "\\")


def base_state(state: str) -> str:
    """sacct's state without its detail ("CANCELLED by 1234" is CANCELLED), in capitals."""
    return (state.split() or ["UNKNOWN"])[0].upper()


def element_state(job: Element, force: bool = False) -> str:
    """The element's state as submitit last heard it from sacct (`base_state`); `force` asks sacct anew. A job of
    submitit's local cluster (tests) answers from its process: RUNNING, FINISHED or INTERRUPTED."""
    if force:
        job.get_info(mode="force")  # one sacct call refreshes every element submitit follows
    return base_state(job.state)


def node_code_problem(submitted: CodeOrigin | None) -> str | None:
    """Why this node must not run a job the submitting run planned with other usagg code, or None: a checkout
    changed (`git pull`, a reinstall) while the array waited, or a node whose Python imports another usagg, would
    train with other defaults and metrics than the study's other jobs, and nothing would say so. A call pickled
    before the origin was recorded (None) is let through."""
    if submitted is None:
        return None
    here = code_origin()
    if not here.differs_from(submitted):
        return None
    slurm = slurm_run()
    return (
        f"node {socket.gethostname()} (Slurm job {slurm['job'] if slurm else '?'}) imports {here.describe()}, but "
        f"the run that submitted this job used {submitted.describe()}: the usagg code changed since the job was "
        "submitted (a git pull or reinstall while the array waited), or the node's Python imports another usagg. "
        "The job was not run, so the study's jobs keep training with one code. Leave the install unchanged while "
        f"an array runs, then run {RETRY} from the code the nodes import"
    )


def node_gpu_problem(devices: Devices) -> str | None:
    """Why this node cannot run a job whose `execution.devices` asks for a GPU (cuda or a list of indices), or None;
    checked here because the engine's own refusal names neither the node nor the Slurm job to look up."""
    if devices in ("auto", "cpu"):
        return None
    import torch  # on the node, where the engine imports it anyway

    if torch.cuda.device_count() > 0:
        return None
    slurm = slurm_run()
    return (
        f"execution.devices is {devices} but node {socket.gethostname()} (Slurm job {slurm['job'] if slurm else '?'}) "
        f"sees no CUDA device (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}): ask Slurm "
        "for a GPU (execution.slurm.gpus_per_node, a GPU partition), or set execution.devices to auto or cpu"
    )


class SlurmJobCall(Checkpointable):
    """The callable each array element runs: fn with failure recording, requeued as is; `devices` are the spec's
    `execution.devices`, checked on the node before fn runs. An element that finds its job's lock held by a live
    process (not an earlier run of itself, `_wait_for_earlier_run`) trained nothing and answers `locked` with the
    holder, as a pool worker does: the submitting run reports the job running elsewhere, records no failure, and
    sacct says COMPLETED (a FAILED element made the next run record the job failed, to be run with
    --retry-failed, though another process was training it)."""

    def __init__(self, fn: JobFn, devices: Devices = "auto") -> None:
        self.fn = fn
        self.devices = devices
        self.origin = code_origin()  # the submitting run's code, checked on the node (`node_code_problem`)

    def __call__(self, store_root: str, job_id: str) -> Outcome:
        with slurm_element():
            return self._run(store_root, job_id)

    def _run(self, store_root: str, job_id: str) -> Outcome:
        problem = node_code_problem(getattr(self, "origin", None)) or node_gpu_problem(self.devices)
        if problem is not None:
            summary = record_failure(store_root, job_id, problem, summary=problem[:ERROR_CHARS])
            return "failed", "failed", {"state": "failed", "error": summary}
        outcome = call_job(self.fn, store_root, job_id)
        if outcome[1] == "locked" and _wait_for_earlier_run(RunStore(store_root).job_lock(job_id)):
            outcome = call_job(self.fn, store_root, job_id)
        return outcome  # `locked`: a live process elsewhere runs the job; the element ends, leaving it to that process

    def checkpoint(self, store_root: str, job_id: str) -> DelayedSubmission:
        """Free the job's lock for the requeued run, then resubmit the same call (the engine resumes)."""
        try:
            RunStore(store_root).release_own_lock(job_id)
        except Exception:
            traceback.print_exc()
        return DelayedSubmission(self, store_root, job_id)


def _wait_for_earlier_run(lock: JobLock) -> bool:
    """Whether the lock's holder is this element's earlier run, waited for until its heartbeat has been silent long
    enough for the lock to break (`JobLock.slurm_evidence_s`): a requeue right after a kill finds it still fresh, and
    a node Slurm failed may still run it, so the heartbeat decides. False when someone else holds it."""
    holder = lock.holder()
    if not holder or not lock.earlier_run_of_this_element(holder):
        return False
    silent = lock.silent_s()
    if silent is not None and silent <= lock.slurm_evidence_s:
        time.sleep(lock.slurm_evidence_s - silent + 1.0)
    return True


def gpus_per_node(slurm: SlurmSpec, devices: Devices) -> int:
    """GPUs each job asks for: none for `devices: cpu` unless `gpus_per_node` was set, else `gpus_per_node`."""
    if devices == "cpu" and "gpus_per_node" not in slurm.model_fields_set:
        return 0
    return slurm.gpus_per_node


def slurm_parameters(slurm: SlurmSpec, name: str, devices: Devices = "auto") -> dict[str, Any]:
    """AutoExecutor parameters from the spec (None values mean 'cluster default'; no GPU asked is no GPU line)."""
    params: dict[str, Any] = {
        "name": name,
        "timeout_min": slurm.time_min,
        "gpus_per_node": gpus_per_node(slurm, devices) or None,
        "cpus_per_task": slurm.cpus_per_task,
        "mem_gb": slurm.mem_gb,
        "tasks_per_node": 1,
        "nodes": 1,
        "slurm_partition": slurm.partition,
        "slurm_account": slurm.account,
        "slurm_qos": slurm.qos,
        "slurm_array_parallelism": slurm.array_parallelism,
    }
    if slurm.additional:
        params["slurm_additional_parameters"] = dict(slurm.additional)
    return params


def submission_text(execution: ExecutionSpec, n_jobs: int, staged: bool) -> str:
    """What a run would ask Slurm for (`usagg run --dry-run`): the array, its throttle and each job's resources, and
    where the logs go; a staged paradigm's jobs are a second array once the jobs they need are done."""
    slurm = execution.slurm
    gpus = gpus_per_node(slurm, execution.devices)
    asked = ", ".join(
        f"{what} {value if value is not None else '(cluster default)'}"
        for what, value in (("partition", slurm.partition), ("account", slurm.account), ("qos", slurm.qos))
    )
    later = "; AG-like staged jobs go in a second array once the jobs they need are done" if staged else ""
    return (
        f"Slurm: one array of {counted(n_jobs, 'job')}, at most {slurm.array_parallelism} running at once, largest "
        f"first; each job {slurm.time_min} min, {slurm.mem_gb} GiB, {slurm.cpus_per_task} CPUs, "
        f"{counted(gpus, 'GPU')}; {asked}; requeued at most {slurm.max_requeue} times; logs under the store's "
        f"slurm/<submission>/{later}"
    )


def rejected_message(sbatch_said: str, slurm: SlurmSpec, devices: Devices = "auto", n_jobs: int = 0) -> str:
    """sbatch's refusal of the array as one paragraph: its words, the array's size, and the settings it may refer to
    (the GPUs as requested: none for `devices: cpu` unless gpus_per_node was set)."""
    said = " ".join(printable(sbatch_said).split())[:400] or "no message"
    asked = {"gpus_per_node": gpus_per_node(slurm, devices)}
    values = ", ".join(
        f"{field} {value if (value := asked.get(field, getattr(slurm, field))) is not None else '(cluster default)'}"
        for field in ("partition", "account", "qos", "time_min", "mem_gb", "gpus_per_node", "cpus_per_task")
    )
    extra = f", additional {dict(slurm.additional)}" if slurm.additional else ""
    size = f" of {counted(n_jobs, 'job')}" if n_jobs else ""
    array = (
        " An array larger than the cluster's MaxArraySize (`scontrol show config | grep MaxArraySize`) is refused: "
        "submit it in parts with `usagg run --only` (by paradigm or group, `usagg plan --only` shows each part)."
        if "array" in said.lower()
        else ""
    )
    return (
        f"sbatch refused the job array{size}, so nothing was submitted: {said!r}. Check execution.slurm against "
        f"what the cluster allows you ({values}{extra}; `sinfo` lists partitions, `sacctmgr show assoc user=$USER` "
        f"accounts and QOS).{array} The jobs stay pending; `usagg run` submits them again."
    )


def sacct_states(slurm_ids: Iterable[str]) -> dict[str, str] | None:
    """sacct's state of each array element (`1001_2` -> `PENDING`), read as submitit reads it; None when sacct does
    not answer."""
    arrays = sorted({sid.partition("_")[0] for sid in slurm_ids})
    command = ["sacct", "-o", "JobID,State", "--parsable2", *(arg for a in arrays for arg in ("-j", a))]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {sid: info.get("State", "") for sid, info in SlurmInfoWatcher().read_info(out).items()}


def squeue_states(slurm_ids: Iterable[str]) -> dict[str, str] | None:
    """squeue's state of each array element it lists (`1001_2` -> `PENDING`): slurmctld's own view, which has a job
    the moment sbatch returns, where sacct (slurmdbd) can lag behind; `-r` lists a pending array's elements one a
    line. None when squeue does not answer; {} when it knows none of them (ids slurmctld has purged)."""
    arrays = sorted({sid.partition("_")[0] for sid in slurm_ids})
    command = ["squeue", "-h", "-r", f"--jobs={','.join(arrays)}", "-o", "%i|%T"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:  # ids it no longer knows: "slurm_load_jobs error: Invalid job id specified"
        return {} if "invalid job id" in done.stderr.lower() else None
    pairs = (line.strip().partition("|") for line in done.stdout.splitlines())
    return {sid: state.strip() for sid, _, state in pairs if sid and state.strip()}


def log_text(job: Element) -> str:
    """Where the element's log is ("see <its .err>"), or that it has none: an element that never started (out of
    memory at launch, NODE_FAIL, cancelled while pending) writes no log, so none is named."""
    if job.paths.stderr.exists():
        return f"see {job.paths.stderr}"
    return "it never started (no log)"


def queue_text(jobs: Iterable[Element]) -> str:
    """The elements still in the queue by their state as sacct last said it: "1 pending, 1 running" (an ended one
    is said when it is collected)."""
    counts: dict[str, int] = {}
    for job in jobs:
        state = element_state(job)
        if state not in QUEUED_STATES | {"UNKNOWN", "PREEMPTED"}:
            continue
        name = "not listed by sacct yet" if state == "UNKNOWN" else state.lower().replace("_", " ")
        counts[name] = counts.get(name, 0) + 1
    return ", ".join(f"{n} {name}" for name, n in counts.items())


class SacctWatcher(SlurmInfoWatcher):
    """submitit's sacct watcher for one `SlurmExecutor.run`'s array: a failed sacct call is kept (`error`, its
    stderr's first line) instead of reaching the terminal, sacct's stderr and submitit's warning at every poll
    (twice, through two handlers) while slurmdbd is down: the run says it once, in usagg's words."""

    def __init__(self, delay_s: int = SACCT_DELAY_S) -> None:
        super().__init__(delay_s)
        self.error: str | None = None

    def update(self) -> None:
        """submitit's `InfoWatcher.update`, with sacct's output captured."""
        command = self._make_command()
        if command is None:
            return
        self._num_calls += 1
        try:
            out = subprocess.run(command, capture_output=True, timeout=60, check=True).stdout
        except subprocess.CalledProcessError as err:
            said = printable(err.stderr.decode(errors="replace")).strip().splitlines()
            self.error = said[0] if said else f"exit status {err.returncode}"
        except (OSError, subprocess.SubprocessError) as err:
            self.error = printable(str(err))
        else:
            self.error = None
            self._output = out
            self._info_dict.update(self.read_info(out))
        self._last_status_check = time.time()
        for job_id in self._registered - self._finished:
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)


def element_log(store: RunStore, slurm_job_id: str) -> Path | None:
    """The stderr log submitit's element `slurm_job_id` (`1001_2`) writes in its submission's folder, once it has
    started; None before (a pending element has none) or where no submission folder holds it."""
    return next(iter(sorted(store.slurm_dir.glob(f"*/{slurm_job_id}_0_log.err"))), None)


@dataclass(frozen=True)
class ElementView:
    """What Slurm says of one submitted element: sacct's state (None where it does not list it), squeue's (None
    where it does not list it), whether sacct answered, and whether it was submitted under `SUBMIT_GRACE_S` ago."""

    element: str
    sacct: str | None
    squeue: str | None
    sacct_answered: bool
    fresh: bool

    @property
    def live(self) -> bool:
        """Still Slurm's, so never submitted again: sacct or squeue lists it queued (sacct lags behind slurmctld
        when slurmdbd is backlogged), a fresh one neither lists yet, or any while sacct does not answer."""
        unlisted = self.sacct is None and self.squeue is None
        return (
            not self.sacct_answered
            or self.sacct in QUEUED_STATES
            or self.squeue in QUEUED_STATES
            or (self.fresh and unlisted)
        )

    def text(self) -> str:
        """The view in words for `usagg status`."""
        if not self.sacct_answered:
            said = "sacct did not answer"
        elif self.sacct is None:
            said = "not listed by sacct (yet)"
        else:
            said = f"sacct: {self.sacct}"
        if self.squeue is not None and self.squeue != self.sacct:
            said += f", squeue: {self.squeue}"
        if not self.live and self.sacct not in (None, "COMPLETED"):
            said += ", ended: the next `usagg run` records it failed; `usagg run --retry-failed` runs it again"
        elif not self.live:
            said += ", ended without a result: the next `usagg run` submits it again"
        elif self.sacct_answered and self.sacct is None and self.squeue is None:
            said += f", nor by squeue: submitted under {SUBMIT_GRACE_S:.0f} s ago, so still taken as queued"
        return said


def element_views(store: RunStore, recorded: dict[str, str], grace_s: float = SUBMIT_GRACE_S) -> dict[str, ElementView]:
    """What Slurm says of each recorded element (job id -> its element): one sacct call, and one squeue call for
    those sacct does not list as queued (a fresh array slurmdbd has not recorded yet)."""
    sacct = sacct_states(recorded.values())
    said = {sid: base_state(state) for sid, state in (sacct or {}).items()}
    unsure = [sid for sid in recorded.values() if said.get(sid) not in QUEUED_STATES]
    squeue = (squeue_states(unsure) if unsure else None) or {}
    now = datetime.now(timezone.utc)
    views = {}
    for jid, sid in recorded.items():
        submitted = store.slurm_submitted(jid)
        fresh = submitted is not None and (now - submitted).total_seconds() < grace_s
        found = squeue.get(sid)
        views[jid] = ElementView(
            sid, said.get(sid), None if found is None else base_state(found), sacct is not None, fresh
        )
    return views


def queue_states(store: RunStore, recorded: dict[str, str]) -> dict[str, str]:
    """What `usagg status` says of each job an earlier run submitted and no run has collected (job id -> text):
    Slurm's view of its element (`ElementView.text`) and, once it started, its log; "sacct did not answer" where
    there is no sacct (a store looked at off the cluster)."""
    if not shutil.which("sacct"):
        views = {jid: ElementView(sid, None, None, False, False) for jid, sid in recorded.items()}
    else:
        views = element_views(store, recorded)
    out = {}
    for jid, view in views.items():
        log = element_log(store, view.element)
        out[jid] = f"submitted to Slurm as {view.element} ({view.text()})" + (f"\nlog {log}" if log else "")
    return out


@dataclass(frozen=True)
class QueueCheck:
    """`still_queued`'s answer: the jobs still Slurm's (job id -> element) and the note saying so, and those whose
    element sacct lists as ended in a failed state (job id -> (element, sacct's state)): their failure is recorded
    by the run that finds them (usagg/run/studyrun.py `StudyRun.collect_slurm_failures`), not submitted again."""

    queued: dict[str, str]
    note: str | None
    failed: dict[str, tuple[str, str]]


def still_queued(store: RunStore, recorded: dict[str, str], grace_s: float = SUBMIT_GRACE_S) -> QueueCheck:
    """Of `recorded` (job id -> the Slurm element it was submitted as), those still Slurm's (`ElementView.live`),
    and a note saying so (None when there are none). An element neither sacct nor squeue lists, submitted over
    `grace_s` ago, or that sacct lists as COMPLETED (its result lost), is not: its job is submitted again; one
    sacct lists as ended otherwise is `failed`. When sacct does not answer every recorded job counts as queued (a
    second array would train each job twice), and the note says why."""
    views = element_views(store, recorded, grace_s)
    queued = {jid: view.element for jid, view in views.items() if view.live}
    failed = {
        jid: (view.element, view.sacct)
        for jid, view in views.items()
        if not view.live and view.sacct is not None and view.sacct != "COMPLETED"
    }
    if not queued:
        return QueueCheck(queued, None, failed)
    shown = ", ".join(list(queued.values())[:8]) + (", ..." if len(queued) > 8 else "")
    answered = all(view.sacct_answered for view in views.values())
    unlisted = sum(views[jid].sacct is None and views[jid].squeue is None for jid in queued)
    why = "pending or running" if answered else "sacct did not answer, so taken as pending or running"
    if answered and unlisted:
        why += f"; {unlisted} submitted moments ago that neither sacct nor squeue lists yet"
    note = (
        f"{counted(len(queued), 'job')} still queued on Slurm as {shown} ({why}); not submitted again. `usagg "
        "status` shows them as they finish; to submit them anew, `scancel` them first."
    )
    return QueueCheck(queued, note, failed)


def not_completed(slurm_job_id: str, state: str, slurm: SlurmSpec, hint_state: str | None = None) -> str:
    """ "Slurm job X did not complete (state S: hint)", the hint (`STATE_HINTS`, of `hint_state`, else of `state`)
    naming the setting to change where one helps."""
    hint = STATE_HINTS.get(hint_state or base_state(state), "").format(**slurm.model_dump())
    return f"Slurm job {slurm_job_id} did not complete (state {state}{'' if not hint else ': ' + hint})"


def break_ended_locks(store: RunStore, job_ids: Iterable[str], wait: bool = False) -> list[str]:
    """Break each job's lock whose holder ran as a Slurm job that sacct lists as ended (any state but the queued
    ones) and whose heartbeat has been silent for a few beats (`JobLock.break_slurm`); the job ids whose lock was
    broken. Slurm kills a job outright (out of memory, pre-empted, past its time without the warning signal), so its
    lock never released looks alive for the lock's `stale_after_s` (usagg/joblock.py). An element sacct does not
    list, or does not answer for, keeps its lock. `wait`: a lock still beating is waited for, once, until it has
    been silent long enough (collecting an element that just died: its last beat is seconds old)."""
    held = {jid: sid for jid in job_ids if (sid := holder_slurm_job(store.job_lock(jid).holder() or {}))}
    if not held:
        return []
    states = sacct_states(held.values()) or {}
    ended = {jid: sid for jid, sid in held.items() if sid in states and base_state(states[sid]) not in QUEUED_STATES}
    if wait and ended:
        silent = [s for jid in ended if (s := store.job_lock(jid).silent_s()) is not None]
        evidence = store.job_lock(next(iter(ended))).slurm_evidence_s
        if silent and min(silent) <= evidence:
            time.sleep(evidence - min(silent) + 1.0)
    return [jid for jid, sid in ended.items() if store.break_slurm_lock(jid, sid)]


class SlurmExecutor(Executor):
    """Submits the jobs as one Slurm array and waits for them (Ctrl-C stops waiting, not the jobs)."""

    name = "slurm"

    def __init__(
        self,
        store_root: str | Path,
        slurm: SlurmSpec,
        *,
        cluster: str | None = None,
        devices: Devices = "auto",
        poll_s: float = 2.0,
        results_timeout_s: float | None = None,
        preempted_grace_s: float = PREEMPTED_GRACE_S,
        queue_note_s: float = QUEUE_NOTE_S,
    ) -> None:
        """`results_timeout_s`: how long to wait for the result file of a job Slurm says completed (submitit's
        default, 15 s, allows for a slow shared file system; a job Slurm ended otherwise is not waited for);
        `queue_note_s`: the least time between two lines of the array's queue states."""
        super().__init__(store_root)
        self.slurm = slurm
        self.cluster = cluster
        self.devices = devices
        self.poll_s = poll_s
        self.results_timeout_s = results_timeout_s
        self.preempted_grace_s = preempted_grace_s
        self.queue_note_s = queue_note_s
        self.folder = no_links(  # no planted link; submitit's own links to its scripts are its
            RunStore(self.store_root).slurm_dir, f"{self.store_root}: slurm/", submitit_link
        )
        self._preempted: dict[str, float] = {}  # job id -> when its element was first seen PREEMPTED
        self._ended: dict[str, float] = {}  # job id -> when its element was first seen ended holding its lock
        self._on_event: EventFn | None = None  # `run`'s, for the lines said while it waits (`_note`)

    def make_submitit_executor(self) -> submitit.AutoExecutor:
        """The configured submitit executor (separate so its parameters can be checked without a cluster), writing
        into a new, empty folder of its own under slurm/ (see the module docstring: no pickle it did not write)."""
        folder, name = self.checked_names()
        folder = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True, exist_ok=False)  # new: nothing planted or left from another cluster is in it
        cluster = self.cluster or "slurm"  # never submitit's guess: without srun on PATH it picks local processes
        kwargs: dict[str, Any] = {}
        if cluster in ("slurm", "local"):
            kwargs[f"{cluster}_max_num_timeout"] = self.slurm.max_requeue
        ex = submitit.AutoExecutor(folder=folder, cluster=cluster, **kwargs)
        ex.update_parameters(**slurm_parameters(self.slurm, name, self.devices))
        return ex

    def checked_names(self) -> tuple[Path, str]:
        """The folder and job name submitit writes into `#SBATCH` lines, checked again right before submitting
        (the spec checks `output_root` and the study name; this is defence in depth): a newline there would
        start a new line of the batch script, which runs on submission, and a `%` or `\\` a Slurm filename
        pattern (the current folder counts too: submitit writes the folder absolute)."""
        check_text(str(self.folder), "Slurm executor, log folder (#SBATCH --output/--error)")
        absolute = str(Path(self.folder).absolute())
        found = [c for c in PATTERN_CHARS if c in absolute]
        if found:
            raise UsaggError(
                f"Slurm executor, log folder {absolute!r} contains {' and '.join(map(repr, found))}: Slurm and "
                "submitit read % in log and script paths as a pattern (%j the job id, %a the array index, ...) and "
                "\\ as turning patterns off, so the logs would land elsewhere. Choose an output_root (and a current "
                "folder, for a relative one) without them."
            )
        name = f"usagg-{Path(self.store_root).name}"
        check_component(name, "Slurm executor, job name (#SBATCH --job-name)")
        return self.folder, name

    def run(
        self, job_ids: list[str], fn: JobFn, on_event: EventFn | None = None, on_progress: ProgressFn | None = None
    ) -> dict[str, str]:
        """Submit an array job; `on_progress` is not heard: a Slurm job has no channel back but its result."""
        states: dict[str, str] = {}
        if not job_ids:
            return states
        self._on_event = on_event
        store = RunStore(self.store_root)
        # else the new element of a job whose last one Slurm killed fails at once (a rerun right after the kill waits
        # for its lock's heartbeat to fall silent, at most SLURM_EVIDENCE_BEATS heartbeats)
        break_ended_locks(store, job_ids, wait=True)
        # one submission of a store's jobs at a time; beside slurm/, which a refusal leaves empty
        with FileLock(str(store.slurm_submit_lock)):
            elsewhere = self._queued_elsewhere(store, job_ids)
            states.update({job_id: store.job_state(job_id) for job_id in elsewhere})
            job_ids = [j for j in job_ids if j not in elsewhere]
            if not job_ids:
                return states
            job_ids = largest_first(job_ids, job_sizes(self.store_root, job_ids))  # as the pool starts them
            jobs = self._submit(self.make_submitit_executor(), SlurmJobCall(fn, self.devices), job_ids)
            pending = dict(zip(job_ids, jobs, strict=True))
            watcher = SacctWatcher()
            for job_id, job in pending.items():
                if isinstance(job, SlurmJob):  # not submitit's local cluster (tests), which watches processes
                    job.watcher = watcher
                    watcher.register_job(job.job_id)
                if self.results_timeout_s is not None:
                    # submitit declares its class default as the int 15; it compares the value with elapsed seconds
                    job._results_timeout_s = self.results_timeout_s  # type: ignore[assignment]
                with contextlib.suppress(OSError, UsaggError):  # a full disk: the array is queued all the same
                    store.mark_queued_on_slurm(job_id, job.job_id)
                self._emit(on_event, job_id, "submitted", {"slurm_job_id": job.job_id})
        sacct_down, said, said_at = False, "", -math.inf
        while pending:
            if watcher.error is not None and not sacct_down:  # once an outage, not at every poll
                self._note(next(iter(pending)), self._sacct_down_text(watcher.error, list(pending.values())))
            sacct_down = watcher.error is not None
            slurm_jobs = [job for job in pending.values() if isinstance(job, SlurmJob)]
            queue = queue_text(slurm_jobs) if slurm_jobs and not sacct_down else ""
            if queue and queue != said and time.monotonic() - said_at >= self.queue_note_s:
                self._note(next(iter(pending)), f"on Slurm: {queue}")  # the wait between submission and results
                said, said_at = queue, time.monotonic()
            for job_id, job in list(pending.items()):
                outcome = self._collect(job_id, job)
                if outcome is None:
                    continue
                del pending[job_id]
                with contextlib.suppress(OSError):
                    store.forget_slurm_job(job_id)
                states[job_id], event, info = outcome
                self._emit(on_event, job_id, event, info)
            if pending:
                time.sleep(self.poll_s)
        return states

    @staticmethod
    def _sacct_down_text(error: str, jobs: list[Element]) -> str:
        """The one line for a sacct that stopped answering, with squeue's view of the elements waited for."""
        listed = squeue_states(job.job_id for job in jobs)
        if listed is None:
            seen = "squeue does not answer either"
        else:
            states = [base_state(listed[job.job_id]) for job in jobs if job.job_id in listed]
            seen = f"squeue shows {states.count('RUNNING')} running, {states.count('PENDING')} pending"
        return (
            f"sacct does not answer (slurmdbd down?): {error[:200]}; waiting: {seen} of {counted(len(jobs), 'job')}; "
            "a failure is reported once sacct answers"
        )

    @staticmethod
    def _queued_elsewhere(store: RunStore, job_ids: list[str]) -> dict[str, str]:
        """Of `job_ids`, those another `usagg run` of the store submitted since this one planned and Slurm still
        queues (job id -> its element): two runs of one study started together each submitted every job, an
        allocation per job wasted (the job lock kept the results right). Asked under the submission lock."""
        recorded = {j: sid for j in job_ids if (sid := store.queued_on_slurm(j))}
        return still_queued(store, recorded).queued if recorded else {}

    def _submit(self, ex: submitit.AutoExecutor, call: SlurmJobCall, job_ids: list[str]) -> list[Element]:
        """`map_array`, with sbatch's refusal as a UsaggError quoting it and the submission's folder removed (nothing
        was queued). submitit prints sbatch's error itself; it is held back here, since the message quotes it."""
        heard = io.StringIO()
        try:
            with contextlib.redirect_stderr(heard):
                jobs = ex.map_array(call, [self.store_root] * len(job_ids), job_ids)
        except FailedJobError as err:  # sbatch exited non-zero
            shutil.rmtree(ex.folder, ignore_errors=True)
            raise UsaggError(rejected_message(str(err), self.slurm, self.devices, len(job_ids))) from None
        except FailedSubmissionError as err:  # sbatch answered, but with no job id: the array may be queued
            raise UsaggError(
                f"sbatch's answer named no job id ({' '.join(printable(str(err)).split())[:300]}), so usagg cannot "
                f"follow the array it may have queued: see `squeue -u $USER` and the script in {ex.folder}; "
                "`scancel` a queued array before running again, or its jobs run twice."
            ) from None
        sys.stderr.write(heard.getvalue())
        return jobs

    def _collect(self, job_id: str, job: Element) -> Outcome | None:
        """The element's outcome once it has one, else None (still queued or running, or pre-empted for less than
        the grace). An element Slurm ended without completing is not waited for: it writes no result."""
        if not job.done():
            return self._preempted_outcome(job_id, job)
        state = element_state(job)
        if state != "COMPLETED" and not job.paths.result_pickle.exists():
            job._results_timeout_s = 0  # failed, killed or out of memory: its result file will never come
            if self._lock_still_beating(job_id, job):
                return None  # collected once silent, the other elements meanwhile (not a sleep per element)
        elif not job.paths.result_pickle.exists():  # submitit waits for it: said, since the wait can be felt
            self._note(
                job_id,
                f"Slurm says {job.job_id} COMPLETED; waiting up to {job._results_timeout_s:g} s for its result to "
                f"reach {job.paths.folder} (a slow shared file system)",
            )
        self._ended.pop(job_id, None)
        return self._outcome(job_id, job, state)

    def _lock_still_beating(self, job_id: str, job: Element) -> bool:
        """Whether the ended element still holds its job's lock with a heartbeat too fresh to break
        (`JobLock.break_slurm`), for at most the lock's `slurm_evidence_s` (+1 s) since the element was first seen
        ended: a killed element's last beat is seconds old, and a node Slurm failed may still beat, which the
        failure then leaves to it (`record_failure`)."""
        lock = RunStore(self.store_root).job_lock(job_id)
        if holder_slurm_job(lock.holder() or {}) != job.job_id:
            return False
        since = self._ended.setdefault(job_id, time.monotonic())
        silent = lock.silent_s()
        waited = time.monotonic() - since
        return silent is not None and silent <= lock.slurm_evidence_s and waited <= lock.slurm_evidence_s + 1.0

    def _preempted_outcome(self, job_id: str, job: Element) -> Outcome | None:
        """A failure once the element has stayed PREEMPTED for `preempted_grace_s` (asking sacct once more then),
        else None."""
        if element_state(job) != "PREEMPTED":
            self._preempted.pop(job_id, None)
            return None
        since = self._preempted.setdefault(job_id, time.monotonic())
        if time.monotonic() - since < self.preempted_grace_s:
            return None
        if element_state(job, force=True) != "PREEMPTED":  # requeued meanwhile
            self._preempted.pop(job_id, None)
            return None
        error = f"Slurm job {job.job_id} {STATE_HINTS['PREEMPTED']} (PREEMPTED for {self.preempted_grace_s:.0f} s)"
        return self._failed(job_id, job, error, error)

    def _outcome(self, job_id: str, job: Element, slurm_state: str) -> Outcome:
        """The call's answer, or a recorded failure when the Slurm job itself failed or was killed."""
        try:
            state, event, info = job.result()
            return state, event, {**info, "slurm_job_id": job.job_id}
        except Exception as e:  # submitit's FailedJobError / UncompletedJobError: crash, kill, out of requeues
            said = str(e).strip()
            if slurm_state == "COMPLETED" and not job.paths.result_pickle.exists():
                return self._no_result(job_id, job, said)
            timed_out = TIMED_OUT_TOO_OFTEN in said  # submitit gave up requeueing, and sacct says COMPLETED
            state = f"{slurm_state} after more time-outs than max_requeue allows" if timed_out else slurm_state
            what = not_completed(job.job_id, state, self.slurm, "TIMEOUT" if timed_out else slurm_state)
            error = f"{what} ({type(e).__name__}):\n{said}"
            return self._failed(job_id, job, error, f"{what}; {log_text(job)}")

    def _no_result(self, job_id: str, job: Element, said: str) -> Outcome:
        """An element Slurm calls COMPLETED whose result file never reached this host: done where its job.json
        did (the result alone is late), else a failure saying where output_root must be (a node-local /tmp or
        scratch is not seen here), never "did not complete (state COMPLETED)"."""
        store = RunStore(self.store_root)
        if store.job_state(job_id) == "done":
            return "done", "finished", {"state": "done", "slurm_job_id": job.job_id}
        what = (
            f"Slurm says {job.job_id} COMPLETED but no result reached {self.store_root} after "
            f"{job._results_timeout_s:g} s: is output_root on a filesystem the login node shares (not a node's "
            "local /tmp or scratch)?"
        )
        seen = f"See {job.paths.stderr}" if job.paths.stderr.exists() else "Its log did not reach this host either."
        return self._failed(job_id, job, f"{what}\n\n{said}", f"{what} {seen}")

    def _note(self, job_id: str, text: str) -> None:
        """A line about the wait (`note` event), for `run`'s `on_event`."""
        self._emit(self._on_event, job_id, "note", {"text": text})

    def _failed(self, job_id: str, job: Element, error: str, summary: str) -> Outcome:
        """The failure recorded in the store (unless the job recorded its own), as an outcome; first the job's lock
        broken if the ended element still holds it (`break_ended_locks`)."""
        try:
            break_ended_locks(RunStore(self.store_root), [job_id], wait=True)
        except Exception:
            traceback.print_exc()
        try:
            summary = record_failure(self.store_root, job_id, error, summary=summary[:ERROR_CHARS])
        except Exception:
            traceback.print_exc()
            summary = error.splitlines()[0]
        return "failed", "failed", {"state": "failed", "error": summary, "slurm_job_id": job.job_id}


def make_slurm_executor(
    execution: ExecutionSpec, store_root: str | Path, *, cluster: str | None = None
) -> SlurmExecutor:
    """The "slurm" executor (usagg/execute/registry.py); `cluster` replaces Slurm for tests ("local" runs the Slurm
    path as local subprocesses, "debug" in-process).

    Without `cluster`, the jobs go to submitit's Slurm executor by name, and Slurm's `sbatch` and `srun` must be on
    PATH (usagg/execute/slurm_checks.py `host_problem`). submitit's own choice (`AutoExecutor.which`) picks Slurm by
    `srun`: on a host with sbatch but no srun it ran the jobs as local processes on this host while the console said
    they were on Slurm (an audit on such a host).
    """
    problem = host_problem() if cluster is None else None
    if problem is not None:
        raise UsaggError(problem)
    problem = gpu_request_problem(execution)
    if problem is not None:
        raise UsaggError(problem)
    return SlurmExecutor(store_root, execution.slurm, cluster=cluster, devices=execution.devices)
