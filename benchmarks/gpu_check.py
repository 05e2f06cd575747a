"""GPU check (`make gpu-check`, `python -m benchmarks.gpu_check`): speed, memory and numerical agreement on CUDA.

Phases, most wanted first (a device lease may end mid-run; each phase that fails is
reported with its traceback and the check goes on, exiting 1 at the end; so does a phase
that ran but lost a mode or count, listed in the last line):

0. bare: the denominator (benchmarks/bare_loop.py): a bare timm training loop of the same
   encoder at the same image size, batch and precision with a fused AdamW, eager and compiled;
   every job and accel mode below is also given as its achieved FLOP/s over the bare compiled
   loop's ("vs bare": MFU / bare-compiled MFU).
1. moe: the MoE block's forward+backward time against the dense block
   (benchmarks/bench_moe.py, the dispatch training takes on this card): about a second, and it decides
   a target, so it runs before the long jobs phase.
2. jobs: a short synthetic study (one TS, one CG and the AU job; four task types;
   bf16 autocast) run through the real run store and `run_one`: per job images/s,
   model FLOPs utilisation (FLOPs per training image, counted by
   torch.utils.flop_counter on one step, x images/s / the card's dense bf16 peak,
   `PEAK_BF16`), peak GPU memory, and host syncs per steady-state training step
   (`torch.cuda.set_sync_debug_mode("warn")`, warnings counted over a dozen steps of
   the real batch path and model step). Then the AU job again eager and under each
   whole-step mode asked for, held against the eager AU job by its task losses epoch by
   epoch (`run_jobs`, `loss_gap`).
3. jobs_per_gpu and projection: TS jobs at once through the pool (`jobs_per_gpu_rates`), then the projected
   wall time of studies/fmc_uia.yaml on this device (formula in `project_study`): its own backbone, image size,
   batch and MoE blocks, timed per task type with and without MoE.
4. agreement: one fixed model (MoE on, every head) evaluated on the same test images
   on the CPU in fp32 and on the GPU in fp32 and bf16; predictions and primary
   metrics must agree within `TOLERANCE`. gradients: the AU model's encoder compiled
   as compiled-step-graphs compiles it, its gradients per task as close to float32's
   as eager bf16's (`compare_gradients`).
5. profile: where an eager AU step's time goes, and a recorded one's under each whole-step mode
   asked for (wall against GPU-busy time, kernels per step, the top kernels): whether the host
   or the arithmetic sets the pace, and how many kernels compiling the encoder saves.
6. accel: the AU model trained in a steady loop under each `execution.accel` mode in
   `GPU_CHECK_ACCEL` (usagg/engine/accel.py), and eager at four times the batch: img/s, MFU.

FLOPs per image are counted on what the timed step is given (`flops_per_image`): trunk tokens for the steady loops
(the frozen blocks never run there), for a whole job its pixels' and its tokens' counts weighted by the share of
training rows the trunk served (`trunk_served`), for the bare loop pixels (every block trains): "vs bare" compares
the FLOPs each loop really does.

Self-contained: generates its own synthetic data in a temporary folder, never
downloads (HF_HUB_OFFLINE=1). `GPU_CHECK_JSON=<path>` also writes the results as
JSON at the start, after every phase and after every job of the jobs phase (`so_far`: a phase cut by a time
limit keeps the jobs it ran), each time whole; `GPU_CHECK_PHASES=jobs,accel` runs only those phases and
`GPU_CHECK_ACCEL` the accel modes measured beside eager (default `DEFAULT_ACCEL`);
`GPU_CHECK_JOBS_AT_ONCE=1,2,4` the counts the jobs_per_gpu phase measures (1 among them);
`GPU_CHECK_STUDY_ACCEL=step-graphs` runs the jobs_per_gpu phase's jobs and the projection's whole jobs
under that mode instead of the study's (eager), its measurement file that mode's.
`GPU_CHECK_DEADLINE_S=<s>` (tools/gpu_lease.sh sets it; unset: no deadline): a phase whose estimate
(`PHASE_ESTIMATE_S`) exceeds the seconds left of that many since the check began is not started but
reported as "skipped: deadline" (log and JSON `skipped`), and the check exits `EXIT_SKIPPED` where
nothing failed: a lease cut short never reads as a full pass.
Without CUDA it says so and exits 0. GPU_CHECK_DEVICE=cpu runs the same flow on
the CPU at a tiny size (to test this script without a GPU; its numbers mean
nothing, and the CPU runs eager in every accel mode). Meant to take under 6
minutes on one H100 or H200.
"""

from __future__ import annotations

import math
import os
import re
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.bare_loop import achieved_ratio
from usagg.cachedir import cache_root

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: Largest difference allowed against CPU fp32, per precision: probabilities, boxes and keypoints are in [0, 1];
#: "seg" is the share of segmentation pixels whose class may differ; metric tolerances are absolute for bounded
#: metrics (DSC, AUC, IoU) and relative for MRE (pixels). "loss_rel": a whole job under another accel mode against
#: the eager one, each task's mean training loss per epoch, relative (`loss_gap`).
TOLERANCE: dict[str, dict[str, float]] = {
    "fp32": {"pred": 2e-3, "seg": 2e-3, "metric": 5e-3, "mre_rel": 5e-3, "loss_rel": 5e-3},
    "bf16": {"pred": 5e-2, "seg": 3e-2, "metric": 5e-2, "mre_rel": 5e-2, "loss_rel": 5e-2},
}

#: Dense bf16 tensor-core peak, FLOP/s, by a substring of torch.cuda.get_device_name (first match wins).
PEAK_BF16: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM (80GB HBM3)
    ("H200 NVL", 835e12),
    ("H200", 989e12),  # SXM
    ("A100", 312e12),
    ("L40S", 362e12),
    ("RTX 4090", 165e12),
)


#: Accel modes measured by default: the whole step recorded (usagg/engine/step.py), without a compiler and around
#: the compiled encoder's and heads' kernels. compile and graphs are left out
#: (`GPU_CHECK_ACCEL=eager,compile,graphs` measures them): on the H200 compile gave 1.20x eager and took about
#: 140 s to compile; on an H100 (2026-12-06) the graphs job with affinity took 141 s of a 386 s check and ran at
#: 9 img/s: its encoder, recompiled for each grad mode and batch shape, hit dynamo's recompile limit (8) and ran
#: eagerly from then on, in that job and the steady loops after it (graphs 0.99x eager there, where step-graphs
#: gave 2.26x; the encoder now compiles for training alone).
DEFAULT_ACCEL = ("eager", "step-graphs", "compiled-step-graphs")
#: The modes that record each task's whole step: the jobs phase runs the AU job under each one asked for.
WHOLE_STEP_MODES = ("step-graphs", "compiled-step-graphs")
#: Modes of the projection's steady loops unless GPU_CHECK_ACCEL names them: none that compiles. graphs and
#: compiled-step-graphs would compile dinov3_base's encoder twice (dense and MoE), about a minute each if they take
#: what the bare phase's compile of dinov3_small took on the H100 (most of its 74 s): past a six-minute check.
#: Where the jobs and accel phases show compiled-step-graphs ahead, `GPU_CHECK_PHASES=projection
#: GPU_CHECK_ACCEL=compiled-step-graphs` projects the study under it.
PROJECTION_ACCEL = ("eager", "step-graphs")

#: Expected seconds of each phase at the default settings (GPU_CHECK_ACCEL, GPU_CHECK_JOBS_AT_ONCE unset), by
#: device: what `GPU_CHECK_DEADLINE_S` weighs before starting a phase. ESTIMATES, rounded up, not guarantees. CUDA:
#: the H100 run of 2026-12-06 (docs/benchmarks.md): bare 74 s (its two compiles), moe 1 s, jobs_per_gpu 52 s,
#: projection 56 s, agreement 4 s, profile 13 s (eager and step-graphs), accel 11 s; jobs 130 s: 28 s there for
#: its eager and step-graphs jobs (their sync and FLOP counts included), the eager-again job (about 6 s), and the
#: compiled-step-graphs job, never timed on a GPU: a cold compile (its inductor cache is the check's new temporary
#: folder unless TORCHINDUCTOR_CACHE_DIR is set, as tools/gpu_lease.sh sets it) of dinov3_small's encoder with MoE
#: and of four heads, forward and backward, where the bare loop's one compile of the dense encoder and a linear head
#: took about 60 of its 74 s: about 60 s for the encoder, 30 s for the MoE dispatch and the heads, and 5 s for the
#: job itself (the audit of 2026-12-07 put the phase at 110-170 s). A default lease (deadline 220 s) starts it with
#: about 140 s left, its imports, bare and moe done: an estimate above that would skip it in every cold lease; should
#: it run longer, the lease's limit cuts it in that last job, and the rows measured before are kept (`run_jobs`'
#: `keep`). Gradients never timed on a GPU (it reuses the jobs phase's compiled code; a compile of its own if not).
#: CPU: the flow at its tiny size, three runs on two shared cores (2026-12-07: 51, 95 and 145 s), the largest of each.
PHASE_ESTIMATE_S: dict[str, dict[str, float]] = {
    "cuda": {
        "bare": 80,
        "moe": 5,
        "jobs": 130,
        "jobs_per_gpu": 55,
        "projection": 60,
        "agreement": 10,
        "gradients": 30,
        "profile": 20,
        "accel": 15,
    },
    "cpu": {
        "bare": 10,
        "moe": 3,
        "jobs": 60,
        "jobs_per_gpu": 20,
        "projection": 35,
        "agreement": 3,
        "gradients": 20,
        "profile": 15,
        "accel": 20,
    },
}
#: Exit code of a check that failed nothing but skipped phases for its deadline (1: a failure, 2: a bad setting).
EXIT_SKIPPED = 3

#: FMC_UIA training images by task type, as reported for the study (the projection's image counts).
FMC_UIA_TRAIN_IMAGES = {"segmentation": 16615, "classification": 16361, "detection": 4333, "regression": 3078}

STUDY_SPEC = Path(__file__).resolve().parent.parent / "studies" / "fmc_uia.yaml"

TASKS = """
  - {id: fetal_head, type: segmentation, num_classes: 2, group: Fetal}
  - {id: fetal_head_biometry, type: regression, num_classes: 2, group: Fetal}
  - {id: thyroid_malignancy, type: classification, num_classes: 2, group: Thyroid}
  - {id: thyroid_nodule_det, type: detection, num_classes: 1, group: Thyroid}
"""

STUDY = """
name: {name}
output_root: {root}/runs
paradigms: {paradigms}
data:
  synthetic:
    seed: 0
    image_size: {synth_size}
    default_size: 4
    val_size: {val}
    sizes: {{fetal_head: {n}, fetal_head_biometry: {n}, thyroid_malignancy: {n}, thyroid_nodule_det: {n}}}
    out: {root}/synth
  selection_fraction: 0.15
  cache_dir: {root}/cache
tasks: {tasks}
model: {{backbone: {backbone}, image_size: {size}, moe: {{experts: 4}}}}
training: {{epochs: {epochs}, batch_size: {batch}, eval_batch_size: 64, precision: {precision}}}
"""


