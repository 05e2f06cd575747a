"""One optimiser step on one task's batch: eager, or the whole step recorded as a CUDA graph per task.

`TrainStep` is the step the trainer has always taken: forward under autocast, the loss balance,
backward, gradient clipping, AdamW. `GraphedTrainStep` (`execution.accel: step-graphs`, and
`compiled-step-graphs` with the encoder compiled inside; CUDA only) records that same step, once
per task, as one CUDA graph (torch's "whole-network capture") and replays it: one launch per step
instead of a couple of thousand, the host free to prepare the next batch. What makes the step recordable:

- Static shapes: every training batch of a task is full (usagg/engine/sampling.py), so a task's
  step has one shape. The batch is copied into the graph's input buffers; a trunk-fed batch is
  first given wholly as trunk tokens (`DinoEncoder.as_tokens`: the frozen blocks run eagerly for
  the augmented rows), since which rows are augmented changes from batch to batch. A batch of
  another shape (none in training as the sampler draws) runs eagerly.
- Nothing reads the device from the host inside the step (tests/test_cuda_path.py checks the
  eager step under `set_sync_debug_mode("error")`).
- Optimiser state exists before recording: a task's first `WARMUP_STEPS` steps run eagerly (real
  steps of the schedule, on a side stream as torch asks), creating AdamW's moments, cuBLAS and
  cuDNN handles, the RoPE tables and the initial losses of `loss_balance: initial`. Recording
  checks that it updates exactly the parameters its eager steps updated.
- A compiled encoder (`compiled-step-graphs`) is compiled in those warm-up steps: they run from
  the very input buffers and with autocast's cache off as the recording does, since dynamo's
  guards read the input's dtype and shape and the autocast state; the recording then meets
  only compiled code and records inductor's fused kernels.
- A step that cannot be recorded on the device (a library call that syncs, say) is not a failed
  job: that task's steps run eagerly from then on, with one warning saying why.
- AdamW records with `capturable` and device-tensor learning rates (fused, as the job's
  optimiser already is); the scheduler fills those tensors in place, so every replay uses the
  step's own rate. Checkpoints keep plain floats (`portable_state`), so a job
  resumes under any accel mode.
- All task graphs share one memory pool: a graph's temporaries are dead when it ends, and the
  gradients it writes are read only inside it, so replaying the graphs in any order is safe.
  The losses a replay returns are read (summed on the device) before the next replay.

The CPU has no CUDA graphs; `GraphedTrainStep(record=False)` runs the same body from the same
input buffers unrecorded, AdamW made capturable all the same (its rates as float64 tensors there),
which is how tests/test_train_step.py checks that the body trains to the eager step's weights.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from usagg.engine.balance import LossBalance
from usagg.engine.device import Compute, is_out_of_memory
from usagg.model.backbones import EncoderInput
from usagg.model.m2dino import M2DINO, encoder_compiled

log = logging.getLogger(__name__)

#: Eager steps per task before its step is recorded (optimiser state, library handles, lazy tables).
WARMUP_STEPS = 2

Batch = torch.Tensor | EncoderInput


class StepLosses(NamedTuple):
    """What a step leaves for the trainer's sums, detached: the optimised loss, the model's loss (head + aux) and
    the MoE auxiliary loss."""

    loss: torch.Tensor
    model_loss: torch.Tensor
    aux: torch.Tensor


class TrainStep:
    """The eager step: forward under autocast, loss balance, backward, clipping (when set), AdamW."""

    #: steps run from a recorded CUDA graph (a whole-step mode's; none here)
    replays: int = 0

    def __init__(
        self,
        model: M2DINO,
        balance: LossBalance,
        optimizer: torch.optim.Optimizer,
        compute: Compute,
        clip: float | None,
    ) -> None:
        self.model = model
        self.balance = balance
        self.optimizer = optimizer
        self.compute = compute
        self.clip = clip
        self.params = [p for g in optimizer.param_groups for p in g["params"]]

    def __call__(self, task: str, x: Batch, y: torch.Tensor) -> StepLosses:
        if encoder_compiled(self.model):  # one input shape for the compiled encoder, whichever rows were augmented
            x = self._input(x)
        return self._body(task, x, y)

    def _input(self, x: Batch) -> Batch:
        """A trunk-fed batch as tokens only (one shape whichever rows were augmented); pixels as they are."""
        if isinstance(x, EncoderInput):
            with self.compute.autocast():
                return self.model.encoder.as_tokens(x)
        return x

    def _body(self, task: str, x: Batch, y: torch.Tensor, cache: bool = True) -> StepLosses:
        with self.compute.autocast(cache):
            out = self.model(x, task, y)
        assert out.loss is not None
        loss = self.balance.combine(task, out.loss, out.aux_loss)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.optimizer.step()
        return StepLosses(loss.detach(), out.loss.detach(), out.aux_loss.detach())

    def unrecorded(self) -> list[str]:
        """The tasks whose step a whole-step mode could not record, which ran eagerly (none: nothing is recorded
        here)."""
        return []

    def close(self) -> None:
        """Release what the step holds beyond the model and optimiser (nothing, eagerly)."""


@dataclass
class _Recorded:
    """One task's recorded step: its input buffers, the graph (None when not recording) and the losses it writes."""

    x: Batch
    y: torch.Tensor
    graph: Any
    out: StepLosses | None


