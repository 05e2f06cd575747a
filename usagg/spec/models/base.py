"""The base of every spec model, `Strict`, and the field types and bounds several models share."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from usagg.paradigms import check_paradigm
from usagg.spec.typewalk import type_arms

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=80)]
ParadigmName = Annotated[str, AfterValidator(check_paradigm)]


#: Largest seed: what numpy's generators accept (torch takes more).
MAX_SEED = 2**32 - 1


#: No integer in a spec means anything at or beyond this (numpy seeds stop at 2**32, counts far lower).
MAX_INT = 2**63


def _not_a_number(ann: Any, v: Any) -> str | None:
    """Why `v` is not the number `ann` expects, or None: pydantic's lax mode would read YAML `true` as 1 and
    a quoted "3" as 3, so a typo or a stray quote would pass. Lists, mappings and pairs are checked item by item."""
    arms = type_arms(ann)
    if isinstance(v, list | tuple | dict):
        items = v.items() if isinstance(v, dict) else enumerate(v)
        for arm in arms:
            origin, args = get_origin(arm), get_args(arm)
            if origin in (list, dict, tuple) and args and isinstance(v, dict) == (origin is dict):
                for key, item in items:
                    sub = args[-1] if origin is not tuple else args[min(int(key), len(args) - 1)]
                    why = _not_a_number(sub, item)
                    if why:
                        return f"item {key}: {why}" if not isinstance(v, dict) else f"{key!r}: {why}"
                return None
        return None
    if not any(arm in (int, float) for arm in arms):
        return None
    if isinstance(v, bool) and bool not in arms:
        return f"expected a number, got {str(v).lower()} (a YAML boolean)"
    if isinstance(v, str) and not any(arm in (str, Path, Any) or v in get_args(arm) for arm in arms):
        try:
            float(v)
        except ValueError:
            return None  # not a number at all: pydantic's own message says what is expected
        return f"expected a number, got the string {v!r}; write it without quotes"
    return None


def _too_large(v: Any) -> int | None:
    """An integer at or beyond MAX_INT inside a validated value, else None."""
    if isinstance(v, int) and not isinstance(v, bool):
        return v if abs(v) >= MAX_INT else None
    if isinstance(v, list | tuple | dict):
        for item in v.values() if isinstance(v, dict) else v:
            big = _too_large(item)
            if big is not None:
                return big
    return None


class Strict(BaseModel):
    """Base: unknown keys are errors, values are checked on assignment too; no inf/nan, no true or "3" for a
    number, no integer beyond 2**63."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        """A number field (or list of numbers) takes numbers only: not YAML `true`, not a quoted "3"."""
        field = cls.model_fields.get(info.field_name or "")
        why = _not_a_number(field.annotation, v) if field is not None else None
        if why:
            raise ValueError(why)
        return v

    @field_validator("*")
    @classmethod
    def _bounded_integers(cls, v: Any) -> Any:
        """After each field's own range: no integer at or beyond 2**63 (YAML reads up to 40 digits)."""
        big = _too_large(v)
        if big is not None:
            raise ValueError(f"got {str(big)[:30]}; integers in a spec are below 2**63")
        return v
