"""What a staged paradigm's planner (AG) reads of the jobs it needs (usagg/paradigms.py `Evidence`), from the run
store once every one of them is done."""

from __future__ import annotations

from typing import TYPE_CHECKING

from usagg.errors import UsaggError

if TYPE_CHECKING:
    from usagg.affinity import Affinity
    from usagg.plan import EvidenceFor, Job
    from usagg.store import RunStore


class StoreEvidence:
    """What a staged planner reads of its needed jobs (usagg/paradigms.py `Evidence`), from the run store."""

    def __init__(self, store: RunStore, jobs: list[Job]) -> None:
        self.store = store
        self.jobs = jobs

    def affinity(self) -> Affinity:
        """The mean of the jobs' affinity.json; a file missing, damaged or of another job is a UsaggError."""
        from usagg.affinity import check_source, mean_affinity, read_affinity

        found = []
        for j in self.jobs:
            path = self.store.paths(j.id).affinity
            if not path.is_file():
                raise UsaggError(
                    f"job {j.id} is done but {path} is missing, so AG cannot group its tasks; delete the folder "
                    f"{path.parent} and run the study again to measure it"
                )
            aff = read_affinity(path)
            check_source(aff, path, j.id, j.hash, j.task_ids)
            found.append(aff)
        return mean_affinity(found)


def store_evidence(store: RunStore) -> EvidenceFor:
    """Evidence of jobs once every one of them is done in `store` (None before)."""

    def evidence_for(jobs: list[Job]) -> StoreEvidence | None:
        if not jobs or not store.exists() or any(store.job_state(j.id) != "done" for j in jobs):
            return None
        return StoreEvidence(store, jobs)

    return evidence_for