def _settings(device: str) -> dict[str, Any]:
    if device == "cuda":
        return {
            "backbone": "dinov3_small",
            "size": 224,
            "synth_size": 128,
            "n": 96,
            "val": 32,
            "epochs": 3,
            "batch": 32,
            "precision": "bf16",
            "steps": 10,  # timed steps per task in the steady loops
            "sync_steps": 12,  # training steps over which host syncs are counted, after a warm-up round
            "profile_rounds": PROFILE_ROUNDS,
            "warmup": 2,  # untimed rounds before a steady loop or the profile (compiles, lazy set-up)
            # jobs_per_gpu: TS jobs of studies/fmc_uia.yaml's shapes, this many at once, one each per worker
            "jpg_counts": (1, 2, 4),
            "jpg_n": 96,  # images per task (synthetic: the jobs phase's) of those jobs, and their epochs
            "jpg_epochs": 2,
            # projection: whole jobs of the study's shapes (TS: one task; AU: four tasks) on the jobs phase's images
            # (generating more costs seconds of CPU), at two epoch counts far enough apart for TS's epoch to show
            "proj_n": 96,
            "proj_epochs": (1, 5),
        }
    return {
        "backbone": "dinov3_test",
        "size": 32,
        "synth_size": 48,
        "n": 12,
        "val": 6,
        "epochs": 1,
        "batch": 8,
        "precision": "fp32",
        "steps": 1,
        "sync_steps": 2,
        "profile_rounds": 1,
        "warmup": 1,
        "jpg_counts": (1, 2),  # the CPU flow test: two counts (each worker process costs seconds of imports)
        "jpg_n": 12,
        "jpg_epochs": 1,
        "proj_n": 12,
        "proj_epochs": (1, 2),
    }


def peak_bf16(device_name: str) -> float | None:
    """Dense bf16 peak FLOP/s of a card by its name; None when the table does not know it."""
    return next((peak for key, peak in PEAK_BF16 if key in device_name), None)


