"""A seeded, simulated results table and run store shaped like the FMC_UIA study.

For tests, the analysis benchmark and trying compare / plot / report without training:
the numbers are drawn from a simple generative story (aggregation helps with data,
hurts segmentation most; MoE adds a small task-specific effect, which the controls TSM
and AUD isolate), clearly not results. Optimiser steps follow uniform task sampling
(an epoch is ceil(images of the job / batch) steps, shared equally by its tasks), so
multi-task jobs give small tasks more updates than TS. Every value depends only on `seed`.
With `item_scores`, each job also gets an item_scores.json (usagg/analysis/task_ci.py's
input) whose per-image values average exactly to the job's primary metric, images sharing a
difficulty across jobs and fractions (one test set per task), so the test-set bootstrap of a task's Δ is
paired as in a real study.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import numpy as np

from usagg.analysis.results import Row, write_results
from usagg.atomic import write_json_atomic
from usagg.paradigms import PARADIGMS
from usagg.store import RunStore
from usagg.tasktypes import default_metric, metric_direction

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing's own from Python 3.11

_BASE = {"segmentation": (0.55, 0.9), "classification": (0.7, 0.97), "detection": (0.45, 0.8), "regression": (8, 40)}
_SENS = {"segmentation": 1.0, "classification": 0.35, "detection": 0.6, "regression": 0.5}
_SECONDARY = {"segmentation": "HD", "classification": "ACC"}
_EPOCHS, _BATCH = 20, 16


def _scope(paradigm: str) -> str:
    entry = PARADIGMS.get(paradigm)
    return entry.scope if entry is not None and entry.scope is not None else "all"


def _job_id(paradigm: str, task: dict, fraction: float, seed: int) -> str:
    scope = {"task": task["id"], "group": task.get("group") or "-"}.get(_scope(paradigm), "all")
    return f"{paradigm}-{scope}-f{fraction:g}-s{seed}"


def _steps(paradigm: str, tasks: list[dict], n: dict[str, int]) -> dict[str, float]:
    """Optimiser steps per task under uniform task sampling: the job's epoch steps split evenly over its tasks."""
    members: dict[str, list[str]] = {}
    for t in tasks:
        key = {"task": t["id"], "group": t.get("group") or "-"}.get(_scope(paradigm), "all")
        members.setdefault(key, []).append(t["id"])
    out = {}
    for ids in members.values():
        total = _EPOCHS * math.ceil(sum(n[i] for i in ids) / _BATCH)
        out.update({i: total / len(ids) for i in ids})
    return out


def simulate_rows(
    tasks: list[dict],
    *,
    paradigms: tuple[str, ...] = ("TS", "CG", "AU"),
    seeds: tuple[int, ...] = (0, 1, 2),
    fractions: tuple[float, ...] = (1.0,),
    seed: int = 0,
    study: str = "sim",
) -> list[Row]:
    """Rows for every (paradigm, fraction, seed, task) with the primary and one secondary metric."""
    rng = np.random.default_rng(seed)
    n_full = {}
    for t in tasks:
        n = math.exp(rng.uniform(math.log(60), math.log(3000)))
        n_full[t["id"]] = round(n * (2.5 if t.get("group") == "OB" else 1.0))
    ts_level = {t["id"]: rng.uniform(*_BASE[t["type"]]) for t in tasks}
    effect = {}
    for t in tasks:
        x = math.log10(n_full[t["id"]]) - 2.8
        s = _SENS[t["type"]]
        effect[("CG", t["id"])] = s * (18 * x - 4) + rng.normal(0, 3)
        effect[("AU", t["id"])] = s * (6 * x + 1) + rng.normal(0, 2)
    moe_rng = np.random.default_rng(seed + 1)  # a stream of its own: TS, CG and AU values do not move
    for t in tasks:
        moe = moe_rng.normal(0.5, 1.5)
        effect[("TSM", t["id"])] = moe
        effect[("AUD", t["id"])] = effect[("AU", t["id"])] - 0.8 * moe
    rows: list[Row] = []
    for f in fractions:
        n_at = {t["id"]: max(1, round(n_full[t["id"]] * f)) for t in tasks}
        for p in paradigms:
            steps = _steps(p, tasks, n_at)
            for sd in seeds:
                for t in tasks:
                    ttype, tid = t["type"], t["id"]
                    metric = t.get("metric") or default_metric(ttype)
                    hib = bool(metric_direction(metric))
                    n = n_at[tid]
                    scale = 1 - 0.25 * (1 - f) * _SENS[ttype]  # less data, worse TS
                    d = 0.0 if p == "TS" else effect.get((p, tid), 0.0) * (0.5 + 0.5 * f)
                    m = ts_level[tid] * (scale if hib else 1 / scale)
                    m = m * (1 + d / 100) if hib else m * (1 - d / 100)
                    m *= 1 + rng.normal(0, 0.015)
                    if hib:
                        m = float(np.clip(m, 0.01, 0.999))
                    common = dict(
                        study=study, job_id=_job_id(p, t, f, sd), paradigm=p, group=t.get("group") or "-", seed=sd,
                        fraction=f, task=tid, type=ttype, n_train=float(n), steps=steps[tid],
                    )  # fmt: skip
                    rows.append(Row(metric=metric, value=float(m), higher_is_better=hib, **common))
                    sec = _SECONDARY.get(ttype)
                    if sec and sec != metric:
                        v = 20 * (1.2 - m) if sec == "HD" else min(0.999, m * 0.95)
                        rows.append(
                            Row(metric=sec, value=float(v), higher_is_better=bool(metric_direction(sec)), **common)
                        )
    return rows


