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
import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from timm.models.eva import checkpoint_filter_fn
from torch import nn

from usagg.errors import UsaggError
from usagg.torchzip import archive_problem
from usagg.wording import counted

_SHOW = 4  # keys named per category in error messages

log = logging.getLogger(__name__)


#: Meta's name of the official DINOv3 file of each backbone that has one (the part after '-' is the file's hash).
OFFICIAL_FILES = {
    "dinov3_small": "dinov3_vits16_pretrain_lvd1689m-08c60483.pth",
    "dinov3_small_plus": "dinov3_vits16plus_pretrain_lvd1689m-*.pth",
    "dinov3_base": "dinov3_vitb16_pretrain_lvd1689m-*.pth",
    "dinov3_large": "dinov3_vitl16_pretrain_lvd1689m-*.pth",
}


def official_file_text(backbone: str) -> str:
    """The official file to look for: the backbone's own (`weights check --backbone dinov3_base` was pointed to a
    ViT-S file), else, for a backbone without one (dinov3_test, a plug-in's) or none named, dinov3_small's."""
    if backbone in OFFICIAL_FILES:
        return f"{OFFICIAL_FILES[backbone]} for {backbone}"
    return f"for example {OFFICIAL_FILES['dinov3_small']} for dinov3_small"


def weights_file_problem(path: Path, backbone: str = "", *, in_spec: bool = True) -> str | None:
    """Why `path` cannot be a weights file (it does not exist, or is a folder, a pipe, ...), or None; the advice is
    `model.weights`' (`in_spec`) or, for `usagg weights check FILE`, the file's alone."""
    try:
        mode = Path(path).stat().st_mode
    except OSError:
        mode = None
    if mode is not None and stat.S_ISREG(mode):
        return None
    from usagg.spec.load import _file_kind

    why = "does not exist" if mode is None else f"is {_file_kind(mode)}, not a file"
    target = f" for backbone {backbone}" if backbone else ""
    official = f"a downloaded official DINOv3 checkpoint ({official_file_text(backbone)})"
    if not in_spec:
        return f"The weights file {path}{target} {why}. Give the path of {official}."
    return (
        f"The weights file {path}{target} {why}. Give `model.weights` the path of {official}, or leave it empty to "
        "train from a random initialisation."
    )


def read_checkpoint(path: Path, backbone: str = "", *, mmap: bool = False) -> dict[str, torch.Tensor]:
    """A state dict from a .pth/.pt (torch.load, weights_only, CPU) or .safetensors file; UsaggError if unreadable,
    or if the .pth's zip is one torch.save never writes (usagg/torchzip.py `archive_problem`, as for a run's
    checkpoints: a compressed entry, or a data.pkl over `PICKLE_LIMIT`, which bounds the pickle, never the tensors).

    `mmap` maps a zip-format .pth instead of reading it, so checking a 1 GB file costs little memory.
    """
    path = Path(path)
    target = f" for backbone {backbone}" if backbone else ""
    problem = weights_file_problem(path, backbone)
    if problem is not None:
        raise UsaggError(problem)
    refused = None if path.suffix == ".safetensors" else archive_problem(path, written_by="a checkpoint as downloaded")
    if refused is not None:  # checked before torch unpacks anything: a received file could be a zip bomb
        raise UsaggError(
            f"The weights file {path}{target} {refused}. Give the official DINOv3 .pth file as downloaded, or a "
            ".safetensors file."
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


@dataclass(frozen=True)
class Misfit:
    """Why a state dict does not load into one backbone, key by key: what `usagg weights check` compares across
    backbones to name the closest, and what a refusal quotes."""

    backbone: str
    missing: list[str]
    unexpected: list[str]
    untyped: list[str]
    wrong: list[str]
    loaded: int  # model keys the file fills with a tensor of the right shape
    total: int  # model keys

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.untyped or self.wrong)

    def closeness(self) -> tuple[float, int]:
        """Sort key, larger is closer: the share of the model the file fills, then the fewest misfit keys."""
        bad = len(self.missing) + len(self.unexpected) + len(self.untyped) + len(self.wrong)
        return self.loaded / max(self.total, 1), -bad

    def incomplete(self) -> bool:
        """Whether the file is this backbone's checkpoint with tensors missing: every key it has is one of the
        backbone's, a tensor of the right shape, and some are not there (a download or copy cut short)."""
        return bool(self.missing) and self.loaded > 0 and not (self.unexpected or self.untyped or self.wrong)

    def download_again(self) -> str:
        """The advice for an `incomplete` file, as a truncated file's: it is the right model, damaged."""
        return (
            f"the file has every other tensor of {self.backbone}, each of the right shape, and lacks "
            f"{counted(len(self.missing), 'tensor')}: it may be damaged or cut short (an interrupted download or "
            f"copy); download it again ({official_file_text(self.backbone)})"
        )

    def text(self, show: int = _SHOW) -> str:
        """'12 missing keys (a, b, ... (10 more)); 3 keys of the wrong shape (...)', naming `show` keys per kind."""
        kinds = [
            (self.missing, "missing key", ""),
            (self.unexpected, "unexpected key", ""),
            (self.untyped, "key", " holding no tensor"),
            (self.wrong, "key", " of the wrong shape"),
        ]
        return "; ".join(f"{counted(len(ks), noun)}{tail} ({_some(ks, show)})" for ks, noun, tail in kinds if ks)


