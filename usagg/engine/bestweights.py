"""The selected epochs' trainable weights, kept in host memory while a job trains (issue 24.4).

Writing best.pt at every improved epoch cost a file write, a checksum and a reload of the
previous file per improvement; here an improved epoch costs one `torch._foreach_copy_` of the
trainable tensors into host buffers, recycled from epochs no longer selected. The trainer writes
best.pt once, when training ends, and puts the kept epochs into every last.pt before that, so a
killed job still resumes with them (usagg/engine/trainer.py).
"""

from __future__ import annotations

import torch


class BestWeights:
    """Host copies of the model's trainable tensors (`keys` of its state_dict) for the epochs still selected."""

    def __init__(self, model: torch.nn.Module, keys: list[str]) -> None:
        state = model.state_dict(keep_vars=True)
        self.keys = keys
        self._live = [state[k] for k in keys]  # the model's own tensors: updated in place by training and loading
        self.epochs: dict[int, list[torch.Tensor]] = {}
        self._spare: list[list[torch.Tensor]] = []

    def current(self) -> dict[str, torch.Tensor]:
        """The model's trainable tensors now, by key, not copied (saving copies them), without building a state_dict
        of the whole model, frozen weights included, per save."""
        return {k: t.detach() if t.requires_grad else t for k, t in zip(self.keys, self._live, strict=True)}

    def keep(self, epoch: int, selected: set[int]) -> None:
        """Copy the model's current weights as `epoch`'s, and forget the epochs not in `selected`."""
        self.retain(selected - {epoch})
        bufs = self._spare.pop() if self._spare else [torch.empty_like(t, device="cpu") for t in self._live]
        with torch.no_grad():
            torch._foreach_copy_(bufs, self._live)
        self.epochs[epoch] = bufs

    def retain(self, selected: set[int]) -> None:
        """Forget the epochs not in `selected`; their buffers serve the next `keep`."""
        for e in [e for e in self.epochs if e not in selected]:
            self._spare.append(self.epochs.pop(e))

    def weights(self, epoch: int) -> dict[str, torch.Tensor]:
        """`epoch`'s weights by state_dict key (the buffers themselves, not copies)."""
        return dict(zip(self.keys, self.epochs[epoch], strict=True))

    def state(self, skip: int | None = None) -> dict[int, dict[str, torch.Tensor]]:
        """Every kept epoch's weights except `skip` (a checkpoint's own epoch: its model entry holds them)."""
        return {e: self.weights(e) for e in self.epochs if e != skip}

    def load(self, epoch: int, weights: dict[str, torch.Tensor]) -> None:
        """Keep `weights` (by state_dict key, e.g. from a checkpoint) as `epoch`'s."""
        missing = set(self.keys) - set(weights)
        if missing:
            raise ValueError(f"weights of epoch {epoch} lack {sorted(missing)[:5]}")
        self.epochs[epoch] = [weights[k].detach().to("cpu", copy=True) for k in self.keys]
