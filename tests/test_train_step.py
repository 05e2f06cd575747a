"""The trainer's step (usagg/engine/step.py): the body a CUDA graph records under `execution.accel: step-graphs`,
run on the CPU from the same input buffers unrecorded, trains to the eager step's very weights; AdamW with
device-tensor learning rates follows the schedule; checkpoints stay portable; a whole job with affinity and
a trunk ends with the eager job's metrics.

The recording itself needs CUDA (tests/test_cuda_path.py, `cuda` marker; `make gpu-check`'s jobs phase).
"""

from __future__ import annotations

import json
import logging
import traceback
from pathlib import Path

import pytest
import torch

from tests.test_cuda_path import write_whole_job  # the AU job with affinity and a frozen trunk
from usagg.engine import job as job_module
from usagg.engine.balance import build_balance
from usagg.engine.device import Compute
from usagg.engine.optim import build_optimizer
from usagg.engine.runner import run_one
from usagg.engine.schedule import build_scheduler
from usagg.engine.step import WARMUP_STEPS, GraphedTrainStep, TrainStep, portable_state
from usagg.model.backbones import EncoderInput
from usagg.model.m2dino import M2DINO, build_model
from usagg.plan import plan
from usagg.spec.load import dump_study, load_study
from usagg.spec.models import ModelSpec, TaskSpec, TrainingSpec
from usagg.store import RunStore

TASKS = [
    TaskSpec(id="seg", type="segmentation", num_classes=3),
    TaskSpec(id="cls", type="classification", num_classes=4),
    TaskSpec(id="det", type="detection", num_classes=1),
    TaskSpec(id="reg", type="regression", num_classes=2),
]
SIZE, BATCH = 32, 4
CPU = Compute(torch.device("cpu"), None)


def _targets(task: TaskSpec, gen: torch.Generator) -> torch.Tensor:
    if task.type == "segmentation":
        return torch.randint(0, task.num_classes, (BATCH, SIZE, SIZE), generator=gen)
    if task.type == "classification":
        return torch.randint(0, task.num_classes, (BATCH,), generator=gen)
    if task.type == "detection":
        a = torch.rand(BATCH, 4, generator=gen)
        return torch.stack([a[:, 0] * 0.5, a[:, 1] * 0.5, 0.5 + a[:, 2] * 0.5, 0.5 + a[:, 3] * 0.5], dim=1)
    return torch.rand(BATCH, task.num_classes, 2, generator=gen)


def _model(frozen: int | None) -> M2DINO:
    torch.manual_seed(0)
    spec = ModelSpec(backbone="dinov3_test", image_size=SIZE, frozen_blocks=frozen)
    return build_model(spec, TASKS, moe=True).train()


def _trunk_input(model: M2DINO, images: torch.Tensor, touched: torch.Tensor) -> EncoderInput:
    """A trunk-fed batch as TensorSplit makes it: untouched rows as stored tokens, touched rows as pixels."""
    layout = model.encoder.trunk_layout()
    assert layout is not None
    pixel_pos, token_pos = touched.nonzero().flatten(), (~touched).nonzero().flatten()
    inp = EncoderInput(BATCH, (SIZE, SIZE))
    if len(pixel_pos):
        inp.images, inp.image_pos = images[pixel_pos], pixel_pos
    if len(token_pos):
        with torch.no_grad():
            inp.tokens = model.encoder.trunk_tokens(images[token_pos], layout)
        inp.token_pos = token_pos
    return inp


def _train(
    step_kind: str,
    frozen: int | None,
    rounds: int,
    compute: Compute = CPU,
    balance_mode: str = "uncertainty",
    compile_backend: str | None = None,
) -> tuple[M2DINO, list[torch.Tensor], GraphedTrainStep | TrainStep]:
    """Train four tasks `rounds` times with the eager step or the graphed step's body (`step_kind` "graphed");
    `compile_backend`: the encoder compiled in place first (dynamo's counters cleared after)."""
    model = _model(frozen)
    training = TrainingSpec(grad_clip=1.0)
    balance = build_balance(balance_mode, {t.id: 1.0 for t in TASKS})
    opt = build_optimizer(model, training, balance.parameters())
    if compile_backend is not None:
        from torch._dynamo.utils import counters

        torch._dynamo.reset()  # graphs another test left for these shapes would serve this one: count its own
        model.encoder.compile(backend=compile_backend)
        counters.clear()
    if step_kind == "eager":
        step: GraphedTrainStep | TrainStep = TrainStep(model, balance, opt, compute, 1.0)
    else:
        step = GraphedTrainStep(model, balance, opt, compute, 1.0, record=False)
    gen = torch.Generator().manual_seed(1)
    losses = []
    for r in range(rounds):
        for t in TASKS:
            images = torch.randn(BATCH, 3, SIZE, SIZE, generator=gen)
            y = _targets(t, gen)
            # which rows the augmentation touched changes from batch to batch (the recorded step's input must not)
            touched = torch.tensor([(r + i + len(t.id)) % 3 == 0 for i in range(BATCH)])
            with compute.autocast():  # stored tokens as the job's trunk pass leaves them
                x = images if frozen is None else _trunk_input(model, images, touched)
            out = step(t.id, x, y)
            losses.append(torch.stack([out.loss, out.model_loss, out.aux]))
    return model, losses, step


