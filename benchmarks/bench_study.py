"""A whole study on the CPU, today's code against the commit issue 10 started from (47bbd34), side by side.

Issue 10's CPU target: the same 8-job held-out-style study (5 synthetic tasks of 4 types in 2 clinical
groups: TS 5 + CG 2 + AU 1; originals 384 px in the FMC_UIA layout; 4 epochs; frozen_blocks 2) run
by both versions in one session: today's wall time <= 0.75 of the old one's and today's checkpoint
bytes (the jobs' checkpoints/ folders after the run) <= 0.5 of the old ones. Run with
`python -m benchmarks study`. Each version runs twice, in the order old, new, new, old, and the
best wall time of each counts: load from other processes only ever adds time.

The old tree comes from `git archive 47bbd34` into a temporary folder and runs with
PYTHONPATH pointing at it (the venv is the same; PYTHONPATH wins over the editable install).
Both runs read one data folder generated once by usagg's synthetic generator and use one
study YAML: only settings both versions know, new ones left at their defaults. Each run gets
its own empty cache ($USAGG_CACHE), so decode caches and the frozen-trunk cache start cold
for both. The CPU seconds of each run (children's user + system) are reported next to wall time.
"""

from __future__ import annotations

import copy
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
BASE_COMMIT = "47bbd34"
TARGET_WALL, TARGET_BYTES = 0.75, 0.5

# Fetal: segmentation, regression, classification; Thyroid: detection, classification.
TASKS = ["fetal_head", "fetal_head_biometry", "fetal_head_position", "thyroid_nodule_det", "thyroid_malignancy"]
TRAIN_IMAGES, VAL_IMAGES, ORIGINAL_PX = 128, 32, 384
RUN_TIMEOUT_S = 1800
ORDER = ("old", "new", "new", "old")

# The model of studies/demo.yaml (the project's CPU-sized study) with frozen_blocks 2; its batch size and warm-up.
STUDY: dict[str, Any] = {
    "name": "bench_study",
    "seeds": [0],
    "fractions": [1.0],
    "paradigms": ["TS", "CG", "AU"],
    "data": {"test_split": "val", "selection_fraction": 0.2},
    "model": {
        "backbone": "dinov3_test",
        "image_size": 64,
        "frozen_blocks": 2,
        "moe": {"experts": 4, "top_k": 2},
        "heads": {"decoder_channels": 32, "hidden": 128},
    },
    "training": {"epochs": 4, "batch_size": 16, "warmup_epochs": 0.5, "selection": "best"},
    "execution": {"executor": "local", "devices": "cpu"},
}


def _write_data(out: Path) -> None:
    """The 5 tasks' originals at 384 px, made by today's generator (the old run reads the same files)."""
    from usagg.data.synth import generate_benchmark
    from usagg.spec.models import SynthSpec

    spec = SynthSpec(seed=0, image_size=ORIGINAL_PX, default_size=TRAIN_IMAGES, val_size=VAL_IMAGES)
    generate_benchmark(out, spec, TASKS)


def _study_yaml(work: Path, data_root: Path) -> Path:
    """One YAML valid for both versions: the 5 tasks as the synthetic catalog has them, data.root, a store in `work`."""
    from usagg.data.synth import TASKS as SYNTH_TASKS

    study = copy.deepcopy(STUDY)
    study["output_root"] = str(work / "runs")
    study["data"]["root"] = str(data_root)
    study["tasks"] = [
        {"id": t, "type": SYNTH_TASKS[t].type, "num_classes": SYNTH_TASKS[t].num_classes, "group": SYNTH_TASKS[t].group}
        for t in TASKS
    ]
    path = work / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def _tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _run(label: str, code_root: Path, study: Path, work: Path) -> dict[str, Any]:
    """`usagg run STUDY` with `code_root` first on PYTHONPATH; wall and CPU seconds, store sizes, job outcomes."""
    run_dir = work / label
    run_dir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(code_root), "USAGG_CACHE": str(run_dir / "cache")}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "usagg", "run", str(study), "--devices", "cpu"],
            cwd=run_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
        )
        exit_code, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as err:
        exit_code, output = None, f"{err.stdout or ''}{err.stderr or ''}\nkilled after {RUN_TIMEOUT_S} s"
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    store = study.parent / "runs" / STUDY["name"]
    jobs: dict[str, Any] = {}
    for record in sorted(store.glob("jobs/*/job.json")):
        folder = record.parent
        info = json.loads(record.read_text())
        metrics_file = folder / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        jobs[folder.name] = {
            "state": info.get("state"),
            "duration_s": info.get("duration_s"),
            "checkpoint_files": {
                str(p.relative_to(folder / "checkpoints")): p.stat().st_size
                for p in sorted(folder.glob("checkpoints/**/*"))
                if p.is_file()
            },
            "primary": {t: round(m["metrics"][m["primary"]], 4) for t, m in metrics.get("tasks", {}).items()},
        }
    result = {
        "code": str(code_root),
        "exit_code": exit_code,
        "wall_s": round(wall, 2),
        "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2),
        "checkpoint_bytes": sum(sum(j["checkpoint_files"].values()) for j in jobs.values()),
        "store_bytes": _tree_bytes(store) if store.is_dir() else 0,
        "jobs_done": sum(j["state"] == "done" for j in jobs.values()),
        "jobs": jobs,
    }
    if exit_code != 0 or result["jobs_done"] != 8:
        result["output_tail"] = output[-3000:]
    return result


