"""Where the analysis reads from: a run store folder or an imported results CSV, plus the study's settings.

The run store is the only state (docs/internals.md); this module finds it, and reads
through `RunStore` (the only code that opens the store's files) a fresh results.csv, the
`analysis:` and `tasks:` sections of the stored study so that compare, plot and report
agree on baseline and metrics, the planned job count and the MoE expert usage; where the
study measured it, the inter-task affinity AG grouped by (usagg/affinity.py), and for the
synthetic benchmark its designed groups.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from usagg.affinity import Affinity
from usagg.analysis.results import ResultsTable, UnknownTaskType, parse_results, read_results
from usagg.errors import UsaggError
from usagg.filehash import sha256_of
from usagg.jobmetrics import JobMetrics
from usagg.names import is_plain_name
from usagg.paradigms import PARADIGMS, paradigm_names
from usagg.registry import PLUGINS_ENV
from usagg.safepath import check_text
from usagg.store import RunStore
from usagg.store.damage import results_damage
from usagg.tasktypes import default_metric, task_type_names
from usagg.wording import command


@dataclass
class Settings:
    """The analysis settings (AnalysisSpec fields) with their defaults."""

    baseline: str = "TS"
    representative_tasks: list[str] = field(default_factory=list)
    regime_threshold: int = 1000
    group_regime_threshold: int = 5000
    cg_singletons: str = "exclude"
    scale: str = "relative"  # analysis.scale (usagg/analysis/scales.py)
    chance_tasks: str = "exclude"
    hypotheses: dict[str, dict[str, str]] = field(default_factory=dict)  # test family -> key -> alternative
    primary: list[str] | None = None  # the paradigms of the primary Holm family (None: usagg/analysis/families.py's)
    bootstrap: int = 10000
    task_bootstrap: int = 2000
    bootstrap_seed: int = 0
    affinity: dict[str, object] = field(default_factory=dict)  # how the engine measures it; the figures read the record


@dataclass(frozen=True)
class Planned:
    """What the stored study planned beyond its results: its `paradigms`, and per paradigm its planned jobs without a
    row in the table with each one's state (failed, pending, running), so a missing result is named as such, not
    taken for a paradigm the study never ran. Empty for an imported table."""

    paradigms: tuple[str, ...] = ()
    without_results: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)

    def jobs_text(self, paradigm: str) -> str:
        """The paradigm's planned jobs without results in words, e.g. `failed: AUD-all-f1-s0-df26c5c8`."""
        states: dict[str, list[str]] = {}
        for job, state in self.without_results.get(paradigm, ()):
            states.setdefault(state, []).append(job)
        return "; ".join(f"{state}: {', '.join(jobs)}" for state, jobs in states.items())

    def lacking(self, present: list[str]) -> list[str]:
        """The planned paradigms none of whose jobs has results (`present`: the paradigms the table has)."""
        return [p for p in self.paradigms if p not in present]


@dataclass
class AnalysisInput:
    """Everything compare, plot and report need, already validated."""

    table: ResultsTable
    study: str
    source: str  # human-readable: which files were read
    settings: Settings
    primary: dict[str, str]  # task -> primary metric
    task_order: list[str]
    table_sha256: str  # of the text analysed: the file read, or the table rebuilt from the jobs (`rebuilt`)
    rebuilt: str | None = None  # why results.csv was rebuilt from the jobs ("missing", "behind its jobs"), None: read
    run_dir: Path | None = None
    jobs_planned: int | None = None
    expert_usage: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)  # job -> task -> blocks
    notes: list[str] = field(default_factory=list)
    item_scores: dict[str, Path] = field(default_factory=dict)  # job -> its item_scores.json, where it wrote one
    histories: dict[str, list[dict]] = field(default_factory=dict)  # job -> its training history (metrics.json)
    #: job -> task -> trivial predictor -> its score on the task's primary metric (metrics.json `trivial`, where the
    #: job recorded it for the metric the analysis takes as primary): the chance level of usagg/analysis/delta.py
    trivial: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    #: job -> what its model selection warned of (metrics.json `selection.warnings`: a selection split too small to
    #: rank epochs, a class missing from it), where it warned
    selection_warnings: dict[str, tuple[str, ...]] = field(default_factory=dict)
    affinity: Affinity | None = None  # the affinity AG grouped by; None with --results or when none was measured
    designed_groups: dict[str, str] | None = None  # task -> designed group, synthetic studies only
    ag_search: str = "auto"  # AG's `search` as the study ran it: its stability check searches the same way
    planned: Planned = field(default_factory=Planned)  # the stored study's paradigms and its jobs without results

    @property
    def source_text(self) -> str:
        """Which table was analysed, in words: the file, or the table rebuilt from the jobs and why (the file on
        disk was not what the analysis read, so its name alone would cite another table)."""
        if self.rebuilt is None:
            return self.source
        return f"the table rebuilt from the job folders ({self.source} is {self.rebuilt})"

    @property
    def ag_groups(self) -> list[tuple[str, ...]]:
        """The AG groups of the results: tasks sharing a job_id at the largest fraction, lowest seed."""
        return list(paradigm_groups(self.table, "AG", self.task_order).values())

    @property
    def ag_labels(self) -> dict[str, str]:
        """task -> the name of its AG job (g1, g2, ...): the AG grouping as labels (usagg/grouping.py)."""
        return {t: name for name, g in paradigm_groups(self.table, "AG", self.task_order).items() for t in g}


