"""A seeded, simulated results table and run store shaped like the FMC_UIA study.

For tests, the analysis benchmark and trying compare / plot / report without training:
the numbers are drawn from a simple generative story (aggregation helps with data,
hurts segmentation most), clearly not results. Every value depends only on `seed`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from usagg.analysis.results import Row, write_results
from usagg.store import RunStore
from usagg.tasktypes import default_metric, metric_direction

_BASE = {"segmentation": (0.55, 0.9), "classification": (0.7, 0.97), "detection": (0.45, 0.8), "regression": (8, 40)}
_SENS = {"segmentation": 1.0, "classification": 0.35, "detection": 0.6, "regression": 0.5}
_SECONDARY = {"segmentation": "HD", "classification": "ACC"}


def _job_id(paradigm: str, task: dict, fraction: float, seed: int) -> str:
    scope = {"TS": task["id"], "CG": task.get("group") or "-", "AU": "all"}.get(paradigm, "all")
    return f"{paradigm}-{scope}-f{fraction:g}-s{seed}"


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
    rows: list[Row] = []
    for f in fractions:
        for p in paradigms:
            for sd in seeds:
                for t in tasks:
                    ttype, tid = t["type"], t["id"]
                    metric = t.get("metric") or default_metric(ttype)
                    hib = bool(metric_direction(metric))
                    n = max(1, round(n_full[tid] * f))
                    scale = 1 - 0.25 * (1 - f) * _SENS[ttype]  # less data, worse TS
                    d = 0.0 if p == "TS" else effect.get((p, tid), 0.0) * (0.5 + 0.5 * f)
                    m = ts_level[tid] * (scale if hib else 1 / scale)
                    m = m * (1 + d / 100) if hib else m * (1 - d / 100)
                    m *= 1 + rng.normal(0, 0.015)
                    if hib:
                        m = float(np.clip(m, 0.01, 0.999))
                    common = dict(
                        study=study, job_id=_job_id(p, t, f, sd), paradigm=p, group=t.get("group") or "-", seed=sd,
                        fraction=f, task=tid, type=ttype, n_train=float(n),
                    )  # fmt: skip
                    rows.append(Row(metric=metric, value=float(m), higher_is_better=hib, **common))
                    sec = _SECONDARY.get(ttype)
                    if sec and sec != metric:
                        v = 20 * (1.2 - m) if sec == "HD" else min(0.999, m * 0.95)
                        rows.append(
                            Row(metric=sec, value=float(v), higher_is_better=bool(metric_direction(sec)), **common)
                        )
    return rows


def simulate_run_store(
    run_dir: Path,
    tasks: list[dict],
    *,
    experts: int = 8,
    moe_blocks: int = 2,
    representative: list[str] | None = None,
    **kwargs: object,
) -> Path:
    """Write a run store through RunStore: the study, a plan, each job's metrics (expert usage for MoE jobs)
    and a results.csv dated after them, so the analysis reads it as is."""
    import yaml

    run_dir = Path(run_dir)
    store = RunStore(run_dir)
    rows = simulate_rows(tasks, study=run_dir.name, **kwargs)  # type: ignore[arg-type]
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
        job["tasks"].setdefault(r.task, {"type": r.type, "n_train": int(r.n_train), "metrics": {}})
        job["tasks"][r.task]["metrics"][r.metric] = r.value
        if r.paradigm != "TS":
            eu = job["expert_usage"] = job["expert_usage"] or {}
            if r.task not in eu:
                pref = rng.dirichlet(np.full(experts, 0.4))
                eu[r.task] = [rng.multinomial(4000, pref).tolist() for _ in range(moe_blocks)]
    store.write_plan([{"id": jid, "simulated": True} for jid in jobs])  # only its length is read by the analysis
    for jid, job in jobs.items():
        store.write_metrics(jid, job)
    write_results(rows, store.results_csv)
    store.mark_results_fresh()
    return run_dir


def load_tasks(path: Path) -> list[dict]:
    """The `tasks:` list of a catalog YAML (for example tests/data/fmc_uia_tasks.yaml)."""
    import yaml

    return list(yaml.safe_load(Path(path).read_text(encoding="utf-8"))["tasks"])
