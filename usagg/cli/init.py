"""`usagg init`: write a starting study from one shipped in the package (usagg/studies/), ready to edit.

The written file is the packaged study as shipped (it names its catalog, `catalog: fmc_uia`, so it
validates from any folder once usagg is installed) but for two things: its `name:` is DIR's, so its
run store is not the shipped study's (`usagg run` refuses a store of the same name run from another
file), and the commands in its header comments name the file and run store just written. The repo's
studies/*.yaml are byte-identical copies of the packaged ones (tests/test_init.py checks), so there
is one source of truth: usagg/studies/.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from usagg.errors import UsaggError
from usagg.wording import shown_path

if TYPE_CHECKING:
    from usagg.spec.models import Study

HELP = """Write a starting study spec DIR/<name>.yaml from a study shipped with usagg, and print what to run next.

The study is named after DIR (its run store is runs/DIR), so it gets a run store of its own: a DIR name of other
characters than ASCII letters, digits, _ . - is made one (my study: my_study), and a name another study has (a run
store of that name, as runs/demo after make demo, or a spec in DIR or beside it) gets _2, _3, ...; init says so.

--from demo (default): the synthetic study, runs on a CPU in minutes with no data to download.
--from known: the known-answer study, effects planted in synthetic data and declared in its expect: (5 seeds).
--from known_conflict: its companion, a conflict on shared scans (negative transfer under CG, diluted under AU).
--from fmc_uia: the 27 FMC_UIA tasks on GPUs; its data.root is a placeholder you must edit.
An existing file is never overwritten unless --force is given.

Examples:

  usagg init my_study             (writes my_study/demo.yaml, study my_study)

  usagg init --from known check   (writes check/known.yaml)

  usagg init --from fmc_uia fmc   (writes fmc/fmc_uia.yaml; set data.root)
