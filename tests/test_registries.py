"""The registries (usagg/registry.py): a contract test per registered entry of every kind, as timm's tests run over
list_models(), the engine strategies, and plug-ins reaching every registry (USAGG_PLUGINS, entry points)."""

from __future__ import annotations

import sys
import typing
from pathlib import Path

import pytest
import timm
import torch

from usagg import registry as registry_core
from usagg.engine.balance import BALANCERS, build_balance
from usagg.engine.sampling import SAMPLERS, TaskSampler
from usagg.errors import SpecError, UsaggError
from usagg.execute.base import Executor, make_executor
from usagg.execute.registry import EXECUTORS, get_executor_factory
from usagg.model.m2dino import build_model
from usagg.model.zoo import BACKBONES, BackboneEntry, register_backbone
from usagg.paradigms import PARADIGMS, SCOPES, paradigm_names
from usagg.plan import plan
from usagg.registry import Registry
from usagg.spec.load import load_study
from usagg.spec.models import ExecutionSpec, ModelSpec, TaskSpec, TrainingSpec
from usagg.tasktypes import TASK_TYPES, PredictionShape, get_task_type, metric_direction, task_type_names


def test_a_registered_backbone_is_accepted_and_built() -> None:
    entry = BackboneEntry("vit_small_patch16_dinov3_qkvb", 2, 96, {"embed_dim": 96, "num_heads": 2, "depth": 2})
    register_backbone("dinov3_micro", entry)
    try:
        spec = ModelSpec(backbone="dinov3_micro", image_size=32, frozen_blocks=1)
        assert spec.depth == 2 and spec.resolved_moe_blocks() == [1]
        model = build_model(spec, [TaskSpec(id="c", type="classification", num_classes=3)], moe=True)
        out = model(torch.randn(2, 3, 32, 32), "c", torch.tensor([0, 2]))
        assert out.outputs.shape == (2, 3) and torch.isfinite(out.loss)
        assert model.encoder.embed_dim == 96
        with pytest.raises(ValueError, match="already registered"):
            register_backbone("dinov3_micro", BackboneEntry("vit_small_patch16_dinov3_qkvb", 3, 96))
    finally:
        BACKBONES.pop("dinov3_micro")
    with pytest.raises(ValueError, match="unknown backbone 'dinov3_micro'"):
        ModelSpec(backbone="dinov3_micro")


def test_usagg_registry_lists_every_registry_and_refuses_an_unknown_kind() -> None:
    import json

    from typer.testing import CliRunner

    from usagg.cli.app import app

    runner = CliRunner()
    listed = runner.invoke(app, ["registry", "--json"])
    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.output)
    assert [t["type"] for t in data["task-types"]] == ["segmentation", "classification", "detection", "regression"]
    assert [p["paradigm"] for p in data["paradigms"]][:3] == ["TS", "CG", "AU"]
    assert {"local", "slurm"} <= {e["executor"] for e in data["executors"]}
    assert {b["backbone"]: b["depth"] for b in data["backbones"]}["dinov3_large"] == "24"
    bad = runner.invoke(app, ["registry", "heads"])  # main() turns it into one line and exit 2
    assert isinstance(bad.exception, UsaggError) and "choose one of task-types, paradigms" in str(bad.exception)


# --------------------------------------------------------------------------- contracts over every entry (timm style)

DEMO = Path(__file__).resolve().parent.parent / "studies" / "demo.yaml"


@pytest.mark.parametrize("name", task_type_names())
def test_every_task_type_keeps_the_contract(name: str) -> None:
    tt = get_task_type(name)
    assert tt.name == name == name.lower() and TASK_TYPES[name] is tt
    assert tt.metrics and tt.primary_metric == tt.metrics[0].name
    for m in tt.metrics:
        assert metric_direction(m.name) is m.higher_is_better
    assert tt.prediction_file.endswith(".json") and "image_path" in tt.prediction_keys
    assert any(tt.check_num_classes(n) is None for n in range(1, 6)), "no class count is accepted"
    task = TaskSpec(id="t", type=name, num_classes=next(n for n in range(1, 6) if tt.check_num_classes(n) is None))
    declared = tt.prediction_shape(task, 32)  # None: a plug-in type declaring nothing (row count checked only)
    assert declared is None or isinstance(declared, PredictionShape)
    with pytest.raises(ValueError, match=f"task type '{name}' is already registered"):
        TASK_TYPES.register(name, object())  # type: ignore[arg-type]


#: Three tasks in two clinical groups, written out (no catalog, no expectations): any paradigm can plan them.
SMALL = """name: small
data: {{root: /nowhere}}
paradigms: {paradigms}
tasks:
  - {{id: a, type: classification, num_classes: 2{group_a}}}
  - {{id: b, type: regression, num_classes: 2, group: G}}
  - {{id: c, type: segmentation, num_classes: 2, group: H}}
"""


