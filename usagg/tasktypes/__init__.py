"""The task-type registry: names -> `TaskType` (usagg/tasktypes/base.py), timm-style.

Built-in types are the modules of this package (every module but `base` holds one
and registers it on import); nothing lists them, so adding a type is adding a
module. Plug-ins outside the package register the same way, from:

- code: `register_task_type(MyType)` (a decorator on the class, or a call);
- an installed distribution's entry point in the group `usagg.task_types`;
- `USAGG_PLUGINS=module[,module...]`, modules imported on first use (they reach
  worker processes too, which inherit the environment; a module that registered in code
  is imported in a worker before its job, `usagg.registry.code_plugins`).

`TASK_TYPES` is a `usagg.registry.Registry`, filled on first lookup (built-ins and
plug-ins, `usagg.registry.load_plugins`), so importing it stays cheap and never
imports torch, scipy or matplotlib.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import re
from typing import TypeVar

from usagg.registry import PLUGINS_ENV, Registry, callable_name, load_plugin, plugin_hint
from usagg.tasktypes.base import (
    EvalItem,
    Metric,
    PredictionKind,
    PredictionShape,
    Row,
    RowError,
    TaskType,
    TaskTypeError,
    metric_base,
    type_error,
)

__all__ = [
    "PLUGINS_ENV",
    "TASK_TYPES",
    "EvalItem",
    "Metric",
    "PredictionKind",
    "PredictionShape",
    "Row",
    "RowError",
    "TaskType",
    "TaskTypeError",
    "builtin_task_types",
    "default_metric",
    "find_task_type",
    "get_task_type",
    "metric_best",
    "metric_bounds",
    "metric_direction",
    "metric_unit",
    "register_task_type",
    "scale_problem",
    "task_type_names",
    "task_types",
    "type_error",
    "type_origin",
    "unregister_task_type",
]

ENTRY_POINT_GROUP = "usagg.task_types"

T = TypeVar("T", bound=type[TaskType])

_builtins_loaded = False


def _load_builtins() -> None:
    """Import the modules of this package (once): each registers its type."""
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for mod in pkgutil.iter_modules(__path__):
            if mod.name != "base":
                importlib.import_module(f"{__name__}.{mod.name}")


def _adopt(registry: Registry[TaskType], obj: object) -> None:
    """An entry point may name a TaskType class (registered here) or a module that registers on import.

    The class is refused as a module's `register_task_type` would be (a name or metric another type holds), in
    the same paragraph naming the plug-in: skipping it would leave the study on the other type unannounced.
    """
    if isinstance(obj, type) and issubclass(obj, TaskType) and type(registry.get(getattr(obj, "name", ""))) is not obj:
        where = f"task type class {callable_name(obj)} (an entry point of group {ENTRY_POINT_GROUP!r})"
        load_plugin(where, functools.partial(register_task_type, obj))


#: name -> the one instance of each registered type (usagg/registry.py).
TASK_TYPES: Registry[TaskType] = Registry(
    "task type",
    group=ENTRY_POINT_GROUP,
    builtins=_load_builtins,
    adopt=_adopt,
    hint=plugin_hint("How to add a task type"),
)


def register_task_type(cls: T, *, replace: bool = False) -> T:
    """Register a TaskType subclass under its `name` (usable as a class decorator); returns the class.

    A second type with a registered name is an error unless `replace`, so two
    plug-ins cannot silently shadow each other or a built-in type.
    """
    if not (isinstance(cls, type) and issubclass(cls, TaskType)):
        raise TypeError(f"register_task_type takes a TaskType subclass, got {cls!r}")
    inst = cls()
    name = getattr(cls, "name", "")
    if not name or not name.replace("_", "").replace("-", "").isalnum() or name != name.lower():
        raise ValueError(f"{cls.__name__}.name must be a lower-case identifier such as 'keypoints', got {name!r}")
    if not inst.metrics:
        raise ValueError(f"task type {name!r} declares no metrics; the first one is its primary metric")
    _check_style(cls)
    _load_builtins()  # first, so a clash with a built-in is always the plug-in's to resolve
    old = TASK_TYPES.get(name)
    if old is not None and type(old) is not cls and not replace:
        raise ValueError(f"task type {name!r} is already registered by {callable_name(type(old))}")
    _check_metrics(inst)
    _check_files_and_names(inst)
    TASK_TYPES.register(
        name, inst, replace=replace, same=lambda old, new: type(old) is type(new), origin=cls.__module__
    )
    return cls


#: A hex colour (#rgb, #rgba, #rrggbb, #rrggbbaa): accepted without importing matplotlib.
_HEX_COLOR = re.compile(r"#(?:[0-9a-fA-F]{3,4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})")
#: matplotlib's marker codes (`MarkerStyle.markers`' strings): accepted without importing it.
_MARKERS = frozenset(".,ov^<>12348sp*hH+xDd|_PX")


def _check_style(cls: type[TaskType]) -> None:
    """Refuse a `color` or `marker` matplotlib cannot draw, naming the class: accepted, it crashed `usagg report` with
    a matplotlib traceback (or, with a memo entry drawn before, went unseen). matplotlib is imported only for what
    the quick patterns do not accept (a colour name such as 'tab:blue'), so a type in hex with a usual marker keeps
    the commands that load plug-ins free of it."""
    where = f"task type {getattr(cls, 'name', '?')!r} ({callable_name(cls)})"
    color, marker = cls.color, cls.marker
    if not (isinstance(color, str) and _HEX_COLOR.fullmatch(color)):
        from matplotlib.colors import is_color_like

        if not isinstance(color, str) or not is_color_like(color):
            raise ValueError(
                f"{where}: color {color!r} is not a colour matplotlib draws; give a hex colour such as '#882255' "
                "or a matplotlib colour name such as 'tab:purple'"
            )
    if not (isinstance(marker, str) and marker in _MARKERS):
        from matplotlib.markers import MarkerStyle

        try:
            MarkerStyle(marker)
        except (ValueError, TypeError):
            raise ValueError(
                f"{where}: marker {marker!r} is not a matplotlib marker; give one of {' '.join(sorted(_MARKERS))}"
            ) from None


def _check_metrics(new: TaskType) -> None:
    """Refuse a metric name another registered type declares with another direction, unit or bounds.

    results.csv, compare, advise and the figures know a metric by its name alone (`metric_direction`), so
    the second definition would silently take the first one's direction and every Δ of it the wrong sign.
    """
    for m in new.metrics:
        if metric_base(m.name) != m.name:
            raise ValueError(
                f"task type {new.name!r} ({callable_name(type(new))}) declares metric {m.name!r}, but '_class' in a "
                f"metric name marks a per-class variant (DSC_class2 is class 2 of DSC): usagg would read it as a "
                f"variant of {metric_base(m.name)!r}. Rename it without '_class'"
            )
    for other in TASK_TYPES.values():
        if other.name == new.name:
            continue  # the entry being re-registered or replaced
        theirs = {m.name: m for m in other.metrics}
        for m in new.metrics:
            if m.name in theirs and theirs[m.name] != m:
                raise ValueError(_clash(new, m, other, theirs[m.name]))


def _check_files_and_names(new: TaskType) -> None:
    """Refuse a `prediction_file` or a CSV `task_name` spelling (`name`, `csv_names`) another registered type has.

    Two types writing one prediction file overwrite each other's predictions (a subclass inheriting its parent's
    file kept one of them in an AU job, silently); a spelling two types accept is always read as the first's
    (`find_task_type`), so the second's was never used."""
    mine = {n.lower() for n in (new.name, *new.csv_names)}
    for other in TASK_TYPES.values():
        if other.name == new.name:
            continue  # the entry being re-registered or replaced
        where = f"task type {new.name!r} ({callable_name(type(new))})"
        theirs = f"task type {other.name!r} ({callable_name(type(other))})"
        if new.prediction_file == other.prediction_file:
            raise ValueError(
                f"{where} writes its predictions to {new.prediction_file!r}, as {theirs} does: one would overwrite "
                "the other's in a job with tasks of both; give it a prediction_file of its own"
            )
        shared = sorted(mine & {n.lower() for n in (other.name, *other.csv_names)})
        if shared:
            raise ValueError(
                f"{where} accepts the CSV task_name {', '.join(map(repr, shared))}, as {theirs} does: a row is read "
                "as the first registered type's; drop it from csv_names"
            )


