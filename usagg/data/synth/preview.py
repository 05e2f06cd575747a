"""Contact sheet of the synthetic benchmark: a few images per task with their labels drawn on top.

Reads written data when given a benchmark folder (so what you see is what
was written), else generates the samples in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from usagg.data.fmc_uia import scan_split
from usagg.data.images import open_known
from usagg.data.synth.sample import SynthSample, make_sample
from usagg.data.synth.tasks import ALL_TASKS, TASKS
from usagg.spec.models import SynthSpec

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_COLOURS = ["#ff4040", "#40ff60", "#40a0ff", "#ffd040"]


def load_samples(root: Path, task_id: str, n: int, split: str = "train") -> list[SynthSample]:
    """The first n rows of a task's CSV in a written benchmark, read back through the FMC_UIA reader."""
    samples = scan_split(root, split).samples.get(task_id, [])[:n]
    read = []
    for s in samples:
        with open_known(s.image_file) as im:
            read.append(SynthSample.from_label(ALL_TASKS[task_id], np.asarray(im), s.label))
    return read


def _draw(ax: Axes, s: SynthSample) -> None:
    from matplotlib.patches import Rectangle

    h, w = s.image.shape
    ax.imshow(s.image, cmap="gray", vmin=0, vmax=255, extent=(0, w, h, 0), interpolation="nearest")
    t = s.task
    if s.mask is not None:
        for c in range(1, t.num_classes):
            if (s.mask == c).any():
                ax.contour(
                    np.arange(w) + 0.5,
                    np.arange(h) + 0.5,
                    (s.mask == c).astype(float),
                    levels=[0.5],
                    colors=_COLOURS[(c - 1) % 4],
                    linewidths=1.0,
                )
        present = [t.class_names[c] for c in np.unique(s.mask) if c]
        ax.set_xlabel(", ".join(present) or "(empty)", fontsize=7)
    if s.box is not None:
        x0, y0, x1, y1 = s.box
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=_COLOURS[1], linewidth=1.2))
        ax.set_xlabel(f"box {list(s.box)}", fontsize=7)
    if s.points is not None:
        for k, (x, y) in enumerate(s.points):
            ax.plot([x], [y], "+", color=_COLOURS[k % 4], markersize=9, markeredgewidth=1.6)
        ax.set_xlabel("points 1 (red), 2 (green)", fontsize=7)
    if s.label is not None:
        ax.set_xlabel(f"class {s.label}: {t.class_names[s.label]}", fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def render_preview(
    path: Path, spec: SynthSpec, root: Path | None = None, per_task: int = 4, tasks: list[str] | None = None
) -> Path:
    """Draw the contact sheet to `path` (PNG): one row per task, `per_task` samples each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ids = list(TASKS) if tasks is None else tasks
    fig, axes = plt.subplots(len(ids), per_task, figsize=(2.1 * per_task, 2.3 * len(ids)), squeeze=False)
    for row, tid in zip(axes, ids, strict=True):
        if root is not None and (root / "train" / "csv_files" / f"{tid}.csv").is_file():
            samples = load_samples(root, tid, per_task)
        else:
            samples = [make_sample(tid, "train", i, spec.seed, spec.image_size) for i in range(per_task)]
        for ax, s in zip(row, samples, strict=False):  # a tiny benchmark may have fewer images than columns
            _draw(ax, s)
        for ax in row[len(samples) :]:
            ax.axis("off")
        t = ALL_TASKS[tid]
        row[0].set_ylabel(f"{tid}\n{t.type} · {t.group}", fontsize=8)
    fig.suptitle(f"usagg synthetic benchmark (seed {spec.seed}, {spec.image_size} px)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
