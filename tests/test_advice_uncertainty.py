"""The advice's "beats / does not beat the trivial rules" with its uncertainty (audit finding 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from usagg.analysis.advice import LOGO, LOTO, MODEL, Advice, AdviceRow, Rule
from usagg.analysis.advice_text import verdict
from usagg.analysis.advice_uncertainty import apart, regret_spread, sign_test_p
from usagg.analysis.advise import advise_input
from usagg.analysis.inputs import load_input

DEMO = Path(__file__).parent / "data" / "demo_results.csv"


def _row(task: str, group: str, best: str, model: str, au: float) -> AdviceRow:
    return AdviceRow(
        task=task, group=group, type="segmentation", n_train=50.0, advised=model, predicted=0.0, sd=None,
        predicted_by={"TS": 0.0, "AU": au}, measured={"TS": 0.0, "AU": au}, best_measured=best, model_advised=model,
        loto_advised=model, loto_predicted={"TS": 0.0, "AU": au}, logo_advised=model, bounds=(-100.0, 100.0),
        decided_by=MODEL, intervals={}, evidence="",
    )  # fmt: skip


def test_a_one_task_margin_beats_the_rules_by_count_but_is_no_ranking() -> None:
    """5 of 9 held-out hits against the rule's 4: "beats" on the count, but one clinical group for the model and
    none against it is a sign-test p of 1: the verdict says the held-out tasks cannot tell the two apart."""
    tasks = [(f"t{i}", f"g{i % 3}", "AU" if i < 5 else "TS") for i in range(9)]
    rows = [_row(t, g, b, b if i < 5 else "AU", 5.0 if b == "AU" else -3.0) for i, (t, g, b) in enumerate(tasks)]
    rule_advice = {t: "AU" for t, _, _ in tasks}  # always AU: a hit on the 5 AU tasks, but miss on t0
    rule_advice["t0"] = "TS"
    rule = Rule("always AU", "AU", {LOTO: 4, LOGO: 4}, {LOTO: 1.0, LOGO: 1.0}, {LOTO: rule_advice, LOGO: rule_advice})
    adv = Advice(
        study="s", fraction=1.0, seeds=[0], paradigms=["TS", "AU"], rows=rows, features={}, rmse={},
        hits={LOTO: 5, LOGO: 5}, regret={LOTO: 1.0, LOGO: 1.0}, n=9, mae=1.0, n_errors=9, constant_mae=1.0,
        rules=[rule], notes=[], level=0.9, test_set=False,
    )  # fmt: skip
    assert adv.beats_trivial
    a = apart(adv)
    assert a is not None and (a.model_wins, a.rule_wins, a.p) == (1, 0, 1.0) and not a.told_apart
    said = verdict(adv)
    assert said.startswith("The model beats every trivial rule")
    assert "cannot tell the model and the best rule apart" in said and "1 / 0, exact sign test p = 1" in said


def test_the_demo_advice_states_the_sign_test_and_the_rules_regret_spread() -> None:
    """The demo's results table: 4 clinical groups, so no split of them reaches p 0.05 (the smallest two-sided p is
    2/2^4 = 0.125): the groups never tell the model and the rule apart. The rule's per-task held-out advice adds up
    to the hits it is ranked by, and its regret's mean is the one the rules' line prints."""
    adv = advise_input(load_input(None, DEMO))
    assert adv.primary == LOGO
    best = adv.best_rule
    assert sum(best.advised_by[LOGO][r.task] == r.best_measured for r in adv.rows if r.best_measured) == best.hits[LOGO]
    a = apart(adv)
    assert a is not None and a.model_wins + a.rule_wins <= 4 and a.p >= 0.125 and not a.told_apart
    spread = regret_spread(adv, best)
    assert spread is not None and spread[0] == pytest.approx(best.regret[LOGO])
    mean, sd, low, high = spread
    assert low <= mean <= high and sd > 0
    said = verdict(adv)
    assert f"{a.model_wins} / {a.rule_wins}, exact sign test p = {a.p:.2g}): the hit counts are no ranking" in said
    assert f"Following '{best.name}' costs {mean:.1f} points of Δ held out" in said


def test_the_sign_test_p_equals_scipys_binomtest_without_importing_scipy() -> None:
    """The report reuses plot's memoised statistics and must not pay scipy's import for the advice's sign test."""
    from scipy.stats import binomtest

    for wins in range(13):
        for losses in range(13):
            want = 1.0 if wins + losses == 0 else binomtest(wins, wins + losses, 0.5).pvalue
            assert sign_test_p(wins, losses) == pytest.approx(want, abs=1e-12), (wins, losses)
    assert sign_test_p(4, 0) == 0.125 and sign_test_p(0, 0) == 1.0
