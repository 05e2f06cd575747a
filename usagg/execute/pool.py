"""A local pool of worker processes: `jobs_per_gpu` per GPU, each pinned with CUDA_VISIBLE_DEVICES, or
`cpu_jobs` on the CPU, each pinned to its share of the cores.

Workers are started with multiprocessing 'spawn' (a CUDA context never
survives fork) and pinned before the job function is even unpickled, so the
engine's torch import sees what the worker is given: on a GPU exactly one
device, `cuda:0`; on the CPU no GPU and OMP_NUM_THREADS / MKL_NUM_THREADS set
to the worker's threads (`execution.threads` if given, else the usable cores
divided by the most workers `cpu_jobs` allows: small models use intra-op threads poorly, so jobs side
by side on one thread each finish sooner than one after the other on all cores; `default_cpu_threads`).
The count never depends on how many jobs are left: a CPU job's numbers depend on its threads (the order of
its sums), so a job rerun alone (`--only`, `--retry-failed`, the last one left) or resumed trains the model
a full run trains.
The parent hands each idle worker the next job of the queue over its own pipe,
so it always knows which job a worker holds: a worker that dies (segfault,
out-of-memory kill, os._exit) fails that job, is replaced, and the pool goes on. A worker that dies before
its own code runs (while 'spawn' imports the main script again: a script calling `usagg.api.run_study`
without `if __name__ == "__main__":`, usagg/workerstart.py) fails nothing: its job goes back to the queue,
no new worker starts, the workers that did start run the queue out, and if none did, the run ends in a
UsaggError saying why, its jobs left pending for the next run.
The job's `started` event comes when the worker says it took the job's lock (`call_job`'s `on_start`), not when
the job is handed out: a job another process took first ends `locked`, "running elsewhere", never "started".
Every job still runs `fn` in its worker, so it keeps its own lock, process and log. Where the run
has a progress sink (`run(..., on_progress)`), a worker hands its job a sink that forwards the
trainer's reports (usagg/engine/progress.py) over the same pipe and the parent hands them to
`on_progress`, so `usagg run` shows pooled jobs' epochs too.
A worker with nothing left to run is told to exit at once (not when the last job ends) and
skips the interpreter's teardown of torch (`os._exit` once its jobs' files are closed).

Several jobs per device, `auto` measures instead of guessing. Each GPU starts
with one worker, whose first job is the queue's largest (MoE first, then the
most tasks: for one backbone, batch and input size the largest parameter and
optimiser state). The CPU starts a worker per usable core (at most one per job),
the largest jobs first: a lone measuring worker would leave the other cores idle
for a whole job, and the CPU rarely runs out of memory before it runs out of
cores. A worker reports its job's peak and the memory jobs may use beside the
worker (`CudaMemoryProbe`: `torch.cuda.max_memory_reserved` and free plus its
reserved; `CpuMemoryProbe`: the peak resident set and MemAvailable plus its
resident set), once while the job runs, when the peak has not grown for
`SETTLE_POLLS` polls (on a GPU, polls of a busy GPU: training in its steady
state; a job that allocates nothing per step, under CUDA graphs, is measured at
its end only), and again when it ends.
From the first report on, that device runs `packed_jobs(usable, peak)` workers,
usable being what the report found plus the other running jobs counted at that
peak (on the CPU no CUDA context counts and the usable cores cap it), the peak
being the largest measured on any device so far; a larger one measured later
lowers every device's count (workers above it finish their job and get no other).
A GPU whose jobs use no CUDA is never measured and keeps one worker.
On a GPU, auto also reads the throughput `make gpu-check` measured with 1, 2 and 4 jobs at once on
that card under this torch (usagg/projection.py, `<cache root>/jobs_per_gpu/<device>.json`): the count
it chooses caps the count memory allows; without such a file memory alone decides.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import multiprocessing as mp
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Literal, Protocol

from usagg.engine.progress import Progress, ProgressFn, send, with_progress
from usagg.errors import UsaggError
from usagg.execute.base import EventFn, Executor, JobFn, record_failure
from usagg.execute.inprocess import InProcessExecutor
from usagg.registry import PLUGINS_ENV, interactive_entries
from usagg.signals import exit_on_sigterm, leave_sigint_to_parent, sigint_held, stop_with_parent
from usagg.wording import counted
from usagg.workerstart import WORKER_PREFIX, refused_text

log = logging.getLogger(__name__)

GIB = 2**30
MAX_JOBS_PER_GPU = 16
MAX_CPU_JOBS = 64
#: Memory a worker process holds outside torch's allocator: its CUDA context, kernels, cuBLAS/cuDNN workspaces.
CONTEXT_BYTES = GIB
#: Head room over the largest measured peak (allocator fragmentation, a job kind not measured yet).
PEAK_MARGIN = 1.25
#: A running job's peak is reported once it has not grown for this many polls of the probe's `poll_s` (on a
#: GPU, while it was busy: at least MIN_ALLOCATIONS allocations per poll: training, not a CPU phase such as
#: decoding between moving the model and the first step).
SETTLE_POLLS = 3
MIN_ALLOCATIONS = 100
#: A pooled job's progress reports reach the parent at most this often within an epoch's training.
PROGRESS_EVERY_S = 0.25
#: How long the workers told to stop (at a run's end, or on Ctrl-C or SIGTERM: their jobs back to pending, then the
#: interpreter's teardown of torch) have, all together, before they are killed.
STOP_GRACE_S = 10.0


def packed_jobs(
    free_bytes: int, peak_bytes: int, context_bytes: int = CONTEXT_BYTES, most: int = MAX_JOBS_PER_GPU
) -> int:
    """How many jobs peaking at `peak_bytes` share a device with `free_bytes` usable beside one worker's context.

    n jobs need n * PEAK_MARGIN * peak plus a context for each of the n - 1 extra
    processes (the measuring worker's context is already outside `free_bytes`);
    clamped to 1..most. On the CPU the context is 0: a worker's resident peak
    already holds its interpreter and torch.
    """
    per_job = PEAK_MARGIN * max(peak_bytes, 1) + context_bytes
    return max(1, min(most, int((free_bytes + context_bytes) // per_job)))


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask: taskset, cgroups' cpusets, Slurm), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_workers(cpu_jobs: int | Literal["auto"], jobs: int | None = None, threads: int | None = None) -> int:
    """The most CPU workers `execution.cpu_jobs` allows for `jobs` jobs (None: any number).

    auto: the usable cores over `threads` each (one without `threads`: more threads than cores oversubscribe
    them, and OpenMP's waiting threads then slow every job, 3x on the bench study), which a measured peak
    may lower (the module doc).
    """
    auto = max(1, min(MAX_CPU_JOBS, usable_cores() // (threads or 1)))
    most = auto if cpu_jobs == "auto" else cpu_jobs
    return most if jobs is None else max(1, min(most, jobs))


def cpu_threads(threads: int | None, workers: int) -> int:
    """Torch threads of one CPU worker: `threads` if given, else the usable cores shared by `workers`."""
    return threads or max(1, usable_cores() // max(1, workers))


def default_cpu_threads(cpu_jobs: int | Literal["auto"], threads: int | None) -> int:
    """Torch threads of every CPU job of a run: `threads` if given, else the usable cores shared by the most workers
    `cpu_jobs` allows, whatever the number of jobs to run, and at most an OMP_NUM_THREADS this process was given
    (the user's own cap, which torch would take too). The count changes a job's numbers (the order of its sums):
    taken from the jobs left, a job rerun alone got 2 threads where the full demo gave it 1, and its DSC moved by
    13 %, flipping Δ signs."""
    if threads:
        return threads
    share = cpu_threads(None, cpu_workers(cpu_jobs, None, None))
    given = os.environ.get("OMP_NUM_THREADS", "")
    return min(share, int(given)) if given.isdigit() and int(given) > 0 else share


@dataclass(frozen=True)
class JobMemory:
    """What a worker measured for one job, in bytes.

    `peak`: the job's peak so far (torch's reserved CUDA memory; on the CPU the worker's resident set).
    `free`: what jobs may use beside this worker's context (GPU free plus its reserved; on the CPU the RAM
    available plus the worker's resident set).
    """

    peak: int
    free: int


class MemoryProbe(Protocol):
    """Measures one job's memory inside a worker (None: nothing settled yet, or a GPU probe's job uses no GPU).

    `start` runs before the job, `sample` every `poll_s` seconds from another
    thread while it runs (the first non-None answer is reported), `finish` after it.
    """

    poll_s: float

    def start(self) -> None: ...

    def sample(self) -> JobMemory | None: ...

    def finish(self) -> JobMemory | None: ...


class CudaMemoryProbe:
    """The probe of real workers: reads torch's CUDA statistics only when the job imported torch and used CUDA."""

    poll_s = 10.0

    def __init__(self) -> None:
        self._last, self._same, self._allocations = 0, 0, 0

    @staticmethod
    def _cuda() -> Any:
        torch = sys.modules.get("torch")
        return torch.cuda if torch is not None and torch.cuda.is_initialized() else None

    def start(self) -> None:
        self._last, self._same, self._allocations = 0, 0, 0
        cuda = self._cuda()
        if cuda is not None:
            cuda.reset_peak_memory_stats()

    def sample(self) -> JobMemory | None:
        """The running job's peak once it has stopped growing on a busy GPU (SETTLE_POLLS polls alike), else None."""
        cuda = self._cuda()
        if cuda is None:
            return None
        peak = int(cuda.max_memory_reserved())
        allocations = int(cuda.memory_stats().get("allocation.all.allocated", 0))
        busy = allocations - self._allocations >= MIN_ALLOCATIONS
        self._same = self._same + 1 if busy and peak == self._last and peak > 0 else 0
        self._last, self._allocations = peak, allocations
        if self._same < SETTLE_POLLS:
            return None
        free, _total = cuda.mem_get_info()
        return JobMemory(peak, int(free) + int(cuda.memory_reserved()))

    def finish(self) -> JobMemory | None:
        cuda = self._cuda()
        if cuda is None:
            return None
        peak = int(cuda.max_memory_reserved())
        gc.collect()  # the job's model and optimiser are garbage now: give their memory back to the other jobs
        cuda.empty_cache()
        free, _total = cuda.mem_get_info()
        return JobMemory(peak, int(free) + int(cuda.memory_reserved()))


class CpuMemoryProbe:
    """The probe of CPU workers: the worker's resident set (/proc/self/status) and the RAM available (/proc/meminfo).

    The peak is VmHWM, reset before each job where the kernel allows (/proc/self/clear_refs), else the
    worker's peak so far (larger, so never too many workers). Without /proc (macOS) nothing is measured
    and the count stays at the cores.
    """

    poll_s = 2.0

    def __init__(self) -> None:
        self._last, self._same = 0, 0

    @staticmethod
    def _memory() -> JobMemory | None:
        try:
            status = _kib_fields(Path("/proc/self/status").read_text().splitlines())
            available = _kib_fields(Path("/proc/meminfo").read_text().splitlines())["MemAvailable"]
        except (OSError, KeyError):
            return None
        return JobMemory(status.get("VmHWM", 0), available + status.get("VmRSS", 0))

    def start(self) -> None:
        self._last, self._same = 0, 0
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")  # "5" resets VmHWM to the current resident set

    def sample(self) -> JobMemory | None:
        """The running job's memory once its peak has not grown for SETTLE_POLLS polls, else None."""
        memory = self._memory()
        if memory is None:
            return None
        self._same = self._same + 1 if memory.peak == self._last and memory.peak > 0 else 0
        self._last = memory.peak
        return memory if self._same >= SETTLE_POLLS else None

    def finish(self) -> JobMemory | None:
        return self._memory()


def _kib_fields(lines: list[str]) -> dict[str, int]:
    """'Name:   1234 kB' lines of /proc files as bytes by name."""
    fields: dict[str, int] = {}
    for line in lines:
        name, _, value = line.partition(":")
        parts = value.split()
        if len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
            fields[name] = int(parts[0]) * 1024
    return fields


#: A job's size for ordering: (MoE on, number of tasks), the order of its expected peak memory and training time.
JobSize = tuple[bool, int]


def job_sizes(store_root: str, job_ids: Iterable[str]) -> dict[str, JobSize]:
    """Each job's size (`JobSize`) as its store record says; (False, 0) for a job the store cannot read, which fails
    with its own error when it runs."""
    from usagg.store import RunStore

    store = RunStore(store_root)
    sizes: dict[str, JobSize] = {}
    for job_id in job_ids:
        try:
            job = store.job(job_id)
            sizes[job_id] = (job.moe, len(job.tasks))
        except Exception:
            sizes[job_id] = (False, 0)
    return sizes


def largest_first(job_ids: Iterable[str], sizes: dict[str, JobSize]) -> list[str]:
    """The jobs largest first (`JobSize`), in their given order among equals: the pool's order of starting them, and
    the Slurm array's (usagg/execute/slurm.py), so the longest jobs, and the AU job a staged AG waits for, start
    first and the short ones fill the end."""
    return sorted(job_ids, key=lambda j: sizes.get(j, (False, 0)), reverse=True)


def visible_device(index: int, parent_visible: str | None = None) -> str:
    """CUDA_VISIBLE_DEVICES value for device `index` of the devices this process sees.

    Indices count the visible devices (as torch does), so under
    CUDA_VISIBLE_DEVICES=2,3 device 1 is physical GPU 3.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if parent_visible is None else parent_visible
    if visible:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        if index >= len(ids):
            raise ValueError(f"device {index} is not visible (CUDA_VISIBLE_DEVICES={visible})")
        return ids[index]
    return str(index)


def _name_gpu_memory(fn: JobFn, store_root: str, job_id: str, **kwargs: Any) -> str:
    """Run fn; running out of GPU memory is re-raised naming execution.jobs_per_gpu (run_one does the same itself)."""
    from usagg.engine.runner import gpu_memory_error

    try:
        return fn(store_root, job_id, **kwargs)
    except Exception as err:
        oom = gpu_memory_error(err)
        if oom is None:
            raise
        raise oom from err


def _worker(
    pins: dict[str, str], fn_blob: bytes, probe_blob: bytes, store_root: str, conn: Connection, forward: bool
) -> None:
    """Worker main: pin the device (and on the CPU the threads) first, then run the jobs the parent sends until told
    to stop; with `forward` each job gets a sink that sends its progress to the parent (`_ProgressSender`).

    SIGTERM (the parent stopping, a scheduler) ends the running job as Ctrl-C would: back to
    pending with its last checkpoint and its lock released (usagg/engine/runner.py). Ctrl-C itself
    is ignored: the parent gets it too and stops its workers with SIGTERM (`PoolExecutor.run`), so
    each job ends once, quietly, instead of in a KeyboardInterrupt traceback per worker.
    """
    leave_sigint_to_parent()
    with contextlib.suppress(OSError):  # the main script imported: a death from here on is the job's
        conn.send(("ready", ""))
    os.environ.update(pins)
    exit_on_sigterm()
    parent = mp.parent_process()
    if parent is not None and parent.pid is not None:
        stop_with_parent(parent.pid)  # a kill -9 of `usagg run` stops its workers too, each job back to pending
    from usagg.execute.base import call_job  # after pinning: nothing heavy imported before this line

    try:
        probe: MemoryProbe = pickle.loads(probe_blob)
        fn: JobFn = functools.partial(_name_gpu_memory, pickle.loads(fn_blob))
    except Exception:
        probe = CudaMemoryProbe()
        load_error = "could not load the job function or memory probe in the worker:\n" + traceback.format_exc()

        def unloadable(store_root: str, job_id: str, **kwargs: Any) -> str:
            raise RuntimeError(load_error)

        fn = unloadable

    lock = threading.Lock()
    while True:
        try:
            job_id = conn.recv()
        except EOFError:
            job_id = None
        if job_id is None:  # every job's files are closed: skip the interpreter's teardown of torch (~1 s)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        probe.start()
        done = threading.Event()
        sampler = threading.Thread(target=_sample, args=(probe, conn, lock, job_id, done), daemon=True)
        sampler.start()
        sink = _ProgressSender(conn, lock, job_id) if forward else None
        started = functools.partial(_send, conn, lock, ("started", job_id))  # once the job's lock is the worker's
        state, event, info = call_job(with_progress(fn, sink), store_root, job_id, started)
        done.set()
        sampler.join()
        with lock:
            conn.send(("done", job_id, state, event, info, probe.finish()))


def _send(conn: Connection, lock: threading.Lock, message: tuple[Any, ...]) -> None:
    """A message to the parent; a parent gone meanwhile (its pipe closed) is the run's end, not the job's error."""
    with lock, contextlib.suppress(OSError):
        conn.send(message)


class _ProgressSender:
    """The worker's progress sink: the trainer's reports go to the parent, which hands them to the run's
    `on_progress` (the CLI's display), so pooled jobs show their epochs as in-process ones do. At most one report per
    `PROGRESS_EVERY_S` within an epoch's training; an epoch's end and every other phase always go."""

    def __init__(self, conn: Connection, lock: threading.Lock, job_id: str) -> None:
        self.conn, self.lock, self.job_id = conn, lock, job_id
        self.last = 0.0

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if p.phase == "train" and p.step < p.steps and now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        with self.lock:
            self.conn.send(("progress", self.job_id, p))


def _sample(probe: MemoryProbe, conn: Connection, lock: threading.Lock, job_id: str, done: threading.Event) -> None:
    """While a job runs, report its memory once the probe answers: the pool can pack before the job ends."""
    while not done.wait(probe.poll_s):
        memory = probe.sample()
        if memory is not None:
            with lock:
                conn.send(("memory", job_id, memory))
            return


class _Device:
    """A GPU of the pool, or the CPU: how many workers it may run and, under auto, the memory its first report found
    usable."""

    def __init__(self, index: int | None, limit: int, most: int) -> None:
        self.index = index  # a GPU index (counting visible devices), None for the CPU
        self.key: int | str = "cpu" if index is None else index
        self.visible = "" if index is None else visible_device(index)  # a CPU worker sees no GPU
        self.limit = limit
        self.most = most  # MAX_JOBS_PER_GPU, or on the CPU cpu_workers("auto"): the usable cores over the threads
        self.free: int | None = None

    @property
    def label(self) -> str:
        return "the CPU" if self.index is None else f"device {self.index} (CUDA_VISIBLE_DEVICES={self.visible})"

    def packed(self, peak: int) -> int:
        """Workers that fit `peak`-sized jobs in this device's measured memory (no CUDA context on the CPU)."""
        assert self.free is not None
        return packed_jobs(self.free, peak, CONTEXT_BYTES if self.index is not None else 0, self.most)


class _Slot:
    """One worker process, the device it is pinned to and the job it holds."""

    def __init__(self, device: _Device) -> None:
        self.device = device
        self.proc: Any = None
        self.conn: Connection | None = None
        self.job: str | None = None
        self.threads: int | None = None  # torch threads of a CPU worker
        self.started: dict[str, Any] = {}  # the `started` event's info of its job, sent once the job's lock is taken
        self.ready = False  # its own code runs: 'spawn' has imported the main script


class PoolExecutor(Executor):
    """Worker processes on local GPUs (`jobs_per_device` per GPU) or on the CPU (`jobs_per_device` in all); an int,
    or "auto": measured, see the module doc. Jobs go to free workers."""

    name = "pool"

    def __init__(
        self,
        store_root: str,
        devices: list[int] | None,
        jobs_per_device: int | Literal["auto"] = 1,
        probe: MemoryProbe | None = None,
        threads: int | None = None,
        measured: Callable[[int], int | None] | None = None,
        accel: str = "eager",
    ) -> None:
        """`devices`: GPU indices, or None for the CPU; `threads`: torch threads per CPU worker (None: the usable
        cores shared by the workers); `probe`: CudaMemoryProbe on GPUs, CpuMemoryProbe on the CPU by default;
        `measured`: a GPU's measured best count under auto (default: its gpu-check measurement file under the
        jobs' `accel` mode, if any)."""
        super().__init__(store_root)
        if devices is not None and not devices:
            raise ValueError("PoolExecutor needs at least one device, or None for the CPU")
        if devices is not None and len(set(devices)) != len(devices):
            raise ValueError(f"duplicate devices {devices}")
        most = MAX_JOBS_PER_GPU if devices is not None else MAX_CPU_JOBS
        if jobs_per_device != "auto" and not 1 <= jobs_per_device <= most:
            raise ValueError(f"jobs_per_device must be 1..{most} or 'auto', got {jobs_per_device!r}")
        self.devices = None if devices is None else list(devices)
        self.jobs_per_device = jobs_per_device
        self.threads = threads
        self.measured = measured
        self.accel = accel
        self.probe: MemoryProbe = probe or (CudaMemoryProbe() if devices is not None else CpuMemoryProbe())
        self.peak = 0  # the largest job peak measured so far (auto)
        self.limits: dict[int | str, int] = {}  # device index ("cpu") -> workers allowed, as the last run left them
        self._retired: list[_Slot] = []  # workers told to exit during a run, joined at its end
        self._jobs = 0  # jobs of the current run
        self._on_progress: ProgressFn | None = None  # the current run's progress sink
        self._refused: str | None = None  # why a worker of the current run died before its own code ran

    @property
    def auto(self) -> bool:
        return self.jobs_per_device == "auto"

    def _devices(self) -> list[_Device]:
        """The pool's devices at the start of a run: under auto a GPU starts with one worker, the CPU with a worker
        per usable core (the module doc)."""
        fixed = None if self.jobs_per_device == "auto" else self.jobs_per_device
        if self.devices is None:
            most = cpu_workers("auto", None, self.threads)
            return [_Device(None, fixed or most, most)]
        return [_Device(i, fixed or 1, self._gpu_most(i)) for i in self.devices]

    def _gpu_most(self, index: int) -> int:
        """The most jobs at once on a GPU: under auto its measured best count where one was measured."""
        if not self.auto:
            return MAX_JOBS_PER_GPU
        if self.measured is None:
            from usagg.projection import measured_jobs_per_gpu

            self.measured = functools.partial(measured_jobs_per_gpu, accel=self.accel)
        return max(1, min(MAX_JOBS_PER_GPU, self.measured(index) or MAX_JOBS_PER_GPU))

    def run(
        self, job_ids: list[str], fn: JobFn, on_event: EventFn | None = None, on_progress: ProgressFn | None = None
    ) -> dict[str, str]:
        ctx = mp.get_context("spawn")
        blobs = (pickle.dumps(fn), pickle.dumps(self.probe))
        queue = deque(job_ids)
        states: dict[str, str] = {}
        if not job_ids:
            return states
        if self.devices is None and cpu_workers(self.jobs_per_device, len(job_ids), self.threads) == 1:
            # one worker: no process to start; the threads a worker of the full pool would have
            lone = InProcessExecutor(self.store_root, threads=default_cpu_threads(self.jobs_per_device, self.threads))
            return lone.run(job_ids, fn, on_event, on_progress)
        if entries := interactive_entries():  # before any worker: each would fail its job on them (every job)
            raise UsaggError(
                f"{', '.join(entries)} {'was' if len(entries) == 1 else 'were'} registered in an interactive session "
                "(a notebook, python -c), which this run's worker processes cannot import: define them in a module "
                f"and import it, or name it in {PLUGINS_ENV}, or set execution.cpu_jobs: 1 (one job at a time, in "
                f"this process); {counted(len(job_ids), 'job')} stay pending"
            )
        self._on_progress = on_progress
        self._jobs = len(job_ids)
        self._retired = []
        self._refused = None
        devices = self._devices()
        sizes = job_sizes(self.store_root, job_ids) if self.auto or self.devices is None else {}
        slots: list[_Slot] = []
        try:
            while len(states) < len(job_ids):
                self._fit(ctx, slots, devices, blobs, len(queue))
                for slot in slots:  # hand work to idle workers
                    if slot.job is None and slot.conn is not None and queue:
                        slot.job = self._next_job(queue, slot.device, sizes)
                        with contextlib.suppress(OSError):  # a dead worker: its sentinel tells us below
                            slot.conn.send(slot.job)
                        slot.started = {"device": slot.device.key, "jobs_at_once": slot.device.limit}
                        if slot.threads is not None:
                            slot.started["threads"] = slot.threads
                busy = [s for s in slots if s.job is not None]
                if not busy:
                    break
                ready = wait([s.conn for s in busy] + [s.proc.sentinel for s in busy])
                for slot in busy:
                    if slot.conn in ready or slot.proc.sentinel in ready:
                        self._collect(slot, slots, devices, states, on_event, queue)
        finally:
            for slot in slots:  # all at once: each exits while the others do
                self._release(slot)
            for slot in slots:  # Ctrl-C or an error here: every busy worker's job winds down at once, not in turn
                if slot.job is not None and slot.proc is not None:
                    slot.proc.terminate()
            deadline = time.monotonic() + STOP_GRACE_S
            for slot in slots + self._retired:
                self._stop(slot, deadline)
            self._retired = []
            self.limits = {d.key: d.limit for d in devices}
        if queue and self._refused is not None:
            raise UsaggError(
                f"{self._refused}. {counted(len(queue), 'job')} of this run did not run and stay pending (none is "
                "recorded failed): run it again once that is fixed"
            )
        return states

    def _next_job(self, queue: deque[str], device: _Device, sizes: dict[str, JobSize]) -> str:
        """The queue's next job; under auto a GPU not measured yet gets the largest, so its peak bounds the rest.

        The CPU always takes the largest: its measure needs it too, and longest first (a larger job also
        trains longer) leaves the short jobs to fill the cores at the end, for the shortest wall time.
        """
        wants_largest = device.index is None or (self.auto and device.free is None)
        if not wants_largest or not sizes:
            return queue.popleft()
        largest = largest_first(queue, sizes)[0]
        queue.remove(largest)
        return largest

    def _fit(
        self, ctx: Any, slots: list[_Slot], devices: list[_Device], blobs: tuple[bytes, bytes], queued: int
    ) -> None:
        """Stop idle workers above their device's limit; start workers, device by device, while queued jobs lack
        one."""
        for slot in [s for s in slots if s.proc is None]:  # its worker died
            slots.remove(slot)
        for slot in [s for s in slots if s.job is None]:
            if not queued or sum(s.device is slot.device for s in slots) > slot.device.limit:
                self._release(slot)  # nothing left for it, or above its device's limit: it exits now
                slots.remove(slot)
                self._retired.append(slot)
        if self._refused is not None:  # a new worker would die as that one did
            return
        wanted = queued - sum(s.job is None for s in slots)
        while wanted > 0:
            room = [d for d in devices if sum(s.device is d for s in slots) < d.limit]
            if not room:
                return
            device = min(room, key=lambda d: sum(s.device is d for s in slots))  # spread jobs over the GPUs
            slot = _Slot(device)
            self._start(ctx, slot, blobs)
            slots.append(slot)
            wanted -= 1

    def _pins(self, slot: _Slot) -> dict[str, str]:
        """The environment a worker is pinned with: its GPU; on the CPU no GPU and its share of the cores."""
        pins = {"CUDA_VISIBLE_DEVICES": slot.device.visible}
        if slot.device.index is None:
            slot.threads = default_cpu_threads(self.jobs_per_device, self.threads)
            pins["OMP_NUM_THREADS"] = pins["MKL_NUM_THREADS"] = str(slot.threads)
        return pins

    def _start(self, ctx: Any, slot: _Slot, blobs: tuple[bytes, bytes]) -> None:
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        proc = ctx.Process(
            target=_worker,
            args=(self._pins(slot), *blobs, self.store_root, child_conn, self._on_progress is not None),
            name=f"{WORKER_PREFIX}cpu" if slot.device.index is None else f"{WORKER_PREFIX}gpu{slot.device.visible}",
            daemon=True,
        )
        with sigint_held():  # a Ctrl-C while the worker imports: ours alone (usagg/signals.py)
            proc.start()
        child_conn.close()
        slot.proc, slot.conn, slot.job = proc, parent_conn, None

    def _measured(self, device: _Device, memory: JobMemory, devices: list[_Device], others: int) -> None:
        """Under auto, a job's measured peak (and a device's usable memory at its first report) set the limits.

        `others`: the device's other workers holding a job; at the first report their jobs count at this
        peak (the largest job went first, so it bounds theirs): on a GPU there are none, on the CPU the
        workers started together.
        """
        if not self.auto:
            return
        if device.free is None:
            device.free = memory.free + others * memory.peak
        self.peak = max(self.peak, memory.peak)
        for d in devices:
            if d.free is not None:
                limit = d.packed(self.peak)
                if limit != d.limit:
                    setting = "execution.cpu_jobs" if d.index is None else "execution.jobs_per_gpu"
                    log.info(
                        "%s: %d jobs at once (%s auto: job peak %.2f GiB, %.2f GiB usable)",
                        d.label,
                        limit,
                        setting,
                        self.peak / GIB,
                        d.free / GIB,
                    )
                d.limit = limit

    def _collect(
        self,
        slot: _Slot,
        slots: list[_Slot],
        devices: list[_Device],
        states: dict[str, str],
        on_event: EventFn | None,
        queue: deque[str],
    ) -> None:
        """Read a worker's answer, or notice it died: fail its job (a fresh worker replaces it when needed), or, for
        a worker that died before its own code ran, put the job back in `queue` (the module doc)."""
        assert slot.conn is not None and slot.job is not None
        job_id = slot.job
        others = sum(s is not slot and s.device is slot.device and s.job is not None for s in slots)
        try:
            while slot.conn.poll():
                kind, got_id, *rest = slot.conn.recv()
                if kind == "ready":
                    slot.ready = True
                    continue
                if got_id != job_id:
                    continue
                if kind == "started":  # its lock is the worker's: said only now, never for a job held elsewhere
                    self._emit(on_event, job_id, "started", slot.started)
                    continue
                if kind == "progress":  # a worker's report, to the run's sink (usagg/engine/progress.py)
                    send(self._on_progress, rest[0])
                    continue
                if kind == "memory":  # the job runs on; its memory is known
                    self._measured(slot.device, rest[0], devices, others)
                    continue
                state, event, info, memory = rest
                states[job_id] = state
                slot.job = None
                if memory is not None:
                    self._measured(slot.device, memory, devices, others)
                self._emit(on_event, job_id, event, info)
                return
        except (EOFError, OSError):
            slot.proc.join(timeout=5)  # the pipe closed: the worker is exiting
        if slot.proc.is_alive():
            return  # woke for another reason; keep waiting
        slot.proc.join()
        code = slot.proc.exitcode
        if not slot.ready:  # it never got to the job: the job is as it was, pending
            self._refused = refused_text(f"the worker process on {slot.device.label}", code)
            queue.appendleft(job_id)
            slot.conn.close()
            slot.proc, slot.conn, slot.job = None, None, None
            return
        error = _died_text(slot.device.label, code, job_id, self.store_root)
        try:
            summary = record_failure(self.store_root, job_id, error)
        except Exception:
            traceback.print_exc()
            summary = error
        states[job_id] = "failed"
        self._emit(on_event, job_id, "failed", {"state": "failed", "error": summary, "exitcode": code})
        slot.conn.close()
        slot.proc, slot.conn, slot.job = None, None, None

    def _release(self, slot: _Slot) -> None:
        """Tell an idle worker to exit without waiting for it (`_stop` at the end of the run joins it)."""
        if slot.job is None and slot.conn is not None:
            with contextlib.suppress(OSError, ValueError):
                slot.conn.send(None)

    def _stop(self, slot: _Slot, deadline: float) -> None:
        """Wait until `deadline` for a worker told to stop once (an idle one by `_release`, a busy one by SIGTERM,
        which puts its job back to pending), then kill it. Never a second SIGTERM: it reached the worker while it
        unwound, in torch's exit hooks, as a traceback on the terminal."""
        if slot.proc is None:
            return
        slot.proc.join(timeout=max(0.0, deadline - time.monotonic()))
        if slot.proc.is_alive():
            slot.proc.kill()
            slot.proc.join()
        if slot.conn is not None:
            slot.conn.close()
        slot.proc, slot.conn = None, None


def _died_text(device: str, code: int | None, job_id: str, store_root: str | Path) -> str:
    """A worker's death while it ran `job_id`: the exit code (a signal by name: -9 is the kernel's out-of-memory
    killer or a kill -9), and, where the job left a checkpoint, that `--retry-failed` resumes from it (a plain
    `usagg run` skips a failed job, and the operator had no hint its epochs were kept)."""
    how = f"exit code {code}"
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            how += f" ({signal.Signals(-code).name})"
    text = f"worker on {device} died with {how} while running job {job_id}"
    from usagg.store import RunStore

    if RunStore(store_root).has_checkpoint(job_id):
        text += "; its last.pt is kept: `usagg run --retry-failed` resumes it from there"
    return text
