"""The wheel carries what an installed usagg needs outside the repo: catalogs, studies, py.typed.

The wheel is built offline from a copy of the sources (so the repo gets no build/ folder), unpacked,
and its own package validates the packaged FMC_UIA study from a folder outside the repo.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # builds a wheel

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DATA = ["usagg/py.typed"] + [
    p.relative_to(REPO).as_posix()
    for folder in ("catalogs", "studies")
    for p in (REPO / "usagg" / folder).glob("*.yaml")
]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "usagg", src / "usagg", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheelhouse")
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)]
    done = subprocess.run(build, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (whl,) = out.glob("usagg-*.whl")
    return whl


def test_the_wheel_holds_catalogs_studies_and_py_typed(wheel: Path) -> None:
    assert len(PACKAGE_DATA) == 8  # py.typed, three catalogs, four studies
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for name in PACKAGE_DATA:
            assert name in names, f"{name} is not in {wheel.name}"
            assert z.read(name) == (REPO / name).read_bytes()
        assert "usagg/cli/init.py" in names and not any(n.startswith(("tests/", "studies/")) for n in names)


def test_the_installed_package_validates_the_fmc_uia_study_outside_the_repo(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "200"}

    def usagg(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "usagg", *args], cwd=outside, env=env, capture_output=True, text=True
        )

    where = subprocess.run(
        [sys.executable, "-c", "import usagg; print(usagg.__file__)"],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
    )
    assert Path(where.stdout.strip()) == site / "usagg" / "__init__.py"  # the unpacked wheel, not the checkout
    made = usagg("init", "--from", "fmc_uia", "x")
    assert made.returncode == 0, made.stderr
    checked = usagg("validate", "x/fmc_uia.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "tasks: 27 (3 regression, 9 classification, 3 detection, 12 segmentation)" in checked.stdout
    assert "jobs: 111 (TS 81, CG 27, AU 3)" in checked.stdout
