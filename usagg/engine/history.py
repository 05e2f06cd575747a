"""The trainer callback that writes a job's history.csv as the job goes (the format: usagg/historycsv.py).

After every epoch `HistoryCsv` rewrites the file from the whole history (so a resumed job's file is complete
too), which `usagg.api.load_history` reads for jobs that have not finished.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from usagg.engine.callbacks import Callback
from usagg.historycsv import write_history

if TYPE_CHECKING:
    from usagg.engine.trainer import Trainer


class HistoryCsv(Callback):
    """The trainer callback that rewrites history.csv at `path` after every epoch (a resumed job's file is whole)."""

    def __init__(self, path: Path, task_ids: Sequence[str]) -> None:
        self.path, self.task_ids = path, list(task_ids)

    def on_epoch_end(self, trainer: Trainer, entry: dict[str, Any]) -> None:
        write_history(self.path, trainer.state.history, self.task_ids)
