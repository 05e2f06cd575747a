"""Synthetic benchmark speed: 2000 images of 128 px written to disk (target < 30 s on 2 cores), and per-anatomy cost.

Run with `python -m benchmarks synth`. The machine is shared, so per-anatomy
timings are medians of repeated samples after a warm-up.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path


def main() -> dict:
    from usagg.data.synth import TASKS, generate_benchmark, make_sample
    from usagg.data.synth.generate import auto_workers
    from usagg.spec.models import SynthSpec

    per_anatomy: dict[str, float] = {}
    for tid in ("fetal_head", "thyroid_nodule", "breast_lesion", "cardiac_chambers"):
        make_sample(tid, "train", 0, 0, 128)  # warm-up
        times = []
        for i in range(30):
            t0 = time.perf_counter()
            make_sample(tid, "train", i, 0, 128)
            times.append(time.perf_counter() - t0)
        per_anatomy[TASKS[tid].anatomy] = round(statistics.median(times) * 1000, 2)

    # 9 tasks x (182 train + 40 val) = 1998, plus 2 more fetal_head images = 2000.
    spec = SynthSpec(seed=0, image_size=128, default_size=182, val_size=40, sizes={"fetal_head": 184})
    runs = {}
    for label, workers in (("1 process", 1), ("auto", None)):
        with tempfile.TemporaryDirectory() as tmp:
            t0, c0 = time.perf_counter(), time.process_time()
            out = generate_benchmark(Path(tmp) / "bench", spec, workers=workers)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            n = len(list(out.rglob("images/*.png")))
            runs[label] = {
                "workers": workers or auto_workers(n),
                "images": n,
                "seconds": round(wall, 2),
                "parent_cpu_seconds": round(cpu, 2),  # the whole job with 1 process; wall > cpu on a busy machine
                "images_per_s": round(n / wall, 1),
                "seconds_per_2000": round(wall * 2000 / n, 2),
                "png_mb": round(sum(p.stat().st_size for p in out.rglob("*.png")) / 1e6, 1),
            }
    result = {
        "image_size": 128,
        "target_seconds_per_2000": 30.0,
        "runs": runs,
        "meets_target": min(r["seconds_per_2000"] for r in runs.values()) < 30.0,
        "ms_per_sample_median": per_anatomy,
    }
    print("synthetic benchmark generation (2000 images, 128 px, PNG writes included)")
    print(f"{'run':>10} {'workers':>8} {'wall s':>8} {'cpu s':>8} {'img/s':>8} {'s/2000':>8}")
    for label, r in runs.items():
        print(
            f"{label:>10} {r['workers']:>8} {r['seconds']:>8.2f} {r['parent_cpu_seconds']:>8.2f} "
            f"{r['images_per_s']:>8.1f} {r['seconds_per_2000']:>8.2f}"
        )
    print("median ms per sample (no PNG): " + ", ".join(f"{k} {v}" for k, v in per_anatomy.items()))
    return result


if __name__ == "__main__":
    main()
