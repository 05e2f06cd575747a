"""Real plug-in modules for the plug-in tests: source written into a folder on sys.path and imported, as a lab's
package is, never a mock; whatever a module registered is unregistered and the module forgotten afterwards."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from usagg.execute.registry import EXECUTORS
from usagg.model.zoo import BACKBONES
from usagg.paradigms import PARADIGMS
from usagg.registry import Registry, load_plugins
from usagg.tasktypes import TASK_TYPES

REGISTRIES: tuple[Registry, ...] = (TASK_TYPES, PARADIGMS, EXECUTORS, BACKBONES)


class PluginFolder:
    """A folder on sys.path that modules are written into and imported from."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.names: list[str] = []

    def write(self, name: str, source: str) -> Path:
        """Write module `name` (dotted: its packages made) without importing it."""
        path = self.folder.joinpath(*name.split(".")).with_suffix(".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in list(path.parents)[: name.count(".")]:
            (parent / "__init__.py").touch()
        path.write_text(textwrap.dedent(source))
        return path

    def load(self, name: str, source: str) -> ModuleType:
        """Write module `name` and import it afresh: what it registers at import is registered."""
        self.write(name, source)
        self.forget(name)
        importlib.invalidate_caches()
        self.names.append(name)
        return importlib.import_module(name)

    def forget(self, name: str) -> None:
        for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[mod]


@contextmanager
def plugin_folder(folder: Path) -> Iterator[PluginFolder]:
    """A `PluginFolder` in `folder`; afterwards every entry registered meanwhile is removed, every entry replaced
    put back with its origin, and their modules gone."""
    load_plugins()
    before = {id(reg): dict(reg.items()) for reg in REGISTRIES}
    origins = {id(reg): dict(reg.origins) for reg in REGISTRIES}
    sys.path.insert(0, str(folder))
    plugins = PluginFolder(folder)
    try:
        yield plugins
    finally:
        sys.path.remove(str(folder))
        for reg in REGISTRIES:
            old = before[id(reg)]
            for name in list(reg):
                if name not in old:
                    reg.unregister(name)
                elif reg[name] is not old[name]:  # a replaced built-in, back with its own origin
                    reg.register(name, old[name], replace=True, origin=origins[id(reg)].get(name))
        for name in plugins.names:
            plugins.forget(name.split(".")[0])  # a submodule's package too
