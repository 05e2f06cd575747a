"""A fifth task type written here, outside the package, goes through the whole study with no edit under usagg/.

Multi-label classification: every image carries a set of labels (the CSV column
`labels`, e.g. "0;2"); one sigmoid per label, binary cross-entropy; scored by
micro F1 (primary) and the Hamming loss (lower is better). It is registered from
this file alone, trained next to a built-in type under TS, CG and AU, scored,
written in its own prediction file, and compared.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cli_run import run_cli as _cli
from PIL import Image
from torch import nn

from usagg.analysis.results import read_results
from usagg.predictions import as_floats, read_predictions
from usagg.store import RunStore
from usagg.tasktypes import (
    EvalItem,
    Metric,
    Row,
    RowError,
    TaskType,
    get_task_type,
    metric_direction,
    register_task_type,
    unregister_task_type,
)

pytestmark = pytest.mark.slow


class MultiLabelHead(nn.Module):
    """Logits per label from the cls token of the last feature block."""

    def __init__(self, embed_dim: int, num_labels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(embed_dim, num_labels)

    def forward(self, feats: Any) -> torch.Tensor:
        return self.linear(feats.prefix[-1][:, 0])

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(outputs.float(), targets)

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float().sigmoid()


class MultiLabel(TaskType):
    name = "multilabel"
    metrics = (Metric("F1_micro", True), Metric("Hamming", False))
    num_classes_meaning = "labels an image may carry"
    prediction_file = "multilabel_predictions.json"
    prediction_keys = ("image_path", "task_id", "predicted_labels", "predicted_probs")
    marker, color = "X", "#117733"

    def check_num_classes(self, n: int) -> str | None:
        return None if n >= 2 else f"a multilabel task needs num_classes >= 2, got {n}"

    def csv_columns(self, num_classes: int) -> tuple[str, ...]:
        return ("labels",)

    def parse_label(self, row: Row, num_classes: int) -> tuple[int, ...]:
        raw = row.record.get("labels", "").strip()
        try:
            labels = tuple(sorted({int(v) for v in raw.split(";") if v.strip()}))
        except ValueError:
            raise RowError("bad_value", f"column labels is {raw!r}, expected class indices like 0;2") from None
        if any(not 0 <= v < num_classes for v in labels):
            raise RowError("label_out_of_range", f"labels {list(labels)} outside 0..{num_classes - 1}")
        return labels

    def csv_fields(self, label: Any, num_classes: int) -> list[object]:
        return [";".join(map(str, label))]

    def summary_keys(self, sample: Any, checked: Any) -> list[str]:
        return [f"label {v}" for v in sample.label]

    def targets(self, samples: Sequence[Any], orig_hw: np.ndarray, image_size: int, cache_dir: Path) -> np.ndarray:
        out = np.zeros((len(samples), samples[0].num_classes), dtype=np.float32)
        for i, s in enumerate(samples):
            out[i, list(s.label)] = 1.0
        return out

    def build_head(self, task: Any, heads: Any, embed_dim: int, n_features: int) -> nn.Module:
        return MultiLabelHead(embed_dim, task.num_classes)

    def score(self, task: Any, preds: np.ndarray, items: Sequence[EvalItem], writer: Any) -> dict[str, float]:
        probs = np.asarray(preds, dtype=np.float64)
        pred = probs >= 0.5
        truth = np.zeros_like(pred)
        for i, it in enumerate(items):
            truth[i, list(it.gt)] = True
            if writer is not None:
                fields = {"predicted_labels": np.flatnonzero(pred[i]).tolist(), "predicted_probs": as_floats(probs[i])}
                writer.add(self, task.id, it.image_path, fields)
        tp = float((pred & truth).sum())
        denom = float(pred.sum() + truth.sum())
        return {"F1_micro": 2 * tp / denom if denom else 1.0, "Hamming": float((pred != truth).mean())}


QUADRANTS = 3  # label k: quadrant k is bright


def _write_split(root: Path, split: str, n: int, rng: np.random.Generator) -> None:
    """An FMC_UIA folder with one multi-label and one built-in classification task on the same images."""
    images = root / split / "images"
    images.mkdir(parents=True)
    (root / split / "csv_files").mkdir()
    ml = ["image_path,task_id,task_name,num_classes,labels"]
    cls = ["image_path,task_id,task_name,num_classes,mask"]
    for i in range(n):
        labels = [k for k in range(QUADRANTS) if rng.random() < 0.5] or [int(rng.integers(QUADRANTS))]
        img = rng.integers(0, 60, (40, 40)).astype(np.uint8)
        for k in labels:
            r, c = divmod(k, 2)
            img[r * 20 : r * 20 + 20, c * 20 : c * 20 + 20] += 150
        Image.fromarray(img).save(images / f"{i:03d}.png")
        ml.append(f"../images/{i:03d}.png,quadrants,MultiLabel,{QUADRANTS},{';'.join(map(str, labels))}")
        cls.append(f"../images/{i:03d}.png,top_left,classification,2,{int(0 in labels)}")
    (root / split / "csv_files" / "quadrants.csv").write_text("\n".join(ml) + "\n")
    (root / split / "csv_files" / "top_left.csv").write_text("\n".join(cls) + "\n")


STUDY = """
name: plugin
output_root: {out}
paradigms: [TS, CG, AU]
data: {{root: {data}, cache_dir: {cache}, selection_fraction: 0.2}}
tasks:
  - {{id: quadrants, type: multilabel, num_classes: {k}, group: Quads}}
  - {{id: top_left, type: classification, num_classes: 2, group: Quads}}