@pytest.mark.slow  # two models trained 3 rounds of 4 tasks each way: about 1.4 s
@pytest.mark.parametrize("frozen", [None, 1], ids=["pixels", "trunk tokens"])
def test_the_recorded_body_from_its_buffers_trains_to_the_eager_weights(frozen: int | None) -> None:
    """Four task types, MoE, uncertainty weighting, clipping; with a trunk, batches mixing stored tokens and
    pixels in changing proportions, which the graphed step gives wholly as tokens."""
    rounds = WARMUP_STEPS + 3
    eager, eager_losses, _ = _train("eager", frozen, rounds)
    graphed, graphed_losses, step = _train("graphed", frozen, rounds)
    assert isinstance(step, GraphedTrainStep)
    assert set(step.recorded) == {t.id for t in TASKS}  # every task left its warm-up and runs from its buffers
    assert step.eager_steps == {t.id: WARMUP_STEPS for t in TASKS}
    assert len({id(r.x) for r in step.recorded.values()}) == 1  # one input buffer serves every task's graph
    if frozen is not None:
        rec = step.recorded["seg"].x
        assert isinstance(rec, EncoderInput) and rec.images is None and rec.tokens is not None
        assert all(t.dtype == torch.float32 and t.shape[0] == BATCH for t in rec.tokens)
    assert torch.equal(torch.stack(eager_losses), torch.stack(graphed_losses))
    for (name, a), b in zip(eager.state_dict().items(), graphed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.slow  # dynamo and AOT autograd trace one training step; two models trained: about 6 s
def test_a_compiled_encoder_is_compiled_once_in_the_warm_up_and_never_again_when_recorded() -> None:
    """`compiled-step-graphs` as the CPU can show it: the encoder compiled in place (aot_eager: dynamo's guards and
    AOT autograd's forward and backward, without inductor's C++), bf16 autocast, trunk-fed batches whose augmented
    rows change. The warm-up steps run from the recording's own input buffers with autocast's cache off, as the
    recording does, so dynamo compiles one graph there and the recorded steps meet it: a guard failing at the
    recording (tokens in another dtype, autocast's cache flag, which dynamo's global-state guard reads) would
    compile inside the CUDA graph's capture. The steps train to the eager step's losses."""
    from torch._dynamo.utils import counters

    bf16 = Compute(torch.device("cpu"), torch.bfloat16)
    rounds = WARMUP_STEPS + 2
    _, eager, _ = _train("eager", 1, rounds, bf16, "equal")
    _, compiled, step = _train("graphed", 1, rounds, bf16, "equal", compile_backend="aot_eager")
    assert isinstance(step, GraphedTrainStep) and set(step.recorded) == {t.id for t in TASKS}
    runs = {"eager": torch.stack(eager)[:, 0], "compiled": torch.stack(compiled)[:, 0]}
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    torch.testing.assert_close(runs["compiled"], runs["eager"], rtol=2e-2, atol=1e-3)
    # gpu-check's gradients phase gives a new compiled model of the same structure its batches as these steps
    # did (trunk tokens in float32, autocast's cache off): the graph compiled here serves it, nothing more is
    # compiled (on a GPU a second graph of dinov3_small costs about a minute of the check's six)
    from benchmarks.gpu_check import gradient_errors, step_input

    eager_model, twin = _model(1), _model(1)
    twin.encoder.compile(backend="aot_eager")
    gen = torch.Generator().manual_seed(2)
    batches = {
        t.id: (step_input(eager_model, torch.randn(BATCH, 3, SIZE, SIZE, generator=gen)), _targets(t, gen))
        for t in TASKS
    }
    assert all(isinstance(x, EncoderInput) and x.images is None for x, _ in batches.values())
    errors = gradient_errors(eager_model, twin, batches)
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    assert all(0 < c <= 1.5 * e + 2e-3 for e, c in errors.values()), errors
    # and so does its steady loop (profile, accel, the projection's second line): pixels given as trunk tokens
    from benchmarks.gpu_check import steady_rate

    looped = _model(1)
    looped.encoder.compile(backend="aot_eager")
    pixels = {t.id: (torch.randn(BATCH, 3, SIZE, SIZE, generator=gen), _targets(t, gen)) for t in TASKS}
    assert steady_rate(looped, pixels, steps=1, amp=True, warmup=1, mode="compiled-step-graphs") > 0
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])


