"""The task-type interface: everything usagg knows about one kind of task, in one class.

A task type (a subclass of `TaskType`, one module under usagg/tasktypes/ or in a
plug-in) answers every type-dependent question the pipeline asks:

- reading the dataset: its `task_name` spellings, the CSV columns it needs, how a
  row becomes a label (`parse_label`) and a label a row (`csv_fields`), what the
  files must satisfy (`check_label`) and how `data check` summarises labels;
- training: which num_classes make sense, whether splits are stratified by class,
  the targets in model space (`targets`, `batch_targets`) and the head with its
  loss (`build_head`);
- scoring: what one image's prediction is (`prediction_shape`, checked before
  scoring), the ground truth at original resolution (`ground_truth`), predictions
  mapped back to pixels, written in the challenge's format and scored
  (`score`), the metrics with their directions, the first being the primary;
- figures: a marker, a colour and a short name.

Nothing here imports torch, scipy or matplotlib at import time: the spec, the
store and the analysis read the registry, and `usagg --help` must stay instant.
Types import what they need inside their methods.
"""

from __future__ import annotations

import functools
import inspect
import math
import operator
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args

import numpy as np

from usagg.wording import counted

if TYPE_CHECKING:
    import torch

    from usagg.data.fmc_uia import Sample
    from usagg.model.heads import TaskHead
    from usagg.predictions import PredictionWriter
    from usagg.spec.models import HeadSpec, TaskSpec


@dataclass(frozen=True)
class Metric:
    """A metric a type reports: its name, direction, unit (shown on axes and in tables) and the values it can take
    (None: unbounded on that side), which bound a relative change versus TS (usagg/analysis/advice_model.py)."""

    name: str
    higher_is_better: bool
    unit: str | None = None
    lower: float | None = None
    upper: float | None = None


#: The dtype kinds a prediction row may declare: "integer" (any integer or boolean dtype, handed to `score` as int64)
#: and "float" (any floating dtype, handed to `score` as float32; usagg/engine/evaluate.py `normalised`).
PredictionKind = Literal["integer", "float"]


@dataclass(frozen=True)
class PredictionShape:
    """One image's prediction as a type's `score` reads it (`TaskType.prediction_shape`): the shape of one row of
    its head's `predict` output and, where it matters, its dtype kind (None: either). The engine checks every
    split's predictions against it before `score` (usagg/engine/typechecks.py), so a head predicting the wrong
    size fails its job naming both shapes instead of being scored with wrong numbers."""

    shape: tuple[int, ...]
    kind: PredictionKind | None = None

    def __post_init__(self) -> None:
        """Refuse what no prediction can be: raised inside the type's `prediction_shape`, the job's error names
        the type (`type_error`)."""
        try:
            shape = tuple(operator.index(n) for n in self.shape)
        except TypeError:
            raise ValueError(f"PredictionShape.shape must be a tuple of ints, got {self.shape!r}") from None
        if any(n < 1 for n in shape):
            raise ValueError(f"PredictionShape.shape must hold positive sizes, got {shape!r}")
        if self.kind is not None and self.kind not in get_args(PredictionKind):
            kinds = ", ".join(map(repr, get_args(PredictionKind)))
            raise ValueError(f"PredictionShape.kind must be one of {kinds} or None, got {self.kind!r}")
        object.__setattr__(self, "shape", shape)

    def text(self, rows: int | None = None) -> str:
        """The row as messages show it ('float [2]'), or the whole output of `rows` images ('float [6, 2]')."""
        dims = ", ".join(map(str, (() if rows is None else (rows,)) + self.shape))
        return f"{self.kind} [{dims}]" if self.kind else f"[{dims}]"


class TaskTypeError(RuntimeError):
    """A task type's code (its `score`, its head's `loss` or `predict`) raised: the job's one-line error names the
    type, its module, the task and the call (`type_error`), the original error chained. A RuntimeError, as the
    errors step-graph recording meets are (usagg/engine/step.py runs such a step eagerly, where it raises again)."""


