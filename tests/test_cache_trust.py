"""A cache others could write is never trusted with code or deletions (security audit, findings 1 and 2).

Compiled code (usagg/engine/accel.py `compile_cache`): inductor unpickles what its cache folder holds, so usagg hands
it only a folder no one else can write, holding only the user's files, sealed with the user's key; a copied or
foreign-sealed folder is emptied, one holding another user's files is left alone for a private folder of the
process's. Pruning (usagg/cachedir.py `prune`): a kind folder, an entry or its lock that is a link is skipped and
reported, and deletion opens no link, so a cache linked to a repository's objects deletes nothing there.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from usagg import cachedir, cachetrust
from usagg.cachedir import COMPILE_MARKER
from usagg.cachetrust import KEY_NAME
from usagg.cli.app import app
from usagg.engine import accel
from usagg.engine.accel import INDUCTOR_CACHE_ENV, compile_cache, use_compile_cache

OTHER_UID = 54321  # no user of this machine: a file "of someone else" (chown needs root)
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
OLD = time.time() - 400 * 86400


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """usagg's key in the test's own config folder, and this process's fallback folder made afresh under tmp_path."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setattr(accel, "_private_top", None)
    monkeypatch.setattr(accel, "_warned", set())
    monkeypatch.setenv(INDUCTOR_CACHE_ENV, "")  # recorded, so what usagg sets there is undone after the test
    monkeypatch.delenv(INDUCTOR_CACHE_ENV)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "usagg.engine.accel" and r.levelno >= logging.WARNING]


def _is_private(folder: Path, tmp_path: Path) -> bool:
    """`folder` is this process's fallback: under the temporary folder, 0700, the user's."""
    st = folder.stat()
    return tmp_path / "tmp" in folder.parents and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.geteuid()


