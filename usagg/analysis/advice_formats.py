"""The advice for its readers beyond the terminal: a `Table` (the report, `usagg advise --format csv|markdown`) and
plain data (`--format json`).
"""

from __future__ import annotations

import math
from typing import Any

from usagg.analysis.advice import LOGO, LOTO, Advice
from usagg.analysis.advice_model import RIDGE_PENALTY
from usagg.analysis.advice_text import accuracy_text, measured_text, verdict
from usagg.analysis.tables import Cellv, Table, frac_label


def advice_table(adv: Advice) -> Table:
    """The advice as a table (report, `usagg advise`): whether the model beats the trivial rules first in its title
    and notes, then the held-out accuracy."""
    others = adv.paradigms[1:]
    cols = [
        "Task", "Group", "Type", "n_train", "Advice", "Advice from",
        f"Own measurement ({100 * adv.level:.1f} % interval)", "Δ predicted %", "sd of Δ (LOTO)",
        *[f"Δ{p} % measured" for p in others], "Best measured", "Model advice", "LOTO advice", "LOTO hit",
        "LOGO advice", "LOGO hit",
    ]  # fmt: skip
    yes = {True: "yes", False: "no", None: None}
    rows: list[list[Cellv]] = []
    for r in adv.rows:
        n = None if r.n_train is None or math.isnan(r.n_train) else round(r.n_train)
        rows.append([
            r.task, r.group, r.type, n, r.advised, r.decided_by, r.evidence, r.predicted, r.sd,
            *[r.measured[p] for p in others],
            r.best_measured, r.model_advised, r.loto_advised, yes[r.loto_hit], r.logo_advised, yes[r.logo_hit],
        ])  # fmt: skip
    if not adv.n:
        checked = "no task checkable"
    else:
        checked = ", ".join(f"{s} {h}/{adv.n}" for s, h in adv.hits.items()) + " advised = best measured"
    n_tied = len(adv.tied_rules)
    tie = (
        f"; {n_tied} rules tie, a default"
        if adv.default_tie
        else f"; {n_tied} rules tie, agreeing"
        if n_tied > 1
        else ""
    )
    rule = f"the rule '{adv.best_rule.name}' (the model does not beat it{tie})"
    advised_by = "the model's" if adv.beats_trivial else rule
    own = f"own measurement decides {len(adv.measured)} of {len(adv.rows)}, else "
    title = (
        f"Advice: the paradigm for each task (fraction {frac_label(adv.fraction)}; {own}{advised_by}; model {checked})"
    )
    return Table("advice", title, cols, rows, list(adv.notes))


def advice_json(adv: Advice) -> dict[str, Any]:
    """Plain data for `--format json` (NaN as null)."""

    def num(v: float | None) -> float | None:
        return None if v is None or not math.isfinite(v) else v

    return {
        "study": adv.study,
        "fraction": adv.fraction,
        "seeds": adv.seeds,
        "paradigms": adv.paradigms,
        "beats_trivial": adv.beats_trivial,
        "verdict": verdict(adv),
        "predicted_advice_by": "model" if adv.beats_trivial else f"rule: {adv.best_rule.name}",
        "measured_first": {
            "level": adv.level,
            "test_set_variance": adv.test_set,
            "tasks": [r.task for r in adv.measured],
            "text": measured_text(adv),
        },
        "model": {
            "kind": "ridge regression per paradigm across tasks, standardised features, unpenalised intercept",
            "penalty": RIDGE_PENALTY,
            "features": adv.features,
            "loto_rmse": {p: num(v) for p, v in adv.rmse.items()},
        },
        "accuracy": {
            "schemes": list(adv.hits),
            "hits": adv.hits[LOTO],
            "logo_hits": adv.hits.get(LOGO),
            "regret": {k: num(v) for k, v in adv.regret.items()},
            "n": adv.n,
            "share": num(adv.share),
            "mae": num(adv.mae),
            "n_errors": adv.n_errors,
            "constant_mae": num(adv.constant_mae),
            "text": accuracy_text(adv),
        },
        "rules": [
            {
                "name": r.name,
                "advised": r.advised,
                "hits": r.hits,
                "regret": {k: num(v) for k, v in r.regret.items()},
            }
            for r in adv.rules
        ],
        "tasks": [
            {
                "task": r.task,
                "group": r.group,
                "type": r.type,
                "n_train": num(r.n_train),
                "advised": r.advised,
                "decided_by": r.decided_by,
                "evidence": r.evidence,
                "intervals": {p: None if ci is None else list(ci) for p, ci in r.intervals.items()},
                "model_advised": r.model_advised,
                "predicted_delta": r.predicted,
                "sd": None if r.sd is None else num(r.sd),
                "predicted_by": r.predicted_by,
                "delta_bounds": [num(b) for b in r.bounds],
                "measured": {p: num(v) for p, v in r.measured.items()},
                "best_measured": r.best_measured,
                "loto_advised": r.loto_advised,
                "loto_predicted": r.loto_predicted,
                "loto_hit": r.loto_hit,
                "logo_advised": r.logo_advised,
                "logo_hit": r.logo_hit,
            }
            for r in adv.rows
        ],
        "notes": adv.notes,
    }
