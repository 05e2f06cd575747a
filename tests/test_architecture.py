"""The shape of the package: imports flow one way (layers, no circle), task-type knowledge in its modules, registries
instead of lists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "usagg"
TYPE_NAMES = ("segmentation", "classification", "detection", "regression")
#: Modules allowed to name two or more built-in task types: the synthetic benchmark's task table and
#: label synthesis (it draws a label of each kind from a scene), and the simulated results of the analysis bench.
#: (The spec models' descriptions name types, but none of their modules, one per part of the spec, names two.)
ALLOWED = {
    "usagg/data/synth/tasks.py",
    "usagg/data/synth/sample.py",
    "usagg/analysis/simulate.py",
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


#: Calls that import the module their first argument names (a "module" or "module:attr" string): an import by name
#: is an import all the same, and an upward one the statements alone did not show.
LOADERS = ("import_module", "lazy_factory")


def _runtime_imports(path: Path, module: str, known: set[str]) -> set[str]:
    """Modules of the package imported at run time anywhere in a file (functions included, TYPE_CHECKING not),
    by statement or by name (`LOADERS` called with a string literal)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            names = [base, *(f"{base}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] in LOADERS and node.args:
            first = node.args[0]
            is_name = isinstance(first, ast.Constant) and isinstance(first.value, str)
            names = [first.value.partition(":")[0]] if is_name else []  # type: ignore[union-attr]
        else:
            names = []
        found.update(n for n in names if n in known and n != module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _annotation_imports(path: Path, module: str, known: set[str]) -> set[str]:
    """Modules of the package a file imports under `if TYPE_CHECKING:` (annotations only)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                for n in ast.walk(child):
                    if isinstance(n, ast.ImportFrom) and n.module:
                        found.update(m for m in (n.module, *(f"{n.module}.{a.name}" for a in n.names)) if m in known)
                    elif isinstance(n, ast.Import):
                        found.update(a.name for a in n.names if a.name in known)
    return found - {module}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def _graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package's modules it imports at run time, less the documented imports by name (`BY_NAME`:
    loaded as a plug-in is, when called)."""
    return {m: {d for d in _runtime_imports(p, m, set(mods)) if (m, d) not in BY_NAME} for m, p in mods.items()}


def test_no_import_circle_in_the_package() -> None:
    mods = _modules()
    graph = _graph(mods)
    # a package importing its own submodules (its public face) is not a circle with them
    for m in graph:
        graph[m] = {d for d in graph[m] if not (m.startswith(d + ".") and mods[d].name == "__init__.py")}
    assert _cycles(graph) == []


def test_the_checker_sees_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


#: The layers of the package, lowest first (docs/internals.md, the paragraph "Imports flow one way." under the module
#: map): a module imports at run time (inside functions too; `if TYPE_CHECKING:` imports are annotations only) from
#: its own layer or a lower one, and a lower layer gets what it needs from above passed in. The store sits below the
#: engine, which writes through `RunStore` and `JobPaths`: the store knows the files, never the engine.
LAYERS = (
    "foundations",
    "spec",
    "plan",
    "data and model",
    "store",
    "engine",
    "execute",
    "analysis",
    "service",
    "api",
    "cli",
)

#: Module or package -> its layer; a module takes the entry of its own name, else of its nearest package below
#: `usagg` (the `usagg` entry is the package's own module only). A new module or package needs an entry here.
RANKS = {
    "usagg": "foundations",  # __version__
    "usagg.errors": "foundations",
    "usagg.names": "foundations",
    "usagg.wording": "foundations",
    "usagg.atomic": "foundations",
    "usagg.safepath": "foundations",
    "usagg.cachedir": "foundations",
    "usagg.cachetrust": "foundations",
    "usagg.filehash": "foundations",
    "usagg.signals": "foundations",
    "usagg.workerstart": "foundations",
    "usagg.origin": "foundations",
    "usagg.tensorbytes": "foundations",
    "usagg.torchzip": "foundations",
    "usagg.registry": "foundations",
    "usagg.joblock": "foundations",
    "usagg.results_schema": "foundations",  # store files' formats, shared by writers and readers
    "usagg.jobmetrics": "foundations",
    "usagg.historycsv": "foundations",
    "usagg.affinity": "foundations",
    "usagg.grouping": "foundations",
    "usagg.spec": "spec",
    "usagg.sweep": "spec",
    "usagg.paradigms": "spec",
    "usagg.tasktypes": "spec",
    "usagg.plan": "plan",
    "usagg.projection": "plan",
    "usagg.data": "data and model",
    "usagg.model": "data and model",
    "usagg.predictions": "data and model",
    "usagg.store": "store",
    "usagg.engine": "engine",
    "usagg.tracking": "engine",  # trainer callbacks
    "usagg.mlflowstore": "engine",  # the MLflow tracker's edits of a local store
    "usagg.execute": "execute",
    "usagg.analysis": "analysis",
    "usagg.run": "service",  # the run service (usagg/run/)
    "usagg.api": "api",
    "usagg.cli": "cli",
    "usagg.__main__": "cli",
}

#: The documented exceptions: modules placed in another layer than their package's, each with why.
PLACED = {
    "usagg.execute.registry": (
        "spec",
        "the registry of executor names the spec validates; it imports only usagg.registry (the built-in executors "
        "load by name: BY_NAME)",
    ),
    "usagg.model.zoo": (
        "spec",
        "the registry of backbones the spec validates (names, block counts); entries as data, no torch",
    ),
    **{
        f"usagg.tasktypes.{name}": (
            "data and model",
            "a built-in task type: from CSV label to head and mask (data readers, model.heads inside its methods); "
            "the registry (usagg.tasktypes, base) below the spec loads it by name",
        )
        for name in ("classification", "detection", "regression", "segmentation")
    },
    "usagg.jobmetrics_doc": ("cli", "an entry point (python -m) rendering docs/metrics.md with the spec reference"),
}


#: The documented imports by name against the flow, (importer, imported) -> why.
BY_NAME = {
    ("usagg.execute.registry", f"usagg.execute.{name}"): (
        "the registry names the built-in executors it registers (`lazy_factory`), loaded when a run builds one, "
        "as a plug-in's entry point is"
    )
    for name in ("local", "slurm")
}


def _layer(module: str) -> str | None:
    if module in PLACED:
        return PLACED[module][0]
    name = module
    while True:
        if name in RANKS:
            return RANKS[name]
        if name.count(".") < 2:  # `usagg.x` checked: `usagg` ranks only itself
            return None
        name = name.rpartition(".")[0]


def _upward(graph: dict[str, set[str]]) -> list[str]:
    """Every import from a lower layer into a higher one, as 'importer (layer) -> imported (layer)'."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    found = []
    for m in sorted(graph):
        for d in sorted(graph[m]):
            low, high = _layer(m), _layer(d)
            if low is not None and high is not None and rank[low] < rank[high]:
                found.append(f"{m} ({low}) -> {d} ({high})")
    return found


def test_every_module_has_a_layer() -> None:
    assert [m for m in _modules() if _layer(m) is None] == []
    assert set(RANKS.values()) | {layer for layer, _ in PLACED.values()} <= set(LAYERS)


def test_imports_flow_one_way() -> None:
    """No module imports from a layer above its own: the spec no analysis, the store no engine, the analysis no
    service (`planned_power` takes the store's root from its caller)."""
    assert _upward(_graph(_modules())) == []


def test_the_layer_checker_sees_an_import_against_the_flow(tmp_path: Path) -> None:
    """What the spec models (then one file) did before `scale_problem` moved to the task types: a local import."""
    source = "def check():\n    from usagg.analysis.scales import scale_problem\n    return scale_problem\n"
    (tmp_path / "models.py").write_text(source, encoding="utf-8")
    known = {"usagg.analysis.scales", "usagg.tasktypes"}
    graph = {"usagg.spec.models": _runtime_imports(tmp_path / "models.py", "usagg.spec.models", known)}
    assert _upward(graph) == ["usagg.spec.models (spec) -> usagg.analysis.scales (analysis)"]
    assert _upward({"usagg.store": {"usagg.engine.history"}, "usagg.engine.job": {"usagg.store"}}) == [
        "usagg.store (store) -> usagg.engine.history (engine)"
    ]


def test_the_layer_checker_sees_an_import_by_name(tmp_path: Path) -> None:
    """What usagg/execute/registry.py did before `make_executor` moved to usagg/execute/base.py: the registry, which
    ranks with the spec, fetched the Executor class by name to check what a factory built."""
    source = (
        "import importlib\n\ndef make(built):\n"
        "    executor_class = importlib.import_module('usagg.execute.base').Executor\n"
        "    return isinstance(built, executor_class)\n\n"
        "def run_it():\n    return lazy_factory('usagg.analysis.report:write_report')\n"
    )
    (tmp_path / "registry.py").write_text(source, encoding="utf-8")
    known = {"usagg.execute.base", "usagg.analysis.report", "usagg.execute.registry"}
    graph = {"usagg.execute.registry": _runtime_imports(tmp_path / "registry.py", "usagg.execute.registry", known)}
    assert _upward(graph) == [
        "usagg.execute.registry (spec) -> usagg.analysis.report (analysis)",
        "usagg.execute.registry (spec) -> usagg.execute.base (execute)",
    ]
    # the registry's own imports by name are seen, and documented (BY_NAME): kept out of the flow and circle checks
    mods = _modules()
    seen = _runtime_imports(mods["usagg.execute.registry"], "usagg.execute.registry", set(mods))
    assert {"usagg.execute.local", "usagg.execute.slurm"} <= seen
    assert not _graph(mods)["usagg.execute.registry"] & {"usagg.execute.local", "usagg.execute.slurm"}


#: The documented annotations naming a higher layer's type, (importer, imported) -> why: the object is passed in from
#: above. A lower module annotating a higher layer's type is otherwise doing that layer's work through duck typing.
ANNOTATES = {
    **{
        ("usagg.tasktypes.base", f"usagg.{name}"): (
            "the interface a task type implements names the data, model and prediction types its methods take and "
            "return; the built-in types rank with data and model (PLACED)"
        )
        for name in ("data.fmc_uia", "model.heads", "predictions")
    },
    ("usagg.execute.registry", "usagg.execute.base"): "a registered factory returns an Executor",
}


def test_annotations_name_a_higher_layer_only_where_documented() -> None:
    """A `TYPE_CHECKING` import from a higher layer is how usagg/affinity.py (foundations) read the run store's
    plan.json and job folders through a RunStore passed in: store logic kept below the store by duck typing (now
    `RunStore.study_affinity`). The documented cases are in `ANNOTATES`, and each is still there."""
    mods = _modules()
    graph = {m: _annotation_imports(p, m, set(mods)) for m, p in mods.items()}
    up = _upward({m: {d for d in ds if (m, d) not in ANNOTATES} for m, ds in graph.items()})
    assert up == []
    assert [k for k in ANNOTATES if k[1] not in graph.get(k[0], set())] == []


def test_the_annotation_checker_sees_a_lower_module_typed_on_the_store(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from usagg.store import RunStore\n\n"
        "def load_study_affinity(store: 'RunStore'):\n    return store.plan_json\n"
    )
    (tmp_path / "affinity.py").write_text(source, encoding="utf-8")
    known = {"usagg.store", "usagg.affinity"}
    graph = {"usagg.affinity": _annotation_imports(tmp_path / "affinity.py", "usagg.affinity", known)}
    assert _upward(graph) == ["usagg.affinity (foundations) -> usagg.store (store)"]


def test_task_type_knowledge_lives_in_the_task_type_modules() -> None:
    naming_two = set()
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if sum(bool(re.search(name, text)) for name in TYPE_NAMES) >= 2:
            naming_two.add(path.relative_to(PACKAGE.parent).as_posix())
    assert naming_two <= ALLOWED, sorted(naming_two - ALLOWED)
    assert len(naming_two) <= 4


def _registered_names() -> dict[str, set[str]]:
    from usagg.execute.registry import EXECUTORS
    from usagg.model.zoo import BACKBONES
    from usagg.paradigms import PARADIGMS
    from usagg.tasktypes import task_type_names

    return {
        "paradigm": set(PARADIGMS),
        "executor": set(EXECUTORS),
        "backbone": set(BACKBONES),
        "task type": set(task_type_names()),
    }


def _string_constants(node: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def test_no_closed_lists_of_registered_names() -> None:
    """No `Literal[...]` in the package lists a paradigm, executor, backbone or task type: the registries do."""
    names = _registered_names()
    closed = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Subscript) and ast.unparse(node.value).split(".")[-1] == "Literal":
                for kind, known in names.items():
                    hits = _string_constants(node.slice) & known
                    if hits:
                        closed.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {kind} {sorted(hits)}")
    assert closed == []


#: Modules that may compare with a paradigm's name: the registry itself and the analysis bench's simulated results.
PARADIGM_KNOWLEDGE = {"usagg/paradigms.py", "usagg/analysis/simulate.py"}


def test_only_the_paradigm_registry_branches_on_a_paradigm_name() -> None:
    """`"CG" in study.paradigms` outside usagg/paradigms.py is a check that belongs in the paradigm's `check=`."""
    builtin = {"TS", "CG", "AU", "AG", "TSM", "AUD", "probe"}
    branching = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).as_posix()
        if rel in PARADIGM_KNOWLEDGE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                hits = {s.value for s in sides if isinstance(s, ast.Constant) and s.value in builtin}
                if hits:
                    branching.append(f"{rel}:{node.lineno} {sorted(hits)}")
    assert branching == []


def test_the_registry_core_imports_nothing_it_registers() -> None:
    """usagg/registry.py is imported by every registry and the spec: it must not import them back (no circle, no
    torch); it reaches them through `REGISTRY_MODULES` names at plug-in loading time only."""
    mods = _modules()
    assert _runtime_imports(mods["usagg.registry"], "usagg.registry", set(mods)) == {"usagg.errors", "usagg.names"}
    for module in ("usagg.tasktypes", "usagg.paradigms", "usagg.execute.registry", "usagg.model.zoo"):
        imports = _runtime_imports(mods[module], module, set(mods))
        assert "usagg.registry" in imports and not any(m.startswith("usagg.spec") for m in imports), module


def _path_parts(tree: ast.AST) -> list[ast.Constant]:
    """String constants joined into a path: an operand of `/`, or an argument of `Path(...)` / `.joinpath(...)`."""
    found: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            found += [node.left, node.right]
        elif isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] in ("Path", "joinpath"):
            found += node.args
    return [n for n in found if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _store_names() -> set[str]:
    """Every file and folder name of the run store: what usagg/store/layout.py joins into its paths."""
    from usagg.store.layout import BEST_CHECKPOINT, LAST_CHECKPOINT, LOCK_NAME

    tree = ast.parse((PACKAGE / "store" / "layout.py").read_text(encoding="utf-8"))
    return {n.value for n in _path_parts(tree)} | {LOCK_NAME, LAST_CHECKPOINT, BEST_CHECKPOINT}


def _spelled_store_names(source: str, names: set[str]) -> list[str]:
    """Store names a module's code spells: a file name (`plan.json`) anywhere but in docstrings and the literal
    text of f-strings, a folder name (`jobs`) or a bare suffix (`.lock`, which caches use for their own locks)
    where it is joined into a path."""
    tree = ast.parse(source)
    skip = {
        id(part)
        for node in ast.walk(tree)
        for part in (
            node.values
            if isinstance(node, ast.JoinedStr)
            else node.body[:1]
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            else []
        )
    }
    skip |= {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and id(n) in skip}
    joined = {id(n) for n in _path_parts(tree)}
    return [
        f"{node.lineno} {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and node.value in names
        and id(node) not in skip
        and ("." in node.value[1:] or id(node) in joined)
    ]


def test_store_file_names_are_spelled_only_in_the_store() -> None:
    """usagg/store/layout.py is the one module that knows the run store's layout (`StoreLayout`, `JobPaths`): a
    module that builds `root / "jobs" / <id>` itself skips the store's job-id and confinement checks
    (usagg/safepath.py)."""
    names = _store_names()
    assert {"plan.json", "jobs", "affinity.json", "study.yaml", "metrics.json"} <= names
    spelled = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).as_posix()
        if rel != "usagg/store/layout.py":
            spelled += [f"{rel}:{hit}" for hit in _spelled_store_names(path.read_text(encoding="utf-8"), names)]
    assert spelled == []


def test_the_store_name_checker_sees_a_path_built_by_hand() -> None:
    """What usagg/affinity.py did before it read through the store; a progress label or a docstring is no path."""
    names = _store_names()
    by_hand = '''
"""Reads plan.json."""
def load(root, job_id, key):
    """From jobs/<id>/affinity.json."""
    plan = Path(root) / "plan.json"
    label = ("jobs", f"{key}.lock")
    return plan, Path("jobs", job_id, "affinity.json")
'''
    assert _spelled_store_names(by_hand, names) == ["5 'plan.json'", "7 'jobs'", "7 'affinity.json'"]