model: {{backbone: dinov3_test, image_size: 32, heads: {{hidden: 32}}}}
training: {{epochs: 2, batch_size: 8, eval_batch_size: 16}}
execution: {{devices: cpu, cpu_jobs: 1}}  # the type is registered in this process only
"""


@pytest.fixture
def multilabel() -> Iterator[TaskType]:
    register_task_type(MultiLabel)
    try:
        yield get_task_type("multilabel")
    finally:
        unregister_task_type("multilabel")


def _study(tmp_path: Path, n_train: int, n_val: int) -> tuple[Path, str]:
    """The multi-label data set (`n_train` / `n_val` images) and STUDY's text over it."""
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    _write_split(data, "train", n_train, rng)
    _write_split(data, "val", n_val, rng)
    return data, STUDY.format(out=tmp_path / "runs", data=data, cache=tmp_path / "cache", k=QUADRANTS)


def test_a_registered_type_runs_through_the_whole_study(
    multilabel: TaskType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data, text = _study(tmp_path, 40, 12)
    spec = tmp_path / "study.yaml"
    spec.write_text(text)

    code, text = _cli(["validate", str(spec)], monkeypatch, capsys)
    assert code == 0, text
    assert "multilabel" in text
    code, text = _cli(["data", "check", str(data)], monkeypatch, capsys)
    assert code == 0, text
    code, text = _cli(["plan", str(spec), "--json"], monkeypatch, capsys)
    jobs = json.loads(text)
    assert sorted(j["paradigm"] for j in jobs) == ["AU", "CG", "TS", "TS"]

    code, text = _cli(["run", str(spec)], monkeypatch, capsys)
    assert code == 0, text
    store = tmp_path / "runs" / "plugin"
    au = next(p for p in (store / "jobs").iterdir() if p.name.startswith("AU-"))
    metrics = json.loads((au / "metrics.json").read_text())
    task = metrics["tasks"]["quadrants"]
    assert task["type"] == "multilabel" and task["primary"] == "F1_micro"
    assert 0.0 <= task["metrics"]["F1_micro"] <= 1.0 and 0.0 <= task["metrics"]["Hamming"] <= 1.0

    # its predictions: its own file, every test image, exactly the numbers scored
    preds = read_predictions(au / "predictions")
    entries = preds["multilabel"]
    assert len(entries) == task["n_test"] == 12
    probs = np.array([e["predicted_probs"] for e in entries])
    assert [e["predicted_labels"] for e in entries] == [np.flatnonzero(p >= 0.5).tolist() for p in probs]
    assert len(preds["classification"]) == 12  # the built-in task of the same job, in its file

    # results carry the type and each metric's direction, and compare measures Δ for it
    table = read_results(store / "results.csv")
    rows = [r for r in table.rows if r.task == "quadrants"]
    assert {r.type for r in rows} == {"multilabel"}
    assert {(r.metric, r.higher_is_better) for r in rows} == {("F1_micro", True), ("Hamming", False)}
    assert metric_direction("Hamming") is False
    code, text = _cli(["compare", str(store), "--baseline", "TS", "--format", "csv"], monkeypatch, capsys)
    assert code == 0, text
    delta = {r["paradigm"]: r for r in csv.DictReader(io.StringIO(text)) if r["task"] == "quadrants"}
    assert sorted(delta) == ["AU", "CG", "TS"] and delta["AU"]["type"] == "multilabel"
    assert delta["AU"]["metric"] == "F1_micro" and delta["AU"]["higher_is_better"] == "true"
    ts = next(r.value for r in rows if r.paradigm == "TS" and r.metric == "F1_micro")
    au_value = next(r.value for r in rows if r.paradigm == "AU" and r.metric == "F1_micro")
    assert float(delta["AU"]["mean"]) == pytest.approx(au_value)
    assert float(delta["AU"]["delta_pct"]) == pytest.approx(100 * (au_value - ts) / abs(ts))


def test_a_type_whose_parse_label_raises_is_one_paragraph_naming_type_task_and_row(
    multilabel: TaskType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The extension audit's F7: a plug-in's parse_label reading a column it misspelt (a KeyError) was a 57-line
    traceback through `usagg data check`; a RowError stays the row's problem."""
    data, _ = _study(tmp_path, 6, 3)

    def misspelt(row: Row, num_classes: int) -> tuple[int, ...]:
        return (int(row.record["label_typo"]),)

    monkeypatch.setattr(multilabel, "parse_label", misspelt)
    code, text = _cli(["data", "check", str(data)], monkeypatch, capsys)
    said = " ".join(text.split())
    assert code == 2 and "Traceback" not in text, text
    assert (
        f"task type 'multilabel' ({__name__}) parse_label() for task 'quadrants' raised KeyError: 'label_typo' "
        f"reading {data / 'train' / 'csv_files' / 'quadrants.csv'} row 1: a bug of the type, not of the data"
    ) in said, said


def test_an_unregistered_type_is_a_spec_error_naming_the_registered_ones(tmp_path: Path) -> None:
    from usagg.errors import SpecError
    from usagg.spec.load import load_study

    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: s\ndata: {root: /nowhere}\ntasks:\n  - {id: q, type: multilabel, num_classes: 3}\nparadigms: [TS]\n"
    )
    with pytest.raises(SpecError, match=r"tasks\[0\]\.type.*unknown task type 'multilabel'.*segmentation"):
        load_study(spec)


PLUGIN = """
from usagg.tasktypes import Metric, TaskType, register_task_type


@register_task_type
class Counting(TaskType):
    name = "counting"
    metrics = (Metric("MAE", False),)
    num_classes_meaning = "1 (one count per image)"
    prediction_file = "counting_predictions.json"
    prediction_keys = ("image_path", "task_id", "predicted_count")
"""


def test_a_plugin_named_in_the_environment_reaches_a_fresh_process(tmp_path: Path) -> None:
    """USAGG_PLUGINS is how worker processes (GPU pool, Slurm) see a type registered outside the package."""
    import os
    import subprocess

    (tmp_path / "lab_plugin.py").write_text(PLUGIN)
    spec = tmp_path / "s.yaml"
    spec.write_text(
        f"name: s\ndata: {{root: {tmp_path / 'data-not-here-yet'}}}\nparadigms: [TS]\n"
        + "tasks:\n  - {id: cells, type: counting, num_classes: 1}\n"
    )
    env = {**os.environ, "USAGG_PLUGINS": "lab_plugin", "PYTHONPATH": str(tmp_path), "COLUMNS": "200"}
    listed = subprocess.run(
        [sys.executable, "-m", "usagg", "registry", "task-types", "--json"], env=env, capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr
    types = {t["type"]: t for t in json.loads(listed.stdout)}
    assert list(types)[:4] == ["segmentation", "classification", "detection", "regression"]
    assert types["counting"]["module"] == "lab_plugin" and types["counting"]["metrics (primary first)"] == "MAE ↓"
    ok = subprocess.run([sys.executable, "-m", "usagg", "validate", str(spec)], env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    env.pop("USAGG_PLUGINS")
    refused = subprocess.run(
        [sys.executable, "-m", "usagg", "validate", str(spec)], env=env, capture_output=True, text=True
    )
    assert refused.returncode == 2 and "unknown task type 'counting'" in refused.stderr
    assert "Traceback" not in refused.stderr


class Unscored(MultiLabel):
    """MultiLabel whose score() returns a name it never declared."""

    name = "unscored"
    csv_names = ("multilabel",)  # the CSVs of `_write_split`
    prediction_file = "unscored_predictions.json"

    def score(
        self, task: Any, preds: np.ndarray, items: Sequence[EvalItem], writer: Any = None, metrics: Any = None
    ) -> dict[str, float]:
        return {"Other": 1.0}


def test_a_type_scoring_undeclared_metrics_fails_its_job_and_spares_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Recorded as done, the job would leave the task without its metric and out of every aggregate."""
    _, text = _study(tmp_path, 20, 6)
    spec = tmp_path / "study.yaml"
    spec.write_text(text.replace("[TS, CG, AU]", "[TS]").replace("type: multilabel", "type: unscored"))
    register_task_type(Unscored)  # for the run, and for the store to read its plan back
    try:
        code, out = _cli(["run", str(spec), "--set", "training.epochs=1"], monkeypatch, capsys)
        assert code == 1, out
        store = RunStore(tmp_path / "runs" / "plugin")
        states = {j.task_ids[0]: (j.id, store.job_state(j.id)) for j in store.jobs()}
    finally:
        unregister_task_type("unscored")
    (bad, bad_state), (_, good_state) = states["quadrants"], states["top_left"]
    assert (bad_state, good_state) == ("failed", "done")
    error = " ".join((store.job_dir(bad) / "error.txt").read_text().split())
    assert (
        "UsaggError: task type 'unscored' (test_tasktype_plugin) score() for task 'quadrants' returned the undeclared "
        "'Other'; it must return the metrics it declares (F1_micro, Hamming)"
    ) in error
