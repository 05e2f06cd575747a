"""The study's tables as plain data (Table), built from a Comparison and its statistics.

Cells hold numbers where they are numbers, so CSV keeps full precision and the text,
Markdown, LaTeX and HTML renderers (render.py) format them the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from usagg.analysis.cluster_inference import MEAN_DELTA
from usagg.analysis.controls import (
    PARTS,
    Control,
    collapsed_in,
    split_order,
    split_stat_name,
    split_without,
    splits,
)
from usagg.analysis.delta import (
    CHANCE,
    COLLAPSE_SHARE,
    SEED_ORDER,
    Aggregate,
    Collapse,
    Comparison,
    aggregates,
    baseline_collapsed,
    chance_evidence,
    chance_reference,
    collapsed,
    group_n_train,
    negative_transfer,
    rescaled,
)
from usagg.analysis.digits import ci_words, significant
from usagg.analysis.factorial import effect_table_rows, incomplete_text, left_out_notes, missing_notes
from usagg.analysis.families import family_lines
from usagg.analysis.fraction_trend import COMMON_MEAN, FRACTION_SLOPE, common_tasks, task_slope
from usagg.analysis.inputs import AnalysisInput, Planned, paradigm_groups
from usagg.analysis.regime_notes import regime_notes
from usagg.analysis.scales import FORMULAS, SCALES, UNITS
from usagg.analysis.stats import Stat
from usagg.analysis.task_ci import error_span
from usagg.analysis.uncertainty import BOTH, MONTE_CARLO, SEEDS, TEST_SET, shown_interval
from usagg.paradigms import PARADIGMS
from usagg.tasktypes import metric_unit
from usagg.wording import counted

if TYPE_CHECKING:
    from usagg.affinity import Affinity


@dataclass(frozen=True)
class Interval:
    """An interval as one cell: shown as `text` (`[-9.2, +8.1]`, in the rounding of its table, or why there is
    none), written to CSV as two numbers, its column's two keys (`Table.keys`), so a spreadsheet or a script reads
    the bounds without parsing the text."""

    low: float | None
    high: float | None
    text: str


Cellv = str | float | int | Interval | None
#: A column's CSV header (`Table.keys`): a name, or the two names of an interval column's low and high bounds.
Key = str | tuple[str, str]


@dataclass
class Table:
    """A titled grid with notes; `name` is its file stem in reports (tables/<name>.csv).

    `keys`, where given, are the columns' machine names, CSV's header in place of the display `columns`: a table
    whose CSV is read by scripts (`usagg compare --format csv --table NAME`) names its columns as the JSON does,
    and an interval column (a pair of keys) is written as its two bounds."""

    name: str
    title: str
    columns: list[str]
    rows: list[list[Cellv]]
    notes: list[str] = field(default_factory=list)
    keys: list[Key] = field(default_factory=list)
    #: What a table without rows shows in its place: "(none)", or why it is empty and what would fill it.
    empty: str = "(none)"
    #: Columns whose numbers are shown to 3 significant digits (`significant`), not to a fixed number of decimals.
    significant: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.keys and len(self.keys) != len(self.columns):
            raise ValueError(f"table {self.name}: {len(self.keys)} keys for {len(self.columns)} columns")


def note_subject(note: str) -> str:
    """What a long note is about, for a later mention of it: its first two "a: b" parts, else its first sentence."""
    parts = note.split(": ")
    return (": ".join(parts[:2]) if len(parts) > 2 else note.split(". ")[0]).rstrip(".")


def said_once(tables: list[Table]) -> list[Table]:
    """`tables` with a note that an earlier table already gave (the exclusion and collapse notes repeat under every
    table they apply to) cut to its subject and "(see above)": what a terminal shows once. CSV and LaTeX tables
    keep their notes whole, each file standing alone."""
    seen: set[str] = set()
    out = []
    for t in tables:
        notes = [f"{note_subject(n)} (see above)." if n in seen else n for n in t.notes]
        seen.update(t.notes)
        out.append(replace(t, notes=notes))
    return out


def fmt_metric(v: float, ref: float | None = None) -> str:
    """Three decimals for [0, 1] scores, one for pixel errors; `ref` formats an sd like its mean."""
    return f"{v:.3f}" if abs(v if ref is None else ref) < 10 else f"{v:.1f}"


def fmt_delta(v: float | None) -> str:
    return "n/a" if v is None else f"{v + 0.0:+.1f}"  # + 0.0: -0.0 (a tie) reads +0.0


def frac_label(f: float) -> str:
    """A fraction as tables print it; "all" for a statistic that pools every fraction (`fraction_trend.POOLED`)."""
    return "all" if math.isinf(f) else f"{f:g}"


def ci_end(v: float) -> str:
    """An interval's end to one decimal, or to two significant digits where one decimal would print ±0.0: a lower end
    of +0.04 is what puts an interval above 0, and '+0.0' (or a −0.011 printed '-0.0') hid which side it is on.
    Fixed-point always (+0.000030, not +3e-05); zero is +0.0 whatever its sign bit."""
    v = v + 0.0  # -0.0 -> 0.0
    if v == 0 or round(v, 1) != 0 or not math.isfinite(v):
        return f"{v:+.1f}"
    return f"{v:+.{1 - math.floor(math.log10(abs(v)))}f}"


#: The note of a table whose estimates, interval end-points and p are shown by `significant`.
SIGNIFICANT_NOTE = "Estimates, interval end-points and p to 3 significant digits (the CSV keeps every digit)."


def ordered_tasks(comp: Comparison) -> list[str]:
    """Tasks grouped by clinical group (first appearance), study order within a group."""
    groups = list(dict.fromkeys(t.group for t in comp.tasks))
    return [t.task for g in groups for t in comp.tasks if t.group == g]


def arrow(higher_is_better: bool) -> str:
    return "↑" if higher_is_better else "↓"


def exclusion_notes(comp: Comparison) -> list[str]:
    """One sentence per paradigm whose one-task groups are left out of its aggregates and tests."""
    out = []
    for p, tasks in comp.excluded.items():
        lone = comp.one_task_groups.get(p, ())
        kinds = {"clinical group" if o.clinical else f"{p} group" for o in lone}
        kind = kinds.pop() if len(kinds) == 1 else "group"
        out.append(
            f"{p}: {counted(len(tasks), 'task')} alone in {'their' if len(tasks) > 1 else 'its'} "
            f"{kind} left out of every {p} aggregate and test ({comp.one_task_text(p)}): a one-task group's {p} model "
            f"trains {comp.baseline}'s data with MoE {_moe_of(p)}, so its Δ measures no aggregation "
            "(analysis.cg_singletons: exclude; `include` keeps them)."
        )
    for f, tasks in comp.chance.items():
        if tasks:
            where = f" at fraction {frac_label(f)}" if len(comp.fractions) > 1 else ""
            rule = "left out of every aggregate and test (analysis.chance_tasks: exclude; `include` keeps them)"
            out.append(
                f"Not shown above chance{where}: {', '.join(chance_detail(comp, f, t) for t in tasks)}: the "
                f"{comp.baseline} metric is not shown to beat {CHANCE_LEVELS}: {CHANCE_RULE}; so no skill is shown "
                "for a paradigm to change, "
                + (
                    rule
                    if comp.chance_excluded
                    else "kept in the aggregates and tests (analysis.chance_tasks: include)"
                )
                + "."
            )
    if comp.untrained:
        listed = "; ".join(
            f"{t} under {p}"
            + (f" at fraction {frac_label(f)}" if len(comp.fractions) > 1 else "")
            + f" (seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})"
            for (f, t, p), seeds in sorted(comp.untrained.items())
        )
        out.append(
            f"Not trained: {listed}: the job gave the task 0 optimiser steps, so those seeds' values are an untrained "
            "head's and are left out (every seed: the Δ is n/a and out of every aggregate and test); raise "
            "training.steps_per_epoch, or use training.sampling: matched."
        )
    if comp.undefined:
        listed = "; ".join(
            f"{p} {t} {comp.info(t).metric}"
            + (f" at fraction {frac_label(f)}" if len(comp.fractions) > 1 else "")
            + f" ({comp.undefined_places(f, t, p)})"
            for f, t, p in sorted(comp.undefined)
        )
        out.append(
            f"Empty values: {listed}: an empty (or nan) value is a metric undefined for that job, as the store writes "
            "one, so those seeds are left out and the mean is over the seeds left (every seed: the Δ is n/a and out "
            "of every aggregate and test); a value lost from an edited table must be restored."
        )
    return out


#: What a baseline is held against (usagg/analysis/delta.py `chance_reference`), in words.
CHANCE_LEVELS = (
    "the metric's chance level (AUC 0.5) or the best constant prediction scored on the same test images (an empty or "
    "all-foreground mask, a whole-image or mean training box, the mean training keypoints, the training class "
    "frequencies; metrics.json `trivial`)"
)


#: The chance check's rule (usagg/analysis/delta.py `at_chance`), in words.
CHANCE_RULE = (
    "a one-sided 95 % lower bound of its margin over that level does not clear 0 (the t bound over seeds; with one "
    "seed the test-set bootstrap of its metric over the job's test images, the point estimate only where the job "
    "wrote no per-image scores)"
)


def chance_detail(comp: Comparison, fraction: float, task: str) -> str:
    """A task at chance with what shows it: `breast_lesion (TS DSC 0.239, the all-foreground mask's 0.098; one-sided
    95 % t over 3 seeds)`."""
    ref = chance_reference(comp, fraction, task)
    cell = comp.cells.get((fraction, task, comp.baseline))
    if ref is None or cell is None:
        return task
    level = f"chance {fmt_metric(ref.mean)}"
    if ref.predictor != CHANCE:
        level = f"the {ref.predictor}'s {fmt_metric(ref.mean)}"
    metric = f"{comp.baseline} {comp.info(task).metric} {fmt_metric(cell.mean)}"
    return f"{task} ({metric}, {level}; {chance_evidence(comp, fraction, task)})"


def unchecked_tasks(comp: Comparison) -> list[str]:
    """Tasks with a baseline result whose chance level is known at no fraction (`chance_reference` None): no AUC, and
    no trivial predictor's score recorded by the baseline's jobs (an imported table, jobs written before they
    recorded one, a type that declares none)."""
    return [
        t.task
        for t in comp.tasks
        if any((f, t.task, comp.baseline) in comp.cells for f in comp.fractions)
        and all(chance_reference(comp, f, t.task) is None for f in comp.fractions)
    ]


def collapse_notes(comp: Comparison) -> list[str]:
    """The sentences naming the jobs whose metric fell to (nearly) its worst from the baseline's (`collapsed`), and
    the baseline's seeds no better than a constant prediction beside seeds that were (`baseline_collapsed`): read
    as failed training runs before as transfer."""
    multi = len(comp.fractions) > 1

    def at(f: float) -> str:
        return f" at fraction {frac_label(f)}" if multi else ""

    out = []
    found = [(f, c) for f in comp.fractions for c in collapsed(comp, f)]
    if found:
        listed = "; ".join(
            f"{c.paradigm} {c.task} seed {c.seed}{at(f)} ({comp.info(c.task).metric} {fmt_metric(c.value)} against "
            f"{comp.baseline}'s {fmt_metric(c.baseline)}" + (_level(c) if c.level is not None else "") + ")"
            for f, c in found
        )
        unbounded = sorted({c.task for _, c in found if c.level is not None})
        out.append(
            f"Collapsed: {listed}: lost at least {COLLAPSE_SHARE * 100:.0f} % of {comp.baseline}'s distance to the "
            "metric's worst value (chance for an AUC; for an error metric, which has no worst, the best trivial "
            "predictor's score its jobs recorded): a failed run (a head predicting nothing, or one class) or a "
            "transfer that took all the task's skill; the job's history.csv tells which (a loss that never fell, or "
            "one that fell while the metric did not); kept in every aggregate and test."
            + (
                f" The Δ of {', '.join(unbounded)} has no floor (an error metric is unbounded above: twice "
                f"{comp.baseline}'s error is −100 %, five times −400 %), so one such run can move Δm by any amount."
                if unbounded
                else ""
            )
        )
    failed = [(f, c) for f in comp.fractions for c in baseline_collapsed(comp, f)]
    if failed:
        listed = "; ".join(
            f"{c.paradigm} {c.task} seed {c.seed}{at(f)} ({comp.info(c.task).metric} {fmt_metric(c.value)} against"
            + _level(c).removeprefix(",")
            + ")"
            for f, c in failed
        )
        out.append(
            f"Collapsed baseline: {listed}: no better than a constant prediction on the same test images while "
            f"another seed of {comp.baseline} was: a failed {comp.baseline} run (or, where the seeds lie close on "
            "both sides of the level, a baseline barely above chance), which lowers the task's baseline mean and can "
            "put it at chance; the job's history.csv tells which; kept in the seed mean, as every seed is."
        )
    return out


def _level(c: Collapse) -> str:
    """`, the all-foreground mask's 0.098` (or `, chance 0.500`): the level a collapse was measured to."""
    assert c.level is not None
    return (
        f", chance {fmt_metric(c.level)}" if c.reference == CHANCE else f", the {c.reference}'s {fmt_metric(c.level)}"
    )


def _moe_of(paradigm: str) -> str:
    entry = PARADIGMS.get(paradigm)
    return "on" if entry is None or entry.moe else "off"


def scale_note(comp: Comparison) -> str:
    """What a Δ is on the comparison's scale, for table notes."""
    return (
        f"Scale (analysis.scale: {comp.scale}): {FORMULAS[comp.scale]}, in {UNITS[comp.scale]}; s = −1 for ↓ metrics."
    )


