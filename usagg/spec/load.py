"""Study YAML in, validated `Study` out: catalogs, `--set` overrides, paths, readable errors.

This is the only place that parses a study's YAML. Every problem becomes a
`SpecError` naming the file, the field path (`tasks[3].type`), the bad value
and what is allowed, so the CLI can print it without a traceback.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from usagg import __version__
from usagg.errors import SpecError
from usagg.names import PLAIN_NAME_RULE, suggest
from usagg.registry import load_plugins
from usagg.spec.models import CatalogRef, Study, TaskSpec
from usagg.spec.typewalk import container
from usagg.sweep import Point, point_label, point_trees, split_values
from usagg.wording import counted

__all__ = [
    "dump_study",
    "format_validation_error",
    "load_study",
    "packaged_catalogs",
    "packaged_task_ids",
    "point_studies",
    "read_yaml",
    "study_from_mapping",
    "sweep_override",
]


# --------------------------------------------------------------------------- walking the model types


def child_annotation(ann: Any, key: Any) -> Any:
    """The annotation one step down (a model field, a list item or a dict value)."""
    kind, sub = container(ann)
    if kind == "model":
        return sub.model_fields[key].annotation
    return sub


def fmt_path(parts: Sequence[Any]) -> str:
    """('tasks', 3, 'type') -> 'tasks[3].type'."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


#: Limits checked while a YAML document is composed, before any value is built: a study spec is a few kB and
#: a few hundred values (the packaged 27-task catalog: 3.5 kB, about 400); these leave room for any real one
#: and refuse a hostile or runaway file in well under a second.
MAX_YAML_BYTES = 256_000
MAX_YAML_NODES = 10_000  # values as written, counted while composing
MAX_YAML_EXPANDED = 200_000  # values once aliases are expanded (an alias bomb expands to billions)
MAX_YAML_DEPTH = 64
#: Integers are counts, seeds and sizes: their length is checked before int() runs (Python refuses more than
#: 4,300 digits with a traceback); each field's range, and 2**63 for all (usagg/spec/models/base.py), come after.
MAX_INT_CHARS = 40

