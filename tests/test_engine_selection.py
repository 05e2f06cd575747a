"""Model selection puts every task's primary metric on one scale before averaging."""

from __future__ import annotations

import math

import pytest

from usagg.engine.evaluate import TaskResult, selection_score
from usagg.spec.models import TaskSpec

TASKS = {
    "seg": TaskSpec(id="seg", type="segmentation", num_classes=2),
    "kp": TaskSpec(id="kp", type="regression", num_classes=2),
}


def _results(dsc: float, mre: float, diagonal: float = 100.0) -> dict[str, TaskResult]:
    return {
        "seg": TaskResult({"DSC": dsc}, None, 10, diagonal),
        "kp": TaskResult({"MRE": mre}, None, 10, diagonal),
    }


def test_pixel_metrics_are_scaled_by_the_image_diagonal() -> None:
    # (0.8 + (1 - 20/100)) / 2
    assert selection_score(_results(0.8, 20.0), TASKS) == pytest.approx(0.8)


def test_a_large_segmentation_gain_beats_a_small_pixel_gain() -> None:
    # raw -MRE would prefer the second epoch (-19 > -20) despite its DSC collapse
    assert selection_score(_results(0.8, 20.0), TASKS) > selection_score(_results(0.2, 19.0), TASKS)


def test_undefined_metrics_are_left_out() -> None:
    res = _results(0.6, math.nan)
    assert selection_score(res, TASKS) == pytest.approx(0.6)
    assert selection_score({"kp": TaskResult({"MRE": math.nan}, None, 3, 10.0)}, TASKS) == -math.inf