def task_table(comp: Comparison, fraction: float, *, multi: bool = False) -> Table:
    """The paper-style results table: metric mean ± sd of every paradigm and Δ % side by side."""
    cols = ["Task", "Group", "Type", "Metric", "n_train"]
    for p in comp.paradigms:
        cols.append(p)
        if p != comp.baseline:
            cols.append(f"Δ{p} %")
    rows: list[list[Cellv]] = []
    na_notes: list[str] = []
    for task in ordered_tasks(comp):
        info = comp.info(task)
        n = comp.n_train.get((fraction, task), math.nan)
        unit = metric_unit(info.metric)
        metric = f"{info.metric}{' (' + unit + ')' if unit else ''} {arrow(info.higher_is_better)}"
        row: list[Cellv] = [task, info.group, info.type, metric, None if math.isnan(n) else round(n)]
        for p in comp.paradigms:
            cell = comp.cells.get((fraction, task, p))
            if cell is None:
                row.append("—")
            elif cell.n_seeds > 1:
                row.append(f"{fmt_metric(cell.mean)} ± {fmt_metric(cell.sd, cell.mean)}")
            else:
                row.append(fmt_metric(cell.mean))
            if p != comp.baseline:
                d = comp.deltas[(fraction, task, p)]
                row.append(d.value if d.value is not None else "n/a")
                if d.value is None:
                    na_notes.append(f"{task} / {p}: Δ n/a, {d.reason}")
        rows.append(row)
    seeds = sorted({c.n_seeds for (f, _, _), c in comp.cells.items() if f == fraction})
    notes = [
        f"Metric: mean ± sd over seeds (n seeds per cell: {', '.join(map(str, seeds)) or 'none, no value'}); "
        "↑ higher is better, ↓ lower is better.",
        f"{scale_note(comp)} m_b: the {comp.baseline} metric; {SEED_ORDER}.",
        *na_notes,
        *exclusion_notes(comp),
        *collapse_notes(comp),
    ]
    title = f"Per-task results versus {comp.baseline}" + (f" (fraction {frac_label(fraction)})" if multi else "")
    return Table("tasks" + (f"_f{frac_label(fraction)}" if multi else ""), title, cols, rows, notes)


