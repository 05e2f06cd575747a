"""The Slurm executor against a fake cluster: `sbatch`, `srun`, `sacct` and `squeue` on PATH that run each array
element here (as Slurm would: SLURM_* set, the script's srun line run) and report a chosen final state per element.

Each defect of a cluster user's audit has its test: sbatch refusing the array, `%` in the log folder, submitit
missing, `execution.devices` under Slurm, failed elements collected without a wait each, an element left PREEMPTED,
and a second `usagg run` while the array is still queued.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cli_run import run_cli

from tests.tiny_study import THREE_TASKS, small_study
from usagg.errors import UsaggError
from usagg.execute.base import make_executor
from usagg.execute.slurm import RETRY, SlurmExecutor, slurm_parameters
from usagg.plan import plan
from usagg.run.studyrun import StudyRun
from usagg.spec.load import dump_study, load_study
from usagg.spec.models import ExecutionSpec, SlurmSpec, Study
from usagg.store import RunStore

TESTS_DIR = str(Path(__file__).parent)
#: Each fake cluster numbers its arrays from its own thousand: submitit's sacct watcher is shared by the process and
#: keeps what it learnt of every id, as a real cluster, which never reuses one, allows.
_ARRAY_IDS = itertools.count(5001, 1000)

SBATCH = """#!{python}
import json, os, re, shutil, subprocess, sys
from pathlib import Path
cluster = Path({cluster!r})
text = Path(sys.argv[-1]).read_text()
(cluster / "submitted.sh").write_text(text)
if (cluster / "reject").exists():
    sys.stderr.write((cluster / "reject").read_text())
    sys.exit(1)
array_id = int((cluster / "next_id").read_text())
(cluster / "next_id").write_text(str(array_id + 1))
script = cluster / f"{{array_id}}.sh"
script.write_text(text)
plan = json.loads((cluster / "plan.json").read_text()) if (cluster / "plan.json").exists() else {{}}
array = re.search(r"#SBATCH --array=0-(\\d+)", text)  # submitit submits a single job as a plain job
for index in range(int(array.group(1)) + 1 if array else 1):
    element = f"{{array_id}}_{{index}}" if array else str(array_id)
    state = cluster / "states" / element
    state.write_text(plan.get(str(index), "PENDING"))
    if str(index) in plan:
        continue
    env = {{**os.environ, "SLURM_JOB_ID": str(array_id * 100 + index if array else array_id)}}
    if array:
        env.update(SLURM_ARRAY_JOB_ID=str(array_id), SLURM_ARRAY_TASK_ID=str(index))
    subprocess.Popen([sys.executable, str(cluster / "node.py"), str(state), str(script)], env=env,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(f"Submitted batch job {{array_id}}")
"""

NODE = """import subprocess, sys
from pathlib import Path
state = Path(sys.argv[1])
state.write_text("RUNNING")
state.write_text("COMPLETED" if subprocess.call(["bash", sys.argv[2]]) == 0 else "FAILED")
"""

SRUN = """#!{python}
import os, subprocess, sys
args, files = sys.argv[1:], {{}}
while args[0].startswith("--"):
    flag = args.pop(0)
    if flag in ("--output", "--error"):
        files[flag] = args.pop(0)
env = os.environ
def expand(path):
    path = path.replace("%j", env["SLURM_JOB_ID"]).replace("%t", "0")
    return path.replace("%A", env.get("SLURM_ARRAY_JOB_ID", "")).replace("%a", env.get("SLURM_ARRAY_TASK_ID", ""))
with open(expand(files["--output"]), "a") as out, open(expand(files["--error"]), "a") as err:
    sys.exit(subprocess.call(args, stdout=out, stderr=err))
"""

SACCT = """#!{python}
import sys
from pathlib import Path
cluster = Path({cluster!r})
if (cluster / "sacct_fails").exists():
    sys.stderr.write("sacct: error: Slurm accounting storage is disabled\\n")
    sys.exit(1)
lag = (cluster / "sacct_lag").read_text().split() if (cluster / "sacct_lag").exists() else []
args = sys.argv[1:]
fields = args[args.index("-o") + 1].split(",")
wanted = {{args[i + 1] for i, a in enumerate(args) if a == "-j"}} - set(lag)
print("|".join(fields))
for f in sorted((cluster / "states").iterdir()):
    if f.name.split("_")[0] in wanted:
        row = {{"JobID": f.name, "State": f.read_text().strip(), "NodeList": "fakenode"}}
        print("|".join(row[k] for k in fields))
"""

SQUEUE = """#!{python}
import sys
from pathlib import Path
cluster = Path({cluster!r})
args = sys.argv[1:]
wanted = next(a.split("=", 1)[1] for a in args if a.startswith("--jobs=")).split(",")
assert args[args.index("-o") + 1] == "%i|%T" and "-h" in args and "-r" in args, args
known = [f for f in sorted((cluster / "states").iterdir()) if f.name.split("_")[0] in wanted]
if not known:
    sys.stderr.write("slurm_load_jobs error: Invalid job id specified\\n")
    sys.exit(1)
for f in known:
    if f.read_text().strip() in ("PENDING", "RUNNING"):
        print(f"{{f.name}}|{{f.read_text().strip()}}")
"""


class FakeCluster:
    """The fake cluster's folder: `plan(index=STATE)` makes elements end in a state without running, `reject(text)`
    makes sbatch refuse, `state(id)` / `set_state(id, STATE)` read and change what sacct and squeue say,
    `sacct_lag(array)` hides an array from sacct (slurmdbd behind slurmctld) while squeue lists it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.first_id = next(_ARRAY_IDS)
        (root / "states").mkdir(parents=True)
        (root / "next_id").write_text(str(self.first_id))

    def plan(self, **states: str) -> None:
        (self.root / "plan.json").write_text(json.dumps({k.lstrip("_"): v for k, v in states.items()}))

    def reject(self, text: str) -> None:
        (self.root / "reject").write_text(text)

    def state(self, element: str) -> str:
        return (self.root / "states" / element).read_text()

    def set_state(self, element: str, state: str) -> None:
        (self.root / "states" / element).write_text(state)

    def sacct_lag(self, *arrays: int) -> None:
        (self.root / "sacct_lag").write_text(" ".join(map(str, arrays)))

    @property
    def submitted(self) -> Path:
        return self.root / "submitted.sh"


#: The one task of the CLI tests' studies.
MALIGNANCY_TASK = "{id: thyroid_malignancy, type: classification, num_classes: 2, group: Thyroid}"


def write_spec(tmp_path: Path, execution: str, paradigms: str = "TS", tasks: str = MALIGNANCY_TASK) -> Path:
    """`tmp_path/s.yaml`: study `s` of the synthetic benchmark at 32 px with these tasks, paradigms and execution."""
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: s\ndata: {synthetic: {seed: 0, image_size: 32, default_size: 4, val_size: 2}}\n"
        f"tasks: [{tasks}]\nmodel: {{backbone: dinov3_test, image_size: 32}}\nparadigms: [{paradigms}]\n"
        f"execution: {execution}\n"
    )
    return spec


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    """A fake cluster on PATH; its elements import this file (the job functions) from the tests folder."""
    fake = FakeCluster(tmp_path / "cluster")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", SBATCH), ("srun", SRUN), ("sacct", SACCT), ("squeue", SQUEUE)):
        (bin_dir / name).write_text(text.format(python=sys.executable, cluster=str(fake.root)))
        (bin_dir / name).chmod(0o755)
    (fake.root / "node.py").write_text(NODE)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (TESTS_DIR, os.environ.get("PYTHONPATH")) if p))
    return fake


