"""A local pool with one worker process per GPU, each pinned with CUDA_VISIBLE_DEVICES.

Workers are started with multiprocessing 'spawn' (a CUDA context never
survives fork) and set CUDA_VISIBLE_DEVICES before the job function is even
unpickled, so the engine's torch import sees exactly one device, `cuda:0`.
The parent hands each idle worker the next job of the queue over its own pipe,
so it always knows which job a worker holds: a worker that dies (segfault,
out-of-memory kill, os._exit) fails that job, is replaced, and the pool goes on.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import pickle
import traceback
from collections import deque
from multiprocessing.connection import Connection, wait
from typing import Any

from usagg.execute.base import EventFn, Executor, JobFn, record_failure


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


def _worker(device: str, fn_blob: bytes, store_root: str, conn: Connection) -> None:
    """Worker main: pin the GPU first, then run the jobs the parent sends until told to stop."""
    os.environ["CUDA_VISIBLE_DEVICES"] = device
    from usagg.execute.base import call_job  # after pinning: nothing heavy imported before this line

    try:
        fn = pickle.loads(fn_blob)
    except Exception:
        load_error = "could not load the job function in the worker:\n" + traceback.format_exc()

        def fn(store_root: str, job_id: str) -> str:
            raise RuntimeError(load_error)

    while True:
        try:
            job_id = conn.recv()
        except EOFError:
            return
        if job_id is None:
            return
        state, event, info = call_job(fn, store_root, job_id)
        conn.send((job_id, state, event, info))


class _Slot:
    """One device's worker process and the job it holds."""

    def __init__(self, device_index: int, device: str) -> None:
        self.device_index = device_index
        self.device = device
        self.proc: Any = None
        self.conn: Connection | None = None
        self.job: str | None = None


class GpuPoolExecutor(Executor):
    """One worker per GPU; jobs go to whichever worker is free."""

    name = "gpu-pool"

    def __init__(self, store_root: str, devices: list[int]) -> None:
        super().__init__(store_root)
        if not devices:
            raise ValueError("GpuPoolExecutor needs at least one device")
        if len(set(devices)) != len(devices):
            raise ValueError(f"duplicate devices {devices}")
        self.devices = list(devices)

    def _start(self, ctx: Any, slot: _Slot, fn_blob: bytes) -> None:
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        proc = ctx.Process(
            target=_worker,
            args=(slot.device, fn_blob, self.store_root, child_conn),
            name=f"usagg-gpu{slot.device}",
            daemon=True,
        )
        proc.start()
        child_conn.close()
        slot.proc, slot.conn, slot.job = proc, parent_conn, None

    def run(self, job_ids: list[str], fn: JobFn, on_event: EventFn | None = None) -> dict[str, str]:
        ctx = mp.get_context("spawn")
        fn_blob = pickle.dumps(fn)
        queue = deque(job_ids)
        states: dict[str, str] = {}
        if not job_ids:
            return states
        slots = [_Slot(i, visible_device(i)) for i in self.devices[: len(job_ids)]]
        try:
            for slot in slots:
                self._start(ctx, slot, fn_blob)
            while len(states) < len(job_ids):
                for slot in slots:  # hand work to idle workers
                    if slot.job is None and slot.conn is not None and queue:
                        slot.job = queue.popleft()
                        with contextlib.suppress(OSError):  # a dead worker: its sentinel tells us below
                            slot.conn.send(slot.job)
                        self._emit(on_event, slot.job, "started", {"device": slot.device_index})
                busy = [s for s in slots if s.job is not None]
                if not busy:
                    break
                ready = wait([s.conn for s in busy] + [s.proc.sentinel for s in busy])
                for slot in busy:
                    if slot.conn in ready or slot.proc.sentinel in ready:
                        self._collect(ctx, slot, fn_blob, states, on_event, restart=bool(queue))
        finally:
            for slot in slots:
                self._stop(slot)
        return states

    def _collect(
        self, ctx: Any, slot: _Slot, fn_blob: bytes, states: dict[str, str], on_event: EventFn | None, restart: bool
    ) -> None:
        """Read a worker's answer, or notice it died: fail its job and start a fresh worker."""
        assert slot.conn is not None and slot.job is not None
        job_id = slot.job
        try:
            if slot.conn.poll():
                got_id, state, event, info = slot.conn.recv()
                if got_id == job_id:
                    states[job_id] = state
                    slot.job = None
                    self._emit(on_event, job_id, event, info)
                    return
        except (EOFError, OSError):
            slot.proc.join(timeout=5)  # the pipe closed: the worker is exiting
        if slot.proc.is_alive():
            return  # woke for another reason; keep waiting
        slot.proc.join()
        code = slot.proc.exitcode
        error = (
            f"worker on device {slot.device_index} (CUDA_VISIBLE_DEVICES={slot.device}) died "
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
        if restart:
            self._start(ctx, slot, fn_blob)

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
