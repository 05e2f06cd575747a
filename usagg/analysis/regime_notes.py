"""What the regime rows of the aggregates can and cannot say in this design (audit finding 9).

A regime's mean Δ is read as the effect of data size, but where every task of a regime has one task type (the
demo's data-rich regime: its 2 tasks, both AUC classification) it is as much the effect of type, and where every
clinical group falls in one group regime (the demo: every group below the real study's 5,000 images) the
group-regime row only repeats "all tasks". Each note names the regime, its tasks' types or the groups' regime.
"""

from __future__ import annotations

from usagg.analysis.delta import Comparison
from usagg.wording import counted


def regime_notes(comp: Comparison, fraction: float) -> list[str]:
    """Notes for the aggregates table at `fraction`: a regime confounded with task type, one group regime for all."""
    tasks = [t.task for t in comp.tasks if (fraction, t.task) in comp.n_train]
    by_regime: dict[str, list[str]] = {}
    for t in tasks:
        by_regime.setdefault(comp.regime(fraction, t), []).append(t)
    notes = []
    if len(by_regime) > 1:
        for regime, names in sorted(by_regime.items()):
            types = sorted({comp.info(t).type for t in names})
            if len(types) == 1:
                notes.append(
                    f"The {regime} regime is {counted(len(names), 'task')}, every one {types[0]}: its row confounds "
                    "data size with task type in this design."
                )
    groups = sorted({comp.info(t).group for t in tasks})
    regimes = {comp.group_regime(fraction, g) for g in groups}
    if len(groups) > 1 and len(regimes) == 1:
        notes.append(
            f"Every clinical group falls in one regime, {next(iter(regimes))} (analysis.group_regime_threshold): the "
            "group-regime row repeats the mean over all tasks and says nothing of group size."
        )
    return notes
