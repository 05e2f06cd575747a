"""A baseline no better than a constant prediction is at chance, as an AUC at 0.5 is: each seed of TS is held against
the best trivial predictor its job scored (metrics.json `trivial`), a one-sided 95 % lower bound of the paired margin
decides (t over seeds; with one seed the test-set bootstrap of its metric), and a task at chance leaves Δm, negative
transfer and the collapse verdicts. Every number is recomputed here from the table by hand (scipy's t quantile, the
Δ formula, numpy's percentile)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from usagg.analysis.cluster_inference import MEAN_DELTA
from usagg.analysis.delta import at_chance, baseline_collapsed, chance_evidence, collapsed, compare
from usagg.analysis.inputs import AnalysisInput, load_input
from usagg.analysis.results import write_results
from usagg.analysis.simulate import load_tasks, simulate_rows
from usagg.analysis.summary import analyse, summary_table
from usagg.analysis.tables import collapse_notes, exclusion_notes, negative_table

TASKS = Path(__file__).parent / "data" / "fmc_uia_tasks.yaml"
SIX = ("breast_lesion", "breast_2cls", "lung", "lung_2cls", "FUGC", "thyroid_nodule_det")


def _input(tmp_path: Path, seeds: tuple[int, ...], values: dict[tuple[str, str, int], float]) -> AnalysisInput:
    """TS and AU on six tasks of four clinical groups, with the (paradigm, task, seed) values given set."""
    tasks = [t for t in load_tasks(TASKS) if t["id"] in SIX]
    rows = simulate_rows(tasks, paradigms=("TS", "AU"), seeds=seeds, study="trivial")
    rows = [
        dataclasses.replace(r, value=values.get((r.paradigm, r.task, r.seed), r.value))
        if r.metric in ("DSC", "AUC", "MRE", "IoU")
        else r
        for r in rows
    ]
    tmp_path.mkdir(parents=True, exist_ok=True)
    write_results(rows, tmp_path / "r.csv")
    return load_input(None, tmp_path / "r.csv")


def _ts_jobs(inp: AnalysisInput, task: str) -> dict[int, str]:
    return {r.seed: r.job_id for r in inp.table.rows if r.paradigm == "TS" and r.task == task}


def _value(inp: AnalysisInput, paradigm: str, task: str) -> float:
    vals = [r.value for r in inp.table.rows if (r.paradigm, r.task, r.metric) == (paradigm, task, inp.primary[task])]
    return float(np.mean(vals))


def test_a_ts_mask_no_better_than_the_all_foreground_one_is_at_chance_and_leaves_every_verdict(tmp_path: Path) -> None:
    inp = _input(tmp_path, (0,), {("TS", "breast_lesion", 0): 0.0995, ("AU", "breast_lesion", 0): 0.0})
    mre = _value(inp, "TS", "FUGC")
    (bl,), (kp,), (lung,) = (_ts_jobs(inp, t).values() for t in ("breast_lesion", "FUGC", "lung"))
    inp.trivial = {
        bl: {"breast_lesion": {"empty mask": 0.0, "all-foreground mask": 0.0995}},
        kp: {"FUGC": {"training mean keypoints": mre - 1.0}},  # the constant keypoints err less than TS: no skill
        lung: {"lung": {"empty mask": 0.0, "all-foreground mask": 0.05}},  # TS well above it
    }
    comp = compare(inp)
    assert at_chance(comp, 1.0) == comp.chance[1.0] == ("FUGC", "breast_lesion")
    # the collapse AU breast_lesion 0.0 against TS's 0.0995 is no verdict: TS had no skill to lose
    assert not [c for c in collapsed(comp, 1.0) if c.task == "breast_lesion"]
    neg = {r[0]: r for r in negative_table(comp).rows}["AU"]
    assert "breast_lesion" not in str(neg[4]) and "FUGC" not in str(neg[4]) and neg[3] == 4
    # Δm over the four other tasks, from the table by hand: Δ = s (m_AU − m_TS) / |m_TS| · 100
    kept = [t for t in SIX if t not in ("FUGC", "breast_lesion")]
    by_hand = []
    for t in kept:
        ts, au, hib = _value(inp, "TS", t), _value(inp, "AU", t), comp.info(t).higher_is_better
        by_hand.append((1 if hib else -1) * (au - ts) / abs(ts) * 100)
    dm = next(s for s in analyse(inp).stats if s.name == MEAN_DELTA and s.paradigm == "AU")
    assert dm.n == 4 and dm.value == pytest.approx(np.mean(by_hand), rel=1e-12)
    notes = " ".join(exclusion_notes(comp))
    assert "breast_lesion (TS DSC 0.100, the all-foreground mask's 0.100; one run's point estimate" in notes
    assert "Not shown above chance: " in notes and "At chance" not in notes
    assert "FUGC (TS MRE" in notes and "the training mean keypoints's" in notes


def test_an_auc_at_one_half_is_at_chance_without_any_recorded_predictor(tmp_path: Path) -> None:
    comp = compare(_input(tmp_path, (0,), {("TS", "breast_2cls", 0): 0.5}))
    assert comp.chance[1.0] == ("breast_2cls",)
    assert "breast_2cls (TS AUC 0.500, chance 0.500; one run's point estimate" in " ".join(exclusion_notes(comp))


@pytest.mark.parametrize(
    ("ts", "levels", "expected"),
    [
        ((0.12, 0.14, 0.11), (0.10, 0.10, 0.10), True),  # the mean beats the level, its t interval does not
        ((0.30, 0.31, 0.29), (0.10, 0.10, 0.10), False),
        ((0.50, 0.60, 0.70), (0.45, 0.55, 0.65), False),  # each seed beats its own job's level by 0.05: paired
        ((0.50, 0.60, 0.70), (0.55, 0.55, 0.55), True),
        # every seed beats the mean box (the review's thyroid_nodule_det): the one-sided bound clears 0 (+0.011),
        # where a two-sided 95 % interval on 2 df reached −0.013 and called it chance
        ((0.482, 0.422, 0.451), (0.39, 0.39, 0.39), False),
    ],
)
def test_with_seeds_the_paired_margins_one_sided_t_bound_decides(
    tmp_path: Path, ts: tuple[float, ...], levels: tuple[float, ...], expected: bool
) -> None:
    inp = _input(tmp_path, (0, 1, 2), {("TS", "lung", s): v for s, v in enumerate(ts)})
    inp.trivial = {job: {"lung": {"training mean box": levels[s]}} for s, job in _ts_jobs(inp, "lung").items()}
    margin = np.asarray(ts) - np.asarray(levels)
    low = margin.mean() - sps.t.ppf(0.95, 2) * margin.std(ddof=1) / math.sqrt(3)
    comp = compare(inp)
    assert ("lung" in comp.chance[1.0]) == (low <= 0) == expected
    assert chance_evidence(comp, 1.0, "lung") == "one-sided 95 % t over 3 seeds"


def _dice_scores(inp: AnalysisInput, tmp_path: Path, job: str, task: str, values: list[float]) -> None:
    """Write a job's per-image Dice scores (item_scores.json, kind mean) and point the input at them."""
    folder = tmp_path / "jobs" / job
    folder.mkdir(parents=True)
    record = {"metric": "DSC", "higher_is_better": True, "kind": "mean", "values": values}
    images = [f"b/{i}.png" for i in range(len(values))]
    (folder / "item_scores.json").write_text(json.dumps({"format": 1, "tasks": {task: {**record, "images": images}}}))
    inp.item_scores = {**inp.item_scores, job: folder / "item_scores.json"}