def _agg_rows(comp: Comparison, fraction: float, level: str) -> tuple[list[list[Cellv]], list[str]]:
    per_p = {p: aggregates(comp, fraction, p, level) for p in comp.others}
    rows, notes = [], []
    first = per_p[comp.others[0]] if comp.others else []
    for i, agg in enumerate(first):
        row: list[Cellv] = [level, agg.name, len(agg.tasks) + len(agg.missing) + len(agg.excluded) + len(agg.chance)]
        ns = []
        for p in comp.others:
            a = per_p[p][i]
            row.append(a.mean)
            ns.append(a.n)
            if a.missing:
                notes.append(f"{level} {a.name} / {p}: left out (no Δ): {', '.join(a.missing)}")
        n_txt = str(ns[0]) if len(set(ns)) == 1 else "/".join(f"{p} {n}" for p, n in zip(comp.others, ns, strict=True))
        row.append(f"seeds → task Δ → mean of {n_txt} task{'' if n_txt == '1' else 's'}")
        rows.append(row)
    return rows, notes


#: What an aggregate's Tasks column counts, beside the tasks its mean is over.
TASKS_COUNTED = "Tasks: every task of the row, those left out of its mean included; Aggregation: how many are averaged."


def aggregate_table(comp: Comparison, fraction: float, *, multi: bool = False) -> Table:
    """Mean Δ by clinical group, task type, data regime (task and group size) and over all tasks (Δm)."""
    cols = ["Level", "Name", "Tasks", *[f"Δ{p} %" for p in comp.others], "Aggregation"]
    rows: list[list[Cellv]] = []
    notes = [
        f"Each aggregate: {SEED_ORDER}, then the unweighted mean over the tasks of the row.",
        TASKS_COUNTED,
        f"Regime: n_train < {comp.regime_threshold} is low-data (analysis.regime_threshold).",
        f"Group regime: a clinical group with < {comp.group_regime_threshold} training images (sum over its tasks) "
        "is low-data (analysis.group_regime_threshold); each task takes its group's regime.",
        *exclusion_notes(comp),
    ]
    for level in ("group", "type", "regime", "group regime", "all"):
        r, n = _agg_rows(comp, fraction, level)
        rows += r
        notes += n
    notes += regime_notes(comp, fraction)
    title = f"Mean Δ versus {comp.baseline} by group, type, regime" + (
        f" (fraction {frac_label(fraction)})" if multi else ""
    )
    return Table("aggregates" + (f"_f{frac_label(fraction)}" if multi else ""), title, cols, rows, notes)


def group_table(comp: Comparison, fraction: float, *, multi: bool = False) -> Table:
    """Clinical groups with their data scale, regime and mean Δ, largest groups first."""
    sizes = group_n_train(comp, fraction)
    cols = ["Group", "Tasks", "n_train (sum)", "Regime", *[f"Δ{p} %" for p in comp.others], "Aggregation"]
    rows, notes = _agg_rows(comp, fraction, "group")
    out: list[list[Cellv]] = []
    for r in rows:
        n = sizes.get(str(r[1]), math.nan)
        regime = comp.group_regime(fraction, str(r[1])).split(" group")[0]
        out.append([r[1], r[2], None if math.isnan(n) else round(n), regime, *r[3:]])
    out.sort(key=lambda r: -(r[2] if isinstance(r[2], int) else -1))
    title = f"Mean Δ versus {comp.baseline} per clinical group" + (
        f" (fraction {frac_label(fraction)})" if multi else ""
    )
    notes = [
        f"Group Δ: {SEED_ORDER}, then mean over the group's tasks; group n_train = sum over its tasks.",
        TASKS_COUNTED,
        f"Regime: a group with n_train < {comp.group_regime_threshold} is low-data (analysis.group_regime_threshold).",
        *notes,
        *exclusion_notes(comp),
    ]
    return Table("groups" + (f"_f{frac_label(fraction)}" if multi else ""), title, cols, out, notes)


#: What an interval of one seed is, said wherever one supports a verdict (the negative-transfer table, the summary,
#: the headline, Figure 3's caption): the test-set bootstrap of one trained model leaves training noise out.
ONE_RUN = "test-set interval of one training run: training (seed) noise left out; run several seeds"


def interval_source(sources: list[str]) -> str:
    """Where a row's per-task intervals come from, in words (`shown_interval`'s sources): seeds, the test set of one
    training run (`ONE_RUN`), both (counted), or '—' where no task has one."""
    seeds = sum(src.startswith("seeds") for src in sources)
    test = len(sources) - seeds
    if not sources:
        return "—"
    if not test:
        return "seeds (t interval over seeds: training and test-set noise)"
    if not seeds:
        return ONE_RUN
    return f"seeds for {counted(seeds, 'task')}; for {counted(test, 'task')} the {ONE_RUN}"


def negative_table(comp: Comparison, stats: list[Stat] | None = None) -> Table:
    """Tasks with Δ < 0 per paradigm and fraction as point estimates, and apart from them the tasks whose shown
    interval (Figure 3's: seeds when ≥ 2, else the test set) lies wholly below 0, with where that interval comes from:
    with one seed it is one training run's test-set bootstrap and no verdict on the paradigm (`ONE_RUN`)."""
    rows: list[list[Cellv]] = []
    one_run = False
    for f in comp.fractions:
        for p in comp.others:
            k, n = negative_transfer(comp, f, p)
            tasks = comp.delta_values(f, p)[0]
            names = [t for t, v in zip(tasks, comp.delta_values(f, p)[1], strict=True) if v < 0]
            shown = {t: ci for t in tasks if (ci := shown_interval(stats or [], f, t, p)) is not None}
            below = [t for t in names if t in shown and shown[t][1] < 0]
            source = interval_source([ci[2] for ci in shown.values()])
            one_run |= ONE_RUN in source
            rows.append(
                [p, frac_label(f), k, n, ", ".join(names) or "—", len(below), len(shown), ", ".join(below) or "—",
                 source]
            )  # fmt: skip
    notes = [
        f"Counted over tasks with a defined Δ ({SEED_ORDER}). Δ < 0 counts point estimates, not negative transfer; "
        "'Interval < 0' only the tasks whose interval (Figure 3's: seeds when both paradigms ran ≥ 2, else the "
        "test-set bootstrap) lies wholly below 0, of the tasks that have one (none without seeds' spread or per-image "
        "scores); no interval is adjusted for the number of tasks."
    ]
    if one_run:
        notes.append(
            "A test-set interval is the paired bootstrap over the test images of one trained model per paradigm: it "
            "leaves training (seed) noise out, which is often several times larger (another seed can change the "
            "sign of Δ), so a task below 0 there is not shown to lose from the paradigm; run several seeds "
            "(`seeds:` in the study) for an interval that holds it."
        )
    return Table(
        "negative_transfer",
        f"Δ < 0 versus {comp.baseline}: point estimates, and tasks whose interval lies below 0",
        [
            "Paradigm",
            "Fraction",
            "Tasks with Δ<0",
            "of n",
            "Tasks",
            "Interval < 0",
            "of those with one",
            "Tasks, interval < 0",
            "Interval from",
        ],
        rows,
        notes,
    )


