"""Malformed specs by the hundred (issue 16's soak): every value of the demo study replaced by wrong ones.

Each leaf of studies/demo.yaml (plus the AG settings) gets values of the wrong type or out of
range; every mutation must either load (some are legal, such as another string for a name) or be
refused with a SpecError: never another exception, never a traceback. The count of refusals is
checked, so the corpus cannot quietly shrink.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from usagg.errors import SpecError
from usagg.spec.load import study_from_mapping

REPO = Path(__file__).resolve().parent.parent
BAD_VALUES: list[Any] = [None, True, -1, 0, 1e30, math.inf, math.nan, "x", [], {}, [1, "a"], {"k": None}, "1e400"]


def _leaves(obj: Any, path: tuple = ()) -> Iterator[tuple]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(obj, list) and obj and all(isinstance(v, (dict, list)) for v in obj):
        for i, v in enumerate(obj):
            yield from _leaves(v, (*path, i))
    else:
        yield path


def _set(obj: Any, path: tuple, value: Any) -> Any:
    out = copy.deepcopy(obj)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def _base() -> dict[str, Any]:
    raw = yaml.safe_load((REPO / "studies" / "demo.yaml").read_text())
    raw["paradigms"] = ["TS", "CG", "AU", {"AG": {"groups": 3, "search": "auto", "beam_width": 8}}]
    raw["analysis"]["affinity"] = {"every": 5, "probe_size": 4, "lookahead_lr": 0.001}
    return raw


@pytest.mark.slow  # over a second: out of `make test-fast`
def test_every_mutated_value_is_loaded_or_refused_with_a_spec_error(tmp_path: Path) -> None:
    base = _base()
    study_from_mapping(base, tmp_path / "demo.yaml")  # the unmutated spec is valid
    refused, loaded, other = 0, 0, []
    for path in _leaves(base):
        for value in BAD_VALUES:
            try:
                study_from_mapping(_set(base, path, value), tmp_path / "demo.yaml")
                loaded += 1
            except SpecError as err:
                refused += 1
                assert str(err).strip() and "Traceback" not in str(err)
            except Exception as err:  # the point: nothing but SpecError may escape
                other.append(f"{'.'.join(map(str, path))}={value!r}: {type(err).__name__}: {err}")
    assert not other, "\n".join(other[:20])
    assert refused >= 400, (refused, loaded)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("training", "epochs"), math.inf, "training.epochs"),
        (("training", "epochs"), True, "YAML boolean"),
        (("seeds",), [1e30], "seeds"),
        (("analysis", "affinity", "probe_size"), 0, "probe_size"),
        (("analysis", "affinity", "every"), -3, "every"),
        (("model", "moe", "experts"), "x", "model.moe.experts"),
    ],
)
def test_a_refusal_names_the_field(tmp_path: Path, path: tuple, value: Any, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        study_from_mapping(_set(_base(), path, value), tmp_path / "demo.yaml")
