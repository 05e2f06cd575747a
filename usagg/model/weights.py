"""Loading a local official DINOv3 checkpoint into a timm DINOv3 ViT, and the inverse conversion.

The official key names (storage_tokens, ls1/ls2.gamma, fused qkv bias with its
mask, rope periods, mask_token) are mapped by timm's own
`checkpoint_filter_fn`; the load is strict, and a file that does not fit says
which keys are missing, unexpected or of the wrong shape. No network, ever:
the weights are licence-gated, so the user gives a path.
"""

from __future__ import annotations

import contextlib
import io
import logging
import stat
import zipfile
from pathlib import Path

import torch
from timm.models.eva import checkpoint_filter_fn
from torch import nn

from usagg.errors import UsaggError

_SHOW = 4  # keys named per category in error messages

log = logging.getLogger(__name__)


def read_checkpoint(path: Path, backbone: str = "", *, mmap: bool = False) -> dict[str, torch.Tensor]:
    """A state dict from a .pth/.pt (torch.load, weights_only, CPU) or .safetensors file; UsaggError if unreadable.

    `mmap` maps a zip-format .pth instead of reading it, so checking a 1 GB file costs little memory.
    """
    path = Path(path)
    target = f" for backbone {backbone}" if backbone else ""
    try:
        mode = path.stat().st_mode
    except OSError:
        mode = None
    if mode is None or not stat.S_ISREG(mode):
        from usagg.spec.load import _file_kind

        why = "does not exist" if mode is None else f"is {_file_kind(mode)}, not a file"
        raise UsaggError(
            f"The weights file {path}{target} {why}. Give `model.weights` the path of a downloaded official "
            "DINOv3 checkpoint (for example dinov3_vits16_pretrain_lvd1689m-08c60483.pth), or leave it empty "
            "to train from a random initialisation."
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except Exception as exc:
        # the first sentence only: torch's unpickling errors go on to suggest weights_only=False, never wise here
        first = (str(exc).strip().splitlines() or [""])[0].split(". ")[0].rstrip(".")
        raise UsaggError(
            f"Could not read the weights file {path}{target} as a PyTorch checkpoint ({type(exc).__name__}: "
            f"{first}; {_describe(path)}). It may be truncated (an interrupted download) or not a checkpoint at all "
            "(a saved web page, a text file); give the official DINOv3 .pth file as downloaded, or a .safetensors file."
        ) from exc
    if not isinstance(state, dict):
        raise UsaggError(
            f"The weights file {path}{target} holds a {type(state).__name__}, not a state dict of tensors."
        )
    return state


def _describe(path: Path) -> str:
    """Size and first bytes of a file that did not load: an HTML page or a text file shows itself."""
    with path.open("rb") as f:
        head = f.read(24)
    return f"{path.stat().st_size} bytes, starting {head!r}"


def _fit_report(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str], list[str], list[str]]:
    """Missing, unexpected, non-tensor and wrong-shape keys of `state` against `model.state_dict()`.

    A value that is not a tensor (a string, a number) at a model key passes a check of names alone and fails
    `load_state_dict` in every job, so it is named here with its type.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    untyped = [f"{k}: {type(v).__name__}" for k, v in state.items() if k in own and not isinstance(v, torch.Tensor)]
    wrong = [
        f"{k}: file {tuple(v.shape)}, model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and isinstance(v, torch.Tensor) and v.shape != own[k].shape
    ]
    return missing, unexpected, untyped, wrong


def _some(keys: list[str]) -> str:
    more = f", ... ({len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def _n(items: list[str], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def fit_state(model: nn.Module, raw: dict[str, torch.Tensor], path: Path, backbone: str) -> dict:
    """`raw` under timm's key names, checked key by key and shape by shape against `model`; UsaggError if not."""
    name = backbone or type(model).__name__
    printed = io.StringIO()  # timm prints a line per key it cannot place: to the log, not the user's terminal
    try:
        with contextlib.redirect_stdout(printed):
            state = checkpoint_filter_fn(raw, model)
    except Exception as exc:
        raise UsaggError(
            f"The weights file {path} could not be converted to timm's DINOv3 layout for backbone {name} "
            f"({type(exc).__name__}: {exc}). It does not look like an official DINOv3 ViT checkpoint."
        ) from exc
    finally:
        for line in printed.getvalue().splitlines():
            log.debug("timm: %s", line)
    missing, unexpected, untyped, wrong = _fit_report(model, state)
    if missing or unexpected or untyped or wrong:
        parts = []
        if missing:
            parts.append(f"{_n(missing, 'missing key')} ({_some(missing)})")
        if unexpected:
            parts.append(f"{_n(unexpected, 'unexpected key')} ({_some(unexpected)})")
        if untyped:
            parts.append(f"{_n(untyped, 'key')} holding no tensor ({_some(untyped)})")
        if wrong:
            parts.append(f"{_n(wrong, 'key')} of the wrong shape ({_some(wrong)})")
        raise UsaggError(
            f"The weights file {path} does not fit backbone {name}: "
            + "; ".join(parts)
            + ". Give the official DINOv3 checkpoint of the same model size as `model.backbone` "
            "(ViT-S/16 for dinov3_small, ViT-S+/16 for dinov3_small_plus, ViT-B/16, ViT-L/16), "
            "or leave `model.weights` empty for a random initialisation."
        )
    return state


def load_dinov3_weights(model: nn.Module, path: Path, backbone: str = "") -> None:
    """Load an official (or timm-format) DINOv3 checkpoint into a timm Eva model, strictly."""
    path = Path(path)
    state = fit_state(model, read_checkpoint(path, backbone), path, backbone)
    model.load_state_dict(state, strict=True)


def to_official_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Inverse of timm's DINOv3 `checkpoint_filter_fn`: a timm Eva state dict under the official key names.

    Adds what the official files carry and timm drops: a fused qkv bias (with a
    k part, ignored through `bias_mask`), `rope_embed.periods` and `mask_token`.
    Used to test the loader and to export a fine-tuned encoder.
    """
    out: dict[str, torch.Tensor] = {}
    sd = model.state_dict()
    for k, v in sd.items():
        if k.endswith("attn.q_bias"):
            v_bias = sd[k.replace("q_bias", "v_bias")]
            base = k[: -len("q_bias")]
            out[base + "qkv.bias"] = torch.cat([v, torch.zeros_like(v), v_bias])
            mask = torch.ones(3 * v.numel(), dtype=v.dtype)
            mask[v.numel() : 2 * v.numel()] = 0
            out[base + "qkv.bias_mask"] = mask
            continue
        if k.endswith("attn.v_bias"):
            continue
        k = k.replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma").replace("reg_token", "storage_tokens")
        out[k] = v.clone()
    rope = getattr(model, "rope", None)
    if rope is not None and hasattr(rope, "periods"):
        out["rope_embed.periods"] = rope.periods.clone()
    cls_token = getattr(model, "cls_token", None)
    dim = cls_token.shape[-1] if isinstance(cls_token, torch.Tensor) else 0
    out["mask_token"] = torch.zeros(1, dim)
    return out


__all__ = ["fit_state", "load_dinov3_weights", "read_checkpoint", "to_official_state_dict"]
