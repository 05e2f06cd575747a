"""Which cache folders usagg can vouch for, and the user's key that seals the ones it made.

Compiled code in the cache is executed as found (inductor unpickles it: usagg/engine/accel.py), so a folder another
user could write, or one copied from someone else, must never reach it. `not_yours` and `vetted_folder` check who
could have written a folder (owners, links, who may write the folders above); `cache_key` holds the user's secret
key, kept outside every cache, with which usagg/engine/accel.py seals the folders it made.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import stat
from pathlib import Path

KEY_NAME = "cache.key"  # the user's secret key, in `key_folder()`; never inside a cache


class Untrusted(Exception):
    """A folder or key usagg cannot vouch for: `why` names it and what is wrong, `fix` what the user can do."""

    def __init__(self, why: str, fix: str) -> None:
        super().__init__(why)
        self.why, self.fix = why, fix


@functools.cache
def _own_private_group(gid: int) -> bool:
    """Whether `gid` is the user's private group (named as the user, the user's primary group, no member listed but
    the user): the group Debian, Ubuntu and RHEL give each user, where a umask of 002 makes every folder g+w."""
    import grp
    import pwd

    try:
        user, group = pwd.getpwuid(os.geteuid()), grp.getgrgid(gid)
    except KeyError:
        return False
    return gid == user.pw_gid and group.gr_name == user.pw_name and set(group.gr_mem) <= {user.pw_name}


def lets_others_write(st: os.stat_result) -> bool:
    """Whether someone but the owner (and root) may change this file or folder's entries: writable by others, or by a
    group other than the user's private one. A sticky folder (/tmp) lets others add entries but not rename or
    delete ours, so it passes."""
    if stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX:
        return False
    return bool(st.st_mode & stat.S_IWOTH) or bool(st.st_mode & stat.S_IWGRP and not _own_private_group(st.st_gid))


def _not_own(path: str | Path, st: os.stat_result) -> str | None:
    """What makes `path` (its lstat) other than the user's own file or folder; None: it is."""
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symbolic link (to {os.readlink(path)})"
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        return f"{path} is neither a file nor a folder"
    if st.st_uid != os.geteuid():
        return f"{path} belongs to {_owner(st.st_uid)}, not to you ({_owner(os.geteuid())})"
    return None


def _owner(uid: int) -> str:
    import pwd

    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def not_yours(folder: Path) -> str | None:
    """The first thing in `folder` (itself included, no link followed) that is not the user's own file or folder:
    another owner, a link, a FIFO, a socket; None: all the user's. One lstat per entry (os.scandir): 60 ms for 5,500
    entries on a busy 2-core machine, against the tens of seconds a compile takes. What vanishes meanwhile (a
    writer's temporary file renamed into place) is passed over."""
    try:
        if why := _not_own(folder, folder.lstat()):
            return why
        stack = [str(folder)]
        while stack:
            for path, st in _listed(stack.pop()):
                if why := _not_own(path, st):
                    return why
                if stat.S_ISDIR(st.st_mode):
                    stack.append(path)
    except OSError as err:
        return f"{err.filename or folder} cannot be read ({err.strerror or type(err).__name__})"
    return None


def _listed(folder: str) -> list[tuple[str, os.stat_result]]:
    """Each entry of `folder` with its lstat, those gone meanwhile (or the folder itself) left out."""
    out = []
    with contextlib.suppress(FileNotFoundError), os.scandir(folder) as it:
        for e in it:
            with contextlib.suppress(FileNotFoundError):
                out.append((e.path, e.stat(follow_symlinks=False)))
    return out