#: YAML 1.2 floats that PyYAML (YAML 1.1) reads as strings: `1e-4`, `3E5` (no dot). Read as numbers, so a
#: quoted "3" can stay a string that a number field refuses.
_FLOAT_12 = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load with limits: duplicate keys, too many values, too deep or too large integers are refused
    while composing, so a bad file never costs more than a fraction of a second."""

    source: str | Path = "<string>"
    _nodes = 0
    _depth = 0
    _path: tuple = ()  # keys and positions down to the value being composed, for messages

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        """Count values and depth as they are composed (the composer recurses: refuse before Python would)."""
        self._nodes += 1
        if self._nodes > MAX_YAML_NODES:
            raise SpecError(
                f"{self.source}: more than {MAX_YAML_NODES:,} values (at line {self._line()}); a study spec holds a "
                "few hundred. Refusing it before reading further: is this the right file?"
            )
        if self._depth >= MAX_YAML_DEPTH:
            raise SpecError(
                f"{self.source}: the YAML is nested more than {MAX_YAML_DEPTH} levels deep (at line "
                f"{self._line()}); a spec needs about 6."
            )
        outer = self._path
        if isinstance(index, yaml.ScalarNode):  # a mapping value: index is its key
            self._path = (*outer, index.value)
        elif isinstance(index, int):
            self._path = (*outer, index)
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
            if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:int":
                self._check_int(node)
            return node
        finally:
            self._depth -= 1
            self._path = outer

    def _line(self) -> int:
        return self.peek_event().start_mark.line + 1

    def _check_int(self, node: yaml.ScalarNode) -> None:
        """An integer of at most MAX_INT_CHARS characters, checked before int() is called."""
        if len(str(node.value)) > MAX_INT_CHARS:
            where = f"{self.source}: {fmt_path(self._path) or 'the value'} (line {node.start_mark.line + 1})"
            raise SpecError(
                f"{where}: got an integer of {len(str(node.value)):,} characters; integers in a spec are below "
                "2**63 (19 digits)."
            )


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    """A mapping whose own keys are unique; merge keys (`<<: *defaults`) merged as YAML has them, the mapping's own
    keys overriding the merged ones (SafeLoader's `flatten_mapping`, inside `construct_mapping`)."""
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, str | int | float | bool) and key is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"a key must be a plain name, got a {type(key).__name__}", key_node.start_mark
            )
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (a later value would silently win)", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789"))
#: YAML 1.2 booleans: only true and false (as true, True, TRUE). PyYAML's YAML 1.1 also reads yes/no/on/off (y/n
#: are strings already) as booleans, so the documented `model.trunk: off` and `data.leakage: off` became False; a
#: bool field still takes those words as strings (pydantic's lax bool).
_BOOL_TAG = "tag:yaml.org,2002:bool"
_UniqueKeyLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
    for first, resolvers in _UniqueKeyLoader.yaml_implicit_resolvers.items()
}
_UniqueKeyLoader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def _check_node_tree(root: yaml.Node, source: str | Path) -> None:
    """Refuse a composed YAML tree whose alias-expanded size or depth exceeds the limits (before building it)."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in size:
            continue
        kids: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            kids = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            kids = [n for pair in node.value for n in pair]
        if not children_done:
            if key in open_:
                raise SpecError(f"{source}: the YAML refers to itself through an alias; a spec must be a plain tree.")
            open_.add(key)
            stack.append((node, True))
            stack.extend((k, False) for k in kids if id(k) not in size)
            continue
        open_.discard(key)
        size[key] = 1 + sum(size[id(k)] for k in kids)
        depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
        if size[key] > MAX_YAML_EXPANDED:
            raise SpecError(
                f"{source}: the YAML expands to more than {MAX_YAML_EXPANDED:,} values once its aliases (*name) are "
                "expanded; a study spec is a few hundred. Refusing it before building it (an alias bomb?)."
            )
        if depth[key] > MAX_YAML_DEPTH:
            raise SpecError(f"{source}: the YAML is nested more than {MAX_YAML_DEPTH} levels deep; a spec needs 6.")


def parse_yaml_text(text: str, source: str | Path) -> Any:
    """Compose within the limits, check the alias-expanded size, then build (files and `--set` values alike).

    Duplicate keys, alias bombs, deep nesting, huge integers and oversized text are SpecErrors naming `source`.
    """
    if len(text) > MAX_YAML_BYTES:
        raise SpecError(f"{source}: {len(text):,} characters of YAML, over {MAX_YAML_BYTES:,}; a spec is a few kB.")
    loader = _UniqueKeyLoader(text)
    loader.source = source
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_node_tree(node, source)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_yaml(path: Path, what: str = "study spec") -> dict[str, Any]:
    """Read a YAML file whose top level must be a mapping; every failure is a SpecError naming the file.

    The path must be a regular file, checked with os.stat before opening: opening a FIFO blocks until a
    writer comes, and a device never ends.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise SpecError(f"{what} {path} does not exist (looked in {Path(path).absolute().parent}).") from None
    except OSError as err:
        raise SpecError(f"cannot read {what} {path}: {err.strerror or err}.") from None
    if not stat.S_ISREG(info.st_mode):
        kind = _file_kind(info.st_mode)
        raise SpecError(f"{what} {path} is {kind}, not a regular file; give the path of a .yaml file.")
    if info.st_size > MAX_YAML_BYTES:
        raise SpecError(f"{path} is {info.st_size:,} bytes, larger than {MAX_YAML_BYTES:,}; a {what} is a few kB.")
    try:
        with Path(path).open("rb") as fh:
            blob = fh.read(MAX_YAML_BYTES + 1)
    except OSError as err:
        raise SpecError(f"cannot read {what} {path}: {err.strerror or err}.") from None
    if len(blob) > MAX_YAML_BYTES:
        raise SpecError(f"{path} is larger than {MAX_YAML_BYTES:,} bytes; a {what} is a few kB of YAML.")
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SpecError(f"cannot read {what} {path}: not UTF-8 text ({err.reason} at byte {err.start}).") from None
    try:
        data = parse_yaml_text(text, Path(path))
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: {_yaml_problem(err)}. Fix the YAML and try again.") from None
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise SpecError(f"{path}: the top level of a {what} must be a mapping of settings (key: value), got {kind}.")
    return data