def type_error(task_type: TaskType, task_id: str, call: str, err: Exception) -> TaskTypeError:
    """The `TaskTypeError` for `err` raised by `call` ('score()', 'head loss()') of `task_type` for task `task_id`;
    before, a plug-in's ZeroDivisionError read "ZeroDivisionError: division by zero" with no type nor task."""
    detail = (str(err).strip().splitlines() or [""])[0]
    return TaskTypeError(
        f"task type {task_type.name!r} ({type(task_type).__module__}) {call} for task {task_id!r} raised "
        f"{type(err).__name__}{': ' + detail if detail else ''}"
    )


class RowError(Exception):
    """One CSV row cannot be used; `kind` names the problem for `data check` (e.g. bad_value)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def resolve_inside(root: Path, csv_dir: Path, value: str, real_dirs: dict[str, str] | None = None) -> Path:
    """Resolve a CSV path relative to csv_files/; RowError when it leaves the dataset root.

    Symbolic links are followed for the check: a link inside the root to a file outside it would
    make the dataset read files no copy of the root carries (the returned path keeps the link).
    `real_dirs` memoises folders already resolved, for one scan of a split (`Row.real_dirs`): a
    dataset's images share a few folders, so a row then costs one lstat instead of one per path
    component (`_real_path`).
    """
    path = os.path.normpath(os.path.join(csv_dir, value.strip()))
    top = str(root)
    if not _inside(path, top):
        raise RowError("path_outside_root", f"path {value!r} resolves to {path}, outside the dataset root {root}")
    real = _real_path(path, real_dirs)
    if not _inside(real, _real(top)):
        raise RowError(
            "path_outside_root",
            f"path {value!r} leads through a symbolic link to {real}, outside the dataset root {root}; "
            "copy the file into the root (a dataset must hold its own files)",
        )
    return Path(path)


def _real_path(path: str, real_dirs: dict[str, str] | None) -> str:
    """`os.path.realpath(path)`, its folder taken from (and added to) `real_dirs`: resolving a resolved folder's
    entry needs only to know whether the entry is itself a link."""
    if real_dirs is None:
        return os.path.realpath(path)
    folder, name = os.path.split(path)
    real_folder = real_dirs.get(folder)
    if real_folder is None:
        real_folder = real_dirs[folder] = os.path.realpath(folder)
    entry = os.path.join(real_folder, name)
    return os.path.realpath(entry) if os.path.islink(entry) else entry


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root if root.endswith(os.sep) else root + os.sep)


@functools.lru_cache(maxsize=8)
def _real(root: str) -> str:
    """The root with its own symbolic links resolved (a root that is itself a link is fine)."""
    return os.path.realpath(root)


def unpadded(column: str, raw: str) -> str:
    """A path cell as written; RowError when spaces pad it, which the challenge's evaluation keeps.

    Its evaluate.py reads the cell unstripped, so a padded path names no file there and the image
    goes unscored while usagg would score it: the two would report different numbers.
    """
    if raw != raw.strip():
        raise RowError(
            "padded_path",
            f"column {column} is {raw!r}, with spaces around the path; the challenge's evaluation reads the "
            "cell as written and would not find the file: remove the spaces",
        )
    return raw


#: Share of an image side a keypoint or box may stray outside the image (annotation at the very edge)
#: before `data check` reports it; at least one pixel.
LABEL_MARGIN = 0.02


def label_margin(image_hw: tuple[int, int]) -> tuple[float, float]:
    """(x, y) tolerance in pixels for labels just outside an image of (height, width) `image_hw`."""
    h, w = image_hw
    return max(1.0, LABEL_MARGIN * w), max(1.0, LABEL_MARGIN * h)


#: Images whose smaller side reaches this many pixels cannot have every label coordinate within [0, 1] as pixels
#: but by mistake: such labels are fractions of the image size, as many annotation tools export them.
NORMALISED_FROM_PX = 8


def normalised_coordinates(
    samples: Sequence[Sample],
    image_hws: Sequence[tuple[int, int] | None],
    root: Path,
    noun: str,
    xy: Callable[[Sample], Sequence[tuple[float, float]]],
    columns: str,
) -> list[tuple[str, str]]:
    """The `normalised_coordinates` problem when every (x, y) of `xy` over the samples lies within [0, 1] while the
    images are larger than a few pixels (`NORMALISED_FROM_PX`); [] otherwise. A type's `check_task` calls it for
    its pixel coordinates (`noun` "boxes", `columns` the CSV columns that hold them)."""
    sized = [(s, hw) for s, hw in zip(samples, image_hws, strict=True) if hw is not None]
    points = [p for s, _ in sized for p in xy(s)]
    if not points or min(min(hw) for _, hw in sized) < NORMALISED_FROM_PX:
        return []
    if not all(0.0 <= v <= 1.0 for p in points for v in p):
        return []
    first, (h, w) = sized[0]
    shown = ", ".join(f"({x:g}, {y:g})" for x, y in xy(first))
    pixels = ", ".join(f"({x * w:.4g}, {y * h:.4g})" for x, y in xy(first))
    sides = sorted(v for _, hw in sized for v in hw)
    side = f"{sides[0]}" if sides[0] == sides[-1] else f"{sides[0]}-{sides[-1]}"
    csvs = ", ".join(sorted({_placed(s.csv_file, root) for s, _ in sized}))
    return [
        (
            "normalised_coordinates",
            f"task {first.task_id}: the {noun} of all {counted(len(sized), 'image')} in {csvs} lie within [0, 1] "
            f"while the images are {side} px a side: the columns {columns} are pixels, so every one "
            "of them sits within a pixel of the image's top-left corner. Multiply each x by its image's width and "
            f"each y by its height (row {first.row}'s (x, y) {shown} on its {w}x{h} image are {pixels} in pixels)",
        )
    ]


def _placed(path: Path, root: Path) -> str:
    """A CSV as the data check names it: relative to the dataset root when inside it (as `fmc_uia.rel`, which
    this layer does not import)."""
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def positive_hw(orig_hw: tuple[int, int]) -> tuple[int, int]:
    """(height, width) as ints, refusing sizes that cannot be an image's."""
    h, w = (int(v) for v in orig_hw)
    if h <= 0 or w <= 0:
        raise ValueError(f"original size (height, width) must be positive, got {orig_hw!r}")
    return h, w


