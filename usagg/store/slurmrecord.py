"""A job queued on Slurm, as the run store records it (`SlurmRecords`, a part of `RunStore`): its job's
slurm.json from submission until a run collects its outcome (usagg/execute/slurm.py submits and collects;
`usagg run` decides from it, usagg/run/studyrun.py; `usagg status` says where it waits)."""

from __future__ import annotations

import re
from datetime import datetime

from usagg.atomic import read_json, write_json_atomic
from usagg.store.layout import StoreLayout
from usagg.store.records import iso, now

#: A Slurm job id as `slurm.json` records it: the array's id and the element's index.
_SLURM_JOB_ID = re.compile(r"\d{1,20}(_\d{1,9})?")


class SlurmRecords(StoreLayout):
    """Each job's Slurm record (`JobPaths.slurm`): written at submission, read by later runs, dropped once
    collected."""

    def mark_queued_on_slurm(self, job_id: str, slurm_job_id: str) -> None:
        """Record that the job was submitted as Slurm job `slurm_job_id` (`<array id>_<index>`), so a later `usagg
        run` does not submit it again while Slurm still lists it, and `usagg status` can say where it waits."""
        write_json_atomic(self.paths(job_id).slurm, {"slurm_job_id": slurm_job_id, "submitted": iso(now())})

    def queued_on_slurm(self, job_id: str) -> str | None:
        """The Slurm job (`1001_2`) the job was submitted as and whose outcome no run has collected yet, else None.
        A pure read; whether Slurm still lists it is sacct's to say (usagg/execute/slurm.py `still_queued`). A record
        that is no such id (damaged, or planted by a received store) reads as none."""
        try:
            data = read_json(self.paths(job_id).slurm, limit=4096)
        except (OSError, ValueError):
            return None
        found = data.get("slurm_job_id") if isinstance(data, dict) else None
        return found if isinstance(found, str) and _SLURM_JOB_ID.fullmatch(found) else None

    def slurm_submitted(self, job_id: str) -> datetime | None:
        """When the job's recorded Slurm element was submitted (`slurm.json` `submitted`), else None: a fresh array
        neither sacct nor squeue lists yet is still Slurm's (usagg/execute/slurm.py `SUBMIT_GRACE_S`)."""
        try:
            data = read_json(self.paths(job_id).slurm, limit=4096)
            when = datetime.fromisoformat(data["submitted"])
        except (OSError, ValueError, TypeError, KeyError):
            return None
        return when if when.tzinfo is not None else None

    def forget_slurm_job(self, job_id: str) -> None:
        """Drop the job's Slurm record once its outcome is collected."""
        self.paths(job_id).slurm.unlink(missing_ok=True)