def _ratio(new: float, old: float) -> float | None:
    return round(new / old, 3) if old else None


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One version's runs: the best wall and CPU seconds (load on a shared machine only ever adds), all rounds kept."""
    best = min(rounds, key=lambda r: r["wall_s"])
    return {
        "wall_s": best["wall_s"],
        "cpu_s": min(r["cpu_s"] for r in rounds),
        "checkpoint_bytes": best["checkpoint_bytes"],
        "store_bytes": best["store_bytes"],
        "jobs_done": min(r["jobs_done"] for r in rounds),
        "rounds": rounds,
    }


def main() -> dict:
    with tempfile.TemporaryDirectory(prefix="usagg-bench-study-") as tmp:
        work = Path(tmp)
        old_code = work / "code-47bbd34"
        old_code.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", BASE_COMMIT], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(old_code)], input=archive.stdout, check=True)
        t0 = time.perf_counter()
        _write_data(work / "data")
        data_s = time.perf_counter() - t0
        code = {"old": old_code, "new": REPO}
        rounds: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
        for i, label in enumerate(ORDER):  # old, new, new, old: a load that drifts during the bench hits both
            run_work = work / f"{i}-{label}"
            run_work.mkdir()
            rounds[label].append(_run(label, code[label], _study_yaml(run_work, work / "data"), run_work))
    old, new = _summary(rounds["old"]), _summary(rounds["new"])
    complete = old["jobs_done"] == new["jobs_done"] == 8
    wall_ratio = _ratio(new["wall_s"], old["wall_s"]) if complete else None
    bytes_ratio = _ratio(new["checkpoint_bytes"], old["checkpoint_bytes"]) if complete else None
    result: dict[str, Any] = {
        "study": "5 tasks (4 types, 2 groups), TS 5 + CG 2 + AU 1 jobs, originals 384 px, "
        f"{TRAIN_IMAGES} train / {VAL_IMAGES} val images per task, dinov3_test at {STUDY['model']['image_size']} px, "
        f"{STUDY['training']['epochs']} epochs, frozen_blocks {STUDY['model']['frozen_blocks']}",
        "base_commit": BASE_COMMIT,
        "order": list(ORDER),
        "data_generation_s": round(data_s, 1),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "wall_ratio": wall_ratio,
        "cpu_ratio": _ratio(new["cpu_s"], old["cpu_s"]) if complete else None,
        "checkpoint_bytes_ratio": bytes_ratio,
        "targets": {"wall_ratio": TARGET_WALL, "checkpoint_bytes_ratio": TARGET_BYTES},
        "meets_targets": complete
        and wall_ratio is not None
        and bytes_ratio is not None
        and wall_ratio <= TARGET_WALL
        and bytes_ratio <= TARGET_BYTES,
        "old": old,
        "new": new,
    }
    print(f"8-job study on the CPU, today's code vs {BASE_COMMIT} (data generated in {data_s:.1f} s)")
    print(f"{'run':<6}{'wall s (each round)':>24}{'cpu s':>9}{'ckpt MB':>10}{'store MB':>10}{'done':>6}")
    for label, r in (("old", old), ("new", new)):
        walls = " / ".join(f"{x['wall_s']:.1f}" for x in r["rounds"])
        print(
            f"{label:<6}{r['wall_s']:>8.1f} ({walls}){'':>2}{r['cpu_s']:>9.1f}{r['checkpoint_bytes'] / 1e6:>10.2f}"
            f"{r['store_bytes'] / 1e6:>10.2f}{r['jobs_done']:>6}"
        )
        for x in r["rounds"]:
            if "output_tail" in x:
                print(f"\n{label} run did not finish its 8 jobs (exit {x['exit_code']}); its output ends with:")
                print(x["output_tail"])
    print(
        f"new/old (best of {len(old['rounds'])}): wall {wall_ratio} (target <= {TARGET_WALL}), "
        f"cpu {result['cpu_ratio']}, checkpoint bytes {bytes_ratio} (target <= {TARGET_BYTES}); "
        f"load average {result['load_avg_1min']}"
    )
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
