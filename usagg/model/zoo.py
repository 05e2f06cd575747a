"""The backbone registry: entries as plain data, so the spec can validate names without torch.

One construction path (timm.create_model) with variants as configuration, the
timm way; `usagg.model.backbones` builds them. `BACKBONES` is a
`usagg.registry.Registry`, so plug-ins add entries as they add task types. A new backbone of the DINOv3
family is one `register_backbone` call (docs/internals.md, "How to add a backbone").
A plug-in entry's definition enters its jobs' ids (`hashed_definition`), so changing it
re-runs them; the built-ins' ids hash their name alone, as they always have.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from usagg.registry import Registry, callable_name, plugin_hint


@dataclass(frozen=True)
class BackboneEntry:
    """How to build one backbone with timm."""

    timm_name: str
    depth: int
    embed_dim: int
    kwargs: dict = field(default_factory=dict)
    note: str = ""

    def definition(self) -> dict[str, object]:
        """What builds this backbone, in a form stable across processes and machines (keys sorted, classes and
        functions by name); `note` only describes it. ValueError where a kwarg has no such form."""
        kwargs = _canonical(self.kwargs, "kwargs")
        return {"timm_name": self.timm_name, "depth": self.depth, "embed_dim": self.embed_dim, "kwargs": kwargs}


def _canonical(value: object, where: str) -> object:
    """`value` as JSON data that says the same in every process: an object's repr would hold its address."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): _canonical(value[k], f"{where}[{k!r}]") for k in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if callable(value) and hasattr(value, "__module__") and hasattr(value, "__qualname__"):
        return callable_name(value)  # a class or function, by the name it is imported by
    raise ValueError(
        f"{where} is of type {type(value).__name__}, which has no stable form for the job id; give numbers, strings, "
        "lists, dicts, or classes and functions (by name)"
    )


#: name -> entry, in registration order; plug-ins through the `usagg.backbones` entry points or USAGG_PLUGINS.
BACKBONES: Registry[BackboneEntry] = Registry(
    "backbone",
    group="usagg.backbones",
    hint=plugin_hint("How to add a backbone"),
)


def register_backbone(name: str, entry: BackboneEntry, *, replace: bool = False) -> BackboneEntry:
    """Make `name` usable as `model.backbone` (a timm Eva/DINOv3 model name plus its depth and width).

    What can be checked without torch is checked here: the spec validates blocks against `depth`, so a `depth`
    or `embed_dim` that timm would not build (kwargs say otherwise) would fail only inside a job. Whether timm
    builds an Eva of that depth and width is checked where the model is first built (usagg/model/backbones.py).
    """
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"a backbone name is letters, digits and _, such as 'dinov3_huge', got {name!r}")
    if entry.depth < 1 or entry.embed_dim < 1:
        raise ValueError(f"backbone {name!r}: depth and embed_dim must be positive, got {entry}")
    for key in ("depth", "embed_dim"):
        given = entry.kwargs.get(key, getattr(entry, key))
        if given != getattr(entry, key):
            raise ValueError(
                f"backbone {name!r}: {key} is {getattr(entry, key)} but kwargs[{key!r}] is {given!r}; timm builds "
                "the kwargs', and the spec checks blocks against the entry's: make them agree"
            )
    try:
        entry.definition()
    except ValueError as e:
        raise ValueError(f"backbone {name!r}: {e}") from None
    caller = sys._getframe(1).f_globals.get("__name__")  # an entry is data: the module registering it is its origin
    return BACKBONES.register(name, entry, replace=replace, origin=caller)


def hashed_definition(name: str) -> dict[str, object] | None:
    """What a job id records of backbone `name` besides its name: a plug-in entry's `definition` (a changed
    entry gives new ids, never an old model's results), None for a built-in (its ids stay as they always were)."""
    entry = BACKBONES.lookup(name)
    builtin = _BUILTINS.get(name)
    definition = entry.definition()
    return None if builtin is not None and builtin.definition() == definition else definition


register_backbone(
    "dinov3_test",
    BackboneEntry(
        "vit_small_patch16_dinov3_qkvb",
        4,
        192,
        {"embed_dim": 192, "num_heads": 3, "depth": 4},
        "tiny 4-block ViT of the DINOv3 family for tests and the CPU demo (random init)",
    ),
)
register_backbone("dinov3_small", BackboneEntry("vit_small_patch16_dinov3_qkvb", 12, 384, {}, "ViT-S/16, 21.6 M"))
register_backbone("dinov3_small_plus", BackboneEntry("vit_small_plus_patch16_dinov3_qkvb", 12, 384, {}, "ViT-S+/16"))
register_backbone("dinov3_base", BackboneEntry("vit_base_patch16_dinov3_qkvb", 12, 768, {}, "ViT-B/16, 86 M"))
register_backbone("dinov3_large", BackboneEntry("vit_large_patch16_dinov3_qkvb", 24, 1024, {}, "ViT-L/16, 300 M"))

#: The built-in entries as registered above; one a plug-in replaces (`replace=True`) hashes its definition.
_BUILTINS: dict[str, BackboneEntry] = dict(BACKBONES.items())
