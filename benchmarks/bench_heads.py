"""Heads and losses of a TS step (issue 24.5): operator calls and CPU time, before and after, by loss stride.

One TS step of a segmentation task (fetal_head, 2 classes) and of a keypoint task
(fetal_head_biometry, heatmap head) on 8 synthetic images, as bench_ops's study trains them
(dinov3_test at 64 px, frozen_blocks 1, decoder_channels 32, hidden 128, fused AdamW): the
aten calls of the whole step (forward, loss, backward, optimiser) and of the heads and losses
alone (the encoder run without gradient, then head forward + loss + backward), and the median
CPU times of a whole step and of the heads alone over repeats (one thread; strides interleaved in one process).
`BASE_COMMIT`'s tree (a git worktree under /tmp, bench_ops.worktree) is counted the same way in a subprocess with
PYTHONPATH at that tree; today's code at every `model.heads.seg_loss_stride`.
Image size: 64 (the demo's) and 224.
`python -m benchmarks heads`.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BASE_COMMIT = "8619a58"  # the parent of issue 24.5's change
BATCH = 8
REPEATS = int(os.environ.get("BENCH_HEADS_REPEATS", "7"))
TASKS = {"seg": ("fetal_head", "segmentation", 2), "kp": ("fetal_head_biometry", "regression", None)}


def _batch(task: str, size: int) -> tuple[Any, Any]:
    """Synthetic images (3 channels, [0, 1]) and targets as the model takes them: masks or normalised points."""
    import numpy as np
    import torch

    from usagg.data.synth.sample import make_sample

    synth_id = TASKS[task][0]
    samples = [make_sample(synth_id, "train", i, 0, size) for i in range(BATCH)]
    x = torch.from_numpy(np.stack([s.image for s in samples]).astype(np.float32) / 255)[:, None].expand(-1, 3, -1, -1)
    if task == "seg":
        y = torch.from_numpy(np.stack([s.mask for s in samples])).long()
    else:
        y = torch.tensor([s.points for s in samples], dtype=torch.float32) / size
    return x.contiguous(), y


class _Step:
    """One TS step of one task's model (forward, loss, backward, fused AdamW), and the heads alone."""

    def __init__(self, task: str, size: int, stride: int | None) -> None:
        import torch

        from usagg.data.synth import TASKS as SYNTH
        from usagg.model.m2dino import build_model
        from usagg.spec.models import ModelSpec, TaskSpec

        torch.manual_seed(0)
        self.task_id, ttype, _ = TASKS[task]
        heads: dict[str, Any] = {"decoder_channels": 32, "hidden": 128}
        if stride is not None:
            heads["seg_loss_stride"] = stride
        spec = ModelSpec(backbone="dinov3_test", image_size=size, frozen_blocks=1, heads=heads)
        tspec = TaskSpec(id=self.task_id, type=ttype, num_classes=SYNTH[self.task_id].num_classes)
        self.model = build_model(spec, [tspec], moe=False).train()
        self.opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], fused=True)
        self.x, self.y = _batch(task, size)

    def __call__(self) -> None:
        out = self.model(self.x, self.task_id, self.y)
        self.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        self.opt.step()

    def heads_only(self) -> Any:
        """The heads' part of a step, to count: features made here without gradient, no earlier gradients."""
        import torch

        head = self.model.head(self.task_id)
        self.opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            feats = self.model.encoder(self.x, None).features
        return lambda: head.loss(head(feats), self.y).backward()


def _count(fn: Any) -> int:
    """Aten calls of `fn`, by bench_ops' counter, loaded from beside this file: the child runs with the old tree's
    `benchmarks` package first on PYTHONPATH, which may predate the counter."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_ops_today", Path(__file__).with_name("bench_ops.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _, calls = module.count_calls(fn)
    return sum(calls.values())


def _child(task: str, size: int, strides: list[int | None]) -> dict[str, Any]:
    """In the child: calls of one step and of the heads alone per stride, then the steps' times, interleaved
    (one step of each stride per round), so a busy machine slows every stride alike."""
    import torch

    torch.set_num_threads(1)
    steps = [_Step(task, size, s) for s in strides]
    out: dict[str, Any] = {}
    for s, step in zip(strides, steps, strict=True):
        step()  # warm-up: first-call allocations and lazily built tables
        out[str(s)] = {"step": _count(step), "heads": _count(step.heads_only())}
    heads = [step.heads_only() for step in steps]
    times: list[list[float]] = [[] for _ in steps]
    head_times: list[list[float]] = [[] for _ in steps]
    for _ in range(REPEATS):
        for t, th, step, head in zip(times, head_times, steps, heads, strict=True):
            t0 = time.perf_counter()
            step()
            t1 = time.perf_counter()
            step.opt.zero_grad(set_to_none=True)
            t2 = time.perf_counter()
            head()
            th.append(time.perf_counter() - t2)
            t.append(t1 - t0)
    for s, t, th in zip(strides, times, head_times, strict=True):
        out[str(s)] |= {"step_ms": 1000 * statistics.median(t), "heads_ms": 1000 * statistics.median(th)}
    return out


def _run(code_root: Path, task: str, size: int, strides: list[int | None]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(code_root), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    arg = ",".join(str(s or 0) for s in strides)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", task, str(size), arg]
    proc = subprocess.run(cmd, cwd=code_root, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{code_root} {task} {size} px strides {arg} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.splitlines()[-1])


def main() -> dict[str, Any]:
    from benchmarks.bench_ops import worktree

    base = worktree(BASE_COMMIT)
    rows = []
    for size in (64, 224):
        runs = [
            ("seg", base, [None], lambda s: BASE_COMMIT),
            ("seg", REPO, [1, 2, 4], lambda s: f"today, stride {s}"),
            ("kp", base, [None], lambda s: BASE_COMMIT),
            ("kp", REPO, [None], lambda s: "today"),
        ]
        for task, root, strides, label in runs:
            for s, r in _run(root, task, size, strides).items():
                name = label(s)
                rows.append({"task": task, "size": size, "code": name, **r})
                print(
                    f"{TASKS[task][0]:<20} {size:>4} px  {name:<16} step {r['step']:>5} calls, heads+loss "
                    f"{r['heads']:>4} calls; {r['step_ms']:7.1f} ms/step, heads+loss {r['heads_ms']:6.1f} ms"
                )
    return {"base_commit": BASE_COMMIT, "batch": BATCH, "repeats": REPEATS, "rows": rows}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        task, size = sys.argv[2], int(sys.argv[3])
        strides = [int(v) or None for v in sys.argv[4].split(",")]
        print(json.dumps(_child(task, size, strides)))
    else:
        main()
