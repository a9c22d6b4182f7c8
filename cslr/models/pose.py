"""Pose encoder over MediaPipe Holistic landmarks (B, T, 543, 3), NaN where a landmark was not detected.

    select a landmark subset (upper-body pose points, both hands, mouth by default)
    -> normalise to the shoulders per frame: centre = shoulder midpoint, scale = shoulder width
       (frames without both shoulders use the video's mean centre and scale; a video without any: 0 and 1)
    -> NaN -> 0 plus a presence flag per landmark: (x, y, z, present) per landmark
    -> per-frame MLP (Linear + LayerNorm + ReLU, x2)
    -> TemporalConv K5-P2-K5-P2: T -> ceil(T / 4), the I3D's `output_length`, so the streams align.

x and y are shifted and scaled; z is only scaled (MediaPipe gives z relative to the hips for the body and
to the wrist for each hand, so there is no common origin to subtract).

Run the tests: `/work/venv/bin/pytest tests/test_models.py -q -k pose`
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..datasets.schema import (
    LANDMARK_SLICES,
    MOUTH,
    NUM_LANDMARKS,
    POSE_LEFT_SHOULDER,
    POSE_RIGHT_SHOULDER,
    UPPER_BODY,
)
from .heads import TemporalConv, length_mask


def _range(part: str) -> list[int]:
    s = LANDMARK_SLICES[part]
    return list(range(s.start, s.stop))


# Subset names -> indices into the 543 Holistic landmarks.
POSE_PARTS = {
    "upper_body": [LANDMARK_SLICES["pose"].start + i for i in UPPER_BODY],
    "pose": _range("pose"),
    "left_hand": _range("left_hand"),
    "right_hand": _range("right_hand"),
    "mouth": [LANDMARK_SLICES["face"].start + i for i in MOUTH],
    "face": _range("face"),
}
DEFAULT_POSE_PARTS = ("upper_body", "left_hand", "right_hand", "mouth")
MIN_SHOULDER_WIDTH = 1e-3  # in image-normalised units; narrower is a detection failure, not a body


def landmark_indices(parts: Sequence[str]) -> list[int]:
    """Indices of the named parts (see POSE_PARTS), in order, duplicates removed."""
    unknown = [p for p in parts if p not in POSE_PARTS]
    if unknown or not parts:
        raise ValueError(f"pose parts {list(parts)}: unknown {unknown}; choose from {sorted(POSE_PARTS)}")
    return list(dict.fromkeys(i for p in parts for i in POSE_PARTS[p]))


def shoulder_frame(pose: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Per-frame centre (B, T, 2) and scale (B, T, 1) from the shoulders; robust to missing shoulders.

    pose: (B, T, 543, 3) fp32 with NaN; valid: (B, T) bool, False on padded frames.
    """
    left, right = pose[:, :, POSE_LEFT_SHOULDER, :2], pose[:, :, POSE_RIGHT_SHOULDER, :2]  # (B, T, 2)
    centre = (left + right) / 2
    width = (left - right).norm(dim=-1, keepdim=True)  # (B, T, 1)
    ok = valid & ~centre.isnan().any(-1) & (width[..., 0] > MIN_SHOULDER_WIDTH)  # (B, T)
    okf = ok[..., None].float()
    count = okf.sum(1, keepdim=True)  # (B, 1, 1)
    # Video means over frames with shoulders; a video with none falls back to centre 0, scale 1.
    mean_centre = torch.where(count > 0, torch.nan_to_num(centre * okf).sum(1, keepdim=True) / count.clamp(min=1), 0.0)
    mean_width = torch.where(count > 0, torch.nan_to_num(width * okf).sum(1, keepdim=True) / count.clamp(min=1), 1.0)
    centre = torch.where(ok[..., None], centre, mean_centre)
    width = torch.where(ok[..., None], width, mean_width)
    return centre, width


def normalise_landmarks(pose: Tensor, indices: Sequence[int], valid: Tensor) -> Tensor:
    """(B, T, 543, 3) with NaN -> (B, T, K, 4): shoulder-normalised x, y, z and a presence flag, no NaN.

    A landmark with any NaN coordinate is absent (all four values 0); padded frames are all 0.
    """
    centre, width = shoulder_frame(pose, valid)  # (B, T, 2), (B, T, 1)
    pts = pose[:, :, indices]  # (B, T, K, 3)
    xy = (pts[..., :2] - centre[:, :, None]) / width[:, :, None]
    z = pts[..., 2:] / width[:, :, None]
    present = ~pts.isnan().any(-1, keepdim=True) & valid[:, :, None, None]  # (B, T, K, 1)
    feats = torch.cat([xy, z], dim=-1)
    feats = torch.where(present, feats, 0.0)  # where, not multiply: NaN * 0 is NaN
    return torch.cat([feats, present.float()], dim=-1)


class PoseEncoder(nn.Module):
    """Landmarks (B, T, 543, 3) -> (B, T', hidden) with T' = ceil(T / 4).

    Args:
        parts: landmark subsets (keys of POSE_PARTS).
        hidden: width of the MLP and of the temporal convs.
        dropout: dropout after the per-frame MLP.
    """

    def __init__(self, parts: Sequence[str] = DEFAULT_POSE_PARTS, hidden: int = 256, dropout: float = 0.0):
        super().__init__()
        self.register_buffer("indices", torch.tensor(landmark_indices(parts)), persistent=False)
        in_dim = 4 * len(self.indices)
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.LayerNorm(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        self.temporal = TemporalConv(hidden, hidden, ("K5", "P2", "K5", "P2"))
        self.out_channels = hidden

    def output_length(self, lengths: Tensor | int):
        """Exact number of output frames for `lengths` input frames: ceil(T / 4)."""
        return self.temporal.output_length(lengths)

    def forward(self, pose: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(B, T, 543, 3) landmarks (NaN = missing), (B,) lengths -> (B, T', hidden), (B,) output lengths (None
        when `lengths` is None: every frame valid)."""
        if pose.ndim != 4 or tuple(pose.shape[2:]) != (NUM_LANDMARKS, 3):
            raise ValueError(f"PoseEncoder expects landmarks (B, T, {NUM_LANDMARKS}, 3), got shape {tuple(pose.shape)}")
        # lengths None = every frame valid: no masks and no length arithmetic, which an ONNX trace would bake in
        # at the example's length (ceil-mode pooling of a T not divisible by 4 then went wrong in the graph)
        valid = (torch.ones_like(pose[:, :, 0, 0], dtype=torch.bool) if lengths is None
                 else length_mask(lengths, pose.shape[1]))  # (B, T)
        x = normalise_landmarks(pose.float(), self.indices, valid).flatten(2)  # (B, T, 4K)
        x = self.mlp(x)  # (B, T, hidden)
        return self.temporal(x, lengths)
