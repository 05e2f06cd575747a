"""`usagg report`: report.md, a self-contained report.html, figures/, tables/*.csv and tables/*.tex.

The folder is regenerated on purpose: every file is written atomically, and the files an
earlier report listed in its manifest (MANIFEST: written first, marked incomplete, and again last) but this one did
not write are removed, so nothing stale remains; a manifest is data, so only names a report writes count
and nothing else in the folder is ever touched. A folder without the manifest that already holds a
file the report would write, and a folder that is, lies in or holds the run store read, are refused.
Both documents open with a short summary and a table of contents, then the headline
statistics, and end with a provenance block (usagg/analysis/provenance.py); report.html is
report.md rendered by markdown-it (usagg/analysis/report_html.py) and reads on a phone.
A "Selection gap" section sets Δm under model-scope selection, task-scope selection and the last epoch side by
side (usagg/analysis/selection_gap.py), or says why a study has none. Where the study measured inter-task
affinity, an "Affinity groups" section holds its figures and tables (usagg/analysis/figure_affinity.py,
tables.py); every report ends with the "Advice" of usagg/analysis/advise.py, or the reason
the study cannot support it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import stat
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from usagg.analysis.cluster_inference import FEW_CLUSTERS, MEAN_DELTA
from usagg.analysis.controls import PARTS, controls, split_stat_name, splits
from usagg.analysis.digits import ci_words, significant
from usagg.analysis.factorial import headline as factorial_headline
from usagg.analysis.families import PRIMARY, family_lines
from usagg.analysis.figures import AFFINITY_FIGURES, FIGURE_DPI, FIGURES, FigureOut, render_all
from usagg.analysis.fraction_trend import COMMON_MEAN, FRACTION_SLOPE, common_tasks
from usagg.analysis.mixed import SLOPE, UNIT, shared_notes
from usagg.analysis.provenance import RANDOM_INIT_LINE, Provenance, provenance
from usagg.analysis.render import md_table, md_text, to_csv, to_latex, to_markdown
from usagg.analysis.report_html import anchor as _anchor
from usagg.analysis.report_html import render_page
from usagg.analysis.selection_gap import gap_table, headline_line, selection_gap
from usagg.analysis.selection_warnings import selection_line
from usagg.analysis.stats import Stat
from usagg.analysis.summary import Analysis, all_tables
from usagg.analysis.tables import (
    ONE_RUN,
    Table,
    collapse_notes,
    delta_long_table,
    exclusion_notes,
    frac_label,
    negative_table,
    note_subject,
    part_interval,
    recovery_line,
    scale_disagreements,
    split_collapse_notes,
    stability_line,
    steps_ratio,
)
from usagg.atomic import write_text_atomic
from usagg.errors import UsaggError
from usagg.joblock import JobLock, JobLocked, describe_holder
from usagg.safepath import printable, real_folder
from usagg.wording import counted

#: What draws the report's figures: figures.render_all, or the memoised one of usagg/analysis/outputs.py.
Renderer = Callable[[Analysis, Path, str, int], list[FigureOut]]

#: The list of files a report wrote; the next report removes those it does not write again (`_remove_stale`).
MANIFEST = ".usagg-report.json"
#: What `usagg plot` leaves in each folder it draws into: the figures it wrote, so a report into the folder above
#: (`usagg report` after `usagg plot`, the default folders) takes them as usagg's, not a user's files.
PLOT_MANIFEST = ".usagg-figures.json"
#: The lock file a `usagg plot` or `usagg report` holds in the folder it writes, while it writes (`writing`).
WRITING_LOCK = ".usagg-writing.lock"
#: The documents at the top of a report folder (and of each swept point's sub-folder): markdown, then HTML.
DOCUMENTS = ("report.md", "report.html")
#: The format of a report's figures (folder/figures/<name>.png).
FIGURE_FORMAT = "png"

log = logging.getLogger(__name__)


#: The section after the contents that holds every headline statistic; the summary above the contents stays short.
HEADLINE = "Headline statistics"


def _at_largest_fraction(a: Analysis) -> tuple[float, dict[tuple[str, str], Stat], dict[Any, list[Any]]]:
    """The summary's and the headline's common ground: the largest fraction, its statistics by (paradigm, name),
    and its negative-transfer rows by paradigm."""
    f = max(a.comp.fractions)
    by = {(s.paradigm, s.name): s for s in a.stats if s.fraction == f}
    neg = {r[0]: r for r in negative_table(a.comp, a.stats).rows if r[1] == frac_label(f)}
    return f, by, neg


def _below(row: list[Any]) -> str:
    """How many of a negative-transfer row's tasks have their interval below 0, of those that have one."""
    if not row[6]:
        return "point estimates; no task has an interval"
    if row[8] == ONE_RUN:  # one seed: the interval is no verdict on the paradigm, and says so where it is read
        return f"point estimates; interval below 0 in {row[5]} of the {row[6]} that have one, a {ONE_RUN}"
    if ONE_RUN in row[8]:
        return f"point estimates; interval below 0 in {row[5]} of the {row[6]} that have one ({row[8]})"
    return f"point estimates; interval over seeds below 0 in {row[5]} of the {row[6]} that have one"


