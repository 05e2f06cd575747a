"""Sweeps: a study's `sweep:` block (or `--sweep KEY=V1,V2`) expanded into its points, each a full Study.

A sweep crosses the study with values of spec fields (a learning rate, the MoE size): the
cartesian product of the keys' values, each point the study with those values set and
validated as if written in the spec. A point's jobs are therefore the jobs, with the ids,
that the same study with those values set directly has (usagg/plan.py plans every point).
Only fields that enter some job's id (usagg/spec/jobhash.py) can be swept: any other
would give every point the same jobs.

This module sits below the spec models (their `sweep` check calls `check_block` with the Study
class) and the loader (usagg/spec/load.py validates each point, `point_studies`, and turns
`--sweep` into a `--set`, `sweep_override`): it imports neither.
"""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from usagg.names import suggest
from usagg.spec.jobhash import RULES, job_hash_rule
from usagg.spec.typewalk import container, type_arms

if TYPE_CHECKING:
    from usagg.spec.models import Study

#: Most points a sweep may expand into: each point is a copy of the study's jobs.
MAX_POINTS = 256

#: One sweep point: swept key -> its value at this point, in the sweep block's key order.
Point = dict[str, Any]


def value_text(value: Any) -> str:
    """A swept value as a results.csv cell and a label: strings as they are, anything else as compact JSON."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def point_label(point: Point) -> str:
    """`training.lr_encoder=0.0001, model.moe.experts=4`: how a point is named in tables and headings."""
    return ", ".join(f"{k}={value_text(v)}" for k, v in point.items())


def points_cell(points: list[Point]) -> str:
    """A job's sweep points in a table cell (`usagg plan`, `usagg run --dry-run`): the values they share
    (`lr_encoder=0.0001`), `any` for a key they differ in (a key that does not enter this job's id, such as the MoE
    size in a TS job)."""
    cells = []
    for k, v in points[0].items() if points else ():
        same = all(p.get(k) == v for p in points)
        cells.append(f"{k.rsplit('.', 1)[-1]}={value_text(v) if same else 'any'}")
    return ", ".join(cells)


def _refusal(key: str, root: type[BaseModel]) -> str | None:
    """Why `key` cannot be swept, or None: it must name a field of `root` (the Study, through models and mappings)
    whose JobHash markers all let it into some job's id, and not a path or a dimension the plan already crosses."""
    parts = key.split(".")
    ann: Any = root
    for i, part in enumerate(parts):
        kind, sub = container(ann)
        where = ".".join(parts[:i]) or "the top level"
        if kind == "dict":
            ann = sub
            continue
        if kind != "model" or not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            return f"{where} is a single value, it has no part {part!r}"
        if part not in sub.model_fields:
            allowed = list(sub.model_fields)
            return f"{where} has no setting {part!r}{suggest(part, allowed)}; allowed there: {', '.join(allowed)}"
        info = sub.model_fields[part]
        marker = job_hash_rule(info)
        rule = marker.rule if marker is not None else "no"
        name = ".".join(parts[: i + 1])
        if rule == "no":
            return f"{name} never enters a job's id ({RULES['no']}), so every point would give the same jobs"
        if rule == "job":
            return (
                f"{name} is a dimension the plan already crosses (seeds, fractions, paradigms, tasks): list its "
                "values in the spec itself"
            )
        ann = info.annotation
        if any(isinstance(a, type) and issubclass(a, Path) for a in type_arms(ann)):
            return f"{name} is a file path; sweep settings, and give another file with a spec of its own"
    return None


def check_block(block: dict[str, list[Any]], root: type[BaseModel]) -> dict[str, list[Any]]:
    """The sweep block's shape: keys of `root` (the Study class, passed in by its validator) that enter job ids,
    each with distinct values, at most MAX_POINTS points.

    Raises ValueError (the Study's validator turns it into a SpecError naming `sweep`)."""
    total = 1
    for key, values in block.items():
        why = _refusal(key, root)
        if why is not None:
            raise ValueError(f"{key!r} cannot be swept: {why}")
        texts = [json.dumps(v, sort_keys=True, default=str) for v in values]
        dup = sorted({t for t in texts if texts.count(t) > 1})
        if dup:
            raise ValueError(f"{key} lists {', '.join(dup)} twice; each value makes one point")
        total *= len(values)
    if total > MAX_POINTS:
        raise ValueError(
            f"the sweep expands into {total:,} points, over {MAX_POINTS}; each point repeats the study's jobs"
        )
    return block


def points(block: dict[str, list[Any]]) -> list[Point]:
    """The cartesian product of the block's values, the first key slowest; [{}] without a sweep."""
    keys = list(block)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(block[k] for k in keys))]


def _set(tree: dict[str, Any], key: str, value: Any) -> None:
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):  # an optional section not given (None): the value creates it
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def point_trees(study: Study) -> list[tuple[Point, dict[str, Any]]]:
    """Every point of the study's sweep with the study as study.yaml holds it (sweep block removed), the point's
    values set: what usagg/spec/load.py `point_studies` validates into each point's Study."""
    base = study.model_dump(mode="json", exclude={"sweep"})  # as study.yaml holds it: it validates again
    out = []
    for point in points(study.sweep):
        tree = copy.deepcopy(base)
        for key, value in point.items():
            _set(tree, key, value)
        out.append((point, tree))
    return out


def split_values(text: str) -> list[str]:
    """Split `--sweep` values on commas at bracket depth 0 and outside quotes (usagg/spec/load.py sweep_override)."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts
