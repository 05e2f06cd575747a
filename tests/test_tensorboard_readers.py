"""A job trained in three attempts shows each epoch once, the last attempt's value, in every reader TensorBoard has.

usagg's TensorBoard writer purges an earlier attempt's points on resume (usagg/tracking.py `TensorBoardTracker`): a
SessionLog START at the first epoch the attempt trains. TensorBoard reads event files three ways, each with its own
purge rule: the Python `EventAccumulator`, the `plugin_event_accumulator` its own server runs on (`tensorboard
--load_fast=false`, and wherever the Rust data server does not run), and the Rust data server
(`tensorboard_data_server`, TensorBoard's default where its binary is installed). The second took the first START it
read for the run's start, not a restart, and an attempt that started afresh wrote none: it showed both attempts'
points. Offline: real event files from the tracker, read back by each reader.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from usagg.plan import Job, plan
from usagg.spec.load import load_study
from usagg.spec.models import TrackingSpec
from usagg.tracking import job_trackers

REPO = Path(__file__).resolve().parents[1]
READERS = ("event_accumulator", "plugin_event_accumulator", "data_server")


@pytest.fixture(scope="module")
def job() -> Job:
    return plan(load_study(REPO / "studies" / "demo.yaml"))[0]


def _entry(epoch: int, attempt: int) -> dict[str, Any]:
    """Epoch `epoch` as attempt `attempt` trained it: its loss tells the attempts apart (training is not
    bit-reproducible across a resume)."""
    return {"epoch": epoch, "loss": 10.0 * attempt + epoch}


def _attempt(job: Job, store: Path, attempt: int, resumed: int, trained: range, ended: str) -> None:
    """Attempt `attempt` of the job: it resumes a checkpoint of `resumed` epochs (their entries as the attempt that
    trained each logged it), trains `trained`, ends `ended`."""
    trackers = job_trackers(TrackingSpec(tensorboard=True), job, store)
    for tracker in trackers.trackers:
        tracker.start([_entry(e, e) for e in range(1, resumed + 1)])
    for epoch in trained:
        trackers.epoch(_entry(epoch, attempt))
    metrics = {"tasks": {}, "training": {"epochs": job.training.epochs}}
    trackers.finish(metrics if ended == "done" else None, ended)
    time.sleep(1.05)  # event files are named by the second they open in: the next attempt's sorts after this one's


def _read(reader: str, folder: Path) -> list[tuple[int, float]]:
    """The job's `loss` curve as `reader` gives it."""
    if reader == "event_accumulator":
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        acc.Reload()
        return [(e.step, e.value) for e in acc.Scalars("loss")]
    if reader == "plugin_event_accumulator":
        from tensorboard.backend.event_processing import plugin_event_accumulator
        from tensorboard.util import tensor_util

        plugin = plugin_event_accumulator.EventAccumulator(str(folder), size_guidance={"tensors": 0})
        plugin.Reload()
        return [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in plugin.Tensors("loss")]
    return _read_data_server(folder)


def _read_data_server(folder: Path) -> list[tuple[int, float]]:
    """The curve as TensorBoard's Rust data server serves it, started as TensorBoard starts it (its own ingester)."""
    from tensorboard import context
    from tensorboard.data import server_ingester
    from tensorboard.util import grpc_util

    binary = server_ingester.get_server_binary()
    if binary is None:
        pytest.skip("no tensorboard_data_server binary for this platform: TensorBoard reads with its Python loader")
    ingester = server_ingester.SubprocessServerDataIngester(
        binary,
        str(folder.parent),
        reload_interval=0,  # load once
        channel_creds_type=grpc_util.ChannelCredsType.LOCAL,
        samples_per_plugin={"scalars": 0},
    )
    ingester.start()
    try:
        for _ in range(80):  # the server answers before its one load has ended
            runs = ingester.data_provider.read_scalars(
                context.RequestContext(), experiment_id="", plugin_name="scalars", downsample=1000
            )
            if folder.name in runs:
                return [(d.step, d.value) for d in runs[folder.name]["loss"]]
            time.sleep(0.25)
    finally:
        ingester._stdin_handle.close()  # the server ends when its stdin does (--die-after-stdin)
    raise AssertionError(f"the data server never served {folder}")


@pytest.mark.slow  # three attempts a second apart each: about 5 s
@pytest.mark.parametrize("reader", READERS)
def test_a_job_resumed_twice_shows_each_epoch_once_in_every_tensorboard_reader(
    reader: str, job: Job, tmp_path: Path
) -> None:
    """Attempt 1 trains epochs 1-3 and fails (its checkpoint: epoch 1); attempt 2 trains 2-3 and fails (checkpoint:
    epoch 2); attempt 3 trains 3-4 and is done. The curve: epoch 1 of attempt 1, 2 of attempt 2, 3 and 4 of 3."""
    job = job.model_copy(update={"training": job.training.model_copy(update={"epochs": 4})})
    _attempt(job, tmp_path, 1, 0, range(1, 4), "failed")
    _attempt(job, tmp_path, 2, 1, range(2, 4), "failed")
    _attempt(job, tmp_path, 3, 2, range(3, 5), "done")
    folder = tmp_path / "tensorboard" / job.id
    assert len(list(folder.glob("events.out.tfevents.*"))) == 3
    assert _read(reader, folder) == [(1, 11.0), (2, 22.0), (3, 33.0), (4, 34.0)]