def _delta_m(boot: Stat) -> str:
    """Δm with its wild cluster CI, or why it has none (too few clusters), as the summary and the headline say it."""
    assert boot.value is not None
    if boot.ci:
        few = f"; {boot.note}" if boot.note else ""  # fewer clusters than its coverage was checked at
        return f"{boot.value:+.1f} % ({ci_words(boot.ci)}{few})"  # end-points as the statistics table shows them
    return f"{boot.value:+.1f} % (no interval: {boot.note})" if boot.note else f"{boot.value:+.1f} %"


def _summary_delta_m(boot: Stat) -> str:
    """Δm as the summary says it: `_delta_m`, but where 3 clusters leave the interval uninformative by construction
    (it covers 99 % where it claims 95 %, some ±150 % on the demo's CG) a statement in place of its numbers, which
    the statistics table and the headline keep beside that note."""
    if boot.value is not None and boot.ci and boot.note == FEW_CLUSTERS[3]:
        return f"{boot.value:+.1f} % ({UNINFORMATIVE})"
    return _delta_m(boot)


#: What the summary says in place of a 3-cluster interval's numbers.
UNINFORMATIVE = "3 clinical groups give no informative interval: see Statistics of Δ"


def _summary(a: Analysis) -> list[str]:
    """One short line per paradigm (Δm with its CI, negative transfer), AG's recovery of the designed groups where
    measured, and a pointer to the full statistics: what a reader needs before the contents, on one phone screen."""
    comp = a.comp
    f, by, neg = _at_largest_fraction(a)
    lines = []
    for p in comp.others:
        boot: Stat | None = by.get((p, MEAN_DELTA))
        line = f"**{p}**: Δm " + (_summary_delta_m(boot) if boot and boot.value is not None else "n/a")
        if boot is not None and boot.family == PRIMARY:  # the confirmatory answer belongs up front
            line += f", {_p(boot)}"
        values = comp.delta_values(f, p)[1]
        if len(values):  # a mean of relative changes is pulled by one task far from the rest (a baseline near chance)
            line += f", median Δ {statistics.median(map(float, values)):+.1f} %"
        lines.append(
            line + (f", Δ < 0 in {neg[p][2]} of {counted(neg[p][3], 'task')} ({_below(neg[p])})" if p in neg else "")
        )
    warned = selection_line(a.inp)
    if warned:  # the jobs' own warnings, which qualify every number below
        lines.append(warned)
    recovery = recovery_line(a.inp, comp)
    if recovery:  # what a synthetic study with AG is run for
        lines.append(f"**AG recovery**: {recovery}")
    stability = stability_line(a.inp)
    if stability:  # whether AG's Δ would survive another run's grouping
        lines.append(f"**AG stability**: {stability}")
    if comp.no_delta:
        lines.append(comp.no_delta)
    else:
        sweep = (
            f"; the trend over fractions {', '.join(map(frac_label, comp.fractions))} there too"
            if len(comp.fractions) > 1
            else ""
        )
        lines.append(
            f"Δ versus {comp.baseline} at fraction {frac_label(f)}; tests, slopes and splits under {HEADLINE} "
            f"below{sweep}."
        )
    return lines


def _shared_fit_notes(a: Analysis, f: float) -> list[str]:
    """Notes that leave several estimates of one mixed-model fit without a CI (a covariance that is not positive
    definite): the headline says each once, not beside every slope and interaction."""
    seen: dict[str, int] = {}
    for s in a.stats:
        if s.fraction == f and s.name.startswith("mixed model") and s.value is not None and s.ci is None and s.note:
            seen[s.note] = seen.get(s.note, 0) + 1
    return [note for note, n in seen.items() if n > 1]


def _care_notes(a: Analysis, f: float) -> list[str]:
    """The notes of the mixed model's estimates that have an interval, each bullet naming what it qualifies, in the
    headline's paradigm order: the notes of the whole fit once (as a variance at 0), then each slope's own (as one
    task carrying it), then an interaction's own; a reader need not match "+57.0" back to its paradigm by hand."""
    comp = a.comp
    fitted = [s for s in a.stats if s.fraction == f and s.name.startswith("mixed model") and s.ci]
    fitted.sort(key=lambda s: (s.name != SLOPE, comp.others.index(s.paradigm) if s.name == SLOPE else 0))
    common, own = shared_notes(fitted)
    slopes = ", ".join(s.paradigm for s in fitted if s.name == SLOPE)
    lines = [f"**Mixed model (whole fit: {slopes} vs {comp.baseline}), read with care**: {common}."] if common else []
    for s, note in own:
        what = f"{s.paradigm} vs {comp.baseline}" if s.name == SLOPE else s.name.removeprefix("mixed model: ")
        lines += [f"**Mixed model ({what}), read with care**: {note}."] if note else []
    return lines