class WeightsMisfit(UsaggError):
    """`fit_state`'s refusal, carrying the misfit so that a caller trying several backbones can compare them."""

    def __init__(self, message: str, misfit: Misfit) -> None:
        super().__init__(message)
        self.misfit = misfit


def _unwrapped(raw: dict) -> dict:
    """The state dict inside the wrappers timm's filter looks through ({"model": ...}, {"state_dict": ...})."""
    for key in ("model_ema", "model", "module", "state_dict"):
        inner = raw.get(key)
        raw = inner if isinstance(inner, dict) else raw
    return raw


def _misfit(model: nn.Module, raw: dict, state: dict, name: str) -> Misfit:
    """Missing, unexpected, non-tensor and wrong-shape keys of `state` (`raw` under timm's names) against `model`.

    A value that is not a tensor (a string, a number) at a model key passes a check of names alone and fails
    `load_state_dict` in every job, so it is named here with its type. A shape is the file's own: timm's filter
    resamples a 14-px patch embedding to 16 px, which is then another model's weights squeezed to fit, not a fit.
    """
    own = model.state_dict()
    file = _unwrapped(raw)

    def shape(k: str, v: torch.Tensor) -> tuple[int, ...]:
        kept = file.get(k)
        return tuple((kept if isinstance(kept, torch.Tensor) else v).shape)

    tensors = {k: v for k, v in state.items() if k in own and isinstance(v, torch.Tensor)}
    wrong = [f"{k}: file {shape(k, v)}, model {tuple(own[k].shape)}" for k, v in tensors.items()
             if shape(k, v) != tuple(own[k].shape)]  # fmt: skip
    return Misfit(
        backbone=name,
        missing=[k for k in own if k not in state],
        unexpected=[k for k in state if k not in own],
        untyped=[f"{k}: {type(v).__name__}" for k, v in state.items() if k in own and k not in tensors],
        wrong=wrong,
        loaded=len(tensors) - len(wrong),
        total=len(own),
    )


def _some(keys: list[str], show: int = _SHOW) -> str:
    more = f", ... ({len(keys) - show} more)" if len(keys) > show else ""
    return ", ".join(keys[:show]) + more


def _converted(model: nn.Module, raw: dict, path: Path, name: str) -> dict:
    """`raw` under timm's key names (timm's own `checkpoint_filter_fn`); UsaggError when the filter fails."""
    printed = io.StringIO()  # timm prints a line per key it cannot place: to the log, not the user's terminal
    try:
        with contextlib.redirect_stdout(printed):
            return checkpoint_filter_fn(raw, model)
    except Exception as exc:
        raise UsaggError(
            f"The weights file {path} could not be converted to timm's DINOv3 layout for backbone {name} "
            f"({type(exc).__name__}: {exc}). It does not look like an official DINOv3 ViT checkpoint."
        ) from exc
    finally:
        for line in printed.getvalue().splitlines():
            log.debug("timm: %s", line)