def _file_kind(mode: int) -> str:
    """What a path is, in words ("a file", "a folder", "a named pipe (FIFO)"), for a message saying what is there."""
    for test, name in (
        (stat.S_ISREG, "a file"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return name
    return "not a file"


def _yaml_problem(err: yaml.YAMLError) -> str:
    """`YAML syntax error at line L, column C: problem` from a PyYAML error."""
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"YAML syntax error{where}: {getattr(err, 'problem', None) or err}"


# --------------------------------------------------------------------------- validation errors


def _short(value: Any, limit: int = 60) -> str:
    """A value for an error message, bounded while it is built (never the full repr of a huge value)."""
    import reprlib

    shortener = reprlib.Repr()  # attributes, not keywords: Python 3.11 takes none
    shortener.maxlevel, shortener.maxstring, shortener.maxother = 3, limit, limit
    shortener.maxdict = shortener.maxlist = shortener.maxtuple = shortener.maxset = 4
    text = shortener.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: What each spec pattern means, said instead of the regular expression.
PATTERN_MEANING = {
    r"^[A-Za-z0-9][A-Za-z0-9_.-]*$": f"expected a name: {PLAIN_NAME_RULE}",
    r"^[A-Za-z0-9_.+@%:,-]+$": "expected a Slurm name: letters, digits and _ . + @ % : , - (no spaces, quotes, "
    "newlines or shell characters)",
    r"^[A-Za-z0-9_.+@%:,=/ |&\[\]*!()-]*$": "expected an sbatch value: letters, digits, spaces, _ . + @ % : , = / - "
    "and Slurm's | & [ ] * ! ( ) (no quotes, newlines, #, $, ; or other shell characters)",
}


def format_validation_error(
    err: ValidationError,
    model: type[BaseModel],
    file: Path | str,
    notes: dict[tuple, str] | None = None,
    what: str = "study spec",
    prefix: tuple = (),
) -> str:
    """One line per problem: field path, bad value, what is allowed, and a did-you-mean for unknown keys.

    `notes` maps a path prefix (a tuple of loc items, tags removed) to a remark such
    as "(set by --set ...)" or "(task 'x' from catalog ...)".
    """
    by_path: dict[str, list[str]] = {}
    noted: dict[str, list[str]] = {}  # path -> its notes, said once after every alternative
    order: list[str] = []
    for e in err.errors(include_url=False):
        parts, parent = _clean_loc(e["loc"], model, e["type"] == "extra_forbidden")
        parts = [*prefix, *parts]
        path = fmt_path(parts)  # empty: a whole-study check, whose message names its fields
        msg = str(e["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if e["type"] == "extra_forbidden":
            key = str(parts[-1])
            allowed = list(parent.model_fields) if parent is not None else []
            msg = f"unknown key {key!r}{suggest(key, allowed)}; allowed here: {', '.join(allowed)}"
        else:
            if e["type"] == "missing":
                msg = "required, but not given"
            if e["type"] == "string_pattern_mismatch":
                msg = (
                    "got "
                    + _short(e["input"])
                    + "; "
                    + PATTERN_MEANING.get(
                        str(e.get("ctx", {}).get("pattern", "")), "it does not have the expected form"
                    )
                )
            if e["type"] == "literal_error" and isinstance(e["input"], str):
                choices = re.findall(r"'([^']*)'", str(e.get("ctx", {}).get("expected", "")))
                msg += suggest(e["input"], choices)
            shown = _short(e["input"])
            plain = not isinstance(e["input"], (dict, list, BaseModel))
            if (
                e["type"] not in ("missing", "value_error")
                and plain
                and not (isinstance(e["input"], str) and shown in msg)
            ):
                msg = f"got {shown}; {msg[0].lower()}{msg[1:]}"
        if path not in by_path:
            by_path[path], noted[path] = [], []
            order.append(path)
        for start, note in (notes or {}).items():
            if tuple(parts[: len(start)]) == start and note not in noted[path]:
                noted[path].append(note)
        if msg not in by_path[path]:  # union branches: one line, alternatives joined by "or"
            by_path[path].append(msg if not by_path[path] else re.sub(r"^got .*?; ", "", msg))
    lines = [f"  - {p + ': ' if p else ''}{' '.join([', or '.join(by_path[p]), *noted[p]])}" for p in order]
    n = len(order)
    head = f"{file}: invalid {what} ({counted(n, 'problem')}):"
    return "\n".join([head, *lines])


def _clean_loc(loc: tuple, model: type[BaseModel], extra: bool) -> tuple[list, type[BaseModel] | None]:
    """Drop pydantic's union-branch tags from an error location; also return the model holding the last key."""
    ann: Any = model
    parts: list = []
    parent: type[BaseModel] | None = None
    for i, item in enumerate(loc):
        kind, sub = container(ann)
        last = i == len(loc) - 1
        if kind == "model":
            if item in sub.model_fields:
                parts.append(item)
                ann = sub.model_fields[item].annotation
            elif last and extra:
                parts.append(item)
                parent = sub
            continue  # otherwise a union-branch tag
        is_item = kind == "list" and isinstance(item, int)
        is_key = kind == "dict" and not (isinstance(item, str) and "[" in item)
        if is_item or is_key:
            parts.append(item)
            ann = sub
        elif isinstance(item, int):
            parts.append(item)
    return parts, parent


# --------------------------------------------------------------------------- overrides

_KEY = re.compile(r"[^.\[\]=]+")


@dataclass(frozen=True)
class OverrideWording:
    """How an error names an override: `usagg`'s `--set` flag, or `usagg.api`'s `overrides` argument (a notebook's
    user never typed `--set`)."""

    flag: str = "--set"
    example: str = "--set training.epochs=5"


CLI_SET = OverrideWording()
API_SET = OverrideWording("overrides item", "overrides=['training.epochs=5']")


def parse_override(expr: str, w: OverrideWording = CLI_SET) -> tuple[list[tuple[str, str]], Any]:
    """`a.b[2].c=value` -> ([("key","a"), ("key","b"), ("item","2"), ("key","c")], parsed YAML value)."""
    path, sep, text = expr.partition("=")
    path = path.strip()
    if not sep or not path:
        raise SpecError(f"{w.flag} {expr!r}: expected KEY.PATH=VALUE, for example {w.example}.")
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(path):
        if path[pos] == "[" and tokens and "]" in path[pos:]:
            end = path.index("]", pos)
            tokens.append(("item", path[pos + 1 : end].strip()))
            pos = end + 1
            continue
        if tokens:
            if path[pos] != ".":
                break
            pos += 1
        m = _KEY.match(path, pos)
        if m is None:
            break
        tokens.append(("key", m.group().strip()))
        pos = m.end()
    if pos < len(path) or not tokens:
        raise SpecError(
            f"{w.flag} {expr!r}: cannot read the key path {path!r} at character {pos + 1}; "
            "use dotted keys and [index] or [task_id] for list items, e.g. tasks[2].type=segmentation."
        )
    try:
        value = parse_yaml_text(text, f"{w.flag} {_short(expr)}") if text.strip() else None
    except yaml.YAMLError as err:
        raise SpecError(f"{w.flag} {_short(expr)}: the value is not valid YAML ({_yaml_problem(err)}).") from None
    return tokens, value


def apply_override(raw: dict[str, Any], expr: str, file: Path, w: OverrideWording = CLI_SET) -> tuple:
    """Set one `--set` value in the raw spec, checking the key path against the Study models.

    Returns the canonical path (tuple of keys and indices) so validation errors can point back at it.
    """
    tokens, value = parse_override(expr, w)
    ann: Any = Study
    node: Any = raw
    canon: list = []
    for i, (_kind, name) in enumerate(tokens):
        kind, sub = container(ann)
        where = fmt_path(canon) or "the top level"
        if kind in ("model", "dict"):
            if not isinstance(node, dict):
                raise SpecError(
                    f"{w.flag} {expr}: {where} is {_short(node)} in {file}, not a mapping, so it has no key {name!r}."
                )
            if kind == "model" and name not in sub.model_fields:
                allowed = list(sub.model_fields)
                raise SpecError(
                    f"{w.flag} {expr}: {where} has no setting {name!r}{suggest(name, allowed)}; "
                    f"allowed there: {', '.join(allowed)}."
                )
            key: Any = name
        elif kind == "list":
            if not isinstance(node, list):
                raise SpecError(f"{w.flag} {expr}: {where} is {_short(node)} in {file}, not a list.")
            key = _list_index(node, name, expr, where, w)
        else:
            raise SpecError(f"{w.flag} {expr}: {where} is a single value, it has no part {name!r}.")
        canon.append(key)
        ann = child_annotation(ann, key)
        if i == len(tokens) - 1:
            node[key] = value
        else:
            nxt = node[key] if (kind == "list" or key in node) else None
            if nxt is None:
                nxt = {} if container(ann)[0] in ("model", "dict") else []
                node[key] = nxt
            node = nxt
    return tuple(canon)


def sweep_override(expr: str) -> str:
    """`--sweep KEY=V1,V2` as the `--set` that writes it into the sweep block: `sweep[KEY]=[V1, V2]`.

    Values are split on commas outside brackets and quotes (Hydra's grammar: `model.moe.blocks=[8,9],[10,11]`)
    and each is read as YAML with the limits of `--set`."""
    key, sep, text = expr.partition("=")
    key = key.strip()
    if not sep or not key or not text.strip():
        raise SpecError(f"--sweep {expr!r}: expected KEY=V1,V2,..., for example --sweep training.lr_encoder=1e-4,5e-4.")
    values = []
    for part in split_values(text):
        if not part.strip():
            raise SpecError(f"--sweep {expr!r}: an empty value between commas; give each value once.")
        try:
            values.append(parse_yaml_text(part, f"--sweep {key}"))
        except yaml.YAMLError:
            raise SpecError(f"--sweep {expr!r}: {part!r} is not a YAML value.") from None
    return f"sweep[{key}]=" + json.dumps(values)


def _list_index(items: list, name: str, expr: str, where: str, w: OverrideWording) -> int:
    """A list position given as an integer or, for task lists, as a task id."""
    if re.fullmatch(r"\d+", name):
        idx = int(name)
        if idx >= len(items):
            have = f"has {len(items)} items (0..{len(items) - 1})" if items else "is empty"
            raise SpecError(f"{w.flag} {expr}: {where} {have}, no index {idx}.")
        return idx
    ids = [it.get("id") for it in items if isinstance(it, dict)]
    for idx, it in enumerate(items):
        if isinstance(it, dict) and it.get("id") == name:
            return idx
    known = [str(i) for i in ids if i is not None]
    raise SpecError(
        f"{w.flag} {expr}: {where} has no item with id {name!r}{suggest(name, known)}; ids: {', '.join(known)}."
    )


# --------------------------------------------------------------------------- catalogs


class _Catalog(BaseModel):
    """A task catalog file: `tasks: [...]`, each entry a TaskSpec."""

    model_config = ConfigDict(extra="forbid")
    tasks: list[TaskSpec] = Field(min_length=1)


_PACKAGED_CATALOGS = Path(__file__).resolve().parents[1] / "catalogs"


def packaged_catalogs() -> list[str]:
    """Names of the catalogs shipped in the package (usagg/catalogs/*.yaml), usable as `catalog: NAME`."""
    return sorted(p.stem for p in _PACKAGED_CATALOGS.glob("*.yaml"))


@functools.cache
def packaged_task_ids() -> frozenset[str]:
    """Every task id of the packaged catalogs: a data task id outside them and the study is more likely a typo
    (usagg/data/taskids.py)."""
    ids: set[str] = set()
    for name in packaged_catalogs():
        tasks = read_yaml(_PACKAGED_CATALOGS / f"{name}.yaml", "task catalog").get("tasks") or []
        ids.update(str(t["id"]) for t in tasks if isinstance(t, dict) and "id" in t)
    return frozenset(ids)


def _catalog_file(ref: CatalogRef, written: Any, file: Path) -> Path:
    """Where a catalog reference points: a bare name (no '/', no .yaml) is a packaged catalog, else a path.

    Packaged catalogs make `tasks_from: {catalog: fmc_uia}` work after a plain `pip install`,
    from any folder; a path (relative to the study file's folder) names a catalog of your own.
    `written` is the value as the spec gives it, so `./fmc_uia` (a path) is not read as a name.
    """
    text = written if isinstance(written, str) else str(ref.catalog)
    if "/" not in text and os.sep not in text and ref.catalog.suffix not in (".yaml", ".yml"):
        names = packaged_catalogs()
        if text not in names:
            raise SpecError(
                f"{file}: tasks_from.catalog = {text!r}: no packaged catalog of that name{suggest(text, names)}; "
                f"packaged catalogs: {', '.join(names)}. A catalog of your own is a path to its .yaml file, "
                "relative to the study file's folder (e.g. catalogs/my_tasks.yaml)."
            )
        return _PACKAGED_CATALOGS / f"{text}.yaml"
    cat_path = ref.catalog.expanduser()
    if not cat_path.is_absolute():
        cat_path = _folder(file) / cat_path
    if not cat_path.is_file():
        raise SpecError(
            f"{file}: tasks_from.catalog = {text!r}: no such file {cat_path} "
            "(a relative catalog path is taken from the study file's folder; "
            f"a bare name, one of {', '.join(packaged_catalogs())}, is a packaged catalog)."
        )
    return cat_path


def resolve_catalog(raw: dict[str, Any], file: Path) -> dict[tuple, str]:
    """Replace `tasks_from` by the catalog's tasks merged with the explicit `tasks` (by id), in place.

    Returns notes for error messages: which resolved task came from the catalog.
    """
    ref_raw = raw.get("tasks_from")
    if ref_raw is None:
        raw.pop("tasks_from", None)
        return {}
    try:
        ref = CatalogRef.model_validate(ref_raw)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, CatalogRef, file, prefix=("tasks_from",))) from None
    cat_path = _catalog_file(ref, ref_raw.get("catalog") if isinstance(ref_raw, dict) else None, file)
    try:
        catalog = _Catalog.model_validate(read_yaml(cat_path, "task catalog"))
    except ValidationError as err:
        raise SpecError(format_validation_error(err, _Catalog, cat_path, what="task catalog")) from None
    ids = [t.id for t in catalog.tasks]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise SpecError(f"{cat_path}: invalid task catalog: duplicate task ids {dup}; each id may appear once.")
    for field in ("include", "exclude"):
        unknown = [n for n in getattr(ref, field) or [] if n not in ids]
        if unknown:
            raise SpecError(
                f"{file}: tasks_from.{field} names tasks not in the catalog {cat_path.name}: {unknown}"
                f"{suggest(unknown[0], ids)}; catalog tasks: {', '.join(ids)}."
            )
    keep = [
        t.model_dump(mode="json", exclude_unset=True)
        for t in catalog.tasks
        if (ref.include is None or t.id in ref.include) and t.id not in ref.exclude
    ]
    explicit = raw.get("tasks") or []
    if not isinstance(explicit, list):
        raise SpecError(f"{file}: tasks must be a list of tasks, got {_short(explicit)}.")
    position = {t["id"]: i for i, t in enumerate(keep)}
    origin = {i: f"(task {t['id']!r} from catalog {cat_path.name})" for i, t in enumerate(keep)}
    merged = list(keep)
    for j, entry in enumerate(explicit):
        tid = entry.get("id") if isinstance(entry, dict) else None
        if tid in position:
            merged[position[tid]] = {**merged[position[tid]], **entry}
            origin[position[tid]] = f"(task {tid!r}: catalog {cat_path.name} merged with {file.name} tasks[{j}])"
        else:
            origin[len(merged)] = f"({file.name} tasks[{j}])"
            merged.append(entry)
    raw["tasks"] = merged
    raw.pop("tasks_from")
    return {("tasks", i): note for i, note in origin.items()}


# --------------------------------------------------------------------------- load / dump


def _folder(file: Path) -> Path:
    return Path(os.path.abspath(file)).parent


def _absolute(p: Path | None, base: Path) -> Path | None:
    if p is None:
        return None
    p = p.expanduser()
    return p if p.is_absolute() else Path(os.path.normpath(base / p))


#: Spec fields holding a path (relative ones are from the spec's folder, or from the current one when `--set`).
PATH_FIELDS = (("data", "root"), ("data", "cache_dir"), ("data", "synthetic", "out"), ("model", "weights"))


def _paths_from_cwd(raw: dict[str, Any], canon: tuple) -> None:
    """Make the relative paths a `--set` just wrote absolute from the current folder, where the user typed them."""
    for path in PATH_FIELDS:
        if path[: len(canon)] != canon:
            continue
        node: Any = raw
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        value = node.get(path[-1]) if isinstance(node, dict) else None
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            node[path[-1]] = os.path.abspath(value)


def load_study(path: Path | str, overrides: Sequence[str] = (), wording: OverrideWording = CLI_SET) -> Study:
    """Load, resolve and validate a study spec; see docs/spec.md for the rules."""
    file = Path(path)
    return study_from_mapping(read_yaml(file), file, overrides, wording)


def study_from_mapping(
    raw: dict[str, Any], file: Path, overrides: Sequence[str] = (), wording: OverrideWording = CLI_SET
) -> Study:
    """A study from YAML content as `file` would hold it (relative paths, catalogs and errors are from `file`).

    `--set` overrides of `tasks_from.*` apply before the catalog is resolved and
    all others after, so `tasks[2]` / `tasks[fetal_head]` address the resolved task list.
    `raw` is not modified; `wording` names an override in errors as its caller gave it.
    """
    load_plugins()  # every registry complete before validation: a plug-in paradigm is as known as a plug-in type
    raw = copy.deepcopy(raw)
    early = [o for o in overrides if o.lstrip().startswith("tasks_from")]
    late = [o for o in overrides if o not in early]
    notes: dict[tuple, str] = {}
    set_by = f"(set by {wording.flag} "
    for expr in early:
        notes[apply_override(raw, expr, file, wording)] = f"{set_by}{expr})"
    notes.update(resolve_catalog(raw, file))
    for expr in late:
        canon = apply_override(raw, expr, file, wording)
        notes[canon] = f"{set_by}{expr})"
        _paths_from_cwd(raw, canon)
    _no_set_of_a_swept_key(raw, notes, file, wording)
    _groups_onto_tasks(raw)
    try:
        study = Study.model_validate(raw)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, Study, file, notes)) from None
    base = _folder(file)
    if study.data.root is not None:
        study.data.root = _absolute(study.data.root, base)
    study.data.cache_dir = _absolute(study.data.cache_dir, base)
    if study.data.synthetic is not None:
        study.data.synthetic.out = _absolute(study.data.synthetic.out, base)
    study.model.weights = _absolute(study.model.weights, base)
    _check_kind(
        study.model.weights, file, "model.weights", False,
        "not a checkpoint file; give the .pth file itself (e.g. dinov3_vitb16_pretrain_lvd1689m.pth inside that "
        "folder).",
    )  # fmt: skip
    _check_kind(
        study.data.cache_dir, file, "data.cache_dir", True,
        "not a folder; give a folder for the decode cache (created if missing), or leave data.cache_dir out to use "
        "$USAGG_CACHE or ~/.cache/usagg.",
    )  # fmt: skip
    if study.sweep:
        point_studies(study, file)  # every point a valid study, named by key and value
    return study


