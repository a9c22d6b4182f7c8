"""One forward for every batch: the trainer, evaluation, the KD teacher, soft-target generation and benchmarks."""

from __future__ import annotations

import torch

from cslr.datasets.augment import stride_pose


def batch_to(batch: dict, device) -> dict:
    """The batch's tensors on `device` (keys, glosses and other lists as they are)."""
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def model_forward(model, batch: dict) -> dict:
    """A cslr model's forward on a loader batch (the modalities it holds, and the lengths)."""
    return model(rgb=batch.get("rgb"), pose=batch.get("pose"), lengths=batch["lengths"])


def pose_stride_forward(stride: int, model=None, where: str = ""):
    """`model_forward` on landmarks as `--pose_stride K` gives them (`cslr.datasets.augment.stride_pose`): what
    extracting landmarks on every K-th frame costs in WER, measured on prepared data (`evaluate.py --pose_stride`).
    With `model`, K > 1 for a model that takes no pose is a ValueError naming `where` (its checkpoint)."""
    streams = getattr(getattr(model, "cfg", None), "streams", None)
    if stride > 1 and streams is not None and "pose" not in streams:
        raise ValueError(f"{where}: --pose_stride {stride} needs a model that takes pose (this one takes "
                         f"{'+'.join(streams)})")

    def forward(model, batch: dict) -> dict:
        if stride > 1 and batch.get("pose") is not None:
            batch = {**batch, "pose": stride_pose(batch["pose"], batch["lengths"], stride)}
        return model_forward(model, batch)

    return forward
