"""A plug-in's mistakes and changes, as a plug-in author's audit met them: a changed backbone entry gives new job ids
(a built-in's stay), a backbone usagg cannot run is refused naming it, and a paradigm planner's or an executor
factory's mistake is one paragraph naming the plug-in, not a traceback or a silent merge."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from tests.tiny_study import MALIGNANCY, write_tiny_study
from usagg import api
from usagg import registry as registry_core
from usagg.errors import UsaggError
from usagg.execute.base import make_executor
from usagg.execute.registry import EXECUTORS, register_executor
from usagg.model.backbones import create_vit
from usagg.model.zoo import BACKBONES, BackboneEntry, register_backbone
from usagg.paradigms import PARADIGMS, Unit, register_paradigm
from usagg.plan import plan
from usagg.spec.load import load_study
from usagg.spec.models import ExecutionSpec, Study

#: Two tasks, TS and AU, on the backbone given: the study whose ids HEAD gave before backbone entries were hashed.
IDS_SPEC = """name: ids
data: {{root: /nowhere}}
paradigms: [{paradigms}]
model: {{backbone: {backbone}}}
tasks:
  - {{id: a, type: classification, num_classes: 2, group: G}}
  - {{id: b, type: regression, num_classes: 2, group: G}}
"""

#: Job ids of IDS_SPEC computed on the code before plug-in backbone entries entered the hash: existing run stores
#: hold these, so a built-in backbone must keep giving them.
BUILTIN_IDS = {
    "dinov3_test": ["TS-a-f1-s0-b67e2395", "TS-b-f1-s0-e20f73b8", "AU-all-f1-s0-8c079d09"],
    "dinov3_small": ["TS-a-f1-s0-3c5ab0d7", "TS-b-f1-s0-819fa81f", "AU-all-f1-s0-49183e27"],
    "dinov3_large": ["TS-a-f1-s0-a5c31725", "TS-b-f1-s0-86aed04d", "AU-all-f1-s0-be91c594"],
}

DINO = "vit_small_patch16_dinov3_qkvb"


def _micro(width: int, depth: int = 2, note: str = "", **extra: Any) -> BackboneEntry:
    """A tiny DINOv3 Eva as a lab would register it."""
    return BackboneEntry(DINO, depth, width, {"embed_dim": width, "num_heads": 2, "depth": depth, **extra}, note)


def _ids(tmp_path: Path, backbone: str, paradigms: str = "TS, AU") -> list[str]:
    spec = tmp_path / f"{backbone}.yaml"
    spec.write_text(IDS_SPEC.format(backbone=backbone, paradigms=paradigms))
    return [j.id for j in plan(load_study(spec))]


@pytest.fixture
def lab_backbone() -> Iterator[str]:
    """The name `lab_micro`, unregistered after the test."""
    yield "lab_micro"
    BACKBONES.pop("lab_micro")


# --------------------------------------------------------------------------- backbone definitions in job ids


def test_a_plugin_backbone_s_definition_enters_its_job_ids_and_a_builtin_s_ids_stay(
    tmp_path: Path, lab_backbone: str
) -> None:
    for name, ids in BUILTIN_IDS.items():
        assert _ids(tmp_path, name) == ids, name
    register_backbone(lab_backbone, _micro(96, note="first"))
    wide = _ids(tmp_path, lab_backbone)
    register_backbone(lab_backbone, _micro(96, note="a new description only"), replace=True)
    assert _ids(tmp_path, lab_backbone) == wide  # the note describes the entry: no re-run
    register_backbone(lab_backbone, _micro(64), replace=True)
    narrow = _ids(tmp_path, lab_backbone)
    register_backbone(lab_backbone, _micro(64, depth=3), replace=True)
    deeper = _ids(tmp_path, lab_backbone)
    register_backbone(lab_backbone, _micro(64, depth=3, mlp_ratio=2.0), replace=True)
    other_kwargs = _ids(tmp_path, lab_backbone)
    assert len({tuple(wide), tuple(narrow), tuple(deeper), tuple(other_kwargs)}) == 4
    assert not set(wide) & set(narrow), "a job of the 96-wide model would be taken as done for the 64-wide one"


@contextlib.contextmanager
def _builtin_replaced(name: str, entry: BackboneEntry) -> Iterator[None]:
    """The built-in backbone `name` replaced by `entry`, registered from this module as a plug-in would, then put
    back with its own origin: restored through register_backbone, this module would stay its recorded origin, and
    every later in-process job of the worker would record this test module as a plug-in."""
    builtin, origin = BACKBONES[name], BACKBONES.origins.get(name)
    try:
        register_backbone(name, entry, replace=True)
        yield
    finally:
        BACKBONES.register(name, builtin, replace=True, origin=origin)


def test_a_builtin_replaced_by_a_plugin_hashes_the_plugin_s_definition(tmp_path: Path) -> None:
    with _builtin_replaced("dinov3_test", _micro(96, depth=4)):
        assert _ids(tmp_path, "dinov3_test") != BUILTIN_IDS["dinov3_test"]
    assert _ids(tmp_path, "dinov3_test") == BUILTIN_IDS["dinov3_test"]
    assert __name__ not in registry_core.code_plugins()  # put back as it was: no plug-in left behind


def test_a_builtin_registered_again_with_only_another_note_keeps_its_ids(tmp_path: Path) -> None:
    """The note describes an entry and is no part of its definition: a built-in given a new note is the built-in."""
    from dataclasses import replace

    with _builtin_replaced("dinov3_test", replace(BACKBONES["dinov3_test"], note="our lab's note")):
        assert _ids(tmp_path, "dinov3_test") == BUILTIN_IDS["dinov3_test"]


def test_a_backbone_definition_hashes_the_same_in_any_order_and_classes_by_name(
    tmp_path: Path, lab_backbone: str
) -> None:
    """The id is the same on every machine: keys sorted, a class kwarg by its import name, never by its address."""
    kwargs = {"embed_dim": 96, "num_heads": 2, "depth": 2, "norm_layer": nn.LayerNorm}
    register_backbone(lab_backbone, BackboneEntry(DINO, 2, 96, kwargs))
    first = _ids(tmp_path, lab_backbone)
    reordered = dict(reversed(list(kwargs.items())))
    register_backbone(lab_backbone, BackboneEntry(DINO, 2, 96, reordered), replace=True)
    assert _ids(tmp_path, lab_backbone) == first
    assert BACKBONES[lab_backbone].definition()["kwargs"]["norm_layer"] == "torch.nn.modules.normalization.LayerNorm"
    with pytest.raises(ValueError, match=r"backbone 'lab_odd': kwargs\['act'\] is of type object, which has no stable"):
        register_backbone("lab_odd", BackboneEntry(DINO, 2, 96, {"act": object()}))
    assert "lab_odd" not in BACKBONES


# --------------------------------------------------------------------------- backbones usagg cannot run


@pytest.mark.parametrize(
    ("entry", "wrong"),
    [
        (BackboneEntry(DINO, 12, 96, {"depth": 4}), r"depth is 12 but kwargs\['depth'\] is 4"),
        (BackboneEntry(DINO, 2, 384, {"embed_dim": 96, "depth": 2}), r"embed_dim is 384 but kwargs\['embed_dim'\]"),
    ],
)
def test_a_backbone_whose_depth_or_width_disagrees_with_its_kwargs_is_refused_at_registration(
    entry: BackboneEntry, wrong: str
) -> None:
    """The spec checks blocks against the entry's depth, timm builds the kwargs': they must agree (no torch)."""
    with pytest.raises(ValueError, match=rf"backbone 'lab_bad': {wrong}"):
        register_backbone("lab_bad", entry)
    assert "lab_bad" not in BACKBONES


@pytest.mark.parametrize(
    ("entry", "wrong"),
    [
        (BackboneEntry("vit_tiny_patch16_224", 4, 192, {"depth": 4}), r"is a timm VisionTransformer, not an Eva"),
        (BackboneEntry(DINO, 3, 384), r"registered with depth 3 but timm built 12"),
        (BackboneEntry(DINO, 12, 768), r"registered with embed_dim 768 but timm built 384"),
        (BackboneEntry("vit_small_patch16_dinov9", 12, 384), r"has no model of that name"),
    ],
)
def test_a_backbone_usagg_cannot_run_is_refused_naming_it_where_timm_first_builds_it(
    entry: BackboneEntry, wrong: str, lab_backbone: str
) -> None:
    """Not 'feature block 11 out of range' or 'too many values to unpack' from inside a job's encoder."""
    register_backbone(lab_backbone, entry)
    with pytest.raises(UsaggError) as err, torch.device("meta"):
        create_vit(lab_backbone)
    text = str(err.value)
    assert text.startswith(f"backbone 'lab_micro' (timm model {entry.timm_name!r})") and "\n" not in text
    assert re.search(wrong, text) and "usagg runs timm Eva models of the DINOv3 family" in text