@pytest.mark.slow  # two models trained 4 rounds of 4 tasks: about 1 s
def test_a_step_that_cannot_be_recorded_runs_eagerly_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A device that refuses the recording (a library call that syncs, say): the job goes on, that task's steps run
    eagerly from then on, one warning says why, and training is the eager step's to the last bit. The recording
    is made to fail on the CPU by a capture context that fails as torch.cuda.graph does: it makes its capture
    stream current, and ending the broken capture raises its own error over the call's and leaves that stream
    current; the step names the call's error and makes the stream it had current again."""
    import contextlib

    from usagg.engine import step as step_module

    current = ["the job's stream"]

    @contextlib.contextmanager
    def refusing_capture(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        current[0] = "the capture stream"
        try:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore detail")
        except RuntimeError:
            raise RuntimeError("CUDA error: operation failed due to a previous error during capture") from None
        yield

    monkeypatch.setattr(step_module.torch.cuda, "graph", refusing_capture)
    monkeypatch.setattr(step_module.torch.cuda, "CUDAGraph", lambda: None)
    monkeypatch.setattr(step_module.torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(step_module.torch.cuda, "current_stream", lambda device=None: current[0])
    monkeypatch.setattr(step_module.torch.cuda, "set_stream", lambda stream: current.__setitem__(0, stream))
    rounds = WARMUP_STEPS + 2
    eager, eager_losses, _ = _train("eager", None, rounds)
    original = GraphedTrainStep.__init__

    def recording(self: GraphedTrainStep, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        self.record = True  # as on CUDA, with the eager steps on the current stream (no side stream here)

    monkeypatch.setattr(GraphedTrainStep, "__init__", recording)
    with caplog.at_level(logging.WARNING, logger="usagg.engine.step"):
        graphed, graphed_losses, step = _train("graphed", None, rounds)
    assert isinstance(step, GraphedTrainStep) and step.unrecordable == {t.id for t in TASKS} and not step.recorded
    assert step.unrecorded() == sorted(t.id for t in TASKS) and step.replays == 0  # what metrics.json records
    said = [r.getMessage() for r in caplog.records if r.name == "usagg.engine.step"]
    assert len(said) == len(TASKS)
    for m in said:  # the call's error, its first line only
        assert "could not be recorded (CUDA error: operation not permitted" in m and m.endswith("; it runs eagerly")
    assert current == ["the job's stream"]
    assert torch.equal(torch.stack(eager_losses), torch.stack(graphed_losses))
    for (name, a), b in zip(eager.state_dict().items(), graphed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_a_batch_of_another_shape_runs_eagerly_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    model = _model(None)
    balance = build_balance("equal", {"cls": 1.0})
    opt = build_optimizer(model, TrainingSpec(), balance.parameters())
    step = GraphedTrainStep(model, balance, opt, CPU, None, record=False)
    gen = torch.Generator().manual_seed(0)
    for _ in range(WARMUP_STEPS + 1):
        step("cls", torch.randn(BATCH, 3, SIZE, SIZE, generator=gen), _targets(TASKS[1], gen))
    assert "cls" in step.recorded
    with caplog.at_level(logging.INFO, logger="usagg.engine.step"):
        for _ in range(2):
            out = step("cls", torch.randn(2, 3, SIZE, SIZE), torch.zeros(2, dtype=torch.long))
            assert torch.isfinite(out.loss)
    assert sum("another shape" in r.message for r in caplog.records) == 1
    assert step.recorded["cls"].x.shape[0] == BATCH  # type: ignore[union-attr]  # the buffers keep their shape


def test_learning_rates_as_tensors_follow_the_schedule_and_checkpoints_keep_floats() -> None:
    """What a recorded AdamW step reads: learning rates as tensors the scheduler fills in place (a float would be
    frozen into the graph). The same steps with float rates give the same weights; the saved state has floats."""
    weights = {}
    for kind in ("float", "tensor"):
        model = _model(None)
        balance = build_balance("equal", {"cls": 1.0})
        training = TrainingSpec(warmup_epochs=1)
        opt = build_optimizer(model, training, balance.parameters())
        sched = build_scheduler(opt, total_steps=6, warmup_steps=3, kind="cosine")
        step = GraphedTrainStep(model, balance, opt, CPU, 1.0, record=False)
        if kind == "tensor":
            step._make_capturable()
            assert all(isinstance(g["lr"], torch.Tensor) and g["capturable"] for g in opt.param_groups)
        gen = torch.Generator().manual_seed(0)
        rates = []
        for _ in range(6):
            step("cls", torch.randn(BATCH, 3, SIZE, SIZE, generator=gen), _targets(TASKS[1], gen))
            sched.step()
            rates.append(float(opt.param_groups[0]["lr"]))
        weights[kind] = (torch.cat([p.detach().flatten() for p in model.parameters()]), rates)
        saved = portable_state(opt.state_dict())
        assert all(isinstance(g["lr"], float) and not g["capturable"] for g in saved["param_groups"])
        assert all(isinstance(v, float) for v in portable_state(sched.state_dict())["_last_lr"])
    (wf, rf), (wt, rt) = weights["float"], weights["tensor"]
    assert rt == pytest.approx(rf, rel=1e-6) and len(set(rf)) == 5 and rf[-1] == 0  # warm-up, then the cosine
    start = torch.cat([p.detach().flatten() for p in _model(None).parameters()])
    # the CPU's fused kernel reads a float64 tensor rate as it reads a Python float (CUDA's reads float32)
    assert torch.equal(wf, wt) and not torch.allclose(wf, start, rtol=1e-5, atol=1e-7)


@pytest.mark.slow  # two small AU jobs with affinity and trunks: about 10 s
def test_a_whole_job_through_the_graphed_step_gives_the_eager_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`execution.accel: step-graphs` as a job runs it (trunk-fed and augmented batches, the affinity's virtual
    AdamW steps beside the step, `loss_balance: initial`, selection, checkpoints), forced on the CPU, where the
    policy keeps eager: the graphed step's body from its buffers, recording aside, ends with the eager job's
    metrics and history to the last bit."""
    spec = write_whole_job(tmp_path)
    study = load_study(spec, ["training.loss_balance=initial"])
    au = next(j for j in plan(study) if j.paradigm == "AU")
    assert au.affinity is not None and au.training.loss_balance == "initial"
    built: list[GraphedTrainStep] = []
    real_build = job_module.build_trainer

    def graphed_trainer(*args: object, **kw: object) -> object:
        trainer = real_build(*args, **{**kw, "step_graphs": True})  # type: ignore[arg-type]
        assert isinstance(trainer.train_step, GraphedTrainStep)
        built.append(trainer.train_step)
        return trainer

    results = {}
    for mode in ("eager", "graphed"):
        if mode == "graphed":
            monkeypatch.setattr(job_module, "build_trainer", graphed_trainer)
        store = RunStore(tmp_path / mode)
        store.init(dump_study(study), [au])
        assert run_one(str(store.root), au.id, device="cpu") == "done", store.error_text(au.id)
        folder = store.root / "jobs" / au.id
        # the CPU policy keeps eager, as metrics.json records
        assert store.metrics(au.id)["throughput"]["accel"] == "eager"  # type: ignore[index]
        affinity = json.loads((folder / "affinity.json").read_text())
        timing = ("seconds", "train_seconds", "share")
        results[mode] = (
            store.metrics(au.id)["tasks"],  # type: ignore[index]
            (folder / "history.csv").read_text(),
            {k: v for k, v in affinity.items() if k not in timing},
        )
    assert len(built) == 1 and not built[0].recorded  # closed at the end of fit: the buffers are freed
    assert results["graphed"] == results["eager"]


#: aten ops a recorded step cannot hold: host reads, and outputs whose shapes depend on the data.
HOST_OR_DATA_SHAPED = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "is_nonzero", "equal"}


@pytest.mark.parametrize("frozen", [None, 1], ids=["pixels", "trunk tokens"])
def test_the_body_a_graph_records_is_the_same_ops_at_every_step_and_never_reads_the_device(frozen: int | None) -> None:
    """What a replay assumes and the CPU can check: every step of a task dispatches the same aten ops on the same
    shapes (a replay repeats the recorded ones), none reads a value back to the host or makes a data-shaped output.
    The trace covers the body alone: a trunk batch's frozen blocks run before it, outside the graph."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Trace(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: list[tuple[str, tuple[tuple[int, ...], ...]]] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            name = func._overloadpacket.__name__
            if name == "_local_scalar_dense" and any("one_hot(" in (f.line or "") for f in traceback.extract_stack()):
                name = "one_hot's range check"  # F.one_hot checks its classes on the CPU only (none on CUDA)
            shapes = tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor))
            self.ops.append((name, shapes))
            return func(*args, **(kwargs or {}))

    traces: dict[str, list[list[tuple[str, tuple[tuple[int, ...], ...]]]]] = {}
    model = _model(frozen)
    balance = build_balance("uncertainty", {t.id: 1.0 for t in TASKS})
    opt = build_optimizer(model, TrainingSpec(grad_clip=1.0), balance.parameters())
    step = GraphedTrainStep(model, balance, opt, CPU, 1.0, record=False)
    body = step._body

    def traced(task: str, x: object, y: torch.Tensor, cache: bool = True) -> object:
        if task not in step.recorded:
            return body(task, x, y, cache)  # type: ignore[arg-type]
        with Trace() as trace:
            out = body(task, x, y, cache)  # type: ignore[arg-type]
        traces.setdefault(task, []).append(trace.ops)
        return out

    step._body = traced  # type: ignore[assignment, method-assign]
    gen = torch.Generator().manual_seed(3)
    for r in range(WARMUP_STEPS + 3):
        for t in TASKS:
            images = torch.randn(BATCH, 3, SIZE, SIZE, generator=gen)
            touched = torch.tensor([(r + i) % 2 == 0 for i in range(BATCH)])
            x = images if frozen is None else _trunk_input(model, images, touched)
            step(t.id, x, _targets(t, gen))
    for task, runs in traces.items():
        assert len(runs) == 3 and runs[0] == runs[1] == runs[2], task
        names = {name for name, _ in runs[0]}
        assert not names & HOST_OR_DATA_SHAPED, (task, names & HOST_OR_DATA_SHAPED)
        assert "_fused_adamw_" in names and "_foreach_mul_" in names  # AdamW and the clipping are in the body


@pytest.mark.slow  # three short AU fits: about 5 s
@pytest.mark.parametrize("then", ["eager", "graphed"])
def test_a_job_stopped_under_the_graphed_step_resumes_under_either_step(
    then: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """last.pt written beside a graphed step (device-tensor learning rates, `capturable`) holds plain floats, and
    a job stopped after its first epoch resumes under either step to the uninterrupted eager job's weights."""
    from usagg.engine import checkpoint
    from usagg.engine.device import seed_everything
    from usagg.engine.job import build_trainer
    from usagg.engine.jobdata import load_job_data

    spec = write_whole_job(tmp_path)
    au = next(j for j in plan(load_study(spec, ["paradigms=[AU]", "training.epochs=3"])) if j.paradigm == "AU")

    def trainer(folder: str, graphed: bool) -> object:
        seed_everything(au.seed, CPU.device)
        return build_trainer(au, tmp_path / folder, CPU, data=load_job_data(au), step_graphs=graphed)

    straight = trainer("straight", False)
    straight.fit()  # type: ignore[attr-defined]
    first = trainer("resumed", True)
    assert first.fit(stop_after_epoch=1).selection == "stopped"  # type: ignore[attr-defined]
    assert all(isinstance(g["lr"], torch.Tensor) for g in first.optimizer.param_groups)  # type: ignore[attr-defined]
    saved = checkpoint.load(first.last_path)  # type: ignore[attr-defined]
    assert saved["epoch"] == 1
    assert all(isinstance(g["lr"], float) and not g["capturable"] for g in saved["optimizer"]["param_groups"])
    torch.manual_seed(999)  # another process state: the checkpoint restores it
    second = trainer("resumed", then == "graphed")
    second.fit()  # type: ignore[attr-defined]
    for (name, a), b in zip(
        straight.model.state_dict().items(),  # type: ignore[attr-defined]
        second.model.state_dict().values(),  # type: ignore[attr-defined]
        strict=True,
    ):
        assert torch.equal(a, b), name
