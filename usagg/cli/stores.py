"""RUN_DIR, the run store a command reads (`usagg status`, `compare`, `report`, `repair`, ...), given a study's
folder or spec, a path inside a run store, or the folder holding run stores instead: the folder `usagg init my_study`
wrote holds my_study/demo.yaml, while its run store is runs/my_study. Such an argument is pointed to the run store
it means, before the command says only that there is no run store there.

A spec's run store is looked for where `usagg run` puts it (<output_root>/<name> from the current folder) and where
`usagg run` finds it from another folder (usagg/run/gate.py `check_no_store_elsewhere`: from the spec's folder and
its three parents, the store whose specs.json lists the spec), so a message never says "not there yet" nor suggests
`usagg run` (training the whole study again) for a study that ran from another folder.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from usagg.errors import UsaggError
from usagg.wording import command as command_line

#: How many folders up a path inside a run store may lie (jobs/<id>/checkpoints/last.pt is four).
STORE_DEPTH = 4
#: How many run stores a message about a folder holding several lists by name.
LISTED = 5


def _store_marks(folder: Path) -> tuple[Path, ...]:
    """What makes a folder a run store to some command: the plan, the tidy results or the job folders."""
    from usagg.store import RunStore

    store = RunStore(folder)
    return store.plan_json, store.results_csv, store.jobs_dir


def _is_store(folder: Path) -> bool:
    """Whether `folder` is a run store `usagg run` made (it has a plan)."""
    from usagg.store import RunStore

    return RunStore(folder).exists()


def _resolved_spec(folder: Path) -> Path:
    """Where a run store keeps the spec as run (`RunStore.study_yaml`)."""
    from usagg.store import RunStore

    return RunStore(folder).study_yaml


def shown_like(given: Path, path: Path) -> Path:
    """`path` written as the user wrote `given`: absolute where they gave an absolute path, else relative to the
    current folder (`../nu_work/runs/my_study`), so a message's paths paste from where they typed theirs."""
    absolute = Path(os.path.abspath(path))
    return absolute if given.is_absolute() else Path(os.path.relpath(absolute))


@dataclass(frozen=True)
class SpecStore:
    """The run store of a study spec, as a message names it."""

    #: <output_root>/<name>: where it was found, else where `usagg run` from the current folder makes it.
    path: Path
    #: Whether it is there (has a plan).
    exists: bool
    #: Whether its specs.json lists the spec (the spec ran into it).
    bound: bool
    #: The spec file it was first run from, where that is not this spec (a copy, another study of the name).
    ran_from: Path | None = None


def spec_name_root(spec: Path) -> tuple[str, str] | None:
    """The `name` and `output_root` of a study spec, read cheaply (the YAML only, not validated); None for a file
    that is no study spec."""
    from usagg.spec.load import read_yaml

    try:
        raw = read_yaml(spec)
    except UsaggError:
        return None
    name, root = raw.get("name"), raw.get("output_root", "runs")
    if not isinstance(name, str) or not name or not isinstance(root, str) or not root:
        return None
    return name, root


def store_places(spec: Path, root: str, name: str) -> list[Path]:
    """Where the run store of `spec` (study `name`, `output_root` `root`) may be, first first: from the current
    folder, where `usagg run` puts it, then from the spec's folder and its three parents, where a run from there
    put it (usagg/run/gate.py `check_no_store_elsewhere`); one absolute output_root is the one place."""
    here = Path(root) / name
    if here.is_absolute():
        return [here]
    folder = Path(os.path.abspath(spec)).parent
    places, seen = [], set()
    for place in [here, *(shown_like(spec, f / root / name) for f in [folder, *folder.parents][:4])]:
        if (key := os.path.realpath(place)) not in seen:
            seen.add(key)
            places.append(place)
    return places


def store_of(spec: Path, root: str, name: str) -> SpecStore:
    """The run store of `spec`: the one that lists it (`usagg run` from that folder ran it in), else one of its
    name at its places (a copy of a spec runs into its store unrecorded), else where `usagg run` would make it."""
    from usagg.store import RunStore

    places = store_places(spec, root, name)
    made = [RunStore(p) for p in places if _is_store(p)]
    ours = str(Path(spec).resolve())
    for store in made:
        if ours in store.spec_files():
            return SpecStore(store.root, exists=True, bound=True)
    if made:
        files = made[0].spec_files()
        return SpecStore(made[0].root, True, False, shown_like(spec, Path(files[0])) if files else None)
    return SpecStore(places[0], exists=False, bound=False)


def spec_store(spec: Path) -> SpecStore | None:
    """`store_of` a study spec read from its file; None for a file that is no study spec."""
    found = spec_name_root(spec)
    return None if found is None else store_of(spec, root=found[1], name=found[0])