def _check_folder(path: Path, st: os.stat_result, own: bool, fix: str) -> None:
    """Untrusted if someone else could replace what is in the folder `path`; `own`: it must be the user's, too."""
    if stat.S_ISLNK(st.st_mode):
        raise Untrusted(f"{path} is a symbolic link (to {os.readlink(path)})", fix)
    if not stat.S_ISDIR(st.st_mode):
        raise Untrusted(f"{path} is not a folder", fix)
    if own and st.st_uid != os.geteuid():
        raise Untrusted(f"{path} belongs to {_owner(st.st_uid)}, not to you ({_owner(os.geteuid())})", fix)
    if lets_others_write(st):
        mode = f"{stat.S_IMODE(st.st_mode):04o}"
        hint = f"run `chmod go-w {path}` if that folder is yours alone, or {fix}" if st.st_uid == os.geteuid() else fix
        raise Untrusted(f"{path} is writable by others (mode {mode})", hint)


def vetted_folder(folder: Path, owned_from: Path, fix: str) -> Path:
    """`folder`, below `owned_from` (itself, or a folder the user chose: resolved, links followed), made 0700 where
    missing, when no one but the user can replace it or anything above it: the folders from `owned_from` down are the
    user's and no link, and none above is writable by others unless sticky (/tmp). `folder` itself, usagg's alone, is
    narrowed to 0700 if it is the user's and wider. Raises Untrusted otherwise, with `fix`, what the user can do.

    Folders above `owned_from` (a lab's project folder, often owned by one member) are not required to be the
    user's: one writable by others would let them swap everything below it once usagg has checked it."""
    top = owned_from.resolve()
    below = folder.relative_to(owned_from).parts
    folder = top.joinpath(*below)
    owned = {top, *(top.joinpath(*below[: i + 1]) for i in range(len(below)))}
    try:
        top.mkdir(mode=0o700, parents=True, exist_ok=True)
        for path in sorted(owned - {top}):
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, 0o700)  # an existing link is not followed: refused below
        for path in (folder, *folder.parents):
            st = path.lstat()
            if path == folder and stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and st.st_mode & 0o077:
                os.chmod(path, 0o700)
                st = path.lstat()
            _check_folder(path, st, path in owned, fix)
    except OSError as err:
        raise Untrusted(f"{err.filename or folder} cannot be made or read ({err.strerror})", fix) from None
    return folder


def key_folder() -> Path:
    """Where the user's secret key lives: $XDG_CONFIG_HOME/usagg, else ~/.config/usagg; never inside a cache."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".config") / "usagg"


def cache_key() -> bytes:
    """The user's secret key (32 random bytes, 0600 in a 0700 folder, made on first use), with which usagg seals what
    it made in a cache (usagg/engine/accel.py): a folder copied from someone else, or made by another user, carries no
    seal this key verifies. Raises Untrusted when the key cannot be made or read safely."""
    try:
        folder = vetted_folder(key_folder(), key_folder(), "set XDG_CONFIG_HOME to a folder of your own")
    except RuntimeError as err:  # Path.home(): no home folder
        raise Untrusted(
            f"usagg has no folder for its key ({err})", "set XDG_CONFIG_HOME to a folder of your own"
        ) from None
    path = folder / KEY_NAME
    try:
        if not os.path.lexists(path):
            _new_key(path)
        return _read_key(path)
    except OSError as err:
        raise Untrusted(f"usagg's key {path} cannot be made or read ({err.strerror})", f"remove {path}") from None


def _new_key(path: Path) -> None:
    """Write a fresh key to `path` whole or not at all: a temporary file, then a hard link (the first process wins,
    the others read its key)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_key(path: Path) -> bytes:
    """The key at `path` when it is the user's regular file, readable by no one else, of 32 bytes; else Untrusted."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        key = f.read(33)
    fix = f"remove {path} (usagg makes a new key; what it sealed is rebuilt once)"
    if why := _not_own(path, st):
        raise Untrusted(f"usagg's key: {why}", fix)
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise Untrusted(f"usagg's key {path} can be read by others (mode {stat.S_IMODE(st.st_mode):04o})", fix)
    if len(key) != 32:
        raise Untrusted(f"usagg's key {path} is damaged ({len(key)} bytes, not 32)", fix)
    return key
