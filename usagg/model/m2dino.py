"""M2DINO: a DINOv3 encoder (task-conditioned MoE in its later blocks when enabled) and one head per task.

`build_model(spec, tasks, moe)` is the single construction path used by the
engine. Each forward call holds one task (every batch comes from one task).
`loss` returned by `forward` is what to backpropagate: the head's task loss
plus `aux_loss` (the MoE balance loss, already weighted); `aux_loss` is also
returned alone for logging.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from usagg.model.backbones import DinoEncoder, EncoderInput, build_vit
from usagg.model.heads import TaskHead
from usagg.model.moe import convert_to_moe, moe_parameters
from usagg.spec.models import ModelSpec, TaskSpec
from usagg.tasktypes import TaskType, TaskTypeError, get_task_type, type_error


@dataclass
class ModelOutput:
    """outputs: the head's raw output; loss: task + aux (None without targets); aux_loss: 0-dim; usage or None."""

    outputs: torch.Tensor
    loss: torch.Tensor | None
    aux_loss: torch.Tensor
    expert_usage: torch.Tensor | None


def head_key(task_id: str) -> str:
    """ModuleDict key of a task id (module names cannot contain dots)."""
    return task_id.replace(".", "__")


class M2DINO(nn.Module):
    """Shared encoder, optional task embedding for the MoE routers, heads keyed by task id."""

    def __init__(
        self,
        encoder: DinoEncoder,
        heads: dict[str, TaskHead],
        task_embed: nn.Embedding | None,
        aux_loss_weight: float,
        weights_info: dict,
        task_types: dict[str, TaskType] | None = None,
    ) -> None:
        super().__init__()
        keys = [head_key(t) for t in heads]
        if len(set(keys)) != len(keys):
            raise ValueError(f"task ids collide once dots are replaced: {sorted(heads)}")
        self.encoder = encoder
        self.heads = nn.ModuleDict({head_key(t): h for t, h in heads.items()})
        self.task_embed = task_embed
        self.task_ids = list(heads)
        self.task_index = {t: i for i, t in enumerate(self.task_ids)}
        self.aux_loss_weight = aux_loss_weight
        self.weights_info = dict(weights_info)
        #: task id -> its type, which an error of the head's loss or predict names (`_head_error`)
        self.task_types = dict(task_types or {})

    @property
    def moe(self) -> bool:
        return self.task_embed is not None

    def head(self, task_id: str) -> TaskHead:
        if task_id not in self.task_index:
            raise KeyError(f"unknown task {task_id!r}; this model has {self.task_ids}")
        return cast(TaskHead, self.heads[head_key(task_id)])  # a ModuleDict is untyped: it holds __init__'s heads

    def forward(
        self, images: torch.Tensor | EncoderInput, task_id: str, targets: torch.Tensor | None = None
    ) -> ModelOutput:
        """One task's batch: images [B, 3, S, S], or an `EncoderInput` (pixels and/or frozen-trunk tokens, see
        usagg/model/trunk.py); targets in model space (see docs/internals.md)."""
        head = self.head(task_id)
        task_emb = None
        n = images.size if isinstance(images, EncoderInput) else images.shape[0]
        if self.task_embed is not None:
            idx = torch.full((n,), self.task_index[task_id], dtype=torch.long, device=images.device)
            task_emb = self.task_embed(idx)
        if encoder_compiled(self) and torch.is_grad_enabled():
            size = images.image_size if isinstance(images, EncoderInput) else (images.shape[-2], images.shape[-1])
            self.encoder.prepare_rope(size, images.device)  # its table eagerly, outside the compiled graph
        enc = _run(self.encoder, images, task_emb)
        outputs = _run(head, enc.features)
        if enc.aux_losses:
            aux = self.aux_loss_weight * torch.stack(enc.aux_losses).mean()
        else:
            aux = torch.zeros((), dtype=torch.float32, device=images.device)
        loss = None
        if targets is not None:
            try:
                loss = head.loss(outputs, targets) + aux
            except Exception as err:
                self._raise_named(task_id, "head loss()", err)
                raise
        return ModelOutput(outputs, loss, aux, enc.expert_usage)

    @torch.no_grad()
    def predict(self, outputs: torch.Tensor, task_id: str) -> torch.Tensor:
        """Normalised predictions, as the task's head defines them (class maps, probabilities, boxes, keypoints)."""
        head = self.head(task_id)
        try:
            return head.predict(outputs)
        except Exception as err:
            self._raise_named(task_id, "head predict()", err)
            raise

    def _raise_named(self, task_id: str, call: str, err: Exception) -> None:
        """Raise `err` of a head's `call` as a `TaskTypeError` naming the task's type and the task; return (for the
        caller to raise `err` itself) when it is one already or the model was built without types."""
        task_type = self.task_types.get(task_id)
        if task_type is not None and not isinstance(err, TaskTypeError):
            raise type_error(task_type, task_id, call, err) from err

    def _moe_params(self) -> list[nn.Parameter]:
        return moe_parameters(self.encoder)

    def _head_params(self) -> list[nn.Parameter]:
        params = list(self.heads.parameters())
        return params + (list(self.task_embed.parameters()) if self.task_embed is not None else [])

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters: "encoder" (later blocks, final norm, MoE) and "heads" (heads, task embedding)."""
        return {
            "encoder": [p for p in self.encoder.parameters() if p.requires_grad],
            "heads": [p for p in self._head_params() if p.requires_grad],
        }

    def trainable_counts(self) -> dict[str, int]:
        """Parameter counts: frozen and trainable encoder (MoE excluded), MoE experts + routers, heads + task emb."""
        moe_ids = {id(p) for p in self._moe_params()}
        enc = [p for p in self.encoder.parameters() if id(p) not in moe_ids]
        return {
            "encoder_frozen": sum(p.numel() for p in enc if not p.requires_grad),
            "encoder_trainable": sum(p.numel() for p in enc if p.requires_grad),
            "moe": sum(p.numel() for p in self._moe_params() if p.requires_grad),
            "heads": sum(p.numel() for p in self._head_params() if p.requires_grad),
        }


def _compiled(module: nn.Module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None


def _run(module: nn.Module, *args: Any) -> Any:
    """`module(*args)`; one compiled in place (usagg/engine/accel.py: the encoder, and the heads under
    compiled-step-graphs) serves training alone. Without grad (selection, the test) it runs eagerly: compiled, it
    was compiled again for each grad mode and batch shape until dynamo's limit (8), after which it ran eagerly for
    good (an H100 job under graphs)."""
    if _compiled(module) and not torch.is_grad_enabled():
        return module.forward(*args)
    return module(*args)


def encoder_compiled(model: M2DINO) -> bool:
    """Whether the model's encoder was compiled in place (`nn.Module.compile`, usagg/engine/accel.py)."""
    return _compiled(model.encoder)


def build_model(model: ModelSpec, tasks: list[TaskSpec], moe: bool) -> M2DINO:
    """Encoder (weights or random init), MoE in `model.resolved_moe_blocks()` when `moe`, freezing, heads."""
    if not tasks:
        raise ValueError("build_model needs at least one task")
    vit, info = build_vit(model.backbone, model.weights)
    encoder = DinoEncoder(vit, model.resolved_feature_blocks())
    dim = encoder.embed_dim
    task_embed = None
    if moe:
        blocks = [b for b in model.resolved_moe_blocks() if b < encoder.depth]
        m = model.moe
        convert_to_moe(vit.blocks, blocks, dim, dim, m.experts, m.top_k, m.router_input, m.init_noise)
        task_embed = nn.Embedding(len(tasks), dim)
    encoder.freeze(model.resolved_frozen_blocks())
    n_feat = len(encoder.feature_blocks)
    types = {t.id: get_task_type(t.type) for t in tasks}
    heads = {t.id: types[t.id].build_head(t, model.heads, dim, n_feat) for t in tasks}
    return M2DINO(encoder, heads, task_embed, model.moe.aux_loss_weight, info, types)


__all__ = ["M2DINO", "ModelOutput", "build_model", "encoder_compiled", "head_key"]
