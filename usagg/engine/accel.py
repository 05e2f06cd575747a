"""Launch overhead on CUDA: run the encoder eagerly, compiled, or as CUDA graphs (`execution.accel`).

A ViT-S step at batch 32 launches over a thousand small kernels, so on a fast
GPU the host, not the arithmetic, sets the pace (issue 10). The modes that
compile compile the encoder alone: the whole model would recompile per task (its
head is chosen by the task id) and fall back to eager after eight tasks, while
the encoder sees the task only as a tensor (the MoE routers' task embedding),
so one compiled encoder serves every task. The step-graphs modes record the
whole step, heads and optimiser included, around it.

- `compile`: `torch.compile` (inductor) fuses the encoder's elementwise work.
- `graphs`: `torch.compile(mode="reduce-overhead")`, inductor plus CUDA graph
  trees: one graph per input shape, replayed with a single launch, shared by
  every task. A graph's outputs live in a pool the next replay reuses; the
  model reads them within the step (the features go to the head, MoE losses
  and counts are stacked into new tensors in `M2DINO.forward`), which is
  what the trees require.
- `step-graphs`: no compiler; the trainer records each task's whole step
  (encoder, MoE, head, losses, backward, clipping, AdamW) as one CUDA graph
  and replays it (usagg/engine/step.py, issue 24.2). On an H100 its steady loop
  ran 2.26x eager, the GPU busy for the whole step (docs/benchmarks.md).
- `compiled-step-graphs`: both. The encoder and each head are compiled
  (inductor's default mode, no graphs of its own; rounding as eager does,
  `match_eager_rounding`) and the trainer records the whole step around their
  fused kernels. An AU step of eager kernels is a couple of thousand launches
  of a few microseconds each, so under step-graphs the kernels' count, not
  their arithmetic, sets the GPU's time, and fusing cuts that count (a
  pixel-map head's forward and backward are about 570 of a 2,400-call
  dinov3_small AU step). The task's eager warm-up steps compile them (dynamo
  traces forward and backward there), so recording sees only compiled code; a
  worker's next job of the same shapes reuses that code (below). Unmeasured on
  a GPU.

The compiled encoder serves training alone: `M2DINO.forward` runs it eagerly without grad (selection,
the test) and `TrainStep` gives it a trunk-fed batch wholly as tokens, one input shape whichever rows
were augmented; otherwise each grad mode and count of augmented rows was compiled apart until dynamo's
recompile limit (8), after which the encoder ran eagerly for good (an H100 job under graphs, 2026-12-06).

`nn.Module.compile` compiles in place, so parameter names, state dicts and
checkpoints are those of the eager model. A pool worker compiles once per shape, not per job:
dynamo inlines the encoder's modules (parameters are graph inputs), so the next job's new
encoder of the same shapes in that worker captures no new graph (tests/test_cuda_path.py), and
the worker keeps its compiled model for the next job of the same structure, the job's weights
copied in (usagg/engine/kept.py), so `graphs` replays the CUDA graphs it recorded instead of
recording them again for new parameters (unmeasured on a GPU).
Compiled code is kept on disk in the usagg cache
(`<cache>/compile/torch-<version>/`, `compile_cache`) unless the user set TORCHINDUCTOR_CACHE_DIR (the
folder inductor writes there at its first compile is not a choice): it
outlives /tmp (wiped between Slurm jobs on many clusters), a job of the same shapes loads it instead
of compiling, each torch version has its own folder, and a folder whose marker is damaged or names
another version is rebuilt (one line says so).

Inductor unpickles what it finds in its cache folder (its FX graph cache loads every file of a key's folder) and
loads the shared objects there, so whoever can write that folder runs code as the user: a shared
`data.cache_dir` or $USAGG_CACHE on a cluster, or a cache copied from a colleague. usagg points inductor only at
a folder it can vouch for (`compile_cache`): no one but the user can replace it or a folder above it
(usagg/cachetrust.py `vetted_folder`: the folders from the cache root down are the user's, none above is writable
by others unless sticky), it is private (0700; what inductor writes inside with the process's umask is then out
of others' reach), everything in it is the user's own file or folder (`not_yours`), and its marker carries a
seal, an HMAC-SHA256 of the folder's resolved path and torch version under a per-user key kept outside every
cache (`cache_key`, ~/.config/usagg/cache.key, 0600), which a copied folder, one made by another user or by an
earlier usagg lacks: such a folder is emptied and rebuilt like one of another version. A folder holding what is
not the user's, or one usagg cannot make safe, is left alone and this process compiles into a private temporary
folder instead, with one warning naming the folder, what is wrong and what to do.

Without Triton (or on a GPU too old for it) compile and graphs fall back to eager with one warning,
compiled-step-graphs to step-graphs; step-graphs needs no compiler. The CPU always runs eager (compile costs over
30 s there and gains about 1 %). `make gpu-check` (benchmarks/gpu_check.py) measured the AU model's steady loop
(docs/benchmarks.md): graphs 3.59x eager and compile 1.20x on an H200, step-graphs 2.26x on an H100. The default
stays eager until a whole job under one of them has matched eager on a GPU (the check's jobs phase).
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import json
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Literal, get_args

import torch

from usagg.cachedir import CACHE_ENV, COMPILE_MARKER, remove
from usagg.cachetrust import Untrusted, cache_key, not_yours, vetted_folder
from usagg.engine.step import WARMUP_STEPS
from usagg.model.m2dino import M2DINO, encoder_compiled

log = logging.getLogger(__name__)

AccelMode = Literal["eager", "compile", "graphs", "step-graphs", "compiled-step-graphs"]
ACCEL_MODES: tuple[str, ...] = get_args(AccelMode)

#: torch.compile mode per accel mode (None: inductor's default; compiled-step-graphs records the step itself, so
#: inductor makes no graphs of its own inside it).
_COMPILE_MODE: dict[str, str | None] = {"compile": None, "graphs": "reduce-overhead", "compiled-step-graphs": None}

#: The modes whose trainer records each task's whole step as a CUDA graph (usagg/engine/step.py).
_STEP_GRAPHS = ("step-graphs", "compiled-step-graphs")

_cpu_notice_given = False

INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def compile_cache(root: Path, version: str = torch.__version__) -> Path:
    """`<root>/compile/torch-<version>/` (resolved), made or checked, when usagg can vouch for it: the folders down
    to it are the user's and no one else can write them, everything in it is the user's, and its marker carries
    usagg's seal for this folder. A folder that is the user's but unsealed (copied, made by an older usagg), of another
    torch version or not private is emptied first (inductor's entries carry no such check of their own); its
    marker's time is refreshed, which is what `usagg cache prune` reads as last use. Otherwise, with one warning,
    a private folder of this process's (`_private_compile_folder`)."""
    from filelock import FileLock

    folder = Path(root) / "compile" / f"torch-{version.replace('/', '_').replace('+', '_')}"
    fix = f"set {CACHE_ENV} to a folder of your own"
    try:
        key = cache_key()
        folder = vetted_folder(folder.parent, owned_from=Path(root), fix=fix) / folder.name
        with FileLock(f"{folder}.lock"):  # jobs on one GPU start together: one checks or builds, the others wait
            return _checked_compile_folder(folder, version, key)
    except Untrusted as err:
        return _private_compile_folder(folder, version, err)
    except OSError as err:  # its lock a link (filelock refuses one), a full disk: not a traceback in every job
        why = Untrusted(f"{err.filename or folder} cannot be used ({err.strerror or type(err).__name__})", fix)
        return _private_compile_folder(folder, version, why)


def _checked_compile_folder(folder: Path, version: str, key: bytes) -> Path:
    """Under the folder's lock: keep it if it is sound (`_compile_folder_problem`), else empty it; then make it
    (0700) and seal it. Raises Untrusted for a folder holding what is not the user's, which usagg leaves alone."""
    marker = folder / COMPILE_MARKER
    if os.path.lexists(folder):
        if (problem := _compile_folder_problem(folder, version, key)) is None:
            marker.touch()
            return folder
        log.warning("compile cache %s: %s; emptied, so the encoder is compiled afresh", folder, problem)
        remove(folder)
        if os.path.lexists(folder):
            raise Untrusted(
                f"{folder} could not be emptied", f"remove {folder}, or set {CACHE_ENV} to a folder of your own"
            )
    folder.mkdir(mode=0o700)
    tmp = folder / f".{COMPILE_MARKER}.tmp"
    tmp.write_text(json.dumps({"torch": version, "seal": _seal(key, folder, version)}))
    tmp.replace(marker)
    return folder


def _compile_folder_problem(folder: Path, version: str, key: bytes) -> str | None:
    """Why an existing compile folder of the user's must be emptied (None: it is sound): not private, its marker
    missing, damaged, of another torch version or not sealed by usagg with the user's key for this very folder.
    Raises Untrusted when something in it is not the user's (another owner, a link): not usagg's to delete."""
    if why := not_yours(folder):
        raise Untrusted(why, f"remove {folder}, or set {CACHE_ENV} to a folder of your own")
    mode = stat.S_IMODE(folder.stat().st_mode)
    if mode & 0o077:
        return f"others could reach into it (mode {mode:04o}; usagg makes it 0700)"
    try:
        found = json.loads((folder / COMPILE_MARKER).read_text())
        torch_version, seal = found["torch"], found.get("seal")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        return f"its marker {COMPILE_MARKER} is missing or damaged ({type(err).__name__})"
    if torch_version != version:
        return f"it holds code compiled by torch {torch_version}"
    if not isinstance(seal, str) or not hmac.compare_digest(seal, _seal(key, folder, version)):
        return (
            f"its marker {COMPILE_MARKER} bears no seal of yours for this folder (a cache copied from elsewhere, made "
            "by someone else or by an earlier usagg), so its code cannot be vouched for"
        )
    return None


def _seal(key: bytes, folder: Path, version: str) -> str:
    """HMAC-SHA256, under the user's key (usagg/cachetrust.py `cache_key`), of the folder's resolved path and the torch
    version: what only usagg run by this user could have written into this folder's marker."""
    message = json.dumps(["usagg compile cache", str(folder.resolve()), version]).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


_private_top: Path | None = None  # this process's fallback for compiled code (`_private_compile_folder`)
_warned: set[str] = set()


def _private_compile_folder(folder: Path, version: str, err: Untrusted) -> Path:
    """A private folder of this process for compiled code (tempfile.mkdtemp: the user's, 0700; deleted at exit), when
    usagg cannot vouch for `folder`; says so in one warning line per cause and process."""
    global _private_top
    if _private_top is None:
        _private_top = Path(tempfile.mkdtemp(prefix="usagg-compile-"))
        atexit.register(shutil.rmtree, _private_top, True)
    private = _private_top / "compile" / folder.name
    if not private.is_dir():
        private.mkdir(mode=0o700, parents=True)
        # the marker names usagg's folder (`_user_chose_compile_folder`); no other process ever reads this one
        (private / COMPILE_MARKER).write_text(json.dumps({"torch": version}))
    if err.why not in _warned:
        _warned.add(err.why)
        log.warning(
            "compiled code is not kept in %s: %s. Inductor runs what it finds in its cache, so this process compiles "
            "into %s, a private folder deleted at exit; to keep compiled code between jobs, %s.",
            folder,
            err.why,
            _private_top,
            err.fix,
        )
    return private


def use_compile_cache(root: Path) -> Path | None:
    """Point inductor at `compile_cache(root)`, unless the user chose its folder (TORCHINDUCTOR_CACHE_DIR); the
    folder used, or None when the user's is."""
    if _user_chose_compile_folder():
        return None
    folder = compile_cache(root)
    os.environ[INDUCTOR_CACHE_ENV] = str(folder)
    return folder


def _user_chose_compile_folder() -> bool:
    """Whether TORCHINDUCTOR_CACHE_DIR is the user's. Inductor writes its default folder (under /tmp) into that
    variable the first time it compiles anything, and usagg writes its own: neither is a choice, and taking them
    for one would leave every later job of the process compiling into /tmp (gpu-check's bare loop compiles
    first)."""
    value = os.environ.get(INDUCTOR_CACHE_ENV)
    if not value:
        return False
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    chosen = os.path.abspath(value)
    if chosen == os.path.abspath(default_cache_dir()):
        return False
    return not (Path(chosen).parent.name == "compile" and (Path(chosen) / COMPILE_MARKER).is_file())


def compiler_missing() -> str | None:
    """Why `compile` and `graphs` cannot run on this machine's GPU (None: they can): inductor generates Triton
    kernels for CUDA, so Triton must be importable and the GPU able to run it (compute capability 7.0 or more)."""
    from torch.utils._triton import has_triton, has_triton_package

    if not has_triton_package():
        return "the triton package is not installed (pip install triton, the version torch names)"
    if not has_triton():
        return "this GPU cannot run Triton's kernels (compute capability below 7.0, or no Triton backend for it)"
    return None


def fallback_text(mode: AccelMode, device: torch.device) -> str | None:
    """The one line saying how `mode` runs otherwise than asked on `device` and why (None: as asked), `accelerate`'s
    decision: the CPU runs eager; without Triton compile and graphs run eager, compiled-step-graphs step-graphs.
    The job's log and the run's display (its start report, usagg/engine/progress.py) both say it."""
    if mode == "eager":
        return None
    if device.type != "cuda":
        return f"execution.accel={mode} applies to CUDA devices only; this job runs eager on {device}"
    missing = None if mode == "step-graphs" else compiler_missing()
    if missing is None:
        return None
    instead = "step-graphs, its step recorded uncompiled" if mode in _STEP_GRAPHS else "eager"
    return f"execution.accel={mode} needs inductor's GPU compiler, Triton: {missing}; this job runs {instead}"


def whole_step_graphs(mode: AccelMode, device: torch.device) -> bool:
    """Whether the trainer records each task's whole step as a CUDA graph (`step-graphs` and
    `compiled-step-graphs` on CUDA; usagg/engine/step.py)."""
    return mode in _STEP_GRAPHS and device.type == "cuda"


def mode_ran(asked: AccelMode, model: M2DINO, step_graphs: bool) -> AccelMode:
    """The mode a job trained under, after `accelerate`'s fallbacks (the CPU runs eager; without Triton compile and
    graphs run eager, compiled-step-graphs step-graphs): what metrics.json `throughput.accel` records, so a
    "step-graphs" run that ran otherwise cannot pass for one. `step_graphs`: the trainer recorded its steps."""
    compiled = encoder_compiled(model)
    if step_graphs:
        return "compiled-step-graphs" if compiled else "step-graphs"
    return asked if compiled and asked in ("compile", "graphs") else "eager"


def compile_model(model: M2DINO, mode: AccelMode, backend: str = "inductor") -> M2DINO:
    """Compile `model.encoder` in place for `mode` (on any device; `accelerate` is the policy), and each head under
    compiled-step-graphs; return the model. `backend`: inductor (`mode`'s torch.compile mode), or another dynamo
    backend (the CPU's tests use aot_eager: dynamo's guards and AOT autograd without code generation).

    Compilation happens lazily at the first forward; shapes that change (the last,
    smaller batch of a split) get a graph with a dynamic batch size after the second one.
    """
    if mode not in ACCEL_MODES:
        raise ValueError(f"unknown accel mode {mode!r}; choose one of {', '.join(ACCEL_MODES)}")
    if mode in _COMPILE_MODE:
        match_eager_rounding()
        how = {"mode": _COMPILE_MODE[mode]} if backend == "inductor" else {"backend": backend}
        model.encoder.compile(**how)
        if mode in _STEP_GRAPHS:  # compiled-step-graphs: the heads too (each serves training alone, as the encoder)
            for head in model.heads.values():
                head.compile(**how)
    return model


def match_eager_rounding() -> None:
    """Have inductor round to bf16 where eager autocast does (`emulate_precision_casts`), for every compiled mode.

    Without it inductor keeps float32 between fused operations, which should only be closer to float32, yet a
    box head compiled inside the model, under bf16 autocast on the CPU, got gradients 65 % off float32's
    (eager bf16: 0.55 %) while its loss moved by 1.5 %; with it the compiled model's gradients are eager bf16's,
    per task (tests/test_cuda_path.py). A global inductor setting: it holds for the whole process.
    """
    import torch._inductor.config as inductor_config

    if hasattr(inductor_config, "emulate_precision_casts"):  # torch 2.6 and later
        inductor_config.emulate_precision_casts = True


def accelerate(model: M2DINO, mode: AccelMode, device: torch.device, cache: Path | None = None) -> M2DINO:
    """Apply `execution.accel` to a model about to train on `device`: CUDA only; the CPU runs eager (said once).
    `cache`: the usagg cache root, where compiled code is kept (`use_compile_cache`)."""
    global _cpu_notice_given
    if mode == "eager":
        return model
    if device.type != "cuda":
        if not _cpu_notice_given:
            log.info("%s", fallback_text(mode, device))
            _cpu_notice_given = True
        return model
    if mode in _STEP_GRAPHS:
        log.info(
            "execution.accel=%s: each task's whole training step is recorded as one CUDA graph after %d "
            "eager steps (usagg/engine/step.py)",
            mode,
            WARMUP_STEPS,
        )
    if mode == "step-graphs":
        return model
    fallback = fallback_text(mode, device)
    if fallback is not None:
        log.warning("%s", fallback)
        return model
    folder = use_compile_cache(cache) if cache is not None else None
    log.info(
        "execution.accel=%s: the encoder is compiled (%s) at its first batch; compiled code in %s",
        mode,
        _COMPILE_MODE[mode] or "default",
        folder or os.environ.get(INDUCTOR_CACHE_ENV) or "inductor's default folder",
    )
    return compile_model(model, mode)


__all__ = [
    "ACCEL_MODES",
    "AccelMode",
    "accelerate",
    "compile_cache",
    "compile_model",
    "compiler_missing",
    "fallback_text",
    "match_eager_rounding",
    "mode_ran",
    "use_compile_cache",
    "whole_step_graphs",
]
