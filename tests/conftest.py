"""Shared test settings: no network, few threads, a private cache, CUDA tests skipped without a GPU."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Under pytest-xdist (`make test` runs one worker per core) each worker keeps to one thread, so the
# workers share the cores instead of fighting over them; a plain `pytest` keeps two. The xdist controller
# loads this file too, before it starts the workers, which inherit its environment: what it set here is
# marked, so a worker replaces it (two OpenMP threads per worker on two cores spin against each other and
# ran some tests a hundred times slower); a value the user gave stays.
if os.environ.get("PYTEST_XDIST_WORKER"):
    if os.environ.get("USAGG_TEST_THREADS_FROM_CONFTEST") or "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = "1"
elif "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = "2"
    os.environ["USAGG_TEST_THREADS_FROM_CONFTEST"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
# Memoised analysis outputs and decode caches go to a throw-away folder, never the user's ~/.cache/usagg.
_CACHE = tempfile.TemporaryDirectory(prefix="usagg-test-cache-")
os.environ["USAGG_CACHE"] = _CACHE.name
# usagg's key that seals compile caches (usagg/cachetrust.py `key_folder`) too: never the user's ~/.config/usagg.
os.environ["XDG_CONFIG_HOME"] = str(Path(_CACHE.name) / "config")


@pytest.fixture(scope="session")
def small_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic benchmark at its smallest (9 tasks, 8 train and 4 val images of 64 px each), made once per test
    process. Read only: a test that changes it copies it (`data_copy`)."""
    from usagg.data.synth import generate_benchmark
    from usagg.spec.models import SynthSpec

    return generate_benchmark(
        tmp_path_factory.mktemp("synth") / "data", SynthSpec(image_size=64, default_size=8, val_size=4)
    )


@pytest.fixture
def data_copy(small_synth: Path, tmp_path: Path) -> Path:
    """A copy of `small_synth` of this test's own, tmp_path/data, to change."""
    return Path(shutil.copytree(small_synth, tmp_path / "data"))


@pytest.fixture(scope="session")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny hand-written FMC_UIA layout (tests/test_data_support.py `tiny_layout`: one task of each type, 6 train
    and 3 val images each), made once per test process. Read only: a test that changes it copies it (`data`)."""
    from test_data_support import tiny_layout

    return tiny_layout(tmp_path_factory.mktemp("clean") / "data")


@pytest.fixture
def data(clean: Path, tmp_path: Path) -> Path:
    """A copy of `clean` of this test's own, tmp_path/data, to change (links copied as links)."""
    return Path(shutil.copytree(clean, tmp_path / "data", symlinks=True))


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow sqlite store, its schema migrated: made once per test process (xdist worker), since
    migrating a new store takes seconds. Read only: a test copies it (`mlflow_uri`)."""
    from mlflow.tracking import MlflowClient

    template = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{template}").search_experiments()  # creates and migrates it
    return template


@pytest.fixture
def mlflow_uri(mlflow_template: Path, tmp_path: Path) -> str:
    """The URI of a new MLflow sqlite store of this test's own, tmp_path/mlflow.db (a copy of the template)."""
    db = tmp_path / "mlflow.db"
    shutil.copyfile(mlflow_template, db)
    return f"sqlite:///{db}"


# Seconds each of the heaviest files takes under `make test` (summed test durations, two xdist workers on the
# 2-core VM; `--durations=0`). Under xdist the heaviest files start first, so each worker ends on short tests
# and the run does not wait on one long test started last (issue 27.7). A file not listed weighs a second per
# test marked `slow`; a stale figure only costs balance, never a result.
FILE_SECONDS = {
    "test_gpu_check.py": 45,
    "test_known_answer.py": 45,
    "test_run_cli.py": 30,
    "test_analysis_memo.py": 25,
    "test_executors.py": 20,
    "test_staged_run.py": 18,
    "test_figures_layout.py": 18,
    "test_cuda_path.py": 16,
    "test_tables_pandas.py": 11,
    "test_selection_gap.py": 10,
    "test_kept_model.py": 10,
    "test_engine_trainer.py": 10,
    "test_model_m2dino.py": 9,
    "test_engine_affinity.py": 8,
    "test_one_channel.py": 8,
}


def _heaviest_files_first(items: list[pytest.Item]) -> None:
    """Reorder `items` in place: whole files, heaviest first, each file's tests kept together and in order.

    A file stays contiguous so its module-scoped fixtures are built once per worker that runs it.
    """
    weight: dict[Path, float] = {}
    for item in items:
        slow = item.get_closest_marker("slow") is not None
        weight[item.path] = FILE_SECONDS.get(item.path.name, weight.get(item.path, 0.0) + slow)
    order = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda item: (-weight[item.path], order[id(item)]))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Heaviest files first under xdist; skip tests marked `cuda` when torch sees no CUDA device."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        _heaviest_files_first(items)
    cuda = [item for item in items if item.get_closest_marker("cuda") is not None]
    if not cuda:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in cuda:
        item.add_marker(skip)


@pytest.fixture
def dinov3_test_weights(tmp_path: Path) -> Path:
    """A randomly initialised dinov3_test checkpoint under the official DINOv3 key names (seed 0): it fits
    dinov3_test and is of the wrong size for every other backbone."""
    import torch

    from usagg.model.backbones import create_vit
    from usagg.model.weights import to_official_state_dict

    torch.manual_seed(0)
    path = tmp_path / "dinov3_test_pretrain.pth"
    torch.save(to_official_state_dict(create_vit("dinov3_test")), path)
    return path
