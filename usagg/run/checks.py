"""What a run checks before it writes anything: the model weights load into the backbone
(`check_model_weights`), and the dataset the jobs will read has no problems in the study's tasks and leaves every
task enough images (`check_study_data`, `DataProblems`). `usagg run`, `run --dry-run` and `usagg validate` share
them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from usagg.errors import DataError, UsaggError
from usagg.wording import command, counted

if TYPE_CHECKING:
    from usagg.data.check import CheckProgress, CheckReport
    from usagg.data.fmc_uia import Problem
    from usagg.data.splits import TaskRows
    from usagg.spec.models import Study


#: Problems listed in a DataProblems message (the CLI lists more, see `usagg data check` for all).
PROBLEMS_IN_MESSAGE = 10


class DataProblems(DataError):
    """The study's tasks (or the whole dataset) have problems, so nothing is trained. Exit code 1.

    `problems` are the blocking ones (default: all of `report`); `report` holds every problem found.
    """

    exit_code = 1

    def __init__(self, report: CheckReport, problems: list[Problem] | None = None) -> None:
        self.report = report
        self.problems = list(report.problems) if problems is None else problems
        from usagg.data.check import ProblemGroup, grouped

        head = f"the dataset at {report.root} has {counted(len(self.problems), 'problem')} in this study's tasks"
        lines = [f"{head}; not training:"]
        entries = grouped(self.problems)  # a CSV written on Windows: one entry for its 3,000 rows
        for p in entries[:PROBLEMS_IN_MESSAGE]:
            where = f"{p.where()}: " if isinstance(p, ProblemGroup) or p.row else ""
            lines.append(f"  {p.kind} {where}{p.message}")
        if len(entries) > PROBLEMS_IN_MESSAGE:
            more = len(entries) - PROBLEMS_IN_MESSAGE
            lines.append(f"  ... and {more} more ({command('usagg', 'data', 'check', Path(report.root))})")
        super().__init__("\n".join(lines))


#: Fewest training images a task may have in a job: batch statistics (the heads' normalisation) need two.
MIN_TRAIN = 2


def check_model_weights(study: Study) -> None:
    """A `model.weights` that is missing or would not load into the backbone: UsaggError (exit 2) naming the
    field and the file, before anything is written (usagg/model/weights_check.py `check_weights`). A plug-in's
    backbone without weights is built once on the meta device (shapes only), so an entry timm builds otherwise
    (not an Eva, another depth or width) is said here, not in every job (`create_vit`)."""
    if study.model.weights is not None:
        from usagg.model.weights_check import check_weights

        check_weights(study.model.weights, study.model.backbone)
        return
    from usagg.model.zoo import hashed_definition

    if hashed_definition(study.model.backbone) is not None:
        import torch

        from usagg.model.backbones import create_vit

        with torch.device("meta"):
            create_vit(study.model.backbone)


def data_not_checkable(study: Study) -> str | None:
    """Why the study's data cannot be checked without writing (a synthetic benchmark not generated yet), or None.

    `usagg validate` and `run --dry-run` change nothing, so they say this instead of generating it.
    """
    data = study.data
    if data.synthetic is None:
        return None
    from usagg.data.source import synth_complete, synth_dir, synth_key

    folder = synth_dir(data)
    if synth_complete(folder, synth_key(data.synthetic), data.synthetic):  # what dataset_root reuses without writing
        return None
    return f"the synthetic benchmark ({folder}) is not generated yet; the first `usagg run` generates and checks it"


#: What a missing `data.root` says of where a relative one is read from: a folder beside the spec, written as if
#: from the current folder, read "data.root /abs/path/syn does not exist" with no word why it was looked for there.
RELATIVE_ROOT = (
    "(A relative data.root is taken from the spec file's folder, or from the current folder where --set or "
    "overrides= give it.)"
)


def check_study_data(
    study: Study, on_progress: CheckProgress | None = None
) -> tuple[CheckReport, list[Problem], TaskRows]:
    """Check the dataset the study's jobs will read (generating the synthetic one on first use); returns the report,
    the problems of tasks the study does not train (warnings) and the study's rows (read once: the split sizes and
    `StudyRun.check_done_data` read them).

    Problems of the study's tasks, and dataset-wide ones, raise DataProblems (exit 1); a missing
    data root a DataError (exit 2); fractions that leave a task too few images a UsaggError.
    `usagg run`, `run --dry-run` and `usagg validate` all check the data with this; `on_progress(split, checked,
    images)` hears its file checks.
    """
    from usagg.cachedir import cache_root
    from usagg.data.catalog import check_synthetic_tasks
    from usagg.data.check import check_dataset
    from usagg.data.scope import split_by_scope
    from usagg.data.source import dataset_root

    data = study.data
    if data.synthetic is not None:  # before generating it: tasks it would not have are a spec error
        check_synthetic_tasks(study.tasks, data.synthetic)
    try:
        root = dataset_root(data)
    except DataError as err:  # a relative data.root read from another folder than the user thought
        if data.root is not None and not data.root.is_dir():
            raise DataError(f"{err} {RELATIVE_ROOT}") from None
        raise
    splits = ("train", "val") if data.test_split == "val" else ("train",)
    report = check_dataset(
        root,
        study.tasks,
        splits=splits,
        leakage=data.leakage,
        near_duplicate_threshold=data.near_duplicate_threshold,
        test_carve=None if data.test_split == "val" else (data.test_fraction, data.split_seed),
        cache=cache_root(data.cache_dir),
        on_progress=on_progress,
    )
    blocking, warnings = split_by_scope(report, [t.id for t in study.tasks])
    warnings += report.warnings  # `data.leakage: warn`: near duplicates reported, never blocking
    if blocking:
        raise DataProblems(report, blocking)
    return report, warnings, _check_split_sizes(study, root)


def _check_split_sizes(study: Study, root: Path) -> TaskRows:
    """Every task keeps at least MIN_TRAIN training images at every fraction (a batch of one image cannot
    train: batch statistics need two), and one selection image when a selection split is asked for; the rows
    read."""
    from usagg.data.splits import make_splits, read_rows

    short = []
    rows = read_rows(study.data, root, study.tasks)
    for fraction in study.fractions:
        for task_id, sp in make_splits(study.data, root, study.tasks, fraction, 0, rows).items():
            if len(sp.train) < MIN_TRAIN:
                short.append(f"{task_id} has {counted(len(sp.train), 'training image')} at fraction {fraction:g}")
            if study.data.selection_fraction > 0 and not sp.select:
                short.append(f"{task_id} has no selection image")
    if short:
        raise UsaggError(
            f"data.selection_fraction {study.data.selection_fraction:g} and fractions "
            f"{[float(f) for f in study.fractions]} leave too little data: {'; '.join(short[:6])}"
            + (f" (and {len(short) - 6} more)" if len(short) > 6 else "")
            + f". Every task needs at least {MIN_TRAIN} training images; raise the fractions or lower "
            "data.selection_fraction (0 turns selection off)."
        )
    return rows
