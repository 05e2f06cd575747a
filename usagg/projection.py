"""Measured job throughput: the `jobs_per_gpu` measurement file and the wall-time projection of a study.

Both are fed by `make gpu-check` (benchmarks/gpu_check.py); nothing here imports torch at module level.

The measurement file. The `jobs_per_gpu` phase runs 1, 2 and 4 TS jobs at once on one GPU through the
real pool and writes their throughput (jobs per hour) to `<cache root>/jobs_per_gpu/<device>.json`
(`measurement_path`; the cache root is $USAGG_CACHE, else ~/.cache/usagg), or `<device>-<accel>.json` when
its jobs ran under another `execution.accel` mode: jobs at once gain less when steps are recorded.
`execution.jobs_per_gpu: auto` reads the file of the device it runs on and of the study's accel mode
(`measured_jobs_per_gpu`, usagg/execute/pool.py; eager's when that mode has none): the count it chooses
(`choose_jobs_per_gpu`) caps the count that measured memory allows. A file that does not parse, or that
was measured on another device, torch version or mode, is ignored with one log line, and memory alone
decides, as without a file.

The projection (pure arithmetic, `project`): each planned job costs, by part (`job_seconds`), training `epochs x
sum_type(train images x s/image)` + selection `epochs x (selection images x s/image + tasks x s/task)` +
per_epoch `epochs x s/epoch` + checkpoints `files written x s/file` + fixed + trunk `images built x build
s/image + images read x read s/image`; the files written follow `training.checkpoint_every`
(`checkpoint_saves`). The costs are measured on whole jobs run end to end (`kind_cost`: the same job at two
epoch counts; each job's metrics.json `throughput` splits its seconds into training, selection and checkpoints):
training per image and epoch from its difference, selection per image at the test evaluation's rate and the rest
of its difference per task (a pass's overhead), checkpoints per file written, the rest's difference per epoch
whatever the images (kept weights, the selection gap's test passes), and what the shorter job has beyond all
that fixed. Only training and selection scale with the study's image counts. The jobs' serial sum is divided by
the measured speed-up of the jobs run at once on one GPU.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from usagg.cachedir import cache_root
from usagg.spec.models import AUTO_CHECKPOINT_SHARE

if TYPE_CHECKING:
    from usagg.plan import Job

log = logging.getLogger(__name__)

#: A larger count is chosen only when it gives at least this much more throughput than the current choice:
#: within noise, fewer jobs at once (less memory, each result sooner) win.
MIN_GAIN = 1.05
#: Folder of the measurement files under the cache root.
MEASURE_DIR = "jobs_per_gpu"


# ----------------------------------------------------------------------------------------------------------------
# jobs_per_gpu: the measurement file


def device_slug(device_name: str) -> str:
    """A file name for a device: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", device_name.lower()).strip("-") or "device"


def measurement_path(device_name: str, root: Path | None = None, accel: str = "eager") -> Path:
    """Where the measurement of `device_name` under `execution.accel` mode `accel` is kept:
    `<cache root>/jobs_per_gpu/<slug>.json` for eager, `<slug>-<accel>.json` for another mode."""
    suffix = "" if accel == "eager" else f"-{accel}"
    return (root or cache_root()) / MEASURE_DIR / f"{device_slug(device_name)}{suffix}.json"


def choose_jobs_per_gpu(jobs_per_hour: Mapping[int, float]) -> int:
    """The count to run at once: going up the measured counts, each step must gain MIN_GAIN over the choice so far."""
    best = min(jobs_per_hour) if jobs_per_hour else 1
    for k in sorted(jobs_per_hour):
        if jobs_per_hour[k] >= MIN_GAIN * jobs_per_hour[best]:
            best = k
    return best


def write_measurement(
    device_name: str,
    torch_version: str,
    jobs_per_hour: Mapping[int, float],
    root: Path | None = None,
    accel: str = "eager",
) -> Path:
    """Record a device's measured throughput by jobs at once under `accel` (written whole, then renamed)."""
    from usagg.atomic import write_json_atomic

    path = measurement_path(device_name, root, accel)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "device": device_name,
        "torch": torch_version,
        "accel": accel,
        "jobs_per_hour": {str(k): round(float(v), 3) for k, v in sorted(jobs_per_hour.items())},
        "chosen": choose_jobs_per_gpu(jobs_per_hour),
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "by": "make gpu-check (benchmarks/gpu_check.py, phase jobs_per_gpu)",
    }
    write_json_atomic(path, record)
    return path


