"""H18's follow-ups: scipy-free t quantiles and power, sweep columns in load_results, advise's bounds on each scale,
report provenance before any write, stored_study confined, the public synthetic-completeness check, the backbone
registry's one unknown-name error."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as ss

from tests.cli_run import run_cli
from usagg.analysis.advice_model import delta_bounds, ridge_predict
from usagg.analysis.advise import advise
from usagg.analysis.delta import compare, rescaled
from usagg.analysis.inputs import load_input
from usagg.analysis.report import write_report
from usagg.analysis.results import Row, write_results
from usagg.analysis.simulate import load_tasks, simulate_run_store
from usagg.analysis.summary import Analysis, analyse
from usagg.analysis.tdist import t_quantile, two_sided_power
from usagg.api import load_results
from usagg.results_schema import RESULT_COLUMNS
from usagg.safepath import UnsafePath
from usagg.store import RunStore

TASKS = Path(__file__).parent / "data" / "fmc_uia_tasks.yaml"


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 12, 29, 100])
@pytest.mark.parametrize("p", [0.025, 0.6, 0.9, 0.975, 0.995])
def test_t_quantile_matches_scipy(df: int, p: float) -> None:
    assert t_quantile(p, df) == pytest.approx(float(ss.t.ppf(p, df)), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("df", [1.0000001, 1.05, 1.3, 1.999, 2.5, 3.77, 9.2, 57.9, 1234.5, 8858.7])
@pytest.mark.parametrize("p", [0.025, 0.5000001, 0.6, 0.975, 0.9875, 0.99583, 0.9999, 0.999999])
def test_t_quantile_matches_scipy_at_a_welch_df(df: float, p: float) -> None:
    """The incomplete beta function's continued fraction: to 1e-10 near df 1 and p 1 - 1e-6, where Simpson's rule
    over cos^(df - 1) was 1e-4 off, and at the centre, where 1 - I would cancel."""
    assert t_quantile(p, df) == pytest.approx(float(ss.t.ppf(p, df)), rel=1e-10, abs=1e-15)


def test_t_quantile_refuses_what_it_cannot_compute() -> None:
    for df in (0.5, math.nan, -math.inf):
        with pytest.raises(ValueError, match="a number >= 1"):
            t_quantile(0.975, df)
    assert t_quantile(0.975, math.inf) == pytest.approx(float(ss.norm.ppf(0.975)), rel=1e-12)
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        t_quantile(1.0, 3)


@pytest.mark.parametrize("df", [2, 4, 8, 58])
@pytest.mark.parametrize("nc", [0.0, 1.0, 2.5, 6.0])
def test_two_sided_power_matches_the_noncentral_t(df: int, nc: float) -> None:
    crit = ss.t.ppf(0.975, df)
    expected = 1 - ss.nct.cdf(crit, df, nc) + ss.nct.cdf(-crit, df, nc)
    assert two_sided_power(nc, df, 0.05) == pytest.approx(float(expected), abs=1e-9)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return simulate_run_store(tmp_path / "runs" / "fmc", load_tasks(TASKS), seeds=(0, 1))


def _study_yaml_outside(root: Path, tmp_path: Path) -> Path:
    """study.yaml moved out of the store and linked back: what a received store may hold."""
    outside = tmp_path / "elsewhere.yaml"
    (root / "study.yaml").rename(outside)
    (root / "study.yaml").symlink_to(outside)
    return outside


def test_stored_study_refuses_a_study_yaml_linked_outside_the_store(store: Path, tmp_path: Path) -> None:
    assert RunStore(store).stored_study()["name"] == "fmc"
    outside = _study_yaml_outside(store, tmp_path)
    with pytest.raises(UnsafePath, match=r"study\.yaml \(the study a run store holds\).*outside") as err:
        RunStore(store).stored_study()
    assert str(outside) in str(err.value)


def test_report_refused_by_provenance_writes_nothing(store: Path, tmp_path: Path) -> None:
    """The analysis was made while the store was sound; the link appears before the report is written."""
    a = analyse(load_input(store, None))
    _study_yaml_outside(store, tmp_path)
    folder = tmp_path / "rep"
    with pytest.raises(UnsafePath, match="the spec a report shows"):
        write_report(a, folder)
    assert not folder.exists()


def test_usagg_report_on_a_store_linking_study_yaml_outside(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("USAGG_CACHE", str(tmp_path / "cache"))
    _study_yaml_outside(store, tmp_path)
    code, out = run_cli(["report", str(store), "--out", str(tmp_path / "rep")], monkeypatch, capsys)
    assert code == 2 and "study.yaml" in out and "outside" in out and "Traceback" not in out
    assert not (tmp_path / "rep").exists()


def test_load_results_keeps_the_swept_columns(tmp_path: Path) -> None:
    """Two points of training.lr_encoder (model.backbone swept with one value); TS's job is the same at both points
    (its rows once per point), CG's differs."""
    rows = []
    for lr, cg_value in (("0.0001", 0.7), ("0.001", 0.8)):
        point = (("training.lr_encoder", lr), ("model.backbone", "dinov3_test"))
        for paradigm, job, value in (("TS", "TS-a", 0.6), ("CG", f"CG-{lr}", cg_value)):
            rows.append(
                Row("sw", job, paradigm, "G", 0, 1.0, "a", "segmentation", "DSC", value, True, 10.0, sweep=point)
            )
    write_results(rows, tmp_path / "results.csv")
    frame = load_results(tmp_path / "results.csv")
    assert list(frame.columns) == [*RESULT_COLUMNS, "training.lr_encoder", "model.backbone"]
    import pandas as pd

    text = pd.Series(["x"]).dtype  # pandas' text dtype: str on pandas 3, object before
    assert frame["training.lr_encoder"].dtype == "float64" and frame["model.backbone"].dtype == text
    shared = frame[frame["job_id"] == "TS-a"]
    assert shared["training.lr_encoder"].tolist() == [0.0001, 0.001]  # one row per point, told apart
    by_point = frame.groupby("training.lr_encoder")["value"].apply(list).to_dict()
    assert by_point == {0.0001: [0.6, 0.7], 0.001: [0.6, 0.8]}


