"""`execution.devices` naming GPUs that are not visible says what to give instead: `--devices cpu` or `auto` on a
host without CUDA, the indices there are otherwise, and a set CUDA_VISIBLE_DEVICES (which renumbers them)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_run import run_cli

from tests.tiny_study import write_tiny_study
from usagg.errors import UsaggError
from usagg.execute import local
from usagg.execute.local import resolve_devices
from usagg.spec.models import ExecutionSpec

#: How each caller sets the devices: the message serves the CLI, the API and the spec alike.
HOW = "(`--devices` on the command line, `device=` in usagg.api, `execution.devices` in the spec)"


def _refusal(devices: list[int]) -> str:
    with pytest.raises(UsaggError) as err:
        resolve_devices(ExecutionSpec(devices=devices))
    return str(err.value)


def test_no_gpu_gives_cpu_or_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "cuda_device_count", lambda: 0)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert _refusal([0]) == (
        "execution.devices [0]: [0] not visible (0 CUDA devices seen); use devices cpu or auto "
        f"(every visible GPU, else the CPU) {HOW}"
    )


def test_fewer_gpus_give_the_indices_there_are_and_name_the_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "cuda_device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")
    assert _refusal([0, 3]) == (
        "execution.devices [0, 3]: [3] not visible (2 CUDA devices seen); use devices auto (every visible GPU), "
        f"0,1 or cpu {HOW}; CUDA_VISIBLE_DEVICES='1,3' hides the others and renumbers the rest from 0"
    )


def test_run_on_a_host_without_cuda_exits_2_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The docs' `--devices 0` dry run on a CPU box: refused before anything is written, with the flag to use."""
    monkeypatch.setattr(local, "cuda_device_count", lambda: 0)
    study = write_tiny_study(tmp_path / "study.yaml", "dev", tmp_path / "data", output_root=tmp_path / "runs")
    code, out = run_cli(["run", str(study), "--devices", "0", "--dry-run"], monkeypatch, capsys)
    text = " ".join(out.split())
    assert code == 2 and "error: execution.devices [0]" in text and "Traceback" not in text, out
    assert "[0] not visible (0 CUDA devices seen); use devices cpu or auto" in text and "`--devices` on the" in text
