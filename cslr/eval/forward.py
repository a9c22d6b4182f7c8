"""One forward for every batch: the trainer, evaluation, the KD teacher, soft-target generation and benchmarks."""

from __future__ import annotations

import torch


def batch_to(batch: dict, device) -> dict:
    """The batch's tensors on `device` (keys, glosses and other lists as they are)."""
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def model_forward(model, batch: dict) -> dict:
    """A cslr model's forward on a loader batch (the modalities it holds, and the lengths)."""
    return model(rgb=batch.get("rgb"), pose=batch.get("pose"), lengths=batch["lengths"])
