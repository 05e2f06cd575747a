"""One job's lock file: who runs the job right now, safe across processes and hosts on a shared file system.

The lock is a file created with O_CREAT|O_EXCL (atomic, also over NFS v3+) holding the holder's host, pid,
process start time and a random token; a heartbeat thread touches it while it is held, so another host can
tell a live holder from a dead one by its age. A holder that is not alive (`JobLock.holder_alive`) is broken:
renamed aside first, so two breakers cannot both win. In usagg's own Slurm array element the lock also names
the element (`slurm_run`): a job Slurm kills outright (out of memory, pre-empted, past its time) leaves a fresh
heartbeat behind for `stale_after_s`, but Slurm runs one instance of an element at a time, so its requeued run, or
the submitting host once sacct says the element ended (`JobLock.break_slurm`), knows the holder is dead once its
heartbeat has also been silent for a few beats (`SLURM_EVIDENCE_BEATS`). The run store (usagg/store/) owns
the lock's path and its damage notes; this module owns the protocol.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from usagg.atomic import parse_json, read_regular
from usagg.errors import UsaggError

#: Key of `read_holder`'s answer for a lock file that is not a lock record (why, in words).
DAMAGED_HOLDER = "damaged"

#: The most bytes of a lock file read: a lock record is a few hundred; anything larger was planted.
LOCK_LIMIT = 64 * 2**10

#: Locks this process holds: lock path -> (token, thread id), so the store knows whether its caller holds one.
_HELD: dict[str, tuple[str, int]] = {}
#: What to call once a thread takes a lock: (lock path, thread id) -> callback (`when_taken`).
_WAITING: dict[tuple[str, int], Callable[[], None]] = {}


class JobLocked(UsaggError):
    """Another live process holds the job's lock: it is running the job right now."""

    def __init__(self, job_id: str, holder: dict[str, Any]) -> None:
        self.job_id = job_id
        self.holder = holder
        super().__init__(f"job {job_id} is being run by another process ({describe_holder(holder)})")


@contextlib.contextmanager
def when_taken(path: Path, callback: Callable[[], None]) -> Iterator[None]:
    """Within the block, `callback()` runs once this thread takes the lock at `path` (`JobLock.held`, heartbeat
    running): an executor says a job started only once the job is its own, never for a job whose lock another
    process took first (usagg/execute/base.py `call_job`). A callback's error never reaches the lock's taker."""
    key = (str(path), threading.get_ident())
    _WAITING[key] = callback
    try:
        yield
    finally:
        _WAITING.pop(key, None)


def describe_holder(holder: dict[str, Any]) -> str:
    """A lock holder in words: host, pid, its Slurm job where it ran under one, since when."""
    slurm = holder_slurm_job(holder)
    where = f"{holder.get('host', '?')} pid {holder.get('pid', '?')}" + (f", Slurm job {slurm}" if slurm else "")
    return f"{where}, since {holder.get('started', '?')}"


#: Set by usagg's own Slurm array element (usagg/execute/slurm.py `SlurmJobCall`) to its Slurm job, for itself and
#: its children: only such a process records, and reasons from, a Slurm identity. A `usagg run` in an salloc shell
#: or under `srun -N2` shares SLURM_JOB_ID with processes on other hosts and is the run of no element.
ELEMENT_ENV = "USAGG_SLURM_ELEMENT"
#: Heartbeats a lock must have missed before Slurm's word that its holder ended is taken: a node Slurm failed
#: (NODE_FAIL) may still run and reach the shared file system, and sacct can lag; a live holder touches its lock
#: every heartbeat_s.
SLURM_EVIDENCE_BEATS = 3


def _slurm_job() -> str | None:
    """The Slurm job of this process's environment: `array id _ index` of an array element, else the job id."""
    array, index = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{index}" if array and index else os.environ.get("SLURM_JOB_ID")


@contextlib.contextmanager
def slurm_element() -> Iterator[None]:
    """Within the block, this process is usagg's Slurm array element (`ELEMENT_ENV`), so its locks carry its Slurm
    job; restored after (submitit's in-process `debug` cluster runs the element in the submitting process)."""
    job, before = _slurm_job(), os.environ.get(ELEMENT_ENV)
    if job:
        os.environ[ELEMENT_ENV] = job
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ELEMENT_ENV, None)
        else:
            os.environ[ELEMENT_ENV] = before


def slurm_run() -> dict[str, Any] | None:
    """This process's Slurm job and how often Slurm has restarted it (requeued: SLURM_RESTART_COUNT, absent before
    the first requeue), where it is usagg's own array element (`slurm_element`); None elsewhere."""
    job = _slurm_job()
    if not job or os.environ.get(ELEMENT_ENV) != job:
        return None
    restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
    return {"job": job, "restart": int(restarts) if restarts.isdigit() else 0}