def job_done(store_root: str, job_id: str, **_: Any) -> str:
    """run_one's contract at its shortest: the job locked, running, done."""
    store = RunStore(store_root)
    with store.lock(job_id):
        store.set_state(job_id, "running")
        store.set_state(job_id, "done")
    return "done"


def study_of(tmp_path: Path, executor: str = "slurm") -> Study:
    """A study of three TS jobs whose store is under tmp_path/runs."""
    return small_study(
        "sl", THREE_TASKS, output_root=tmp_path / "runs", paradigms=["TS"], execution=ExecutionSpec(executor=executor)
    )


def make_store(tmp_path: Path) -> tuple[RunStore, list[str]]:
    study = study_of(tmp_path)
    jobs = plan(study)
    store = RunStore(tmp_path / "runs" / "sl")
    store.init(dump_study(study), jobs)
    return store, [j.id for j in jobs]


def executor_for(store: RunStore, **options: Any) -> SlurmExecutor:
    return SlurmExecutor(store.root, SlurmSpec(time_min=5, cpus_per_task=1, mem_gb=4), poll_s=0.1, **options)


# --------------------------------------------------------------------------- 1. sbatch refuses the array

REFUSAL = "sbatch: error: Batch job submission failed: Invalid partition name specified\n"


def test_a_refused_array_is_one_paragraph_and_leaves_no_submission_behind(tmp_path: Path, cluster: FakeCluster) -> None:
    store, ids = make_store(tmp_path)
    cluster.reject(REFUSAL)
    executor = SlurmExecutor(store.root, SlurmSpec(partition="gpux", account="mylab"))
    with pytest.raises(UsaggError) as err:
        executor.run(ids, job_done)
    said = str(err.value)
    assert "Invalid partition name specified" in said and "nothing was submitted" in said
    assert "partition gpux" in said and "account mylab" in said and "qos (cluster default)" in said
    assert list(store.slurm_dir.iterdir()) == []  # the submission's folder and its pickles are gone
    assert {store.job_state(j) for j in ids} == {"pending"} and not any(store.queued_on_slurm(j) for j in ids)


