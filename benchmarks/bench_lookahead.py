"""Which lookahead step recovers a planted task structure: Fifty et al.'s SGD step or a true AdamW step (issue 25.7).

The planted structure is the known-answer study's (studies/known.yaml, usagg/data/synth/known.py): three readers of
malignancy sharing a latent (twins `malignancy_a/_b` on thyroid scans of their own, and `lesion_class` on breast
scans, whose scenes code malignancy with the same cues) and a reader of the breast scans by a hidden convention
(`lesion_class_alt`, whose steps help nobody): the grouping its AG expectation names. The study's AU job (its
model, training and `analysis.affinity`, no augmentation) is trained once per seed and measures with both
lookaheads at the same steps on the same step and probe batches: the step does not change the training
(tests/test_lookahead.py), so the two matrices differ only by the step. For each
lookahead and seed it reports:

- `ari`: adjusted Rand of AG's grouping (as many groups as planted; usagg/grouping.py) against the planted one;
- `mates_found`: tasks with a planted mate whose largest affinity onto them (itself left out) comes from one;
- `mate_auc`: probability that a planted pair's symmetric affinity (Z[i->j] + Z[j->i]) / 2 beats another pair's;
- `min_self`: the smallest self-affinity (negative: the step raised a task's own probe loss, it overshoots);
- `s_per_measure`: seconds per measurement (every task's gradient, the step, every ordered pair's probe loss);
- and the Pearson correlation of the two lookaheads' off-diagonal entries.

`python -m benchmarks lookahead`; BENCH_LOOKAHEAD_SEEDS: how many of the study's seeds (default 2). Results:
docs/benchmarks.md, "Which lookahead step".
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.demo_au import REPO, env_int

if TYPE_CHECKING:
    import numpy as np

    from usagg.engine.trainer import Trainer
    from usagg.plan import Job
    from usagg.spec.models import AffinitySpec

STUDY = REPO / "studies" / "known.yaml"
LOOKAHEADS = ("sgd", "adamw")
#: The demo tasks twinned across two synthetic seeds (the second planted structure), and their training images.
TWINNED = ("fetal_head", "cardiac_chambers", "thyroid_malignancy", "thyroid_nodule_det")
TWIN_IMAGES = 48
#: Their model and training: the demo's of 2026-12-05 before issue 28.4, pinned so the numbers stay comparable.
TWIN_MODEL = {
    "backbone": "dinov3_test",
    "image_size": 64,
    "frozen_blocks": 1,
    "moe": {"experts": 4, "top_k": 2},
    "heads": {"decoder_channels": 32, "hidden": 128},
}
TWIN_TRAINING = {
    "epochs": 8,
    "batch_size": 8,
    "lr_encoder": 5.0e-4,
    "lr_heads": 2.0e-3,
    "warmup_epochs": 0.5,
    "sampling": "uniform",
    "selection": "last",
}


def _known_jobs(tmp: Path, seeds: int) -> tuple[list[Job], dict[str, str]]:
    """The known-answer study's measuring AU jobs (its first `seeds` seeds), data under `tmp`, and the grouping its
    expectation says AG must find (task -> planted group)."""
    import yaml

    from usagg.plan import plan
    from usagg.spec.load import load_study

    spec = yaml.safe_load(STUDY.read_text())
    spec["data"]["cache_dir"] = f"{tmp}/cache"
    spec["data"]["synthetic"]["out"] = f"{tmp}/synth"
    spec["seeds"] = list(range(seeds))
    path = tmp / "known.yaml"
    path.write_text(yaml.safe_dump(spec))
    study = load_study(path)
    (want,) = [e.ag_groups for e in study.expect if e.ag_groups is not None]
    planted = {t: f"p{i}" for i, group in enumerate(want) for t in group}
    return [j for j in plan(study) if j.paradigm == "AU"], planted


def _scores(tasks: list[str], z: np.ndarray, planted: dict[str, str]) -> dict[str, float]:
    """How well one affinity matrix recovers the planted groups."""
    import numpy as np

    from usagg.affinity import Affinity
    from usagg.grouping import adjusted_rand_index, choose_groups

    n = len(tasks)
    same = np.array([[planted[a] == planted[b] for b in tasks] for a in tasks])
    groups = choose_groups(Affinity(tasks=tasks, matrix=z.tolist()), len(set(planted.values()))).labels()
    off = z.copy()
    np.fill_diagonal(off, -np.inf)
    paired = [j for j in range(n) if same[:, j].sum() > 1]  # tasks with a planted mate
    found = sum(int(same[int(np.argmax(off[:, j])), j]) for j in paired)  # largest affinity onto j from a mate
    sym = (z + z.T) / 2
    mates = [sym[i, j] for i in range(n) for j in range(i + 1, n) if same[i, j]]
    other = [sym[i, j] for i in range(n) for j in range(i + 1, n) if not same[i, j]]
    auc = float(np.mean([(a > b) + 0.5 * (a == b) for a in mates for b in other]))
    return {
        "ari": round(adjusted_rand_index(groups, planted), 3),
        "mates_found": found,
        "mate_auc": round(auc, 3),
        "min_self": float(f"{np.min(np.diag(z)):.3g}"),
        "mean_abs_off": float(f"{np.mean(np.abs(z[~np.eye(n, dtype=bool)])):.3g}"),
    }


def _measure_both(tr: Trainer, settings: AffinitySpec, seed: int, planted: dict[str, str]) -> dict[str, Any]:
    """Fit `tr` measuring with both lookaheads (`settings` otherwise) at the same steps; scores, matrices, costs."""
    import numpy as np

    from usagg.engine.affinity import LookaheadAffinity
    from usagg.engine.callbacks import AffinityMeter

    meters = {}
    for k in LOOKAHEADS:
        s = settings.model_copy(update={"lookahead": k})
        meters[k] = LookaheadAffinity(tr.model, tr.train, s, tr.total_steps, seed, tr.compute)
        tr.callbacks.insert(-1, AffinityMeter(meters[k]))  # before the checkpoint, which saves only its own
    t0 = time.perf_counter()
    tr.fit()
    wall = time.perf_counter() - t0
    ids = list(tr.train)
    out: dict[str, Any] = {"seed": seed, "steps": tr.total_steps, "every": meters["sgd"].every}
    out["wall_s"] = round(wall, 1)
    mats = {}
    for k, m in meters.items():
        rec = m.record(wall)
        mats[k] = np.asarray(rec.matrix)
        out[k] = {**_scores(ids, mats[k], planted), "s_per_measure": round(m.seconds / len(m.steps), 2)}
        out[k]["matrix"] = [[float(f"{v:.4g}") for v in row] for row in rec.matrix]
    mask = ~np.eye(len(ids), dtype=bool)
    out["pearson_sgd_adamw"] = round(float(np.corrcoef(mats["sgd"][mask], mats["adamw"][mask])[0, 1]), 3)
    out["tasks"] = ids
    return out


def _known_runs(tmp: Path, seeds: int) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The known-answer study's AU job per seed (no augmentation), measured with both lookaheads."""
    import torch

    from usagg.engine.device import resolve_compute, seed_everything
    from usagg.engine.job import build_trainer

    jobs, planted = _known_jobs(tmp, seeds)
    runs = []
    for job in jobs:
        assert job.affinity is not None
        cpu = torch.device("cpu")
        seed_everything(job.seed, cpu)
        tr = build_trainer(
            job.model_copy(update={"affinity": None}), tmp / f"ck{job.seed}", resolve_compute("fp32", cpu)
        )
        runs.append(_measure_both(tr, job.affinity, job.seed, planted))
    return runs, planted