def _headline(a: Analysis) -> list[str]:
    """One line per paradigm: Δm with CI, negative transfer, the data-scale correlation and the mixed model's slope
    (Holm-adjusted p beside the raw one); then which one-task groups were left out, and why."""
    comp = a.comp
    if comp.no_delta:
        return [f"None: only the baseline {comp.baseline} has results (see the summary above)."]
    f, by, neg = _at_largest_fraction(a)
    lines = []
    unfit = _shared_fit_notes(a, f)
    for p in comp.others:
        boot: Stat | None = by.get((p, MEAN_DELTA))
        rho: Stat | None = by.get((p, "Spearman ρ(Δ, log n_train), tasks"))
        slope: Stat | None = by.get((p, SLOPE))
        parts = [f"**{p} vs {comp.baseline}** (fraction {frac_label(f)}):"]
        if boot and boot.value is not None:
            tested = f" ({_p(boot)})" if boot.p is not None else ""  # the interval alone is not adjusted: p and Holm
            parts.append(f"Δm = {_delta_m(boot)}{tested} over {counted(boot.n, 'task')};")
        if p in neg:
            parts.append(f"Δ < 0 in {neg[p][2]} of {counted(neg[p][3], 'task')} ({_below(neg[p])});")
        if rho and rho.value is not None and rho.p is not None:
            parts.append(f"Spearman ρ(Δ, log n_train) = {rho.value:+.2f} ({_p(rho)}, n = {rho.n});")
        elif rho and rho.value is not None:  # tasks sharing a model: descriptive, the slope below is the test
            parts.append(
                f"Spearman ρ(Δ, log n_train) = {rho.value:+.2f} over {counted(rho.n, 'task')} (descriptive, no p);"
            )
        elif rho:
            parts.append(f"Spearman ρ(Δ, log n_train): {rho.note};")
        if slope and slope.value is not None and slope.ci:
            parts.append(f"mixed-model slope {_signed(slope.value)} pp {UNIT} ({ci_words(slope.ci)}, {_p(slope)}).")
        elif slope and slope.value is not None and slope.note in unfit:  # the whole fit's: said once, below
            parts.append(f"mixed-model slope {_signed(slope.value)} pp {UNIT} (no CI or p: see Mixed model).")
        elif slope:
            parts.append(f"mixed model: {slope.note}.")
        lines.append(" ".join(parts))
    lines += _care_notes(a, f)  # beside its intervals
    lines += [f"**Mixed model**: {note}." for note in unfit]
    lines += [f"**Holm family**: {note}" for note in family_lines(a.stats, comp, a.inp.settings.primary)]
    shared: dict[str, list[str]] = {}
    for s in a.stats:
        if s.fraction != f or not s.name.startswith("mixed model: interaction") or s.value is None:
            continue
        label = f"**Interaction** ({s.name.removeprefix('mixed model: interaction, ')}):"
        if s.ci is None and s.note in unfit:
            shared.setdefault(s.note, []).append(f"{s.paradigm.replace('-', ' − ')} {_signed(s.value)}")
        elif s.ci is None:  # no standard error: the estimate alone is no finding
            lines.append(f"{label} {s.note}.")
        else:
            lines.append(f"{label} {_signed(s.value)} pp {UNIT} ({ci_words(s.ci)}, {_p(s)}).")
    lines += [
        f"**Interactions** (slope differences, pp {UNIT}; no CI or p: see Mixed model): {', '.join(v)}."
        for v in shared.values()
    ]
    for ctl in controls(comp):
        whole = splits(comp, f, ctl)[-1]
        if whole.total is not None:
            agg, moe = (part_interval(by.get((ctl.paradigm, split_stat_name(part)))) for part in PARTS)
            lines.append(
                f"**{ctl.paradigm} split** (control {ctl.control}): Δm {whole.total:+.1f} pp = aggregation "
                f"{whole.aggregation:+.1f} pp ({agg}) + MoE {whole.moe:+.1f} pp ({moe}) over "
                f"{counted(whole.n, 'task')} ({ctl.formula(comp.baseline)})"
                + "".join(
                    f"; {n.removeprefix(f'{ctl.paradigm} split: ')[:-1]}" for n in split_collapse_notes(comp, f, ctl)
                )
                + "."
            )
    lines += factorial_headline(comp, a.stats, f, a.inp.planned) + scale_disagreements(comp, f) + _budget_line(a, f)
    gap = headline_line(selection_gap(a.inp, comp))
    if gap:
        lines.append(gap)
    lines += _sweep_lines(a)
    return lines + exclusion_notes(comp) + collapse_notes(comp)  # AG's recovery and stability: the summary's


