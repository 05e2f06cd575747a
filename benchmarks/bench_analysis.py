"""Analysis speed: compare + plot + report on a simulated 27-task × 3-paradigm × 3-seed study.

Target (issue 6): the three commands together under 5 s, torch never imported. They are
timed as three separate `python -m usagg` processes, what a user typing them waits:

- baseline: the memo switched off ($USAGG_CACHE is a file, so nothing can be cached);
- first run: an empty memo, the user's first sequence on a new results table (the target);
- again: the same memo, nothing changed.

One in-process sequence through the Typer app (empty memo, imports shared) is shown for
reference. Wall time depends on what else the machine runs, so CPU time (user + sys) is
reported next to it.

The mixed model's fit on the demo's table (tests/data/demo_results.csv), in process, median of
`REPEATS`: the five-optimiser search (`mixed._searched`, the baseline, measured in the same run)
against the fit `compare` makes (`mixed._best_fit`: lbfgs restarted, the search only where that
is no maximum), and the whole model with its one-task-left-out refits; and one model built from
statsmodels' formula (the baseline) against the arrays usagg/analysis/mixed_design.py builds.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "tests" / "data" / "demo_results.csv"
REPEATS = 5
TASKS = REPO / "tests" / "data" / "fmc_uia_tasks.yaml"
COMMANDS = (["compare"], ["plot", "--out", "figs"], ["report", "--out", "report"])
Times = dict[str, tuple[float, float]]


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def _in_process(run_dir: Path, work: Path, cache: Path) -> Times:
    from typer.testing import CliRunner

    from usagg.cli.app import app

    runner, times = CliRunner(), {}
    old, old_cache = os.getcwd(), os.environ.get("USAGG_CACHE")
    os.chdir(work)
    os.environ["USAGG_CACHE"] = str(cache)
    try:
        for cmd in COMMANDS:
            t0, c0 = time.perf_counter(), _cpu(resource.RUSAGE_SELF)
            res = runner.invoke(app, [cmd[0], str(run_dir), *cmd[1:]])
            times[cmd[0]] = (time.perf_counter() - t0, _cpu(resource.RUSAGE_SELF) - c0)
            if res.exit_code != 0:
                raise RuntimeError(f"usagg {cmd[0]} failed: {res.output}")
    finally:
        os.chdir(old)
        if old_cache is None:
            os.environ.pop("USAGG_CACHE", None)
        else:
            os.environ["USAGG_CACHE"] = old_cache
    return times


def _subprocesses(run_dir: Path, work: Path, cache: Path) -> Times:
    times, env = {}, {**os.environ, "USAGG_CACHE": str(cache), "MPLBACKEND": "Agg"}
    for cmd in COMMANDS:
        t0, c0 = time.perf_counter(), _cpu(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-m", "usagg", cmd[0], str(run_dir), *cmd[1:]], cwd=work, check=True,
                       capture_output=True, env=env)  # fmt: skip
        times[cmd[0]] = (time.perf_counter() - t0, _cpu(resource.RUSAGE_CHILDREN) - c0)
    return times


def _median_s(call) -> float:
    """The median wall seconds of `REPEATS` calls (after one untimed call: imports and caches)."""
    call()
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return sorted(times)[REPEATS // 2]


def _mixed_fit() -> dict:
    """Seconds of the demo's mixed-model fit: the search over every optimiser against the restarted lbfgs."""
    import warnings

    import statsmodels.formula.api as smf

    from usagg.analysis import mixed
    from usagg.analysis.delta import compare
    from usagg.analysis.inputs import load_input

    comp = compare(load_input(None, DEMO))
    rows = mixed._rows(comp, 1.0)
    df = mixed._frame(rows, [p for p in comp.others if any(r[1] == p for r in rows)])
    formula, vc = "delta ~ 0 + C(paradigm) + C(paradigm):logn + C(type)", ("paradigm",)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        times = {
            "search (5 optimisers, baseline)": _median_s(lambda: mixed._searched(mixed._model(df, vc))),
            "restarted lbfgs (compare's fit)": _median_s(lambda: mixed._best_fit(df, vc)),
            "whole model (fit + leverage)": _median_s(lambda: mixed.interaction_model(comp, 1.0)),
        }
        builds = {  # one model built, as the fit and each leverage refit build one
            "statsmodels formula (baseline)": _median_s(
                lambda: smf.mixedlm(
                    formula, df, groups=df["group"], re_formula="1", vc_formula={"paradigm": "0 + C(paradigm)"}
                )
            ),
            "arrays (mixed_design, compare's)": _median_s(lambda: mixed._model(df, vc)),
        }
    print(f"mixed model on the demo ({len(df)} seed-level Δ), median of {REPEATS}:")
    out = {}
    for group, base_key in ((times, "search (5 optimisers, baseline)"), (builds, "statsmodels formula (baseline)")):
        base = group[base_key]
        print("  model build:" if group is builds else "  fit:")
        for label, sec in group.items():
            print(f"    {label:<34}{sec:>7.3f} s{sec / base:>8.2f}x")
            out[label] = {"wall_s": round(sec, 4), "ratio_vs_baseline": round(sec / base, 3)}
    return out


def main() -> dict:
    from usagg.analysis.simulate import load_tasks, simulate_run_store

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run_dir = simulate_run_store(work / "runs" / "bench", load_tasks(TASKS))
        no_memo = work / "memo-off"
        no_memo.write_text("a file, so no cache folder can be made under it\n")
        runs = {
            "baseline (memo off)": _subprocesses(run_dir, work, no_memo),
            "first run (empty memo)": _subprocesses(run_dir, work, work / "memo"),
            "again (warm memo)": _subprocesses(run_dir, work, work / "memo"),
            "one process (empty memo)": _in_process(run_dir, work, work / "memo-inproc"),
        }
    result: dict = {"rows": "27 tasks x 3 paradigms x 3 seeds", "target_s": 5.0, "load_avg_1min": os.getloadavg()[0]}
    print(f"{'':<26}" + "".join(f"{c[0]:>16}" for c in COMMANDS) + f"{'total':>16}{'vs baseline':>13}")
    base_total = sum(w for w, _ in runs["baseline (memo off)"].values())
    for label, times in runs.items():
        total_w, total_c = sum(w for w, _ in times.values()), sum(c for _, c in times.values())
        result[label] = {k: {"wall_s": round(w, 2), "cpu_s": round(c, 2)} for k, (w, c) in times.items()}
        result[label]["total"] = {"wall_s": round(total_w, 2), "cpu_s": round(total_c, 2)}
        result[label]["ratio_vs_baseline"] = round(total_w / base_total, 3)
        cells = "".join(f"{w:>8.2f} / {c:<5.2f}" for w, c in times.values())
        print(f"{label:<26}{cells}{total_w:>8.2f} / {total_c:<5.2f}{total_w / base_total:>11.2f}x")
    result["torch_imported"] = "torch" in sys.modules
    print("wall / cpu seconds; target: first run < 5 s")
    print(f"load average (1 min): {result['load_avg_1min']:.1f}; torch imported: {result['torch_imported']}")
    result["mixed_fit_demo"] = _mixed_fit()
    return result


if __name__ == "__main__":
    main()
