"""`usagg synth`: write the synthetic ultrasound benchmark (FMC_UIA layout) and/or a preview contact sheet.

numpy, scipy and matplotlib load inside the command, so `usagg --help` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from usagg.errors import UsaggError


def _parse_sizes(items: list[str], known: list[str]) -> dict[str, int]:
    """`--size TASK=N` items as task -> N; a task the benchmark does not have is named before N is checked."""
    from usagg.names import suggest

    sizes: dict[str, int] = {}
    for item in items:
        task, sep, value = item.partition("=")
        if not sep or not task or not value.strip().isdigit():
            raise UsaggError(f"--size expects TASK=N with N a whole number (e.g. --size fetal_head=300), got {item!r}.")
        if task.strip() not in known:
            raise UsaggError(
                f"--size {item}: the synthetic benchmark has no task {task.strip()!r}{suggest(task.strip(), known)}; "
                f"its tasks: {', '.join(known)}."
            )
        sizes[task.strip()] = int(value)
    return sizes


def synth(
    out: Annotated[
        Path | None,
        typer.Argument(
            metavar="OUT",
            help="Output folder: new, empty, or an earlier synth output (one of other settings only with --force).",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Generator seed: same seed, same bytes.")] = 0,
    image_size: Annotated[int, typer.Option("--image-size", help="Side of the square images, px.")] = 128,
    size: Annotated[
        list[str] | None, typer.Option("--size", help="Training images of one task, TASK=N; repeatable.")
    ] = None,
    default_size: Annotated[int, typer.Option("--default-size", help="Training images of other tasks.")] = 120,
    val_size: Annotated[int, typer.Option("--val-size", help="Images per task in val/.")] = 40,
    task: Annotated[
        list[str] | None, typer.Option("--task", help="Generate only this task; repeatable (default: all nine).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", min=1, help="Processes rendering images (default: the cores, for big runs)."),
    ] = None,
    preview: Annotated[
        Path | None,
        typer.Option("--preview", help="Also draw a contact sheet PNG (from OUT's files, or in memory without OUT)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an earlier synth output in OUT made with other settings.")
    ] = False,
) -> None:
    """Generate the synthetic ultrasound benchmark: 9 tasks in 4 groups (Fetal, Thyroid, Breast, Cardiac).

    B-mode images (sector or linear probe, speckle, depth attenuation with TGC,
    log compression, acoustic shadows) with exact labels, written as
    OUT/train and OUT/val in the FMC_UIA layout. Deterministic by seed; each
    task's images depend only on its own settings.

    OUT's train/ and val/ are written anew: an earlier output of the same settings
    again (the same bytes); one of other settings (other tasks, sizes, seed) is
    refused, naming what it holds, unless --force is given; an interrupted run's
    unfinished output is written anew. Files of yours beside them are kept, and a
    train/ or val/ that usagg did not write is refused, --force or not. Without
    OUT only --preview is drawn, in memory.

    Example: usagg synth data/synth --size fetal_head=400 --preview synth.png

    Example: usagg synth data/synth --task fetal_head --force   (replaces it)
    """
    from pydantic import ValidationError
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from usagg.cli.display import in_notebook, line_console, print_table
    from usagg.data.synth.manifest import replacing, resolve_tasks, settings, split_size
    from usagg.data.synth.tasks import ALL_TASKS
    from usagg.safepath import printable
    from usagg.spec.models import SynthSpec

    if out is None and preview is None:
        raise UsaggError("nothing to do: give an output folder OUT, or --preview FILE.png (or both).")
    try:
        spec = SynthSpec(
            seed=seed,
            image_size=image_size,
            sizes=_parse_sizes(size or [], list(ALL_TASKS)),
            default_size=default_size,
            val_size=val_size,
        )
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise UsaggError(f"invalid synth settings: {problems}.") from None
    ids = resolve_tasks(spec, task)
    console = line_console(highlight=False)
    if out is not None:
        from usagg.data.source import refuse_foreign_splits
        from usagg.data.synth import generate_benchmark

        replaced = replacing(out, settings(spec, ids), force)  # refused here, before the progress bar
        refuse_foreign_splits(out, spec)  # train/ and val/ go whole: only when usagg wrote them

        total = sum(split_size(spec, t, s) for t in ids for s in ("train", "val"))
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True, disable=in_notebook()) as bar:  # no redraws in a cell
            job = bar.add_task("synth", total=total)
            written: dict[tuple[str, str], int] = {}

            def tick(tid: str, split: str, done: int, n: int) -> None:
                written[tid, split] = done
                bar.update(job, completed=sum(written.values()), description=f"{split}/{tid}")

            try:
                generate_benchmark(out, spec, ids, progress=tick, workers=workers, force=force)
            except KeyboardInterrupt:  # its synth.json says incomplete: nothing reads it as a finished benchmark
                console.print(
                    f"[yellow]interrupted[/]: {escape(str(out))} is incomplete; the same command generates it again"
                )
                raise typer.Exit(130) from None
        table = Table(title=f"synthetic benchmark in {out}")
        for col in ("task", "type", "group", "train", "val"):
            table.add_column(col, justify="right" if col in ("train", "val") else "left", no_wrap=col == "task")
        for tid in ids:
            t = ALL_TASKS[tid]
            table.add_row(tid, t.type, t.group, str(split_size(spec, tid, "train")), str(spec.val_size))
        print_table(console, table)
        if replaced is not None:
            console.print(f"{escape(printable(str(out)))}: {escape(replaced)}")
        console.print(f"[green]ok[/]: {total} images, seed {spec.seed}, {spec.image_size} px")
    if preview is not None:
        from usagg.data.synth.preview import render_preview

        render_preview(preview, spec, root=out, tasks=ids)
        console.print(f"preview: {preview}")


def register(app: typer.Typer) -> None:
    """Add `usagg synth` to the app."""
    app.command("synth")(synth)
