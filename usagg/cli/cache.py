"""`usagg cache info` and `usagg cache prune`: what the cache holds and reclaiming its space."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from usagg.errors import UsaggError

_CACHE_DIR = typer.Option(
    None, "--cache-dir", help="Cache folder (default: $USAGG_CACHE, else ~/.cache/usagg; a study's data.cache_dir)."
)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # unreachable; keeps type checkers content


def _age(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} d"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{max(seconds, 0) / 60:.0f} min"


def _skipped_note(root: Path, skipped: list[Path]) -> str | None:
    """One paragraph on the links the listing left out (usagg/cachedir.py `entries`), None when there were none."""
    if not skipped:
        return None
    names = sorted({str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in skipped})
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (
        f"skipped {len(names)} symbolic link{'s' if len(names) > 1 else ''} in {root}: {shown}. A link in a cache may "
        "lead anywhere (a received or shared cache), so usagg lists, locks and deletes nothing through one; remove "
        "the link if it is not yours."
    )


def info(cache_dir: Path | None = _CACHE_DIR) -> None:
    """What the cache holds: entries, disk use (what deleting them frees) and last use per kind (decoded images,
    synthetic data, analysis, weights digests, data check findings, frozen-trunk outputs, compiled code).

    Example: usagg cache info --cache-dir /scratch/usagg-cache
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from usagg.cachedir import KINDS, cache_root, entries
    from usagg.cli.display import line_console, print_table

    root = cache_root(cache_dir)
    if root.exists() and not root.is_dir():
        raise UsaggError(f"cache folder {root} is a file, not a folder (give --cache-dir a folder, or $USAGG_CACHE)")
    now = time.time()
    table = Table(title=escape(f"cache {root}" + ("" if root.is_dir() else " (no such folder yet: empty)")))
    for col in ("kind", "entries", "disk use", "least recently used", "most recently used"):
        table.add_column(col, justify="left" if col == "kind" else "right", no_wrap=col == "kind")
    skipped: list[Path] = []
    found = entries(root, skipped=skipped) if root.is_dir() else []
    for kind in KINDS:
        es = [e for e in found if e.kind == kind]
        ages = [_age(now - e.last_used) + " ago" for e in (es[0], es[-1])] if es else ["-", "-"]
        table.add_row(kind, str(len(es)), _human(sum(e.size for e in es)), *ages)
    table.add_row("total", str(len(found)), _human(sum(e.size for e in found)), "", "", style="bold")
    print_table(Console(), table)
    # a line of its own, never folded: a table caption wrapped at the table's width in a log
    line_console().print("disk use: what deleting the entries frees (whole blocks, as `du` counts; not their bytes)")
    if note := _skipped_note(root, skipped):
        line_console().print(f"[yellow]{escape(note)}[/]")


def prune(
    older_than: float = typer.Option(
        30.0, "--older-than", help="Delete entries not used for this many days (0: every entry not in use)."
    ),
    kind: list[str] = typer.Option(
        [],
        "--kind",
        help="decode, synth, analysis, filehash, datacheck, trunk or compile; repeat for several (default: all).",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be deleted, delete nothing."),
    cache_dir: Path | None = _CACHE_DIR,
) -> None:
    """Delete cache entries unused for a while; each is rebuilt on its next use, so this only costs time.

    Entries a running job holds are skipped. Synthetic benchmarks are read while a job runs:
    with --older-than 0, prune when no study is running.

    Example: usagg cache prune --older-than 14 --kind decode --dry-run
    """
    from rich.markup import escape

    from usagg.cachedir import KINDS, cache_root
    from usagg.cachedir import prune as prune_entries
    from usagg.cli.display import line_console

    bad = [k for k in kind if k not in KINDS]
    if bad:
        raise UsaggError(f"--kind {bad[0]!r} is not one of {', '.join(KINDS)}")
    if older_than < 0:
        raise UsaggError(f"--older-than {older_than:g}: expected a number of days >= 0")
    root = cache_root(cache_dir)
    if not root.is_dir():
        raise UsaggError(f"cache folder {root} is not a folder (give --cache-dir, or set $USAGG_CACHE)")
    skipped: list[Path] = []
    done, busy = prune_entries(root, older_than * 86400, tuple(kind) or KINDS, dry_run=dry_run, skipped=skipped)
    console = line_console()
    verb = "would delete" if dry_run else "deleted"
    now = time.time()
    for e in done:
        console.print(f"{verb} {e.kind} {escape(e.name)} ({_human(e.size)}, unused for {_age(now - e.last_used)})")
    for e in busy:
        console.print(f"[yellow]skipped[/] {e.kind} {escape(e.name)}: in use")
    if note := _skipped_note(root, skipped):
        console.print(f"[yellow]{escape(note)}[/]")
    console.print(f"{verb} {len(done)} entr{'y' if len(done) == 1 else 'ies'}, {_human(sum(e.size for e in done))}")


def register(app: typer.Typer) -> None:
    """Add the `cache` sub-app."""
    sub = typer.Typer(
        name="cache",
        help="Inspect and prune the cache (decoded images, synthetic data, analysis).\n\n"
        "Example: usagg cache info && usagg cache prune --older-than 14 --dry-run",
    )
    sub.command("info")(info)
    sub.command("prune")(prune)
    app.add_typer(sub, name="cache", no_args_is_help=True)
