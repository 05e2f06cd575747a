"""The shared frozen trunk: the frozen blocks' outputs that the model reads, computed once and memory-mapped.

For a sample whose input is not augmented, the outputs of the frozen blocks (`TrunkLayout.stored`: the
last frozen block and every feature block below it) never change, so one file per (image list, input
size, colour mode, frozen weights, layout, device precision, torch version) holds them for every job
and epoch: fp32 [N, k, T, C] in `<cache>/trunk/<key>.npy`, memory-mapped on the CPU, copied to the GPU
in bf16 when it fits. The key hashes the frozen parameters themselves (so weights files and random
inits count by content) and the decode cache's key of the images (paths, sizes, mtimes), so a changed
input never reads a stale entry. A file is written under a temporary name and renamed; its size, mtime
and sha256 are recorded beside it, and a file whose size differs, or whose mtime changed and whose
digest no longer matches, is rebuilt, never trusted. Its blocks are allocated before the map is written, so a
full disk is `NoSpaceLeft` naming the entry and the cache folder, never a SIGBUS; the job fails with it rather
than training on without the trunk, whose results could then depend on free space (usagg/atomic.py `reserve`).

Exact on the CPU: stored tokens are the fp32 outputs of the same kernels the training step runs, and
frozen blocks run in eval behaviour in both paths (usagg/model/backbones.py); tests/test_trunk.py checks
the bits.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from usagg.atomic import full_disk_named, reserve
from usagg.cachedir import entry_lock
from usagg.data import cache
from usagg.data.datasets import to_model_input
from usagg.filehash import sha256_of
from usagg.model.backbones import DinoEncoder, TrunkLayout
from usagg.tensorbytes import tensors_sha256

log = logging.getLogger(__name__)

#: Bump when what the trunk stores changes, so old files are not reused.
TRUNK_VERSION = 1
#: Images per forward pass while building (the stored bits do not depend on it on the CPU: tested).
BUILD_BATCH = 16


@dataclass
class Trunk:
    """One image list's trunk: `data` [N, k, T, C] (fp32 memmap, or a bf16 tensor on the GPU), row per file."""

    layout: TrunkLayout
    data: np.ndarray | torch.Tensor
    rows: dict[str, int]
    path: Path

    @property
    def on_device(self) -> bool:
        return isinstance(self.data, torch.Tensor)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.data.shape)) * 4

    def rows_of(self, files: Sequence[Path]) -> torch.Tensor | None:
        """Row of each file (int64 [n]), or None when some file is not in this trunk."""
        try:
            return torch.tensor([self.rows[os.path.abspath(f)] for f in files], dtype=torch.int64)
        except KeyError:
            return None

    def gather(self, rows: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
        """Tokens of these rows on `device`, one [b, T, C] per stored block (rows on the data's device)."""
        if isinstance(self.data, torch.Tensor):
            t = self.data.index_select(0, rows)
        else:
            t = torch.from_numpy(np.take(self.data, rows.numpy(), axis=0))
            if device.type == "cuda":
                t = t.pin_memory().to(device, non_blocking=True)
        return list(t.unbind(1))

    def to(self, device: torch.device, room: Callable[[int], bool]) -> Trunk:
        """On a CUDA device in bf16 when `room` grants its bytes there (usagg/engine/batches.py `GpuRoom.take`, the
        job's one budget); else as it is."""
        if device.type != "cuda" or self.on_device or not room(self.nbytes // 2):
            return self
        out = torch.empty(self.data.shape, dtype=torch.bfloat16, device=device)
        for i in range(0, len(out), 256):
            out[i : i + 256] = torch.from_numpy(np.ascontiguousarray(self.data[i : i + 256])).to(device)
        return Trunk(self.layout, out, self.rows, self.path)


def frozen_digest(encoder: DinoEncoder, layout: TrunkLayout) -> str:
    """sha256 of every parameter and buffer the trunk depends on (all but the blocks above it and the heads)."""
    skip = (*(f"blocks.{i}." for i in range(layout.start, encoder.depth)), "norm.", "fc_norm.", "head")
    named = list(encoder.vit.named_parameters()) + list(encoder.vit.named_buffers())
    kept = [(name, t) for name, t in sorted(named, key=lambda kv: kv[0]) if not name.startswith(skip)]
    return tensors_sha256(kept, "{name} {dtype} {shape}\n")


def trunk_key(
    files: Sequence[Path], image_size: int, color: str, encoder: DinoEncoder, layout: TrunkLayout, precision: str
) -> str:
    """What a trunk file depends on: images (decode key), size, colour, frozen weights, layout, precision, torch."""
    parts = [
        f"usagg-trunk v{TRUNK_VERSION}",
        cache.cache_key(files, image_size, "image", color),
        f"{layout.start} {list(layout.stored)} {precision} torch {torch.__version__}",
        frozen_digest(encoder, layout),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _valid(data_file: Path, meta_file: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The memmap when the file is complete and unchanged since it was written, else None."""
    try:
        meta = json.loads(meta_file.read_text())
        st = data_file.stat()
        if meta.get("version") != TRUNK_VERSION or st.st_size != meta["size"] or tuple(meta["shape"]) != shape:
            return None
        if st.st_mtime_ns != meta["mtime_ns"] and sha256_of(data_file) != meta["sha256"]:
            return None
        arr = np.load(data_file, mmap_mode="r")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return arr if arr.shape == shape and arr.dtype == np.float32 else None


def load_or_build(
    encoder: DinoEncoder,
    files: Sequence[Path],
    image_size: int,
    color: str,
    cache_dir: Path,
    images: Callable[[], np.ndarray],
    device: torch.device,
    precision: str = "fp32",
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> Trunk:
    """The trunk of these image files (computed from `images()`, uint8 [N, S, S] or [N, 3, S, S], on a miss).

    `precision` names how `autocast` computes (it is part of the key: bf16 and fp32 trunks differ).
    """
    layout = encoder.trunk_layout()
    if layout is None:
        raise ValueError("this encoder has no trunk (nothing frozen, or a MoE block among the frozen ones)")
    on = next(encoder.parameters()).device
    if on.type != device.type or (device.index is not None and on.index != device.index):
        raise ValueError(f"the encoder is on {on} but its trunk is to be built on {device}: move the model there first")
    files = [Path(os.path.abspath(f)) for f in files]
    grid = image_size // 16
    shape = (len(files), len(layout.stored), encoder.num_prefix_tokens + grid * grid, encoder.embed_dim)
    folder = Path(cache_dir) / "trunk"
    key = trunk_key(files, image_size, color, encoder, layout, f"{device.type}-{precision}")
    data_file, meta_file = folder / f"{key}.npy", folder / f"{key}.json"
    with entry_lock(Path(cache_dir), folder / f"{key}.lock"):
        arr = _valid(data_file, meta_file, shape) if data_file.exists() else None
        if arr is None:
            if data_file.exists():
                log.warning("trunk file %s is damaged or incomplete; rebuilding it", data_file)
            pixels = images()  # the decode cache names its own entry on a full disk
            with full_disk_named(data_file, cache=True):
                _build(encoder, layout, pixels, shape, data_file, meta_file, device, autocast)
            arr = np.load(data_file, mmap_mode="r")
        else:
            with contextlib.suppress(OSError):
                os.utime(meta_file)  # last use, for `usagg cache prune` (the data file's mtime is its seal)
    return Trunk(layout, arr, {str(f): i for i, f in enumerate(files)}, data_file)


def _build(
    encoder: DinoEncoder,
    layout: TrunkLayout,
    images: np.ndarray,
    shape: tuple[int, ...],
    data_file: Path,
    meta_file: Path,
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager],
) -> None:
    """Run the frozen blocks (eval behaviour, no autograd) into a temporary .npy, seal it, rename it."""
    for stale in data_file.parent.glob(f"{data_file.stem}.*tmp*"):  # left by a killed process; we hold the lock
        stale.unlink(missing_ok=True)
    tmp = data_file.with_name(f"{data_file.stem}.{os.getpid()}.tmp.npy")
    tmp_meta = meta_file.with_name(f"{meta_file.stem}.{os.getpid()}.tmp.json")
    was_training = encoder.training
    encoder.eval()
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
        reserve(tmp, data_file)  # a full disk: NoSpaceLeft now, not a SIGBUS at the first page written
        with torch.inference_mode(), autocast():
            for i in range(0, shape[0], BUILD_BATCH):
                x = to_model_input(torch.from_numpy(np.array(images[i : i + BUILD_BATCH])).to(device))
                tokens = encoder.trunk_tokens(x, layout)
                out[i : i + BUILD_BATCH] = torch.stack(tokens, 1).float().cpu().numpy()
        out.flush()
        del out
        st = tmp.stat()
        meta = {"version": TRUNK_VERSION, "shape": list(shape), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        tmp_meta.write_text(json.dumps({**meta, "sha256": sha256_of(tmp)}))
        meta_file.unlink(missing_ok=True)  # data first: a data file without its seal is rebuilt
        os.replace(tmp, data_file)
        os.replace(tmp_meta, meta_file)
    finally:
        encoder.train(was_training)
        for t in (tmp, tmp_meta):
            t.unlink(missing_ok=True)


__all__ = ["Trunk", "frozen_digest", "load_or_build", "trunk_key"]
