"""Writing the synthetic benchmark in the FMC_UIA layout (train/ and val/, CSV index files, PNGs).

One CSV per task (`<split>/csv_files/<task_id>.csv`) so that a task's files
depend only on that task's settings. A manifest (`synth.json`) is written
first with `"complete": false` and rewritten last with `true`: it marks the
folder as ours and tells finished from interrupted. A folder holding a finished benchmark of other
settings is replaced only when asked (`force`); the same settings again write the same bytes. The settings and the
manifest are usagg/data/synth/manifest.py's, which renders nothing.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import traceback
from collections import deque
from collections.abc import Callable, Generator
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path

import numpy as np
from PIL import Image

from usagg.atomic import FULL_DISK, no_space_left, write_text_atomic
from usagg.data.synth.manifest import MANIFEST, SPLITS, replacing, resolve_tasks, settings, split_size
from usagg.data.synth.sample import SynthSample, make_sample
from usagg.data.synth.tasks import ALL_TASKS, SynthTask
from usagg.errors import UsaggError
from usagg.safepath import no_links
from usagg.signals import leave_sigint_to_parent, sigint_held
from usagg.spec.models import SynthSpec
from usagg.tasktypes import get_task_type
from usagg.workerstart import REFUSED_EXIT, refused_text

#: Images per work item; also the progress granularity.
CHUNK = 25
#: Below this many images one process is faster than starting workers.
PARALLEL_MIN_IMAGES = 400

#: progress(task_id, split, done, total): images of that task and split written so far.
Progress = Callable[[str, str, int, int], None]


def columns(task: SynthTask) -> list[str]:
    """CSV header of a task, exactly as the challenge's files have it."""
    return [
        "image_path",
        "task_id",
        "task_name",
        "num_classes",
        *get_task_type(task.type).csv_columns(task.num_classes),
    ]


def _write_png(path: Path, array: np.ndarray) -> None:
    """Write one PNG; a failed write names the file (PIL's error names none): NoSpaceLeft for a full disk."""
    try:
        Image.fromarray(array).save(path, compress_level=1)
    except OSError as err:
        if err.errno is None:
            raise
        if err.errno in FULL_DISK:
            raise no_space_left(path, err) from err
        raise OSError(err.errno, err.strerror, str(path)) from err


def _row(sample: SynthSample, image_rel: str, mask_rel: str | None) -> list[object]:
    t = sample.task
    fields = get_task_type(t.type).csv_fields(sample.csv_label(mask_rel), t.num_classes)
    return [image_rel, t.id, t.task_name, t.num_classes, *fields]


def render_chunk(out: str, task_id: str, split: str, start: int, stop: int, seed: int, size: int) -> list[list]:
    """Generate and write images start..stop-1 of one task and split; returns their CSV rows (worker entry point)."""
    task = ALL_TASKS[task_id]
    folder = Path(out) / split / task.folder
    rows = []
    for i in range(start, stop):
        sample = make_sample(task_id, split, i, seed, size)
        name = f"{task_id}_{i:05d}.png"
        _write_png(folder / "images" / name, sample.image)
        mask_rel = None
        if sample.mask is not None:
            _write_png(folder / "masks" / name, sample.mask)
            mask_rel = f"../{task.folder}/masks/{name}"
        rows.append(_row(sample, f"../{task.folder}/images/{name}", mask_rel))
    return rows


def auto_workers(n_images: int) -> int:
    """Processes worth starting: one for small jobs or inside a daemon worker (it may not fork), else the cores."""
    import multiprocessing

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if n_images < PARALLEL_MIN_IMAGES or multiprocessing.current_process().daemon:
        return 1
    return max(1, min(cores, 8))


def _render_worker(conn: Connection) -> None:
    """A rendering process: the chunks the parent sends, their rows (or the error) back, until it sends None."""
    leave_sigint_to_parent()
    while (chunk := conn.recv()) is not None:
        try:
            conn.send((True, render_chunk(*chunk)))
        except (UsaggError, OSError) as err:  # a full disk, an unwritable folder: the parent says it in one paragraph
            conn.send((False, err))
        except Exception:
            conn.send((False, traceback.format_exc()))


