"""Links in a run store: none planted where its writers write (`check_no_links`; submitit's own link to a
submission's script excepted, `submitit_link`), and the hard links `RunStore.reuse` shares a done twin's files by
(`link_or_copy`)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
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


def check_no_links(store: StoreLayout, job_ids: Iterable[str] | None = None) -> None:
    """UnsafePath for a symbolic link in a folder the store's writers own: the job folders (`job_ids`', else
    every one, the jobs/ folder itself included), slurm/ and mlflow-artifacts/ (usagg/safepath.py `no_links`).

    usagg makes no links there; a received store could plant one, and a resumed job would append its log to,
    write its checkpoints into and delete its last.pt from the link's target. `usagg run` and `usagg repair`
    check the whole store before their first write, and every job checks its own folder before it starts.
    """
    if job_ids is None:
        no_links(store.jobs_dir, f"run store {store.root}")
    else:
        for job_id in job_ids:
            no_links(store.job_dir(job_id), f"run store {store.root}, job {job_id}")
    no_links(store.slurm_dir, f"run store {store.root}", submitit_link)
    no_links(store.mlflow_artifacts, f"run store {store.root}")
