"""Coverage of the 95 % intervals `usagg compare` puts on an expectation (usagg/analysis/expect.py), with a known truth.

Simulated: one task, the baseline TS and a paradigm P (TSM here) at `k` training seeds, every job scoring ONE test
set of `n` images drawn from a population, the same images for every seed and both paradigms (paired). Each
replicate draws new training seeds AND a new test set; the truth is the population value, the expectation over
seeds and images, known in closed form:

- kind "mean" (a DSC-like per-image score in [0, 1]): image i's score in paradigm q's job of seed s is
  c_q + a_qs + u_i + v_qi + e_qsi. a_qs ~ N(0, seed_sd²) is the training seed's offset; u_i (sd `SD_U`, skewed: a
  tail of hard images, a negated standardised Beta(2, 6)) the image's difficulty, shared by every job; v_qi (sd
  `SD_V`, uniform) how much paradigm q suits the image, shared by q's seeds; e_qsi (sd `SD_E`, uniform) the job's
  own per-image noise. All have mean 0, so the truth is c_q; every score stays inside [0, 1].
- kind "auc" (binary AUC): label_i ~ Bernoulli(`AUC_PREV`), scores z = (μ_q + a_qs) · label_i + w_i + v_qi + e_qsi
  (normal; w shared by every job, v by q's seeds), probability sigmoid(z). Seed s's population AUC is
  Φ((μ_q + a) / √(2σ²)), σ² the sum of the image terms' variances; averaged over a ~ N(0, seed_sd²):
  Φ(μ_q / √(2σ² + seed_sd²)).

Each replicate goes through usagg's own pipeline: a results table (`Row`) and each job's item_scores.json (in a
temporary folder) make an `AnalysisInput`, then `compare`, `task_uncertainty` and `evaluate` with two
expectations, `metric_of: TS` and `delta: {paradigm: P}`. Three 95 % intervals of each value are checked:

- seeds + test set: the expectation's interval (`Outcome.ci_low`, `ci_high`): the t interval over the seeds whose
  variance adds the test set's (`t_interval` with `extra_var = interval_variance` of the percentile bootstrap);
- seeds only: what the tables show, the same t interval without the test set's variance (`shown_interval` for
  the Δ; `t_interval` of the seed values for the metric, cut at the metric's bounds as expect.py cuts it);
- test set only: the percentile bootstrap over the test images (`metric_ci`; the Δ's `Δ test-set bootstrap`).

Truth for the metric: TS's population value; for the Δ: `relative_change` of the two population values. A valid
interval covers it about 95 % of the time (± 1.96 Monte Carlo SE). The seeds-only interval ignores that all seeds
share one test set, so it should fall short where the test set is small next to the seeds' spread (n = 48, small
seed sd), most for the metric (the images' difficulty u never varies over seeds); the test-set-only one ignores
the seeds, so it falls short where the seed sd is comparable. The combined interval double counts the part of
each job's per-image noise that both see (e), so it can sit a little above 95 %.

`python -m benchmarks expect_coverage` (`BENCH_EXPECT_REPS` replicates per setting, default REPS;
`BENCH_EXPECT_BOOT` bootstrap resamples per replicate, default BOOT; `BENCH_EXPECT_AUC=0` leaves the AUC settings
out).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path
from statistics import NormalDist

import numpy as np

REPS = 300
BOOT = 500
TASK, BASE, P = "t", "TS", "TSM"
# kind "mean": population means and the sds of the image terms (u skewed; v, e uniform)
LEVEL_MEAN = {BASE: 0.70, P: 0.72}
SD_U, SD_V, SD_E = 0.08, 0.02, 0.03
# kind "auc": separations, sds of the image terms, prevalence
MU_AUC = {BASE: 1.2, P: 1.4}
SD_W, SD_VA, SD_EA = 0.8, 0.4, 0.4
AUC_PREV = 0.4
SEED_SD = {"mean": {"small": 0.003, "comparable": 0.012}, "auc": {"comparable": 0.15}}
SETTINGS: list[tuple[str, int, int, str]] = [
    *(("mean", n, k, sd) for sd in ("small", "comparable") for n in (48, 256) for k in (3, 5)),
    ("auc", 48, 3, "comparable"),
    ("auc", 256, 3, "comparable"),
]
INTERVALS = ("seeds+test", "seeds only", "test only")


def _uniform(rng: np.random.Generator, sd: float, size: int) -> np.ndarray:
    return rng.uniform(-math.sqrt(3) * sd, math.sqrt(3) * sd, size)


def _truth(kind: str, seed_sd: float) -> dict[str, float]:
    if kind == "mean":
        return dict(LEVEL_MEAN)
    var2 = 2 * (SD_W**2 + SD_VA**2 + SD_EA**2)
    return {q: NormalDist().cdf(mu / math.sqrt(var2 + seed_sd**2)) for q, mu in MU_AUC.items()}


def _jobs(kind: str, n: int, k: int, seed_sd: float, rng: np.random.Generator) -> dict[tuple[str, int], dict]:
    """(paradigm, seed) -> the item_scores.json entry of the task: one test set of n images shared by every job."""
    images = [f"{TASK}/test/{i:04d}.png" for i in range(n)]
    out = {}
    if kind == "mean":
        beta_mean, beta_sd = 0.25, math.sqrt(2 * 6 / (8**2 * 9))  # Beta(2, 6)
        u = -SD_U * (rng.beta(2, 6, n) - beta_mean) / beta_sd  # a tail of hard images
        for q in (BASE, P):
            v = _uniform(rng, SD_V, n)
            for s in range(k):
                y = LEVEL_MEAN[q] + rng.normal(0, seed_sd) + u + v + _uniform(rng, SD_E, n)
                out[(q, s)] = {"metric": "DSC", "kind": "mean", "values": y.tolist()}
    else:
        labels = (rng.random(n) < AUC_PREV).astype(float)
        w = rng.normal(0, SD_W, n)
        for q in (BASE, P):
            v = rng.normal(0, SD_VA, n)
            for s in range(k):
                z = (MU_AUC[q] + rng.normal(0, seed_sd)) * labels + w + v + rng.normal(0, SD_EA, n)
                p1 = 1 / (1 + np.exp(-z))
                out[(q, s)] = {"metric": "AUC", "kind": "auc", "values": np.c_[labels, 1 - p1, p1].tolist()}
    for rec in out.values():
        rec.update(higher_is_better=True, images=images)
    return out


def _auc(labels: np.ndarray, p1: np.ndarray) -> float:
    """The job's binary ROC AUC (Mann-Whitney; the scores have no ties): scikit-learn's value without its 20 ms."""
    ranks = np.empty(p1.size)
    ranks[np.argsort(p1)] = np.arange(1, p1.size + 1)
    pos = labels == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _replicate(kind: str, n: int, k: int, seed_sd: float, rng: np.random.Generator, folder: Path, boot: int) -> dict:
    """One new draw of seeds and test set through usagg's pipeline: each interval of the metric and of the Δ."""
    from usagg.analysis.delta import compare
    from usagg.analysis.expect import evaluate
    from usagg.analysis.inputs import AnalysisInput, Settings
    from usagg.analysis.results import ResultsTable, Row
    from usagg.analysis.task_ci import load_item_scores, metric_ci
    from usagg.analysis.uncertainty import (
        LEVEL,
        TEST_SET,
        interval_variance,
        shown_interval,
        t_interval,
        task_uncertainty,
    )
    from usagg.spec.models import Expectation
    from usagg.store.layout import JobPaths

    metric = "DSC" if kind == "mean" else "AUC"
    ttype = "segmentation" if kind == "mean" else "classification"
    rows, files, ts_scores = [], {}, []
    for (q, s), rec in _jobs(kind, n, k, seed_sd, rng).items():
        jid = f"{q}-{TASK}-f1-s{s}"
        path = JobPaths(folder / jid).item_scores
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"format": 1, "tasks": {TASK: rec}}))
        files[jid] = path
        scores = load_item_scores(path.parent)[TASK]
        value = float(scores.values.mean()) if kind == "mean" else _auc(scores.values[:, 0], scores.values[:, 2])
        if q == BASE:
            ts_scores.append(scores)
        rows.append(
            Row(study="cov", job_id=jid, paradigm=q, group="g", seed=s, fraction=1.0, task=TASK, type=ttype,
                metric=metric, value=value, higher_is_better=True, n_train=1000.0, steps=100.0)
        )  # fmt: skip
    settings = Settings(task_bootstrap=boot)
    inp = AnalysisInput(ResultsTable(rows), "cov", "simulated", settings, {TASK: metric}, [TASK], item_scores=files)
    comp = compare(inp)
    stats = task_uncertainty(inp, comp)
    expectations = [
        Expectation(name="metric", metric_of=BASE, tasks=[TASK], above=0.0),
        Expectation(name="delta", delta={"paradigm": P, "task": TASK}, above=-100.0),
    ]
    got = evaluate(expectations, inp, comp, stats)
    assert all("seeds only" not in o.detail and o.ci_low is not None for o in got), [o.detail for o in got]
    # the metric: seeds alone as expect.py would give them without per-image scores; the bootstrap alone
    vals = np.asarray([r.value for r in rows if r.paradigm == BASE])
    seeds = t_interval(float(vals.mean()), [float(vals.var(ddof=1)) / k], [k - 1])
    seeds = (max(seeds[0], 0.0), min(seeds[1], 1.0))
    test = metric_ci(ts_scores, boot, settings.bootstrap_seed, LEVEL)
    # the Δ: the interval the tables show (seeds), the test-set bootstrap
    shown = shown_interval(stats, 1.0, TASK, P)
    assert shown is not None and shown[2].startswith("seeds"), shown
    test_d = next(s.ci for s in stats if s.name == TEST_SET and s.paradigm == P)
    assert test is not None and test_d is not None
    return {
        "metric": {"seeds+test": (got[0].ci_low, got[0].ci_high), "seeds only": seeds, "test only": test},
        "delta": {"seeds+test": (got[1].ci_low, got[1].ci_high), "seeds only": shown[:2], "test only": test_d},
        "var": {"seeds": float(vals.var(ddof=1)) / k, "test": interval_variance(test)},
    }