def fit_state(model: nn.Module, raw: dict[str, torch.Tensor], path: Path, backbone: str, *, probe: bool = True) -> dict:
    """`raw` under timm's key names, checked key by key and shape by shape against `model`; WeightsMisfit if not.

    The refusal says what the file is when its keys give a known other format away (foreign_format), else which
    registered backbone it does fit (`probe`: each one built on the meta device), so the fix is one edit.
    """
    name = backbone or type(model).__name__
    state = _converted(model, raw, path, name)
    misfit = _misfit(model, raw, state, name)
    if not misfit:
        return state
    foreign = foreign_format(raw, path)
    if foreign:
        raise WeightsMisfit(f"{foreign} Against backbone {name}: {misfit.text(2)}.", misfit)
    fits = [b for b in _fitting(raw, path) if b != backbone] if probe else []
    if fits:
        fix = f"it fits {', '.join(fits)}: set model.backbone: {fits[0]}"
    elif misfit.incomplete():
        fix = misfit.download_again()
    else:
        fix = (
            "give the official DINOv3 checkpoint of the same model size as `model.backbone` "
            "(ViT-S/16 for dinov3_small, ViT-S+/16 for dinov3_small_plus, ViT-B/16, ViT-L/16), "
            "or leave `model.weights` empty for a random initialisation"
        )
    raise WeightsMisfit(f"The weights file {path} does not fit backbone {name}: {misfit.text()}; {fix}.", misfit)


def probe_backbones(
    raw: dict[str, torch.Tensor], path: Path, names: list[str] | None = None
) -> tuple[dict[str, int], list[Misfit]]:
    """({backbone: tensors loaded} for each registered backbone `raw` loads into strictly, the misfits of the rest).

    Each backbone is built on the meta device (shapes only: nothing allocated, nothing downloaded), so trying all
    costs a second or two; `names` narrows the try (default: every registered backbone, plug-ins included). A file
    timm's filter cannot convert is one UsaggError, not one per backbone.
    """
    from usagg.model.zoo import BACKBONES

    fits: dict[str, int] = {}
    misfits: list[Misfit] = []
    for name in names if names is not None else BACKBONES.names():
        vit = _meta_vit(name)
        state = _converted(vit, raw, path, name)
        misfit = _misfit(vit, raw, state, name)
        if misfit:
            misfits.append(misfit)
        else:
            fits[name] = len(state)
    return fits, misfits


def _meta_vit(name: str) -> nn.Module:
    """Backbone `name` built on the meta device as usagg/model/backbones.py `create_vit` builds it (no head, shapes
    only). Not that function: backbones.py imports this module, and a circle is refused (tests/test_architecture.py);
    tests/test_weights_foreign.py holds the two to the same keys and shapes."""
    from usagg.model.zoo import BACKBONES

    entry = BACKBONES.lookup(name)
    with torch.device("meta"):
        return timm.create_model(
            entry.timm_name, pretrained=False, num_classes=0, dynamic_img_size=True, **entry.kwargs
        )


def _fitting(raw: dict[str, torch.Tensor], path: Path) -> list[str]:
    """The registered backbones `raw` fits, for a refusal's fix; none when trying them fails (the refusal stands)."""
    try:
        return list(probe_backbones(raw, path)[0])
    except UsaggError:
        return []


# --------------------------------------------------------------------------- formats usagg does not read


def foreign_format(raw: dict, path: Path) -> str:
    """One sentence naming the format of a checkpoint usagg does not read and the download that works, when its
    keys give it away (Hugging Face transformers DINOv3 or DINOv2, DINOv2 or another ViT with a learned position
    embedding, timm's DINOv3 without qkv bias, a ConvNeXt); '' otherwise.

    Such a file otherwise fails as hundreds of missing and unexpected keys per backbone, which says nothing about
    the fix: another download of the same model."""
    state = {str(k): v for k, v in _unwrapped(raw).items() if isinstance(v, torch.Tensor)}
    for recognise in (_hf_transformers, _learned_pos_embed, _timm_without_qkv_bias, _convnext):
        found = recognise(list(state), state)
        if found:
            what, width, depth = found
            return f"The weights file {path} is {what}, which usagg does not read: {_download(width, depth)}."
    return ""


_Found = tuple[str, int, int] | None  # (what the file is, width, blocks); 0 where unknown


def _blocks(keys: list[str], pattern: str) -> int:
    """How many blocks the keys number (`pattern` holds one group, the block index)."""
    return len({m.group(1) for k in keys if (m := re.search(pattern, k))})


def _width(state: dict[str, torch.Tensor], name: str) -> int:
    """The embedding width: the last dimension of the tensor at `name` (or a key ending in `.name`); 0 if none."""
    v = next((v for k, v in state.items() if k == name or k.endswith("." + name)), None)
    return int(v.shape[-1]) if v is not None and v.ndim else 0