@pytest.mark.slow
def test_usagg_run_says_why_sbatch_refused_then_does_not_submit_a_job_still_queued(
    tmp_path: Path, cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(tmp_path, "{executor: slurm, slurm: {partition: gpux}}")
    monkeypatch.chdir(tmp_path)
    cluster.reject(REFUSAL)
    code, out = run_cli(["run", str(spec)], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in out and "FailedJobError" not in out, out
    flat = " ".join(out.split())
    assert "Invalid partition name specified" in flat and "execution.slurm" in flat and "partition gpux" in flat
    store = RunStore(tmp_path / "runs" / "s")
    (job_id,) = store.job_ids()
    assert store.job_state(job_id) == "pending" and list(store.slurm_dir.iterdir()) == []

    # an earlier run submitted it and stopped waiting; Slurm still has it: not submitted again (sbatch would refuse)
    element = f"{cluster.first_id}_0"
    store.mark_queued_on_slurm(job_id, element)
    cluster.set_state(element, "PENDING")
    code, out = run_cli(["run", str(spec)], monkeypatch, capsys)
    flat = " ".join(out.split())
    said = f"1 job still queued on Slurm as {element} (pending or running); not submitted again"
    assert said in flat, out
    # not finished: `usagg run && usagg report` must not go on to report a study whose job waits on the cluster
    assert code == 3 and f"not finished: 1 job an earlier `usagg run` submitted still waits on Slurm ({job_id} " in flat
    code, out = run_cli(["run", str(spec), "--dry-run"], monkeypatch, capsys)
    assert f"skip (queued on Slurm as {element})" in " ".join(out.split()), out
    code, out = run_cli(["status", str(store.root)], monkeypatch, capsys)  # status names the Slurm job it waits as
    assert code == 0 and f"submitted to Slurm as {element}" in " ".join(out.split()), out


# --------------------------------------------------------------------------- 2. `%` in the log folder


def test_a_percent_in_output_root_is_refused_by_validate_under_slurm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(
        'name: s\noutput_root: "runs/10%at"\ndata: {synthetic: {seed: 0}}\nmodel: {backbone: dinov3_test}\n'
        "tasks: [{id: t, type: classification, num_classes: 2, group: G}]\nparadigms: [TS]\n"
    )
    code, out = run_cli(["validate", str(spec), "--set", "execution.executor=slurm"], monkeypatch, capsys)
    flat = " ".join(out.split())
    assert code == 2 and "output_root 'runs/10%at' contains '%'" in flat and "%j the job id" in flat, out
    assert "Traceback" not in out


def test_a_percent_in_the_absolute_log_folder_is_refused_before_sbatch(
    tmp_path: Path, cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative output_root passes the spec; the current folder makes the path submitit writes absolute."""
    here = tmp_path / "10%at"
    here.mkdir()
    monkeypatch.chdir(here)
    executor = SlurmExecutor(Path("runs") / "s", SlurmSpec())
    with pytest.raises(UsaggError, match=r"log folder '.*/10%at/runs/s/slurm' contains '%'.*%a the array index"):
        executor.run(["TS-a-f1-s0"], job_done)
    assert not cluster.submitted.exists() and not (here / "runs" / "s" / "slurm").exists()


def test_a_host_with_sbatch_but_no_srun_is_refused_and_slurm_is_never_submitits_guess(
    tmp_path: Path, cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real-data audit on a host with sbatch but no srun: submitit's AutoExecutor picks Slurm by srun, so it ran
    the jobs as local processes on the login node, the console said they were on Slurm, and Ctrl-C printed "the jobs
    submitted to Slurm go on there" and a KeyboardInterrupt traceback. Such a host is refused before anything is
    written (submitit's Slurm executor needs srun to submit), and the executor is Slurm by name, never a guess."""
    import submitit

    monkeypatch.setattr(submitit.AutoExecutor, "which", staticmethod(lambda: "local"))  # what it guessed there
    store, _ = make_store(tmp_path)
    assert make_executor(ExecutionSpec(executor="slurm"), store.root).make_submitit_executor().cluster == "slurm"

    srun = next(p for p in os.environ["PATH"].split(os.pathsep) if (Path(p) / "srun").is_file()) + "/srun"
    os.remove(srun)
    with pytest.raises(UsaggError) as err:
        make_executor(ExecutionSpec(executor="slurm"), store.root)
    said = str(err.value)
    assert f"has `sbatch` on PATH ({Path(srun).parent / 'sbatch'}) but no `srun`" in said and "--executor local" in said
    (tmp_path / "study").mkdir()
    spec = write_spec(tmp_path / "study", "{executor: slurm}")
    monkeypatch.chdir(tmp_path / "study")
    code, out = run_cli(["run", str(spec)], monkeypatch, capsys)
    assert code == 2 and "but no `srun`" in " ".join(out.split()) and "Traceback" not in out, out
    assert not (tmp_path / "study" / "runs").exists() and not cluster.submitted.exists()  # nothing written, submitted


def test_validate_says_what_run_refuses_of_slurm_and_run_refuses_it_before_the_data_check(
    tmp_path: Path, cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real-data audit: `validate` accepted `devices: cuda` with `slurm.gpus_per_node: 0` and a host without sbatch,
    which `usagg run` refused, and run (and its --dry-run) refused them only after ~14 s of data check. The spec's
    contradiction is validate's error (exit 2), the host's a warning; run refuses both before checking the data."""
    import usagg.run.studyrun

    checked: list[str] = []
    real_check = usagg.run.studyrun.check_study_data

    def check_study_data(*args: Any, **kwargs: Any) -> Any:
        checked.append("data")
        return real_check(*args, **kwargs)

    monkeypatch.setattr(usagg.run.studyrun, "check_study_data", check_study_data)
    spec = write_spec(tmp_path, "{executor: slurm, devices: cuda, slurm: {gpus_per_node: 0}}")
    (tmp_path / "data" / "train").mkdir(parents=True)  # a data root to check (the synthetic one is not generated)
    spec.write_text(
        spec.read_text().replace(
            "data: {synthetic: {seed: 0, image_size: 32, default_size: 4, val_size: 2}}", "data: {root: data}"
        )
    )
    monkeypatch.chdir(tmp_path)
    for args in (["validate", str(spec)], ["run", str(spec)], ["run", str(spec), "--dry-run"]):
        code, out = run_cli(args, monkeypatch, capsys)
        flat = " ".join(out.split())
        assert code == 2 and "execution.devices is cuda, but execution.slurm.gpus_per_node is 0" in flat, out
        assert "Traceback" not in out and checked == [], (args, checked)
    assert not (tmp_path / "runs").exists()

    good = write_spec(tmp_path, "{executor: slurm, devices: cpu}")
    code, out = run_cli(["validate", str(good), "--no-data-check"], monkeypatch, capsys)
    assert code == 0 and "warning" not in out, out  # sbatch and srun of the fake cluster on PATH
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))  # a laptop: no Slurm
    code, out = run_cli(["validate", str(good), "--no-data-check"], monkeypatch, capsys)
    flat = " ".join(out.split())
    assert (
        code == 0 and "warning: `usagg run` would refuse this study on this host: execution.executor is slurm, " in flat
    )
    assert "no `sbatch` on PATH" in flat, out
    code, out = run_cli(["run", str(good), "--dry-run"], monkeypatch, capsys)
    assert code == 2 and "no `sbatch` on PATH" in " ".join(out.split()) and checked == [], out


# --------------------------------------------------------------------------- 3. submitit not installed


def test_slurm_without_submitit_is_the_install_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` raises ModuleNotFoundError
    monkeypatch.delitem(sys.modules, "usagg.execute.slurm")
    with pytest.raises(UsaggError, match=r"submitit.*is not installed.*pip install -e '\.\[slurm\]'") as err:
        make_executor(ExecutionSpec(executor="slurm"), tmp_path)
    assert err.value.__cause__ is None and err.value.__suppress_context__


# --------------------------------------------------------------------------- 4. execution.devices under Slurm


def test_devices_decide_the_gpu_request(tmp_path: Path, cluster: FakeCluster) -> None:
    assert slurm_parameters(SlurmSpec(), "x", "cpu")["gpus_per_node"] is None  # no GPU line at all
    assert slurm_parameters(SlurmSpec(gpus_per_node=1), "x", "cpu")["gpus_per_node"] == 1  # set: kept
    assert slurm_parameters(SlurmSpec(), "x", "auto")["gpus_per_node"] == 1
    assert slurm_parameters(SlurmSpec(), "x", "cuda")["gpus_per_node"] == 1
    cpu = make_executor(ExecutionSpec(executor="slurm", devices="cpu"), tmp_path).make_submitit_executor()
    assert "gpus" not in cpu._executor._make_submission_file_text("CMD", "uid")  # type: ignore[attr-defined]
    with pytest.raises(UsaggError, match=r"execution.devices is cuda, but execution.slurm.gpus_per_node is 0"):
        make_executor(ExecutionSpec(executor="slurm", devices="cuda", slurm=SlurmSpec(gpus_per_node=0)), tmp_path)
    gres = SlurmSpec(gpus_per_node=0, additional={"gres": "gpu:a100:1"})
    assert make_executor(ExecutionSpec(executor="slurm", devices=[0], slurm=gres), tmp_path).devices == [0]


def test_slurm_feature_and_hostlist_syntax_pass_quoted_and_flags_are_bare(tmp_path: Path, cluster: FakeCluster) -> None:
    """`a100|h100` and `gpu[01-04]` were refused although submitit quotes them; `requeue` could only be a string,
    which submitit writes as `--requeue=''`."""
    import shlex

    extra = {"constraint": "[a100|h100]&(ib*2)", "exclude": "gpu[01-04]", "requeue": True, "exclusive": True}
    study = load_study(write_spec(tmp_path, f"{{executor: slurm, slurm: {{additional: {json.dumps(extra)}}}}}"))
    ex = make_executor(study.execution, tmp_path / "runs" / "s").make_submitit_executor()
    script = ex._executor._make_submission_file_text("CMD", "uid")  # type: ignore[attr-defined]
    sbatch = [a for ln in script.splitlines() if ln.startswith("#SBATCH") for a in shlex.split(ln[7:])]
    assert "--constraint=[a100|h100]&(ib*2)" in sbatch and "--exclude=gpu[01-04]" in sbatch, sbatch
    assert "--requeue" in sbatch and "--exclusive" in sbatch, sbatch
    for bad in (
        {"constraint": "a100\n#SBATCH --wrap=x"},
        {"constraint": "a$(id)"},
        {"requeue": "yes"},
        {"exclusive": False},
    ):
        with pytest.raises(ValueError):
            SlurmSpec(additional=bad)


@pytest.mark.slow
def test_a_job_asking_for_cuda_fails_on_a_node_without_a_gpu_naming_the_node(
    tmp_path: Path, cluster: FakeCluster
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has a GPU: the fake node would see it")
    store, ids = make_store(tmp_path)
    states = executor_for(store, devices="cuda").run(ids[:1], job_done)
    assert states == {ids[0]: "failed"}
    error = store.job_record(ids[0])["error"]
    assert f"node {socket.gethostname()} (Slurm job {cluster.first_id}) sees no CUDA device" in error  # one: no array
    assert "execution.devices is cuda" in error and "gpus_per_node" in error


def test_a_node_importing_other_usagg_code_fails_the_job_naming_both(
    tmp_path: Path, cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkout changed while the array waited (or a node's other install) must not train the study's jobs."""
    import usagg

    other = tmp_path / "other_checkout"
    shutil.copytree(Path(usagg.__file__).parent, other / "usagg", ignore=shutil.ignore_patterns("__pycache__"))
    with (other / "usagg" / "names.py").open("a") as changed:
        changed.write("# a later commit\n")
    repo = Path(__file__).resolve().parent.parent  # for the pickled job_done; the node starts outside it
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(other), str(repo), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.chdir(tmp_path)
    store, ids = make_store(tmp_path)
    states = executor_for(store).run(ids[:1], job_done)
    assert states == {ids[0]: "failed"}
    error = store.job_record(ids[0])["error"]
    assert f"imports usagg {usagg.__version__} from {other / 'usagg'}" in error
    assert f"submitted this job used usagg {usagg.__version__} from {Path(usagg.__file__).resolve().parent}" in error
    assert "--retry-failed" in (store.paths(ids[0]).error.read_text())


# --------------------------------------------------------------------------- 5. failures collected at once


def test_failed_elements_are_collected_without_a_wait_each_and_name_the_setting(
    tmp_path: Path, cluster: FakeCluster
) -> None:
    store, ids = make_store(tmp_path)
    cluster.plan(_0="OUT_OF_MEMORY", _1="TIMEOUT", _2="CANCELLED by 4242")
    start = time.monotonic()
    states = executor_for(store).run(ids, job_done)  # results_timeout_s unset: submitit's 15 s
    assert time.monotonic() - start < 10  # three failures each waiting submitit's 15 s took 46 s
    assert states == dict.fromkeys(ids, "failed")
    errors = {j: store.job_record(j)["error"] for j in ids}
    assert "state OUT_OF_MEMORY: ran out of memory: raise execution.slurm.mem_gb (now 4)" in errors[ids[0]]
    assert "raise execution.slurm.time_min (now 5)" in errors[ids[1]] and RETRY in errors[ids[1]]
    assert f"raise execution.slurm.mem_gb (now 4), then {RETRY}" in errors[ids[0]]
    assert "state CANCELLED: was cancelled" in errors[ids[2]]
    assert "did not complete" in store.error_text(ids[0])  # type: ignore[operator]
    assert not any(store.queued_on_slurm(j) for j in ids)  # collected: the records are gone


def test_only_a_completed_element_gets_the_grace_for_its_result_file(tmp_path: Path) -> None:
    """A slow shared file system may show a completed job's result late: submitit's wait stays for that case only."""
    store, ids = make_store(tmp_path)

    def element(state: str) -> Any:
        missing = SimpleNamespace(exists=lambda: False)
        paths = SimpleNamespace(result_pickle=missing, folder=tmp_path)
        job = SimpleNamespace(job_id="1_0", state=state, paths=paths)
        job.done, job._results_timeout_s = (lambda: True), 15
        job.result = lambda: ("done", "finished", {"state": "done"})
        return job

    executor = executor_for(store)
    completed, oom = element("COMPLETED"), element("OUT_OF_MEMORY")
    assert executor._collect(ids[0], completed) == ("done", "finished", {"state": "done", "slurm_job_id": "1_0"})
    executor._collect(ids[1], oom)
    assert (completed._results_timeout_s, oom._results_timeout_s) == (15, 0)


def test_completed_without_a_result_here_is_done_when_the_store_says_so_else_asks_where_output_root_is(
    tmp_path: Path, cluster: FakeCluster
) -> None:
    """A result late on slow NFS, or never seen on the login node (output_root on a node's /tmp): the run said
    "failed: did not complete (state COMPLETED)" beside a done summary and left an error.txt in a done job."""
    store, ids = make_store(tmp_path)
    job_done(str(store.root), ids[0])  # its job.json came through; only the result pickle is missing
    cluster.plan(_0="COMPLETED", _1="COMPLETED")
    heard: list[tuple[str, str, dict[str, Any]]] = []
    executor = executor_for(store, results_timeout_s=0.2)
    states = executor.run(ids[:2], job_done, lambda *event: heard.append(event))
    assert states == {ids[0]: "done", ids[1]: "failed"}
    assert not store.paths(ids[0]).error.exists() and store.job_state(ids[0]) == "done"
    error = store.job_record(ids[1])["error"]
    assert f"Slurm says {cluster.first_id}_1 COMPLETED but no result reached {store.root} after 0.2 s" in error
    assert "is output_root on a filesystem the login node shares" in error and "did not complete" not in error
    assert error.endswith("Its log did not reach this host either.") and "never started" not in error, error
    notes = [info["text"] for _, event, info in heard if event == "note"]
    assert any(f"Slurm says {cluster.first_id}_0 COMPLETED; waiting up to 0.2 s for its result" in n for n in notes)
    assert [event for jid, event, _ in heard if jid == ids[0] and event != "note"] == ["submitted", "finished"]


def test_a_failure_recorded_late_leaves_a_done_job_alone(tmp_path: Path) -> None:
    from usagg.execute.base import record_failure

    store, ids = make_store(tmp_path)
    job_done(str(store.root), ids[0])
    record_failure(store.root, ids[0], "Slurm job 1_0 did not complete (state COMPLETED)")
    assert store.job_state(ids[0]) == "done" and not store.paths(ids[0]).error.exists()


def test_sacct_down_is_one_line_with_squeues_view_and_the_failure_is_reported_once_it_answers(
    tmp_path: Path, cluster: FakeCluster, capfd: pytest.CaptureFixture[str]
) -> None:
    """slurmdbd down: every poll printed sacct's error and submitit's "Bypassing sacct error" warning twice."""
    store, ids = make_store(tmp_path)
    cluster.plan(_0="OUT_OF_MEMORY")
    (cluster.root / "sacct_fails").touch()
    notes: list[str] = []

    def on_event(job_id: str, event: str, info: dict[str, Any]) -> None:
        if event == "note":
            notes.append(info["text"])
            if "sacct does not answer" in info["text"]:
                (cluster.root / "sacct_fails").unlink()  # slurmdbd is back

    back = threading.Timer(30, (cluster.root / "sacct_fails").unlink, kwargs={"missing_ok": True})
    back.start()  # without the line (before its fix) the run would wait for slurmdbd forever
    try:
        states = executor_for(store).run(ids[:1], job_done, on_event)
    finally:
        back.cancel()
    assert states == {ids[0]: "failed"} and "state OUT_OF_MEMORY" in store.job_record(ids[0])["error"]
    down = [n for n in notes if "sacct does not answer" in n]
    assert down == [
        "sacct does not answer (slurmdbd down?): sacct: error: Slurm accounting storage is disabled; waiting: "
        "squeue shows 0 running, 0 pending of 1 job; a failure is reported once sacct answers"
    ], notes
    err = capfd.readouterr().err
    assert "Bypassing sacct error" not in err and "accounting storage is disabled" not in err, err


def test_a_waiting_run_says_the_queue_states_and_a_never_started_element_has_no_log(
    tmp_path: Path, cluster: FakeCluster
) -> None:
    """After "submitted" the run said nothing until a job ended (hours on a busy cluster); an element cancelled
    while pending was reported with a log that does not exist, and its hint did not say how to run it again."""
    store, ids = make_store(tmp_path)
    cluster.plan(_0="PENDING")  # never starts by itself
    notes: list[str] = []
    element = str(cluster.first_id)  # one job: submitit submits no array

    def on_event(job_id: str, event: str, info: dict[str, Any]) -> None:
        if event == "note":
            notes.append(info["text"])
            if info["text"] == "on Slurm: 1 pending":
                cluster.set_state(element, "CANCELLED by 4242")  # scancel while pending

    stop = threading.Timer(30, cluster.set_state, (element, "CANCELLED by 4242"))
    stop.start()  # without the line (before its fix) nothing would cancel it
    try:
        states = executor_for(store, queue_note_s=0.0).run(ids[:1], job_done, on_event)
    finally:
        stop.cancel()
    assert states == {ids[0]: "failed"} and "on Slurm: 1 pending" in notes, notes
    error = store.job_record(ids[0])["error"]
    assert f"state CANCELLED: was cancelled (scancel, or the cluster); {RETRY} runs it again" in error, error
    assert error.endswith("it never started (no log)") and "_log.err" not in error, error


# --------------------------------------------------------------------------- 6. PREEMPTED for good


@pytest.mark.slow
def test_an_element_left_preempted_fails_after_the_grace(tmp_path: Path, cluster: FakeCluster) -> None:
    store, ids = make_store(tmp_path)
    cluster.plan(_1="PREEMPTED")
    states = executor_for(store, preempted_grace_s=1.0).run(ids[:2], job_done)
    assert states == {ids[0]: "done", ids[1]: "failed"}
    error = store.job_record(ids[1])["error"]
    assert "was pre-empted and not requeued" in error and RETRY + " resumes it" in error


def test_a_preempted_element_requeued_within_the_grace_is_waited_for(tmp_path: Path) -> None:
    store, ids = make_store(tmp_path)

    class Requeued(SimpleNamespace):
        """PREEMPTED at the first look; PENDING once sacct is asked anew at the grace's end."""

        job_id, asked = "1_0", False

        def done(self) -> bool:
            return False

        def get_info(self, mode: str) -> dict[str, str]:
            self.asked = mode == "force"
            return {}

        @property
        def state(self) -> str:
            return "PENDING" if self.asked else "PREEMPTED"

    job = Requeued()
    executor = executor_for(store, preempted_grace_s=0.0)
    assert executor._collect(ids[0], job) is None and job.asked  # requeued: still waited for
    assert ids[0] not in executor._preempted and store.job_state(ids[0]) == "pending"


# --------------------------------------------------------------------------- 7. a second run while the array waits


def test_submission_records_each_element_until_its_outcome_is_collected(tmp_path: Path, cluster: FakeCluster) -> None:
    store, ids = make_store(tmp_path)
    recorded: dict[str, str | None] = {}

    def on_event(job_id: str, event: str, info: dict[str, Any]) -> None:
        if event == "submitted":
            recorded[job_id] = store.queued_on_slurm(job_id)

    cluster.plan(_0="FAILED", _1="FAILED")
    assert executor_for(store).run(ids[:2], job_done, on_event) == dict.fromkeys(ids[:2], "failed")
    assert recorded == {ids[0]: f"{cluster.first_id}_0", ids[1]: f"{cluster.first_id}_1"}
    assert store.queued_on_slurm(ids[0]) is None


def test_a_job_still_queued_on_slurm_is_not_submitted_again(tmp_path: Path, cluster: FakeCluster) -> None:
    store, ids = make_store(tmp_path)
    first = cluster.first_id
    for index, (job_id, state) in enumerate(zip(ids, ("PENDING", "RUNNING", "COMPLETED"), strict=True)):
        store.mark_queued_on_slurm(job_id, f"{first}_{index}")
        cluster.set_state(f"{first}_{index}", state)
    run = StudyRun.prepare(study_of(tmp_path))
    assert run.queued == {ids[0]: f"{first}_0", ids[1]: f"{first}_1"}
    assert run.todo == [ids[2]]  # ended without a result: submitted again
    assert run.queued_note is not None and run.queued_note.startswith(
        f"2 jobs still queued on Slurm as {first}_0, {first}_1 (pending or running); not submitted again"
    )
    assert run.action(ids[0]) == f"skip (queued on Slurm as {first}_0)"
    (cluster.root / "sacct_fails").touch()  # no answer: every recorded job counts as queued, and the note says so
    run = StudyRun.prepare(study_of(tmp_path))
    assert run.todo == [] and "sacct did not answer" in (run.queued_note or "")
    local = StudyRun.prepare(study_of(tmp_path, executor="local"))  # another executor: the job lock decides
    assert local.todo == ids and local.queued == {}


def test_an_element_sacct_does_not_list_yet_is_queued_while_squeue_lists_it_or_it_is_fresh(
    tmp_path: Path, cluster: FakeCluster
) -> None:
    """slurmdbd behind slurmctld: sacct answers without the fresh array while squeue has it. The next `usagg run`
    took it as ended and submitted the whole array again (two allocations per job)."""
    store, ids = make_store(tmp_path)
    first = cluster.first_id
    cluster.sacct_lag(first)
    for index, job_id in enumerate(ids):
        store.mark_queued_on_slurm(job_id, f"{first}_{index}")
    cluster.set_state(f"{first}_0", "PENDING")  # squeue lists it; 1 and 2: in neither listing
    run = StudyRun.prepare(study_of(tmp_path))
    assert run.queued == {ids[0]: f"{first}_0", ids[1]: f"{first}_1", ids[2]: f"{first}_2"} and run.todo == []
    assert "2 submitted moments ago that neither sacct nor squeue lists yet" in (run.queued_note or "")
    old = json.loads(store.paths(ids[1]).slurm.read_text())
    store.paths(ids[1]).slurm.write_text(json.dumps({**old, "submitted": "2026-01-01T00:00:00+00:00"}))
    run = StudyRun.prepare(study_of(tmp_path))  # past the grace, listed nowhere: ended, submitted again
    assert set(run.queued) == {ids[0], ids[2]} and run.todo == [ids[1]]

    from usagg.execute.slurm import queue_states

    said = queue_states(store, {ids[0]: f"{first}_0", ids[1]: f"{first}_1", ids[2]: f"{first}_2"})
    assert said[ids[0]] == f"submitted to Slurm as {first}_0 (not listed by sacct (yet), squeue: PENDING)"
    assert "ended without a result: the next `usagg run` submits it again" in said[ids[1]], said
    assert "ended" not in said[ids[2]], said
    assert "nor by squeue: submitted under 300 s ago" in said[ids[2]]


def test_a_failure_while_no_run_waited_is_recorded_by_the_next_run_and_not_submitted_again(
    tmp_path: Path, cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The login was lost while the array waited, and the element ran out of memory: the next `usagg run` submitted
    it again with the same memory, unseen, instead of recording the failure and waiting for --retry-failed."""
    spec = write_spec(tmp_path, "{executor: slurm, slurm: {mem_gb: 1}}")
    monkeypatch.chdir(tmp_path)
    run = StudyRun.prepare(load_study(spec))
    run.init_store()
    run.release()
    store = run.store
    (job_id,) = store.job_ids()
    element = f"{cluster.first_id}_0"
    store.mark_queued_on_slurm(job_id, element)
    cluster.set_state(element, "OUT_OF_MEMORY")
    code, out = run_cli(["run", str(spec), "--dry-run"], monkeypatch, capsys)
    assert "skip (failed; --retry-failed)" in out and store.job_state(job_id) == "pending", out  # a dry run writes not
    code, out = run_cli(["run", str(spec)], monkeypatch, capsys)
    flat = " ".join(out.split())
    assert code == 1 and not cluster.submitted.exists(), out  # nothing submitted again
    said = f"Slurm job {element} did not complete (state OUT_OF_MEMORY: ran out of memory: raise execution.slurm.mem_gb"
    assert "1 job ended failed on Slurm since the last `usagg run`" in flat and said in flat, out
    assert (
        f"then {RETRY}), while no `usagg run` waited for it. Recorded failed; not submitted again" in flat
        and "1 failed skipped (use --retry-failed)" in flat
    ), out
    assert store.job_state(job_id) == "failed" and said in store.job_record(job_id)["error"]
    assert store.queued_on_slurm(job_id) is None and said in (store.error_text(job_id) or "")
    code, out = run_cli(["run", str(spec), "--dry-run", "--retry-failed"], monkeypatch, capsys)
    assert "ended failed on Slurm" not in out and f"{job_id}" in out and "skip (failed" not in out, out


def test_a_planted_slurm_record_is_no_slurm_id(tmp_path: Path) -> None:
    store, ids = make_store(tmp_path)
    store.paths(ids[0]).slurm.write_text(json.dumps({"slurm_job_id": "1; rm -rf ~"}))
    store.paths(ids[1]).slurm.write_text("not json")
    assert store.queued_on_slurm(ids[0]) is None and store.queued_on_slurm(ids[1]) is None


@pytest.mark.parametrize("executor", ["slurm", "local"])
def test_an_interrupted_run_says_what_goes_on_under_its_executor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], executor: str
) -> None:
    """Ctrl-C stops the local pool's jobs, which resume from their checkpoints; under Slurm it stops only the
    submitting process, and the jobs go on on the cluster (the message said 'the stopped ones go on')."""
    import usagg.run.driver

    def interrupted(*_: Any, **__: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(usagg.run.driver, "drive", interrupted)
    spec = write_spec(tmp_path, f"{{executor: {executor}}}")
    monkeypatch.chdir(tmp_path)
    code, out = run_cli(["run", str(spec)], monkeypatch, capsys)
    flat = " ".join(out.split())
    assert code == 130 and "interrupted" in flat, out
    slurm = "the jobs submitted to Slurm go on there (`usagg status` shows them; `scancel` stops them)"
    local = "the stopped ones go on from their last checkpoint"
    assert (slurm in flat, local in flat) == ((True, False) if executor == "slurm" else (False, True)), out


def test_an_array_too_large_is_said_with_its_size_and_how_to_split_it() -> None:
    """sbatch's MaxArraySize refusal named partition, account, ... but not the array's size, and claimed
    gpus_per_node 1 for `devices: cpu`, which asks Slurm for no GPU."""
    from usagg.execute.slurm import rejected_message

    said = rejected_message(
        "sbatch: error: Batch job submission failed: Invalid job array specification", SlurmSpec(), "cpu", 1111
    )
    assert "sbatch refused the job array of 1111 jobs" in said and "gpus_per_node 0" in said
    assert "MaxArraySize" in said and "`usagg run --only`" in said
    other = rejected_message("sbatch: error: invalid partition specified: gpux", SlurmSpec(partition="gpux"), "auto", 3)
    assert "MaxArraySize" not in other and "gpus_per_node 1" in other and "partition gpux" in other


@pytest.mark.slow
def test_status_asks_sacct_where_a_submitted_job_is_and_names_its_log(
    tmp_path: Path, cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`usagg status` said "submitted to Slurm as X (sacct says whether it waits)" for a job scancel had ended too:
    it now gives sacct's state, says an ended element is submitted again by the next run, names the element's log
    once it has one, and says so where sacct does not answer (a store looked at off the cluster)."""
    spec = write_spec(tmp_path, "{executor: slurm}")
    monkeypatch.chdir(tmp_path)
    run = StudyRun.prepare(load_study(spec))
    run.init_store()
    store = run.store
    (job_id,) = store.job_ids()
    element = f"{cluster.first_id}_0"
    store.mark_queued_on_slurm(job_id, element)

    def status() -> str:
        code, out = run_cli(["status", str(store.root)], monkeypatch, capsys)
        assert code == 0, out
        return " ".join(out.split())

    cluster.set_state(element, "PENDING")
    assert f"submitted to Slurm as {element} (sacct: PENDING)" in status()
    log = store.slurm_dir / "20261207-000000-abcdef12" / f"{element}_0_log.err"
    log.parent.mkdir(parents=True)
    log.write_text("started\n")
    cluster.set_state(element, "RUNNING")
    said = status()
    assert "(sacct: RUNNING)" in said and f"{element}_0_log.err" in said.replace(" ", "")
    cluster.set_state(element, "CANCELLED by 1000")
    said = "(sacct: CANCELLED, ended: the next `usagg run` records it failed; `usagg run --retry-failed` runs it again)"
    assert said in status()
    cluster.set_state(element, "PENDING")
    (cluster.root / "sacct_fails").touch()  # slurmdbd down: squeue still answers
    assert f"submitted to Slurm as {element} (sacct did not answer, squeue: PENDING)" in status()
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no sacct here
    assert f"submitted to Slurm as {element} (sacct did not answer)" in status()


def test_a_dry_run_says_what_slurm_would_be_asked_for(
    tmp_path: Path, cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run --dry-run` showed the jobs only: not the array, its throttle, each job's resources or where logs go."""
    spec = write_spec(
        tmp_path,
        "{executor: slurm, devices: cpu, slurm: {partition: gpux, time_min: 90, mem_gb: 12, array_parallelism: 4}}",
        paradigms="TS, AU, AG",
        tasks=f"{MALIGNANCY_TASK}, {{id: thyroid_nodule_det, type: detection, num_classes: 1, group: Thyroid}}",
    )
    monkeypatch.chdir(tmp_path)
    code, out = run_cli(["run", str(spec), "--dry-run", "--no-data-check"], monkeypatch, capsys)
    flat = " ".join(out.split())
    assert code == 0, out
    assert "Slurm: one array of 3 jobs, at most 4 running at once, largest first; each job 90 min, 12 GiB" in flat
    assert "0 GPUs; partition gpux, account (cluster default)" in flat and "logs under the store's slurm/" in flat
    assert "AG-like staged jobs go in a second array once the jobs they need are done" in flat
    assert not (tmp_path / "runs").exists() and not cluster.submitted.exists()
