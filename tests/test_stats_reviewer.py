"""Issue 25/29 statistics review (H6): library implementations give the hand-written code's numbers, the mixed
model fits the model it prints, and noise augmentation is per channel on colour images."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
import torch

from usagg.analysis.delta import compare
from usagg.analysis.inputs import load_input
from usagg.analysis.mixed import interaction_model
from usagg.analysis.results import Row, write_results
from usagg.analysis.simulate import load_tasks, simulate_rows
from usagg.analysis.stats import holm
from usagg.engine.augment import Augmenter
from usagg.grouping import adjusted_rand_index, rand_index
from usagg.spec.models import AugmentationSpec
from usagg.tasktypes import metric_bounds

TASKS = Path(__file__).parent / "data" / "fmc_uia_tasks.yaml"

# Values the hand-written Holm step-down and Rand / adjusted Rand code (before statsmodels and scikit-learn) gave.
OLD_HOLM = [0.16, 0.006, 0.4, 0.16, 0.065, 0.5, 0.0014]
GA = {f"t{i}": f"g{i % 3}" for i in range(10)}
GB = {f"t{i}": f"h{i // 4}" for i in range(10)}
GC = {f"t{i}": f"x{(i * 7) % 4}" for i in range(10)}


def test_holm_gives_the_hand_written_step_down_values() -> None:
    assert holm([0.04, 0.001, 0.2, 0.04, 0.013, 0.5, 0.0002]) == pytest.approx(OLD_HOLM, abs=1e-15)
    assert holm([]) == []
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # capped at 1, monotone


def test_rand_indices_give_the_hand_written_values() -> None:
    assert rand_index(GA, GB) == pytest.approx(0.5333333333333333, abs=1e-12)
    assert adjusted_rand_index(GA, GB) == pytest.approx(-0.16236162361623618, abs=1e-12)
    assert rand_index(GA, GC) == pytest.approx(0.5555555555555556, abs=1e-12)
    assert adjusted_rand_index(GA, GC) == pytest.approx(-0.2711864406779661, abs=1e-12)
    assert adjusted_rand_index(GB, GC) == pytest.approx(-0.282225237449118, abs=1e-12)
    one, alone = {f"t{i}": "z" for i in range(5)}, {f"t{i}": str(i) for i in range(5)}
    assert (rand_index(one, alone), adjusted_rand_index(one, alone)) == (0.0, 0.0)
    assert adjusted_rand_index(one, one) == adjusted_rand_index(alone, alone) == 1.0
    assert rand_index({"a": "1"}, {"a": "2"}) == adjusted_rand_index({"a": "1"}, {"a": "2"}) == 1.0
    with pytest.raises(ValueError, match="different tasks"):
        adjusted_rand_index(GA, {"t0": "g0"})


# A clinical-group effect on every paradigm's Δ (pp), planted on the simulator's 27 tasks; OB tasks are the large ones,
# so a model without the group intercept reads part of it as a data-scale slope.
GROUP_EFFECT = {
    "OB": 20.0, "Breast": -15.0, "Lung": 10.0, "Cardiovascular": -20.0, "Thyroid": 5.0, "Gynaecology": -10.0,
    "Abdomen": 0.0, "Multi-organ": 15.0, "Musculoskeletal": -5.0,
}  # fmt: skip


def _within(metric: str, value: float) -> float:
    """`value` cut to what `metric` can be (the results reader refuses an AUC of 1.17)."""
    low, high = metric_bounds(metric)
    return min(max(value, -math.inf if low is None else low), math.inf if high is None else high)


def _planted_rows() -> list[Row]:
    tasks = load_tasks(TASKS)
    primary = {t["id"]: t["metric"] for t in tasks}
    rows = []
    for r in simulate_rows(tasks, seeds=(0, 1, 2)):
        if r.paradigm != "TS" and r.metric == primary[r.task]:
            g = GROUP_EFFECT[r.group] / 100
            r = dataclasses.replace(r, value=_within(r.metric, r.value * (1 + g if r.higher_is_better else 1 - g)))
        rows.append(r)
    return rows


def _seed_level_frame(rows: list[Row]) -> pd.DataFrame:
    """Δ % per (task, paradigm, seed) against TS's seed mean, straight from the rows; CG's one-task groups left out."""
    primary = {t["id"]: t["metric"] for t in load_tasks(TASKS)}
    rows = [r for r in rows if r.metric == primary[r.task]]
    base = {t: np.mean([r.value for r in rows if r.task == t and r.paradigm == "TS"]) for t in primary}
    size = {g: sum(1 for t in load_tasks(TASKS) if t["group"] == g) for g in GROUP_EFFECT}
    out = []
    for r in rows:
        if r.paradigm == "TS" or (r.paradigm == "CG" and size[r.group] == 1):
            continue
        sign = 1 if r.higher_is_better else -1
        delta = sign * (r.value - base[r.task]) / abs(base[r.task]) * 100
        out.append((delta, r.paradigm, math.log2(r.n_train), r.type, r.group, f"{r.task}|{r.paradigm}"))
    df = pd.DataFrame(out, columns=["delta", "paradigm", "logn", "type", "group", "unit"])
    df["paradigm"] = pd.Categorical(df["paradigm"], categories=["CG", "AU"])
    return df


def test_mixed_model_fits_the_model_it_prints_with_a_group_intercept(tmp_path: Path) -> None:
    rows = _planted_rows()
    write_results(rows, tmp_path / "r.csv")
    got = {s.paradigm: s for s in interaction_model(compare(load_input(None, tmp_path / "r.csv")), 1.0)}
    df = _seed_level_frame(rows)
    formula = "delta ~ 0 + C(paradigm) + C(paradigm):logn + C(type)"
    # the REML maximum of the stated model has (1 | group:paradigm) at 0 (said as the boundary), so it is the model
    # with (1 | group:task:paradigm) alone, which lbfgs fits without trouble
    assert "boundary" in got["CG"].note and "of paradigm within a group 0.00 pp" in got["CG"].method
    vc = {"unit": "0 + C(unit)"}
    stated = smf.mixedlm(formula, df, groups="group", re_formula="1", vc_formula=vc).fit(reml=True, method="lbfgs")
    assert stated.converged
    assert stated.cov_re.shape == (1, 1) and float(stated.cov_re.iloc[0, 0]) > 1.0  # the planted groups show
    slope = {p: float(stated.fe_params[f"C(paradigm)[{p}]:logn"]) for p in ("CG", "AU")}
    assert got["CG"].value == pytest.approx(slope["CG"], abs=1e-3)
    assert got["AU"].value == pytest.approx(slope["AU"], abs=1e-3)
    assert got["AU-CG"].value == pytest.approx(slope["AU"] - slope["CG"], abs=1e-3)
    # the interval: Wald on Student's t with groups − 1 df (statsmodels' own conf_int reads the normal)
    from scipy.stats import t

    half = t(stated.model.n_groups - 1).ppf(0.975) * float(stated.bse_fe["C(paradigm)[CG]:logn"])
    ci = (slope["CG"] - half, slope["CG"] + half)
    # (the boundary fit's standard error differs from the reduced model's by 2 % of the half-width)
    assert got["CG"].ci == (pytest.approx(ci[0], abs=0.05), pytest.approx(ci[1], abs=0.05))
    assert f"t-test on {stated.model.n_groups - 1} df (groups − 1)" in got["CG"].method
    assert got["CG"].n == 24 * 3 and got["AU-CG"].n == (24 + 27) * 3
    group_sd = math.sqrt(float(stated.cov_re.iloc[0, 0]))
    said = re.search(r"sd of the group intercept (\S+) pp", got["CG"].method)
    assert said is not None and float(said.group(1)) == pytest.approx(group_sd, abs=0.05)
    assert "(1 | group) + (1 | group:paradigm) + (1 | group:task:paradigm)" in got["CG"].method
    # the old call (vc_formula without re_formula) fits no group intercept and reads another slope
    old = smf.mixedlm(formula, df, groups="group", vc_formula={"unit": "0 + C(unit)"}).fit(reml=True)
    assert old.cov_re.size == 0
    assert abs(float(old.fe_params["C(paradigm)[CG]:logn"]) - slope["CG"]) > 0.09  # 0.12 pp per doubling here


def test_noise_is_per_channel_on_colour_images_and_shared_on_grey_ones() -> None:
    aug = Augmenter(AugmentationSpec(brightness_contrast_p=0.0, noise_p=1.0, noise_std=(0.04, 0.06)), 3)
    d = aug.draw(0, 2)
    img = torch.full((2, 3, 96, 96), 128, dtype=torch.uint8)
    img[1, 0] = 120  # sample 1 is colour (its channels differ); sample 0 is grey broadcast to three channels
    x, _ = aug.apply(img, torch.zeros(2), "label", d)
    noise = x - img.float()
    assert torch.equal(x[0, 0], x[0, 1]) and torch.equal(x[0, 0], x[0, 2])  # grey stays grey
    own = noise[1].flatten(1)
    corr = torch.corrcoef(own)
    assert corr[0, 1].abs() < 0.1 and corr[0, 2].abs() < 0.1 and corr[1, 2].abs() < 0.1  # independent planes
    for c in range(3):
        assert own[c].std().item() == pytest.approx(d.noise_std[1].item(), rel=0.05)
    # channel 0 keeps the plane every channel had before, so a grey batch draws exactly what it drew
    grey, _ = aug.apply(img[:, :1].expand(-1, 3, -1, -1).contiguous(), torch.zeros(2), "label", d)
    assert torch.equal(grey[1, 0], x[1, 0]) and torch.equal(grey[1, 0], grey[1, 2])
    plane, _ = aug.apply(img[:, 0], torch.zeros(2), "label", d)  # grey stored as [k, S, S]
    assert torch.equal(plane[0], x[0, 0])
