"""What a done job keeps: one set of weights, the tested ones, as best.pt. Under `training.selection: last` no
best.pt was written and the whole last.pt stayed, AdamW's moments included (the demo's store: 1.2 GB, two thirds of
it optimiser state); its last epoch's weights become best.pt and last.pt goes."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.tiny_study import write_tiny_study
from usagg import api
from usagg.engine import checkpoint
from usagg.store import RunStore


def test_a_done_last_epoch_job_keeps_its_tested_weights_as_best_pt(tmp_path: Path) -> None:
    spec = write_tiny_study(
        tmp_path / "s.yaml", "lastsel", tmp_path, epochs=2, training={"selection": "last"},
        output_root=tmp_path / "runs",
    )  # fmt: skip
    result = api.run_study(spec, device="cpu")
    store = RunStore(result.store_root)
    for job_id in result.states:
        paths = store.paths(job_id)
        assert paths.best_checkpoint.is_file() and not paths.last_checkpoint.exists()
        best = checkpoint.load(paths.best_checkpoint)
        assert list(best["weights"]) == [2]  # the last epoch, the one tested
        assert set(best) >= {"format", "fingerprint", "weights"}

    (job_id,) = [j for j in result.states if j.startswith("TS-thyroid_malignancy")]
    first = store.metrics(job_id)
    weights = checkpoint.load(store.paths(job_id).best_checkpoint)["weights"][2]
    store.set_state(job_id, "pending")  # a repair sends it back: it trains again from its best.pt's start
    again = api.run_study(spec, device="cpu")
    assert again.ok and store.metrics(job_id)["tasks"] == first["tasks"]  # the same training, the same result
    retrained = checkpoint.load(store.paths(job_id).best_checkpoint)["weights"][2]
    assert all(torch.equal(weights[k], retrained[k]) for k in weights)