def _pool_job(tmp: Path, synth_seed: int) -> Job:
    """The AU job of a study of the TWINNED tasks on scans of `synth_seed`, with TWIN_MODEL and TWIN_TRAINING."""
    import yaml

    from usagg.data.synth.tasks import TASKS
    from usagg.plan import plan
    from usagg.spec.load import load_study

    spec = {
        "name": f"lookahead-s{synth_seed}",
        "paradigms": ["AU"],
        "data": {
            "synthetic": {
                "seed": synth_seed,
                "image_size": 64,
                "default_size": TWIN_IMAGES + 8,
                "val_size": 8,
                "out": str(tmp / f"synth{synth_seed}"),
            },
            "test_split": "val",
            "selection_fraction": 0,
            "cache_dir": str(tmp / "cache"),
        },
        "tasks": [
            {"id": t, "type": TASKS[t].type, "num_classes": TASKS[t].num_classes, "group": TASKS[t].group}
            for t in TWINNED
        ],
        "model": TWIN_MODEL,
        "training": TWIN_TRAINING,
    }
    path = tmp / f"twins{synth_seed}.yaml"
    path.write_text(yaml.safe_dump(spec))
    (au,) = [j for j in plan(load_study(path)) if j.paradigm == "AU"]
    return au


def _twin_runs(tmp: Path, seeds: int) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Each TWINNED task on scans of synthetic seed 0 and, as `<task>_b`, of seed 1, trained in one AU-style job
    per initialisation (no augmentation), measured with both lookaheads."""
    import dataclasses

    import torch

    from usagg.engine.batches import TensorSplit
    from usagg.engine.device import resolve_compute, seed_everything
    from usagg.engine.jobdata import load_job_data
    from usagg.engine.trainer import Trainer
    from usagg.model.m2dino import build_model
    from usagg.spec.models import AffinitySpec

    pools = [_pool_job(tmp, s) for s in (0, 1)]
    tasks, train = [], {}
    for pool, suffix in zip(pools, ("", "_b"), strict=True):
        data = load_job_data(pool)
        for spec in pool.tasks:
            tid = spec.id + suffix
            tasks.append(spec.model_copy(update={"id": tid}))
            train[tid] = dataclasses.replace(TensorSplit.from_dataset(data.train[spec.id]), task_id=tid)
    planted = {t.id: t.id.removesuffix("_b") for t in tasks}
    cpu = torch.device("cpu")
    runs = []
    for init in range(seeds):
        seed_everything(init, cpu)
        model = build_model(pools[0].model, tasks, moe=True)
        tr = Trainer(model, train, {}, tasks, pools[0].training, resolve_compute("fp32", cpu), init, tmp / f"tw{init}")
        settings = AffinitySpec(every=max(1, tr.total_steps // 8), probe_size=8)
        runs.append(_measure_both(tr, settings, init, planted))
    return runs, planted


def _table(title: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Print one planted structure's table; the means over seeds."""
    import numpy as np

    cols = ("ari", "mates_found", "mate_auc", "min_self", "mean_abs_off", "s_per_measure")
    print(title)
    print(f"  {'seed':>4}  {'lookahead':>9}  " + "  ".join(f"{c:>13}" for c in cols) + "  pearson(sgd, adamw)")
    for r in runs:
        for k in LOOKAHEADS:
            vals = "  ".join(f"{r[k][c]:>13}" for c in cols)
            print(f"  {r['seed']:>4}  {k:>9}  {vals}  {r['pearson_sgd_adamw'] if k == 'adamw' else ''}")
    summary: dict[str, Any] = {}
    for k in LOOKAHEADS:
        summary[k] = {c: round(float(np.mean([r[k][c] for r in runs])), 4) for c in cols if c != "min_self"}
        summary[k]["min_self"] = min(r[k]["min_self"] for r in runs)
        print(f"  {'mean':>4}  {k:>9}  " + "  ".join(f"{summary[k][c]:>13}" for c in cols))
    return summary


def main() -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    seeds = env_int("BENCH_LOOKAHEAD_SEEDS", 2)
    assert seeds is not None
    which = os.environ.get("BENCH_LOOKAHEAD_PLANTED", "known,twins").split(",")
    if not which or set(which) - {"known", "twins"}:
        raise SystemExit(f"BENCH_LOOKAHEAD_PLANTED={','.join(which)!r}: expected known, twins or known,twins.")
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="usagg-bench-lookahead-") as d:
        for name in which:
            t0 = time.perf_counter()
            runs, planted = (_known_runs if name == "known" else _twin_runs)(Path(d), seeds)
            title = (
                f"lookahead affinity against the planted groups of studies/known.yaml ({len(planted)} tasks)"
                if name == "known"
                else f"lookahead affinity against planted twins ({', '.join(TWINNED)}, each on 2 scan pools)"
            )
            summary = _table(title, runs)
            out[name] = {
                "planted": planted,
                "runs": runs,
                "summary": summary,
                "wall_s": round(time.perf_counter() - t0, 1),
            }
    return out