def _two_paradigms(path: Path, tasks: dict[str, tuple[str, str, float]], au: dict[str, float]) -> Path:
    """TS and AU over two seeds: task -> (type, metric, TS value), AU's value per task; n_train 10^(2 + i/4)."""
    rows = []
    for i, (t, (ttype, metric, ts)) in enumerate(tasks.items()):
        for seed in (0, 1):
            for p, job, value in (("TS", f"TS-{t}", ts), ("AU", "AU-all", au[t])):
                hib = metric != "MRE"
                n = 10 ** (2 + i / 4)
                rows.append(Row("b", f"{job}-s{seed}", p, f"G{t}", seed, 1.0, t, ttype, metric, value, hib, n))
    write_results(rows, path)
    return path


BOUNDS_TASKS = {
    "iou": ("detection", "IoU", 0.5),  # in [0, 1]
    "auc": ("classification", "AUC", 0.8),  # in [0, 1], chance 0.5
    "mre": ("regression", "MRE", 4.0),  # in [0, ∞), lower is better
}
INF = math.inf
EXPECTED_BOUNDS = {
    "relative": {"iou": (-100, 100), "auc": (-100, 25), "mre": (-INF, 100)},
    # ln 0 = −∞: no lowest Δ where higher is better, no highest where lower is
    "log_ratio": {"iou": (-INF, 100 * math.log(2)), "auc": (-INF, -100 * math.log(0.8)), "mre": (-INF, INF)},
    # headroom, a loss's D: 0.5 − 0 (IoU), 0.8 − 0.5 (AUC: chance), for MRE its gain's D (4 − 0): −(m − worst)/D·100
    "headroom": {"iou": (-100, 100), "auc": (-0.8 / 0.3 * 100, 100), "mre": (-INF, 100)},
}


@pytest.mark.parametrize("scale", list(EXPECTED_BOUNDS))
def test_advise_bounds_follow_the_scale(scale: str, tmp_path: Path) -> None:
    path = _two_paradigms(tmp_path / "r.csv", BOUNDS_TASKS, {"iou": 0.6, "auc": 0.85, "mre": 3.0})
    comp = rescaled(compare(load_input(None, path)), scale)
    for task, (low, high) in EXPECTED_BOUNDS[scale].items():
        assert delta_bounds(comp, 1.0, task) == (pytest.approx(low), pytest.approx(high)), task


def test_log_ratio_predictions_are_not_cut_at_minus_100(tmp_path: Path) -> None:
    """A steep fall of AU's IoU with size: on log_ratio a Δ below −100 is possible (IoU 0.5 → 0.025 is −300), so the
    held-out predictions are the ridge's own, only the top end ln(1/0.5)·100 cuts them."""
    logn = {"a": 1.0, "b": 1.1, "c": 1.2, "d": 1.3, "e": 3.0}
    au = {"a": 0.7, "b": 0.55, "c": 0.4, "d": 0.25, "e": 0.025}
    rows = []
    for p, value in (("TS", dict.fromkeys(logn, 0.5)), ("AU", au)):
        for seed in (0, 1):
            for t in logn:
                job = t if p == "TS" else "all"
                rows.append(
                    Row("b", f"{p}-{job}-s{seed}", p, f"G{t}", seed, 1.0, t, "detection", "IoU", value[t], True,
                        10 ** logn[t])
                )  # fmt: skip
    write_results(rows, tmp_path / "r.csv")
    inp = load_input(None, tmp_path / "r.csv")
    adv = advise(Analysis(inp, rescaled(compare(inp), "log_ratio"), []))
    x = np.asarray([[v] for v in logn.values()])
    y = np.asarray([100 * math.log(v / 0.5) for v in au.values()])
    held = [ridge_predict(np.delete(x, i, 0), np.delete(y, i), x[[i]])[0] for i in range(5)]
    assert min(held) < -100
    top = 100 * math.log(2)
    # (n_train goes through the CSV with 6 digits, hence the tolerance)
    assert [r.loto_predicted["AU"] for r in adv.rows] == pytest.approx([min(top, v) for v in held], rel=1e-4)
    assert all(r.bounds == (-INF, pytest.approx(top)) for r in adv.rows)


def test_synth_complete_is_public_and_reads_the_marker(tmp_path: Path) -> None:
    """What `usagg validate` asks before saying a synthetic benchmark is not generated yet."""
    from usagg.cachedir import SYNTH_MARKER
    from usagg.data.source import synth_complete, synth_key
    from usagg.spec.models import SynthSpec

    spec = SynthSpec(image_size=32)
    key = synth_key(spec)
    assert not synth_complete(tmp_path, key, spec)  # an empty folder
    (tmp_path / SYNTH_MARKER).write_text(key + "\n")
    assert synth_complete(tmp_path, key, spec)
    assert not synth_complete(tmp_path, synth_key(SynthSpec(image_size=64)), SynthSpec(image_size=64))


def test_an_unknown_backbone_is_the_registrys_error() -> None:
    """create_vit names the closest registered backbone and where to read how to add one, as a spec would."""
    from usagg.model.backbones import create_vit

    with pytest.raises(ValueError, match=r"unknown backbone 'dinov3_smal' \(did you mean 'dinov3_small'\?\)") as err:
        create_vit("dinov3_smal")
    assert "How to add a backbone" in str(err.value)