# --------------------------------------------------------------------------- paradigm planners


def _ghost(study: Study) -> list[Unit]:
    return [Unit(paradigm="GHOST", name="ghost", tasks=("nope",), moe=True)]


def _wrongp(study: Study) -> list[Unit]:
    return [Unit(paradigm="TS", name=t.id, tasks=(t.id,), moe=False) for t in study.tasks]


def _forget(study: Study) -> list[Unit]:
    return [Unit(paradigm="FORGET", name="most", tasks=(study.tasks[0].id,), moe=True)]


def _crash(study: Study) -> list[Unit]:
    return [Unit(paradigm="CRASH", name=study.tasks[0].ida, tasks=(), moe=True)]  # type: ignore[attr-defined]


def _staged_without_needs(study: Study, evidence: object) -> list[Unit]:
    return []


@pytest.fixture
def lab_paradigms() -> Iterator[None]:
    """GHOST, WRONGP, FORGET and CRASH registered as a plug-in would, unregistered after the test."""
    planners = {"GHOST": _ghost, "WRONGP": _wrongp, "FORGET": _forget, "CRASH": _crash}
    for name, planner in planners.items():
        register_paradigm(name, f"the audit's {name}")(planner)
    yield
    for name in planners:
        PARADIGMS.unregister(name)


