"""`usagg repair`: set aside a run store's damaged files and rebuild what they held (`RunStore.repair`).

`usagg status` and the analysis only read the store and name what is damaged; this command
(and the start of every `usagg run`) is the one that writes the repairs.
"""

from __future__ import annotations

from pathlib import Path

import typer

from usagg.safepath import printable
from usagg.wording import counted

REPAIR_HELP = """Set aside a run store's damaged files and rebuild what they held; print each repair.

A damaged job.json is rebuilt from the plan (done when its metrics.json is intact, else pending);
a damaged or edited metrics.json or item_scores.json is set aside as <name>.damaged and its job
goes back to pending (the next `usagg run` evaluates it again); a damaged history.csv is written
again from metrics.json; a lock file holding garbage is broken; a results.csv that is no results
table is set aside and rebuilt from the done jobs. Jobs a live process runs are left alone. Exits 1
when damage is left that only a run can mend (a damaged plan.json). `usagg run` does the same first,
so this is for a store you want to read (compare, report) before running again.

Examples:

  usagg repair runs/demo

  usagg repair                 (the most recently modified study under runs/)
"""


def repair(
    run_dir: Path | None = typer.Argument(
        None, metavar="RUN_DIR", help="A run store (runs/<study>); default: the latest under runs/."
    ),
) -> None:
    from rich.markup import escape

    from usagg.analysis.inputs import check_registered
    from usagg.cli.display import line_console
    from usagg.store import RunStore

    store = RunStore.latest("runs") if run_dir is None else RunStore(run_dir)
    store.require()
    check_registered(store)  # a plug-in not loaded: named, where its plan read as damaged and its fix failed
    made = store.repair()
    console = line_console(highlight=False)
    for note in store.repairs:
        shown = escape(printable(note))
        console.print(f"[bold yellow]repaired:[/] {shown}" if note in made else shown)
    root = escape(printable(str(store.root)))  # the user's path: `mk[/]x` is no markup error, `runs[v2]` no tag
    if store.unrepaired:  # damage this command cannot mend: a script must not read the store as sound
        console.print(
            f"{root}: {counted(len(made), 'repair')}, {counted(len(store.unrepaired), 'problem')} left "
            "(above; `usagg run` with the study's spec mends them)"
        )
        raise typer.Exit(1)
    console.print(f"{root}: {counted(len(made), 'repair')}" if made else f"{root}: nothing damaged")


def register(app: typer.Typer) -> None:
    """Add `repair`."""
    app.command("repair", help=REPAIR_HELP)(repair)
