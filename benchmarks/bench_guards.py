"""What the input and store guards cost: spec refusal of oversized files, and the checkpoint checksum.

Issue 26.4 asks that a 938 kB spec with 60,000 keys be refused in under 2 s (it took 71 s and
164 MB before the limits); issue 24.4 asks for a checkpoint checksum far cheaper than sha256 over
the payload. Timings are best-of-3 on this machine, ratios against the old digest measured here.
Run with `python -m benchmarks guards`.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _best_of(fn: Callable[[], Any], n: int = 3) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _refusal(text: str) -> tuple[float, str]:
    from usagg.errors import SpecError
    from usagg.spec.load import load_study

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.yaml"
        path.write_text(text)
        t0 = time.perf_counter()
        try:
            load_study(path)
        except SpecError as err:
            return time.perf_counter() - t0, str(err).replace(str(path), "<spec>")[:90]
    raise AssertionError("the oversized spec loaded")


def main() -> dict:
    import torch

    from usagg.engine import checkpoint

    head = "name: big\nseeds: [0]\ntraining:\n  loss_weights:\n"
    big_s, big_why = _refusal(head + "".join(f"    t{i:05d}: 1.0\n" for i in range(60_000)))
    many_s, many_why = _refusal(head + "".join(f"    t{i:05d}: 1\n" for i in range(16_000)))

    payload = {"model": {f"w{i}": torch.randn(1_000_000) for i in range(12)}, "epoch": 4}
    crc = _best_of(lambda: checkpoint.content_digest(payload))
    sha = _best_of(lambda: checkpoint._legacy_digest(payload))  # the sha256 walk every checkpoint paid before
    result = {
        "spec_60000_keys_s": round(big_s, 3),
        "spec_60000_keys_refused_by": big_why,
        "spec_16000_keys_s": round(many_s, 3),
        "spec_16000_keys_refused_by": many_why,
        "checksum_48MB_crc_s": round(crc, 4),
        "checksum_48MB_sha256_s": round(sha, 4),
        "checksum_ratio_crc_over_sha256": round(crc / sha, 3),
    }
    print("guards (best of 3)")
    print(f"  60,000-key spec refused in {big_s:.3f} s ({big_why})")
    print(f"  16,000-key spec refused in {many_s:.3f} s ({many_why})")
    print(f"  checkpoint checksum, 48 MB: {crc:.4f} s against sha256 {sha:.4f} s ({crc / sha:.2f}x)")
    return result