def _sweep_lines(a: Analysis) -> list[str]:
    """A data-scale sweep's trend, one line per paradigm: Δm at each fraction over the tasks with a Δ at every
    fraction (one task set along the sweep) and the within-task slope across fractions with its interval and p, or
    why it has none (usagg/analysis/fraction_trend.py); nothing for a study of one fraction."""
    comp = a.comp
    if len(comp.fractions) < 2:
        return []
    common = {(s.paradigm, s.fraction): s for s in a.stats if s.name == COMMON_MEAN}
    slope = {s.paradigm: s for s in a.stats if s.name == FRACTION_SLOPE}
    lines = []
    for p in comp.others:
        tasks, left = common_tasks(comp, p)
        means = [common.get((p, f)) for f in comp.fractions]
        if not tasks or any(m is None or m.value is None for m in means):
            lines.append(f"**Data-scale sweep, {p}**: no task has a Δ at every fraction, so there is no trend to read.")
            continue
        trend = " → ".join(f"{m.value:+.1f}" for m in means if m is not None and m.value is not None)
        out = f"; left out: {', '.join(f'{t} ({w})' for t, w in left.items())}" if left else ""
        s = slope.get(p)
        if s is None or s.value is None:
            how = f"no within-task slope ({s.note if s else 'not computed'})"
        elif s.ci is not None:
            tested = f", {_p(s)}" if s.p is not None else ""
            how = f"within-task slope {_signed(s.value)} pp per tenfold n_train ({ci_words(s.ci)}{tested})"
        else:
            how = f"within-task slope {_signed(s.value)} pp per tenfold n_train (no interval: {s.note}; descriptive)"
        lines.append(
            f"**Data-scale sweep, {p}** (fractions {', '.join(map(frac_label, comp.fractions))}): Δm {trend} % over "
            f"the same {counted(len(tasks), 'task')}{out}; {how} (Statistics: by training fraction, across fractions)."
        )
    return lines


#: Steps under a paradigm over TS's beyond which its Δ is said to mix aggregation with another training budget.
BUDGET_SPAN = (0.8, 1.25)


def _budget_line(a: Analysis, f: float) -> list[str]:
    """The training budget's caveat beside the splits it confounds: the paradigms under which some task's optimiser
    steps are far from its steps under the baseline (training.sampling), with their range; their Δ and the splits
    built on it mix aggregation with budget. The budget table has each task's ratio."""
    comp = a.comp
    spans = []
    for p in comp.others:
        ratios = [r for t in comp.tasks if (r := steps_ratio(comp, f, t.task, p)) is not None]
        if ratios and not (BUDGET_SPAN[0] <= min(ratios) and max(ratios) <= BUDGET_SPAN[1]):
            spans.append(f"{p} {min(ratios):.2f}×-{max(ratios):.2f}×")
    if not spans:
        return []
    return [
        f"**Training budget**: a task's optimiser steps against its steps under {comp.baseline} "
        f"(training.sampling): {', '.join(spans)}; these paradigms' Δ and the splits built on them mix aggregation "
        "(or MoE) with a different training budget (Per-task results, the budget table)."
    ]


def _signed(v: float) -> str:
    """An estimate as the statistics table shows it (3 significant digits), signed: the headline's -0.904 is its."""
    return significant(v, sign=True)


def _p(s: Stat) -> str:
    """p and its Holm-adjusted value within its family, as the headline prints them: `p = 0.012, Holm (primary)
    0.024` or `Holm (exploratory) 0.5` (usagg/analysis/families.py)."""
    return f"p = {s.p:.2g}, Holm ({s.family}) {s.p_holm:.2g}" if s.p_holm is not None else f"p = {s.p:.2g}"


@dataclass
class Section:
    """One section of the report: its tables, lines of text above them, and the figures drawn in it (by name;
    None: every figure no other section names)."""

    title: str
    tables: list[Table]
    lines: list[str] = field(default_factory=list)
    figures: tuple[str, ...] | None = ()


def _sections(a: Analysis) -> list[Section]:
    tables = all_tables(a)
    by_name = lambda pre: [t for t in tables if t.name.startswith(pre)]  # noqa: E731
    sections = [
        Section("Study", by_name("summary") + by_name("selection_warnings")),
        Section("Per-task results", by_name("tasks") + by_name("uncertainty") + by_name("budget")),
        Section("Clinical groups", by_name("groups")),
        Section(
            "Aggregates by group, type and data regime",
            by_name("aggregates") + by_name("split") + by_name("factorial") + by_name("scales"),
        ),
        Section("Selection gap", [gap_table(selection_gap(a.inp, a.comp), multi=len(a.comp.fractions) > 1)]),
        Section("Figures", [], figures=None),
        Section("Tasks with Δ below 0", by_name("negative_transfer") + by_name("delta_na")),
        Section(
            "Statistics", by_name("statistics") + by_name("fractions") + by_name("fraction_trend") + by_name("power")
        ),
    ]
    affinity = by_name("affinity")
    if affinity:
        sections.append(Section("Affinity groups", affinity, figures=AFFINITY_FIGURES))
    expected = _expectations(a)
    return [*sections[:1], *expected, *sections[1:], _advice(a)]


