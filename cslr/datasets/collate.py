"""Decoded videos -> a padded batch: JPEG decoding, and the batch tensors built in shared memory in loader workers.

The batch's keys are documented at `cslr.datasets.pipeline.build_loader`.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch.utils.data import get_worker_info
from torchvision.io import ImageReadMode, decode_jpeg


def decode_jpegs(jpegs: list) -> list[torch.Tensor]:
    """JPEG streams -> (H, W, 3) uint8 frames, views of the decoder's own output (no copy)."""
    data = [torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in jpegs]
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its codecs in favour of torchcodec
        warnings.simplefilter("ignore", DeprecationWarning)
        frames = decode_jpeg(data, mode=ImageReadMode.RGB)  # (3, H, W) views of (H, W, 3) buffers
    return [f.permute(1, 2, 0) for f in frames]


def _row_length(row: dict) -> int:
    if "rgb_index" in row:
        return row["rgb_index"].shape[0]
    return next(iter(row.values())).shape[0]


def _batch_tensor(shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor; in a DataLoader worker, in shared memory from the start, so that sending the batch
    to the main process does not copy it (what `default_collate` does)."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * dtype.itemsize)
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


def collate(rows: list[dict], items: list, cfg, pose_landmarks: int, soft_k: int = 0) -> dict:
    """Pad decoded videos into a batch (see `cslr.datasets.pipeline.build_loader`); an empty list gives one invalid
    row. `items`: the videos' checked samples (key, signer, gloss, targets); `cfg`: the DataConfig (modalities,
    image_size).

    `soft_k` > 0: the rows carry soft targets with that many labels per frame (placeholder included).
    """
    valid = bool(rows)
    if not valid:
        rows = [{"rgb": torch.zeros(1, 3, cfg.image_size, cfg.image_size, dtype=torch.uint8),
                 "pose": torch.zeros(1, pose_landmarks, 3),
                 "soft_logp": torch.zeros(1, soft_k), "soft_idx": torch.zeros(1, soft_k, dtype=torch.int64)}]
    lengths = torch.tensor([_row_length(r) for r in rows], dtype=torch.int64)  # (B,)
    b, t = len(rows), int(lengths.max())
    batch = {}
    for m in cfg.modalities:
        x = _batch_tensor((b, t) + rows[0][m].shape[1:], rows[0][m].dtype)  # (B, T, ...)
        for i, (r, n) in enumerate(zip(rows, lengths.tolist())):
            if m == "rgb" and "rgb_index" in r:  # expand the distinct frames straight into the batch
                torch.index_select(r[m], 0, r["rgb_index"], out=x[i, :n])
            else:
                x[i, :n] = r[m]
            x[i, n:] = 0
        batch[m] = x
    targets = [it.targets for it in items] or [[]]
    batch["lengths"] = lengths
    batch["mask"] = torch.arange(t)[None, :] < lengths[:, None]  # (B, T)
    batch["targets"] = torch.zeros(b, max(1, max(map(len, targets))), dtype=torch.int64)  # (B, L)
    for i, ids in enumerate(targets):
        batch["targets"][i, :len(ids)] = torch.tensor(ids, dtype=torch.int64)
    batch["target_lengths"] = torch.tensor(list(map(len, targets)), dtype=torch.int64)
    batch["keys"] = [it.key for it in items] or [""]
    batch["signers"] = [it.signer for it in items] or [""]
    batch["glosses"] = [it.gloss for it in items] or [""]
    batch["valid"] = torch.full((b,), valid)
    if soft_k:
        batch.update(pad_soft([r["soft_logp"] for r in rows], [r["soft_idx"] for r in rows]))
    return batch


def pad_soft(logp: list[torch.Tensor], idx: list[torch.Tensor]) -> dict:
    """Per-video (T_i, K) soft targets -> zero-padded "soft_logp" float32 (B, T, K), "soft_idx" int64 (B, T, K),
    "soft_lengths" int64 (B,)."""
    lengths = torch.tensor([x.shape[0] for x in logp], dtype=torch.int64)  # (B,)
    b, t, k = len(logp), max(1, int(lengths.max())), logp[0].shape[1]
    out = {"soft_logp": torch.zeros(b, t, k), "soft_idx": torch.zeros(b, t, k, dtype=torch.int64),
           "soft_lengths": lengths}
    for i, (lp, ix) in enumerate(zip(logp, idx)):
        out["soft_logp"][i, :lp.shape[0]] = lp
        out["soft_idx"][i, :ix.shape[0]] = ix
    return out