def read_measurement(
    device_name: str, torch_version: str, root: Path | None = None, accel: str = "eager"
) -> dict[int, float] | None:
    """Jobs per hour by count measured on this device under this torch and accel mode, or None (no file; a
    damaged or foreign file is ignored with one warning).

    A mode other than eager without a file of its own reads eager's, said in one line: jobs at once gain less
    when each one's steps are recorded (the GPU, not the host, is then the busy one), so eager's count is an
    upper bound on the mode's, a better cap than memory alone.
    """
    path = measurement_path(device_name, root, accel)
    if accel != "eager" and not path.is_file():
        eager = read_measurement(device_name, torch_version, root)
        if eager is not None:
            log.info("no jobs_per_gpu measurement under execution.accel %s (%s); eager's caps it", accel, path)
        return eager
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        rates = {int(k): float(v) for k, v in raw["jobs_per_hour"].items()}
        device, torch_v, mode = str(raw["device"]), str(raw["torch"]), str(raw.get("accel", "eager"))
        if not rates or any(k < 1 or not v > 0 for k, v in rates.items()):
            raise ValueError("counts must be >= 1 and rates > 0")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        log.warning("ignoring %s (damaged: %s); execution.jobs_per_gpu auto goes by memory alone", path, err)
        return None
    if mode != accel:
        log.warning("ignoring %s: measured under execution.accel %s, not %s", path, mode, accel)
        return None
    if (device, torch_v) != (device_name, torch_version):
        log.warning(
            "ignoring %s: measured on %s with torch %s, this is %s with torch %s; execution.jobs_per_gpu auto "
            "goes by memory alone (make gpu-check measures it again)",
            path,
            device,
            torch_v,
            device_name,
            torch_version,
        )
        return None
    return rates