def _expectations_line(sections: list[Section]) -> list[str]:
    """The summary's line on the spec's `expect:` (the Expectations section's table): how many were met, and the
    names of those not met or not evaluated, so a study that missed its known answers says so before any number."""
    found = next((sec.tables[0] for sec in sections if sec.title == "Expectations" and sec.tables), None)
    if found is None:
        return []
    verdicts = [(str(row[0]), str(row[1])) for row in found.rows]
    met = sum(v == "met" for _, v in verdicts)
    line = f"**Expectations**: {met} of {len(verdicts)} met"
    for verdict in ("not met", "not evaluated"):
        names = [n for n, v in verdicts if v == verdict]
        if names:
            shown = "; ".join(names[:3]) + (f"; and {len(names) - 3} more" if len(names) > 3 else "")
            line += f"; {verdict}: {shown}"
    return [line + " (see Expectations)."]


def _expectations(a: Analysis) -> list[Section]:
    """The spec's `expect:` checked (usagg/analysis/expect.py), right after the study summary; none without any."""
    from usagg.analysis.expect import evaluate_study, expectations_table

    outcomes = evaluate_study(a)
    return [Section("Expectations", [expectations_table(outcomes)])] if outcomes else []


def _advice(a: Analysis) -> Section:
    """The advice table of usagg/analysis/advice_formats.py, or why the study cannot support advice."""
    from usagg.analysis.advice_formats import advice_table
    from usagg.analysis.advise import CannotAdvise, advise

    try:
        adv = advise(a)
    except CannotAdvise as err:
        return Section("Advice", [], [f"No advice for this study: {err}"])
    return Section("Advice", [advice_table(adv)])  # its title and notes carry the leave-one-task-out accuracy


def _placed(sections: list[Section], figs: list[FigureOut]) -> dict[str, list[FigureOut]]:
    """Section title -> its figures, in drawing order."""
    named = {n for s in sections if s.figures for n in s.figures}
    return {
        s.title: [f for f in figs if (f.name not in named if s.figures is None else f.name in s.figures)]
        for s in sections
    }


def _toc(sections: list[Section]) -> list[str]:
    """The report's section titles in order: the headline statistics first, provenance last."""
    return [HEADLINE, *[s.title for s in sections], "Provenance"]


def _fence(text: str) -> str:
    """A code fence longer than any run of backticks in `text`, so the stored spec cannot close it early."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _markdown(a: Analysis, sections: list[Section], figs: list[FigureOut], folder: Path, prov: Provenance) -> str:
    caveat = [RANDOM_INIT_LINE] if prov.random_init else []  # before any number: not a DINOv3 result
    *paradigms, pointer = _summary(a)  # the pointer to the headline statistics (or why there is none) stays last
    summary = [*caveat, *paradigms, *_expectations_line(sections), pointer]
    out = [f"# usagg report: {md_text(a.inp.study)}", "", *[f"- {md_text(line)}" for line in summary]]
    out += [""]
    out += ["Contents: " + " · ".join(f"[{t}](#{_anchor(t)})" for t in _toc(sections)), ""]
    headline = _headline(a)
    out += [f"## {HEADLINE}", "", *[f"- {md_text(line)}" for line in headline], ""]
    said = set(headline)  # a note the headline says is referred to under each table, not said again
    placed = _placed(sections, figs)
    for sec in sections:
        out += [f"## {sec.title}", ""]
        for line in sec.lines:
            out += [md_text(line), ""]
        out += [to_markdown(md_table(_said_once(t, said))) for t in sec.tables]
        for fig in placed[sec.title]:
            rel = fig.path.relative_to(folder).as_posix()
            out += [f"![{md_text(fig.name)}]({rel})", "", f"*{md_text(fig.name)}*: {md_text(fig.caption)}", ""]
    out += ["## Files", "", "Tables as CSV and LaTeX (booktabs) in `tables/`; figures in `figures/`.", ""]
    out += ["## Provenance", "", *[f"- {md_text(line)}" for line in prov.lines()], ""]
    if prov.jobs:
        jobs = Table("jobs", "", ["job", "device", "precision"], [[j, d, p] for j, d, p in prov.jobs])
        out += [to_markdown(md_table(jobs), heading=None)]
    if prov.spec_text:
        fence = _fence(prov.spec_text)
        out += ["The spec as run:", "", f"{fence}yaml", prov.spec_text.rstrip(), fence, ""]
    return "\n".join(out)


def _said_once(t: Table, headline: set[str]) -> Table:
    """`t` with each note the headline said (the exclusion and collapse notes, repeated under every table they apply
    to) shortened to its subject and a reference to the headline. The CSV and LaTeX tables keep them whole: each of
    those files stands alone."""
    return replace(t, notes=[f"{note_subject(n)} (see {HEADLINE})." if n in headline else n for n in t.notes])


def _manifest_files(folder: Path, name: str = MANIFEST) -> list[str] | None:
    """The files the manifest `name` in `folder` lists (relative paths), None without one that reads as usagg's: a
    regular file (no link) holding {"files": [...]}. Its presence is what makes the folder a report of usagg's."""
    manifest = folder / name
    if manifest.is_symlink() or not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    files = data.get("files") if isinstance(data, dict) else None
    return [f for f in files if isinstance(f, str)] if isinstance(files, list) else None