def job_name(paradigm: str, job_id: str) -> str:
    """The readable part of a job id `<paradigm>-<name>-f<fraction>-s<seed>[-<hash>]` (usagg/plan.py): the group,
    task or `g1`; the whole id when it is not one usagg made."""
    m = re.match(rf"^{re.escape(paradigm)}-(.+?)-f[0-9.e+-]+-s\d+(?:-[0-9a-f]+)?$", job_id)
    return m.group(1) if m else job_id


def paradigm_groups(table: ResultsTable, paradigm: str, order: list[str]) -> dict[str, tuple[str, ...]]:
    """Which tasks `paradigm` trained together: job name -> the tasks of that job at the largest fraction and
    lowest seed (tasks in `order`, groups by their first task); {} when the paradigm has no rows with a job_id."""
    rows = [r for r in table.rows if r.paradigm == paradigm and r.job_id]
    if not rows:
        return {}
    top = max(r.fraction for r in rows)
    seed = min(r.seed for r in rows if r.fraction == top)
    jobs: dict[str, set[str]] = {}
    for r in rows:
        if r.fraction == top and r.seed == seed:
            jobs.setdefault(r.job_id, set()).add(r.task)
    rank = {t: i for i, t in enumerate(order)}

    def key(t: str) -> tuple[int, str]:
        return rank.get(t, len(rank)), t

    groups = {job_name(paradigm, jid): tuple(sorted(ts, key=key)) for jid, ts in jobs.items()}
    return dict(sorted(groups.items(), key=lambda kv: key(kv[1][0])))


def _affinity(run_dir: Path | None, notes: list[str]) -> Affinity | None:
    """The study's affinity (usagg/affinity.py); a file it refuses (another spec's, unreadable) becomes a note,
    so the rest of the analysis is still written and says why the affinity is missing."""
    if run_dir is None:
        return None
    try:
        return RunStore(run_dir).study_affinity()
    except UsaggError as err:
        notes.append(f"affinity not shown: {err}")
        return None


def _designed_groups(study: dict, tasks: list[str]) -> dict[str, str] | None:
    """task -> its designed affinity group when the stored study is the synthetic benchmark (data.synthetic)."""
    data = study.get("data")
    if not isinstance(data, dict) or not data.get("synthetic"):
        return None
    from usagg.data.synth.tasks import designed_groups

    designed = designed_groups(tasks)
    return designed if len(designed) == len(tasks) else None  # a study mixing in other tasks has no design


def _ag_search(study: dict) -> str:
    """AG's `search` setting in the stored study (`paradigm_settings: {AG: {search: beam}}`), auto where it has
    none or something else."""
    settings = study.get("paradigm_settings")
    ag = settings.get("AG") if isinstance(settings, dict) else None
    search = ag.get("search") if isinstance(ag, dict) else None
    return search if search in ("auto", "exhaustive", "beam") else "auto"


def _not_a_folder(path: Path) -> str:
    """Why `path` is no run folder, in words: a file is not a missing folder."""
    return "is a file, not a folder" if path.exists() else "does not exist"


def resolve_run_dir(run_dir: Path | None, root: Path) -> Path:
    """RUN_DIR as given, else the most recently modified study under the output root."""
    if run_dir is not None:
        if not Path(run_dir).is_dir():
            raise UsaggError(
                f"run folder {run_dir} {_not_a_folder(Path(run_dir))} (give a run store such as runs/<study>, or "
                "--results)"
            )
        return Path(run_dir)
    root = Path(root)
    if not root.is_dir() or not any(p.is_dir() for p in root.iterdir()):
        raise UsaggError(
            f"no run store under {root}/ (run `usagg run STUDY.yaml` first, give RUN_DIR, "
            "or analyse an imported table with --results FILE.csv)"
        )
    return Path(RunStore.latest(root).root)