def _setting(kind: str, n: int, k: int, sd_name: str, reps: int, boot: int, seed: int, tmp: Path) -> dict:
    from usagg.analysis.delta import relative_change

    seed_sd = SEED_SD[kind][sd_name]
    truth = _truth(kind, seed_sd)
    target = {"metric": truth[BASE], "delta": relative_change(truth[P], truth[BASE], True).value}
    hits = {(v, i): [] for v in target for i in INTERVALS}
    widths = {(v, i): [] for v in target for i in INTERVALS}
    var_seeds, var_test = [], []
    for rep in range(reps):
        rng = np.random.default_rng([seed, rep])
        with tempfile.TemporaryDirectory(dir=tmp) as folder:
            out = _replicate(kind, n, k, seed_sd, rng, Path(folder), boot)
        for v, t in target.items():
            for i in INTERVALS:
                lo, hi = out[v][i]
                hits[(v, i)].append(lo <= t <= hi)
                widths[(v, i)].append(hi - lo)
        var_seeds.append(out["var"]["seeds"])
        var_test.append(out["var"]["test"])
    result = {
        "kind": kind,
        "n_images": n,
        "seeds": k,
        "seed_sd": seed_sd,
        "seed_sd_level": sd_name,
        "truth": target,
        "metric_se_seeds": math.sqrt(float(np.mean(var_seeds))),
        "metric_se_test": math.sqrt(float(np.mean(var_test))),
        "coverage": {},
    }
    for (v, i), h in hits.items():
        p = float(np.mean(h))
        result["coverage"].setdefault(v, {})[i] = {
            "rate": p,
            "mc_se": math.sqrt(p * (1 - p) / reps),
            "mean_width": float(np.mean(widths[(v, i)])),
        }
    return result


