"""Where a report's numbers come from: usagg version, date, host, the spec as run, the weights, each job's device
and the code it ran.

A report travels without its run store (sent to co-authors, attached to a tracker), so it
carries its own provenance: the resolved spec and its hash, the backbone and the weights
file with the content hash its jobs' ids were made with (or a loud random-initialisation
warning), epochs, the device and precision of every job and the code it ran (usagg, torch,
timm, plug-ins: job ids hash settings, never code), read from the run store's study.yaml,
job.json and metrics.json. A received store is data: nothing here reads a file
outside it (a weights path it names is shown, never opened).
"""

from __future__ import annotations

import datetime
import hashlib
import re
import socket
from dataclasses import dataclass, field
from typing import Any

from usagg import __version__
from usagg.analysis.inputs import AnalysisInput
from usagg.errors import UsaggError
from usagg.jobmetrics import FIRST_NUMERICS
from usagg.safepath import confined
from usagg.store import RunStore
from usagg.store.records import WEIGHTS_KEY
from usagg.wording import counted

_HEX64 = re.compile(r"[0-9a-f]{64}")


#: Said in the provenance and first in a report's summary: its numbers come from an encoder without pretrained weights.
RANDOM_INIT_LINE = "RANDOM INIT: the encoder had no pretrained weights (model.weights empty); not DINOv3 results"


@dataclass
class Provenance:
    """The facts the report's provenance block prints."""

    version: str
    date: str
    host: str
    source: str
    source_sha256: str
    spec_text: str | None = None
    spec_sha256: str | None = None
    backbone: str | None = None
    epochs: int | None = None
    weights: str | None = None
    weights_sha256: str | None = None
    random_init: bool | None = None
    jobs: list[tuple[str, str, str]] = field(default_factory=list)  # (job id, device, precision)
    code: list[str | None] = field(default_factory=list)  # per job: the code it ran (`code_text`), None: not recorded

    def lines(self) -> list[str]:
        """Plain-text lines (markdown list items and the HTML block share them)."""
        out = [
            f"usagg {self.version}, written {self.date} on {self.host}",
            f"results: {self.source} (sha256 {self.source_sha256[:16]})",
        ]
        if self.spec_sha256:
            out.append(f"spec as run: study.yaml of the run store (sha256 {self.spec_sha256[:16]}), shown below")
        if self.backbone:
            out.append(f"backbone {self.backbone}" + (f", {counted(self.epochs, 'epoch')}" if self.epochs else ""))
        if self.random_init:
            out.append(RANDOM_INIT_LINE)
        elif self.weights:
            digest = f"sha256 {self.weights_sha256[:16]}" if self.weights_sha256 else "no digest in the run store"
            out.append(f"weights: {self.weights} ({digest})")
        devices = sorted({f"{d} / {p}" for _, d, p in self.jobs})
        if devices:
            out.append(f"jobs: {len(self.jobs)} ran on {'; '.join(devices)} (device / precision; per job below)")
        else:
            out.append("jobs: device and precision not recorded (no job metrics with them)")
        out.append(self.code_line())
        return out

    def code_line(self) -> str:
        """The code the jobs ran: said once when every job ran the same, else each combination with its job count."""
        if all(c is None for c in self.code):
            return "code: not recorded (no job metrics with it)"
        counts = {c: self.code.count(c) for c in dict.fromkeys(self.code)}
        if len(counts) == 1:
            return f"code: {self.code[0]} (every job)"
        listed = "; ".join(f"{c or 'not recorded'} ({counted(n, 'job')})" for c, n in counts.items())
        return f"code, differing between jobs: {listed}"


def device_text(training: dict[str, Any]) -> str:
    """Where a job trained, from its metrics.json `training`: 'cuda:0', or on the CPU with its threads ('cpu, 1
    thread'; a CPU job's numbers depend on them, so jobs of one report on other counts show apart), and a resume
    on another count ('cpu, 2 threads after 1')."""
    device, threads, before = str(training["device"]), training.get("threads"), training.get("threads_before")
    if type(threads) is not int:
        return device
    after = f" after {before}" if type(before) is int else ""
    return f"{device}, {counted(threads, 'thread')}{after}"


