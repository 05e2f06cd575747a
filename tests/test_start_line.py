"""A job's start line names its device, and an accel mode that falls back says so once per run (the audit: a
`graphs` run on the CPU said it only in the job's log.txt, at INFO; a GPU box whose CUDA was not visible trained on
the CPU with no line naming it). The engine's start report (usagg/engine/job.py) carries both to the display."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.cli_run import run_cli
from tests.tiny_study import write_tiny_study
from usagg.engine.accel import ACCEL_MODES, fallback_text
from usagg.engine.job import device_text

NOTE = "execution.accel=graphs applies to CUDA devices only; this job runs eager on cpu"


def test_every_mode_but_eager_falls_back_on_the_cpu_and_says_how() -> None:
    cpu = torch.device("cpu")
    assert fallback_text("eager", cpu) is None
    for mode in ACCEL_MODES[1:]:
        said = fallback_text(mode, cpu)  # type: ignore[arg-type]
        assert said == f"execution.accel={mode} applies to CUDA devices only; this job runs eager on cpu"
    threads = torch.get_num_threads()
    assert device_text(cpu) == f"cpu ({threads} thread{'' if threads == 1 else 's'})"


def test_a_gpu_is_named_by_its_index_and_its_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CUDA device is touched: torch's answers are stood in for."""
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: f"NVIDIA H100 80GB HBM3 #{index}")
    assert device_text(torch.device("cuda")) == "cuda:0 (NVIDIA H100 80GB HBM3 #0)"
    assert device_text(torch.device("cuda:1")) == "cuda:1 (NVIDIA H100 80GB HBM3 #1)"


@pytest.mark.parametrize("triton", [False, True])
def test_on_cuda_only_a_missing_compiler_makes_a_mode_fall_back(triton: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `accelerate` decides (tests/test_cuda_path.py), said before it: no CUDA device is touched."""
    import torch.utils._triton as triton_check

    monkeypatch.setattr(triton_check, "has_triton_package", lambda: triton)
    monkeypatch.setattr(triton_check, "has_triton", lambda: triton)
    cuda = torch.device("cuda")
    said = {mode: fallback_text(mode, cuda) for mode in ACCEL_MODES}  # type: ignore[arg-type]
    assert said["eager"] is None and said["step-graphs"] is None
    if triton:
        assert set(said.values()) == {None}
        return
    missing = "needs inductor's GPU compiler, Triton: the triton package is not installed"
    assert (
        said["compile"]
        == f"execution.accel=compile {missing} (pip install triton, the version torch names); this job runs eager"
    )
    assert said["graphs"] is not None and said["graphs"].endswith("this job runs eager")
    assert str(said["compiled-step-graphs"]).endswith("this job runs step-graphs, its step recorded uncompiled")


@pytest.mark.slow  # two tiny jobs trained in this process: about 5 s
def test_a_graphs_run_on_the_cpu_names_its_device_and_falls_back_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`devices: auto` (as studies/fmc_uia.yaml ships) on a machine without a visible GPU: the jobs run in this
    process, on the CPU, and the run's output says so for each job; the fallback of `graphs` once for both."""
    execution = {"devices": "auto", "cpu_jobs": 1, "threads": 1}
    study = write_tiny_study(tmp_path / "study.yaml", "started", tmp_path / "data", execution=execution)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a GPU box whose CUDA is broken
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    code, out = run_cli(["run", str(study), "--set", "execution.accel=graphs"], monkeypatch, capsys)
    assert code == 0, out
    texts = [line.split("] ", 1)[1] for line in out.splitlines() if line.startswith("[")]
    started = [t for t in texts if " started" in t]
    assert len(started) == 2 and all(t.endswith(" started on cpu (1 thread)") for t in started), texts
    assert [t for t in texts if "execution.accel" in t] == [f"warning: {NOTE}"]
    assert texts.index(started[0]) < texts.index(f"warning: {NOTE}") < texts.index(started[1])
