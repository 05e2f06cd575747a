"""The spec files a study name is bound to (`SpecFiles`, a part of `RunStore`): specs.json lists every spec file
run into the store, so another file of the same study name is noticed (usagg/run/gate.py `PlanGate`) and a message
can name the file to run again."""

from __future__ import annotations

from pathlib import Path

from usagg.atomic import read_json, write_json_atomic
from usagg.store.layout import StoreLayout


class SpecFiles(StoreLayout):
    """specs.json of a store (`StoreLayout.specs_json`)."""

    def spec_files(self) -> list[str]:
        """The spec files run into this store (absolute paths, the first first); [] when none was recorded."""
        try:
            data = read_json(self.specs_json)
        except (OSError, ValueError):
            return []
        return [str(p) for p in data] if isinstance(data, list) else []

    def add_spec_file(self, path: Path | str, replace: bool = False) -> None:
        """Record a spec file run into this store (once), so another file of the same study name is noticed;
        `replace`: in place of those recorded (all gone: this file took the study over)."""
        files = [] if replace else self.spec_files()
        if str(path) not in files:
            write_json_atomic(self.specs_json, [*files, str(path)])