def _no_set_of_a_swept_key(raw: dict[str, Any], notes: dict[tuple, str], file: Path, w: OverrideWording) -> None:
    """A SpecError for a `--set` of a key the sweep also sets: every point would overwrite it, so the value given
    would be dropped without a word (`--set training.epochs=3 --sweep training.epochs=1,2`)."""
    sweep = raw.get("sweep")
    if not isinstance(sweep, dict):
        return
    for canon, note in notes.items():
        key = ".".join(map(str, canon))
        if canon and canon[0] != "sweep" and key in sweep and note.startswith(f"(set by {w.flag} "):
            raise SpecError(
                f"{file}: {w.flag} {note.removeprefix(f'(set by {w.flag} ').removesuffix(')')} sets {key}, which "
                f"the sweep sets at every point (sweep: {key}: {sweep[key]}), so the {w.flag} would be dropped: give "
                f"it one way, the {w.flag} or the sweep."
            )


def point_studies(study: Study, source: str | Path = "the study") -> list[tuple[Point, Study]]:
    """Every point of the study's sweep (usagg/sweep.py) with its Study (sweep block removed, values set,
    validated); without a sweep, the study itself as one point `{}`. A value the spec refuses is a SpecError
    naming key and value."""
    if not study.sweep:
        return [({}, study)]
    out = []
    for point, tree in point_trees(study):
        try:
            out.append((point, Study.model_validate(tree)))
        except ValidationError as err:
            problem = format_validation_error(err, Study, source)
            raise SpecError(f"sweep point {point_label(point)} is not a valid study: {problem}") from None
    return out


