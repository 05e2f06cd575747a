"""Refusing a `model.weights` file before any job: the load of usagg/model/weights.py, without the tensors.

Run by `usagg validate` (usagg/cli/spec_cmds.py) and before any job of `usagg run`
(`StudyRun.check_data` in usagg/run/studyrun.py), so a text file, a truncated download or
another model's checkpoint stops the study with one paragraph instead of failing every
job with a traceback. Its own module because it builds the backbone (usagg/model/backbones.py),
which itself loads weights through usagg/model/weights.py.
"""

from __future__ import annotations

from pathlib import Path

import torch

from usagg.model.backbones import create_vit
from usagg.model.weights import fit_state, read_checkpoint


def check_weights(path: Path, backbone: str) -> int:
    """UsaggError naming the file, the backbone and the first misfits unless `path` loads into `backbone`.

    Returns the number of tensors that would be loaded. Does what `load_dinov3_weights` does
    (same reader, same key mapping, same strict comparison), against the backbone built on
    the meta device (shapes only: nothing allocated, nothing downloaded) and a memory-mapped
    file, so a 1 GB checkpoint costs little time or memory.
    """
    path = Path(path)
    raw = read_checkpoint(path, backbone, mmap=True)
    with torch.device("meta"):
        vit = create_vit(backbone)
    return len(fit_state(vit, raw, path, backbone))


__all__ = ["check_weights"]
