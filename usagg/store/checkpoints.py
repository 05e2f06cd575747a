"""A checkpoint's layout version, read torch-free from the pickle inside its zip (`checkpoint_layout`, milliseconds:
`usagg status` stays light), and the version this usagg resumes (`CHECKPOINT_FORMAT`); a last.pt of another layout
or one that cannot be read is not resumed (usagg/engine/checkpointing.py), as `usagg status` and `usagg run` say
beforehand. A checkpoint is checked before anything in it is unpacked, here and by the engine's torch.load
(usagg/torchzip.py `archive_problem`): a received store's last.pt could be a zip bomb."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

from usagg import torchzip

#: Version of the checkpoint layout (2: lean, with the frozen weights' fingerprint; 3: with a content checksum;
#: 4: MoE experts stacked per projection, last.pt carrying the kept best epochs). A last.pt of another layout is
#: not resumed: the job starts over (usagg/engine/checkpointing.py), as `usagg status` and `usagg run` say
#: beforehand (`checkpoint_layout`).
CHECKPOINT_FORMAT = 4
#: The suffix a last.pt the engine cannot resume is kept under (last.pt.not-resumed), never overwritten.
NOT_RESUMED = "not-resumed"


class _Opaque:
    """Whatever a checkpoint's pickle builds beyond plain data (tensors, dtypes, ordered dicts, arrays): accepted and
    dropped, so `checkpoint_layout` reads the layout without torch and without reading a tensor."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        pass

    def __setitem__(self, key: object, value: object) -> None:
        pass

    def append(self, value: object) -> None:
        pass

    def extend(self, values: object) -> None:
        pass


class _LayoutUnpickler(pickle.Unpickler):
    """Unpickles a torch checkpoint's data.pkl with every class and every tensor storage an `_Opaque`: nothing is
    imported or run from the file."""

    def find_class(self, module: str, name: str) -> Any:
        return _Opaque

    def persistent_load(self, pid: Any) -> Any:
        return None


def checkpoint_layout(path: Path) -> int | None:
    """The layout of the checkpoint at `path` (its "format"; 1 for the first, which had none), read from the pickle
    inside torch's zip file (milliseconds, no torch: `usagg status` stays light); None where it cannot be read or is
    refused (`torchzip.archive_problem`: the run then finds it damaged and starts over, saying so in the job's log)."""
    try:
        if torchzip.archive_problem(path) is not None:
            return None
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.rsplit("/", 1)[-1] == "data.pkl")
            with archive.open(name) as f:
                data = f.read(torchzip.PICKLE_LIMIT + 1)  # bounded, should the file have changed since it was checked
        if len(data) > torchzip.PICKLE_LIMIT:
            return None
        ck = _LayoutUnpickler(io.BytesIO(data)).load()
    except Exception:  # not a zip, no data.pkl, a pickle cut short: unreadable here, the engine's to judge
        return None
    if not isinstance(ck, dict):
        return None
    layout = ck.get("format", 1)
    return layout if isinstance(layout, int) and not isinstance(layout, bool) else None
