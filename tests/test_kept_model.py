"""A worker's model kept from job to job (usagg/engine/kept.py): the next job of the same structure trains the kept
model with its own initial weights copied in, and ends exactly as on a model of its own.

Kept only under compile or graphs on CUDA (`keeps_model`); forced here on the CPU, where the same Python runs and
the only thing a GPU adds is that its compiled code and CUDA graphs read the parameters where they are: so the
parameters must stay the same tensors in the same memory, which is checked too. On a GPU:
tests/test_cuda_path.py `test_a_kept_compiled_model_records_no_cuda_graph_for_the_next_job` (`cuda` marker).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.test_cuda_path import write_whole_job  # the AU job with affinity and a frozen trunk
from tests.test_executors import fake_run_one, make_store
from usagg.engine import kept as kept_module
from usagg.engine.kept import job_model, model_key
from usagg.engine.runner import run_one
from usagg.execute import InProcessExecutor
from usagg.model.m2dino import build_model
from usagg.plan import Job, plan
from usagg.spec.load import dump_study, load_study
from usagg.spec.models import Study
from usagg.store import RunStore

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _nothing_kept_after() -> Iterator[None]:
    """A test worker runs many tests in one process: no test leaves a model kept for the next."""
    kept_module.release()
    yield
    kept_module.release()


def _au_study(tmp_path: Path, *overrides: str) -> Study:
    spec = write_whole_job(tmp_path)
    return load_study(spec, list(overrides))


def _au_jobs(study: Study) -> list[Job]:
    """The AU jobs (the study's AG names them: they measure affinity)."""
    return [j for j in plan(study) if j.paradigm == "AU"]


def _job_record(store: RunStore, job_id: str) -> tuple[object, ...]:
    """What a job computed, timings left out: metrics, history, affinity and the per-image test scores."""
    folder = store.root / "jobs" / job_id
    affinity = json.loads((folder / "affinity.json").read_text())
    timing = ("seconds", "train_seconds", "share")
    return (
        store.metrics(job_id)["tasks"],  # type: ignore[index]
        (folder / "history.csv").read_text(),
        {k: v for k, v in affinity.items() if k not in timing},
        (folder / "item_scores.json").read_text(),
    )


@pytest.mark.slow  # three small AU jobs with affinity and trunks: about 15 s
def test_a_job_on_the_kept_model_ends_as_on_a_model_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed 0's AU job, then seed 1's on the model it leaves (MoE, frozen trunk, affinity's virtual steps,
    selection, test evaluation at the selected epoch's weights all went through it), against seed 1's job alone on
    a model of its own: the same metrics, history, affinity and test scores to the last bit; the kept model's
    parameters are the same tensors in the same memory after both jobs."""
    study = _au_study(tmp_path, "seeds=[0, 1]")
    jobs = _au_jobs(study)
    assert [j.seed for j in jobs] == [0, 1] and model_key(jobs[0], "graphs", CPU) == model_key(jobs[1], "graphs", CPU)

    # alone: seed 1's job on a model of its own (the CPU keeps nothing)
    alone = RunStore(tmp_path / "alone")
    alone.init(dump_study(study), [jobs[1]])
    assert run_one(str(alone.root), jobs[1].id, device="cpu", accel="graphs") == "done", alone.error_text(jobs[1].id)
    assert kept_module._Kept.model is None

    # kept: seed 0's job, then seed 1's on the model it left
    monkeypatch.setattr(kept_module, "keeps_model", lambda mode, device: True)
    store = RunStore(tmp_path / "kept")
    store.init(dump_study(study), jobs)
    storage: list[tuple[object, list[int]]] = []
    for job in jobs:
        assert run_one(str(store.root), job.id, device="cpu", accel="graphs") == "done", store.error_text(job.id)
        model = kept_module._Kept.model
        assert model is not None
        storage.append((model, [p.data_ptr() for p in model.parameters()]))
    (first, ptrs0), (second, ptrs1) = storage
    assert second is first and ptrs1 == ptrs0
    assert _job_record(store, jobs[1].id) == _job_record(alone, jobs[1].id)
    assert _job_record(store, jobs[0].id) != _job_record(store, jobs[1].id)  # another seed: another job


def test_only_a_model_of_the_same_structure_is_kept_for_the_next_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seeds and data fractions keep the structure (the kept model serves, its weights replaced by the job's
    own); another image size or accel mode does not (the kept model is released, a new one built), nor does a
    job that did not end (failed or stopped). The weights copied in are exactly those a model of the job's own
    would start from."""
    jobs = _au_jobs(_au_study(tmp_path, "seeds=[0, 1]", "fractions=[0.5, 1]"))
    assert len(jobs) == 4 and len({model_key(j, "graphs", CPU) for j in jobs}) == 1
    other_size = _au_jobs(_au_study(tmp_path, "model.image_size=48"))[0]
    assert model_key(other_size, "graphs", CPU) != model_key(jobs[0], "graphs", CPU)
    assert model_key(jobs[0], "compile", CPU) != model_key(jobs[0], "graphs", CPU)
    cuda = torch.device("cuda")
    assert [kept_module.keeps_model(m, cuda) for m in ("eager", "compile", "graphs", "step-graphs")] == [
        False,
        True,
        True,
        False,
    ]
    assert not kept_module.keeps_model("graphs", CPU)

    monkeypatch.setattr(kept_module, "keeps_model", lambda mode, device: True)
    torch.manual_seed(jobs[0].seed)
    first = job_model(jobs[0], "graphs", CPU)
    for p in first.parameters():
        p.grad = torch.ones_like(p)  # what a job leaves behind
    kept_module.job_ended(first)
    torch.manual_seed(jobs[-1].seed)
    again = job_model(jobs[-1], "graphs", CPU)
    assert again is first and all(p.grad is None for p in again.parameters())
    loaded = {k: v.clone() for k, v in again.state_dict().items()}
    # that job fails (no job_ended): the next job of the same structure gets a new model
    unended = job_model(jobs[1], "graphs", CPU)
    assert unended is not first and kept_module._Kept.model is unended
    kept_module.job_ended(unended)
    torch.manual_seed(other_size.seed)
    other = job_model(other_size, "graphs", CPU)
    assert other is not unended and kept_module._Kept.model is other
    torch.manual_seed(jobs[-1].seed)
    expected = build_model(jobs[-1].model, jobs[-1].tasks, jobs[-1].moe).state_dict()
    assert loaded.keys() == expected.keys() and all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_a_run_in_this_process_gives_the_kept_model_back_at_its_end(tmp_path: Path) -> None:
    """`usagg run` on one GPU, or `run_study` in a notebook, runs its jobs in the caller's process: the model the
    last job kept is released when the run ends, so the caller gets the GPU memory back."""
    store, ids = make_store(tmp_path, ["ok", "ok"])
    kept: list[object] = []

    def keeping_run_one(store_root: str, job_id: str, **kw: object) -> str:
        kept_module._Kept.key, kept_module._Kept.model = job_id, torch.nn.Linear(2, 2)  # type: ignore[assignment]
        kept.append(kept_module._Kept.model)
        return fake_run_one(store_root, job_id)

    assert InProcessExecutor(store.root).run(ids, keeping_run_one) == dict.fromkeys(ids, "done")
    assert len(kept) == 2 and kept_module._Kept.model is None and kept_module._Kept.key is None