def utilisation(gflop_per_image: float, images_per_s: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: achieved FLOP/s over the card's dense bf16 peak (None: peak unknown).

    Above 1 is impossible and means a wrong FLOP count or peak: an error, never a printed number.
    """
    if peak is None or math.isnan(images_per_s):
        return None
    mfu = gflop_per_image * 1e9 * images_per_s / peak
    if mfu > 1:
        raise ValueError(f"MFU {mfu:.3g} > 1: {gflop_per_image} GFLOP/img x {images_per_s} img/s / {peak} FLOP/s")
    return mfu


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _optimizer(model: Any) -> Any:
    import torch

    params = [p for ps in model.param_groups().values() for p in ps]
    return torch.optim.AdamW(params, lr=1e-4, fused=True)  # as the trainer's (usagg/engine/optim.py), CPU included


def train_step(model: Any, amp: bool, graphed: bool = False) -> Any:
    """The trainer's own step (usagg/engine/step.py) over `model`: bf16 autocast when `amp`, equal loss weights,
    clipping at 1, a fused AdamW; `graphed`: each task's whole step recorded as a CUDA graph (`step-graphs`)."""
    import torch

    from usagg.engine.balance import build_balance
    from usagg.engine.device import Compute
    from usagg.engine.step import build_step

    dev = next(model.parameters()).device
    compute = Compute(dev, torch.bfloat16 if amp else None)
    balance = build_balance("equal", dict.fromkeys(model.task_index, 1.0))
    return build_step(model, balance, _optimizer(model), compute, 1.0, graphed)


def random_batch(task: Any, batch: int, size: int, device: Any) -> tuple[Any, Any]:
    """Random images and valid model-space targets of a task's type (docs/internals.md, Data -> engine)."""
    import torch

    x = torch.randn(batch, 3, size, size)
    if task.type == "segmentation":
        y = torch.randint(0, task.num_classes, (batch, size, size))
    elif task.type == "classification":
        y = torch.randint(0, task.num_classes, (batch,))
    elif task.type == "detection":
        a = torch.rand(batch, 4)
        y = torch.stack([a[:, 0] * 0.5, a[:, 1] * 0.5, 0.5 + a[:, 2] * 0.5, 0.5 + a[:, 3] * 0.5], dim=1)
    else:
        y = torch.rand(batch, task.num_classes, 2)
    return x.to(device), y.to(device)


def step_input(model: Any, images: Any) -> Any:
    """`images` as the trainer's step gives them to a compiled encoder (usagg/engine/step.py): where the model has
    a frozen trunk, wholly as trunk tokens in float32 (the recording's input buffers), else the pixels.

    What the steady loops (profile, accel, the projection's second line) and the gradients phase train on: the
    step of a trunk-fed job (the study's `model.trunk: auto`) with every row served by the trunk (no augmented
    row, whose frozen blocks a job runs before the step), so their compiled code is the jobs phase's (one
    compile of the encoder and heads, not a second for pixels) and their rates are the step the study's jobs
    take. Until 2026-12-06 they gave pixels: the frozen blocks ran forward in every step (the H100 and H200
    steady-loop figures in docs/benchmarks.md). Their FLOPs per image are counted on these tokens
    (`flops_per_image(..., tokens=True)`): counted on pixels, the frozen forward that never runs here added 18 %."""
    import torch

    from usagg.model.backbones import EncoderInput

    if model.encoder.trunk_layout() is None:
        return images
    n = int(images.shape[0])
    pixels = EncoderInput(n, tuple(images.shape[-2:]), images=images, image_pos=torch.arange(n, device=images.device))
    return model.encoder.as_tokens(pixels)


def step_batches(model: Any, batches: dict[str, tuple[Any, Any]]) -> dict[str, tuple[Any, Any]]:
    """Each task's (images, targets) with the images as `step_input` gives them."""
    return {task: (step_input(model, x), y) for task, (x, y) in batches.items()}


def train_rounds(step: Any, batches: dict[str, tuple[Any, Any]], rounds: int) -> None:
    """`rounds` rounds of one training step per task over `batches`, then wait for the device."""
    for _ in range(rounds):
        for task, (x, y) in batches.items():
            step(task, x, y)
    _sync(next(step.model.parameters()).device)


def steady_rate(
    model: Any, batches: dict[str, tuple[Any, Any]], steps: int, amp: bool, warmup: int = 2, mode: str = "eager"
) -> float:
    """Training images/s of a steady loop over `batches` (one per task; pixels, given to the step as a trunk-fed
    job gives them, `step_input`) under accel `mode` (`model` as `accelerate` made it), after `warmup` rounds
    (compiles; under a whole-step mode, at least the eager steps before recording and the recording itself);
    raises when the model and step did not run as `mode` asks (`ran_as_asked_here`)."""
    from usagg.engine.step import WARMUP_STEPS

    graphed = mode in WHOLE_STEP_MODES  # the CPU runs the recorded body unrecorded (tests/test_train_step.py)
    batches = step_batches(model, batches)
    step = train_step(model, amp, graphed)
    model.train()
    train_rounds(step, batches, max(warmup, WARMUP_STEPS + 1) if graphed else warmup)
    ran_as_asked_here(mode, model, step)
    t0 = time.perf_counter()
    train_rounds(step, batches, steps)
    n = steps * sum(int(x.shape[0]) for x, _ in batches.values())
    rate = n / (time.perf_counter() - t0)
    step.close()
    return rate


#: FLOPs per image already counted, by (MoE, task ids, image size, device, input): the AU job is counted once for
#: the jobs phase's AU jobs and the accel phase (the counter's Python dispatch costs seconds per model).
_FLOPS: dict[tuple[Any, ...], float] = {}


def flops_per_image(model: Any, tasks: list[Any], size: int, device: Any, tokens: bool = False) -> float:
    """Mean FLOPs (2 per multiply-add) of one training image's forward+backward over the tasks (uniform sampling),
    given pixels (the frozen blocks' forward counted) or with `tokens` as `step_input` gives them (the frozen
    blocks never run; pixels where the model has no trunk): a loop's MFU counts the FLOPs its step really does.

    Counted with the per-expert MoE loop: the flop counter has no formula for `_grouped_mm`,
    and both paths do the same products.
    """
    from usagg.model.moe import TaskMoE

    tokens = tokens and model.encoder.trunk_layout() is not None
    moe = any(isinstance(m, TaskMoE) for m in model.modules())
    key = (moe, tuple(t.id for t in tasks), size, str(device), tokens)
    if key not in _FLOPS:
        _FLOPS[key] = _count_flops(model, tasks, size, device, tokens)
    return _FLOPS[key]


def _count_flops(model: Any, tasks: list[Any], size: int, device: Any, tokens: bool) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from usagg.model.moe import TaskMoE

    moes = [m for m in model.modules() if isinstance(m, TaskMoE)]
    for m in moes:
        m.dispatch = "loop"
    model.train()
    per_task = []
    for t in tasks:
        x, y = random_batch(t, 2, size, device)
        x = step_input(model, x) if tokens else x  # the trunk's forward outside the count: the step never runs it
        counter = FlopCounterMode(display=False)
        with counter:
            model(x, t.id, y).loss.backward()
        per_task.append(counter.get_total_flops() / 2)
    model.zero_grad(set_to_none=True)
    for m in moes:
        m.dispatch = "auto"
    torch.cuda.empty_cache() if device.type == "cuda" else None
    return statistics.mean(per_task)


def trunk_served(log_text: str) -> float | None:
    """The share of a job's training rows its frozen trunk served (their frozen blocks never ran), from the line
    usagg/engine/job.py logs (`trunk_share`); None without that line (no trunk: every row ran the frozen blocks)."""
    found = re.search(r"(\d+) of (\d+) training samples \([\d.]+ %\) served from the frozen trunk", log_text)
    return int(found[1]) / int(found[2]) if found and int(found[2]) else None


def syncs_per_step(job: Any, device: Any, batch: int, amp: bool, steps: int) -> float | None:
    """Host syncs per steady-state training step: the job's real batch path (CPU indices) and model step.

    Counted from the warnings of `torch.cuda.set_sync_debug_mode("warn")` over `steps` steps
    after one warm-up step per task. The CPU runs the same steps and gives None (no device to wait for).
    """
    import torch

    from usagg.engine.batches import TensorSplit, place
    from usagg.engine.jobdata import load_job_data
    from usagg.model.m2dino import build_model

    data = load_job_data(job)
    splits = place({t: TensorSplit.from_dataset(ds) for t, ds in data.train.items()}, device)
    model = build_model(job.model, job.tasks, job.moe).to(device)
    train = train_step(model, amp)
    gen = torch.Generator().manual_seed(0)
    tasks = list(splits)
    cuda = device.type == "cuda"

    def step(i: int) -> None:
        task = tasks[i % len(tasks)]
        idx = torch.randint(0, len(splits[task]), (batch,), generator=gen)
        x, y = splits[task].batch(idx, device)
        train(task, x, y)

    for i in range(2 * len(tasks)):  # two rounds: lazy set-up of a task's second step is not the steady state
        step(i)
    _sync(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if cuda:
            torch.cuda.set_sync_debug_mode("warn")
        try:
            for i in range(steps):
                step(i)
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
    _sync(device)
    if not cuda:
        return None
    return sum("synchroniz" in str(w.message) for w in caught) / steps


def bare_phase(cfg: dict[str, Any], device: str) -> dict[str, Any]:
    """The bare timm loop of the check's encoder (benchmarks/bare_loop.py), eager and (on CUDA) compiled: img/s,
    MFU; the denominator is the compiled loop (eager on the CPU, or where compiling failed). A mode that failed is
    listed in `failed` (the check fails on it: a denominator of the other mode is not the one asked for)."""
    import torch

    from benchmarks.bare_loop import bare_flops_per_image, bare_rate

    dev = torch.device(device)
    gflop = bare_flops_per_image(cfg["backbone"], cfg["size"], dev) / 1e9
    peak = peak_bf16(torch.cuda.get_device_name(dev)) if device == "cuda" else None
    steps = cfg["steps"] * len(_task_rows())  # as many steps as a steady-loop round of the four tasks times steps
    rows, failed = [], []
    for compiled in (False, True) if device == "cuda" else (False,):
        mode = "compiled" if compiled else "eager"
        try:
            rate = bare_rate(cfg["backbone"], cfg["size"], cfg["batch"], dev, compiled, steps, cfg["warmup"] + 1)
        except Exception as err:  # the other mode is then the denominator; the check still fails on it
            failed.append(_failure(f"bare loop {mode}", err))
            rate = math.nan
        rows.append({"mode": mode, "images_per_s": rate, "mfu": utilisation(gflop, rate, peak)})
        if device == "cuda":
            torch.cuda.empty_cache()
    usable = [r for r in rows if math.isfinite(r["images_per_s"])]
    if not usable:
        raise RuntimeError("the bare loop failed in every mode; no denominator")
    den = usable[-1]
    return {
        "gflop_per_image": gflop,
        "batch": cfg["batch"],
        "rows": rows,
        "denominator": den["mode"],
        "denominator_flops": gflop * 1e9 * den["images_per_s"],
        "failed": failed,
    }


def _failure(what: str, why: BaseException | str) -> str:
    """A mode or count that failed inside a phase that goes on: one line printed now, and returned for the phase's
    `failed` list, which fails the check at its end (a phase that loses a mode is no pass)."""
    line = f"{what} failed: {why if isinstance(why, str) else f'{type(why).__name__}: {why}'}"[:600]
    print(line, flush=True)
    return line


def run_jobs(
    root: Path,
    cfg: dict[str, Any],
    device: str,
    bare: dict[str, Any] | None = None,
    keep: Callable[[list[dict[str, Any]]], None] | None = None,
) -> tuple[list[dict[str, Any]], bool]:
    """TS (first task), CG (first group) and AU through the store and run_one; per-job speed and memory.

    Then the AU job again, eager, in a store of its own ("eager again"): how far two eager runs of one
    job land apart on this device (its primary-metric gaps, `repeat_gap`), the scale that a whole
    job under another mode is read against. Then (when GPU_CHECK_ACCEL names graphs) the AU job of
    the same study with AG in it (so it measures the inter-task affinity), in
    a store of its own, with `execution.accel: graphs` ("graphs+aff"): the whole job (selection
    under inference mode, trunk inputs, the affinity's virtual steps) under CUDA graphs, which the
    steady loop of the accel phase does not exercise. Last, the plain AU job again under each whole-step
    mode asked for (`step-graphs`, `compiled-step-graphs`: each task's whole step recorded,
    usagg/engine/step.py), held against the eager AU job by its task training losses, epoch by epoch,
    within `TOLERANCE["bf16"]["loss_rel"]` (`loss_gap`; its primary metrics are printed beside, with the
    eager-again gaps, but are too chaotic in a job this short to be the verdict): the check that making a
    mode the default waits for. The CPU runs those jobs eager.

    `keep` gets the rows so far after each job, its comparison with eager included: a lease's time limit can cut the
    phase in its last job, the compile of compiled-step-graphs, and must not lose the jobs measured before it.
    """
    global _WARM
    import torch

    from usagg.engine.runner import run_one
    from usagg.model.m2dino import build_model
    from usagg.plan import plan
    from usagg.spec.load import dump_study, load_study
    from usagg.store import RunStore

    study = load_study(root / "study.yaml")
    jobs = plan(study)
    chosen = [next(j for j in jobs if j.paradigm == p) for p in ("TS", "CG", "AU")]
    store = RunStore(Path(study.output_root) / study.name)
    store.init(dump_study(study), chosen)
    spec = root / "study-affinity.yaml"
    spec.write_text(STUDY.format(root=root, tasks=TASKS, name="gpu-check-graphs", paradigms="[AU, AG]", **cfg))
    with_affinity = load_study(spec)
    au = next(j for j in plan(with_affinity) if j.paradigm == "AU")
    graphs_store = RunStore(Path(with_affinity.output_root) / with_affinity.name)
    graphs_store.init(dump_study(with_affinity), [au])
    wanted = _env_list("GPU_CHECK_ACCEL", DEFAULT_ACCEL)
    again_store = RunStore(Path(study.output_root) / "gpu-check-eager-again")
    again_store.init(dump_study(study), [chosen[-1]])
    runs = [(job, store, "eager") for job in chosen] + [(chosen[-1], again_store, "eager again")]
    runs += [(au, graphs_store, "graphs")] if "graphs" in wanted else []
    for mode in (m for m in WHOLE_STEP_MODES if m in wanted):  # the eager AU job again, its steps recorded
        mode_store = RunStore(Path(study.output_root) / f"gpu-check-{mode}")
        mode_store.init(dump_study(study), [chosen[-1]])
        runs.append((chosen[-1], mode_store, mode))
    dev = torch.device(device)
    amp = cfg["precision"] == "bf16"
    peak = peak_bf16(torch.cuda.get_device_name(dev)) if device == "cuda" else None
    rows, ok = [], True
    for job, store, accel in runs:
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        state = run_one(str(store.root), job.id, device=device, accel=accel.removesuffix(" again"))
        wall = time.perf_counter() - t0
        _WARM = True
        memory = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
        label = {"eager": job.id, "graphs": f"{job.id} graphs+aff"}.get(accel, f"{job.id} {accel}")
        row: dict[str, Any] = {"job": label, "state": state, "wall_s": round(wall, 1), "peak_gib": memory}
        if state == "done":
            m = store.metrics(job.id) or {}
            row["images_per_s"] = m["throughput"]["train_images_per_s"]
            row["precision"] = m["training"]["precision"]
            row["primary"] = {t: e["metrics"].get(e["primary"]) for t, e in m["tasks"].items()}
            row["task_loss"] = [e["task_loss"] for e in m["history"]]  # per epoch, each task's mean training loss
            row["metric"] = {t: e["primary"] for t, e in m["tasks"].items()}
            model = build_model(job.model, job.tasks, job.moe).to(dev)
            row["trunk_served"] = trunk_served(store.paths(job.id).log.read_text(errors="replace"))
            row["gflop_per_image"] = job_gflop(model, job.tasks, cfg["size"], dev, row["trunk_served"])
            del model
            # the syncs of the eager step (under graphs a replay is one launch); the CPU, with none to count, walks
            # the path for one job only
            if accel == "eager" and (device == "cuda" or job.paradigm == "TS"):
                row["syncs_per_step"] = syncs_per_step(job, dev, cfg["batch"], amp, cfg["sync_steps"])
            row["mfu"] = utilisation(row["gflop_per_image"], row["images_per_s"], peak)
            row["vs_bare"] = achieved_ratio(row["gflop_per_image"], row["images_per_s"], bare)
            # after the job's first epoch (its warm-up, the eager steps and recordings of step-graphs): what a long
            # job holds, where this check's jobs of a few dozen steps spend a third of their time warming up
            later = m["throughput"].get("later_images_per_s")
            row["later_images_per_s"] = later
            row["vs_bare_later"] = achieved_ratio(row["gflop_per_image"], later, bare) if later else None
            asked = accel.removesuffix(" again")
            row["ran"] = ran_as_asked(asked, m["throughput"], device)
        else:
            ok = False
            row["error"] = (store.error_text(job.id) or "")[-4000:]
        rows.append(row)
        if len(rows) > 3:  # the same AU job again (eager, each whole-step mode) against the eager one
            ok &= _against_eager(rows[2], row, again=len(rows) == 4)
        if keep is not None:
            keep(rows)
    return rows, ok


def _against_eager(eager_au: dict[str, Any], row: dict[str, Any], again: bool) -> bool:
    """Hold a run of the AU job (`again`: eager, in a store of its own) against the eager AU job: its primary-metric
    gaps and task-loss gap in `row`; whether it passes (eager again and graphs+aff give no verdict: True)."""
    if row["job"].endswith("graphs+aff") or "primary" not in eager_au or "primary" not in row:
        return True
    gaps = {
        t: metric_gap(eager_au["metric"][t], eager_au["primary"][t], row["primary"][t], TOLERANCE["bf16"])
        for t in eager_au["primary"]
    }
    row["vs_eager"] = {t: g for t, (g, _) in gaps.items()}
    row["loss_gap"] = loss_gap(eager_au["task_loss"], row["task_loss"])
    # a mode that fell back (a step not recorded, no compiler) matches eager trivially: it is no verdict on it
    row["matches_eager"] = row["loss_gap"] <= TOLERANCE["bf16"]["loss_rel"] and row["ran"] is None
    if again:
        row["repeat_gap"] = row["vs_eager"]
        return True
    return bool(row["matches_eager"])


def job_gflop(model: Any, tasks: list[Any], size: int, device: Any, served: float | None) -> float:
    """GFLOPs per training image of a whole job: its rows the trunk served ran from trunk tokens, the others (the
    augmented ones, or all without a trunk) through the frozen blocks too; weighted by the `served` share."""
    pixels = flops_per_image(model, tasks, size, device) / 1e9
    if not served:
        return pixels
    return served * flops_per_image(model, tasks, size, device, tokens=True) / 1e9 + (1 - served) * pixels


def ran_as_asked(asked: str, throughput: dict[str, Any], device: str) -> str | None:
    """None when a job ran under the accel mode it was asked for (metrics.json `throughput`: `accel` as it ran,
    `unrecorded_tasks`), else what it ran as: a whole-step job whose every step ran eagerly would match eager
    trivially. The CPU runs every mode eager by design: nothing to say there."""
    if device != "cuda":
        return None
    ran = throughput.get("accel")
    if ran != asked:
        return f"ran as {ran}"
    unrecorded = throughput.get("unrecorded_tasks") or []
    if unrecorded:
        return f"steps of {', '.join(unrecorded)} not recorded (they ran eagerly; the job's log says why)"
    return None


def ran_as_asked_here(mode: str, model: Any, step: Any) -> None:
    """A steady loop's `ran_as_asked`: raise (the phase reports the mode as failed) when `model` and `step` did not
    run as `mode` asks, so no row is labelled with a mode that did not run."""
    from usagg.engine.accel import mode_ran
    from usagg.engine.step import GraphedTrainStep

    ran = mode_ran(mode, model, step_graphs=isinstance(step, GraphedTrainStep))  # type: ignore[arg-type]
    device = next(model.parameters()).device.type
    why = ran_as_asked(mode, {"accel": ran, "unrecorded_tasks": step.unrecorded()}, device)
    if why is not None:
        raise RuntimeError(f"asked for {mode}: {why}")


def loss_gap(a: list[dict[str, float]], b: list[dict[str, float]]) -> float:
    """The largest relative gap between two runs' per-epoch task training losses (history `task_loss`); inf when
    they trained other epochs or tasks (other batches were drawn: not the same job) or a loss is not finite in
    one of them (`max` would pass over a nan gap that is not first: a run diverging in a later epoch would match).

    What a whole-job comparison of modes rests on: a short job's primary metrics are chaotic (the check's AU job
    on the CPU, its initial weights moved by 1e-3 of themselves: fetal_head DSC 0.63 -> 0.01 after 3 epochs,
    0.25 -> 0.49 after 6), while its task losses moved by at most 1.0 % and 2.9 % (docs/benchmarks.md).
    """
    if len(a) != len(b) or any(set(x) != set(y) for x, y in zip(a, b, strict=True)):
        return math.inf
    gaps = [abs(x[t] - y[t]) / max(abs(x[t]), 1e-12) for x, y in zip(a, b, strict=True) for t in x]
    return max(gaps, default=0.0) if all(math.isfinite(g) for g in gaps) else math.inf


def accel_rates(root: Path, cfg: dict[str, Any], device: str, bare: dict[str, Any] | None = None) -> dict[str, Any]:
    """The AU job's model in a steady training loop under each `execution.accel` mode: images/s (nan: failed, and
    listed in `failed`) and MFU, its FLOPs counted on the trunk tokens the loop trains on.

    Each mode gets a fresh model (same seed) and the same device-resident batches;
    compilation happens in the warm-up rounds, outside the timed ones. Eager also runs
    at four times the batch: how much of the gap to the peak is per-step overhead.
    """
    import torch

    from usagg.engine.accel import ACCEL_MODES, accelerate
    from usagg.model.m2dino import build_model

    job = au_job(root)
    dev = torch.device(device)
    amp = cfg["precision"] == "bf16"
    torch.manual_seed(0)
    model = build_model(job.model, job.tasks, job.moe).to(dev)
    gflop = flops_per_image(model, job.tasks, cfg["size"], dev, tokens=True) / 1e9
    del model
    peak = peak_bf16(torch.cuda.get_device_name(dev)) if device == "cuda" else None
    wanted = _env_list("GPU_CHECK_ACCEL", DEFAULT_ACCEL)
    modes = [m for m in ACCEL_MODES if m == "eager" or m in wanted] if device == "cuda" else ["eager"]  # CPU: eager
    runs = [(mode, cfg["batch"]) for mode in modes]
    runs.append(("eager", 4 * cfg["batch"]))
    rows, failed = [], []
    for mode, batch in runs:
        batches = {t.id: random_batch(t, batch, cfg["size"], dev) for t in job.tasks}
        torch.manual_seed(0)
        model = accelerate(build_model(job.model, job.tasks, job.moe).to(dev), mode, dev)  # type: ignore[arg-type]
        try:
            rate = steady_rate(model, batches, cfg["steps"], amp, cfg["warmup"], mode)
        except Exception as err:  # the other modes are still measured; the check fails on this one at its end
            failed.append(_failure(f"accel {mode} batch {batch}", err))
            rate = math.nan
        rows.append(
            {
                "mode": mode,
                "batch": batch,
                "images_per_s": rate,
                "mfu": utilisation(gflop, rate, peak),
                "vs_bare": achieved_ratio(gflop, rate, bare) if math.isfinite(rate) else None,
            }
        )
        del model, batches
        if device == "cuda":
            torch.cuda.empty_cache()
    return {"gflop_per_image": gflop, "rows": rows, "failed": failed}


def _env_list(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated environment setting (`GPU_CHECK_PHASES`, `GPU_CHECK_ACCEL`), else `default`."""
    value = os.environ.get(name, "").strip()
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else default


def au_job(root: Path) -> Any:
    """The check study's AU job (the model every steady-loop phase trains)."""
    from usagg.plan import plan
    from usagg.spec.load import load_study

    return next(j for j in plan(load_study(root / "study.yaml")) if j.paradigm == "AU")


#: Profiled rounds of the AU tasks: the profiler slows the host several times over (40 steps took 39 s on an H200).
PROFILE_ROUNDS = 3


def profile_steps(root: Path, cfg: dict[str, Any], device: str) -> dict[str, dict[str, Any]]:
    """`profile_step` of the eager step, and on CUDA of the recorded ones (each whole-step mode GPU_CHECK_ACCEL
    has): whether recording took the host out of the way, and how many kernels compiling saved."""
    wanted = _env_list("GPU_CHECK_ACCEL", DEFAULT_ACCEL) if device == "cuda" else ()
    out = {"eager": profile_step(root, cfg, device)}
    for mode in (m for m in WHOLE_STEP_MODES if m in wanted):
        out[mode] = profile_step(root, cfg, device, mode=mode)
    return out


def profile_step(root: Path, cfg: dict[str, Any], device: str, mode: str = "eager") -> dict[str, Any]:
    """Where an AU training step's time goes under `mode` (eager or a whole-step mode): wall ms, GPU-busy ms and
    kernels per step, the top kernels.

    torch.profiler over `PROFILE_ROUNDS` rounds of the four tasks after the warm-up rounds (under a
    whole-step mode, the eager steps, the compile and the recording among them). GPU-busy well below
    wall means the host (launches, Python) sets the pace, not the arithmetic.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    from usagg.engine.accel import accelerate, whole_step_graphs
    from usagg.engine.step import WARMUP_STEPS
    from usagg.model.m2dino import build_model

    job = au_job(root)
    dev = torch.device(device)
    amp = cfg["precision"] == "bf16"
    batches = {t.id: random_batch(t, cfg["batch"], cfg["size"], dev) for t in job.tasks}
    torch.manual_seed(0)
    model = accelerate(build_model(job.model, job.tasks, job.moe).to(dev).train(), mode, dev)  # type: ignore[arg-type]
    batches = step_batches(model, batches)
    graphed = whole_step_graphs(mode, dev)  # type: ignore[arg-type]
    step = train_step(model, amp, graphed)
    train_rounds(step, batches, max(cfg["warmup"], WARMUP_STEPS + 1) if graphed else cfg["warmup"])
    ran_as_asked_here(mode, model, step)
    cuda = device == "cuda"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        train_rounds(step, batches, cfg["profile_rounds"])
    steps = cfg["profile_rounds"] * len(batches)
    wall = (time.perf_counter() - t0) / steps
    kernels = [e for e in prof.events() if e.device_type.name == "CUDA"]
    busy = sum(e.device_time_total for e in kernels) / 1e6 / steps if cuda else None  # device_time in microseconds
    by_name: dict[str, list[float]] = {}
    for e in kernels:
        by_name.setdefault(e.name, []).append(e.device_time_total)
    top = sorted(by_name.items(), key=lambda kv: -sum(kv[1]))[:8]
    step.close()
    return {
        "steps": steps,
        "wall_ms": wall * 1e3,
        "gpu_busy_ms": busy and busy * 1e3,
        "kernels_per_step": len(kernels) / steps if cuda else None,
        "top": [(name[:70], sum(t) / 1e3 / steps, len(t) / steps) for name, t in top],
    }


def moe_ratio(cfg: dict[str, Any], device: str) -> dict[str, Any]:
    """benchmarks/bench_moe.py on this device: the MoE block against the dense block, each dispatch path."""
    from benchmarks import bench_moe

    if device == "cuda":
        return bench_moe.main(repeats=10)
    return bench_moe.main(backbone=cfg["backbone"], batch=2, size=cfg["size"], repeats=2)


def fmc_study(device: str, cfg: dict[str, Any]) -> Any:
    """studies/fmc_uia.yaml as the projection measures it: its own shapes on CUDA (no weights file: a random init
    of the same shapes), a tiny model in their place on the CPU (flow test); under `GPU_CHECK_STUDY_ACCEL` when
    set (the jobs_per_gpu phase's and the whole jobs' `execution.accel`; the study's own, eager, otherwise)."""
    from usagg.spec.load import load_study

    tiny = [] if device == "cuda" else [f"model.backbone={cfg['backbone']}", f"model.image_size={cfg['size']}"]
    tiny += [] if device == "cuda" else ["model.moe.blocks=null", "model.frozen_blocks=null", "training.batch_size=4"]
    accel = os.environ.get("GPU_CHECK_STUDY_ACCEL", "").strip()
    return load_study(STUDY_SPEC, [*tiny, "model.weights=null", *([f"execution.accel={accel}"] if accel else [])])


def shaped_study(root: Path, name: str, fmc: Any, cfg: dict[str, Any], paradigms: list[str], n: int, **kw: Any) -> Any:
    """A synthetic study of the check's four tasks (`n` images each; at the check's `n` the very images of the
    jobs phase, generated once) with fmc_uia's model, training and selection fraction; `kw`: seeds (default
    [0]), epochs, cache (folder; default one per study)."""
    from usagg.spec.load import study_from_mapping

    chosen = _task_rows()
    raw = {
        "name": name,
        "output_root": str(root / "runs"),
        "seeds": kw.get("seeds", [0]),
        "paradigms": paradigms,
        "data": {
            "synthetic": {
                "seed": 0,
                "image_size": cfg["synth_size"],
                "default_size": 4,
                "val_size": cfg["val"],
                "sizes": {t["id"]: n for t in chosen},
                "out": str(root / "synth"),
            },
            "selection_fraction": fmc.data.selection_fraction,
            "cache_dir": str(kw.get("cache", root / f"cache-{name}")),
        },
        "tasks": chosen,
        "model": fmc.model.model_dump(mode="json", exclude_defaults=True),
        "training": {**fmc.training.model_dump(mode="json", exclude_defaults=True), "epochs": kw.get("epochs", 1)},
    }
    return study_from_mapping(raw, root / f"{name}.yaml")


def _store_with(study: Any) -> tuple[Any, list[str]]:
    """A run store of the study's planned jobs (the planner's list), and their ids."""
    from usagg.plan import plan
    from usagg.spec.load import dump_study
    from usagg.store import RunStore

    jobs = plan(study)
    store = RunStore(Path(study.output_root) / study.name)
    store.init(dump_study(study), jobs)
    return store, [j.id for j in jobs]


class _Span:
    """From a pool run's first job start inside its worker (the job's "start" report) to its last job's end: the
    pool's own "started" event comes before the worker has imported anything."""

    def __init__(self) -> None:
        self.starts: dict[str, float] = {}
        self.ends: dict[str, float] = {}

    def progress(self, p: Any) -> None:
        if p.phase == "start":
            self.starts.setdefault(p.job_id, time.perf_counter())

    def event(self, job_id: str, event: str, info: Any) -> None:
        if event != "started":
            self.ends[job_id] = time.perf_counter()

    def seconds(self) -> float:
        return max(self.ends.values()) - min(self.starts.values())


def jobs_per_gpu_rates(root: Path, cfg: dict[str, Any], device: str) -> dict[str, Any]:
    """1, 2 and 4 TS jobs (fmc_uia's shapes, seeds 0..k-1 of one task) at once through the real pool on one device:
    jobs per hour each. On CUDA the counts that completed are written to the measurement file
    `execution.jobs_per_gpu: auto` reads (usagg/projection.py), so auto never picks a count that failed (out of
    memory, say): none above a failed count is tried, and the failure is listed in `failed`.

    Timed per count from its first job's start inside its worker (the job's "start" report, usagg/engine/job.py:
    after the worker's imports) to its last job's end, with the count's images decoded beforehand: a worker's
    start-up (importing torch, about 7 s) and a decode shared by the count's jobs are what a study of 111 jobs pays
    once, and counted they favoured the larger counts. Each job still builds its own trunk (one per seed under a
    random init, as the study's jobs do). `wall_s`: the whole pool run, start-up included. The CPU runs a CPU pool
    (one torch thread per worker at two)."""
    import functools

    import torch

    from usagg.engine.jobdata import load_job_data
    from usagg.engine.runner import run_one
    from usagg.execute.base import summarize_error
    from usagg.execute.pool import PoolExecutor
    from usagg.projection import choose_jobs_per_gpu, write_measurement

    fmc = fmc_study(device, cfg)
    rates: dict[int, float] = {}
    walls: dict[int, float] = {}
    timed: dict[int, float] = {}
    failed: list[str] = []
    fn = functools.partial(run_one, device=None if device == "cuda" else "cpu", accel=fmc.execution.accel)
    if device == "cuda":
        torch.cuda.empty_cache()  # this process's cached blocks are no worker's memory
    for k in cfg["jpg_counts"]:
        name = f"gpu-check-jpg{k}"
        study = shaped_study(root, name, fmc, cfg, ["TS"], cfg["jpg_n"], seeds=list(range(k)), epochs=cfg["jpg_epochs"])
        store, ids = _store_with(study)
        ids = [j for j in ids if store.job(j).task_ids == ["fetal_head"]]
        load_job_data(store.job(ids[0]))  # the decode, untimed: every job of the count then reads the cache
        span = _Span()
        pool = PoolExecutor(str(store.root), [0] if device == "cuda" else None, k)
        t0 = time.perf_counter()
        try:
            states = pool.run(ids, fn, on_event=span.event, on_progress=span.progress)
        except Exception as err:
            failed.append(_failure(f"jobs_per_gpu: {k} at once", err))
            break
        walls[k] = time.perf_counter() - t0
        bad = [j for j in ids if states.get(j) != "done"]
        if bad:
            error = store.error_text(bad[0]) or ""
            print(error[-3000:])
            failed.append(_failure(f"jobs_per_gpu: {k} at once", f"{bad[0]}: {summarize_error(error)}"))
            break
        timed[k] = span.seconds()
        rates[k] = k / timed[k] * 3600
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    accel = fmc.execution.accel
    write = device == "cuda" and 1 in rates  # without the baseline nothing can be chosen
    path = write_measurement(name, torch.__version__, rates, accel=accel) if write else None
    return {
        "accel": accel,
        "jobs_per_hour": rates,
        "timed_s": timed,
        "wall_s": walls,
        "chosen": choose_jobs_per_gpu(rates) if rates else None,
        "file": None if path is None else str(path),
        "images_per_job": cfg["jpg_n"],
        "epochs": cfg["jpg_epochs"],
        "failed": failed,
    }


def _timed_trunks() -> tuple[Any, list[tuple[float, int, int]]]:
    """usagg/engine/job.py's `job_trunks` (the trunk stage of a job), timed: (seconds, images, files it wrote)."""
    import usagg.engine.job as engine_job

    real = engine_job.job_trunks
    calls: list[tuple[float, int, int]] = []

    def timed(model: Any, job: Any, data: Any, compute: Any, *rest: Any, **options: Any) -> Any:
        folder = cache_root(job.data.cache_dir) / "trunk"
        before = len(list(folder.glob("*.npy"))) if folder.is_dir() else 0
        t0 = time.perf_counter()
        out = real(model, job, data, compute, *rest, **options)
        _sync(compute.device)
        after = len(list(folder.glob("*.npy"))) if folder.is_dir() else 0
        calls.append((time.perf_counter() - t0, sum(len(t.rows) for t in out.values()), after - before))
        return out

    engine_job.job_trunks = timed
    return real, calls


#: Row keys of `whole_jobs` by the metrics.json `throughput` field they read: the job's non-training parts.
_THROUGHPUT_PARTS = {
    "select_s": "selection_seconds",
    "keep_s": "keep_seconds",
    "rule_s": "rule_test_seconds",
    "checkpoint_s": "checkpoint_seconds",
}

#: Whether a job has run in this process: its first job carries lazy imports (sklearn's, the first time a
#: classification is scored) and first kernels, which are no job's cost in a worker that runs many.
_WARM = False


def whole_jobs(root: Path, cfg: dict[str, Any], device: str, fmc: Any) -> dict[str, Any]:
    """Real jobs of fmc_uia's shapes, end to end through the store and `run_one`, each stage timed.

    TS (the segmentation task, dense), then AU (the four tasks, MoE), each at two epoch counts, on a
    cache whose decoded images are made first (the data stage, `load_job_data`, outside the timings:
    in a study only a task's first job decodes). The first TS job builds its task's frozen trunk, the
    first AU job the three others' (timed: the `job_trunks` stage). When no job has run in this process
    yet (the jobs phase left out), an untimed AU job runs first: a process's first job carries its
    warm-up (lazy imports, first kernels).
    Per job: wall (the whole `run_one`), trunk (the `job_trunks` stage), and from its metrics.json `throughput`
    training, the selection evaluations, the kept weights' copies, the selection gap's test passes, checkpoint
    writes (seconds and files), the test evaluation and the time between epochs (which holds the selection, kept
    weights, test passes and checkpoints); the rest (start-up, data, model build, history.csv) is `other_s`. Under
    compile or graphs each job is timed as its worker's first of its structure (no kept model,
    usagg/engine/kept.py): compiling and recording are in every job's fixed cost, an upper bound.
    """
    import torch

    import usagg.engine.job as engine_job
    from usagg.atomic import read_json
    from usagg.engine.jobdata import load_job_data
    from usagg.engine.kept import release as release_kept_model
    from usagg.engine.runner import run_one
    from usagg.plan import plan

    cache = root / "cache-projection"
    au = plan(shaped_study(root, "gpu-check-decode", fmc, cfg, ["AU"], cfg["proj_n"], cache=cache))[0]
    load_job_data(au)
    if not _WARM:  # no job has run in this process yet (the jobs phase was left out): one, untimed, does first
        warm = shaped_study(root, "gpu-check-warm-up", fmc, cfg, ["AU"], cfg["proj_n"], cache=root / "cache-warm-up")
        store, ids = _store_with(warm)
        if run_one(str(store.root), ids[0], device=device, accel=fmc.execution.accel) != "done":
            raise RuntimeError(f"warm-up job {ids[0]} failed:\n{(store.error_text(ids[0]) or '')[-3000:]}")
    rows: list[dict[str, Any]] = []
    real, calls = _timed_trunks()
    peak = 0
    try:
        lo, hi = cfg["proj_epochs"]
        for paradigm, epochs, name in (
            ("TS", lo, "ts-lo"),
            ("TS", hi, "ts-hi"),
            ("AU", lo, "au-lo"),
            ("AU", hi, "au-hi"),
        ):
            study = shaped_study(
                root, f"gpu-check-{name}", fmc, cfg, [paradigm], cfg["proj_n"], epochs=epochs, cache=cache
            )
            store, ids = _store_with(study)
            ids = [j for j in ids if paradigm == "AU" or store.job(j).task_ids == ["fetal_head"]]
            release_kept_model()  # each job timed as its worker's first of its structure (compiles, records)
            if device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            state = run_one(str(store.root), ids[0], device=device, accel=fmc.execution.accel)
            wall = time.perf_counter() - t0
            if state != "done":
                raise RuntimeError(f"{ids[0]} {state}:\n{(store.error_text(ids[0]) or '')[-3000:]}")
            if device == "cuda":
                peak = max(peak, int(torch.cuda.max_memory_reserved()))
            m = store.metrics(ids[0]) or {}
            tput = m["throughput"]
            trunk_s, trunk_images, built = calls[-1] if calls else (0.0, 0, 0)
            test = sum(e["n_test"] for e in m["tasks"].values())
            eval_s = test / tput["eval_images_per_s"] if tput.get("eval_images_per_s") else 0.0
            train: dict[str, float] = {}
            for e in m["tasks"].values():
                train[e["type"]] = train.get(e["type"], 0.0) + e["n_train"]
            splits = read_json(store.paths(ids[0]).splits)
            parts = {key: float(tput.get(field) or 0.0) for key, field in _THROUGHPUT_PARTS.items()}
            rows.append(
                {
                    "job": ids[0],
                    "run": name,
                    "paradigm": paradigm,
                    "moe": paradigm != "TS",
                    "epochs": epochs,
                    "train_images": train,
                    "wall_s": wall,
                    "trunk_s": trunk_s,
                    "trunk_images": trunk_images,
                    "trunk_built": built,
                    "tasks": len(m["tasks"]),
                    "train_s": tput["train_seconds"],
                    "select_images": sum(s["n"]["select"] for s in splits.values()),
                    **parts,
                    "saves": int(tput.get("checkpoint_saves") or 0),
                    "epoch_end_s": float(tput.get("epoch_end_seconds") or 0.0),
                    "test_s": eval_s,
                    "test_images": test,
                    "other_s": wall - trunk_s - tput["train_seconds"] - sum(parts.values()) - eval_s,
                }
            )
            calls.clear()
    finally:
        engine_job.job_trunks = real
    return {"rows": rows, "peak_bytes": peak}


def _task_rows() -> list[dict[str, Any]]:
    import yaml

    return list(yaml.safe_load(TASKS))


def measured_job(row: dict[str, Any]) -> Any:
    """A `whole_jobs` row as usagg/projection.py's MeasuredJob: its seconds less the trunk stage, by part."""
    from usagg.projection import MeasuredJob

    return MeasuredJob(
        epochs=row["epochs"],
        seconds=row["wall_s"] - row["trunk_s"],
        train_images=row["train_images"],
        train_s=row["train_s"],
        select_images=row["select_images"],
        select_s=row["select_s"],
        checkpoint_s=row["checkpoint_s"],
        saves=row["saves"],
        tasks=row["tasks"],
        eval_image_s=row["test_s"] / row["test_images"] if row["test_s"] > 0 and row["test_images"] else None,
    )


def project_whole(
    fmc: Any, measured: dict[str, Any], steady: dict[str, Any], jobs_per_hour: dict[int, float] | None, device: str
) -> dict[str, Any]:
    """studies/fmc_uia.yaml's wall time from the whole jobs (usagg/projection.py): its planned jobs, its
    `jobs_per_gpu` (auto: the measured choice, capped by what fits beside the measured peak) and its trunk.
    Each kind's costs (training and selection per image and epoch, checkpoints per file, the rest per epoch and
    per job) from its two jobs' rows (`measured_job`); the steady loop's per-type img/s spread each epoch's
    training seconds over the task types."""
    import torch

    from usagg.execute.pool import packed_jobs
    from usagg.plan import plan
    from usagg.projection import (
        KindCost,
        TrunkCost,
        choose_jobs_per_gpu,
        kind_cost,
        project,
        study_shapes,
        summary,
    )

    rows = measured["rows"]
    mode = fmc.execution.accel if fmc.execution.accel in steady["modes"] else "eager"
    rates = {(k.startswith("moe"), k.split(" ", 1)[1]): v for k, v in steady["modes"][mode]["rates"].items()}
    costs: dict[bool, KindCost] = {}
    for moe in (False, True):
        one, two = (next(r for r in rows if r["moe"] == moe and r["run"].endswith(e)) for e in ("-lo", "-hi"))
        relative = {t: 1 / r for (m, t), r in rates.items() if m == moe}
        costs[moe] = kind_cost(measured_job(one), measured_job(two), relative)
    cold = [r for r in rows if r["trunk_built"] == r["tasks"]]  # built every trunk it reads (the first TS job)
    warm = [r for r in rows if not r["trunk_built"]]  # read every one
    trunk = TrunkCost(
        build_s=sum(r["trunk_s"] for r in cold) / max(1, sum(r["trunk_images"] for r in cold)),
        read_s=sum(r["trunk_s"] for r in warm) / max(1, sum(r["trunk_images"] for r in warm)),
    )
    setting = fmc.execution.jobs_per_gpu
    memory_cap = None
    if device == "cuda" and measured["peak_bytes"]:
        free, _ = torch.cuda.mem_get_info()
        memory_cap = packed_jobs(int(free) + int(torch.cuda.memory_reserved()), measured["peak_bytes"])
    if setting == "auto":
        at_once = choose_jobs_per_gpu(jobs_per_hour) if jobs_per_hour else 1
        at_once = min(at_once, memory_cap) if memory_cap else at_once
    else:
        at_once = int(setting)
    jobs = study_shapes(plan(fmc), FMC_UIA_TRAIN_IMAGES)
    out = summary(project(jobs, costs, trunk, at_once, jobs_per_hour))
    peak = peak_bf16(torch.cuda.get_device_name(0)) if device == "cuda" else None
    h100 = peak_bf16("H100")
    return {
        **out,
        "accel": fmc.execution.accel,
        "jobs_per_gpu": setting,
        "memory_cap": memory_cap,
        "costs": {("moe" if m else "dense"): vars(c) for m, c in costs.items()},
        "trunk": vars(trunk),
        "h100_hours": out["hours"] * peak / h100 if peak and h100 else None,
    }


def project_study(device: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """Projected training wall time of studies/fmc_uia.yaml on this device.

    hours = Σ_paradigm Σ_type  seeds · Σfractions · (1 − selection_fraction) · N_type · epochs / r(MoE_p, type) / 3600

    N_type: FMC_UIA training images of that task type (`FMC_UIA_TRAIN_IMAGES`); every paradigm
    trains each task's images once per epoch (TS per task, CG per group, AU all at once);
    r(MoE, type): images/s of a steady training loop with the spec's backbone, image size,
    batch size, frozen and MoE blocks and precision, MoE on for the paradigms that use it.
    Left out: selection and test evaluation, checkpoints, job start-up (measured per job in
    part 1). On CUDA measured eager and under `execution.accel: step-graphs` (`PROJECTION_ACCEL`;
    GPU_CHECK_ACCEL may name graphs too); `total_hours` is the fastest. A mode other than eager that fails (or does
    not run as asked) is left out and listed in `failed`. On the CPU a tiny model stands in for the spec's (flow
    test), eager.
    """
    import torch

    from usagg.engine.accel import accelerate
    from usagg.model.m2dino import build_model
    from usagg.plan import plan
    from usagg.spec.load import load_study
    from usagg.spec.models import TaskSpec

    tiny = [] if device == "cuda" else [f"model.backbone={cfg['backbone']}", f"model.image_size={cfg['size']}"]
    tiny += [] if device == "cuda" else ["model.moe.blocks=null", "model.frozen_blocks=null", "training.batch_size=4"]
    study = load_study(STUDY_SPEC, [*tiny, "model.weights=null"])
    moe_of = {j.paradigm: j.moe for j in plan(study)}
    dev = torch.device(device)
    amp = study.training.precision == "bf16" or (study.training.precision == "auto" and device == "cuda")
    types = {
        "segmentation": TaskSpec(id="seg", type="segmentation", num_classes=2),
        "classification": TaskSpec(id="cls", type="classification", num_classes=2),
        "detection": TaskSpec(id="det", type="detection", num_classes=1),
        "regression": TaskSpec(id="reg", type="regression", num_classes=2),
    }
    size, batch = study.model.image_size, study.training.batch_size
    share = len(study.seeds) * sum(study.fractions) * (1 - study.data.selection_fraction) * study.training.epochs
    wanted = _env_list("GPU_CHECK_ACCEL", PROJECTION_ACCEL)
    modes = ["eager", *(m for m in ("graphs", *WHOLE_STEP_MODES) if m in wanted)] if device == "cuda" else ["eager"]
    out: dict[str, Any] = {
        "backbone": study.model.backbone,
        "image_size": size,
        "batch": batch,
        "images_per_paradigm": share * sum(FMC_UIA_TRAIN_IMAGES.values()),
        "modes": {},
        "failed": [],
    }
    for mode in modes:
        rates: dict[tuple[bool, str], float] = {}
        try:
            for moe in sorted(set(moe_of.values())):
                torch.manual_seed(0)
                model = accelerate(build_model(study.model, list(types.values()), moe).to(dev), mode, dev)
                for name, t in types.items():
                    one = {t.id: random_batch(t, batch, size, dev)}
                    rates[moe, name] = steady_rate(model, one, cfg["steps"], amp, cfg["warmup"], mode)
                del model
                if device == "cuda":
                    torch.cuda.empty_cache()
        except Exception as err:  # a mode that did not run as asked (or failed) is left out; eager is the line
            if mode == "eager":
                raise
            out["failed"].append(_failure(f"projection: the steady loop under {mode} (left out)", err))
            continue
        hours = {
            p: sum(share * n / rates[moe_of[p], name] for name, n in FMC_UIA_TRAIN_IMAGES.items()) / 3600
            for p in study.paradigms
        }
        out["modes"][mode] = {
            "rates": {f"{'moe' if m else 'dense'} {n}": r for (m, n), r in rates.items()},
            "hours": hours,
            "total_hours": sum(hours.values()),
        }
    out["total_hours"] = min(m["total_hours"] for m in out["modes"].values())
    return out


def projection(root: Path, cfg: dict[str, Any], device: str, jobs_per_hour: dict[int, float] | None) -> dict[str, Any]:
    """The projection phase: whole jobs measured end to end (first line), the steady loop (second line).

    `jobs_per_hour`: this run's jobs_per_gpu phase; without it, on CUDA, the measurement file of this card.
    """
    import torch

    from usagg.projection import read_measurement

    fmc = fmc_study(device, cfg)
    if jobs_per_hour is None and device == "cuda":
        jobs_per_hour = read_measurement(torch.cuda.get_device_name(0), torch.__version__, accel=fmc.execution.accel)
    steady = project_study(device, cfg)
    measured = whole_jobs(root, cfg, device, fmc)
    whole = project_whole(fmc, measured, steady, jobs_per_hour, device)
    peak = peak_bf16(torch.cuda.get_device_name(0)) if device == "cuda" else None
    h100 = peak_bf16("H100")
    steady["h100_hours"] = steady["total_hours"] * peak / h100 if peak and h100 else None
    return {
        "whole": whole,
        "jobs": measured["rows"],
        "steady": steady,
        "total_hours": whole["hours"],
        "failed": steady["failed"],
    }


def metric_gap(metric: str, a: float, b: float, tol: dict[str, float]) -> tuple[float, bool]:
    """How far two values of a primary metric are apart (relative for MRE, in pixels; absolute for the bounded
    metrics) and whether that is within `tol` (a `TOLERANCE` entry); two nans agree."""
    both_nan = math.isnan(a) and math.isnan(b)
    if not (math.isfinite(a) and math.isfinite(b)):
        gap = 0.0 if a == b or both_nan else math.inf
    else:
        gap = abs(a - b) / max(abs(a), 1e-9) if metric == "MRE" else abs(a - b)
    return gap, gap <= tol["mre_rel" if metric == "MRE" else "metric"]


def gradient_errors(model: Any, compiled: Any, batches: dict[str, tuple[Any, Any]]) -> dict[str, tuple[float, float]]:
    """Per task, the relative error of the trainable gradients against the eager float32 model's: (eager bf16,
    `compiled` bf16), one forward and backward on the task's batch. `compiled`: a copy of `model` compiled as
    compiled-step-graphs compiles it. A loss curve can hide a wrong gradient (AdamW's steps blur it), so this looks
    at the gradient. Inputs (`step_input`) and autocast (its cache off) as a whole-step mode's steps have them, so
    on a GPU the code the jobs phase compiled serves here and nothing is compiled again (a minute or so per
    graph of dinov3_small)."""
    import torch

    device = next(model.parameters()).device

    def grads(m: Any, task: str, amp: bool) -> Any:
        m.zero_grad(set_to_none=True)
        x, y = batches[task]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp, cache_enabled=False):
            out = m(x, task, y)
        out.loss.backward()
        return torch.cat([p.grad.float().flatten() for p in m.parameters() if p.grad is not None])

    out = {}
    for task in batches:
        exact = grads(model, task, False)
        eager, comp = (float((grads(m, task, True) - exact).norm() / exact.norm()) for m in (model, compiled))
        out[task] = (eager, comp)
    return out


#: A compiled encoder's gradient error against float32 may exceed eager bf16's by this factor plus `GRAD_SLACK`.
GRAD_FACTOR, GRAD_SLACK = 1.5, 2e-3


def compare_gradients(root: Path, cfg: dict[str, Any], device: str) -> tuple[list[dict[str, Any]], bool]:
    """The AU model compiled as compiled-step-graphs compiles it (encoder and heads; inductor on CUDA, aot_eager on
    the CPU, the flow test) against eager: per task the gradient error against float32, each within `GRAD_FACTOR` x
    eager bf16's + `GRAD_SLACK`. The check's batch and image size and the job's trunk tokens, so on a GPU the jobs
    phase's compiled code serves it. (Without `match_eager_rounding` a detection head compiled in bf16 got 65 %
    wrong gradients on the CPU while its losses moved by 1.5 %.)"""
    import copy

    import torch

    from usagg.engine.accel import accelerate, compile_model
    from usagg.model.m2dino import build_model

    job = au_job(root)
    dev = torch.device(device)
    torch.manual_seed(0)
    model = build_model(job.model, job.tasks, job.moe).to(dev).train()
    twin = copy.deepcopy(model)
    if device == "cuda":
        compiled = accelerate(twin, "compiled-step-graphs", dev)
    else:
        compiled = compile_model(twin, "compiled-step-graphs", backend="aot_eager")
    batches = {t.id: random_batch(t, cfg["batch"], cfg["size"], dev) for t in job.tasks}
    batches = step_batches(model, batches)
    rows = [
        {"task": task, "eager_bf16": e, "compiled_bf16": c, "ok": c <= GRAD_FACTOR * e + GRAD_SLACK}
        for task, (e, c) in gradient_errors(model, compiled, batches).items()
    ]
    return rows, all(r["ok"] for r in rows)


def compare_precisions(root: Path, cfg: dict[str, Any], device: str) -> tuple[list[dict[str, Any]], bool]:
    """One seeded model, the same test images: CPU fp32 against `device` fp32 and bf16."""
    import copy

    import torch

    from usagg.engine.batches import TensorSplit
    from usagg.engine.checkpoint import frozen_fingerprint, load, load_trainable
    from usagg.engine.device import resolve_compute
    from usagg.engine.evaluate import EvalSet, predict, score
    from usagg.engine.jobdata import load_job_data
    from usagg.model.m2dino import build_model

    job = au_job(root)
    data = load_job_data(job)
    sets = {t.id: EvalSet(t, data.test[t.id], TensorSplit.from_dataset(data.test[t.id])) for t in job.tasks}
    torch.manual_seed(0)
    base = build_model(job.model, job.tasks, job.moe).eval()
    # The AU job's selected weights when it trained (fewer near-ties than a random init), else the seeded init.
    # best.pt holds trainable weights per epoch and a fingerprint of the frozen ones (usagg/engine/checkpoint.py):
    # used only when the seeded model's frozen weights are the job's.
    best = root / "runs" / "gpu-check" / "jobs" / job.id / "checkpoints" / "best.pt"
    if best.is_file():
        ck = load(best)
        weights = ck.get("weights") or {}
        if weights and ck.get("fingerprint") == frozen_fingerprint(base):
            load_trainable(base, weights[max(weights)])
            print(f"agreement check: the AU job's trained weights (epoch {max(weights)})")
    runs: dict[str, dict[str, tuple[torch.Tensor, dict[str, float]]]] = {}
    for name, dev, precision in (
        ("cpu fp32", "cpu", "fp32"),
        (f"{device} fp32 ", device, "fp32"),
        (f"{device} bf16", device, "bf16"),
    ):
        model = copy.deepcopy(base).to(dev)
        compute = resolve_compute(precision, torch.device(dev))
        out = {}
        for task_id, es in sets.items():
            preds = predict(model, es.tensors, compute, 32).preds
            out[task_id] = (preds, score(es, preds))
        runs[name] = out
        del model
    ref = runs["cpu fp32"]
    rows, ok = [], True
    for name in list(runs)[1:]:
        tol = TOLERANCE["bf16" if name.endswith("bf16") else "fp32"]
        for t in job.tasks:
            p_ref, m_ref = ref[t.id]
            p, m = runs[name][t.id]
            if t.type == "segmentation":
                diff = float((p != p_ref).float().mean())
                pred_ok = diff <= tol["seg"]
            else:
                diff = float((p.double() - p_ref.double()).abs().max())
                pred_ok = diff <= tol["pred"]
            key = t.metric or ""
            a, b = m_ref[key], m[key]
            mdiff, metric_ok = metric_gap(key, a, b, tol)
            good = pred_ok and metric_ok
            ok &= good
            rows.append(
                {
                    "run": name,
                    "task": t.id,
                    "pred_diff": diff,
                    "metric": key,
                    "cpu": a,
                    "gpu": b,
                    "metric_diff": mdiff,
                    "ok": good,
                }
            )
    return rows, ok


#: The phases in the order they run (`GPU_CHECK_PHASES` picks some): first those that decide issue 24's targets
#: (AU job >= 0.6 of the bare compiled loop, MoE block <= 1.7x dense, the study <= 2 h on one H100), moe (a second)
#: before jobs so that no overrun of the jobs phase's estimate costs it; jobs_per_gpu feeds the projection.
PHASES = ("bare", "moe", "jobs", "jobs_per_gpu", "projection", "agreement", "gradients", "profile", "accel")


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def print_jobs(jobs: list[dict[str, Any]], cfg: dict[str, Any]) -> None:
    print(
        f"\n{'job':<44}{'state':>7}{'img/s':>9}{'GFLOP/img':>11}{'MFU':>8}{'vs bare':>9}{'after e1':>10}"
        f"{'peak GiB':>10}{'syncs/step':>12}{'wall s':>8}  primary metrics"
    )
    for r in jobs:
        prim = ", ".join(f"{t} {v:.3g}" for t, v in r.get("primary", {}).items() if v is not None)
        mfu = r.get("mfu")
        gflop = _fmt(r.get("gflop_per_image"), ".2f")
        print(
            f"{r['job']:<44}{r['state']:>7}{r.get('images_per_s', 0):>9.1f}{gflop:>11}"
            f"{_fmt(mfu and 100 * mfu, '.2f') + ('%' if mfu else ''):>8}{_fmt(r.get('vs_bare'), '.2f'):>9}"
            f"{_fmt(r.get('vs_bare_later'), '.2f'):>10}{_fmt(r['peak_gib'], '.2f'):>10}"
            f"{_fmt(r.get('syncs_per_step'), '.2f'):>12}{r['wall_s']:>8.1f}  {prim}"
        )
        if "error" in r:
            print(r["error"])
        if r.get("ran"):
            print(f"  {r['job']}: NOT RUN AS ASKED: {r['ran']}")
        if "vs_eager" in r:
            gaps = ", ".join(f"{t} {g:.3g}" for t, g in r["vs_eager"].items())
            losses = f"task losses at most {100 * r['loss_gap']:.2f} % apart"
            if "repeat_gap" in r:
                print(f"  {r['job']}: two eager runs of one job: {losses}; primary metric gaps {gaps}")
                if not r["matches_eager"]:
                    print(
                        f"  eager does not repeat itself within {100 * TOLERANCE['bf16']['loss_rel']:g} % on this "
                        "card: the verdicts below cannot tell a mode's error from eager's own spread"
                    )
            else:
                verdict = "matches eager" if r["matches_eager"] else "DOES NOT MATCH eager"
                verdict = f"no verdict ({r['ran']})" if r.get("ran") else verdict
                print(
                    f"  {r['job']}: {verdict}: {losses} (tolerance {100 * TOLERANCE['bf16']['loss_rel']:g} %, every "
                    f"epoch); primary metric gaps {gaps} (a short job's metrics are chaotic: read them against the "
                    "eager-again line)"
                )
    print(
        "MFU = GFLOP per training image (fwd+bwd, torch.utils.flop_counter; the frozen blocks' forward counted only "
        "for the share of rows the trunk did not serve, `trunk_served` from the job's log) x img/s / dense bf16 peak "
        "(n/a: card not in PEAK_BF16); vs bare = achieved FLOP/s over the bare loop's (phase bare); "
        "img/s of the whole job's training (its first steps included); after e1 = vs bare of its epochs after the "
        "first (warm-up, and step-graphs' eager steps and recordings, aside: what a long job holds); "
        f"syncs/step over {cfg['sync_steps']} steady steps of the real batch path and model step "
        "(the trainer's own periodic checks excluded)"
    )


def print_bare(bare: dict[str, Any]) -> None:
    print(
        f"\nbare timm loop of the same encoder (benchmarks/bare_loop.py), batch {bare['batch']}, "
        f"{bare['gflop_per_image']:.2f} GFLOP/img:"
    )
    for r in bare["rows"]:
        mfu = r["mfu"]
        print(
            f"  {r['mode']:<9}{r['images_per_s']:9.1f} img/s  MFU {_fmt(mfu and 100 * mfu, '.1f')}{'%' if mfu else ''}"
        )
    print(f"  denominator of 'vs bare' below: the {bare['denominator']} loop")


def print_moe(moe: dict[str, Any]) -> None:
    recorded = moe.get("time_ratio_recorded")
    print(
        f"MoE block / dense block, fwd+bwd: {moe['time_ratio']:.2f} ({moe['default_dispatch']} dispatch, the default)"
        + (f"; recorded as CUDA graphs (the GPU's own time under step-graphs) {recorded:.2f}" if recorded else "")
    )


def print_jobs_per_gpu(jpg: dict[str, Any]) -> None:
    rates = jpg["jobs_per_hour"]
    print(
        f"\nTS jobs at once on one device through the pool ({jpg['images_per_job']} images, {jpg['epochs']} "
        f"epoch(s) each, studies/fmc_uia.yaml's shapes, execution.accel {jpg['accel']}), timed from the first job's "
        "start in its worker to the last job's end (workers' start-up and the images' decode left out):"
    )
    for k, r in rates.items():
        print(
            f"  {k} at once: {r:8.1f} jobs/h  x{r / rates[min(rates)]:.2f}  (timed {jpg['timed_s'][k]:.1f} s, "
            f"wall with start-up {jpg['wall_s'][k]:.1f} s)"
        )
    for line in jpg["failed"]:
        print(f"  {line}")
    where = jpg["file"] or "not written (the CPU has no jobs_per_gpu, or no count completed with 1 among them)"
    print(f"  execution.jobs_per_gpu auto would choose {_fmt(jpg['chosen'], 'd')}; measurement file: {where}")


def print_projection(proj: dict[str, Any]) -> None:
    w, st = proj["whole"], proj["steady"]
    per = ", ".join(f"{p} {h:.1f} h" for p, h in w["paradigm_hours"].items())
    parts = ", ".join(
        f"{p} {h:.2f} h" + (f" ({w['saves']} files)" if p == "checkpoints" else "") for p, h in w["part_hours"].items()
    )
    print(
        f"\nprojected studies/fmc_uia.yaml on this device ({st['backbone']} at {st['image_size']} px, batch "
        f"{st['batch']}), {w['jobs']} planned jobs:"
    )
    fits = "" if w["memory_cap"] is None else f", memory fits {w['memory_cap']}"
    print(
        f"  whole jobs (execution.accel {w['accel']}): {w['hours']:.1f} h wall = {w['serial_hours']:.1f} h one after "
        f"the other ({per}) / "
        f"x{w['speedup']:.2f} for {w['jobs_at_once']} job(s) at once (jobs_per_gpu {w['jobs_per_gpu']}{fits}); "
        f"H100 by peak ratio: {_fmt(w['h100_hours'], '.1f')} h"
    )
    print(f"    parts, one after the other: {parts}")
    for r in proj["jobs"]:
        print(
            f"    {r['run']:<8}{r['job']:<36} {r['epochs']} ep  wall {r['wall_s']:6.2f} s: trunk {r['trunk_s']:.2f} "
            f"({r['trunk_images']} img, {r['trunk_built']} of {r['tasks']} task(s) built), train {r['train_s']:.2f}, "
            f"select {r['select_s']:.2f} ({r['select_images']} img), keep {r['keep_s']:.2f}, rule tests "
            f"{r['rule_s']:.2f}, checkpoints {r['checkpoint_s']:.2f} ({r['saves']} files), test {r['test_s']:.2f}, "
            f"other {r['other_s']:.2f}; between epochs {r['epoch_end_s']:.2f}"
        )
    for kind, c in w["costs"].items():
        train = ", ".join(f"{ty} {1e3 * v:.2f}" for ty, v in c["image_epoch_s"].items())
        print(
            f"    {kind} costs: training ms per image and epoch {train}; selection {1e3 * c['select_image_s']:.2f} ms "
            f"per image and {1e3 * c['select_task_s']:.1f} ms per task and epoch; per epoch {c['epoch_s']:.3f} s; per "
            f"checkpoint file {c['save_s']:.3f} s; fixed {c['fixed_s']:.2f} s per job"
        )
    t = w["trunk"]
    print(f"    trunk per image: build {1e3 * t['build_s']:.2f} ms, read {1e3 * t['read_s']:.3f} ms")
    for mode, m in st["modes"].items():
        per = ", ".join(f"{p} {h:.1f} h" for p, h in m["hours"].items())
        ratio = st["h100_hours"] / st["total_hours"] if st["h100_hours"] else None
        print(
            f"  steady loop ({mode}): {m['total_hours']:.1f} h training ({per}); "
            f"H100 by peak ratio: {_fmt(ratio and ratio * m['total_hours'], '.1f')} h"
        )
        print("    img/s per (MoE, type): " + ", ".join(f"{k} {v:.1f}" for k, v in m["rates"].items()))
    print(
        "  whole jobs: per job epochs x (training images x s/image + selection images x s/image + tasks x s/task "
        "+ s/epoch) + "
        "checkpoint files (training.checkpoint_every) x s/file + fixed + trunk images x build or read s/image "
        "(usagg/projection.py), over the measured speed-up of the jobs at once; steady loop: seeds x sum(fractions) "
        "x (1 - selection_fraction) x N_type x epochs / img/s(MoE of the paradigm, type) / 3600, start-up, "
        "evaluation, checkpoints, trunk and jobs at once left out"
    )


def print_agreement(rows: list[dict[str, Any]], cfg: dict[str, Any]) -> None:
    print(f"\nagreement with CPU fp32 (same model, same {cfg['val']} test images per task)")
    print(f"{'run':<12}{'task':<22}{'pred diff':>11}{'metric':>8}{'cpu':>10}{'gpu':>10}{'diff':>10}  ok")
    for r in rows:
        print(
            f"{r['run']:<12}{r['task']:<22}{r['pred_diff']:>11.2e}{r['metric']:>8}{r['cpu']:>10.4f}"
            f"{r['gpu']:>10.4f}{r['metric_diff']:>10.2e}  {'yes' if r['ok'] else 'NO'}"
        )
    print(
        "tolerances:",
        dict(TOLERANCE),
        "(pred: max |Δ| of probabilities/boxes/keypoints in [0, 1]; seg: share of differing pixels)",
    )


def print_gradients(rows: list[dict[str, Any]]) -> None:
    print("\ncompiled model (compiled-step-graphs) against eager: gradient error relative to float32's, per task")
    for r in rows:
        print(
            f"  {r['task']:<24} eager bf16 {r['eager_bf16']:.4f}  compiled bf16 {r['compiled_bf16']:.4f}  "
            f"{'ok' if r['ok'] else 'TOO FAR'}"
        )
    print(f"  (compiled may exceed eager bf16's by x{GRAD_FACTOR} + {GRAD_SLACK})")


def print_accel(acc: dict[str, Any], device: str) -> None:
    base = acc["rows"][0]["images_per_s"]
    print(
        "\nAU model, steady training loop on trunk tokens, execution.accel (usagg/engine/accel.py), "
        f"{acc['gflop_per_image']:.2f} GFLOP/img (counted on those tokens):"
    )
    for r in acc["rows"]:
        mfu = r["mfu"]
        print(
            f"  {r['mode']:<8} batch {r['batch']:<4}{r['images_per_s']:9.1f} img/s  x{r['images_per_s'] / base:.2f}"
            f"  MFU {_fmt(mfu and 100 * mfu, '.1f')}{'%' if mfu else ''}  vs bare {_fmt(r.get('vs_bare'), '.2f')}"
        )
    if device != "cuda":
        from usagg.engine.accel import ACCEL_MODES

        others = ", ".join(m for m in ACCEL_MODES if m != "eager")
        print(f"  {others}: n/a (the CPU runs eager in every mode)")


def print_profile(profiles: dict[str, dict[str, Any]]) -> None:
    for mode, prof in profiles.items():
        print(
            f"\n{mode} AU step, torch.profiler over {prof['steps']} steps: wall {prof['wall_ms']:.2f} ms, GPU busy "
            f"{_fmt(prof['gpu_busy_ms'], '.2f')} ms, kernels {_fmt(prof['kernels_per_step'], '.0f')} per step"
        )
        for name, ms, n in prof["top"]:
            print(f"  {ms:8.3f} ms {n:6.1f}x  {name}")


def _deadline() -> float | None:
    """`GPU_CHECK_DEADLINE_S` in seconds (None: unset, no deadline); ValueError when it is not a positive number."""
    value = os.environ.get("GPU_CHECK_DEADLINE_S", "").strip()
    if not value:
        return None
    seconds = float(value)
    if not seconds > 0 or not math.isfinite(seconds):
        raise ValueError(value)
    return seconds


def verdict(failed: dict[str, list[str]], skipped: dict[str, str]) -> tuple[str, int]:
    """The last line's word and the exit code: a failure (a phase that raised, lost a mode or count, or missed its
    tolerance) fails the check; else a phase skipped for the deadline leaves it incomplete, never passed."""
    if failed:
        return "FAILED", 1
    return ("INCOMPLETE", EXIT_SKIPPED) if skipped else ("PASSED", 0)


def main() -> int:
    import json
    import traceback

    t_all = time.perf_counter()  # the deadline counts from here, torch's import included
    import torch

    device = os.environ.get("GPU_CHECK_DEVICE") or ("cuda" if torch.cuda.is_available() else "")
    if not device:
        print("gpu-check: no CUDA device visible; nothing to check here (exit 0). Run it on a machine with a GPU.")
        return 0
    cfg = _settings(device)
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu (GPU_CHECK_DEVICE=cpu, flow test only)"
    peak = peak_bf16(name) if device == "cuda" else None
    print(
        f"gpu-check on {name}, torch {torch.__version__}: {cfg['backbone']} at {cfg['size']} px, "
        f"{cfg['precision']}, {cfg['epochs']} epochs, batch {cfg['batch']}; dense bf16 peak "
        f"{_fmt(peak and peak / 1e12, '.0f')} TFLOP/s",
        flush=True,
    )
    json_out = os.environ.get("GPU_CHECK_JSON")
    results: dict[str, Any] = {"device": name, "torch": torch.__version__, "settings": cfg, "seconds": {}}
    failed: dict[str, list[str]] = {}  # phase -> what failed in it
    skipped: dict[str, str] = {}  # phase -> why it was not started
    with tempfile.TemporaryDirectory(prefix="usagg-gpu-check-") as tmp:
        root = Path(tmp)
        (root / "study.yaml").write_text(
            STUDY.format(root=root, tasks=TASKS, name="gpu-check", paradigms="[TS, CG, AU]", **cfg)
        )

        from usagg.engine.accel import ACCEL_MODES
        from usagg.execute.pool import MAX_JOBS_PER_GPU

        for name, known in (
            ("GPU_CHECK_PHASES", PHASES),
            ("GPU_CHECK_ACCEL", ACCEL_MODES),
            ("GPU_CHECK_STUDY_ACCEL", ACCEL_MODES),
        ):
            unknown = sorted(set(_env_list(name, known)) - set(known))
            if unknown:
                print(f"gpu-check: unknown value(s) {', '.join(unknown)} in {name}; choose from {', '.join(known)}")
                return 2
        chosen = _env_list("GPU_CHECK_PHASES", PHASES)
        counts = _env_list("GPU_CHECK_JOBS_AT_ONCE", tuple(str(k) for k in cfg["jpg_counts"]))
        if not all(c.isdigit() and 1 <= int(c) <= MAX_JOBS_PER_GPU for c in counts) or "1" not in counts:
            print(
                f"gpu-check: GPU_CHECK_JOBS_AT_ONCE={','.join(counts)}: expected counts of jobs at once from 1 to "
                f"{MAX_JOBS_PER_GPU}, 1 among them (the baseline), e.g. 1,2,4"
            )
            return 2
        cfg["jpg_counts"] = tuple(sorted({int(c) for c in counts}))
        try:
            deadline = _deadline()
        except ValueError:
            print(f"gpu-check: GPU_CHECK_DEADLINE_S={os.environ['GPU_CHECK_DEADLINE_S']}: expected seconds (> 0)")
            return 2
        # so_far: the rows of a phase that keeps them as it goes (jobs), while it runs: a phase cut by the lease's
        # time limit keeps what it measured (tools/gpu_lease_verdict.py names it cut after so many rows)
        so_far: dict[str, list[Any]] = {}
        results.update(
            phases=[p for p in PHASES if p in chosen],
            deadline_s=deadline,
            skipped=skipped,
            failed=failed,
            so_far=so_far,
        )

        def save() -> None:
            """The results so far, whole or not at all: a kill while writing leaves the last whole file."""
            if json_out:
                part = Path(f"{json_out}.part")
                part.write_text(json.dumps(results, indent=1, default=str))
                os.replace(part, json_out)

        def keep(label: str) -> Callable[[list[Any]], None]:
            """What a phase calls with its rows so far: written at once, under `so_far`."""

            def rows_so_far(rows: list[Any]) -> None:
                so_far[label] = list(rows)
                save()

            return rows_so_far

        save()  # the phases asked for, before any runs: a check cut short shows which it never reached

        def phase(label: str, fn: Any, show: Any) -> Any:
            """Run one phase; a phase that raises is reported and the check goes on (one GPU session, all numbers).
            Under a deadline, a phase whose estimate exceeds the time left is not started."""
            if label not in chosen:
                return None
            left = None if deadline is None else deadline - (time.perf_counter() - t_all)
            need = PHASE_ESTIMATE_S[device][label]
            if left is not None and left < need:
                skipped[label] = f"deadline: {max(left, 0):.0f} s left, about {need:.0f} s expected"
                print(f"[{label}: skipped: {skipped[label]} (GPU_CHECK_DEADLINE_S={deadline:g})]", flush=True)
                save()
                return None
            t0 = time.perf_counter()
            try:
                out = fn()
            except Exception as err:
                traceback.print_exc()
                print(f"gpu-check phase {label} FAILED", flush=True)
                failed[label] = [f"raised {type(err).__name__}: {str(err)[:300]}"]
                out = None
            results["seconds"][label] = round(time.perf_counter() - t0, 1)
            if out is not None:
                results[label] = out
                so_far.pop(label, None)  # whole in results[label]; a phase that raised keeps its rows in so_far
                show(out)
                lost = out.get("failed") if isinstance(out, dict) else None  # modes or counts it went on without
                if lost:
                    failed[label] = list(lost)
                elif isinstance(out, tuple) and not out[1]:  # jobs, agreement, gradients: the verdict in the rows
                    failed[label] = ["outside its tolerance, or a job failed (the rows above)"]
            print(f"[{label}: {results['seconds'][label]:.0f} s]", flush=True)
            save()
            return out

        # Most wanted first: should the session's time run out, the later phases are the ones lost.
        bare = phase("bare", lambda: bare_phase(cfg, device), print_bare)
        moe = phase("moe", lambda: moe_ratio(cfg, device), print_moe)
        jobs = phase(
            "jobs", lambda: run_jobs(root, cfg, device, bare, keep("jobs")), lambda out: print_jobs(out[0], cfg)
        )
        jpg = phase("jobs_per_gpu", lambda: jobs_per_gpu_rates(root, cfg, device), print_jobs_per_gpu)
        rates = {int(k): v for k, v in jpg["jobs_per_hour"].items()} if jpg and jpg["jobs_per_hour"] else None
        proj = phase("projection", lambda: projection(root, cfg, device, rates), print_projection)
        phase("agreement", lambda: compare_precisions(root, cfg, device), lambda out: print_agreement(out[0], cfg))
        phase("gradients", lambda: compare_gradients(root, cfg, device), lambda out: print_gradients(out[0]))
        phase("profile", lambda: profile_steps(root, cfg, device), print_profile)
        acc = phase("accel", lambda: accel_rates(root, cfg, device, bare), lambda out: print_accel(out, device))
    au = [r for r in jobs[0] if r["job"].startswith("AU")] if jobs else []
    au_mfu = " / ".join(_fmt(r.get("mfu"), ".2%") for r in au) or "-"
    au_modes = " / ".join(r["job"].partition(" ")[2] or "eager" for r in au)
    au_bare = " / ".join(_fmt(r.get("vs_bare"), ".2f") for r in au) or "-"
    au_later = " / ".join(_fmt(r.get("vs_bare_later"), ".2f") for r in au) or "-"
    best = (
        max(acc["rows"], key=lambda r: r["images_per_s"] if math.isfinite(r["images_per_s"]) else -1) if acc else None
    )
    print(
        f"\nsummary: AU job MFU {au_mfu} ({au_modes}), {au_bare} of the bare {bare and bare['denominator']} "
        f"loop's (target >= 0.6; after its first epoch {au_later}), "
        f"best steady-loop MFU {_fmt(best and best['mfu'], '.2%')} ({best and best['mode']}, batch "
        f"{best and best['batch']}), MoE block / dense {_fmt(moe and moe['time_ratio'], '.2f')}, projected study "
        f"{_fmt(proj and proj['total_hours'], '.1f')} h from whole jobs (H100 "
        f"{_fmt(proj and proj['whole']['h100_hours'], '.1f')} h; steady loop "
        f"{_fmt(proj and proj['steady']['total_hours'], '.1f')} h)"
    )
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in results["seconds"].items())
    word, code = verdict(failed, skipped)
    lost = "; ".join(f"{p} ({' | '.join(w[:160] for w in why)})" for p, why in failed.items())
    print(
        f"gpu-check {word} in {time.perf_counter() - t_all:.0f} s ({phases})"
        + (f"; failed: {lost}" if failed else "")
        + (f"; skipped for the deadline: {', '.join(skipped)} (not a full pass)" if skipped else "")
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
