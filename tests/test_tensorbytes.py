"""The digests built on usagg/tensorbytes.py `feed_tensor` are pinned: checkpoints already written carry a frozen
fingerprint and a checksum, and trunk files are named by a key hashing the frozen weights, so a change to any of
their bytes would set aside every checkpoint and rebuild every trunk. The values were made by the loops each
module had before they shared `feed_tensor`."""

from __future__ import annotations

import torch

from usagg.engine import checkpoint
from usagg.tensorbytes import tensors_sha256


def _model() -> torch.nn.Module:
    """A model whose weights do not depend on the RNG: a frozen Linear, a trainable BatchNorm."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.copy_(torch.arange(p.numel(), dtype=torch.float32).reshape(p.shape) / (i + 2))
    model[0].requires_grad_(False)
    return model


def test_the_checkpoint_fingerprint_of_frozen_weights_is_pinned() -> None:
    fingerprint = checkpoint.frozen_fingerprint(_model())
    assert fingerprint == "b151b98987e48a99d295ec5a7645f871bff90c410b75302203432cfc241dea50"


def test_the_trunk_header_digest_is_pinned() -> None:
    """usagg/model/trunk.py `frozen_digest` hashes its tensors sorted by name with this header."""
    named = sorted(_model().state_dict(keep_vars=True).items())
    digest = tensors_sha256(named, "{name} {dtype} {shape}\n")
    assert digest == "9c469944cf6b249938e641fd65b5c4d25df6e83a46ce7c7c1dfeebbedcaff92a"


def test_the_checkpoint_checksum_is_pinned() -> None:
    """Empty and bfloat16 tensors included: an empty one feeds its header only, bfloat16 is read through torch."""
    weights = {"w": torch.arange(6.0).reshape(2, 3), "e": torch.zeros(0), "b": torch.ones(2, dtype=torch.bfloat16)}
    assert checkpoint.content_digest({"model": weights, "epoch": 3}) == "crc32:d29d4b96"
