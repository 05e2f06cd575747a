"""Walking the spec models' annotations: what a field may hold, one step down at a time.

Below usagg/spec/models/ and usagg/spec/load.py, so that the models' own checks (the sweep
block's keys, usagg/sweep.py) and the loader's error paths walk the types the same way
without importing each other.
"""

from __future__ import annotations

from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel


def type_arms(ann: Any) -> list[Any]:
    """The alternatives of an annotation, Annotated and None stripped."""
    while get_origin(ann) is Annotated:
        ann = get_args(ann)[0]
    if get_origin(ann) in (Union, UnionType):
        return [a for arm in get_args(ann) if arm is not type(None) for a in type_arms(arm)]
    return [ann]


def container(ann: Any) -> tuple[str, Any]:
    """What an annotation holds: ("model", cls), ("list", item type), ("dict", value type) or ("value", None)."""
    arms = type_arms(ann)
    for arm in arms:
        if isinstance(arm, type) and issubclass(arm, BaseModel):
            return "model", arm
    for arm in arms:
        if get_origin(arm) is list:
            return "list", (get_args(arm) or (Any,))[0]
    for arm in arms:
        if get_origin(arm) is dict:
            return "dict", (get_args(arm) or (Any, Any))[1]
    return "value", None