def na_table(comp: Comparison) -> Table:
    """Every Δ that could not be computed, with its reason."""
    rows: list[list[Cellv]] = [[frac_label(f), t, p, r] for f, t, p, r in comp.not_available()]
    return Table("delta_na", "Δ not available", ["Fraction", "Task", "Paradigm", "Reason"], rows)


def stats_table(stats: list[Stat], comp: Comparison | None = None, primary: Sequence[str] | None = None) -> Table:
    """Every test and interval of the study (not the per-task ones) with p, Holm-adjusted p and its family (primary
    or exploratory, `primary` the study's analysis.primary: usagg/analysis/families.py), effect sizes, n, method."""
    rows: list[list[Cellv]] = []
    for s in stats:
        if s.task:
            continue
        parts = []
        if s.ci is not None:
            parts.append(f"95 % CI [{significant(s.ci[0], sign=True)}, {significant(s.ci[1], sign=True)}]")
        if s.p is not None:
            parts.append(f"p = {s.p:.3g}")
        if s.note:
            parts.append(s.note)
        holm = f"{s.p_holm:.3g}" if s.p_holm is not None else "—"
        effects = "; ".join(f"{k} {significant(v, sign=True)}" for k, v in s.effects) or "—"
        rows.append([s.paradigm, frac_label(s.fraction), s.name, s.value, "; ".join(parts) or "—", holm,
                     s.family or "—", effects, s.n, s.method])  # fmt: skip
    tested = sum(1 for s in stats if s.p is not None and not s.task)
    notes = [
        "n: tasks (or groups, or seed-level values for the mixed model) entering the statistic; for Wilcoxon the "
        "non-zero differences scipy ranks (zero_method=wilcox drops zeros).",
        "p (Holm): Holm step-down adjustment within the test's family (family-wise error), primary or exploratory:"
        if tested
        else "p (Holm): no statistic of this table has a p-value, so none is adjusted.",
        *(family_lines(stats, comp, primary) if tested else []),
        "Effect sizes of the Wilcoxon tests: matched-pairs rank-biserial r = (R+ − R−)/(R+ + R−) over the non-zero "
        "differences, and the Hodges-Lehmann estimate (median of the Walsh averages, percentage points).",
        "Mixed-model slope: percentage points of Δ per doubling of the training-set size.",
        "Values, interval end-points and effect sizes to 3 significant digits (the CSV keeps every digit of a value).",
        *(exclusion_notes(comp) if comp is not None else []),
    ]
    return Table(
        "statistics",
        "Statistics of Δ",
        ["Paradigm", "Fraction", "Statistic", "Value", "p / CI", "p (Holm)", "Family", "Effect size", "n", "Method"],
        rows,
        notes,
        significant=("Value",),
    )


def split_table(
    comp: Comparison, fraction: float, ctls: list[Control], stats: list[Stat] | None = None, *, multi: bool = False
) -> Table:
    """Mean Δ and its aggregation and MoE parts (percentage points) by clinical group and over all tasks, each part
    over all tasks with its interval (`controls.split_stats`), the group rows descriptive; collapsed runs named."""
    by = {(s.paradigm, s.name): s for s in stats or [] if s.fraction == fraction}
    rows: list[list[Cellv]] = []
    notes = []
    for ctl in ctls:
        for sp in splits(comp, fraction, ctl):
            parts = [by.get((ctl.paradigm, split_stat_name(part))) if sp.level == "all" else None for part in PARTS]
            ends: list[Cellv] = [e for s in parts for e in (s.ci if s is not None and s.ci else (None, None))]
            note = "descriptive" if sp.level != "all" else part_interval(parts[0]) if not ends[0] else ""
            if sp.level == "all" and parts[0] is not None and parts[0].ci and parts[0].note:
                note = parts[0].note  # fewer clusters than the interval's coverage was checked at
            rows.append([sp.paradigm, ctl.control, sp.level, sp.name, sp.n, sp.total, sp.aggregation, sp.moe, *ends,
                         note])  # fmt: skip
        notes.append(split_order(ctl, comp.baseline))
        notes += split_collapse_notes(comp, fraction, ctl)
    notes += [
        "Additive by construction: Δ = aggregation part + MoE part, in percentage points of the baseline metric. "
        "The control measures its part first; an interaction of the two factors is in the other part (the 2x2 "
        "table, with TSM, AUD and CGD, reports it apart, with the symmetric split and intervals).",
        "95 % CI of a part over all tasks: the 2x2 effects' wild cluster bootstrap (clinical groups as clusters), no "
        "p; a group's parts are descriptive (no interval). Its end-points to 3 significant digits, as the 2x2 table "
        "shows the same intervals (the CSV keeps every digit).",
        *exclusion_notes(comp),
    ]
    title = f"Δ versus {comp.baseline} split into aggregation and MoE" + (
        f" (fraction {frac_label(fraction)})" if multi else ""
    )
    cols = ["Paradigm", "Control", "Level", "Name", "Tasks", "Δ %", "Δ aggregation (pp)", "Δ MoE (pp)",
            "Aggregation 95 % CI low", "Aggregation 95 % CI high", "MoE 95 % CI low", "MoE 95 % CI high",
            "Interval"]  # fmt: skip
    name = "split" + (f"_f{frac_label(fraction)}" if multi else "")
    return Table(name, title, cols, rows, notes, significant=tuple(cols[8:12]))


def part_interval(s: Stat | None) -> str:
    """A split part's interval in words as the split table shows it: `95 % CI -12.3 to +32.0`, or why it has none
    (descriptive)."""
    if s is None or s.value is None:
        return "descriptive"
    if s.ci is None:
        return f"descriptive ({s.note})" if s.note else "descriptive"
    return ci_words(s.ci)


def split_collapse_notes(comp: Comparison, fraction: float, ctl: Control) -> list[str]:
    """A sentence per split that a collapsed run enters (`controls.collapsed_in`): the run, and the parts over the
    tasks without it, so a reader sees how much of a part one failed run makes."""
    found = collapsed_in(comp, fraction, ctl)
    if not found:
        return []
    runs = ", ".join(f"{c.paradigm} {c.task} seed {c.seed} ({comp.info(c.task).metric} {fmt_metric(c.value)})"
                     for c in found)  # fmt: skip
    rest = split_without(comp, fraction, ctl, {c.task for c in found})
    without = (
        f"; without {'its task' if len({c.task for c in found}) == 1 else 'their tasks'}: aggregation "
        f"{rest.aggregation:+.1f} pp, MoE {rest.moe:+.1f} pp over {counted(rest.n, 'task')}"
        if rest is not None and rest.aggregation is not None and rest.moe is not None
        else ""
    )
    return [f"{ctl.paradigm} split: collapsed run {runs} (see Collapsed) enters its parts{without}."]


