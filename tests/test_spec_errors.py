"""Every malformed spec in tests/specs/ fails `usagg validate` with exit 2, its field path, and no traceback."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import cli_run
import pytest

SPECS = Path(__file__).parent / "specs"
CASES = sorted(SPECS.glob("*.yaml"))


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    return cli_run.run_cli(args, monkeypatch, capsys, columns=None)


def header(path: Path, key: str) -> list[str]:
    return [ln.split(":", 1)[1].strip() for ln in path.read_text().splitlines() if ln.startswith(f"# {key}:")]


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 25
    assert all(header(p, "expect") for p in CASES), "every case states what the error must say"


@pytest.mark.parametrize("spec", CASES, ids=[p.stem for p in CASES])
def test_malformed_spec(spec: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    extra = [a for line in header(spec, "args") for a in shlex.split(line)]
    code, text = run_cli(["validate", str(spec), *extra], monkeypatch, capsys)
    assert code == 2, text
    assert text.startswith("error: ")
    for expected in header(spec, "expect"):
        assert expected in text, f"{expected!r} not in:\n{text}"
    assert "Traceback" not in text


def test_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run_cli(["validate", str(tmp_path / "nope.yaml")], monkeypatch, capsys)
    assert code == 2
    assert "nope.yaml does not exist" in text


def test_every_problem_is_listed(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Several mistakes in one file are reported together, one line each, with the bad values."""
    spec = SPECS / "unknown_key_top.yaml"
    code, text = run_cli(
        ["validate", str(spec), "--set", "training.epochs=0", "--set", "model.image_size=65"], monkeypatch, capsys
    )
    assert code == 2
    assert "(3 problems)" in text
    assert "training.epochs: got 0; input should be greater than or equal to 1 (set by --set training.epochs=0)" in text
    assert "model.image_size: image_size must be a multiple of 16 (the patch size), got 65" in text


def test_subprocess_error_has_no_traceback() -> None:
    """End to end through `python -m usagg`: a user error is one red paragraph and exit 2."""
    proc = subprocess.run(
        [sys.executable, "-m", "usagg", "validate", str(SPECS / "task_type_typo.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "tasks[3].type" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_error_text_is_printed_verbatim(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`[seg_b]` in a message is text, not a rich style tag."""
    code, text = run_cli(
        ["validate", str(SPECS / "set_unknown_task_id.yaml"), "--set", "tasks[seg_b].group=X"], monkeypatch, capsys
    )
    assert code == 2
    assert "--set tasks[seg_b].group=X" in text


def test_files_that_are_not_yaml_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A binary file, an endless device and a huge file are refused by encoding, kind or size, before parsing."""
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)) * 10)
    huge = tmp_path / "huge.yaml"
    huge.write_text("name: x\n" + "# padding\n" * 200_000)
    for path, expected in (
        (binary, "not UTF-8 text"),
        (Path("/dev/zero"), "is a character device, not a regular file"),
        (huge, "larger than"),
    ):
        code, text = run_cli(["validate", str(path)], monkeypatch, capsys)
        assert code == 2 and expected in text and "Traceback" not in text, text


AUTO_TOO = "or input should be 'auto'"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", ["execution.cpu_jobs: got 0; input should be greater than or equal to 1", AUTO_TOO]),
        ("65", ["execution.cpu_jobs: got 65; input should be less than or equal to 64", AUTO_TOO]),
        ("x", ["execution.cpu_jobs: got 'x'; input should be a valid integer", AUTO_TOO]),
        ("true", ["execution.cpu_jobs: expected a number of jobs or 'auto', got true (a YAML boolean)"]),
    ],
)
def test_cpu_jobs_out_of_range(
    value: str, expected: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """cpu_jobs (and jobs_per_gpu, for `true`) is a count 1..64 or auto; anything else is exit 2 naming the field."""
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: s\ndata: {synthetic: {}}\ntasks_from: {catalog: synthetic}\n"
        "model: {backbone: dinov3_test, image_size: 64}\n"
    )
    code, text = run_cli(["validate", str(spec), "--set", f"execution.cpu_jobs={value}"], monkeypatch, capsys)
    assert code == 2 and all(e in text for e in expected) and "Traceback" not in text, text
    code, text = run_cli(["validate", str(spec), "--set", "execution.cpu_jobs=64"], monkeypatch, capsys)
    assert code == 0, text
    code, text = run_cli(["validate", str(spec), "--set", "execution.jobs_per_gpu=true"], monkeypatch, capsys)
    assert code == 2 and "execution.jobs_per_gpu: expected a number of jobs or 'auto', got true" in text, text