def main() -> dict:
    reps = int(os.environ.get("BENCH_EXPECT_REPS", REPS))
    boot = int(os.environ.get("BENCH_EXPECT_BOOT", BOOT))
    settings = [s for s in SETTINGS if s[0] != "auc" or os.environ.get("BENCH_EXPECT_AUC", "1") != "0"]
    shm = Path("/dev/shm")
    results = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else None) as tmp:
        for idx, (kind, n, k, sd_name) in enumerate(settings):
            results.append(_setting(kind, n, k, sd_name, reps, boot, 7000 + idx, Path(tmp)))
    wall = time.perf_counter() - t0
    print(
        f"coverage of 95 % expectation intervals: {reps} replicates per setting (new seeds and test set each), "
        f"{boot} bootstrap resamples; coverage % ± Monte Carlo SE, mean width in brackets"
    )
    head = f"{'kind':4} {'n':>4} {'k':>2} {'seed sd':>10} {'SE s/t':>11} {'value':6}"
    print(head + "".join(f" {i:>22}" for i in INTERVALS))
    for r in results:
        se = f"{r['metric_se_seeds']:.4f}/{r['metric_se_test']:.4f}"
        for v in ("metric", "delta"):
            cells = []
            for i in INTERVALS:
                c = r["coverage"][v][i]
                width = f"{c['mean_width']:.4f}" if v == "metric" else f"{c['mean_width']:.2f}pp"
                cells.append(f" {100 * c['rate']:5.1f}±{100 * c['mc_se']:3.1f} [{width:>8}]")
            lead = f"{r['kind']:4} {r['n_images']:4d} {r['seeds']:2d} {r['seed_sd_level']:>10} {se:>11}"
            print((lead if v == "metric" else " " * len(lead)) + f" {v:6}" + "".join(f"{c:>23}" for c in cells))
    print(
        "SE s/t: the metric's seed-mean standard error from the seeds / from the test-set bootstrap (averaged "
        f"variances); {wall:.0f} s"
    )
    return {"reps": reps, "bootstrap": boot, "settings": results, "wall_s": round(wall, 1)}
