"""GPU check (`make gpu-check`, `python -m benchmarks.gpu_check`): speed, memory and numerical agreement on CUDA.

1. A short synthetic study (one TS, one CG and the AU job; four task types;
   bf16 autocast) run through the real run store and `run_one`: images/s and
   peak GPU memory per job.
2. Correctness: one fixed model (seeded init, MoE on, every head) evaluated on
   the same test images on the CPU in fp32 and on the GPU in fp32 and bf16.
   Predictions and primary metrics must agree within the tolerances below.

Self-contained: generates its own synthetic data in a temporary folder, never
downloads (HF_HUB_OFFLINE=1). Exits 1 on disagreement or a failed job; without
CUDA it says so and exits 0. GPU_CHECK_DEVICE=cpu runs the same flow on the CPU
at a tiny size (to test this script without a GPU). Takes well under 5 minutes
on one H100.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
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
    }


def run_jobs(root: Path, cfg: dict[str, Any], device: str) -> tuple[list[dict[str, Any]], bool]:
    """TS (first task), CG (first group) and AU through the store and run_one; per-job speed and memory."""
    import torch

    from usagg.engine.runner import run_one
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
        else:
            ok = False
            row["error"] = (store.error_text(job.id) or "")[-2000:]
        rows.append(row)
    return rows, ok


def compare_precisions(root: Path, cfg: dict[str, Any], device: str) -> tuple[list[dict[str, Any]], bool]:
    """One seeded model, the same test images: CPU fp32 against `device` fp32 and bf16."""
    import copy

    import numpy as np
    import torch

    from usagg.engine.batches import TensorSplit
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
    best = root / "runs" / "gpu-check" / "jobs" / job.id / "checkpoints" / "best.pt"
    if best.is_file():
        base.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["model"])
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
            preds, _ = predict(model, es.tensors, compute, 32)
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


def main() -> int:
    import torch

    device = os.environ.get("GPU_CHECK_DEVICE") or ("cuda" if torch.cuda.is_available() else "")
    if not device:
        print("gpu-check: no CUDA device visible; nothing to check here (exit 0). Run it on a machine with a GPU.")
        return 0
    cfg = _settings(device)
    t_all = time.perf_counter()
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu (GPU_CHECK_DEVICE=cpu, flow test only)"
    print(
        f"gpu-check on {name}, torch {torch.__version__}: {cfg['backbone']} at {cfg['size']} px, "
        f"{cfg['precision']}, {cfg['epochs']} epochs, batch {cfg['batch']}"
    )
    with tempfile.TemporaryDirectory(prefix="usagg-gpu-check-") as tmp:
        root = Path(tmp)
        jobs, jobs_ok = run_jobs(root, cfg, device)
        print(f"\n{'job':<44}{'state':>7}{'img/s':>9}{'peak GiB':>10}{'wall s':>8}  primary metrics")
        for r in jobs:
            peak = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
            prim = ", ".join(f"{t} {v:.3g}" for t, v in r.get("primary", {}).items() if v is not None)
            print(f"{r['job']:<44}{r['state']:>7}{r.get('images_per_s', 0):>9.1f}{peak:>10}{r['wall_s']:>8.1f}  {prim}")
            if "error" in r:
                print(r["error"])
        rows, agree = compare_precisions(root, cfg, device)
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
    print(f"\ngpu-check {'PASSED' if ok else 'FAILED'} in {total:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