def _settings(study: dict, path: str) -> Settings:
    """Validate the `analysis:` section with the spec's own model so defaults and errors match the spec."""
    section = study.get("analysis") or {}
    from pydantic import ValidationError

    from usagg.spec.models import AnalysisSpec

    try:
        spec = AnalysisSpec.model_validate(section)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UsaggError(f"{path}: analysis.{where}: {first['msg']}") from None
    return Settings(**spec.model_dump())


def _stored_tasks(study: dict, where: str) -> list[dict]:
    """The stored study's `tasks:` entries that name an id, each checked where the analysis reads it.

    A received study.yaml is data: `tasks: 5`, an id that is a list or a metric that is a mapping is a
    UsaggError naming the file, the entry and the key, not a TypeError from deep inside the analysis.
    """
    tasks = study.get("tasks")
    if tasks is None:
        return []
    if not isinstance(tasks, list):
        raise UsaggError(f"{where}, key `tasks`: expected a list of tasks, got {type(tasks).__name__} {tasks!r:.80}")
    found = []
    for i, task in enumerate(tasks):
        if not isinstance(task, dict) or "id" not in task:
            continue  # a catalog reference or a damaged entry names no task: nothing the analysis reads
        for key in ("id", "metric", "group"):
            value = task.get(key)
            if (key == "id" or value is not None) and not isinstance(value, str):
                raise UsaggError(f"{where}, tasks[{i}].{key}: expected text, got {type(value).__name__} {value!r:.80}")
            if isinstance(value, str):
                check_text(value, f"{where}, tasks[{i}].{key}")  # printed in tables and notes
        found.append(task)
    return found


def _primary_metrics(table: ResultsTable, declared: dict[str, str | None]) -> tuple[dict[str, str], list[str]]:
    """Task -> primary metric: the study's `metric` (`declared`), else the type's default, else the task's only
    metric."""
    by_task: dict[str, set[str]] = {}
    types: dict[str, str] = {}
    for r in table.rows:
        by_task.setdefault(r.task, set()).add(r.metric)
        types[r.task] = r.type
    primary, notes = {}, []
    for task, metrics in by_task.items():
        chosen = declared.get(task) or default_metric(types[task])
        if chosen not in metrics and len(metrics) == 1 and not declared.get(task):
            (only,) = metrics
            notes.append(f"task {task}: no {chosen} in the table, its only metric {only} is used as primary")
            chosen = only
        primary[task] = chosen
    return primary, notes


def _job_metrics(store: RunStore | None, table: ResultsTable) -> dict[str, JobMetrics]:
    """job_id -> metrics.json of every job of the table that has one, checked by JobMetrics (usagg/jobmetrics.py):
    a damaged or malformed one is a DataError naming the file and field, not a job silently left out."""
    if store is None:
        return {}
    found = {jid: store.job_metrics(jid) for jid in sorted(table.job_ids)}  # in job id order, as the folders list
    return {jid: m for jid, m in found.items() if m is not None}


def _expert_usage(metrics: dict[str, JobMetrics]) -> dict[str, dict[str, list[list[float]]]]:
    """job_id -> task -> per-MoE-block expert counts, from every job's metrics where logged."""
    usage = {
        jid: {task: [[float(x) for x in b] for b in blocks] for task, blocks in m.expert_usage.items() if blocks}
        for jid, m in metrics.items()
        if m.expert_usage
    }
    return {jid: u for jid, u in usage.items() if u}


def _histories(metrics: dict[str, JobMetrics]) -> dict[str, list[dict]]:
    """job_id -> the per-epoch history its metrics.json keeps (loss per task, selection score), where there is one."""
    return {jid: [h.to_json() for h in m.history] for jid, m in metrics.items() if m.history}