def _groups_onto_tasks(raw: dict[str, Any]) -> None:
    """Copy the `groups` mapping onto each task's `group` (the mapping wins), in place, before validating.

    Done here, on the resolved task list, so the Study's checks see the final groups whatever the
    order of catalog, `--set` and mapping; a task in two groups is left for validation to name.
    """
    groups, tasks = raw.get("groups"), raw.get("tasks")
    if not isinstance(groups, dict) or not isinstance(tasks, list):
        return
    by_id = {t.get("id"): t for t in tasks if isinstance(t, dict)}
    for group, tids in groups.items():
        for tid in tids if isinstance(tids, list) else []:
            if isinstance(tid, str) and tid in by_id:
                by_id[tid]["group"] = group


def _check_kind(path: Path | None, file: Path, field: str, folder: bool, expected: str) -> None:
    """`field` names a file (or, `folder`, a folder): something else already at `path` (a folder, a pipe, a device, a
    file) is refused now, not by every job. A path not there yet is fine: `usagg plan` works before the weights are
    downloaded, and the first job creates a cache folder."""
    if path is None:
        return
    try:
        info = os.stat(path)
    except OSError:
        return
    if not (stat.S_ISDIR(info.st_mode) if folder else stat.S_ISREG(info.st_mode)):
        raise SpecError(f"{file}: {field} = {path} is {_file_kind(info.st_mode)}, {expected}")


def dump_study(study: Study) -> str:
    """The resolved spec as YAML (the run store's study.yaml); load_study of it gives an equal Study."""
    data = study.model_dump(mode="json", exclude={"tasks_from"} if study.tasks_from is None else set())
    header = f"# Resolved study spec (usagg {__version__}): catalog applied, groups filled in, paths absolute.\n"
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120)
