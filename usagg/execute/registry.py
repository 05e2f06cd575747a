"""The executor registry: names -> factories that build an `Executor` from the spec's `execution` section.

The spec validates `execution.executor` against `executor_names()`, and `usagg
run --executor NAME` takes any registered name, so adding an executor is one
decorated factory (docs/internals.md, "How to add an executor"). Importing this
module registers the built-in executors and imports nothing heavy: no torch, no
submitit, no store, no spec (the spec imports this module; `ExecutionSpec` is
only a type hint here). Factories import their backends when called.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from usagg.errors import UsaggError
from usagg.registry import Registry, plugin_hint

if TYPE_CHECKING:
    from usagg.execute.base import Executor
    from usagg.spec.models import ExecutionSpec

#: `factory(execution, store_root, **options) -> Executor`; options are executor-specific (e.g. Slurm's cluster).
ExecutorFactory = Callable[..., "Executor"]


@dataclass(frozen=True)
class ExecutorEntry:
    """A registered executor: its name, a one-line description and its factory."""

    name: str
    description: str
    factory: ExecutorFactory


#: name -> entry, in registration order; plug-ins through the `usagg.executors` entry points or USAGG_PLUGINS.
EXECUTORS: Registry[ExecutorEntry] = Registry(
    "executor",
    group="usagg.executors",
    error=UsaggError,
    hint=plugin_hint("How to add an executor"),
)


def register_executor(name: str, description: str) -> Callable[[ExecutorFactory], ExecutorFactory]:
    """Register a factory under an executor name (a decorator); a name may be registered once.

    The factory is called as `factory(execution, store_root, **options)` and
    returns an `Executor`; `options` are its own (Slurm's `cluster`, for one).
    """
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"an executor name is letters, digits, - and _, such as 'ray', got {name!r}")

    def deco(factory: ExecutorFactory) -> ExecutorFactory:
        entry = ExecutorEntry(name, description, factory)
        EXECUTORS.register(
            name, entry, same=lambda old, new: old.factory is new.factory, origin=getattr(factory, "__module__", None)
        )
        return factory

    return deco


def executor_names() -> list[str]:
    """Registered executors in registration order (local and slurm first), plug-ins included."""
    return EXECUTORS.names()


def get_executor_factory(name: str) -> ExecutorFactory:
    """The factory registered as `name`; UsaggError with a did-you-mean and the registered names otherwise.
    usagg/execute/base.py `make_executor` calls it and checks what it built, a step this module, below the
    executors, cannot take."""
    return EXECUTORS.lookup(name).factory


# --------------------------------------------------------------------------- built-ins


def lazy_factory(target: str) -> ExecutorFactory:
    """A factory that imports "module:function" when first called, as an entry point would.

    The built-ins are registered this way: their modules import the store and the
    spec, and the spec imports this registry, so the registry names them without
    importing them (no import circle, no submitit until a Slurm run).
    """
    module, _, attr = target.partition(":")

    def factory(execution: ExecutionSpec, store_root: str | Path, **options: Any) -> Executor:
        return getattr(importlib.import_module(module), attr)(execution, store_root, **options)

    factory.__qualname__ = factory.__name__ = f"lazy({target})"
    return factory


register_executor(
    "local",
    "in this process, or a pool of worker processes: on the GPUs (jobs_per_gpu) or side by side on the CPU (cpu_jobs)",
)(lazy_factory("usagg.execute.local:make_local_executor"))
register_executor("slurm", "Slurm job arrays through submitit; a pre-empted job is requeued and resumes")(
    lazy_factory("usagg.execute.slurm:make_slurm_executor")
)