def _store_around(path: Path) -> Path | None:
    """The run store `path` lies in (its study.yaml, jobs/, a job's folder or file), as the user wrote `path`;
    None where `path` is none of these (a run store itself, or outside any)."""
    if not path.exists() or (path.is_dir() and any(mark.exists() for mark in _store_marks(path))):
        return None
    absolute = Path(os.path.abspath(path))
    for parent in list(absolute.parents)[:STORE_DEPTH]:
        if _is_store(parent):
            return shown_like(path, parent)
    return None


def _inside_store_problem(path: Path, cmd: str) -> str | None:
    """The message for a path inside a run store: the store it lies in is what the command reads."""
    store = _store_around(path)
    if store is None:
        return None
    what = "the spec kept in" if path.name == _resolved_spec(store).name and path.parent.samefile(store) else "inside"
    return f"{path} is {what} the run store {store}, not a run store itself: {command_line('usagg', cmd, store)}"


def _stores_folder_problem(folder: Path, cmd: str) -> str | None:
    """The message for a folder holding run stores (an output_root such as runs/): one of them is what the command
    reads, the latest suggested (the one it reads when RUN_DIR is left out and its root is this folder)."""
    from usagg.store import RunStore

    stores = sorted(p.name for p in folder.iterdir() if p.is_dir() and _is_store(p))
    if not stores:
        return None
    latest = RunStore.latest(folder).root
    listed = ", ".join(stores[:LISTED]) + (f" and {len(stores) - LISTED} more" if len(stores) > LISTED else "")
    return (
        f"{folder} holds run stores, it is not one itself: {listed}; give one, e.g. the latest: "
        f"{command_line('usagg', cmd, latest)}"
    )


def _one_spec_problem(head: str, spec: Path, store: SpecStore, held_here: bool, cmd: str) -> str:
    """The message for one study spec given (`held_here`: inside the folder given) and its run store."""
    held = (
        f"it holds the spec {spec}, whose run store is {store.path}" if held_here else f"its run store is {store.path}"
    )
    if store.exists:
        ran = "" if store.bound or store.ran_from is None else f" (run from {store.ran_from})"
        return f"{head}: {held}{ran}: {command_line('usagg', cmd, store.path)}"
    return (
        f"{head}: {held}, not there yet: `{command_line('usagg', 'run', spec)}` makes it, then "
        f"{command_line('usagg', cmd, store.path)}"
    )


def _many_specs_problem(head: str, found: list[tuple[Path, SpecStore]], cmd: str) -> str:
    """The message for a folder of several study specs: their run stores, each with the specs (by file name) that
    name it, those run first; one that is there suggested."""
    by_store: dict[Path, list[str]] = {}
    for spec, store in found:
        by_store.setdefault(store.path, []).append(spec.name)
    made = {s.path for _, s in found if s.exists}
    order = sorted(by_store, key=lambda p: p not in made)
    listed = ", ".join(f"{p} ({', '.join(by_store[p])}{'' if p in made else ', not run yet'})" for p in order)
    head = f"{head}: its specs name the run store{'s' if len(order) > 1 else ''} {listed}"
    if made:
        return f"{head}; give a run store, e.g. {command_line('usagg', cmd, order[0])}"
    return f"{head}; `usagg run` one of them first, then give its run store here"


def _specs_of(run_dir: Path) -> tuple[list[Path], str] | None:
    """The study specs a RUN_DIR stands for, and what it is: a spec file itself, or a folder holding specs and
    nothing of a run store; None for anything else."""
    if run_dir.is_file() and run_dir.suffix in (".yaml", ".yml"):
        return [run_dir], f"{run_dir} is a study spec, not a run store"
    if run_dir.is_dir() and not any(mark.exists() for mark in _store_marks(run_dir)):
        # a run store's resolved spec (a copied one gives an imported table its settings) is not a study's
        resolved = _resolved_spec(run_dir)
        specs = sorted(p for p in run_dir.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file() and p != resolved)
        return specs, f"{run_dir} is a study folder, not a run store"
    return None


def study_folder_problem(run_dir: Path, command: str) -> str | None:
    """The message for a RUN_DIR that is a study's spec or folder (the run store each spec ran into, or names, and
    the command to give it to), a path inside a run store, or a folder holding run stores. None for anything else
    (the command decides)."""
    inside = _inside_store_problem(run_dir, command)
    if inside is not None:
        return inside
    given = _specs_of(run_dir)
    if given is None:
        return None
    specs, head = given
    found = [(spec, store) for spec in specs if (store := spec_store(spec)) is not None]
    found = [(spec, store) for spec, store in found if os.path.realpath(store.path) != os.path.realpath(run_dir)]
    if not found:
        return _stores_folder_problem(run_dir, command) if run_dir.is_dir() else None
    if len(found) == 1:
        return _one_spec_problem(head, *found[0], held_here=run_dir != found[0][0], cmd=command)
    return _many_specs_problem(head, found, command)


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
