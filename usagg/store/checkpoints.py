"""A checkpoint's layout version, read torch-free from the pickle inside its zip (`checkpoint_layout`, milliseconds:
`usagg status` stays light), and the version this usagg resumes (`CHECKPOINT_FORMAT`); a last.pt of another layout
or one that cannot be read is not resumed (usagg/engine/checkpointing.py), as `usagg status` and `usagg run` say
beforehand. A checkpoint is checked before anything in it is unpacked, here and by the engine's torch.load
(`archive_problem`): a received store's last.pt could be a zip bomb."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

#: Version of the checkpoint layout (2: lean, with the frozen weights' fingerprint; 3: with a content checksum;
#: 4: MoE experts stacked per projection, last.pt carrying the kept best epochs). A last.pt of another layout is
#: not resumed: the job starts over (usagg/engine/checkpointing.py), as `usagg status` and `usagg run` say
#: beforehand (`checkpoint_layout`).
CHECKPOINT_FORMAT = 4
#: The suffix a last.pt the engine cannot resume is kept under (last.pt.not-resumed), never overwritten.
NOT_RESUMED = "not-resumed"
#: The most bytes a checkpoint's data.pkl may hold (the tensors are entries of their own): usagg's hold kilobytes to
#: tens of megabytes (a history row per epoch and task: 10,000 epochs of 30 tasks are about 40 MB).
PICKLE_LIMIT = 256 * 2**20


def archive_problem(path: Path) -> str | None:
    """Why the checkpoint at `path` is refused before anything in it is unpacked, or None (also for a file that is
    no zip archive: its reader says why it cannot read it). FileNotFoundError when there is none.

    torch stores every entry of a checkpoint uncompressed, each in bytes of its own, so unpacking one never takes
    more memory than the file's size; a received last.pt with a compressed entry (1 MB of zip that unpacks to
    1 GiB took `usagg status` 2 GB and 16 s), an entry whose size is not its stored bytes, entries that overlap, or a
    data.pkl over `PICKLE_LIMIT` was not written by torch.save, and is refused.
    """
    size = os.stat(path).st_size
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return None
    for entry in entries:
        if entry.compress_type != zipfile.ZIP_STORED:
            return (
                f"holds a compressed entry ({entry.filename}), which torch.save never writes and which could unpack "
                "to any size (a zip bomb): not a checkpoint usagg wrote"
            )
        if entry.file_size != entry.compress_size or entry.header_offset + entry.compress_size > size:
            return f"has an entry ({entry.filename}) whose size is not the bytes the file stores for it"
        if entry.filename.rsplit("/", 1)[-1] == "data.pkl" and entry.file_size > PICKLE_LIMIT:
            return (
                f"has a data.pkl of {entry.file_size:,} bytes, more than the {PICKLE_LIMIT:,} a checkpoint's may hold "
                "(usagg's hold a few megabytes at most)"
            )
    if sum(entry.compress_size for entry in entries) > size:
        return "has entries that overlap (they claim more bytes than the file holds), as a zip bomb's do"
    return None


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
    refused (`archive_problem`: the run then finds it damaged and starts over, saying so in the job's log)."""
    try:
        if archive_problem(path) is not None:
            return None
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.rsplit("/", 1)[-1] == "data.pkl")
            with archive.open(name) as f:
                data = f.read(PICKLE_LIMIT + 1)  # bounded, should the file have changed since it was checked
        if len(data) > PICKLE_LIMIT:
            return None
        ck = _LayoutUnpickler(io.BytesIO(data)).load()
    except Exception:  # not a zip, no data.pkl, a pickle cut short: unreadable here, the engine's to judge
        return None
    if not isinstance(ck, dict):
        return None
    layout = ck.get("format", 1)
    return layout if isinstance(layout, int) and not isinstance(layout, bool) else None