@pytest.mark.parametrize(("spread", "expected"), [(0.30, True), (0.02, False)])
def test_with_one_seed_the_test_sets_one_sided_bootstrap_bound_decides(
    tmp_path: Path, spread: float, expected: bool
) -> None:
    """One seed of TS beats the all-foreground mask's 0.10 by 0.04 on average over 40 images: with images spread
    ±0.30 the test set's 5th-percentile bound falls below 0.10 (not shown above chance); spread ±0.02, it clears it.
    The point estimate alone called both above chance."""
    images = 0.14 + spread * np.where(np.arange(40) % 2 == 0, 1.0, -1.0)
    inp = _input(tmp_path, (0,), {("TS", "breast_lesion", 0): float(images.mean())})
    (job,) = _ts_jobs(inp, "breast_lesion").values()
    inp.trivial = {job: {"breast_lesion": {"all-foreground mask": 0.10}}}
    _dice_scores(inp, tmp_path, job, "breast_lesion", list(images))
    comp = compare(inp)
    test = comp.baseline_test[(1.0, "breast_lesion")]
    low, n = test.low, test.images
    draws = [images[np.random.default_rng(k).integers(0, 40, 40)].mean() for k in range(2000)]  # by hand
    assert n == 40 and low == pytest.approx(np.percentile(draws, 5), abs=0.02)
    assert ("breast_lesion" in comp.chance[1.0]) == (low <= 0.10) == expected
    # the bound's Monte Carlo error: half its 95 % band over other bootstraps of 2000 resamples, between the order
    # statistics B·q ∓ 1.96·√(B·q·(1 − q)) of the by-hand draws (0.0075 and 0.0005: half a step of 0.6/40 and 0.04/40)
    x = np.sort(draws)
    half = 1.96 * np.sqrt(2000 * 0.05 * 0.95)
    by_hand = (x[int(np.ceil(100 + half))] - x[int(np.floor(100 - half))]) / 2
    assert test.mc is not None and test.mc == pytest.approx(by_hand, rel=0.5) and 0 < test.mc < 0.1 * spread
    assert chance_evidence(comp, 1.0, "breast_lesion") == (
        f"one-sided 95 % test-set bootstrap of one training run, 40 images, 2000 resamples, seed 0; bound ± "
        f"{test.mc:.2g} (Monte Carlo 95 %)"
    )
    row = dict((str(r[0]), str(r[1])) for r in summary_table(analyse(inp)).rows)["Baseline at chance"]
    assert (
        "not shown above a constant prediction, the all-foreground mask: one-sided 95 % test-set" in row
    ) == expected
    assert "rule: a one-sided 95 % lower bound of its margin" in row  # said whether a task is named or none is