def _clash(new: TaskType, mine: Metric, other: TaskType, theirs: Metric) -> str:
    """One paragraph: both types, the metric, what differs, and a distinct name to use instead."""
    differs = [
        f"{what} {show(mine)} here, {show(theirs)} in {other.name}"
        for what, show in (("direction", _direction), ("unit", _unit), ("bounds", _bounds))
        if show(mine) != show(theirs)
    ]
    suggested = f"{mine.name}_{new.name}"
    example = f", such as {suggested!r}" if metric_base(suggested) == suggested else ""
    return (
        f"task type {new.name!r} ({callable_name(type(new))}) declares metric {mine.name!r} differently from task "
        f"type {other.name!r} ({callable_name(type(other))}): {'; '.join(differs)}. usagg knows a metric's direction, "
        "unit and bounds by its name alone (results.csv, compare, advise, the figures), so one name cannot mean two "
        f"metrics: give {new.name}'s metric a distinct name{example}, or declare it exactly as {other.name} does "
        "if it is the same metric"
    )


def _direction(m: Metric) -> str:
    return "higher is better" if m.higher_is_better else "lower is better"


def _unit(m: Metric) -> str:
    return m.unit or "none"


def _bounds(m: Metric) -> str:
    lower = "(-∞" if m.lower is None else f"[{m.lower:g}"
    upper = "∞)" if m.upper is None else f"{m.upper:g}]"
    return f"{lower}, {upper}"


