"""Old and new code give the same jobs: a 5-job study run by today's code and by a named commit (issue 27).

Issue 27's refactors (trainer hooks, build_trainer and JobMetrics, one observer channel, mypy's
narrowing, import circles) were to change no job's numbers. This runs bench_ops' study (TS 4 + AU 1
jobs, four synthetic tasks of four types, MoE on in AU, selection `best`) with BASE_COMMIT's tree
and with today's, both in-process through `usagg.api.run_study` on one CPU thread from one data
folder, and compares what a job leaves:

- job ids (the store's jobs/ folders);
- metrics.json, item_scores.json, job.json and splits.json value by value, timings (throughput,
  durations), the process id and the file checksum (which covers the timings) aside; a key only today's code writes
  is listed as an addition, a key only the old code wrote is a difference;
- every prediction file byte for byte;
- history.csv cell by cell (the selection-loss column is compared by value: its old cell held the
  whole task -> loss dict, f3c97a9 made it each task's own number).

BASE_COMMIT is the last commit that changed a job's numbers on purpose: 1d80e3e (issue 24.5: Dice + CE on one
log-softmax, after 99f64db's keypoint heatmap loss in separable form; rounding-level, amplified by training).
Issue 27's refactors were checked against 629521a, the last such commit before them
(BENCH_EQUIVALENCE_BASE=629521a BENCH_EQUIVALENCE_NEW=8619a58; docs/benchmarks.md). Job ids are also planned
for studies/fmc_uia.yaml by ID_COMMIT, the commit before issue 27's first (86f1bb6), and by today's code.
`python -m benchmarks equivalence`; BENCH_EQUIVALENCE_BASE and BENCH_EQUIVALENCE_NEW name other commits (a
refactor's before and after); the trees are git worktrees under /tmp (made when missing).
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

# the child runs with an old tree first on PYTHONPATH: only what bench_ops had at BASE_COMMIT is imported here
from benchmarks.bench_ops import REPO, TASKS, _study

BASE_COMMIT = os.environ.get("BENCH_EQUIVALENCE_BASE", "1d80e3e")
#: The code compared with it: today's working tree, or a commit (BENCH_EQUIVALENCE_NEW) to replay a past check.
NEW_COMMIT = os.environ.get("BENCH_EQUIVALENCE_NEW", "")
ID_COMMIT = "86f1bb6"
EPOCHS = 4
#: Values of the machine and the process, not the job (and the checksum over a file holding them).
MACHINE_KEYS = {"throughput", "checksum", "duration_s", "started", "finished", "updated", "created", "pid", "host"}


def _child(data_root: Path, out: Path) -> None:
    """In the child: run the study with the tree on PYTHONPATH."""
    import torch

    from usagg.api import run_study

    torch.manual_seed(0)
    torch.set_num_threads(1)
    result = run_study(_study(data_root, out, EPOCHS))
    print(json.dumps({"ok": result.ok, "failed": list(result.failed)}))


def _run(code_root: Path, data_root: Path, work: Path) -> Path:
    work.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(code_root), "USAGG_CACHE": str(work / "cache"), "HF_HUB_OFFLINE": "1"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(data_root), str(work / "runs")]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not json.loads(proc.stdout.splitlines()[-1])["ok"]:
        raise RuntimeError(f"the study failed with {code_root}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return work / "runs" / "bench_ops"


def _compare_values(new: Any, old: Any, where: str, diffs: list[str], added: list[str], relative: list[float]) -> None:
    """Walk two JSON documents: differing values into `diffs` (a float's relative size into `relative`), keys
    only the new one has into `added`."""
    if isinstance(new, dict) and isinstance(old, dict):
        for key in sorted(set(new) | set(old)):
            if key in MACHINE_KEYS:
                continue
            if key not in old:
                added.append(f"{where}/{key}")
            elif key not in new:
                diffs.append(f"{where}/{key}: only the old code writes it")
            else:
                _compare_values(new[key], old[key], f"{where}/{key}", diffs, added, relative)
    elif isinstance(new, list) and isinstance(old, list) and len(new) == len(old):
        for i, (a, b) in enumerate(zip(new, old, strict=True)):
            _compare_values(a, b, f"{where}[{i}]", diffs, added, relative)
    elif new != old and not (isinstance(new, float) and isinstance(old, float) and math.isnan(new) and math.isnan(old)):
        diffs.append(f"{where}: {new!r} (today) != {old!r} (old)")
        if isinstance(new, float) and isinstance(old, float):
            relative.append(abs(new - old) / max(abs(old), 1e-12))


def _history_cell(column: str, new: str, old: str) -> bool:
    if new == old:
        return True
    if column == "select_loss" and old.startswith("{"):
        values = json.loads(old.replace("'", '"')).values()
        return any(new == repr(v) for v in values)
    return False


def _compare_jobs(new_store: Path, old_store: Path) -> dict[str, Any]:
    new_ids = sorted(p.name for p in (new_store / "jobs").iterdir())
    old_ids = sorted(p.name for p in (old_store / "jobs").iterdir())
    diffs: list[str] = []
    added: list[str] = []
    relative: list[float] = []  # the relative size of each differing float
    values = files = cells = 0
    for job in new_ids if new_ids == old_ids else []:
        new_dir, old_dir = new_store / "jobs" / job, old_store / "jobs" / job
        for name in ("metrics.json", "item_scores.json", "job.json", "splits.json"):
            new_doc, old_doc = json.loads((new_dir / name).read_text()), json.loads((old_dir / name).read_text())
            _compare_values(new_doc, old_doc, f"{job}/{name}", diffs, added, relative)
            values += len(json.dumps(new_doc))
        for path in sorted(p for p in (new_dir / "predictions").rglob("*") if p.is_file()):
            rel = path.relative_to(new_dir)
            files += 1
            if not (old_dir / rel).is_file() or (old_dir / rel).read_bytes() != path.read_bytes():
                diffs.append(f"{job}/{rel}: bytes differ")
        with (new_dir / "history.csv").open() as f_new, (old_dir / "history.csv").open() as f_old:
            for row, (a, b) in enumerate(zip(csv.DictReader(f_new), csv.DictReader(f_old), strict=False), start=1):
                for column in a:
                    cells += 1
                    if column not in b or not _history_cell(column, a[column], b[column]):
                        diffs.append(f"{job}/history.csv row {row} {column}: {a[column]} != {b.get(column)}")
    return {
        "job_ids_identical": new_ids == old_ids,
        "jobs": new_ids,
        "prediction_files": files,
        "history_cells": cells,
        "differences": diffs,
        "largest_relative_difference": max(relative, default=0.0),
        "added_keys": sorted({a.split("/", 1)[1] for a in added}),
    }


def _planned_ids(code_root: Path, study: Path) -> list[str]:
    code = (
        "import json, sys\n"
        "from usagg.spec.load import load_study\n"
        "from usagg.plan import plan\n"
        "print(json.dumps(sorted(j.id for j in plan(load_study(sys.argv[1])))))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(code_root)}
    proc = subprocess.run([sys.executable, "-c", code, str(study)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"planning {study} with {code_root} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.splitlines()[-1])


def main() -> dict:
    from benchmarks.bench_ops import benchmark_data, worktree

    base = worktree(BASE_COMMIT)
    new_code = worktree(NEW_COMMIT) if NEW_COMMIT else REPO
    with tempfile.TemporaryDirectory(prefix="usagg-bench-equivalence-") as tmp:
        work = Path(tmp)
        data = benchmark_data(work / "data")
        old_store = _run(base, data, work / "old")
        new_store = _run(new_code, data, work / "new")
        jobs = _compare_jobs(new_store, old_store)
    fmc = REPO / "studies" / "fmc_uia.yaml"
    ids_old, ids_new = _planned_ids(worktree(ID_COMMIT), fmc), _planned_ids(new_code, fmc)
    identical = jobs["job_ids_identical"] and not jobs["differences"]
    result = {
        "study": f"TS 4 + AU 1 jobs ({', '.join(TASKS)}), {EPOCHS} epochs, CPU, one thread",
        "base_commit": BASE_COMMIT,
        "new_code": NEW_COMMIT or "working tree",
        "identical": identical,
        **jobs,
        "fmc_uia_ids_commit": ID_COMMIT,
        "fmc_uia_job_ids": len(ids_new),
        "fmc_uia_ids_identical": ids_old == ids_new,
    }
    print(f"a 5-job study run by {NEW_COMMIT or 'the working tree'} and by {BASE_COMMIT}:")
    print(f"  job ids identical: {jobs['job_ids_identical']} ({len(jobs['jobs'])} jobs)")
    print(f"  prediction files: {jobs['prediction_files']}, history cells: {jobs['history_cells']}")
    print(
        f"  differences in metrics, item scores, job records, splits and history: {len(jobs['differences'])}"
        f" (largest relative difference of a number: {jobs['largest_relative_difference']:.2g})"
    )
    for line in jobs["differences"][:20]:
        print(f"    {line}")
    print(f"  keys only today's code writes: {', '.join(jobs['added_keys']) or 'none'}")
    print(
        f"studies/fmc_uia.yaml job ids, {ID_COMMIT} vs {NEW_COMMIT or 'the working tree'}: "
        f"{'identical' if ids_old == ids_new else 'DIFFER'} ({len(ids_new)} jobs)"
    )
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        print(json.dumps(main(), indent=2))
