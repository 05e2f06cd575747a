"""GPU check (`make gpu-check`, `python -m benchmarks.gpu_check`): speed, memory and numerical agreement on CUDA.

1. A short synthetic study (one TS, one CG and the AU job; four task types;
   bf16 autocast) run through the real run store and `run_one`: per job
   images/s, model FLOPs utilisation (FLOPs per training image, counted by
   torch.utils.flop_counter on one step, x images/s / the card's dense bf16
   peak, `PEAK_BF16`), peak GPU memory, and host syncs per steady-state
   training step (`torch.cuda.set_sync_debug_mode("warn")`, warnings counted
   over a dozen steps of the real batch path and model step).
2. Launch overhead: the AU job's model trained in a steady loop with
   `execution.accel` eager, compile and graphs (usagg/engine/accel.py): images/s.
3. The MoE block's forward+backward time against the dense block
   (benchmarks/bench_moe.py, the dispatch training takes on this card).
4. The projected wall time of studies/fmc_uia.yaml on this device (formula in
   `project_study`): its own backbone, image size, batch and MoE blocks, timed
   per task type with and without MoE.
5. Correctness: one fixed model (seeded init, MoE on, every head) evaluated on
   the same test images on the CPU in fp32 and on the GPU in fp32 and bf16.
   Predictions and primary metrics must agree within the tolerances below.

Self-contained: generates its own synthetic data in a temporary folder, never
downloads (HF_HUB_OFFLINE=1). Exits 1 on disagreement or a failed job; without
CUDA it says so and exits 0. GPU_CHECK_DEVICE=cpu runs the same flow on the CPU
at a tiny size (to test this script without a GPU; its numbers mean nothing, and
the CPU runs eager in every accel mode). Meant to take under 5 minutes on one
H100 or H200.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: Largest difference allowed against CPU fp32, per precision: probabilities, boxes and keypoints are in [0, 1];
#: "seg" is the share of segmentation pixels whose class may differ; metric tolerances are absolute for bounded
#: metrics (DSC, AUC, IoU) and relative for MRE (pixels).
TOLERANCE: dict[str, dict[str, float]] = {
    "fp32": {"pred": 2e-3, "seg": 2e-3, "metric": 5e-3, "mre_rel": 5e-3},
    "bf16": {"pred": 5e-2, "seg": 3e-2, "metric": 5e-2, "mre_rel": 5e-2},
}

#: Dense bf16 tensor-core peak, FLOP/s, by a substring of torch.cuda.get_device_name (first match wins).
PEAK_BF16: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM (80GB HBM3)
    ("H200", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("RTX 4090", 165e12),
)


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
name: gpu-check
output_root: {root}/runs
paradigms: [TS, CG, AU]
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
    }


def peak_bf16(device_name: str) -> float | None:
    """Dense bf16 peak FLOP/s of a card by its name; None when the table does not know it."""
    return next((peak for key, peak in PEAK_BF16 if key in device_name), None)


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _optimizer(model: Any) -> Any:
    import torch

    params = [p for ps in model.param_groups().values() for p in ps]
    return torch.optim.AdamW(params, lr=1e-4, fused=next(model.parameters()).is_cuda)


def _train_step(model: Any, opt: Any, task: str, x: Any, y: Any, amp: bool) -> Any:
    """One training step as the trainer takes it: autocast, backward, clipping, AdamW; returns the detached loss."""
    import torch

    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        out = model(x, task, y)
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
    opt.step()
    return out.loss.detach()


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


def steady_rate(model: Any, batches: dict[str, tuple[Any, Any]], steps: int, amp: bool) -> float:
    """Training images/s of a steady loop over `batches` (one per task), after two warm-up rounds (compiles)."""
    opt = _optimizer(model)
    model.train()
    device = next(model.parameters()).device
    for _ in range(2):
        for task, (x, y) in batches.items():
            _train_step(model, opt, task, x, y, amp)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        for task, (x, y) in batches.items():
            _train_step(model, opt, task, x, y, amp)
    _sync(device)
    n = steps * sum(int(x.shape[0]) for x, _ in batches.values())
    return n / (time.perf_counter() - t0)


def flops_per_image(model: Any, tasks: list[Any], size: int, device: Any) -> float:
    """Mean FLOPs (2 per multiply-add) of one training image's forward+backward over the tasks (uniform sampling).

    Counted with the per-expert MoE loop: the flop counter has no formula for `_grouped_mm`,
    and both paths do the same products.
    """
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
        counter = FlopCounterMode(display=False)
        with counter:
            model(x, t.id, y).loss.backward()
        per_task.append(counter.get_total_flops() / 2)
    model.zero_grad(set_to_none=True)
    for m in moes:
        m.dispatch = "auto"
    torch.cuda.empty_cache() if device.type == "cuda" else None
    return statistics.mean(per_task)


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
    opt = _optimizer(model)
    gen = torch.Generator().manual_seed(0)
    tasks = list(splits)
    cuda = device.type == "cuda"

    def step(i: int) -> None:
        task = tasks[i % len(tasks)]
        idx = torch.randint(0, len(splits[task]), (batch,), generator=gen)
        x, y = splits[task].batch(idx, device)
        _train_step(model, opt, task, x, y, amp)

    for i in range(len(tasks)):
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


def run_jobs(root: Path, cfg: dict[str, Any], device: str) -> tuple[list[dict[str, Any]], bool]:
    """TS (first task), CG (first group) and AU through the store and run_one; per-job speed and memory."""
    import torch

    from usagg.engine.runner import run_one
    from usagg.model.m2dino import build_model
    from usagg.plan import plan
    from usagg.spec.load import dump_study, load_study
    from usagg.store import RunStore

    spec = root / "study.yaml"
    spec.write_text(STUDY.format(root=root, tasks=TASKS, **cfg))
    study = load_study(spec)
    jobs = plan(study)
    chosen = [next(j for j in jobs if j.paradigm == p) for p in ("TS", "CG", "AU")]
    store = RunStore(Path(study.output_root) / study.name)
    store.init(dump_study(study), chosen)
    dev = torch.device(device)
    amp = cfg["precision"] == "bf16"
    peak = peak_bf16(torch.cuda.get_device_name(dev)) if device == "cuda" else None
    rows, ok = [], True
    for job in chosen:
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        state = run_one(str(store.root), job.id, device=device)
        wall = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
        row: dict[str, Any] = {"job": job.id, "state": state, "wall_s": round(wall, 1), "peak_gib": peak}
        if state == "done":
            m = store.metrics(job.id) or {}
            row["images_per_s"] = m["throughput"]["train_images_per_s"]
            row["precision"] = m["training"]["precision"]
            row["primary"] = {t: e["metrics"].get(e["primary"]) for t, e in m["tasks"].items()}
            model = build_model(job.model, job.tasks, job.moe).to(dev)
            row["gflop_per_image"] = flops_per_image(model, job.tasks, cfg["size"], dev) / 1e9
            del model
            row["mfu"] = row["gflop_per_image"] * 1e9 * row["images_per_s"] / peak if peak else None
            row["syncs_per_step"] = syncs_per_step(job, dev, cfg["batch"], amp, cfg["sync_steps"])
        else:
            ok = False
            row["error"] = (store.error_text(job.id) or "")[-2000:]
        rows.append(row)
    return rows, ok


def accel_rates(root: Path, cfg: dict[str, Any], device: str) -> dict[str, float]:
    """The AU job's model in a steady training loop under each `execution.accel` mode: images/s (nan: failed).

    Each mode gets a fresh model (same seed) and the same device-resident batches;
    compilation happens in the warm-up rounds, outside the timed ones.
    """
    import torch

    from usagg.engine.accel import ACCEL_MODES, accelerate
    from usagg.model.m2dino import build_model
    from usagg.plan import plan
    from usagg.spec.load import load_study

    job = next(j for j in plan(load_study(root / "study.yaml")) if j.paradigm == "AU")
    dev = torch.device(device)
    batches = {t.id: random_batch(t, cfg["batch"], cfg["size"], dev) for t in job.tasks}
    rates = {}
    for mode in ACCEL_MODES if device == "cuda" else ("eager",):  # the CPU runs eager in every mode
        torch.manual_seed(0)
        model = accelerate(build_model(job.model, job.tasks, job.moe).to(dev), mode, dev)  # type: ignore[arg-type]
        try:
            rates[mode] = steady_rate(model, batches, cfg["steps"], cfg["precision"] == "bf16")
        except Exception as err:  # a mode that fails here is reported, not fatal: the check goes on
            print(f"accel {mode} failed: {type(err).__name__}: {str(err)[:500]}")
            rates[mode] = math.nan
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    return rates


def moe_ratio(cfg: dict[str, Any], device: str) -> dict[str, Any]:
    """benchmarks/bench_moe.py on this device: the MoE block against the dense block, both dispatch paths."""
    from benchmarks import bench_moe

    if device == "cuda":
        return bench_moe.main(repeats=10)
    return bench_moe.main(backbone=cfg["backbone"], batch=2, size=cfg["size"], repeats=2)


def project_study(device: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """Projected training wall time of studies/fmc_uia.yaml on this device.

    hours = Σ_paradigm Σ_type  seeds · Σfractions · (1 − selection_fraction) · N_type · epochs / r(MoE_p, type) / 3600

    N_type: FMC_UIA training images of that task type (`FMC_UIA_TRAIN_IMAGES`); every paradigm
    trains each task's images once per epoch (TS per task, CG per group, AU all at once);
    r(MoE, type): images/s of a steady training loop with the spec's backbone, image size,
    batch size, frozen and MoE blocks and precision, MoE on for the paradigms that use it.
    Left out: selection and test evaluation, checkpoints, job start-up (measured per job in
    part 1). On the CPU a tiny model stands in for the spec's (flow test).
    """
    import torch

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
    rates: dict[tuple[bool, str], float] = {}
    for moe in sorted(set(moe_of.values())):
        torch.manual_seed(0)
        model = build_model(study.model, list(types.values()), moe).to(dev)
        for name, t in types.items():
            rates[moe, name] = steady_rate(model, {t.id: random_batch(t, batch, size, dev)}, cfg["steps"], amp)
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    share = len(study.seeds) * sum(study.fractions) * (1 - study.data.selection_fraction) * study.training.epochs
    hours = {
        p: sum(share * n / rates[moe_of[p], name] for name, n in FMC_UIA_TRAIN_IMAGES.items()) / 3600
        for p in study.paradigms
    }
    return {
        "backbone": study.model.backbone,
        "image_size": size,
        "batch": batch,
        "rates": {f"{'moe' if m else 'dense'} {n}": r for (m, n), r in rates.items()},
        "hours": hours,
        "total_hours": sum(hours.values()),
        "images_per_paradigm": share * sum(FMC_UIA_TRAIN_IMAGES.values()),
    }


def compare_precisions(root: Path, cfg: dict[str, Any], device: str) -> tuple[list[dict[str, Any]], bool]:
    """One seeded model, the same test images: CPU fp32 against `device` fp32 and bf16."""
    import copy

    import numpy as np
    import torch

    from usagg.engine.batches import TensorSplit
    from usagg.engine.checkpoint import frozen_fingerprint, load, load_trainable
    from usagg.engine.device import resolve_compute
    from usagg.engine.evaluate import EvalSet, predict, score
    from usagg.engine.jobdata import load_job_data
    from usagg.model.m2dino import build_model
    from usagg.plan import plan
    from usagg.spec.load import load_study

    job = next(j for j in plan(load_study(root / "study.yaml")) if j.paradigm == "AU")
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
            if key == "MRE":
                mdiff = abs(a - b) / max(abs(a), 1e-9)
                metric_ok = mdiff <= tol["mre_rel"]
            else:
                mdiff = abs(a - b) if np.isfinite(a) and np.isfinite(b) else (0.0 if a == b else np.inf)
                metric_ok = mdiff <= tol["metric"] or (np.isnan(a) and np.isnan(b))
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


PHASE_SECONDS: dict[str, float] = {}


def timed(label: str, fn: Any) -> Any:
    """fn(), its wall seconds kept in PHASE_SECONDS (printed at the end: where the 5 minutes go)."""
    t0 = time.perf_counter()
    out = fn()
    PHASE_SECONDS[label] = time.perf_counter() - t0
    return out


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def main() -> int:
    import torch

    device = os.environ.get("GPU_CHECK_DEVICE") or ("cuda" if torch.cuda.is_available() else "")
    if not device:
        print("gpu-check: no CUDA device visible; nothing to check here (exit 0). Run it on a machine with a GPU.")
        return 0
    cfg = _settings(device)
    t_all = time.perf_counter()
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu (GPU_CHECK_DEVICE=cpu, flow test only)"
    peak = peak_bf16(name) if device == "cuda" else None
    print(
        f"gpu-check on {name}, torch {torch.__version__}: {cfg['backbone']} at {cfg['size']} px, "
        f"{cfg['precision']}, {cfg['epochs']} epochs, batch {cfg['batch']}; dense bf16 peak "
        f"{_fmt(peak and peak / 1e12, '.0f')} TFLOP/s"
    )
    with tempfile.TemporaryDirectory(prefix="usagg-gpu-check-") as tmp:
        root = Path(tmp)
        jobs, jobs_ok = timed("jobs", lambda: run_jobs(root, cfg, device))
        print(
            f"\n{'job':<44}{'state':>7}{'img/s':>9}{'GFLOP/img':>11}{'MFU':>8}{'peak GiB':>10}"
            f"{'syncs/step':>12}{'wall s':>8}  primary metrics"
        )
        for r in jobs:
            prim = ", ".join(f"{t} {v:.3g}" for t, v in r.get("primary", {}).items() if v is not None)
            mfu = r.get("mfu")
            gflop = _fmt(r.get("gflop_per_image"), ".2f")
            print(
                f"{r['job']:<44}{r['state']:>7}{r.get('images_per_s', 0):>9.1f}{gflop:>11}"
                f"{_fmt(mfu and 100 * mfu, '.2f') + ('%' if mfu else ''):>8}{_fmt(r['peak_gib'], '.2f'):>10}"
                f"{_fmt(r.get('syncs_per_step'), '.2f'):>12}{r['wall_s']:>8.1f}  {prim}"
            )
            if "error" in r:
                print(r["error"])
        print(
            "MFU = GFLOP per training image (fwd+bwd, torch.utils.flop_counter) x img/s / dense bf16 peak "
            "(n/a: card not in PEAK_BF16); syncs/step over "
            f"{cfg['sync_steps']} steady steps of the real batch path and model step "
            "(the trainer's own periodic checks excluded)"
        )
        rates = timed("accel", lambda: accel_rates(root, cfg, device))
        base = rates["eager"]
        print("\nAU job, steady training loop, execution.accel (usagg/engine/accel.py):")
        for mode, r in rates.items():
            print(f"  {mode:<8}{r:9.1f} img/s  x{r / base:.2f}")
        if device != "cuda":
            print("  compile, graphs: n/a (the CPU runs eager in every mode)")
        print()
        moe = timed("moe", lambda: moe_ratio(cfg, device))
        proj = timed("projection", lambda: project_study(device, cfg))
        print(
            f"\nprojected studies/fmc_uia.yaml on this device ({proj['backbone']} at {proj['image_size']} px, batch "
            f"{proj['batch']}, eager): {proj['total_hours']:.1f} h training "
            f"({', '.join(f'{p} {h:.1f} h' for p, h in proj['hours'].items())}; "
            f"{proj['images_per_paradigm']:,.0f} training images per paradigm)"
        )
        print("  img/s per (MoE, type): " + ", ".join(f"{k} {v:.1f}" for k, v in proj["rates"].items()))
        print(
            "  hours = sum over paradigms and task types of seeds x sum(fractions) x (1 - selection_fraction) x "
            "N_type x epochs / img/s(MoE of the paradigm, type) / 3600; evaluation, checkpoints and start-up excluded"
        )
        rows, agree = timed("agreement", lambda: compare_precisions(root, cfg, device))
    print(f"\nagreement with CPU fp32 (same seeded model, same {cfg['val']} test images per task)")
    print(f"{'run':<12}{'task':<22}{'pred diff':>11}{'metric':>8}{'cpu':>10}{'gpu':>10}{'diff':>10}  ok")
    for r in rows:
        print(
            f"{r['run']:<12}{r['task']:<22}{r['pred_diff']:>11.2e}{r['metric']:>8}{r['cpu']:>10.4f}"
            f"{r['gpu']:>10.4f}{r['metric_diff']:>10.2e}  {'yes' if r['ok'] else 'NO'}"
        )
    print(
        "tolerances:",
        {k: v for k, v in TOLERANCE.items()},
        "(pred: max |Δ| of probabilities/boxes/keypoints in [0, 1]; seg: share of differing pixels)",
    )
    total = time.perf_counter() - t_all
    ok = jobs_ok and agree
    best = max((m for m in rates if math.isfinite(rates[m])), key=lambda m: rates[m])
    print(
        f"\nsummary: AU MFU {_fmt(next((r.get('mfu') for r in jobs if r['job'].startswith('AU')), None), '.2%')}, "
        f"MoE block / dense {moe['time_ratio']:.2f} ({moe['default_dispatch']} dispatch), projected study "
        f"{proj['total_hours']:.1f} h, fastest accel {best} (x{rates[best] / base:.2f} vs eager)"
    )
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in PHASE_SECONDS.items())
    print(f"gpu-check {'PASSED' if ok else 'FAILED'} in {total:.0f} s ({phases})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