def _trivial(metrics: dict[str, JobMetrics], primary: dict[str, str]) -> dict[str, dict[str, dict[str, float]]]:
    """job_id -> task -> trivial predictor -> its finite score (metrics.json `trivial`), for the tasks whose job
    recorded them on the metric the analysis takes as primary (a score on another metric is no level for it)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for jid, m in metrics.items():
        for task, tm in m.tasks.items():
            levels = {k: v for k, v in (tm.trivial or {}).items() if v is not None and math.isfinite(v)}
            if levels and tm.primary == primary.get(task):
                out.setdefault(jid, {})[task] = levels
    return out


def _selection_warnings(metrics: dict[str, JobMetrics]) -> dict[str, tuple[str, ...]]:
    """job_id -> what its model selection warned of (metrics.json `selection.warnings`), where it warned and ranked
    epochs: a job that tested its last epoch (`mode` last) ranked none, so the "0 selection images" an older usagg
    warned of without a selection split qualifies nothing (as usagg/run/notes.py `selection_warnings` reads it)."""
    return {
        jid: tuple(w)
        for jid, m in metrics.items()
        if m.selection is not None and m.selection.mode != "last" and (w := m.selection.warnings)
    }


def _item_score_files(store: RunStore | None, table: ResultsTable) -> dict[str, Path]:
    """job_id -> item_scores.json of every job of the table that wrote per-image scores (the test-set bootstrap)."""
    if store is None:
        return {}
    out = {}
    for jid in table.job_ids:
        paths = store.paths(jid)
        if paths.item_scores.is_file():
            out[jid] = paths.item_scores
    return out


def _study_name(study: dict, store: RunStore | None, table: ResultsTable, csv_path: Path) -> str:
    """The study's name, which default output folders (reports/<study>) are made from: a plain name or an error.

    A name read from data (the stored study.yaml, a results CSV's `study` column) that is not a
    plain name (`../x`, `/abs/path`) is refused, so no data value can send a write elsewhere.
    """
    if study.get("name") is not None:
        name, where = study["name"], f"{store.study_yaml if store else 'the study'}, key `name`"
    elif table.studies:
        row = next(r.row for r in table.rows if r.study)
        name, where = table.studies[0], f"{csv_path} row {row}, column 'study'"
    else:
        return re.sub(r"[^A-Za-z0-9_.-]", "_", csv_path.stem).lstrip("._-") or "results"
    if not is_plain_name(name):
        raise UsaggError(
            f"{where}: the study name {str(name)[:80]!r} is not a plain name (ASCII letters, digits, '_', '.', '-', "
            "starting with a letter or digit); output folders are made from it, so it must not be a path"
        )
    return str(name)


def _plugins_to_load(store: RunStore | None, what: str = "type") -> str:
    """Which plug-ins to load for a task type or paradigm (`what`) this process does not know: the ones the store's
    done jobs recorded (metrics.json `training.plugins`), else how plug-ins are loaded. Before, the error listed the
    registered names only, and the user had to guess which plug-in the study needed."""
    recorded: dict[str, str | None] = {}
    if store is not None:
        for job_id in store.job_folders():  # not the plan: its jobs do not validate without the plug-in
            plugins = ((store.metrics(job_id) or {}).get("training") or {}).get("plugins")
            if isinstance(plugins, dict):
                recorded.update({str(k): v if isinstance(v, str) else None for k, v in plugins.items()})
    how = f"load it here as the run did: name its module in {PLUGINS_ENV}, or install its distribution"
    if not recorded:
        return f"a plug-in registers that {what}: {how} (docs/internals.md, 'How to add a {_DOC_NOUN[what]}')"
    named = ", ".join(f"{name} {version or '(no version)'}" for name, version in sorted(recorded.items()))
    return f"the jobs ran with plug-in(s) {named} (their metrics.json training.plugins): {how}"


_DOC_NOUN = {"type": "task type", "paradigm": "paradigm"}


def check_registered(store: RunStore) -> None:
    """Refuse a store whose study names a task type or a paradigm this process does not know, naming the plug-ins
    its jobs recorded. A type: its plan and results read no further (plan.json said it was "damaged, or written by
    another usagg version"). A paradigm: its scope and MoE (usagg/paradigms.py) pair it with its controls and decide
    which tasks its aggregates leave out, so without them `compare` gave other statistics without a word."""
    study = store.stored_study()
    tasks, paradigms = study.get("tasks"), study.get("paradigms")
    for what, names, registered in (
        (
            "type",
            [t.get("type") for t in tasks if isinstance(t, dict)] if isinstance(tasks, list) else [],
            task_type_names(),
        ),
        ("paradigm", paradigms if isinstance(paradigms, list) else [], PARADIGMS.names()),
    ):
        unknown = sorted({n for n in names if isinstance(n, str)} - set(registered))
        if unknown:
            noun = "task type(s)" if what == "type" else "paradigm(s)"
            shown = task_type_names() if what == "type" else paradigm_names()
            raise UsaggError(
                f"{store.study_yaml}: the study's {noun} {', '.join(map(repr, unknown))} are not registered in this "
                f"process (registered: {', '.join(shown)}); {_plugins_to_load(store, what)}"
            )


def load_input(run_dir: Path | None, results: Path | None, root: Path = Path("runs")) -> AnalysisInput:
    """Read a run store (RUN_DIR, or the latest under root) or an imported CSV into an AnalysisInput."""
    if results is not None and run_dir is not None and not Path(run_dir).is_dir():
        raise UsaggError(f"run folder {run_dir} {_not_a_folder(Path(run_dir))}")
    store: RunStore | None
    rebuilt: str | None = None  # results.csv as the jobs give it, where the file is missing or stale
    if results is None:
        run_dir = resolve_run_dir(run_dir, root)
        store = RunStore(run_dir)
        check_registered(store)
        csv_path = store.results_csv
        rebuilt = store.current_results()  # missing or older than a job's metrics: read from the jobs, not written
        why = results_damage(csv_path) if rebuilt is None else None
        if why is not None:
            raise UsaggError(
                f"{csv_path} is damaged ({why}): `{command('usagg', 'repair', store.root)}` sets it aside and "
                "rebuilds it from the done jobs"
            )
    else:
        store = RunStore(run_dir) if run_dir is not None else None
        csv_path = Path(results)
    try:
        if rebuilt is None:
            table, table_sha256, why_rebuilt = read_results(csv_path), sha256_of(csv_path), None
        else:
            table, table_sha256 = parse_results(rebuilt, csv_path), hashlib.sha256(rebuilt.encode()).hexdigest()
            why_rebuilt = "behind its jobs" if csv_path.is_file() else "missing"
    except UnknownTaskType as err:
        raise UsaggError(f"{err}; {_plugins_to_load(store)}") from None
    study = store.stored_study() if store is not None else {}
    settings = _settings(study, str(store.study_yaml) if store is not None else "defaults")
    tasks = _stored_tasks(study, str(store.study_yaml) if store is not None else "the study")
    primary, notes = _primary_metrics(table, {t["id"]: t.get("metric") for t in tasks})
    declared_order = [t["id"] for t in tasks]
    order = [t for t in declared_order if t in primary] + [t for t in table.tasks if t not in declared_order]
    unknown = [t for t in settings.representative_tasks if t not in primary]
    if unknown:
        notes.append(f"analysis.representative_tasks names tasks without results: {', '.join(unknown)}")
    planned = store.planned_count() if store is not None else None
    name = _study_name(study, store, table, csv_path)
    affinity = _affinity(run_dir if results is None else None, notes)  # before `notes` is handed over
    metrics = _job_metrics(store, table)
    return AnalysisInput(
        table=table,
        study=str(name),
        source=str(csv_path),
        settings=settings,
        primary=primary,
        task_order=order,
        table_sha256=table_sha256,
        rebuilt=why_rebuilt,
        run_dir=run_dir,
        jobs_planned=planned,
        expert_usage=_expert_usage(metrics),
        histories=_histories(metrics),
        trivial=_trivial(metrics, primary),
        selection_warnings=_selection_warnings(metrics),
        notes=notes,
        item_scores=_item_score_files(store, table),
        affinity=affinity,
        designed_groups=_designed_groups(study, order),
        ag_search=_ag_search(study),
        planned=_planned(store, study, table),
    )


def _planned(store: RunStore | None, study: dict, table: ResultsTable) -> Planned:
    """The stored study's `paradigms` and its planned jobs that have no row in the table, with their states; nothing
    for an imported table, or a plan that is no list of jobs (the simulator's: only its length is read)."""
    if store is None:
        return Planned()
    names = [next(iter(p)) if isinstance(p, dict) and len(p) == 1 else p for p in study.get("paradigms") or []]
    try:
        jobs = store.jobs()
    except UsaggError:
        jobs = []
    with_rows = set(table.job_ids)
    missing: dict[str, list[tuple[str, str]]] = {}
    for j in jobs:
        if j.id not in with_rows:
            missing.setdefault(j.paradigm, []).append((j.id, store.job_state(j.id)))
    return Planned(tuple(str(p) for p in names), {p: tuple(v) for p, v in missing.items()})


def finite(x: float | None) -> bool:
    """True for a real number (not None, not NaN)."""
    return x is not None and not math.isnan(x)
