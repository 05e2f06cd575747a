"""The zip torch.save writes, checked before torch.load unpacks anything in it (`archive_problem`): a run's checkpoints
(usagg/engine/checkpoint.py, usagg/store/checkpoints.py's layout probe) and the user's `model.weights`
(usagg/model/weights.py `read_checkpoint`) alike, since a received file could be a zip bomb."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

#: The most bytes a checkpoint's data.pkl may hold (the tensors are entries of their own): usagg's hold kilobytes to
#: tens of megabytes (a history row per epoch and task: 10,000 epochs of 30 tasks are about 40 MB); a model's state
#: dict a few hundred bytes per tensor (a DINOv3 ViT-7B file's many GB of tensors have a data.pkl of well under 1 MB).
PICKLE_LIMIT = 256 * 2**20


def archive_problem(path: Path, *, written_by: str = "a checkpoint usagg wrote") -> str | None:
    """Why the checkpoint at `path` is refused before anything in it is unpacked, or None (also for a file that is
    no zip archive: its reader says why it cannot read it). FileNotFoundError when there is none. `written_by`: what
    the file was meant to be, said of a compressed entry (a run's checkpoint, or the user's `model.weights`,
    usagg/model/weights.py `read_checkpoint`, whose tensors may be many GB but whose data.pkl is as small).

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
                f"to any size (a zip bomb): not {written_by}"
            )
        if entry.file_size != entry.compress_size or entry.header_offset + entry.compress_size > size:
            return f"has an entry ({entry.filename}) whose size is not the bytes the file stores for it"
        if entry.filename.rsplit("/", 1)[-1] == "data.pkl" and entry.file_size > PICKLE_LIMIT:
            return (
                f"has a data.pkl of {entry.file_size:,} bytes, more than the {PICKLE_LIMIT:,} a checkpoint's may hold "
                "(its tensors are entries of their own: usagg's hold a few megabytes at most, a model's weights less)"
            )
    if sum(entry.compress_size for entry in entries) > size:
        return "has entries that overlap (they claim more bytes than the file holds), as a zip bomb's do"
    return None