def _small(tmp_path: Path, paradigms: list[str], group_a: str = ", group: G") -> Path:
    spec = tmp_path / "small.yaml"
    spec.write_text(SMALL.format(paradigms=f"[{', '.join(paradigms)}]", group_a=group_a))
    return spec


@pytest.mark.parametrize("name", list(PARADIGMS))
def test_every_paradigm_keeps_the_contract(name: str, tmp_path: Path) -> None:
    entry = PARADIGMS.lookup(name)
    assert entry.name == name and entry.description and (entry.scope is None or entry.scope in SCOPES)
    if not entry.compared:  # a helper (the affinity probe) is planned through the paradigm that needs it
        assert name not in paradigm_names()
        return
    study = load_study(_small(tmp_path, ["AU", name] if entry.staged else [name]))  # AG measures in AU
    assert entry.check is None or entry.check(study) is None
    units = entry.needs(study) if entry.staged else entry.planner(study)
    assert units and all(u.tasks and set(u.tasks) <= {"a", "b", "c"} for u in units)
    if entry.staged:
        assert all(u.paradigm in PARADIGMS for u in units)
    else:
        assert {u.paradigm for u in units} == {name} and (entry.moe is None or {u.moe for u in units} == {entry.moe})
        assert {j.paradigm for j in plan(study)} == {name}


@pytest.mark.parametrize("name", [n for n in ("CG", "AG") if n in PARADIGMS])
def test_a_paradigm_s_own_check_names_what_the_spec_lacks(name: str, tmp_path: Path) -> None:
    """CG and AG plan from the clinical groups: their `check=` refuses a task without one, through the spec."""
    spec = _small(tmp_path, ["AU", name], group_a="")
    with pytest.raises(SpecError, match=rf"paradigms: {name}: every task needs a clinical group .*tasks\[0\] \(a\)"):
        load_study(spec)
    assert load_study(_small(tmp_path, ["AU"], group_a="")).paradigms == ["AU"]  # no paradigm of groups: fine


@pytest.mark.parametrize("name", list(EXECUTORS))
def test_every_executor_builds_one_or_refuses_in_one_paragraph(name: str, tmp_path: Path) -> None:
    assert get_executor_factory(name) is EXECUTORS[name].factory and EXECUTORS[name].description
    assert ExecutionSpec(executor=name).executor == name
    try:
        built = make_executor(ExecutionSpec(executor=name), tmp_path)
    except UsaggError as err:  # e.g. slurm where there is no sbatch: a user error, never a traceback
        assert name in str(err) and "\n" not in str(err)
    else:
        assert isinstance(built, Executor) and built.store_root == str(tmp_path)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_is_a_timm_model_the_spec_accepts(name: str) -> None:
    entry = BACKBONES.lookup(name)
    assert timm.is_model(entry.timm_name), entry.timm_name
    spec = ModelSpec(backbone=name, frozen_blocks=entry.depth - 1)
    assert spec.depth == entry.depth and entry.embed_dim >= 1


@pytest.mark.parametrize(
    ("registry", "typo", "meant"),
    [(TASK_TYPES, "segmentaton", "segmentation"), (PARADIGMS, "AUD2", "AUD"), (BACKBONES, "dinov3_smal", None)],
)
def test_an_unknown_name_is_one_paragraph_naming_every_registered_one(registry: Registry, typo: str, meant) -> None:
    with pytest.raises(ValueError) as err:
        registry.lookup(typo)
    text = str(err.value)
    assert text.startswith(f"unknown {registry.kind} {typo!r}") and "\n" not in text
    assert all(n in text for n in registry.names())
    if meant:
        assert f"did you mean {meant!r}" in text
    with pytest.raises(UsaggError, match=r"unknown executor 'lcoal' \(did you mean 'local'\?\)"):
        get_executor_factory("lcoal")


def test_engine_strategies_are_exactly_what_the_spec_offers() -> None:
    """training.sampling and training.loss_balance list the registered strategies, no more, no fewer."""
    hints = typing.get_type_hints(TrainingSpec, include_extras=True)
    choices = {f: set(typing.get_args(typing.get_args(hints[f])[0])) for f in ("sampling", "loss_balance")}
    assert choices == {"sampling": set(SAMPLERS), "loss_balance": set(BALANCERS)}


