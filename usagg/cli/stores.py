"""RUN_DIR, the run store a command reads (`usagg status`, `compare`, `report`, `repair`, ...), given a study's
folder or spec instead: the folder `usagg init my_study` wrote holds my_study/demo.yaml, while its run store is
runs/my_study. Such an argument is pointed to the run store its spec names, before the command says only that
there is no run store there.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from usagg.errors import UsaggError


def _store_marks(folder: Path) -> tuple[Path, ...]:
    """What makes a folder a run store to some command: the plan, the tidy results or the job folders."""
    from usagg.store import RunStore

    store = RunStore(folder)
    return store.plan_json, store.results_csv, store.jobs_dir


def _resolved_spec(folder: Path) -> Path:
    """Where a run store keeps the spec as run (`RunStore.study_yaml`)."""
    from usagg.store import RunStore

    return RunStore(folder).study_yaml


def spec_store(spec: Path) -> Path | None:
    """The run store a study spec names, <output_root>/<name> as `usagg run` makes it (output_root from the current
    folder), read cheaply (the YAML only, not validated); None for a file that is no study spec."""
    from usagg.spec.load import read_yaml

    try:
        raw = read_yaml(spec)
    except UsaggError:
        return None
    name, root = raw.get("name"), raw.get("output_root", "runs")
    if not isinstance(name, str) or not name or not isinstance(root, str) or not root:
        return None
    return Path(root) / name


def study_folder_problem(run_dir: Path, command: str) -> str | None:
    """The message for a RUN_DIR that is a study's spec, or a folder holding study specs and nothing of a run store:
    the run store each spec names and the command to give it to. None for anything else (the command decides)."""
    from usagg.wording import shown_path

    if run_dir.is_file() and run_dir.suffix in (".yaml", ".yml"):
        specs, head = [run_dir], f"{run_dir} is a study spec, not a run store"
    elif run_dir.is_dir() and not any(mark.exists() for mark in _store_marks(run_dir)):
        # a run store's resolved spec (a copied one gives an imported table its settings) is not a study's
        resolved = _resolved_spec(run_dir)
        specs = sorted(p for p in run_dir.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file() and p != resolved)
        head = f"{run_dir} is a study folder, not a run store"
    else:
        return None
    found = [(spec, store) for spec in specs if (store := spec_store(spec)) is not None]
    found = [(spec, store) for spec, store in found if store.resolve() != run_dir.resolve()]
    if not found:
        return None
    made = [(spec, store) for spec, store in found if _store_marks(store)[0].is_file()]
    if len(found) == 1:
        spec, store = found[0]
        held = (
            f"its run store is {store}" if run_dir == spec else f"it holds the spec {spec}, whose run store is {store}"
        )
        if made:
            return f"{head}: {held}: usagg {command} {shown_path(store)}"
        return (
            f"{head}: {held}, not there yet: `usagg run {shown_path(spec)}` makes it, then "
            f"usagg {command} {shown_path(store)}"
        )
    listed = ", ".join(
        f"{spec} (run store {store}{'' if (spec, store) in made else ', not run yet'})" for spec, store in found
    )
    if made:
        return f"{head}: it holds the specs {listed}; give a run store, e.g. usagg {command} {shown_path(made[0][1])}"
    return f"{head}: it holds the specs {listed}; `usagg run` one of them first, then give its run store here"


def study_folder_checked(command: str, callback: Callable[..., Any]) -> Callable[..., Any]:
    """`callback` (a command with a `run_dir` parameter) refusing a study's folder or spec as its RUN_DIR with
    `study_folder_problem`; other callbacks as they are."""
    if "run_dir" not in inspect.signature(callback).parameters:
        return callback

    @functools.wraps(callback)  # typer reads the parameters through __wrapped__
    def checked(*args: Any, **kwargs: Any) -> Any:
        run_dir = kwargs.get("run_dir")
        if run_dir is not None and kwargs.get("results") is None:  # with --results, RUN_DIR is only the settings
            problem = study_folder_problem(Path(run_dir), command)
            if problem is not None:
                raise UsaggError(problem)
        return callback(*args, **kwargs)

    return checked
