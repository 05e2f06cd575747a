"""What advice is: a task's advice row, the trivial rules the model must beat, and the study's `Advice` with how
the model stands against those rules (usagg/analysis/advise.py makes it, advice_text.py and advice_formats.py say it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: The paradigm every Δ is measured against; its own Δ is 0.
BASELINE = "TS"
#: The two ways advice is held out: one task at a time, one clinical group at a time.
LOTO, LOGO = "leave-one-task-out", "leave-one-group-out"
#: Where a task's advice comes from: its own measurement, the model, or the trivial rule the model does not beat.
MEASUREMENT, MODEL, RULE = "measurement", "model", "rule"


@dataclass(frozen=True)
class AdviceRow:
    """One task's advice, the measured Δs it is judged against and its held-out advice."""

    task: str
    group: str
    type: str
    n_train: float | None
    advised: str  # the model's advice, or the best trivial rule's when the model does not beat it
    predicted: float  # the model's Δ % for the advised paradigm (0 for TS)
    sd: float | None  # LOTO root-mean-square error of the advised paradigm's model (None for TS: its Δ is 0)
    predicted_by: dict[str, float]  # paradigm -> predicted Δ % (TS 0), within `bounds`
    measured: dict[str, float | None]  # paradigm -> measured Δ % (TS 0; None: not measured)
    best_measured: str | None  # None when some paradigm's Δ was not measured for the task
    model_advised: str  # the paradigm with the highest predicted Δ
    loto_advised: str
    loto_predicted: dict[str, float]  # paradigm -> Δ % predicted with this task held out (TS 0)
    logo_advised: str | None  # the advice with the task's clinical group held out; None with one group
    bounds: tuple[float, float]  # the Δ % the task's metric allows
    decided_by: str  # MEASUREMENT, MODEL or RULE
    intervals: dict[str, tuple[float, float] | None]  # paradigm -> interval of Δ at the decision level
    evidence: str  # what the task's own measurement says, in a few words

    @property
    def loto_hit(self) -> bool | None:
        return None if self.best_measured is None else self.loto_advised == self.best_measured

    @property
    def logo_hit(self) -> bool | None:
        return (
            None if self.best_measured is None or self.logo_advised is None else self.logo_advised == self.best_measured
        )


@dataclass(frozen=True)
class Rule:
    """A trivial rule the model must beat: what it advises on every task, and its held-out hits per scheme."""

    name: str  # "always TS", "majority", "highest mean Δ"
    advised: str  # fitted on every task
    hits: dict[str, int]  # LOTO / LOGO -> held-out tasks advised their best measured paradigm
    regret: dict[str, float] = field(default_factory=dict)  # LOTO / LOGO -> mean held-out regret
    advised_by: dict[str, dict[str, str]] = field(default_factory=dict)  # LOTO / LOGO -> task -> held-out advice


@dataclass
class Advice:
    """Per-task advice with the model's description, its held-out accuracy and the trivial rules beside it."""

    study: str
    fraction: float
    seeds: list[int]
    paradigms: list[str]  # the choices, TS first
    rows: list[AdviceRow]
    features: dict[str, list[str]]  # modelled paradigm -> its features
    rmse: dict[str, float]  # modelled paradigm -> LOTO root-mean-square error of its predicted Δ
    hits: dict[str, int]  # LOTO / LOGO -> tasks whose held-out advice is their best measured paradigm (LOGO: ≥2 groups)
    regret: dict[str, float]  # LOTO / LOGO -> mean held-out regret of the model's advice (advice_scoring `_regret`)
    n: int  # tasks with every paradigm measured (the hit share's denominator)
    mae: float  # mean |LOTO predicted Δ − measured Δ| over every measured (task, paradigm)
    n_errors: int
    constant_mae: float  # the same for each paradigm's mean Δ over the other tasks
    rules: list[Rule]
    notes: list[str]
    level: float  # the two-sided level of the intervals a task's own measurement decides by
    test_set: bool  # whether the test set's bootstrap variance is in some task's intervals

    @property
    def measured(self) -> list[AdviceRow]:
        """The tasks whose own measurement decides their advice."""
        return [r for r in self.rows if r.decided_by == MEASUREMENT]

    @property
    def share(self) -> float:
        return self.hits[LOTO] / self.n if self.n else math.nan

    @property
    def primary(self) -> str:
        """The scheme the rules are ranked by: LOGO where the study has several groups, else LOTO."""
        return LOGO if LOGO in self.hits else LOTO

    def _rank(self, r: Rule) -> tuple[int, float]:
        """A rule's standing under `primary`: its held-out hits, then the lower held-out regret (a rule that misses by
        1 point beats one that misses by 18 at as many hits)."""
        regret = r.regret.get(self.primary, math.nan)
        return r.hits[self.primary], -(regret if math.isfinite(regret) else math.inf)

    @property
    def best_rule(self) -> Rule:
        """The trivial rule with the most held-out hits under `primary`, the lower held-out regret breaking a tie
        (the first listed where both tie)."""
        return max(self.rules, key=lambda r: (*self._rank(r), -self.rules.index(r)))

    @property
    def tied_rules(self) -> list[str]:
        """The rules that stand as the best one does, in hits and regret (itself included): more than one, and the
        held-out tasks prefer none of them."""
        top = self._rank(self.best_rule)
        return [r.name for r in self.rules if self._rank(r) == top]

    @property
    def regret_broke_tie(self) -> bool:
        """Rules tie on hits, and the held-out regret chose between them."""
        hits = self.best_rule.hits[self.primary]
        return sum(r.hits[self.primary] == hits for r in self.rules) > len(self.tied_rules)

    @property
    def default_tie(self) -> bool:
        """Rules tie that advise different paradigms: the first listed is then a default, not a finding."""
        tied = set(self.tied_rules)
        return len({r.advised for r in self.rules if r.name in tied}) > 1

    @property
    def beats_trivial(self) -> bool:
        """More held-out hits than every trivial rule under every scheme."""
        return self.n > 0 and all(h > max(r.hits[s] for r in self.rules) for s, h in self.hits.items())