@pytest.mark.parametrize(
    ("paradigm", "wrong"),
    [
        (
            "GHOST",
            r"paradigm GHOST \(planner \S+\._ghost\) planned unit 'ghost' with task\(s\) 'nope', not in the "
            r"study 'ids' \(its tasks: a, b\)",
        ),
        (
            "WRONGP",
            r"paradigm WRONGP \(planner \S+\._wrongp\) planned unit 'a' with paradigm='TS'; a planner's units "
            r"name their own paradigm \('WRONGP'\)",
        ),
        ("CRASH", r"paradigm CRASH \(planner \S+\._crash\) failed while planning \(AttributeError: "),
    ],
)
def test_a_planner_s_mistake_is_one_paragraph_naming_the_paradigm_and_its_planner(
    paradigm: str, wrong: str, tmp_path: Path, lab_paradigms: None
) -> None:
    with pytest.raises(UsaggError, match=wrong) as err:
        _ids(tmp_path, "dinov3_test", f"TS, {paradigm}")
    assert err.value.exit_code == 2 and "\n" not in str(err.value) and __name__ in str(err.value)


def test_a_planner_leaving_a_task_out_is_warned_once_and_a_builtin_s_skipped_singletons_are_not(
    tmp_path: Path, lab_paradigms: None, caplog: pytest.LogCaptureFixture
) -> None:
    """A warning, not an error: CG and CGD leave one-task groups out under `singleton_groups: skip`, as asked."""
    with caplog.at_level(logging.WARNING, logger="usagg.plan"):
        ids = _ids(tmp_path, "dinov3_test", "TS, FORGET")
        _ids(tmp_path, "dinov3_test", "TS, FORGET")
    assert [i.split("-")[0] for i in ids] == ["TS", "TS", "FORGET"]
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1, warned
    assert warned[0].startswith("paradigm FORGET (planner ") and warned[0].endswith(
        "plans no unit for task(s) b: FORGET has no result for them"
    )
    caplog.clear()
    spec = tmp_path / "skip.yaml"
    spec.write_text(
        IDS_SPEC.format(backbone="dinov3_test", paradigms="CG") + "  - {id: c, type: regression, "
        "num_classes: 2, group: H}\nsingleton_groups: skip\n"
    )
    with caplog.at_level(logging.WARNING, logger="usagg.plan"):
        assert [j.name for j in plan(load_study(spec))] == ["G"]
    assert caplog.records == []