def _rendered_in_workers(args: list[tuple], n: int) -> Generator[list[list], None, None]:
    """`render_chunk(*a)` for each of `args`, in order, by `n` worker processes.

    Not a ProcessPoolExecutor: Ctrl-C reached its workers too, and its shutdown then waited forever on one
    stopped mid-task; stopped from outside it raced its own thread (Python 3.11). These workers ignore Ctrl-C,
    a worker that dies fails the run, and however the generator ends (done, Ctrl-C, SIGTERM, an error) its
    workers are terminated and joined at once: a chunk half written is redone by the next run (`synth.json`
    says incomplete), and no worker writes on into a folder its caller then removes.
    """
    import multiprocessing

    # spawn, not fork: the caller may hold threads (torch, a progress bar) that fork would copy mid-state.
    ctx = multiprocessing.get_context("spawn")
    todo = deque(enumerate(args))
    workers: dict[Connection, BaseProcess] = {}  # our end of a worker's pipe -> its process
    held: dict[Connection, int] = {}  # -> the index of the chunk it renders
    done: dict[int, list[list]] = {}

    def hand(conn: Connection) -> None:
        if todo:
            held[conn], chunk = todo.popleft()
            with contextlib.suppress(OSError):  # a dead worker: its sentinel says so
                conn.send(chunk)

    try:
        with sigint_held():  # a Ctrl-C while they import is ours alone (usagg/signals.py)
            for _ in range(min(n, len(args))):
                ours, theirs = ctx.Pipe()
                workers[ours] = ctx.Process(target=_render_worker, args=(theirs,), name="usagg-synth", daemon=True)
                workers[ours].start()
                theirs.close()
        for conn in workers:
            hand(conn)
        for index in range(len(args)):
            while index not in done:
                wait([*held, *(workers[c].sentinel for c in held)])
                for conn in [c for c in held if c.poll()]:
                    try:
                        ok, value = conn.recv()
                    except (EOFError, OSError):  # a dead worker (its pipe closed or reset): its sentinel says so
                        continue
                    if not ok and isinstance(value, Exception):  # a user's error (`_render_worker`): as it is
                        raise value
                    if not ok:
                        raise RuntimeError(f"rendering a synthetic chunk failed in a worker:\n{value}")
                    done[held.pop(conn)] = value
                    hand(conn)
                dead = [workers[c] for c in held if not workers[c].is_alive()]
                if dead and dead[0].exitcode == REFUSED_EXIT:  # it never ran: the caller's script lacks its guard
                    raise UsaggError(refused_text("a process writing the synthetic benchmark", REFUSED_EXIT))
                if dead:
                    raise UsaggError(
                        f"a process writing the synthetic benchmark died (exit code {dead[0].exitcode}; -9 is often "
                        "the out-of-memory killer); what it wrote stays marked incomplete, and a rerun writes it anew."
                    )
            yield done.pop(index)
    finally:
        started = [proc for proc in workers.values() if proc.pid is not None]  # one may have failed to start
        for proc in started:  # idle or mid-chunk: nothing of theirs is needed any more
            proc.terminate()
        for proc in started:
            proc.join()


def _write_all(out: Path, spec: SynthSpec, ids: list[str], progress: Progress | None, workers: int | None) -> None:
    chunks = [
        (tid, split, lo, min(lo + CHUNK, split_size(spec, tid, split)))
        for split in SPLITS
        for tid in ids
        for lo in range(0, split_size(spec, tid, split), CHUNK)
    ]
    for split in SPLITS:
        (out / split / "csv_files").mkdir(parents=True, exist_ok=True)
        for tid in ids:
            (out / split / ALL_TASKS[tid].folder / "images").mkdir(parents=True, exist_ok=True)
            if ALL_TASKS[tid].has_masks:
                (out / split / ALL_TASKS[tid].folder / "masks").mkdir(exist_ok=True)
    args = [(str(out), tid, split, lo, hi, spec.seed, spec.image_size) for tid, split, lo, hi in chunks]
    n = workers or auto_workers(sum(hi - lo for *_, lo, hi in chunks))
    rows: dict[tuple[str, str], list[list]] = {(tid, split): [] for split in SPLITS for tid in ids}
    results: Generator[list[list], None, None]
    results = _rendered_in_workers(args, n) if n > 1 else (render_chunk(*a) for a in args)
    with contextlib.closing(results):  # an interrupted loop ends the workers now, not when the generator is freed
        for (tid, split, _, _), chunk_rows in zip(chunks, results, strict=True):
            rows[tid, split].extend(chunk_rows)
            if progress is not None:
                progress(tid, split, len(rows[tid, split]), split_size(spec, tid, split))
    for (tid, split), task_rows in rows.items():
        with open(out / split / "csv_files" / f"{tid}.csv", "w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(columns(ALL_TASKS[tid]))
            writer.writerows(task_rows)


def _manifest(out: Path, info: dict, complete: bool) -> None:
    write_text_atomic(out / MANIFEST, json.dumps({**info, "complete": complete}, indent=2) + "\n")


def generate_benchmark(
    out: Path,
    spec: SynthSpec,
    tasks: list[str] | None = None,
    *,
    progress: Progress | None = None,
    workers: int | None = None,
    force: bool = False,
) -> Path:
    """Write the synthetic benchmark into `out` (FMC_UIA layout) and return `out`.

    workers: processes rendering images (None: `auto_workers`); the bytes written never depend on it.
    Refuses a non-empty folder that is not an earlier synth output, and an earlier finished output of other
    settings unless `force` (`replacing`); what it replaces has its train/ and val/ removed first, so no stale
    files stay.
    """
    out = Path(out)
    ids = resolve_tasks(spec, tasks)
    info = settings(spec, ids)
    replacing(out, info, force)
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:  # a link planted at train/ or val/ would have the benchmark written through it, elsewhere
        folder = out / split
        if folder.is_symlink() or folder.exists():
            shutil.rmtree(no_links(folder, f"usagg synth {out}"))
    _manifest(out, info, complete=False)
    _write_all(out, spec, ids, progress, workers)
    _manifest(out, info, complete=True)
    return out