def test_a_baseline_seed_below_the_constant_prediction_beside_working_ones_is_named_collapsed(tmp_path: Path) -> None:
    """The review's TS breast_lesion: seeds 0.41, 0.29 and 0.014 against the all-foreground mask's 0.098. Seed 2 is
    a failed TS run, named as a collapse; the seeds above it are not."""
    ts = (0.41, 0.29, 0.014)
    inp = _input(tmp_path, (0, 1, 2), {("TS", "breast_lesion", s): v for s, v in enumerate(ts)})
    inp.trivial = {
        j: {"breast_lesion": {"all-foreground mask": 0.098}} for j in _ts_jobs(inp, "breast_lesion").values()
    }
    comp = compare(inp)
    assert [(c.task, c.paradigm, c.seed, c.value, c.level) for c in baseline_collapsed(comp, 1.0)] == [
        ("breast_lesion", "TS", 2, 0.014, 0.098)
    ]
    notes = " ".join(collapse_notes(comp))
    assert "Collapsed baseline: TS breast_lesion seed 2 (DSC 0.014 against the all-foreground mask's 0.098)" in notes


def test_a_diverged_error_metric_is_named_collapsed_against_the_trivial_predictor(tmp_path: Path) -> None:
    """MRE has no worst value: AU's FUGC seed at 5x TS's error (Δ −400 %) is measured to the mean training
    keypoints' error instead, so it is named, and the note says an error metric's Δ has no floor."""
    mre = _value(_input(tmp_path / "ts", (0,), {}), "TS", "FUGC")
    for k, (edge, named) in enumerate(((mre + 1.9, True), (mre + 1.7, False), (5 * mre, True))):  # 90 %: mre + 1.8
        inp = _input(tmp_path / str(k), (0,), {("AU", "FUGC", 0): edge})
        (kp,) = _ts_jobs(inp, "FUGC").values()
        inp.trivial = {kp: {"FUGC": {"training mean keypoints": mre + 2.0}}}
        comp = compare(inp)
        assert bool([c for c in collapsed(comp, 1.0) if c.task == "FUGC"]) == named, edge
    assert comp.deltas[(1.0, "FUGC", "AU")].value == pytest.approx(-400.0)
    notes = " ".join(collapse_notes(comp))
    big = f"{5 * mre:.1f}" if 5 * mre >= 10 else f"{5 * mre:.3f}"  # one decimal for pixel errors of 10 and more
    assert f"AU FUGC seed 0 (MRE {big} against TS's " in notes and "the training mean keypoints's" in notes
    assert "The Δ of FUGC has no floor" in notes


def test_a_dice_with_no_recorded_predictor_is_not_checked_and_the_summary_says_so(tmp_path: Path) -> None:
    a = analyse(_input(tmp_path, (0,), {("TS", "breast_lesion", 0): 0.0995}))
    assert a.comp.chance[1.0] == ()
    row = dict((str(r[0]), str(r[1])) for r in summary_table(a).rows)["Baseline at chance"]
    assert row.startswith("none; rule: a one-sided 95 % lower bound")
    assert "; no chance level known for FUGC, thyroid_nodule_det, breast_lesion, lung (no AUC" in row


def test_an_auc_undefined_for_every_seed_says_its_test_split_holds_one_class(tmp_path: Path) -> None:
    inp = _input(tmp_path, (0,), {("TS", "breast_2cls", 0): math.nan})
    (job,) = _ts_jobs(inp, "breast_2cls").values()
    folder = tmp_path / "jobs" / job
    folder.mkdir(parents=True)
    labels = [[0.0, 0.7, 0.3]] * 5
    scores = {"metric": "AUC", "higher_is_better": True, "kind": "auc", "images": [f"b/{i}.png" for i in range(5)]}
    content = {"format": 1, "tasks": {"breast_2cls": {**scores, "values": labels}}}
    (folder / "item_scores.json").write_text(json.dumps(content))
    inp.item_scores = {job: folder / "item_scores.json"}
    reason = compare(inp).deltas[(1.0, "breast_2cls", "AU")].reason
    assert reason.endswith(
        "undefined for its jobs: its test split holds images of class 0 only (5 images), and an AUC needs images of "
        "two classes (a property of the data, which `usagg data check` warns of as val_scoring; ACC, F1 and MCC are "
        "computed as usual)"
    )