def code_text(training: dict[str, Any]) -> str | None:
    """The code a job ran in words, from its metrics.json `training`: 'usagg 0.1.0 (numerics 1), torch 2.4.0, timm
    1.0.9, plug-ins lab 1.2 + b 0.3'; None where it recorded none (written before usagg recorded it)."""
    versions, plugins = training.get("versions"), training.get("plugins")
    if versions is None and plugins is None:
        return None
    said = [f"{k} {(versions or {}).get(k) or 'not recorded'}" for k in ("usagg", "torch", "timm")]
    if versions is not None:  # usagg's version never changed with what a job trains to: its numerics do
        said[0] += f" (numerics {versions.get('numerics', FIRST_NUMERICS)})"
    if plugins is None:
        return ", ".join([*said, "plug-ins not recorded"])
    named = " + ".join(f"{name} {version or '(no version)'}" for name, version in sorted(plugins.items()))
    return ", ".join([*said, f"plug-ins {named}" if named else "no plug-in"])


def _recorded_digest(record: dict[str, Any]) -> str | None:
    """The weights digest the job's id was hashed with (job.json's `weights_key`), None when not recorded.

    A received store names its weights path: reading (and caching a hash of) whatever file that is would
    let the store choose what the report vouches for, so the report shows only the recorded digest.
    """
    key = record.get(WEIGHTS_KEY)
    digest = key.removeprefix("sha256:") if isinstance(key, str) else ""
    return digest if _HEX64.fullmatch(digest) else None


def _spec_text(store: RunStore) -> str | None:
    """study.yaml of the store, None without one; UnsafePath when it is a link that leads outside the store."""
    spec = confined(store.study_yaml.name, store.root, f"{store.study_yaml} (the spec a report shows)")
    return spec.read_text(encoding="utf-8") if spec.is_file() else None


def provenance(inp: AnalysisInput) -> Provenance:
    """Provenance of an analysis input: a run store gives everything, a bare results CSV its own hash.

    Job ids of the table reach the store through `RunStore` (an id that is not a plain name, or a job folder
    that is a link leading outside the store, is an UnsafePath), and so does study.yaml.
    """
    prov = Provenance(
        version=__version__,
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        host=socket.gethostname(),
        source=inp.source_text,
        source_sha256=inp.table_sha256,  # of the rows analysed, never of a stale or missing file on disk
    )
    if inp.run_dir is None:
        return prov
    store = RunStore(inp.run_dir)
    prov.spec_text = _spec_text(store)
    if prov.spec_text is not None:
        prov.spec_sha256 = hashlib.sha256(prov.spec_text.encode()).hexdigest()
    for job_id in inp.table.job_ids:
        m = store.metrics(job_id) or {}  # a damaged one reads as None: the store notes it
        training, weights = m.get("training") or {}, m.get("weights") or {}
        if training.get("device"):
            prov.jobs.append((job_id, device_text(training), str(training.get("precision", "not recorded"))))
        if m:
            prov.code.append(code_text(training))
        if prov.backbone is None and m:
            record = _job_record(store, job_id)
            model = (record.get("job") or {}).get("model") or {}
            prov.backbone = model.get("backbone")
            prov.epochs = training.get("epochs")
            prov.random_init = bool(weights.get("random_init"))
            prov.weights = weights.get("weights") or model.get("weights")
            prov.weights_sha256 = _recorded_digest(record)
    return prov


def _job_record(store: RunStore, job_id: str) -> dict[str, Any]:
    """The job's job.json, {} when the store has none it can read or rebuild (the id passed `store.metrics`)."""
    try:
        record = store.job_record(job_id)
    except UsaggError:
        return {}
    return record if isinstance(record.get("job"), dict) else {}