def factorial_table(
    comp: Comparison, stats: list[Stat], fraction: float, *, multi: bool = False, planned: Planned | None = None
) -> Table:
    """Main effects of aggregation and MoE and their interaction per 2x2 design (usagg/analysis/factorial.py),
    with intervals over all tasks and means per clinical group; says which tasks a missing job left out, and why
    a design has no 2x2 (a paradigm to add, a planned one without results: `planned`)."""
    cols = ["Paradigm", "Design", "Scale", "Effect", "Level", "Name", "Tasks", "Estimate", "95 % CI low",
            "95 % CI high", "p", "p (Holm)", "Note"]  # fmt: skip
    notes = [
        "Per task, with Δ versus the baseline on the row's scale (the baseline's own Δ is 0), A the control with the "
        "paradigm's scope and the baseline's MoE, M the one with the baseline's scope and the paradigm's MoE, AM "
        "the paradigm: aggregation = (Δ_A + Δ_AM − Δ_M)/2, MoE = (Δ_M + Δ_AM − Δ_A)/2, interaction = Δ_AM − Δ_A − "
        "Δ_M. The two main effects add up to Δ_AM (its Shapley split: neither holds the interaction), then the mean "
        "over tasks.",
        "Interval over all tasks, and on analysis.scale p (H0: effect 0, in the exploratory Holm family of the "
        "statistics table): wild cluster restricted bootstrap-t with Webb weights, the tasks of one clinical group "
        "one cluster (usagg/analysis/cluster_inference.py); group rows are means only.",
        "Scales: relative (%), log_ratio (100·ln of the ratio; its interaction is the log of a ratio of ratios), "
        "and analysis.scale where it is another; tasks whose log ratio is undefined are left out of that scale.",
        SIGNIFICANT_NOTE,
        *left_out_notes(comp, fraction),
        *missing_notes(comp, planned),
        *exclusion_notes(comp),
    ]
    title = "2x2 designs: aggregation and MoE effects and their interaction" + (
        f" (fraction {frac_label(fraction)})" if multi else ""
    )
    rows: list[list[Cellv]] = [list(r) for r in effect_table_rows(comp, stats, fraction)]
    why = incomplete_text(comp, planned)
    empty = f"(none: no 2x2 design is complete; {why})" if why else "(none)"
    name = "factorial" + (f"_f{frac_label(fraction)}" if multi else "")
    return Table(name, title, cols, rows, notes, empty=empty, significant=tuple(cols[7:12]))


#: The Signs agree cell: None (nothing to compare) renders as —.
_AGREE: dict[bool | None, str | None] = {True: "yes", False: "NO", None: None}


def _signs_agree(aggs: list[Aggregate]) -> bool | None:
    """Whether the means of one task set on each scale have one sign (a mean of 0 has any); None where there is
    nothing to compare: a scale without a mean, or scales whose means cover different tasks (a task whose Δ is
    undefined on one scale is left out of that scale's mean only)."""
    if any(a.mean is None for a in aggs) or len({a.tasks for a in aggs}) > 1:
        return None
    return len({math.copysign(1.0, a.mean) for a in aggs if a.mean}) <= 1


def scales_table(comp: Comparison, fraction: float, *, multi: bool = False) -> Table:
    """Mean Δ of every paradigm by clinical group and over all tasks on each scale, side by side, with whether
    their signs agree (they do task by task; a mean can differ in sign when large and small metrics mix)."""
    comps = {sc: comp if sc == comp.scale else rescaled(comp, sc) for sc in SCALES}
    rows: list[list[Cellv]] = []
    differ, undefined = [], 0
    for p in comp.others:
        for level in ("group", "all"):
            per = {sc: aggregates(c, fraction, p, level) for sc, c in comps.items()}
            for i, agg in enumerate(per[comp.scale]):
                aggs = [per[sc][i] for sc in SCALES]
                agree = _signs_agree(aggs)
                undefined += agree is None
                if agree is False:
                    differ.append(f"{p} {agg.name}")
                rows.append([p, level, agg.name, agg.n, *(a.mean for a in aggs), _AGREE[agree]])
    compared = len(rows) - undefined
    if differ:
        signs = "Signs differ: " + "; ".join(differ) + "."
    elif not undefined:
        signs = "The signs of every mean agree across scales."
    elif compared:
        signs = f"The signs agree across scales in each of the {counted(compared, 'row')} where they are compared."
    else:
        signs = "No row's means can be compared across scales."
    if undefined:
        signs += (
            f" Signs agree is — in {counted(undefined, 'row')}, where a scale has no mean, or the scales' means "
            "cover different tasks (a task whose Δ is undefined on one scale is left out of that scale's mean)."
        )
    notes = [
        *(f"{sc}: {FORMULAS[sc]} ({UNITS[sc]})." for sc in SCALES),
        f"The study's scale is {comp.scale} (analysis.scale); every other table uses it.",
        "A task's Δ has the same sign on every scale; a mean over tasks can change sign where one scale weighs a "
        "task's change more (relative: a small baseline; headroom: a baseline near the metric's best).",
        signs,
        *exclusion_notes(comp),
    ]
    title = "Mean Δ on each scale" + (f" (fraction {frac_label(fraction)})" if multi else "")
    cols = ["Paradigm", "Level", "Name", "Tasks", *[f"Δ {sc}" for sc in SCALES], "Signs agree"]
    return Table("scales" + (f"_f{frac_label(fraction)}" if multi else ""), title, cols, rows, notes)


def scale_disagreements(comp: Comparison, fraction: float) -> list[str]:
    """A sentence per paradigm whose Δm differs in sign between scales (over the same tasks), with the three values
    side by side."""
    out = []
    comps = [comp if sc == comp.scale else rescaled(comp, sc) for sc in SCALES]  # once, not once per paradigm
    for p in comp.others:
        aggs = [aggregates(c, fraction, p, "all")[0] for c in comps]
        if _signs_agree(aggs) is False:
            side = ", ".join(f"{sc} {fmt_delta(a.mean)}" for sc, a in zip(SCALES, aggs, strict=True))
            out.append(f"**{p} Δm differs in sign between scales**: {side} (see the table of Δ on each scale).")
    return out


def steps_ratio(comp: Comparison, fraction: float, task: str, paradigm: str) -> float | None:
    """Optimiser steps of the task under the paradigm over its steps under the baseline; None when unknown."""
    s, b = comp.steps.get((fraction, task, paradigm)), comp.steps.get((fraction, task, comp.baseline))
    return s / b if s is not None and b else None


def budget_table(comp: Comparison, fraction: float, *, multi: bool = False) -> Table:
    """Optimiser steps of each task per paradigm beside its Δ: the training budget a Δ was bought with."""
    cols = ["Task", "Group", "n_train", f"{comp.baseline} steps"]
    for p in comp.others:
        cols += [f"{p} steps", f"{p}/{comp.baseline}", f"Δ{p} %"]
    rows: list[list[Cellv]] = []
    for task in ordered_tasks(comp):
        n = comp.n_train.get((fraction, task), math.nan)
        row: list[Cellv] = [task, comp.info(task).group, None if math.isnan(n) else round(n)]
        row.append(count(comp.steps.get((fraction, task, comp.baseline))))
        for p in comp.others:
            row += [count(comp.steps.get((fraction, task, p))), steps_ratio(comp, fraction, task, p)]
            row.append(comp.deltas[(fraction, task, p)].value)
        rows.append(row)
    notes = [
        f"Steps: optimiser steps in which the task's loss was optimised (mean over seeds); {comp.baseline} "
        f"ratio: steps under the paradigm / steps under {comp.baseline}. A ratio far from 1 means Δ mixes "
        "aggregation with a different training budget (training.sampling).",
    ]
    title = "Training budget per task" + (f" (fraction {frac_label(fraction)})" if multi else "")
    return Table("budget" + (f"_f{frac_label(fraction)}" if multi else ""), title, cols, rows, notes)


def uncertainty_table(
    comp: Comparison, stats: list[Stat], fraction: float, *, multi: bool = False, resamples: int | None = None
) -> Table:
    """Per task and paradigm: Δ, its seed spread and t interval, the test-set bootstrap CI (`resamples` of it: the
    study's analysis.task_bootstrap) with its end-points' Monte Carlo error, and the one shown."""
    by = {(s.task, s.paradigm, s.name): s for s in stats if s.task and s.fraction == fraction}
    rows: list[list[Cellv]] = []
    for task in ordered_tasks(comp):
        for p in comp.others:
            seeds, test = by.get((task, p, SEEDS)), by.get((task, p, TEST_SET))
            if seeds is None and test is None:
                continue
            sd = dict(seeds.effects).get("sd") if seeds else None
            shown = shown_interval(stats, fraction, task, p)
            rows.append([
                task, p, comp.deltas[(fraction, task, p)].value, seeds.n if seeds else 0, sd,
                _ci_cell(seeds), _ci_cell(test), _ci_cell(by.get((task, p, BOTH))), shown[2] if shown else "—",
            ])  # fmt: skip
    notes = [
        "Seeds: Δ of each seed against the baseline's seed mean (their mean is Δ); sd over seeds; 95 % t interval "
        "with the standard error of both paradigms' seed spread (delta method, Welch df), where the paradigm and "
        "the baseline each ran 2 seeds or more (one seed of either: no spread measured, no interval).",
        "Test set: 95 % paired percentile bootstrap over the test images both jobs scored (item_scores.json), "
        "for the Δ of the seed means: every seed each paradigm ran, on the same resamples"
        + (f", {resamples:,} of them (analysis.task_bootstrap)" if resamples else "")
        + f". {_monte_carlo_text(stats, fraction)}",
        "Seeds + test set: the seed interval with the test-set bootstrap's variance added, never narrower than the "
        "seed interval: whether other seeds and other test images keep the sign; the interval the expectations "
        "read.",
        "Shown: the interval of Figure 3 and of the CSV's ci_low/ci_high: seeds when both paradigms ran ≥ 2, else the "
        "test set.",
    ]
    title = "Uncertainty of each task's Δ" + (f" (fraction {frac_label(fraction)})" if multi else "")
    cols = [
        "Task", "Paradigm", "Δ %", "Seeds", "sd of seed Δ", "95 % CI seeds", "95 % CI test set",
        "95 % CI seeds + test set", "Shown",
    ]  # fmt: skip
    keys: list[Key] = [
        "task", "paradigm", "delta_pct", "n_seeds", "seed_sd", ("seeds_ci_low", "seeds_ci_high"),
        ("test_ci_low", "test_ci_high"), ("both_ci_low", "both_ci_high"), "shown",
    ]  # fmt: skip
    name = "uncertainty" + (f"_f{frac_label(fraction)}" if multi else "")
    return Table(name, title, cols, rows, notes, keys)


def _monte_carlo_text(stats: list[Stat], fraction: float) -> str:
    """The Monte Carlo error of the test-set intervals' end-points at `fraction`: how far another bootstrap of as many
    resamples would move them (95 %, usagg/analysis/task_ci.py `endpoint_bands`), the largest and the median."""
    mc = [
        v for s in stats if s.task and s.name == TEST_SET and s.fraction == fraction
        if (v := dict(s.effects).get(MONTE_CARLO)) is not None
    ]  # fmt: skip
    if not mc:
        return "No test-set interval here, so no Monte Carlo error of one."
    return (
        f"Monte Carlo error of its end-points (95 %: how far another bootstrap of as many resamples would move one, "
        f"from the order statistics around it): {error_span(mc)}, in Δ's unit; an end-point closer to 0 than that "
        "could fall on the other side with another bootstrap seed."
    )


def _ci_cell(s: Stat | None) -> Interval:
    """`_ci_text` shown, the bounds in CSV."""
    low, high = s.ci if s is not None and s.ci is not None else (None, None)
    return Interval(low, high, _ci_text(s))


def _ci_text(s: Stat | None) -> str:
    """An interval as text; a test-set one says which Δ it is about where only some seeds scored their images."""
    if s is None:
        return "—"
    if s.ci is None:
        return s.note or "—"
    text = f"[{s.ci[0]:+.1f}, {s.ci[1]:+.1f}]"
    seeds = dict(s.effects).get("seeds scored")
    return (
        text
        if seeds is None or s.value is None
        else f"{text} around {s.value:+.1f} ({counted(int(seeds), 'seed')} scored)"
    )


def _interval(s: Stat | None, sig: bool = False) -> str:
    """A wild cluster interval as a cell (`sig`: its end-points to 3 significant digits), or why there is none."""
    if not (s and s.ci):
        return (s.note if s else "—") or "—"
    if sig:
        return f"[{significant(s.ci[0], sign=True)}, {significant(s.ci[1], sign=True)}]"
    return f"[{s.ci[0]:+.1f}, {s.ci[1]:+.1f}]"


def fraction_table(comp: Comparison, stats: list[Stat]) -> Table:
    """Δm as a function of the training fraction (data-scale sweep): over every task with a Δ at that fraction, and
    over the tasks with a Δ at every fraction (`fraction_trend.COMMON_MEAN`), the one set a trend can be read on."""
    boot = {(s.paradigm, s.fraction): s for s in stats if s.name == MEAN_DELTA}
    common = {(s.paradigm, s.fraction): s for s in stats if s.name == COMMON_MEAN}
    rows: list[list[Cellv]] = []
    for p in comp.others:
        for f in comp.fractions:
            s, c = boot.get((p, f)), common.get((p, f))
            rows.append([
                p, frac_label(f), s.value if s else None, _interval(s), s.n if s else 0,
                c.value if c else None, _interval(c), c.n if c else 0,
            ])  # fmt: skip
    left = [f"{p}: {', '.join(f'{t} ({why})' for t, why in why_out.items())}" for p in comp.others
            if (why_out := common_tasks(comp, p)[1])]  # fmt: skip
    return Table(
        "fractions",
        f"Δm versus {comp.baseline} by training fraction",
        ["Paradigm", "Fraction", "Δm %", "95 % CI", "n tasks", "Δm, common tasks %", "95 % CI, common", "n common"],
        rows,
        [
            f"Δm: {SEED_ORDER}, then mean over the tasks with a Δ at that fraction; 95 % CI: wild cluster restricted "
            "bootstrap-t (usagg/analysis/cluster_inference.py), a clinical group's tasks one cluster (fewer than 3 "
            "clusters: no interval).",
            "Δm, common tasks: the same over the tasks with a Δ in the paradigm's aggregates at every fraction, so "
            "that a change along the fractions is not a change of the tasks averaged (fig_fraction draws these)"
            + (f"; left out: {'; '.join(left)}." if left else "; every task has a Δ at every fraction."),
        ],
    )


def fraction_trend_table(comp: Comparison, stats: list[Stat]) -> Table:
    """The slope of Δ against data scale pooled over the fractions (`fraction_trend.FRACTION_SLOPE`), per paradigm,
    with the tasks it leaves out and why."""
    by = {s.paradigm: s for s in stats if s.name == FRACTION_SLOPE}
    rows: list[list[Cellv]] = []
    for p in comp.others:
        s = by.get(p)
        tasks, why = common_tasks(comp, p)
        why |= {t: "one n_train at every fraction" for t in tasks if task_slope(comp, t, p) is None}
        left = "; ".join(f"{t} ({w})" for t, w in why.items()) or "—"
        p_value, holm = (None, None) if s is None else (s.p, s.p_holm)
        rows.append([p, s.n if s else 0, s.value if s else None, _interval(s, sig=True), p_value, holm, left])
    return Table(
        "fraction_trend",
        f"Δ versus {comp.baseline} against data scale across fractions (within task)",
        ["Paradigm", "Tasks", "Slope per tenfold n_train", "95 % CI", "p", "p (Holm)", "Left out"],
        rows,
        [
            "Slope: each task's least-squares slope of Δ on log10 n_train over the fractions (within task: the task "
            "stays, its training data grows), then the mean over the tasks with a Δ at every fraction, in Δ's unit "
            f"({UNITS[comp.scale]}) per tenfold n_train; 95 % CI and p (H0: slope 0): the wild cluster restricted "
            "bootstrap-t of Δm, a clinical group's tasks one cluster (fewer than 3 clusters: none); p in the "
            "exploratory Holm family of the statistics table.",
            "What each statistic of Δ against data scale pools: this slope pools the fractions within each task; "
            "Spearman ρ(Δ, log n_train) and the mixed model's slope compare tasks of different sizes within one "
            "fraction (undefined where every task has the same n_train at a fraction, as at the synthetic "
            "benchmark's default sizes), and Δm by fraction is descriptive.",
            SIGNIFICANT_NOTE,
        ],
        significant=("Slope per tenfold n_train", "p", "p (Holm)"),
    )