def test_a_planner_taking_evidence_without_needs_is_refused_at_registration(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(
        ValueError,
        match=r"paradigm 'SIG': its planner \S+\._staged_without_needs\(study, evidence\) "
        r"must take \(study\), or \(study, evidence\) with needs=",
    ):
        register_paradigm("SIG", "wrong signature")(_staged_without_needs)
    assert "SIG" not in PARADIGMS
    (tmp_path / "sig_plugin.py").write_text(
        "from usagg.paradigms import register_paradigm\n\n\n"
        "@register_paradigm('SIG', 'wrong signature')\ndef plan4(study, evidence):\n    return []\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry_core, "_plugins_loaded", False)
    monkeypatch.setenv("USAGG_PLUGINS", "sig_plugin")
    with pytest.raises(
        UsaggError,
        match=r"plug-in module 'sig_plugin' of USAGG_PLUGINS failed while loading "
        r"\(ValueError: paradigm 'SIG': its planner sig_plugin\.plan4\(study, evidence\) must take",
    ):
        PARADIGMS.names()
    assert "SIG" not in PARADIGMS


# --------------------------------------------------------------------------- executor factories


def _one_argument(execution: ExecutionSpec) -> object:
    raise AssertionError("never called: its signature is refused first")


def _not_an_executor(execution: ExecutionSpec, store_root: str | Path, **options: Any) -> object:
    return object()


@pytest.fixture
def lab_executors() -> Iterator[None]:
    register_executor("badsig", "a factory with the wrong signature")(_one_argument)
    register_executor("notexec", "a factory that returns no Executor")(_not_an_executor)
    yield
    EXECUTORS.unregister("badsig")
    EXECUTORS.unregister("notexec")


@pytest.mark.parametrize(
    ("name", "wrong"),
    [
        (
            "badsig",
            r"executor 'badsig' \(factory \S+\._one_argument\): its signature \(execution\) "
            r"cannot take this call \(too many positional arguments\); an executor factory is "
            r"`factory\(execution, store_root, \*\*options\)`",
        ),
        (
            "notexec",
            r"executor 'notexec' \(factory \S+\._not_an_executor\) returned a value of type object, not an Executor; ",
        ),
    ],
)
def test_an_executor_factory_s_mistake_is_one_paragraph_naming_it(
    name: str, wrong: str, tmp_path: Path, lab_executors: None
) -> None:
    with pytest.raises(UsaggError, match=wrong) as err:
        make_executor(ExecutionSpec(executor=name), tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_an_executor_that_is_not_one_stops_the_run_before_its_store_is_written(
    tmp_path: Path, lab_executors: None
) -> None:
    spec = write_tiny_study(
        tmp_path / "s.yaml",
        "tiny",
        tmp_path,
        output_root=tmp_path / "runs",
        tasks=(MALIGNANCY,),
        execution={"executor": "notexec"},
    )
    with pytest.raises(UsaggError, match="executor 'notexec'"):
        api.run_study(spec)
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_plugin_backbone_usagg_cannot_run_stops_the_run_before_its_store_is_written(
    tmp_path: Path, lab_backbone: str
) -> None:
    """Without model.weights nothing built the entry before the first job; now the run's checks build it once on
    the meta device, so a timm VisionTransformer registered as a backbone is one paragraph and no store."""
    register_backbone(lab_backbone, BackboneEntry("vit_tiny_patch16_224", 12, 192, {}))
    spec = write_tiny_study(tmp_path / "s.yaml", "tiny", tmp_path, output_root=tmp_path / "runs", tasks=(MALIGNANCY,))
    text = spec.read_text().replace("backbone: dinov3_test", f"backbone: {lab_backbone}")
    assert text != spec.read_text()
    spec.write_text(text)
    with pytest.raises(UsaggError, match=r"is a timm VisionTransformer, not an Eva"):
        api.run_study(spec)
    assert not (tmp_path / "runs").exists()


def test_validate_builds_a_plugin_backbone_as_run_does(
    tmp_path: Path, lab_backbone: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`usagg validate` said nothing of a plug-in backbone usagg cannot run (it never built one); `run` refused it."""
    from cli_run import run_cli

    register_backbone(lab_backbone, BackboneEntry("vit_tiny_patch16_224", 12, 192, {}))
    spec = write_tiny_study(tmp_path / "s.yaml", "tiny", tmp_path, output_root=tmp_path / "runs", tasks=(MALIGNANCY,))
    spec.write_text(spec.read_text().replace("backbone: dinov3_test", f"backbone: {lab_backbone}"))
    code, out = run_cli(["validate", str(spec)], monkeypatch, capsys)
    assert code == 2 and "is a timm VisionTransformer, not an Eva" in " ".join(out.split()), out
    assert "Traceback" not in out and not (tmp_path / "runs").exists()
