"""The cache inventory and `usagg cache prune`: old entries go, used and locked ones stay, nothing else is touched."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from cli_run import run_cli
from filelock import FileLock
from PIL import Image
from typer.testing import CliRunner

from tests.tiny_study import write_tiny_study
from usagg import cachedir
from usagg.analysis.memo import Memo
from usagg.analysis.stats import Stat
from usagg.cli.app import app
from usagg.data import cache as decode_cache
from usagg.errors import UsaggError

DAY = 86400.0


SYNTH_KEY = "0123456789abcdef"  # usagg/data/source.py `synth_key`: 16 hex digits


def _age(paths, days: float) -> None:  # type: ignore[no-untyped-def]
    t = time.time() - days * DAY
    for p in paths:
        os.utime(p, (t, t))


@pytest.fixture
def filled(tmp_path: Path) -> dict[str, Path]:
    """A cache with two decode entries, one synthetic benchmark, a stats memo, and an unrelated user file."""
    root = tmp_path / "cache"
    imgs = []
    for i in range(3):
        imgs.append(tmp_path / f"im{i}.png")
        Image.fromarray(np.full((20, 30), 40 * i, np.uint8)).save(imgs[-1])
    old = decode_cache.load(imgs[:2], 8, root)
    new = decode_cache.load(imgs[1:], 8, root)
    synth = root / "synth" / SYNTH_KEY
    (synth / "train").mkdir(parents=True)
    (synth / "train" / "x.png").write_bytes(b"p" * 500)
    (synth / cachedir.SYNTH_MARKER).write_text(f"{SYNTH_KEY}\n")
    Memo(root).cached_statistics("k", lambda: [Stat("mean", "CG", 1.0, 1.5, 9, "m")])
    (root / "notes.txt").write_text("mine")
    return {"root": root, "old": old.path, "new": new.path, "synth": synth, "imgs": imgs[0]}


def test_entries_list_every_kind_with_sizes(filled: dict[str, Path]) -> None:
    es = cachedir.entries(filled["root"])
    assert sorted(e.kind for e in es) == ["analysis", "decode", "decode", "synth"]
    decode = next(e for e in es if e.kind == "decode" and filled["old"] in e.paths)
    assert decode.size == sum(p.stat().st_blocks * 512 for p in decode.paths) and decode.size > 2 * 8 * 8
    assert not any(p.name.endswith(".lock") for p in decode.paths)
    synth = [filled["synth"] / "train" / "x.png", filled["synth"] / cachedir.SYNTH_MARKER]
    assert next(e for e in es if e.kind == "synth").size == sum(p.stat().st_blocks * 512 for p in synth)


def test_sizes_are_disk_use_what_deleting_frees(filled: dict[str, Path]) -> None:
    """Audit fault 7: `cache info` summed bytes, and a benchmark of few-hundred-byte PNGs took six times what it
    showed; sizes are now the blocks the files take (as `du`), and the table says so."""
    train = filled["synth"] / "train"
    for i in range(20):
        (train / f"s{i}.png").write_bytes(b"p" * 300)
    files = [p for p in filled["synth"].rglob("*") if p.is_file()]
    (entry,) = [e for e in cachedir.entries(filled["root"]) if e.kind == "synth"]
    assert entry.size == sum(p.stat().st_blocks * 512 for p in files) != sum(p.stat().st_size for p in files)
    res = CliRunner().invoke(app, ["cache", "info", "--cache-dir", str(filled["root"])], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "disk use" in res.output and "what deleting the entries frees" in res.output


def _refused(monkeypatch: pytest.MonkeyPatch, below: Path) -> None:
    """Writes into `below` fail as on a read-only mount (EROFS), for the probe and for filelock."""
    real_tmp, real_acquire = tempfile.TemporaryFile, FileLock.acquire

    def probe(*args: object, **kwargs: object) -> object:
        if Path(str(kwargs.get("dir"))).is_relative_to(below):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(kwargs["dir"]))
        return real_tmp(*args, **kwargs)  # type: ignore[call-overload]

    def acquire(self: FileLock, *args: object, **kwargs: object) -> object:
        if Path(self.lock_file).is_relative_to(below):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), self.lock_file)
        return real_acquire(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tempfile, "TemporaryFile", probe)
    monkeypatch.setattr(FileLock, "acquire", acquire)


def test_a_read_only_cache_is_one_paragraph_naming_the_settings(
    filled: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Audit fault 5: a read-only cache failed every job with filelock's bare "OSError: [Errno 30] ... .lock"; the
    probe and the locks now say which folder and which settings to change."""
    root = filled["root"]
    _refused(monkeypatch, root)
    with pytest.raises(UsaggError) as probed:
        cachedir.check_writable(root / "not yet made")
    with pytest.raises(UsaggError) as locked:
        decode_cache.load([filled["imgs"]], 8, root)
    for err in (probed, locked):
        text = str(err.value)
        assert text.startswith(f"the cache folder {root}") and "is not writable (Read-only file system)" in text
        assert "Point USAGG_CACHE or data.cache_dir" in text and err.value.exit_code == 2


def test_a_cache_path_that_is_a_file_is_one_paragraph_naming_it(tmp_path: Path) -> None:
    """USAGG_CACHE naming a file: the probe's error named a temporary file inside it the user never made."""
    (tmp_path / "cachefile").write_text("x")
    for root in (tmp_path / "cachefile", tmp_path / "cachefile" / "below"):
        with pytest.raises(UsaggError) as err:
            cachedir.check_writable(root)
        assert str(err.value).startswith(f"the cache folder {root} cannot be made: {tmp_path / 'cachefile'} is a file")
        assert "Point USAGG_CACHE or data.cache_dir" in str(err.value) and err.value.exit_code == 2