def count(v: float | None) -> float | int | None:
    """A count kept as a float (a median or mean over seeds) as an int where it is whole, so a CSV reads 51, not
    51.0; a fractional one (a median between two seeds) stays a float."""
    return int(v) if v is not None and v.is_integer() else v


def delta_long_table(comp: Comparison, stats: list[Stat] | None = None) -> Table:
    """Machine-readable: one row per (fraction, task, paradigm) with mean, sd, seeds, n_train, Δ, its interval
    (ci_low, ci_high, ci_source: seeds when ≥ 2, else the test-set bootstrap), steps and their ratio to the
    baseline's, and whether the task is left out of the paradigm's aggregates (a one-task group, a baseline at
    chance); delta_pct is on analysis.scale (the `scale` column)."""
    cols = [
        "fraction", "task", "group", "type", "metric", "higher_is_better", "n_train",
        "paradigm", "mean", "sd", "n_seeds", "baseline", "delta_pct", "delta_note",
        "ci_low", "ci_high", "ci_source", "steps", "steps_ratio", "in_aggregates", "scale",
    ]  # fmt: skip
    rows: list[list[Cellv]] = []
    for f in comp.fractions:
        for task in ordered_tasks(comp):
            info = comp.info(task)
            n = comp.n_train.get((f, task), math.nan)
            for p in comp.paradigms:
                cell = comp.cells.get((f, task, p))
                d = comp.deltas.get((f, task, p))
                shown = shown_interval(stats or [], f, task, p)
                rows.append([
                    f, task, info.group, info.type, info.metric, str(info.higher_is_better).lower(),
                    None if math.isnan(n) else count(n), p,
                    cell.mean if cell else None,
                    cell.sd if cell and not math.isnan(cell.sd) else None,
                    cell.n_seeds if cell else 0, comp.baseline,
                    d.value if d else None, (d.reason if d else "baseline"),
                    shown[0] if shown else None, shown[1] if shown else None, shown[2] if shown else "",
                    count(comp.steps.get((f, task, p))), steps_ratio(comp, f, task, p),
                    str(task not in comp.left_out(f, p)).lower(), comp.scale,
                ])  # fmt: skip
    return Table("delta", f"Δ versus {comp.baseline}, per task", cols, rows)


def affinity_order(comp: Comparison, aff: Affinity) -> list[tuple[str, list[str]]]:
    """The affinity's tasks by clinical group (groups and tasks in report order); tasks without results last, "-"."""
    known = [t for t in ordered_tasks(comp) if t in aff.tasks]
    out: dict[str, list[str]] = {}
    for t in known:
        out.setdefault(comp.info(t).group, []).append(t)
    rest = [t for t in aff.tasks if t not in known]
    if rest:
        out.setdefault("-", []).extend(rest)
    return list(out.items())


def within_affinity(aff: Affinity, members: tuple[str, ...] | list[str]) -> float | None:
    """Mean affinity between the members of a group (over ordered pairs i ≠ j, so the mean over its tasks of the
    affinity onto each from the others); None for a group of one or tasks the affinity does not know."""
    ts = [t for t in members if t in aff.tasks]
    if len(ts) < 2 or len(ts) != len(members):
        return None
    return sum(aff.onto(t, ts) for t in ts) / len(ts)


def recovery_scores(inp: AnalysisInput, comp: Comparison) -> tuple[float, float, float, float] | None:
    """(Rand index, adjusted Rand index) of the AG grouping against the designed one, then the clinical grouping's,
    over the tasks all three name; None unless both groupings are there."""
    from usagg.grouping import adjusted_rand_index, rand_index

    designed, ag = inp.designed_groups, inp.ag_labels
    if not designed or not ag:
        return None
    tasks = [t for t in inp.task_order if t in designed and t in ag]
    if len(tasks) < 2:
        return None
    d = {t: designed[t] for t in tasks}
    g = {t: ag[t] for t in tasks}
    clinical = {t: comp.info(t).group for t in tasks}
    return rand_index(d, g), adjusted_rand_index(d, g), rand_index(d, clinical), adjusted_rand_index(d, clinical)


#: Adjusted Rand index from which AG's groups count as the designed ones recovered (most pairs placed right).
RECOVERED_ARI = 0.8


def recovery_line(inp: AnalysisInput, comp: Comparison) -> str | None:
    """The sentence on how well AG recovered the synthetic benchmark's designed groups; None when not applicable."""
    scores = recovery_scores(inp, comp)
    if scores is None:
        return None
    ri, ari, ri_clinical, ari_clinical = scores
    verdict = "recovers" if ari >= RECOVERED_ARI else "does not recover"
    return (
        f"AG {verdict} the designed affinity groups of the synthetic benchmark: Rand index {ri:.2f} "
        f"(adjusted {ari:+.2f}; 1 = the designed groups exactly, adjusted 0 = chance); the clinical groups "
        f"score {ri_clinical:.2f} (adjusted {ari_clinical:+.2f})."
    )


#: Share of resamples choosing AG's grouping again below which the measured affinity does not determine it.
STABLE_SHARE = 0.5
#: Share of resamples from which a pair of AG group mates counts as kept together.
KEPT_TOGETHER = 0.8


def stability_notes(aff: Affinity, groups: list[tuple[str, ...]], search: str = "auto") -> list[str]:
    """How stable AG's groups are under the affinity's own measurement noise (usagg/grouping.py
    `grouping_stability`: block bootstrap resamples, the block length per job in `Stability.blocks`), and where they
    are not, what that means for AG's Δ and what the resampling assumes; one line why where not computed."""
    from usagg.grouping import BLOCKS_PER_DRAW, SEARCH_LIMITS, grouping_stability

    head = "Stability of AG's groups under the affinity's measurement noise not computed"
    if not aff.base_losses:
        return [f"{head}: the affinity record keeps no per-measurement losses (written by an earlier usagg)."]
    if aff.at_resolution:  # its ties repeat in every resample: "chosen again" would vouch for rounding
        return [f"{head}: {aff.resolution_text()}."]
    if sorted(t for g in groups for t in g) != sorted(aff.tasks):
        return [f"{head}: AG's groups in the results do not cover the affinity's {counted(len(aff.tasks), 'task')}."]
    st = grouping_stability(aff, len(groups), groups, exhaustive_limit=SEARCH_LIMITS[search])
    if st is None:
        return [f"{head}: a measuring job kept a single measurement, so there is nothing to resample."]
    if st.not_computed:
        return [f"{head}: {st.not_computed}."]
    jobs = len(st.measurements)
    within = f" within each of its {jobs} jobs ({' + '.join(map(str, st.measurements))})" if jobs > 1 else ""
    kept = [f"{a} + {b} ({100 * v:.0f} %)" for (a, b), v in st.together.items() if v >= KEPT_TOGETHER]
    fewest = 2 * BLOCKS_PER_DRAW  # the fewest measurements of a job that are drawn in blocks (grouping.block_length)
    blocked = max(st.blocks, default=1) > 1
    runs = " / ".join(map(str, dict.fromkeys(st.blocks)))  # one length, or each job's where they differ
    how = (
        f"in runs of {runs} consecutive measurements along training, drawn with replacement{within}"
        if blocked
        else f"drawn one at a time with replacement{within}: fewer than {fewest} per job are too few for blocks"
    )
    notes = [
        f"Stability: over {st.draws} resamples of the affinity's {counted(sum(st.measurements), 'measurement')} "
        f"({how}; Z recomputed, groups searched again with the same k), AG's grouping was chosen again in "
        f"{100 * st.same:.0f} %, mean adjusted Rand index {st.mean_ari:.2f}; pairs kept together in at least "
        f"{100 * KEPT_TOGETHER:.0f} % of resamples: {', '.join(kept) or 'none'}."
    ]
    assumes = (
        f"Resampling keeps runs of {runs} consecutive measurements together, so within a run it carries their "
        "dependence along training, shared weights and a drifting loss level; it assumes the dependence reaches no "
        "further than a run and is stationary, alike all along training, and a run may wrap from the last "
        "measurement to the first."
        if blocked
        else "Resampling draws single measurements, as if those taken at different points of training were "
        "exchangeable, though consecutive ones share weights and the loss level drifts, so the spread may be "
        f"understated; a job of {fewest} or more measurements, with a smaller analysis.affinity.every, is drawn in "
        "runs of consecutive ones."
    )
    if st.same < STABLE_SHARE:
        notes.append(
            f"AG's grouping was chosen again in fewer than {100 * STABLE_SHARE:.0f} % of the resamples: the measured "
            "affinity does not fix AG's whole grouping beyond its measurement noise, so another run or another machine "
            "may choose other groups, and AG's Δ changes with them; the pairs kept together above are what it "
            f"supports. ({assumes})"
        )
    return notes


