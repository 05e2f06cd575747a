"""Run every benchmarks/bench_*.py module's `main()`; each prints a table and returns a JSON-able dict.

Results land in reports/bench/<name>.json. `python -m benchmarks moe` runs only bench_moe.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path

import benchmarks

OUT = Path(__file__).resolve().parent.parent / "reports" / "bench"


def main(argv: list[str]) -> int:
    names = sorted(
        m.name[len("bench_") :] for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_")
    )
    chosen = [n for n in names if not argv or n in argv]
    OUT.mkdir(parents=True, exist_ok=True)
    for name in chosen:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        t0 = time.perf_counter()
        result = module.main()
        result["_wall_s"] = round(time.perf_counter() - t0, 2)
        tmp = OUT / f"{name}.json.tmp"
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(OUT / f"{name}.json")
        print(f"-> {OUT / f'{name}.json'}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
