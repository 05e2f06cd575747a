"""Issue 24 (bad input): compiled code kept on disk in the usagg cache, one folder per torch version, a damaged
or foreign folder rebuilt with one line (usagg/engine/accel.py `compile_cache`), listed and pruned as a cache kind."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest
import torch

from usagg.cachedir import COMPILE_MARKER, entries, prune
from usagg.engine.accel import INDUCTOR_CACHE_ENV, compile_cache, use_compile_cache


@pytest.fixture(autouse=True)
def _own_key(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """usagg's key (usagg/cachetrust.py `cache_key`) in a folder of the test's, not the user's ~/.config."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))


def test_a_folder_per_torch_version_kept_between_jobs(tmp_path: Path) -> None:
    folder = compile_cache(tmp_path)
    assert folder == tmp_path / "compile" / f"torch-{torch.__version__.replace('+', '_')}"
    assert json.loads((folder / COMPILE_MARKER).read_text())["torch"] == torch.__version__
    (folder / "fxgraph").mkdir()
    (folder / "fxgraph" / "entry").write_bytes(b"compiled")  # what inductor writes
    assert compile_cache(tmp_path) == folder and (folder / "fxgraph" / "entry").read_bytes() == b"compiled"
    other = compile_cache(tmp_path, "9.9.9")
    assert other != folder and (folder / "fxgraph" / "entry").exists()  # another version: a folder of its own


@pytest.mark.parametrize(
    ("marker", "why"),
    [(None, "missing or damaged"), (b"\x00{not json", "missing or damaged"), (b'{"torch": "2.0.0"}', "torch 2.0.0")],
)
def test_a_damaged_or_foreign_folder_is_emptied_with_one_line(
    tmp_path: Path, marker: bytes | None, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    folder = compile_cache(tmp_path)
    (folder / "stale").write_bytes(b"code of unknown origin")
    if marker is None:
        (folder / COMPILE_MARKER).unlink()
    else:
        (folder / COMPILE_MARKER).write_bytes(marker)
    with caplog.at_level(logging.WARNING, logger="usagg.engine.accel"):
        assert compile_cache(tmp_path) == folder
    assert not (folder / "stale").exists()
    assert json.loads((folder / COMPILE_MARKER).read_text())["torch"] == torch.__version__
    (line,) = [r.getMessage() for r in caplog.records]
    assert str(folder) in line and why in line and "compiled afresh" in line


def test_inductor_is_pointed_at_it_unless_the_user_chose(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(INDUCTOR_CACHE_ENV, raising=False)
    folder = use_compile_cache(tmp_path)
    assert folder is not None and os.environ[INDUCTOR_CACHE_ENV] == str(folder)
    monkeypatch.setenv(INDUCTOR_CACHE_ENV, str(tmp_path / "mine"))
    assert use_compile_cache(tmp_path / "other") is None and os.environ[INDUCTOR_CACHE_ENV] == str(tmp_path / "mine")
    assert not (tmp_path / "other").exists()


def test_the_folders_inductor_and_usagg_wrote_are_not_taken_for_a_users_choice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inductor writes its default folder into TORCHINDUCTOR_CACHE_DIR at its first compile (gpu-check's bare loop
    compiles before any job), and usagg writes its own for a job: a later job still gets its cache root's folder."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    monkeypatch.setenv(INDUCTOR_CACHE_ENV, "")  # as if unset, and restored after the test
    monkeypatch.delenv(INDUCTOR_CACHE_ENV)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))  # inductor's default folder, made below
    inductors = cache_dir()  # what inductor's first compile does
    assert os.environ[INDUCTOR_CACHE_ENV] == inductors
    first = use_compile_cache(tmp_path / "a")
    assert (
        first is not None
        and first == tmp_path / "a" / "compile" / first.name
        and os.environ[INDUCTOR_CACHE_ENV] == str(first)
    )
    second = use_compile_cache(tmp_path / "b")  # a later job with another cache root, in the same process
    assert second == tmp_path / "b" / "compile" / first.name and os.environ[INDUCTOR_CACHE_ENV] == str(second)


def test_listed_and_pruned_by_last_use(tmp_path: Path) -> None:
    used, old = compile_cache(tmp_path), compile_cache(tmp_path, "1.0.0")
    (old / "entry").write_bytes(b"x" * 1000)
    stale = time.time() - 40 * 86400
    os.utime(old / COMPILE_MARKER, (stale, stale))
    found = {e.name: e for e in entries(tmp_path, ("compile",))}
    assert set(found) == {used.name, old.name} and found[old.name].size >= 1000
    deleted, busy = prune(tmp_path, 30 * 86400, ("compile",))
    assert [e.name for e in deleted] == [old.name] and not busy
    assert used.exists() and not old.exists()
