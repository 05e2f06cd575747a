"""One generic registry (timm style) behind task types, paradigms, executors, backbones and engine strategies.

A `Registry[T]` maps names to entries in registration order and is read like a
dict; `register` refuses a second, different entry under a taken name, `lookup`
refuses an unknown name in one paragraph that lists the registered ones
(usagg/names.py). Plug-ins reach every registry the same way: an entry point in
the kind's group (`usagg.task_types`, `usagg.paradigms`, `usagg.executors`,
`usagg.backbones`) or a module named in `USAGG_PLUGINS`, loaded once per process by
`load_plugins()` before any spec is validated, which keeps what it loaded and its version
(`loaded_plugins`, recorded in each job's metrics.json, with the packages that registered in code).
Torch-free: the spec imports it.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import metadata
from typing import Generic, TypeVar

from usagg.errors import UsaggError, first_line
from usagg.names import unknown_name

T = TypeVar("T")

PLUGINS_ENV = "USAGG_PLUGINS"

#: The modules that create the plug-in registries and register the built-ins on import.
REGISTRY_MODULES = ("usagg.tasktypes", "usagg.paradigms", "usagg.execute.registry", "usagg.model.zoo")

#: Registries with an entry-point group, with their group, in creation order (load_plugins walks them).
_PLUGGABLE: list[tuple[str, Registry]] = []
_plugins_loaded = False
#: What `load_plugins` loaded, plug-in -> its version (`loaded_plugins`).
_loaded: dict[str, str | None] = {}
#: The modules `load_plugins` imported for them (an entry point's, a `USAGG_PLUGINS` one).
_loaded_modules: set[str] = set()


class Registry(Mapping[str, T], Generic[T]):
    """Named entries of one kind; read like a dict, written through `register`.

    `kind` words the errors ("unknown paradigm 'X'"); `group` is the entry-point
    group plug-ins register through (None: no plug-ins, e.g. engine strategies);
    `builtins` imports the built-in entries that are not registered on import;
    `adopt` registers an object an entry point names (task types name a class),
    where loading the entry point alone does not; `error` is the exception
    `lookup` raises (ValueError, which pydantic makes a spec error, or UsaggError);
    `hint` is appended to that error (where to read how to add one).
    """

    def __init__(
        self,
        kind: str,
        *,
        group: str | None = None,
        builtins: Callable[[], None] | None = None,
        adopt: Callable[[Registry[T], object], None] | None = None,
        error: type[Exception] = ValueError,
        hint: str = "",
    ) -> None:
        self.kind = kind
        self.group = group
        self.builtins = builtins
        self.adopt = adopt
        self.error = error
        self.hint = hint
        self._entries: dict[str, T] = {}
        #: name -> the module that registered the entry (`register`'s `origin`), where the register call knows it.
        self.origins: dict[str, str] = {}
        if group is not None:
            _PLUGGABLE.append((group, self))

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"

    def register(
        self,
        name: str,
        entry: T,
        *,
        replace: bool = False,
        same: Callable[[T, T], bool] | None = None,
        origin: str | None = None,
    ) -> T:
        """Add `entry` under `name`; a different entry under a taken name is a ValueError unless `replace`.

        `same(old, new)` says when re-registering is harmless (a module imported twice);
        by default an equal entry is. `origin`: the module that defined the entry (its class's, its function's or,
        for data, the register call's), which `code_plugins` names for worker processes and provenance.
        """
        old = self._entries.get(name)
        if old is not None and not replace and not (same(old, entry) if same else old == entry):
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        self.origins.pop(name, None)
        if origin is not None:
            self.origins[name] = origin
        return entry

    def unregister(self, name: str) -> T | None:
        """Remove `name` (tests and interactive sessions that registered one); the entry, or None."""
        self.origins.pop(name, None)
        return self._entries.pop(name, None)

    def pop(self, name: str) -> T | None:
        """`unregister`, spelled as on a dict."""
        return self.unregister(name)

    def __delitem__(self, name: str) -> None:
        del self._entries[name]
        self.origins.pop(name, None)

    def names(self) -> list[str]:
        """The registered names in registration order, plug-ins loaded first."""
        load_plugins()
        return list(self._entries)

    def lookup(self, name: str) -> T:
        """The entry registered as `name` (plug-ins loaded first); else `self.error` naming the registered ones."""
        load_plugins()
        entry = self._entries.get(name)
        if entry is None:
            raise self.error(unknown_name(self.kind, str(name), list(self._entries)) + self.hint)
        return entry


def plugin_hint(how_to: str) -> str:
    """What an unknown name's error adds: where more names come from and the docs' section `how_to`."""
    return (
        f" (plug-ins register more: name a plug-in's module in {PLUGINS_ENV}, or install its distribution, whose "
        f"entry points load it; see docs/internals.md, {how_to!r})"
    )


def callable_name(fn: object) -> str:
    """A plug-in's function as errors name it, `module.qualname`, so its author finds it."""
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def parameters(fn: Callable[..., object]) -> inspect.Signature | None:
    """`fn`'s signature without annotations, as errors show it ('(study, evidence)'); None where Python cannot
    inspect it (some builtins), whose call is then simply made."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    bare = [p.replace(annotation=inspect.Parameter.empty) for p in signature.parameters.values()]
    return signature.replace(parameters=bare, return_annotation=inspect.Signature.empty)


def load_plugins() -> None:
    """Built-ins, then entry points of every registry's group, then `USAGG_PLUGINS` modules (once per process).

    Called before a spec is validated (usagg/spec/load.py) and by every `lookup`, so a
    plug-in paradigm or backbone is known wherever a plug-in task type is. A plug-in
    that cannot be imported is a UsaggError naming it. What loaded is kept (`loaded_plugins`).
    """
    global _plugins_loaded, _loaded, _loaded_modules
    if _plugins_loaded:
        return
    _plugins_loaded = True  # before importing: a plug-in that reads a registry must not re-enter
    _loaded, _loaded_modules = {}, set()
    for module in REGISTRY_MODULES:
        importlib.import_module(module)
    for _, reg in _PLUGGABLE:
        if reg.builtins is not None:
            reg.builtins()
    for group, reg in _PLUGGABLE:
        for ep in metadata.entry_points(group=group):
            obj = load_plugin(f"the entry point {ep.name!r} ({ep.value}) of group {group!r}", ep.load)
            if reg.adopt is not None:
                reg.adopt(reg, obj)
            if ep.dist is not None:
                _loaded[ep.dist.name] = ep.dist.version
            else:
                _loaded[ep.module] = _module_version(ep.module)
            _loaded_modules.add(ep.module)
    for module in plugin_modules():
        load_plugin(f"module {module!r} of {PLUGINS_ENV}", functools.partial(importlib.import_module, module))
        _loaded[module] = _module_version(module)
        _loaded_modules.add(module)


def loaded_plugins() -> dict[str, str | None]:
    """Every plug-in this process loaded -> its version (None: none found), sorted by name: an entry point's
    distribution by its name, a `USAGG_PLUGINS` module by its own, a package that registered entries in code
    (`code_plugins`, by its top-level package) by its own. Job ids hash settings, never code, so each job records
    these (metrics.json `training.plugins`) and `usagg run` tells done jobs another version made; without the
    code-registered ones a study on a plug-in imported in a notebook recorded, and reported, "no plug-in"."""
    load_plugins()
    found = dict(_loaded)
    covered = {m.split(".")[0] for m in _loaded_modules}
    for module in code_plugins():
        if module == "__main__":
            continue  # a session's own code, no plug-in
        top = module.split(".")[0]
        if top not in covered and top not in found:
            found[top] = _module_version(top)
    return dict(sorted(found.items()))


def _module_version(module: str) -> str | None:
    """The version of the distribution that installed `module` (its top-level package), else its `__version__`,
    else None (a folder on PYTHONPATH)."""
    dists = metadata.packages_distributions().get(module.split(".")[0])
    if dists:
        return metadata.version(dists[0])
    loaded = sys.modules.get(module)
    version = getattr(loaded if loaded is not None else importlib.import_module(module), "__version__", None)
    return version if isinstance(version, str) else None


def code_plugins() -> list[str]:
    """The modules outside usagg that registered an entry of a pluggable registry in this process, sorted: a
    plug-in registered in code (`import my_lab`, `register_task_type(MyType)`) as well as one loaded from an entry
    point or `USAGG_PLUGINS`. A worker process (a local pool's, spawned; a Slurm job's) imports only usagg and what
    the environment names, so the job function imports these first (`import_code_plugins`): without them every
    job of a study on a code-registered type or backbone failed in its worker on an unknown name. A script's
    `__main__` is left out ('spawn' runs it again in the worker); an interactive one's (a notebook, `python -c`),
    which no worker can import, is kept for `import_code_plugins` to refuse by name."""
    modules = {origin for _, reg in _PLUGGABLE for origin in reg.origins.values()}
    interactive = "__main__" in modules and not hasattr(sys.modules.get("__main__"), "__file__")
    found = [m for m in modules if not _is_usagg(m) and m not in ("__main__", "__mp_main__")]
    return sorted(found) + (["__main__"] if interactive else [])


def interactive_entries() -> list[str]:
    """The entries an interactive session registered (a notebook cell, `python -c`: `__main__` without a file), as
    errors name them ("backbone 'lab_main'"): no worker process can import them (`import_code_plugins`)."""
    if hasattr(sys.modules.get("__main__"), "__file__"):
        return []
    return [
        f"{reg.kind} {name!r}" for _, reg in _PLUGGABLE for name, origin in reg.origins.items() if origin == "__main__"
    ]


def import_code_plugins(modules: Iterable[str]) -> None:
    """Import `modules` (`code_plugins` of the process that made the job function) where they are not imported
    yet, each a UsaggError naming it when it cannot be (`load_plugin`). `__main__` (entries registered in an
    interactive session) is a UsaggError saying so in a process that holds none of them, a worker."""
    for module in modules:
        if module == "__main__":
            if not any(o == "__main__" for _, reg in _PLUGGABLE for o in reg.origins.values()):
                raise UsaggError(
                    "this job uses entries registered in an interactive session (a notebook, python -c), which a "
                    f"worker process cannot import: define them in a module and import it, or name it in "
                    f"{PLUGINS_ENV}, or set execution.cpu_jobs: 1"
                )
        elif module not in sys.modules:
            what = f"module {module!r}, which registered entries in the process that started this job,"
            load_plugin(what, functools.partial(importlib.import_module, module))


def _is_usagg(module: str) -> bool:
    return module == "usagg" or module.startswith("usagg.")


def plugin_modules() -> list[str]:
    """The modules `USAGG_PLUGINS` names (comma-separated, blanks ignored)."""
    return [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]


def load_plugin(what: str, load: Callable[[], object]) -> object:
    """`load()`, any error it raises a UsaggError naming the plug-in, the error's type and its first line.

    A plug-in is someone else's code: its SyntaxError, a RuntimeError at import or a name it registers twice
    (ValueError) would otherwise end every command with a traceback through usagg. What it registered before it
    failed is taken back (`_registered`): a notebook that caught the error found a failed plug-in's task type
    registered, and Python has dropped its half-imported module already.
    """
    before = _registered()
    try:
        return _load_or_say(what, load)
    except UsaggError:
        _restore(before)
        raise


def _registered() -> list[tuple[Registry, dict[str, object], dict[str, str]]]:
    """Every pluggable registry's entries and origins as they are now, for `_restore`."""
    return [(reg, dict(reg._entries), dict(reg.origins)) for _, reg in _PLUGGABLE]


def _restore(saved: list[tuple[Registry, dict[str, object], dict[str, str]]]) -> None:
    for reg, entries, origins in saved:
        reg._entries.clear()
        reg._entries.update(entries)
        reg.origins.clear()
        reg.origins.update(origins)


def _load_or_say(what: str, load: Callable[[], object]) -> object:
    """`load()`, an error it raises as `load_plugin` words it."""
    try:
        return load()
    except ImportError as e:
        raise UsaggError(
            f"plug-in {what} could not be imported: {first_line(e)}. Install it or put its folder on PYTHONPATH, "
            f"or remove it from {PLUGINS_ENV} / the installed distribution that declares it."
        ) from e
    except Exception as e:
        raise UsaggError(
            f"plug-in {what} failed while loading ({type(e).__name__}: {first_line(e)}). Fix the plug-in, or "
            f"remove it from {PLUGINS_ENV} / the installed distribution that declares it."
        ) from e