def _with_grad(params: list[torch.nn.Parameter]) -> set[int]:
    """The parameters a step just updated: those with a gradient (a step sets the others' to None)."""
    return {id(p) for p in params if p.grad is not None}


def _shape(x: Batch) -> tuple[Any, ...]:
    if isinstance(x, EncoderInput):
        return ("tokens", x.size, x.image_size)
    return ("pixels", tuple(x.shape), x.dtype)


class GraphedTrainStep(TrainStep):
    """`TrainStep` recorded as one CUDA graph per task after `WARMUP_STEPS` eager steps, then replayed.

    `record=False` (the CPU, tests): the same body runs from the same input buffers, unrecorded.
    """

    def __init__(
        self,
        model: M2DINO,
        balance: LossBalance,
        optimizer: torch.optim.Optimizer,
        compute: Compute,
        clip: float | None,
        record: bool = True,
    ) -> None:
        super().__init__(model, balance, optimizer, compute, clip)
        self.record = record
        self.recorded: dict[str, _Recorded] = {}
        self.eager_steps: dict[str, int] = {}
        self.updated: dict[str, set[int]] = {}  # per task: the parameters its last eager step updated
        self.inputs: dict[tuple[Any, ...], Batch] = {}  # input buffers by shape, shared by the tasks' graphs
        self.pool = torch.cuda.graph_pool_handle() if record else None
        self.side = torch.cuda.Stream(compute.device) if record else None
        self._other_shape_said: set[str] = set()
        self.unrecordable: set[str] = set()  # tasks whose recording failed: they run eagerly

    def __call__(self, task: str, x: Batch, y: torch.Tensor) -> StepLosses:
        src = self._input(x)
        if task in self.unrecordable:
            return self._eager(task, src, y)
        rec = self.recorded.get(task)
        if rec is not None:
            if _shape(src) == _shape(rec.x) and y.shape == rec.y.shape:
                return self._replay(task, rec, src, y)
            if task not in self._other_shape_said:
                log.info(
                    "step-graphs: a batch of task %s has another shape than its recorded step; it runs eagerly", task
                )
                self._other_shape_said.add(task)
            return self._eager(task, src, y)
        # the warm-up steps run from the input buffers the recording reads: a compiled encoder is compiled there
        # for exactly the inputs (dtype, shape) and autocast state it will be recorded with
        bx, by = self._buffers(src, y)
        self._load(_Recorded(bx, by, None, None), src, y)
        done = self.eager_steps.get(task, 0)
        if done < WARMUP_STEPS:
            self.eager_steps[task] = done + 1
            return self._eager(task, bx, by)
        return self._record(task, bx, by)

    def _eager(self, task: str, x: Batch, y: torch.Tensor) -> StepLosses:
        """An unrecorded step, autocast's cache off as when recording (a compiled encoder's guards read it);
        remembers which parameters it updated (what the task's recording must update)."""
        if self.side is None:
            out = self._body(task, x, y, cache=False)
        else:
            # on a side stream (torch's CUDA-graph notes: lazy set-up must not land on the recording stream);
            # AdamW made capturable for another task's recording warns that it runs unrecorded here: it is meant to
            dev = self.compute.device
            self.side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(self.side), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*capturable=True.*")
                out = self._body(task, x, y, cache=False)
            torch.cuda.current_stream(dev).wait_stream(self.side)
        self.updated[task] = _with_grad(self.params)
        return out

    def _load(self, rec: _Recorded, src: Batch, y: torch.Tensor) -> None:
        """Copy a batch (`_input`'s form) into the recorded step's input buffers."""
        rec.y.copy_(y)
        if isinstance(rec.x, EncoderInput):
            assert isinstance(src, EncoderInput) and src.tokens is not None and rec.x.tokens is not None
            for dst, t in zip(rec.x.tokens, src.tokens, strict=True):
                dst.copy_(t)
        else:
            assert isinstance(src, torch.Tensor)
            rec.x.copy_(src)

    def _buffers(self, src: Batch, y: torch.Tensor) -> tuple[Batch, torch.Tensor]:
        """Input buffers shaped for this batch (`_input`'s form), filled by `_load`: tokens in float32 (the trunk's
        own precision; bf16 rows exactly), pixels and targets as they come. Tasks whose inputs have one shape
        share one input buffer (each replay fills it first), so 27 tasks hold one batch of tokens, not 27."""
        key = _shape(src)
        buf = self.inputs.get(key)
        if buf is None:
            if isinstance(src, EncoderInput):
                assert src.tokens is not None and src.token_pos is not None
                tokens = [torch.empty(t.shape, dtype=torch.float32, device=t.device) for t in src.tokens]
                buf = EncoderInput(src.size, src.image_size, tokens=tokens, token_pos=src.token_pos.clone())
            else:
                buf = torch.empty_like(src)
            self.inputs[key] = buf
        return buf, torch.empty_like(y)

    def _record(self, task: str, bx: Batch, by: torch.Tensor) -> StepLosses:
        """Record the task's step from its loaded input buffers and run it (`record=False`: run it unrecorded)."""
        self._make_capturable()
        if not self.record:
            rec = _Recorded(bx, by, None, None)
            self.recorded[task] = rec
            return self._body(task, rec.x, rec.y, cache=False)
        dev = self.compute.device
        before = self.updated.get(task, set())
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize(dev)
        stream = torch.cuda.current_stream(dev)
        try:
            # thread_local: only this thread's calls are checked while recording (a tracker's or lock's thread may
            # run)
            with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
                out = self._body(task, bx, by, cache=False)
        except RuntimeError as err:  # something in the step cannot be recorded on this device: it runs eagerly
            # torch.cuda.graph's exit leaves its capture stream current when ending the capture fails (it does once
            # a call broke the capture), and its error then hides that call's, which is the one worth naming
            torch.cuda.set_stream(stream)
            cause = err.__context__ if isinstance(err.__context__, Exception) else err
            # out of GPU memory is no step that cannot be recorded but a job that does not fit beside the others on
            # its GPU: it fails, and runner.py's error says to lower execution.jobs_per_gpu. Other AcceleratorErrors
            # are not told apart: a call that breaks the capture raises one too, the very step that should run
            # eagerly; a sticky device error fails the job all the same, at the synchronize after the capture.
            if is_out_of_memory(err) or is_out_of_memory(cause):
                raise
            torch.cuda.synchronize(dev)
            self.optimizer.zero_grad(set_to_none=True)  # gradients of the failed recording were never written
            self.unrecordable.add(task)
            first_line = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
            log.warning(
                "step-graphs: task %s's training step could not be recorded (%s); it runs eagerly", task, first_line
            )
            return self._eager(task, bx, by)
        updated = _with_grad(self.params)
        if updated != before:
            raise RuntimeError(
                f"step-graphs: the recorded step of task {task} updates {len(updated)} parameters where its eager "
                f"steps updated {len(before)}; its optimiser state would be made inside the graph. Use "
                "execution.accel: eager (or graphs) for this job, and report it."
            )
        rec = _Recorded(bx, by, graph, out)
        self.recorded[task] = rec
        log.info("step-graphs: task %s's whole training step recorded as one CUDA graph", task)
        graph.replay()  # recording ran nothing: this is the step itself
        self.replays += 1
        return out

    def _replay(self, task: str, rec: _Recorded, src: Batch, y: torch.Tensor) -> StepLosses:
        self._load(rec, src, y)
        if rec.graph is None:
            return self._body(task, rec.x, rec.y, cache=False)
        rec.graph.replay()
        self.replays += 1
        assert rec.out is not None
        return rec.out

    def _make_capturable(self) -> None:
        """AdamW as a recorded step needs it: `capturable`, and learning rates as device tensors the scheduler
        fills in place (a float would be frozen into the graph at its recording)."""
        dev = self.compute.device
        # CUDA's fused kernel reads a tensor rate in float32; the CPU's reads it as a double, as it reads a float
        dtype = torch.float32 if dev.type == "cuda" else torch.float64
        for g in self.optimizer.param_groups:
            if not isinstance(g["lr"], torch.Tensor):
                g["lr"] = torch.tensor(float(g["lr"]), dtype=dtype, device=dev)
            g["capturable"] = True

    def unrecorded(self) -> list[str]:
        return sorted(self.unrecordable)

    def close(self) -> None:
        """Free the graphs and their memory pool (before selection and test evaluation need the memory); the
        parameters' `.grad` point into that pool, so they are dropped too."""
        self.recorded.clear()
        self.inputs.clear()
        self.optimizer.zero_grad(set_to_none=True)