def _previous_manifest(folder: Path) -> list[str]:
    """What the last report in `folder` wrote (relative paths), [] without a readable manifest."""
    return _manifest_files(folder) or []


def _write_manifest(folder: Path, written: list[Path]) -> None:
    """MANIFEST, last: what this report wrote (the next one removes what it no longer writes), and the mark that the
    folder holds a report of usagg (`_not_someone_elses`)."""
    files = sorted(p.relative_to(folder).as_posix() for p in written)
    write_text_atomic(folder / MANIFEST, json.dumps({"files": files}, indent=1) + "\n")


def _claim(folder: Path, planned: list[str]) -> None:
    """MANIFEST before the first file is written, marked incomplete: what the last report listed and what this one
    may write that is not there yet. A report stopped part-way (a full disk, SIGTERM, SIGKILL) thus leaves a folder
    the next one takes as usagg's (`_theirs`) and cleans up (`_remove_stale`), never one it refuses; files already
    there and not usagg's (a `usagg plot` figure) stay unlisted, so they are never removed."""
    new = [rel for rel in planned if not os.path.lexists(folder / rel)]
    files = sorted({*_previous_manifest(folder), *new})
    write_text_atomic(folder / MANIFEST, json.dumps({"files": files, "complete": False}, indent=1) + "\n")


@functools.cache
def _report_file_pattern() -> re.Pattern[str]:
    """The relative paths `write_report` can write: DOCUMENTS, tables/<name>.csv|.tex (a table's name: a plain
    stem), figures/<figure>.<FIGURE_FORMAT> of `figures.FIGURES`, each also inside a swept point's sub-folder
    (`points.folder_name`: point<n>_ and letters, digits, `_.-`)."""
    docs = "|".join(re.escape(d) for d in DOCUMENTS)
    figures = "|".join(re.escape(name) for name, _ in FIGURES)
    own = rf"(?:{docs}|tables/[A-Za-z0-9_-]+\.(?:csv|tex)|figures/(?:{figures})\.{FIGURE_FORMAT})"
    return re.compile(rf"(?:point[0-9]+_[A-Za-z0-9_.-]*/)?{own}")


def _a_report_file(rel: str) -> bool:
    """Whether `rel` (from a manifest, which is data) names a file a report writes; nothing else is ever deleted."""
    return _report_file_pattern().fullmatch(rel) is not None


def _plain_file_below(folder: Path, rel: str) -> bool:
    """Whether folder/rel is a regular file reached through real folders only (no link on the way, none at the end):
    a link planted in the report folder must not make a stale-file removal delete elsewhere."""
    step = folder
    for part in Path(rel).parts[:-1]:
        step = step / part
        if step.is_symlink() or not step.is_dir():
            return False
    try:
        return stat.S_ISREG(os.lstat(folder / rel).st_mode)
    except OSError:
        return False


def _theirs(folder: Path, planned: list[str]) -> list[str]:
    """Of the files this report would write into `folder` (relative paths), those already there when the folder
    holds no report of usagg's (no MANIFEST) and `usagg plot` did not draw them (`_plotted`): someone else's, which
    the report would overwrite."""
    if _manifest_files(folder) is not None:
        return []
    there = [rel for rel in planned if (folder / rel).exists() or (folder / rel).is_symlink()]
    return [rel for rel in there if not _plotted(folder, rel)]


def _plotted(folder: Path, rel: str) -> bool:
    """Whether folder/rel is a figure `usagg plot` wrote: a regular file its folder's PLOT_MANIFEST lists."""
    path = folder / rel
    return _plain_file_below(folder, rel) and path.name in (_manifest_files(path.parent, PLOT_MANIFEST) or [])


def _reported(folder: Path, name: str) -> bool:
    """Whether folder/name is a figure `usagg report` wrote: a regular file the MANIFEST of the report folder above
    lists (`figures/<name>`; the default `usagg plot` folder is a report's figures/)."""
    above = folder.resolve().parent
    rel = f"{folder.resolve().name}/{name}"
    return _plain_file_below(above, rel) and rel in (_manifest_files(above) or [])