@pytest.mark.parametrize("mode", list(SAMPLERS))
def test_every_sampling_strategy_draws_each_task_in_its_share(mode: str) -> None:
    sizes = {"a": 300, "b": 60, "c": 20}
    sampler = TaskSampler(sizes, 10, mode, 2.0, seed=3)  # type: ignore[arg-type]
    draws = [sampler.next_batch() for _ in range(sampler.steps_per_epoch * 40)]
    assert {t for t, _ in draws} == set(sizes) and all(len(i) == 10 for _, i in draws)
    for task, p in sampler.probs.items():
        share = sum(t == task for t, _ in draws) / len(draws)
        assert share == pytest.approx(p, abs=0.03), (mode, task)


@pytest.mark.parametrize("mode", list(BALANCERS))
def test_every_loss_balance_strategy_records_and_resumes(mode: str) -> None:
    weights = {"a": 1.0, "b": 2.0}
    bal = build_balance(mode, weights)
    aux = torch.tensor(0.25)
    first = bal.combine("a", torch.tensor(3.0) + aux, aux)
    assert bal.mode == mode and bal.record()["mode"] == mode and torch.isfinite(first)
    assert set(bal.state()) == {"initial", "log_vars"}  # one checkpoint shape for every strategy
    again = build_balance(mode, weights)
    again.load(bal.state(), torch.device("cpu"))
    for task, loss in (("a", 2.0), ("b", 5.0)):
        resumed, kept = (float(b.combine(task, torch.tensor(loss) + aux, aux).detach()) for b in (again, bal))
        assert resumed == pytest.approx(kept)
    assert build_balance(mode, {"a": 1.0}).mode == "equal"  # one task: only the plain loss


# --------------------------------------------------------------------------- plug-ins reach every registry

PAIR_PLUGIN = """
from usagg.paradigms import Unit, register_paradigm


@register_paradigm("PAIR", "the first two tasks together, MoE on")
def plan_pair(study):
    return [Unit(paradigm="PAIR", name="pair", tasks=tuple(t.id for t in study.tasks[:2]), moe=True)]
"""


@pytest.fixture
def fresh_plugins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A process that has not loaded its plug-ins yet, with `tmp_path` importable; PAIR unregistered after."""
    monkeypatch.setattr(registry_core, "_plugins_loaded", False)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("USAGG_PLUGINS", raising=False)
    yield tmp_path
    PARADIGMS.unregister("PAIR")
    for module in ("pair_plugin", "pair_ep"):
        sys.modules.pop(module, None)


#: Tasks written out, so no task type is looked up before `paradigms` is validated (as in a catalog-free study).
INLINE = """name: pair
data: {root: /nowhere}
paradigms: [TS, PAIR]
tasks:
  - {id: a, type: classification, num_classes: 2, group: G}
  - {id: b, type: regression, num_classes: 2, group: G}
  - {id: c, type: segmentation, num_classes: 2, group: H}
"""


def test_a_paradigm_named_in_usagg_plugins_validates_and_plans(
    fresh_plugins: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The docs' plug-in paradigm example: the spec checks paradigms before task types, so plug-ins load first."""
    (fresh_plugins / "pair_plugin.py").write_text(PAIR_PLUGIN)
    spec = fresh_plugins / "pair.yaml"
    spec.write_text(INLINE)
    with pytest.raises(SpecError, match=r"paradigms\[1\]: unknown paradigm 'PAIR'; registered paradigms: TS, CG"):
        load_study(spec)
    monkeypatch.setattr(registry_core, "_plugins_loaded", False)
    monkeypatch.setenv("USAGG_PLUGINS", "pair_plugin")
    study = load_study(spec)
    assert study.paradigms == ["TS", "PAIR"]
    assert [[t.id for t in j.tasks] for j in plan(study) if j.paradigm == "PAIR"] == [["a", "b"]]
    assert "PAIR" in paradigm_names() and PARADIGMS["PAIR"].planner.__module__ == "pair_plugin"


def test_a_paradigm_from_an_installed_entry_point_validates(fresh_plugins: Path) -> None:
    (fresh_plugins / "pair_ep.py").write_text(PAIR_PLUGIN)
    dist = fresh_plugins / "usagg_pair-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: usagg-pair\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[usagg.paradigms]\npair = pair_ep\n")
    spec = fresh_plugins / "pair.yaml"
    spec.write_text(INLINE)
    assert load_study(spec).paradigms == ["TS", "PAIR"] and PARADIGMS["PAIR"].planner.__module__ == "pair_ep"


def test_a_plugin_that_cannot_be_imported_is_one_paragraph(
    fresh_plugins: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USAGG_PLUGINS", " ,no_such_lab_module")
    with pytest.raises(UsaggError, match=r"plug-in module 'no_such_lab_module' of USAGG_PLUGINS could not be imported"):
        load_study(DEMO)
