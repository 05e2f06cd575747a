"""A job filled from a done job of the same hash instead of training it again (`RunStore.reuse`): its result
copied, its checkpoints and predictions hard-linked where the filesystem allows."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

from usagg.errors import UsaggError
from usagg.store.links import copy_fresh, link_or_copy

if TYPE_CHECKING:
    from usagg.store import RunStore


def fill_from(store: RunStore, job_id: str, source_id: str) -> bool:
    """Fill a job from a done job of the same hash instead of training it again: the hash holds exactly the
    settings that change a result (usagg/spec/jobhash.py), so a CG job of a one-task group and TSM on that
    task, or CGD's and TS's, are one training. Under the job's lock (JobLocked while a live process holds it):
    its own files of an earlier attempt set aside (checkpoints, predictions, error.txt), the source's copied
    (checkpoints and predictions hard-linked where the filesystem allows: they are never rewritten in place),
    its metrics.json naming this job and `reused_from`, and the job done with `reused_from` in job.json.
    False when the job is done already (another run filled it)."""
    metrics = store.metrics(source_id)
    if metrics is None or store.job_state(source_id) != "done":
        raise UsaggError(f"job {source_id} is not done with its metrics, so {job_id} cannot reuse its result")
    src, dst = store.paths(source_id), store.paths(job_id)
    with store.lock(job_id):
        if store.job_state(job_id) == "done":
            return False
        for folder in (dst.predictions, dst.checkpoints):
            if folder.is_symlink():  # a planted link: removed, never written through
                folder.unlink()
            elif folder.is_dir():
                shutil.rmtree(folder)
        dst.error.unlink(missing_ok=True)
        for source, target in (
            (src.history, dst.history),
            (src.item_scores, dst.item_scores),
            (src.splits, dst.splits),
            (src.affinity, dst.affinity),
        ):
            if source.is_file():
                copy_fresh(source, target)  # never into a hard link planted at the name
        for folder in (src.predictions, src.checkpoints):
            if folder.is_dir():
                shutil.copytree(folder, dst.folder / folder.name, copy_function=link_or_copy, dirs_exist_ok=True)
        store.write_metrics(job_id, {**metrics, "job_id": job_id, "reused_from": source_id})
        store.set_state(job_id, "done", expect=("pending", "failed", "running"), reused_from=source_id)
    return True
