"""Analysis speed: compare + plot + report on a simulated 27-task × 3-paradigm × 3-seed study.

Target (issue 6): the three commands together under 5 s, torch never imported. Measured
in one process through the Typer app (imports shared) and as three separate
`python -m usagg` processes (what a user typing the commands waits). Wall time depends on
what else the machine runs, so CPU time (user + sys) is reported next to it.
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
TASKS = REPO / "tests" / "data" / "fmc_uia_tasks.yaml"
COMMANDS = (["compare"], ["plot", "--out", "figs"], ["report", "--out", "report"])


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def _in_process(run_dir: Path, work: Path) -> dict[str, tuple[float, float]]:
    from typer.testing import CliRunner

    from usagg.cli.app import app

    runner, times = CliRunner(), {}
    old = os.getcwd()
    os.chdir(work)
    try:
        for cmd in COMMANDS:
            t0, c0 = time.perf_counter(), _cpu(resource.RUSAGE_SELF)
            res = runner.invoke(app, [cmd[0], str(run_dir), *cmd[1:]])
            times[cmd[0]] = (time.perf_counter() - t0, _cpu(resource.RUSAGE_SELF) - c0)
            if res.exit_code != 0:
                raise RuntimeError(f"usagg {cmd[0]} failed: {res.output}")
    finally:
        os.chdir(old)
    return times


def _subprocesses(run_dir: Path, work: Path) -> dict[str, tuple[float, float]]:
    times = {}
    for cmd in COMMANDS:
        t0, c0 = time.perf_counter(), _cpu(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-m", "usagg", cmd[0], str(run_dir), *cmd[1:]], cwd=work, check=True,
                       capture_output=True)  # fmt: skip
        times[cmd[0]] = (time.perf_counter() - t0, _cpu(resource.RUSAGE_CHILDREN) - c0)
    return times


def main() -> dict:
    from usagg.analysis.simulate import load_tasks, simulate_run_store

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run_dir = simulate_run_store(work / "runs" / "bench", load_tasks(TASKS))
        sub = _subprocesses(run_dir, work)
        inproc = _in_process(run_dir, work)
    result: dict = {"rows": "27 tasks x 3 paradigms x 3 seeds", "target_s": 5.0, "load_avg_1min": os.getloadavg()[0]}
    for label, times in (("own_process", sub), ("one_process", inproc)):
        result[label] = {k: {"wall_s": round(w, 2), "cpu_s": round(c, 2)} for k, (w, c) in times.items()}
        result[f"{label}_total_wall_s"] = round(sum(w for w, _ in times.values()), 2)
        result[f"{label}_total_cpu_s"] = round(sum(c for _, c in times.values()), 2)
    result["torch_imported"] = "torch" in sys.modules
    print(f"{'command':<10}{'own process wall / cpu (s)':>30}{'one process wall / cpu (s)':>30}")
    for cmd, *_ in COMMANDS:
        (sw, sc), (iw, ic) = sub[cmd], inproc[cmd]
        print(f"{cmd:<10}{sw:>21.2f} / {sc:<6.2f}{iw:>21.2f} / {ic:<6.2f}")
    print(
        f"{'total':<10}{result['own_process_total_wall_s']:>21.2f} / {result['own_process_total_cpu_s']:<6.2f}"
        f"{result['one_process_total_wall_s']:>21.2f} / {result['one_process_total_cpu_s']:<6.2f}  (target < 5 s)"
    )
    print(f"load average (1 min): {result['load_avg_1min']:.1f}; torch imported: {result['torch_imported']}")
    return result


if __name__ == "__main__":
    main()
