"""Which planned jobs a run takes: `--paradigm` and `--only` (`make_selection` -> `Selection`), checked against the
plan, a selector that picks nothing refused with the closest name and what the plan holds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from usagg.errors import UsaggError
from usagg.run.options import CLI_WORDING, Wording
from usagg.wording import listed

if TYPE_CHECKING:
    from usagg.plan import Job, Waiting


#: `--only KEY:PATTERN` keys and what of a job they match (each PATTERN may be a glob such as 'fetal_*').
SELECTOR_KEYS = ("id", "task", "group", "paradigm")


def _selector_values(job: Job, key: str) -> list[str]:
    if key == "id":
        return [job.id]
    if key == "task":
        return job.task_ids
    if key == "group":  # the group the job stands for: its task's (TS), its own (CG); none for AU
        return [job.group] if job.group else []
    return [job.paradigm]


def parse_selector(selector: str) -> tuple[str | None, str]:
    """(KEY, PATTERN) of a KEY:PATTERN or KEY=PATTERN selector with a known KEY, else (None, the whole selector)."""
    for sep in (":", "="):
        key, found, pattern = selector.partition(sep)
        if found and key in SELECTOR_KEYS:
            return key, pattern
    return None, selector


def _value_matches(key: str, value: str, pattern: str) -> bool:
    """A glob match; a job id also matches a pattern that is its beginning up to a '-' (`TS-breast_lesion` takes
    that task's TS jobs, never TS-breast_lesion_cls: a bare prefix inside a name would span tasks)."""
    from fnmatch import fnmatchcase

    return fnmatchcase(value, pattern) or (key == "id" and value.startswith(pattern + "-"))


def _key_matches(job: Job, key: str, pattern: str) -> bool:
    return any(_value_matches(key, v, pattern) for v in _selector_values(job, key))


@dataclass
class Selection:
    """What `--paradigm` and `--only` ask for. Selectors of different keys AND, of the same key OR
    (`--only task=breast_lesion --only TS`: the one TS job of that task; `--only TS --only AU`: both paradigms).

    A selector is KEY:PATTERN or KEY=PATTERN (id, task, group, paradigm), or a bare PATTERN, which counts
    under the first key it matches in the plan. Patterns are shell globs (fnmatch, case-sensitive), so
    `--only 'TS-breast*'`, `--only fetal_head` (every job that trains it), `--only task=breast_lesion` or
    `--only group:Fetal` select without copying a hashed id; an id pattern also takes the ids it begins up to
    a '-' (`TS-breast_lesion`, `AU-all-f1-s0`).
    """

    paradigms: tuple[str, ...] = ()
    patterns: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def everything(self) -> bool:
        return not self.paradigms and not self.patterns

    def takes(self, job: Job) -> bool:
        """Whether the job is selected: of a chosen paradigm, and picked by a selector of every key given."""
        if self.paradigms and job.paradigm not in self.paradigms:
            return False
        return all(any(_key_matches(job, k, p) for p in pats) for k, pats in self.patterns.items())

    def takes_waiting(self, waiting: Waiting) -> bool:
        """Whether a staged paradigm still waiting is selected: with no selection, or when `--paradigm` or a
        paradigm selector names it (a task or group selector then narrows its jobs once they are planned)."""
        from fnmatch import fnmatchcase

        if self.everything:
            return True
        named = "paradigm" in self.patterns or bool(self.paradigms)
        in_paradigms = not self.paradigms or waiting.paradigm in self.paradigms
        patterns = self.patterns.get("paradigm")
        return named and in_paradigms and (patterns is None or any(fnmatchcase(waiting.paradigm, p) for p in patterns))

    def pick(self, jobs: list[Job], waiting: Sequence[Waiting] = ()) -> list[Job]:
        """The jobs selected, in plan order, then those a selected waiting paradigm needs."""
        if self.everything:
            return list(jobs)
        needs = {jid for w in waiting if self.takes_waiting(w) for jid in w.needs}
        chosen = [j for j in jobs if self.takes(j)]
        return chosen + [j for j in jobs if j.id in needs and j not in chosen]


def _bare_key(pattern: str, jobs: list[Job], waiting_names: list[str]) -> str | None:
    """The first key a bare selector matches in the plan (a waiting paradigm's name counts), None for none."""
    from fnmatch import fnmatchcase

    for key in SELECTOR_KEYS:
        if any(_key_matches(j, key, pattern) for j in jobs):
            return key
        if key == "paradigm" and any(fnmatchcase(name, pattern) for name in waiting_names):
            return key
    return None


def _unplanned_text(bad: Sequence[str], known: Sequence[str], wording: Wording) -> str:
    """The refusal of paradigms the study does not plan: each with the closest planned one (`ts` -> TS), else the
    registered one it names or nearly names (`cg` -> CG), which the spec's `paradigms:` must list before it can be
    selected; the registered paradigms where a name is near none (a plug-in's count once its module is loaded)."""
    import difflib

    from usagg.names import suggest
    from usagg.paradigms import paradigm_names

    others = [r for r in paradigm_names() if r not in known]
    named: list[str] = []
    unplanned: list[str] = []
    for p in bad:
        near = suggest(p, known)
        same = [r for r in others if r.casefold() == p.casefold()]
        found = [] if near else same or difflib.get_close_matches(p, others, n=1, cutoff=0.6)
        other = found[0] if found else None
        if other is not None:
            unplanned.append(other)
            near = " (a registered paradigm" if other == p else f" (did you mean {other!r}? a registered paradigm"
            near += " this study does not plan)"
        named.append(f"{wording.value(p)}{near}")
    text = f"{wording.paradigm}{', '.join(named)}: this study plans {', '.join(known)}"
    if unplanned:
        adding = list(dict.fromkeys(unplanned))
        listed = ", ".join([*known, *adding])
        it = "it" if len(adding) == 1 else "them"
        return f"{text}. To run {' and '.join(adding)}, add {it} to the spec's `paradigms:` (paradigms: [{listed}])."
    if not any(suggest(p, known) for p in bad):
        text += f"; the registered paradigms are {', '.join(paradigm_names())} (`usagg registry`)"
    return text


def make_selection(
    jobs: list[Job],
    paradigms: Sequence[str] = (),
    only: Sequence[str] = (),
    waiting: Sequence[Waiting] = (),
    wording: Wording = CLI_WORDING,
) -> Selection:
    """The selection `--paradigm` and `--only` ask for, checked against the plan: a paradigm the study does not
    plan, a selector that picks nothing, or selectors that together pick nothing are user errors saying the
    closest name and what exists (naming the options as `wording` does)."""
    from fnmatch import fnmatchcase

    waiting_names = [w.paradigm for w in waiting]
    known = sorted({j.paradigm for j in jobs} | set(waiting_names))
    bad = [p for p in paradigms if p not in known]
    if bad:
        raise UsaggError(_unplanned_text(bad, known, wording))
    if paradigms:
        jobs = [j for j in jobs if j.paradigm in paradigms]
        waiting_names = [w for w in waiting_names if w in paradigms]
    patterns: dict[str, tuple[str, ...]] = {}
    unmatched = []
    for sel in only:
        key, pattern = parse_selector(sel)
        if key is None:
            key = _bare_key(pattern, jobs, waiting_names)
        elif not any(_key_matches(j, key, pattern) for j in jobs) and not (
            key == "paradigm" and any(fnmatchcase(name, pattern) for name in waiting_names)
        ):
            key = None
        if key is None:
            unmatched.append(sel)
        else:
            patterns[key] = (*patterns.get(key, ()), pattern)
    if unmatched:
        raise UsaggError(_unmatched_message(unmatched, jobs, waiting_names, wording))
    selection = Selection(tuple(paradigms), patterns)
    if only and not any(selection.takes(j) for j in jobs) and not any(selection.takes_waiting(w) for w in waiting):
        raise UsaggError(
            f"{wording.every(wording.only, only)}: each selector matches jobs, but no job matches them all (selectors "
            "of different keys must all match; give several of one key, such as "
            f"{wording.every(wording.only, ['task=a', 'task=b'])}, for either)"
        )
    return selection


def _selector_choices(key: str, jobs: list[Job], waiting_names: Sequence[str]) -> list[str]:
    """The values a selector of `key` can name in this plan (an id's beginnings up to a '-' too: `TS-fetal_head`)."""
    if key == "id":
        parts = [j.id.split("-") for j in jobs]
        return list(dict.fromkeys("-".join(p[:n]) for p in parts for n in range(2, len(p) + 1)))
    values = [v for j in jobs for v in _selector_values(j, key)]
    return sorted(set(values) | (set(waiting_names) if key == "paradigm" else set()))


def _unmatched_message(
    unmatched: Sequence[str], jobs: list[Job], waiting_names: Sequence[str], wording: Wording = CLI_WORDING
) -> str:
    """Each selector matching nothing with the closest value of its key (of any key for a bare one), then what a
    selector is and what this plan holds, each list cut at `LISTED` (usagg/wording.py)."""
    from usagg.names import suggest

    choices = {key: _selector_choices(key, jobs, waiting_names) for key in SELECTOR_KEYS}
    clauses = []
    for sel in unmatched:
        key, pattern = parse_selector(sel)
        near = [v for k in ((key,) if key else SELECTOR_KEYS) for v in choices[k]]
        clauses.append(f"{wording.one(wording.only, sel)} matches no job of this selection{suggest(pattern, near)}")
    return (
        f"{'; '.join(clauses)}. A selector is a job id (or its beginning up to a '-', such as TS-fetal_head), a "
        "task, a group or a paradigm, or KEY:PATTERN / KEY=PATTERN with KEY one of id, task, group, paradigm (globs "
        f"such as 'TS-*' work; different keys AND, the same key OR). This plan's tasks: {listed(choices['task'])}; "
        f"groups: {listed(choices['group'])}; paradigms: {listed(choices['paradigm'])}; jobs: "
        f"{listed([j.id for j in jobs])} ({wording.plan} lists every job)"
    )