def build_step(
    model: M2DINO,
    balance: LossBalance,
    optimizer: torch.optim.Optimizer,
    compute: Compute,
    clip: float | None,
    graphs: bool,
) -> TrainStep:
    """The trainer's step: recorded per task as CUDA graphs when `graphs` (`execution.accel: step-graphs` on
    CUDA), else eager."""
    if graphs:
        return GraphedTrainStep(model, balance, optimizer, compute, clip, record=compute.device.type == "cuda")
    return TrainStep(model, balance, optimizer, compute, clip)


def portable_state(state: dict[str, Any]) -> dict[str, Any]:
    """An optimiser state dict as eager training writes it: learning rates as floats, `capturable` off (a graphed
    step turns them into device tensors; a checkpoint must resume under any accel mode). The scheduler's state
    gets the same for its `_last_lr`."""
    out = dict(state)
    if "param_groups" in out:
        out["param_groups"] = [
            {**g, "lr": _plain(g["lr"]), **({"capturable": False} if "capturable" in g else {})}
            for g in out["param_groups"]
        ]
    if "_last_lr" in out:
        out["_last_lr"] = [_plain(v) for v in out["_last_lr"]]
    return out


def _plain(v: Any) -> Any:
    return float(v) if isinstance(v, torch.Tensor) else v


__all__ = ["WARMUP_STEPS", "GraphedTrainStep", "StepLosses", "TrainStep", "build_step", "portable_state"]
