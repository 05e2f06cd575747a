"""Model selection: relative change per task so every task weighs the same, tie-breaks, per-task epochs, warnings."""

from __future__ import annotations

import math

import pytest

from usagg.engine.selection import (
    MIN_SELECT_IMAGES,
    MODEL,
    Candidate,
    Selector,
    model_loss,
    model_score,
    relative_change,
    split_warnings,
    task_score,
)
from usagg.spec.models import TaskSpec

TASKS = {
    "seg": TaskSpec(id="seg", type="segmentation", num_classes=2),
    "kp": TaskSpec(id="kp", type="regression", num_classes=2),
    "cls": TaskSpec(id="cls", type="classification", num_classes=3),
}


def test_relative_change_is_direction_aware_and_floored() -> None:
    assert relative_change(0.66, 0.60, True) == pytest.approx(0.10)
    assert relative_change(18.0, 20.0, False) == pytest.approx(0.10)  # MRE down 10 %: +10 %
    assert relative_change(22.0, 20.0, False) == pytest.approx(-0.10)
    assert relative_change(0.3, 0.0, True) == pytest.approx(0.3 / 0.05)  # a zero start divides by the floor
    assert relative_change(0.02, 0.01, True) == pytest.approx(0.01 / 0.05)  # so does a start below it


def test_a_task_starting_near_zero_does_not_swamp_the_others() -> None:
    """Refs a 0.01, b 0.80: epoch 2 (a 0.02, b 0.60) scores (0.2 - 0.25) / 2 and epoch 3 (a 0.011, b 0.88)
    (0.02 + 0.1) / 2, so epoch 3 wins; divided by a's own 0.01, a's doubling (+1.0) chose epoch 2."""
    tasks = {t: TaskSpec(id=t, type="segmentation", num_classes=2) for t in "ab"}
    ref = {"a": 0.01, "b": 0.80}
    assert model_score({"a": 0.02, "b": 0.60}, ref, tasks) == pytest.approx(-0.025)
    assert model_score({"a": 0.011, "b": 0.88}, ref, tasks) == pytest.approx(0.06)


def test_each_task_weighs_the_same_whatever_its_scale() -> None:
    ref = {"seg": 0.60, "kp": 20.0}
    # DSC +10 % and MRE -10 % (better) average to +10 %
    assert model_score({"seg": 0.66, "kp": 18.0}, ref, TASKS) == pytest.approx(0.10)
    # a 10 % keypoint gain outweighs a 5 % DSC loss: (−0.05 + 0.10) / 2
    assert model_score({"seg": 0.57, "kp": 18.0}, ref, TASKS) == pytest.approx(0.025)
    # the old scale (1 - MRE / diagonal 100 px) ranked these the other way round:
    old = [(0.57 + 1 - 18.0 / 100) / 2, (0.60 + 1 - 20.0 / 100) / 2]
    assert old[0] < old[1]


def test_undefined_values_and_references_are_left_out() -> None:
    ref = {"seg": 0.5}  # kp had no finite value at the first selection epoch
    assert model_score({"seg": 0.55, "kp": 10.0}, ref, TASKS) == pytest.approx(0.10)
    assert model_score({"seg": math.nan, "kp": 10.0}, ref, TASKS) == -math.inf
    assert task_score(math.nan, "AUC") == -math.inf and task_score(12.0, "MRE") == -12.0


def test_model_loss_is_relative_to_the_first_epoch() -> None:
    assert model_loss({"seg": 0.5, "kp": 3.0}, {"seg": 1.0, "kp": 2.0}) == pytest.approx((0.5 + 1.5) / 2)
    assert math.isnan(model_loss({"seg": math.nan}, {"seg": 1.0}))


def test_ties_go_to_the_lower_loss_then_the_later_epoch() -> None:
    first = Candidate(2, 0.8, 0.40)
    assert Candidate(3, 0.8, 0.35).beats(first)  # same score, lower loss
    assert not Candidate(3, 0.8, 0.45).beats(first)  # same score, higher loss
    assert Candidate(3, 0.8, 0.40).beats(first)  # same score and loss: the later epoch
    assert not Candidate(3, 0.7, 0.01).beats(first)  # a lower score never wins on loss
    assert Candidate(3, 0.8 + 1e-15, 0.45).beats(first) is False  # within the tie tolerance: loss decides


def test_selector_picks_per_model_and_per_task() -> None:
    sel = Selector({"seg": TASKS["seg"], "kp": TASKS["kp"]})
    epochs = [  # (primary, loss) per epoch
        ({"seg": 0.50, "kp": 20.0}, {"seg": 1.0, "kp": 2.0}),
        ({"seg": 0.70, "kp": 21.0}, {"seg": 0.8, "kp": 1.9}),  # seg best here
        ({"seg": 0.55, "kp": 15.0}, {"seg": 0.9, "kp": 1.5}),  # kp best here; model: (+10 % + 25 %) / 2
        ({"seg": 0.55, "kp": 15.0}, {"seg": 0.9, "kp": 1.6}),  # a tie with a higher loss: not taken
    ]
    scores = [sel.update(e + 1, p, lo)[0] for e, (p, lo) in enumerate(epochs)]
    assert scores[0] == 0.0
    assert scores[1] == pytest.approx((0.4 - 0.05) / 2)
    assert scores[2] == pytest.approx((0.1 + 0.25) / 2)
    # 0.175 = 0.175: a tie, and epoch 3's relative loss (0.9 + 1.5 / 2) / 2 is below epoch 2's (0.8 + 1.9 / 2) / 2
    assert sel.epochs(MODEL) == {MODEL: 3}
    assert sel.epochs("task") == {"seg": 2, "kp": 3}
    again = Selector(sel.tasks)
    again.load_state_dict(sel.state_dict())
    assert again.epochs("task") == sel.epochs("task") and again.reference == {"seg": 0.5, "kp": 20.0}


def test_one_class_auc_ties_go_to_the_lower_loss() -> None:
    sel = Selector({"cls": TASKS["cls"]})
    for e, (auc, loss) in enumerate([(0.5, 1.1), (0.5, 0.7), (0.5, 0.9)]):
        sel.update(e + 1, {"cls": auc}, {"cls": loss})
    assert sel.epochs(MODEL) == {MODEL: 2} and sel.epochs("task") == {"cls": 2}


def test_small_or_one_sided_selection_splits_are_warned_about() -> None:
    assert split_warnings(TASKS["seg"], MIN_SELECT_IMAGES, None) == []
    (small,) = split_warnings(TASKS["seg"], 7, None)
    assert "7 selection images" in small and "selection_fraction" in small
    (missing,) = split_warnings(TASKS["cls"], 40, {0, 2})
    assert "no image of class [1]" in missing
    assert split_warnings(TASKS["cls"], 40, {0, 1, 2}) == []
