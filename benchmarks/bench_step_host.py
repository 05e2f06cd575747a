"""What a recorded training step leaves to the host: aten calls per step outside the graph (issue 24.2).

Under `execution.accel: step-graphs` (usagg/engine/step.py) a task's whole step is one CUDA graph,
but each step still makes its batch (indices, augmentation, targets: `TensorSplit.batch`), gives a
trunk-fed batch as tokens (`GraphedTrainStep._input`: the frozen blocks for the augmented rows),
copies it into the graph's buffers (`_load`) and does the loop's bookkeeping (sampler, loss sums,
schedule, callbacks). This counts every aten call of a small AU job with a frozen trunk, MoE and
augmentation, run through `run_one` with the step-graphs trainer, by where it happens, per training
step, and by the device of its first tensor argument. On the CPU the body runs unrecorded from the
same buffers (its count is what one recording holds); on CUDA (`BENCH_STEP_HOST_DEVICE=cuda`) the
body is dispatched only at the eager warm-up steps and the recordings, and the calls outside it are
what the host still launches per step.

`python -m benchmarks step_host`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STUDY = """
name: bench-step-host
paradigms: [AU]
data:
  synthetic: {{seed: 0, image_size: 48, default_size: 24, val_size: 6, out: {out}}}
  selection_fraction: 0.25
  cache_dir: {cache}
tasks:
  - {{id: fetal_head, type: segmentation, num_classes: 2, group: Fetal}}
  - {{id: thyroid_nodule_det, type: detection, num_classes: 1, group: Thyroid}}
model: {{backbone: dinov3_test, image_size: 32, frozen_blocks: 1, moe: {{experts: 4}}, heads: {{hidden: 32}}}}
training: {{epochs: 2, batch_size: 6, eval_batch_size: 6}}
"""

#: Where a call happens, by the method running it (innermost wins); anything else in a training epoch is the loop's.
PLACES = (
    ("usagg.engine.batches", "TensorSplit", "batch", "batch"),
    ("usagg.engine.step", "GraphedTrainStep", "_input", "trunk tokens"),
    ("usagg.engine.step", "GraphedTrainStep", "_load", "buffer copies"),
    ("usagg.engine.step", "TrainStep", "_body", "recorded body"),
    ("usagg.engine.trainer", "Trainer", "train_epoch", "loop"),
)


@contextlib.contextmanager
def _labelled(stack: list[str]) -> Iterator[None]:
    """Wrap the `PLACES` methods so that `stack[-1]` names where the running call is; restored on exit."""
    import importlib

    saved = []
    for module, cls_name, method, label in PLACES:
        cls = getattr(importlib.import_module(module), cls_name)
        real = getattr(cls, method)

        def wrapper(*args: Any, _real: Any = real, _label: str = label, **kwargs: Any) -> Any:
            stack.append(_label)
            try:
                return _real(*args, **kwargs)
            finally:
                stack.pop()

        saved.append((cls, method, real))
        setattr(cls, method, wrapper)
    try:
        yield
    finally:
        for cls, method, real in saved:
            setattr(cls, method, real)


def main() -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from usagg.engine import job as job_module
    from usagg.engine.runner import run_one
    from usagg.plan import plan
    from usagg.spec.load import dump_study, load_study
    from usagg.store import RunStore

    device = os.environ.get("BENCH_STEP_HOST_DEVICE", "cpu")
    stack = ["outside training"]
    calls: Counter[tuple[str, str]] = Counter()
    steps = [0]

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            first = next((a for a in args if isinstance(a, torch.Tensor)), None)
            calls[stack[-1], "none" if first is None else first.device.type] += 1
            return func(*args, **(kwargs or {}))

    real_build = job_module.build_trainer

    def graphed_trainer(*args: Any, **kw: Any) -> Any:
        trainer = real_build(*args, **{**kw, "step_graphs": True})
        steps[0] = trainer.total_steps
        return trainer

    with tempfile.TemporaryDirectory(prefix="usagg-bench-step-host-") as tmp:
        root = Path(tmp)
        spec = root / "study.yaml"
        spec.write_text(STUDY.format(out=root / "synth", cache=root / "cache"))
        study = load_study(spec)
        job = plan(study)[0]
        store = RunStore(root / "runs")
        store.init(dump_study(study), [job])
        job_module.build_trainer = graphed_trainer  # type: ignore[assignment]
        try:
            with _labelled(stack), Count():
                state = run_one(str(store.root), job.id, device=device)
        finally:
            job_module.build_trainer = real_build
        if state != "done":
            raise RuntimeError(store.error_text(job.id))
    n = steps[0]
    places = [label for *_, label in PLACES]
    per_step = {
        label: {dev: calls[label, dev] / n for dev in ("cpu", "cuda", "none") if calls[label, dev]} for label in places
    }
    outside = sum(sum(v.values()) for k, v in per_step.items() if k != "recorded body")
    body = sum(per_step["recorded body"].values())
    print(f"aten calls per training step under step-graphs ({device}, {n} steps of an AU job, 2 tasks, MoE, trunk):")
    for label in places:
        split = ", ".join(f"{dev} {v:.1f}" for dev, v in per_step[label].items())
        print(f"  {label:<14}{sum(per_step[label].values()):8.1f}  ({split})")
    print(f"  outside the graph {outside:.1f} per step; in the recorded body {body:.1f} (CPU: one recording's worth)")
    return {"device": device, "steps": n, "per_step": per_step, "outside": outside, "body": body}


if __name__ == "__main__":
    main()