class _Payload:
    """What an attacker plants: unpickling it runs a command."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.sentinel}",))


def _plant(folder: Path, sentinel: Path) -> Path:
    """A pickle in an FX graph key folder, as inductor reads them (the auditor's repro shape)."""
    key = folder / "fxgraph" / "6i" / "f6inett467fbmmwqhs4filvekqruw2c2blhewgogdjbqizhyluk2"
    key.mkdir(parents=True, exist_ok=True)
    (key / "000planted").write_bytes(pickle.dumps(_Payload(sentinel)))
    return key / "000planted"


# Compiled code: the happy path


def test_a_second_use_finds_the_same_sealed_folder_and_keeps_its_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "cache"
    folder = compile_cache(root)
    assert folder == root.resolve() / "compile" / folder.name and stat.S_IMODE(folder.stat().st_mode) == 0o700
    marker = json.loads((folder / COMPILE_MARKER).read_text())
    assert marker["torch"] == torch.__version__ and len(marker["seal"]) == 64
    (folder / "fxgraph" / "ab").mkdir(parents=True)
    (folder / "fxgraph" / "ab" / "entry").write_bytes(b"compiled")
    os.utime(folder / COMPILE_MARKER, (OLD, OLD))
    with caplog.at_level(logging.WARNING):
        assert compile_cache(root) == folder
    assert (folder / "fxgraph" / "ab" / "entry").read_bytes() == b"compiled" and not _warnings(caplog)
    assert time.time() - (folder / COMPILE_MARKER).stat().st_mtime < 60  # last use, for `usagg cache prune`


def test_the_key_is_made_once_private_and_outside_the_cache(tmp_path: Path) -> None:
    compile_cache(tmp_path / "cache")
    key = tmp_path / "config" / "usagg" / KEY_NAME
    first = key.read_bytes()
    assert len(first) == 32 and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    compile_cache(tmp_path / "other")
    assert key.read_bytes() == first == cachetrust.cache_key()
    assert not list(key.parent.glob(".*.tmp"))


def test_a_user_umask_of_002_keeps_the_cache(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Inductor writes with the process's umask: g+w files inside the private folder are out of others' reach."""
    folder = compile_cache(tmp_path / "cache")
    (folder / "fxgraph").mkdir(mode=0o775)
    (folder / "fxgraph" / "entry").write_bytes(b"compiled")
    os.chmod(folder / "fxgraph", 0o775)
    os.chmod(folder / "fxgraph" / "entry", 0o664)
    with caplog.at_level(logging.WARNING):
        assert compile_cache(tmp_path / "cache") == folder
    assert (folder / "fxgraph" / "entry").exists() and not _warnings(caplog)


# Compiled code: folders usagg did not seal are emptied


@pytest.mark.parametrize("how", ["copied to another cache", "sealed with another user's key", "made by old usagg"])
def test_a_folder_usagg_did_not_seal_is_emptied_before_inductor_sees_it(
    tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sentinel = tmp_path / "PWNED"
    theirs = compile_cache(tmp_path / "theirs")
    _plant(theirs, sentinel)
    root = tmp_path / "cache"
    if how == "copied to another cache":
        shutil.copytree(tmp_path / "theirs", root)
    elif how == "sealed with another user's key":
        root = tmp_path / "theirs"
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "my-config"))
    else:
        shutil.copytree(tmp_path / "theirs", root)
        (root / "compile" / theirs.name / COMPILE_MARKER).write_text(json.dumps({"torch": torch.__version__}))
    with caplog.at_level(logging.WARNING):
        folder = use_compile_cache(root)
    assert folder == root.resolve() / "compile" / theirs.name and os.environ[INDUCTOR_CACHE_ENV] == str(folder)
    assert [p.name for p in folder.iterdir()] == [COMPILE_MARKER] and not sentinel.exists()
    (line,) = _warnings(caplog)
    assert str(folder) in line and "no seal of yours" in line and "compiled afresh" in line
    caplog.clear()
    assert compile_cache(root) == folder and not _warnings(caplog)  # sealed now: kept


def test_a_folder_others_could_reach_into_is_emptied(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = compile_cache(tmp_path / "cache")
    (folder / "stale").write_bytes(b"code of unknown origin")
    os.chmod(folder, 0o775)
    with caplog.at_level(logging.WARNING):
        assert compile_cache(tmp_path / "cache") == folder
    assert not (folder / "stale").exists() and stat.S_IMODE(folder.stat().st_mode) == 0o700
    (line,) = _warnings(caplog)
    assert "others could reach into it (mode 0775" in line


def test_the_compile_subfolder_is_narrowed_to_0700(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`<cache>/compile` is usagg's alone: wider permissions of the user's own are narrowed, not a refusal."""
    folder = compile_cache(tmp_path / "cache")
    os.chmod(folder.parent, 0o777)
    with caplog.at_level(logging.WARNING):
        assert compile_cache(tmp_path / "cache") == folder
    assert stat.S_IMODE(folder.parent.stat().st_mode) == 0o700 and not _warnings(caplog)


# Compiled code: what usagg cannot vouch for is left alone, and a private folder used instead


def test_a_cache_root_others_can_write_is_not_used(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "cache"
    mine = compile_cache(root)
    (mine / "entry").write_bytes(b"compiled")
    os.chmod(root, 0o777)
    with caplog.at_level(logging.WARNING):
        folder = compile_cache(root)
        assert compile_cache(root) == folder  # a second job of the process: the same folder, no second line
    assert folder != mine and _is_private(folder, tmp_path) and (mine / "entry").exists()
    assert json.loads((folder / COMPILE_MARKER).read_text())["torch"] == torch.__version__
    (line,) = _warnings(caplog)
    assert f"{root.resolve()} is writable by others (mode 0777)" in line and str(folder.parent.parent) in line
    assert f"chmod go-w {root.resolve()}" in line and "USAGG_CACHE" in line


@as_root
def test_a_cache_root_writable_by_another_group_is_not_used(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "cache"
    root.mkdir()
    os.chown(root, -1, OTHER_UID)  # a group that is not the user's own private one
    os.chmod(root, 0o770)
    with caplog.at_level(logging.WARNING):
        assert _is_private(compile_cache(root), tmp_path)
    assert "is writable by others (mode 0770)" in _warnings(caplog)[0]


def test_a_cache_root_of_the_users_private_group_is_used(tmp_path: Path) -> None:
    """umask 002 under user private groups (Debian, Ubuntu, RHEL): g+w for a group of the user alone is fine."""
    root = tmp_path / "cache"
    root.mkdir(mode=0o775)
    os.chmod(root, 0o775)
    if not cachetrust._own_private_group(root.stat().st_gid):
        pytest.skip("this user has no private group")
    assert compile_cache(root).parent.parent == root.resolve()


@as_root
def test_a_file_of_another_user_is_left_alone_and_not_used(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "cache"
    sentinel = tmp_path / "PWNED"
    mine = compile_cache(root)
    planted = _plant(mine, sentinel)
    os.chown(planted, OTHER_UID, OTHER_UID)
    with caplog.at_level(logging.WARNING):
        folder = use_compile_cache(root)
    assert folder is not None and _is_private(folder, tmp_path) and os.environ[INDUCTOR_CACHE_ENV] == str(folder)
    assert planted.exists()  # not usagg's to delete
    (line,) = _warnings(caplog)
    assert f"{planted} belongs to uid {OTHER_UID}" in line and f"remove {mine}" in line and "USAGG_CACHE" in line


@as_root
def test_a_compile_folder_of_another_user_is_not_used(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "cache"
    theirs = root / "compile" / f"torch-{torch.__version__.replace('+', '_')}"
    theirs.mkdir(parents=True)
    os.chown(theirs, OTHER_UID, OTHER_UID)
    with caplog.at_level(logging.WARNING):
        assert _is_private(compile_cache(root), tmp_path)
    assert theirs.is_dir() and f"belongs to uid {OTHER_UID}" in _warnings(caplog)[0]


@pytest.mark.parametrize("where", ["compile folder", "inside"])
def test_a_link_is_not_followed(tmp_path: Path, where: str, caplog: pytest.LogCaptureFixture) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "file").write_text("theirs")
    root = tmp_path / "cache"
    if where == "compile folder":
        root.mkdir()
        (root / "compile").symlink_to(elsewhere)
    else:
        (compile_cache(root) / "fxgraph").symlink_to(elsewhere)
    with caplog.at_level(logging.WARNING):
        assert _is_private(compile_cache(root), tmp_path)
    assert [p.name for p in elsewhere.iterdir()] == ["file"]
    assert f"is a symbolic link (to {elsewhere})" in _warnings(caplog)[0]


def test_a_key_others_can_read_is_not_used(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    compile_cache(tmp_path / "cache")
    key = tmp_path / "config" / "usagg" / KEY_NAME
    os.chmod(key, 0o644)
    with caplog.at_level(logging.WARNING):
        assert _is_private(compile_cache(tmp_path / "cache"), tmp_path)
    (line,) = _warnings(caplog)
    assert f"usagg's key {key} can be read by others (mode 0644)" in line and f"remove {key}" in line


def test_no_traceback_when_the_lock_is_a_link(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = compile_cache(tmp_path / "cache")
    (tmp_path / "target").write_text("theirs")
    Path(f"{folder}.lock").unlink()
    Path(f"{folder}.lock").symlink_to(tmp_path / "target")
    with caplog.at_level(logging.WARNING):
        assert _is_private(compile_cache(tmp_path / "cache"), tmp_path)
    assert (tmp_path / "target").read_text() == "theirs" and "cannot be used" in _warnings(caplog)[0]


def test_the_private_folder_is_not_taken_for_the_users_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(INDUCTOR_CACHE_ENV, raising=False)
    bad = tmp_path / "bad"
    bad.mkdir(mode=0o777)
    os.chmod(bad, 0o777)
    private = use_compile_cache(bad)
    assert private is not None and _is_private(private, tmp_path)
    good = use_compile_cache(tmp_path / "good")  # a later job of the process, its cache sound
    assert good == (tmp_path / "good").resolve() / "compile" / private.name
    assert os.environ[INDUCTOR_CACHE_ENV] == str(good)


@pytest.mark.slow  # three processes that import torch and compile: 30 to 80 s on 2 cores
@pytest.mark.skipif(shutil.which("c++") is None, reason="inductor compiles C++ on the CPU")
def test_the_auditors_repro_no_longer_fires(tmp_path: Path) -> None:
    """The audit's finding 1 end to end on the CPU: inductor's FX graph cache unpickles a planted file when pointed at
    a received cache directly, and finds none when usagg chose the folder."""
    script = textwrap.dedent(
        """
        import os, sys
        from pathlib import Path
        if sys.argv[1] != "direct":
            from usagg.engine.accel import use_compile_cache
            use_compile_cache(Path(sys.argv[2]))
        import torch
        print(torch.compile(lambda x: torch.sin(x) * 2 + 1)(torch.ones(8)).sum().item())
        """
    )
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "TORCHINDUCTOR_CACHE_DIR": ""}
    env.pop("TORCHINDUCTOR_CACHE_DIR")

    def compiled(how: str, root: Path, **extra: str) -> None:
        res = subprocess.run([sys.executable, "-c", script, how, str(root)], env={**env, **extra}, capture_output=True)
        assert res.returncode == 0 or how == "direct", res.stderr.decode()[-2000:]  # the payload is no graph

    compiled("usagg", tmp_path / "theirs")  # fills theirs/compile/torch-<v>/fxgraph/<xx>/<key>/
    keys = [d for d in (tmp_path / "theirs").rglob("fxgraph/*/*") if d.is_dir()]
    assert keys
    for name in ("direct", "usagg"):
        root = tmp_path / name
        shutil.copytree(tmp_path / "theirs", root)  # a received cache, a pickle planted in each key
        for key in (root / k.relative_to(tmp_path / "theirs") for k in keys):
            (key / "000planted").write_bytes(pickle.dumps(_Payload(tmp_path / f"PWNED-{name}")))
    folder = tmp_path / "direct" / keys[0].parents[2].relative_to(tmp_path / "theirs")  # compile/torch-<v>
    compiled("direct", tmp_path / "direct", TORCHINDUCTOR_CACHE_DIR=str(folder))
    assert (tmp_path / "PWNED-direct").exists()  # the harness works: inductor ran the planted pickle
    compiled("usagg", tmp_path / "usagg")
    assert not (tmp_path / "PWNED-usagg").exists()


# Pruning: nothing listed, locked or deleted through a link


def _victim(folder: Path, names: list[str]) -> dict[Path, bytes]:
    """Files outside the cache with names usagg gives its entries, a year old."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in names:
        p = folder / name
        if name.startswith("torch-") or ("." not in name and len(name) == 16):
            p.mkdir()
            (p / cachedir.SYNTH_MARKER).write_text("x")
            (p / COMPILE_MARKER).write_text("x")
            p = p / cachedir.SYNTH_MARKER
        else:
            p.write_bytes(name.encode())
        out[p] = p.read_bytes()
        os.utime(p, (OLD, OLD))
    return out


def _intact(files: dict[Path, bytes]) -> bool:
    return all(p.read_bytes() == data for p, data in files.items())


def test_prune_deletes_nothing_through_a_linked_kind_folder(tmp_path: Path) -> None:
    """The audit's repro: `cache/decode -> repo/.git/objects/0c` lost an object; analysis/stats and filehash links
    lost a user's hex-named files. Every kind folder a link: nothing outside is deleted, no lock is made there."""
    objects = tmp_path / "repo" / ".git" / "objects" / "0c"
    files = _victim(objects, ["1065cccfad5092a7c0f1a474e366e2c1d54ce7", "0123456789abcdef.npy"])
    victim = tmp_path / "victim"
    names = ["0123456789abcdef0123.bak", "cafebabecafebabe.json", "fedcba9876543210", "abcdefabcdefabcd.sqlite"]
    files |= _victim(victim, [*names, "torch-2.0.0"])
    root = tmp_path / "cache"
    root.mkdir()
    for kind in cachedir.KINDS:
        (root / kind).symlink_to(objects if kind in ("decode", "trunk") else victim)
    skipped: list[Path] = []
    done, busy = cachedir.prune(root, 0, skipped=skipped)
    assert done == [] and busy == [] and _intact(files)
    assert not list(objects.glob("*.lock")) and not list(victim.glob("*.lock")) and not list(victim.glob(".*.lock"))
    assert sorted(p.name for p in skipped) == sorted(cachedir.KINDS)


def test_prune_skips_linked_entries_and_locks(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    files = _victim(victim, ["aaaaaaaaaaaaaaaa.npy", "bbbbbbbbbbbbbbbb", "cccccccccccccccc.json", "torch-1.0.0"])
    root = tmp_path / "cache"
    for sub in ("decode", "synth", "filehash", "compile", "analysis/figures"):
        (root / sub).mkdir(parents=True)
    links = {
        root / "decode" / "aaaaaaaaaaaaaaaa.npy": "aaaaaaaaaaaaaaaa.npy",  # an entry that is a link
        root / "decode" / "dddddddddddddddd.lock": "x",  # a real entry whose lock is a link
        root / "synth" / "bbbbbbbbbbbbbbbb": "bbbbbbbbbbbbbbbb",
        root / "synth" / ".eeeeeeeeeeeeeeee.lock": "x",
        root / "filehash" / "cccccccccccccccc.json": "cccccccccccccccc.json",
        root / "compile" / "torch-1.0.0": "torch-1.0.0",
        root / "analysis" / "stats": ".",
        root / "analysis" / "figures" / "ffffffffffffffff": "bbbbbbbbbbbbbbbb",
    }
    for link, target in links.items():
        link.symlink_to(victim / target)
    real = [root / "decode" / "dddddddddddddddd.npy", root / "synth" / "eeeeeeeeeeeeeeee" / cachedir.SYNTH_MARKER]
    for p in real:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
        os.utime(p, (OLD, OLD))
    skipped: list[Path] = []
    assert cachedir.entries(root, skipped=skipped) == []
    assert sorted(skipped) == sorted(links)
    assert cachedir.prune(root, 0) == ([], [])
    assert _intact(files) and all(p.exists() for p in real) and all(p.is_symlink() for p in links)


def test_a_folder_swapped_for_a_link_after_listing_is_not_deleted_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "cache"
    (root / "decode").mkdir(parents=True)
    (root / "decode" / "0123456789abcdef.npy").write_text("x")
    listed = cachedir.entries(root)
    files = _victim(tmp_path / "victim", ["0123456789abcdef.npy"])
    (root / "decode").rename(tmp_path / "moved")
    (root / "decode").symlink_to(tmp_path / "victim")
    monkeypatch.setattr(cachedir, "entries", lambda *a, **k: listed)  # listed before the swap
    skipped: list[Path] = []
    assert cachedir.prune(root, 0, skipped=skipped) == ([], [])
    assert _intact(files) and skipped == [root / "decode" / "0123456789abcdef.npy"]


def test_remove_deletes_a_link_not_its_target(tmp_path: Path) -> None:
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "file").write_text("theirs")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    cachedir.remove(tmp_path / "link")
    assert not (tmp_path / "link").is_symlink() and (tmp_path / "target" / "file").read_text() == "theirs"


def test_cli_info_and_prune_say_once_what_they_skipped(tmp_path: Path) -> None:
    files = _victim(tmp_path / "objects", ["1065cccfad5092a7c0f1a474e366e2c1d54ce7"])
    root = tmp_path / "cache"
    root.mkdir()
    (root / "decode").symlink_to(tmp_path / "objects")
    for cmd in (["info"], ["prune", "--older-than", "0"]):
        res = CliRunner().invoke(app, ["cache", *cmd, "--cache-dir", str(root)])
        assert res.exit_code == 0, res.output
        text = " ".join(res.output.split())
        assert text.count("skipped 1 symbolic link") == 1 and "decode" in text and "deletes nothing through" in text
    assert _intact(files) and "deleted 0 entries" in res.output
