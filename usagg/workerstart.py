"""A usagg worker process that cannot start: how it says why, and the paragraph its parent then says.

usagg's worker processes (the local pool's, the synthetic benchmark's renderers) are started with multiprocessing
'spawn', which imports the caller's main script again before the worker's own code runs. A script that calls
`usagg.api.run_study` at its top level, without `if __name__ == "__main__":`, calls it again in every worker there;
the worker refuses (`refuse_in_worker_bootstrap`) by exiting with `REFUSED_EXIT`, which the parent reads as this
cause: the jobs it meant for the worker stay pending, and the run ends naming the fix, instead of every job
recorded failed with a bare exit code.
"""

from __future__ import annotations

import multiprocessing

from usagg.errors import UsaggError

#: The exit code of a usagg worker that found run_study called while it imported the main script (EX_CONFIG).
REFUSED_EXIT = 78
#: The name of every usagg worker process starts so: the refusal of one of them is its parent's to say.
WORKER_PREFIX = "usagg-"

GUARD_FIX = (
    'call run_study under `if __name__ == "__main__":` (a worker process starts by importing your script again, '
    "multiprocessing's 'spawn', and so runs its top level)"
)


def refuse_in_worker_bootstrap() -> None:
    """Stop run_study when a spawned process is importing the caller's script (no `__main__` guard).

    There a run_study would wait forever for the lock its parent holds. A usagg worker exits with `REFUSED_EXIT`
    and no traceback (its parent says it once, `refused_text`); any other process (the user's own) gets a
    UsaggError. `_inheriting` is the flag multiprocessing itself checks to catch the same mistake.
    """
    process = multiprocessing.current_process()
    if not getattr(process, "_inheriting", False):
        return
    if process.name.startswith(WORKER_PREFIX):
        raise SystemExit(REFUSED_EXIT)
    raise UsaggError(f"run_study was called while a worker process was importing your script: {GUARD_FIX}")


def refused_text(who: str, exitcode: int | None) -> str:
    """Why `who` (a worker process, named as the reader knows it) exited with `exitcode` before it took any work."""
    if exitcode == REFUSED_EXIT:
        return f"{who} could not start: your script called run_study while the worker imported it; {GUARD_FIX}"
    return (
        f"{who} exited with code {exitcode} while starting, before it took any work (its error is above, on stderr; "
        "a worker starts by importing the main script again, multiprocessing's 'spawn', so a script's top level "
        "runs in it too)"
    )