"""

#: The studies shipped in the package (package data, next to usagg/catalogs/).
PACKAGED_STUDIES = Path(__file__).resolve().parents[1] / "studies"


def packaged_studies() -> list[str]:
    """Names of the studies `usagg init --from` can write (usagg/studies/*.yaml)."""
    return sorted(p.stem for p in PACKAGED_STUDIES.glob("*.yaml"))


#: The longest study name (usagg/spec/models/base.py `Name`: a letter or digit, then letters, digits, `_ . -`).
NAME_MAX = 80


def study_name(folder: Path) -> str | None:
    """DIR's last component made a valid study name (`my study` -> `my_study`, accents dropped); None if nothing
    of it is left."""
    import unicodedata

    plain = unicodedata.normalize("NFKD", Path(os.path.abspath(folder)).name).encode("ascii", "ignore").decode()
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", plain)
    return re.sub(r"^[_.-]+|[_.-]+$", "", name[:NAME_MAX]) or None


def write_study(source: str, folder: Path, force: bool = False, name: str | None = None) -> Path:
    """Write the packaged study `source`, named `name` (default: its own), to folder/<source>.yaml; return that path.

    Refuses (UsaggError, nothing written) when the file exists and `force` is false, and when the folder's name
    holds a control character: the path is written into the study's header comments, where a newline would start
    a line of YAML, and into the commands printed next.
    """
    from usagg.safepath import check_text

    check_text(folder.as_posix(), "usagg init DIR")
    names = packaged_studies()
    if source not in names:
        from usagg.names import suggest

        raise UsaggError(
            f"--from {source!r}: no packaged study of that name{suggest(source, names)}; "
            f"packaged studies: {', '.join(names)}."
        )
    if folder.exists() and not folder.is_dir():
        raise UsaggError(f"{folder} is a file, not a folder: give a folder for the study (created if missing).")
    target = folder / f"{source}.yaml"
    if target.exists() and not force:
        raise UsaggError(
            f"{target} already exists; nothing was written. Edit it, pass --force to replace it with the "
            f"packaged study {source!r}, or choose another folder."
        )
    from usagg.atomic import write_text_atomic

    text = (PACKAGED_STUDIES / f"{source}.yaml").read_text(encoding="utf-8")
    written = _renamed(text, source, target, name or source)
    _same_study(text, written, target, name or source)
    write_text_atomic(target, written)
    return target


def _renamed(text: str, source: str, target: Path, name: str) -> str:
    """The shipped text with its `name:` and the run store and report folders its comments name made `name`'s, and
    the file its comments name made `target`: one pass, so a path put in is never rewritten again."""
    import yaml

    from usagg.spec.load import parse_yaml_text

    stem = re.escape(source)
    # `123`, `1e5` (YAML 1.2), `on` (a boolean to YAML 1.1 readers: an editor, yaml.safe_load): quoted
    line = f"name: {name}"
    plain = parse_yaml_text(line, "the study's name") == {"name": name} == yaml.safe_load(line)
    by = {"studies": shown_path(target), "name": f"name: {name if plain else json.dumps(name)}"}
    pattern = re.compile(rf"\b(studies)/{stem}\.yaml|^(name): {stem}$|\b(runs|reports)/{stem}\b")

    def renamed(part: str) -> str:
        return pattern.sub(lambda m: by.get(m.group(m.lastindex or 0), f"{m.group(m.lastindex or 0)}/{name}"), part)

    return _aligned(text.split("\n"), renamed)


#: A comment line of a command and its own comment (`#   usagg run studies/demo.yaml      # what it does`), where
#: consecutive such lines line their comments up in one column.
_COMMENTED = re.compile(r"^(#\s+\S.*?)(\s{2,})(#\s.*)$")


def _aligned(lines: list[str], renamed: Callable[[str], str]) -> str:
    """The lines, each `renamed`, joined: in each run of `_COMMENTED` lines, the command and its comment are
    renamed apart and the comments put in one column again, as far right of the longest command as they were in
    the shipped text (a longer path would push one comment out of line, a shorter one pull it in)."""
    from rich.cells import cell_len  # terminal cells: a folder name in wide characters still lines up

    out: list[str] = []
    i = 0
    while i < len(lines):
        block = []
        while i < len(lines) and (m := _COMMENTED.match(lines[i])):
            block.append(m)
            i += 1
        if not block:
            out.append(renamed(lines[i]))
            i += 1
            continue
        gap = min(len(m.group(2)) for m in block)  # the shipped space after the longest command
        parts = [(renamed(m.group(1)), renamed(m.group(3))) for m in block]
        column = max(cell_len(code) for code, _ in parts) + gap
        out += [f"{code}{' ' * (column - cell_len(code))}{comment}" for code, comment in parts]
    return "\n".join(out)


def _same_study(shipped: str, written: str, target: Path, name: str) -> None:
    """UsaggError unless `written` parses to the YAML of `shipped` named `name`: only comments and the name may
    change, so a folder name can never add, drop or break a key of the study (checked before anything is
    written)."""
    from usagg.spec.load import parse_yaml_text

    try:  # read as `usagg run` reads it (YAML 1.2 numbers: `1e5` is a float there, a string to PyYAML alone)
        same = parse_yaml_text(written, target) == {**parse_yaml_text(shipped, target), "name": name}
    except UsaggError:
        same = False
    if not same:
        raise UsaggError(
            f"{target}: the folder's name would change the study's YAML, not only its name and the comments naming "
            "the file; nothing was written. Choose a folder whose name is plain text."
        )


def init(
    folder: Path = typer.Argument(
        ..., metavar="DIR", help="Folder for the study (created if missing).", show_default=False
    ),
    source: str = typer.Option(
        "demo", "--from", help="Packaged study to start from: demo, known, known_conflict or fmc_uia."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing DIR/<name>.yaml."),
) -> None:
    from usagg.spec.load import load_study

    made = study_name(folder)
    wanted = made or f"my_{source}"
    name, taken = own_name(source, folder, wanted)
    target = write_study(source, folder, force, name)
    study = load_study(target)  # the packaged studies validate anywhere; this proves it for this copy
    spec = shown_path(target)
    store = shown_path(Path(study.output_root) / study.name)
    typer.echo(f"wrote {target}: the study {study.name!r} (from the packaged study {source!r})")
    note = _name_note(Path(os.path.abspath(folder)).name, made, wanted, taken)
    if note is not None:
        typer.echo(f"note: {note}, so the study is named {study.name!r}; edit `name:` in {spec} to choose another")
    _warn_if_run_would_refuse(study, target)
    root = study.data.root
    steps = [f"usagg validate {spec}"]
    if root is not None and not root.exists():
        typer.echo(
            f"edit first: data.root in {target} is a placeholder ({root}); set it to your copy of the data "
            "(the folder holding train/ and val/), or add --set data.root=/your/data to each command."
        )
    if root is not None:
        steps += [f"usagg data check {shlex.quote(str(root))}", f"usagg plan {spec}"]
    steps += [
        f"usagg run {spec}",
        f"usagg status {store}",
        f"usagg compare {store} --baseline {study.analysis.baseline}",
        f"usagg report {store}",
    ]
    typer.echo("next:\n" + "\n".join(f"  {s}" for s in steps))


#: How many spec files `own_name` reads at most in DIR and the folders beside it (a DIR in a crowded folder).
NEARBY_SPECS = 200
#: How many entries of one folder `own_name` lists at most.
NEARBY_ENTRIES = 2000


def own_name(source: str, folder: Path, wanted: str) -> tuple[str, str | None]:
    """The name for the packaged study `source` written to `folder`: `wanted`, else the first of wanted_2,
    wanted_3, ... that is free; and why `wanted` was not (None when it is free). A name is taken by a run store of
    it the new spec did not run into (where `usagg run` puts or finds it) and by another study spec in DIR or a
    folder beside it (`usagg init "my study"` beside my_study/): two studies of one name share a run store, and
    `usagg run` refuses the second, so the README's "its own run store" would not hold."""
    if source not in packaged_studies():  # `write_study` says so
        return wanted, None
    root = str(parse_packaged(source).get("output_root", "runs"))
    target = folder / f"{source}.yaml"
    nearby = _nearby_names(folder, target)
    why = _taken(target, root, wanted, nearby)
    if why is None:
        return wanted, None
    for n in itertools.count(2):
        name = f"{wanted[: NAME_MAX - len(str(n)) - 1]}_{n}"
        if _taken(target, root, name, nearby) is None:
            return name, why
    raise AssertionError("unreachable")  # pragma: no cover


def parse_packaged(source: str) -> dict[str, object]:
    """The packaged study `source` as YAML."""
    from usagg.spec.load import read_yaml

    return read_yaml(PACKAGED_STUDIES / f"{source}.yaml")


def _taken(target: Path, root: str, name: str, nearby: dict[str, Path]) -> str | None:
    """Why `name` is no name of its own for the study written to `target`, in words; None when it is free."""
    from usagg.cli.stores import store_of

    store = store_of(target, root, name)
    if store.exists and not store.bound:
        ran = "" if store.ran_from is None else f", run from {store.ran_from}"
        return f"the run store {store.path} holds a study of that name{ran}"
    return None if name not in nearby else f"{nearby[name]} names a study so"


def _nearby_names(folder: Path, target: Path) -> dict[str, Path]:
    """The study names of the spec files in `folder` and the folders beside it (not `target`), each with the
    first spec naming it, as the user wrote `folder`. A YAML file is a study spec here where it has a string
    `name` and a `data` mapping (a conda environment.yml has a name, no data)."""
    from usagg.cli.stores import shown_like
    from usagg.spec.load import read_yaml

    absolute = Path(os.path.abspath(folder))
    folders = [absolute, *sorted(p for p in _entries(absolute.parent) if p.is_dir() and p != absolute)]
    files = [f for d in folders for f in sorted(_entries(d)) if f.suffix in (".yaml", ".yml")]
    names: dict[str, Path] = {}
    for file in files[:NEARBY_SPECS]:
        if file == Path(os.path.abspath(target)):
            continue
        try:
            raw = read_yaml(file)
        except UsaggError:
            continue
        if isinstance(raw.get("name"), str) and isinstance(raw.get("data"), dict):
            names.setdefault(raw["name"], shown_like(folder, file))
    return names


def _entries(folder: Path) -> list[Path]:
    """The entries of `folder`, the first `NEARBY_ENTRIES` listed (a folder of images beside DIR holds no spec);
    none for a folder that is missing or cannot be read."""
    try:
        return list(itertools.islice(folder.iterdir(), NEARBY_ENTRIES))
    except OSError:
        return []


def _name_note(folder_name: str, made: str | None, wanted: str, taken: str | None) -> str | None:
    """Why the study is not named DIR, in words (the note then names the study): nothing or not all of DIR's name
    can name a study (`étude_é` is `etude_e`), or that name is taken (`own_name`); None where it is DIR's."""
    from usagg.names import PLAIN_NAME_RULE

    said = []
    if made is None:
        said.append(f"nothing of the folder's name {folder_name!r} can name a study ({PLAIN_NAME_RULE})")
    elif made != folder_name:
        said.append(f"the folder's name {folder_name!r} is no study name ({PLAIN_NAME_RULE})")
    if taken is not None:
        said.append(f"{wanted!r} is taken ({taken})")
    return " and ".join(said) or None


def _warn_if_run_would_refuse(study: Study, target: Path) -> None:
    """The run store the new study names may hold another study of that name (a DIR named `demo` after `make
    demo`): `usagg run` would refuse it, so say so now, as `usagg validate` does (nothing is written)."""
    from usagg.run.studyrun import StudyRun

    try:
        StudyRun.prepare(study, spec_file=target)
    except UsaggError as err:
        typer.echo(f"warning: `usagg run` would refuse this study now: {err}")


def register(app: typer.Typer) -> None:
    """Add `usagg init` to the app."""
    app.command("init", help=HELP)(init)