def check_figure_folder(a: Analysis, folder: Path, fmt: str) -> set[Path]:
    """`usagg plot`'s refusals before it draws, the report's own: a folder that is, lies in or holds a run store read
    (`_outside_the_stores`), and a file of a figure's name there that neither plot's PLOT_MANIFEST nor a report's
    MANIFEST lists (`_not_someone_elses`). Returns the figure files already there, usagg's, which plot replaces."""
    from usagg.analysis.points import point_folders

    folder = Path(folder)
    _outside_the_stores(a, folder, "figure folder", "usagg plot")
    subs = [sub for sub, _ in point_folders(a, folder)] if a.points else [folder]
    there = [sub / f"{name}.{fmt}" for sub in subs for name, _ in FIGURES]
    there = [p for p in there if os.path.lexists(p)]
    theirs = [p for p in there if not (_plotted(p.parent, p.name) or _reported(p.parent, p.name))]
    _not_someone_elses(folder, [p.relative_to(folder).as_posix() for p in theirs], "usagg plot")
    return set(there)


@contextlib.contextmanager
def writing(folder: Path) -> Iterator[None]:
    """Hold `folder`'s writing lock (WRITING_LOCK: O_EXCL, holder and heartbeat, usagg/joblock.py) for the block.

    Two commands writing one folder at once (two `usagg plot` of other baselines, a plot and a report into the
    default folders) would leave one's figures beside the other's tables, both exiting 0: the second is refused
    (UsaggError) naming the first, and a lock whose holder died is broken.
    """
    lock = JobLock(Path(folder) / WRITING_LOCK, str(folder), heartbeat_s=30.0, stale_after_s=600.0)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(lock.held())
        except JobLocked as err:
            raise UsaggError(
                f"another usagg plot or report is writing {folder} ({describe_holder(err.holder)}); nothing was "
                "written: wait for it to finish, or give another --out"
            ) from None
        yield


def write_figures_manifest(figures: list[Path]) -> None:
    """PLOT_MANIFEST in each folder `usagg plot` drew into: the figures it wrote there, with those an earlier plot
    listed that are still there (another --format)."""
    by_folder: dict[Path, set[str]] = {}
    for path in figures:
        by_folder.setdefault(path.parent, set()).add(path.name)
    for folder, names in by_folder.items():
        earlier = {n for n in _manifest_files(folder, PLOT_MANIFEST) or [] if (folder / n).is_file()}
        write_text_atomic(folder / PLOT_MANIFEST, json.dumps({"files": sorted(names | earlier)}, indent=1) + "\n")


def _not_someone_elses(folder: Path, theirs: list[str], command: str = "usagg report") -> None:
    """UsaggError, before anything is written, naming the files of `folder` (`_theirs`) that `command` (report or
    plot) would overwrite though neither wrote them: a user's paper/report.md, tables/summary.tex or
    figures/fig3_delta.png."""
    if not theirs:
        return
    names = [printable(t) for t in theirs]
    more = f" (and {', '.join(names[1:4])}{', ...' if len(names) > 4 else ''})" if len(names) > 1 else ""
    raise UsaggError(
        f"{folder / names[0]} exists{more} and neither usagg report nor usagg plot wrote it (no {MANIFEST} or "
        f"{PLOT_MANIFEST} of usagg's lists it), so `{command}` would overwrite it; nothing was written. Give a new or "
        "empty folder with --out, or move those files away first"
    )


def _remove_stale(folder: Path, written: list[Path]) -> None:
    """Remove what the previous report listed and this one did not write; nothing else is ever deleted.

    The manifest is data (a copied or planted one lists anything): only names a report writes (`_a_report_file`)
    count, each a regular file inside `folder` reached without a link; any other name is left alone and logged.
    """
    kept = {p.relative_to(folder).as_posix() for p in written}
    foreign = []
    for rel in _previous_manifest(folder):
        if rel in kept:
            continue
        if not _a_report_file(rel):
            foreign.append(rel)
        elif _plain_file_below(folder, rel):
            (folder / rel).unlink()
    if foreign:
        log.warning(
            "%s lists %d name(s) no usagg report writes (%s); left alone, never deleted",
            folder / MANIFEST,
            len(foreign),
            printable(", ".join(foreign[:3]))[:200],
        )


def _stores(a: Analysis) -> list[Path]:
    """The run stores an analysis read (a swept study's points too)."""
    found = [a.inp.run_dir, *(point.inp.run_dir for _, point in a.points)]
    return list(dict.fromkeys(Path(d) for d in found if d is not None))