def measured_jobs_per_gpu(index: int, root: Path | None = None, accel: str = "eager") -> int | None:
    """The count `execution.jobs_per_gpu: auto` may run on visible GPU `index` by its measurement file under the
    study's `execution.accel` (`read_measurement`), else None."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        name, version = torch.cuda.get_device_name(index), str(torch.__version__)
    except Exception:  # no driver, an index not visible: no measurement, memory decides as before
        return None
    rates = read_measurement(name, version, root, accel)
    if rates is None:
        return None
    chosen = choose_jobs_per_gpu(rates)
    log.info(
        "device %d (%s): at most %d job(s) at once by %s (jobs/h %s); measured memory may lower it",
        index,
        name,
        chosen,
        measurement_path(name, root, accel),
        ", ".join(f"{k}: {v:.0f}" for k, v in sorted(rates.items())),
    )
    return chosen


# ----------------------------------------------------------------------------------------------------------------
# The projection


@dataclass(frozen=True)
class MeasuredJob:
    """One job run end to end, as `kind_cost` reads it: its metrics.json `throughput`, its trunk stage left out."""

    epochs: int
    seconds: float  # the whole job but its trunk stage
    train_images: Mapping[str, float]  # task type -> training images per epoch
    train_s: float  # training, all epochs (`train_seconds`)
    select_images: float = 0.0  # selection images scored per epoch
    select_s: float = 0.0  # the selection evaluations, all epochs (`selection_seconds`)
    checkpoint_s: float = 0.0  # last.pt and best.pt writes (`checkpoint_seconds`)
    saves: int = 0  # files written (`checkpoint_saves`)
    tasks: int = 1  # tasks, each scored on its own selection split per epoch
    eval_image_s: float | None = None  # the test evaluation's seconds per image (same predictions, larger splits)

    @property
    def rest_s(self) -> float:
        """Neither training, selection nor checkpoints: per job (start-up, model build, test evaluation) and per
        epoch whatever its images (kept weights, the selection gap's test passes, history.csv)."""
        return self.seconds - self.train_s - self.select_s - self.checkpoint_s


@dataclass(frozen=True)
class KindCost:
    """What one kind of job (dense: TS; MoE: CG, AU) costs, measured end to end (`kind_cost`).

    `image_epoch_s`: training, per training image and epoch by task type; `select_image_s`: the selection
    evaluation, per selection image and epoch; `select_task_s`: its overhead per task and epoch (a pass over a
    task's split, whatever its images); `epoch_s`: per epoch whatever its images (the improved epochs'
    weights kept in host memory, the selection gap's test passes, history.csv); `save_s`: per checkpoint file
    written (last.pt or best.pt); `fixed_s`: per job, the trunk aside (start-up, data, model build, the first
    epoch's warm-up, test evaluation).
    """

    fixed_s: float
    image_epoch_s: dict[str, float]
    select_image_s: float = 0.0
    epoch_s: float = 0.0
    save_s: float = 0.0
    select_task_s: float = 0.0


@dataclass(frozen=True)
class TrunkCost:
    """Seconds per image to build the frozen trunk (usagg/model/trunk.py) and to read it from the cache."""

    build_s: float
    read_s: float


@dataclass(frozen=True)
class JobShape:
    """One planned job, as much of it as its wall time depends on."""

    paradigm: str
    moe: bool
    epochs: int
    train_images: dict[str, float]  # task type -> training images per epoch
    trunk_built: float = 0.0  # images whose trunk this job builds (the first of the study to need them)
    trunk_read: float = 0.0  # images whose trunk it reads from the cache
    select_images: float = 0.0  # selection images scored per epoch
    checkpoint_every: int | str = "auto"  # `training.checkpoint_every`
    writes_best: bool = False  # best.pt written once (selection best with a selection split)
    tasks: int = 1  # tasks scored on their selection splits per epoch


#: The parts of a job's seconds (`job_seconds`, `Projection.parts_s`).
PARTS = ("training", "selection", "per_epoch", "checkpoints", "fixed", "trunk")


@dataclass
class Projection:
    """A study's projected wall time on one device: per paradigm and per part (serial seconds), then the wall."""

    jobs: int
    jobs_at_once: int
    speedup: float
    serial_s: dict[str, float] = field(default_factory=dict)  # paradigm -> seconds, one job after the other
    parts_s: dict[str, float] = field(default_factory=dict)  # `PARTS` -> seconds (serial)
    saves: int = 0  # checkpoint files written, all jobs

    @property
    def serial_hours(self) -> float:
        return sum(self.serial_s.values()) / 3600

    @property
    def hours(self) -> float:
        """The wall time: the serial sum over the measured speed-up of `jobs_at_once` jobs on the device."""
        return self.serial_hours / self.speedup


def kind_cost(lo: MeasuredJob, hi: MeasuredJob, relative: Mapping[str, float] | None = None) -> KindCost:
    """The cost of a kind of job from the same job run for two epoch counts (`lo` fewer than `hi`).

    Training and selection: their seconds' difference over the epochs between is their per-epoch cost (floored at
    0: below the timing's noise), spread over the training images by type (`relative`: seconds per image by type
    of a steady training loop, 1 / its img/s, which covers types the measured job may not have; without it every
    type costs the same per image). Selection: per image at the test evaluation's rate (`eval_image_s`: the same
    predictions over larger splits) and the rest of its per-epoch seconds per task (a pass's overhead, which a
    check's few selection images cannot spread); without that rate, all of it per selection image. Checkpoints:
    the seconds per file written, over both jobs' files. The rest's difference (neither training, selection nor
    checkpoints) is a per-epoch cost that does not scale with images; what the shorter job has beyond all of this
    is fixed (floored at 0), so the costs give back its seconds.
    """
    if not 0 < lo.epochs < hi.epochs:
        raise ValueError(f"the jobs must run two increasing positive epoch counts, got {lo.epochs} and {hi.epochs}")
    span = hi.epochs - lo.epochs
    weight = dict(relative) if relative else dict.fromkeys(lo.train_images, 1.0)
    missing = sorted(set(lo.train_images) - set(weight))
    if missing:
        raise ValueError(f"no relative cost for task type(s) {missing} of the measured job")
    work = sum(n * weight[t] for t, n in lo.train_images.items())
    if work <= 0:
        raise ValueError(f"the measured job has no training images: {dict(lo.train_images)}")
    train = max(0.0, hi.train_s - lo.train_s) / span
    select = max(0.0, hi.select_s - lo.select_s) / span
    epoch = max(0.0, hi.rest_s - lo.rest_s) / span
    saves = lo.saves + hi.saves
    save = (lo.checkpoint_s + hi.checkpoint_s) / saves if saves else 0.0
    fixed = max(0.0, lo.seconds - lo.epochs * (train + select + epoch) - lo.saves * save)
    select_task = 0.0
    if lo.select_images <= 0:  # no selection images to scale by: whatever it measured is a per-epoch cost
        select_image, epoch = 0.0, epoch + select
    elif lo.eval_image_s is not None:
        select_image = min(lo.eval_image_s, select / lo.select_images)
        select_task = (select - lo.select_images * select_image) / max(1, lo.tasks)
    else:
        select_image = select / lo.select_images
    return KindCost(
        fixed_s=fixed,
        image_epoch_s={t: train / work * w for t, w in weight.items()},
        select_image_s=select_image,
        epoch_s=epoch,
        save_s=save,
        select_task_s=select_task,
    )


def checkpoint_saves(epochs: int, every: int | str, epoch_s: float, save_s: float, best: bool = False) -> int:
    """Checkpoint files a job of `epochs` writes (usagg/engine/checkpointing.py, `should_save`), best.pt (`best`)
    included.

    last.pt is written after the last epoch and, before it, every `every` epochs: ceil(epochs / every) in all.
    Under auto it is written after epoch 1 (which measures a save's cost) and the last, and in between after an
    epoch when the last save cost at most AUTO_CHECKPOINT_SHARE of the time since it: with epochs of `epoch_s`
    seconds and saves of `save_s`, every k = ceil(save_s / (share x epoch_s)) epochs from epoch 1, so the saves
    between the first and the last cost at most that share of the time of epochs 2 to epochs - 1.
    """
    if epochs < 1:
        raise ValueError(f"a job trains at least one epoch, got {epochs}")
    if every == "auto":
        room = AUTO_CHECKPOINT_SHARE * epoch_s  # one epoch's allowance
        if epochs == 1:
            last = 1
        elif save_s <= 0:
            last = epochs
        elif room <= 0:
            last = 2
        else:
            last = 2 + (epochs - 2) // max(1, math.ceil(save_s / room))
    else:
        k = int(every)
        if k < 1:
            raise ValueError(f"checkpoint_every must be auto or at least 1, got {every!r}")
        last = -(-epochs // k)
    return last + int(best)


def _training_epoch_s(job: JobShape, cost: KindCost) -> float:
    """One epoch's training: its images by type at their measured cost per image."""
    missing = sorted(set(job.train_images) - set(cost.image_epoch_s))
    if missing:
        raise ValueError(f"no measured cost for task type(s) {missing} ({job.paradigm} job)")
    return sum(n * cost.image_epoch_s[t] for t, n in job.train_images.items())


def _selection_epoch_s(job: JobShape, cost: KindCost) -> float:
    """One epoch's selection evaluation: per image, and per task with a selection split."""
    if job.select_images <= 0:
        return 0.0
    return job.select_images * cost.select_image_s + job.tasks * cost.select_task_s


def job_saves(job: JobShape, cost: KindCost) -> int:
    """Checkpoint files `job` writes at `cost`'s epoch and save costs (`checkpoint_saves`)."""
    epoch = _training_epoch_s(job, cost) + _selection_epoch_s(job, cost) + cost.epoch_s
    return checkpoint_saves(job.epochs, job.checkpoint_every, epoch, cost.save_s, job.writes_best)


def job_seconds(job: JobShape, cost: KindCost, trunk: TrunkCost) -> dict[str, float]:
    """Seconds of one job run alone by part (`PARTS`): training (epochs x training images by type x s/image),
    selection (epochs x (selection images x s/image + tasks x s/task)), per_epoch (epochs x s/epoch), checkpoints
    (files x s/file), fixed, and the trunk (images built x build s + read x read s)."""
    return {
        "training": job.epochs * _training_epoch_s(job, cost),
        "selection": job.epochs * _selection_epoch_s(job, cost),
        "per_epoch": job.epochs * cost.epoch_s,
        "checkpoints": job_saves(job, cost) * cost.save_s,
        "fixed": cost.fixed_s,
        "trunk": job.trunk_built * trunk.build_s + job.trunk_read * trunk.read_s,
    }


def project(
    jobs: Iterable[JobShape],
    costs: Mapping[bool, KindCost],
    trunk: TrunkCost,
    jobs_at_once: int = 1,
    jobs_per_hour: Mapping[int, float] | None = None,
) -> Projection:
    """Serial seconds per paradigm and part, and the speed-up of `jobs_at_once` jobs side by side.

    The speed-up is jobs_per_hour[k] / jobs_per_hour[1] for the largest measured k <= jobs_at_once
    (1 without a measurement): a count never measured is not credited with more than the one below it.
    """
    rates = dict(jobs_per_hour or {})
    measured = [k for k in rates if k <= jobs_at_once]
    k = max(measured) if measured and 1 in rates else 1
    out = Projection(jobs=0, jobs_at_once=k, speedup=rates[k] / rates[1] if k > 1 else 1.0)
    out.parts_s = dict.fromkeys(PARTS, 0.0)
    for job in jobs:
        parts = job_seconds(job, costs[job.moe], trunk)
        out.jobs += 1
        out.saves += job_saves(job, costs[job.moe])
        out.serial_s[job.paradigm] = out.serial_s.get(job.paradigm, 0.0) + sum(parts.values())
        for part, s in parts.items():
            out.parts_s[part] += s
    return out


def trunk_on(job: Job) -> bool:
    """Whether the job reads a frozen trunk (`model.trunk` auto, blocks frozen, none of the job's MoE among them)."""
    frozen = job.model.resolved_frozen_blocks()
    if job.model.trunk == "off" or frozen <= 0:
        return False
    return not job.moe or min(job.model.resolved_moe_blocks(), default=frozen) >= frozen


def study_shapes(jobs: Iterable[Job], images_by_type: Mapping[str, float]) -> list[JobShape]:
    """The planned jobs as `JobShape`s, for a study whose data are not at hand: training pool images by type.

    Each task gets its type's pool shared equally among the study's tasks of that type; a job trains
    (1 - selection_fraction) x fraction of each task's pool per epoch and scores selection_fraction of it (the
    selection split is held out before the fraction is taken: usagg/data/splits.py), writing best.pt once when it
    selects the best epoch on such a split. The trunk covers a task's whole
    pool (test images, not counted here, aside); one file per task and frozen weights: shared by every
    seed with pretrained weights (`model.weights`), one per seed with a random init (the seed draws them).
    The first job in plan order to need a file builds it, the others read it.
    """
    jobs = list(jobs)
    tasks: dict[str, str] = {t.id: t.type for j in jobs for t in j.tasks}
    per_type = {ty: sum(1 for v in tasks.values() if v == ty) for ty in set(tasks.values())}
    missing = sorted(set(per_type) - set(images_by_type))
    if missing:
        raise ValueError(f"no image count for task type(s) {missing}")
    pool = {tid: images_by_type[ty] / per_type[ty] for tid, ty in tasks.items()}
    built: set[tuple[str, int | None]] = set()
    shapes = []
    for j in jobs:
        train: dict[str, float] = {}
        for t in j.tasks:
            train[t.type] = train.get(t.type, 0.0) + pool[t.id] * j.fraction * (1 - j.data.selection_fraction)
        select = sum(pool[t.id] for t in j.tasks) * j.data.selection_fraction
        new = read = 0.0
        if trunk_on(j):
            for t in j.tasks:
                key = (t.id, None if j.model.weights is not None else j.seed)
                if key in built:
                    read += pool[t.id]
                else:
                    built.add(key)
                    new += pool[t.id]
        shapes.append(
            JobShape(
                j.paradigm,
                j.moe,
                j.training.epochs,
                train,
                new,
                read,
                select_images=select,
                checkpoint_every=j.training.checkpoint_every,
                writes_best=j.training.selection == "best" and select > 0,
                tasks=len(j.tasks),
            )
        )
    return shapes


def summary(p: Projection) -> dict[str, Any]:
    """A projection as JSON-ready numbers."""
    return {
        "jobs": p.jobs,
        "jobs_at_once": p.jobs_at_once,
        "speedup": p.speedup,
        "serial_hours": p.serial_hours,
        "hours": p.hours,
        "paradigm_hours": {k: v / 3600 for k, v in p.serial_s.items()},
        "part_hours": {k: v / 3600 for k, v in p.parts_s.items()},
        "saves": p.saves,
    }