def _item_scores(rows: list[Row], primary: dict[str, str], seed: int) -> dict[str, dict]:
    """job_id -> its item_scores.json content ("mean" kind): per-image values around each task's metric. A task's
    test set is one at every fraction (a fraction subsamples training only), sized from its largest n_train."""
    rng = np.random.default_rng(seed + 2)
    largest: dict[str, float] = {}
    for r in rows:
        largest[r.task] = max(largest.get(r.task, 0.0), r.n_train)
    n_test = {t: int(min(200, max(20, n // 5))) for t, n in largest.items()}
    difficulty: dict[str, np.ndarray] = {}
    out: dict[str, dict] = {}
    for r in rows:
        if r.metric != primary[r.task]:
            continue
        n = n_test[r.task]
        base = difficulty.setdefault(r.task, rng.normal(0, 0.25 * abs(r.value), n))
        v = base + rng.normal(0, 0.05 * abs(r.value), n)
        v = v - v.mean() + r.value  # the mean of the images is the job's metric, exactly as the job scored it
        out.setdefault(r.job_id, {"format": 1, "tasks": {}})["tasks"][r.task] = {
            "metric": r.metric, "higher_is_better": r.higher_is_better, "kind": "mean",
            "images": [f"{r.task}/test/{i:04d}.png" for i in range(n)], "values": v.tolist(),
        }  # fmt: skip
    return out


class Design(TypedDict, total=False):
    """The study design `simulate_run_store` passes on to `simulate_rows` (its defaults where left out)."""

    paradigms: tuple[str, ...]
    seeds: tuple[int, ...]
    fractions: tuple[float, ...]


def simulate_run_store(
    run_dir: Path,
    tasks: list[dict],
    *,
    experts: int = 8,
    moe_blocks: int = 2,
    representative: list[str] | None = None,
    item_scores: bool = False,
    seed: int = 0,
    **kwargs: Unpack[Design],
) -> Path:
    """Write a run store through RunStore: the study, a plan, each job's metrics (expert usage for MoE jobs,
    a five-epoch training history),
    with `item_scores` each job's per-image scores, and a results.csv dated after them, so the analysis reads
    it as is."""
    import yaml

    run_dir = Path(run_dir)
    store = RunStore(run_dir)
    rows = simulate_rows(tasks, study=run_dir.name, seed=seed, **kwargs)
    study = {
        "name": run_dir.name,
        "tasks": [{k: t[k] for k in ("id", "type", "num_classes", "group", "metric") if k in t} for t in tasks],
        "analysis": {"baseline": "TS", "representative_tasks": representative or [], "bootstrap": 2000},
    }
    store.write_study(yaml.safe_dump(study, sort_keys=False))
    rng = np.random.default_rng(1)
    jobs: dict[str, dict] = {}
    for r in rows:
        job = jobs.setdefault(r.job_id, {"job_id": r.job_id, "tasks": {}, "expert_usage": None})
        job["tasks"].setdefault(r.task, {"type": r.type, "n_train": int(r.n_train), "steps": r.steps, "metrics": {}})
        job["tasks"][r.task]["metrics"][r.metric] = r.value
        if PARADIGMS[r.paradigm].moe:
            eu = job["expert_usage"] = job["expert_usage"] or {}
            if r.task not in eu:
                pref = rng.dirichlet(np.full(experts, 0.4))
                eu[r.task] = [rng.multinomial(4000, pref).tolist() for _ in range(moe_blocks)]
    curves = np.random.default_rng(2)  # a stream of its own: the other simulated numbers stay as they were
    for job in jobs.values():
        start = {t: float(curves.uniform(0.4, 2.5)) for t in job["tasks"]}
        rate = {t: float(curves.uniform(0.05, 0.35)) for t in job["tasks"]}
        job["history"] = [
            {
                "epoch": e,
                "step": 10 * e,
                "task_loss": {t: start[t] * float(np.exp(-rate[t] * (e - 1))) for t in job["tasks"]},
                "select_score": float(1 - np.exp(-0.4 * (e - 1))),
            }
            for e in range(1, 6)
        ]
    store.write_plan([{"id": jid, "simulated": True} for jid in jobs])  # only its length is read by the analysis
    for jid, job in jobs.items():
        store.write_metrics(jid, job)
    if item_scores:
        primary = {t["id"]: t.get("metric") or default_metric(t["type"]) for t in tasks}
        for jid, content in _item_scores(rows, primary, seed).items():
            write_json_atomic(store.paths(jid).item_scores, content)
    write_results(rows, store.results_csv)
    store.mark_results_fresh()
    return run_dir


def load_tasks(path: Path) -> list[dict]:
    """The `tasks:` list of a catalog YAML (for example tests/data/fmc_uia_tasks.yaml)."""
    import yaml

    return list(yaml.safe_load(Path(path).read_text(encoding="utf-8"))["tasks"])