def holder_slurm_job(holder: dict[str, Any]) -> str | None:
    """The Slurm job a lock holder ran as (`slurm_run`), None when it ran outside Slurm (or the record is garbage)."""
    slurm = holder.get("slurm")
    job = slurm.get("job") if isinstance(slurm, dict) else None
    return job if isinstance(job, str) else None


def _proc_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (state first), None without /proc or the process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()


def _proc_start(pid: int) -> str | None:
    """Start time of a process in clock ticks since boot (Linux), to tell a reused pid apart."""
    fields = _proc_fields(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None


#: The largest process id Linux hands out (2**22, /proc/sys/kernel/pid_max's ceiling); a lock naming a larger one was
#: not written by a process (os.kill would raise OverflowError past a C long).
PID_MAX = 1 << 22


def _pid_alive(pid: int, proc_start: str | None) -> bool:
    """Whether `pid` on this host is the process that wrote the lock and still runs (not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    except OSError:
        return False
    rest = _proc_fields(pid)
    if rest is None:
        return True  # no /proc: trust kill(0)
    if rest and rest[0] in ("Z", "X"):
        return False
    return not (proc_start is not None and len(rest) > 19 and rest[19] != proc_start)


def read_holder(path: Path) -> dict[str, Any] | None:
    """The lock's holder info; None if there is no lock, {} while it is being written (empty) or unreadable,
    {DAMAGED_HOLDER: why} when it holds something other than a lock record (never alive, so broken)."""
    try:
        raw = read_regular(path, LOCK_LIMIT)
    except FileNotFoundError:
        return None
    except OSError as err:
        return {DAMAGED_HOLDER: f"not a lock file ({err.strerror})"} if err.errno == errno.EINVAL else {}
    if not raw.strip():
        return {}
    try:
        data = parse_json(raw)
    except ValueError as err:  # UnicodeDecodeError and too deep a nesting are ValueErrors
        return {DAMAGED_HOLDER: f"not a lock record ({type(err).__name__})"}
    if not isinstance(data, dict) or DAMAGED_HOLDER in data:
        return {DAMAGED_HOLDER: f"a JSON {type(data).__name__}, not a lock record"}
    return data


class _Heartbeat(threading.Thread):
    """Touches the lock file while it is held, so other hosts can tell a live holder from a dead one."""

    def __init__(self, path: Path, token: str, interval_s: float) -> None:
        super().__init__(name=f"usagg-lock-heartbeat-{path.parent.name}", daemon=True)
        self.path = path
        self.token = token
        self.interval_s = interval_s
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(self.interval_s):
            holder = read_holder(self.path)
            if holder == {}:
                continue  # unreadable for a moment (EIO, ESTALE on NFS) or being written: skip this beat, not all
            if holder is None or holder.get("token") != self.token:
                return  # broken by someone else (we looked dead); never touch their lock
            with contextlib.suppress(OSError):
                os.utime(self.path)


@dataclass(frozen=True)
class JobLock:
    """The lock of job `job_id` at `path`: heartbeat every `heartbeat_s`, dead after `stale_after_s` silent; `about`:
    what else the holder records of itself (a `usagg run`'s spec file and plan size, `RunStore.run`)."""

    path: Path
    job_id: str
    heartbeat_s: float
    stale_after_s: float
    about: dict[str, Any] | None = field(default=None, compare=False)

    def holder(self) -> dict[str, Any] | None:
        """Who holds the lock (host, pid, started, token), or None (`read_holder`)."""
        return read_holder(self.path)

    def holder_alive(self, holder: dict[str, Any]) -> bool:
        """The one liveness rule, host-aware.

        Any host: the heartbeat (the lock file's mtime) must be younger than `stale_after_s`, and not further in
        the future than that (a clock that far ahead, or a lock file dated in the future by hand, would otherwise
        hold the job for good). This host: the recorded pid must also run and be the same process (its start
        time matches). Another host cannot be probed: its fresh heartbeat is the answer. A lock being written
        right now (no holder info yet) is young, so alive.
        """
        if DAMAGED_HOLDER in holder:
            return False  # garbage in the lock file: no process can be holding it
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return False  # released meanwhile
        if abs(age) > self.stale_after_s:
            return False
        if age > self.slurm_evidence_s and self.earlier_run_of_this_element(holder):
            return False
        if holder and holder.get("host") == socket.gethostname():
            pid = holder.get("pid")
            if type(pid) is not int or not 1 <= pid <= PID_MAX:
                return False  # no process's id (0, -1 and True would probe a group, every process, init): garbage
            return _pid_alive(pid, holder.get("proc_start"))
        return True

    @property
    def slurm_evidence_s(self) -> float:
        """How long a lock's heartbeat must have been silent before Slurm's word that its holder ended counts."""
        return SLURM_EVIDENCE_BEATS * self.heartbeat_s

    def silent_s(self) -> float | None:
        """Seconds since the lock's heartbeat, None when there is no lock."""
        try:
            return time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return None

    @staticmethod
    def earlier_run_of_this_element(holder: dict[str, Any]) -> bool:
        """Whether the holder is an earlier run of the very Slurm array element this process is (a lower
        SLURM_RESTART_COUNT): Slurm requeues an element only once its last run is gone, so such a holder was killed
        (out of memory, pre-empted, past its time) and could not release the lock. `holder_alive` takes it only
        once the lock's heartbeat has also been silent for `slurm_evidence_s`."""
        mine = slurm_run()
        theirs = holder.get("slurm")
        if mine is None or not isinstance(theirs, dict) or theirs.get("job") != mine["job"]:
            return False
        restart = theirs.get("restart")
        return type(restart) is int and restart < mine["restart"]

    @contextlib.contextmanager
    def held(self) -> Iterator[dict[str, Any]]:
        """Hold the lock for the `with` block (heartbeat running); JobLocked if a live process holds it.

        Yields the holder info written into the lock.
        """
        token = self._acquire()
        _HELD[str(self.path)] = (token, threading.get_ident())
        try:
            beat = _Heartbeat(self.path, token, self.heartbeat_s)
            beat.start()
            try:
                taken = _WAITING.pop((str(self.path), threading.get_ident()), None)
                if taken is not None:
                    with contextlib.suppress(Exception):
                        taken()
                yield read_holder(self.path) or {}
            finally:
                beat.stop_event.set()
                beat.join(timeout=5)
        finally:
            _HELD.pop(str(self.path), None)
            self._release(token)

    def held_here(self) -> bool:
        """Whether this thread holds the lock right now (taken by `held` and not broken since)."""
        held = _HELD.get(str(self.path))
        if held is None or held[1] != threading.get_ident():
            return False
        holder = read_holder(self.path)
        return holder is not None and holder.get("token") == held[0]

    def break_slurm(self, slurm_job: str) -> dict[str, Any] | None:
        """Break the lock if its holder ran as Slurm job `slurm_job` (an array element), which the caller knows has
        ended (sacct says so), and its heartbeat has been silent for `slurm_evidence_s`: a job Slurm killed
        outright leaves its lock looking alive for `stale_after_s`. Returns the holder broken, None when the lock is
        free, held by anyone else, or still beating."""
        holder = self.holder()
        if not holder or holder_slurm_job(holder) != slurm_job:
            return None
        silent = self.silent_s()
        if silent is None or silent <= self.slurm_evidence_s:  # sacct can lag behind a requeued run that beats
            return None
        self._break(holder)
        return holder

    def release_own(self) -> bool:
        """Drop the lock if this process holds it (before a Slurm requeue: the new run may be elsewhere)."""
        holder = read_holder(self.path)
        if holder and holder.get("host") == socket.gethostname() and holder.get("pid") == os.getpid():
            self._release(str(holder.get("token")))
            return True
        return False

    def _acquire(self) -> str:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        info: dict[str, Any] = {
            **(self.about or {}),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "proc_start": _proc_start(os.getpid()),
            "started": datetime.now(timezone.utc).isoformat(),
            "token": token,
        }
        slurm = slurm_run()
        if slurm is not None:
            info["slurm"] = slurm
        payload = json.dumps(info).encode()
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = read_holder(self.path)
                if holder is None:
                    continue  # released meanwhile: try again
                if not self.holder_alive(holder):
                    self._break(holder)
                    continue
                raise JobLocked(self.job_id, holder) from None
            try:
                os.write(fd, payload)
                os.fsync(fd)
            finally:
                os.close(fd)
            return token
        raise JobLocked(self.job_id, read_holder(self.path) or {})

    def _break(self, holder: dict[str, Any]) -> None:
        """Remove a stale lock; rename first so two breakers cannot both win, then check what we took."""
        aside = self.path.with_name(f"{self.path.name}.stale.{uuid.uuid4().hex[:12]}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # another breaker (or the holder) was faster
        taken = read_holder(aside)
        if holder and taken is not None and taken.get("token") != holder.get("token"):
            # We raced: between our look and our rename a new holder took the lock. Give it back
            # (link fails if yet another lock appeared, which then stays the lock).
            with contextlib.suppress(OSError):
                os.link(aside, self.path)
        with contextlib.suppress(OSError):
            aside.unlink()

    def _release(self, token: str) -> None:
        holder = read_holder(self.path)
        if holder is not None and holder.get("token") == token:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