#: Hugging Face transformers' layouts, each (a key only it has, its block index pattern, what the file is):
#: facebook/dinov3-* (Meta's gated repos, for transformers' classes) and facebook/dinov2-* (the previous
#: generation), both under transformers' names.
_HF_LAYOUTS = (
    (
        r"(^|\.)layer\.\d+\.attention\.q_proj\.weight$",
        r"(?:^|\.)layer\.(\d+)\.",
        "a Hugging Face transformers DINOv3 checkpoint (keys embeddings.*, layer.N.attention.q_proj.weight)",
    ),
    (
        r"(^|\.)encoder\.layer\.\d+\.attention\.attention\.query\.weight$",
        r"(?:^|\.)encoder\.layer\.(\d+)\.",
        "a Hugging Face transformers DINOv2 checkpoint (keys embeddings.position_embeddings, encoder.layer.N.*)",
    ),
)


def _hf_transformers(keys: list[str], state: dict[str, torch.Tensor]) -> _Found:
    """A `model.safetensors` saved by transformers (`_HF_LAYOUTS`), with its width and depth."""
    for signature, layer, what in _HF_LAYOUTS:
        if any(re.search(signature, k) for k in keys):
            return what, _width(state, "embeddings.cls_token"), _blocks(keys, layer)
    return None


def _learned_pos_embed(keys: list[str], state: dict[str, torch.Tensor]) -> _Found:
    """A ViT under timm-like names with a learned `pos_embed`, which DINOv3 (RoPE) has not: DINOv2's own .pth
    (14-px patches), DINO, a supervised ViT. timm's filter would resample its patch embedding to fit silently."""
    pos = state.get("pos_embed")
    patch = state.get("patch_embed.proj.weight")
    if pos is None or patch is None or patch.ndim != 4:
        return None
    side = int(patch.shape[-1])
    about = f"{side}-px patches and a learned pos_embed of shape {tuple(pos.shape)}; DINOv3 has 16-px patches and RoPE"
    what = f"a DINOv2 checkpoint ({about})" if side == 14 else f"a ViT with a learned position embedding ({about})"
    return what, int(pos.shape[-1]), _blocks(keys, r"^blocks\.(\d+)\.")


def _timm_without_qkv_bias(keys: list[str], state: dict[str, torch.Tensor]) -> _Found:
    """timm ships each DINOv3 twice; usagg's backbones are the _qkvb variants, whose q and v biases this file lacks."""
    if "reg_token" not in state or "blocks.0.gamma_1" not in state or "blocks.0.attn.q_bias" in state:
        return None
    what = "timm's DINOv3 without qkv bias (timm/vit_*_patch16_dinov3.*, keys without attn.q_bias)"
    return what, _width(state, "cls_token"), _blocks(keys, r"^blocks\.(\d+)\.")


def _convnext(keys: list[str], state: dict[str, torch.Tensor]) -> _Found:
    """DINOv3's ConvNeXt distillations (Meta's `dwconv` or timm's `conv_dw` names) download beside the ViTs."""
    if not any(".dwconv." in k or ".conv_dw." in k for k in keys):
        return None
    return "a ConvNeXt checkpoint (depthwise-convolution stages), where usagg's backbones are ViTs", 0, 0


def _download(width: int, depth: int) -> str:
    """Where the same model comes as usagg reads it: Meta's official .pth, or timm's safetensors (the _qkvb
    variant, which usagg's backbones are), named for the registered backbones of this width and depth."""
    from usagg.model.zoo import BACKBONES

    sized = [n for n in BACKBONES.names() if (BACKBONES[n].depth, BACKBONES[n].embed_dim) == (depth, width)]
    real = [n for n in sized if BACKBONES[n].note.startswith("ViT-")]
    size = " or ".join(BACKBONES[n].note.split(",")[0] for n in real) or "ViT-S/16, ViT-S+/16, ViT-B/16 or ViT-L/16"
    repo = " or ".join(f"timm/{BACKBONES[n].timm_name}.lvd1689m" for n in real) or "timm/vit_*_dinov3_qkvb.lvd1689m"
    which = f" of its size (width {width}, {depth} blocks: {' or '.join(sized)})" if sized else ""
    return (
        f"download DINOv3 weights{which} as Meta's official .pth ({size}) or as timm's model.safetensors "
        f"(Hugging Face repo {repo})"
    )


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


__all__ = [
    "Misfit",
    "WeightsMisfit",
    "fit_state",
    "foreign_format",
    "load_dinov3_weights",
    "probe_backbones",
    "read_checkpoint",
    "to_official_state_dict",
]
