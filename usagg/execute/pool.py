"""A local pool of worker processes, `jobs_per_gpu` per GPU, each pinned with CUDA_VISIBLE_DEVICES.

Workers are started with multiprocessing 'spawn' (a CUDA context never
survives fork) and set CUDA_VISIBLE_DEVICES before the job function is even
unpickled, so the engine's torch import sees exactly one device, `cuda:0`.
The parent hands each idle worker the next job of the queue over its own pipe,
so it always knows which job a worker holds: a worker that dies (segfault,
out-of-memory kill, os._exit) fails that job, is replaced, and the pool goes on.
Every job still runs `fn` in its worker, so it keeps its own lock, process and log.

Several jobs per GPU (`execution.jobs_per_gpu`): an integer starts that many
workers per GPU. `auto` measures instead of guessing: each GPU starts with one
worker, whose first job is the queue's largest (MoE first, then the most tasks:
for one backbone, batch and input size the largest parameter and optimiser
state). Its worker reports that job's peak (`torch.cuda.max_memory_reserved`)
and the memory jobs may use beside the worker's own CUDA context (free plus
its reserved), once while the job runs, when the peak has not grown for
`SETTLE_POLLS` polls of a busy GPU (training in its steady state; a job that
allocates nothing per step, under CUDA graphs, is measured at its end only),
and again when it ends.
From the first report on, that GPU runs `packed_jobs(free, peak)` workers, the
peak being the largest measured on any GPU so far; a larger one measured later
lowers every GPU's count (workers above it finish their job and get no other).
On the CPU no job uses CUDA, nothing is measured and a GPU keeps one worker.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import multiprocessing as mp
import os
import pickle
import sys
import threading
import traceback
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Literal, Protocol

from usagg.execute.base import EventFn, Executor, JobFn, record_failure
from usagg.signals import exit_on_sigterm

log = logging.getLogger(__name__)

GIB = 2**30
MAX_JOBS_PER_GPU = 16
#: Memory a worker process holds outside torch's allocator: its CUDA context, kernels, cuBLAS/cuDNN workspaces.
CONTEXT_BYTES = GIB
#: Head room over the largest measured peak (allocator fragmentation, a job kind not measured yet).
PEAK_MARGIN = 1.25
#: A running job's peak is reported once it has not grown for this many polls of `CudaMemoryProbe.poll_s`
#: while the GPU was busy (at least MIN_ALLOCATIONS allocations per poll: training, not a CPU phase
#: such as decoding between moving the model and the first step).
SETTLE_POLLS = 3
MIN_ALLOCATIONS = 100


def packed_jobs(free_bytes: int, peak_bytes: int) -> int:
    """How many jobs peaking at `peak_bytes` share a GPU with `free_bytes` usable beside one worker's context.

    n jobs need n * PEAK_MARGIN * peak plus a context for each of the n - 1 extra
    processes (the measuring worker's context is already outside `free_bytes`);
    clamped to 1..MAX_JOBS_PER_GPU.
    """
    per_job = PEAK_MARGIN * max(peak_bytes, 1) + CONTEXT_BYTES
    return max(1, min(MAX_JOBS_PER_GPU, int((free_bytes + CONTEXT_BYTES) // per_job)))


@dataclass(frozen=True)
class GpuMemory:
    """What a worker measured on its GPU for one job, in bytes."""

    peak: int  # torch's peak reserved memory during the job (so far)
    free: int  # device memory free plus this worker's reserved: what jobs may use beside its context


class MemoryProbe(Protocol):
    """Measures one job's GPU memory inside a worker (None: the job uses no GPU, or nothing settled yet).

    `start` runs before the job, `sample` every `poll_s` seconds from another
    thread while it runs (the first non-None answer is reported), `finish` after it.
    """

    poll_s: float

    def start(self) -> None: ...

    def sample(self) -> GpuMemory | None: ...

    def finish(self) -> GpuMemory | None: ...


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

    def sample(self) -> GpuMemory | None:
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
        return GpuMemory(peak, int(free) + int(cuda.memory_reserved()))

    def finish(self) -> GpuMemory | None:
        cuda = self._cuda()
        if cuda is None:
            return None
        peak = int(cuda.max_memory_reserved())
        gc.collect()  # the job's model and optimiser are garbage now: give their memory back to the other jobs
        cuda.empty_cache()
        free, _total = cuda.mem_get_info()
        return GpuMemory(peak, int(free) + int(cuda.memory_reserved()))


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


def _name_gpu_memory(fn: JobFn, store_root: str, job_id: str) -> str:
    """Run fn; running out of GPU memory is re-raised naming execution.jobs_per_gpu (run_one does the same itself)."""
    from usagg.engine.runner import gpu_memory_error

    try:
        return fn(store_root, job_id)
    except Exception as err:
        oom = gpu_memory_error(err)
        if oom is None:
            raise
        raise oom from err


def _worker(device: str, fn_blob: bytes, probe_blob: bytes, store_root: str, conn: Connection) -> None:
    """Worker main: pin the GPU first, then run the jobs the parent sends until told to stop.

    SIGTERM (the parent stopping, a scheduler) ends the running job as Ctrl-C would: back to
    pending with its last checkpoint and its lock released (usagg/engine/runner.py).
    """
    os.environ["CUDA_VISIBLE_DEVICES"] = device
    exit_on_sigterm()
    from usagg.execute.base import call_job  # after pinning: nothing heavy imported before this line

    try:
        probe: MemoryProbe = pickle.loads(probe_blob)
        fn = functools.partial(_name_gpu_memory, pickle.loads(fn_blob))
    except Exception:
        probe = CudaMemoryProbe()
        load_error = "could not load the job function or memory probe in the worker:\n" + traceback.format_exc()

        def fn(store_root: str, job_id: str) -> str:
            raise RuntimeError(load_error)

    lock = threading.Lock()
    while True:
        try:
            job_id = conn.recv()
        except EOFError:
            return
        if job_id is None:
            return
        probe.start()
        done = threading.Event()
        sampler = threading.Thread(target=_sample, args=(probe, conn, lock, job_id, done), daemon=True)
        sampler.start()
        state, event, info = call_job(fn, store_root, job_id)
        done.set()
        sampler.join()
        with lock:
            conn.send(("done", job_id, state, event, info, probe.finish()))


def _sample(probe: MemoryProbe, conn: Connection, lock: threading.Lock, job_id: str, done: threading.Event) -> None:
    """While a job runs, report its memory once the probe answers: the pool can pack before the job ends."""
    while not done.wait(probe.poll_s):
        memory = probe.sample()
        if memory is not None:
            with lock:
                conn.send(("memory", job_id, memory))
            return


class _Gpu:
    """One GPU of the pool: how many workers it may run and, under auto, the memory its first report found usable."""

    def __init__(self, index: int, limit: int) -> None:
        self.index = index
        self.visible = visible_device(index)
        self.limit = limit
        self.free: int | None = None


class _Slot:
    """One worker process, the GPU it is pinned to and the job it holds."""

    def __init__(self, gpu: _Gpu) -> None:
        self.gpu = gpu
        self.proc: Any = None
        self.conn: Connection | None = None
        self.job: str | None = None


class GpuPoolExecutor(Executor):
    """`jobs_per_gpu` workers per GPU (an int, or "auto": measured, see the module doc); jobs go to free workers."""

    name = "gpu-pool"

    def __init__(
        self,
        store_root: str,
        devices: list[int],
        jobs_per_gpu: int | Literal["auto"] = 1,
        probe: MemoryProbe | None = None,
    ) -> None:
        super().__init__(store_root)
        if not devices:
            raise ValueError("GpuPoolExecutor needs at least one device")
        if len(set(devices)) != len(devices):
            raise ValueError(f"duplicate devices {devices}")
        if jobs_per_gpu != "auto" and not 1 <= jobs_per_gpu <= MAX_JOBS_PER_GPU:
            raise ValueError(f"jobs_per_gpu must be 1..{MAX_JOBS_PER_GPU} or 'auto', got {jobs_per_gpu!r}")
        self.devices = list(devices)
        self.jobs_per_gpu = jobs_per_gpu
        self.probe: MemoryProbe = probe or CudaMemoryProbe()
        self.peak = 0  # the largest job peak measured so far (auto)
        self.limits: dict[int, int] = {}  # device index -> workers allowed, as the last run left them

    @property
    def auto(self) -> bool:
        return self.jobs_per_gpu == "auto"

    def run(self, job_ids: list[str], fn: JobFn, on_event: EventFn | None = None) -> dict[str, str]:
        ctx = mp.get_context("spawn")
        blobs = (pickle.dumps(fn), pickle.dumps(self.probe))
        queue = deque(job_ids)
        states: dict[str, str] = {}
        if not job_ids:
            return states
        gpus = [_Gpu(i, 1 if self.jobs_per_gpu == "auto" else self.jobs_per_gpu) for i in self.devices]
        sizes = self._job_sizes(job_ids) if self.auto else {}
        slots: list[_Slot] = []
        try:
            while len(states) < len(job_ids):
                self._fit(ctx, slots, gpus, blobs, len(queue))
                for slot in slots:  # hand work to idle workers
                    if slot.job is None and slot.conn is not None and queue:
                        slot.job = self._next_job(queue, slot.gpu, sizes)
                        with contextlib.suppress(OSError):  # a dead worker: its sentinel tells us below
                            slot.conn.send(slot.job)
                        info = {"device": slot.gpu.index, "jobs_per_gpu": slot.gpu.limit}
                        self._emit(on_event, slot.job, "started", info)
                busy = [s for s in slots if s.job is not None]
                if not busy:
                    break
                ready = wait([s.conn for s in busy] + [s.proc.sentinel for s in busy])
                for slot in busy:
                    if slot.conn in ready or slot.proc.sentinel in ready:
                        self._collect(slot, gpus, states, on_event)
        finally:
            for slot in slots:
                self._stop(slot)
            self.limits = {g.index: g.limit for g in gpus}
        return states

    def _job_sizes(self, job_ids: list[str]) -> dict[str, tuple[bool, int]]:
        """(MoE on, number of tasks) per job: the order of expected peak memory for one backbone and input size."""
        from usagg.store import RunStore

        store = RunStore(self.store_root)
        sizes: dict[str, tuple[bool, int]] = {}
        for job_id in job_ids:
            try:
                job = store.job(job_id)
                sizes[job_id] = (job.moe, len(job.tasks))
            except Exception:  # a job the store cannot read fails with its own error when it runs
                sizes[job_id] = (False, 0)
        return sizes

    def _next_job(self, queue: deque[str], gpu: _Gpu, sizes: dict[str, tuple[bool, int]]) -> str:
        """The queue's next job; under auto a GPU not measured yet gets the largest, so its peak bounds the rest."""
        if not self.auto or gpu.free is not None or not sizes:
            return queue.popleft()
        largest = max(queue, key=lambda j: sizes.get(j, (False, 0)))
        queue.remove(largest)
        return largest

    def _fit(self, ctx: Any, slots: list[_Slot], gpus: list[_Gpu], blobs: tuple[bytes, bytes], queued: int) -> None:
        """Stop idle workers above their GPU's limit; start workers, GPU by GPU, while queued jobs lack one."""
        for slot in [s for s in slots if s.proc is None]:  # its worker died
            slots.remove(slot)
        for slot in [s for s in slots if s.job is None]:
            if sum(s.gpu is slot.gpu for s in slots) > slot.gpu.limit:
                self._stop(slot)
                slots.remove(slot)
        wanted = queued - sum(s.job is None for s in slots)
        while wanted > 0:
            room = [g for g in gpus if sum(s.gpu is g for s in slots) < g.limit]
            if not room:
                return
            gpu = min(room, key=lambda g: sum(s.gpu is g for s in slots))  # spread jobs over the GPUs
            slot = _Slot(gpu)
            self._start(ctx, slot, blobs)
            slots.append(slot)
            wanted -= 1

    def _start(self, ctx: Any, slot: _Slot, blobs: tuple[bytes, bytes]) -> None:
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        proc = ctx.Process(
            target=_worker,
            args=(slot.gpu.visible, *blobs, self.store_root, child_conn),
            name=f"usagg-gpu{slot.gpu.visible}",
            daemon=True,
        )
        proc.start()
        child_conn.close()
        slot.proc, slot.conn, slot.job = proc, parent_conn, None

    def _measured(self, gpu: _Gpu, memory: GpuMemory, gpus: list[_Gpu]) -> None:
        """Under auto, a job's measured peak (and a GPU's usable memory at its first report) set the limits."""
        if not self.auto:
            return
        if gpu.free is None:
            gpu.free = memory.free  # measured by its only worker
        self.peak = max(self.peak, memory.peak)
        for g in gpus:
            if g.free is not None:
                limit = packed_jobs(g.free, self.peak)
                if limit != g.limit:
                    log.info(
                        "GPU %d: %d jobs at once (execution.jobs_per_gpu auto: job peak %.2f GiB, %.2f GiB free)",
                        g.index,
                        limit,
                        self.peak / GIB,
                        g.free / GIB,
                    )
                g.limit = limit

    def _collect(self, slot: _Slot, gpus: list[_Gpu], states: dict[str, str], on_event: EventFn | None) -> None:
        """Read a worker's answer, or notice it died: fail its job (a fresh worker replaces it when needed)."""
        assert slot.conn is not None and slot.job is not None
        job_id = slot.job
        try:
            while slot.conn.poll():
                kind, got_id, *rest = slot.conn.recv()
                if got_id != job_id:
                    continue
                if kind == "memory":  # the job runs on; its memory is known
                    self._measured(slot.gpu, rest[0], gpus)
                    continue
                state, event, info, memory = rest
                states[job_id] = state
                slot.job = None
                if memory is not None:
                    self._measured(slot.gpu, memory, gpus)
                self._emit(on_event, job_id, event, info)
                return
        except (EOFError, OSError):
            slot.proc.join(timeout=5)  # the pipe closed: the worker is exiting
        if slot.proc.is_alive():
            return  # woke for another reason; keep waiting
        slot.proc.join()
        code = slot.proc.exitcode
        error = (
            f"worker on device {slot.gpu.index} (CUDA_VISIBLE_DEVICES={slot.gpu.visible}) died "
            f"with exit code {code} while running job {job_id}"
        )
        try:
            summary = record_failure(self.store_root, job_id, error)
        except Exception:
            traceback.print_exc()
            summary = error
        states[job_id] = "failed"
        self._emit(on_event, job_id, "failed", {"state": "failed", "error": summary, "exitcode": code})
        slot.conn.close()
        slot.proc, slot.conn, slot.job = None, None, None

    def _stop(self, slot: _Slot) -> None:
        """Ask a worker to stop, and make sure it does (Ctrl-C or an error in the parent included)."""
        if slot.proc is None:
            return
        if slot.conn is not None:
            with contextlib.suppress(OSError, ValueError):
                slot.conn.send(None)
        slot.proc.join(timeout=5 if slot.job is None else 0.1)
        if slot.proc.is_alive():
            slot.proc.terminate()
            slot.proc.join(timeout=5)
        if slot.proc.is_alive():
            slot.proc.kill()
            slot.proc.join()
        if slot.conn is not None:
            slot.conn.close()
        slot.proc, slot.conn = None, None