def type_origin(task_type: TaskType) -> str:
    """The module that registered `task_type` (`Registry.origins`: a plug-in's, or usagg's for a built-in), as
    errors about its code name it; its class's module where it was registered without one."""
    if TASK_TYPES.get(task_type.name) is task_type and task_type.name in TASK_TYPES.origins:
        return TASK_TYPES.origins[task_type.name]
    return type(task_type).__module__


def unregister_task_type(name: str) -> None:
    """Remove a registered type (tests and interactive sessions that registered one)."""
    TASK_TYPES.unregister(name)


def builtin_task_types() -> list[TaskType]:
    """The types shipped in this package, without loading plug-ins (for documentation that must not vary)."""
    _load_builtins()
    names = {m.name for m in pkgutil.iter_modules(__path__)}
    return sorted(
        (t for t in TASK_TYPES.values() if type(t).__module__.rsplit(".", 1)[-1] in names), key=lambda t: t.order
    )


def task_types() -> list[TaskType]:
    """Every registered type, by `order` (built-ins as the challenge lists them), then registration order."""
    types = [TASK_TYPES[n] for n in TASK_TYPES.names()]
    return sorted(types, key=lambda t: t.order)  # stable: ties keep registration order


def task_type_names() -> list[str]:
    return [t.name for t in task_types()]


def get_task_type(name: str) -> TaskType:
    """The registered type called `name`; ValueError with a did-you-mean and the registered names otherwise."""
    return TASK_TYPES.lookup(name)


def find_task_type(task_name: str) -> TaskType | None:
    """The type whose name or `csv_names` match a CSV `task_name` (any case), or None."""
    key = task_name.strip().lower()
    for tt in task_types():
        if key == tt.name or key in (n.lower() for n in tt.csv_names):
            return tt
    return None


def default_metric(type_name: str) -> str:
    """The primary metric of a type unless a task names another."""
    return get_task_type(type_name).primary_metric


def _metric(name: str) -> Metric | None:
    base = metric_base(name)  # per-class variants (DSC_class2) share their metric's direction
    for tt in task_types():
        for m in tt.metrics:
            if m.name == base:
                return m
    return None


def metric_direction(name: str) -> bool | None:
    """Whether higher is better for a metric of any registered type, per-class variants included; None if unknown."""
    m = _metric(name)
    return None if m is None else m.higher_is_better


def metric_bounds(name: str) -> tuple[float | None, float | None]:
    """The lowest and highest value a metric can take (None: unbounded or unknown), per-class variants included."""
    m = _metric(name)
    return (None, None) if m is None else (m.lower, m.upper)


def metric_unit(name: str) -> str | None:
    """The unit shown with a metric (px for pixel distances), None for unitless or unknown metrics."""
    m = _metric(name)
    return None if m is None else m.unit


def metric_best(name: str, higher_is_better: bool) -> float | None:
    """A metric's best value: its upper bound where higher is better, its lower one otherwise (None: unbounded)."""
    lo, hi = metric_bounds(name)
    return hi if higher_is_better else lo


def scale_problem(scale: str, metric: str) -> str | None:
    """Why `analysis.scale` `scale` does not fit `metric` (for the spec's error), or None.

    Here, beside the metrics' bounds it reads, so the spec checks a scale without importing the analysis
    (usagg/analysis/scales.py computes Δ on each scale).
    """
    if scale == "log_ratio":
        lo, _ = metric_bounds(metric)
        if lo is None or lo < 0:
            bound = "has no known lower bound" if lo is None else f"can be negative (lowest value {lo:g})"
            return f"log_ratio takes the logarithm of the metric, and {metric} {bound}; use relative or headroom"
    if scale == "headroom":
        hib = metric_direction(metric)
        if hib is None or metric_best(metric, hib) is None:
            return (
                f"headroom measures a change against the distance to the metric's best value, and {metric} has "
                "no known best value (an unbounded or unregistered metric); use relative or log_ratio"
            )
    return None