def stability_line(inp: AnalysisInput) -> str | None:
    """The report's headline sentence on AG's stability (`stability_notes`), None where it was not computed."""
    from usagg.grouping import SEARCH_LIMITS, grouping_stability

    groups = list(paradigm_groups(inp.table, "AG", inp.task_order).values())
    aff = inp.affinity
    if not groups or aff is None or not aff.base_losses or sorted(t for g in groups for t in g) != sorted(aff.tasks):
        return None
    if aff.at_resolution:
        return f"AG's groups are arbitrary: {aff.resolution_text()} (Affinity groups)."
    st = grouping_stability(aff, len(groups), groups, exhaustive_limit=SEARCH_LIMITS[inp.ag_search])
    if st is None or st.not_computed:
        return None
    kept = [f"{a} + {b}" for (a, b), v in st.together.items() if v >= KEPT_TOGETHER]
    supported = f"; the pairs it supports (together in ≥ {100 * KEPT_TOGETHER:.0f} %): {', '.join(kept) or 'none'}"
    blocked = max(st.blocks, default=1) > 1
    verdict = (
        "the measured affinity does not fix the whole grouping, so another run or machine may train other groups "
        "and AG's Δ with them" + supported
        if st.same < STABLE_SHARE
        else "the measured affinity fixes them beyond its measurement noise"
        if blocked
        else "the measured affinity picks them out of its measurement noise, as far as measurements drawn one at a "
        "time can tell (they may understate it: Affinity groups)"
    )
    blocks = " / ".join(map(str, dict.fromkeys(st.blocks)))
    how = f"in runs of {blocks} consecutive ones" if blocked else "drawn one at a time"
    return (
        f"AG's groups came back exactly in {100 * st.same:.0f} % of {st.draws} resamples of the affinity's "
        f"measurements ({how}; mean adjusted Rand index {st.mean_ari:.2f}): {verdict} (Affinity groups)."
    )


def ag_group_table(inp: AnalysisInput, comp: Comparison) -> Table | None:
    """The groups AG trained (job name, tasks, their clinical groups) with the mean affinity within each, the
    clinical groups' own in the notes for comparison; None without AG results."""
    groups = paradigm_groups(inp.table, "AG", inp.task_order)
    if not groups:
        return None
    aff = inp.affinity
    known = {t.task for t in comp.tasks}
    rows: list[list[Cellv]] = []
    for name, members in groups.items():
        clinical = list(dict.fromkeys(comp.info(t).group for t in members if t in known))
        within = within_affinity(aff, members) if aff is not None else None
        rows.append([name, len(members), ", ".join(members), ", ".join(clinical), within])
    notes = ["Groups: the tasks of each AG job at the largest fraction (lowest seed); the job name is the group."]
    if aff is not None:
        notes.append(
            "Mean within-group affinity: mean lookahead affinity Z[i→j] over ordered pairs of different tasks of "
            "the group (— for a group of one), from the affinity AG grouped by."
        )
        clinical_groups: dict[str, list[str]] = {}
        for t in ordered_tasks(comp):
            clinical_groups.setdefault(comp.info(t).group, []).append(t)
        parts = [  # three significant digits, as the table's affinity cells (render.cell_text): 1e-6 stays readable
            f"{g} {w:+.3g}" for g, ts in clinical_groups.items() if (w := within_affinity(aff, ts)) is not None
        ]
        if parts:
            notes.append(f"For comparison, the clinical groups' mean within-group affinity: {', '.join(parts)}.")
        notes.extend(stability_notes(aff, list(groups.values()), inp.ag_search))
    else:
        notes.append("No affinity record in the run store, so no within-group affinity.")
    line = recovery_line(inp, comp)
    if line:
        notes.append(line)
    cols = ["AG group", "Tasks", "Members", "Clinical groups", "Mean within-group affinity"]
    return Table("affinity_groups", "Affinity groups (AG)", cols, rows, notes)


def describe_lookahead(aff: Affinity) -> str:
    """The lookahead step the record was measured with (analysis.affinity.lookahead), in words."""
    if aff.lookahead not in ("sgd", "adamw"):
        return "the step: not recorded by the usagg that measured it"
    if aff.lookahead_lr is not None:
        rate = f"rate {aff.lookahead_lr:g}"
    else:
        rate = "the encoder's rate at that step" if aff.lookahead == "sgd" else "each parameter group's rate"
    if aff.lookahead == "sgd":
        return f"the step: θ − lr·g_i on task i's gradient g_i, at {rate}"
    return f"the step: one AdamW step of a copy of the job's optimiser on task i's gradient, at {rate}"


def affinity_table(aff: Affinity, comp: Comparison) -> Table:
    """The affinity matrix as numbers: a row per source task (the task stepped on), a column per target."""
    order = [t for _, ts in affinity_order(comp, aff) for t in ts]
    idx = {t: aff.tasks.index(t) for t in order}
    rows: list[list[Cellv]] = [[s, *[aff.matrix[idx[s]][idx[t]] for t in order]] for s in order]
    jobs = len([j for j in aff.job_id.split(",") if j]) or 1
    notes = [
        "Z[i→j] = 1 − L_j(θ after one step on task i) / L_j(θ) on fixed probe batches (lookahead affinity, "
        f"Fifty et al. 2021; {describe_lookahead(aff)}, losses summed over "
        f"{counted(len(aff.steps), 'measurement')} every {counted(aff.every, 'step')} before dividing; "
        f"{counted(jobs, 'job')} averaged); "
        "row i: the task stepped on, column j: the task whose loss is read; positive: a step on i helps j.",
        f"Measuring took {aff.seconds:.1f} s, {aff.share:.1%} of the training time of "
        f"{'the job' if jobs == 1 else f'the {jobs} jobs'} that measured it.",
    ]
    if aff.at_resolution:
        notes.append(f"At float resolution: {aff.resolution_text()}.")
    if aff.overshot:
        notes.append(
            f"Negative self-affinity (diagonal) for {', '.join(aff.overshot)}: the lookahead step raised that task's "
            "own loss, so it overshoots and the matrix reads curvature more than help between tasks; measure again "
            "with a lower analysis.affinity.lookahead_lr."
        )
    return Table(
        "affinity", "Inter-task affinity Z[source→target]", ["Source", *[f"→ {t}" for t in order]], rows, notes
    )