def _outside_the_stores(a: Analysis, folder: Path, what: str = "report folder", command: str = "usagg report") -> None:
    """UsaggError where the output folder (a report's, `usagg plot`'s) is a run store it read, lies inside one or
    holds one: a store holds only what `usagg run` writes, and a report folder is regenerated (its stale files
    removed), so a planted manifest there could have the report delete the store's plan.json and results (as
    `compare --out` refuses a store)."""
    out = folder.resolve()
    for store in _stores(a):
        root = store.resolve()
        where = (
            "is the run store"
            if out == root
            else "is inside the run store"
            if root in out.parents
            else "holds the run store"
            if out in root.parents
            else ""
        )
        if where:
            raise UsaggError(
                f"the {what} {folder} (--out) {where} {store} `{command}` reads, which only `usagg run` writes; "
                f"nothing was written. Give a folder of its own outside the store with --out (e.g. reports/"
                f"{printable(a.inp.study)})"
            )


def _planned(tables: list[Table]) -> list[str]:
    """The files a one-study report writes (figures: any it may draw), relative to its folder."""
    files = [*DOCUMENTS, *(f"figures/{name}.{FIGURE_FORMAT}" for name, _ in FIGURES)]
    for t in tables:
        files += [f"tables/{t.name}.csv", *([f"tables/{t.name}.tex"] if t.name != "delta" else [])]
    return files


def _theirs_in_sweep(a: Analysis, folder: Path) -> list[str]:
    """`_theirs` for a swept study's report: its report.md and tables/sweep.csv, and what a point's sub-folder holds
    without a manifest of its own (its name is usagg's, so what is there is someone else's), checked even in a
    folder of usagg's, before the first point is written."""
    from usagg.analysis.points import folder_name

    theirs = _theirs(folder, ["report.md", "tables/sweep.csv"])
    for i, (point, _) in enumerate(a.points):
        sub = folder / folder_name(i, point)
        if sub.is_dir() and not sub.is_symlink() and _manifest_files(sub) is None:
            theirs += [f"{sub.name}/{p.name}" for p in sorted(sub.iterdir())]
    return theirs


def write_report(a: Analysis, folder: Path, render: Renderer = render_all, dpi: int = FIGURE_DPI) -> list[Path]:
    """Write the whole report folder and return the paths written; `render` draws the PNGs into folder/figures.

    A symbolic link planted at folder/figures or folder/tables is refused (usagg/safepath.py) before anything is
    written: every figure and table would be written through it, outside the report folder. So is a store that
    provenance refuses (a study.yaml or job folder linked outside it): provenance is read first, so a refused
    store leaves the report folder as it was. A swept study gets a
    report per point in its sub-folder and a report.md of the points side by side (usagg/analysis/points.py).
    """
    folder = Path(folder)
    _outside_the_stores(a, folder)
    if a.points:
        from usagg.analysis.points import write_points_report

        _not_someone_elses(folder, _theirs_in_sweep(a, folder))
        for _, point in a.points:  # every point's store checked before the first point's report is written
            provenance(point.inp)
        real_folder(folder / "tables", folder, "usagg report: output folder")  # refused before the claim is written
        with writing(folder):
            _claim(folder, ["report.md", "tables/sweep.csv"])
            written = write_points_report(a, folder, lambda sub, out: write_report(sub, out, render, dpi))
            _write_manifest(folder, written)
        return written
    prov = provenance(a.inp)
    sections = _sections(a)
    tables = [t for sec in sections for t in sec.tables] + [delta_long_table(a.comp, a.stats)]
    _not_someone_elses(folder, _theirs(folder, _planned(tables)))
    for sub in ("figures", "tables"):
        real_folder(folder / sub, folder, "usagg report: output folder")
    with writing(folder), writing(folder / "figures"):  # figures/: `usagg plot`'s default folder
        return _write_one(a, folder, render, dpi, sections, tables, prov)


def _write_one(
    a: Analysis,
    folder: Path,
    render: Renderer,
    dpi: int,
    sections: list[Section],
    tables: list[Table],
    prov: Provenance,
) -> list[Path]:
    """`write_report` of one study, its checks passed and its folder held (`writing`)."""
    _claim(folder, _planned(tables))
    figs = render(a, folder / "figures", FIGURE_FORMAT, dpi)
    written = [f.path for f in figs]
    for t in tables:
        written.append(write_text_atomic(folder / "tables" / f"{t.name}.csv", to_csv(t)))
        if t.name != "delta":
            written.append(write_text_atomic(folder / "tables" / f"{t.name}.tex", to_latex(t)))
    md = _markdown(a, sections, figs, folder, prov)
    written.append(write_text_atomic(folder / DOCUMENTS[0], md))
    page = render_page(f"usagg report: {a.inp.study}", md, folder, [f.path for f in figs], dpi)
    written.append(write_text_atomic(folder / DOCUMENTS[1], page))
    _remove_stale(folder, written)
    _write_manifest(folder, written)
    return written
