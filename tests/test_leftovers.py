"""H18's follow-ups: scipy-free t quantiles and power, sweep columns in load_results, advise's bounds on each scale,
report provenance before any write, stored_study confined, the public synthetic-completeness check, the backbone
registry's one unknown-name error."""

from __future__ import annotations

from pathlib import Path

import pytest
from scipy import stats as ss

from tests.cli_run import run_cli
from usagg.analysis.inputs import load_input
from usagg.analysis.report import write_report
from usagg.analysis.results import Row, write_results
from usagg.analysis.simulate import load_tasks, simulate_run_store
from usagg.analysis.summary import analyse
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


def test_t_quantile_refuses_what_it_cannot_compute() -> None:
    with pytest.raises(ValueError, match="whole number"):
        t_quantile(0.975, 2.5)  # type: ignore[arg-type]
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
    assert frame["training.lr_encoder"].dtype == "float64" and frame["model.backbone"].dtype == object
    shared = frame[frame["job_id"] == "TS-a"]
    assert shared["training.lr_encoder"].tolist() == [0.0001, 0.001]  # one row per point, told apart
    by_point = frame.groupby("training.lr_encoder")["value"].apply(list).to_dict()
    assert by_point == {0.0001: [0.6, 0.7], 0.001: [0.6, 0.8]}
