"""Links in a run store: none planted where its writers write or delete (`check_no_links`; submitit's own link to a
submission's script excepted, `submitit_link`), the records of `usagg run`s in .runs/ taken only by usagg's own names
(`run_records`), and the hard links `RunStore.reuse` shares a done twin's files by (`link_or_copy`; what it copies
goes into new files, `copy_fresh`)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from usagg.safepath import no_links

if TYPE_CHECKING:
    from usagg.store.layout import StoreLayout


#: submitit keeps each submission's script and links the temporary name it wrote it under to it, in the folder usagg
#: gives it: `<folder>/.submission_file_<uuid4 hex>.sh` -> `<folder>/<Slurm job id>_submission.sh`.
_SUBMITIT_LINK = re.compile(r"\.submission_file_[0-9a-f]{32}\.sh")
_SUBMITIT_TARGET = re.compile(r"\d+(_\d+)?_submission\.sh")
#: The name of a `usagg run`'s record in .runs/ (`new_run_record`): a uuid4's hex digits and `.lock`.
_RUN_RECORD = re.compile(r"[0-9a-f]{32}\.lock")


def submitit_link(link: Path) -> bool:
    """Whether `link` is submitit's own link to the script of a submission beside it (`_SUBMITIT_LINK`): the one
    link slurm/ holds that usagg did not plant through a received store; nothing is written through it."""
    target = Path(os.readlink(link))
    beside = os.path.dirname(os.path.abspath(link.parent / target)) == os.path.abspath(link.parent)
    return bool(_SUBMITIT_LINK.fullmatch(link.name) and _SUBMITIT_TARGET.fullmatch(target.name)) and beside


def link_or_copy(src: str, dst: str) -> None:
    """A hard link of a file no writer rewrites in place (atomic writers replace it), else a copy."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(dst)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def copy_fresh(src: Path, dst: Path) -> None:
    """A copy of `src` at `dst` in a new file: what stood at `dst` is removed first, never written into (a hard link
    a received store planted there would otherwise have its other name's file overwritten)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(dst)
    shutil.copyfile(src, dst)


def check_no_links(store: StoreLayout, job_ids: Iterable[str] | None = None) -> None:
    """UnsafePath for a symbolic link in a folder the store's writers own: the job folders and their TensorBoard
    folders (`job_ids`', else every one, the jobs/ and tensorboard/ folders themselves included), .runs/, slurm/ and
    mlflow-artifacts/ (usagg/safepath.py `no_links`).

    usagg makes no links there; a received store could plant one, and a resumed job would append its log to,
    write its checkpoints into and delete its last.pt from the link's target, and a `usagg run` would delete the
    lock files of the folder a `.runs` link names (`run_records`). `usagg run` and `usagg repair` check the whole
    store before their first write, and every job checks its own folder before it starts.
    """
    if job_ids is None:
        no_links(store.jobs_dir, f"run store {store.root}")
        no_links(store.tensorboard_root, f"run store {store.root}")
    else:
        for job_id in job_ids:
            no_links(store.job_dir(job_id), f"run store {store.root}, job {job_id}")
            no_links(store.tensorboard_dir(job_id), f"run store {store.root}, job {job_id}")
    no_links(store.runs_dir, f"run store {store.root}")
    no_links(store.slurm_dir, f"run store {store.root}", submitit_link)
    no_links(store.mlflow_artifacts, f"run store {store.root}")


def new_run_record(store: StoreLayout) -> Path:
    """A fresh name for this `usagg run`'s record in .runs/ (`RunStore.run`), of the one form `run_records` takes."""
    return store.runs_dir / f"{uuid.uuid4().hex}.lock"


def run_records(store: StoreLayout) -> list[Path]:
    """The records of `usagg run`s in the store's .runs/, sorted: only names of the form `new_run_record` gives
    (none when there is no .runs/ yet); UnsafePath when .runs/ or anything in it is a symbolic link.

    `RunStore.run` deletes the records of dead runs: through a `.runs` link a received store planted, every
    `*.lock` of the folder it names (a project's uv.lock, poetry.lock, Cargo.lock) read as a dead run's record and
    deleted, so the link is refused, checked here before every listing, and a file of another name is never read.
    """
    folder = no_links(store.runs_dir, f"run store {store.root}")
    try:
        names = os.listdir(folder)
    except OSError:  # none yet
        return []
    return [folder / name for name in sorted(names) if _RUN_RECORD.fullmatch(name)]
