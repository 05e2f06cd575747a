"""What a plug-in author's audit found, each fixed: real plug-in modules written into a folder on sys.path
(tests/plugin_module.py) and used as a lab uses its package."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.plugin_module import PluginFolder, plugin_folder
from usagg.analysis.inputs import load_input
from usagg.analysis.memo import Memo
from usagg.analysis.outputs import Memoised
from usagg.analysis.simulate import simulate_run_store
from usagg.analysis.summary import analyse
from usagg.paradigms import PARADIGMS


@pytest.fixture
def plugins(tmp_path: Path) -> Iterator[PluginFolder]:
    with plugin_folder(tmp_path / "plugins") as folder:
        yield folder


# --------------------------------------------------------------------------- the analysis memo and registrations

PAIR = """
from usagg.paradigms import Unit, register_paradigm


@register_paradigm("PAIR", "tasks in consecutive pairs, MoE on", scope={scope!r}, moe={moe!r})
def plan_pair(study):
    ids = [t.id for t in study.tasks]
    return [Unit(paradigm="PAIR", name=f"p{{i}}", tasks=tuple(ids[i:i + 2]), moe=True) for i in range(0, len(ids), 2)]
"""

#: Two groups of two tasks and one task alone in its group, which a group-scoped paradigm leaves out.
FIVE = [
    {"id": f"t{i}", "type": "classification", "num_classes": 2, "group": g}
    for i, g in enumerate(("G1", "G1", "G2", "G2", "G3"))
]


@pytest.mark.slow
def test_a_changed_plugin_registration_is_computed_afresh_not_taken_from_the_memo(
    plugins: PluginFolder, tmp_path: Path
) -> None:
    plugins.load("lab_pairs", PAIR.format(scope="group", moe=True))
    run_dir = simulate_run_store(tmp_path / "runs" / "lab", FIVE, paradigms=("TS", "PAIR"), seeds=(0, 1, 2))
    memoised = Memoised(Memo(tmp_path / "cache"))
    PARADIGMS.unregister("PAIR")
    plugins.load("lab_pairs", PAIR.format(scope=None, moe=None))
    whole = memoised.analyse(load_input(run_dir, None)).stats  # fills the memo
    PARADIGMS.unregister("PAIR")
    plugins.load("lab_pairs", PAIR.format(scope="group", moe=True))  # the plug-in's author gives it a scope
    grouped = memoised.analyse(load_input(run_dir, None)).stats
    fresh = analyse(load_input(run_dir, None)).stats  # no memo at all
    assert grouped == fresh
    assert grouped != whole