@dataclass(frozen=True)
class Row:
    """One CSV record with typed accessors that raise `RowError` naming the column and what was expected."""

    record: dict[str, str]
    root: Path  # dataset root (absolute)
    csv_dir: Path  # folder of the CSV: relative paths start here
    real_dirs: dict[str, str] | None = None  # folders resolved so far in this scan (`resolve_inside`)

    def text(self, column: str, what: str = "a value") -> str:
        raw = (self.record.get(column) or "").strip()
        if not raw:
            raise RowError("missing_value", f"column {column} is empty, expected {what}")
        return raw

    def number(self, column: str, kind: str = "bad_value") -> float:
        raw = (self.record.get(column) or "").strip()
        try:
            value = float(raw)
        except ValueError:
            raise RowError(kind, f"column {column} is {raw!r}, expected a number") from None
        if not math.isfinite(value):
            raise RowError(kind, f"column {column} is {raw!r}, expected a finite number")
        return value

    def integer(self, column: str, kind: str = "bad_value") -> int:
        value = self.number(column, kind)
        if value != int(value):
            raise RowError(kind, f"column {column} is {self.record.get(column)!r}, expected an integer")
        return int(value)

    def path(self, column: str, what: str = "a file path") -> Path:
        """An absolute path inside the dataset root, from an unpadded path relative to the CSV's folder."""
        self.text(column, what)  # an empty cell is missing_value, not padding
        return resolve_inside(self.root, self.csv_dir, unpadded(column, self.record[column]), self.real_dirs)


@dataclass(frozen=True)
class EvalItem:
    """One test image as scoring sees it: the CSV key, original (H, W), ground truth, and its Sample."""

    image_path: str
    orig_hw: tuple[int, int]
    gt: Any
    sample: Sample


#: Target geometries (`TaskType.target_geometry`) a geometric augmentation knows how to move (usagg/engine/augment.py).
GEOMETRIES = ("mask", "boxes", "points", "label")