def test_a_run_on_a_read_only_cache_stops_before_any_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    study = write_tiny_study(tmp_path / "study.yaml", "tiny", tmp_path, output_root=tmp_path / "runs")
    (tmp_path / "cache").mkdir()  # a shared cache, on a read-only mount
    _refused(monkeypatch, tmp_path / "cache")
    code, out = run_cli(["run", str(study)], monkeypatch, capsys)
    text = " ".join(out.split())
    assert code == 2 and f"error: the cache folder {tmp_path / 'cache'} is not writable" in text, text
    assert "Traceback" not in text and not (tmp_path / "runs").exists()


def test_prune_deletes_only_entries_unused_for_longer(filled: dict[str, Path]) -> None:
    root = filled["root"]
    _age([filled["old"], filled["synth"] / cachedir.SYNTH_MARKER, *(root / "analysis" / "stats").iterdir()], 40)
    would, _ = cachedir.prune(root, 30 * DAY, dry_run=True)
    assert sorted(e.kind for e in would) == ["analysis", "decode", "synth"] and filled["old"].exists()
    done, busy = cachedir.prune(root, 30 * DAY)
    assert len(done) == 3 and not busy
    assert not filled["old"].exists() and not filled["old"].with_name(filled["old"].stem + ".hw.npy").exists()
    assert not filled["synth"].exists() and not list((root / "analysis" / "stats").iterdir())
    assert filled["new"].exists() and (root / "notes.txt").read_text() == "mine"
    assert [e.kind for e in cachedir.entries(root)] == ["decode"]


def test_use_refreshes_last_use(filled: dict[str, Path]) -> None:
    _age([filled["old"]], 40)
    decode_cache.load([filled["imgs"], filled["imgs"].with_name("im1.png")], 8, filled["root"])  # the old entry again
    assert time.time() - filled["old"].stat().st_mtime < 60
    assert cachedir.prune(filled["root"], 30 * DAY, ("decode",))[0] == []


def test_a_locked_entry_is_skipped(filled: dict[str, Path]) -> None:
    _age([filled["old"]], 40)
    with FileLock(str(filled["old"].with_suffix(".lock"))):
        done, busy = cachedir.prune(filled["root"], 30 * DAY, ("decode",))
    assert done == [] and [e.paths[0].name.split(".")[0] for e in busy] == [filled["old"].stem]
    assert filled["old"].exists()


def test_a_pruned_entry_is_rebuilt_identically(filled: dict[str, Path]) -> None:
    files = [filled["imgs"], filled["imgs"].with_name("im1.png")]
    before = np.array(decode_cache.load(files, 8, filled["root"]).arrays)
    cachedir.prune(filled["root"], 0, ("decode",))
    assert np.array_equal(np.array(decode_cache.load(files, 8, filled["root"]).arrays), before)


def test_cli_info_and_prune(filled: dict[str, Path]) -> None:
    root = str(filled["root"])
    res = CliRunner().invoke(app, ["cache", "info", "--cache-dir", root])
    assert res.exit_code == 0, res.output
    assert all(k in res.output for k in ("decode", "synth", "analysis", "total"))
    _age([filled["old"]], 40)
    res = CliRunner().invoke(app, ["cache", "prune", "--cache-dir", root, "--kind", "decode", "--dry-run"])
    assert res.exit_code == 0 and "would delete 1 entry" in res.output and filled["old"].exists()
    res = CliRunner().invoke(app, ["cache", "prune", "--cache-dir", root, "--older-than", "0", "--kind", "synth"])
    assert res.exit_code == 0 and "deleted 1 entry" in res.output and not filled["synth"].exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kind", "images"], "--kind 'images' is not one of decode, synth, analysis"),
        (["--older-than", "-1"], "expected a number of days >= 0"),
    ],
)
def test_cli_prune_refuses_bad_options(filled: dict[str, Path], args: list[str], message: str) -> None:
    cmd = [sys.executable, "-m", "usagg", "cache", "prune", "--cache-dir", str(filled["root"]), *args]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
    assert len(cachedir.entries(filled["root"])) == 4


def test_prune_never_deletes_what_usagg_did_not_name(tmp_path: Path) -> None:
    """A cache folder pointed at a project: files under decode/, synth/, analysis/, trunk/, filehash/, compile/ that
    usagg would never name (no hex key, no torch-<version>) are neither listed nor deleted, and no lock is left."""
    root = tmp_path / "proj"
    mine = [
        root / "analysis" / "figures" / "fig1.pdf",
        root / "analysis" / "stats" / "table.json",
        root / "synth" / "mydata" / "a.png",
        root / "trunk" / "design.md",
        root / "decode" / "notes.npy",
        root / "filehash" / "weights.json",
        root / "datacheck" / "mine.sqlite",
        root / "compile" / "scripts" / "x.py",
    ]
    for p in mine:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("mine")
    _age([*mine, *(p.parent for p in mine)], 400)
    assert cachedir.entries(root) == []
    done, busy = cachedir.prune(root, 0)
    assert done == [] and busy == []
    assert all(p.read_text() == "mine" for p in mine)
    assert not list(root.rglob("*.lock"))
