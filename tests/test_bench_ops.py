"""bench_ops' verdict on fixed calls: a base whose fixed part is not positive gives no ratio to read as met."""

from __future__ import annotations

from benchmarks.bench_ops import fixed_verdict


def _version(per_epoch: int, fixed: int) -> dict:
    return {"fixed": fixed, "calls": {"2": fixed + 2 * per_epoch, "3": fixed + 3 * per_epoch}}


def test_a_positive_base_fixed_part_is_compared_by_ratio() -> None:
    ratio, whole, ok = fixed_verdict(_version(1000, 400), _version(500, 300))
    assert (ratio, ok) == (0.75, True)
    assert whole == {"2": round(1300 / 2400, 3), "3": round(1800 / 3400, 3)}
    assert fixed_verdict(_version(1000, 400), _version(500, 500))[2] is False


def test_a_negative_base_fixed_part_leaves_the_whole_study_to_decide() -> None:
    # a73a3c2 under checkpoint_every 1: 74,937 per extra epoch, -6,092 fixed (docs/benchmarks.md)
    base = _version(74_937, -6_092)
    ratio, whole, ok = fixed_verdict(base, _version(28_952, 13_022))
    assert ratio is None and ok is True  # 70,926 / 143,782 and 99,878 / 218,719
    assert whole == {"2": 0.493, "3": 0.457}
    # today's fixed part far above the base's whole study: not met, where new/old fixed (negative) would read as met
    ratio, whole, ok = fixed_verdict(base, _version(28_952, 150_000))
    assert ratio is None and ok is False and whole["2"] > 1.0