class TaskType:
    """Base class of task types; subclass it, set the class attributes, implement the methods, register it.

    See docs/internals.md, "How to add a task type", and tests/test_tasktype_plugin.py
    for a complete plug-in written outside the package.
    """

    #: Registry name, the `type` of a task in a study spec and in results.csv.
    name: ClassVar[str]
    #: `task_name` spellings accepted in FMC_UIA CSVs besides `name` (compared case-insensitively).
    csv_names: ClassVar[tuple[str, ...]] = ()
    #: The spelling written by generators (the challenge's files capitalise some).
    csv_name: ClassVar[str | None] = None
    #: Metrics reported, in the order they are shown; the first is the default primary metric.
    metrics: ClassVar[tuple[Metric, ...]]
    #: What num_classes means for this type (docs, `usagg types`).
    num_classes_meaning: ClassVar[str]
    #: JSON file of the challenge's submission format holding this type's predictions.
    prediction_file: ClassVar[str]
    #: Keys of each prediction entry, in the order written.
    prediction_keys: ClassVar[tuple[str, ...]]
    #: Train and selection subsets keep the class balance (`stratum` gives the class).
    stratified: ClassVar[bool] = False
    #: How the type's model-space targets move with the image under a geometric augmentation
    #: (usagg/engine/augment.py): "mask" (a label map, warped by nearest neighbour), "boxes" (xyxy in
    #: [0, 1]), "points" ([K, 2] in [0, 1]), "label" (unchanged); None: unknown, so geometric
    #: augmentation is refused for the type (`GEOMETRIES`: by the study's validation, before any job).
    target_geometry: ClassVar[str | None] = None
    #: Settings of `model.heads` this type's head reads whose default is the earlier behaviour: each enters the
    #: id of a job with a task of this type, and only when set otherwise (rule `type_setting`, usagg/plan.py).
    hash_settings: ClassVar[tuple[str, ...]] = ()
    #: Where the type sorts in tables, figures and `usagg types` (built-ins 10..40, as the challenge lists them).
    order: ClassVar[int] = 100
    #: Figure style: matplotlib marker, colour, and a name short enough for a narrow axis.
    marker: ClassVar[str] = "P"
    color: ClassVar[str] = "#777777"
    short_name: ClassVar[str | None] = None

    # ----- vocabulary

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metrics)

    @property
    def primary_metric(self) -> str:
        return self.metrics[0].name

    @property
    def short(self) -> str:
        return self.short_name or self.name

    def check_num_classes(self, n: int) -> str | None:
        """Why `n` classes cannot be right for this type (None when it can)."""
        return None

    # ----- reading the dataset (no images opened)

    def required_columns(self, num_classes: int) -> tuple[str, ...]:
        """CSV columns a row of this type needs besides image_path, task_id, task_name, num_classes."""
        return self.csv_columns(num_classes)

    def csv_columns(self, num_classes: int) -> tuple[str, ...]:
        """The label columns a generator writes, in order."""
        raise NotImplementedError

    def parse_label(self, row: Row, num_classes: int) -> Any:
        """The label of one CSV row in original-image pixels; raise RowError when the row is unusable."""
        raise NotImplementedError

    def csv_fields(self, label: Any, num_classes: int) -> list[object]:
        """The values of `csv_columns` for a label (a path label as the CSV string): the inverse of parse_label."""
        raise NotImplementedError

    def stratum(self, label: Any) -> int:
        """Class of a label for stratified splits (only called when `stratified`)."""
        return 0

    # ----- checking files (`usagg data check`)

    def check_label(self, sample: Sample, image_hw: tuple[int, int], root: Path) -> tuple[list[tuple[str, str]], Any]:
        """Problems (kind, message) of a sample's label against its decoded image size, and what
        `summary_keys` needs (e.g. the classes present in a mask). Called with the image already opened.

        The data check keeps what this finds between checks (usagg/data/checkcache.py), keyed by the row and by
        the files the label names (the `Path`s in it, a mask): read no other file, or a change to it goes
        unseen until `usagg data check --recheck`."""
        return [], None

    def summary_keys(self, sample: Sample, checked: Any) -> list[str]:
        """Keys counted in the per-task label summary of `data check` (one count per key per image)."""
        return []

    def check_task(
        self, samples: Sequence[Sample], image_hws: Sequence[tuple[int, int] | None], root: Path
    ) -> list[tuple[str, str]]:
        """Problems (kind, message) of one split of a task's labels taken together, given each sample's decoded
        (height, width) (None where the image did not decode): what no row shows alone, such as coordinates all
        written as fractions of the image size (`normalised_coordinates`). A message starts "task <id>:" and
        names its CSV. Run at every check (never kept), on the sizes the file checks found."""
        return []

    def train_split_warning(self, samples: Sequence[Sample], num_classes: int) -> str | None:
        """Why a model trained on these samples cannot learn the whole task, as a phrase completing "the train
        split has ..." (e.g. "no image of class 1: ..."); None when nothing is off. `data check` and the data
        check of `usagg run` and `validate` warn with it per task."""
        return None

    def test_split_warning(self, samples: Sequence[Sample], num_classes: int) -> str | None:
        """Why the type's metrics are not the usual numbers on a test split of these samples, and what they
        will be, as a phrase completing "the val split has ..." (e.g. "no image of class 2: ..."); None when
        nothing is off. `data check` warns with it per task."""
        return None

    def summary_text(self, counts: dict[str, int]) -> str:
        """The label summary shown by `data check`."""
        return ", ".join(f"{v} x {k}" for k, v in counts.items()) or "-"

    # ----- training

    def targets(self, samples: Sequence[Sample], orig_hw: np.ndarray, image_size: int, cache_dir: Path) -> np.ndarray:
        """Targets in model space for every sample, stacked ([N, ...], may be a read-only memmap).

        `orig_hw` is int [N, 2] (height, width) of the decoded images.
        """
        raise NotImplementedError

    def batch_targets(self, targets: torch.Tensor) -> torch.Tensor:
        """A batch of stored targets as the head's loss takes them (e.g. a dtype cast on the device)."""
        return targets

    def build_head(self, task: TaskSpec, heads: HeadSpec, embed_dim: int, n_features: int) -> TaskHead:
        """The task's head: an nn.Module with forward(features), loss(outputs, targets) and predict(outputs)
        (see usagg/model/heads.py `TaskHead`)."""
        raise NotImplementedError

    def prediction_shape(self, task: TaskSpec, image_size: int) -> PredictionShape | None:
        """What one image's prediction must be for `task` at the model's `image_size` (S: inputs are S x S), as
        `score` reads it: checked on every split before `score` (usagg/engine/typechecks.py). None (the default,
        a type written before the declaration): only the number of rows is checked, one per image."""
        return None

    # ----- scoring and predictions

    def trivial_predictions(self, task: TaskSpec, image_size: int, train_targets: np.ndarray) -> dict[str, np.ndarray]:
        """Predictors without skill: name -> the one prediction (a row of `prediction_shape`) every test image gets,
        made from the training targets (`targets` of the job's training split) at most. The engine scores each on
        the test split through `score` (usagg/engine/evaluate.py `trivial_scores`, metrics.json `trivial`), and the
        analysis holds the baseline against the best of them: a baseline that does not beat a constant prediction
        has no skill for a paradigm to change (usagg/analysis/delta.py `at_chance`). {} (the default, as for a
        plug-in type that declares none): no such level is known, only AUC's 0.5."""
        return {}

    def ground_truth(self, sample: Sample) -> Any:
        """The label at original resolution as the metrics take it."""
        return sample.label

    def score(
        self,
        task: TaskSpec,
        preds: np.ndarray,
        items: Sequence[EvalItem],
        writer: PredictionWriter | None = None,
        metrics: Sequence[str] | None = None,
    ) -> dict[str, float]:
        """Metrics of one task from its normalised predictions (one per item, `predict`'s output on the CPU).

        `metrics`: compute only these declared names (with their per-class variants), every metric when None;
        an unknown name is a ValueError (`wanted`). Model selection asks for the primary metric only, so a
        costly secondary one (the Hausdorff distance) is not computed every epoch. With a writer (the final
        test evaluation), also write every prediction exactly as scored and hand the writer the per-image
        values of the task's primary metric (`PredictionWriter.add_item_scores`) for the test-set bootstrap.
        No items at all score 0.0 on every metric, as the challenge's evaluation records a task without
        predictions (`empty_scores`).
        """
        raise NotImplementedError

    def wanted(self, metrics: Sequence[str] | None) -> tuple[str, ...]:
        """The declared metric names to compute, in declaration order: all of them for None.

        Per-class variants (DSC_class2) are not names of their own: they come with their metric.
        """
        if metrics is None:
            return self.metric_names
        if isinstance(metrics, str):
            raise TypeError(f"metrics must be a sequence of metric names, got the string {metrics!r}")
        unknown = [m for m in metrics if m not in self.metric_names]
        if unknown:
            raise ValueError(
                f"{', '.join(map(repr, unknown))} not a {self.name} metric; allowed: {', '.join(self.metric_names)}"
            )
        return tuple(m for m in self.metric_names if m in metrics)

    def record_item_scores(
        self, writer: PredictionWriter, task: TaskSpec, kind: str, items: Sequence[EvalItem], values: np.ndarray
    ) -> None:
        """Hand the writer the per-image `values` of the task's primary metric (see `score`)."""
        metric = task.metric or self.primary_metric  # a validated TaskSpec has it filled in
        direction = next(m.higher_is_better for m in self.metrics if m.name == metric)
        writer.add_item_scores(task.id, metric, direction, kind, [it.image_path for it in items], values)

    def empty_scores(self, metrics: Sequence[str] | None) -> dict[str, float]:
        """The challenge's record of a task with no predictions: 0.0 on every metric asked for."""
        return dict.fromkeys(self.wanted(metrics), 0.0)

    def score_per_image(
        self,
        task: TaskSpec,
        preds: np.ndarray,
        items: Sequence[EvalItem],
        writer: PredictionWriter | None,
        metrics: Sequence[str] | None,
        *,
        to_pixels: Callable[[np.ndarray, tuple[int, int]], np.ndarray],
        write: Callable[[PredictionWriter, str, str, np.ndarray, tuple[int, int]], None],
        measure: Callable[[np.ndarray, np.ndarray], np.ndarray],
    ) -> dict[str, float]:
        """`score` of a type whose one metric is a mean over images of `measure(pixels, ground truth)` (a box's
        IoU, the keypoints' radial error): each prediction mapped to pixels as written, the per-image values
        handed to the writer (kind "mean")."""
        self.wanted(metrics)  # the one metric: nothing to leave out, but a wrong name is refused
        if not items:
            return self.empty_scores(metrics)
        normalised = np.asarray(preds, dtype=np.float64)
        px = np.stack([to_pixels(p, it.orig_hw) for p, it in zip(normalised, items, strict=True)])
        if writer is not None:
            for it, p in zip(items, normalised, strict=True):
                write(writer, task.id, it.image_path, p, it.orig_hw)
        values = measure(px, np.stack([it.gt for it in items]))
        if writer is not None:
            self.record_item_scores(writer, task, "mean", items, values)
        return {self.primary_metric: float(values.mean())}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A type whose `score` predates the `metrics` argument still takes it: it computes every metric
        and only the names asked for are returned (plug-ins written against the older interface)."""
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("score")
        if own is not None and "metrics" not in inspect.signature(own).parameters:
            cls.score = _keeping_wanted(own)  # type: ignore[method-assign]  # deliberately wraps the old signature

    def load_prediction(self, entry: dict[str, Any], folder: Path) -> dict[str, Any]:
        """A prediction entry read back from `folder` (a type with files beside the JSON loads them here)."""
        return entry

    def __repr__(self) -> str:
        return f"<task type {self.name}>"


def metric_base(name: str) -> str:
    """The declared metric of a reported name: DSC for DSC_class2, the name itself otherwise."""
    return name.split("_class", 1)[0]


def _keeping_wanted(score: Callable[..., dict[str, float]]) -> Callable[..., dict[str, float]]:
    """`score` of an older type, wrapped to accept `metrics` and keep only those names (and their variants)."""

    @functools.wraps(score)
    def wrapper(
        self: TaskType,
        task: TaskSpec,
        preds: np.ndarray,
        items: Sequence[EvalItem],
        writer: PredictionWriter | None = None,
        metrics: Sequence[str] | None = None,
    ) -> dict[str, float]:
        wanted = set(self.wanted(metrics))
        return {k: v for k, v in score(self, task, preds, items, writer).items() if metric_base(k) in wanted}

    return wrapper
